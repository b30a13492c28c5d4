#include "monitor/monitor.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "basic/log.h"
#include "basic/periodic.h"
#include "basic/util.h"

/* Fewer TCP segments than this in an interval say nothing about loss. */
#define LOSS_MIN_SEGMENTS 100

typedef struct container_state {
	char name[64];
	fm_cgroup_sample prev;
	fm_netdev_sample prev_net;
	bool have_prev, have_net, seen;
	fm_window cpu_pct, mem_bytes, io_read_bps, io_write_bps, net_rx_bps, net_tx_bps;
	fm_cgroup_sample last;
	fm_netdev_sample last_net;
} container_state;

struct fm_monitor {
	char *procfs, *uplink;
	fm_monitor_source src;
	pthread_mutex_t lock;       /* the figures */
	fm_periodic sampler;
	/* host */
	fm_host_sample prev, last;
	bool have_prev;
	fm_window cpu_pct, mem_pct, up_rx_bps, up_tx_bps, up_util, loss, congestion;
	double capacity_bps;
	char capacity_origin[96];
	/* containers */
	container_state *cs;
	size_t ncs;
};

static void window_init(fm_window *w)
{
	memset(w, 0, sizeof(*w));
	w->cap = FM_MONITOR_WINDOW;
}

static void container_init(container_state *c, const char *name)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", name);
	fm_window *ws[] = { &c->cpu_pct, &c->mem_bytes, &c->io_read_bps, &c->io_write_bps, &c->net_rx_bps, &c->net_tx_bps };
	for (size_t i = 0; i < ARRAY_SIZE(ws); i++)
		window_init(ws[i]);
}

fm_monitor *fm_monitor_new(const char *procfs, const char *uplink, const fm_monitor_source *src)
{
	fm_monitor *m = fm_xcalloc(1, sizeof(*m));
	m->procfs = fm_xstrdup(procfs);
	m->uplink = uplink ? fm_xstrdup(uplink) : NULL;
	m->src = *src;
	pthread_mutex_init(&m->lock, NULL);
	fm_window *ws[] = { &m->cpu_pct, &m->mem_pct, &m->up_rx_bps, &m->up_tx_bps, &m->up_util, &m->loss, &m->congestion };
	for (size_t i = 0; i < ARRAY_SIZE(ws); i++)
		window_init(ws[i]);
	return m;
}

/* A counter's growth per second between two samples (0 when it went back:
 * an interface re-created, a cgroup replaced). */
static double rate(uint64_t now, uint64_t then, double dt_s)
{
	return now >= then && dt_s > 0 ? (double)(now - then) / dt_s : 0;
}

static void net_rates(const fm_netdev_sample *now, const fm_netdev_sample *then, double dt, double *rx_bps, double *tx_bps)
{
	*rx_bps = *tx_bps = 0;
	for (size_t i = 0; i < now->n; i++) {
		const fm_iface_sample *p = fm_netdev_find(then, now->v[i].name);
		if (!p || !strcmp(now->v[i].name, "lo"))
			continue;
		*rx_bps += 8 * rate(now->v[i].rx_bytes, p->rx_bytes, dt);
		*tx_bps += 8 * rate(now->v[i].tx_bytes, p->tx_bytes, dt);
	}
}

