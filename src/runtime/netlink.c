#include "runtime/netlink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/fib_rules.h>
#include <linux/if_link.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "basic/dial.h"
#include "basic/util.h"

/* a dump's answers come in messages of up to 32 KiB (libmnl's
 * MNL_SOCKET_DUMP_SIZE, newer than Debian 12's libmnl) */
#define NL_RECV_SIZE 32768

/* CTA_FILTER's flags (the kernel's CTA_FILTER_F_CTA_IP_SRC/DST; ABI, not in
 * its uapi headers) */
#define CT_FILTER_IP_SRC (1u << 0)
#define CT_FILTER_IP_DST (1u << 1)

struct fm_rtnl {
	struct mnl_socket *sock;
	unsigned portid, seq;
};

/* a socket of protocol in this thread's namespace */
static struct mnl_socket *nl_open(int protocol, unsigned *portid, fm_error *err)
{
	struct mnl_socket *s = mnl_socket_open2(protocol, SOCK_CLOEXEC);
	if (!s || mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
		int e = errno;
		if (s)
			mnl_socket_close(s);
		fm_error_set(err, -e, "cannot open a netlink socket: %s", strerror(e));
		return NULL;
	}
	*portid = mnl_socket_get_portid(s);
	return s;
}

/* mnl_socket_close, its close(2) on a thread of its own */
static void nl_close(struct mnl_socket *s)
{
	if (!s)
		return;
	fm_close_later(dup(mnl_socket_get_fd(s)));
	mnl_socket_close(s); /* the last reference is the duplicate's */
}

/* Sends the request nlh (NLM_F_ACK is added) and runs cb on each answer
 * until the acknowledgement or the end of a dump; -errno from the kernel. */
