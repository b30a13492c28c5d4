#include "monitor/analyzer.h"

#include <gsl/gsl_errno.h>
#include <gsl/gsl_fit.h>
#include <math.h>
#include <pthread.h>

static void quiet(void)
{
	gsl_set_error_handler_off();
}

void fm_gsl_quiet(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, quiet);
}

static size_t cap_of(const fm_window *w)
{
	return w->cap && w->cap <= FM_WINDOW_MAX ? w->cap : FM_WINDOW_MAX;
}

void fm_window_push(fm_window *w, int64_t t_us, double v)
{
	size_t cap = cap_of(w);
	if (w->n < cap) {
		size_t i = (w->head + w->n) % cap;
		w->t_us[i] = t_us;
		w->v[i] = v;
		w->n++;
	} else {
		w->t_us[w->head] = t_us;
		w->v[w->head] = v;
		w->head = (w->head + 1) % cap;
	}
}

void fm_window_at(const fm_window *w, size_t i, int64_t *t_us, double *v)
{
	size_t k = (w->head + i) % cap_of(w);
	*t_us = w->t_us[k];
	*v = w->v[k];
}

void fm_window_stats_get(const fm_window *w, fm_window_stats *s)
{
	double x[FM_WINDOW_MAX], y[FM_WINDOW_MAX], sum = 0;
	int64_t t0 = 0, t;

	*s = (fm_window_stats){ .n = w->n };
	if (w->n == 0)
		return;
	for (size_t i = 0; i < w->n; i++) {
		fm_window_at(w, i, &t, &y[i]);
		if (i == 0)
			t0 = t;
		x[i] = (double)(t - t0) / 60e6; /* minutes */
		sum += y[i];
		s->min = i == 0 || y[i] < s->min ? y[i] : s->min;
		s->max = i == 0 || y[i] > s->max ? y[i] : s->max;
	}
	s->last = y[w->n - 1];
	s->mean = sum / (double)w->n;
	s->span_s = x[w->n - 1] * 60.0;
	if (w->n >= 3 && x[w->n - 1] > 0) {
		fm_gsl_quiet();
		double c0, c1, cov00, cov01, cov11, sumsq;
		if (gsl_fit_linear(x, 1, y, 1, w->n, &c0, &c1, &cov00, &cov01, &cov11, &sumsq) == 0 && isfinite(c1))
			s->slope_per_min = c1;
	}
}

bool fm_window_sustained_above(const fm_window *w, double threshold, double seconds)
{
	int64_t t_last, t;
	double v;
	if (w->n == 0)
		return false;
	fm_window_at(w, w->n - 1, &t_last, &v);
	bool covered = false;
	for (size_t i = w->n; i-- > 0;) {
		fm_window_at(w, i, &t, &v);
		if (v <= threshold)
			return false;
		if ((double)(t_last - t) / 1e6 >= seconds) {
			covered = true;
			break;
		}
	}
	return covered;
}

double fm_congestion_probability(double rho, double loss_ratio)
{
	double p_queue = 0, p_loss = 0;
	if (rho >= 0 && isfinite(rho))
		p_queue = pow(rho > 1 ? 1 : rho, FM_CONGESTION_QUEUE + 1);
	if (loss_ratio > 0 && isfinite(loss_ratio))
		p_loss = loss_ratio >= FM_CONGESTION_LOSS_FULL ? 1 : loss_ratio / FM_CONGESTION_LOSS_FULL;
	return p_queue > p_loss ? p_queue : p_loss;
}
