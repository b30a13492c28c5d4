#include "runtime/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "basic/cmd.h"
#include "basic/log.h"
#include "basic/util.h"
#include "runtime/runtime.h"

#define NET_CMD_TIMEOUT_MS 10000

bool fm_net_cidr_valid(const char *cidr)
{
	char ip[INET_ADDRSTRLEN];
	struct in_addr a;
	const char *slash = cidr ? strchr(cidr, '/') : NULL;
	char *end;
	if (!slash || (size_t)(slash - cidr) >= sizeof(ip))
		return false;
	memcpy(ip, cidr, (size_t)(slash - cidr));
	ip[slash - cidr] = '\0';
	long p = strtol(slash + 1, &end, 10);
	return inet_pton(AF_INET, ip, &a) == 1 && *end == '\0' && slash[1] && p >= 1 && p <= 32;
}

static int parse_mac(const char *mac, unsigned char out[6])
{
	unsigned v[6];
	char tail;
	if (!mac || strlen(mac) != 17 ||
	    sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		out[i] = (unsigned char)v[i];
	return 0;
}

bool fm_net_mac_valid(const char *mac)
{
	unsigned char m[6];
	static const unsigned char zero[6];
	return parse_mac(mac, m) == 0 && !(m[0] & 1) && memcmp(m, zero, 6) != 0;
}

static int parse_ip(const char *cidr, struct in_addr *a)
{
	char ip[INET_ADDRSTRLEN];
	const char *slash = strchr(cidr, '/');
	size_t n = slash ? (size_t)(slash - cidr) : strlen(cidr);
	if (n >= sizeof(ip))
		return -EINVAL;
	memcpy(ip, cidr, n);
	ip[n] = '\0';
	return inet_pton(AF_INET, ip, a) == 1 ? 0 : -EINVAL;
}

void fm_net_mac_for_ip(const char *cidr, char mac[18])
{
	struct in_addr a = { 0 };
	parse_ip(cidr, &a);
	const unsigned char *b = (const unsigned char *)&a.s_addr;
	snprintf(mac, 18, "02:fd:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3]);
}

char *fm_net_ns_path(fm_runtime *rt, const char *name)
{
	return fm_xasprintf("/run/netns/fm-%s-%s", rt->host, name);
}

static char *ns_name(fm_runtime *rt, const char *name)
{
	return fm_xasprintf("fm-%s-%s", rt->host, name);
}

/* The bridge port: fmv + 12 hex digits of a hash of the container's name
 * (interface names have at most 15 characters). */
static void port_name(const char *name, char out[16])
{
	snprintf(out, 16, "fmv%012llx", (unsigned long long)(XXH3_64bits(name, strlen(name)) & 0xffffffffffffULL));
}

static int ip_cmd(fm_error *err, const char *const *argv)
{
	struct fm_cmd *c = fm_cmd_new("ip");
	for (const char *const *a = argv; *a; a++)
		fm_cmd_arg(c, *a);
	fm_cmd_set_timeout_ms(c, NET_CMD_TIMEOUT_MS);
	int r = fm_cmd_run(c, err);
	fm_cmd_free(c);
	return r == 0 ? 0 : r > 0 ? -EIO : r;
}
#define IP(err, ...) ip_cmd(err, (const char *const[]){ __VA_ARGS__, NULL })

int fm_net_create(fm_runtime *rt, const char *name, const char *cidr, const char *mac, bool port_up,
		  fm_error *err)
{
	_cleanup_free_ char *ns = ns_name(rt, name);
	char port[16];
	int r;

	if (!rt->bridge)
		return fm_error_set(err, -ENOTSUP, "host %s has no bridge for container networks "
				    "(start fleximigrated with --bridge BRIDGE)", rt->host);
	port_name(name, port);
	fm_net_destroy(rt, name); /* leftovers of a crash */
	if ((r = IP(err, "netns", "add", ns)) < 0 ||
	    (r = IP(err, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)) < 0 ||
	    (r = IP(err, "link", "set", port, "master", rt->bridge)) < 0 ||
	    (r = IP(err, "-n", ns, "link", "set", "eth0", "address", mac)) < 0 ||
	    (r = IP(err, "-n", ns, "addr", "add", cidr, "dev", "eth0")) < 0 ||
	    (r = IP(err, "-n", ns, "link", "set", "lo", "up")) < 0 ||
	    (r = IP(err, "-n", ns, "link", "set", "eth0", "up")) < 0 ||
	    (port_up && (r = IP(err, "link", "set", port, "up")) < 0)) {
		fm_error_prefix(err, "cannot build the network of %s (%s, %s on bridge %s)", name, cidr, mac,
				rt->bridge);
		fm_net_destroy(rt, name);
		return r;
	}
	return 0;
}

int fm_net_port_set(fm_runtime *rt, const char *name, bool up, fm_error *err)
{
	char port[16];
	port_name(name, port);
	int r = IP(err, "link", "set", port, up ? "up" : "down");
	if (r < 0)
		fm_error_prefix(err, "cannot set the network port of %s %s", name, up ? "up" : "down");
	return r;
}

void fm_net_destroy(fm_runtime *rt, const char *name)
{
	_cleanup_free_ char *path = fm_net_ns_path(rt, name);
	_cleanup_free_ char *ns = ns_name(rt, name);
	char port[16];
	struct stat st;

	port_name(name, port);
	if (if_nametoindex(port) > 0)
		IP(NULL, "link", "del", port);
	if (lstat(path, &st) == 0)
		IP(NULL, "netns", "del", ns);
}

/* ---- gratuitous ARP from inside the container's namespace ---- */

typedef struct garp {
	const char *nspath;
	unsigned char frame[42];
	int result;
} garp;

static void *garp_thread(void *opaque)
{
	garp *g = opaque;
	_cleanup_close_ int nsfd = open(g->nspath, O_RDONLY | O_CLOEXEC);
	/* setns changes this thread only, and the thread ends here */
	if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
		g->result = -errno;
		return NULL;
	}
	_cleanup_close_ int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP));
	unsigned idx = if_nametoindex("eth0");
	if (fd < 0 || idx == 0) {
		g->result = -errno;
		return NULL;
	}
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP),
				   .sll_ifindex = (int)idx, .sll_halen = 6 };
	memset(sll.sll_addr, 0xff, 6);
	/* twice: one frame can be lost while the port is coming up */
	for (int i = 0; i < 2; i++)
		if (sendto(fd, g->frame, sizeof(g->frame), 0, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
			g->result = -errno;
			return NULL;
		}
	g->result = 0;
	return NULL;
}

