/* fm-criu-shim (src/sync/criu_shim.c), run for real as runc runs it: `SHIM
 * swrk 3` with a SOCK_SEQPACKET socket as descriptor 3.  Its CRIU is this
 * test program again (FM_FAKE_CRIU set: fake_criu), which counts its runs in
 * a file and answers like CRIU's RPC. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/util.h"

static const uint8_t VERSION_REQ[] = { 0x08, 0x0a };
/* criu_resp { type VERSION, success, version { major 4, minor 2, sublevel 1 } } */
static const uint8_t VERSION_RESP[] = { 0x08, 0x0a, 0x10, 0x01, 0x52, 0x06, 0x08, 0x04, 0x10, 0x02, 0x20, 0x01 };
static const uint8_t FEATURE_REQ[] = { 0x08, 0x09, 0x2a, 0x02, 0x10, 0x01 };   /* features { lazy_pages } */
static const uint8_t RESTORE_REQ[] = { 0x08, 0x02, 0x12, 0x00 };
static const uint8_t RESTORE_RESP[] = { 0x08, 0x02, 0x10, 0x01 };

static char self[4096], dir[64], counter[128];

/* criu_req { type RESTORE, opts { images_dir_fd [5], work_dir_fd [8] } }, the
 * descriptors filled in by the test */
static uint8_t RELAYED_REQ[] = { 0x08, 0x02, 0x12, 0x05, 0x08, 0x00, 0x88, 0x01, 0x00 };
/* the same with opts.inherit_fd { key "n", fd 4 }: what runc asks of CRIU for
 * a container in a network namespace of its own */
static uint8_t WARM_REQ[] = { 0x08, 0x02, 0x12, 0x0d, 0x08, 0x00, 0x88, 0x01, 0x00,
			      0xda, 0x01, 0x05, 0x0a, 0x01, 'n', 0x10, 0x04 };
/* criu_resp { type NOTIFY, success, notify { script } } */
static const uint8_t NOTIFY_PTS[] = { 0x08, 0x06, 0x10, 0x01, 0x2a, 0x13, 0x0a, 0x11, 'o', 'r', 'p', 'h', 'a', 'n', '-',
				      'p', 't', 's', '-', 'm', 'a', 's', 't', 'e', 'r' };
static const uint8_t NOTIFY_RESUMED[] = { 0x08, 0x06, 0x10, 0x01, 0x2a, 0x0d, 0x0a, 0x0b, 'p', 'o', 's', 't', '-', 'r',
					  'e', 's', 'u', 'm', 'e' };
static const uint8_t NOTIFY_PRE_RESUME[] = { 0x08, 0x06, 0x10, 0x01, 0x2a, 0x0c, 0x0a, 0x0a, 'p', 'r', 'e', '-', 'r',
					     'e', 's', 'u', 'm', 'e' };
static const uint8_t NOTIFY_ACK[] = { 0x08, 0x06, 0x18, 0x01 };  /* criu_req { NOTIFY, notify_success } */

/* A restore as CRIU's RPC does it: the images and work directories found as
 * /proc/PEER/fd/N (PEER: SO_PEERCRED) must be the test's; then two
 * notifications, the first with a descriptor (a pipe CRIU wrote "pts" into),
 * each acknowledged; the answer; the end when the client shuts down. */
