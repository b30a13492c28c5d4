/* Network Manager, Traffic Redirector: where the switch sends a container's
 * address.  For an address it keeps two flows (cookie FM_SDN_COOKIE_BASE |
 * the address): IPv4 to it and ARP asking for it go out of one switch port,
 * the IPv4 with the container's MAC as destination.  Installing or moving
 * them is one FLOW_MOD each that replaces an old flow in place:
 * make-before-break when the address is ready at the new port first.  They
 * carry a hard timeout: the switch's own learning takes over after it.  Ports are named
 * by interface (the hosts' --switch-port) and found in OVSDB.
 *
 * One Traffic Redirector per controller, shared by its migrations (a lock
 * serializes them); its switch connection is opened on first use, checked
 * every FM_REDIRECT_WATCH_MS and, when the switch restarted, reopened with
 * every flow still due replayed. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "basic/error.h"

#define FM_REDIRECT_PRIORITY 300
#define FM_REDIRECT_HOLD_S 60
#define FM_REDIRECT_WATCH_MS 1000

typedef struct fm_redirector fm_redirector;

/* sdn: the switch (unix:PATH or tcp:HOST:PORT); ovsdb: its database. */
fm_redirector *fm_redirector_new(const char *sdn, const char *ovsdb);
void fm_redirector_free(fm_redirector *r);
const char *fm_redirector_target(const fm_redirector *r);

/* The OpenFlow port of interface iface (OVSDB). */
int fm_redirector_port(fm_redirector *r, const char *iface, int64_t *ofport, fm_error *err);
/* Sends ip (dotted quad) to iface's port, with eth_dst mac, for hold_s
 * seconds (the flows' hard timeout: the switch's own learning has caught up
 * by then, and no flow outlives an address that moved on; 0: until they are
 * replaced or released); *ms: how long the switch took to confirm (FLOW_MODs
 * + barrier). */
int fm_redirector_point(fm_redirector *r, const char *ip, const char *mac, const char *iface, uint16_t hold_s,
			double *ms, fm_error *err);
/* Removes ip's two flows (the switch's learning forwards it again). */
int fm_redirector_release(fm_redirector *r, const char *ip, fm_error *err);
/* Whether flows of ours for ip are still due on the switch (as far as this
 * process knows: what it installed since it started). */
bool fm_redirector_holds(fm_redirector *r, const char *ip);
/* The switch answers (a barrier), for a pre-flight check. */
int fm_redirector_ready(fm_redirector *r, fm_error *err);
