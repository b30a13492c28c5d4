/* Unit tests: the FSM table (manager/fsm.c) and the coordinator driving it against
 * a fake agent (no processes, no network): the happy path, a failure in every
 * state with its rollback calls, and transitions journaled in order; the
 * policies' ACTIONS and CONSTRAINTS (admission queue, migration_duration,
 * prefer_strategy, the load-balancer hook). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "basic/log.h"
#include "basic/util.h"
#include "manager/coordinator.h"
#include "manager/fsm.h"
#include "manager/lb_hook.h"
#include "manager/policy.h"

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
	char calls[32768];      /* "METHOD path;" in order */
	bool dirty_track;       /* the source kernel tracks dirty memory (PRE_COPY/HYBRID) */
	json_int_t predump_bytes[8]; /* what each pre-copy round sends */
	int rounds;             /* pre-copy rounds seen */
	json_t *checkpoint;     /* the last checkpoint request */
	json_t *restore;        /* the last restore request */
	char throttles[128];    /* cpu_percent of each throttle call */
	bool gate;              /* /restore waits for a release or an abort of its migration */
	int releases;
	char aborted[8][32];    /* migrations whose destination was aborted */
	int naborted;
	fm_journal *journal;    /* the controller's, while run_req runs */
	int64_t restore_marked; /* steps 'restore' and 'checkpoint' journaled when /restore came */
	pthread_mutex_t lock;
	pthread_cond_t cond;
} fake = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

/* "/v1/agent/migrations/ID/STEP": is ID among the aborted ones?  (under fake.lock) */
static bool fake_aborted(const char *path)
{
	for (int i = 0; i < fake.naborted; i++)
		if (strstr(path, fake.aborted[i]))
			return true;
	return false;
}

