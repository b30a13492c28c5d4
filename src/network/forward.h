/* Network Manager, Traffic Redirector's fallback on the source host: after a
 * move that changed a container's address (migrate --new-ip), this host
 * forwards what clients still send to the old address to the new one, for
 * as long as their DNS answers may point at it (runtime/net.h,
 * fm_net_forward: a stand-in with the container's MAC and old address on
 * the bridge, nftables DNAT + masquerade).  Each forward is journaled (table forwards) with its end; a
 * watch removes it then, also after a restart of the daemon.  IPv4
 * forwarding (net.ipv4.ip_forward) is switched on for the first forward and
 * off after the last, when it was off before. */
#pragma once
#include "basic/error.h"

#define FM_FORWARD_WATCH_MS 1000
#define FM_FORWARD_MAX_S 86400
#define FM_FORWARD_PREPARED_MAX_S 3600

struct fm_runtime;
struct fm_journal;
typedef struct fm_forwarder fm_forwarder;

/* Takes up the forwards a previous run journaled (ended ones are removed)
 * and starts the watch. */
fm_forwarder *fm_forwarder_new(struct fm_runtime *rt, struct fm_journal *j);
/* Stops the watch; the forwards stay, journaled, for the next start. */
void fm_forwarder_free(fm_forwarder *f);
/* In PREPARATION, while the container still runs here: everything for
 * forwarding old_ip to new_ip (addresses, a /prefix ignored), standing in
 * for the container (its MAC mac) on the bridge, but the stand-in's port,
 * for migration mid.  Never engaged, it ends after FM_FORWARD_PREPARED_MAX_S
 * (or with the rollback). */
int fm_forwarder_prepare(fm_forwarder *f, const char *mid, const char *old_ip, const char *new_ip, const char *mac,
			 fm_error *err);
/* At the switchover (the container's own port down): the stand-in's port
 * up, for seconds (1..FM_FORWARD_MAX_S).  Microseconds. */
int fm_forwarder_engage(fm_forwarder *f, const char *mid, int seconds, fm_error *err);
/* Ends mid's forwards now (its rollback); 0 when it had none. */
int fm_forwarder_drop(fm_forwarder *f, const char *mid, fm_error *err);
