/* Unit tests: the HTTP/JSON plumbing (api/http_server.c, http_client.c) with a test
 * route table on a temporary UNIX socket and TCP port, and request parsing of
 * container specs.  Malformed, oversized and hostile requests get 4xx. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/http.h"
#include "basic/log.h"
#include "basic/util.h"
#include "runtime/net.h"
#include "runtime/runtime.h"

static void echo(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_http_ok(resp, 200, json_pack("{s:s, s:O}", "param", req->params[0] ? req->params[0] : "",
					"body", req->body ? req->body : json_null()));
}

static void fails(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_error e = FM_ERROR_INIT;
	fm_error_set(&e, -ENOENT, "no such thing");
	fm_error_set_detail(&e, fm_xstrdup("criu said no"));
	fm_http_fail(resp, &e);
	fm_error_clear(&e);
}

static const fm_http_route routes[] = {
	{ "POST", "/v1/echo/:x", echo, false },
	{ "GET", "/v1/echo/:x", echo, false },
	{ "GET", "/v1/local", echo, true },
	{ "GET", "/v1/fail", fails, false },
	{ NULL, NULL, NULL, false },
};

static char sock[64], ep[80];
static fm_http_server *srv;

static int setup(void **state)
{
	snprintf(sock, sizeof(sock), "/tmp/fm-test-api.%d.sock", (int)getpid());
	snprintf(ep, sizeof(ep), "unix:%s", sock);
	return fm_http_server_start(routes, NULL, sock, "127.0.0.1:17979", &srv, NULL);
}

static int teardown(void **state)
{
	fm_http_server_stop(srv);
	return 0;
}

static void test_roundtrip(void **state)
{
	json_t *out = NULL;
	json_t *body = json_pack("{s:i}", "n", 7); /* the caller keeps ownership */
	assert_int_equal(fm_http_call(ep, "POST", "/v1/echo/abc", body, 5000, &out, NULL), 0);
	json_decref(body);
	assert_string_equal(json_string_value(json_object_get(out, "param")), "abc");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(out, "body"), "n")), 7);
	json_decref(out);
}

static void test_errors(void **state)
{
	fm_error e = FM_ERROR_INIT;
	json_t *out = NULL;
	assert_int_equal(fm_http_call(ep, "GET", "/v1/nothing", NULL, 5000, &out, &e), -ENOENT);
	assert_non_null(strstr(e.msg, "no such endpoint"));
	fm_error_clear(&e);
	assert_int_equal(fm_http_call(ep, "DELETE", "/v1/echo/x", NULL, 5000, &out, &e), -EIO); /* 405 */
	fm_error_clear(&e);
	assert_int_equal(fm_http_call(ep, "GET", "/v1/fail", NULL, 5000, &out, &e), -ENOENT);
	assert_string_equal(e.msg, "no such thing");
	assert_string_equal(e.detail, "criu said no");
	fm_error_clear(&e);
	/* local-only routes are refused on TCP, served on the socket */
	assert_int_equal(fm_http_call("127.0.0.1:17979", "GET", "/v1/local", NULL, 5000, &out, &e), -EPERM);
	fm_error_clear(&e);
	assert_int_equal(fm_http_call(ep, "GET", "/v1/local", NULL, 5000, &out, NULL), 0);
	json_decref(out);
	/* nobody listening: a clear "cannot reach" */
	assert_true(fm_http_call("127.0.0.1:1", "GET", "/v1/info", NULL, 2000, &out, &e) < 0);
	assert_non_null(strstr(e.msg, "cannot reach 127.0.0.1:1"));
	fm_error_clear(&e);
}

/* Raw bytes on the socket: returns the HTTP status line's code. */
static int raw(const char *req, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[4096] = "";
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), code = 0;
	strcpy(sa.sun_path, sock);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	size_t off = 0;
	while (off < len) {
		ssize_t k = send(fd, req + off, len - off, MSG_NOSIGNAL);
		if (k <= 0)
			break;
		off += (size_t)k;
	}
	shutdown(fd, SHUT_WR);
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_WAITALL);
	if (n > 0)
		sscanf(buf, "HTTP/1.%*d %d", &code);
	close(fd);
	return code;
}

static int post_body(const char *body)
{
	char req[512];
	int n = snprintf(req, sizeof(req), "POST /v1/echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
			 strlen(body), body);
	return raw(req, (size_t)n);
}

static void test_bad_requests(void **state)
{
	assert_int_equal(post_body("{\"a\": 1,"), 400);
	assert_int_equal(post_body("[1,2]"), 400);
	assert_int_equal(post_body("{\"a\":1,\"a\":2}"), 400);
	assert_int_equal(post_body("\"\\u0000\""), 400);
	assert_int_equal(post_body("{\"a\":1}"), 200);
	/* an oversized body */
	size_t big = FM_HTTP_BODY_MAX + 100;
	char *req = fm_xmalloc(big + 200);
	int h = snprintf(req, 200, "POST /v1/echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", big);
	memset(req + h, 'a', big);
	assert_int_equal(raw(req, (size_t)h + big), 413);
	free(req);
	/* garbage: no crash; the server answers 400 or closes */
	const char *garbage = "\x01\x02\xff\xfe GARBAGE\r\n\r\n";
	int code = raw(garbage, strlen(garbage));
	assert_true(code == 0 || code == 400);
	/* the server still works afterwards */
	json_t *out = NULL;
	assert_int_equal(fm_http_call(ep, "GET", "/v1/echo/y", NULL, 5000, &out, NULL), 0);
	json_decref(out);
}

