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
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <nftables/libnftables.h>
#include <xxhash.h>

#include "basic/cmd.h"
#include "basic/log.h"
#include "basic/util.h"
#include "runtime/netlink.h"
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

bool fm_net_dns_name_valid(const char *name)
{
	size_t n = name ? strlen(name) : 0, label = 0;
	if (n == 0 || n > 254 || (n == 254 && name[253] != '.') || name[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (c == '.') {
			if (label == 0 || name[i - 1] == '-')
				return false;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			   (c == '-' && label > 0)) {
			if (++label > 63)
				return false;
		} else
			return false;
	}
	return name[n - 1] != '-';
}

void fm_net_addr_of(const char *cidr, char *out, size_t len)
{
	snprintf(out, len, "%.*s", (int)strcspn(cidr, "/"), cidr);
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
	/* The port's MAC is high (fe:…, as libvirt does): a Linux bridge takes the
	 * lowest MAC of its ports, and a port coming and going must not change the
	 * host's own address under its neighbours' ARP caches. */
	char port_mac[18];
	uint64_t h = XXH3_64bits(name, strlen(name));
	snprintf(port_mac, sizeof(port_mac), "fe:%02x:%02x:%02x:%02x:%02x", (unsigned)(h >> 32) & 0xff,
		 (unsigned)(h >> 24) & 0xff, (unsigned)(h >> 16) & 0xff, (unsigned)(h >> 8) & 0xff, (unsigned)h & 0xff);
	if ((r = IP(err, "netns", "add", ns)) < 0 ||
	    (r = IP(err, "link", "add", port, "address", port_mac, "type", "veth", "peer", "name", "eth0", "netns",
		    ns)) < 0 ||
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

/* An interface up or down: an ioctl, not `ip link set`, for this sits in the
 * downtime (3 ms for ip).  -errno. */
static int link_set_up(const char *ifname, bool up)
{
	struct ifreq ifr = { 0 };
	_cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return -errno;
	ifr.ifr_flags = (short)(up ? ifr.ifr_flags | IFF_UP : ifr.ifr_flags & ~IFF_UP);
	return ioctl(fd, SIOCSIFFLAGS, &ifr) < 0 ? -errno : 0;
}

int fm_net_port_set(fm_runtime *rt, const char *name, bool up, fm_error *err)
{
	(void)rt;
	char port[16];
	port_name(name, port);
	int r = link_set_up(port, up);
	if (r < 0)
		return fm_error_set(err, r, "cannot set the network port %s of %s %s: %s", port, name, up ? "up" : "down",
				    strerror(-r));
	return 0;
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
	const char *nspath;      /* NULL: this process's namespace */
	const char *ifname;
	unsigned char frame[42];
	int result;
} garp;

static void *garp_thread(void *opaque)
{
	garp *g = opaque;
	_cleanup_close_ int nsfd = g->nspath ? open(g->nspath, O_RDONLY | O_CLOEXEC) : -1;
	/* setns changes this thread only, and the thread ends here */
	if (g->nspath && (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0)) {
		g->result = -errno;
		return NULL;
	}
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0); /* sends only: no receive hook */
	unsigned idx = if_nametoindex(g->ifname);
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP),
				   .sll_ifindex = (int)idx, .sll_halen = 6 };
	memset(sll.sll_addr, 0xff, 6);
	g->result = fd < 0 || idx == 0 ? -errno : 0;
	/* twice: one frame can be lost while the port is coming up */
	for (int i = 0; i < 2 && g->result == 0; i++)
		if (sendto(fd, g->frame, sizeof(g->frame), 0, (struct sockaddr *)&sll, sizeof(sll)) < 0)
			g->result = -errno;
	fm_close_later(fd);
	return NULL;
}

/* "Who has ip? Tell ip (at m)" out of ifname, in nspath's namespace. */
static int garp_send(const char *nspath, const char *ifname, struct in_addr ip, const unsigned char m[6])
{
	garp g = { .nspath = nspath, .ifname = ifname, .result = -EIO };
	unsigned char *f = g.frame;
	pthread_t t;

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
	if (!nspath) /* here, no namespace to enter */
		garp_thread(&g);
	else if (pthread_create(&t, NULL, garp_thread, &g) != 0)
		return -EAGAIN;
	else
		pthread_join(t, NULL);
	return g.result;
}

