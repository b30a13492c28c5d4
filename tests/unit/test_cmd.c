/* Unit tests: the command runner (basic/cmd.c), with real programs and the dry-run hook. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
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

/* a started command: waited for up to a bound, then killed */
static void test_wait_timeout(void **state)
{
	(void)state;
	fm_error e = FM_ERROR_INIT;
	fm_cmd *c = fm_cmd_new("/bin/sleep");
	fm_cmd_arg(c, "30");
	assert_int_equal(fm_cmd_start(c, &e), 0);
	int64_t t0 = fm_now_mono_ms();
	assert_int_equal(fm_cmd_wait_timeout(c, 200, &e), -ETIMEDOUT);
	assert_true(fm_now_mono_ms() - t0 < 5000);
	assert_non_null(strstr(e.msg, "timed out after 200 ms"));
	fm_error_clear(&e);
	fm_cmd_free(c);
	c = fm_cmd_new("/bin/sh");
	fm_cmd_arg(c, "-c");
	fm_cmd_arg(c, "exit 3");
	assert_int_equal(fm_cmd_start(c, &e), 0);
	assert_true(fm_cmd_wait_timeout(c, 5000, &e) != 0);
	assert_non_null(strstr(e.msg, "exit 3"));
	fm_error_clear(&e);
	fm_cmd_free(c);
	c = fm_cmd_new("/bin/true");
	assert_int_equal(fm_cmd_start(c, &e), 0);
	assert_int_equal(fm_cmd_wait_timeout(c, 5000, &e), 0);
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
	assert_int_equal(fm_cmd_run(c, &e), -ENOENT);
	assert_non_null(strstr(e.msg, "cannot start /nonexistent/program"));
	fm_error_clear(&e);
	fm_cmd_free(c);
	/* nor found in the fixed PATH */
	c = fm_cmd_new("fm-no-such-program");
	assert_int_equal(fm_cmd_run(c, &e), -ENOENT);
	assert_non_null(strstr(e.msg, "not found in /usr/local/sbin:"));
	fm_error_clear(&e);
	fm_cmd_free(c);
	/* found there: by name */
	c = fm_cmd_new("true");
	assert_int_equal(fm_cmd_run(c, &e), 0);
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

/* Passed descriptors arrive at their numbers, even where a source's number
 * is another's target; nothing else is open in the child. */
static void test_pass_fds(void **state)
{
	int a[2], b[2];
	char buf[64] = "";
	assert_int_equal(pipe(a), 0);
	assert_int_equal(pipe(b), 0);
	/* b's write end at a number that is a's target in the child */
	int high = fcntl(b[1], F_DUPFD, 40), low = dup2(high, 7);
	assert_int_equal(low, 7);
	fm_cmd *c = fm_cmd_new("/bin/sh");
	fm_cmd_arg(c, "-c");
	fm_cmd_arg(c, "echo A >&7; echo B >&8; ls /proc/self/fd | sort -n | tr '\\n' ' '");
	fm_cmd_pass_fd(c, a[1], 7);
	fm_cmd_pass_fd(c, low, 8);
	assert_int_equal(fm_cmd_run(c, NULL), 0);
	/* 0-2, 7, 8, and ls's own directory descriptor */
	assert_string_equal(fm_cmd_stdout(c), "0 1 2 3 7 8 ");
	fm_cmd_free(c);
	close(a[1]);
	close(b[1]);
	close(high);
	close(low);
	assert_int_equal(read(a[0], buf, sizeof(buf) - 1), 2);
	assert_string_equal(buf, "A\n");
	memset(buf, 0, sizeof(buf));
	assert_int_equal(read(b[0], buf, sizeof(buf) - 1), 2);
	assert_string_equal(buf, "B\n");
	close(a[0]);
	close(b[0]);
}

static volatile sig_atomic_t handled;
static void on_usr1(int sig)
{
	(void)sig;
	handled++;
}

/* The child shares our memory until its exec (spawn: CLONE_VM|CLONE_VFORK):
 * it starts with default dispositions where we ignore SIGPIPE or handle
 * SIGUSR1 (our handler must never run in it), and ours are intact after. */
static void test_child_starts_with_default_signals(void **state)
{
	fm_error e = FM_ERROR_INIT;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGUSR1, on_usr1);
	for (int i = 0; i < 2; i++) {
		fm_cmd *c = fm_cmd_new("/bin/sh");
		fm_cmd_arg(c, "-c");
		fm_cmd_arg(c, i == 0 ? "kill -PIPE $$; echo survived" : "kill -USR1 $$; echo survived");
		assert_true(fm_cmd_run(c, &e) < 0);
		assert_int_equal(e.code, -EINTR); /* killed by the signal, as a default disposition does */
		assert_non_null(strstr(e.msg, i == 0 ? "signal 13" : "signal 10"));
		assert_null(strstr(fm_cmd_stdout(c), "survived"));
		fm_error_clear(&e);
		fm_cmd_free(c);
	}
	assert_int_equal(handled, 0);
	raise(SIGUSR1);
	assert_int_equal(handled, 1);
	struct sigaction sa;
	sigaction(SIGPIPE, NULL, &sa);
	assert_true(sa.sa_handler == SIG_IGN);
	signal(SIGUSR1, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
}

static void *run_many(void *opaque)
{
	int *ok = opaque;
	for (int i = 0; i < 50; i++) {
		fm_cmd *c = fm_cmd_new("/bin/echo");
		fm_cmd_argf(c, "%d", i);
		char want[16];
		snprintf(want, sizeof(want), "%d\n", i);
		if (fm_cmd_run(c, NULL) == 0 && strcmp(fm_cmd_stdout(c), want) == 0)
			(*ok)++;
		fm_cmd_free(c);
	}
	return NULL;
}

/* Spawning from several threads at once: each child its own stack, each
 * output its own. */
static void test_spawn_from_threads(void **state)
{
	pthread_t t[4];
	int ok[4] = { 0 };
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, run_many, &ok[i]), 0);
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(ok[i], 50);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_capture_and_exit), cmocka_unit_test(test_clean_env_and_fds),
		cmocka_unit_test(test_timeout_kills),   cmocka_unit_test(test_wait_timeout),
		cmocka_unit_test(test_grandchild_holding_pipe),
		cmocka_unit_test(test_missing_program), cmocka_unit_test(test_dry_run),
		cmocka_unit_test(test_child_starts_with_default_signals), cmocka_unit_test(test_spawn_from_threads),
		cmocka_unit_test(test_pass_fds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
