/* Page relay over loopback: a fake CRIU page server (an echo server that also
 * answers "how many bytes did you get"), an ingress relay in front of it, an
 * egress relay in front of that, and the test as the CRIU client. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "basic/util.h"
#include "sync/relay.h"

static const char TOKEN_S[FM_XFER_TOKEN_LEN + 1] = "0123456789abcdef";
static const char BAD_TOKEN_S[FM_XFER_TOKEN_LEN + 1] = "0123456789abcdeX";
#define TOKEN ((const uint8_t *)TOKEN_S)
#define BAD_TOKEN ((const uint8_t *)BAD_TOKEN_S)

/* ---- the fake page server: echoes everything back until EOF ---- */
typedef struct echo_server {
	int lfd, port;
	pthread_t th;
} echo_server;

static void *echo_thread(void *opaque)
{
	echo_server *e = opaque;
	int fd = accept(e->lfd, NULL, NULL);
	static uint8_t buf[65536];
	if (fd < 0)
		return NULL;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		for (ssize_t off = 0; off < n;) {
			ssize_t k = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
			if (k <= 0)
				goto out;
			off += k;
		}
	}
out:
	shutdown(fd, SHUT_WR);
	close(fd);
	return NULL;
}

static void echo_start(echo_server *e)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	e->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(e->lfd >= 0);
	assert_int_equal(bind(e->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(e->lfd, 4), 0);
	assert_int_equal(getsockname(e->lfd, (struct sockaddr *)&sa, &len), 0);
	e->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&e->th, NULL, echo_thread, e), 0);
}

static void echo_stop(echo_server *e)
{
	shutdown(e->lfd, SHUT_RDWR);
	pthread_join(e->th, NULL);
	close(e->lfd);
}

static int connect_local(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* The client side of CRIU: writes data in a thread, reads the echo here. */
typedef struct writer {
	int fd;
	const uint8_t *data;
	size_t len;
	pthread_t th;
} writer;

static void *write_thread(void *opaque)
{
	writer *w = opaque;
	for (size_t off = 0; off < w->len;) {
		ssize_t k = send(w->fd, w->data + off, w->len - off > 100000 ? 100000 : w->len - off, MSG_NOSIGNAL);
		if (k <= 0)
			break;
		off += (size_t)k;
	}
	shutdown(w->fd, SHUT_WR);
	return NULL;
}

/* Sends data through fd (to the egress relay) -> ingress -> echo and back;
 * returns bytes echoed intact (len if all), and the echo's readback into out. */
static size_t roundtrip_fd(int fd, const uint8_t *data, size_t len, uint8_t *out)
{
	writer w = { fd, data, len, 0 };
	size_t got = 0;
	assert_int_equal(pthread_create(&w.th, NULL, write_thread, &w), 0);
	for (;;) {
		ssize_t n = recv(w.fd, out + got, len - got, 0);
		if (n <= 0 || (got += (size_t)n) == len)
			break;
	}
	pthread_join(w.th, NULL);
	close(w.fd);
	return got;
}

static size_t roundtrip(int egress_port, const uint8_t *data, size_t len, uint8_t *out)
{
	return roundtrip_fd(connect_local(egress_port), data, len, out);
}

typedef struct chain {
	echo_server echo;
	fm_relay *in, *out;
} chain;

static void chain_start(chain *c, const uint8_t *egress_token, const fm_relay_opts *o)
{
	fm_error err = FM_ERROR_INIT;
	echo_start(&c->echo);
	assert_int_equal(fm_relay_ingress("127.0.0.1", TOKEN, "127.0.0.1", c->echo.port, o, &c->in, &err), 0);
	assert_int_equal(fm_relay_egress("127.0.0.1", fm_relay_port(c->in), egress_token, o, &c->out, &err), 0);
}

static void chain_stop(chain *c)
{
	fm_relay_free(c->out);
	fm_relay_free(c->in);
	echo_stop(&c->echo);
}

static uint8_t *random_data(size_t len)
{
	uint8_t *d = fm_xmalloc(len);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		d[i] = (uint8_t)x;
	}
	return d;
}

