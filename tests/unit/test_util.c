/* Unit tests: basic/util.c and basic/error.c */
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
#include <sys/stat.h>
#include <unistd.h>

#include "basic/dl.h"
#include "basic/error.h"
#include "basic/periodic.h"
#include "basic/util.h"

static void test_csum(void **state)
{
	/* RFC 1071's example: the words sum to 0x2ddf0, folded 0xddf2 */
	static const uint8_t d[] = { 0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7 };
	assert_int_equal(fm_csum_fold(fm_csum_add(0, d, sizeof(d))), (uint16_t)~0xddf2);
	/* split anywhere even, the same; an odd tail is padded with zero */
	assert_int_equal(fm_csum_fold(fm_csum_add(fm_csum_add(0, d, 4), d + 4, 4)), (uint16_t)~0xddf2);
	static const uint8_t odd[] = { 0x12, 0x34, 0x56 };
	assert_int_equal(fm_csum_fold(fm_csum_add(0, odd, 3)), (uint16_t)~(0x1234 + 0x5600));
	/* a message with its checksum in place sums to zero */
	uint8_t m[8] = { 0x08, 0x00, 0, 0, 0x12, 0x34, 0x00, 0x01 };
	uint16_t c = fm_csum_fold(fm_csum_add(0, m, sizeof(m)));
	m[2] = (uint8_t)(c >> 8);
	m[3] = (uint8_t)c;
	assert_int_equal(fm_csum_fold(fm_csum_add(0, m, sizeof(m))), 0);
}

static void test_name_valid(void **state)
{
	assert_true(fm_name_valid("hostA"));
	assert_true(fm_name_valid("c1.web-2_x"));
	assert_false(fm_name_valid(""));
	assert_false(fm_name_valid(NULL));
	assert_false(fm_name_valid("-x"));
	assert_false(fm_name_valid(".x"));
	assert_false(fm_name_valid("a/b"));
	assert_false(fm_name_valid("../x"));
	assert_false(fm_name_valid("a b"));
	char long_name[80];
	memset(long_name, 'a', 64);
	long_name[64] = '\0';
	assert_false(fm_name_valid(long_name));
	long_name[63] = '\0';
	assert_true(fm_name_valid(long_name));
}

static void test_abs_path_clean(void **state)
{
	(void)state;
	assert_true(fm_abs_path_clean("/"));
	assert_true(fm_abs_path_clean("/usr"));
	assert_true(fm_abs_path_clean("/srv/data.d/..x/.y"));
	assert_false(fm_abs_path_clean(NULL));
	assert_false(fm_abs_path_clean(""));
	assert_false(fm_abs_path_clean("usr"));
	assert_false(fm_abs_path_clean("/usr/"));
	assert_false(fm_abs_path_clean("//usr"));
	assert_false(fm_abs_path_clean("/usr//lib"));
	assert_false(fm_abs_path_clean("/usr/./lib"));
	assert_false(fm_abs_path_clean("/usr/.."));
	assert_false(fm_abs_path_clean("/../etc"));
	assert_false(fm_abs_path_clean("/a\nb"));
	assert_false(fm_abs_path_clean("/a\tb"));
	char long_path[5000];
	memset(long_path, 'a', sizeof(long_path));
	long_path[0] = '/';
	long_path[4096] = '\0'; /* 4096 bytes: one too many */
	assert_false(fm_abs_path_clean(long_path));
	long_path[4095] = '\0';
	assert_true(fm_abs_path_clean(long_path));
}

static void test_parse_rate(void **state)
{
	(void)state;
	uint64_t v;
	assert_int_equal(fm_parse_rate("200M", &v), 0);
	assert_int_equal(v, 200000000);
	assert_int_equal(fm_parse_rate("1G", &v), 0);
	assert_int_equal(v, 1000000000);
	assert_int_equal(fm_parse_rate("1.5Gbit", &v), 0);
	assert_int_equal(v, 1500000000);
	assert_int_equal(fm_parse_rate("50000k", &v), 0);
	assert_int_equal(v, 50000000);
	assert_int_equal(fm_parse_rate("1000000", &v), 0);
	assert_int_equal(v, 1000000);
	assert_int_equal(fm_parse_rate("-5M", &v), -EINVAL);
	assert_int_equal(fm_parse_rate("5X", &v), -EINVAL);
	assert_int_equal(fm_parse_rate("", &v), -EINVAL);
	assert_int_equal(fm_parse_rate("M", &v), -EINVAL);
	assert_int_equal(fm_parse_rate("1e30", &v), -ERANGE);
}

