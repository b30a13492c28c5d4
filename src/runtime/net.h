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

#include "basic/error.h"

typedef struct fm_runtime fm_runtime;

/* Checks "A.B.C.D/P" (P 1..32) and "xx:xx:xx:xx:xx:xx" (unicast; NULL = none). */
bool fm_net_cidr_valid(const char *cidr);
bool fm_net_mac_valid(const char *mac);
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
