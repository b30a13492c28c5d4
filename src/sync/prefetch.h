/* Delta Transfer, post-copy page prefetcher: moves the lazy pages at line rate.
 *
 * CRIU's `criu lazy-pages` fetches the memory of a lazily restored container
 * from the source's page server one request at a time: 64 KiB growing by 64 KiB
 * per request, back to 64 KiB at every page fault, each request a round trip
 * across both relays.  That pulls pages at half the link rate at best, and an
 * application rewriting its memory stalls on faults for all that time.
 *
 * The prefetcher sits between lazy-pages and the egress page relay on the
 * destination and speaks CRIU's page-server protocol to both:
 *
 *   criu lazy-pages --loopback--> prefetcher --loopback--> egress relay ==> source
 *
 * It reads the dump's pagemap images to learn every lazy range, connects to the
 * source at once and, once released (after the restore: on two cores, pages
 * streaming at line rate slowed the restore down, and with it the frozen time),
 * keeps a window of PS_IOV_GET requests in flight, in address order, into a
 * local cache; the window follows the arrival rate (FM_PREFETCH_WINDOW).  It
 * answers lazy-pages' requests from that cache; a request for a page not here yet
 * goes to the source at once with a readahead behind it, and the background
 * order jumps to just after it (an application walking its memory finds the
 * next pages on their way).  A page handed to lazy-pages leaves the cache; the
 * cache (what arrived and was not asked for yet) is bounded.
 *
 * Requests for anything outside the lazy ranges are passed through unchanged
 * (CRIU's server kills itself when asked for a page it lacks: the prefetcher
 * itself only asks for pages the pagemaps list as lazy).
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "basic/error.h"

/* Requested and not yet arrived, at most (the window).  Every byte asked for
 * and not arrived waits somewhere on the way (CRIU's socket, the relays' socket
 * buffers, the link's queue), and a page fault's request is answered only after
 * all of it: so the window follows the measured arrival rate and holds
 * FM_PREFETCH_QUEUE_MS of it, between these bounds.  At 1 Gbit/s that is the
 * maximum (deep enough for the relays' round trip); on a 20 Mbit/s edge link
 * the minimum, 13 ms (a fixed 1 MiB was 420 ms there: every fault, and every
 * packet of the container's own clients sharing the link, waited that long). */
#define FM_PREFETCH_WINDOW_MIN (32 * 1024)
#define FM_PREFETCH_WINDOW (1024 * 1024)
#define FM_PREFETCH_QUEUE_MS 10
/* The arrival rate: bytes over periods of this length while requests are out,
 * the largest of the last FM_PREFETCH_RATE_SAMPLES periods. */
#define FM_PREFETCH_RATE_SAMPLE_US 20000
#define FM_PREFETCH_RATE_SAMPLES 8
/* One background request (CRIU splices it from its page pipe): half the window,
 * at most this; a request of lazy-pages' own for pages nobody asked yet asks
 * for one such chunk at a time. */
#define FM_PREFETCH_CHUNK_PAGES 128
/* A fault's request brings up to this many pages from the faulting one on (no
 * more than a chunk: on a slow link a large readahead is a long wait). */
#define FM_PREFETCH_READAHEAD_PAGES 64
/* Arrived pages lazy-pages has not asked for yet, at most. */
#define FM_PREFETCH_CACHE_MAX (128ull << 20)

/* A lazy range from the pagemap of process pid (CRIU's dst_id is the pid). */
typedef struct fm_lazy_range {
	uint64_t pid, vaddr, nr_pages;
} fm_lazy_range;

/* Reads every pagemap-<pid>.img of images_dir and lists the ranges flagged lazy,
 * sorted by pid and address.  *out is malloc'd (NULL when there are none). */
int fm_pagemap_lazy_ranges(const char *images_dir, fm_lazy_range **out, size_t *n, fm_error *err);

typedef struct fm_prefetch_stats {
	uint64_t lazy_bytes;       /* lazy memory the pagemaps list */
	uint64_t fetched_bytes;    /* arrived from the source */
	uint64_t served_bytes;     /* handed to lazy-pages */
	uint64_t served_cached;    /* ... of which had arrived before it asked */
	uint64_t passthrough;      /* requests outside the lazy ranges */
	uint32_t requests;         /* lazy-pages' requests */
	uint32_t misses;           /* ... that had to wait for the network */
	double wait_max_ms;        /* the longest such wait */
	double wait_sum_ms;
	double all_here_ms;        /* from the start until every lazy page had arrived; 0 = not yet */
	double link_bps;           /* fetched_bytes over that time */
	uint64_t window_min, window_max; /* the window's range over the transfer, bytes */
} fm_prefetch_stats;

/* The window's measure of the arrival rate (fed with the times, so that tests
 * can drive it). */
typedef struct fm_prefetch_pace {
	double samples[FM_PREFETCH_RATE_SAMPLES];   /* bytes per second */
	unsigned nsamples, next;
	int64_t since_us;        /* start of the period being measured; -1: nothing asked */
	uint64_t bytes;          /* arrived in it */
} fm_prefetch_pace;

void fm_prefetch_pace_init(fm_prefetch_pace *pc);
/* A request went out while no period runs: a period starts. */
void fm_prefetch_pace_busy(fm_prefetch_pace *pc, int64_t now_us);
/* Nothing is outstanding and nothing more is to be asked: the period ends
 * unmeasured (an idle pipe says nothing about the link). */
void fm_prefetch_pace_idle(fm_prefetch_pace *pc);
void fm_prefetch_pace_arrived(fm_prefetch_pace *pc, uint64_t bytes, int64_t now_us);
/* The arrival rate in bytes per second (0: not measured yet). */
double fm_prefetch_pace_rate(const fm_prefetch_pace *pc);
/* The window for that rate, in bytes; a background chunk and a fault's
 * readahead for that window, in pages. */
uint64_t fm_prefetch_window(double rate_Bps);
uint64_t fm_prefetch_chunk_pages(uint64_t window);
uint64_t fm_prefetch_readahead_pages(uint64_t window);

typedef struct fm_prefetch fm_prefetch;

/* Lists the lazy ranges of images_dir, connects to the page server (the egress
 * relay) at up_host:up_port, and listens on 127.0.0.1 (any port) for
 * lazy-pages' single connection, whose requests it serves at once; the
 * background order starts at fm_prefetch_release. */
int fm_prefetch_start(const char *images_dir, const char *up_host, int up_port, int io_timeout_ms,
		      fm_prefetch **out, fm_error *err);
int fm_prefetch_port(const fm_prefetch *p);
/* Starts the background order (all_here_ms counts from here). */
void fm_prefetch_release(fm_prefetch *p);
/* The failure that stopped it (0 while none). */
int fm_prefetch_failed(fm_prefetch *p, fm_error *err);
void fm_prefetch_get_stats(fm_prefetch *p, fm_prefetch_stats *st);
/* Cuts both connections, joins the thread, frees the cache. */
void fm_prefetch_free(fm_prefetch *p);