int fm_net_announce(fm_runtime *rt, const char *name, const char *cidr, const char *mac, fm_error *err)
{
	_cleanup_free_ char *path = fm_net_ns_path(rt, name);
	unsigned char m[6];
	struct in_addr ip;
	int r;

	if (parse_mac(mac, m) < 0 || parse_ip(cidr, &ip) < 0)
		return fm_error_set(err, -EINVAL, "bad address %s / %s", cidr, mac);
	if ((r = garp_send(path, "eth0", ip, m)) < 0)
		return fm_error_set(err, r, "gratuitous ARP for %s from %s failed: %s", cidr, name, strerror(-r));
	return 0;
}

/* ---- hold, capture, inject ---- */

/* The hold is one nftables table of ours in the container's namespace
 * (inet fleximigrate_hold) that drops its TCP at the raw priority: arriving
 * (prerouting) and, on the source, leaving (output).  It is made and removed
 * in one nf_tables transaction each, built as netlink messages
 * (runtime/netlink.c): `iptables` took 4 ms to insert a rule and 15-30 ms to
 * delete one, libnftables 1.6-8 ms (its parser, its ruleset cache, a thread
 * woken) inside the freeze; a prepared socket's transaction ~0.2 ms.
 * Nothing of a request reaches it but the namespace's path. */

typedef struct hold_open {
	const char *nspath;
	fm_nft_hold *h;
	fm_error err;
} hold_open;

static void *hold_open_thread(void *opaque)
{
	hold_open *o = opaque;
	_cleanup_close_ int nsfd = open(o->nspath, O_RDONLY | O_CLOEXEC);
	/* setns changes this thread only, and the thread ends here; the socket
	 * stays in the namespace it was opened in */
	if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0)
		fm_error_set(&o->err, -errno, "cannot enter %s: %m", o->nspath);
	else
		o->h = fm_nft_hold_open(&o->err);
	return NULL;
}

/* The hold's socket in nspath's namespace; NULL with err set. */
static fm_nft_hold *hold_open_in(const char *nspath, fm_error *err)
{
	hold_open o = { .nspath = nspath, .err = FM_ERROR_INIT };
	pthread_t t;
	int e = pthread_create(&t, NULL, hold_open_thread, &o);
	if (e != 0) {
		fm_error_set(err, -e, "cannot start a thread: %s", strerror(e));
		return NULL;
	}
	pthread_join(t, NULL);
	if (!o.h)
		fm_error_move(err, &o.err);
	fm_error_clear(&o.err);
	return o.h;
}

/* This process's own namespace: its nftables and netlink work is done by
 * one long-lived thread, one job at a time, with one nftables context kept
 * (a context serves one thread at a time; it is made once, not per call,
 * and is never freed: freeing closes its netlink socket, which waits for an
 * RCU grace period).  The forward's rules take 0.6-1.2 ms there. */
typedef struct own_job {
	int (*fn)(void *);
	void *arg;
	int result;
	bool done;
} own_job;

static pthread_mutex_t own_use = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static pthread_mutex_t own_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t own_cond = PTHREAD_COND_INITIALIZER;
static own_job *own_next;
static bool own_running;
static struct nft_ctx *own_nft; /* the worker's */
static __thread bool on_worker;

static void *own_worker(void *unused)
{
	(void)unused;
	on_worker = true;
	pthread_mutex_lock(&own_lock);
	for (;;) {
		while (!own_next)
			pthread_cond_wait(&own_cond, &own_lock);
		own_job *j = own_next;
		own_next = NULL;
		pthread_mutex_unlock(&own_lock);
		int r = j->fn(j->arg);
		pthread_mutex_lock(&own_lock);
		j->result = r;
		j->done = true;
		pthread_cond_broadcast(&own_cond);
	}
	return NULL;
}

/* fn(arg) on the worker (here, when it cannot start, or when this is the
 * worker); its result. */
