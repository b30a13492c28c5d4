/* Unit tests: the FSM table (manager/fsm.c) and the coordinator driving it against
 * a fake agent (no processes, no network): the happy path, a failure in every
 * state with its rollback calls, and transitions journaled in order. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "basic/log.h"
#include "basic/util.h"
#include "manager/coordinator.h"
#include "manager/fsm.h"

static void test_table(void **state)
{
	fm_mstate work[] = { FM_MS_PENDING, FM_MS_PLANNING, FM_MS_PREPARATION, FM_MS_EXECUTION, FM_MS_VERIFICATION };
	for (size_t i = 0; i < 5; i++) {
		assert_true(fm_fsm_allowed(work[i], FM_MS_FAILED));
		assert_int_equal(fm_fsm_failure_target(work[i]), FM_MS_FAILED);
		assert_true(fm_fsm_allowed(work[i], (fm_mstate)(work[i] + 1)));
		assert_false(fm_fsm_allowed(work[i], FM_MS_ROLLBACK));
	}
	assert_true(fm_fsm_allowed(FM_MS_FAILED, FM_MS_ROLLBACK));
	assert_true(fm_fsm_allowed(FM_MS_ROLLBACK, FM_MS_FAILED));
	assert_false(fm_fsm_allowed(FM_MS_COMPLETED, FM_MS_FAILED));
	assert_false(fm_fsm_allowed(FM_MS_COMPLETED, FM_MS_ROLLBACK));
	assert_false(fm_fsm_allowed(FM_MS_PENDING, FM_MS_PREPARATION)); /* no skipping */
	assert_false(fm_fsm_allowed(FM_MS_EXECUTION, FM_MS_PLANNING));  /* never backwards */
	assert_false(fm_fsm_allowed(FM_MS_FAILED, FM_MS_COMPLETED));
	assert_false(fm_fsm_allowed((fm_mstate)0, FM_MS_PENDING));
	assert_false(fm_fsm_allowed(FM_MS_PENDING, (fm_mstate)99));
	assert_string_equal(fm_fsm_failure_path(FM_MS_PENDING), "1F");
	assert_string_equal(fm_fsm_failure_path(FM_MS_VERIFICATION), "5F");
	assert_null(fm_fsm_failure_path(FM_MS_COMPLETED));
	for (int s = FM_MS_PENDING; s < _FM_MS_MAX; s++)
		assert_int_equal(fm_mstate_from_name(fm_mstate_name((fm_mstate)s)), s);
	assert_int_equal(fm_mstate_name(FM_MS_PENDING)[0], 'P');
	assert_int_equal(FM_MS_FAILED, 8); /* numbered as in the paper */
	assert_int_equal(fm_mstate_from_name("bogus"), _FM_MS_INVALID);
}

static void test_strategy_names(void **state)
{
	assert_int_equal(fm_strategy_from_name("cold"), FM_STRATEGY_COLD);
	assert_int_equal(fm_strategy_from_name("COLD_MIGRATION"), FM_STRATEGY_COLD);
	assert_int_equal(fm_strategy_from_name("post-copy"), FM_STRATEGY_POST_COPY);
	assert_int_equal(fm_strategy_from_name("Live"), FM_STRATEGY_LIVE);
	assert_int_equal(fm_strategy_from_name("warp"), _FM_STRATEGY_INVALID);
	assert_int_equal(fm_strategy_from_name(NULL), _FM_STRATEGY_INVALID);
	assert_string_equal(fm_strategy_name(FM_STRATEGY_HYBRID), "HYBRID");
}

/* ---------------------------------------------------------------- fake agent */

