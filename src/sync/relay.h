/* Delta Transfer, page relay: carries CRIU's page-server traffic between agents.
 *
 * CRIU's page server speaks raw TCP with no authentication, no checksums and no
 * rate control.  So CRIU on both hosts only ever talks to the loopback, and the
 * hop between the hosts is ours:
 *
 *   CRIU (client) --loopback--> egress relay ==== network ====> ingress relay --loopback--> CRIU (server)
 *
 * Diskless COLD: the destination runs `criu page-server` behind an ingress relay,
 * the source's `criu dump --page-server` connects to an egress relay.
 * POST_COPY: the source's lazy dump serves pages behind an ingress relay, the
 * destination's `criu lazy-pages` connects to an egress relay.
 *
 * The network hop starts with HELLO (magic "FMR1", version, the migration's
 * 16-byte token; the ingress side answers "OK" or drops the connection), then
 * each direction is a stream of frames:
 *
 *   frame = wire_len u32 | raw_len u32 (bit 31: zstd) | XXH3-64(raw) u64 | payload
 *
 * so a flipped bit fails the connection (and with it the dump or the restore)
 * instead of restoring a corrupted page.  The compressed frames of a direction
 * are one zstd stream (a 4 KiB answer to a page fault shrinks with what came
 * before it, as the pushed pages do).  Compression (sync/compress.h) and
 * the bandwidth cap apply to what a side sends; the relay measures how fast
 * the link drains (time spent blocked in send) for FM_COMPRESS_AUTO.
 */
#pragma once
#include <stdint.h>

#include "basic/error.h"
#include "sync/compress.h"
#include "sync/transfer.h"

/* The largest frame payload (raw): 16 bytes of header per MiB of pages (per
 * 147 KiB on average with 256 KiB blocks: 0.011 % of a 1 GiB move).  An answer
 * to a fault is sent as soon as it is read, whatever the block. */
#define FM_RELAY_BLOCK (1024 * 1024)

typedef struct fm_relay_opts {
	uint64_t bandwidth_bps;  /* cap on the bits per second this side sends; 0 = none */
	int compress;            /* FM_COMPRESS_OFF, _AUTO or a zstd level 1..19 (always tried) */
	int io_timeout_ms;       /* unacknowledged data on the network hop for this long kills it */
} fm_relay_opts;

#define FM_RELAY_OPTS_INIT { .bandwidth_bps = 0, .compress = FM_COMPRESS_OFF, .io_timeout_ms = 10000 }

typedef struct fm_relay_stats {
	uint64_t wire_tx, wire_rx;   /* bytes on the network hop, headers included */
	uint64_t raw_tx, raw_rx;     /* CRIU's bytes carried each way */
	uint32_t connections;        /* connections relayed so far */
	uint32_t compressed_frames, frames_tx;
	int level;                   /* last zstd level used (0 = none) */
	uint64_t dense_tx;           /* raw bytes of dense units (FM_COMPRESS_DENSE_LEVEL) */
	double link_bps;             /* measured drain rate of the network hop, 0 = unknown */
} fm_relay_stats;

typedef struct fm_relay fm_relay;

/* Listens on bind_host (any port) for agents presenting token and connects each
 * of their connections to target_host:target_port (CRIU's listener). */
int fm_relay_ingress(const char *bind_host, const uint8_t token[FM_XFER_TOKEN_LEN], const char *target_host,
		     int target_port, const fm_relay_opts *opts, fm_relay **out, fm_error *err);
/* Listens on 127.0.0.1 (any port) for CRIU and carries each connection to the
 * ingress relay at remote_host:remote_port. */
int fm_relay_egress(const char *remote_host, int remote_port, const uint8_t token[FM_XFER_TOKEN_LEN],
		    const fm_relay_opts *opts, fm_relay **out, fm_error *err);
/* Carries one connection of CRIU's, given as a Unix socket pair: *criu_sk is
 * CRIU's end, for `--ps-socket` (the caller closes its copy once CRIU has
 * one).  CRIU corks a TCP page-server socket for the whole dump and sends
 * its closing message without a push, so every dump through a TCP relay port
 * ended with a 200 ms wait for the cork timer; a Unix socket has no cork. */
int fm_relay_egress_pair(const char *remote_host, int remote_port, const uint8_t token[FM_XFER_TOKEN_LEN],
			 const fm_relay_opts *opts, int *criu_sk, fm_relay **out, fm_error *err);
/* The port the relay listens on (0: fm_relay_egress_pair's relay listens on none). */
int fm_relay_port(const fm_relay *r);
/* Waits until a connection has been relayed and every connection has ended
 * (CRIU hung up), at most timeout_ms.  0 if all ended cleanly; -ETIMEDOUT, or
 * the first connection's failure (peer unreachable, wrong token, corrupt frame). */
int fm_relay_wait(fm_relay *r, int timeout_ms, fm_error *err);
/* The first failure so far (0 if none), without waiting. */
int fm_relay_failed(fm_relay *r, fm_error *err);
void fm_relay_get_stats(fm_relay *r, fm_relay_stats *st);
/* Stops accepting, cuts every connection, joins the threads. */
void fm_relay_free(fm_relay *r);

