/* HTTP/JSON API plumbing: a small router over libmicrohttpd (server) and libcurl
 * (client).  The same routes are served on the local UNIX socket (CLI) and on TCP
 * (peer daemons).
 *
 * Requests: bodies are JSON objects of at most FM_HTTP_BODY_MAX bytes (413
 * otherwise); malformed JSON is a 400.  Responses: JSON; errors are
 *   {"error": {"code": "not_found", "message": "…"}}
 * with 4xx for the caller's mistakes and 5xx for ours.
 */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "basic/error.h"

#define FM_HTTP_BODY_MAX (1024 * 1024)
#define FM_HTTP_MAX_PARAMS 4

typedef struct fm_http_req {
	const char *method;
	const char *path;
	const char *params[FM_HTTP_MAX_PARAMS]; /* ":name" segments of the route, in order */
	json_t *body;                           /* NULL for GET/DELETE without body */
	void *conn;                             /* MHD connection, for query arguments */
	bool local;                             /* arrived on the UNIX socket */
} fm_http_req;

typedef struct fm_http_resp {
	int status;
	json_t *body;      /* owned */
	char *file_path;   /* or: stream this file (owned) */
	char *text;        /* or: this text (owned), with ... */
	const char *content_type; /* ... this type */
} fm_http_resp;

typedef void (*fm_http_handler)(void *ctx, const fm_http_req *req, fm_http_resp *resp);

typedef struct fm_http_route {
	const char *method;
	const char *pattern; /* "/v1/containers/:name/stop" */
	fm_http_handler handler;
	bool local_only;     /* refuse on TCP (e.g. import from a local path) */
} fm_http_route;

typedef struct fm_http_server fm_http_server;

/* Serves routes (a NULL-method-terminated array) on a UNIX socket path (created
 * mode 0600, replacing a stale one) and/or a TCP "host:port". */
int fm_http_server_start(const fm_http_route *routes, void *ctx, const char *unix_path,
			 const char *tcp_addr, fm_http_server **out, fm_error *err);
void fm_http_server_stop(fm_http_server *s);

/* Query argument of the request, or NULL. */
const char *fm_http_query(const fm_http_req *req, const char *key);

/* Response helpers. */
void fm_http_ok(fm_http_resp *resp, int status, json_t *body);
void fm_http_error(fm_http_resp *resp, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Maps an fm_error to a status by errno (ENOENT 404, EINVAL 400, EEXIST 409, …). */
void fm_http_fail(fm_http_resp *resp, const fm_error *err);

/* Client.  endpoint: "unix:/path/to.sock" or "host:port".  On HTTP >= 400 the
 * server's error message becomes err (errno from the status); unreachable peers
 * give -EHOSTUNREACH/-ETIMEDOUT with a message naming the endpoint.  body stays the
 * caller's. */
int fm_http_call(const char *endpoint, const char *method, const char *path, json_t *body,
		 int timeout_ms, json_t **out, fm_error *err);
/* POSTs body as JSON to a service that is not a FlexiMigrate daemon (no
 * cluster secret): url is http://HOST:PORT/PATH.  0 with the HTTP status in
 * *status, or -errno when the service cannot be reached or does not answer
 * within timeout_ms. */
int fm_http_post_url(const char *url, json_t *body, int timeout_ms, long *status, fm_error *err);
/* GET into a file, no faster than bandwidth_bps (0 = no cap); 0 or -errno. */
int fm_http_download(const char *endpoint, const char *path, const char *file, int timeout_ms,
		     uint64_t bandwidth_bps, fm_error *err);
void fm_http_global_init(void);

/* The cluster secret: when set, the client sends it to TCP peers and the server
 * refuses TCP requests that lack it (401); the UNIX socket is guarded by its file
 * mode.  Read from a file that only root may read.  NULL clears it. */
int fm_http_set_secret_file(const char *path, fm_error *err);
bool fm_http_has_secret(void);
/* Constant-time check of an "Authorization: Bearer …" value. */
bool fm_http_secret_ok(const char *authorization);
