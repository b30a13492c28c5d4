/* Network Manager: what the SDN Controller Interface needs from Open
 * vSwitch's database (RFC 7047 JSON-RPC over its socket, with jansson): each
 * interface's OpenFlow port number and MAC address. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "basic/error.h"

#define FM_OVSDB_REPLY_MAX (4 << 20)

typedef struct fm_ovs_port {
	char name[64];
	int64_t ofport;          /* -1: not (yet) attached */
	char mac[18];            /* mac_in_use, "" if none */
} fm_ovs_port;

/* db: "unix:PATH" (ovsdb-server --remote=punix:PATH) or "HOST:PORT".  *out
 * is malloc'ed.  Bounded by timeout_ms; a reply that is an error, malformed or
 * larger than FM_OVSDB_REPLY_MAX is an error that says so. */
int fm_ovsdb_ports(const char *db, int timeout_ms, fm_ovs_port **out, size_t *n, fm_error *err);
/* The port of one interface; -ENOENT if the switch has none by that name. */
int fm_ovsdb_port(const char *db, const char *iface, int timeout_ms, fm_ovs_port *out, fm_error *err);
