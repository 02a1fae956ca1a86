/*
 * Shared command-line plumbing for cmd/.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "gemm.h"

static const char *program_name = "zoomerge";
static const char *program_options;

void zm_cli_init(const char *argv0)
{
	const char *slash;

	/* Past "ulimit -f" a write must fail with EFBIG, which the writers
	 * report and clean up after, instead of SIGXFSZ killing the process
	 * and leaving a temporary file behind. */
	signal(SIGXFSZ, SIG_IGN);
	if (!argv0 || !*argv0)
		return;
	slash = strrchr(argv0, '/');
	program_name = slash ? slash + 1 : argv0;
}

const char *zm_cli_name(void)
{
	return program_name;
}

void zm_cli_warn(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", program_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int zm_cli_report(const struct zm_error *err)
{
	fprintf(stderr, "%s: %s\n", program_name,
	        err->msg[0] ? err->msg : zm_status_name(err->status));
	return zm_status_exit_code(err->status);
}

int zm_cli_usage_error(const char *usage, const char *fmt, ...)
{
	va_list ap;

	/* The whole usage would bury the one line that says what is wrong
	 * (and scroll it off a cron mail's first screen); --help has it. */
	(void)usage;
	if (fmt) {
		fprintf(stderr, "%s: ", program_name);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	fprintf(stderr, "Try '%s --help'.\n", program_name);
	return ZM_EXIT_USAGE;
}

void zm_cli_version(void)
{
	printf("%s (zoomerge) %s\n", program_name, ZM_VERSION);
	printf("BLIS kernels: %s\n", zm_gemm_arch());
}

int zm_cli_getopt(int argc, char **argv, const char *shortopts,
                  const struct option *longopts, const char *usage,
                  bool (*parse)(void *ctx, int c, const char *arg),
                  void *ctx, const char **file)
{
	int c;

	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		if (c == 'h')
			return zm_cli_help(usage);
		if (c == 'V')
			return zm_cli_show_version();
		if (!parse(ctx, c, optarg))
			return zm_cli_usage_error(usage, NULL);
	}
	if (!file)
		return -1;
	if (optind < argc)
		*file = argv[optind++];
	if (optind < argc)
		return zm_cli_usage_error(usage, "unexpected argument '%s'",
		                          argv[optind]);
	return -1;
}

void zm_cli_options(const char *options)
{
	program_options = options;
}

int zm_cli_help(const char *usage)
{
	fputs(usage, stdout);
	if (program_options)
		fputs(program_options, stdout);
	return zm_cli_close_stdout(ZM_EXIT_OK);
}

int zm_cli_show_version(void)
{
	zm_cli_version();
	return zm_cli_close_stdout(ZM_EXIT_OK);
}

bool zm_cli_int(const char *option, const char *text, int64_t min,
                int64_t max, int64_t *out)
{
	int64_t v;

	if (!zm_parse_int64(text, &v) || v < min || v > max) {
		zm_cli_warn("%s: expected an integer in [%lld, %lld], got '%s'",
		            option, (long long)min, (long long)max, text);
		return false;
	}
	*out = v;
	return true;
}

bool zm_cli_double(const char *option, const char *text, double min,
                   double max, double *out)
{
	double v;

	if (!zm_parse_double(text, &v) || v < min || v > max) {
		zm_cli_warn("%s: expected a number in [%g, %g], got '%s'",
		            option, min, max, text);
		return false;
	}
	*out = v;
	return true;
}

int zm_cli_close_stdout(int status)
{
	bool bad = fflush(stdout) != 0 || ferror(stdout);

	if (fclose(stdout) != 0)
		bad = true;
	if (bad && status == ZM_EXIT_OK) {
		fprintf(stderr, "%s: write error on standard output: %s\n",
		        program_name, strerror(errno ? errno : EIO));
		return ZM_EXIT_FAILURE;
	}
	return status;
}

bool zm_cli_progress_wanted(bool force, bool quiet)
{
	if (quiet)
		return false;
	return force || isatty(STDERR_FILENO);
}
