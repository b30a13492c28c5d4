/* The HTTP/1.1 client: one request per connection ("Connection: close"), over a
 * UNIX socket or TCP, with a deadline on every step.  It only ever talks to
 * fleximigrated (CLI → local daemon, controller → agents), so it needs no TLS,
 * proxies, redirects or cookies — and the daemon stays small (libcurl and its
 * dependencies cost ~8 MiB of resident memory). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/http.h"
#include "basic/dial.h"
#include "basic/util.h"

#define RESP_MAX (64u << 20)      /* a JSON reply larger than this is an attack */
#define HEAD_MAX (64u << 10)

void fm_http_global_init(void) {}

static char secret[129];

int fm_http_set_secret_file(const char *path, fm_error *err)
{
	_cleanup_free_ char *s = NULL;
	struct stat st;
	size_t n;
	int r;

	if (!path) {
		secret[0] = '\0';
		return 0;
	}
	if (stat(path, &st) < 0)
		return fm_error_set(err, -errno, "cannot read the cluster secret %s: %m", path);
	if (st.st_mode & 077)
		return fm_error_set(err, -EPERM, "cluster secret %s is readable by others (mode %o): chmod 600 it", path,
				    (unsigned)(st.st_mode & 0777));
	if ((r = fm_read_file(path, 4096, &s, &n)) < 0)
		return fm_error_set(err, r, "cannot read the cluster secret %s: %s", path, strerror(-r));
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = '\0';
	if (n < 16 || n >= sizeof(secret) || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-") != n)
		return fm_error_set(err, -EINVAL, "cluster secret %s must be 16-128 characters of [A-Za-z0-9+/=_-]", path);
	memcpy(secret, s, n + 1);
	return 0;
}

bool fm_http_has_secret(void) { return secret[0] != '\0'; }

bool fm_http_secret_ok(const char *authorization)
{
	size_t n = strlen(secret);
	unsigned char diff = 0;
	if (!n)
		return true;
	if (!authorization || strncmp(authorization, "Bearer ", 7) != 0 || strlen(authorization + 7) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)(authorization[7 + i] ^ secret[i]);
	return diff == 0;
}

static int send_all(int fd, const char *p, size_t n, int64_t deadline)
{
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				int r = fm_wait_fd(fd, POLLOUT, deadline);
				if (r < 0)
					return r;
				continue;
			}
			return -errno;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Reads the response: status, and the body into *body (bounded) or, with out_fd
 * >= 0, streamed into that file.  Bodies end at Content-Length or EOF. */
static int read_response(int fd, int64_t deadline, long *status, char **body, size_t *blen, int out_fd,
			 fm_pacer *pacer)
{
	size_t cap = 8192, n = 0, head_end = 0;
	char *buf = fm_xmalloc(cap + 1);
	int64_t content_length = -1;
	int r = 0;

	for (;;) {
		if (n == cap) {
			size_t limit = head_end ? RESP_MAX : HEAD_MAX;
			if (cap >= limit) {
				r = -EMSGSIZE;
				break;
			}
			cap = cap * 2 > limit ? limit : cap * 2;
			char *nb = realloc(buf, cap + 1);
			if (!nb)
				abort();
			buf = nb;
		}
		ssize_t k = recv(fd, buf + n, cap - n, MSG_DONTWAIT);
		if (k < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				if ((r = fm_wait_fd(fd, POLLIN, deadline)) < 0)
					break;
				continue;
			}
			r = -errno;
			break;
		}
		if (k == 0)
			break;
		n += (size_t)k;
		buf[n] = '\0';
		if (!head_end) {
			char *e = strstr(buf, "\r\n\r\n");
			if (!e)
				continue;
			head_end = (size_t)(e - buf) + 4;
			if (sscanf(buf, "HTTP/1.%*d %ld", status) != 1) {
				r = -EBADMSG;
				break;
			}
			for (char *l = strstr(buf, "\r\n"); l && l < e; l = strstr(l + 2, "\r\n"))
				if (!strncasecmp(l + 2, "Content-Length:", 15))
					content_length = strtoll(l + 17, NULL, 10);
		}
		if (head_end && out_fd >= 0 && n > head_end) {
			/* stream what we have and keep only the head in the buffer */
			const char *p = buf + head_end;
			size_t m = n - head_end;
			/* a capped download reads no faster than the cap: TCP slows the sender */
			if (pacer)
				fm_sleep_us(fm_pacer_take(pacer, m), NULL);
			while (m > 0) {
				ssize_t w = write(out_fd, p, m);
				if (w < 0) {
					if (errno == EINTR)
						continue;
					r = -errno;
					goto out;
				}
				p += w;
				m -= (size_t)w;
			}
			if (content_length >= 0)
				content_length -= (int64_t)(n - head_end);
			n = head_end;
			if (content_length == 0)
				break;
			continue;
		}
		if (head_end && content_length >= 0 && n - head_end >= (size_t)content_length)
			break;
	}
out:
	if (r == 0 && !head_end)
		r = -EBADMSG;
	if (r == 0 && out_fd < 0 && content_length >= 0 && n - head_end < (size_t)content_length)
		r = -EPIPE; /* cut short */
	if (r == 0 && out_fd >= 0 && content_length > 0)
		r = -EPIPE;
	if (r == 0 && body) {
		*blen = n - head_end;
		memmove(buf, buf + head_end, *blen);
		buf[*blen] = '\0';
		*body = buf;
		return 0;
	}
	free(buf);
	return r;
}

static int status_errno(long status)
{
	switch (status) {
	case 400: case 413: return -EINVAL;
	case 401: case 403: return -EPERM;
	case 404: return -ENOENT;
	case 409: return -EEXIST;
	case 501: return -ENOTSUP;
	case 502: return -EHOSTUNREACH;
	case 507: return -ENOSPC;
	default: return -EIO;
	}
}

