/*
 * Atomic output files: commit makes the exact bytes appear with ordinary
 * permissions, abort and every injected failure (open, write, fsync,
 * rename) leave the old file and no temporary file behind; whole-file
 * reads respect their size limit; input files inflate gzip members,
 * rewind (a pipe through its spooled copy) and refuse every cut.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "fileio.h"
#include "mem.h"
#include "unit.h"

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

/* The whole content of path (malloc'd), or NULL when it does not exist. */
static char *get(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t cap = 1 << 20;

	if (!f)
		return NULL;
	buf = malloc(cap);
	*len = fread(buf, 1, cap, f);
	fclose(f);
	return buf;
}

START_TEST(commit_exact_content)
{
	const char *dir = unit_tmpdir();
	char path[4096], *got;
	struct zm_outfile f;
	struct zm_error err;
	struct stat st;
	size_t len, i, total = 0;
	char *big = malloc(600000);
	mode_t old = umask(027);

	for (i = 0; i < 600000; i++)
		big[i] = (char)(i * 31 + 7);
	snprintf(path, sizeof(path), "%s/out.txt", dir);
	put(path, "previous content");
	ck_assert_int_eq(zm_outfile_open(&f, path, true, &err), ZM_OK);
	/* Nothing visible before commit. */
	got = get(path, &len);
	ck_assert_uint_eq(len, 16);
	free(got);
	ck_assert_int_eq(zm_outfile_write(&f, "head:", 5, &err), ZM_OK);
	ck_assert_int_eq(zm_outfile_printf(&f, &err, "%d-%s;", 42, "x"), ZM_OK);
	ck_assert_int_eq(zm_outfile_write(&f, big, 1000, &err), ZM_OK);
	ck_assert_int_eq(zm_outfile_write(&f, big, 600000, &err), ZM_OK);
	ck_assert_int_eq(zm_outfile_printf(&f, &err, "%s", ""), ZM_OK);
	ck_assert_int_eq(zm_outfile_commit(&f, &err), ZM_OK);
	got = get(path, &len);
	total = 5 + 5 + 1000 + 600000;
	ck_assert_uint_eq(len, total);
	ck_assert(memcmp(got, "head:42-x;", 10) == 0);
	ck_assert(memcmp(got + 10, big, 1000) == 0);
	ck_assert(memcmp(got + 1010, big, 600000) == 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0640);
	ck_assert_uint_eq(unit_count_entries(dir), 1);
	umask(old);
	free(got);
	free(big);
}
END_TEST

START_TEST(printf_long)
{
	char path[4096], *got, want[5000];
	struct zm_outfile f;
	struct zm_error err;
	size_t len;

	memset(want, 'q', sizeof(want) - 1);
	want[sizeof(want) - 1] = '\0';
	snprintf(path, sizeof(path), "%s/p.txt", unit_tmpdir());
	ck_assert_int_eq(zm_outfile_open(&f, path, false, &err), ZM_OK);
	ck_assert_int_eq(zm_outfile_printf(&f, &err, "<%s>", want), ZM_OK);
	ck_assert_int_eq(zm_outfile_commit(&f, &err), ZM_OK);
	got = get(path, &len);
	ck_assert_uint_eq(len, strlen(want) + 2);
	ck_assert_int_eq(got[0], '<');
	ck_assert(memcmp(got + 1, want, strlen(want)) == 0);
	ck_assert_int_eq(got[len - 1], '>');
	free(got);
}
END_TEST

START_TEST(abort_keeps_old)
{
	const char *dir = unit_tmpdir();
	char path[4096], *got;
	struct zm_outfile f;
	struct zm_error err;
	size_t len;

	snprintf(path, sizeof(path), "%s/keep", dir);
	put(path, "old");
	ck_assert_int_eq(zm_outfile_open(&f, path, true, &err), ZM_OK);
	ck_assert_int_eq(zm_outfile_write(&f, "new!", 4, &err), ZM_OK);
	ck_assert_uint_eq(unit_count_entries(dir), 2);
	zm_outfile_abort(&f);
	got = get(path, &len);
	ck_assert_uint_eq(len, 3);
	ck_assert(memcmp(got, "old", 3) == 0);
	ck_assert_uint_eq(unit_count_entries(dir), 1);
	free(got);
	/* Aborting a zeroed struct (never opened) is harmless. */
	memset(&f, 0, sizeof(f));
	zm_outfile_abort(&f);
	zm_outfile_abort(NULL);
}
END_TEST

static const char *const fault_kinds[] = {
	"write:1", "fsync:1", "rename:1", "open:1",
};

