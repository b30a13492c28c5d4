/* Unit tests: what a destination accepts from a source before using it
 * (sync/migrate.c).  A symlink named "upper" pointing at a host directory would
 * become the container's writable layer: it must be refused. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/util.h"
#include "sync/migrate.h"

static char *staging(const char *layout)
{
	char tmpl[] = "/tmp/fm-test-migrate.XXXXXX";
	char *d = fm_xstrdup(mkdtemp(tmpl));
	char *recv = fm_xasprintf("%s/recv", d);
	assert_int_equal(fm_mkdir_p(recv, 0700), 0);
	/* layout: space-separated NAME:KIND with KIND d (dir), f (file), l (symlink to /etc) */
	char *copy = fm_xstrdup(layout), *save = NULL;
	for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
		char *colon = strchr(t, ':');
		*colon = '\0';
		char *p = fm_xasprintf("%s/%s", recv, t);
		if (colon[1] == 'd')
			assert_int_equal(mkdir(p, 0700), 0);
		else if (colon[1] == 'f')
			close(open(p, O_CREAT | O_WRONLY, 0600));
		else
			assert_int_equal(symlink("/etc", p), 0);
		free(p);
	}
	free(copy);
	free(recv);
	return d;
}

static void expect(const char *layout, int code, const char *msg)
{
	char *d = staging(layout);
	fm_error e = FM_ERROR_INIT;
	int r = fm_sync_check_received(d, &e);
	assert_int_equal(r, code);
	if (msg)
		assert_non_null(strstr(e.msg, msg));
	fm_error_clear(&e);
	fm_rm_rf(d);
	free(d);
}

static void test_received_tree(void **state)
{
	expect("images:d upper:d", 0, NULL);
	expect("images:d", 0, NULL);
	expect("images:d upper:l", -EBADMSG, "upper as something other than a directory");
	expect("images:l upper:d", -EBADMSG, "images as something other than a directory");
	expect("images:f", -EBADMSG, "other than a directory");
	expect("images:d evil:d", -EBADMSG, "unexpected top-level entry");
	expect("upper:d", -EBADMSG, "no checkpoint images");
	expect("", -EBADMSG, "no checkpoint images");
}

int main(void)
{
	const struct CMUnitTest tests[] = { cmocka_unit_test(test_received_tree) };
	return cmocka_run_group_tests(tests, NULL, NULL);
}
