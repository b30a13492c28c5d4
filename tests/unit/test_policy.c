/* Policy Enforcer: policy files (src/manager/policy.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/util.h"
#include "manager/policy.h"

/* The seed's example policy, as MISSION.md writes it in JSON */
#define SEED_POLICY \
	"{ \"policy_name\": \"adaptive_load_balancing\",\n" \
	"  \"CONTEXT\": [\"source_cpu_utilization\", \"destination_cpu_utilization\", \"time_of_day\", " \
	"\"network_congestion_prob\", \"service_type\"],\n" \
	"  \"CONDITIONS\": \"(source_cpu_utilization > 80 and destination_cpu_utilization < 50) or (time_of_day >= 18 " \
	"and time_of_day <= 22 and service_type == \\\"critical\\\") or (network_congestion_prob < 0.2)\",\n" \
	"  \"ACTIONS\": [\"allow_migration\", \"set_priority(\\\"high\\\")\", \"trigger_load_balancer_reconfiguration\"],\n" \
	"  \"CONSTRAINTS\": {\"max_concurrent_migrations\": 5, \"migration_duration\": 300},\n" \
	"  \"PRIORITY\": 2 }"

static fm_policy_set *load_ok(const char *text)
{
	fm_policy_set *s = NULL;
	fm_error err = FM_ERROR_INIT;
	if (fm_policy_set_parse(text, strlen(text), "test.json", &s, &err) < 0)
		fail_msg("%s", err.msg);
	return s;
}

static void load_bad(const char *text, const char *part)
{
	fm_policy_set *s = NULL;
	fm_error err = FM_ERROR_INIT;
	int r = fm_policy_set_parse(text, strlen(text), "test.json", &s, &err);
	if (r != -EINVAL || s || !strstr(err.msg, part) || strncmp(err.msg, "test.json: ", 11) != 0)
		fail_msg("r %d: \"%s\" (expected \"%s\")", r, err.msg, part);
	fm_error_clear(&err);
}

/* The seed's policy with one field replaced (FIELD is the JSON key with quotes). */
static char *seed_with(const char *field, const char *value)
{
	const char *seed = SEED_POLICY;
	const char *at = strstr(seed, field);
	assert_non_null(at);
	const char *colon = strchr(at, ':') + 1;
	const char *end = strstr(colon, ",\n");
	if (!end)
		end = strstr(colon, " }");
	return fm_xasprintf("[%.*s %s%s]", (int)(colon - seed), seed, value, end);
}

static void test_seed_policy_loads_unchanged(void **state)
{
	(void)state;
	const char *forms[] = { "[" SEED_POLICY "]", SEED_POLICY, "{\"policies\": [" SEED_POLICY "]}" };
	for (size_t f = 0; f < ARRAY_SIZE(forms); f++) {
		fm_policy_set *s = load_ok(forms[f]);
		assert_int_equal(s->n, 1);
		const fm_policy *p = &s->v[0];
		assert_string_equal(p->name, "adaptive_load_balancing");
		assert_int_equal(p->ncontext, 5);
		assert_int_equal(p->vars[4].type, FM_COND_STRING);
		assert_int_equal(p->nactions, 3);
		assert_int_equal(p->actions[0].kind, FM_ACTION_ALLOW);
		assert_int_equal(p->actions[1].kind, FM_ACTION_SET_PRIORITY);
		assert_string_equal(p->actions[1].arg, "high");
		assert_int_equal(p->actions[2].kind, FM_ACTION_LB_RECONFIGURE);
		assert_int_equal(p->max_concurrent, 5);
		assert_int_equal(p->duration_s, 300);
		assert_int_equal(p->priority, 2);
		char a[96];
		fm_policy_action_format(&p->actions[1], a, sizeof(a));
		assert_string_equal(a, "set_priority(\"high\")");
		/* and its condition evaluates */
		fm_cond_value v[5] = { { true, 90, NULL, false }, { true, 40, NULL, false }, { true, 3, NULL, false },
				       { true, 0.5, NULL, false }, { true, 0, "batch", false } };
		bool res = false;
		assert_int_equal(fm_cond_eval(p->cond, v, &res, NULL), 0);
		assert_true(res);
		fm_policy_set_free(s);
	}
}