static int nl_talk(struct mnl_socket *s, unsigned portid, struct nlmsghdr *nlh, mnl_cb_t cb, void *data)
{
	unsigned seq = nlh->nlmsg_seq;
	int r;
	nlh->nlmsg_flags |= NLM_F_ACK;
	if (mnl_socket_sendto(s, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	_cleanup_free_ char *buf = fm_xmalloc(NL_RECV_SIZE);
	do {
		ssize_t n = mnl_socket_recvfrom(s, buf, NL_RECV_SIZE);
		if (n < 0)
			return -errno;
		r = mnl_cb_run(buf, (size_t)n, seq, portid, cb, data);
	} while (r == MNL_CB_OK);
	return r < 0 ? (errno ? -errno : -EIO) : 0;
}

fm_rtnl *fm_rtnl_open(fm_error *err)
{
	fm_rtnl *nl = fm_xcalloc(1, sizeof(*nl));
	if (!(nl->sock = nl_open(NETLINK_ROUTE, &nl->portid, err))) {
		free(nl);
		return NULL;
	}
	nl->seq = (unsigned)time(NULL);
	return nl;
}

void fm_rtnl_close(fm_rtnl *nl)
{
	if (!nl)
		return;
	nl_close(nl->sock);
	free(nl);
}

static bool ifname_ok(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	return n > 0 && n < IFNAMSIZ && strcspn(name, "/ \t\n:") == n;
}

static struct nlmsghdr *rt_request(fm_rtnl *nl, char *buf, uint16_t type, uint16_t flags)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = (uint16_t)(NLM_F_REQUEST | flags);
	nlh->nlmsg_seq = ++nl->seq;
	return nlh;
}

int fm_rtnl_veth_add(fm_rtnl *nl, const char *name, const char *peer, const unsigned char mac[6], unsigned master,
		     fm_error *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	if (!ifname_ok(name) || !ifname_ok(peer))
		return fm_error_set(err, -EINVAL, "bad interface name %s or %s", name ? name : "", peer ? peer : "");
	struct nlmsghdr *nlh = rt_request(nl, buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	ifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	mnl_attr_put_u32(nlh, IFLA_MASTER, master);
	struct nlattr *info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
	struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
	struct nlattr *p = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
	/* the peer's own ifinfomsg, then its attributes */
	struct ifinfomsg *pm = mnl_nlmsg_get_payload_tail(nlh);
	memset(pm, 0, sizeof(*pm));
	pm->ifi_family = AF_UNSPEC;
	nlh->nlmsg_len += MNL_ALIGN(sizeof(*pm));
	mnl_attr_put_strz(nlh, IFLA_IFNAME, peer);
	mnl_attr_put(nlh, IFLA_ADDRESS, 6, mac);
	mnl_attr_nest_end(nlh, p);
	mnl_attr_nest_end(nlh, data);
	mnl_attr_nest_end(nlh, info);
	int r = nl_talk(nl->sock, nl->portid, nlh, NULL, NULL);
	if (r < 0)
		return fm_error_set(err, r, "cannot add the veth pair %s/%s: %s", name, peer, strerror(-r));
	return 0;
}

int fm_rtnl_link_del(fm_rtnl *nl, const char *name, fm_error *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	if (!ifname_ok(name))
		return fm_error_set(err, -EINVAL, "bad interface name %s", name ? name : "");
	struct nlmsghdr *nlh = rt_request(nl, buf, RTM_DELLINK, 0);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	ifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	int r = nl_talk(nl->sock, nl->portid, nlh, NULL, NULL);
	if (r == -ENODEV)
		return 0;
	if (r < 0)
		return fm_error_set(err, r, "cannot remove interface %s: %s", name, strerror(-r));
	return 0;
}

int fm_rtnl_addr_add(fm_rtnl *nl, unsigned ifindex, struct in_addr a, unsigned prefix, fm_error *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE], text[INET_ADDRSTRLEN];
	struct nlmsghdr *nlh = rt_request(nl, buf, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
	struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
	ifa->ifa_family = AF_INET;
	ifa->ifa_prefixlen = (unsigned char)prefix;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = ifindex;
	mnl_attr_put(nlh, IFA_LOCAL, sizeof(a), &a);
	mnl_attr_put(nlh, IFA_ADDRESS, sizeof(a), &a);
	int r = nl_talk(nl->sock, nl->portid, nlh, NULL, NULL);
	if (r < 0)
		return fm_error_set(err, r, "cannot add address %s/%u to interface %u: %s",
				    inet_ntop(AF_INET, &a, text, sizeof(text)), prefix, ifindex, strerror(-r));
	return 0;
}

int fm_rtnl_route_default(fm_rtnl *nl, unsigned ifindex, unsigned table, fm_error *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = rt_request(nl, buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = AF_INET;
	rtm->rtm_table = RT_TABLE_UNSPEC; /* RTA_TABLE: 32 bits */
	rtm->rtm_protocol = RTPROT_BOOT;
	rtm->rtm_scope = RT_SCOPE_LINK;
	rtm->rtm_type = RTN_UNICAST;
	mnl_attr_put_u32(nlh, RTA_TABLE, table);
	mnl_attr_put_u32(nlh, RTA_OIF, ifindex);
	int r = nl_talk(nl->sock, nl->portid, nlh, NULL, NULL);
	if (r < 0)
		return fm_error_set(err, r, "cannot route table %u through interface %u: %s", table, ifindex,
				    strerror(-r));
	return 0;
}

int fm_rtnl_rule(fm_rtnl *nl, bool add, unsigned mark, unsigned table, unsigned prio, fm_error *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = rt_request(nl, buf, add ? RTM_NEWRULE : RTM_DELRULE, add ? NLM_F_CREATE | NLM_F_EXCL : 0);
	struct fib_rule_hdr *fr = mnl_nlmsg_put_extra_header(nlh, sizeof(*fr));
	fr->family = AF_INET;
	fr->action = FR_ACT_TO_TBL;
	mnl_attr_put_u32(nlh, FRA_FWMARK, mark);
	mnl_attr_put_u32(nlh, FRA_TABLE, table);
	mnl_attr_put_u32(nlh, FRA_PRIORITY, prio);
	int r = nl_talk(nl->sock, nl->portid, nlh, NULL, NULL);
	if (!add && r == -ENOENT)
		return 0;
	if (r < 0)
		return fm_error_set(err, r, "cannot %s the rule \"fwmark %u lookup %u\": %s", add ? "add" : "remove", mark,
				    table, strerror(-r));
	return 0;
}

/* ---- conntrack ---- */

/* what a dump found: the original tuples to delete, as their attributes */
typedef struct ct_found {
	struct in_addr a;
	int dir; /* CTA_IP_V4_SRC or CTA_IP_V4_DST */
	char *tuples; /* nlattr records, each padded */
	size_t len, cap;
	unsigned n;
} ct_found;

/* attributes by type, those up to max (mnl_attr_parse's callback) */
typedef struct attr_table {
	const struct nlattr **tb;
	uint16_t max;
} attr_table;

static int attr_table_cb(const struct nlattr *attr, void *data)
{
	attr_table *t = data;
	uint16_t type = mnl_attr_get_type(attr);
	if (type <= t->max)
		t->tb[type] = attr;
	return MNL_CB_OK;
}

/* one tracked connection of the dump: kept when its original direction
 * has the address on the side asked for */
static int ct_dump_cb(const struct nlmsghdr *nlh, void *data)
{
	ct_found *f = data;
	const struct nlattr *tb[CTA_MAX + 1] = { 0 }, *tt[CTA_TUPLE_MAX + 1] = { 0 }, *ip[CTA_IP_MAX + 1] = { 0 };
	attr_table ctt = { tb, CTA_MAX }, ttt = { tt, CTA_TUPLE_MAX }, ipt = { ip, CTA_IP_MAX };
	if (mnl_attr_parse(nlh, sizeof(struct nfgenmsg), attr_table_cb, &ctt) < 0 || !tb[CTA_TUPLE_ORIG] ||
	    mnl_attr_parse_nested(tb[CTA_TUPLE_ORIG], attr_table_cb, &ttt) < 0 || !tt[CTA_TUPLE_IP] ||
	    mnl_attr_parse_nested(tt[CTA_TUPLE_IP], attr_table_cb, &ipt) < 0 || !ip[f->dir] ||
	    mnl_attr_get_payload_len(ip[f->dir]) != sizeof(struct in_addr) ||
	    memcmp(mnl_attr_get_payload(ip[f->dir]), &f->a, sizeof(struct in_addr)) != 0)
		return MNL_CB_OK;
	/* the tuple, and the zone when there is one, as they came */
	size_t need = MNL_ALIGN(tb[CTA_TUPLE_ORIG]->nla_len) + (tb[CTA_ZONE] ? MNL_ALIGN(tb[CTA_ZONE]->nla_len) : 0);
	if (f->len + need + sizeof(uint32_t) > f->cap) {
		f->cap = (f->len + need + sizeof(uint32_t)) * 2;
		char *p = realloc(f->tuples, f->cap);
		if (!p)
			return MNL_CB_ERROR;
		f->tuples = p;
	}
	uint32_t rec = (uint32_t)need;
	memset(f->tuples + f->len, 0, sizeof(rec) + need);
	memcpy(f->tuples + f->len, &rec, sizeof(rec));
	f->len += sizeof(rec);
	memcpy(f->tuples + f->len, tb[CTA_TUPLE_ORIG], tb[CTA_TUPLE_ORIG]->nla_len);
	f->len += MNL_ALIGN(tb[CTA_TUPLE_ORIG]->nla_len);
	if (tb[CTA_ZONE]) {
		memcpy(f->tuples + f->len, tb[CTA_ZONE], tb[CTA_ZONE]->nla_len);
		f->len += MNL_ALIGN(tb[CTA_ZONE]->nla_len);
	}
	f->n++;
	return MNL_CB_OK;
}

static struct nlmsghdr *ct_request(char *buf, uint16_t msg, uint16_t flags, unsigned seq)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | msg;
	nlh->nlmsg_flags = (uint16_t)(NLM_F_REQUEST | flags);
	nlh->nlmsg_seq = seq;
	struct nfgenmsg *g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
	g->nfgen_family = AF_INET;
	g->version = NFNETLINK_V0;
	return nlh;
}

/* Deletes the connections whose original dir (source or destination) is a. */
static int ct_forget_dir(struct mnl_socket *s, unsigned portid, unsigned *seq, struct in_addr a, int dir,
			 unsigned *count)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	ct_found f = { .a = a, .dir = dir };
	/* the kernel picks them (CTA_FILTER, Linux >= 5.9); the callback checks */
	struct nlmsghdr *nlh = ct_request(buf, IPCTNL_MSG_CT_GET, NLM_F_DUMP, ++*seq);
	struct nlattr *t = mnl_attr_nest_start(nlh, CTA_TUPLE_ORIG);
	struct nlattr *ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
	mnl_attr_put(nlh, (uint16_t)dir, sizeof(a), &a);
	mnl_attr_nest_end(nlh, ip);
	mnl_attr_nest_end(nlh, t);
	struct nlattr *fl = mnl_attr_nest_start(nlh, CTA_FILTER);
	mnl_attr_put_u32(nlh, CTA_FILTER_ORIG_FLAGS, dir == CTA_IP_V4_SRC ? CT_FILTER_IP_SRC : CT_FILTER_IP_DST);
	mnl_attr_put_u32(nlh, CTA_FILTER_REPLY_FLAGS, 0);
	mnl_attr_nest_end(nlh, fl);
	int r = nl_talk(s, portid, nlh, ct_dump_cb, &f);
	for (size_t off = 0; r == 0 && off < f.len;) {
		uint32_t rec;
		memcpy(&rec, f.tuples + off, sizeof(rec));
		off += sizeof(rec);
		nlh = ct_request(buf, IPCTNL_MSG_CT_DELETE, 0, ++*seq);
		memcpy(mnl_nlmsg_get_payload_tail(nlh), f.tuples + off, rec);
		nlh->nlmsg_len += rec;
		off += rec;
		int d = nl_talk(s, portid, nlh, NULL, NULL);
		if (d == 0)
			(*count)++;
		else if (d != -ENOENT) /* ended meanwhile */
			r = d;
	}
	free(f.tuples);
	return r;
}

int fm_ct_forget(struct in_addr a, unsigned *count, fm_error *err)
{
	unsigned portid, seq = (unsigned)time(NULL), n = 0;
	char text[INET_ADDRSTRLEN];
	struct mnl_socket *s = nl_open(NETLINK_NETFILTER, &portid, err);
	if (!s)
		return err ? err->code : -EIO;
	int r = ct_forget_dir(s, portid, &seq, a, CTA_IP_V4_DST, &n);
	if (r == 0)
		r = ct_forget_dir(s, portid, &seq, a, CTA_IP_V4_SRC, &n);
	nl_close(s);
	if (count)
		*count = n;
	/* no conntrack in this kernel or namespace: nothing to forget */
	if (r == -ENOENT || r == -EOPNOTSUPP || r == -EPROTONOSUPPORT)
		return 0;
	if (r < 0)
		return fm_error_set(err, r, "cannot forget the tracked connections of %s (ctnetlink): %s",
				    inet_ntop(AF_INET, &a, text, sizeof(text)), strerror(-r));
	return 0;
}

/* ---- the hold's nf_tables table ---- */

#define HOLD_TABLE_NAME "fleximigrate_hold"
#define HOLD_PRIORITY (-300) /* NF_IP_PRI_RAW: before conntrack */
#define HOLD_ACK_WAIT_MS 2000

struct fm_nft_hold {
	struct mnl_socket *sock;
	unsigned portid, seq;
	char buf[8192]; /* a transaction is < 1 KiB; the answers echo what failed */
};

static struct nlmsghdr *nft_msg(struct mnl_nlmsg_batch *b, uint16_t type, uint16_t flags, uint8_t family,
				uint16_t res_id, unsigned seq)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(mnl_nlmsg_batch_current(b));
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = (uint16_t)(NLM_F_REQUEST | flags);
	nlh->nlmsg_seq = seq;
	struct nfgenmsg *g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
	g->nfgen_family = family;
	g->version = NFNETLINK_V0;
	g->res_id = htons(res_id);
	return nlh;
}

