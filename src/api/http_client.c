#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "api/http.h"
#include "basic/util.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }
void fm_http_global_init(void) { pthread_once(&curl_once, curl_init_once); }

struct buf {
	char *p;
	size_t n;
};

#define RESP_MAX (64u << 20)

static size_t write_buf(char *data, size_t sz, size_t nm, void *opaque)
{
	struct buf *b = opaque;
	size_t n = sz * nm;
	if (b->n + n > RESP_MAX)
		return 0; /* aborts the transfer: no peer gets to make us allocate GBs */
	char *np = realloc(b->p, b->n + n + 1);
	if (!np)
		abort();
	memcpy(np + b->n, data, n);
	b->n += n;
	np[b->n] = '\0';
	b->p = np;
	return n;
}

/* Sets up the handle for an endpoint; url receives the full URL. */
static CURL *setup(const char *endpoint, const char *path, int timeout_ms, char *url, size_t urllen)
{
	CURL *h;

	fm_http_global_init();
	h = curl_easy_init();
	if (!h)
		abort();
	if (!strncmp(endpoint, "unix:", 5)) {
		curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, endpoint + 5);
		snprintf(url, urllen, "http://localhost%s", path);
	} else {
		snprintf(url, urllen, "http://%s%s", endpoint, path);
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 5000 ? (long)timeout_ms : 5000L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
	/* no proxy from the environment: peers are addressed directly */
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	return h;
}

static int transport_error(CURLcode rc, const char *endpoint, fm_error *err)
{
	int code;
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT: code = -ETIMEDOUT; break;
	case CURLE_COULDNT_CONNECT: code = -ECONNREFUSED; break;
	default: code = -EHOSTUNREACH; break;
	}
	return fm_error_set(err, code, "cannot reach %s: %s", endpoint, curl_easy_strerror(rc));
}

static int status_errno(long status)
{
	switch (status) {
	case 400: case 413: return -EINVAL;
	case 403: return -EPERM;
	case 404: return -ENOENT;
	case 409: return -EEXIST;
	case 501: return -ENOTSUP;
	case 502: return -EHOSTUNREACH;
	case 507: return -ENOSPC;
	default: return -EIO;
	}
}

int fm_http_call(const char *endpoint, const char *method, const char *path, json_t *body,
		 int timeout_ms, json_t **out, fm_error *err)
{
	char url[1024];
	struct buf b = { 0 };
	struct curl_slist *hdr = NULL;
	char *payload = NULL;
	long status = 0;
	CURLcode rc;
	json_t *resp;
	int r = 0;

	if (out)
		*out = NULL;
	CURL *h = setup(endpoint, path, timeout_ms, url, sizeof(url));
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		payload = json_dumps(body, JSON_COMPACT);
		hdr = curl_slist_append(hdr, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
	}
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_buf);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		r = transport_error(rc, endpoint, err);
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	resp = b.n ? json_loadb(b.p, b.n, 0, NULL) : json_object();
	if (status >= 400) {
		json_t *e = json_object_get(resp, "error");
		const char *msg = json_string_value(json_object_get(e, "message"));
		const char *detail = json_string_value(json_object_get(e, "detail"));
		r = fm_error_set(err, status_errno(status), "%s", msg ? msg : "request failed");
		if (detail && err && !err->detail)
			fm_error_set_detail(err, fm_xstrdup(detail));
		if (!msg && err)
			fm_error_prefix(err, "%s %s on %s: HTTP %ld", method, path, endpoint, status);
		json_decref(resp);
		goto out;
	}
	if (!resp) {
		r = fm_error_set(err, -EBADMSG, "%s answered %s %s with malformed JSON", endpoint, method, path);
		goto out;
	}
	if (out)
		*out = resp;
	else
		json_decref(resp);
out:
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	free(payload);
	free(b.p);
	return r;
}

int fm_http_download(const char *endpoint, const char *path, const char *file, int timeout_ms,
		     fm_error *err)
{
	char url[1024];
	long status = 0;
	CURLcode rc;
	FILE *f = fopen(file, "wxe");
	int r = 0;

	if (!f)
		return fm_error_set(err, -errno, "cannot create %s: %m", file);
	CURL *h = setup(endpoint, path, timeout_ms, url, sizeof(url));
	curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (rc == CURLE_HTTP_RETURNED_ERROR)
		r = fm_error_set(err, status_errno(status), "%s answered HTTP %ld for %s", endpoint, status, path);
	else if (rc != CURLE_OK)
		r = transport_error(rc, endpoint, err);
	curl_easy_cleanup(h);
	if (fclose(f) != 0 && r == 0)
		r = fm_error_set(err, -errno, "cannot write %s: %m", file);
	if (r < 0)
		unlink(file);
	return r;
}
