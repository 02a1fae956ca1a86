/*
 * Granularity levels, units of an architecture, and the decision file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "granularity.h"
#include "mem.h"

const char *zm_gran_level_name(enum zm_gran_level level)
{
	switch (level) {
	case ZM_GRAN_FULL: return "full";
	case ZM_GRAN_GROUP: return "group";
	case ZM_GRAN_LAYER: return "layer";
	}
	return "?";
}

bool zm_gran_level_parse(const char *s, enum zm_gran_level *out)
{
	if (strcmp(s, "full") == 0)
		*out = ZM_GRAN_FULL;
	else if (strcmp(s, "group") == 0)
		*out = ZM_GRAN_GROUP;
	else if (strcmp(s, "layer") == 0)
		*out = ZM_GRAN_LAYER;
	else
		return false;
	return true;
}

/* ---- units ---- */

void zm_gran_units_release(struct zm_gran_units *u)
{
	size_t i;

	for (i = 0; u->names && i < u->n_units; i++)
		free(u->names[i]);
	free(u->names);
	free(u->layer_unit);
	memset(u, 0, sizeof(*u));
}

ptrdiff_t zm_gran_units_find(const struct zm_gran_units *u, const char *name)
{
	size_t i;

	for (i = 0; i < u->n_units; i++)
		if (strcmp(u->names[i], name) == 0)
			return (ptrdiff_t)i;
	return -1;
}

enum zm_status zm_gran_units_init(struct zm_gran_units *u,
                                  enum zm_gran_level level,
                                  const struct zm_arch *arch,
                                  struct zm_error *err)
{
	size_t l, n = arch->n_layers;

	memset(u, 0, sizeof(*u));
	u->level = level;
	u->n_layers = n;
	/* At most one unit per layer (plus "model" for an empty arch). */
	u->names = zm_calloc(n + 1, sizeof(*u->names));
	u->layer_unit = zm_calloc(n + 1, sizeof(*u->layer_unit));
	if (!u->names || !u->layer_unit)
		goto nomem;
	if (level == ZM_GRAN_FULL) {
		if (!(u->names[0] = zm_strdup(ZM_GRAN_MODEL_UNIT)))
			goto nomem;
		u->n_units = 1;
		return ZM_OK;
	}
	for (l = 0; l < n; l++) {
		const char *name = level == ZM_GRAN_GROUP ? arch->layers[l].group
		                                          : arch->layers[l].name;
		ptrdiff_t k = zm_gran_units_find(u, name);
		if (k < 0) {
			if (!(u->names[u->n_units] = zm_strdup(name)))
				goto nomem;
			k = (ptrdiff_t)u->n_units++;
		}
		u->layer_unit[l] = (size_t)k;
	}
	return ZM_OK;
nomem:
	zm_gran_units_release(u);
	return zm_error_set(err, ZM_ERR_NOMEM, "granularity: out of memory");
}

/* ---- decisions ---- */

void zm_gran_decision_init(struct zm_gran_decision *d)
{
	memset(d, 0, sizeof(*d));
	d->level = ZM_GRAN_FULL;
}

void zm_gran_decision_release(struct zm_gran_decision *d)
{
	size_t i;

	for (i = 0; i < d->n_units; i++) {
		free(d->units[i].unit);
		free(d->units[i].reason);
	}
	free(d->units);
	free(d->reason);
	free(d->source);
	zm_gran_decision_init(d);
}

static ptrdiff_t decision_find(const struct zm_gran_decision *d,
                               const char *unit)
{
	size_t i;

	for (i = 0; i < d->n_units; i++)
		if (strcmp(d->units[i].unit, unit) == 0)
			return (ptrdiff_t)i;
	return -1;
}

