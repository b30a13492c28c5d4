/* Unit tests: netlink in-process (runtime/netlink.c) against the real kernel,
 * in a network namespace of the test's own (needs root: it fails, saying so,
 * without). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <nftables/libnftables.h>

#include "basic/cmd.h"
#include "basic/util.h"
#include "runtime/netlink.h"

static struct in_addr addr(const char *s)
{
	struct in_addr a;
	assert_int_equal(inet_pton(AF_INET, s, &a), 1);
	return a;
}

/* what `ip ARGS` prints (the check is another tool's view than ours) */
static char *ip_out(const char *a1, const char *a2, const char *a3, const char *a4)
{
	fm_cmd *c = fm_cmd_new("ip");
	for (const char *const *a = (const char *const[]){ a1, a2, a3, a4, NULL }; *a; a++)
		fm_cmd_arg(c, *a);
	assert_int_equal(fm_cmd_run(c, NULL), 0);
	char *o = fm_xstrdup(fm_cmd_stdout(c));
	fm_cmd_free(c);
	return o;
}

static int set_up(const char *name)
{
	struct ifreq ifr = { 0 };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	int r = fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) < 0 ? -errno : 0;
	ifr.ifr_flags |= IFF_UP;
	if (r == 0 && ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		r = -errno;
	close(fd);
	return r;
}

static void test_veth_address_route_rule(void **state)
{
	fm_error e = FM_ERROR_INIT;
	const unsigned char mac[6] = { 0x02, 0xfd, 0x0a, 0x01, 0x02, 0x03 };
	fm_rtnl *nl = fm_rtnl_open(&e);
	assert_non_null(nl);
	assert_int_equal(fm_rtnl_veth_add(nl, "tnw0", "tnx0", mac, 0, &e), 0);
	unsigned idx = if_nametoindex("tnx0");
	assert_true(idx > 0 && if_nametoindex("tnw0") > 0);
	/* a second one of the name: refused, said so */
	assert_int_equal(fm_rtnl_veth_add(nl, "tnw0", "tnx1", mac, 0, &e), -EEXIST);
	assert_non_null(strstr(e.msg, "tnw0"));
	fm_error_clear(&e);
	assert_int_equal(set_up("tnx0"), 0);
	assert_int_equal(fm_rtnl_addr_add(nl, idx, addr("10.231.0.7"), 32, &e), 0);
	assert_int_equal(fm_rtnl_route_default(nl, idx, 0x464d0007, &e), 0);
	assert_int_equal(fm_rtnl_route_default(nl, idx, 0x464d0007, &e), 0); /* replaces */
	assert_int_equal(fm_rtnl_rule(nl, true, 0x464d0007, 0x464d0007, 1000, &e), 0);

	_cleanup_free_ char *link = ip_out("link", "show", "tnx0", NULL);
	assert_non_null(strstr(link, "02:fd:0a:01:02:03"));
	_cleanup_free_ char *a = ip_out("-4", "addr", "show", "tnx0");
	assert_non_null(strstr(a, "10.231.0.7/32"));
	_cleanup_free_ char *rt = ip_out("route", "show", "table", "1179451399");
	assert_non_null(strstr(rt, "default dev tnx0"));
	_cleanup_free_ char *rules = ip_out("rule", NULL, NULL, NULL);
	assert_non_null(strstr(rules, "1000:\tfrom all fwmark 0x464d0007 lookup 1179451399"));

	assert_int_equal(fm_rtnl_rule(nl, false, 0x464d0007, 0x464d0007, 1000, &e), 0);
	assert_int_equal(fm_rtnl_rule(nl, false, 0x464d0007, 0x464d0007, 1000, &e), 0); /* gone: fine */
	assert_int_equal(fm_rtnl_link_del(nl, "tnw0", &e), 0);
	assert_int_equal(if_nametoindex("tnx0"), 0); /* the pair goes together */
	assert_int_equal(fm_rtnl_link_del(nl, "tnw0", &e), 0);   /* gone: fine */
	_cleanup_free_ char *rules2 = ip_out("rule", NULL, NULL, NULL);
	assert_null(strstr(rules2, "fwmark 0x464d0007"));
	assert_false(fm_error_is_set(&e));
	fm_rtnl_close(nl);
}

static void test_bad_names_refused(void **state)
{
	fm_error e = FM_ERROR_INIT;
	const unsigned char mac[6] = { 2, 0, 0, 0, 0, 1 };
	fm_rtnl *nl = fm_rtnl_open(&e);
	assert_non_null(nl);
	assert_int_equal(fm_rtnl_veth_add(nl, "a-name-far-too-long", "x", mac, 0, &e), -EINVAL);
	fm_error_clear(&e);
	assert_int_equal(fm_rtnl_veth_add(nl, "ok", "../x", mac, 0, &e), -EINVAL);
	fm_error_clear(&e);
	assert_int_equal(fm_rtnl_link_del(nl, "", &e), -EINVAL);
	fm_error_clear(&e);
	assert_int_equal(fm_rtnl_link_del(nl, NULL, &e), -EINVAL);
	fm_error_clear(&e);
	fm_rtnl_close(nl);
}