static struct {
	char fail_path[64];     /* a path suffix that fails, e.g. "/prepare" */
	int fail_errno;
	char calls[8192];       /* "METHOD path;" in order */
	bool dirty_track;       /* the source kernel tracks dirty memory (PRE_COPY/HYBRID) */
	json_int_t predump_bytes[8]; /* what each pre-copy round sends */
	int rounds;             /* pre-copy rounds seen */
	json_t *checkpoint;     /* the last checkpoint request */
	char throttles[128];    /* cpu_percent of each throttle call */
	pthread_mutex_t lock;
} fake = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int fake_agent_call(const char *ep, const char *method, const char *path, json_t *body, int timeout_ms,
			   json_t **out, fm_error *err)
{
	pthread_mutex_lock(&fake.lock);
	snprintf(fake.calls + strlen(fake.calls), sizeof(fake.calls) - strlen(fake.calls), "%s %s %s;", ep, method,
		 path);
	bool fail = fake.fail_path[0] && strstr(path, fake.fail_path) &&
		    strlen(strstr(path, fake.fail_path)) == strlen(fake.fail_path);
	pthread_mutex_unlock(&fake.lock);
	if (out)
		*out = NULL;
	if (fail)
		return fm_error_set(err, -fake.fail_errno, "fake failure of %s", path);
	json_t *o;
	if (!strcmp(path, "/v1/info"))
		o = json_pack("{s:{s:b, s:s, s:b, s:b, s:i}}", "capabilities", "criu_ok", 1, "criu_version", "4.2.1",
			      "mem_dirty_track", fake.dirty_track, "lazy_pages", 1, "pipe_max_size", 4 << 20);
	else if (strstr(path, "/predump")) {
		json_int_t b = fake.predump_bytes[fake.rounds < 8 ? fake.rounds : 7];
		fake.rounds++;
		o = json_pack("{s:I, s:I, s:f}", "pages_raw_tx", b, "pages_wire_tx", b, "predump_ms", 1.0);
	} else if (strstr(path, "/pages_open"))
		o = json_pack("{s:s, s:i}", "data_host", "127.0.0.1", "page_relay_port", 555);
	else if (strstr(path, "/throttle")) {
		snprintf(fake.throttles + strlen(fake.throttles), sizeof(fake.throttles) - strlen(fake.throttles), "%d ",
			 (int)json_integer_value(json_object_get(body, "cpu_percent")));
		o = json_object();
	}
	else if (!strncmp(path, "/v1/containers/", 15))
		o = json_pack("{s:s, s:s, s:s, s:[s], s:i, s:i}", "status", "running", "image", "busybox", "digest",
			      "sha256:0000000000000000000000000000000000000000000000000000000000000000", "args", "/bin/sh",
			      "cpu_milli", 0, "memory_bytes", 0);
	else if (strstr(path, "/prepare"))
		o = json_pack("{s:s, s:i, s:s}", "data_host", "127.0.0.1", "port", 1234, "token", "00");
	else if (strstr(path, "/checkpoint") && (json_decref(fake.checkpoint), fake.checkpoint = json_deep_copy(body)))
		o = json_pack("{s:f, s:f, s:f, s:i, s:f, s:i}", "freeze_ms", 1.0, "dump_ms", 2.0, "transfer_ms", 3.0,
			      "wire_bytes", 4096, "rate_bps", 1e6, "entries", 3);
	else
		o = json_object();
	if (out)
		*out = o;
	else
		json_decref(o);
	return 0;
}

static fm_journal *open_tmp_journal(char *path)
{
	fm_journal *j;
	strcpy(path, "/tmp/fm-test-fsm.XXXXXX");
	int fd = mkstemp(path);
	close(fd);
	assert_int_equal(fm_journal_open(path, &j, NULL), 0);
	return j;
}

static json_t *run_req(const char *fail_path, int fail_errno, json_t *extra, char *calls, size_t calls_len);

/* Runs one migration hostA -> hostB with the fake agent, failing at fail_path. */
static json_t *run_one(const char *fail_path, int fail_errno, char *calls, size_t calls_len)
{
	return run_req(fail_path, fail_errno, NULL, calls, calls_len);
}

/* The same with more request fields (consumed). */
static json_t *run_req(const char *fail_path, int fail_errno, json_t *extra, char *calls, size_t calls_len)
{
	char path[64], id[32];
	fm_controller c;
	fm_journal *j = open_tmp_journal(path);
	json_t *m;

	snprintf(fake.fail_path, sizeof(fake.fail_path), "%s", fail_path ? fail_path : "");
	fake.fail_errno = fail_errno;
	fake.calls[0] = '\0';
	fm_ctl_init(&c, j, "hostA", "A:1", fake_agent_call);
	assert_int_equal(fm_ctl_host_add(&c, "hostB", "B:1", NULL), 0);
	json_t *req = json_pack("{s:s, s:s, s:s}", "container", "c1", "to", "hostB", "from", "hostA");
	if (extra)
		json_object_update_new(req, extra);
	fake.rounds = 0;
	fake.throttles[0] = '\0';
	assert_int_equal(fm_ctl_submit(&c, req, id, sizeof(id), NULL), 0);
	json_decref(req); /* submit keeps its own copy */
	fm_ctl_fini(&c); /* waits for the migration thread */
	fm_ctl_init(&c, j, "hostA", "A:1", fake_agent_call);
	m = fm_ctl_get(&c, id, 0);
	fm_ctl_fini(&c);
	fm_journal_close(j);
	unlink(path);
	snprintf(calls, calls_len, "%s", fake.calls);
	return m;
}

