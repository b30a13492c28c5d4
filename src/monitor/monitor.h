/* Resource Monitor: samples this host and its containers every
 * FM_MONITOR_INTERVAL_MS (monitor/collector.h), keeps sliding windows of
 * what the samples mean (monitor/analyzer.h), and shows them: as JSON for
 * the API and the policies' CONTEXT, and as Prometheus metrics.
 *
 * What it samples comes from its source: the containers (their cgroup
 * directories and init pid, from the Container Manager) and the inter-host
 * link's capacity (stated, measured by a migration, or the interface's
 * speed).  The daemon wires those; tests can hand in fakes. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "monitor/analyzer.h"
#include "monitor/collector.h"

#define FM_MONITOR_INTERVAL_MS 1000
#define FM_MONITOR_WINDOW 60      /* samples: a minute */

typedef struct fm_monitor_target {
	char name[64];
	fm_cgroup_dirs dirs;
	pid_t pid;                /* init: its namespace's net/dev; 0 = unknown */
} fm_monitor_target;

typedef struct fm_monitor_source {
	/* the containers to sample now (*out malloc'ed, the caller frees) */
	int (*targets)(void *opaque, fm_monitor_target **out, size_t *n);
	/* the uplink's capacity in bits/s and where the figure comes from; 0 if
	 * unknown (no congestion estimate from utilisation then) */
	double (*link_capacity)(void *opaque, const char **origin);
	void *opaque;
} fm_monitor_source;

typedef struct fm_monitor fm_monitor;

/* procfs: "/proc"; uplink: the interface that carries traffic to the other
 * hosts (NULL: none known). */
fm_monitor *fm_monitor_new(const char *procfs, const char *uplink, const fm_monitor_source *src);
/* Samples in a thread of its own until fm_monitor_free(). */
int fm_monitor_start(fm_monitor *m);
void fm_monitor_free(fm_monitor *m);
/* One sample now (what the thread does each interval). */
void fm_monitor_tick(fm_monitor *m);

/* {"cpu_utilization_percent": {last, mean, max, min, trend_per_min, samples}, ...}:
 * the host's figures (docs/api.md, GET /v1/info "monitor"). */
json_t *fm_monitor_host_json(fm_monitor *m);
/* The container's figures, or NULL when it was not sampled (yet).  With
 * series, also every point of the windows: "series": {"cpu_percent":
 * {"t_ms": [...], "v": [...]}, "memory_bytes": {...}} (t_ms: monotonic). */
json_t *fm_monitor_container_json(fm_monitor *m, const char *name, bool series);
/* The container's series (oldest first, at most max points, one per
 * interval): FM_SERIES_CPU in percent of one core, FM_SERIES_MEM in bytes.
 * 0 when it has none. */
typedef enum { FM_SERIES_CPU, FM_SERIES_MEM } fm_series_kind;
size_t fm_monitor_container_series(fm_monitor *m, const char *name, fm_series_kind kind, double *v, size_t max);
/* Every figure in the Prometheus text exposition format (0.0.4), appended to
 * a malloc'ed string. */
char *fm_monitor_prometheus(fm_monitor *m);

/* Prometheus text helpers, for other metrics of the daemon. */
void fm_prom_header(char **buf, const char *name, const char *type, const char *help);
/* labels: "k=v" pairs NULL-terminated, values escaped here. */
void fm_prom_sample(char **buf, const char *name, double v, const char *const *labels);
