#include "network/sdn.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "basic/dial.h"
#include "basic/log.h"
#include "basic/util.h"

struct fm_sdn {
	char target[300];
	int fd;
	int timeout_ms;
	uint32_t xid;
	uint64_t dpid;
	uint8_t in[FM_OF_MAX_LEN + 1];
	size_t inlen;
	fm_of_flow flows[FM_SDN_MAX_FLOWS];   /* installed, for replay ... */
	int64_t expires_ms[FM_SDN_MAX_FLOWS];  /* ... until their hard timeout (0: none) */
	size_t nflows;
};

/* "unix:PATH" as it is, "tcp:HOST:PORT" without its scheme. */
static int dial(const char *target, int timeout_ms, fm_error *err)
{
	if (strncmp(target, "unix:", 5) != 0 && strncmp(target, "tcp:", 4) != 0)
		return fm_error_set(err, -EINVAL, "switch target %s: use unix:PATH or tcp:HOST:PORT", target);
	int fd = fm_dial(!strncmp(target, "tcp:", 4) ? target + 4 : target, fm_now_mono_ms() + timeout_ms, err);
	if (fd < 0)
		fm_error_prefix(err, "the switch");
	return fd;
}

static int send_all(fm_sdn *s, const uint8_t *b, size_t n, fm_error *err)
{
	while (n > 0) {
		ssize_t w = send(s->fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd p = { s->fd, POLLOUT, 0 };
			if (poll(&p, 1, s->timeout_ms) <= 0)
				return fm_error_set(err, -ETIMEDOUT, "the switch at %s takes no more data (%d ms)", s->target,
						    s->timeout_ms);
			continue;
		}
		if (w < 0)
			return fm_error_set(err, -ECONNRESET, "the switch at %s closed the connection: %m", s->target);
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The next message (into *m, valid until the next call), by deadline. */
static int recv_msg(fm_sdn *s, int64_t deadline_ms, fm_of_msg *m, fm_error *err)
{
	size_t need;
	for (;;) {
		/* drop the previous message */
		int r = fm_of_parse(s->in, s->inlen, m, &need);
		if (r == 0) {
			if (m->version != FM_OF_VERSION && m->type != FM_OFPT_HELLO) {
				s->inlen = 0;
				return fm_error_set(err, -EPROTO, "the switch at %s speaks OpenFlow version %u, not 1.3",
						    s->target, m->version);
			}
			return 0;
		}
		if (r == -EBADMSG) {
			s->inlen = 0;
			return fm_error_set(err, -EBADMSG, "the switch at %s sent a malformed message (length below 8)",
					    s->target);
		}
		int64_t left = deadline_ms - fm_now_mono_ms();
		if (left <= 0)
			return fm_error_set(err, -ETIMEDOUT, "the switch at %s did not answer within %d ms", s->target,
					    s->timeout_ms);
		struct pollfd p = { s->fd, POLLIN, 0 };
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		ssize_t k = recv(s->fd, s->in + s->inlen, sizeof(s->in) - s->inlen, MSG_DONTWAIT);
		if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
			return fm_error_set(err, -ECONNRESET, "the switch at %s closed the connection", s->target);
		if (k > 0)
			s->inlen += (size_t)k;
	}
}

/* Consumes the message m points at (the front of the buffer). */
static void consume(fm_sdn *s, const fm_of_msg *m)
{
	memmove(s->in, s->in + m->length, s->inlen - m->length);
	s->inlen -= m->length;
}

/* Reads until the message of type `want` with xid arrives, answering echo
 * requests; an ERROR for one of ours fails. */
static int expect(fm_sdn *s, uint8_t want, uint32_t xid, fm_of_msg *out, uint8_t *keep, size_t keeplen,
		  fm_error *err)
{
	int64_t deadline = fm_now_mono_ms() + s->timeout_ms;
	for (;;) {
		fm_of_msg m;
		int r = recv_msg(s, deadline, &m, err);
		if (r < 0)
			return r;
		if (m.type == FM_OFPT_ECHO_REQUEST) {
			uint8_t b[FM_OF_HEADER_LEN + 256];
			size_t n = fm_of_encode_echo_reply(b, sizeof(b), m.xid, m.body, m.body_len > 256 ? 256 : m.body_len);
			consume(s, &m);
			if ((r = send_all(s, b, n, err)) < 0)
				return r;
			continue;
		}
		if (m.type == FM_OFPT_ERROR) {
			uint16_t t, c;
			char text[200];
			r = fm_of_decode_error(&m, &t, &c, text, sizeof(text));
			consume(s, &m);
			if (r < 0)
				return fm_error_set(err, -EBADMSG, "the switch at %s sent a malformed ERROR", s->target);
			return fm_error_set(err, -EREMOTEIO, "the switch at %s refused it: %s", s->target, text);
		}
		if (m.type == want && (xid == 0 || m.xid == xid)) {
			if (out && keep && m.length <= keeplen) {
				memcpy(keep, s->in, m.length);
				fm_of_parse(keep, m.length, out, &(size_t){ 0 });
			}
			consume(s, &m);
			return 0;
		}
		consume(s, &m); /* PORT_STATUS, PACKET_IN...: not ours to act on */
	}
}

static int handshake(fm_sdn *s, fm_error *err)
{
	uint8_t b[64];
	fm_of_msg m;
	int r;
	size_t n = fm_of_encode_header_only(b, sizeof(b), FM_OFPT_HELLO, ++s->xid);
	if ((r = send_all(s, b, n, err)) < 0)
		return r;
	/* its HELLO: a version below ours means no common version */
	int64_t deadline = fm_now_mono_ms() + s->timeout_ms;
	if ((r = recv_msg(s, deadline, &m, err)) < 0)
		return r;
	if (m.type != FM_OFPT_HELLO)
		return fm_error_set(err, -EPROTO, "the switch at %s did not start with HELLO (type %u)", s->target, m.type);
	uint8_t v = m.version;
	consume(s, &m);
	if (v < FM_OF_VERSION)
		return fm_error_set(err, -EPROTO, "the switch at %s offers OpenFlow version %u at most; 1.3 is needed "
				    "(ovs-vsctl set bridge BR protocols=OpenFlow13)", s->target, v);
	uint32_t x = ++s->xid;
	n = fm_of_encode_header_only(b, sizeof(b), FM_OFPT_FEATURES_REQUEST, x);
	if ((r = send_all(s, b, n, err)) < 0)
		return r;
	uint8_t keep[64];
	fm_of_features f;
	if ((r = expect(s, FM_OFPT_FEATURES_REPLY, x, &m, keep, sizeof(keep), err)) < 0)
		return r;
	if (fm_of_decode_features(&m, &f) < 0)
		return fm_error_set(err, -EBADMSG, "the switch at %s sent a malformed FEATURES_REPLY", s->target);
	s->dpid = f.datapath_id;
	return 0;
}

static int open_conn(fm_sdn *s, fm_error *err)
{
	if (s->fd >= 0)
		close(s->fd);
	s->inlen = 0;
	s->fd = dial(s->target, s->timeout_ms, err);
	if (s->fd < 0) {
		int r = s->fd;
		s->fd = -1;
		return r;
	}
	return handshake(s, err);
}

int fm_sdn_connect(const char *target, int timeout_ms, fm_sdn **out, fm_error *err)
{
	fm_sdn *s = fm_xcalloc(1, sizeof(*s));
	snprintf(s->target, sizeof(s->target), "%s", target);
	s->fd = -1;
	s->timeout_ms = timeout_ms > 0 ? timeout_ms : FM_SDN_TIMEOUT_MS;
	int r = open_conn(s, err);
	if (r < 0) {
		fm_sdn_close(s);
		return r;
	}
	*out = s;
	return 0;
}

void fm_sdn_close(fm_sdn *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	free(s);
}

uint64_t fm_sdn_datapath_id(const fm_sdn *s)
{
	return s->dpid;
}

int fm_sdn_barrier(fm_sdn *s, fm_error *err)
{
	uint8_t b[16];
	uint32_t x = ++s->xid;
	size_t n = fm_of_encode_header_only(b, sizeof(b), FM_OFPT_BARRIER_REQUEST, x);
	int r = send_all(s, b, n, err);
	return r < 0 ? r : expect(s, FM_OFPT_BARRIER_REPLY, x, NULL, NULL, 0, err);
}

static bool ours(uint64_t cookie)
{
	return (cookie & FM_SDN_COOKIE_MASK) == FM_SDN_COOKIE_BASE;
}

/* Sends one FLOW_MOD, then a barrier: an ERROR for it arrives before the
 * barrier's reply. */
static int send_flow(fm_sdn *s, const fm_of_flow *f, fm_error *err)
{
	uint8_t b[512];
	size_t n = fm_of_encode_flow_mod(b, sizeof(b), ++s->xid, f);
	if (n == 0)
		return fm_error_set(err, -EINVAL, "flow too large to encode");
	int r = send_all(s, b, n, err);
	return r < 0 ? r : fm_sdn_barrier(s, err);
}

static void remember(fm_sdn *s, const fm_of_flow *f)
{
	int64_t now = fm_now_mono_ms();
	size_t k = 0;
	/* what the switch has dropped by now is not ours to put back */
	for (size_t i = 0; i < s->nflows; i++)
		if (!s->expires_ms[i] || s->expires_ms[i] > now) {
			s->flows[k] = s->flows[i];
			s->expires_ms[k++] = s->expires_ms[i];
		}
	s->nflows = k;
	if (f->command == FM_OFPFC_DELETE || f->command == FM_OFPFC_DELETE_STRICT) {
		uint64_t mask = f->command == FM_OFPFC_DELETE ? f->cookie_mask : ~0ull;
		k = 0;
		for (size_t i = 0; i < s->nflows; i++)
			if ((s->flows[i].cookie & mask) != (f->cookie & mask)) {
				s->flows[k] = s->flows[i];
				s->expires_ms[k++] = s->expires_ms[i];
			}
		s->nflows = k;
		return;
	}
	size_t i;
	for (i = 0; i < s->nflows && s->flows[i].cookie != f->cookie; i++)
		;
	if (i == s->nflows) {
		if (s->nflows == FM_SDN_MAX_FLOWS)
			return;
		s->nflows++;
	}
	s->flows[i] = *f;
	s->expires_ms[i] = f->hard_timeout ? now + (int64_t)f->hard_timeout * 1000 : 0;
}

int fm_sdn_flow(fm_sdn *s, const fm_of_flow *f, fm_error *err)
{
	if (!ours(f->cookie) || (f->command == FM_OFPFC_DELETE && (f->cookie_mask & FM_SDN_COOKIE_MASK) != FM_SDN_COOKIE_MASK))
		return fm_error_set(err, -EINVAL, "cookie %#llx is outside FlexiMigrate's space (%#llx under %#llx): "
				    "other controllers' flows are not ours to touch", (unsigned long long)f->cookie,
				    (unsigned long long)FM_SDN_COOKIE_BASE, (unsigned long long)FM_SDN_COOKIE_MASK);
	int r = send_flow(s, f, err);
	if (r == 0)
		remember(s, f);
	return r;
}

int fm_sdn_delete_cookie(fm_sdn *s, uint64_t cookie, uint64_t mask, fm_error *err)
{
	fm_of_flow f;
	fm_of_flow_init(&f, FM_OFPFC_DELETE);
	f.table_id = 0xff; /* every table */
	f.cookie = cookie;
	f.cookie_mask = mask | FM_SDN_COOKIE_MASK;
	return fm_sdn_flow(s, &f, err);
}

bool fm_sdn_holds(const fm_sdn *s, uint64_t cookie, uint64_t mask)
{
	int64_t now = fm_now_mono_ms();
	for (size_t i = 0; i < s->nflows; i++)
		if ((s->flows[i].cookie & mask) == (cookie & mask) && (!s->expires_ms[i] || s->expires_ms[i] > now))
			return true;
	return false;
}

int fm_sdn_replay(fm_sdn *s, fm_error *err)
{
	int r = open_conn(s, err);
	if (r < 0)
		return r;
	int64_t now = fm_now_mono_ms();
	size_t n = 0;
	for (size_t i = 0; i < s->nflows; i++) {
		fm_of_flow f = s->flows[i];
		if (s->expires_ms[i]) {
			if (s->expires_ms[i] <= now)
				continue; /* the switch would have dropped it by now */
			f.hard_timeout = (uint16_t)((s->expires_ms[i] - now + 999) / 1000); /* what is left of it */
		}
		f.command = FM_OFPFC_ADD;
		if ((r = send_flow(s, &f, err)) < 0)
			return r;
		n++;
	}
	fm_info(FM_C_SDN, "Reconnected to the switch at %s and installed our %zu flows again", s->target, n);
	return 0;
}