static void test_incompressible_roundtrip(void **state)
{
	(void)state;
	size_t len = 8u << 20;
	_cleanup_free_ uint8_t *data = random_data(len), *back = fm_xmalloc(len);
	fm_relay_opts o = FM_RELAY_OPTS_INIT;
	fm_relay_stats st;
	fm_error err = FM_ERROR_INIT;
	chain c;

	o.compress = FM_COMPRESS_AUTO;
	chain_start(&c, TOKEN, &o);
	assert_int_equal(roundtrip(fm_relay_port(c.out), data, len, back), len);
	assert_memory_equal(data, back, len);
	assert_int_equal(fm_relay_wait(c.out, 5000, &err), 0);
	assert_int_equal(fm_relay_wait(c.in, 5000, &err), 0);
	fm_relay_get_stats(c.out, &st);
	assert_int_equal(st.connections, 1);
	assert_int_equal(st.raw_tx, len);
	assert_int_equal(st.raw_rx, len);
	/* random data is sent raw: the wire carries only the frame headers on top */
	assert_true(st.wire_tx <= len + len / 100);
	chain_stop(&c);
}

/* CRIU's end of a socket pair (--ps-socket) instead of a connection to a port */
static void test_egress_pair(void **state)
{
	(void)state;
	size_t len = 3u << 20;
	_cleanup_free_ uint8_t *data = random_data(len), *back = fm_xmalloc(len);
	fm_relay_stats st;
	fm_error err = FM_ERROR_INIT;
	chain c;
	int sk = -1;

	echo_start(&c.echo);
	assert_int_equal(fm_relay_ingress("127.0.0.1", TOKEN, "127.0.0.1", c.echo.port, NULL, &c.in, &err), 0);
	assert_int_equal(fm_relay_egress_pair("127.0.0.1", fm_relay_port(c.in), TOKEN, NULL, &sk, &c.out, &err), 0);
	assert_true(sk > STDERR_FILENO);
	assert_int_equal(fm_relay_port(c.out), 0);
	assert_int_equal(roundtrip_fd(sk, data, len, back), len);
	assert_memory_equal(data, back, len);
	assert_int_equal(fm_relay_wait(c.out, 5000, &err), 0);
	fm_relay_get_stats(c.out, &st);
	assert_int_equal(st.connections, 1);
	assert_int_equal(st.raw_tx, len);
	assert_int_equal(st.raw_rx, len);
	chain_stop(&c);
}

static void test_compressible_is_compressed(void **state)
{
	(void)state;
	size_t len = 4u << 20;
	_cleanup_free_ uint8_t *data = fm_xcalloc(1, len), *back = fm_xmalloc(len);
	fm_relay_opts o = FM_RELAY_OPTS_INIT;
	fm_relay_stats st;
	chain c;

	for (size_t i = 0; i < len; i += 4096)
		snprintf((char *)data + i, 64, "page %zu", i / 4096);
	o.compress = 3;
	chain_start(&c, TOKEN, &o);
	assert_int_equal(roundtrip(fm_relay_port(c.out), data, len, back), len);
	assert_memory_equal(data, back, len);
	fm_relay_get_stats(c.out, &st);
	assert_true(st.compressed_frames > 0);
	assert_int_equal(st.level, 3);
	assert_true(st.wire_tx < len / 10);
	fm_relay_get_stats(c.in, &st);
	assert_int_equal(st.raw_rx, len);
	chain_stop(&c);
}

/* Page-fault answers: one small message at a time, each waited for.  The
 * compressed frames of a direction are one zstd stream: each must come out
 * whole at once (no waiting for what follows), and the later ones shrink
 * with what came before. */
