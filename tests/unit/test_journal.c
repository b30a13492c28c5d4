/* Unit tests: the SQLite journal (store/journal.c) and controller recovery after a
 * crash, with a fake agent: a migration journaled mid-flight is rolled back, one
 * past the point of no return is rolled forward, each exactly once. */
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
#include "store/journal.h"

static char dbpath[64];

static fm_journal *fresh(void)
{
	fm_journal *j;
	strcpy(dbpath, "/tmp/fm-test-journal.XXXXXX");
	close(mkstemp(dbpath));
	assert_int_equal(fm_journal_open(dbpath, &j, NULL), 0);
	return j;
}

static void test_exec_query(void **state)
{
	fm_journal *j = fresh();
	assert_int_equal(fm_journal_exec(j, "INSERT INTO hosts(name, address, added_ms) VALUES(?, ?, ?)", "ssi", "h1",
					 "1.2.3.4:1", (int64_t)5), 1);
	/* duplicate primary key: a clear error, not a crash */
	assert_int_equal(fm_journal_exec(j, "INSERT INTO hosts(name, address, added_ms) VALUES(?, ?, ?)", "ssi", "h1",
					 "x", (int64_t)5), -EEXIST);
	json_t *row = fm_journal_query_one(j, "SELECT * FROM hosts WHERE name = ?", "s", "h1");
	assert_non_null(row);
	assert_string_equal(json_string_value(json_object_get(row, "address")), "1.2.3.4:1");
	assert_int_equal(json_integer_value(json_object_get(row, "added_ms")), 5);
	json_decref(row);
	assert_null(fm_journal_query_one(j, "SELECT * FROM hosts WHERE name = ?", "s", "nope"));
	assert_int_equal(fm_journal_query_int(j, -1, "SELECT COUNT(*) FROM hosts", NULL), 1);
	/* hostile strings are data, never SQL */
	assert_int_equal(fm_journal_exec(j, "INSERT INTO hosts(name, address, added_ms) VALUES(?, ?, ?)", "ssi",
					 "x'); DROP TABLE hosts; --", "a", (int64_t)1), 1);
	assert_int_equal(fm_journal_query_int(j, -1, "SELECT COUNT(*) FROM hosts", NULL), 2);
	/* a bad statement fails cleanly */
	assert_true(fm_journal_exec(j, "SELEKT nonsense", NULL) < 0);
	fm_journal_close(j);
	unlink(dbpath);
}

static void test_transaction_and_durability(void **state)
{
	fm_journal *j = fresh();
	assert_int_equal(fm_journal_begin(j), 0);
	fm_journal_exec(j, "INSERT INTO hosts(name, address, added_ms) VALUES('a', 'b', 1)", NULL);
	fm_journal_rollback(j);
	assert_int_equal(fm_journal_query_int(j, -1, "SELECT COUNT(*) FROM hosts", NULL), 0);
	assert_int_equal(fm_journal_begin(j), 0);
	fm_journal_exec(j, "INSERT INTO hosts(name, address, added_ms) VALUES('a', 'b', 1)", NULL);
	assert_int_equal(fm_journal_commit(j), 0);
	fm_journal_close(j);
	/* reopened: the committed row is there */
	assert_int_equal(fm_journal_open(dbpath, &j, NULL), 0);
	assert_int_equal(fm_journal_query_int(j, -1, "SELECT COUNT(*) FROM hosts", NULL), 1);
	fm_journal_close(j);
	unlink(dbpath);
}

/* ---------------------------------------------------------------- recovery */

static char calls[8192];
static pthread_mutex_t calls_lock = PTHREAD_MUTEX_INITIALIZER;

static int fake_agent_call(const char *ep, const char *method, const char *path, json_t *body, int timeout_ms,
			   json_t **out, fm_error *err)
{
	pthread_mutex_lock(&calls_lock);
	snprintf(calls + strlen(calls), sizeof(calls) - strlen(calls), "%s %s;", ep, path);
	pthread_mutex_unlock(&calls_lock);
	if (out)
		*out = json_object();
	return 0;
}

/* A migration as a controller killed in `state` left it. */
static void crashed(fm_journal *j, const char *id, const char *state, const char **steps, int pnr)
{
	fm_journal_exec(j, "INSERT INTO migrations(id, container, source, destination, strategy, state, created_ms,"
			" point_of_no_return, request) VALUES(?, 'c1', 'hostA', 'hostB', 'COLD_MIGRATION', ?, ?, ?, '{}')",
			"ssii", id, state, fm_now_wall_ms(), (int64_t)pnr);
	for (int i = 0; steps && steps[i]; i++)
		fm_journal_exec(j, "INSERT INTO steps(mid, step, status, at_ms) VALUES(?, ?, 'started', 0)", "ss", id, steps[i]);
}

