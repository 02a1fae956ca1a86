/*
 * PyTorch state dicts in and out: a plain safetensors file or a NumPy .npz
 * archive holding MODULE.weight and MODULE.bias tensors, matched to an
 * architecture's layers with parameters, and a model's parameters written
 * back under the names PyTorch gave them.
 *
 * zoomerge already keeps parameters in PyTorch's layout (nn.Linear weight
 * [out, in], nn.Conv2d weight [out_c, in_c, kh, kw], flatten in NCHW
 * order), so nothing is transposed: only names are mapped.  The module
 * name of a layer is, in this order of preference: the arch's map: entry
 * for it; the layer's own name when the file has LAYER.weight for every
 * layer; else, for an nn.Sequential, the layer's rank among the file's
 * numbered modules (0, 2, 4 or net.0, net.2, ...).  A mapping found by
 * order is recorded in the model's arch (zm_layer_spec.torch, written as
 * the arch's map), so that the export gives the names back.
 */
#ifndef ZM_STATEDICT_H
#define ZM_STATEDICT_H

#include "model.h"
#include "stream.h"

/*
 * Builds a model of arch from the state dict src (not changed); source
 * names the file in messages.  Every layer with parameters needs
 * MODULE.weight and MODULE.bias of its shape, and every tensor of src must
 * belong to a layer (profile.* tensors, a zoomerge data profile, are kept
 * as the model's): a missing, surplus or misshapen tensor is an error
 * (ZM_ERR_DATA) naming the file's tensor and the arch's layer.  Dtypes and
 * finiteness are checked as zm_model_from_doc does.  *out is freed with
 * zm_model_free.
 */
enum zm_status zm_state_dict_import(const struct zm_doc *src,
                                    const char *source,
                                    const struct zm_arch *arch,
                                    struct zm_model **out,
                                    struct zm_error *err);

/*
 * Reads a model for arch from path ("-": standard input): a .npz archive
 * (recognised by its bytes, not its name) or the first document of a
 * safetensors stream, plain or gzip.  A plain state dict goes through
 * zm_state_dict_import; a zoomerge model document (one with zm.arch) must
 * have arch as its architecture and keeps its own metadata.  With arch
 * NULL only a zoomerge model is accepted, as zm_model_load does; a .npz
 * is then refused with ZM_ERR_USAGE (it needs an architecture).
 */
enum zm_status zm_state_dict_load(const char *path,
                                  const struct zm_arch *arch,
                                  struct zm_model **out,
                                  struct zm_error *err);

/*
 * Writes the model's parameters into doc (released first, then owned by
 * the caller) as PyTorch has them: MODULE.weight and MODULE.bias in layer
 * order, F32, nothing else (no metadata, no profile), so that
 * load_state_dict(strict=True) of the matching nn.Module accepts it.
 */
enum zm_status zm_state_dict_export(const struct zm_model *model,
                                    struct zm_doc *doc, struct zm_error *err);

#endif