static void test_parse_size(void **state)
{
	uint64_t v;
	assert_int_equal(fm_parse_size("1024", &v), 0);
	assert_int_equal(v, 1024);
	assert_int_equal(fm_parse_size("64M", &v), 0);
	assert_int_equal(v, 64ULL << 20);
	assert_int_equal(fm_parse_size("1.5G", &v), 0);
	assert_int_equal(v, 3ULL << 29);
	assert_int_equal(fm_parse_size("2GiB", &v), 0);
	assert_int_equal(v, 2ULL << 30);
	assert_int_equal(fm_parse_size("12Q", &v), -EINVAL);
	assert_int_equal(fm_parse_size("-1", &v), -EINVAL);
	assert_int_equal(fm_parse_size("", &v), -EINVAL);
	assert_int_equal(fm_parse_size("1e30", &v), -ERANGE);
}

static void test_hostport(void **state)
{
	char h[64];
	int p;
	assert_int_equal(fm_split_hostport("10.0.0.1:7070", h, sizeof(h), &p), 0);
	assert_string_equal(h, "10.0.0.1");
	assert_int_equal(p, 7070);
	assert_int_equal(fm_split_hostport("[::1]:80", h, sizeof(h), &p), 0);
	assert_string_equal(h, "::1");
	assert_int_equal(fm_split_hostport("nohost", h, sizeof(h), &p), -EINVAL);
	assert_int_equal(fm_split_hostport("a:99999", h, sizeof(h), &p), -EINVAL);
	assert_int_equal(fm_split_hostport(":80", h, sizeof(h), &p), -EINVAL);
	assert_int_equal(fm_split_hostport("a:", h, sizeof(h), &p), -EINVAL);
}