static int on_own_worker(int (*fn)(void *), void *arg)
{
	own_job j = { .fn = fn, .arg = arg };
	if (on_worker)
		return fn(arg);
	pthread_mutex_lock(&own_use);
	pthread_mutex_lock(&own_lock);
	if (!own_running && fm_start_detached(own_worker, NULL) == 0)
		own_running = true;
	if (!own_running) {
		pthread_mutex_unlock(&own_lock);
		j.result = fn(arg);
	} else {
		own_next = &j;
		pthread_cond_broadcast(&own_cond);
		while (!j.done)
			pthread_cond_wait(&own_cond, &own_lock);
		pthread_mutex_unlock(&own_lock);
	}
	pthread_mutex_unlock(&own_use);
	return j.result;
}

typedef struct nft_here {
	const char *cmd;
	fm_error *err;
} nft_here;

/* (on the worker) */
static int nft_run_here(void *opaque)
{
	nft_here *h = opaque;
	if (!own_nft && (own_nft = nft_ctx_new(NFT_CTX_DEFAULT))) {
		nft_ctx_buffer_output(own_nft);
		nft_ctx_buffer_error(own_nft);
	}
	if (!own_nft)
		return fm_error_set(h->err, -ENOMEM, "cannot create an nftables context");
	if (nft_run_cmd_from_buffer(own_nft, h->cmd) != 0) {
		const char *e = nft_ctx_get_error_buffer(own_nft);
		return fm_error_set(h->err, -EIO, "nftables: %.*s", (int)strcspn(e ? e : "", "\n"), e ? e : "failed");
	}
	return 0;
}

/* Runs an nft script in one transaction in this process's network
 * namespace; errors say "nftables: ..." in err (the caller prefixes what it
 * did). */
static int nft_apply(const char *cmd, fm_error *err)
{
	nft_here h = { .cmd = cmd, .err = err };
	return on_own_worker(nft_run_here, &h);
}

/* The hold's socket opened ahead in the container's namespace. */
struct fm_net_nft_ready {
	fm_nft_hold *h;
};

fm_net_nft_ready *fm_net_nft_ready_new(fm_runtime *rt, const char *name)
{
	_cleanup_free_ char *path = fm_net_ns_path(rt, name);
	fm_error e = FM_ERROR_INIT;
	fm_nft_hold *h = hold_open_in(path, &e);
	if (!h)
		fm_warn(FM_C_NETWORK_ORCH, "container %s: the hold is not made ready ahead: %s", name, e.msg);
	fm_error_clear(&e);
	if (!h)
		return NULL;
	fm_net_nft_ready *n = fm_xcalloc(1, sizeof(*n));
	n->h = h;
	return n;
}

void fm_net_nft_ready_free(fm_net_nft_ready *n)
{
	if (!n)
		return;
	fm_nft_hold_close(n->h);
	free(n);
}

int fm_net_hold(fm_runtime *rt, const char *name, bool on, bool outgoing, fm_error *err)
{
	return fm_net_hold_with(NULL, rt, name, on, outgoing, err);
}

int fm_net_hold_with(fm_net_nft_ready *ready, fm_runtime *rt, const char *name, bool on, bool outgoing,
		     fm_error *err)
{
	_cleanup_free_ char *path = ready ? NULL : fm_net_ns_path(rt, name);
	fm_nft_hold *h = ready ? ready->h : hold_open_in(path, err);
	int r = h ? fm_nft_hold_set(h, on, outgoing, err) : err ? err->code : -EIO;
	if (ready)
		free(ready);
	fm_nft_hold_close(h);
	if (r < 0)
		fm_error_prefix(err, "cannot %s the TCP traffic of %s", on ? "hold" : "release", name);
	return r;
}

/* ---- forwarding an address that moved away (runtime/net.h) ---- */

/* the forward's packet mark and routing table: "FM" and the old address's
 * last two bytes */
#define FORWARD_MARK_BASE 0x464d0000u
#define FORWARD_RULE_PRIORITY 1000

/* The forward's nftables rules, in the tables "ip|arp name" (name:
 * fleximigrate_fwd_<old, hex>), printed from parsed values. */
