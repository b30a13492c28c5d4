/* The Resource Monitor in the daemon: what it samples (this host's running
 * containers, the uplink to the other hosts and its capacity), and its
 * Prometheus endpoint. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "basic/log.h"
#include "basic/util.h"
#include "manager/planner.h"
#include "monitor/metrics.h"
#include "monitor/monitor.h"

static void dir_of(json_t *paths, const char *controller, char *out, size_t len)
{
	snprintf(out, len, "%s", json_string_value(json_object_get(paths, controller)) ?: "");
}

static int monitor_targets(void *opaque, fm_monitor_target **out, size_t *n)
{
	fm_daemon *d = opaque;
	json_t *rows = NULL, *row;
	size_t i;

	*out = NULL;
	*n = 0;
	if (fm_journal_query(d->journal, &rows, "SELECT name FROM containers ORDER BY name", NULL) < 0)
		return -EIO;
	*out = fm_xcalloc(json_array_size(rows) + 1, sizeof(**out));
	json_array_foreach(rows, i, row) {
		const char *name = json_string_value(json_object_get(row, "name"));
		json_t *paths = NULL;
		pid_t pid = 0;
		if (!name || fm_rt_cgroups(&d->rt, name, &paths, &pid) < 0)
			continue; /* not running (yet, or any more) */
		fm_monitor_target *t = &(*out)[(*n)++];
		snprintf(t->name, sizeof(t->name), "%s", name);
		dir_of(paths, "cpuacct", t->dirs.cpuacct, sizeof(t->dirs.cpuacct));
		dir_of(paths, "memory", t->dirs.memory, sizeof(t->dirs.memory));
		dir_of(paths, "blkio", t->dirs.blkio, sizeof(t->dirs.blkio));
		dir_of(paths, "", t->dirs.unified, sizeof(t->dirs.unified));
		t->pid = pid;
		json_decref(paths);
	}
	json_decref(rows);
	return 0;
}

/* The uplink's capacity: --uplink-rate, else the fastest rate a migration
 * from here measured, else the interface's own speed. */
static double monitor_link_capacity(void *opaque, const char **origin)
{
	fm_daemon *d = opaque;
	static __thread char buf[96];
	if (d->uplink_rate_bps > 0) {
		*origin = "stated (--uplink-rate)";
		return (double)d->uplink_rate_bps;
	}
	json_t *row = fm_journal_query_one(d->journal, "SELECT bps, mid FROM links WHERE source = ? ORDER BY bps DESC LIMIT 1",
					   "s", d->name);
	if (row) {
		double bps = json_real_value(json_object_get(row, "bps"));
		snprintf(buf, sizeof(buf), "measured by migration %s", json_string_value(json_object_get(row, "mid")) ?: "?");
		json_decref(row);
		*origin = buf;
		return bps;
	}
	if (d->uplink) {
		_cleanup_free_ char *p = fm_xasprintf("/sys/class/net/%s/speed", d->uplink), *s = NULL;
		long mbit = fm_read_file(p, 64, &s, NULL) == 0 ? strtol(s, NULL, 10) : -1;
		if (mbit > 0) {
			*origin = "the interface's speed";
			return (double)mbit * 1e6;
		}
	}
	return 0;
}

/* The interface that holds this daemon's --listen address: the way to the
 * other hosts. */
static char *uplink_of(const char *listen)
{
	char host[256];
	int port;
	unsigned char want[16];
	struct ifaddrs *ifa = NULL;
	char *found = NULL;

	if (fm_split_hostport(listen, host, sizeof(host), &port) < 0)
		return NULL;
	int af = inet_pton(AF_INET, host, want) == 1 ? AF_INET : inet_pton(AF_INET6, host, want) == 1 ? AF_INET6 : 0;
	if (!af || getifaddrs(&ifa) < 0)
		return NULL;
	for (struct ifaddrs *i = ifa; i && !found; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != af)
			continue;
		const void *a = af == AF_INET ? (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
					      : (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
		if (!memcmp(a, want, af == AF_INET ? 4 : 16))
			found = fm_xstrdup(i->ifa_name);
	}
	freeifaddrs(ifa);
	return found;
}

int fm_daemon_monitor_start(fm_daemon *d)
{
	fm_monitor_source src = { monitor_targets, monitor_link_capacity, d };
	d->uplink = uplink_of(d->listen);
	if (!d->uplink)
		fm_warn(FM_C_RESOURCE_MONITOR, "No interface holds %s: the link to the other hosts is not monitored "
			"(no congestion estimate)", d->listen);
	d->monitor = fm_monitor_new("/proc", d->uplink, &src);
	fm_monitor_tick(d->monitor); /* the first rates come one interval later */
	if (fm_monitor_start(d->monitor) < 0) {
		fm_err(FM_C_RESOURCE_MONITOR, "Cannot start the Resource Monitor's thread");
		return -EAGAIN;
	}
	fm_info(FM_C_RESOURCE_MONITOR, "Sampling this host%s%s and its containers every %d ms (windows of %d samples)",
		d->uplink ? ", its uplink " : "", d->uplink ? d->uplink : "", FM_MONITOR_INTERVAL_MS, FM_MONITOR_WINDOW);
	return 0;
}

void fm_daemon_monitor_stop(fm_daemon *d)
{
	fm_monitor_free(d->monitor);
	d->monitor = NULL;
	free(d->uplink);
	d->uplink = NULL;
}

/* GET /v1/plan: what the Decision Engine would do now. */
void fm_api_plan(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_http_ok(resp, 200, fm_planner_plan(d->planner));
}

/* GET /metrics: the Prometheus text exposition (version 0.0.4). */
void fm_api_metrics(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	char *t = fm_monitor_prometheus(d->monitor);
	json_t *rows = NULL, *row;
	size_t i;
	fm_prom_header(&t, "fleximigrate_migrations_finished_total", "counter",
		       "Migrations this host's controller finished (state: COMPLETED, FAILED).");
	static const char *const states[] = { "COMPLETED", "FAILED" };
	for (size_t k = 0; k < ARRAY_SIZE(states); k++) {
		char l[32];
		snprintf(l, sizeof(l), "state=%s", states[k]);
		fm_prom_sample(&t, "fleximigrate_migrations_finished_total",
			       (double)fm_journal_query_int(d->journal, 0, "SELECT COUNT(*) FROM migrations WHERE resolved = 1 AND"
							    " state = ?", "s", states[k]), (const char *[]){ l, NULL });
	}
	fm_prom_header(&t, "fleximigrate_migrations_in_progress", "gauge",
		       "Migrations of this host's controller not finished yet, by state.");
	if (fm_journal_query(d->journal, &rows, "SELECT state, COUNT(*) AS n FROM migrations WHERE resolved = 0"
			     " GROUP BY state ORDER BY state", NULL) == 0)
		json_array_foreach(rows, i, row) {
			char l[48];
			snprintf(l, sizeof(l), "state=%s", json_string_value(json_object_get(row, "state")) ?: "?");
			fm_prom_sample(&t, "fleximigrate_migrations_in_progress",
				       (double)json_integer_value(json_object_get(row, "n")), (const char *[]){ l, NULL });
		}
	json_decref(rows);
	fm_prom_header(&t, "fleximigrate_daemon_resident_memory_bytes", "gauge", "The daemon's resident memory (VmRSS).");
	fm_prom_sample(&t, "fleximigrate_daemon_resident_memory_bytes", (double)fm_metrics_self_rss_kib() * 1024, NULL);
	resp->status = 200;
	resp->text = t;
	resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}