/* one UDP datagram from src to dst:9 (nobody listens: it is tracked all the same) */
static void send_udp(const char *src, const char *dst)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_addr = addr(src) };
	struct sockaddr_in d = { .sin_family = AF_INET, .sin_port = htons(9), .sin_addr = addr(dst) };
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&s, sizeof(s)), 0);
	assert_int_equal(sendto(fd, "x", 1, 0, (struct sockaddr *)&d, sizeof(d)), 1);
	close(fd);
}

static void test_conntrack_forget_both_directions(void **state)
{
	fm_error e = FM_ERROR_INIT;
	unsigned n = 99;
	/* connection tracking in this namespace: a table that asks for it */
	struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
	nft_ctx_buffer_error(ctx);
	assert_int_equal(nft_run_cmd_from_buffer(ctx, "add table ip t\n"
						      "add chain ip t out { type filter hook output priority 0; }\n"
						      "add rule ip t out ct state new counter\n"),
			 0);
	nft_ctx_free(ctx);
	assert_int_equal(set_up("lo"), 0);
	send_udp("127.0.0.1", "127.0.0.2");   /* to the address */
	send_udp("127.0.0.2", "127.0.0.3");   /* from it */
	send_udp("127.0.0.1", "127.0.0.4");   /* neither: kept */
	assert_int_equal(fm_ct_forget(addr("127.0.0.2"), &n, &e), 0);
	assert_int_equal(n, 2);
	assert_int_equal(fm_ct_forget(addr("127.0.0.2"), &n, &e), 0);
	assert_int_equal(n, 0);
	assert_int_equal(fm_ct_forget(addr("127.0.0.4"), &n, &e), 0);
	assert_int_equal(n, 1);
	assert_false(fm_error_is_set(&e));
}

/* `nft list table inet fleximigrate_hold` as libnftables prints it; NULL
 * when there is no such table */
static char *hold_listed(void)
{
	struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
	nft_ctx_buffer_output(ctx);
	nft_ctx_buffer_error(ctx);
	char *out = nft_run_cmd_from_buffer(ctx, "list table inet fleximigrate_hold\n") == 0
			    ? fm_xstrdup(nft_ctx_get_output_buffer(ctx)) : NULL;
	nft_ctx_free(ctx);
	return out;
}

/* TCP held, and only TCP: a connect to a listening port gets no answer */
static bool tcp_held(void)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
	struct timeval tv = { 0, 300000 };
	setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	bool held = connect(c, (struct sockaddr *)&a, sizeof(a)) < 0;
	close(c);
	close(l);
	return held;
}

static void test_nft_hold_made_and_removed(void **state)
{
	fm_error e = FM_ERROR_INIT;
	assert_int_equal(set_up("lo"), 0);
	fm_nft_hold *h = fm_nft_hold_open(&e);
	assert_non_null(h);
	/* removing what is not there is no error */
	assert_int_equal(fm_nft_hold_set(h, false, false, &e), 0);
	assert_null(hold_listed());
	assert_false(tcp_held());

	/* both ways, twice (made afresh: one rule per chain, not two) */
	for (int i = 0; i < 2; i++)
		assert_int_equal(fm_nft_hold_set(h, true, true, &e), 0);
	_cleanup_free_ char *both = hold_listed();
	assert_non_null(both);
	assert_non_null(strstr(both, "chain in {"));
	assert_non_null(strstr(both, "type filter hook prerouting priority raw; policy accept;"));
	assert_non_null(strstr(both, "chain out {"));
	assert_non_null(strstr(both, "type filter hook output priority raw; policy accept;"));
	const char *rule = strstr(both, "meta l4proto tcp drop");
	assert_non_null(rule);
	rule = strstr(rule + 1, "meta l4proto tcp drop");
	assert_non_null(rule);
	assert_null(strstr(rule + 1, "meta l4proto tcp drop"));
	assert_true(tcp_held());

	/* arriving only: the output chain goes */
	assert_int_equal(fm_nft_hold_set(h, true, false, &e), 0);
	_cleanup_free_ char *in = hold_listed();
	assert_non_null(in);
	assert_non_null(strstr(in, "hook prerouting"));
	assert_null(strstr(in, "chain out"));
	assert_true(tcp_held());

	assert_int_equal(fm_nft_hold_set(h, false, false, &e), 0);
	assert_null(hold_listed());
	assert_false(tcp_held());
	assert_false(fm_error_is_set(&e));
	fm_nft_hold_close(h);
}

int main(void)
{
	if (geteuid() != 0 || unshare(CLONE_NEWNET) < 0) {
		fprintf(stderr, "test_netlink: needs root (a network namespace of its own): run it as root, as "
				"`make check` does\n");
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_veth_address_route_rule),
		cmocka_unit_test(test_bad_names_refused),
		cmocka_unit_test(test_conntrack_forget_both_directions),
		cmocka_unit_test(test_nft_hold_made_and_removed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