static void test_small_answers_one_at_a_time(void **state)
{
	(void)state;
	enum { MSG = 4096, COUNT = 50 };
	uint8_t msg[MSG], back[MSG];
	fm_relay_opts o = FM_RELAY_OPTS_INIT;
	fm_relay_stats st;
	chain c;

	o.compress = 3;
	chain_start(&c, TOKEN, &o);
	int fd = connect_local(fm_relay_port(c.out));
	for (int i = 0; i < COUNT; i++) {
		for (int j = 0; j < MSG; j++)
			msg[j] = (uint8_t)("struct page {" [j % 13] ^ (j % 512 == 0 ? i : 0));
		assert_int_equal(send(fd, msg, MSG, 0), MSG);
		size_t got = 0;
		while (got < MSG) {
			ssize_t n = recv(fd, back + got, MSG - got, 0);
			assert_true(n > 0);
			got += (size_t)n;
		}
		assert_memory_equal(back, msg, MSG);
	}
	close(fd);
	fm_error err = FM_ERROR_INIT;
	assert_int_equal(fm_relay_wait(c.out, 5000, &err), 0);
	fm_relay_get_stats(c.out, &st);
	assert_int_equal(st.raw_tx, MSG * COUNT);
	assert_true(st.compressed_frames >= COUNT);
	assert_true(st.wire_tx < MSG * COUNT / 8);
	chain_stop(&c);
}

static void test_wrong_token_refused(void **state)
{
	(void)state;
	uint8_t data[100] = "hello", back[100];
	fm_error err = FM_ERROR_INIT;
	chain c;

	chain_start(&c, BAD_TOKEN, NULL);
	assert_int_equal(roundtrip(fm_relay_port(c.out), data, sizeof(data), back), 0);
	assert_int_equal(fm_relay_wait(c.out, 5000, &err), -EACCES);
	assert_non_null(strstr(err.msg, "refused"));
	fm_error_clear(&err);
	chain_stop(&c);
}

static void test_garbage_then_real_peer(void **state)
{
	(void)state;
	size_t len = 1 << 20;
	_cleanup_free_ uint8_t *data = random_data(len), *back = fm_xmalloc(len);
	chain c;

	chain_start(&c, TOKEN, NULL);
	int fd = connect_local(fm_relay_port(c.in));
	assert_int_equal(send(fd, "GET / HTTP/1.0\r\n\r\nxxxxxxxxxxxxxxxxxxxxxx", 40, MSG_NOSIGNAL), 40);
	char b[8];
	assert_true(recv(fd, b, sizeof(b), 0) <= 0); /* dropped */
	close(fd);
	assert_int_equal(roundtrip(fm_relay_port(c.out), data, len, back), len);
	assert_memory_equal(data, back, len);
	chain_stop(&c);
}

static void test_bandwidth_cap(void **state)
{
	(void)state;
	size_t len = 2u << 20;
	_cleanup_free_ uint8_t *data = random_data(len), *back = fm_xmalloc(len);
	fm_relay_opts o = FM_RELAY_OPTS_INIT;
	chain c;

	o.bandwidth_bps = 40000000; /* 2 MiB both ways at 40 Mbit/s: at least 0.4 s each way, overlapped */
	chain_start(&c, TOKEN, &o);
	int64_t t0 = fm_now_mono_ms();
	assert_int_equal(roundtrip(fm_relay_port(c.out), data, len, back), len);
	int64_t ms = fm_now_mono_ms() - t0;
	assert_memory_equal(data, back, len);
	/* a lower bound only: the cap must hold; how much slower a loaded machine is does not matter */
	assert_true(ms >= 350);
	chain_stop(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_incompressible_roundtrip),
		cmocka_unit_test(test_egress_pair),
		cmocka_unit_test(test_compressible_is_compressed),
		cmocka_unit_test(test_small_answers_one_at_a_time),
		cmocka_unit_test(test_wrong_token_refused),
		cmocka_unit_test(test_garbage_then_real_peer),
		cmocka_unit_test(test_bandwidth_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