static char *states_of(json_t *m)
{
	static char buf[512];
	size_t i;
	json_t *t;
	buf[0] = '\0';
	json_array_foreach(json_object_get(m, "transitions"), i, t) {
		strcat(buf, json_string_value(json_object_get(t, "to")));
		strcat(buf, " ");
	}
	return buf;
}

static void test_happy_path(void **state)
{
	char calls[8192];
	json_t *m = run_one(NULL, 0, calls, sizeof(calls));
	assert_string_equal(states_of(m), "PENDING PLANNING PREPARATION EXECUTION VERIFICATION COMPLETED ");
	assert_string_equal(json_string_value(json_object_get(m, "state")), "COMPLETED");
	assert_true(json_is_true(json_object_get(m, "finished")));
	assert_int_equal(json_integer_value(json_object_get(m, "bytes_transferred")), 4096);
	assert_true(json_is_integer(json_object_get(m, "downtime_ms")));
	/* order: reserve before prepare before checkpoint before restore before cleanup */
	const char *order[] = { "/reserve", "/prepare", "/checkpoint", "/restore", "/verify", "/cleanup", "/commit" };
	const char *p = calls;
	for (size_t i = 0; i < 7; i++) {
		const char *q = strstr(p, order[i]);
		assert_non_null(q);
		p = q;
	}
	assert_null(strstr(calls, "/abort"));
	assert_null(strstr(calls, "/resume"));
	/* the seed-format log ends with the final state */
	json_t *ev = json_object_get(m, "events");
	const char *last = json_string_value(json_object_get(json_array_get(ev, json_array_size(ev) - 1), "message"));
	assert_non_null(strstr(last, "Final State: COMPLETED"));
	json_decref(m);
}

/* PRE_COPY that converges: rounds until one sends fewer than MIN_PAGES pages,
 * then a final dump whose parent is the last round, to a page server. */
static void test_pre_copy_converges(void **state)
{
	char calls[8192];
	(void)state;
	fake.dirty_track = true;
	json_int_t b[] = { 64 << 20, 8 << 20, 2 << 20 };
	memcpy(fake.predump_bytes, b, sizeof(b));
	json_t *m = run_req(NULL, 0, json_pack("{s:s}", "strategy", "PRE_COPY"), calls, sizeof(calls));
	assert_string_equal(json_string_value(json_object_get(m, "state")), "COMPLETED");
	assert_int_equal(fake.rounds, 3);
	assert_int_equal(json_integer_value(json_object_get(fake.checkpoint, "parent_round")), 3);
	assert_false(json_is_true(json_object_get(fake.checkpoint, "lazy")));
	assert_int_equal(json_integer_value(json_object_get(json_object_get(fake.checkpoint, "page_relay"), "port")), 555);
	assert_int_equal(json_integer_value(json_object_get(m, "bytes_transferred")), (64 << 20) + (10 << 20) + 4096);
	assert_null(strstr(calls, "/throttle"));
	fake.dirty_track = false;
	json_decref(m);
}

/* HYBRID whose rounds stop shrinking switches to a lazy final dump. */
static void test_hybrid_switches_to_post_copy(void **state)
{
	char calls[8192];
	(void)state;
	fake.dirty_track = true;
	json_int_t b[] = { 64 << 20, 60 << 20 };
	memcpy(fake.predump_bytes, b, sizeof(b));
	json_t *m = run_req(NULL, 0, json_pack("{s:s}", "strategy", "HYBRID"), calls, sizeof(calls));
	assert_string_equal(json_string_value(json_object_get(m, "state")), "COMPLETED");
	assert_int_equal(fake.rounds, 2);
	assert_true(json_is_true(json_object_get(fake.checkpoint, "lazy")));
	assert_int_equal(json_integer_value(json_object_get(fake.checkpoint, "parent_round")), 2);
	assert_non_null(strstr(calls, "/pages;")); /* VERIFICATION waits for the pages */
	fake.dirty_track = false;
	json_decref(m);
}