static void tick_host(fm_monitor *m, const fm_host_sample *s)
{
	int64_t t = s->at_us;
	if (s->mem_total)
		fm_window_push(&m->mem_pct, t, 100.0 * (double)(s->mem_total - s->mem_available) / (double)s->mem_total);
	if (m->have_prev) {
		const fm_host_sample *p = &m->prev;
		double dt = (double)(s->at_us - p->at_us) / 1e6;
		uint64_t total = s->cpu_total - p->cpu_total, idle = s->cpu_idle - p->cpu_idle;
		if (s->cpu_total > p->cpu_total && idle <= total)
			fm_window_push(&m->cpu_pct, t, 100.0 * (double)(total - idle) / (double)total);
		const fm_iface_sample *u = m->uplink ? fm_netdev_find(&s->net, m->uplink) : NULL;
		const fm_iface_sample *pu = m->uplink ? fm_netdev_find(&p->net, m->uplink) : NULL;
		double rho = -1, loss = 0;
		if (u && pu) {
			double rx = 8 * rate(u->rx_bytes, pu->rx_bytes, dt), tx = 8 * rate(u->tx_bytes, pu->tx_bytes, dt);
			fm_window_push(&m->up_rx_bps, t, rx);
			fm_window_push(&m->up_tx_bps, t, tx);
			if (m->capacity_bps > 0) {
				/* full duplex: the busier direction */
				rho = (rx > tx ? rx : tx) / m->capacity_bps;
				fm_window_push(&m->up_util, t, rho);
			}
			uint64_t pk = u->tx_packets - pu->tx_packets + u->rx_packets - pu->rx_packets;
			uint64_t dr = u->tx_drops - pu->tx_drops + u->rx_drops - pu->rx_drops;
			if (pk > 0 && u->tx_packets >= pu->tx_packets && u->tx_drops >= pu->tx_drops)
				loss = (double)dr / (double)pk;
		}
		uint64_t segs = s->tcp_out_segs - p->tcp_out_segs, re = s->tcp_retrans_segs - p->tcp_retrans_segs;
		if (s->tcp_out_segs >= p->tcp_out_segs && segs >= LOSS_MIN_SEGMENTS && re <= segs &&
		    (double)re / (double)segs > loss)
			loss = (double)re / (double)segs;
		fm_window_push(&m->loss, t, loss);
		fm_window_push(&m->congestion, t, fm_congestion_probability(rho, loss));
	}
	m->prev = *s;
	m->last = *s;
	m->have_prev = true;
}

static container_state *container_find(fm_monitor *m, const char *name)
{
	for (size_t i = 0; i < m->ncs; i++)
		if (!strcmp(m->cs[i].name, name))
			return &m->cs[i];
	return NULL;
}

static void tick_container(fm_monitor *m, const fm_monitor_target *tg, const fm_cgroup_sample *s, const fm_netdev_sample *net)
{
	container_state *c = container_find(m, tg->name);
	if (!c) {
		container_state *n = realloc(m->cs, (m->ncs + 1) * sizeof(*n));
		if (!n)
			abort();
		m->cs = n;
		c = &m->cs[m->ncs++];
		container_init(c, tg->name);
	}
	c->seen = true;
	int64_t t = s->at_us;
	if (s->has_mem)
		fm_window_push(&c->mem_bytes, t, (double)s->mem_bytes);
	if (c->have_prev) {
		double dt = (double)(s->at_us - c->prev.at_us) / 1e6;
		if (s->has_cpu && c->prev.has_cpu)
			fm_window_push(&c->cpu_pct, t, 100.0 * rate(s->cpu_ns, c->prev.cpu_ns, dt) / 1e9);
		if (s->has_io && c->prev.has_io) {
			fm_window_push(&c->io_read_bps, t, rate(s->io_read_bytes, c->prev.io_read_bytes, dt));
			fm_window_push(&c->io_write_bps, t, rate(s->io_write_bytes, c->prev.io_write_bytes, dt));
		}
		if (net && c->have_net) {
			double rx, tx;
			net_rates(net, &c->prev_net, dt, &rx, &tx);
			fm_window_push(&c->net_rx_bps, t, rx);
			fm_window_push(&c->net_tx_bps, t, tx);
		}
	}
	c->prev = c->last = *s;
	c->have_prev = true;
	c->have_net = net != NULL;
	if (net)
		c->prev_net = c->last_net = *net;
}

