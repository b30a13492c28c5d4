/* Decision Engine, Workload Analyzer's forecasts: a container's (or a host's)
 * CPU and memory a few samples ahead, from the series the Resource Monitor
 * keeps.  Models, fitted on the series as it grows (online):
 *
 *   FM_FORECAST_LAST   the last value (the naive baseline every model must beat)
 *   FM_FORECAST_HOLT   Holt's linear exponential smoothing: level and trend
 *                      updated at each sample (alpha, beta below)
 *   FM_FORECAST_AR     an autoregressive model of order FM_FORECAST_AR_ORDER
 *                      with intercept, fitted by least squares (GSL) over the
 *                      last FM_FORECAST_AR_WINDOW samples, iterated ahead
 *
 * Forecasts stay within the series' range widened by its width on either side
 * (a model fitted on a flat stretch could extrapolate without bound), and
 * within [lo, hi] (a share cannot be negative, a host has only so many
 * cores).  fm_forecast_mape() measures a model on a recorded
 * series: walk-forward, each point predicted only from the points before it. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

typedef enum fm_forecast_method {
	FM_FORECAST_LAST,
	FM_FORECAST_HOLT,
	FM_FORECAST_AR,
	_FM_FORECAST_MAX,
} fm_forecast_method;

#define FM_FORECAST_HOLT_ALPHA 0.5
#define FM_FORECAST_HOLT_BETA 0.1
#define FM_FORECAST_AR_ORDER 3
#define FM_FORECAST_AR_WINDOW 60

const char *fm_forecast_method_name(fm_forecast_method m);

/* The value `steps` samples after the last of y[0..n-1], clamped to [lo, hi];
 * with fewer points than the model needs, the last value. */
double fm_forecast(fm_forecast_method m, const double *y, size_t n, int steps, double lo, double hi);

/* A forecast as the Migration Planner makes it: from the last `window`
 * points only (what the Resource Monitor keeps; 0: all), and for a level
 * that seldom falls (memory: floor_at_min) never below the window's
 * smallest value. */
typedef struct fm_forecast_spec {
	fm_forecast_method method;
	int steps;
	size_t window;
	double lo, hi;
	bool floor_at_min;
} fm_forecast_spec;
double fm_forecast_run(const fm_forecast_spec *s, const double *y, size_t n);

typedef struct fm_forecast_error {
	double mape;        /* mean absolute percentage error, percent, over the points counted */
	double mae;         /* mean absolute error, over the same points */
	size_t points;      /* predicted points whose actual value was at least `floor` */
} fm_forecast_error;

/* Walk-forward over y: from point `warmup` on, each y[t + steps] is predicted
 * from y[0..t] as s says.  Points whose actual value is below floor are left
 * out of both errors (a percentage of almost nothing says nothing). */
void fm_forecast_mape(const fm_forecast_spec *s, const double *y, size_t n, size_t warmup, double floor,
		      fm_forecast_error *out);