START_TEST(fault_keeps_old)
{
	const char *dir = unit_tmpdir();
	char path[4096], *got;
	struct zm_outfile f;
	struct zm_error err;
	enum zm_status st;
	size_t len;

	snprintf(path, sizeof(path), "%s/target", dir);
	put(path, "old");
	setenv("ZM_FAULT", fault_kinds[_i], 1);
	zm_fault_reset();
	st = zm_outfile_open(&f, path, true, &err);
	if (st == ZM_OK) {
		st = zm_outfile_write(&f, "new content", 11, &err);
		ck_assert_int_eq(st, ZM_OK);	/* buffered */
		st = zm_outfile_commit(&f, &err);
	}
	unsetenv("ZM_FAULT");
	zm_fault_reset();
	ck_assert_int_eq(st, ZM_ERR_IO);
	ck_assert_msg(strstr(err.msg, "target") != NULL, "%s", err.msg);
	ck_assert_msg(strstr(err.msg, strerror(_i == 0 ? ENOSPC : EIO)) != NULL,
	              "%s", err.msg);
	got = get(path, &len);
	ck_assert_uint_eq(len, 3);
	ck_assert(memcmp(got, "old", 3) == 0);
	ck_assert_uint_eq(unit_count_entries(dir), 1);
	free(got);
}
END_TEST

/* A write fault on a large direct write surfaces from zm_outfile_write. */
START_TEST(fault_on_direct_write)
{
	const char *dir = unit_tmpdir();
	char path[4096];
	struct zm_outfile f;
	struct zm_error err;
	char *big = calloc(1, 1 << 20);

	snprintf(path, sizeof(path), "%s/t", dir);
	ck_assert_int_eq(zm_outfile_open(&f, path, true, &err), ZM_OK);
	setenv("ZM_FAULT", "write:1", 1);
	zm_fault_reset();
	ck_assert_int_eq(zm_outfile_write(&f, big, 1 << 20, &err), ZM_ERR_IO);
	unsetenv("ZM_FAULT");
	zm_fault_reset();
	zm_outfile_abort(&f);
	ck_assert_uint_eq(unit_count_entries(dir), 0);
	free(big);
}
END_TEST

START_TEST(missing_directory)
{
	char path[4096];
	struct zm_outfile f;
	struct zm_error err;

	snprintf(path, sizeof(path), "%s/no/such/dir/file", unit_tmpdir());
	ck_assert_int_ne(zm_outfile_open(&f, path, true, &err), ZM_OK);
	ck_assert(strstr(err.msg, "no/such/dir/file") != NULL);
}
END_TEST

START_TEST(read_file_limits)
{
	const char *dir = unit_tmpdir();
	char path[4096], *data;
	struct zm_error err;
	size_t len;

	snprintf(path, sizeof(path), "%s/r", dir);
	put(path, "0123456789");
	ck_assert_int_eq(zm_read_file(path, 10, &data, &len, &err), ZM_OK);
	ck_assert_uint_eq(len, 10);
	ck_assert_str_eq(data, "0123456789");
	free(data);
	ck_assert_int_eq(zm_read_file(path, 9, &data, &len, &err), ZM_ERR_NOMEM);
	ck_assert_ptr_null(data);
	ck_assert(strstr(err.msg, path) != NULL);
	put(path, "");
	ck_assert_int_eq(zm_read_file(path, 0, &data, &len, &err), ZM_OK);
	ck_assert_uint_eq(len, 0);
	ck_assert_str_eq(data, "");
	free(data);
	snprintf(path, sizeof(path), "%s/absent", dir);
	ck_assert_int_eq(zm_read_file(path, 10, &data, &len, &err),
	                 ZM_ERR_NOTFOUND);
	ck_assert(strstr(err.msg, "absent") != NULL);
}
END_TEST

START_TEST(read_file_large)
{
	char path[4096], *data;
	struct zm_error err;
	size_t len, i;
	FILE *f;

	snprintf(path, sizeof(path), "%s/big", unit_tmpdir());
	f = fopen(path, "wb");
	for (i = 0; i < 300000; i++)
		fputc((int)(i % 251), f);
	fclose(f);
	ck_assert_int_eq(zm_read_file(path, 1 << 20, &data, &len, &err), ZM_OK);
	ck_assert_uint_eq(len, 300000);
	for (i = 0; i < len; i++)
		ck_assert_int_eq((unsigned char)data[i], (int)(i % 251));
	free(data);
}
END_TEST

/* A target that is not a regular file (here a FIFO; /dev/null and
 * /dev/full behave the same) is written in place, never renamed over. */
