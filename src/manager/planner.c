#include "manager/planner.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "basic/log.h"
#include "basic/periodic.h"
#include "basic/util.h"
#include "decision/optimizer.h"
#include "decision/workload.h"
#include "monitor/monitor.h"

#define PLAN_CALL_TIMEOUT_MS 5000
#define PLAN_MAX_HOSTS 64
#define PLAN_MAX_COOL 256

struct fm_planner {
	fm_controller *ctl;
	struct fm_monitor *mon;
	fm_planner_config cfg;
	pthread_mutex_t lock;       /* the cooldowns */
	fm_periodic rounds;         /* automatic mode */
	struct {
		char name[64];
		int64_t until_ms;
	} cool[PLAN_MAX_COOL];
	size_t ncool;
};

fm_planner *fm_planner_new(fm_controller *ctl, struct fm_monitor *mon, const fm_planner_config *cfg)
{
	fm_planner *p = fm_xcalloc(1, sizeof(*p));
	p->ctl = ctl;
	p->mon = mon;
	p->cfg = *cfg;
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

static bool cooling(fm_planner *p, const char *name)
{
	int64_t now = fm_now_mono_ms();
	bool r = false;
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->ncool; i++)
		r |= !strcmp(p->cool[i].name, name) && p->cool[i].until_ms > now;
	pthread_mutex_unlock(&p->lock);
	return r;
}

static void cool_down(fm_planner *p, const char *name)
{
	int64_t now = fm_now_mono_ms();
	pthread_mutex_lock(&p->lock);
	size_t k = 0;
	for (size_t i = 0; i < p->ncool; i++) /* drop the expired and this one's old entry */
		if (p->cool[i].until_ms > now && strcmp(p->cool[i].name, name) != 0)
			p->cool[k++] = p->cool[i];
	p->ncool = k;
	if (p->ncool < PLAN_MAX_COOL) {
		snprintf(p->cool[p->ncool].name, sizeof(p->cool[0].name), "%s", name);
		p->cool[p->ncool++].until_ms = now + FM_PLAN_COOLDOWN_S * 1000;
	}
	pthread_mutex_unlock(&p->lock);
}

static double mean_of(json_t *window)
{
	return json_is_number(json_object_get(window, "mean")) ? json_number_value(json_object_get(window, "mean")) : 0;
}

/* A candidate: one of this host's running containers. */
typedef struct candidate {
	const char *name;
	double cpu_now, cpu_fc;   /* cores: mean over sustain_s, forecast */
	double mem_now, mem_fc;   /* bytes */
	fm_workload_profile prof;
	bool busy;                /* being migrated, or resting after a move */
} candidate;

/* How the planner forecasts CPU (percent of one core, up to the host's
 * cores) and memory (bytes, never below the window's least). */
fm_forecast_spec fm_planner_cpu_spec(double cores)
{
	return (fm_forecast_spec){ FM_PLAN_MODEL_CPU, FM_PLAN_HORIZON, FM_MONITOR_WINDOW, 0, 100 * cores, false };
}

fm_forecast_spec fm_planner_mem_spec(double bytes)
{
	return (fm_forecast_spec){ FM_PLAN_MODEL_MEM, FM_PLAN_HORIZON, FM_MONITOR_WINDOW, 0, bytes, true };
}

/* Mean of the last k points of v[0..n-1]. */
static double tail_mean(const double *v, size_t n, size_t k)
{
	double s = 0;
	size_t from = n > k ? n - k : 0;
	for (size_t i = from; i < n; i++)
		s += v[i];
	return n > from ? s / (double)(n - from) : 0;
}