void fm_monitor_tick(fm_monitor *m)
{
	fm_host_sample hs;
	fm_monitor_target *tg = NULL;
	size_t n = 0;
	const char *origin = NULL;
	double cap = m->src.link_capacity ? m->src.link_capacity(m->src.opaque, &origin) : 0;

	/* read first, then take the lock only to fold the samples in */
	int hr = fm_host_sample_read(m->procfs, &hs);
	if (m->src.targets && m->src.targets(m->src.opaque, &tg, &n) < 0)
		n = 0;
	fm_cgroup_sample *cg = fm_xcalloc(n ? n : 1, sizeof(*cg));
	fm_netdev_sample *net = fm_xcalloc(n ? n : 1, sizeof(*net));
	bool *ok = fm_xcalloc(n ? n : 1, sizeof(*ok)), *net_ok = fm_xcalloc(n ? n : 1, sizeof(*net_ok));
	for (size_t i = 0; i < n; i++) {
		ok[i] = fm_cgroup_sample_read(&tg[i].dirs, &cg[i]) == 0;
		if (tg[i].pid > 0) {
			char p[64];
			snprintf(p, sizeof(p), "%s/%d/net/dev", m->procfs, (int)tg[i].pid);
			net_ok[i] = fm_netdev_read(p, &net[i]) == 0;
		}
	}

	pthread_mutex_lock(&m->lock);
	m->capacity_bps = cap;
	snprintf(m->capacity_origin, sizeof(m->capacity_origin), "%s", cap > 0 && origin ? origin : "");
	if (hr == 0)
		tick_host(m, &hs);
	for (size_t i = 0; i < m->ncs; i++)
		m->cs[i].seen = false;
	for (size_t i = 0; i < n; i++)
		if (ok[i])
			tick_container(m, &tg[i], &cg[i], net_ok[i] ? &net[i] : NULL);
	/* containers gone (stopped, migrated away) leave the figures */
	size_t k = 0;
	for (size_t i = 0; i < m->ncs; i++)
		if (m->cs[i].seen)
			m->cs[k++] = m->cs[i];
	m->ncs = k;
	pthread_mutex_unlock(&m->lock);
	free(tg);
	free(cg);
	free(net);
	free(ok);
	free(net_ok);
}

static void tick(void *opaque)
{
	fm_monitor_tick(opaque);
}

int fm_monitor_start(fm_monitor *m)
{
	return fm_periodic_start(&m->sampler, (int64_t)FM_MONITOR_INTERVAL_MS * 1000, true, tick, m);
}

void fm_monitor_free(fm_monitor *m)
{
	if (!m)
		return;
	fm_periodic_stop(&m->sampler);
	pthread_mutex_destroy(&m->lock);
	free(m->cs);
	free(m->procfs);
	free(m->uplink);
	free(m);
}

/* ------------------------------------------------------------ JSON */

/* {last, mean, min, max, trend_per_min, samples}, or null without samples. */
static json_t *window_json(const fm_window *w)
{
	fm_window_stats s;
	fm_window_stats_get(w, &s);
	if (s.n == 0)
		return json_null();
	return json_pack("{s:f, s:f, s:f, s:f, s:f, s:I}", "last", s.last, "mean", s.mean, "min", s.min, "max", s.max,
			 "trend_per_min", s.slope_per_min, "samples", (json_int_t)s.n);
}

json_t *fm_monitor_host_json(fm_monitor *m)
{
	pthread_mutex_lock(&m->lock);
	json_t *up = json_null();
	if (m->uplink)
		up = json_pack("{s:s, s:o, s:o, s:o, s:o}", "interface", m->uplink, "rx_bps", window_json(&m->up_rx_bps),
			       "tx_bps", window_json(&m->up_tx_bps), "utilization", window_json(&m->up_util),
			       "loss_ratio", window_json(&m->loss));
	if (json_is_object(up)) {
		json_object_set_new(up, "capacity_bps", m->capacity_bps > 0 ? json_real(m->capacity_bps) : json_null());
		json_object_set_new(up, "capacity_origin", m->capacity_bps > 0 ? json_string(m->capacity_origin) : json_null());
	}
	json_t *o = json_pack("{s:i, s:i, s:o, s:o, s:i, s:I, s:I, s:f, s:o, s:o, s:{s:b, s:b}}",
		"interval_ms", FM_MONITOR_INTERVAL_MS, "window_samples", FM_MONITOR_WINDOW,
		"cpu_utilization_percent", window_json(&m->cpu_pct), "memory_utilization_percent", window_json(&m->mem_pct),
		"cpus", m->last.cpus, "memory_total_bytes", (json_int_t)m->last.mem_total,
		"memory_available_bytes", (json_int_t)m->last.mem_available, "load1", m->last.load1,
		"uplink", up, "network_congestion_prob", window_json(&m->congestion),
		"overloaded", "cpu", fm_window_sustained_above(&m->cpu_pct, FM_OVERLOAD_CPU_PCT, FM_OVERLOAD_SUSTAIN_S),
		"memory", fm_window_sustained_above(&m->mem_pct, FM_OVERLOAD_MEM_PCT, FM_OVERLOAD_SUSTAIN_S));
	pthread_mutex_unlock(&m->lock);
	return o;
}

