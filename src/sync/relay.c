/* Delta Transfer, page relay (see relay.h for the wire format).
 *
 * Threads: one accepts; each relayed connection has one thread that does the
 * handshake and then encodes local -> network while a second one decodes
 * network -> local.  Sockets are blocking; cancellation is shutdown(2), which
 * wakes every blocked read and write.  File descriptors are closed only in
 * fm_relay_free, after every thread has been joined, so a shutdown can never hit
 * a reused descriptor.
 */
#include "sync/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <xxhash.h>

#include "basic/log.h"
#include "basic/util.h"
#include "sync/compress.h"

#define FMR_MAGIC "FMR1"
#define FMR_VERSION 2 /* 2: frames of up to 1 MiB, the compressed ones one zstd stream */
#define FMR_HELLO 28
#define FMR_HDR 16
#define FMR_ZSTD 0x80000000u
#define FMR_BLOCKED_US 2000        /* a send that waited this long measured the link */

typedef struct relay_conn {
	struct fm_relay *r;
	int local_fd, net_fd, accepted_fd;
	pthread_t thread;
	struct relay_conn *next;
} relay_conn;

struct fm_relay {
	bool ingress;
	fm_xfer_listener *l;
	uint8_t token[FM_XFER_TOKEN_LEN];
	char *peer_host;   /* ingress: CRIU's host; egress: the remote relay */
	int peer_port;
	fm_relay_opts o;
	pthread_t accept_thread;
	bool accept_started;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	relay_conn *conns;
	unsigned active;
	volatile bool stopping;
	int status;
	fm_error err;
	fm_relay_stats st;
	fm_pacer pacer;    /* the bandwidth cap */
	/* link measurement: bytes and time of sends that had to wait, and the span
	 * of all sends */
	uint64_t blocked_bytes;
	int64_t blocked_us;
	int64_t first_send_us, last_send_us;
};


