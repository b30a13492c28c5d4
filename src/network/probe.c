#include "network/probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "basic/util.h"
#include "network/dns.h"

#define PROBE_INTERVAL_MS 100

typedef struct probe {
	const char *netns, *ip, *name;
	int tcp_port, timeout_ms;
	const fm_dns *dns;
	char *out;
	size_t outlen;
	double ms;
	int result;
	fm_error err;
} probe;

/* One ICMP echo, answered within wait_ms: 0, else -ETIMEDOUT (or -errno). */
static int echo_once(int fd, struct sockaddr_in *to, uint16_t id, uint16_t seq, int wait_ms)
{
	struct icmphdr h = { .type = ICMP_ECHO, .un.echo.id = htons(id), .un.echo.sequence = htons(seq) };
	h.checksum = htons(fm_csum_fold(fm_csum_add(0, &h, sizeof(h))));
	if (sendto(fd, &h, sizeof(h), 0, (struct sockaddr *)to, sizeof(*to)) < 0 && errno != EHOSTUNREACH)
		return -errno;
	int64_t deadline = fm_now_mono_ms() + wait_ms;
	for (;;) {
		int left = (int)(deadline - fm_now_mono_ms());
		struct pollfd p = { fd, POLLIN, 0 };
		if (left <= 0 || poll(&p, 1, left) <= 0)
			return -ETIMEDOUT;
		uint8_t buf[1500];
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
		if (n < (ssize_t)sizeof(struct iphdr))
			continue;
		size_t ihl = (size_t)(buf[0] & 0x0f) * 4;
		if ((size_t)n < ihl + sizeof(struct icmphdr) || from.sin_addr.s_addr != to->sin_addr.s_addr)
			continue;
		struct icmphdr *r = (struct icmphdr *)(buf + ihl);
		if (r->type == ICMP_ECHOREPLY && ntohs(r->un.echo.id) == id && ntohs(r->un.echo.sequence) == seq)
			return 0;
	}
}

/* One TCP connection, accepted within wait_ms. */
static int connect_once(struct sockaddr_in *to, int wait_ms)
{
	_cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)to, sizeof(*to)) < 0 && errno != EINPROGRESS)
		return -errno;
	struct pollfd p = { fd, POLLOUT, 0 };
	if (poll(&p, 1, wait_ms) <= 0)
		return -ETIMEDOUT;
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
	return soerr ? -soerr : 0;
}

static int enter(const char *netns, fm_error *err)
{
	_cleanup_close_ int fd = open(netns, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
		return fm_error_set(err, -errno, "cannot enter the network namespace %s: %m", netns);
	return 0;
}

static void *reach_thread(void *opaque)
{
	probe *p = opaque;
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)p->tcp_port) };
	if ((p->result = enter(p->netns, &p->err)) < 0)
		return NULL;
	if (inet_pton(AF_INET, p->ip, &to.sin_addr) != 1) {
		p->result = fm_error_set(&p->err, -EINVAL, "not an IPv4 address: %s", p->ip);
		return NULL;
	}
	_cleanup_close_ int fd = p->tcp_port > 0 ? -1 : socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
	if (p->tcp_port <= 0 && fd < 0) {
		p->result = fm_error_set(&p->err, -errno, "cannot open an ICMP socket: %m");
		return NULL;
	}
	int64_t t_end = fm_now_mono_ms() + p->timeout_ms;
	uint16_t id = (uint16_t)(getpid() ^ (uintptr_t)p), seq = 0;
	int r = -ETIMEDOUT;
	while (fm_now_mono_ms() < t_end) {
		int64_t t0 = fm_now_mono_us();
		r = p->tcp_port > 0 ? connect_once(&to, PROBE_INTERVAL_MS) : echo_once(fd, &to, id, ++seq, PROBE_INTERVAL_MS);
		if (r == 0) {
			p->ms = (double)(fm_now_mono_us() - t0) / 1000.0;
			break;
		}
		if (r != -ETIMEDOUT) /* refused, unreachable: again after the interval */
			fm_sleep_us((int64_t)PROBE_INTERVAL_MS * 1000, NULL);
	}
	if (r < 0) {
		if (p->tcp_port > 0)
			p->result = fm_error_set(&p->err, r, "%s:%d did not accept a TCP connection from %s within %d ms "
						 "(last: %s)", p->ip, p->tcp_port, p->netns, p->timeout_ms, strerror(-r));
		else
			p->result = fm_error_set(&p->err, -ETIMEDOUT, "%s did not answer an ICMP echo from %s within %d ms",
						 p->ip, p->netns, p->timeout_ms);
		return NULL;
	}
	p->result = 0;
	return NULL;
}

static void *dns_thread(void *opaque)
{
	probe *p = opaque;
	uint32_t ttl;
	if ((p->result = enter(p->netns, &p->err)) < 0)
		return NULL;
	p->result = fm_dns_lookup(p->dns, p->name, p->out, p->outlen, &ttl, &p->err);
	return NULL;
}

static int run(void *(*fn)(void *), probe *p, fm_error *err)
{
	pthread_t t;
	p->result = -EIO;
	if (pthread_create(&t, NULL, fn, p) != 0)
		return fm_error_set(err, -EAGAIN, "cannot start a thread");
	pthread_join(t, NULL);
	if (p->result < 0) {
		if (!p->err.code)
			fm_error_set(&p->err, p->result, "%s", strerror(-p->result));
		fm_error_move(err, &p->err);
	}
	return p->result;
}

int fm_probe_reach(const char *netns, const char *ip, int tcp_port, int timeout_ms, double *ms, fm_error *err)
{
	probe p = { .netns = netns, .ip = ip, .tcp_port = tcp_port, .timeout_ms = timeout_ms };
	int r = run(reach_thread, &p, err);
	if (r == 0 && ms)
		*ms = p.ms;
	return r;
}

int fm_probe_dns(const char *netns, const fm_dns *d, const char *name, char *ip, size_t iplen, fm_error *err)
{
	probe p = { .netns = netns, .dns = d, .name = name, .out = ip, .outlen = iplen };
	return run(dns_thread, &p, err);
}
