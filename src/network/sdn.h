/* Network Manager, SDN Controller Interface: programs an OpenFlow 1.3 switch
 * (Open vSwitch) directly (network/openflow.h).
 *
 * It connects to the bridge's management socket ("unix:PATH", e.g.
 * <rundir>/BRIDGE.mgmt: a passive connection that leaves the switch's own
 * NORMAL flow and any other controller alone) or to a passive TCP listener
 * ("tcp:HOST:PORT"), exchanges HELLO and FEATURES, and sends FLOW_MODs.
 * FlexiMigrate's flows carry cookies in its own space (FM_SDN_COOKIE_BASE
 * under FM_SDN_COOKIE_MASK): it deletes only by that cookie, so another
 * controller's flows (os-ken's, say) are never touched.  Every wait is
 * bounded; an OFPT_ERROR in answer to our message becomes an error naming
 * the OpenFlow type and code; a switch that sends garbage is disconnected
 * with a clear error.  The flows it installed are remembered: after
 * ovs-vswitchd restarts (its flows gone), fm_sdn_replay() reconnects and
 * installs them again. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "basic/error.h"
#include "network/openflow.h"

#define FM_SDN_COOKIE_BASE 0x464d000000000000ull   /* "FM" */
#define FM_SDN_COOKIE_MASK 0xffff000000000000ull
#define FM_SDN_TIMEOUT_MS 3000
#define FM_SDN_MAX_FLOWS 1024

typedef struct fm_sdn fm_sdn;

int fm_sdn_connect(const char *target, int timeout_ms, fm_sdn **out, fm_error *err);
void fm_sdn_close(fm_sdn *s);
uint64_t fm_sdn_datapath_id(const fm_sdn *s);

/* Sends the FLOW_MOD (its cookie must be in our space, else -EINVAL) and
 * waits for a BARRIER: the switch has taken it, or refused it (-EREMOTEIO
 * with the switch's ERROR named).  ADD/MODIFY are remembered for replay,
 * DELETEs forget what they cover (one flow per cookie); a flow's hard
 * timeout is honoured: it is replayed with what is left of it, or not at
 * all once it has passed. */
int fm_sdn_flow(fm_sdn *s, const fm_of_flow *f, fm_error *err);
/* Deletes every flow whose cookie matches (under mask within our space). */
int fm_sdn_delete_cookie(fm_sdn *s, uint64_t cookie, uint64_t mask, fm_error *err);
/* Whether a remembered flow whose cookie matches (under mask) is still due. */
bool fm_sdn_holds(const fm_sdn *s, uint64_t cookie, uint64_t mask);
/* Reconnects (the switch restarted) and installs the remembered flows again. */
int fm_sdn_replay(fm_sdn *s, fm_error *err);
/* Round trip: answers echo requests meanwhile; -ETIMEDOUT / -ECONNRESET. */
int fm_sdn_barrier(fm_sdn *s, fm_error *err);
