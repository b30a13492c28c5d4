/* Unit tests: the command runner (basic/cmd.c), with real programs and the dry-run hook. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "basic/cmd.h"
#include "basic/util.h"

static void test_capture_and_exit(void **state)
{
	fm_error e = FM_ERROR_INIT;
	fm_cmd *c = fm_cmd_new("/bin/sh");
	fm_cmd_arg(c, "-c");
	fm_cmd_arg(c, "echo out; echo err >&2; exit 3");
	assert_int_equal(fm_cmd_run(c, &e), 3);
	assert_string_equal(fm_cmd_stdout(c), "out\n");
	assert_string_equal(fm_cmd_stderr(c), "err\n");
	assert_true(fm_error_is_set(&e));
	assert_non_null(strstr(e.msg, "exit 3"));
	assert_non_null(strstr(e.msg, "err"));
	fm_error_clear(&e);
	fm_cmd_free(c);
}

static void test_clean_env_and_fds(void **state)
{
	/* an inherited descriptor must not reach the child; the environment is minimal */
	int fd = open("/dev/null", O_RDONLY); /* deliberately without O_CLOEXEC */
	char probe[64];
	snprintf(probe, sizeof(probe), "test -e /proc/self/fd/%d && echo leaked; env | wc -l", fd);
	setenv("FM_TEST_SECRET", "x", 1);
	fm_cmd *c = fm_cmd_new("/bin/sh");
	fm_cmd_arg(c, "-c");
	fm_cmd_arg(c, probe);
	assert_int_equal(fm_cmd_run(c, NULL), 0);
	assert_null(strstr(fm_cmd_stdout(c), "leaked"));
	assert_true(atoi(fm_cmd_stdout(c)) <= 4); /* PATH, PWD, SHLVL, _ from sh itself */
	fm_cmd_free(c);
	close(fd);
}

static void test_timeout_kills(void **state)
{
	fm_error e = FM_ERROR_INIT;
	fm_cmd *c = fm_cmd_new("/bin/sleep");
	fm_cmd_arg(c, "30");
	fm_cmd_set_timeout_ms(c, 200);
	int64_t t0 = fm_now_mono_ms();
	assert_true(fm_cmd_run(c, &e) < 0);
	assert_true(fm_now_mono_ms() - t0 < 5000);
	assert_int_equal(e.code, -ETIMEDOUT);
	fm_error_clear(&e);
	fm_cmd_free(c);
}

static void test_grandchild_holding_pipe(void **state)
{
	/* the program exits while a background child keeps stdout open: we must return
	 * at the exit, not when the grandchild closes the pipe */
	fm_cmd *c = fm_cmd_new("/bin/sh");
	fm_cmd_arg(c, "-c");
	fm_cmd_arg(c, "sleep 5 & echo started");
	fm_cmd_set_timeout_ms(c, 4000);
	int64_t t0 = fm_now_mono_ms();
	assert_int_equal(fm_cmd_run(c, NULL), 0);
	assert_true(fm_now_mono_ms() - t0 < 3000);
	assert_string_equal(fm_cmd_stdout(c), "started\n");
	fm_cmd_free(c);
}

static void test_missing_program(void **state)
{
	fm_error e = FM_ERROR_INIT;
	fm_cmd *c = fm_cmd_new("/nonexistent/program");
	assert_int_equal(fm_cmd_run(c, &e), 127);
	fm_error_clear(&e);
	fm_cmd_free(c);
}

static int fake(const char *const *argv, void *opaque, char **out)
{
	char *rec = opaque;
	rec[0] = '\0';
	for (int i = 0; argv[i]; i++) {
		strcat(rec, argv[i]);
		strcat(rec, "|");
	}
	*out = fm_xstrdup("{\"status\":\"running\"}");
	return 0;
}

static void test_dry_run(void **state)
{
	char rec[512];
	fm_cmd_set_dry_run(fake, rec);
	fm_cmd *c = fm_cmd_new("runc");
	fm_cmd_arg(c, "state");
	fm_cmd_argf(c, "c%d", 7);
	assert_int_equal(fm_cmd_run(c, NULL), 0);
	assert_string_equal(rec, "runc|state|c7|");
	assert_string_equal(fm_cmd_stdout(c), "{\"status\":\"running\"}");
	assert_string_equal(fm_cmd_describe(c), "runc state c7");
	fm_cmd_free(c);
	fm_cmd_set_dry_run(NULL, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_capture_and_exit), cmocka_unit_test(test_clean_env_and_fds),
		cmocka_unit_test(test_timeout_kills),   cmocka_unit_test(test_grandchild_holding_pipe),
		cmocka_unit_test(test_missing_program), cmocka_unit_test(test_dry_run),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
