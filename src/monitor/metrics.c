#include "monitor/metrics.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "basic/util.h"

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
