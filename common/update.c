/*
 * The writer of update documents (zoomerge(5)): what train-step emits and
 * merge --apply and granctl read.  Their readers are zm_merge_apply_updates
 * (merge.c) and zm_gc_add_update (granctl.c).
 */
#include <inttypes.h>
#include <stdio.h>

#include "model.h"
#include "profile.h"
#include "stream.h"
#include "update.h"

/* The update document: trained minus base parameters, the profile of the
 * data trained on, and the run's metrics. */
enum zm_status zm_update_to_doc(const struct zm_model *trained,
                                const struct zm_model *base,
                                const struct zm_update_info *u,
                                struct zm_doc *doc, struct zm_error *err)
{
	struct zm_model *delta = NULL;
	enum zm_status st;
	char num[64];
	size_t l, i;

	st = zm_model_copy(trained, &delta, err);
	if (st != ZM_OK)
		return st;
	for (l = 0; l < delta->arch->n_layers; l++) {
		struct zm_layer *d = &delta->layers[l];
		const struct zm_layer *b = &base->layers[l];
		float *w = d->weight.data, *bias = d->bias.data;
		const float *bw = b->weight.data, *bb = b->bias.data;
		if (!d->spec->has_params)
			continue;
		for (i = 0; i < zm_tensor_numel(&d->weight); i++)
			w[i] -= bw[i];
		for (i = 0; i < zm_tensor_numel(&d->bias); i++)
			bias[i] -= bb[i];
	}
	st = zm_model_to_doc(delta, doc, err);
	zm_model_free(delta);
	if (st != ZM_OK)
		return st;
	zm_profile_remove_from_doc(doc);
	if ((st = zm_profile_to_doc(u->profile, doc, err)))
		return st;
	snprintf(num, sizeof(num), "%" PRId64, u->parent);
	if ((st = zm_doc_set_meta(doc, "zm.kind", "update", err)) ||
	    (st = zm_doc_set_meta(doc, "zm.name", u->name, err)) ||
	    (st = zm_doc_set_meta(doc, "zm.parent", num, err)))
		return st;
	snprintf(num, sizeof(num), "%zu", u->samples);
	if ((st = zm_doc_set_meta(doc, "zm.samples", num, err)))
		return st;
	snprintf(num, sizeof(num), "%.9g", (double)u->weight);
	if ((st = zm_doc_set_meta(doc, "zm.weight", num, err)))
		return st;
	if (u->slice && (st = zm_doc_set_meta(doc, "zm.slice", u->slice, err)))
		return st;
	return ZM_OK;
}