/* The first failure of any connection is the relay's. */
static void relay_fail(fm_relay *r, int status, const char *msg)
{
	pthread_mutex_lock(&r->mu);
	if (r->status == 0 && !r->stopping) {
		r->status = status;
		fm_error_set(&r->err, status, "%s", msg);
	}
	pthread_mutex_unlock(&r->mu);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* 1 = n bytes read, 0 = EOF before the first byte, <0 = error or EOF midway. */
static int read_all(int fd, uint8_t *p, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = recv(fd, p + got, n - got, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return got == 0 ? 0 : -ECONNRESET;
		got += (size_t)k;
	}
	return 1;
}

static bool stopping(fm_relay *r)
{
	pthread_mutex_lock(&r->mu);
	bool s = r->stopping;
	pthread_mutex_unlock(&r->mu);
	return s;
}

/* Pays for n bytes at the bandwidth cap. */
static void rate_take(fm_relay *r, size_t n)
{
	pthread_mutex_lock(&r->mu);
	int64_t wait_us = fm_pacer_take(&r->pacer, n);
	pthread_mutex_unlock(&r->mu);
	fm_sleep_us(wait_us, &r->stopping);
}

static double link_bps(fm_relay *r)
{
	double measured = r->blocked_us > 0 && r->blocked_bytes >= (1u << 20)
		? (double)r->blocked_bytes * 8e6 / (double)r->blocked_us : 0;
	/* a long stream's average rate is a lower bound of the link's */
	int64_t span = r->last_send_us - r->first_send_us;
	double average = span > 0 && r->st.wire_tx >= (8u << 20) ? (double)r->st.wire_tx * 8e6 / (double)span : 0;
	if (average > measured)
		measured = average;
	double cap = (double)r->o.bandwidth_bps;
	if (cap > 0 && (measured == 0 || cap < measured))
		return cap;
	return measured;
}

/* ---- the two directions of one connection ---- */

static int encode_loop(fm_relay *r, int in, int out, const char *what)
{
	size_t bound = fm_compress_bound(FM_RELAY_BLOCK);
	_cleanup_free_ uint8_t *raw = fm_xmalloc(FM_RELAY_BLOCK), *frame = fm_xmalloc(FMR_HDR + bound);
	fm_compressor z = FM_COMPRESSOR_INIT_STREAM(r->o.compress);
	uint64_t dense_seen = 0;
	z.dense = true;   /* pages: a long stream beside its link */
	int ret = 0;

	for (;;) {
		ssize_t n = recv(in, raw, FM_RELAY_BLOCK, 0);
		if (n < 0 && errno == EINTR)
			continue;
		/* CRIU's sockets keep Nagle: its last small message (a flush, a
		 * request) waits for our ACK of what came before, and a delayed ACK
		 * costs up to 200 ms.  Quick ACKs are not sticky: renewed each read. */
		(void)setsockopt(in, IPPROTO_TCP, TCP_QUICKACK, &(int){ 1 }, sizeof(int));
		if (n < 0) {
			ret = -errno;
			break;
		}
		if (n == 0) {
			(void)shutdown(out, SHUT_WR);
			break;
		}
		/* what else has arrived goes in the same frame: a read returns what
		 * one of CRIU's writes brought, and zstd does better on a whole
		 * block than on its pieces (no waiting for more: a fault's answer
		 * goes at once) */
		bool ended = false;
		while (n < FM_RELAY_BLOCK) {
			ssize_t m = recv(in, raw + n, FM_RELAY_BLOCK - (size_t)n, MSG_DONTWAIT);
			if (m > 0)
				n += m;
			else if (m == 0)
				ended = true;
			if (m == 0 || (m < 0 && errno != EINTR))
				break;
		}
		uint32_t rawlen = (uint32_t)n;
		pthread_mutex_lock(&r->mu);
		double link = link_bps(r);
		pthread_mutex_unlock(&r->mu);
		size_t c = fm_compress_frame(&z, raw, (size_t)n, frame + FMR_HDR, bound, link);
		size_t wire = c ? c : (size_t)n;
		if (!c)
			memcpy(frame + FMR_HDR, raw, (size_t)n);
		fm_put_le32(frame, (uint32_t)wire);
		fm_put_le32(frame + 4, rawlen | (c ? FMR_ZSTD : 0));
		fm_put_le64(frame + 8, XXH3_64bits(raw, (size_t)n));
		rate_take(r, FMR_HDR + wire);
		int64_t t0 = fm_now_mono_us();
		if ((ret = write_all(out, frame, FMR_HDR + wire)) < 0)
			break;
		int64_t dt = fm_now_mono_us() - t0;
		pthread_mutex_lock(&r->mu);
		r->st.wire_tx += FMR_HDR + wire;
		r->st.raw_tx += (uint64_t)n;
		r->st.frames_tx++;
		if (c) {
			r->st.compressed_frames++;
			r->st.level = z.level;
		}
		r->st.dense_tx += z.dense_bytes - dense_seen;
		dense_seen = z.dense_bytes;
		if (dt >= FMR_BLOCKED_US) {
			r->blocked_bytes += FMR_HDR + wire;
			r->blocked_us += dt;
		}
		if (!r->first_send_us)
			r->first_send_us = t0;
		r->last_send_us = t0 + dt;
		pthread_mutex_unlock(&r->mu);
		if (ended) {
			(void)shutdown(out, SHUT_WR);
			break;
		}
	}
	fm_compressor_free(&z);
	if (ret < 0 && !stopping(r)) {
		char msg[160];
		snprintf(msg, sizeof(msg), "page relay: %s: %s", what, strerror(-ret));
		relay_fail(r, ret, msg);
	}
	return ret;
}

static int decode_loop(fm_relay *r, int in, int out, const char *what)
{
	size_t bound = fm_compress_bound(FM_RELAY_BLOCK);
	_cleanup_free_ uint8_t *wirebuf = fm_xmalloc(bound), *raw = fm_xmalloc(FM_RELAY_BLOCK);
	fm_decompressor dctx = { 0 };
	const char *why = NULL;
	int ret = 0;

	for (;;) {
		uint8_t h[FMR_HDR];
		int k = read_all(in, h, sizeof(h));
		if (k == 0) {
			(void)shutdown(out, SHUT_WR);
			break;
		}
		if (k < 0) {
			ret = k;
			break;
		}
		uint32_t wire = fm_get_le32(h), rawlen = fm_get_le32(h + 4) & ~FMR_ZSTD;
		bool z = fm_get_le32(h + 4) & FMR_ZSTD;
		if (rawlen == 0 || rawlen > FM_RELAY_BLOCK || wire > bound || (!z && wire != rawlen)) {
			ret = -EPROTO;
			why = "malformed frame header";
			break;
		}
		if ((k = read_all(in, z ? wirebuf : raw, wire)) <= 0) {
			ret = k < 0 ? k : -ECONNRESET;
			break;
		}
		if (z && !fm_decompress_stream(&dctx, wirebuf, wire, raw, rawlen)) {
			ret = -EBADMSG;
			why = "a compressed frame does not decompress";
			break;
		}
		if (XXH3_64bits(raw, rawlen) != fm_get_le64(h + 8)) {
			ret = -EBADMSG;
			why = "checksum mismatch: the page stream was corrupted on the way";
			break;
		}
		if ((ret = write_all(out, raw, rawlen)) < 0)
			break;
		pthread_mutex_lock(&r->mu);
		r->st.wire_rx += FMR_HDR + wire;
		r->st.raw_rx += rawlen;
		pthread_mutex_unlock(&r->mu);
	}
	fm_decompressor_free(&dctx);
	if (ret < 0 && !stopping(r)) {
		char msg[200];
		snprintf(msg, sizeof(msg), "page relay: %s: %s", what, why ? why : strerror(-ret));
		relay_fail(r, ret, msg);
	}
	return ret;
}

typedef struct decode_args {
	fm_relay *r;
	int in, out;
} decode_args;

static void *decode_thread(void *opaque)
{
	decode_args *a = opaque;
	/* a broken stream from the peer breaks the other direction too: the
	 * local side may be waiting for answers without asking anything more,
	 * and the encoder would wait for it for ever */
	if (decode_loop(a->r, a->in, a->out, "from the peer to CRIU") < 0) {
		(void)shutdown(a->in, SHUT_RDWR);
		(void)shutdown(a->out, SHUT_RDWR);
	}
	return NULL;
}

/* Blocking, and without Nagle: CRIU's page protocol is requests and replies;
 * a reply's last segment held back for an ACK costs a delayed-ACK timeout. */
static void set_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL), one = 1;
	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void set_rcvtimeo(int fd, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* An idle page stream is normal (CRIU between two memory areas); a dead peer is
 * found by keepalive probes within about the io timeout. */
static void set_keepalive(int fd, int timeout_ms)
{
	int one = 1, idle = timeout_ms / 3000 > 0 ? timeout_ms / 3000 : 1, cnt = 3;
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

/* Egress: connect to the remote relay and authenticate. */
static int handshake_egress(fm_relay *r, relay_conn *c, fm_error *err)
{
	uint8_t hello[FMR_HELLO] = FMR_MAGIC, ok[4];
	int fd = fm_xfer_connect(r->peer_host, r->peer_port, r->o.io_timeout_ms, err);
	if (fd < 0)
		return fd;
	pthread_mutex_lock(&r->mu);
	c->net_fd = fd;
	pthread_mutex_unlock(&r->mu);
	set_blocking(fd);
	set_keepalive(fd, r->o.io_timeout_ms);
	fm_put_le32(hello + 4, FMR_VERSION);
	memcpy(hello + 8, r->token, FM_XFER_TOKEN_LEN);
	set_rcvtimeo(fd, r->o.io_timeout_ms);
	int k = write_all(fd, hello, sizeof(hello));
	if (k == 0)
		k = read_all(fd, ok, sizeof(ok));
	if (k <= 0 || memcmp(ok, "OK\0\0", 4) != 0)
		return fm_error_set(err, -EACCES, "page relay at %s:%d refused the connection (wrong token, "
				    "or the migration there is gone)%s%s", r->peer_host, r->peer_port,
				    k < 0 ? ": " : "", k < 0 ? strerror(-k) : "");
	set_rcvtimeo(fd, 0);
	return 0;
}

/* Ingress: check the HELLO of an accepted connection, then connect to CRIU.
 * -EACCES = not our peer (dropped quietly: anyone can connect to a port). */
static int handshake_ingress(fm_relay *r, relay_conn *c, fm_error *err)
{
	uint8_t hello[FMR_HELLO], diff = 0;
	set_blocking(c->accepted_fd);
	set_rcvtimeo(c->accepted_fd, r->o.io_timeout_ms);
	if (read_all(c->accepted_fd, hello, sizeof(hello)) <= 0 || memcmp(hello, FMR_MAGIC, 4) != 0)
		return fm_error_set(err, -EACCES, "not a page relay HELLO");
	for (int i = 0; i < FM_XFER_TOKEN_LEN; i++)
		diff |= (uint8_t)(hello[8 + i] ^ r->token[i]);
	if (diff || fm_get_le32(hello + 4) != FMR_VERSION)
		return fm_error_set(err, -EACCES, "wrong token or protocol version");
	set_rcvtimeo(c->accepted_fd, 0);
	set_keepalive(c->accepted_fd, r->o.io_timeout_ms);
	int fd = fm_xfer_connect(r->peer_host, r->peer_port, r->o.io_timeout_ms, err);
	if (fd < 0) {
		fm_error_prefix(err, "page relay cannot reach CRIU");
		return fd;
	}
	set_blocking(fd);
	pthread_mutex_lock(&r->mu);
	c->local_fd = fd;
	c->net_fd = c->accepted_fd;
	pthread_mutex_unlock(&r->mu);
	return write_all(c->net_fd, (const uint8_t *)"OK\0\0", 4) < 0 ? -EPIPE : 0;
}

static void *conn_thread(void *opaque)
{
	relay_conn *c = opaque;
	fm_relay *r = c->r;
	fm_error e = FM_ERROR_INIT;
	int k;

	if (r->ingress) {
		k = handshake_ingress(r, c, &e);
	} else {
		c->local_fd = c->accepted_fd;
		set_blocking(c->local_fd);
		k = handshake_egress(r, c, &e);
	}
	if (k == -EACCES && r->ingress) {
		fm_debug(FM_C_DELTA_TRANSFER, "page relay dropped a connection: %s", e.msg);
	} else if (k < 0) {
		relay_fail(r, k, e.msg);
	} else {
		pthread_mutex_lock(&r->mu);
		r->st.connections++;
		pthread_mutex_unlock(&r->mu);
		decode_args da = { r, c->net_fd, c->local_fd };
		pthread_t dt;
		bool started = pthread_create(&dt, NULL, decode_thread, &da) == 0;
		if (!started) {
			relay_fail(r, -EAGAIN, "page relay: cannot start a thread");
		} else {
			if (encode_loop(r, c->local_fd, c->net_fd, "from CRIU to the peer") < 0) {
				(void)shutdown(c->net_fd, SHUT_RDWR);
				(void)shutdown(c->local_fd, SHUT_RDWR);
			}
			pthread_join(dt, NULL);
		}
	}
	/* Done, cleanly or not: a broken stream must break CRIU's side too, and a
	 * refused peer must not wait for an answer. */
	(void)shutdown(c->accepted_fd, SHUT_RDWR);
	if (c->net_fd >= 0)
		(void)shutdown(c->net_fd, SHUT_RDWR);
	if (c->local_fd >= 0)
		(void)shutdown(c->local_fd, SHUT_RDWR);
	fm_error_clear(&e);
	pthread_mutex_lock(&r->mu);
	r->active--;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* Relays fd (accepted, or CRIU's socket pair) on a thread of its own; closes
 * it if that cannot start. */
static int relay_conn_start(fm_relay *r, int fd)
{
	relay_conn *c = fm_xcalloc(1, sizeof(*c));
	c->r = r;
	c->accepted_fd = fd;
	c->local_fd = c->net_fd = -1;
	pthread_mutex_lock(&r->mu);
	if (r->stopping || pthread_create(&c->thread, NULL, conn_thread, c) != 0) {
		pthread_mutex_unlock(&r->mu);
		close(fd);
		free(c);
		return -EAGAIN;
	}
	r->active++;
	c->next = r->conns;
	r->conns = c;
	pthread_mutex_unlock(&r->mu);
	return 0;
}

static void *accept_thread(void *opaque)
{
	fm_relay *r = opaque;
	int lfd = fm_xfer_listener_fd(r->l), cfd = fm_xfer_listener_cancel_fd(r->l);

	while (fm_wait_readable(lfd, cfd) > 0) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			(void)relay_conn_start(r, fd);
	}
	return NULL;
}

/* bind_host NULL: no listener (fm_relay_egress_pair) */
static int relay_start(bool ingress, const char *bind_host, const uint8_t *token, const char *peer_host,
		       int peer_port, const fm_relay_opts *opts, fm_relay **out, fm_error *err)
{
	fm_relay *r = fm_xcalloc(1, sizeof(*r));
	int k;

	r->ingress = ingress;
	memcpy(r->token, token, FM_XFER_TOKEN_LEN);
	r->peer_host = fm_xstrdup(peer_host);
	r->peer_port = peer_port;
	r->o = opts ? *opts : (fm_relay_opts)FM_RELAY_OPTS_INIT;
	if (r->o.io_timeout_ms <= 0)
		r->o.io_timeout_ms = 10000;
	r->pacer.bps = r->o.bandwidth_bps;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	if (!bind_host) {
		*out = r;
		return 0;
	}
	if ((k = fm_xfer_listen(bind_host, 0, &r->l, err)) < 0) {
		fm_relay_free(r);
		return k;
	}
	if (pthread_create(&r->accept_thread, NULL, accept_thread, r) != 0) {
		fm_relay_free(r);
		return fm_error_set(err, -EAGAIN, "cannot start the page relay");
	}
	r->accept_started = true;
	*out = r;
	return 0;
}

int fm_relay_ingress(const char *bind_host, const uint8_t token[FM_XFER_TOKEN_LEN], const char *target_host,
		     int target_port, const fm_relay_opts *opts, fm_relay **out, fm_error *err)
{
	return relay_start(true, bind_host, token, target_host, target_port, opts, out, err);
}

int fm_relay_egress(const char *remote_host, int remote_port, const uint8_t token[FM_XFER_TOKEN_LEN],
		    const fm_relay_opts *opts, fm_relay **out, fm_error *err)
{
	return relay_start(false, "127.0.0.1", token, remote_host, remote_port, opts, out, err);
}

int fm_relay_egress_pair(const char *remote_host, int remote_port, const uint8_t token[FM_XFER_TOKEN_LEN],
			 const fm_relay_opts *opts, int *criu_sk, fm_relay **out, fm_error *err)
{
	int sv[2], k;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return fm_error_set(err, -errno, "cannot create a socket pair for CRIU: %m");
	/* what CRIU may have queued is what one read of ours can take: with the
	 * default buffer (208 KiB) a frame never filled a block */
	int sndbuf = 2 * FM_RELAY_BLOCK;
	if (setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
		(void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if ((k = relay_start(false, NULL, token, remote_host, remote_port, opts, out, err)) < 0) {
		close(sv[0]);
		close(sv[1]);
		return k;
	}
	if (relay_conn_start(*out, sv[1]) < 0) {
		close(sv[0]);
		fm_relay_free(*out);
		*out = NULL;
		return fm_error_set(err, -EAGAIN, "cannot start the page relay");
	}
	*criu_sk = sv[0];
	return 0;
}

int fm_relay_port(const fm_relay *r) { return r->l ? fm_xfer_listener_port(r->l) : 0; }

int fm_relay_failed(fm_relay *r, fm_error *err)
{
	pthread_mutex_lock(&r->mu);
	int s = r->status;
	if (s < 0)
		fm_error_set(err, s, "%s", r->err.msg);
	pthread_mutex_unlock(&r->mu);
	return s;
}

int fm_relay_wait(fm_relay *r, int timeout_ms, fm_error *err)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += timeout_ms / 1000;
	dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->mu);
	while (r->status == 0 && (r->st.connections == 0 || r->active > 0)) {
		if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT)
			break;
	}
	int s = r->status;
	bool done = r->st.connections > 0 && r->active == 0;
	if (s < 0)
		fm_error_set(err, s, "%s", r->err.msg);
	pthread_mutex_unlock(&r->mu);
	if (s < 0)
		return s;
	if (!done)
		return fm_error_set(err, -ETIMEDOUT, "the page stream did not finish within %d s", timeout_ms / 1000);
	return 0;
}

void fm_relay_get_stats(fm_relay *r, fm_relay_stats *st)
{
	pthread_mutex_lock(&r->mu);
	*st = r->st;
	st->link_bps = link_bps(r);
	pthread_mutex_unlock(&r->mu);
}

void fm_relay_free(fm_relay *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stopping = true;
	pthread_mutex_unlock(&r->mu);
	if (r->l)
		fm_xfer_listener_cancel(r->l);
	if (r->accept_started)
		pthread_join(r->accept_thread, NULL);
	/* no new connections now: cut the live ones, then join them */
	pthread_mutex_lock(&r->mu);
	for (relay_conn *c = r->conns; c; c = c->next) {
		(void)shutdown(c->accepted_fd, SHUT_RDWR);
		if (c->local_fd >= 0)
			(void)shutdown(c->local_fd, SHUT_RDWR);
		if (c->net_fd >= 0)
			(void)shutdown(c->net_fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&r->mu);
	while (r->conns) {
		relay_conn *c = r->conns;
		r->conns = c->next;
		pthread_join(c->thread, NULL);
		if (c->local_fd >= 0 && c->local_fd != c->accepted_fd)
			close(c->local_fd);
		if (c->net_fd >= 0 && c->net_fd != c->accepted_fd)
			close(c->net_fd);
		close(c->accepted_fd);
		free(c);
	}
	fm_xfer_listener_free(r->l);
	fm_error_clear(&r->err);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r->peer_host);
	free(r);
}
