/*
 * Atomic output files (temporary name, fsync, rename, directory fsync),
 * whole-file reads, and input files with gzip members inflated and
 * checked.  Every system call that can lose data consults the
 * fault injector first, so the tests can fail each one in turn.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "fileio.h"
#include "mem.h"

/* Large enough that a pipe or disk sees few system calls. */
enum { OUTFILE_BUF = 256 * 1024 };

/* The errno an injected fault reports: a full disk for writes (the usual
 * real cause), an I/O error for the rest. */
static bool fault(const char *kind)
{
	if (!zm_fault_hit(kind))
		return false;
	errno = strcmp(kind, "write") == 0 ? ENOSPC : EIO;
	return true;
}

bool zm_write_all(int fd, const void *data, size_t n)
{
	const char *p = data;

	if (fault("write"))
		return false;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		if (w == 0) {
			errno = EIO;
			return false;
		}
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* The directory part of path ("." when there is none), newly allocated. */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return zm_strdup(".");
	if (slash == path)
		return zm_strdup("/");
	return zm_strndup(path, (size_t)(slash - path));
}

enum zm_status zm_fsync_dir_of(const char *path, struct zm_error *err)
{
	char *dir = dir_of(path);
	int fd, rc;

	if (!dir)
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory", path);
	if (fault("open"))
		fd = -1;
	else
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		zm_error_errno(err, ZM_ERR_IO, "%s: cannot open directory", dir);
		free(dir);
		return ZM_ERR_IO;
	}
	rc = fault("fsync") ? -1 : fsync(fd);
	/* Some file systems cannot sync directories; that is no data loss. */
	if (rc < 0 && errno != EINVAL && errno != ENOTSUP) {
		zm_error_errno(err, ZM_ERR_IO, "%s: fsync of directory", dir);
		close(fd);
		free(dir);
		return ZM_ERR_IO;
	}
	close(fd);
	free(dir);
	return ZM_OK;
}

static void outfile_zero(struct zm_outfile *f)
{
	memset(f, 0, sizeof(*f));
	f->fd = -1;
}

enum zm_status zm_outfile_open(struct zm_outfile *f, const char *path,
                               bool refuse_tty, struct zm_error *err)
{
	const char *base;
	char *dir = NULL;
	size_t n;
	mode_t mask;
	struct stat st;

	outfile_zero(f);
	f->path = zm_strdup(path);
	f->buf = zm_malloc(OUTFILE_BUF);
	if (!f->path || !f->buf)
		goto nomem;
	f->cap = OUTFILE_BUF;
	if (strcmp(path, "-") == 0) {
		if (refuse_tty && isatty(STDOUT_FILENO)) {
			zm_outfile_abort(f);
			return zm_error_set(err, ZM_ERR_USAGE,
			                    "refusing to write binary data to a terminal"
			                    " (use -o FILE or a pipe)");
		}
		f->fd = STDOUT_FILENO;
		f->is_stdout = true;
		return ZM_OK;
	}
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		if (S_ISDIR(st.st_mode)) {
			zm_outfile_abort(f);
			return zm_error_set(err, ZM_ERR_USAGE, "%s: is a directory",
			                    path);
		}
		f->fd = fault("open") ? -1 : open(path, O_WRONLY | O_CLOEXEC);
		if (f->fd < 0) {
			zm_error_errno(err, ZM_ERR_IO, "%s", path);
			zm_outfile_abort(f);
			return ZM_ERR_IO;
		}
		f->direct = true;
		return ZM_OK;
	}
	base = strrchr(path, '/');
	base = base ? base + 1 : path;
	if (!*base) {
		zm_outfile_abort(f);
		return zm_error_set(err, ZM_ERR_USAGE, "%s: is a directory name",
		                    path);
	}
	dir = dir_of(path);
	if (!dir)
		goto nomem;
	/* "<dir>/.<base>.tmp.XXXXXX": hidden, in the same file system as the
	 * target so that rename is atomic. */
	n = strlen(dir) + strlen(base) + 16;
	f->tmp = zm_malloc(n);
	if (!f->tmp)
		goto nomem;
	snprintf(f->tmp, n, "%s/.%s.tmp.XXXXXX", dir, base);
	free(dir);
	dir = NULL;
	if (fault("open"))
		f->fd = -1;
	else
		f->fd = mkstemp(f->tmp);
	if (f->fd < 0) {
		zm_error_errno(err, errno == ENOENT ? ZM_ERR_NOTFOUND : ZM_ERR_IO,
		               "%s: cannot create temporary file", path);
		free(f->tmp);
		f->tmp = NULL;
		zm_outfile_abort(f);
		return err ? err->status : ZM_ERR_IO;
	}
	/* mkstemp makes the file 0600; outputs are ordinary files. */
	mask = umask(0);
	umask(mask);
	if (fchmod(f->fd, 0666 & ~mask) < 0) {
		zm_error_errno(err, ZM_ERR_IO, "%s: chmod", f->tmp);
		zm_outfile_abort(f);
		return ZM_ERR_IO;
	}
	return ZM_OK;
