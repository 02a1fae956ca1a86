/*
 * Atomic output files (temporary name, fsync, rename, directory fsync) and
 * whole-file reads.  Every system call that can lose data consults the
 * fault injector first, so the tests can fail each one in turn.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
