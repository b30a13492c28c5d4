/* fm-decision-eval: measures the Decision Engine on recorded traces.
 *
 *   fm-decision-eval forecast [--horizons 5,10,30] TRACE.csv...
 *       walk-forward forecast error of every model on every trace's CPU and
 *       memory series, made exactly as the Migration Planner makes them
 *       (fm_planner_cpu_spec / fm_planner_mem_spec: its window, its clamps),
 *       at each horizon; MAPE (percent) and MAE over the points whose actual
 *       value is at least 5 % of a core or 1 MiB
 *   fm-decision-eval placement [--cases N] [--seed S] TRACE.csv...
 *       the Resource Optimizer's greedy placement against the exhaustive
 *       oracle on N small cases (2-4 hosts, 2-7 containers) whose containers
 *       are the traces' measured demands at points of the recordings (CPU:
 *       the minute's mean, memory: the level) and whose hosts have generated
 *       capacities and background loads (a seeded generator: test data)
 *
 * A trace is CSV: "t_s,cpu_percent,memory_bytes", one row a second, as
 * bench/decision records it from a daemon's Resource Monitor.  Output: one
 * JSON document on stdout. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decision/forecast.h"
#include "decision/optimizer.h"
#include "manager/planner.h"
#include "monitor/monitor.h"

#define MAX_POINTS 100000
#define CPU_FLOOR 5.0              /* percent of a core */
#define MEM_FLOOR (1024.0 * 1024)  /* bytes */

typedef struct trace {
	char name[128];
	double *cpu, *mem;
	size_t n;
} trace;

static int load(const char *path, trace *t)
{
	FILE *f = fopen(path, "r");
	char line[256];
	if (!f)
		return -errno;
	const char *base = strrchr(path, '/');
	snprintf(t->name, sizeof(t->name), "%s", base ? base + 1 : path);
	char *dot = strrchr(t->name, '.');
	if (dot)
		*dot = '\0';
	t->cpu = calloc(MAX_POINTS, sizeof(double));
	t->mem = calloc(MAX_POINTS, sizeof(double));
	t->n = 0;
	while (fgets(line, sizeof(line), f) && t->n < MAX_POINTS) {
		double ts, c, m;
		if (sscanf(line, "%lf,%lf,%lf", &ts, &c, &m) == 3)
			t->cpu[t->n] = c, t->mem[t->n++] = m;
	}
	fclose(f);
	return t->n ? 0 : -EBADMSG;
}

/* A small deterministic generator for the cases (data, not a measurement). */
static uint64_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return *s >> 33;
}

static int forecast(trace *tr, size_t nt, const int *horizons, size_t nh)
{
	json_t *out = json_object(), *rows = json_array();
	json_object_set_new(out, "floors", json_pack("{s:f, s:f}", "cpu_percent", CPU_FLOOR, "memory_bytes", MEM_FLOOR));
	json_object_set_new(out, "window", json_integer(FM_MONITOR_WINDOW));
	json_object_set_new(out, "planner_models", json_pack("{s:s, s:s}", "cpu", fm_forecast_method_name(FM_PLAN_MODEL_CPU),
							       "memory", fm_forecast_method_name(FM_PLAN_MODEL_MEM)));
	json_object_set_new(out, "planner_horizon", json_integer(FM_PLAN_HORIZON));
	for (size_t i = 0; i < nt; i++)
		for (int series = 0; series < 2; series++)
			for (size_t h = 0; h < nh; h++)
				for (int m = 0; m < _FM_FORECAST_MAX; m++) {
					/* cores: generous (the trace's host had 2; the clamp only cuts nonsense) */
					fm_forecast_spec s = series ? fm_planner_mem_spec(1e15) : fm_planner_cpu_spec(64);
					s.method = (fm_forecast_method)m;
					s.steps = horizons[h];
					fm_forecast_error e;
					fm_forecast_mape(&s, series ? tr[i].mem : tr[i].cpu, tr[i].n, FM_MONITOR_WINDOW,
							 series ? MEM_FLOOR : CPU_FLOOR, &e);
					json_array_append_new(rows, json_pack("{s:s, s:s, s:i, s:s, s:o, s:o, s:I}", "trace", tr[i].name,
						"series", series ? "memory" : "cpu", "horizon_s", horizons[h], "model",
						fm_forecast_method_name((fm_forecast_method)m),
						"mape_pct", isnan(e.mape) ? json_null() : json_real(e.mape),
						"mae", isnan(e.mae) ? json_null() : json_real(e.mae), "points", (json_int_t)e.points));
				}
	json_object_set_new(out, "results", rows);
	json_dumpf(out, stdout, JSON_INDENT(1));
	putchar('\n');
	json_decref(out);
	return 0;
}

