/* The one error type.
 *
 * Internally functions return 0 / a positive value on success and a negative errno
 * on failure.  Where a failure must travel up to a user (API responses, migration
 * phases) the function also fills an fm_error: the errno, a human message that says
 * what happened and what to do, and optionally a detail block such as an excerpt of
 * CRIU's log.  The first error set wins; callers add context with fm_error_prefix().
 */
#pragma once
#include <stdarg.h>
#include <stdbool.h>

#define FM_ERROR_MSG_MAX 1024

typedef struct fm_error {
	int code;                     /* negative errno, 0 = no error */
	char msg[FM_ERROR_MSG_MAX];
	char *detail;                 /* owned, may be NULL: multi-line excerpt */
} fm_error;

#define FM_ERROR_INIT { 0 }

/* Sets the error unless one is already set (the first error survives).
 * Returns code, which must be negative, so callers can `return fm_error_set(...)`. */
int fm_error_set(fm_error *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int fm_error_setv(fm_error *e, int code, const char *fmt, va_list ap);
/* Adds "context: " in front of the message (no-op when no error is set). */
void fm_error_prefix(fm_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Takes ownership of detail (freed by fm_error_clear). */
void fm_error_set_detail(fm_error *e, char *detail);
void fm_error_clear(fm_error *e);
/* Moves src into dst if dst has no error yet; src is cleared either way. */
void fm_error_move(fm_error *dst, fm_error *src);
static inline bool fm_error_is_set(const fm_error *e) { return e && e->code < 0; }
