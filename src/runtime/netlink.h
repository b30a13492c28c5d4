/* Netlink, in-process (libmnl): the interfaces, addresses, routes and rules
 * of a host (rtnetlink) and its connection tracking (ctnetlink).
 *
 * For the steps that sit in a migration: an `ip` or `conntrack` process
 * costs 3-20 ms here (more from a large, many-threaded daemon), a netlink
 * request a few tens of microseconds.  Each call opens its socket in the
 * calling thread's network namespace and gives it to a closing thread
 * afterwards (closing a netlink socket can wait for an RCU grace period).
 * Interface names are checked (1-15 characters, no '/' or blank); errors
 * say which object and the kernel's errno.  And the hold's table
 * (nf_tables), built as netlink messages without libnftables: its parser
 * and ruleset cache cost milliseconds inside a migration's freeze. */
#pragma once
#include <netinet/in.h>
#include <stdbool.h>

#include "basic/error.h"

typedef struct fm_rtnl fm_rtnl;

/* A batch of rtnetlink requests on one socket; NULL with err set when no
 * socket could be had. */
fm_rtnl *fm_rtnl_open(fm_error *err);
void fm_rtnl_close(fm_rtnl *nl);

/* A veth pair, both ends down: name enslaved to the bridge master
 * (ifindex), peer with the MAC mac. */
int fm_rtnl_veth_add(fm_rtnl *nl, const char *name, const char *peer, const unsigned char mac[6], unsigned master,
		     fm_error *err);
/* Removes an interface (a veth pair goes with either end); 0 when it did
 * not exist. */
int fm_rtnl_link_del(fm_rtnl *nl, const char *name, fm_error *err);
/* IPv4 address a/prefix on ifindex. */
int fm_rtnl_addr_add(fm_rtnl *nl, unsigned ifindex, struct in_addr a, unsigned prefix, fm_error *err);
/* "default dev ifindex" in routing table `table` (replacing one there). */
int fm_rtnl_route_default(fm_rtnl *nl, unsigned ifindex, unsigned table, fm_error *err);
/* The policy rule "fwmark mark lookup table" at priority prio: added, or
 * removed (0 when it did not exist). */
int fm_rtnl_rule(fm_rtnl *nl, bool add, unsigned mark, unsigned table, unsigned prio, fm_error *err);

/* Forgets the connections this namespace's conntrack holds whose original
 * direction comes from or goes to a (conntrack -D -s a; -D -d a).  *count,
 * if given, says how many. */
int fm_ct_forget(struct in_addr a, unsigned *count, fm_error *err);

/* The hold (runtime/net.c): the nf_tables table "inet fleximigrate_hold"
 * that drops TCP arriving (prerouting) and, with outgoing, leaving (output),
 * both at priority -300 (raw), before conntrack.  One transaction each way,
 * both idempotent: made afresh (on), or removed (off: 0 when it was not
 * there).  The socket belongs to the network namespace of the thread that
 * opened it, and stays with it. */
typedef struct fm_nft_hold fm_nft_hold;

/* A socket in the calling thread's namespace, the hold's two transactions
 * built ahead; NULL with err set. */
fm_nft_hold *fm_nft_hold_open(fm_error *err);
int fm_nft_hold_set(fm_nft_hold *h, bool on, bool outgoing, fm_error *err);
void fm_nft_hold_close(fm_nft_hold *h);
