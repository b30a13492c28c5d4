/* Delta Transfer, post-copy: the page prefetcher, which is also the restored
 * container's userfaultfd handler (in place of `criu lazy-pages`).
 *
 * A lazy restore hands every restored process's userfaultfd to whoever listens
 * at lazy-pages.socket in the restore's work directory; that is us.  The
 * prefetcher reads the dump's pagemap images to learn every lazy range,
 * connects to the source's page server (through the egress relay) at once
 * and, once released (after the restore: on two cores, pages streaming at line
 * rate slowed the restore down, and with it the frozen time), keeps a window
 * of PS_IOV_GET requests in flight, in address order; the window follows the
 * arrival rate (FM_PREFETCH_WINDOW).  An answer is read into one receive buffer
 * (faulted in once) and its pages are copied into every process that lacks
 * them (UFFDIO_COPY); while a fault waits, as their bytes arrive.  A page a
 * copy cannot place yet waits in a cache.
 * A page fault on a page not asked for yet goes to the source at once with a
 * readahead behind it, and the background order jumps to just after it (an
 * application walking its memory finds the next pages on their way); a fault
 * on a page never dumped (never touched) gets a zero page.
 *
 * It follows what the processes do meanwhile, as the kernel reports it: a
 * fork (the child lacks what its parent lacked: pages already dropped from
 * the cache are fetched again), a remap (the pages move), an unmap or
 * MADV_DONTNEED (those pages are not wanted any more).  When every process
 * has every page and the restore is over, it closes the transfer (the source's
 * dump then ends) and the userfaultfds.
 *
 * Compared with `criu lazy-pages` behind it (session 11): no second process
 * to start inside the freeze, no page copied through a socket twice, no core
 * spinning while a request is out.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "basic/error.h"

/* Requested and not yet arrived, at most (the window).  Every byte asked for
 * and not arrived waits somewhere on the way (CRIU's socket, the relays' socket
 * buffers, the link's queue), and a page fault's request is answered only after
 * all of it: so the window follows the measured arrival rate and holds
 * FM_PREFETCH_QUEUE_MS of it, between these bounds.  At 1 Gbit/s that is 625
 * KB (deep enough for the relays' round trip: pages still at 880-910 Mbit/s);
 * on a 20 Mbit/s edge link the minimum, 13 ms (a fixed 1 MiB was 420 ms there:
 * every fault, and every packet of the container's own clients sharing the
 * link, waited that long).  5 ms, not 10: Redis (1 GiB, under write load)
 * faults page after page once restored, each behind the queue: its clients'
 * first answer came 525 ms after the freeze with 10 ms, 395 ms with 5 (3 ms:
 * 352, but pages at 750-890 Mbit/s). */
#define FM_PREFETCH_WINDOW_MIN (32 * 1024)
#define FM_PREFETCH_WINDOW (1024 * 1024)
#define FM_PREFETCH_QUEUE_MS 5
/* Right after the restore an application catches up with what queued while
 * it was frozen (its clients' requests), faulting page after page, and each
 * fault waits behind the whole window: then its faults are its clients'
 * downtime.  So for FM_PREFETCH_SETTLE_MS after the release, while faults wait
 * (one did within FM_PREFETCH_FAULT_RECENT_US), the window holds no more than
 * FM_PREFETCH_FAULT_QUEUE_MS of the highest rate seen.  Redis, 1 GiB under
 * write load, 6 moves each: its clients' first answer came ~140 ms after its
 * restore, now ~50.  All the time it would halve the page rate under such a
 * load (the relays' round trip is longer than 1-2 ms there): measured. */
#define FM_PREFETCH_SETTLE_MS 300
#define FM_PREFETCH_FAULT_RECENT_US 20000
#define FM_PREFETCH_FAULT_QUEUE_MS 1
/* The arrival rate: bytes over periods of this length while requests are out,
 * the largest of the last FM_PREFETCH_RATE_SAMPLES periods. */
#define FM_PREFETCH_RATE_SAMPLE_US 20000
#define FM_PREFETCH_RATE_SAMPLES 8
/* One background request (CRIU splices it from its page pipe): half the window,
 * at most this. */
#define FM_PREFETCH_CHUNK_PAGES 128
/* ... and for processes held until every page is here (COLD's restore,
 * fm_prefetch_release_paused), no fault waits behind a request: up to this
 * many pages each (4 MiB), two in flight. */
#define FM_PREFETCH_PAUSED_CHUNK_PAGES 1024
/* A fault's request brings up to this many pages from the faulting one on (no
 * more than a chunk: on a slow link a large readahead is a long wait). */
#define FM_PREFETCH_READAHEAD_PAGES 64
/* Pages asked for and not yet copied, at most. */
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
	uint64_t served_bytes;     /* copied into the restored processes */
	uint64_t faults;           /* page faults the processes raised */
	uint64_t zero_pages;       /* ... on pages never dumped (zero-filled) */
	uint64_t misses;           /* ... that had to wait for the network */
	double wait_max_ms;        /* the longest such wait */
	double wait_sum_ms;
	double all_here_ms;        /* from the release until every lazy page had arrived; 0 = not yet */
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
/* The window now: fm_prefetch_window(rate_Bps), or less while the application
 * settles (above); peak_Bps is the highest rate seen, the times are since the
 * release and since the last fault that waited (negative: none yet). */
uint64_t fm_prefetch_window_now(double rate_Bps, double peak_Bps, int64_t since_release_us, int64_t since_fault_us);
uint64_t fm_prefetch_chunk_pages(uint64_t window);
uint64_t fm_prefetch_readahead_pages(uint64_t window);

typedef struct fm_prefetch fm_prefetch;

/* Lists the lazy ranges of images_dir, connects to the page server (the egress
 * relay) at up_host:up_port, and listens at restore_work/lazy-pages.socket for
 * the restore, whose processes' faults it serves at once; the background order
 * starts at fm_prefetch_release. */
int fm_prefetch_start(const char *images_dir, const char *restore_work, const char *up_host, int up_port,
		      int io_timeout_ms, fm_prefetch **out, fm_error *err);
/* Readable (an eventfd) once it has stopped: every page copied, or failed. */
int fm_prefetch_done_fd(const fm_prefetch *p);
/* Starts the background order (all_here_ms counts from here). */
void fm_prefetch_release(fm_prefetch *p);
/* The same for processes that do not run until every page is here (COLD's
 * restore, held before its tasks resume): no fault waits behind the window,
 * so requests are FM_PREFETCH_PAUSED_CHUNK_PAGES, two in flight, whatever
 * the link (fewer requests and answer headers on the wire).  A release after
 * it: the processes run. */
void fm_prefetch_release_paused(fm_prefetch *p);
/* Readable (an eventfd) once every lazy page has arrived (all_here_ms set), or
 * it stopped (fm_prefetch_failed says whether it failed). */
int fm_prefetch_here_fd(const fm_prefetch *p);
/* Readable (an eventfd) once it has failed (fm_prefetch_failed says why). */
int fm_prefetch_fail_fd(const fm_prefetch *p);
/* The failure that stopped it (0 while none). */
int fm_prefetch_failed(fm_prefetch *p, fm_error *err);
void fm_prefetch_get_stats(fm_prefetch *p, fm_prefetch_stats *st);
/* Cuts both connections, joins the thread, frees the cache. */
void fm_prefetch_free(fm_prefetch *p);
