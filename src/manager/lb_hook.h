/* Load-balancer hook: what the policy action trigger_load_balancer_reconfiguration
 * runs (MISSION.md, Policies).  The daemon's --lb-hook names it, once for all
 * policies:
 *
 *   an absolute path   a program run as `PROGRAM EVENT MIGRATION-ID` with the
 *                      event as JSON on stdin; exit status 0 is success
 *   http://HOST:PORT/PATH
 *                      the event POSTed as JSON; a 2xx answer is success
 *
 * EVENT is "switchover" (the container now runs on the destination: send its
 * traffic there) or "rollback" (a migration that switched over was rolled
 * back: send it to the source again).  The JSON:
 *
 *   {"event", "migration", "container", "source", "destination", "strategy",
 *    "policy", "source_address", "destination_address", "network"}
 *
 * (the addresses are the hosts' agent endpoints; "network" is the container's
 * {ip, mac, ...} when it has its own, else null).
 *
 * A hook never decides a migration: it runs beside it, bounded by its
 * timeout (then killed), and its outcome is logged. */
#pragma once
#include <jansson.h>

#include "basic/error.h"

/* How the hook reaches an HTTP service (api/http.h's fm_http_post_url in the
 * daemon; injected so that this layer does not depend on the API's). */
typedef int (*fm_http_post_fn)(const char *url, json_t *body, int timeout_ms, long *status, fm_error *err);

#define FM_LB_HOOK_TIMEOUT_MS 10000

typedef struct fm_lb_hook {
	char *program;     /* either this ... */
	char *url;         /* ... or this */
	int timeout_ms;
	fm_http_post_fn post;
} fm_lb_hook;

/* Checks spec (an executable's absolute path, or an http:// URL) now, so that
 * a mistake stops the daemon at start rather than at the first migration. */
int fm_lb_hook_new(const char *spec, int timeout_ms, fm_http_post_fn post, fm_lb_hook **out, fm_error *err);
void fm_lb_hook_free(fm_lb_hook *h);

/* Runs the hook once for event (whose "event" and "migration" it reads);
 * outcome says what happened, for the log.  0 on success, -errno otherwise. */
int fm_lb_hook_run(const fm_lb_hook *h, json_t *event, char *outcome, size_t len);
