/* The migration lifecycle: the 8-state FSM of the paper (MISSION.md), as a table.
 *
 *   1 PENDING ──▶ 2 PLANNING ──▶ 3 PREPARATION ──▶ 4 EXECUTION ──▶ 5 VERIFICATION ──▶ 6 COMPLETED
 *       │              │                │                │                 │
 *       └──────────────┴────────────────┴────────────────┴─────────────────┴──▶ 8 FAILED ──▶ 7 ROLLBACK ──▶ 8 FAILED
 *
 * FAILED is entered on the first error (the reason is recorded), ROLLBACK undoes
 * what was done, and FAILED again is the final state.  A migration's `resolved`
 * flag tells the two FAILEDs apart: a migration is finished when it is COMPLETED,
 * or FAILED and resolved.
 *
 * The point of no return is inside VERIFICATION: once the destination is verified
 * and the controller has journaled "commit", the source copy is deleted and the
 * migration can only go forward.
 */
#pragma once
#include <stdbool.h>

typedef enum fm_mstate {
	FM_MS_PENDING = 1,
	FM_MS_PLANNING = 2,
	FM_MS_PREPARATION = 3,
	FM_MS_EXECUTION = 4,
	FM_MS_VERIFICATION = 5,
	FM_MS_COMPLETED = 6,
	FM_MS_ROLLBACK = 7,
	FM_MS_FAILED = 8,
	_FM_MS_MAX,
	_FM_MS_INVALID = -1,
} fm_mstate;

typedef enum fm_strategy {
	FM_STRATEGY_COLD,      /* stop, copy, restore */
	FM_STRATEGY_PRE_COPY,  /* iterative memory copy while running, then a short stop */
	FM_STRATEGY_POST_COPY, /* resume at once on the destination, pages on demand */
	FM_STRATEGY_HYBRID,    /* pre-copy rounds, then post-copy */
	FM_STRATEGY_LIVE,      /* let the Strategy Selector choose a live strategy */
	_FM_STRATEGY_MAX,
	_FM_STRATEGY_INVALID = -1,
} fm_strategy;

const char *fm_mstate_name(fm_mstate s);
fm_mstate fm_mstate_from_name(const char *s);
/* Is from -> to an edge of the FSM? */
bool fm_fsm_allowed(fm_mstate from, fm_mstate to);
/* The state a failure in `s` leads to (FAILED for every working state). */
fm_mstate fm_fsm_failure_target(fm_mstate s);
/* The state success in `s` leads to, or _FM_MS_INVALID for terminal states. */
fm_mstate fm_fsm_success_target(fm_mstate s);
/* Path label of the paper's Figure 4 for a failure in s ("1F" … "5F"), or NULL. */
const char *fm_fsm_failure_path(fm_mstate s);

const char *fm_strategy_name(fm_strategy s);
/* Accepts COLD_MIGRATION, cold, cold-migration, post-copy, live … (any case). */
fm_strategy fm_strategy_from_name(const char *s);
