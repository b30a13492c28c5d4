#include "monitor/collector.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "basic/util.h"

/* The number after key in a procfs text ("MemTotal:", kB). */
static uint64_t after(const char *text, const char *key)
{
	const char *p = strstr(text, key);
	return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

static int read_at(const char *dir, const char *file, size_t max, char **out)
{
	_cleanup_free_ char *p = fm_xasprintf("%s/%s", dir, file);
	return fm_read_file(p, max, out, NULL);
}

int fm_netdev_read(const char *path, fm_netdev_sample *s)
{
	_cleanup_free_ char *t = NULL;
	int r;

	memset(s, 0, sizeof(*s));
	if ((r = fm_read_file(path, 1 << 18, &t, NULL)) < 0)
		return r;
	/* two header lines, then "  name: rx(8 fields) tx(8 fields)" */
	char *save = NULL;
	for (char *l = strtok_r(t, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *colon = strchr(l, ':');
		if (!colon || s->n == FM_MAX_IFACES)
			continue;
		*colon = '\0';
		while (*l == ' ')
			l++;
		uint64_t f[16];
		int k = sscanf(colon + 1, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
			       " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
			       " %" SCNu64, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &f[8], &f[9], &f[10],
			       &f[11], &f[12], &f[13], &f[14], &f[15]);
		if (k != 16 || strlen(l) >= sizeof(s->v[0].name))
			continue;
		fm_iface_sample *i = &s->v[s->n++];
		snprintf(i->name, sizeof(i->name), "%s", l);
		i->rx_bytes = f[0], i->rx_packets = f[1], i->rx_errors = f[2], i->rx_drops = f[3];
		i->tx_bytes = f[8], i->tx_packets = f[9], i->tx_errors = f[10], i->tx_drops = f[11];
	}
	return 0;
}

const fm_iface_sample *fm_netdev_find(const fm_netdev_sample *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i].name, name))
			return &s->v[i];
	return NULL;
}

/* /proc/net/snmp: a "Tcp:" header line names the fields, the next holds them. */
static void tcp_counters(const char *procfs, fm_host_sample *s)
{
	_cleanup_free_ char *t = NULL;
	if (read_at(procfs, "net/snmp", 1 << 16, &t) < 0)
		return;
	char *h = strstr(t, "Tcp: ");
	char *v = h ? strstr(h + 5, "Tcp: ") : NULL;
	if (!v)
		return;
	char *he = strchr(h, '\n'), *ve = strchr(v, '\n');
	if (!he)
		return;
	*he = '\0';
	if (ve)
		*ve = '\0';
	char *hs = NULL, *vs = NULL;
	char *hn = strtok_r(h, " ", &hs), *vn = strtok_r(v, " ", &vs);
	while ((hn = strtok_r(NULL, " ", &hs)) && (vn = strtok_r(NULL, " ", &vs))) {
		if (!strcmp(hn, "OutSegs"))
			s->tcp_out_segs = strtoull(vn, NULL, 10);
		else if (!strcmp(hn, "RetransSegs"))
			s->tcp_retrans_segs = strtoull(vn, NULL, 10);
	}
}

int fm_host_sample_read(const char *procfs, fm_host_sample *s)
{
	_cleanup_free_ char *st = NULL, *mi = NULL, *la = NULL, *nd = NULL;
	int r;

	memset(s, 0, sizeof(*s));
	s->at_us = fm_now_mono_us();
	if ((r = read_at(procfs, "stat", 1 << 20, &st)) < 0)
		return r;
	/* cpu  user nice system idle iowait irq softirq steal guest guest_nice
	 * (guest time is already in user: not added twice) */
	uint64_t f[8] = { 0 };
	if (strncmp(st, "cpu ", 4) != 0 ||
	    sscanf(st + 4, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
		   " %" SCNu64, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7]) < 4)
		return -EBADMSG;
	for (int i = 0; i < 8; i++)
		s->cpu_total += f[i];
	s->cpu_idle = f[3] + f[4];
	for (const char *p = strstr(st, "\ncpu"); p; p = strstr(p + 1, "\ncpu"))
		s->cpus += p[4] >= '0' && p[4] <= '9';
	if ((r = read_at(procfs, "meminfo", 1 << 16, &mi)) < 0)
		return r;
	s->mem_total = after(mi, "MemTotal:") * 1024;
	s->mem_available = after(mi, "MemAvailable:") * 1024;
	if (read_at(procfs, "loadavg", 256, &la) == 0)
		s->load1 = strtod(la, NULL);
	tcp_counters(procfs, s);
	_cleanup_free_ char *ndp = fm_xasprintf("%s/net/dev", procfs);
	(void)fm_netdev_read(ndp, &s->net);
	return 0;
}