START_TEST(fifo_written_in_place)
{
	const char *dir = unit_tmpdir();
	char path[4096], got[16] = { 0 };
	struct zm_outfile f;
	struct zm_error err;
	struct stat st;
	int rfd;

	snprintf(path, sizeof(path), "%s/fifo", dir);
	ck_assert_int_eq(mkfifo(path, 0600), 0);
	rfd = open(path, O_RDONLY | O_NONBLOCK);
	ck_assert_int_ge(rfd, 0);
	ck_assert_int_eq(zm_outfile_open(&f, path, true, &err), ZM_OK);
	ck_assert_int_eq(zm_outfile_write(&f, "hello", 5, &err), ZM_OK);
	ck_assert_int_eq(zm_outfile_commit(&f, &err), ZM_OK);
	ck_assert_int_eq(read(rfd, got, sizeof(got) - 1), 5);
	ck_assert_str_eq(got, "hello");
	close(rfd);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISFIFO(st.st_mode));
	ck_assert_uint_eq(unit_count_entries(dir), 1);
}
END_TEST

/* One gzip member of text, by zlib directly (an independent encoder). */
static size_t gz_member(const char *text, unsigned char *out, size_t cap)
{
	z_stream z;
	size_t n;

	memset(&z, 0, sizeof(z));
	ck_assert_int_eq(deflateInit2(&z, 6, Z_DEFLATED, 31, 8,
	                              Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (unsigned char *)text;
	z.avail_in = (uInt)strlen(text);
	z.next_out = out;
	z.avail_out = (uInt)cap;
	ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
	n = cap - z.avail_out;
	deflateEnd(&z);
	return n;
}

/* Everything f gives, as a string in buf, or the error's status. */
static enum zm_status slurp(struct zm_infile *f, char *buf, size_t cap,
                            struct zm_error *err)
{
	size_t len = 0, got;
	enum zm_status st;

	do {
		st = zm_infile_read(f, buf + len, cap - 1 - len, &got, err);
		if (st != ZM_OK)
			return st;
		len += got;
	} while (got > 0 && len < cap - 1);
	buf[len] = '\0';
	return ZM_OK;
}

/* Two members read as one text, from memory, a file and a pipe, again
 * after a rewind; each cut, in either member, is "truncated" naming it. */
START_TEST(infile_members)
{
	unsigned char gz[512];
	char buf[256], path[4096];
	struct zm_infile *f;
	struct zm_error err;
	size_t n1, n;
	int fds[2], saved;
	FILE *w;

	n1 = gz_member("a,b\n1,2\n", gz, sizeof(gz));
	n = n1 + gz_member("3,4\n", gz + n1, sizeof(gz) - n1);
	ck_assert_int_eq(zm_infile_open_mem(&f, gz, n, "m", &err), ZM_OK);
	ck_assert_int_eq(slurp(f, buf, sizeof(buf), &err), ZM_OK);
	ck_assert_str_eq(buf, "a,b\n1,2\n3,4\n");
	ck_assert_int_eq(zm_infile_rewind(f, &err), ZM_OK);
	ck_assert_int_eq(slurp(f, buf, sizeof(buf), &err), ZM_OK);
	ck_assert_str_eq(buf, "a,b\n1,2\n3,4\n");
	zm_infile_close(f);

	/* Every cut: in member 1's body or trailer, at the boundary plus a
	 * part of member 2's header, in member 2.  (One byte alone is not
	 * gzip: without the whole magic, input is taken as it is.) */
	for (size_t cut = 1; cut + 2 <= n; cut++) {
		unsigned long want = n - cut <= n1 ? 1 : 2;
		char msg[64];

		if (n - cut == n1)
			continue;       /* a whole first member: a clean end */
		ck_assert_int_eq(zm_infile_open_mem(&f, gz, n - cut, "m", &err),
		                 ZM_OK);
		ck_assert_int_eq(slurp(f, buf, sizeof(buf), &err), ZM_ERR_FORMAT);
		snprintf(msg, sizeof(msg), "m: truncated (gzip stream ends inside "
		         "member %lu)", want);
		ck_assert_msg(strcmp(err.msg, msg) == 0, "cut %zu: %s", cut,
		              err.msg);
		zm_infile_close(f);
	}

	/* A file, rewound by seeking. */
	snprintf(path, sizeof(path), "%s/two.gz", unit_tmpdir());
	w = fopen(path, "wb");
	ck_assert_ptr_nonnull(w);
	ck_assert_uint_eq(fwrite(gz, 1, n, w), n);
	ck_assert_int_eq(fclose(w), 0);
	ck_assert_int_eq(zm_infile_open(&f, path, ZM_INFILE_REWINDABLE, &err),
	                 ZM_OK);
	ck_assert_int_eq(slurp(f, buf, sizeof(buf), &err), ZM_OK);
	ck_assert_int_eq(zm_infile_rewind(f, &err), ZM_OK);
	ck_assert_int_eq(slurp(f, buf, sizeof(buf), &err), ZM_OK);
	ck_assert_str_eq(buf, "a,b\n1,2\n3,4\n");
	zm_infile_close(f);

	/* Standard input as a pipe, spooled so it can be rewound. */
	ck_assert_int_eq(pipe(fds), 0);
	ck_assert_int_eq(write(fds[1], gz, n), (ssize_t)n);
	close(fds[1]);
	saved = dup(STDIN_FILENO);
	ck_assert_int_eq(dup2(fds[0], STDIN_FILENO), STDIN_FILENO);
	close(fds[0]);
	ck_assert_int_eq(zm_infile_open(&f, "-", ZM_INFILE_REWINDABLE, &err),
	                 ZM_OK);
	ck_assert_str_eq(zm_infile_name(f), "<stdin>");
	ck_assert_int_eq(slurp(f, buf, sizeof(buf), &err), ZM_OK);
	ck_assert_int_eq(zm_infile_rewind(f, &err), ZM_OK);
	ck_assert_int_eq(slurp(f, buf, sizeof(buf), &err), ZM_OK);
	ck_assert_str_eq(buf, "a,b\n1,2\n3,4\n");
	zm_infile_close(f);
	dup2(saved, STDIN_FILENO);
	close(saved);
}
END_TEST

/* settle: at the end of a member it checks the trailer, inside one it
 * reads nothing, on raw input it does nothing. */
START_TEST(infile_settle)
{
	unsigned char gz[256];
	char buf[16];
	struct zm_infile *f;
	struct zm_error err;
	size_t n, got;

	n = gz_member("hello", gz, sizeof(gz));
	ck_assert_int_eq(zm_infile_open_mem(&f, gz, n - 2, "s", &err), ZM_OK);
	ck_assert_int_eq(zm_infile_read(f, buf, 5, &got, &err), ZM_OK);
	ck_assert_uint_eq(got, 5);
	ck_assert_int_eq(zm_infile_settle(f, &err), ZM_ERR_FORMAT);
	ck_assert_str_eq(err.msg, "s: truncated (gzip stream ends inside "
	                 "member 1)");
	zm_infile_close(f);
	ck_assert_int_eq(zm_infile_open_mem(&f, gz, n, "s", &err), ZM_OK);
	ck_assert_int_eq(zm_infile_read(f, buf, 2, &got, &err), ZM_OK);
	ck_assert_uint_eq(got, 2);
	ck_assert_int_eq(zm_infile_settle(f, &err), ZM_OK);   /* mid-member */
	ck_assert_int_eq(zm_infile_read(f, buf, 3, &got, &err), ZM_OK);
	ck_assert(got == 3 && memcmp(buf, "llo", 3) == 0);
	ck_assert_int_eq(zm_infile_settle(f, &err), ZM_OK);   /* whole */
	ck_assert_int_eq(zm_infile_read(f, buf, 3, &got, &err), ZM_OK);
	ck_assert_uint_eq(got, 0);
	zm_infile_close(f);
	ck_assert_int_eq(zm_infile_open_mem(&f, "raw", 3, "r", &err), ZM_OK);
	ck_assert_int_eq(zm_infile_read(f, buf, 3, &got, &err), ZM_OK);
	ck_assert_int_eq(zm_infile_settle(f, &err), ZM_OK);
	zm_infile_close(f);
}
END_TEST

Suite *suite_fileio(void)
{
	Suite *s = suite_create("fileio");
	TCase *tc = tcase_create("fileio");

	tcase_add_test(tc, commit_exact_content);
	tcase_add_test(tc, printf_long);
	tcase_add_test(tc, abort_keeps_old);
	tcase_add_loop_test(tc, fault_keeps_old, 0,
	                    (int)(sizeof(fault_kinds) / sizeof(fault_kinds[0])));
	tcase_add_test(tc, fault_on_direct_write);
	tcase_add_test(tc, missing_directory);
	tcase_add_test(tc, fifo_written_in_place);
	tcase_add_test(tc, read_file_limits);
	tcase_add_test(tc, read_file_large);
	tcase_add_test(tc, infile_members);
	tcase_add_test(tc, infile_settle);
	suite_add_tcase(s, tc);
	return s;
}