static char *forward_rules(const char *name, struct in_addr o, struct in_addr n, const char *standin, unsigned mark)
{
	char os[INET_ADDRSTRLEN], ns[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &o, os, sizeof(os));
	inet_ntop(AF_INET, &n, ns, sizeof(ns));
	_cleanup_free_ char *table = fm_xasprintf("ip %s", name);
	_cleanup_free_ char *arpt = fm_xasprintf("arp %s", name);
	return fm_xasprintf(
		"add table %s\n"
		"add chain %s raw { type filter hook prerouting priority raw; policy accept; }\n"
		"add rule %s raw iifname != \"%s\" ip daddr %s notrack\n"
		"add rule %s raw iifname != \"%s\" ip saddr %s notrack\n"
		"add chain %s steer { type filter hook prerouting priority mangle; policy accept; }\n"
		"add rule %s steer iifname \"%s\" meta mark set %u\n"
		"add chain %s pre { type nat hook prerouting priority dstnat; policy accept; }\n"
		"add rule %s pre ip daddr %s dnat to %s\n"
		"add chain %s out { type nat hook output priority -100; policy accept; }\n"
		"add rule %s out ip daddr %s dnat to %s\n"
		"add chain %s post { type nat hook postrouting priority srcnat; policy accept; }\n"
		"add rule %s post ip daddr %s ct status dnat snat to %s\n"
		"add table %s\n"
		"add chain %s in { type filter hook input priority filter; policy accept; }\n"
		"add rule %s in iifname != \"%s\" arp operation request arp daddr ip %s drop\n",
		table, table, table, standin, os, table, standin, os, table, table, standin, mark, table, table, os, ns,
		table, table, os, ns, table, table, ns, os, arpt, arpt, arpt, standin, os);
}

/* The stand-in's rule and veth pair gone (what is already gone is fine). */
static void standin_remove(fm_rtnl *nl, const char *port, unsigned mark, fm_error *err)
{
	fm_rtnl_rule(nl, false, mark, mark, FORWARD_RULE_PRIORITY, err);
	fm_rtnl_link_del(nl, port, err);
}

