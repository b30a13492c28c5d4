/* Runtime Controller, container networking: a container with an address gets
 * its own network namespace, /run/netns/fm-<host>-<name>, holding eth0 with its
 * IP and MAC; the other end of the veth pair (fmv<hash>) is a port of the
 * host's bridge (daemon --bridge), and the bridges of the hosts are joined at
 * layer 2.  So the IP and MAC can move with the container: on the destination
 * the same namespace is built with its bridge port down, CRIU restores the
 * established TCP connections (--tcp-established) into it, the port comes up
 * and a gratuitous ARP tells the segment where the address lives now.
 *
 * The commands are iproute2's `ip`, run through the one command runner with
 * argument vectors; the gratuitous ARP is sent with a packet socket opened
 * inside the container's namespace.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "basic/error.h"

typedef struct fm_runtime fm_runtime;

/* Checks "A.B.C.D/P" (P 1..32) and "xx:xx:xx:xx:xx:xx" (unicast; NULL = none). */
bool fm_net_cidr_valid(const char *cidr);
bool fm_net_mac_valid(const char *mac);
/* A DNS name for the container's address: dot-separated labels of letters,
 * digits and hyphens (not at a label's ends), 1..63 each, 253 in all; an
 * optional final dot. */
bool fm_net_dns_name_valid(const char *name);
/* The address of "A.B.C.D/P" without its prefix, into out (len bytes). */
void fm_net_addr_of(const char *cidr, char *out, size_t len);
/* The MAC a container gets when none is given: 02:fd:<the four bytes of its IP>. */
void fm_net_mac_for_ip(const char *cidr, char mac[18]);

/* "/run/netns/fm-<host>-<name>" (caller frees). */
char *fm_net_ns_path(fm_runtime *rt, const char *name);
/* Builds namespace, veth and bridge port; the port is left up or down. */
int fm_net_create(fm_runtime *rt, const char *name, const char *cidr, const char *mac, bool port_up,
		  fm_error *err);
/* Brings the container's bridge port up or down (down: nothing reaches it). */
int fm_net_port_set(fm_runtime *rt, const char *name, bool up, fm_error *err);
/* Gratuitous ARP from the container's eth0: the segment learns where it is. */
int fm_net_announce(fm_runtime *rt, const char *name, const char *cidr, const char *mac, fm_error *err);
/* Removes the port and the namespace (whatever of them exists). */
void fm_net_destroy(fm_runtime *rt, const char *name);

/* ---- keeping TCP connections brisk across the move ----
 * A client whose segments are dropped while the container is frozen backs off
 * (TCP retransmission: 0.2 s, 0.6 s, 1.4 s ...) and stalls far longer than the
 * freeze.  So the segments are kept instead: a capture on the source's port
 * from the freeze until the destination announced itself, one on the
 * destination's port from then until the restore, and both are injected into
 * the restored container, which acknowledges them at once.  Meanwhile a hold
 * (an nftables table of ours in the container's namespace dropping its TCP at
 * the raw priority) keeps either
 * copy from answering for connections it does not own: on the source for
 * incoming and outgoing segments until it is deleted or resumed, on the
 * destination for incoming ones until the restore has finished. */

/* Hold on or off (off removes all of it; both are idempotent); outgoing too:
 * also the container's own segments (its kernel retransmits even while its
 * tasks are frozen). */
int fm_net_hold(fm_runtime *rt, const char *name, bool on, bool outgoing, fm_error *err);
/* The same with the hold's netlink socket opened ahead in the container's
 * namespace (fm_net_nft_ready_new: NULL, with a warning, when it could not
 * be; opening it costs a thread entering the namespace, ~0.2 ms, better
 * spent before the freeze than in it); consumed.  Unused, it is given back
 * with fm_net_nft_ready_free. */
typedef struct fm_net_nft_ready fm_net_nft_ready;
fm_net_nft_ready *fm_net_nft_ready_new(fm_runtime *rt, const char *name);
void fm_net_nft_ready_free(fm_net_nft_ready *n);
int fm_net_hold_with(fm_net_nft_ready *ready, fm_runtime *rt, const char *name, bool on, bool outgoing,
		     fm_error *err);

/* ---- forwarding an address that moved away ----
 * After a move that changed a container's address, the source host answers
 * for the old one until clients have moved (their DNS answers expired): a
 * stand-in on the bridge with the container's MAC and old address (a veth
 * port fmw<old, hex> whose peer fmx<old, hex> stays in the host), announced
 * by a gratuitous ARP, and an nftables table of ours (ip
 * fleximigrate_fwd_<old, hex>) that DNATs the old address to new_ip and
 * masquerades, so that the answers come back the same way.  The container's
 * own port must be down first (one MAC, one port).  The host must forward
 * IPv4 (the caller sees to net.ipv4.ip_forward).  Made in two steps: all
 * of it while the container still runs here, then at the switchover the
 * stand-in's port goes up. */
typedef enum {
	FM_FORWARD_OFF,      /* remove all of it */
	FM_FORWARD_PREPARE,  /* everything, the stand-in's port down: nothing changes for traffic yet */
	FM_FORWARD_ENGAGE,   /* its port up and announced (microseconds: at the switchover) */
} fm_net_forward_step;
/* Loads nftables and netlink here once (the first transaction of a process
 * costs ~10 ms more than the next): at start, not in a migration.  Says in
 * err when nftables cannot be used here. */
int fm_net_forward_warm_up(fm_error *err);
int fm_net_forward(fm_runtime *rt, const char *old_ip, const char *new_ip, const char *mac, fm_net_forward_step step,
		   fm_error *err);

typedef struct fm_net_capture fm_net_capture;
/* Starts keeping the IPv4 TCP frames the port delivers to the container. */
int fm_net_capture_start(fm_runtime *rt, const char *name, fm_net_capture **out, fm_error *err);
/* Stops and returns the frames kept: a buffer of [u16 length, little endian |
 * frame] records (caller frees), *count frames. */
int fm_net_capture_stop(fm_net_capture *c, unsigned char **frames, size_t *len, unsigned *count);
/* Sends such records into the container through its port. */
int fm_net_inject(fm_runtime *rt, const char *name, const unsigned char *frames, size_t len, unsigned *sent,
		  fm_error *err);