nomem:
	free(dir);
	zm_outfile_abort(f);
	return zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory", path);
}

static enum zm_status outfile_flush(struct zm_outfile *f, struct zm_error *err)
{
	if (f->len == 0)
		return ZM_OK;
	if (!zm_write_all(f->fd, f->buf, f->len)) {
		f->len = 0;
		return zm_error_errno(err, ZM_ERR_IO, "%s: write error",
		                      f->is_stdout ? "<stdout>" : f->path);
	}
	f->len = 0;
	return ZM_OK;
}

enum zm_status zm_outfile_write(struct zm_outfile *f, const void *data,
                                size_t n, struct zm_error *err)
{
	enum zm_status st;

	ZM_ASSERT(f->buf != NULL);
	if (n <= f->cap - f->len) {
		memcpy(f->buf + f->len, data, n);
		f->len += n;
		return ZM_OK;
	}
	st = outfile_flush(f, err);
	if (st != ZM_OK)
		return st;
	/* Large blocks go straight to the file: copying them buys nothing. */
	if (n >= f->cap) {
		if (!zm_write_all(f->fd, data, n))
			return zm_error_errno(err, ZM_ERR_IO, "%s: write error",
			                      f->is_stdout ? "<stdout>" : f->path);
		return ZM_OK;
	}
	memcpy(f->buf, data, n);
	f->len = n;
	return ZM_OK;
}

enum zm_status zm_outfile_printf(struct zm_outfile *f, struct zm_error *err,
                                 const char *fmt, ...)
{
	char small[1024];
	char *big;
	va_list ap;
	int n;
	enum zm_status st;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return zm_error_set(err, ZM_ERR_USAGE, "%s: bad format", f->path);
	if ((size_t)n < sizeof(small))
		return zm_outfile_write(f, small, (size_t)n, err);
	big = zm_malloc((size_t)n + 1);
	if (!big)
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory",
		                    f->path);
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	st = zm_outfile_write(f, big, (size_t)n, err);
	free(big);
	return st;
}

static void outfile_release(struct zm_outfile *f)
{
	free(f->path);
	free(f->tmp);
	free(f->buf);
	outfile_zero(f);
}

enum zm_status zm_outfile_prepare(struct zm_outfile *f, struct zm_error *err)
{
	enum zm_status st = outfile_flush(f, err);

	if (st != ZM_OK)
		return st;
	if (!f->is_stdout && !f->direct &&
	    (fault("fsync") || fsync(f->fd) < 0))
		return zm_error_errno(err, ZM_ERR_IO, "%s: fsync", f->path);
	f->prepared = true;
	return ZM_OK;
}

enum zm_status zm_outfile_commit(struct zm_outfile *f, struct zm_error *err)
{
	enum zm_status st;
	int fd;