static int forward_here(fm_runtime *rt, const char *old_ip, const char *new_ip, const char *mac,
			fm_net_forward_step step, fm_error *err)
{
	bool on = step != FM_FORWARD_OFF;
	struct in_addr o, n;
	unsigned char m[6];
	char os[INET_ADDRSTRLEN], ns[INET_ADDRSTRLEN], port[16], standin[16];
	unsigned bridge = 0;
	int r;

	if (!rt->bridge)
		return fm_error_set(err, -ENOTSUP, "host %s has no bridge (fleximigrated --bridge) to answer for %s",
				    rt->host, old_ip);
	if (parse_ip(old_ip, &o) < 0 || parse_ip(new_ip, &n) < 0 || parse_mac(mac, m) < 0)
		return fm_error_set(err, -EINVAL, "bad address %s, %s or %s", old_ip, new_ip, mac ? mac : "(no MAC)");
	if (on && (bridge = if_nametoindex(rt->bridge)) == 0)
		return fm_error_set(err, -ENODEV, "bridge %s does not exist on %s", rt->bridge, rt->host);
	/* what reaches nft's parser is printed from the parsed values */
	inet_ntop(AF_INET, &o, os, sizeof(os));
	inet_ntop(AF_INET, &n, ns, sizeof(ns));
	snprintf(port, sizeof(port), "fmw%08x", ntohl(o.s_addr));
	snprintf(standin, sizeof(standin), "fmx%08x", ntohl(o.s_addr));
	/* With br_netfilter on (bridge-nf-call-iptables), frames the bridge
	 * forwards pass the IP hooks too: NATed there, a frame from the uplink
	 * would be bridged back out of the port it came in on, and dropped.  So
	 * frames to and from the old address are not tracked (nor NATed) on
	 * their way across the bridge; the stand-in receives them and they are
	 * NATed as they enter the host.  For the same reason the forwarded packets leave
	 * with the old address as their source (SNAT, not masquerade): the
	 * answers come back to the stand-in too, not to the bridge.  And only
	 * the stand-in answers ARP for the old address (the host would on every
	 * interface, the bridge's MAC leading past it). */
	if (step == FM_FORWARD_ENGAGE) {
		/* the bridges (and the switch) learn where the MAC is now */
		if ((r = link_set_up(port, true)) < 0)
			return fm_error_set(err, r, "cannot set the stand-in port %s up: %s", port, strerror(-r));
		if ((r = garp_send(NULL, standin, o, m)) < 0)
			return fm_error_set(err, r, "gratuitous ARP for %s from %s failed: %s", os, standin, strerror(-r));
		return 0;
	}
	char name[32];
	snprintf(name, sizeof(name), "fleximigrate_fwd_%08x", ntohl(o.s_addr));
	_cleanup_free_ char *table = fm_xasprintf("ip %s", name);
	_cleanup_free_ char *arpt = fm_xasprintf("arp %s", name);
	_cleanup_free_ char *reset = fm_xasprintf("add table %s\ndelete table %s\nadd table %s\ndelete table %s\n", table,
						  table, arpt, arpt);
	_cleanup_free_ char *rpf = NULL;
	/* what came in through the stand-in leaves through it (policy routing by
	 * this mark, to a table of the same number): so every frame about the old
	 * address, ARP included, carries the container's MAC */
	unsigned mark = FORWARD_MARK_BASE | (ntohl(o.s_addr) & 0xffff);
	if (!on) {
		fm_error e = FM_ERROR_INIT;
		r = nft_apply(reset, &e);
		fm_rtnl *nl = fm_rtnl_open(&e);
		if (nl)
			standin_remove(nl, port, mark, &e);
		fm_rtnl_close(nl);
		if (fm_error_is_set(&e))
			r = fm_error_set(err, e.code, "cannot remove the forwarding of %s: %s", os, e.msg);
		fm_error_clear(&e);
		return r;
	}
	_cleanup_free_ char *rules = forward_rules(name, o, n, standin, mark);
	_cleanup_free_ char *cmd = fm_xasprintf("%s%s", reset, rules);
	if ((r = nft_apply(cmd, err)) < 0) {
		fm_error_prefix(err, "cannot forward %s to %s", os, ns);
		return r;
	}
	/* A stand-in for the container on the bridge: a veth port (down until
	 * FM_FORWARD_ENGAGE) whose other end here has the container's MAC and old
	 * address.  Clients keep sending to
	 * that MAC (their ARP caches need not change: a gratuitous ARP with a new
	 * MAC is ignored for a second after a neighbour entry changed, and traffic
	 * to the old MAC would be lost meanwhile); the host takes it from there. */
	fm_rtnl *nl = fm_rtnl_open(err);
	unsigned idx;
	if (!nl) {
		r = err ? err->code : -EIO;
		goto undo;
	}
	standin_remove(nl, port, mark, NULL); /* a crash's leftovers */
	if ((r = fm_rtnl_veth_add(nl, port, standin, m, bridge, err)) < 0)
		goto undo;
	if ((idx = if_nametoindex(standin)) == 0 || (r = link_set_up(standin, true)) < 0) {
		r = fm_error_set(err, idx ? r : -ENODEV, "cannot set %s up: %s", standin, strerror(idx ? -r : ENODEV));
		goto undo;
	}
	if ((r = fm_rtnl_addr_add(nl, idx, o, 32, err)) < 0 || (r = fm_rtnl_route_default(nl, idx, mark, err)) < 0 ||
	    (r = fm_rtnl_rule(nl, true, mark, mark, FORWARD_RULE_PRIORITY, err)) < 0)
		goto undo;
	/* its answers leave through the bridge: they come in on the stand-in */
	rpf = fm_xasprintf("/proc/sys/net/ipv4/conf/%s/rp_filter", standin);
	FILE *fp = fopen(rpf, "we");
	if (fp) {
		fputs("0\n", fp);
		fclose(fp);
	}
	/* Flows of the old address this host's conntrack already knows (bridged
	 * traffic passes netfilter here when br_netfilter is on) would never be
	 * NATed: NAT is decided on a connection's first packet.  Forget them, in
	 * both directions: a flow whose first tracked packet was the container's
	 * answer has the old address as its source (seen once in ~30 moves: the
	 * client's stream then matched it as answers, never forwarded).  The next
	 * packet of each starts a new, forwarded one. */
	if ((r = fm_ct_forget(o, NULL, err)) < 0)
		goto undo;
	fm_rtnl_close(nl);
	return 0;
undo:
	fm_error_prefix(err, "cannot stand in for %s on %s", os, rt->bridge);
	nft_apply(reset, NULL);
	if (nl)
		standin_remove(nl, port, mark, NULL);
	fm_rtnl_close(nl);
	return r;
}