enum zm_status zm_gran_decision_add(struct zm_gran_decision *d,
                                    const char *unit, bool shared,
                                    bool has_agreement, double agreement,
                                    const char *reason, struct zm_error *err)
{
	struct zm_gran_unit *grown, *u;
	size_t bytes;

	if (!zm_size_mul(d->n_units + 1, sizeof(*grown), &bytes) ||
	    !(grown = zm_realloc(d->units, bytes)))
		return zm_error_set(err, ZM_ERR_NOMEM, "granularity: out of memory");
	d->units = grown;
	u = &d->units[d->n_units];
	memset(u, 0, sizeof(*u));
	u->unit = zm_strdup(unit);
	u->reason = reason ? zm_strdup(reason) : NULL;
	if (!u->unit || (reason && !u->reason)) {
		free(u->unit);
		free(u->reason);
		return zm_error_set(err, ZM_ERR_NOMEM, "granularity: out of memory");
	}
	u->shared = shared;
	u->has_agreement = has_agreement;
	u->agreement = agreement;
	d->n_units++;
	return ZM_OK;
}

bool zm_gran_decision_shared(const struct zm_gran_decision *d,
                             const char *unit)
{
	ptrdiff_t i = decision_find(d, unit);

	return i >= 0 && d->units[i].shared;
}

/* Lists the units of u into b as "a, b, c" for messages. */
static void list_units(const struct zm_gran_units *u, char *buf, size_t size)
{
	size_t i, len = 0;

	buf[0] = '\0';
	for (i = 0; i < u->n_units && len + 1 < size; i++) {
		int k = snprintf(buf + len, size - len, "%s%s", i ? ", " : "",
		                 u->names[i]);
		if (k < 0)
			break;
		len += (size_t)k;
	}
	if (len >= size && size > 4)
		memcpy(buf + size - 4, "...", 4);
}

enum zm_status zm_gran_decision_validate(const struct zm_gran_decision *d,
                                         const struct zm_arch *arch,
                                         struct zm_error *err)
{
	struct zm_gran_units u;
	enum zm_status st;
	char names[256];
	size_t i;

	if ((st = zm_gran_units_init(&u, d->level, arch, err)))
		return st;
	for (i = 0; i < d->n_units; i++) {
		const struct zm_gran_unit *x = &d->units[i];
		if (zm_gran_units_find(&u, x->unit) >= 0)
			continue;
		list_units(&u, names, sizeof(names));
		if (x->line > 0)
			st = zm_error_set(err, ZM_ERR_CONFIG,
			                  "%s:%d:%d: unknown %s unit '%s' (the "
			                  "model has: %s)",
			                  d->source ? d->source : "granularity",
			                  x->line, x->col,
			                  zm_gran_level_name(d->level), x->unit,
			                  names);
		else
			st = zm_error_set(err, ZM_ERR_CONFIG,
			                  "unknown %s unit '%s' (the model has: %s)",
			                  zm_gran_level_name(d->level), x->unit,
			                  names);
		break;
	}
	zm_gran_units_release(&u);
	return st;
}

static enum zm_status parse_unit(const struct zm_node *n,
                                 struct zm_gran_decision *d,
                                 struct zm_error *err)
{
	static const char *const keys[] = { "unit", "shared", "agreement",
	                                    "reason", NULL };
	const struct zm_node *k;
	const char *name, *reason = NULL;
	bool shared = false, has_ag = false;
	double ag = 0;
	enum zm_status st;

	if ((st = zm_node_expect(n, ZM_NODE_MAP, "unit entry", err)) ||
	    (st = zm_node_check_keys(n, keys, "unit entry", err)))
		return st;
	if (!(k = zm_node_get(n, "unit")))
		return zm_node_error(n, err, ZM_ERR_CONFIG,
		                     "unit entry without 'unit'");
	if ((st = zm_node_string(k, "unit", &name, err)))
		return st;
	if (name[0] == '\0' || strlen(name) != k->len)
		return zm_node_error(k, err, ZM_ERR_CONFIG,
		                     "expected a unit name");
	if (decision_find(d, name) >= 0)
		return zm_node_error(k, err, ZM_ERR_CONFIG,
		                     "unit '%s' listed twice", name);
	if ((k = zm_node_get(n, "shared")) &&
	    (st = zm_node_bool(k, "shared", &shared, err)))
		return st;
	if ((k = zm_node_get(n, "agreement"))) {
		if ((st = zm_node_double(k, "agreement", -1e300, 1e300, &ag,
		                         err)))
			return st;
		has_ag = true;
	}
	if ((k = zm_node_get(n, "reason")) &&
	    (st = zm_node_string(k, "reason", &reason, err)))
		return st;
	if ((st = zm_gran_decision_add(d, name, shared, has_ag, ag, reason,
	                               err)))
		return st;
	d->units[d->n_units - 1].line = n->line;
	d->units[d->n_units - 1].col = n->col;
	return ZM_OK;
}