static int fake_agent_call(const char *ep, const char *method, const char *path, json_t *body, int timeout_ms,
			   json_t **out, fm_error *err)
{
	pthread_mutex_lock(&fake.lock);
	snprintf(fake.calls + strlen(fake.calls), sizeof(fake.calls) - strlen(fake.calls), "%s %s %s;", ep, method,
		 path);
	bool fail = fake.fail_path[0] && strstr(path, fake.fail_path) &&
		    strlen(strstr(path, fake.fail_path)) == strlen(fake.fail_path);
	const char *tail = strrchr(path, '/');
	if (!strncmp(path, "/v1/agent/migrations/", 21) && !strcmp(tail, "/abort") && fake.naborted < 8) {
		snprintf(fake.aborted[fake.naborted++], sizeof(fake.aborted[0]), "%.*s", (int)(tail - path - 21), path + 21);
		pthread_cond_broadcast(&fake.cond);
	}
	if (fake.journal && !strcmp(tail, "/restore"))
		/* durable before the destination may restore: a restarted controller
		 * must know a copy may run there */
		fake.restore_marked = fm_journal_query_int(fake.journal, -1, "SELECT COUNT(*) FROM steps WHERE "
							   "(step = 'restore' AND status = 'started') OR (step = "
							   "'checkpoint' AND status = 'done')", "");
	if (fake.gate && !strcmp(tail, "/restore")) {
		while (!fake.releases && !fake_aborted(path))
			pthread_cond_wait(&fake.cond, &fake.lock);
		if (fake_aborted(path))
			fail = true;
		else
			fake.releases--;
	}
	pthread_mutex_unlock(&fake.lock);
	if (out)
		*out = NULL;
	if (fail)
		return fm_error_set(err, -fake.fail_errno, "fake failure of %s", path);
	json_t *o;
	if (!strcmp(tail, "/restore")) {
		json_decref(fake.restore);
		fake.restore = json_deep_copy(body);
	}
	if (!strcmp(path, "/v1/info"))
		o = json_pack("{s:{s:b, s:s, s:b, s:b, s:i, s:b}}", "capabilities", "criu_ok", 1, "criu_version", "4.2.1",
			      "mem_dirty_track", fake.dirty_track, "lazy_pages", 1, "pipe_max_size", 4 << 20,
			      "restore_hold", 1);
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
typedef struct { fm_controller *c; const char *id; const char *text; } event_probe;
static void wait_until(bool (*cond)(void *), void *opaque, const char *what);
static bool finished(void *opaque);

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
	fake.journal = j;
	fake.restore_marked = -1;
	assert_int_equal(fm_ctl_submit(&c, req, id, sizeof(id), NULL), 0);
	json_decref(req); /* submit keeps its own copy */
	/* (a controller stopping meanwhile would keep it PENDING for its next start) */
	event_probe fin = { &c, id, NULL };
	wait_until(finished, &fin, "the migration");
	fm_ctl_fini(&c);
	fm_ctl_init(&c, j, "hostA", "A:1", fake_agent_call);
	m = fm_ctl_get(&c, id, 0);
	fm_ctl_fini(&c);
	fake.journal = NULL;
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
	assert_int_equal(fake.restore_marked, 2);
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

/* ---------------------------------------------------------------- policies' effects */

static void wait_until(bool (*cond)(void *), void *opaque, const char *what)
{
	for (int i = 0; i < 1000; i++) {
		if (cond(opaque))
			return;
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	}
	fail_msg("timed out waiting for %s", what);
}

static bool called(void *what)
{
	pthread_mutex_lock(&fake.lock);
	bool r = strstr(fake.calls, what) != NULL;
	pthread_mutex_unlock(&fake.lock);
	return r;
}

static bool has_event(void *opaque)
{
	event_probe *p = opaque;
	json_t *m = fm_ctl_get(p->c, p->id, 0);
	size_t i;
	json_t *e;
	bool r = false;
	json_array_foreach(json_object_get(m, "events"), i, e)
		r |= strstr(json_string_value(json_object_get(e, "message")), p->text) != NULL;
	json_decref(m);
	return r;
}

static bool finished(void *opaque)
{
	event_probe *p = opaque;
	json_t *m = fm_ctl_get(p->c, p->id, -1);
	bool r = json_is_true(json_object_get(m, "finished"));
	json_decref(m);
	return r;
}

static void release_one(void)
{
	pthread_mutex_lock(&fake.lock);
	fake.releases++;
	pthread_cond_broadcast(&fake.cond);
	pthread_mutex_unlock(&fake.lock);
}

/* A controller with these policies (JSON) and the fake agent. */
static void ctl_open(fm_controller *c, fm_journal **j, char *path, const char *policies)
{
	fm_policy_set *ps = NULL;
	fm_error e = FM_ERROR_INIT;
	*j = open_tmp_journal(path);
	memset(&fake.calls, 0, sizeof(fake.calls));
	fake.fail_path[0] = '\0';
	fake.releases = fake.naborted = 0;
	fm_ctl_init(c, *j, "hostA", "A:1", fake_agent_call);
	assert_int_equal(fm_ctl_host_add(c, "hostB", "B:1", NULL), 0);
	if (policies) {
		if (fm_policy_set_parse(policies, strlen(policies), "test", &ps, &e) < 0)
			fail_msg("%s", e.msg);
		fm_ctl_set_policies(c, ps);
	}
}

static void ctl_close(fm_controller *c, fm_journal *j, const char *path)
{
	fm_ctl_fini(c);
	fm_journal_close(j);
	unlink(path);
	fake.gate = false;
}

static void submit(fm_controller *c, const char *container, const char *priority, const char *strategy, char *id)
{
	json_t *req = json_pack("{s:s, s:s, s:s}", "container", container, "to", "hostB", "from", "hostA");
	if (priority)
		json_object_set_new(req, "priority", json_string(priority));
	if (strategy)
		json_object_set_new(req, "strategy", json_string(strategy));
	assert_int_equal(fm_ctl_submit(c, req, id, 32, NULL), 0);
	json_decref(req);
}

static json_t *get(fm_controller *c, const char *id)
{
	return fm_ctl_get(c, id, 0);
}

/* A controller whose policy allows one migration at a time, and a first
 * migration (c1) holding that slot: it waits in its restore. */
static void one_at_a_time(fm_controller *c, fm_journal **j, char *path, char *id1)
{
	char restore[64];
	ctl_open(c, j, path, "[{\"policy_name\": \"one_at_a_time\", \"CONTEXT\": [], \"CONDITIONS\": \"true\","
			     " \"ACTIONS\": [\"allow_migration\"], \"CONSTRAINTS\": {\"max_concurrent_migrations\": 1}}]");
	fake.gate = true;
	submit(c, "c1", NULL, NULL, id1);
	snprintf(restore, sizeof(restore), "%s/restore", id1);
	wait_until(called, restore, "the first migration's restore");
}

/* max_concurrent_migrations 1: the second and third requests wait in
 * PENDING and leave it in priority order, not arrival order; a waiting one
 * can be cancelled with nothing to roll back. */
static void test_admission_queue(void **state)
{
	fm_controller c;
	fm_journal *j;
	char path[64], id1[32], id2[32], id3[32], id4[32];
	one_at_a_time(&c, &j, path, id1);
	submit(&c, "c2", "low", NULL, id2);
	submit(&c, "c3", "high", NULL, id3);
	submit(&c, "c4", NULL, NULL, id4);
	event_probe q2 = { &c, id2, "Queued in PENDING (priority low; policy one_at_a_time allows 1 at a time): "
			   "1 migration under way" };
	event_probe q3 = { &c, id3, "Queued in PENDING (priority high" };
	event_probe q4 = { &c, id4, "Queued in PENDING (priority normal" };
	wait_until(has_event, &q2, "c2 queued");
	wait_until(has_event, &q3, "c3 queued");
	wait_until(has_event, &q4, "c4 queued");
	/* cancelled while waiting: FAILED in PENDING, nothing asked of the destination */
	assert_int_equal(fm_ctl_cancel(&c, id4, NULL), 0);
	event_probe f4 = { &c, id4, NULL };
	wait_until(finished, &f4, "c4 to fail");
	json_t *m4 = get(&c, id4);
	assert_string_equal(json_string_value(json_object_get(m4, "error")), "cancelled by the user in PENDING");
	assert_string_equal(states_of(m4), "PENDING FAILED ROLLBACK FAILED ");
	json_decref(m4);
	char p4[64];
	snprintf(p4, sizeof(p4), "%s/", id4);
	assert_false(called(p4));

	for (int i = 0; i < 3; i++)
		release_one();
	event_probe f2 = { &c, id2, NULL };
	wait_until(finished, &f2, "c2 to finish");
	/* c3 (high) reserved before c2 (low), though c2 asked first */
	char r2[64], r3[64];
	snprintf(r2, sizeof(r2), "%s/reserve", id2);
	snprintf(r3, sizeof(r3), "%s/reserve", id3);
	pthread_mutex_lock(&fake.lock);
	const char *a3 = strstr(fake.calls, r3), *a2 = strstr(fake.calls, r2);
	assert_non_null(a3);
	assert_non_null(a2);
	assert_true(a3 < a2);
	/* and never two at once: c1's commit before c3's reserve, c3's before c2's */
	char c1[64], c3[64];
	snprintf(c1, sizeof(c1), "%s/commit", id1);
	snprintf(c3, sizeof(c3), "%s/commit", id3);
	assert_true(strstr(fake.calls, c1) < a3);
	assert_true(strstr(fake.calls, c3) < a2);
	pthread_mutex_unlock(&fake.lock);
	const char *ids[] = { id1, id2, id3 };
	for (int i = 0; i < 3; i++) {
		json_t *m = get(&c, ids[i]);
		assert_string_equal(json_string_value(json_object_get(m, "state")), "COMPLETED");
		json_decref(m);
	}
	ctl_close(&c, j, path);
}

static void *fini_thread(void *c)
{
	fm_ctl_fini(c);
	return NULL;
}

static bool stopping(void *opaque)
{
	fm_controller *c = opaque;
	pthread_mutex_lock(&c->lock);
	bool r = c->stopping;
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* A controller that stops keeps a waiting request PENDING; its next start
 * takes it up again. */
static void test_queued_request_survives_a_restart(void **state)
{
	fm_controller c;
	fm_journal *j;
	pthread_t t;
	char path[64], id1[32], id2[32];
	one_at_a_time(&c, &j, path, id1);
	submit(&c, "c2", NULL, NULL, id2);
	event_probe q2 = { &c, id2, "Queued in PENDING" };
	wait_until(has_event, &q2, "c2 queued");
	assert_int_equal(pthread_create(&t, NULL, fini_thread, &c), 0);
	wait_until(stopping, &c, "the controller to stop");
	release_one();
	pthread_join(t, NULL);
	fm_ctl_init(&c, j, "hostA", "A:1", fake_agent_call);
	json_t *m = get(&c, id2);
	assert_string_equal(json_string_value(json_object_get(m, "state")), "PENDING");
	assert_false(json_is_true(json_object_get(m, "finished")));
	json_decref(m);
	release_one();
	fm_ctl_recover(&c);
	event_probe f2 = { &c, id2, NULL };
	wait_until(finished, &f2, "c2 after the restart");
	m = get(&c, id2);
	assert_string_equal(json_string_value(json_object_get(m, "state")), "COMPLETED");
	json_decref(m);
	ctl_close(&c, j, path);
}

/* migration_duration: a migration stuck before its point of no return is
 * aborted at its deadline and rolled back, saying which policy's limit. */
static void test_migration_duration(void **state)
{
	fm_controller c;
	fm_journal *j;
	char path[64], id[32];
	ctl_open(&c, &j, path, "[{\"policy_name\": \"quick\", \"CONTEXT\": [], \"CONDITIONS\": \"true\","
				" \"ACTIONS\": [\"allow_migration\"], \"CONSTRAINTS\": {\"migration_duration\": 1}}]");
	fake.gate = true; /* the restore never ends by itself */
	int64_t t0 = fm_now_mono_us();
	submit(&c, "c1", NULL, NULL, id);
	event_probe f = { &c, id, NULL };
	wait_until(finished, &f, "the deadline");
	double s = (double)(fm_now_mono_us() - t0) / 1e6;
	assert_true(s >= 1.0 && s < 5.0);
	json_t *m = get(&c, id);
	assert_string_equal(json_string_value(json_object_get(m, "error")),
			    "migration_duration exceeded: policy quick allows 1 s in EXECUTION");
	assert_string_equal(json_string_value(json_object_get(m, "state")), "FAILED");
	json_decref(m);
	assert_true(called("/abort"));
	assert_true(called("/resume"));
	assert_false(called("/cleanup"));
	ctl_close(&c, j, path);
}

/* prefer_strategy: taken when the request leaves the strategy open, not when
 * it names one. */
static void test_prefer_strategy(void **state)
{
	static const struct {
		const char *asked;
		bool lazy;
	} cases[] = { { NULL, true }, { "LIVE_MIGRATION", true }, { "COLD_MIGRATION", false } };
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		fm_controller c;
		fm_journal *j;
		char path[64], id[32];
		ctl_open(&c, &j, path, "[{\"policy_name\": \"lazy\", \"CONTEXT\": [], \"CONDITIONS\": \"true\","
					" \"ACTIONS\": [\"allow_migration\", \"prefer_strategy(\\\"POST_COPY\\\")\"]}]");
		submit(&c, "c1", NULL, cases[i].asked, id);
		event_probe f = { &c, id, NULL };
		wait_until(finished, &f, "the migration");
		json_t *m = get(&c, id);
		assert_string_equal(json_string_value(json_object_get(m, "state")), "COMPLETED");
		assert_string_equal(json_string_value(json_object_get(m, "strategy")), cases[i].lazy ? "POST_COPY" : "COLD_MIGRATION");
		json_decref(m);
		/* COLD too dumps lazily here (both hosts restore lazily): its
		 * restore is held until the memory is in, POST_COPY's is not */
		assert_true(json_is_true(json_object_get(fake.checkpoint, "lazy")));
		assert_int_equal(json_is_true(json_object_get(fake.restore, "hold")), !cases[i].lazy);
		event_probe said = { &c, id, cases[i].lazy ? "Policy lazy prefers POST_COPY: taken in place of"
							   : "Policy lazy prefers POST_COPY, but the request names COLD_MIGRATION" };
		assert_true(has_event(&said));
		ctl_close(&c, j, path);
	}
}

/* trigger_load_balancer_reconfiguration: the hook program gets the event on
 * its command line and the migration as JSON on stdin; at switchover, and
 * again at a rollback after it; a failing or hanging hook never changes
 * the migration's result. */
static void test_lb_hook(void **state)
{
	char dir[] = "/tmp/fm-test-lb.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char *script = fm_xasprintf("%s/hook", dir), *out = fm_xasprintf("%s/out", dir);
	static const struct {
		const char *body;  /* the hook's shell, after it saved its input */
		const char *fail;  /* fake agent failure */
		const char *state, *events, *said;
	} cases[] = {
		{ "echo routed", NULL, "COMPLETED", "switchover ", "Load balancer reconfigured for the switchover: " },
		{ "echo no backend >&2; exit 3", NULL, "COMPLETED", "switchover ",
		  "The load-balancer hook failed for the switchover (the migration goes on regardless): " },
		{ "sleep 30", NULL, "COMPLETED", "switchover ", "timed out after 500 ms and was killed" },
		{ "true", "/verify", "FAILED", "switchover rollback ", "Load balancer reconfigured for the rollback" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		FILE *f = fopen(script, "w");
		fprintf(f, "#!/bin/sh\nprintf '%%s ' \"$1\" >>%s/events\ncat >%s\n%s\n", dir, out, cases[i].body);
		fclose(f);
		chmod(script, 0700);
		char *events = fm_xasprintf("%s/events", dir);
		unlink(events);
		fm_controller c;
		fm_journal *j;
		fm_lb_hook *h;
		char path[64], id[32];
		ctl_open(&c, &j, path, "[{\"policy_name\": \"lb\", \"CONTEXT\": [], \"CONDITIONS\": \"true\","
					" \"ACTIONS\": [\"allow_migration\", \"trigger_load_balancer_reconfiguration\"]}]");
		assert_int_equal(fm_lb_hook_new(script, 500, NULL, &h, NULL), 0);
		fm_ctl_set_lb_hook(&c, h);
		if (cases[i].fail) {
			snprintf(fake.fail_path, sizeof(fake.fail_path), "%s", cases[i].fail);
			fake.fail_errno = EIO;
		}
		int64_t t0 = fm_now_mono_us();
		submit(&c, "c1", NULL, NULL, id);
		event_probe fin = { &c, id, NULL };
		wait_until(finished, &fin, "the migration");
		assert_true(fm_now_mono_us() - t0 < 5000000); /* the sleeping hook was cut short */
		json_t *m = get(&c, id);
		assert_string_equal(json_string_value(json_object_get(m, "state")), cases[i].state);
		json_decref(m);
		event_probe said = { &c, id, cases[i].said };
		if (!has_event(&said))
			fail_msg("case %zu: no event with \"%s\"", i, cases[i].said);
		char got[128] = "";
		f = fopen(events, "r");
		assert_non_null(f);
		assert_non_null(fgets(got, sizeof(got), f));
		fclose(f);
		assert_string_equal(got, cases[i].events);
		json_t *in = json_load_file(out, 0, NULL);
		assert_non_null(in);
		assert_string_equal(json_string_value(json_object_get(in, "migration")), id);
		assert_string_equal(json_string_value(json_object_get(in, "container")), "c1");
		assert_string_equal(json_string_value(json_object_get(in, "destination")), "hostB");
		assert_string_equal(json_string_value(json_object_get(in, "destination_address")), "B:1");
		assert_string_equal(json_string_value(json_object_get(in, "policy")), "lb");
		json_decref(in);
		free(events);
		ctl_close(&c, j, path);
	}
	/* what the daemon refuses at start */
	fm_lb_hook *h;
	fm_error e = FM_ERROR_INIT;
	assert_int_equal(fm_lb_hook_new("hook.sh", 1000, NULL, &h, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "absolute path"));
	fm_error_clear(&e);
	assert_int_equal(fm_lb_hook_new("/nonexistent/hook", 1000, NULL, &h, &e), -ENOENT);
	fm_error_clear(&e);
	assert_int_equal(fm_lb_hook_new("http://lb/x", 1000, NULL, &h, &e), -EINVAL);
	fm_error_clear(&e);
	unlink(script);
	unlink(out);
	rmdir(dir);
	free(script);
	free(out);
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
		cmocka_unit_test(test_admission_queue),
		cmocka_unit_test(test_queued_request_survives_a_restart),
		cmocka_unit_test(test_migration_duration),
		cmocka_unit_test(test_prefer_strategy),
		cmocka_unit_test(test_lb_hook),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