typedef struct forward_job {
	fm_runtime *rt;
	const char *old_ip, *new_ip, *mac;
	fm_net_forward_step step;
	fm_error *err;
} forward_job;

static int forward_on_worker(void *opaque)
{
	forward_job *j = opaque;
	return forward_here(j->rt, j->old_ip, j->new_ip, j->mac, j->step, j->err);
}

/* (on the worker) a forward's rules, for documentation addresses
 * (192.0.2.0/24), made and removed in one transaction: nothing changes on
 * the host; and a netlink socket opened and closed */
static int warm_up_on_worker(void *opaque)
{
	fm_error *err = opaque;
	struct in_addr o = { htonl(0xc0000201) }, n = { htonl(0xc0000202) };
	_cleanup_free_ char *rules = forward_rules("fleximigrate_warm_up", o, n, "fmxwarmup", FORWARD_MARK_BASE);
	_cleanup_free_ char *cmd = fm_xasprintf("%sdelete table ip fleximigrate_warm_up\n"
						"delete table arp fleximigrate_warm_up\n", rules);
	int r = nft_apply(cmd, err);
	if (r == 0)
		fm_rtnl_close(fm_rtnl_open(err));
	return fm_error_is_set(err) ? err->code : r;
}

int fm_net_forward_warm_up(fm_error *err)
{
	fm_error e = FM_ERROR_INIT;
	int r = on_own_worker(warm_up_on_worker, &e);
	if (r < 0)
		fm_error_set(err, r, "%s", e.msg);
	fm_error_clear(&e);
	return r;
}

int fm_net_forward(fm_runtime *rt, const char *old_ip, const char *new_ip, const char *mac, fm_net_forward_step step,
		   fm_error *err)
{
	forward_job j = { rt, old_ip, new_ip, mac, step, err };
	return on_own_worker(forward_on_worker, &j);
}

/* what is kept goes to the destination in one API request (bodies <= 1 MiB, base64) */
#define CAPTURE_MAX_BYTES (512u << 10)

struct fm_net_capture {
	int fd, stop_fd;
	pthread_t thread;
	unsigned char *buf;
	size_t len;
	unsigned count;
};

/* Reads one frame; keeps it if it is IPv4 TCP going to the container (on the
 * host's end of the veth that is "outgoing").  -1 when nothing was waiting. */
static int capture_one(fm_net_capture *c, unsigned char *frame, size_t size)
{
	struct sockaddr_ll from;
	socklen_t fl = sizeof(from);
	ssize_t n = recvfrom(c->fd, frame, size, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
	if (n <= 0)
		return -1;
	if (n < 34 || from.sll_pkttype != PACKET_OUTGOING || frame[12] != 0x08 || frame[13] != 0x00 ||
	    frame[23] != 6 || c->len + 2 + (size_t)n > CAPTURE_MAX_BYTES)
		return 0;
	c->buf[c->len] = (unsigned char)(n & 0xff);
	c->buf[c->len + 1] = (unsigned char)(n >> 8);
	memcpy(c->buf + c->len + 2, frame, (size_t)n);
	c->len += 2 + (size_t)n;
	c->count++;
	return 0;
}

static void *capture_thread(void *opaque)
{
	fm_net_capture *c = opaque;
	unsigned char frame[65536];
	while (fm_wait_readable(c->fd, c->stop_fd) > 0)
		capture_one(c, frame, sizeof(frame));
	return NULL;
}

/* receive: capture every frame (ETH_P_ALL); else a socket to send with, which
 * takes no frames at all.  Created with protocol 0 and given its protocol by
 * bind(): a protocol at socket() would register a receive hook that bind()
 * then replaces, and the replacement waits for an RCU grace period (15-24 ms
 * here). */
static int port_socket(const char *name, bool receive, fm_error *err)
{
	char port[16];
	port_name(name, port);
	unsigned idx = if_nametoindex(port);
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = receive ? htons(ETH_P_ALL) : 0,
				   .sll_ifindex = (int)idx };
	if (idx == 0 || fd < 0 || bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return fm_error_set(err, -e, "cannot open a packet socket on %s (port of %s): %s", port, name, strerror(e));
	}
	return fd;
}