int fm_net_announce(fm_runtime *rt, const char *name, const char *cidr, const char *mac, fm_error *err)
{
	_cleanup_free_ char *path = fm_net_ns_path(rt, name);
	garp g = { .nspath = path, .result = -EIO };
	unsigned char m[6], *f = g.frame;
	struct in_addr ip;
	pthread_t t;

	if (parse_mac(mac, m) < 0 || parse_ip(cidr, &ip) < 0)
		return fm_error_set(err, -EINVAL, "bad address %s / %s", cidr, mac);
	memset(f, 0xff, 6);                          /* to everyone */
	memcpy(f + 6, m, 6);
	f[12] = 0x08, f[13] = 0x06;                  /* ARP */
	f[14] = 0, f[15] = 1;                        /* Ethernet */
	f[16] = 0x08, f[17] = 0x00;                  /* IPv4 */
	f[18] = 6, f[19] = 4, f[20] = 0, f[21] = 1;  /* request: "who has IP? tell IP" */
	memcpy(f + 22, m, 6);
	memcpy(f + 28, &ip.s_addr, 4);
	memset(f + 32, 0, 6);
	memcpy(f + 38, &ip.s_addr, 4);
	if (pthread_create(&t, NULL, garp_thread, &g) != 0)
		return fm_error_set(err, -EAGAIN, "cannot start a thread");
	pthread_join(t, NULL);
	if (g.result < 0)
		return fm_error_set(err, g.result, "gratuitous ARP for %s from %s failed: %s", cidr, name,
				    strerror(-g.result));
	return 0;
}