/* HYBRID whose rounds settle on a small working set makes a final dump. */
static void test_hybrid_plateau_is_converged(void **state)
{
	char calls[8192];
	(void)state;
	fake.dirty_track = true;
	json_int_t b[] = { 64 << 20, 8 << 20, 8 << 20 };
	memcpy(fake.predump_bytes, b, sizeof(b));
	json_t *m = run_req(NULL, 0, json_pack("{s:s, s:b}", "strategy", "HYBRID", "auto_converge", 1), calls,
			    sizeof(calls));
	assert_string_equal(json_string_value(json_object_get(m, "state")), "COMPLETED");
	assert_int_equal(fake.rounds, 3);
	assert_false(json_is_true(json_object_get(fake.checkpoint, "lazy")));
	assert_null(strstr(calls, "/throttle"));
	fake.dirty_track = false;
	json_decref(m);
}

/* Auto-converge: each round that does not shrink lowers the CPU quota one step;
 * when the steps are spent, pre-copy stops and makes its final dump. */
static void test_auto_converge_steps(void **state)
{
	char calls[8192];
	(void)state;
	fake.dirty_track = true;
	json_int_t b[] = { 64 << 20, 60 << 20, 58 << 20, 57 << 20, 56 << 20, 55 << 20 };
	memcpy(fake.predump_bytes, b, sizeof(b));
	json_t *m = run_req(NULL, 0, json_pack("{s:s, s:b}", "strategy", "PRE_COPY", "auto_converge", 1), calls,
			    sizeof(calls));
	assert_string_equal(json_string_value(json_object_get(m, "state")), "COMPLETED");
	assert_string_equal(fake.throttles, "50 25 10 ");
	assert_int_equal(fake.rounds, 5);
	assert_int_equal(json_integer_value(json_object_get(fake.checkpoint, "parent_round")), 5);
	fake.dirty_track = false;
	json_decref(m);
}

/* A failure in each state ends FAILED -> ROLLBACK -> FAILED with the right undo. */
static void test_failures(void **state)
{
	static const struct {
		const char *fail;
		int err;
		const char *failed_in;
		bool expect_abort, expect_resume;
	} cases[] = {
		{ "/v1/containers/c1", ENOENT, "PENDING", false, false },
		{ "/reserve", ENOSPC, "PLANNING", true, false },
		{ "/prepare", ENOENT, "PREPARATION", true, false },
		{ "/cpuinfo/check", EPERM, "PREPARATION", true, false },
		{ "/checkpoint", EIO, "EXECUTION", true, true },
		{ "/restore", EIO, "EXECUTION", true, true },
		{ "/verify", EIO, "VERIFICATION", true, true },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char calls[8192], want[128];
		json_t *m = run_one(cases[i].fail, cases[i].err, calls, sizeof(calls));
		snprintf(want, sizeof(want), "FAILED ROLLBACK FAILED ");
		const char *s = states_of(m);
		assert_non_null(strstr(s, want));
		assert_string_equal(json_string_value(json_object_get(m, "state")), "FAILED");
		assert_true(json_is_true(json_object_get(m, "finished")));
		const char *emsg = json_string_value(json_object_get(m, "error"));
		assert_true(strstr(emsg, "fake failure") || strstr(emsg, "unknown container c1"));
		/* the failing state is the one before the first FAILED */
		json_t *tr = json_object_get(m, "transitions");
		size_t k;
		json_t *t;
		json_array_foreach(tr, k, t) if (!strcmp(json_string_value(json_object_get(t, "to")), "FAILED")) {
			assert_string_equal(json_string_value(json_object_get(t, "from")), cases[i].failed_in);
			break;
		}
		assert_int_equal(strstr(calls, "/abort") != NULL, cases[i].expect_abort);
		assert_int_equal(strstr(calls, "/resume") != NULL, cases[i].expect_resume);
		assert_null(strstr(calls, "/cleanup")); /* the source copy is never deleted */
		if (cases[i].expect_abort && cases[i].expect_resume)
			assert_true(strstr(calls, "/abort") < strstr(calls, "/resume")); /* never two copies */
		json_decref(m);
	}
}

int main(void)
{
	fm_log_setup("test", FM_LOG_ERROR + 1, -1, -1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_strategy_names),
		cmocka_unit_test(test_happy_path),
		cmocka_unit_test(test_pre_copy_converges),
		cmocka_unit_test(test_hybrid_switches_to_post_copy),
		cmocka_unit_test(test_hybrid_plateau_is_converged),
		cmocka_unit_test(test_auto_converge_steps),
		cmocka_unit_test(test_failures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
