/*
 * The data-input options of predict, slice and tensor (datain.h).
 */
#include <string.h>

#include "cli.h"
#include "datain.h"

bool zm_cli_data_from(const char *arg, bool allow_stream,
                      enum zm_dataset_kind *kind)
{
	if (allow_stream && strcmp(arg, "stream") == 0)
		*kind = ZM_DATASET_STREAM;
	else if (strcmp(arg, "csv") == 0)
		*kind = ZM_DATASET_CSV;
	else if (strcmp(arg, "idx") == 0)
		*kind = ZM_DATASET_IDX;
	else {
		zm_cli_warn("--from: expected %s, got '%s'", allow_stream ?
		            "stream, csv or idx" : "csv or idx", arg);
		return false;
	}
	return true;
}

bool zm_cli_data_check(enum zm_dataset_kind from, const char *images,
                       const char *labels, const char *label,
                       bool has_file)
{
	if (from == ZM_DATASET_IDX) {
		if (!images) {
			zm_cli_warn("--from idx needs --images IDX");
			return false;
		}
		if (has_file) {
			zm_cli_warn("--from idx reads --images IDX (and "
			            "--labels IDX), not FILE");
			return false;
		}
	} else if (images || labels) {
		zm_cli_warn("--images and --labels need --from idx");
		return false;
	}
	if (label && from != ZM_DATASET_CSV) {
		zm_cli_warn("--label needs --from csv");
		return false;
	}
	return true;
}
