#include "api/http.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "basic/log.h"
#include "basic/util.h"

struct fm_http_server {
	struct MHD_Daemon *unix_d, *tcp_d;
	const fm_http_route *routes;
	void *ctx;
	char *unix_path;
};

/* Per-request state while the body arrives. */
struct req_state {
	char *buf;
	size_t len;
	bool too_big;
};

const char *fm_http_query(const fm_http_req *req, const char *key)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

void fm_http_ok(fm_http_resp *resp, int status, json_t *body)
{
	json_decref(resp->body);
	resp->status = status;
	resp->body = body ? body : json_object();
}

void fm_http_error(fm_http_resp *resp, int status, const char *code, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_decref(resp->body);
	resp->status = status;
	resp->body = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
}

void fm_http_fail(fm_http_resp *resp, const fm_error *err)
{
	int status = 500;
	const char *code = "internal";

	switch (-err->code) {
	case ENOENT: status = 404; code = "not_found"; break;
	case EINVAL: case E2BIG: case ERANGE: status = 400; code = "invalid"; break;
	case EEXIST: case EBUSY: status = 409; code = "conflict"; break;
	case EPERM: case EACCES: status = 403; code = "refused"; break;
	case EHOSTUNREACH: case ECONNREFUSED: case ETIMEDOUT: status = 502; code = "unreachable"; break;
	case ENOSPC: case ENOMEM: status = 507; code = "insufficient_resources"; break;
	case ENOTSUP: status = 501; code = "unsupported"; break;
	default: break;
	}
	fm_http_error(resp, status, code, "%s", err->msg);
	if (err->detail)
		json_object_set_new(json_object_get(resp->body, "error"), "detail", json_string(err->detail));
}

/* Matches path against pattern; fills params with pointers into a copy. */
static bool route_match(const char *pattern, const char *path, char *scratch, size_t scratch_len,
			const char **params)
{
	size_t np = 0;
	const char *p = pattern, *s = path;
	char *w = scratch;

	while (*p && *s) {
		if (*p == ':') {
			while (*p && *p != '/')
				p++;
			if (np >= FM_HTTP_MAX_PARAMS)
				return false;
			params[np++] = w;
			size_t n = 0;
			while (s[n] && s[n] != '/')
				n++;
			if (n == 0 || (size_t)(w - scratch) + n + 1 > scratch_len)
				return false;
			memcpy(w, s, n);
			w[n] = '\0';
			w += n + 1;
			s += n;
		} else if (*p++ != *s++) {
			return false;
		}
	}
	return *p == '\0' && *s == '\0';
}

static enum MHD_Result send_response(struct MHD_Connection *c, fm_http_resp *resp)
{
	struct MHD_Response *r = NULL;
	enum MHD_Result ret;

