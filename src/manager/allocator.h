/* Resource Allocator: admits a migration on its destination only if the CPU and
 * memory it needs fit, and holds them (a reservation in the destination's journal)
 * from PLANNING until the migration commits (the container then owns them) or
 * rolls back (released).
 *
 * Fit rule: CPU — the sum of cpu_milli of this host's containers and reservations
 * plus the request must not exceed online CPUs × 1000 × overcommit (1.0 by
 * default; an unlimited container counts as 0).  Memory — the same sum of limits
 * must not exceed MemTotal, and the request must not exceed MemAvailable now.
 */
#pragma once
#include <jansson.h>
#include <stdint.h>

#include "basic/error.h"
#include "store/journal.h"

/* Idempotent for the same mid. */
int fm_alloc_reserve(fm_journal *j, const char *mid, const char *container, int64_t cpu_milli,
		     int64_t memory_bytes, double cpu_overcommit, fm_error *err);
int fm_alloc_release(fm_journal *j, const char *mid);
/* {capacity:{cpu_milli, memory_bytes}, committed:{…}, reserved:{…}} */
json_t *fm_alloc_usage(fm_journal *j, double cpu_overcommit);
