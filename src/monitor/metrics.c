#include "monitor/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "basic/util.h"

/* The number after key in a procfs text (kB fields of meminfo, smaps). */
static uint64_t meminfo_kib(const char *text, const char *key)
{
	const char *p = strstr(text, key);
	if (!p)
		return 0;
	return strtoull(p + strlen(key), NULL, 10);
}

int fm_metrics_host_read(fm_host_metrics *m)
{
	_cleanup_free_ char *mi = NULL, *la = NULL;
	int r;

	memset(m, 0, sizeof(*m));
	m->cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if ((r = fm_read_file("/proc/meminfo", 1 << 16, &mi, NULL)) < 0)
		return r;
	m->mem_total = meminfo_kib(mi, "MemTotal:") * 1024;
	m->mem_available = meminfo_kib(mi, "MemAvailable:") * 1024;
	if (fm_read_file("/proc/loadavg", 256, &la, NULL) == 0)
		m->load1 = strtod(la, NULL);
	return 0;
}

json_t *fm_metrics_host_json(const fm_host_metrics *m)
{
	return json_pack("{s:i, s:I, s:I, s:f}", "cpus", m->cpus, "mem_total_bytes", (json_int_t)m->mem_total,
			 "mem_available_bytes", (json_int_t)m->mem_available, "load1", m->load1);
}

int64_t fm_metrics_self_rss_kib(void)
{
	_cleanup_free_ char *s = NULL;
	if (fm_read_file("/proc/self/status", 1 << 16, &s, NULL) < 0)
		return -1;
	return (int64_t)meminfo_kib(s, "VmRSS:");
}

int fm_metrics_working_set(const pid_t *pids, size_t n, int interval_ms, fm_working_set *ws)
{
	memset(ws, 0, sizeof(*ws));
	ws->interval_ms = interval_ms;
	for (size_t i = 0; i < n; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)pids[i]);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd >= 0) {
			(void)!write(fd, "1", 1);
			close(fd);
		}
	}
	fm_sleep_us((int64_t)interval_ms * 1000, NULL);
	for (size_t i = 0; i < n; i++) {
		char path[64];
		_cleanup_free_ char *text = NULL;
		snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pids[i]);
		if (fm_read_file(path, 1 << 16, &text, NULL) < 0)
			continue;
		ws->rss += meminfo_kib(text, "\nRss:") * 1024;
		ws->referenced += meminfo_kib(text, "\nReferenced:") * 1024;
		ws->processes++;
	}
	return ws->processes > 0 ? 0 : -ESRCH;
}