static json_t *series_json(const fm_window *w)
{
	json_t *t = json_array(), *v = json_array();
	for (size_t i = 0; i < w->n; i++) {
		int64_t at;
		double x;
		fm_window_at(w, i, &at, &x);
		json_array_append_new(t, json_integer(at / 1000));
		json_array_append_new(v, json_real(x));
	}
	return json_pack("{s:o, s:o}", "t_ms", t, "v", v);
}

json_t *fm_monitor_container_json(fm_monitor *m, const char *name, bool series)
{
	json_t *o = NULL;
	pthread_mutex_lock(&m->lock);
	container_state *c = container_find(m, name);
	if (c && series)
		o = json_pack("{s:{s:o, s:o}}", "series", "cpu_percent", series_json(&c->cpu_pct), "memory_bytes",
			      series_json(&c->mem_bytes));
	if (c && !o)
		o = json_object();
	if (c)
		json_object_update_new(o, json_pack("{s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "cgroup_version", c->last.version,
			      "cpu_utilization_percent", window_json(&c->cpu_pct), "memory_bytes", window_json(&c->mem_bytes),
			      "io_read_bps", window_json(&c->io_read_bps), "io_write_bps", window_json(&c->io_write_bps),
			      "net_rx_bps", window_json(&c->net_rx_bps), "net_tx_bps", window_json(&c->net_tx_bps)));
	pthread_mutex_unlock(&m->lock);
	return o;
}

size_t fm_monitor_container_series(fm_monitor *m, const char *name, fm_series_kind kind, double *v, size_t max)
{
	size_t k = 0;
	pthread_mutex_lock(&m->lock);
	container_state *c = container_find(m, name);
	const fm_window *w = !c ? NULL : kind == FM_SERIES_CPU ? &c->cpu_pct : &c->mem_bytes;
	for (size_t i = w && w->n > max ? w->n - max : 0; w && i < w->n; i++) {
		int64_t t;
		fm_window_at(w, i, &t, &v[k++]);
	}
	pthread_mutex_unlock(&m->lock);
	return k;
}

/* ------------------------------------------------------------ Prometheus */

