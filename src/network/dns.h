/* Network Manager, DNS Manager: a container's DNS record on a real
 * authoritative server, changed by RFC 2136 dynamic updates signed with TSIG
 * (libldns, loaded only here: network/ldns_dl.h; tested against Knot and BIND 9).
 *
 * The key comes from a file, never from a command line: one line
 * "ALGORITHM:NAME:SECRET" (as `nsupdate -y` takes it; e.g.
 * hmac-sha256:mig-key:BASE64), owned by root and readable by nobody else
 * (mode 0600 or 0400), else it is refused.  Every exchange is bounded by
 * the timeout; the server's answer must carry a valid signature. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "basic/error.h"

#define FM_DNS_TIMEOUT_MS 2000

typedef struct fm_dns {
	char server[64];         /* IPv4 or IPv6 address */
	uint16_t port;
	char keyname[256], algorithm[64], secret[256];
	int timeout_ms;
} fm_dns;

/* server: "ADDR" or "ADDR:PORT" ("[v6]:PORT"); port 53 by default.  Loads
 * libldns (network/ldns_dl.h), kept loaded from then on. */
int fm_dns_open(const char *server, const char *keyfile, int timeout_ms, fm_dns *d, fm_error *err);
/* The A record of name (unsigned query): its address and TTL; -ENOENT if none. */
int fm_dns_lookup(const fm_dns *d, const char *name, char *ip, size_t iplen, uint32_t *ttl, fm_error *err);
/* Replaces name's A records in zone by ip with ttl, signed; *ms: the
 * update's round trip. */
int fm_dns_set(const fm_dns *d, const char *zone, const char *name, const char *ip, uint32_t ttl, double *ms,
	       fm_error *err);
