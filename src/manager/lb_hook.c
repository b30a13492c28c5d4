#include "manager/lb_hook.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "basic/cmd.h"
#include "basic/util.h"

int fm_lb_hook_new(const char *spec, int timeout_ms, fm_http_post_fn post, fm_lb_hook **out, fm_error *err)
{
	fm_lb_hook *h;

	if (!spec || !*spec)
		return fm_error_set(err, -EINVAL, "--lb-hook needs a program's absolute path or an http:// URL");
	if (timeout_ms < 100 || timeout_ms > 600000)
		return fm_error_set(err, -EINVAL, "the load-balancer hook's timeout must be 0.1-600 s");
	if (!strncmp(spec, "http://", 7)) {
		/* only its form can be judged now: the service may start later */
		const char *hp = spec + 7, *slash = strchr(hp, '/');
		size_t n = slash ? (size_t)(slash - hp) : strlen(hp);
		const char *colon = memchr(hp, ':', n);
		if (n == 0 || !colon || colon + 1 == hp + n || strspn(colon + 1, "0123456789") != (size_t)(hp + n - colon - 1))
			return fm_error_set(err, -EINVAL, "--lb-hook %s: expected http://HOST:PORT/PATH", spec);
		for (const char *p = spec; *p; p++)
			if ((unsigned char)*p <= ' ' || *p == 0x7f)
				return fm_error_set(err, -EINVAL, "--lb-hook: the URL holds a space or a control character");
		if (!post)
			return fm_error_set(err, -ENOTSUP, "--lb-hook %s: no HTTP client here", spec);
	} else if (spec[0] != '/') {
		return fm_error_set(err, -EINVAL, "--lb-hook %s: give the program's absolute path (it runs without a "
				    "shell) or an http://HOST:PORT/PATH URL", spec);
	} else if (access(spec, X_OK) < 0) {
		return fm_error_set(err, -errno, "--lb-hook %s: not an executable program: %m", spec);
	}
	h = fm_xcalloc(1, sizeof(*h));
	if (spec[0] == '/')
		h->program = fm_xstrdup(spec);
	else
		h->url = fm_xstrdup(spec);
	h->timeout_ms = timeout_ms;
	h->post = post;
	*out = h;
	return 0;
}

void fm_lb_hook_free(fm_lb_hook *h)
{
	if (!h)
		return;
	free(h->program);
	free(h->url);
	free(h);
}

/* The last non-empty line of s, bounded: what a script said last. */
static void last_line(const char *s, char *buf, size_t len)
{
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r'))
		n--;
	size_t start = n;
	while (start > 0 && s[start - 1] != '\n')
		start--;
	snprintf(buf, len, "%.*s", (int)(n - start > 200 ? 200 : n - start), s + start);
}

int fm_lb_hook_run(const fm_lb_hook *h, json_t *event, char *outcome, size_t len)
{
	fm_error e = FM_ERROR_INIT;
	int64_t t0 = fm_now_mono_us();
	int r;

	if (h->program) {
		_cleanup_free_ char *payload = json_dumps(event, JSON_COMPACT);
		fm_cmd *c = fm_cmd_new(h->program);
		fm_cmd_arg(c, json_string_value(json_object_get(event, "event")) ?: "?");
		fm_cmd_arg(c, json_string_value(json_object_get(event, "migration")) ?: "?");
		fm_cmd_set_timeout_ms(c, h->timeout_ms);
		r = fm_cmd_set_input(c, payload, strlen(payload), &e);
		if (r == 0)
			r = fm_cmd_run(c, &e);
		double ms = (double)(fm_now_mono_us() - t0) / 1000.0;
		if (r == 0) {
			char said[256];
			last_line(fm_cmd_stdout(c), said, sizeof(said));
			snprintf(outcome, len, "%s exited 0 after %.0f ms%s%s%s", h->program, ms, *said ? " (it said \"" : "",
				 said, *said ? "\")" : "");
		} else {
			snprintf(outcome, len, "%s after %.0f ms", *e.msg ? e.msg : "failed", ms);
			r = r < 0 ? r : -EIO;
		}
		fm_cmd_free(c);
	} else {
		long status = 0;
		r = h->post(h->url, event, h->timeout_ms, &status, &e);
		double ms = (double)(fm_now_mono_us() - t0) / 1000.0;
		if (r == 0 && status >= 200 && status < 300) {
			snprintf(outcome, len, "%s answered HTTP %ld after %.0f ms", h->url, status, ms);
		} else if (r == 0) {
			snprintf(outcome, len, "%s answered HTTP %ld after %.0f ms", h->url, status, ms);
			r = -EIO;
		} else {
			snprintf(outcome, len, "%s after %.0f ms", *e.msg ? e.msg : "no answer", ms);
		}
	}
	fm_error_clear(&e);
	return r;
}