static json_t *recover_and_get(fm_journal *j, const char *id)
{
	fm_controller c;
	calls[0] = '\0';
	fm_ctl_init(&c, j, "hostA", "A:1", fake_agent_call);
	fm_ctl_host_add(&c, "hostB", "B:1", NULL);
	fm_ctl_recover(&c);
	fm_ctl_fini(&c);
	fm_ctl_init(&c, j, "hostA", "A:1", fake_agent_call);
	json_t *m = fm_ctl_get(&c, id, 0);
	fm_ctl_fini(&c);
	return m;
}

static void test_recover_rollback(void **state)
{
	fm_journal *j = fresh();
	const char *steps[] = { "reserve", "prepare", "checkpoint", NULL };
	crashed(j, "m1", "EXECUTION", steps, 0);
	json_t *m = recover_and_get(j, "m1");
	assert_string_equal(json_string_value(json_object_get(m, "state")), "FAILED");
	assert_true(json_is_true(json_object_get(m, "finished")));
	assert_non_null(strstr(json_string_value(json_object_get(m, "error")), "restarted"));
	assert_non_null(strstr(calls, "B:1 /v1/agent/migrations/m1/abort"));
	assert_non_null(strstr(calls, "A:1 /v1/agent/migrations/m1/resume"));
	assert_true(strstr(calls, "/abort") < strstr(calls, "/resume"));
	assert_null(strstr(calls, "/cleanup"));
	json_decref(m);

	/* a second restart finds nothing to do: resolved exactly once */
	m = recover_and_get(j, "m1");
	assert_string_equal(calls, "");
	json_decref(m);
	fm_journal_close(j);
	unlink(dbpath);
}

static void test_recover_before_freeze(void **state)
{
	fm_journal *j = fresh();
	const char *steps[] = { "reserve", NULL };
	crashed(j, "m2", "PREPARATION", steps, 0);
	json_t *m = recover_and_get(j, "m2");
	assert_string_equal(json_string_value(json_object_get(m, "state")), "FAILED");
	assert_non_null(strstr(calls, "/abort"));
	assert_null(strstr(calls, "/resume")); /* never frozen: nothing to resume */
	json_decref(m);
	fm_journal_close(j);
	unlink(dbpath);
}

static void test_recover_roll_forward(void **state)
{
	fm_journal *j = fresh();
	const char *steps[] = { "reserve", "prepare", "checkpoint", "restore", "commit", NULL };
	crashed(j, "m3", "VERIFICATION", steps, 1);
	json_t *m = recover_and_get(j, "m3");
	assert_string_equal(json_string_value(json_object_get(m, "state")), "COMPLETED");
	assert_non_null(strstr(calls, "A:1 /v1/agent/migrations/m3/cleanup"));
	assert_non_null(strstr(calls, "B:1 /v1/agent/migrations/m3/commit"));
	assert_null(strstr(calls, "/abort"));
	assert_null(strstr(calls, "/resume"));
	json_decref(m);
	fm_journal_close(j);
	unlink(dbpath);
}

static void test_recover_mid_rollback(void **state)
{
	fm_journal *j = fresh();
	const char *steps[] = { "reserve", "checkpoint", NULL };
	crashed(j, "m4", "ROLLBACK", steps, 0);
	json_t *m = recover_and_get(j, "m4");
	assert_string_equal(json_string_value(json_object_get(m, "state")), "FAILED");
	assert_true(json_is_true(json_object_get(m, "finished")));
	assert_non_null(strstr(calls, "/resume"));
	/* transitions continue from ROLLBACK, never skip back */
	json_t *tr = json_object_get(m, "transitions");
	assert_string_equal(json_string_value(json_object_get(json_array_get(tr, json_array_size(tr) - 1), "to")), "FAILED");
	json_decref(m);
	fm_journal_close(j);
	unlink(dbpath);
}

int main(void)
{
	fm_log_setup("test", FM_LOG_ERROR + 1, -1, -1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exec_query),          cmocka_unit_test(test_transaction_and_durability),
		cmocka_unit_test(test_recover_rollback),    cmocka_unit_test(test_recover_before_freeze),
		cmocka_unit_test(test_recover_roll_forward), cmocka_unit_test(test_recover_mid_rollback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
