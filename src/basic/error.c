#include "basic/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fm_error_setv(fm_error *e, int code, const char *fmt, va_list ap)
{
	if (code >= 0)
		code = -EIO;
	if (!e || e->code < 0)
		return code;
	e->code = code;
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	return code;
}

int fm_error_set(fm_error *e, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	code = fm_error_setv(e, code, fmt, ap);
	va_end(ap);
	return code;
}

void fm_error_prefix(fm_error *e, const char *fmt, ...)
{
	char ctx[FM_ERROR_MSG_MAX], out[2 * FM_ERROR_MSG_MAX + 2];
	va_list ap;

	if (!fm_error_is_set(e))
		return;
	va_start(ap, fmt);
	vsnprintf(ctx, sizeof(ctx), fmt, ap);
	va_end(ap);
	snprintf(out, sizeof(out), "%s: %s", ctx, e->msg);
	snprintf(e->msg, sizeof(e->msg), "%.*s", (int)sizeof(e->msg) - 1, out);
}

void fm_error_set_detail(fm_error *e, char *detail)
{
	if (!e) {
		free(detail);
		return;
	}
	free(e->detail);
	e->detail = detail;
}

void fm_error_clear(fm_error *e)
{
	if (!e)
		return;
	free(e->detail);
	e->detail = NULL;
	e->code = 0;
	e->msg[0] = '\0';
}

void fm_error_move(fm_error *dst, fm_error *src)
{
	if (!src)
		return;
	if (dst && !fm_error_is_set(dst) && fm_error_is_set(src)) {
		*dst = *src;
		src->detail = NULL;
	}
	fm_error_clear(src);
}
