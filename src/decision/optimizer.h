/* Decision Engine, Resource Optimizer: where a container should go.
 *
 * A host is judged by its utilisation, the larger of its CPU share (cores its
 * containers use over its cores) and its memory share: lower is better.  A
 * destination is feasible when its CPU architecture is the container's, it is
 * not cordoned, the container's memory fits under FM_PLACE_MEM_MAX of its
 * memory, and its root filesystem fits the free disk (when known).  Among
 * feasible hosts the one with the lowest utilisation after the move wins;
 * equal ones go to the faster link (the move's cost), then the first.
 *
 * For several containers fm_place_greedy() takes the largest first, each to
 * the host that keeps the highest utilisation lowest; fm_place_exhaustive()
 * tries every assignment (small cases: the oracle the greedy is measured
 * against). */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#define FM_PLACE_MEM_MAX 0.9
#define FM_PLACE_EXHAUSTIVE_MAX 1000000   /* assignments tried at most */

typedef struct fm_place_host {
	const char *name;
	const char *arch;        /* "x86_64"; NULL or "": unknown, any */
	bool cordoned;
	double cpu_cap;          /* cores */
	double cpu_load;         /* cores its containers use (forecast) */
	double mem_cap, mem_load;  /* bytes */
	double disk_free;        /* bytes; < 0: unknown */
	double link_bps;         /* from the container's host; 0: unknown */
} fm_place_host;

typedef struct fm_place_item {
	const char *name;
	const char *arch;
	double cpu;              /* cores */
	double mem;              /* bytes */
	double disk;             /* bytes of its writable layer */
} fm_place_item;

/* Utilisation of h with add_cpu cores and add_mem bytes more (may be negative). */
double fm_place_util(const fm_place_host *h, double add_cpu, double add_mem);
/* Can it take the item?  why (when not) says what is missing. */
bool fm_place_feasible(const fm_place_item *it, const fm_place_host *h, char *why, size_t len);
/* Best destination for it, leaving host `from`; -1 when none is feasible
 * (why names each host's reason).  *util_after: the destination's. */
int fm_place_best(const fm_place_item *it, const fm_place_host *h, size_t n, size_t from, double *util_after, char *why,
		  size_t len);

/* The highest utilisation over all hosts once items are where assign says
 * (assign[i]: host index); INFINITY when an assignment is infeasible.  The
 * hosts' loads do not include the items. */
double fm_place_objective(const fm_place_item *it, size_t k, const fm_place_host *h, size_t n, const int *assign);
double fm_place_greedy(const fm_place_item *it, size_t k, const fm_place_host *h, size_t n, int *assign);
/* -1 (and INFINITY) when n^k exceeds FM_PLACE_EXHAUSTIVE_MAX. */
double fm_place_exhaustive(const fm_place_item *it, size_t k, const fm_place_host *h, size_t n, int *assign);
