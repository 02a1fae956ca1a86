/*
 * libFuzzer target for the zoo index: the input becomes zoo.yaml of a
 * scratch zoo which is opened for reading, the way every reader of a zoo
 * starts.  An index that opens is rendered back with zm_zoo_to_yaml; that
 * text must open again and render to the same bytes, and every file it
 * names must stay inside the zoo directory.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zoo.h"

static char dir[64];
static char index_path[96];

static void make_dir(void)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	snprintf(dir, sizeof(dir), "%s/zm-fuzz-zoo.XXXXXX", base);
	if (!mkdtemp(dir))
		abort();
	snprintf(index_path, sizeof(index_path), "%s/zoo.yaml", dir);
}

static void remove_dir(void)
{
	char path[128];

	unlink(index_path);
	snprintf(path, sizeof(path), "%s/.lock", dir);
	unlink(path);
	rmdir(dir);
}

static void write_index(const void *data, size_t size)
{
	FILE *f = fopen(index_path, "wb");

	if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
		abort();
}

/* True when some '/'-separated component of p is "..". */
static bool has_dotdot(const char *p)
{
	for (;;) {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return true;
		if (!p[n])
			return false;
		p += n + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zm_zoo *zoo = NULL, *again = NULL;
	struct zm_error err;
	char *text = NULL, *text2 = NULL;
	size_t i;

	if (!dir[0]) {
		make_dir();
		atexit(remove_dir);
	}
	write_index(data, size);
	if (zm_zoo_open(&zoo, dir, ZM_ZOO_READ, &err) != ZM_OK)
		return 0;
	for (i = 0; i < zoo->n_models; i++) {
		const struct zm_zoo_entry *e = &zoo->models[i];
		if (!zm_zoo_valid_name(e->name) || !e->file ||
		    e->file[0] == '/' || has_dotdot(e->file) ||
		    zm_zoo_find(zoo, e->name) != e)
			abort();
	}
	if (zm_zoo_to_yaml(zoo, &text, &err) != ZM_OK)
		goto out;
	write_index(text, strlen(text));
	if (zm_zoo_open(&again, dir, ZM_ZOO_READ, &err) != ZM_OK) {
		if (err.status != ZM_ERR_NOMEM)
			abort();
		goto out;
	}
	if (again->n_models != zoo->n_models || again->keep != zoo->keep)
		abort();
	if (zm_zoo_to_yaml(again, &text2, &err) == ZM_OK &&
	    strcmp(text, text2) != 0)
		abort();
out:
	free(text);
	free(text2);
	zm_zoo_close(again);
	zm_zoo_close(zoo);
	return 0;
}
