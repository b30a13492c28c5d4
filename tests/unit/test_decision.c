/* Unit tests: the Decision Engine's pure parts: classification
 * (decision/workload.c), forecasts and their walk-forward error
 * (decision/forecast.c), placement, greedy and exhaustive
 * (decision/optimizer.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "basic/util.h"
#include "decision/forecast.h"
#include "decision/optimizer.h"
#include "decision/workload.h"

static void test_classify(void **state)
{
	static const struct {
		fm_workload_inputs in;
		fm_workload_class want;
	} cases[] = {
		{ { .cpu_cores = 0.95, .mem_bytes = 8 << 20 }, FM_WORKLOAD_CPU },
		{ { .cpu_cores = 0.3, .cpu_limit_cores = 0.5, .mem_bytes = 8 << 20 }, FM_WORKLOAD_CPU }, /* 60 % of its limit */
		{ { .cpu_cores = 0.2, .mem_bytes = 900.0 * 1048576 }, FM_WORKLOAD_MEMORY },
		{ { .cpu_cores = 0.2, .mem_bytes = 100.0 * 1048576, .mem_limit_bytes = 128.0 * 1048576 }, FM_WORKLOAD_MEMORY },
		{ { .cpu_cores = 0.1, .mem_bytes = 8 << 20, .io_bps = 40e6 }, FM_WORKLOAD_IO },
		{ { .cpu_cores = 0.01, .mem_bytes = 1 << 20 }, FM_WORKLOAD_IDLE },
		{ { .cpu_cores = 0.6, .mem_bytes = 600.0 * 1048576 }, FM_WORKLOAD_CPU }, /* 0.6 vs 0.586: CPU */
		{ { .cpu_cores = NAN }, FM_WORKLOAD_IDLE },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		fm_workload_profile p;
		fm_workload_classify(&cases[i].in, &p);
		if (p.cls != cases[i].want)
			fail_msg("case %zu: %s, want %s", i, fm_workload_class_name(p.cls), fm_workload_class_name(cases[i].want));
	}
	assert_string_equal(fm_workload_class_name(FM_WORKLOAD_MEMORY), "memory-bound");
}

static void test_forecast(void **state)
{
	double line[40], wave[200];
	for (int i = 0; i < 40; i++)
		line[i] = 10 + 2.0 * i;
	/* a linear trend: Holt and AR extrapolate it, the last value lags */
	double h = fm_forecast(FM_FORECAST_HOLT, line, 40, 5, 0, 1000);
	double a = fm_forecast(FM_FORECAST_AR, line, 40, 5, 0, 1000);
	double l = fm_forecast(FM_FORECAST_LAST, line, 40, 5, 0, 1000);
	assert_true(fabs(l - 88) < 1e-9);
	assert_true(fabs(h - 98) < 0.5);
	assert_true(fabs(a - 98) < 1e-6);
	/* clamped */
	assert_true(fm_forecast(FM_FORECAST_HOLT, line, 40, 100, 0, 100) == 100);
	double down[3] = { 3, 2, 1 };
	assert_true(fm_forecast(FM_FORECAST_HOLT, down, 3, 10, 0, 100) == 0);
	/* too short for AR: the last value */
	assert_true(fm_forecast(FM_FORECAST_AR, down, 3, 2, 0, 100) == 1);
	assert_true(fm_forecast(FM_FORECAST_HOLT, NULL, 0, 2, 5, 100) == 5);

	/* a periodic load (period 20 samples): AR follows the phase; its
	 * walk-forward error is well below the naive one */
	for (int i = 0; i < 200; i++)
		wave[i] = 50 + 30 * sin(2 * M_PI * i / 20.0);
	fm_forecast_error eh, ea, el;
	fm_forecast_spec sl = { FM_FORECAST_LAST, 5, 60, 0, 100, false }, sh = sl, sa = sl;
	sh.method = FM_FORECAST_HOLT;
	sa.method = FM_FORECAST_AR;
	fm_forecast_mape(&sl, wave, 200, 60, 1, &el);
	fm_forecast_mape(&sh, wave, 200, 60, 1, &eh);
	fm_forecast_mape(&sa, wave, 200, 60, 1, &ea);
	assert_int_equal(el.points, 135);
	assert_true(el.mape > 40);
	assert_true(ea.mape < 1 && ea.mae < 0.5);
	/* floor: nothing counted, no number made up */
	double zeros[100] = { 0 };
	fm_forecast_mape(&sl, zeros, 100, 10, 1, &el);
	assert_int_equal(el.points, 0);
	assert_true(isnan(el.mape));
	assert_string_equal(fm_forecast_method_name(FM_FORECAST_AR), "AR(3)");
	/* the planner's memory rule: a falling forecast stops at the window's minimum */
	double mem[10] = { 9, 9, 8, 8, 7, 7, 6, 6, 5, 5 };
	fm_forecast_spec sm = { FM_FORECAST_HOLT, 30, 4, 0, 100, true };
	assert_true(fm_forecast_run(&sm, mem, 10) == 5);
	sm.floor_at_min = false;
	assert_true(fm_forecast_run(&sm, mem, 10) < 5);
}