static void test_container_spec(void **state)
{
	struct {
		const char *json;
		const char *err; /* substring, NULL = valid */
	} cases[] = {
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[\"/bin/sh\"]}", NULL },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[\"/bin/sh\"],\"cpu_milli\":500,\"memory_bytes\":67108864}", NULL },
		{ "{\"image\":\"bb\",\"args\":[\"/bin/sh\"]}", "\"name\"" },
		{ "{\"name\":\"../etc\",\"image\":\"bb\",\"args\":[\"/bin/sh\"]}", "\"name\"" },
		{ "{\"name\":\"c1\",\"args\":[\"/bin/sh\"]}", "\"image\"" },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[]}", "\"args\"" },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[1]}", "\"args\"" },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[\"x\"],\"env\":\"A=1\"}", "\"env\"" },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[\"x\"],\"cpu_milli\":-1}", "\"cpu_milli\"" },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[\"x\"],\"memory_bytes\":100}", "\"memory_bytes\"" },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[\"x\"],\"digest\":\"md5:00\"}", "\"digest\"" },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[\"x\"],\"network\":{\"ip\":\"10.0.0.5/24\",\"dns_name\":\"web.mig.test\"}}", NULL },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[\"x\"],\"network\":{\"ip\":\"10.0.0.5/24\",\"dns_name\":\"web..test\"}}", "\"network.dns_name\"" },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[\"x\"],\"network\":{\"ip\":\"10.0.0.5/24\",\"dns_name\":\"web.-a.test\"}}", "\"network.dns_name\"" },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[\"x\"],\"network\":{\"ip\":\"10.0.0.5/24\",\"dns_name\":\"a b\"}}", "\"network.dns_name\"" },
		{ "{\"name\":\"c1\",\"image\":\"bb\",\"args\":[\"x\"],\"network\":{\"ip\":\"10.0.0.5/24\",\"dns_name\":7}}", "\"network.dns_name\"" },
		{ "[]", "object" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		json_t *o = json_loads(cases[i].json, 0, NULL);
		fm_container_spec spec;
		fm_error e = FM_ERROR_INIT;
		int r = fm_container_spec_from_json(o, &spec, &e);
		if (cases[i].err) {
			assert_int_equal(r, -EINVAL);
			assert_non_null(strstr(e.msg, cases[i].err));
		} else {
			assert_int_equal(r, 0);
			json_t *back = fm_container_spec_to_json(&spec);
			assert_string_equal(json_string_value(json_object_get(back, "name")), "c1");
			if (spec.net_dns_name) /* travels with the spec */
				assert_string_equal(json_string_value(json_object_get(json_object_get(back, "network"),
										      "dns_name")), "web.mig.test");
			json_decref(back);
		}
		fm_container_spec_clear(&spec);
		fm_error_clear(&e);
		json_decref(o);
	}
}

static void test_dns_name_valid(void **state)
{
	static const char *const good[] = { "web", "web.mig.test", "web.mig.test.", "a-1.b2.example", "x.y" };
	static const char *const bad[] = { "", ".", ".web", "web..test", "-web.test", "web-.test", "web.test-",
					   "we b.test", "web_x.test", "web/x", "a\n.test" };
	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		assert_true(fm_net_dns_name_valid(good[i]));
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_false(fm_net_dns_name_valid(bad[i]));
	char label[80], name[400];
	memset(label, 'a', 63);
	label[63] = '\0';
	assert_true(fm_net_dns_name_valid(label));
	label[63] = 'a';
	label[64] = '\0';
	assert_false(fm_net_dns_name_valid(label)); /* 64 in a label */
	label[63] = '\0';
	snprintf(name, sizeof(name), "%s.%s.%s.%.61s", label, label, label, label); /* 253 */
	assert_true(fm_net_dns_name_valid(name));
	snprintf(name, sizeof(name), "%s.%s.%s.%.62s", label, label, label, label); /* 254 */
	assert_false(fm_net_dns_name_valid(name));
	assert_false(fm_net_dns_name_valid(NULL));
}

static void test_secret(void **state)
{
	char path[] = "/tmp/fm-test-secret.XXXXXX";
	int fd = mkstemp(path);
	fm_error e = FM_ERROR_INIT;
	const char *good = "abcdefghijklmnopqrstuvwxyz012345\n";
	assert_true(write(fd, good, strlen(good)) > 0);
	close(fd);
	chmod(path, 0644);
	assert_int_equal(fm_http_set_secret_file(path, &e), -EPERM); /* readable by others */
	fm_error_clear(&e);
	chmod(path, 0600);
	assert_int_equal(fm_http_set_secret_file(path, &e), 0);
	assert_true(fm_http_has_secret());
	assert_true(fm_http_secret_ok("Bearer abcdefghijklmnopqrstuvwxyz012345"));
	assert_false(fm_http_secret_ok("Bearer abcdefghijklmnopqrstuvwxyz012346"));
	assert_false(fm_http_secret_ok("Bearer abcdefghijklmnopqrstuvwxyz01234"));
	assert_false(fm_http_secret_ok("abcdefghijklmnopqrstuvwxyz012345"));
	assert_false(fm_http_secret_ok(NULL));
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(write(fd, "short", 5) == 5);
	close(fd);
	assert_int_equal(fm_http_set_secret_file(path, &e), -EINVAL);
	fm_error_clear(&e);
	fm_http_set_secret_file(NULL, NULL);
	assert_false(fm_http_has_secret());
	assert_true(fm_http_secret_ok(NULL)); /* no secret configured: open */
	unlink(path);
}

int main(void)
{
	fm_log_setup("test", FM_LOG_ERROR + 1, -1, -1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip), cmocka_unit_test(test_errors),
		cmocka_unit_test(test_bad_requests), cmocka_unit_test(test_container_spec), cmocka_unit_test(test_dns_name_valid),
		cmocka_unit_test(test_secret),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