	if (resp->file_path) {
		int fd = open(resp->file_path, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd >= 0 && fstat(fd, &st) == 0) {
			r = MHD_create_response_from_fd64((uint64_t)st.st_size, fd);
			MHD_add_response_header(r, "Content-Type", "application/octet-stream");
		} else {
			if (fd >= 0)
				close(fd);
			fm_http_error(resp, 404, "not_found", "file vanished");
		}
	}
	if (!r && resp->text) {
		r = MHD_create_response_from_buffer(strlen(resp->text), resp->text, MHD_RESPMEM_MUST_FREE);
		resp->text = NULL;
		MHD_add_response_header(r, "Content-Type", resp->content_type ? resp->content_type : "text/plain");
	}
	if (!r) {
		char *s = json_dumps(resp->body ? resp->body : json_object(), JSON_COMPACT);
		size_t n = strlen(s);
		s = realloc(s, n + 2);
		s[n] = '\n';
		s[n + 1] = '\0';
		r = MHD_create_response_from_buffer(n + 1, s, MHD_RESPMEM_MUST_FREE);
		MHD_add_response_header(r, "Content-Type", "application/json");
	}
	ret = MHD_queue_response(c, (unsigned)resp->status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
				 const char *method, const char *version, const char *upload,
				 size_t *upload_size, void **con_cls, bool local)
{
	fm_http_server *s = cls;
	struct req_state *st = *con_cls;
	fm_http_resp resp = { 0 };
	fm_http_req req = { 0 };
	char scratch[1024];
	enum MHD_Result ret;

	if (!st) {
		*con_cls = fm_xcalloc(1, sizeof(*st));
		return MHD_YES;
	}
	if (*upload_size > 0) {
		if (st->len + *upload_size > FM_HTTP_BODY_MAX) {
			st->too_big = true;
		} else {
			char *n = realloc(st->buf, st->len + *upload_size + 1);
			if (!n)
				abort();
			memcpy(n + st->len, upload, *upload_size);
			st->len += *upload_size;
			n[st->len] = '\0';
			st->buf = n;
		}
		*upload_size = 0;
		return MHD_YES;
	}

	/* the whole request is here */
	req.method = method;
	req.path = url;
	req.conn = conn;
	req.local = local;
	if (st->too_big) {
		fm_http_error(&resp, 413, "too_large", "request body larger than %d bytes", FM_HTTP_BODY_MAX);
		goto send;
	}
	if (st->len > 0) {
		json_error_t jerr;
		req.body = json_loadb(st->buf, st->len, JSON_REJECT_DUPLICATES, &jerr);
		if (!req.body || !json_is_object(req.body)) {
			fm_http_error(&resp, 400, "bad_json",
				      req.body ? "request body must be a JSON object"
					       : "malformed JSON at line %d column %d: %s",
				      jerr.line, jerr.column, jerr.text);
			goto send;
		}
	}
	if (!local && !fm_http_secret_ok(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"))) {
		fm_http_error(&resp, 401, "unauthorized", "this daemon requires the cluster secret (--secret-file)");
		goto send;
	}
	bool path_found = false;
	for (const fm_http_route *r = s->routes; r->method; r++) {
		const char *params[FM_HTTP_MAX_PARAMS] = { 0 };
		if (!route_match(r->pattern, url, scratch, sizeof(scratch), params))
			continue;
		path_found = true;
		if (strcmp(r->method, method) != 0)
			continue;
		if (r->local_only && !local) {
			fm_http_error(&resp, 403, "local_only", "%s %s is only served on the local socket", method, url);
			goto send;
		}
		memcpy(req.params, params, sizeof(params));
		resp.status = 200;
		r->handler(s->ctx, &req, &resp);
		goto send;
	}
	if (path_found)
		fm_http_error(&resp, 405, "method_not_allowed", "%s is not allowed on %s", method, url);
	else
		fm_http_error(&resp, 404, "no_route", "no such endpoint: %s %s", method, url);
send:
	ret = send_response(conn, &resp);
	json_decref(resp.body);
	json_decref(req.body);
	free(resp.file_path);
	free(resp.text);
	return ret;
}

static enum MHD_Result access_unix(void *cls, struct MHD_Connection *conn, const char *url,
				   const char *method, const char *version, const char *upload,
				   size_t *upload_size, void **con_cls)
{
	return access_cb(cls, conn, url, method, version, upload, upload_size, con_cls, true);
}

static enum MHD_Result access_tcp(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	return access_cb(cls, conn, url, method, version, upload, upload_size, con_cls, false);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct req_state *st = *con_cls;
	if (st) {
		free(st->buf);
		free(st);
		*con_cls = NULL;
	}
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	buf[strcspn(buf, "\n")] = '\0';
	fm_debug(FM_C_API, "http: %s", buf);
}

static struct MHD_Daemon *start_mhd(fm_http_server *s, int fd, MHD_AccessHandlerCallback cb)
{
	return MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
					MHD_USE_ERROR_LOG,
				0, NULL, NULL, cb, s,
				MHD_OPTION_LISTEN_SOCKET, fd,
				MHD_OPTION_NOTIFY_COMPLETED, completed_cb, s,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
				MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				MHD_OPTION_END);
}

static int listen_unix(const char *path, fm_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return fm_error_set(err, -ENAMETOOLONG, "socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fm_error_set(err, -errno, "socket: %m");
	unlink(path); /* a stale socket of a dead daemon */
	mode_t old = umask(077);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(fd, 64) < 0) {
		r = -errno;
		close(fd);
		return fm_error_set(err, r, "cannot listen on %s: %s", path, strerror(-r));
	}
	return fd;
}

static int listen_tcp(const char *addr, fm_error *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *ai;
	char host[256], port[16];
	int p, fd, one = 1;

	if (fm_split_hostport(addr, host, sizeof(host), &p) < 0)
		return fm_error_set(err, -EINVAL, "bad listen address \"%s\": expected HOST:PORT", addr);
	snprintf(port, sizeof(port), "%d", p);
	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return fm_error_set(err, -EINVAL, "cannot resolve listen address %s", addr);
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		freeaddrinfo(ai);
		return fm_error_set(err, -errno, "socket: %m");
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
		int r = -errno;
		close(fd);
		freeaddrinfo(ai);
		return fm_error_set(err, r, "cannot listen on %s: %s", addr, strerror(-r));
	}
	freeaddrinfo(ai);
	return fd;
}

int fm_http_server_start(const fm_http_route *routes, void *ctx, const char *unix_path,
			 const char *tcp_addr, fm_http_server **out, fm_error *err)
{
	fm_http_server *s = fm_xcalloc(1, sizeof(*s));
	int fd;

	s->routes = routes;
	s->ctx = ctx;
	if (unix_path) {
		if ((fd = listen_unix(unix_path, err)) < 0)
			goto fail;
		s->unix_path = fm_xstrdup(unix_path);
		s->unix_d = start_mhd(s, fd, access_unix);
		if (!s->unix_d) {
			close(fd);
			fm_error_set(err, -EIO, "cannot start the HTTP server on %s", unix_path);
			goto fail;
		}
	}
	if (tcp_addr) {
		if ((fd = listen_tcp(tcp_addr, err)) < 0)
			goto fail;
		s->tcp_d = start_mhd(s, fd, access_tcp);
		if (!s->tcp_d) {
			close(fd);
			fm_error_set(err, -EIO, "cannot start the HTTP server on %s", tcp_addr);
			goto fail;
		}
	}
	*out = s;
	return 0;
fail:
	fm_http_server_stop(s);
	return err ? err->code : -EIO;
}

void fm_http_server_stop(fm_http_server *s)
{
	if (!s)
		return;
	if (s->unix_d)
		MHD_stop_daemon(s->unix_d);
	if (s->tcp_d)
		MHD_stop_daemon(s->tcp_d);
	if (s->unix_path)
		unlink(s->unix_path);
	free(s->unix_path);
	free(s);
}