json_t *fm_planner_plan(fm_planner *p)
{
	fm_controller *c = p->ctl;
	json_t *hosts = fm_ctl_host_list(c), *h, *out = json_object(), *jhosts = json_array(), *jcont = json_array();
	fm_place_host ph[PLAN_MAX_HOSTS];
	json_t *infos[PLAN_MAX_HOSTS] = { 0 }, *lists[PLAN_MAX_HOSTS] = { 0 };
	char names[PLAN_MAX_HOSTS][64];
	size_t n = 0, self = 0, i;

	/* every host's figures: cores, memory, architecture, and what its containers use */
	json_array_foreach(hosts, i, h) {
		if (n == PLAN_MAX_HOSTS)
			break;
		const char *name = json_string_value(json_object_get(h, "name"));
		const char *ep = json_string_value(json_object_get(h, "address"));
		fm_error e = FM_ERROR_INIT;
		json_t *jh = json_pack("{s:s}", "name", name);
		json_array_append_new(jhosts, jh);
		bool local = json_is_true(json_object_get(h, "local"));
		if (c->call(ep, "GET", "/v1/info", NULL, PLAN_CALL_TIMEOUT_MS, &infos[n], &e) < 0 ||
		    c->call(ep, "GET", local ? "/v1/containers?disk=1" : "/v1/containers", NULL, PLAN_CALL_TIMEOUT_MS,
			    &lists[n], &e) < 0) {
			json_object_set_new(jh, "unreachable", json_string(e.msg));
			fm_error_clear(&e);
			json_decref(infos[n]);
			infos[n] = NULL;
			continue;
		}
		snprintf(names[n], sizeof(names[n]), "%s", name);
		json_t *res = json_object_get(infos[n], "resources"), *cl;
		size_t k;
		ph[n] = (fm_place_host){ .name = names[n], .arch = json_string_value(json_object_get(json_object_get(infos[n],
			"capabilities"), "arch")), .cordoned = json_is_true(json_object_get(infos[n], "cordoned")),
			.cpu_cap = (double)json_integer_value(json_object_get(res, "cpus")),
			.mem_cap = (double)json_integer_value(json_object_get(res, "mem_total_bytes")),
			.disk_free = json_is_integer(json_object_get(res, "disk_free_bytes"))
				     ? (double)json_integer_value(json_object_get(res, "disk_free_bytes")) : -1 };
		json_array_foreach(lists[n], k, cl) {
			json_t *u = json_object_get(cl, "usage");
			ph[n].cpu_load += mean_of(json_object_get(u, "cpu_utilization_percent")) / 100;
			ph[n].mem_load += mean_of(json_object_get(u, "memory_bytes"));
		}
		json_t *link = fm_journal_query_one(c->journal, "SELECT bps FROM links WHERE source = ? AND destination = ?",
						    "ss", c->host, name);
		ph[n].link_bps = json_real_value(json_object_get(link, "bps"));
		json_decref(link);
		if (local)
			self = n;
		json_object_set_new(jh, "cpus", json_real(ph[n].cpu_cap));
		json_object_set_new(jh, "cpu_load_cores", json_real(ph[n].cpu_load));
		json_object_set_new(jh, "memory_bytes", json_real(ph[n].mem_cap));
		json_object_set_new(jh, "memory_load_bytes", json_real(ph[n].mem_load));
		json_object_set_new(jh, "utilization", json_real(fm_place_util(&ph[n], 0, 0)));
		json_object_set_new(jh, "arch", json_string(ph[n].arch ? ph[n].arch : ""));
		json_object_set_new(jh, "cordoned", json_boolean(ph[n].cordoned));
		json_object_set_new(jh, "disk_free_bytes", ph[n].disk_free >= 0 ? json_real(ph[n].disk_free) : json_null());
		n++;
	}
	json_object_set_new(out, "host", json_string(c->host));
	json_object_set_new(out, "automatic", json_boolean(p->cfg.automatic));
	json_object_set_new(out, "thresholds", json_pack("{s:f, s:f, s:i, s:i, s:s, s:s}", "cpu_percent", p->cfg.cpu_pct,
		"memory_percent", p->cfg.mem_pct, "sustain_s", p->cfg.sustain_s, "horizon_s", FM_PLAN_HORIZON,
		"cpu_model", fm_forecast_method_name(FM_PLAN_MODEL_CPU), "memory_model",
		fm_forecast_method_name(FM_PLAN_MODEL_MEM)));
	json_object_set_new(out, "hosts", jhosts);
	json_object_set_new(out, "containers", jcont);
	if (n == 0 || !infos[self] || strcmp(names[self], c->host) != 0) {
		json_object_set_new(out, "overloaded", json_false());
		json_object_set_new(out, "why", json_string("this host's own figures are not available"));
		goto done;
	}

	/* this host's containers: class, now, forecast; and the host's series */
	double sum_cpu[FM_MONITOR_WINDOW] = { 0 }, sum_mem[FM_MONITOR_WINDOW] = { 0 };
	size_t sum_n = 0;
	candidate cand[256];
	double disk[256];
	size_t nc = 0;
	json_t *cl;
	json_array_foreach(lists[self], i, cl) {
		const char *name = json_string_value(json_object_get(cl, "name"));
		if (!name || nc == ARRAY_SIZE(cand) || strcmp(json_string_value(json_object_get(cl, "status")) ?: "", "running"))
			continue;
		double cpu[FM_MONITOR_WINDOW], mem[FM_MONITOR_WINDOW];
		size_t ncpu = fm_monitor_container_series(p->mon, name, FM_SERIES_CPU, cpu, FM_MONITOR_WINDOW);
		size_t nmem = fm_monitor_container_series(p->mon, name, FM_SERIES_MEM, mem, FM_MONITOR_WINDOW);
		if (ncpu == 0 || nmem == 0)
			continue; /* not sampled yet */
		for (size_t k = 0; k < ncpu; k++) /* aligned at the latest sample */
			sum_cpu[FM_MONITOR_WINDOW - ncpu + k] += cpu[k];
		for (size_t k = 0; k < nmem; k++)
			sum_mem[FM_MONITOR_WINDOW - nmem + k] += mem[k];
		sum_n = ncpu > sum_n ? ncpu : sum_n;
		disk[nc] = json_is_integer(json_object_get(cl, "rootfs_bytes")) ?
			   (double)json_integer_value(json_object_get(cl, "rootfs_bytes")) : 0;
		candidate *x = &cand[nc++];
		x->name = name;
		x->cpu_now = tail_mean(cpu, ncpu, (size_t)p->cfg.sustain_s) / 100;
		fm_forecast_spec fc = fm_planner_cpu_spec(ph[self].cpu_cap), fm = fm_planner_mem_spec(ph[self].mem_cap);
		x->cpu_fc = fm_forecast_run(&fc, cpu, ncpu) / 100;
		x->mem_now = mem[nmem - 1];
		x->mem_fc = fm_forecast_run(&fm, mem, nmem);
		json_t *u = json_object_get(cl, "usage");
		fm_workload_inputs in = {
			.cpu_cores = x->cpu_now,
			.cpu_limit_cores = (double)json_integer_value(json_object_get(cl, "cpu_milli")) / 1000,
			.mem_bytes = x->mem_now,
			.mem_limit_bytes = (double)json_integer_value(json_object_get(cl, "memory_bytes")),
			.io_bps = mean_of(json_object_get(u, "io_read_bps")) + mean_of(json_object_get(u, "io_write_bps")),
		};
		fm_workload_classify(&in, &x->prof);
		x->busy = cooling(p, name) ||
			  fm_journal_query_int(c->journal, 0, "SELECT COUNT(*) FROM migrations WHERE container = ? AND resolved = 0",
					       "s", name) > 0;
		json_array_append_new(jcont, json_pack("{s:s, s:s, s:{s:f, s:f, s:f}, s:f, s:f, s:f, s:f, s:b}", "name", name,
			"class", fm_workload_class_name(x->prof.cls), "pressure", "cpu", x->prof.cpu, "memory", x->prof.mem,
			"io", x->prof.io, "cpu_cores", x->cpu_now, "cpu_cores_forecast", x->cpu_fc, "memory_bytes", x->mem_now,
			"memory_bytes_forecast", x->mem_fc, "movable", !x->busy));
		json_object_set_new(json_array_get(jcont, json_array_size(jcont) - 1), "rootfs_bytes", json_real(disk[nc - 1]));
	}

	/* is this host overloaded: sustained and forecast */
	fm_place_host *s = &ph[self];
	const double *scpu = sum_cpu + FM_MONITOR_WINDOW - sum_n, *smem = sum_mem + FM_MONITOR_WINDOW - sum_n;
	double cpu_sus = sum_n ? tail_mean(scpu, sum_n, (size_t)p->cfg.sustain_s) / 100 / s->cpu_cap : 0;
	fm_forecast_spec fc = fm_planner_cpu_spec(s->cpu_cap), fm = fm_planner_mem_spec(s->mem_cap);
	double cpu_fc = sum_n ? fm_forecast_run(&fc, scpu, sum_n) / 100 / s->cpu_cap : 0;
	double mem_sus = sum_n ? tail_mean(smem, sum_n, (size_t)p->cfg.sustain_s) / s->mem_cap : 0;
	double mem_fc = sum_n ? fm_forecast_run(&fm, smem, sum_n) / s->mem_cap : 0;
	bool enough = sum_n >= (size_t)p->cfg.sustain_s;
	bool cpu_over = enough && cpu_sus * 100 > p->cfg.cpu_pct && cpu_fc * 100 > p->cfg.cpu_pct;
	bool mem_over = enough && mem_sus * 100 > p->cfg.mem_pct && mem_fc * 100 > p->cfg.mem_pct;
	char why[512];
	snprintf(why, sizeof(why), "containers use %.0f %% of %.0f cores over the last %d s, %.0f %% forecast in %d s; "
		 "memory %.0f %%, %.0f %% forecast%s", cpu_sus * 100, s->cpu_cap, p->cfg.sustain_s, cpu_fc * 100,
		 FM_PLAN_HORIZON, mem_sus * 100, mem_fc * 100, enough ? "" : " (not enough samples yet)");
	json_object_set_new(out, "overloaded", json_boolean(cpu_over || mem_over));
	json_object_set_new(out, "why", json_string(why));
	json_object_set_new(out, "cpu_share", json_pack("{s:f, s:f}", "sustained", cpu_sus, "forecast", cpu_fc));
	json_object_set_new(out, "memory_share", json_pack("{s:f, s:f}", "sustained", mem_sus, "forecast", mem_fc));
	if (!cpu_over && !mem_over)
		goto done;

	/* the move that helps most: source load as forecast, without the container */
	s->cpu_load = cpu_fc * s->cpu_cap;
	s->mem_load = mem_fc * s->mem_cap;
	double before = fm_place_util(s, 0, 0), best_gain = FM_PLAN_MIN_GAIN - 1e-9;
	json_t *move = NULL;
	char nowhere[1024] = "";
	for (size_t k = 0; k < nc; k++) {
		candidate *x = &cand[k];
		if (x->busy)
			continue;
		fm_place_item it = { .name = x->name, .arch = s->arch, .cpu = x->cpu_fc, .mem = x->mem_fc, .disk = disk[k] };
		double dst_after;
		char r[512];
		int d = fm_place_best(&it, ph, n, self, &dst_after, r, sizeof(r));
		if (d < 0) {
			snprintf(nowhere, sizeof(nowhere), "no host can take %s: %s", x->name, r);
			continue;
		}
		double src_after = fm_place_util(s, -x->cpu_fc, -x->mem_fc);
		double dcpu = (ph[d].cpu_load + x->cpu_fc) / ph[d].cpu_cap, dmem = (ph[d].mem_load + x->mem_fc) / ph[d].mem_cap;
		double gain = before - (src_after > dst_after ? src_after : dst_after);
		if (dcpu * 100 >= p->cfg.cpu_pct || dmem * 100 >= p->cfg.mem_pct) {
			snprintf(nowhere, sizeof(nowhere), "moving %s to %s would overload it (%.0f %% CPU, %.0f %% memory)",
				 x->name, ph[d].name, dcpu * 100, dmem * 100);
			continue;
		}
		if (gain > best_gain || (move && fabs(gain - best_gain) < 1e-9 &&
					 x->mem_fc < json_real_value(json_object_get(move, "memory_bytes")))) {
			best_gain = gain;
			json_decref(move);
			move = json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:f}", "container", x->name, "to", ph[d].name,
					 "strategy", "LIVE_MIGRATION", "class", fm_workload_class_name(x->prof.cls), "cpu_cores",
					 x->cpu_fc, "memory_bytes", x->mem_fc, "utilization_before", before,
					 "source_utilization_after", src_after, "destination_utilization_before",
					 fm_place_util(&ph[d], 0, 0), "destination_utilization_after", dst_after);
		}
	}
	if (move)
		json_object_set_new(out, "move", move);
	else
		json_object_set_new(out, "no_move", json_string(*nowhere ? nowhere : "no container's move would lower the "
								 "utilisation enough (or every one is resting or moving)"));
