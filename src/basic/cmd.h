/* The one command runner (after libvirt's vircommand).
 *
 * Every external program (runc, CRIU) runs through here: explicit argv, a clean
 * environment, stdin from /dev/null, every other descriptor closed, stdout/stderr
 * captured (bounded) or sent to /dev/null, a timeout after which the process group
 * is killed, and the child always reaped.  Never a shell.
 *
 * Tests may install a dry-run hook that records argv and returns a canned result
 * instead of running anything.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "basic/error.h"

typedef struct fm_cmd fm_cmd;

fm_cmd *fm_cmd_new(const char *program);
void fm_cmd_free(fm_cmd *c);
void fm_cmd_arg(fm_cmd *c, const char *arg);
void fm_cmd_argf(fm_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Adds NAME=VALUE to the (otherwise minimal) environment. */
void fm_cmd_env(fm_cmd *c, const char *name, const char *value);
void fm_cmd_set_timeout_ms(fm_cmd *c, int ms);
/* Send stdout/stderr to /dev/null instead of capturing them.  Needed for programs
 * whose children outlive them (runc run -d): a captured pipe would become the
 * container's stdio, which CRIU cannot checkpoint and which would keep our read
 * end waiting. */
void fm_cmd_set_stdio_null(fm_cmd *c);
/* The child reads these bytes on stdin (copied now; default /dev/null). */
int fm_cmd_set_input(fm_cmd *c, const void *data, size_t len, fm_error *err);
/* Hands the child `fd` as descriptor `child_fd` (e.g. runc --status-fd). */
void fm_cmd_pass_fd(fm_cmd *c, int fd, int child_fd);

/* Runs to completion.  Returns the exit status (>= 0) or -errno if the program
 * could not be run or was killed; with `err`, a non-zero exit or a signal becomes
 * an error "PROGRAM failed (exit N): <last stderr lines>". */
int fm_cmd_run(fm_cmd *c, fm_error *err);

/* Starts without waiting; finish with fm_cmd_wait().  Output is not captured. */
int fm_cmd_start(fm_cmd *c, fm_error *err);
pid_t fm_cmd_pid(const fm_cmd *c);
int fm_cmd_wait(fm_cmd *c, fm_error *err);
/* fm_cmd_wait, but after timeout_ms (0: at once) the process group is killed
 * first: -ETIMEDOUT, "PROGRAM timed out after N ms and was killed". */
int fm_cmd_wait_timeout(fm_cmd *c, int timeout_ms, fm_error *err);

const char *fm_cmd_stdout(const fm_cmd *c);
const char *fm_cmd_stderr(const fm_cmd *c);
/* argv joined with spaces, for logs. */
const char *fm_cmd_describe(fm_cmd *c);

/* Dry-run hook for unit tests: when set, no process is started; the hook sees the
 * argv and returns the exit status, and may set canned stdout. */
typedef int (*fm_cmd_dry_run_fn)(const char *const *argv, void *opaque, char **out_stdout);
void fm_cmd_set_dry_run(fm_cmd_dry_run_fn fn, void *opaque);