#define NFT_TYPE(m) ((uint16_t)((NFNL_SUBSYS_NFTABLES << 8) | (m)))

static void nft_table_msg(struct mnl_nlmsg_batch *b, int msg, uint16_t flags, unsigned seq)
{
	struct nlmsghdr *nlh = nft_msg(b, NFT_TYPE(msg), (uint16_t)(NLM_F_ACK | flags), NFPROTO_INET, 0, seq);
	mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, HOLD_TABLE_NAME);
	mnl_nlmsg_batch_next(b);
}

/* chain `name` at hook, accepting by default, and its one rule: "meta
 * l4proto tcp drop" */
static void nft_drop_chain(struct mnl_nlmsg_batch *b, const char *name, unsigned hook, unsigned *seq)
{
	struct nlmsghdr *nlh = nft_msg(b, NFT_TYPE(NFT_MSG_NEWCHAIN), NLM_F_ACK | NLM_F_CREATE, NFPROTO_INET, 0, ++*seq);
	mnl_attr_put_strz(nlh, NFTA_CHAIN_TABLE, HOLD_TABLE_NAME);
	mnl_attr_put_strz(nlh, NFTA_CHAIN_NAME, name);
	struct nlattr *hk = mnl_attr_nest_start(nlh, NFTA_CHAIN_HOOK);
	mnl_attr_put_u32(nlh, NFTA_HOOK_HOOKNUM, htonl(hook));
	mnl_attr_put_u32(nlh, NFTA_HOOK_PRIORITY, htonl((uint32_t)HOLD_PRIORITY));
	mnl_attr_nest_end(nlh, hk);
	mnl_attr_put_u32(nlh, NFTA_CHAIN_POLICY, htonl(NF_ACCEPT));
	mnl_attr_put_strz(nlh, NFTA_CHAIN_TYPE, "filter");
	mnl_nlmsg_batch_next(b);

	nlh = nft_msg(b, NFT_TYPE(NFT_MSG_NEWRULE), NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND, NFPROTO_INET, 0, ++*seq);
	mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, HOLD_TABLE_NAME);
	mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, name);
	struct nlattr *exprs = mnl_attr_nest_start(nlh, NFTA_RULE_EXPRESSIONS);
	/* meta l4proto -> reg 1 */
	struct nlattr *e = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
	mnl_attr_put_strz(nlh, NFTA_EXPR_NAME, "meta");
	struct nlattr *d = mnl_attr_nest_start(nlh, NFTA_EXPR_DATA);
	mnl_attr_put_u32(nlh, NFTA_META_KEY, htonl(NFT_META_L4PROTO));
	mnl_attr_put_u32(nlh, NFTA_META_DREG, htonl(NFT_REG_1));
	mnl_attr_nest_end(nlh, d);
	mnl_attr_nest_end(nlh, e);
	/* reg 1 == tcp */
	e = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
	mnl_attr_put_strz(nlh, NFTA_EXPR_NAME, "cmp");
	d = mnl_attr_nest_start(nlh, NFTA_EXPR_DATA);
	mnl_attr_put_u32(nlh, NFTA_CMP_SREG, htonl(NFT_REG_1));
	mnl_attr_put_u32(nlh, NFTA_CMP_OP, htonl(NFT_CMP_EQ));
	struct nlattr *v = mnl_attr_nest_start(nlh, NFTA_CMP_DATA);
	mnl_attr_put_u8(nlh, NFTA_DATA_VALUE, IPPROTO_TCP);
	mnl_attr_nest_end(nlh, v);
	mnl_attr_nest_end(nlh, d);
	mnl_attr_nest_end(nlh, e);
	/* drop */
	e = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
	mnl_attr_put_strz(nlh, NFTA_EXPR_NAME, "immediate");
	d = mnl_attr_nest_start(nlh, NFTA_EXPR_DATA);
	mnl_attr_put_u32(nlh, NFTA_IMMEDIATE_DREG, htonl(NFT_REG_VERDICT));
	v = mnl_attr_nest_start(nlh, NFTA_IMMEDIATE_DATA);
	struct nlattr *vd = mnl_attr_nest_start(nlh, NFTA_DATA_VERDICT);
	mnl_attr_put_u32(nlh, NFTA_VERDICT_CODE, htonl(NF_DROP));
	mnl_attr_nest_end(nlh, vd);
	mnl_attr_nest_end(nlh, v);
	mnl_attr_nest_end(nlh, d);
	mnl_attr_nest_end(nlh, e);
	mnl_attr_nest_end(nlh, exprs);
	mnl_nlmsg_batch_next(b);
}

