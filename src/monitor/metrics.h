/* Performance Metrics Collector (host part): what this host has, read from procfs.
 * The Resource Allocator admits migrations against these real figures. */
#pragma once
#include <jansson.h>
#include <stdint.h>

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