	st = outfile_flush(f, err);
	if (st != ZM_OK)
		goto fail;
	if (f->is_stdout) {
		/* The caller closes stdout and checks that (cli.h). */
		outfile_release(f);
		return ZM_OK;
	}
	if (f->direct) {
		fd = f->fd;
		f->fd = -1;
		f->direct = false;
		if (close(fd) < 0) {
			st = zm_error_errno(err, ZM_ERR_IO, "%s: close", f->path);
			goto fail;
		}
		outfile_release(f);
		return ZM_OK;
	}
	if (!f->prepared && (fault("fsync") || fsync(f->fd) < 0)) {
		st = zm_error_errno(err, ZM_ERR_IO, "%s: fsync", f->path);
		goto fail;
	}
	fd = f->fd;
	f->fd = -1;
	if (close(fd) < 0) {
		st = zm_error_errno(err, ZM_ERR_IO, "%s: close", f->path);
		goto fail;
	}
	if (fault("rename") || rename(f->tmp, f->path) < 0) {
		st = zm_error_errno(err, ZM_ERR_IO, "%s: cannot rename %s into place",
		                    f->path, f->tmp);
		goto fail;
	}
	free(f->tmp);
	f->tmp = NULL;
	/* The new file is in place and complete; reporting a failed directory
	 * fsync as an error would tell the caller "nothing changed" when it
	 * did.  A crash before the directory reaches the disk can only bring
	 * back the old, equally complete file. */
	zm_fsync_dir_of(f->path, NULL);
	outfile_release(f);
	return ZM_OK;
fail:
	zm_outfile_abort(f);
	return st;
}

void zm_outfile_abort(struct zm_outfile *f)
{
	if (!f)
		return;
	/* A zeroed struct has fd 0 but no temporary file: never close it. */
	if (f->tmp) {
		if (f->fd >= 0)
			close(f->fd);
		unlink(f->tmp);
	} else if (f->direct && f->fd >= 0) {
		close(f->fd);
	}
	outfile_release(f);
}

enum zm_status zm_read_file(const char *path, size_t max, char **data,
                            size_t *len, struct zm_error *err)
{
	bool is_stdin = strcmp(path, "-") == 0;
	const char *name = is_stdin ? "<stdin>" : path;
	char *buf = NULL;
	size_t n = 0, cap = 0;
	size_t lim = max < SIZE_MAX - 1 ? max + 1 : SIZE_MAX - 1;
	enum zm_status st = ZM_OK;
	int fd;

	*data = NULL;
	*len = 0;
	if (is_stdin) {
		fd = STDIN_FILENO;
	} else {
		fd = fault("open") ? -1 : open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return zm_error_errno(err, errno == ENOENT ?
			                      ZM_ERR_NOTFOUND : ZM_ERR_IO, "%s", path);
	}
	for (;;) {
		ssize_t got;
		if (n == cap) {
			size_t ncap;
			char *nb;
			if (cap > max) {
				st = zm_error_set(err, ZM_ERR_NOMEM,
				                  "%s: larger than %zu bytes", name, max);
				goto out;
			}
			/* One byte past max tells "exactly max" from "more". */
			ncap = cap ? cap * 2 : 4096;
			if (ncap > lim || ncap < cap)
				ncap = lim;
			nb = zm_realloc(buf, ncap + 1);
			if (!nb) {
				st = zm_error_set(err, ZM_ERR_NOMEM,
				                  "%s: out of memory", name);
				goto out;
			}
			buf = nb;
			cap = ncap;
		}
		got = read(fd, buf + n, cap - n);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			st = zm_error_errno(err, ZM_ERR_IO, "%s: read error", name);
			goto out;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	if (n > max) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "%s: larger than %zu bytes",
		                  name, max);
		goto out;
	}
	if (!buf) {
		buf = zm_malloc(1);
		if (!buf) {
			st = zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory",
			                  name);
			goto out;
		}
	}
	buf[n] = '\0';
	*data = buf;
	*len = n;
	buf = NULL;
out:
	if (!is_stdin)
		close(fd);
	free(buf);
	return st;
}

enum zm_status zm_write_file_atomic(const char *path, const void *data,
                                    size_t len, struct zm_error *err)
{
	struct zm_outfile f;
	enum zm_status st;

	st = zm_outfile_open(&f, path, false, err);
	if (st != ZM_OK)
		return st;
	st = zm_outfile_write(&f, len ? data : "", len, err);
	if (st != ZM_OK) {
		zm_outfile_abort(&f);
		return st;
	}
	return zm_outfile_commit(&f, err);
}

/* ---- input files ---- */

enum { INFILE_BUF = 256 * 1024 };

struct zm_infile {
	char *name;                 /* for messages, owned */
	int fd;                     /* -1 for memory input */
	bool close_fd;
	off_t start;                /* where reading began, for rewinding */
	FILE *spool;                /* the copy of a pipe, when rewindable */
	const unsigned char *mem;   /* memory input (borrowed) */
	size_t mem_len;
	/* Input window: compressed (or raw) bytes not yet consumed. */
	unsigned char *in;          /* fd input buffer, owned */
	const unsigned char *in_ptr;
	size_t in_avail;
	bool in_eof;                /* nothing more will arrive */
	/* Decoding. */
	bool started, gzip, member_end, z_ready;
	unsigned long member;       /* 1-based number of the current member */
	z_stream z;
};

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
	size_t n;

	(void)opaque;
	if (!zm_size_mul(items, size, &n))
		return Z_NULL;
	return zm_malloc(n);
}

