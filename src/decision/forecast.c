#include "decision/forecast.h"

#include <gsl/gsl_errno.h>
#include <gsl/gsl_multifit.h>
#include <math.h>

#include "monitor/analyzer.h"

const char *fm_forecast_method_name(fm_forecast_method m)
{
#define STR_(x) #x
#define STR(x) STR_(x)
	static const char *const names[] = { "last value", "Holt", "AR(" STR(FM_FORECAST_AR_ORDER) ")" };
	return m < _FM_FORECAST_MAX ? names[m] : "?";
}

static double clamp(double v, double lo, double hi)
{
	return !isfinite(v) ? lo : v < lo ? lo : v > hi ? hi : v;
}

static double holt(const double *y, size_t n, int steps)
{
	double level = y[0], trend = n > 1 ? y[1] - y[0] : 0;
	for (size_t i = 1; i < n; i++) {
		double prev = level;
		level = FM_FORECAST_HOLT_ALPHA * y[i] + (1 - FM_FORECAST_HOLT_ALPHA) * (level + trend);
		trend = FM_FORECAST_HOLT_BETA * (level - prev) + (1 - FM_FORECAST_HOLT_BETA) * trend;
	}
	return level + steps * trend;
}

/* AR(p) with intercept over the last FM_FORECAST_AR_WINDOW points. */
static double ar(const double *y, size_t n, int steps, int *ok)
{
	const int p = FM_FORECAST_AR_ORDER;
	size_t start = n > FM_FORECAST_AR_WINDOW ? n - FM_FORECAST_AR_WINDOW : 0;
	const double *w = y + start;
	size_t m = n - start;
	*ok = 0;
	if (m < (size_t)(3 * (p + 1)))
		return w[m - 1];
	size_t rows = m - (size_t)p;
	fm_gsl_quiet();
	gsl_matrix *X = gsl_matrix_alloc(rows, (size_t)p + 1);
	gsl_vector *Y = gsl_vector_alloc(rows), *c = gsl_vector_alloc((size_t)p + 1);
	gsl_matrix *cov = gsl_matrix_alloc((size_t)p + 1, (size_t)p + 1);
	gsl_multifit_linear_workspace *ws = gsl_multifit_linear_alloc(rows, (size_t)p + 1);
	for (size_t r = 0; r < rows; r++) {
		gsl_matrix_set(X, r, 0, 1.0);
		for (int k = 1; k <= p; k++)
			gsl_matrix_set(X, r, (size_t)k, w[r + (size_t)p - (size_t)k]);
		gsl_vector_set(Y, r, w[r + (size_t)p]);
	}
	double chisq, out = w[m - 1];
	if (gsl_multifit_linear(X, Y, c, cov, &chisq, ws) == GSL_SUCCESS) {
		double hist[FM_FORECAST_AR_ORDER];
		for (int k = 0; k < p; k++)
			hist[k] = w[m - 1 - (size_t)k]; /* hist[0] is the latest */
		for (int s = 0; s < steps; s++) {
			double v = gsl_vector_get(c, 0);
			for (int k = 0; k < p; k++)
				v += gsl_vector_get(c, (size_t)k + 1) * hist[k];
			for (int k = p - 1; k > 0; k--)
				hist[k] = hist[k - 1];
			hist[0] = v;
		}
		out = hist[0];
		*ok = isfinite(out);
	}
	gsl_multifit_linear_free(ws);
	gsl_matrix_free(cov);
	gsl_vector_free(c);
	gsl_vector_free(Y);
	gsl_matrix_free(X);
	return out;
}

double fm_forecast(fm_forecast_method m, const double *y, size_t n, int steps, double lo, double hi)
{
	if (n == 0)
		return lo;
	double last = y[n - 1], v = last;
	int ok;
	switch (m) {
	case FM_FORECAST_HOLT:
		v = n >= 2 ? holt(y, n, steps) : last;
		break;
	case FM_FORECAST_AR:
		v = ar(y, n, steps, &ok);
		if (!ok)
			v = last;
		break;
	default:
		break;
	}
	/* a model fitted on a flat stretch can extrapolate without bound (an AR
	 * with a root outside the unit circle): a forecast stays within the
	 * series' range widened by its width on either side */
	double mn = y[0], mx = y[0];
	for (size_t i = 1; i < n; i++) {
		mn = y[i] < mn ? y[i] : mn;
		mx = y[i] > mx ? y[i] : mx;
	}
	v = clamp(v, mn - (mx - mn), mx + (mx - mn));
	return clamp(v, lo, hi);
}

double fm_forecast_run(const fm_forecast_spec *s, const double *y, size_t n)
{
	size_t from = s->window && n > s->window ? n - s->window : 0;
	double lo = s->lo;
	if (s->floor_at_min && n > from) {
		double m = y[from];
		for (size_t i = from + 1; i < n; i++)
			m = y[i] < m ? y[i] : m;
		lo = m > lo ? m : lo;
	}
	return fm_forecast(s->method, y + from, n - from, s->steps, lo, s->hi > lo ? s->hi : lo);
}

void fm_forecast_mape(const fm_forecast_spec *s, const double *y, size_t n, size_t warmup, double floor,
		      fm_forecast_error *out)
{
	double ape = 0, ae = 0;
	size_t k = 0;
	for (size_t t = warmup; t + (size_t)s->steps < n; t++) {
		double actual = y[t + (size_t)s->steps];
		if (actual < floor)
			continue;
		double f = fm_forecast_run(s, y, t + 1);
		ape += fabs(f - actual) / fabs(actual);
		ae += fabs(f - actual);
		k++;
	}
	out->points = k;
	out->mape = k ? 100.0 * ape / (double)k : NAN;
	out->mae = k ? ae / (double)k : NAN;
}
