/*
 * What every program of cmd/ shares: its name in messages, --version,
 * option-argument parsing with range checks, and closing stdout so that a
 * full disk is an error.  This is the only library code that prints; it lives
 * outside libzoomerge.a, in libzmcli.a, linked by the programs only.
 */
#ifndef ZM_CLI_H
#define ZM_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

/* Exit statuses of every program. */
enum { ZM_EXIT_OK = 0, ZM_EXIT_FAILURE = 1, ZM_EXIT_USAGE = 2 };

/* Remembers the program name (basename of argv0) for messages. */
void zm_cli_init(const char *argv0);
/* Remembers the text --help prints after the usage: the options, one a
 * line, each with its default in brackets (static, not copied). */
void zm_cli_options(const char *options);
const char *zm_cli_name(void);

/* Prints "PROGRAM: message" on stderr. */
void zm_cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "PROGRAM: err->msg" and returns the exit status for err. */
int zm_cli_report(const struct zm_error *err);

/* A usage error: prints "PROGRAM: message" (when fmt is non-NULL; without
 * it the message was printed already, by getopt or zm_cli_warn) and the
 * hint "Try 'PROGRAM --help'." on stderr, not the usage text itself, and
 * returns ZM_EXIT_USAGE.  usage is kept for the callers' symmetry with
 * zm_cli_help. */
int zm_cli_usage_error(const char *usage, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Prints "PROGRAM (zoomerge) VERSION" and the BLIS kernel set on stdout. */
void zm_cli_version(void);

/* -h and --version: print usage and the options (or the version) on
 * stdout, close it and return the exit status (0, or 1 when stdout could
 * not be written). */
int zm_cli_help(const char *usage);

int zm_cli_show_version(void);

/* Option arguments: parse text as a number within [min, max]; on failure
 * print "PROGRAM: OPTION: expected ..." and return false. */
bool zm_cli_int(const char *option, const char *text, int64_t min,
                int64_t max, int64_t *out);
bool zm_cli_double(const char *option, const char *text, double min,
                   double max, double *out);

/*
 * The option loop of a program with one option table: getopt_long over
 * argv with shortopts and longopts, where 'h' (-h, --help) and 'V'
 * (--version) answer at once and every other option goes to
 * parse(ctx, c, optarg), which prints what is wrong and returns false.
 * One optional FILE operand goes to *file; a second is a usage error.
 * With file NULL the operands are left to the caller, from argv[optind].
 * Returns -1 to go on, else the exit status for main to return (usage
 * printed).  Every program's option loop is this one, so that --help,
 * --version and usage errors (exit 2, one line naming the option, then
 * "Try 'PROGRAM --help'.") behave alike.
 */
struct option;
int zm_cli_getopt(int argc, char **argv, const char *shortopts,
                  const struct option *longopts, const char *usage,
                  bool (*parse)(void *ctx, int c, const char *arg),
                  void *ctx, const char **file);

/* Flushes and closes stdout; on failure (full disk, closed pipe) prints
 * the error and returns ZM_EXIT_FAILURE, else status unchanged. */
int zm_cli_close_stdout(int status);

/* True when the program should print progress: --progress forces it,
 * --quiet silences it, otherwise when stderr is a terminal. */
bool zm_cli_progress_wanted(bool force, bool quiet);

#endif