static void z_free(voidpf opaque, voidpf p)
{
	(void)opaque;
	free(p);
}

void zm_zstream_alloc(struct z_stream_s *z)
{
	z->zalloc = z_alloc;
	z->zfree = z_free;
	z->opaque = Z_NULL;
}

static enum zm_status infile_new(struct zm_infile **fp, const char *name,
                                 struct zm_error *err)
{
	struct zm_infile *f = zm_calloc(1, sizeof(*f));

	*fp = NULL;
	if (!f)
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory", name);
	f->fd = -1;
	f->name = zm_strdup(name);
	if (!f->name) {
		free(f);
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory", name);
	}
	*fp = f;
	return ZM_OK;
}

/* Copies fd to an anonymous temporary file, so it can be read twice. */
static enum zm_status infile_spool(struct zm_infile *f, int fd,
                                   struct zm_error *err)
{
	char buf[65536];
	ssize_t n;

	f->spool = tmpfile();
	if (!f->spool)
		return zm_error_errno(err, ZM_ERR_IO,
		                      "%s: cannot create a temporary file", f->name);
	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return zm_error_errno(err, ZM_ERR_IO, "%s: read error",
			                      f->name);
		}
		if (fwrite(buf, 1, (size_t)n, f->spool) != (size_t)n)
			return zm_error_errno(err, ZM_ERR_IO, "%s: writing the "
			                      "temporary copy", f->name);
	}
	if (fflush(f->spool) != 0 || fseek(f->spool, 0, SEEK_SET) != 0)
		return zm_error_errno(err, ZM_ERR_IO, "%s: writing the temporary "
		                      "copy", f->name);
	return ZM_OK;
}

enum zm_status zm_infile_open(struct zm_infile **fp, const char *path,
                              unsigned flags, struct zm_error *err)
{
	bool is_stdin = strcmp(path, "-") == 0;
	struct zm_infile *f;
	enum zm_status st;
	struct stat sb;

	st = infile_new(&f, is_stdin ? "<stdin>" : path, err);
	if (st != ZM_OK)
		return st;
	f->in = zm_malloc(INFILE_BUF);
	if (!f->in) {
		st = zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory", f->name);
		goto fail;
	}
	f->in_ptr = f->in;
	if (is_stdin) {
		f->fd = STDIN_FILENO;
	} else {
		f->fd = fault("open") ? -1 : open(path, O_RDONLY | O_CLOEXEC);
		if (f->fd < 0) {
			st = zm_error_errno(err, errno == ENOENT ? ZM_ERR_NOTFOUND
			                    : ZM_ERR_IO, "%s", path);
			goto fail;
		}
		f->close_fd = true;
	}
	if (fstat(f->fd, &sb) != 0) {
		st = zm_error_errno(err, ZM_ERR_IO, "%s", f->name);
		goto fail;
	}
	if (S_ISDIR(sb.st_mode)) {
		st = zm_error_set(err, ZM_ERR_IO, "%s: is a directory", f->name);
		goto fail;
	}
	f->start = S_ISREG(sb.st_mode) ? lseek(f->fd, 0, SEEK_CUR) : -1;
	if ((flags & ZM_INFILE_REWINDABLE) && f->start < 0) {
		st = infile_spool(f, f->fd, err);
		if (st != ZM_OK)
			goto fail;
		if (f->close_fd)
			close(f->fd);
		f->fd = fileno(f->spool);
		f->close_fd = false;      /* fclose(spool) closes it */
		f->start = 0;
	}
	*fp = f;
	return ZM_OK;
fail:
	zm_infile_close(f);
	return st;
}

enum zm_status zm_infile_open_mem(struct zm_infile **fp, const void *data,
                                  size_t len, const char *name,
                                  struct zm_error *err)
{
	struct zm_infile *f;
	enum zm_status st;

