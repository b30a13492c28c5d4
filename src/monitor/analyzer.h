/* Resource Utilization Analyzer: sliding windows over the collector's
 * figures, their trends, and the thresholds that say a host is overloaded or
 * a link congested.  Pure computation on samples it is given: no I/O. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A window of the last FM_WINDOW_MAX (time, value) points, oldest first. */
#define FM_WINDOW_MAX 120

typedef struct fm_window {
	int64_t t_us[FM_WINDOW_MAX];
	double v[FM_WINDOW_MAX];
	size_t head, n;     /* ring: the oldest is at head */
	size_t cap;         /* points kept (<= FM_WINDOW_MAX; 0 = FM_WINDOW_MAX) */
} fm_window;

typedef struct fm_window_stats {
	size_t n;
	double last, mean, min, max;
	double slope_per_min;   /* least-squares trend, units per minute (0 with < 3 points) */
	double span_s;          /* time the window covers */
} fm_window_stats;

/* GSL's default on an error is abort(): every user of GSL calls this first
 * (once per process; errors are then only return codes). */
void fm_gsl_quiet(void);

void fm_window_push(fm_window *w, int64_t t_us, double v);
/* i-th point, 0 = oldest. */
void fm_window_at(const fm_window *w, size_t i, int64_t *t_us, double *v);
void fm_window_stats_get(const fm_window *w, fm_window_stats *s);
/* True when every point of the last `seconds` is above threshold and the
 * window covers at least that long: sustained, not a spike. */
bool fm_window_sustained_above(const fm_window *w, double threshold, double seconds);

/* Network congestion probability of a link, 0..1 (the rule in
 * docs/architecture.md, Resource Monitor):
 *   utilisation part: rho^(FM_CONGESTION_QUEUE + 1), the probability that a
 *   packet finds at least FM_CONGESTION_QUEUE packets queued ahead of it at a
 *   link used at rho (M/M/1); unknown capacity (rho < 0) gives no estimate;
 *   loss part: (drops + TCP retransmissions) / packets sent, scaled so that
 *   FM_CONGESTION_LOSS_FULL of them means certain congestion.
 * The larger of the two. */
#define FM_CONGESTION_QUEUE 4
#define FM_CONGESTION_LOSS_FULL 0.02
double fm_congestion_probability(double rho, double loss_ratio);

/* Thresholds that make a host "overloaded" for the Decision Engine:
 * CPU busy above FM_OVERLOAD_CPU_PCT, or memory in use above
 * FM_OVERLOAD_MEM_PCT, sustained over FM_OVERLOAD_SUSTAIN_S. */
#define FM_OVERLOAD_CPU_PCT 85.0
#define FM_OVERLOAD_MEM_PCT 90.0
#define FM_OVERLOAD_SUSTAIN_S 30.0