/* The transaction into h->buf: "add table; delete table" (adding first
 * makes the delete idempotent), then for on the table, its chains and
 * rules.  Its length; *acks: how many answers to wait for. */
static size_t nft_hold_batch(fm_nft_hold *h, bool on, bool outgoing, unsigned *acks)
{
	struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(h->buf, sizeof(h->buf));
	unsigned first = h->seq + 1;
	nft_msg(b, NFNL_MSG_BATCH_BEGIN, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, ++h->seq);
	mnl_nlmsg_batch_next(b);
	nft_table_msg(b, NFT_MSG_NEWTABLE, NLM_F_CREATE, ++h->seq);
	nft_table_msg(b, NFT_MSG_DELTABLE, 0, ++h->seq);
	if (on) {
		nft_table_msg(b, NFT_MSG_NEWTABLE, NLM_F_CREATE, ++h->seq);
		nft_drop_chain(b, "in", NF_INET_PRE_ROUTING, &h->seq);
		if (outgoing)
			nft_drop_chain(b, "out", NF_INET_LOCAL_OUT, &h->seq);
	}
	nft_msg(b, NFNL_MSG_BATCH_END, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, ++h->seq);
	mnl_nlmsg_batch_next(b);
	*acks = h->seq - first - 1; /* every message between BEGIN and END asks for one */
	size_t n = mnl_nlmsg_batch_size(b);
	mnl_nlmsg_batch_stop(b);
	return n;
}