/* A cgroup file holding one number ("max": none). */
static bool number_at(const char *dir, const char *file, uint64_t *v)
{
	_cleanup_free_ char *t = NULL;
	if (!*dir || read_at(dir, file, 64, &t) < 0)
		return false;
	if (!strncmp(t, "max", 3)) {
		*v = 0;
		return true;
	}
	char *end;
	errno = 0;
	*v = strtoull(t, &end, 10);
	return end != t && errno == 0;
}

/* v1 blkio.throttle.io_service_bytes: "MAJ:MIN Read N" lines (and Total). */
static bool blkio_v1(const char *dir, fm_cgroup_sample *s)
{
	_cleanup_free_ char *t = NULL;
	if (!*dir || read_at(dir, "blkio.throttle.io_service_bytes", 1 << 18, &t) < 0)
		return false;
	char *save = NULL;
	for (char *l = strtok_r(t, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char dev[32], op[16];
		uint64_t n;
		if (sscanf(l, "%31s %15s %" SCNu64, dev, op, &n) != 3)
			continue;
		if (!strcmp(op, "Read"))
			s->io_read_bytes += n;
		else if (!strcmp(op, "Write"))
			s->io_write_bytes += n;
	}
	return true;
}

/* v2 io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N ..." per device. */
static bool io_v2(const char *dir, fm_cgroup_sample *s)
{
	_cleanup_free_ char *t = NULL;
	if (!*dir || read_at(dir, "io.stat", 1 << 18, &t) < 0)
		return false;
	for (char *p = t; (p = strstr(p, "bytes=")); p += 6) {
		if (p - t < 1)
			continue;
		uint64_t n = strtoull(p + 6, NULL, 10);
		if (p[-1] == 'r')
			s->io_read_bytes += n;
		else if (p[-1] == 'w')
			s->io_write_bytes += n;
	}
	return true;
}

int fm_cgroup_sample_read(const fm_cgroup_dirs *d, fm_cgroup_sample *s)
{
	_cleanup_free_ char *cs = NULL;
	uint64_t v;

	memset(s, 0, sizeof(*s));
	s->at_us = fm_now_mono_us();
	if (number_at(d->cpuacct, "cpuacct.usage", &v)) {
		s->cpu_ns = v;
		s->has_cpu = true;
		s->version = 1;
	} else if (*d->unified && read_at(d->unified, "cpu.stat", 1 << 12, &cs) == 0 && strstr(cs, "usage_usec ")) {
		s->cpu_ns = after(cs, "usage_usec ") * 1000;
		s->has_cpu = true;
		s->version = 2;
	}
	if (number_at(d->memory, "memory.usage_in_bytes", &s->mem_bytes)) {
		s->has_mem = true;
		uint64_t lim;
		/* v1 says "no limit" with a huge number */
		if (number_at(d->memory, "memory.limit_in_bytes", &lim) && lim < (UINT64_C(1) << 62))
			s->mem_limit = lim;
	} else if (number_at(d->unified, "memory.current", &s->mem_bytes)) {
		s->has_mem = true;
		(void)number_at(d->unified, "memory.max", &s->mem_limit);
	}
	s->has_io = blkio_v1(d->blkio, s) || io_v2(d->unified, s);
	return s->has_cpu || s->has_mem ? 0 : -ENOENT;
}