enum zm_status zm_gran_decision_parse(const struct zm_node *root,
                                      const struct zm_arch *arch,
                                      struct zm_gran_decision *d,
                                      struct zm_error *err)
{
	static const char *const keys[] = { "level", "units", "reason", NULL };
	const struct zm_node *n;
	const char *s;
	enum zm_status st;
	size_t i;

	zm_gran_decision_release(d);
	if ((st = zm_node_expect(root, ZM_NODE_MAP, "granularity decision",
	                         err)) ||
	    (st = zm_node_check_keys(root, keys, "granularity decision", err)))
		return st;
	if (root->source && !(d->source = zm_strdup(root->source)))
		return zm_error_set(err, ZM_ERR_NOMEM, "granularity: out of memory");
	if (!(n = zm_node_get(root, "level"))) {
		st = zm_node_error(root, err, ZM_ERR_CONFIG,
		                   "missing 'level' (full, group or layer)");
		goto fail;
	}
	if ((st = zm_node_string(n, "level", &s, err)))
		goto fail;
	if (!zm_gran_level_parse(s, &d->level)) {
		st = zm_node_error(n, err, ZM_ERR_CONFIG,
		                   "expected level full, group or layer, not '%s'",
		                   s);
		goto fail;
	}
	if ((n = zm_node_get(root, "reason"))) {
		if ((st = zm_node_string(n, "reason", &s, err)))
			goto fail;
		if (!(d->reason = zm_strdup(s))) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "out of memory");
			goto fail;
		}
	}
	if ((n = zm_node_get(root, "units"))) {
		if ((st = zm_node_expect(n, ZM_NODE_SEQ, "units", err)))
			goto fail;
		for (i = 0; i < n->count; i++)
			if ((st = parse_unit(n->items[i], d, err)))
				goto fail;
	}
	if (arch && (st = zm_gran_decision_validate(d, arch, err)))
		goto fail;
	return ZM_OK;
fail:
	zm_gran_decision_release(d);
	return st;
}

enum zm_status zm_gran_decision_load(const char *path,
                                     const struct zm_arch *arch,
                                     struct zm_gran_decision *d,
                                     struct zm_error *err)
{
	struct zm_node *root = NULL;
	enum zm_status st;

	if ((st = zm_config_load(path, &root, err)))
		return st;
	st = zm_gran_decision_parse(root, arch, d, err);
	zm_node_free(root);
	return st;
}

/* Marks shared the units of the comma-separated names of list: groups
 * (the units of their layers) or layers. */
static enum zm_status share_names(struct zm_gran_decision *d,
                                  const char *list, bool groups,
                                  const struct zm_arch *arch,
                                  const struct zm_gran_units *u,
                                  struct zm_error *err)
{
	const char *p = list;
	enum zm_status st;
	char name[ZM_LAYER_NAME_MAX + 1];

	for (;;) {
		size_t len = strcspn(p, ","), l;
		bool found = false;
		if (len == 0 || len > ZM_LAYER_NAME_MAX)
			return zm_error_set(err, ZM_ERR_USAGE,
			                    "expected NAME,... in '%s'", list);
		memcpy(name, p, len);
		name[len] = '\0';
		for (l = 0; l < arch->n_layers; l++) {
			const struct zm_layer_spec *s = &arch->layers[l];
			const char *unit = u->names[u->layer_unit[l]];
			if (strcmp(groups ? s->group : s->name, name) != 0)
				continue;
			found = true;
			if (zm_gran_decision_shared(d, unit))
				continue;
			if ((st = zm_gran_decision_add(d, unit, true, false, 0,
			                               "share list", err)))
				return st;
		}
		if (!found)
			return zm_error_set(err, ZM_ERR_USAGE,
			                    "the model has no %s '%s' to share",
			                    groups ? "layer group" : "layer", name);
		if (p[len] == '\0')
			return ZM_OK;
		p += len + 1;
	}
}

