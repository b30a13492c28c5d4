/* Performance Metrics Collector (host part): what this host has, read from procfs.
 * The Resource Allocator admits migrations against these real figures. */
#pragma once
#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct fm_host_metrics {
	int cpus;                 /* online CPUs */
	uint64_t mem_total;       /* bytes, MemTotal */
	uint64_t mem_available;   /* bytes, MemAvailable */
	double load1;             /* 1-minute load average */
} fm_host_metrics;

int fm_metrics_host_read(fm_host_metrics *m);
json_t *fm_metrics_host_json(const fm_host_metrics *m);
/* Resident set size of this process in KiB (VmRSS), for self-reporting. */
int64_t fm_metrics_self_rss_kib(void);

/* Working set of a group of processes (a container): clears the kernel's
 * referenced bits of their pages (/proc/PID/clear_refs = 1), lets them run for
 * interval_ms, then sums Rss and Referenced of /proc/PID/smaps_rollup.  The
 * referenced bytes are the memory they touched (read or written) in the
 * interval: an upper bound of what they dirty, measurable on kernels without
 * soft-dirty tracking.  The interval is a real measurement window. */
typedef struct fm_working_set {
	uint64_t rss;          /* bytes resident */
	uint64_t referenced;   /* bytes touched during the interval */
	int interval_ms;
	int processes;
} fm_working_set;
int fm_metrics_working_set(const pid_t *pids, size_t n, int interval_ms, fm_working_set *ws);