static void test_place_best(void **state)
{
	fm_place_host h[] = {
		{ .name = "src", .arch = "x86_64", .cpu_cap = 2, .cpu_load = 1.9, .mem_cap = 4e9, .mem_load = 1e9, .disk_free = -1 },
		{ .name = "arm", .arch = "aarch64", .cpu_cap = 8, .cpu_load = 0, .mem_cap = 16e9, .disk_free = -1 },
		{ .name = "busy", .arch = "x86_64", .cpu_cap = 2, .cpu_load = 1.5, .mem_cap = 4e9, .mem_load = 1e9, .disk_free = -1 },
		{ .name = "small", .arch = "x86_64", .cpu_cap = 4, .cpu_load = 0, .mem_cap = 1e9, .mem_load = 0.5e9, .disk_free = -1 },
		{ .name = "free", .arch = "x86_64", .cpu_cap = 4, .cpu_load = 0.4, .mem_cap = 8e9, .mem_load = 1e9, .disk_free = 1e9 },
		{ .name = "off", .arch = "x86_64", .cordoned = true, .cpu_cap = 64, .mem_cap = 64e9, .disk_free = -1 },
	};
	fm_place_item it = { .name = "c", .arch = "x86_64", .cpu = 0.9, .mem = 0.5e9, .disk = 1e6 };
	double u;
	char why[512];
	int b = fm_place_best(&it, h, ARRAY_SIZE(h), 0, &u, why, sizeof(why));
	assert_int_equal(b, 4);
	assert_true(fabs(u - (1.3 / 4)) < 1e-9);
	assert_non_null(strstr(why, "arm: CPU architecture aarch64, not x86_64"));
	assert_non_null(strstr(why, "small: memory"));
	assert_non_null(strstr(why, "off: cordoned"));
	/* its disk does not fit there: the next best */
	it.disk = 2e9;
	b = fm_place_best(&it, h, ARRAY_SIZE(h), 0, &u, why, sizeof(why));
	assert_int_equal(b, 2);
	assert_non_null(strstr(why, "free: disk"));
	/* nowhere */
	it.mem = 20e9;
	assert_int_equal(fm_place_best(&it, h, ARRAY_SIZE(h), 0, &u, why, sizeof(why)), -1);
	/* equal hosts: the faster link */
	fm_place_host two[] = {
		{ .name = "a", .cpu_cap = 2, .mem_cap = 4e9, .disk_free = -1, .link_bps = 1e8 },
		{ .name = "b", .cpu_cap = 2, .mem_cap = 4e9, .disk_free = -1, .link_bps = 1e9 },
		{ .name = "src", .cpu_cap = 2, .mem_cap = 4e9, .disk_free = -1 },
	};
	fm_place_item small = { .name = "s", .cpu = 0.1, .mem = 1e6 };
	assert_int_equal(fm_place_best(&small, two, 3, 2, &u, why, sizeof(why)), 1);
}

/* A small deterministic generator for test instances (data, not a measurement). */
static uint64_t lcg(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return *s >> 33;
}

static void test_greedy_vs_exhaustive(void **state)
{
	/* a case the greedy gets wrong: 3+3 and 2+2+2 on two hosts of 6 */
	fm_place_host h2[] = { { .name = "a", .cpu_cap = 6, .mem_cap = 1e12, .disk_free = -1 },
			       { .name = "b", .cpu_cap = 6, .mem_cap = 1e12, .disk_free = -1 } };
	fm_place_item it5[] = { { .name = "1", .cpu = 3 }, { .name = "2", .cpu = 3 }, { .name = "3", .cpu = 2 },
				{ .name = "4", .cpu = 2 }, { .name = "5", .cpu = 2 } };
	int ag[5], ae[5];
	double g = fm_place_greedy(it5, 5, h2, 2, ag);
	double e = fm_place_exhaustive(it5, 5, h2, 2, ae);
	assert_true(fabs(e - 1.0) < 1e-9);       /* 3+3 | 2+2+2 */
	assert_true(fabs(g - 7.0 / 6) < 1e-9);   /* 3+2+2 | 3+2 */
	assert_true(fabs(fm_place_objective(it5, 5, h2, 2, ae) - e) < 1e-12);

	/* random small cases: the oracle is never worse, the greedy always feasible when it is */
	uint64_t seed = 42;
	for (int round = 0; round < 200; round++) {
		size_t n = 2 + lcg(&seed) % 3, k = 1 + lcg(&seed) % 6;
		fm_place_host hs[4];
		fm_place_item is[6];
		for (size_t j = 0; j < n; j++)
			hs[j] = (fm_place_host){ .name = "h", .cpu_cap = (double)(2 + lcg(&seed) % 7),
						 .cpu_load = (double)(lcg(&seed) % 100) / 100,
						 .mem_cap = 8e9, .mem_load = (double)(lcg(&seed) % 4) * 1e9, .disk_free = -1 };
		for (size_t i = 0; i < k; i++)
			is[i] = (fm_place_item){ .name = "c", .cpu = (double)(lcg(&seed) % 200) / 100,
						 .mem = (double)(lcg(&seed) % 30) * 1e8 };
		int a1[6], a2[6];
		double gv = fm_place_greedy(is, k, hs, n, a1), ev = fm_place_exhaustive(is, k, hs, n, a2);
		assert_true(ev <= gv + 1e-12);
		if (isfinite(gv))
			assert_true(fabs(fm_place_objective(is, k, hs, n, a1) - gv) < 1e-12);
	}
	/* too many for the oracle */
	fm_place_item many[30];
	int am[30];
	memset(many, 0, sizeof(many));
	assert_true(isinf(fm_place_exhaustive(many, 30, h2, 2, am)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_forecast),
		cmocka_unit_test(test_place_best),
		cmocka_unit_test(test_greedy_vs_exhaustive),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