static int fake_criu_restore(const uint8_t *req)
{
	struct ucred cr;
	socklen_t l = sizeof(cr);
	if (getsockopt(3, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0)
		return 4;
	for (int i = 0; i < 2; i++) {
		char path[64];
		struct stat st;
		/* the work directory may be a directory of its own (FM_FAKE_WINO) */
		const char *want = i && getenv("FM_FAKE_WINO") ? getenv("FM_FAKE_WINO") : getenv("FM_FAKE_INO");
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)cr.pid, req[i ? 8 : 5]);
		if (stat(path, &st) < 0 || st.st_ino != strtoull(want, NULL, 10))
			return 5;
	}
	/* a warm CRIU's descriptor 4: what its keeper was given */
	const char *ns = getenv("FM_FAKE_NS_INO");
	struct stat nst;
	if (ns && (fstat(4, &nst) < 0 || nst.st_ino != strtoull(ns, NULL, 10)))
		return 9;
	int p[2];
	if (pipe(p) < 0 || write(p[1], "pts", 3) != 3)
		return 6;
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cm;
	struct iovec iov = { (void *)NOTIFY_PTS, sizeof(NOTIFY_PTS) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &p[0], sizeof(int));
	uint8_t ack[64];
	if (sendmsg(3, &m, 0) < 0 || recv(3, ack, sizeof(ack), 0) != sizeof(NOTIFY_ACK))
		return 7;
	/* CRIU's pre-resume (FM_FAKE_PRE_RESUME), as the restore's next-to-last */
	if (getenv("FM_FAKE_PRE_RESUME") &&
	    (send(3, NOTIFY_PRE_RESUME, sizeof(NOTIFY_PRE_RESUME), 0) < 0 || recv(3, ack, sizeof(ack), 0) != sizeof(NOTIFY_ACK)))
		return 10;
	if (send(3, NOTIFY_RESUMED, sizeof(NOTIFY_RESUMED), 0) < 0 || recv(3, ack, sizeof(ack), 0) != sizeof(NOTIFY_ACK) ||
	    send(3, RESTORE_RESP, sizeof(RESTORE_RESP), 0) < 0)
		return 7;
	/* like CRIU's RPC loop: the next request, or the end */
	return recv(3, ack, sizeof(ack), 0) == 0 ? 0 : 8;
}

/* The fake CRIU: counts itself, answers one request (none when asked to
 * fail), exits. */
static int fake_criu(int argc, char **argv)
{
	int fd = open(getenv("FM_FAKE_COUNT"), O_WRONLY | O_APPEND | O_CREAT, 0600);
	if (fd < 0 || write(fd, "x", 1) != 1 || argc != 3 || strcmp(argv[1], "swrk") || strcmp(argv[2], "3"))
		return 2;
	close(fd);
	if (getenv("FM_FAKE_FAIL"))
		return 1;
	uint8_t req[256];
	ssize_t n = recv(3, req, sizeof(req), 0);
	if (n == sizeof(VERSION_REQ) && !memcmp(req, VERSION_REQ, (size_t)n))
		return send(3, VERSION_RESP, sizeof(VERSION_RESP), 0) < 0;
	if (n == sizeof(RESTORE_REQ) && !memcmp(req, RESTORE_REQ, (size_t)n))
		return send(3, RESTORE_RESP, sizeof(RESTORE_RESP), 0) < 0;
	if ((n == sizeof(RELAYED_REQ) && !memcmp(req, RELAYED_REQ, 5)) ||
	    (n == sizeof(WARM_REQ) && !memcmp(req, WARM_REQ, 5)))
		return fake_criu_restore(req);
	return 3;
}

static int runs(void)
{
	struct stat st;
	return stat(counter, &st) == 0 ? (int)st.st_size : 0;
}

static char gate[160];
static pid_t gate_daemon;     /* FM_RESTORE_GATE_PID, when set */

/* Forks the shim's runc end: a SOCK_SEQPACKET socket whose other end the
 * child (returning 0) has as descriptor 3, with the fake CRIU's environment. */
static pid_t fork_runc(int *sk)
{
	int sp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(sp[1], 3);
		setenv("FM_FAKE_CRIU", "1", 1);
		setenv("FM_FAKE_COUNT", counter, 1);
		setenv("FM_CRIU_RPC_CACHE", dir, 1);
		return 0;
	}
	close(sp[1]);
	*sk = sp[0];
	return pid;
}

/* Runs the shim on one request; returns its exit status, the answer in resp.
 * With gate[] set, the shim runs behind that restore gate. */