	st = infile_new(&f, name ? name : "<memory>", err);
	if (st != ZM_OK)
		return st;
	f->mem = data;
	f->mem_len = len;
	f->in_ptr = data;
	f->in_avail = len;
	f->in_eof = true;
	*fp = f;
	return ZM_OK;
}

void zm_infile_close(struct zm_infile *f)
{
	if (!f)
		return;
	if (f->z_ready)
		inflateEnd(&f->z);
	if (f->close_fd)
		close(f->fd);
	if (f->spool)
		fclose(f->spool);
	free(f->in);
	free(f->name);
	free(f);
}

const char *zm_infile_name(const struct zm_infile *f)
{
	return f->name;
}

static enum zm_status read_error(struct zm_infile *f, struct zm_error *err)
{
	return zm_error_errno(err, ZM_ERR_IO, "%s: read error", f->name);
}

/* Moves the unconsumed input to the front and reads more; sets in_eof at
 * the end of the file. */
static enum zm_status in_fill(struct zm_infile *f, struct zm_error *err)
{
	ssize_t got;

	if (f->in_eof)
		return ZM_OK;
	if (f->in_avail && f->in_ptr != f->in)
		memmove(f->in, f->in_ptr, f->in_avail);
	f->in_ptr = f->in;
	if (f->in_avail == INFILE_BUF)
		return ZM_OK;
	do
		got = read(f->fd, f->in + f->in_avail, INFILE_BUF - f->in_avail);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		return read_error(f, err);
	if (got == 0)
		f->in_eof = true;
	f->in_avail += (size_t)got;
	return ZM_OK;
}

/* Makes at least n input bytes available unless the input ends first. */
static enum zm_status in_need(struct zm_infile *f, size_t n,
                              struct zm_error *err)
{
	while (f->in_avail < n && !f->in_eof) {
		enum zm_status st = in_fill(f, err);
		if (st != ZM_OK)
			return st;
	}
	return ZM_OK;
}

static bool is_gzip_magic(const unsigned char *p)
{
	return p[0] == 0x1f && p[1] == 0x8b;
}

/* Decides between gzip and raw input from the first two bytes. */
static enum zm_status infile_start(struct zm_infile *f, struct zm_error *err)
{
	enum zm_status st = in_need(f, 2, err);
	int zr;

	if (st != ZM_OK)
		return st;
	f->started = true;
	if (f->in_avail < 2 || !is_gzip_magic(f->in_ptr))
		return ZM_OK;
	f->gzip = true;
	f->member = 1;
	zm_zstream_alloc(&f->z);
	f->z.next_in = Z_NULL;
	f->z.avail_in = 0;
	/* 15 + 32: a 32 KiB window, gzip or zlib header detected. */
	zr = inflateInit2(&f->z, 15 + 32);
	if (zr != Z_OK)
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: cannot start inflate: "
		                    "%s", f->name, zr == Z_MEM_ERROR ?
		                    "out of memory" : "zlib error");
	f->z_ready = true;
	return ZM_OK;
}

static enum zm_status truncated(struct zm_infile *f, struct zm_error *err)
{
	return zm_error_set(err, ZM_ERR_FORMAT,
	                    "%s: truncated (gzip stream ends inside member %lu)",
	                    f->name, f->member);
}

/* Runs inflate over the input window into dst/cap and consumes what it
 * used; returns inflate's result. */
static int infile_inflate(struct zm_infile *f, unsigned char *dst,
                          size_t cap, size_t *got)
{
	size_t used;
	int zr;

	f->z.next_in = (unsigned char *)f->in_ptr;
	f->z.avail_in = f->in_avail > UINT_MAX ? UINT_MAX : (uInt)f->in_avail;
	f->z.next_out = dst;
	f->z.avail_out = (uInt)cap;
	zr = inflate(&f->z, Z_NO_FLUSH);
	used = (size_t)(f->z.next_in - f->in_ptr);
	f->in_ptr += used;
	f->in_avail -= used;
	*got = cap - f->z.avail_out;
	return zr;
}

static enum zm_status inflate_error(struct zm_infile *f, int zr,
                                    struct zm_error *err)
{
	if (zr == Z_MEM_ERROR)
		return zm_error_set(err, ZM_ERR_NOMEM, "%s: out of memory in "
		                    "inflate", f->name);
	return zm_error_set(err, ZM_ERR_FORMAT, "%s: corrupt gzip data in "
	                    "member %lu (%s)", f->name, f->member,
	                    f->z.msg ? f->z.msg : "bad stream");
}