int fm_net_capture_start(fm_runtime *rt, const char *name, fm_net_capture **out, fm_error *err)
{
	(void)rt;
	int bufsz = 8 << 20;
	fm_net_capture *c = fm_xcalloc(1, sizeof(*c));
	c->stop_fd = eventfd(0, EFD_CLOEXEC);
	if ((c->fd = port_socket(name, true, err)) < 0 || c->stop_fd < 0) {
		if (c->fd >= 0)
			close(c->fd);
		if (c->stop_fd >= 0)
			close(c->stop_fd);
		free(c);
		return fm_error_set(err, -EIO, "cannot capture on the port of %s", name);
	}
	(void)setsockopt(c->fd, SOL_SOCKET, SO_RCVBUFFORCE, &bufsz, sizeof(bufsz));
	c->buf = fm_xmalloc(CAPTURE_MAX_BYTES);
	if (pthread_create(&c->thread, NULL, capture_thread, c) != 0) {
		close(c->fd);
		close(c->stop_fd);
		free(c->buf);
		free(c);
		return fm_error_set(err, -EAGAIN, "cannot start a thread");
	}
	*out = c;
	return 0;
}

int fm_net_capture_stop(fm_net_capture *c, unsigned char **frames, size_t *len, unsigned *count)
{
	uint64_t one = 1;
	if (!c)
		return -EINVAL;
	(void)!write(c->stop_fd, &one, sizeof(one));
	pthread_join(c->thread, NULL);
	/* what arrived between the last poll and the stop is in the socket still */
	for (;;) {
		unsigned char frame[65536];
		if (capture_one(c, frame, sizeof(frame)) < 0)
			break;
	}
	fm_close_later(c->fd);
	close(c->stop_fd);
	if (frames) {
		*frames = c->buf;
		*len = c->len;
		*count = c->count;
	} else {
		free(c->buf);
	}
	free(c);
	return 0;
}

/* Frames captured on a veth may carry a partial TCP checksum (the sender's
 * kernel left the rest to "hardware", which on a veth never does it); sent
 * back through a packet socket they would be checked and dropped.  So the
 * checksum is computed here, over the pseudo-header and the segment. */
static void tcp_checksum_fix(unsigned char *f, size_t n)
{
	size_t ihl = (size_t)(f[14] & 0x0f) * 4, tot = (size_t)f[16] << 8 | f[17];
	if (n < 14 + 20 || ihl < 20 || tot < ihl + 20 || 14 + tot > n)
		return;
	unsigned char *tcp = f + 14 + ihl;
	size_t tlen = tot - ihl;
	uint32_t sum = fm_csum_add(0, f + 26, 8);       /* source and destination addresses */
	sum += 6 + (uint32_t)tlen;                      /* protocol, TCP length */
	tcp[16] = tcp[17] = 0;
	uint16_t c = fm_csum_fold(fm_csum_add(sum, tcp, tlen));
	tcp[16] = (unsigned char)(c >> 8);
	tcp[17] = (unsigned char)c;
}

int fm_net_inject(fm_runtime *rt, const char *name, const unsigned char *frames, size_t len, unsigned *sent,
		  fm_error *err)
{
	(void)rt;
	*sent = 0;
	if (len == 0)
		return 0;
	int fd = port_socket(name, false, err), r = 0;
	if (fd < 0)
		return fd;
	for (size_t off = 0; off + 2 <= len;) {
		size_t n = frames[off] | (size_t)frames[off + 1] << 8;
		if (n < 14 || n > 65535 || off + 2 + n > len) {
			r = fm_error_set(err, -EINVAL, "malformed frame records");
			break;
		}
		unsigned char frame[65536];
		memcpy(frame, frames + off + 2, n);
		if (n >= 34 && frame[12] == 0x08 && frame[13] == 0x00 && frame[23] == 6)
			tcp_checksum_fix(frame, n);
		if (send(fd, frame, n, 0) == (ssize_t)n)
			(*sent)++;
		off += 2 + n;
	}
	fm_close_later(fd);
	return r;
}