static int ask(const uint8_t *req, size_t n, uint8_t *resp, ssize_t *rn, bool with_criu, bool fail)
{
	int sp[2];
	pid_t pid = fork_runc(&sp[0]);
	if (pid == 0) {
		if (with_criu)
			setenv("FM_CRIU", self, 1);
		else
			unsetenv("FM_CRIU");
		if (fail)
			setenv("FM_FAKE_FAIL", "1", 1);
		if (*gate) {
			char v[32];
			setenv("FM_RESTORE_GATE", gate, 1);
			snprintf(v, sizeof(v), "%d", (int)(gate_daemon ? gate_daemon : getppid()));
			setenv("FM_RESTORE_GATE_PID", v, 1);
			setenv("FM_RESTORE_GATE_MS", "5000", 1);
		}
		execl(getenv("FM_CRIU_SHIM"), "fm-criu-shim", "swrk", "3", (char *)NULL);
		_exit(126);
	}
	/* a shim that refuses at its gate may be gone before the request is
	 * sent (its daemon died at once): then there is no answer either */
	ssize_t sent = send(sp[0], req, n, MSG_NOSIGNAL);
	if (sent < 0)
		assert_true(errno == EPIPE || errno == ECONNRESET);
	else
		assert_int_equal(sent, (ssize_t)n);
	struct timeval tv = { 10, 0 };
	setsockopt(sp[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	*rn = sent < 0 ? -1 : recv(sp[0], resp, 256, 0);
	close(sp[0]);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_shim_records_and_replays_the_version(void **state)
{
	(void)state;
	uint8_t resp[256];
	ssize_t n;
	/* first: CRIU answers, through the shim, and the answer is kept */
	assert_int_equal(ask(VERSION_REQ, sizeof(VERSION_REQ), resp, &n, true, false), 0);
	assert_int_equal(n, sizeof(VERSION_RESP));
	assert_memory_equal(resp, VERSION_RESP, sizeof(VERSION_RESP));
	assert_int_equal(runs(), 1);
	char path[256];
	snprintf(path, sizeof(path), "%s/080a", dir);
	assert_int_equal(access(path, R_OK), 0);
	/* then: the same answer, without CRIU */
	for (int i = 0; i < 3; i++) {
		memset(resp, 0, sizeof(resp));
		assert_int_equal(ask(VERSION_REQ, sizeof(VERSION_REQ), resp, &n, true, false), 0);
		assert_int_equal(n, sizeof(VERSION_RESP));
		assert_memory_equal(resp, VERSION_RESP, sizeof(VERSION_RESP));
	}
	assert_int_equal(runs(), 1);
}

static void test_shim_hands_everything_else_to_criu(void **state)
{
	(void)state;
	uint8_t resp[256];
	ssize_t n;
	int before = runs();
	/* a restore: CRIU gets the request unread, and answers it itself */
	assert_int_equal(ask(RESTORE_REQ, sizeof(RESTORE_REQ), resp, &n, true, false), 0);
	assert_int_equal(n, sizeof(RESTORE_RESP));
	assert_memory_equal(resp, RESTORE_RESP, sizeof(RESTORE_RESP));
	assert_int_equal(runs(), before + 1);
	/* nor is it recorded */
	char path[256];
	snprintf(path, sizeof(path), "%s/08021200", dir);
	assert_int_equal(access(path, F_OK), -1);
}

static void test_shim_keeps_no_failed_answer(void **state)
{
	(void)state;
	uint8_t resp[256];
	ssize_t n;
	int before = runs();
	/* CRIU fails without answering: so does the shim, and nothing is kept */
	assert_int_not_equal(ask(FEATURE_REQ, sizeof(FEATURE_REQ), resp, &n, true, true), 0);
	assert_true(n <= 0);
	assert_int_equal(runs(), before + 1);
	char path[256];
	snprintf(path, sizeof(path), "%s/08092a021001", dir);
	assert_int_equal(access(path, F_OK), -1);
	/* without FM_CRIU it refuses outright */
	assert_int_equal(ask(VERSION_REQ, sizeof(VERSION_REQ), resp, &n, false, false), 127);
}

/* The gate: a FIFO the daemon holds open for writing, one byte in it. */
static int gate_open(void)
{
	snprintf(gate, sizeof(gate), "%s.gate", dir);
	unlink(gate);
	assert_int_equal(mkfifo(gate, 0600), 0);
	int fd = open(gate, O_RDWR | O_NONBLOCK);
	assert_true(fd >= 0);
	return fd;
}

static void test_gate_g_lets_the_restore_through_once(void **state)
{
	(void)state;
	uint8_t resp[256];
	ssize_t n;
	int fd = gate_open();
	/* written before the shim comes: the byte waits in the FIFO */
	assert_int_equal(write(fd, "g", 1), 1);
	int before = runs();
	assert_int_equal(ask(RESTORE_REQ, sizeof(RESTORE_REQ), resp, &n, true, false), 0);
	assert_int_equal(n, sizeof(RESTORE_RESP));
	assert_int_equal(runs(), before + 1);
	/* the gate is gone, and runc's next question passes without it */
	assert_int_equal(access(gate, F_OK), -1);
	assert_int_equal(ask(VERSION_REQ, sizeof(VERSION_REQ), resp, &n, true, false), 0);
	assert_int_equal(n, sizeof(VERSION_RESP));
	close(fd);
	*gate = 0;
}

/* The shim behind the gate fails without answering or running CRIU. */
static void assert_gate_refuses(int fd)
{
	uint8_t resp[256];
	ssize_t n;
	int before = runs();
	assert_int_equal(ask(RESTORE_REQ, sizeof(RESTORE_REQ), resp, &n, true, false), 1);
	assert_true(n <= 0);
	assert_int_equal(runs(), before);
	close(fd);
	unlink(gate);
	*gate = 0;
}

static void test_gate_x_fails_without_asking_criu(void **state)
{
	(void)state;
	int fd = gate_open();
	assert_int_equal(write(fd, "x", 1), 1);
	assert_gate_refuses(fd);
}

static void test_gate_gives_up_when_its_daemon_exits(void **state)
{
	(void)state;
	int fd = gate_open();
	/* a "daemon" that holds nothing and dies at once: nobody will open the gate */
	gate_daemon = fork();
	assert_true(gate_daemon >= 0);
	if (gate_daemon == 0)
		_exit(0);
	assert_gate_refuses(fd);
	waitpid(gate_daemon, NULL, 0);
	gate_daemon = 0;
}

static ssize_t recv_fd(int sk, uint8_t *buf, size_t len, int *fd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cm;
	struct iovec iov = { buf, len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
	ssize_t n = recvmsg(sk, &m, 0);
	struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&m) : NULL;
	*fd = -1;
	if (c && c->cmsg_type == SCM_RIGHTS)
		memcpy(fd, CMSG_DATA(c), sizeof(int));
	return n;
}

/* With FM_RESTORE_RESUMED, a restore's messages pass through the shim's
 * relay: CRIU still finds runc's directories through its peer, descriptors
 * pass, every message arrives unchanged, 'r' is in the FIFO by the time
 * runc sees post-resume (and not before), and all ends when runc is done.
 * hold ('g' or 'x', 0: none): with FM_RESTORE_HOLD, CRIU's pre-resume stops
 * in the relay ('p' in the FIFO, nothing for runc) until the daemon's byte;
 * 'g' passes it on, 'x' ends the restore: CRIU killed, runc's socket closed,
 * the shim failing. */
static void relay_restore(int hold)
{
	char images[96], fifo[96], hfifo[96], ino[32];
	snprintf(images, sizeof(images), "%s/images", dir);
	snprintf(fifo, sizeof(fifo), "%s.resumed", dir);
	snprintf(hfifo, sizeof(hfifo), "%s.hold", dir);
	unlink(hfifo);
	int hfd = -1;
	if (hold) {
		assert_int_equal(mkfifo(hfifo, 0600), 0);
		hfd = open(hfifo, O_RDWR | O_NONBLOCK | O_CLOEXEC);
		assert_true(hfd >= 0);
	}
	assert_int_equal(mkdir(images, 0700), 0);
	int ifd = open(images, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	assert_int_equal(fstat(ifd, &st), 0);
	snprintf(ino, sizeof(ino), "%llu", (unsigned long long)st.st_ino);
	/* the work directory at another number, the same directory */
	int wfd = fcntl(ifd, F_DUPFD_CLOEXEC, 40);
	assert_true(ifd < 128 && wfd == 40);
	RELAYED_REQ[5] = (uint8_t)ifd;
	RELAYED_REQ[8] = (uint8_t)wfd;
	unlink(fifo);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	int note = open(fifo, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	assert_true(note >= 0);
	int sp[2];
	int before = runs();
	pid_t pid = fork_runc(&sp[0]);
	if (pid == 0) {
		setenv("FM_FAKE_INO", ino, 1);
		setenv("FM_CRIU", self, 1);
		setenv("FM_RESTORE_RESUMED", fifo, 1);
		if (hold) {
			setenv("FM_RESTORE_HOLD", hfifo, 1);
			setenv("FM_FAKE_PRE_RESUME", "1", 1);
		}
		execl(getenv("FM_CRIU_SHIM"), "fm-criu-shim", "swrk", "3", (char *)NULL);
		_exit(126);
	}
	struct timeval tv = { 10, 0 };
	setsockopt(sp[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(send(sp[0], RELAYED_REQ, sizeof(RELAYED_REQ), 0), (ssize_t)sizeof(RELAYED_REQ));
	uint8_t buf[256];
	char byte;
	int fd;
	/* the first notification, its descriptor with it */
	assert_int_equal(recv_fd(sp[0], buf, sizeof(buf), &fd), (ssize_t)sizeof(NOTIFY_PTS));
	assert_memory_equal(buf, NOTIFY_PTS, sizeof(NOTIFY_PTS));
	assert_true(fd >= 0);
	char pts[4] = "";
	assert_int_equal(read(fd, pts, 3), 3);
	assert_string_equal(pts, "pts");
	close(fd);
	assert_int_equal(read(note, &byte, 1), -1);   /* not yet */
	assert_int_equal(send(sp[0], NOTIFY_ACK, sizeof(NOTIFY_ACK), 0), (ssize_t)sizeof(NOTIFY_ACK));
	if (hold) {
		/* held: 'p' comes, pre-resume does not */
		struct pollfd pn = { note, POLLIN, 0 };
		assert_int_equal(poll(&pn, 1, 10000), 1);
		assert_int_equal(read(note, &byte, 1), 1);
		assert_int_equal(byte, 'p');
		struct pollfd pr = { sp[0], POLLIN, 0 };
		assert_int_equal(poll(&pr, 1, 300), 0);
		assert_int_equal(write(hfd, &(char){ (char)hold }, 1), 1);
		if (hold == 'x') {
			int wst;
			assert_int_equal(recv(sp[0], buf, sizeof(buf), 0), 0);   /* CRIU is gone */
			assert_int_equal(waitpid(pid, &wst, 0), pid);
			assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) != 0);
			assert_int_equal(runs(), before + 1);
			goto out;
		}
		assert_int_equal(recv_fd(sp[0], buf, sizeof(buf), &fd), (ssize_t)sizeof(NOTIFY_PRE_RESUME));
		assert_memory_equal(buf, NOTIFY_PRE_RESUME, sizeof(NOTIFY_PRE_RESUME));
		assert_int_equal(send(sp[0], NOTIFY_ACK, sizeof(NOTIFY_ACK), 0), (ssize_t)sizeof(NOTIFY_ACK));
	}
	assert_int_equal(recv_fd(sp[0], buf, sizeof(buf), &fd), (ssize_t)sizeof(NOTIFY_RESUMED));
	assert_memory_equal(buf, NOTIFY_RESUMED, sizeof(NOTIFY_RESUMED));
	assert_int_equal(read(note, &byte, 1), 1);
	assert_int_equal(byte, 'r');
	assert_int_equal(send(sp[0], NOTIFY_ACK, sizeof(NOTIFY_ACK), 0), (ssize_t)sizeof(NOTIFY_ACK));
	assert_int_equal(recv(sp[0], buf, sizeof(buf), 0), (ssize_t)sizeof(RESTORE_RESP));
	assert_memory_equal(buf, RESTORE_RESP, sizeof(RESTORE_RESP));
	/* runc is done: CRIU sees the end and exits 0, then the relay ends too */
	shutdown(sp[0], SHUT_WR);
	int wst;
	assert_int_equal(waitpid(pid, &wst, 0), pid);
	assert_true(WIFEXITED(wst));
	assert_int_equal(WEXITSTATUS(wst), 0);
	assert_int_equal(recv(sp[0], buf, sizeof(buf), 0), 0);
	assert_int_equal(runs(), before + 1);
out:
	close(sp[0]);
	close(note);
	close(ifd);
	close(wfd);
	if (hfd >= 0)
		close(hfd);
	unlink(fifo);
	unlink(hfifo);
	rmdir(images);
}

static void test_relay_tells_of_the_resume(void **state)
{
	(void)state;
	relay_restore(0);
}

static void test_relay_holds_the_resume_until_g(void **state)
{
	(void)state;
	relay_restore('g');
}

static void test_relay_held_resume_x_fails_the_restore(void **state)
{
	(void)state;
	relay_restore('x');
}

/* What the warm tests share: the images and work directories (two of them,
 * so that a swap shows) open in this process, runc here, at 6 and 9, named
 * so in WARM_REQ: the keeper receives what it is handed at its lowest free
 * numbers, today 3, 4, 6 and 8, so the images directory is to go where the
 * work directory arrived (putting them in place must not overwrite one
 * another); a file that stands for the network namespace; inodes as the
 * fake CRIU reads them. */
typedef struct {
	char images[96], work[96], ns[96], sock[96], fifo[96];
	char ino[32], wino[32], nsino[32];
	int ifd, wfd;
} warm_fixture;

static void inode_of(const char *path, char *out, size_t len)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	snprintf(out, len, "%llu", (unsigned long long)st.st_ino);
}

static void warm_setup(warm_fixture *f)
{
	snprintf(f->images, sizeof(f->images), "%s/images", dir);
	snprintf(f->work, sizeof(f->work), "%s/work", dir);
	snprintf(f->ns, sizeof(f->ns), "%s/ns", dir);
	snprintf(f->sock, sizeof(f->sock), "%s/warm.sock", dir);
	snprintf(f->fifo, sizeof(f->fifo), "%s.resumed", dir);
	assert_int_equal(mkdir(f->images, 0700), 0);
	assert_int_equal(mkdir(f->work, 0700), 0);
	int nfd = open(f->ns, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(nfd >= 0);
	close(nfd);
	inode_of(f->images, f->ino, sizeof(f->ino));
	inode_of(f->work, f->wino, sizeof(f->wino));
	inode_of(f->ns, f->nsino, sizeof(f->nsino));
	int a = open(f->images, O_RDONLY | O_DIRECTORY | O_CLOEXEC), b = open(f->work, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(a >= 0 && b >= 0);
	f->ifd = 6;
	f->wfd = 9;
	assert_true(a != 6 && a != 9 && b != 6 && b != 9);
	assert_int_equal(fcntl(f->ifd, F_GETFD), -1);   /* free here */
	assert_int_equal(fcntl(f->wfd, F_GETFD), -1);
	assert_int_equal(dup3(a, f->ifd, O_CLOEXEC), f->ifd);
	assert_int_equal(dup3(b, f->wfd, O_CLOEXEC), f->wfd);
	close(a);
	close(b);
	WARM_REQ[5] = (uint8_t)f->ifd;
	WARM_REQ[8] = (uint8_t)f->wfd;
}

static void warm_teardown(warm_fixture *f)
{
	close(f->ifd);
	close(f->wfd);
	unlink(f->ns);
	unlink(f->fifo);
	rmdir(f->images);
	rmdir(f->work);
}

/* A warm CRIU's keeper (`fm-criu-shim warm SOCK [NS]`) for the fake CRIU,
 * returned once it listens and its CRIU has started. */
static pid_t start_keeper(const warm_fixture *f, bool with_ns, bool with_fifo)
{
	int before = runs();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char v[32];
		setenv("FM_FAKE_CRIU", "1", 1);
		setenv("FM_FAKE_COUNT", counter, 1);
		setenv("FM_FAKE_INO", f->ino, 1);
		setenv("FM_FAKE_WINO", f->wino, 1);
		if (with_ns)
			setenv("FM_FAKE_NS_INO", f->nsino, 1);
		setenv("FM_CRIU", self, 1);
		if (with_fifo)
			setenv("FM_RESTORE_RESUMED", f->fifo, 1);
		snprintf(v, sizeof(v), "%d", (int)getppid());
		setenv("FM_RESTORE_GATE_PID", v, 1);
		setenv("FM_RESTORE_GATE_MS", "10000", 1);
		execl(getenv("FM_CRIU_SHIM"), "fm-criu-shim", "warm", f->sock, with_ns ? f->ns : NULL, (char *)NULL);
		_exit(126);
	}
	/* (a wait for its start, bounded: 5 s) */
	for (int i = 0; i < 500 && (access(f->sock, F_OK) < 0 || runs() == before); i++)
		usleep(10000);
	assert_int_equal(access(f->sock, F_OK), 0);
	assert_int_equal(runs(), before + 1);
	return pid;
}

/* runc's restore shim with FM_CRIU_WARM, its inherited descriptor 4 the
 * namespace file, as runc gives it to CRIU. */
static pid_t start_restore_shim(int *sk, const warm_fixture *f)
{
	pid_t pid = fork_runc(sk);
	if (pid == 0) {
		setenv("FM_CRIU", self, 1);
		setenv("FM_FAKE_INO", f->ino, 1);
		setenv("FM_FAKE_WINO", f->wino, 1);
		setenv("FM_CRIU_WARM", f->sock, 1);
		int nfd = open(f->ns, O_RDONLY);
		if (nfd < 0 || dup2(nfd, 4) != 4)
			_exit(125);
		execl(getenv("FM_CRIU_SHIM"), "fm-criu-shim", "swrk", "3", (char *)NULL);
		_exit(126);
	}
	struct timeval tv = { 10, 0 };
	setsockopt(*sk, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return pid;
}

/* Plays runc through a restore (WARM_REQ): the descriptor-carrying
 * notification, post-resume (checked on note, if any), the answer, the end. */
static void restore_as_runc(int sk, int note)
{
	uint8_t buf[256];
	char byte;
	int fd;
	assert_int_equal(send(sk, WARM_REQ, sizeof(WARM_REQ), 0), (ssize_t)sizeof(WARM_REQ));
	assert_int_equal(recv_fd(sk, buf, sizeof(buf), &fd), (ssize_t)sizeof(NOTIFY_PTS));
	assert_memory_equal(buf, NOTIFY_PTS, sizeof(NOTIFY_PTS));
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(send(sk, NOTIFY_ACK, sizeof(NOTIFY_ACK), 0), (ssize_t)sizeof(NOTIFY_ACK));
	assert_int_equal(recv_fd(sk, buf, sizeof(buf), &fd), (ssize_t)sizeof(NOTIFY_RESUMED));
	if (note >= 0) {
		assert_int_equal(read(note, &byte, 1), 1);
		assert_int_equal(byte, 'r');
	}
	assert_int_equal(send(sk, NOTIFY_ACK, sizeof(NOTIFY_ACK), 0), (ssize_t)sizeof(NOTIFY_ACK));
	assert_int_equal(recv(sk, buf, sizeof(buf), 0), (ssize_t)sizeof(RESTORE_RESP));
	assert_memory_equal(buf, RESTORE_RESP, sizeof(RESTORE_RESP));
	shutdown(sk, SHUT_WR);
}

static int exit_status(pid_t pid)
{
	int wst;
	assert_int_equal(waitpid(pid, &wst, 0), pid);
	return WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
}

/* The warm CRIU, started before the restore (its run counted then), takes
 * it: runc's two directories at its keeper's /proc/PID/fd/N, each at its own
 * number, the namespace at 4, the resume told; no second CRIU starts. */
static void test_warm_criu_takes_the_restore(void **state)
{
	(void)state;
	warm_fixture f;
	warm_setup(&f);
	unlink(f.fifo);
	assert_int_equal(mkfifo(f.fifo, 0600), 0);
	int note = open(f.fifo, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	assert_true(note >= 0);

	pid_t keeper = start_keeper(&f, true, true);
	int before = runs(), sk;
	pid_t pid = start_restore_shim(&sk, &f);
	restore_as_runc(sk, note);
	assert_int_equal(exit_status(pid), 0);
	assert_int_equal(exit_status(keeper), 0);
	uint8_t buf[16];
	assert_int_equal(recv(sk, buf, sizeof(buf), 0), 0);
	assert_int_equal(runs(), before);
	assert_int_equal(access(f.sock, F_OK), -1);
	close(sk);
	close(note);
	warm_teardown(&f);
}

/* A warm CRIU that lacks what the request says it inherits (no network
 * namespace) declines: the restore shim starts its own CRIU, which
 * restores; the keeper ends, its CRIU killed. */
static void test_warm_criu_declines_what_it_lacks(void **state)
{
	(void)state;
	warm_fixture f;
	warm_setup(&f);
	pid_t keeper = start_keeper(&f, false, false);
	int before = runs(), sk;
	pid_t pid = start_restore_shim(&sk, &f);
	restore_as_runc(sk, -1);
	assert_int_equal(exit_status(pid), 0);
	assert_int_equal(exit_status(keeper), 3);
	assert_int_equal(runs(), before + 1);
	close(sk);
	warm_teardown(&f);
}

int main(int argc, char **argv)
{
	if (getenv("FM_FAKE_CRIU"))
		return fake_criu(argc, argv);
	if (!getenv("FM_CRIU_SHIM")) {
		fprintf(stderr, "FM_CRIU_SHIM (the built fm-criu-shim) is not set: run through meson test\n");
		return 1;
	}
	ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (k <= 0)
		return 1;
	self[k] = 0;
	snprintf(dir, sizeof(dir), "/tmp/fm-test-shim-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	snprintf(counter, sizeof(counter), "%s.count", dir);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shim_records_and_replays_the_version),
		cmocka_unit_test(test_shim_hands_everything_else_to_criu),
		cmocka_unit_test(test_shim_keeps_no_failed_answer),
		cmocka_unit_test(test_gate_g_lets_the_restore_through_once),
		cmocka_unit_test(test_gate_x_fails_without_asking_criu),
		cmocka_unit_test(test_gate_gives_up_when_its_daemon_exits),
		cmocka_unit_test(test_relay_tells_of_the_resume),
		cmocka_unit_test(test_relay_holds_the_resume_until_g),
		cmocka_unit_test(test_relay_held_resume_x_fails_the_restore),
		cmocka_unit_test(test_warm_criu_takes_the_restore),
		cmocka_unit_test(test_warm_criu_declines_what_it_lacks),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	fm_rm_rf(dir);
	unlink(counter);
	return r;
}