/* One exchange; the response body is returned in *body unless out_fd >= 0.
 * peer: a FlexiMigrate daemon (TCP ones get the cluster secret). */
static int exchange(const char *endpoint, const char *method, const char *path, const char *payload,
		    int timeout_ms, long *status, char **body, size_t *blen, int out_fd, fm_pacer *pacer, bool peer,
		    fm_error *err)
{
	int64_t deadline = fm_now_mono_ms() + timeout_ms;
	size_t plen = payload ? strlen(payload) : 0;
	_cleanup_free_ char *head = NULL;
	_cleanup_close_ int fd = fm_dial(endpoint, deadline, err);
	int r;

	if (fd < 0)
		return fd;
	bool tcp = strncmp(endpoint, "unix:", 5) != 0;
	_cleanup_free_ char *auth = peer && tcp && secret[0] ? fm_xasprintf("Authorization: Bearer %s\r\n", secret) : NULL;
	head = fm_xasprintf("%s %s HTTP/1.1\r\nHost: fleximigrate\r\nConnection: close\r\n%s"
			    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", method, path, auth ? auth : "",
			    plen);
	if ((r = send_all(fd, head, strlen(head), deadline)) < 0 ||
	    (plen && (r = send_all(fd, payload, plen, deadline)) < 0))
		return fm_error_set(err, r == -ETIMEDOUT ? r : -EHOSTUNREACH, "cannot reach %s: sending the request: %s",
				    endpoint, strerror(-r));
	if (pacer && pacer->bps) {
		int rcvbuf = 256 << 10; /* a small window: the cap holds from the start */
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	}
	r = read_response(fd, deadline, status, body, blen, out_fd, pacer);
	if (r == -ETIMEDOUT)
		return fm_error_set(err, r, "%s did not answer %s %s within %d ms", endpoint, method, path, timeout_ms);
	if (r < 0)
		return fm_error_set(err, r == -EMSGSIZE ? r : -EHOSTUNREACH, "bad answer from %s to %s %s: %s", endpoint,
				    method, path, strerror(-r));
	return 0;
}

int fm_http_call(const char *endpoint, const char *method, const char *path, json_t *body,
		 int timeout_ms, json_t **out, fm_error *err)
{
	_cleanup_free_ char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
	_cleanup_free_ char *resp = NULL;
	size_t rlen = 0;
	long status = 0;
	json_t *j;
	int r;

	if (out)
		*out = NULL;
	if ((r = exchange(endpoint, method, path, payload, timeout_ms, &status, &resp, &rlen, -1, NULL, true, err)) < 0)
		return r;
	j = rlen ? json_loadb(resp, rlen, 0, NULL) : json_object();
	if (status >= 400) {
		json_t *e = json_object_get(j, "error");
		const char *msg = json_string_value(json_object_get(e, "message"));
		const char *detail = json_string_value(json_object_get(e, "detail"));
		r = fm_error_set(err, status_errno(status), "%s", msg ? msg : "request failed");
		if (detail && err && !err->detail)
			fm_error_set_detail(err, fm_xstrdup(detail));
		if (!msg && err)
			fm_error_prefix(err, "%s %s on %s: HTTP %ld", method, path, endpoint, status);
		json_decref(j);
		return r;
	}
	if (!j)
		return fm_error_set(err, -EBADMSG, "%s answered %s %s with malformed JSON", endpoint, method, path);
	if (out)
		*out = j;
	else
		json_decref(j);
	return 0;
}

int fm_http_download(const char *endpoint, const char *path, const char *file, int timeout_ms,
		     uint64_t bandwidth_bps, fm_error *err)
{
	fm_pacer pacer = { .bps = bandwidth_bps };
	_cleanup_close_ int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	long status = 0;
	int r;

	if (fd < 0)
		return fm_error_set(err, -errno, "cannot create %s: %m", file);
	r = exchange(endpoint, "GET", path, NULL, timeout_ms, &status, NULL, NULL, fd, &pacer, true, err);
	if (r == 0 && status != 200)
		r = fm_error_set(err, status_errno(status), "%s answered HTTP %ld for %s", endpoint, status, path);
	if (r == 0 && fsync(fd) < 0)
		r = fm_error_set(err, -errno, "cannot write %s: %m", file);
	if (r < 0)
		unlink(file);
	return r;
}

int fm_http_post_url(const char *url, json_t *body, int timeout_ms, long *status, fm_error *err)
{
	char endpoint[300];
	const char *hp, *path;
	size_t n;

	if (strncmp(url, "http://", 7) != 0)
		return fm_error_set(err, -EINVAL, "%s: only http://HOST:PORT/PATH URLs are supported", url);
	hp = url + 7;
	path = strchr(hp, '/');
	n = path ? (size_t)(path - hp) : strlen(hp);
	char host[256];
	int port;
	if (n == 0 || n >= sizeof(endpoint) || (snprintf(endpoint, sizeof(endpoint), "%.*s", (int)n, hp),
						 fm_split_hostport(endpoint, host, sizeof(host), &port) < 0) || port == 0)
		return fm_error_set(err, -EINVAL, "%s: expected http://HOST:PORT/PATH", url);
	if (!path)
		path = "/";
	for (const char *p = path; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return fm_error_set(err, -EINVAL, "%s: the path holds a space or a control character", url);
	_cleanup_free_ char *payload = json_dumps(body, JSON_COMPACT);
	_cleanup_free_ char *resp = NULL;
	size_t rlen = 0;
	*status = 0;
	return exchange(endpoint, "POST", path, payload, timeout_ms, status, &resp, &rlen, -1, NULL, false, err);
}
