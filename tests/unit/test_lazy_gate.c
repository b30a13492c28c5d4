/* The lazy-pages gate (sync/lazy_gate.h): the test plays CRIU's restore (it
 * connects before lazy-pages is ready and sends pids and userfaultfds the way
 * CRIU's send_uffd does: an int, then one byte carrying the descriptor) and
 * criu lazy-pages (listens late, reads them the way CRIU's ud_open does). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "basic/util.h"
#include "sync/lazy_gate.h"

#define FIN 0x52535446u   /* any 4 bytes: the gate does not read them */

static int unix_sock(const char *dir, bool listening)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/lazy-pages.socket", dir);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (listening) {
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(listen(fd, 1), 0);
	} else {
		assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	}
	return fd;
}

/* CRIU's send_uffd: the pid, then for a live task one byte with the fd. */
static void send_uffd(int sk, int pid, int fd)
{
	assert_int_equal(send(sk, &pid, sizeof(pid), 0), sizeof(pid));
	if (pid < 0)
		return;
	char dummy = 0, ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &dummy, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	assert_int_equal(sendmsg(sk, &m, 0), 1);
}

/* CRIU's ud_open: recv the pid alone, then recv_fd. */
static int recv_uffd(int sk, int *fd)
{
	int pid;
	assert_int_equal(recv(sk, &pid, sizeof(pid), MSG_WAITALL), sizeof(pid));
	*fd = -1;
	if (pid < 0)
		return pid;
	char dummy, ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &dummy, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	assert_int_equal(recvmsg(sk, &m, MSG_CMSG_CLOEXEC), 1);
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	assert_non_null(c);
	assert_int_equal(c->cmsg_type, SCM_RIGHTS);
	memcpy(fd, CMSG_DATA(c), sizeof(int));
	return pid;
}

static char *tmpdir(void)
{
	char *d = fm_xstrdup("/tmp/fm-gate-XXXXXX");
	assert_non_null(mkdtemp(d));
	return d;
}

static void rmdirs(char *rw, char *lw)
{
	char *p = fm_xasprintf("%s/lazy-pages.socket", rw), *q = fm_xasprintf("%s/lazy-pages.socket", lw);
	unlink(p);
	unlink(q);
	rmdir(rw);
	rmdir(lw);
	free(p);
	free(q);
	free(rw);
	free(lw);
}

/* Two work directories, lazy-pages' status pipe and a gate between them. */
static fm_lazy_gate *gate(char **rw, char **lw, int ready[2], int timeout_ms)
{
	fm_lazy_gate *g = NULL;
	fm_error err = FM_ERROR_INIT;
	*rw = tmpdir();
	*lw = tmpdir();
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(fm_lazy_gate_start(*rw, *lw, ready[0], timeout_ms, &g, &err), 0);
	return g;
}

static void test_gate_passes_everything_on_once_lazy_pages_listens(void **state)
{
	(void)state;
	char *rw, *lw;
	int ready[2], p1[2], p2[2];
	fm_error err = FM_ERROR_INIT;
	fm_lazy_gate *g = gate(&rw, &lw, ready, 5000);
	assert_int_equal(pipe(p1), 0);
	assert_int_equal(pipe(p2), 0);

	/* the restore: connects and sends before lazy-pages even listens */
	int restore = unix_sock(rw, false);
	send_uffd(restore, 42, p1[1]);
	send_uffd(restore, -7, -1);
	send_uffd(restore, 43, p2[1]);
	uint32_t fin = FIN;
	assert_int_equal(send(restore, &fin, sizeof(fin), 0), sizeof(fin));
	close(restore);
	close(p1[1]);
	close(p2[1]);

	/* lazy-pages comes up, says so, and reads what the restore sent */
	int lsk = unix_sock(lw, true);
	assert_int_equal(write(ready[1], "\0", 1), 1);
	int c = accept(lsk, NULL, NULL), fd;
	assert_true(c >= 0);
	assert_int_equal(recv_uffd(c, &fd), 42);
	assert_int_equal(write(fd, "one", 3), 3);   /* the very pipe the restore sent */
	close(fd);
	assert_int_equal(recv_uffd(c, &fd), -7);
	assert_int_equal(recv_uffd(c, &fd), 43);
	assert_int_equal(write(fd, "two", 3), 3);
	close(fd);
	uint32_t got = 0;
	assert_int_equal(recv(c, &got, sizeof(got), MSG_WAITALL), sizeof(got));
	assert_int_equal(got, FIN);
	char b[4];
	assert_int_equal(recv(c, b, sizeof(b), 0), 0);   /* and it hung up */
	assert_int_equal(read(p1[0], b, 3), 3);
	assert_memory_equal(b, "one", 3);
	assert_int_equal(read(p2[0], b, 3), 3);
	assert_memory_equal(b, "two", 3);

	assert_int_equal(fm_lazy_gate_finish(g, &err), 0);
	fm_lazy_gate_free(g);
	close(c);
	close(lsk);
	close(ready[1]);
	close(p1[0]);
	close(p2[0]);
	rmdirs(rw, lw);
}

static void test_gate_says_when_lazy_pages_died(void **state)
{
	(void)state;
	char *rw, *lw;
	int ready[2];
	fm_error err = FM_ERROR_INIT;
	fm_lazy_gate *g = gate(&rw, &lw, ready, 5000);
	close(ready[1]);   /* lazy-pages exited without a word */
	assert_int_equal(fm_lazy_gate_finish(g, &err), -EIO);
	assert_non_null(strstr(err.msg, "exited before it was ready"));
	fm_error_clear(&err);
	fm_lazy_gate_free(g);
	rmdirs(rw, lw);
}

static void test_gate_stops_when_freed(void **state)
{
	(void)state;
	char *rw, *lw;
	int ready[2];
	fm_lazy_gate *g = gate(&rw, &lw, ready, 60000);
	int64_t t0 = fm_now_mono_ms();
	fm_lazy_gate_free(g);   /* a failed restore: nothing will come */
	assert_true(fm_now_mono_ms() - t0 < 5000);
	close(ready[1]);
	rmdirs(rw, lw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gate_passes_everything_on_once_lazy_pages_listens),
		cmocka_unit_test(test_gate_says_when_lazy_pages_died),
		cmocka_unit_test(test_gate_stops_when_freed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
