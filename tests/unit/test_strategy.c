/* Strategy Selector: which strategy LIVE_MIGRATION becomes, from the measured
 * memory, working set and link rate, and what it says about it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "manager/strategy.h"

static json_t *caps(bool lazy, bool dirty)
{
	return json_pack("{s:b, s:b, s:b, s:i}", "criu_ok", 1, "lazy_pages", lazy, "mem_dirty_track", dirty,
			 "pipe_max_size", 4 << 20);
}

static fm_strategy pick(fm_strategy req, fm_strategy_inputs *in, char *reason, int *code)
{
	fm_strategy s = _FM_STRATEGY_INVALID;
	fm_error err = FM_ERROR_INIT;
	*code = fm_strategy_select(req, in, &s, reason, 1024, &err);
	fm_error_clear(&err);
	return s;
}

static void test_live_small_memory_goes_cold(void **state)
{
	(void)state;
	char reason[1024];
	int code;
	fm_strategy_inputs in = { .src_caps = caps(true, false), .memory_bytes = 8 << 20, .link_bps = 941e6,
				  .link_origin = "measured by migration m1" };
	assert_int_equal(pick(FM_STRATEGY_LIVE, &in, reason, &code), FM_STRATEGY_COLD);
	assert_int_equal(code, 0);
	assert_non_null(strstr(reason, "crosses in about 71 ms"));
	assert_non_null(strstr(reason, "link 941 Mbit/s (measured by migration m1)"));
	json_decref(in.src_caps);
}

static void test_live_large_memory_goes_post_copy_and_says_why(void **state)
{
	(void)state;
	char reason[1024];
	int code;
	fm_strategy_inputs in = { .src_caps = caps(true, false), .memory_bytes = 1ull << 30,
				  .touched_bytes = 16 << 20, .touched_interval_ms = 500, .link_bps = 941e6,
				  .link_origin = "the --bandwidth cap" };
	assert_int_equal(pick(FM_STRATEGY_LIVE, &in, reason, &code), FM_STRATEGY_POST_COPY);
	assert_non_null(strstr(reason, "all memory follows in about 9.1 s"));
	assert_non_null(strstr(reason, "page faults for roughly 0.1 s"));
	assert_non_null(strstr(reason, "touched 16.0 MiB in 500 ms"));
	json_decref(in.src_caps);
}

static void test_live_unknown_link_prefers_post_copy(void **state)
{
	(void)state;
	char reason[1024];
	int code;
	fm_strategy_inputs in = { .src_caps = caps(true, false), .memory_bytes = 8 << 20 };
	assert_int_equal(pick(FM_STRATEGY_LIVE, &in, reason, &code), FM_STRATEGY_POST_COPY);
	assert_non_null(strstr(reason, "link rate unknown"));
	json_decref(in.src_caps);
}

static void test_live_without_lazy_pages_goes_cold(void **state)
{
	(void)state;
	char reason[1024];
	int code;
	fm_strategy_inputs in = { .src_caps = caps(false, false), .memory_bytes = 1ull << 30, .link_bps = 1e8 };
	assert_int_equal(pick(FM_STRATEGY_LIVE, &in, reason, &code), FM_STRATEGY_COLD);
	assert_non_null(strstr(reason, "no live strategy works"));
	json_decref(in.src_caps);
}

static void test_pre_copy_needs_dirty_tracking(void **state)
{
	(void)state;
	char reason[1024];
	int code;
	fm_strategy_inputs in = { .src_caps = caps(true, false) };
	pick(FM_STRATEGY_PRE_COPY, &in, reason, &code);
	assert_int_equal(code, -ENOTSUP);
	pick(FM_STRATEGY_HYBRID, &in, reason, &code);
	assert_int_equal(code, -ENOTSUP);
	json_decref(in.src_caps);
}

static void test_live_with_dirty_tracking(void **state)
{
	(void)state;
	char reason[1024];
	int code;
	/* touches 10 MiB per 500 ms = 168 Mbit/s, link 941: pre-copy converges */
	fm_strategy_inputs in = { .src_caps = caps(true, true), .memory_bytes = 1ull << 30,
				  .touched_bytes = 10 << 20, .touched_interval_ms = 500, .link_bps = 941e6 };
	assert_int_equal(pick(FM_STRATEGY_LIVE, &in, reason, &code), FM_STRATEGY_PRE_COPY);
	assert_non_null(strstr(reason, "pre-copy rounds converge"));
	/* touches 200 MiB per 500 ms: faster than the link, HYBRID */
	in.touched_bytes = 200 << 20;
	assert_int_equal(pick(FM_STRATEGY_LIVE, &in, reason, &code), FM_STRATEGY_HYBRID);
	assert_non_null(strstr(reason, "post-copy takes over"));
	/* HYBRID needs lazy pages */
	json_decref(in.src_caps);
	in.src_caps = caps(false, true);
	pick(FM_STRATEGY_HYBRID, &in, reason, &code);
	assert_int_equal(code, -ENOTSUP);
	assert_int_equal(pick(FM_STRATEGY_PRE_COPY, &in, reason, &code), FM_STRATEGY_PRE_COPY);
	assert_int_equal(code, 0);
	json_decref(in.src_caps);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_live_small_memory_goes_cold),
		cmocka_unit_test(test_live_large_memory_goes_post_copy_and_says_why),
		cmocka_unit_test(test_live_unknown_link_prefers_post_copy),
		cmocka_unit_test(test_live_without_lazy_pages_goes_cold),
		cmocka_unit_test(test_pre_copy_needs_dirty_tracking),
		cmocka_unit_test(test_live_with_dirty_tracking),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