done:
	for (size_t k = 0; k < PLAN_MAX_HOSTS; k++) {
		json_decref(infos[k]);
		json_decref(lists[k]);
	}
	json_decref(hosts);
	return out;
}

/* One round of automatic mode. */
static void plan_and_act(fm_planner *p)
{
	json_t *plan = fm_planner_plan(p), *mv = json_object_get(plan, "move");
	if (!json_is_true(json_object_get(plan, "overloaded")))
		goto out;
	if (!mv) {
		fm_info(FM_C_DECISION_ENGINE, "Host %s overloaded (%s), but %s", p->ctl->host,
			json_string_value(json_object_get(plan, "why")), json_string_value(json_object_get(plan, "no_move")));
		goto out;
	}
	const char *name = json_string_value(json_object_get(mv, "container"));
	const char *to = json_string_value(json_object_get(mv, "to"));
	char reason[1024], id[32];
	snprintf(reason, sizeof(reason), "host %s overloaded (%s): moving %s (%s, %.2f cores, %.0f MiB forecast) to %s, "
		 "utilisation %.0f %% -> %.0f %% here, %.0f %% -> %.0f %% there", p->ctl->host,
		 json_string_value(json_object_get(plan, "why")), name, json_string_value(json_object_get(mv, "class")),
		 json_real_value(json_object_get(mv, "cpu_cores")), json_real_value(json_object_get(mv, "memory_bytes")) / 1048576,
		 to, 100 * json_real_value(json_object_get(mv, "utilization_before")),
		 100 * json_real_value(json_object_get(mv, "source_utilization_after")),
		 100 * json_real_value(json_object_get(mv, "destination_utilization_before")),
		 100 * json_real_value(json_object_get(mv, "destination_utilization_after")));
	json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:s}", "container", name, "to", to, "from", p->ctl->host, "strategy",
				"LIVE_MIGRATION", "reason", reason);
	fm_error e = FM_ERROR_INIT;
	cool_down(p, name); /* tried: it rests, whatever comes of it */
	if (fm_ctl_submit(p->ctl, req, id, sizeof(id), &e) == 0)
		fm_info(FM_C_DECISION_ENGINE, "Submitted migration %s: %s", id, reason);
	else
		fm_warn(FM_C_DECISION_ENGINE, "Could not submit the move of %s to %s: %s", name, to, e.msg);
	fm_error_clear(&e);
	json_decref(req);
out:
	json_decref(plan);
}

static void plan_round(void *opaque)
{
	plan_and_act(opaque);
}

int fm_planner_start(fm_planner *p)
{
	if (!p->cfg.automatic)
		return 0;
	if (fm_periodic_start(&p->rounds, (int64_t)p->cfg.interval_s * 1000000, false, plan_round, p) < 0)
		return -EAGAIN;
	fm_info(FM_C_DECISION_ENGINE, "Automatic mode: planning every %d s; a host is overloaded above %.0f %% CPU or %.0f %% "
		"memory, sustained %d s and forecast %d s ahead (CPU: %s, memory: %s)", p->cfg.interval_s, p->cfg.cpu_pct,
		p->cfg.mem_pct, p->cfg.sustain_s, FM_PLAN_HORIZON, fm_forecast_method_name(FM_PLAN_MODEL_CPU),
		fm_forecast_method_name(FM_PLAN_MODEL_MEM));
	return 0;
}

void fm_planner_free(fm_planner *p)
{
	if (!p)
		return;
	fm_periodic_stop(&p->rounds);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
