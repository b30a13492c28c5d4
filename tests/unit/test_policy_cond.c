/* Policy Enforcer: the CONDITIONS language (src/manager/policy_cond.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/util.h"
#include "manager/policy_cond.h"

/* The seed's example policy's CONTEXT, typed */
static const fm_cond_var SEED_VARS[] = {
	{ "source_cpu_utilization", FM_COND_NUMBER },
	{ "destination_cpu_utilization", FM_COND_NUMBER },
	{ "time_of_day", FM_COND_NUMBER },
	{ "network_congestion_prob", FM_COND_NUMBER },
	{ "service_type", FM_COND_STRING },
	{ "cordoned", FM_COND_BOOL },
};
#define NV ARRAY_SIZE(SEED_VARS)
static const char *SEED_COND =
	"(source_cpu_utilization > 80 and destination_cpu_utilization < 50) or (time_of_day >= 18 and "
	"time_of_day <= 22 and service_type == \"critical\") or (network_congestion_prob < 0.2)";

static fm_cond *parse_ok(const char *src)
{
	fm_cond *c = NULL;
	fm_error err = FM_ERROR_INIT;
	if (fm_cond_parse(src, SEED_VARS, NV, &c, &err) < 0)
		fail_msg("%s: %s", src, err.msg);
	return c;
}

/* Parsing fails with a message holding `part` (and a line and column). */
static void parse_bad(const char *src, const char *part)
{
	fm_cond *c = NULL;
	fm_error err = FM_ERROR_INIT;
	int r = fm_cond_parse(src, SEED_VARS, NV, &c, &err);
	if (r != -EINVAL || c || !strstr(err.msg, part))
		fail_msg("%.80s: r %d, \"%s\" (expected \"%s\")", src, r, err.msg, part);
	fm_error_clear(&err);
}

static bool eval_with(const fm_cond *c, double src_cpu, double dst_cpu, double tod, double cong, const char *svc)
{
	fm_cond_value v[NV] = { { true, src_cpu, NULL, false }, { true, dst_cpu, NULL, false }, { true, tod, NULL, false },
				{ true, cong, NULL, false }, { true, 0, svc, false }, { true, 0, NULL, false } };
	bool res = false;
	fm_error err = FM_ERROR_INIT;
	if (fm_cond_eval(c, v, &res, &err) < 0)
		fail_msg("eval: %s", err.msg);
	return res;
}

static void test_seed_condition(void **state)
{
	(void)state;
	fm_cond *c = parse_ok(SEED_COND);
	assert_true(eval_with(c, 90, 40, 3, 0.5, "batch"));      /* overloaded source, room there */
	assert_false(eval_with(c, 90, 60, 3, 0.5, "batch"));     /* no room */
	assert_true(eval_with(c, 10, 90, 20, 0.5, "critical"));  /* evening, critical */
	assert_false(eval_with(c, 10, 90, 20, 0.5, "critica"));
	assert_false(eval_with(c, 10, 90, 23, 0.5, "critical"));
	assert_true(eval_with(c, 10, 90, 3, 0.1, "batch"));      /* quiet network */
	assert_false(eval_with(c, 10, 90, 3, 0.2, "batch"));
	for (size_t i = 0; i < NV; i++)
		assert_int_equal(fm_cond_reads(c, i), i < 5);
	fm_cond_free(c);
}

static void test_operators_and_precedence(void **state)
{
	(void)state;
	struct { const char *src; bool want; } cases[] = {
		{ "not time_of_day > 5", false },                   /* not (t > 5) */
		{ "not not true", true },
		{ "true or false and false", true },                /* and binds tighter */
		{ "(true or false) and false", false },
		{ "time_of_day == 12", true },
		{ "time_of_day != 12.0", false },
		{ "time_of_day >= 1.2e1 and time_of_day <= 12", true },
		{ "-1 < time_of_day", true },
		{ "service_type != \"a \\\"quoted\\\" \\\\ name\"", true },
		{ "cordoned == false", true },
		{ "cordoned != true and\n  service_type == \"web\"", true },
		{ "\t( ( ( time_of_day < 13 ) ) )", true },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		fm_cond *c = parse_ok(cases[i].src);
		if (eval_with(c, 0, 0, 12, 0, "web") != cases[i].want)
			fail_msg("%s: expected %d", cases[i].src, cases[i].want);
		fm_cond_free(c);
	}
}