static int placement(trace *tr, size_t nt, int cases, uint64_t seed)
{
	const uint64_t seed0 = seed;
	double sum = 0, worst = 1;
	int optimal = 0, both = 0, greedy_failed = 0, infeasible = 0;
	for (int c = 0; c < cases; c++) {
		size_t n = 2 + rnd(&seed) % 3, k = 2 + rnd(&seed) % 6;
		fm_place_host h[4];
		fm_place_item it[7];
		for (size_t j = 0; j < n; j++) {
			double cores = (double)(2 << (rnd(&seed) % 3));           /* 2, 4, 8 */
			double mem = (double)(256 << (rnd(&seed) % 4)) * 1048576;  /* 256 MiB .. 2 GiB */
			h[j] = (fm_place_host){ .name = "h", .cpu_cap = cores, .cpu_load = cores * (double)(rnd(&seed) % 50) / 100,
						.mem_cap = mem, .mem_load = mem * (double)(rnd(&seed) % 50) / 100, .disk_free = -1 };
		}
		for (size_t i = 0; i < k; i++) {
			const trace *t = &tr[rnd(&seed) % nt];
			size_t at = FM_MONITOR_WINDOW + rnd(&seed) % (t->n > FM_MONITOR_WINDOW ? t->n - FM_MONITOR_WINDOW : 1);
			if (at >= t->n)
				at = t->n - 1;
			double cpu = 0;
			size_t from = at >= FM_MONITOR_WINDOW ? at - FM_MONITOR_WINDOW : 0;
			for (size_t p = from; p <= at; p++)
				cpu += t->cpu[p] / 100 / (double)(at - from + 1);
			it[i] = (fm_place_item){ .name = t->name, .cpu = cpu, .mem = t->mem[at] };
		}
		int ag[7], ae[7];
		double g = fm_place_greedy(it, k, h, n, ag), e = fm_place_exhaustive(it, k, h, n, ae);
		if (isinf(e)) {
			infeasible++;
			continue;
		}
		if (isinf(g)) {
			greedy_failed++;
			continue;
		}
		both++;
		double r = e > 0 ? g / e : 1;
		sum += r;
		worst = r > worst ? r : worst;
		optimal += r <= 1 + 1e-9;
	}
	json_t *out = json_pack("{s:i, s:I, s:i, s:i, s:i, s:f, s:f, s:f}", "cases", cases, "seed", (json_int_t)seed0,
				"infeasible_for_the_oracle", infeasible, "greedy_found_none", greedy_failed, "compared", both,
				"mean_ratio", both ? sum / both : NAN, "worst_ratio", worst,
				"optimal_share", both ? (double)optimal / both : NAN);
	json_dumpf(out, stdout, JSON_INDENT(1));
	putchar('\n');
	json_decref(out);
	return 0;
}

int main(int argc, char **argv)
{
	int horizons[8] = { 5, 10, 30 }, cases = 1000;
	size_t nh = 3;
	uint64_t seed = 1;
	int i = 2;

	if (argc < 3 || (strcmp(argv[1], "forecast") && strcmp(argv[1], "placement"))) {
		fprintf(stderr, "usage: fm-decision-eval forecast [--horizons 5,10,30] TRACE.csv...\n"
				"       fm-decision-eval placement [--cases N] [--seed S] TRACE.csv...\n");
		return 2;
	}
	for (; i + 1 < argc && !strncmp(argv[i], "--", 2); i += 2) {
		if (!strcmp(argv[i], "--horizons")) {
			nh = 0;
			for (char *p = argv[i + 1]; *p && nh < 8; p += *p == ',')
				horizons[nh++] = (int)strtol(p, &p, 10);
		} else if (!strcmp(argv[i], "--cases")) {
			cases = atoi(argv[i + 1]);
		} else if (!strcmp(argv[i], "--seed")) {
			seed = strtoull(argv[i + 1], NULL, 10);
		} else {
			fprintf(stderr, "fm-decision-eval: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	size_t nt = (size_t)(argc - i);
	trace *tr = calloc(nt ? nt : 1, sizeof(*tr));
	for (size_t k = 0; k < nt; k++)
		if (load(argv[i + (int)k], &tr[k]) < 0) {
			fprintf(stderr, "fm-decision-eval: cannot read the trace %s\n", argv[i + (int)k]);
			return 1;
		}
	if (nt == 0) {
		fprintf(stderr, "fm-decision-eval: no traces\n");
		return 2;
	}
	int r = !strcmp(argv[1], "forecast") ? forecast(tr, nt, horizons, nh) : placement(tr, nt, cases, seed);
	for (size_t k = 0; k < nt; k++)
		free(tr[k].cpu), free(tr[k].mem);
	free(tr);
	return r;
}