enum zm_status zm_gran_decision_from_share(struct zm_gran_decision *d,
                                           enum zm_gran_level level,
                                           const char *share,
                                           const struct zm_arch *arch,
                                           struct zm_error *err)
{
	struct zm_gran_units u;
	enum zm_status st = ZM_OK;
	size_t i;

	zm_gran_decision_release(d);
	d->level = level;
	if ((st = zm_gran_units_init(&u, level, arch, err)))
		return st;
	if (strcmp(share, "all") == 0 || strcmp(share, "none") == 0) {
		bool all = share[0] == 'a';
		for (i = 0; i < u.n_units && st == ZM_OK; i++)
			st = zm_gran_decision_add(d, u.names[i], all, false, 0,
			                          "share list", err);
	} else if (strncmp(share, "groups=", 7) == 0) {
		if (level == ZM_GRAN_FULL)
			st = zm_error_set(err, ZM_ERR_USAGE, "sharing groups=... "
			                  "needs the group or layer level");
		else
			st = share_names(d, share + 7, true, arch, &u, err);
	} else if (strncmp(share, "layers=", 7) == 0) {
		if (level != ZM_GRAN_LAYER)
			st = zm_error_set(err, ZM_ERR_USAGE, "sharing layers=... "
			                  "needs the layer level");
		else
			st = share_names(d, share + 7, false, arch, &u, err);
	} else {
		st = zm_error_set(err, ZM_ERR_USAGE, "sharing: expected all, "
		                  "none, groups=G,... or layers=L,..., not '%s'",
		                  share);
	}
	zm_gran_units_release(&u);
	if (st != ZM_OK)
		zm_gran_decision_release(d);
	return st;
}

enum zm_status zm_gran_decision_layer_mask(const struct zm_gran_decision *d,
                                           const struct zm_arch *arch,
                                           bool *shared,
                                           struct zm_error *err)
{
	struct zm_gran_units u;
	enum zm_status st;
	size_t l;

	if ((st = zm_gran_units_init(&u, d->level, arch, err)))
		return st;
	for (l = 0; l < arch->n_layers; l++)
		shared[l] = zm_gran_decision_shared(d,
		                                    u.names[u.layer_unit[l]]);
	zm_gran_units_release(&u);
	return ZM_OK;
}

void zm_gran_decision_to_yaml(const struct zm_gran_decision *d,
                              struct zm_buf *b)
{
	size_t i;

	zm_buf_printf(b, "level: %s\n", zm_gran_level_name(d->level));
	zm_buf_puts(b, d->n_units ? "units:\n" : "units: []\n");
	for (i = 0; i < d->n_units; i++) {
		const struct zm_gran_unit *u = &d->units[i];
		zm_buf_puts(b, "  - {unit: ");
		zm_yaml_scalar(b, u->unit, false);
		zm_buf_printf(b, ", shared: %s", u->shared ? "true" : "false");
		if (u->has_agreement) {
			zm_buf_puts(b, ", agreement: ");
			zm_json_double(b, u->agreement);
		}
		if (u->reason) {
			zm_buf_puts(b, ", reason: ");
			zm_json_string(b, u->reason, strlen(u->reason));
		}
		zm_buf_puts(b, "}\n");
	}
	if (d->reason) {
		zm_buf_puts(b, "reason: ");
		zm_json_string(b, d->reason, strlen(d->reason));
		zm_buf_puts(b, "\n");
	}
}

enum zm_status zm_gran_decision_write(const struct zm_gran_decision *d,
                                      const char *path, struct zm_error *err)
{
	struct zm_buf b;
	enum zm_status st;

	zm_buf_init(&b);
	zm_gran_decision_to_yaml(d, &b);
	if (b.failed) {
		zm_buf_release(&b);
		return zm_error_set(err, ZM_ERR_NOMEM, "granularity: out of memory");
	}
	st = zm_write_file_atomic(path, b.data, b.len, err);
	zm_buf_release(&b);
	return st;
}