static void test_base64(void **state)
{
	const char *cases[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	const char *want[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	for (size_t i = 0; i < 7; i++) {
		char *e = fm_base64_encode(cases[i], strlen(cases[i]));
		unsigned char *d;
		size_t n;
		assert_string_equal(e, want[i]);
		assert_int_equal(fm_base64_decode(e, &d, &n), 0);
		assert_int_equal(n, strlen(cases[i]));
		assert_memory_equal(d, cases[i], n);
		free(e);
		free(d);
	}
	unsigned char *d;
	size_t n;
	assert_int_equal(fm_base64_decode("Zm9", &d, &n), -EINVAL);
	assert_int_equal(fm_base64_decode("Zm!v", &d, &n), -EINVAL);
	assert_int_equal(fm_base64_decode("Z===", &d, &n), -EINVAL);
}

static void test_error_first_wins(void **state)
{
	fm_error e = FM_ERROR_INIT;
	assert_int_equal(fm_error_set(&e, -ENOENT, "first %d", 1), -ENOENT);
	assert_int_equal(fm_error_set(&e, -EIO, "second"), -EIO);
	assert_int_equal(e.code, -ENOENT);
	fm_error_prefix(&e, "context");
	assert_string_equal(e.msg, "context: first 1");
	fm_error_set_detail(&e, fm_xstrdup("detail"));
	fm_error f = FM_ERROR_INIT;
	fm_error_move(&f, &e);
	assert_int_equal(f.code, -ENOENT);
	assert_string_equal(f.detail, "detail");
	assert_false(fm_error_is_set(&e));
	/* a positive code still becomes an error */
	fm_error g = FM_ERROR_INIT;
	assert_true(fm_error_set(&g, 0, "x") < 0);
	fm_error_clear(&f);
	fm_error_clear(&g);
	/* prefixing a long message truncates instead of overflowing */
	char big[2000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	fm_error_set(&g, -EIO, "%s", big);
	fm_error_prefix(&g, "%s", big);
	assert_int_equal(strlen(g.msg), FM_ERROR_MSG_MAX - 1);
	fm_error_clear(&g);
}

static void test_files(void **state)
{
	char tmpl[] = "/tmp/fm-test-util.XXXXXX";
	char *dir = mkdtemp(tmpl);
	assert_non_null(dir);
	char *sub = fm_xasprintf("%s/a/b/c", dir);
	assert_int_equal(fm_mkdir_p(sub, 0700), 0);
	char *f = fm_xasprintf("%s/x.log", sub);
	const char *text = "line one\nError (criu): bad thing\nRLIMIT_NOFILE Error harmless\nok\nError: second\n";
	assert_int_equal(fm_write_file_atomic(f, text, strlen(text), 0600), 0);
	char *got;
	size_t n;
	assert_int_equal(fm_read_file(f, 4096, &got, &n), 0);
	assert_string_equal(got, text);
	free(got);
	assert_int_equal(fm_read_file(f, 10, &got, &n), -EFBIG);
	char *g = fm_file_grep(f, "Error", "RLIMIT_NOFILE", 5);
	assert_non_null(g);
	assert_string_equal(g, "  Error (criu): bad thing\n  Error: second\n");
	free(g);
	char *t = fm_file_tail(f, 16);
	assert_string_equal(t, "Error: second\n");
	free(t);
	/* durable: files and directories; links and fifos are their directory's
	 * entries (a fifo opened for fsync would block) */
	char *lnk = fm_xasprintf("%s/link", sub), *fifo = fm_xasprintf("%s/fifo", sub);
	assert_int_equal(symlink("x.log", lnk), 0);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(fm_fsync_tree(dir), 0);
	assert_int_equal(fm_fsync_tree(f), -ENOTDIR);
	assert_int_equal(fm_fsync_tree(lnk), -ENOTDIR); /* not followed */
	free(lnk);
	free(fifo);
	assert_int_equal(fm_rm_rf(dir), 0);
	assert_int_equal(fm_fsync_tree(dir), -ENOENT);
	assert_int_equal(access(dir, F_OK), -1);
	free(sub);
	free(f);
}

static int g_calls;

static void count_call(void *opaque)
{
	__atomic_add_fetch((int *)opaque, 1, __ATOMIC_SEQ_CST);
}

/* fm_periodic: calls at its interval, the first at once when asked, and a
 * stop ends the wait at once. */
static void test_periodic(void **state)
{
	fm_periodic p;
	g_calls = 0;
	assert_int_equal(fm_periodic_start(&p, 20000, true, count_call, &g_calls), 0);
	while (__atomic_load_n(&g_calls, __ATOMIC_SEQ_CST) < 3)
		fm_sleep_us(1000, NULL);
	fm_periodic_stop(&p);
	int n = g_calls;
	fm_sleep_us(50000, NULL);
	assert_int_equal(g_calls, n); /* stopped: no more calls */
	/* a long interval, not at once: stopped before the first call, promptly */
	g_calls = 0;
	int64_t t0 = fm_now_mono_us();
	assert_int_equal(fm_periodic_start(&p, 3600LL * 1000000, false, count_call, &g_calls), 0);
	fm_periodic_stop(&p);
	assert_int_equal(g_calls, 0);
	assert_true(fm_now_mono_us() - t0 < 1000000);
	fm_periodic_stop(&p); /* twice: harmless */
}

/* basic/dl.h: loaded on the first acquire, every symbol filled, unloaded by
 * the last release; a missing library or symbol is a clear error that leaves
 * nothing loaded */
static void test_dl(void **state)
{
	(void)state;
	size_t (*len)(const char *) = NULL;
	void *libc_entry = NULL;
	const char *const names[] = { "strlen", "environ", NULL };
	void **const slots[] = { (void **)&len, &libc_entry };
	fm_dl d = FM_DL_INIT("libc.so.6", "libc6", names, slots);
	fm_error err = FM_ERROR_INIT;

	assert_int_equal(fm_dl_acquire(&d, &err), 0);
	assert_non_null(len);
	assert_non_null(libc_entry);
	assert_int_equal(len("four"), 4);
	assert_int_equal(fm_dl_acquire(&d, &err), 0);
	assert_int_equal(d.refs, 2);
	fm_dl_release(&d);
	assert_non_null(d.handle);
	fm_dl_release(&d);
	assert_null(d.handle);
	assert_null(len);   /* nothing points into what is gone */
	fm_dl_release(&d); /* one too many: nothing happens */
	assert_int_equal(d.refs, 0);

	const char *const none[] = { NULL };
	fm_dl gone = FM_DL_INIT("libfleximigrate-nowhere.so.9", "libnowhere9", none, NULL);
	assert_int_equal(fm_dl_acquire(&gone, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "apt-get install libnowhere9"));
	assert_int_equal(gone.refs, 0);
	fm_error_clear(&err);

	const char *const bad[] = { "strlen", "fm_no_such_symbol", NULL };
	len = NULL;
	void *unused = NULL;
	void **const bad_slots[] = { (void **)&len, &unused };
	fm_dl lacking = FM_DL_INIT("libc.so.6", "libc6", bad, bad_slots);
	assert_int_equal(fm_dl_acquire(&lacking, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "lacks fm_no_such_symbol"));
	assert_null(lacking.handle);
	assert_null(len);
	assert_int_equal(lacking.refs, 0);
	fm_error_clear(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_csum), cmocka_unit_test(test_name_valid), cmocka_unit_test(test_abs_path_clean), cmocka_unit_test(test_parse_size), cmocka_unit_test(test_parse_rate),
		cmocka_unit_test(test_hostport),   cmocka_unit_test(test_base64),
		cmocka_unit_test(test_error_first_wins), cmocka_unit_test(test_files), cmocka_unit_test(test_periodic),
		cmocka_unit_test(test_dl),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
