/* Decision Engine, Migration Planner: decides what this host should move
 * away, where, and (in automatic mode) submits it.
 *
 * Each daemon plans for its own host, from
 *   - its containers' CPU and memory series (its Resource Monitor), each
 *     classified (decision/workload.h) and forecast FM_PLAN_HORIZON samples
 *     ahead (decision/forecast.h: CPU with FM_PLAN_MODEL_CPU, memory with
 *     FM_PLAN_MODEL_MEM, the models that measured best 30 s ahead on our
 *     recorded traces, bench/results/decision.md);
 *   - every known host's /v1/info (cores, memory, CPU architecture,
 *     cordoned) and its containers' usage, for where things could go.
 * A host's load is what its containers use (their cgroups): it belongs to
 * one host even where hosts share a machine (namespace hosts), and it is what
 * moving containers can change.  Utilisation = max(CPU cores used / cores,
 * memory used / memory).
 *
 * This host is overloaded when its CPU share is above cpu_pct (or its memory
 * share above mem_pct) both on average over the last sustain_s seconds and in
 * the forecast: sustained, and not about to end.  Then the planner proposes
 * the one move that lowers the highest utilisation of source and destination
 * most (at least FM_PLAN_MIN_GAIN), with the destination staying under the
 * thresholds, chosen by the Resource Optimizer (decision/optimizer.h); the
 * strategy is LIVE_MIGRATION (the Strategy Selector's choice).  In automatic
 * mode it submits that move; PLANNING's policies still decide it, and the
 * admission queue orders it.  A container moved (or tried) rests
 * FM_PLAN_COOLDOWN_S before it is considered again. */
#pragma once
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>

#include "decision/forecast.h"
#include "manager/coordinator.h"

struct fm_monitor;

#define FM_PLAN_HORIZON 30          /* samples (seconds) ahead */
/* measured (bench/decision, 7 traces, 2026-12-06), mean MAPE 30 s ahead:
 * CPU: AR(3) 48.6 %, last value 85.5 %, Holt 119 %;
 * memory: last value 26.5 %, AR(3) 35.9 %, Holt 36.3 % */
#define FM_PLAN_MODEL_CPU FM_FORECAST_AR
#define FM_PLAN_MODEL_MEM FM_FORECAST_LAST
#define FM_PLAN_MIN_GAIN 0.10
#define FM_PLAN_COOLDOWN_S 300

typedef struct fm_planner_config {
	bool automatic;             /* submit the moves (default off) */
	double cpu_pct, mem_pct;    /* thresholds (default 85, 90) */
	int sustain_s;              /* default 30 */
	int interval_s;             /* how often automatic mode plans (default 30) */
} fm_planner_config;

#define FM_PLANNER_CONFIG_DEFAULT { false, 85, 90, 30, 30 }

typedef struct fm_planner fm_planner;

/* How the planner forecasts a series: CPU in percent of one core (up to
 * cores), memory in bytes (up to bytes, never below the window's least);
 * FM_PLAN_MODEL_CPU and _MEM, FM_PLAN_HORIZON ahead, over the monitor's window.
 * The benchmark measures exactly these (tools/decision_eval.c). */
fm_forecast_spec fm_planner_cpu_spec(double cores);
fm_forecast_spec fm_planner_mem_spec(double bytes);

fm_planner *fm_planner_new(fm_controller *ctl, struct fm_monitor *mon, const fm_planner_config *cfg);
/* Automatic mode: plans every interval in a thread of its own. */
int fm_planner_start(fm_planner *p);
void fm_planner_free(fm_planner *p);

/* The plan now (docs/api.md, GET /v1/plan): hosts, containers with class and
 * forecast, whether this host is overloaded and why, the proposed move. */
json_t *fm_planner_plan(fm_planner *p);