static void test_errors_say_where_and_what(void **state)
{
	(void)state;
	parse_bad("", "column 1: the condition is empty");
	parse_bad("   ", "empty");
	parse_bad("cpu > 80", "line 1, column 1: \"cpu\" is not among the policy's CONTEXT variables");
	parse_bad("time_of_day > 5 and\n  memory > 3", "line 2, column 3: \"memory\" is not among");
	parse_bad("(time_of_day > 5", "line 1, column 17: expected ')' to close the '(' of line 1, column 1");
	parse_bad("time_of_day > 5)", "column 16: expected 'and', 'or' or the end, found ')'");
	parse_bad("service_type > \"a\"", "orders numbers only");
	parse_bad("service_type == 5", "compares a string with a number");
	parse_bad("time_of_day", "the condition is a number");
	parse_bad("time_of_day and true", "'and' takes true or false, not a number");
	parse_bad("not service_type", "'not' takes true or false, not a string");
	parse_bad("1 < time_of_day < 5", "do not chain");
	parse_bad("time_of_day = 5", "'=' alone is not an operator");
	parse_bad("time_of_day > 5 && true", "'&' has no meaning here");
	parse_bad("service_type == \"open", "not closed");
	parse_bad("service_type == \"a\\nb\"", "only \\\" and \\\\");
	parse_bad("time_of_day > 5abc", "runs into a name");
	parse_bad("time_of_day > 1e999", "not a finite number");
	parse_bad("time_of_day > >", "expected a value, a name or '(', found '>'");
	parse_bad("service_type == \"\xc3\xa9\" or \xc3\xa9 == 1", "outside ASCII");
}

/* What an attacker might put in a policy: none of it is code here. */
static void test_hostile_strings(void **state)
{
	(void)state;
	parse_bad("__import__('os').system('rm -rf /')", "\"__import__\" is not among");
	parse_bad("time_of_day > 5; rm -rf /", "';' has no meaning");
	parse_bad("time_of_day > 5 or $(reboot)", "'$' has no meaning");
	parse_bad("eval(\"1\")", "\"eval\" is not among");
	parse_bad("time_of_day.__class__", "'.' has no meaning");
	parse_bad("`id`", "'`' has no meaning");
	/* a quoted string is only ever a value */
	fm_cond *c = parse_ok("service_type == \"'; DROP TABLE migrations; --\"");
	assert_false(eval_with(c, 0, 0, 0, 0, "web"));
	fm_cond_free(c);

	/* bounds: depth, size, literals */
	char *deep = fm_xcalloc(1, 200);
	for (int i = 0; i < 40; i++)
		strcat(deep, "(");
	strcat(deep, "true");
	for (int i = 0; i < 40; i++)
		strcat(deep, ")");
	parse_bad(deep, "nested more than 32 deep");
	memset(deep, 0, 200);
	for (int i = 0; i < 40; i++)
		strcat(deep, "not ");
	strcat(deep, "true");
	parse_bad(deep, "nested more than 32 deep");
	free(deep);

	char *big = fm_xcalloc(1, FM_COND_MAX_LEN + 2);
	memset(big, ' ', FM_COND_MAX_LEN + 1);
	parse_bad(big, "longer than 4096 bytes");
	free(big);

	char *many = fm_xcalloc(1, 4096);
	strcpy(many, "true");
	for (int i = 0; i < 300; i++)
		strcat(many, " or true");
	parse_bad(many, "too large");
	free(many);

	char lit[400] = "service_type == \"";
	memset(lit + strlen(lit), 'x', 300);
	strcat(lit, "\"");
	parse_bad(lit, "more than 256 bytes");
	parse_bad("time_of_day > 123456789012345678901234567890123456789", "more than 32 characters");
	char name[100] = "";
	memset(name, 'a', 80);
	parse_bad(name, "more than 64 characters");
}

/* A value not measured yet denies: the caller fails closed. */
static void test_missing_value_is_an_error(void **state)
{
	(void)state;
	fm_cond *c = parse_ok(SEED_COND);
	fm_cond_value v[NV] = { { true, 90, NULL, false }, { true, 40, NULL, false }, { true, 3, NULL, false },
				{ false, 0, NULL, false }, { true, 0, "batch", false }, { true, 0, NULL, false } };
	bool res = true;
	fm_error err = FM_ERROR_INIT;
	/* true on its first branch, but network_congestion_prob is unknown: an error */
	assert_int_equal(fm_cond_eval(c, v, &res, &err), -ENODATA);
	assert_non_null(strstr(err.msg, "network_congestion_prob has no value yet"));
	fm_error_clear(&err);
	v[3].known = true;
	v[3].num = NAN;
	assert_int_equal(fm_cond_eval(c, v, &res, &err), -EDOM);
	assert_non_null(strstr(err.msg, "not a finite number"));
	fm_error_clear(&err);
	v[3].num = 0.5;
	assert_int_equal(fm_cond_eval(c, v, &res, &err), 0);
	assert_true(res);
	fm_cond_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seed_condition),
		cmocka_unit_test(test_operators_and_precedence),
		cmocka_unit_test(test_errors_say_where_and_what),
		cmocka_unit_test(test_hostile_strings),
		cmocka_unit_test(test_missing_value_is_an_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