enum zm_status zm_infile_read(struct zm_infile *f, void *dst, size_t cap,
                              size_t *got, struct zm_error *err)
{
	enum zm_status st;

	*got = 0;
	if (!f->started) {
		st = infile_start(f, err);
		if (st != ZM_OK)
			return st;
	}
	if (!f->gzip) {
		if (f->in_avail == 0 && !f->in_eof) {
			ssize_t n;
			/* Nothing buffered: read straight into the destination. */
			do
				n = read(f->fd, dst, cap);
			while (n < 0 && errno == EINTR);
			if (n < 0)
				return read_error(f, err);
			if (n == 0)
				f->in_eof = true;
			*got = (size_t)n;
			return ZM_OK;
		}
		*got = f->in_avail < cap ? f->in_avail : cap;
		memcpy(dst, f->in_ptr, *got);
		f->in_ptr += *got;
		f->in_avail -= *got;
		return ZM_OK;
	}
	for (;;) {
		size_t chunk = cap > UINT_MAX ? UINT_MAX : cap;
		int zr;

		if (f->member_end) {
			st = in_need(f, 2, err);
			if (st != ZM_OK)
				return st;
			if (f->in_avail == 0)
				return ZM_OK;	/* clean end after the last member */
			if (f->in_avail == 1 && f->in_ptr[0] == 0x1f) {
				f->member++;    /* the first byte of a magic */
				return truncated(f, err);
			}
			if (f->in_avail < 2 || !is_gzip_magic(f->in_ptr))
				return zm_error_set(err, ZM_ERR_FORMAT, "%s: trailing "
				                    "garbage after gzip member %lu",
				                    f->name, f->member);
			inflateReset(&f->z);
			f->member_end = false;
			f->member++;
		}
		if (f->in_avail == 0 && !f->in_eof) {
			st = in_fill(f, err);
			if (st != ZM_OK)
				return st;
		}
		zr = infile_inflate(f, dst, chunk, got);
		switch (zr) {
		case Z_STREAM_END:
			/* inflate checked the trailer's CRC-32 and length. */
			f->member_end = true;
			if (*got)
				return ZM_OK;
			continue;
		case Z_OK:
			if (*got)
				return ZM_OK;
			continue;
		case Z_BUF_ERROR:
			if (f->in_avail == 0 && f->in_eof)
				return truncated(f, err);
			if (f->in_avail == 0)
				continue;
			return inflate_error(f, zr, err);
		default:
			return inflate_error(f, zr, err);
		}
	}
}

enum zm_status zm_infile_settle(struct zm_infile *f, struct zm_error *err)
{
	unsigned char none;
	enum zm_status st;

	if (!f->started || !f->gzip)
		return ZM_OK;
	/* inflate with no room for output runs through the end of a block,
	 * the end of the member and its trailer, and stops at the first
	 * byte it would have to produce. */
	while (!f->member_end) {
		size_t got;
		int zr;

		if (f->in_avail == 0 && !f->in_eof) {
			st = in_fill(f, err);
			if (st != ZM_OK)
				return st;
		}
		zr = infile_inflate(f, &none, 0, &got);
		if (zr == Z_STREAM_END) {
			f->member_end = true;
			break;
		}
		if (zr != Z_OK && zr != Z_BUF_ERROR)
			return inflate_error(f, zr, err);
		if (f->in_avail > 0)
			break;          /* stopped for want of room: more data */
		if (f->in_eof)
			return truncated(f, err);
	}
	return ZM_OK;
}

enum zm_status zm_infile_rewind(struct zm_infile *f, struct zm_error *err)
{
	if (f->mem) {
		f->in_ptr = f->mem;
		f->in_avail = f->mem_len;
	} else {
		if (f->start < 0 || lseek(f->fd, f->start, SEEK_SET) < 0)
			return zm_error_errno(err, ZM_ERR_IO, "%s: cannot rewind",
			                      f->name);
		f->in_ptr = f->in;
		f->in_avail = 0;
		f->in_eof = false;
	}
	if (f->z_ready)
		inflateEnd(&f->z);
	f->z_ready = f->started = f->gzip = f->member_end = false;
	f->member = 0;
	return ZM_OK;
}