static void appendf(char **buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void appendf(char **buf, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = fm_xvasprintf(fmt, ap);
	va_end(ap);
	size_t a = *buf ? strlen(*buf) : 0, b = strlen(s);
	char *n = realloc(*buf, a + b + 1);
	if (!n)
		abort();
	memcpy(n + a, s, b + 1);
	*buf = n;
	free(s);
}

void fm_prom_header(char **buf, const char *name, const char *type, const char *help)
{
	appendf(buf, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void fm_prom_sample(char **buf, const char *name, double v, const char *const *labels)
{
	appendf(buf, "%s", name);
	for (size_t i = 0; labels && labels[i]; i++) {
		const char *eq = strchr(labels[i], '=');
		appendf(buf, "%s%.*s=\"", i ? "," : "{", (int)(eq - labels[i]), labels[i]);
		for (const char *p = eq + 1; *p; p++)
			appendf(buf, "%s", *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : (char[]){ *p, 0 });
		appendf(buf, "\"");
	}
	if (labels && labels[0])
		appendf(buf, "}");
	if (isnan(v))
		appendf(buf, " NaN\n");
	else if (v == floor(v) && fabs(v) < 9007199254740992.0)
		appendf(buf, " %.0f\n", v); /* counters: every digit */
	else
		appendf(buf, " %.6g\n", v);
}

/* The window's last, mean and max under label stat=. */
static void prom_window(char **buf, const char *name, const char *help, const fm_window *w, double scale,
			const char *label)
{
	fm_window_stats s;
	fm_window_stats_get(w, &s);
	if (s.n == 0)
		return;
	const char *stats[] = { "last", "mean", "max" };
	double v[] = { s.last, s.mean, s.max };
	if (help)
		fm_prom_header(buf, name, "gauge", help);
	for (size_t i = 0; i < 3; i++) {
		char st[32];
		snprintf(st, sizeof(st), "stat=%s", stats[i]);
		const char *l[] = { st, label, NULL };
		fm_prom_sample(buf, name, v[i] * scale, l);
	}
}

char *fm_monitor_prometheus(fm_monitor *m)
{
	char *b = NULL;
	pthread_mutex_lock(&m->lock);
	const fm_host_sample *s = &m->last;
	prom_window(&b, "fleximigrate_host_cpu_utilization_ratio", "Share of the host's CPU time busy, over the last "
		    "minute (stat: last sample, mean, max).", &m->cpu_pct, 0.01, NULL);
	prom_window(&b, "fleximigrate_host_memory_utilization_ratio", "Share of the host's memory in use (MemTotal - "
		    "MemAvailable), over the last minute.", &m->mem_pct, 0.01, NULL);
	fm_prom_header(&b, "fleximigrate_host_memory_bytes", "gauge", "Host memory (kind: total, available).");
	fm_prom_sample(&b, "fleximigrate_host_memory_bytes", (double)s->mem_total, (const char *[]){ "kind=total", NULL });
	fm_prom_sample(&b, "fleximigrate_host_memory_bytes", (double)s->mem_available,
		       (const char *[]){ "kind=available", NULL });
	fm_prom_header(&b, "fleximigrate_host_load1", "gauge", "1-minute load average.");
	fm_prom_sample(&b, "fleximigrate_host_load1", s->load1, NULL);
	static const struct {
		const char *name, *help;
		size_t off;
	} ifc[] = {
		{ "fleximigrate_host_network_receive_bytes_total", "Bytes received, per interface.", offsetof(fm_iface_sample, rx_bytes) },
		{ "fleximigrate_host_network_transmit_bytes_total", "Bytes sent, per interface.", offsetof(fm_iface_sample, tx_bytes) },
		{ "fleximigrate_host_network_receive_drops_total", "Received packets dropped, per interface.", offsetof(fm_iface_sample, rx_drops) },
		{ "fleximigrate_host_network_transmit_drops_total", "Packets dropped on sending, per interface.", offsetof(fm_iface_sample, tx_drops) },
	};
	for (size_t k = 0; k < ARRAY_SIZE(ifc); k++) {
		fm_prom_header(&b, ifc[k].name, "counter", ifc[k].help);
		for (size_t i = 0; i < s->net.n; i++) {
			char l[40];
			snprintf(l, sizeof(l), "interface=%s", s->net.v[i].name);
			fm_prom_sample(&b, ifc[k].name, (double)*(const uint64_t *)((const char *)&s->net.v[i] + ifc[k].off),
				       (const char *[]){ l, NULL });
		}
	}
	fm_prom_header(&b, "fleximigrate_host_tcp_sent_segments_total", "counter", "TCP segments sent (/proc/net/snmp OutSegs).");
	fm_prom_sample(&b, "fleximigrate_host_tcp_sent_segments_total", (double)s->tcp_out_segs, NULL);
	fm_prom_header(&b, "fleximigrate_host_tcp_retransmitted_segments_total", "counter",
		       "TCP segments retransmitted (/proc/net/snmp RetransSegs).");
	fm_prom_sample(&b, "fleximigrate_host_tcp_retransmitted_segments_total", (double)s->tcp_retrans_segs, NULL);
	if (m->uplink) {
		char l[40];
		snprintf(l, sizeof(l), "interface=%s", m->uplink);
		if (m->capacity_bps > 0) {
			fm_prom_header(&b, "fleximigrate_uplink_capacity_bytes_per_second", "gauge",
				       "Capacity of the link to the other hosts, as stated or measured.");
			fm_prom_sample(&b, "fleximigrate_uplink_capacity_bytes_per_second", m->capacity_bps / 8,
				       (const char *[]){ l, NULL });
			prom_window(&b, "fleximigrate_uplink_utilization_ratio", "Busier direction's rate over the uplink's "
				    "capacity, over the last minute.", &m->up_util, 1, l);
		}
		prom_window(&b, "fleximigrate_uplink_loss_ratio", "Packets dropped on the uplink or TCP segments "
			    "retransmitted, per packet or segment sent, over the last minute.", &m->loss, 1, l);
	}
	prom_window(&b, "fleximigrate_network_congestion_probability", "Probability that the link to the other hosts "
		    "is congested (docs/architecture.md, Resource Monitor).", &m->congestion, 1, NULL);
	fm_prom_header(&b, "fleximigrate_host_overloaded", "gauge", "1 while a resource is above its threshold, sustained.");
	fm_prom_sample(&b, "fleximigrate_host_overloaded",
		       fm_window_sustained_above(&m->cpu_pct, FM_OVERLOAD_CPU_PCT, FM_OVERLOAD_SUSTAIN_S),
		       (const char *[]){ "resource=cpu", NULL });
	fm_prom_sample(&b, "fleximigrate_host_overloaded",
		       fm_window_sustained_above(&m->mem_pct, FM_OVERLOAD_MEM_PCT, FM_OVERLOAD_SUSTAIN_S),
		       (const char *[]){ "resource=memory", NULL });

	/* containers: one family at a time, as the format wants */
	if (m->ncs) {
		static const struct {
			const char *name, *type, *help;
			size_t value, has;   /* offsets in fm_cgroup_sample */
			double scale;
		} fam[] = {
			{ "fleximigrate_container_cpu_seconds_total", "counter", "CPU time the container used.",
			  offsetof(fm_cgroup_sample, cpu_ns), offsetof(fm_cgroup_sample, has_cpu), 1e-9 },
			{ "fleximigrate_container_memory_bytes", "gauge", "Memory the container's cgroup uses.",
			  offsetof(fm_cgroup_sample, mem_bytes), offsetof(fm_cgroup_sample, has_mem), 1 },
			{ "fleximigrate_container_io_read_bytes_total", "counter", "Bytes the container read from block devices.",
			  offsetof(fm_cgroup_sample, io_read_bytes), offsetof(fm_cgroup_sample, has_io), 1 },
			{ "fleximigrate_container_io_written_bytes_total", "counter", "Bytes the container wrote to block devices.",
			  offsetof(fm_cgroup_sample, io_write_bytes), offsetof(fm_cgroup_sample, has_io), 1 },
		};
		for (size_t k = 0; k < ARRAY_SIZE(fam); k++) {
			fm_prom_header(&b, fam[k].name, fam[k].type, fam[k].help);
			for (size_t i = 0; i < m->ncs; i++) {
				const char *last = (const char *)&m->cs[i].last;
				char l[80];
				snprintf(l, sizeof(l), "container=%s", m->cs[i].name);
				if (*(const bool *)(last + fam[k].has))
					fm_prom_sample(&b, fam[k].name, (double)*(const uint64_t *)(last + fam[k].value) * fam[k].scale,
						       (const char *[]){ l, NULL });
			}
		}
		static const char *const nn[] = { "fleximigrate_container_network_receive_bytes_total",
						   "fleximigrate_container_network_transmit_bytes_total" };
		for (size_t k = 0; k < 2; k++) {
			fm_prom_header(&b, nn[k], "counter", k ? "Bytes sent from the container's network namespace, per interface."
							       : "Bytes received in the container's network namespace, per interface.");
			for (size_t i = 0; i < m->ncs; i++)
				for (size_t j = 0; m->cs[i].have_net && j < m->cs[i].last_net.n; j++) {
					const fm_iface_sample *f = &m->cs[i].last_net.v[j];
					char l[80], li[40];
					snprintf(l, sizeof(l), "container=%s", m->cs[i].name);
					snprintf(li, sizeof(li), "interface=%s", f->name);
					fm_prom_sample(&b, nn[k], (double)(k ? f->tx_bytes : f->rx_bytes), (const char *[]){ l, li, NULL });
				}
		}
	}
	pthread_mutex_unlock(&m->lock);
	return b ? b : fm_xstrdup("");
}
