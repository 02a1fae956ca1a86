/*
 * Granularity: the three levels at which models share or weight their
 * parameters (the whole model, a layer group, a layer), the units an
 * architecture has at each level, and the granularity decision file that
 * granctl writes and merge and predict read (DESIGN.md section 8,
 * zoomerge-granularity(5)):
 *
 *   level: layer                   # full | group | layer
 *   units:
 *     - {unit: fc1, shared: true, agreement: 0.93, reason: "updates agree"}
 *   reason: "agreement differs by layer"
 *
 * Units are named "model" at the full level, by group name (in order of
 * first appearance in the arch) at the group level and by layer name at
 * the layer level.  Every layer, parameterless ones included, belongs to
 * exactly one unit, so per-unit weights map to per-layer weights with one
 * table lookup.
 */
#ifndef ZM_GRANULARITY_H
#define ZM_GRANULARITY_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "error.h"
#include "json.h"
#include "model.h"

enum zm_gran_level {
	ZM_GRAN_FULL,
	ZM_GRAN_GROUP,
	ZM_GRAN_LAYER
};

/* The name of the single unit of the full level. */
#define ZM_GRAN_MODEL_UNIT "model"

/* "full", "group", "layer". */
const char *zm_gran_level_name(enum zm_gran_level level);
/* Parses those names; false when unknown. */
bool zm_gran_level_parse(const char *s, enum zm_gran_level *out);

/* The units of an architecture at one level. */
struct zm_gran_units {
	enum zm_gran_level level;
	size_t n_units;
	char **names;            /* owned [n_units] owned strings */
	size_t n_layers;         /* the arch's layer count */
	size_t *layer_unit;      /* owned [n_layers]: unit index of each layer */
};

/*
 * Builds the units of arch at level into u (caller-owned, released with
 * zm_gran_units_release).  ZM_ERR_NOMEM on allocation failure, leaving u
 * empty.
 */
enum zm_status zm_gran_units_init(struct zm_gran_units *u,
                                  enum zm_gran_level level,
                                  const struct zm_arch *arch,
                                  struct zm_error *err);
void zm_gran_units_release(struct zm_gran_units *u);

/* Index of the unit called name, or -1. */
ptrdiff_t zm_gran_units_find(const struct zm_gran_units *u, const char *name);

/* One unit of a decision. */
struct zm_gran_unit {
	char *unit;              /* owned */
	bool shared;
	bool has_agreement;
	double agreement;        /* when has_agreement */
	char *reason;            /* owned, NULL when absent */
	int line, col;           /* position in the file, 0 when built */
};

/* A granularity decision.  Units that it does not list are independent. */
struct zm_gran_decision {
	enum zm_gran_level level;
	struct zm_gran_unit *units;   /* owned [n_units] */
	size_t n_units;
	char *reason;                 /* owned, NULL when absent */
	char *source;                 /* owned file name for messages, or NULL */
};

void zm_gran_decision_init(struct zm_gran_decision *d);
/* Frees everything d owns and re-initialises it. */
void zm_gran_decision_release(struct zm_gran_decision *d);

/*
 * Reads a decision from a parsed YAML tree into d (released first).
 * Unknown keys, a missing or unknown level, a unit without a name, a
 * duplicate unit, a non-boolean shared or a non-number agreement give
 * ZM_ERR_CONFIG with "SOURCE:LINE:COL: ..."; when arch is not NULL, unit
 * names that are no unit of arch at the level are refused the same way.
 * On failure d is left empty.
 */
enum zm_status zm_gran_decision_parse(const struct zm_node *root,
                                      const struct zm_arch *arch,
                                      struct zm_gran_decision *d,
                                      struct zm_error *err);

/* Loads and parses a decision file ("-": stdin); errors as above and as
 * zm_config_load. */
enum zm_status zm_gran_decision_load(const char *path,
                                     const struct zm_arch *arch,
                                     struct zm_gran_decision *d,
                                     struct zm_error *err);

/* Checks the decision's unit names against arch at its level:
 * ZM_ERR_CONFIG naming the unit (with its line and column when it came
 * from a file) and the units that exist. */
enum zm_status zm_gran_decision_validate(const struct zm_gran_decision *d,
                                         const struct zm_arch *arch,
                                         struct zm_error *err);

/*
 * Builds a decision from the command line's --granularity LEVEL --share
 * SPEC: "all", "none", "groups=G,..." (group or layer level: the layers
 * of those groups) or "layers=L,..." (layer level).  Names are checked
 * against arch (ZM_ERR_USAGE naming the unknown one).  d is released
 * first; on failure it is left empty.
 */
enum zm_status zm_gran_decision_from_share(struct zm_gran_decision *d,
                                           enum zm_gran_level level,
                                           const char *share,
                                           const struct zm_arch *arch,
                                           struct zm_error *err);

/* Adds a unit (strings copied; reason may be NULL). */
enum zm_status zm_gran_decision_add(struct zm_gran_decision *d,
                                    const char *unit, bool shared,
                                    bool has_agreement, double agreement,
                                    const char *reason, struct zm_error *err);

/* Whether the unit called name is shared (false when not listed). */
bool zm_gran_decision_shared(const struct zm_gran_decision *d,
                             const char *unit);

/*
 * Fills shared[l] for each layer l of arch: whether the unit of that layer
 * at d's level is shared.  shared has arch->n_layers entries.
 */
enum zm_status zm_gran_decision_layer_mask(const struct zm_gran_decision *d,
                                           const struct zm_arch *arch,
                                           bool *shared,
                                           struct zm_error *err);

/* Appends the decision as YAML (the format above, read back by
 * zm_gran_decision_parse to an equal decision).  Failures set b->failed. */
void zm_gran_decision_to_yaml(const struct zm_gran_decision *d,
                              struct zm_buf *b);

/* Writes the YAML to path ("-": stdout) atomically (see fileio.h). */
enum zm_status zm_gran_decision_write(const struct zm_gran_decision *d,
                                      const char *path, struct zm_error *err);

#endif
