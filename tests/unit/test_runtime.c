/* Unit tests: the Container Manager's runtime (runtime/runtime.c) against the
 * real kernel's cgroups and the real runc (needs root: it fails, saying so,
 * without). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/magic.h>

#include "basic/util.h"
#include "runtime/runtime.h"
#include "store/journal.h"

#define HOST "fmunit"
#define NAME "orphan"

/* the container's cgroup directory where runc would make it: the v1 freezer
 * hierarchy, else the unified one */
static char *cgroup_dir(void)
{
	struct statfs sf;
	if (statfs("/sys/fs/cgroup/freezer", &sf) == 0 && sf.f_type == CGROUP_SUPER_MAGIC)
		return fm_xstrdup("/sys/fs/cgroup/freezer/fleximigrate/" HOST "/" NAME);
	if (statfs("/sys/fs/cgroup", &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC)
		return fm_xstrdup("/sys/fs/cgroup/fleximigrate/" HOST "/" NAME);
	if (statfs("/sys/fs/cgroup/unified", &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC)
		return fm_xstrdup("/sys/fs/cgroup/unified/fleximigrate/" HOST "/" NAME);
	return NULL;
}

static size_t procs_in(const char *dir)
{
	_cleanup_free_ char *p = fm_xasprintf("%s/cgroup.procs", dir), *list = NULL;
	size_t n = 0;
	assert_int_equal(fm_read_file(p, 1 << 16, &list, NULL), 0);
	for (char *s = list; *s; s++)
		n += *s == '\n';
	return n;
}

/* A restore whose tasks CRIU let go but runc never recorded (runc killed
 * after CRIU's resume) leaves them running in the container's cgroup; the
 * destination's cleanup must not leave them running beside the source. */
static void test_destroy_kills_what_runc_never_recorded(void **state)
{
	char dir[] = "/tmp/fm-test-runtime-XXXXXX";
	assert_non_null(mkdtemp(dir));
	_cleanup_free_ char *db = fm_xasprintf("%s/journal.db", dir);
	fm_error e = FM_ERROR_INIT;
	fm_journal *j = NULL;
	fm_runtime rt;
	assert_int_equal(fm_journal_open(db, &j, &e), 0);
	assert_int_equal(fm_rt_open(&rt, HOST, dir, "runc", "criu", j, &e), 0);

	_cleanup_free_ char *cg = cgroup_dir();
	assert_non_null(cg);
	assert_int_equal(fm_mkdir_p(cg, 0755), 0);
	int ready[2];
	assert_int_equal(pipe(ready), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		/* into the cgroup, then a second process there (a fork), both waiting,
		 * in a process group of their own */
		setpgid(0, 0);
		_cleanup_free_ char *procs = fm_xasprintf("%s/cgroup.procs", cg);
		int fd = open(procs, O_WRONLY);
		if (fd < 0 || write(fd, "0", 1) != 1)
			_exit(1);
		close(fd);
		if (fork() < 0)
			_exit(1);
		if (write(ready[1], "r", 1) < 0)
			_exit(1);
		for (;;)
			pause();
	}
	char b;
	close(ready[1]);
	assert_int_equal(read(ready[0], &b, 1), 1);
	close(ready[0]);
	/* (the second one is in from its fork on) */
	assert_int_equal(procs_in(cg), 2);
	_cleanup_free_ char *procs = fm_xasprintf("%s/cgroup.procs", cg), *list = NULL;
	assert_int_equal(fm_read_file(procs, 1 << 16, &list, NULL), 0);
	int pfd[2];
	char *p = list;
	for (int i = 0; i < 2; i++) {
		pfd[i] = (int)syscall(SYS_pidfd_open, (pid_t)strtol(p, &p, 10), 0);
		assert_true(pfd[i] >= 0);
	}

	/* runc knows no such container: its delete is no error, and what is in
	 * the cgroup is killed all the same */
	assert_int_equal(fm_rt_runc_destroy(&rt, NAME, &e), 0);
	int ended = 0;
	for (int i = 0; i < 2; i++) {
		struct pollfd pf = { pfd[i], POLLIN, 0 };
		ended += poll(&pf, 1, 5000) == 1;
		close(pfd[i]);
	}
	if (ended < 2) /* (no process of the test's left behind) */
		kill(-child, SIGKILL), kill(child, SIGKILL);
	assert_int_equal(ended, 2);
	int st = 0;
	assert_int_equal(waitpid(child, &st, 0), child);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGKILL);
	assert_int_equal(procs_in(cg), 0);
	assert_false(fm_error_is_set(&e));

	assert_int_equal(rmdir(cg), 0);
	cg[strlen(cg) - strlen("/" NAME)] = '\0';
	rmdir(cg);
	fm_rt_close(&rt);
	fm_journal_close(j);
	fm_rm_rf(dir);
}

int main(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_runtime: needs root (cgroups of its own): run it as root, as `make check` does\n");
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_destroy_kills_what_runc_never_recorded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