static void test_bad_policies_say_which_and_why(void **state)
{
	(void)state;
	struct { const char *field, *value, *part; } cases[] = {
		{ "\"policy_name\"", "\"no spaces allowed\"", "policy_name: 1-64 characters" },
		{ "\"CONTEXT\"", "[\"source_cpu_utilization\", \"cpu_temp\"]", "CONTEXT: \"cpu_temp\" is not a variable" },
		{ "\"CONTEXT\"", "[\"time_of_day\", \"time_of_day\"]", "named twice" },
		{ "\"CONTEXT\"", "\"time_of_day\"", "CONTEXT: a list" },
		{ "\"CONDITIONS\"", "\"time_of_day >\"", "policy 1 (adaptive_load_balancing): CONDITIONS: line 1, column 14" },
		{ "\"CONDITIONS\"", "42", "CONDITIONS: a string required" },
		{ "\"ACTIONS\"", "[\"allow_migration\", \"rm -rf /\"]", "\"rm -rf /\" is not an action" },
		{ "\"ACTIONS\"", "[\"set_priority(\\\"urgent\\\")\"]", "must be one of \"high\", \"normal\", \"low\"" },
		{ "\"ACTIONS\"", "[\"set_priority(high)\"]", "needs one quoted argument" },
		{ "\"ACTIONS\"", "[\"allow_migration()\"]", "takes no argument" },
		{ "\"ACTIONS\"", "[\"allow_migration\", \"deny_migration\"]", "together" },
		{ "\"ACTIONS\"", "[]", "ACTIONS: a list of 1 to 16" },
		{ "\"ACTIONS\"", "[\"prefer_strategy(\\\"TELEPORT\\\")\"]", "\"COLD_MIGRATION\", \"PRE_COPY\"" },
		{ "\"CONSTRAINTS\"", "{\"max_concurrent_migrations\": 0}", "from 1 to 64" },
		{ "\"CONSTRAINTS\"", "{\"migration_duration\": 1.5}", "from 1 to 86400 (seconds)" },
		{ "\"CONSTRAINTS\"", "{\"max_bandwidth\": 5}", "unknown constraint \"max_bandwidth\"" },
		{ "\"PRIORITY\"", "\"high\"", "PRIORITY: an integer" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *t = seed_with(cases[i].field, cases[i].value);
		load_bad(t, cases[i].part);
		free(t);
	}
	load_bad("[" SEED_POLICY ", " SEED_POLICY "]", "policy 2: the name adaptive_load_balancing is taken by policy 1");
	load_bad("[{\"policy_name\": \"p\", \"CONTEXT\": [], \"CONDITIONS\": \"true\", \"ACTIONS\": [\"allow_migration\"], "
		 "\"condition\": 1}]", "unknown field \"condition\"");
	load_bad("[{\"policy_name\": \"p\", \"policy_name\": \"q\"}]", "duplicate");
	load_bad("[{\"policy_name\": \"p\",\n \"CONTEXT\": [}]", "line 2, column");
	load_bad("42", "'[' or '{' expected");
	load_bad("{\"policies\": 7}", "a list of at most 256 policies");
	load_bad("[42]", "policy 1: a policy must be a JSON object");
	/* a policy without CONTEXT may still hold a constant condition */
	fm_policy_set *s = load_ok("[{\"policy_name\": \"never\", \"CONTEXT\": [], \"CONDITIONS\": \"false\", "
				   "\"ACTIONS\": [\"deny_migration\"]}]");
	assert_int_equal(s->v[0].priority, 0);
	assert_int_equal(s->v[0].max_concurrent, 0);
	fm_policy_set_free(s);
}

static void test_policy_file(void **state)
{
	(void)state;
	char path[] = "/tmp/fm-test-policy-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *text = "[" SEED_POLICY "]";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	fm_policy_set *s = NULL;
	fm_error err = FM_ERROR_INIT;
	assert_int_equal(fm_policy_set_load_file(path, &s, &err), 0);
	assert_int_equal(s->n, 1);
	fm_policy_set_free(s);
	unlink(path);
	assert_true(fm_policy_set_load_file(path, &s, &err) < 0);
	assert_non_null(strstr(err.msg, "cannot read policy file"));
	fm_error_clear(&err);
	size_t n;
	const fm_policy_var_info *v = fm_policy_vars(&n);
	assert_true(n >= 5);
	for (size_t i = 0; i < n; i++)
		assert_non_null(v[i].meaning);
}

/* A fake CONTEXT for the decision tests (unit tests only): time_of_day is
 * 20, destination_host "edge1", the rest unknown. */
static bool fake_lookup(void *opaque, const char *var, fm_cond_value *v)
{
	(void)opaque;
	*v = (fm_cond_value){ .known = true };
	if (!strcmp(var, "time_of_day"))
		v->num = 20;
	else if (!strcmp(var, "destination_host"))
		v->str = "edge1";
	else
		v->known = false;
	return v->known;
}

static void test_which_policy_decides(void **state)
{
	(void)state;
	fm_policy_decision d;
	/* highest PRIORITY first; equal ones in file order */
	fm_policy_set *s = load_ok(
		"[{\"policy_name\": \"evening_ok\", \"CONTEXT\": [\"time_of_day\"], \"CONDITIONS\": \"time_of_day >= 18\", "
		"\"ACTIONS\": [\"allow_migration\"], \"PRIORITY\": 1},"
		" {\"policy_name\": \"no_edge\", \"CONTEXT\": [\"destination_host\"], "
		"\"CONDITIONS\": \"destination_host == \\\"edge1\\\"\", \"ACTIONS\": [\"deny_migration\"], \"PRIORITY\": 5},"
		" {\"policy_name\": \"first_of_equals\", \"CONTEXT\": [], \"CONDITIONS\": \"false\", "
		"\"ACTIONS\": [\"allow_migration\"], \"PRIORITY\": 5}]");
	fm_policy_decide(s, fake_lookup, NULL, &d);
	assert_false(d.allowed);
	assert_string_equal(d.by->name, "no_edge");
	assert_non_null(strstr(d.why, "policy no_edge (priority 5) denies the migration: its condition holds "
				  "(destination_host=\"edge1\")"));
	/* without the deny, the evening policy allows */
	s->v[1].priority = -5;
	fm_policy_decide(s, fake_lookup, NULL, &d);
	assert_true(d.allowed);
	assert_string_equal(d.by->name, "evening_ok");
	assert_non_null(strstr(d.why, "time_of_day=20"));
	fm_policy_set_free(s);

	/* nothing holds: denied */
	s = load_ok("[{\"policy_name\": \"morning\", \"CONTEXT\": [\"time_of_day\"], \"CONDITIONS\": \"time_of_day < 12\", "
		    "\"ACTIONS\": [\"allow_migration\"]}]");
	fm_policy_decide(s, fake_lookup, NULL, &d);
	assert_false(d.allowed);
	assert_null(d.by);
	assert_non_null(strstr(d.why, "no policy allows the migration"));
	fm_policy_set_free(s);

	/* a variable without a value: denied at once (fail closed), saying which */
	s = load_ok("[{\"policy_name\": \"busy\", \"CONTEXT\": [\"source_cpu_utilization\", \"time_of_day\"], "
		    "\"CONDITIONS\": \"source_cpu_utilization > 80 or time_of_day > 0\", \"ACTIONS\": [\"allow_migration\"]}]");
	fm_policy_decide(s, fake_lookup, NULL, &d);
	assert_false(d.allowed);
	assert_non_null(strstr(d.why, "cannot be evaluated: source_cpu_utilization has no value yet"));
	assert_non_null(strstr(d.why, "source_cpu_utilization unknown, time_of_day=20"));
	fm_policy_set_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seed_policy_loads_unchanged),
		cmocka_unit_test(test_bad_policies_say_which_and_why),
		cmocka_unit_test(test_policy_file),
		cmocka_unit_test(test_which_policy_decides),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