fm_nft_hold *fm_nft_hold_open(fm_error *err)
{
	fm_nft_hold *h = fm_xcalloc(1, sizeof(*h));
	if (!(h->sock = nl_open(NETLINK_NETFILTER, &h->portid, err))) {
		free(h);
		return NULL;
	}
	h->seq = (unsigned)time(NULL);
	return h;
}

void fm_nft_hold_close(fm_nft_hold *h)
{
	if (!h)
		return;
	nl_close(h->sock);
	free(h);
}

/* Reads the answers to messages [first, first + acks): 0 once all are in,
 * else the first error (the transaction is then undone as a whole). */
static int nft_acks(fm_nft_hold *h, unsigned first, unsigned acks)
{
	int fd = mnl_socket_get_fd(h->sock);
	int64_t deadline = fm_now_mono_ms() + HOLD_ACK_WAIT_MS;
	unsigned got = 0;
	int r = 0;
	while (got < acks && r == 0) {
		int w = fm_wait_fd(fd, POLLIN, deadline);
		if (w < 0)
			return w;
		ssize_t k = recv(fd, h->buf, sizeof(h->buf), MSG_DONTWAIT);
		if (k < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return -errno;
		}
		int n = (int)k;
		for (struct nlmsghdr *nlh = (struct nlmsghdr *)h->buf; mnl_nlmsg_ok(nlh, n); nlh = mnl_nlmsg_next(nlh, &n)) {
			if (nlh->nlmsg_type != NLMSG_ERROR || nlh->nlmsg_seq < first || nlh->nlmsg_seq >= first + acks)
				continue;
			const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
			if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*e)))
				return -EBADMSG;
			got++;
			if (e->error < 0 && r == 0)
				r = e->error;
		}
	}
	return r;
}

int fm_nft_hold_set(fm_nft_hold *h, bool on, bool outgoing, fm_error *err)
{
	unsigned acks, first;
	size_t n = nft_hold_batch(h, on, outgoing, &acks);
	first = h->seq - acks;
	int r = mnl_socket_sendto(h->sock, h->buf, n) < 0 ? -errno : nft_acks(h, first, acks);
	if (r < 0)
		return fm_error_set(err, r, "nf_tables: cannot %s table inet %s: %s", on ? "make" : "remove",
				    HOLD_TABLE_NAME, strerror(-r));
	return 0;
}
