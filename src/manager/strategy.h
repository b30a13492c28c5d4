/* Migration Strategy Selector: turns the requested strategy into the one this
 * migration will use, checking what the kernels and CRIUs of both hosts support,
 * and says why. */
#pragma once
#include <jansson.h>
#include <stdint.h>

#include "basic/error.h"
#include "manager/fsm.h"

/* What the selector knows about a migration, measured in PLANNING. */
typedef struct fm_strategy_inputs {
	json_t *src_caps;            /* fm_ckpt_capabilities() of the source */
	uint64_t memory_bytes;       /* the container's resident memory (0 = unknown) */
	uint64_t touched_bytes;      /* memory it touched in touched_interval_ms (0 = not measured) */
	int touched_interval_ms;
	double link_bps;             /* source -> destination (0 = unknown) */
	const char *link_origin;     /* where link_bps comes from, for the log */
} fm_strategy_inputs;

/* Below this estimated memory transfer time a cold move's downtime is about as
 * short as post-copy's freeze: LIVE_MIGRATION then takes COLD_MIGRATION,
 * which has no pages in flight to lose. */
#define FM_COLD_ENOUGH_MS 300

/* PRE_COPY and HYBRID stop rules (pre-dump rounds while the container runs):
 * at most FM_PRECOPY_MAX_ROUNDS rounds; converged once a round sends fewer than
 * FM_PRECOPY_MIN_PAGES pages; not converging when a round sends more than
 * FM_PRECOPY_MAX_GROWTH times the previous one (unless it is down to the
 * working set, FM_PRECOPY_PLATEAU).  Not converging: PRE_COPY makes
 * its final dump anyway, HYBRID switches to post-copy, and with auto-converge
 * the container's CPU is first limited, step by step, to these percentages. */
#define FM_PRECOPY_MAX_ROUNDS 6
#define FM_PRECOPY_MIN_PAGES 1024
#define FM_PRECOPY_MAX_GROWTH 0.8
/* A round that stops shrinking at no more than this share of the first one has
 * reached the working set: converged (final dump), not a reason to throttle or
 * to switch to post-copy. */
#define FM_PRECOPY_PLATEAU 0.25
#define FM_AUTOCONVERGE_STEPS { 50, 25, 10 }

/* In PLANNING.  On success *chosen is set and reason holds what was measured
 * and why this strategy, for the log. */
int fm_strategy_select(fm_strategy requested, const fm_strategy_inputs *in, fm_strategy *chosen, char *reason,
		       size_t reason_len, fm_error *err);
/* Does a host with these capabilities restore lazily (userfaultfd, pipes for
 * CRIU's page server)?  POST_COPY and HYBRID need it on both; diskless
 * COLD_MIGRATION uses it where both have it (its restore then overlaps the
 * transfer). */
bool fm_strategy_lazy_ok(json_t *caps);
/* In PREPARATION's pre-flight: can the host with these capabilities play its part
 * of `s`?  role is "source" or "destination", for the message. */
int fm_strategy_host_ready(fm_strategy s, json_t *caps, const char *role, const char *host, fm_error *err);
