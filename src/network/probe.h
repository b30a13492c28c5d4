/* Network Manager: what a client sees.  The Network Orchestrator's
 * VERIFICATION asks, from a client's network namespace (fleximigrated
 * --probe-netns), whether the container answers at its address (an ICMP
 * echo, or a TCP connection to a port) and what its DNS name answers.  Each
 * probe runs in a thread of its own that enters the namespace (setns changes
 * that thread only). */
#pragma once
#include <stddef.h>

#include "basic/error.h"

struct fm_dns;

/* Until timeout_ms: ICMP echo requests to ip (dotted quad) every 100 ms, or
 * with tcp_port > 0 TCP connections to ip:tcp_port, until one is answered;
 * *ms: the answered one's round trip.  -ETIMEDOUT when none was. */
int fm_probe_reach(const char *netns, const char *ip, int tcp_port, int timeout_ms, double *ms, fm_error *err);
/* fm_dns_lookup of name, made from inside netns. */
int fm_probe_dns(const char *netns, const struct fm_dns *d, const char *name, char *ip, size_t iplen, fm_error *err);
