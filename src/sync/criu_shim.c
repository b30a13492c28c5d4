/* State Restoration Module: fm-criu-shim, the CRIU that runc runs.
 *
 * Every `runc restore` asks CRIU's RPC (`criu swrk FD`, a SOCK_SEQPACKET
 * socket) for its version before restoring, and for a lazy restore whether it
 * supports lazy pages: two more CRIU starts (~20 ms together here), inside a
 * migration's freeze.  What CRIU answers does not change while the daemon
 * runs (the same binary, the same kernel), so this shim, given to runc as
 * `--criu`, keeps CRIU's own answers to those two questions: the first time
 * it runs CRIU for them and passes the answer on, recording it; afterwards it
 * replays it.  Everything else (the restore itself) is CRIU's: the shim
 * execs it with the same arguments, the request still unread on the socket.
 *
 * A restore the daemon starts before the images are there (runc's own start,
 * ~25 ms, then overlaps the source's dump: sync/restore.c) waits here, at its
 * first CRIU question, until the daemon opens the gate: a FIFO from which it
 * reads one byte, 'g' to go on (the FIFO is then removed, so that runc's later
 * questions pass), anything else to fail, so that runc gives up and cleans up.
 * It also fails when the daemon exits or the wait outlasts its limit.
 *
 * A restored container runs from CRIU's "post-resume" notification on, but
 * runc exits only ~12 ms later (CRIU's own exit, runc's end), while the
 * daemon still holds the container's TCP.  When the daemon wants to hear of
 * the resume (FM_RESTORE_RESUMED, a FIFO), the restore's messages pass
 * through a relay of this shim: a process of its own (orphaned, so that CRIU
 * stays runc's child and the restored tasks, CRIU's siblings, too) that
 * writes 'r' into the FIFO when CRIU notifies post-resume, and passes
 * every message and descriptor on unchanged.  CRIU finds runc's images and
 * work directories through /proc/PEER/fd/N, PEER being whoever made its end
 * of the socket: the relay makes it and holds runc's descriptors at the same
 * numbers until CRIU first answers (by then CRIU has opened them).
 *
 * Environment (set by the daemon, src/runtime/runtime.c, sync/restore.c):
 *   FM_CRIU            the real CRIU
 *   FM_CRIU_RPC_CACHE  the directory of recorded answers (emptied at every
 *                      daemon start); a file per request, named by its bytes
 *   FM_RESTORE_GATE    the gate's FIFO (absent: open)
 *   FM_RESTORE_GATE_PID, FM_RESTORE_GATE_MS  the daemon, and the longest wait
 *   FM_RESTORE_RESUMED the FIFO told of the resume (absent: no relay)
 *
 * Only libc: it starts once per question. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define REQ_MAX 64          /* the two questions are a few bytes */
#define RESP_MAX 4096
#define CRIU_REQ_FEATURE_CHECK 9
#define CRIU_REQ_VERSION 10
#define CRIU_REQ_NOTIFY 6
#define RELAY_MAX (1 << 20)  /* one message; runc reads answers of 40 KiB at most */
#define RELAY_FDS 16         /* descriptors with one message */
#define BORROW_MAX 4

/* criu_req's first field is its type (rpc.proto: required, field 1). */
static bool cacheable(const uint8_t *req, ssize_t n)
{
	return n >= 2 && req[0] == 0x08 && (req[1] == CRIU_REQ_VERSION || req[1] == CRIU_REQ_FEATURE_CHECK);
}

static void cache_path(char *out, size_t len, const char *dir, const uint8_t *req, ssize_t n)
{
	size_t k = (size_t)snprintf(out, len, "%s/", dir);
	for (ssize_t i = 0; i < n && k + 3 < len; i++)
		k += (size_t)snprintf(out + k, len - k, "%02x", req[i]);
}

static int exec_criu(const char *criu, char **argv)
{
	argv[0] = (char *)criu;
	execv(criu, argv);
	fprintf(stderr, "fm-criu-shim: cannot run %s: %s\n", criu, strerror(errno));
	return 127;
}

/* Runs CRIU for the question on its own socket, passes its answer to runc
 * and records it. */
static int ask_criu(const char *criu, int fd, const uint8_t *req, ssize_t n, const char *path)
{
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		return 127;
	pid_t pid = fork();
	if (pid < 0)
		return 127;
	if (pid == 0) {
		if (dup2(sp[1], 3) < 0)
			_exit(127);
		char *argv[] = { (char *)criu, (char *)"swrk", (char *)"3", NULL };
		execv(criu, argv);
		_exit(127);
	}
	close(sp[1]);
	uint8_t resp[RESP_MAX];
	ssize_t k = -1;
	if (send(sp[0], req, (size_t)n, MSG_NOSIGNAL) == n)
		k = recv(sp[0], resp, sizeof(resp), 0);
	close(sp[0]);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (k <= 0)
		return WIFEXITED(st) && WEXITSTATUS(st) ? WEXITSTATUS(st) : 1;
	if (send(fd, resp, (size_t)k, MSG_NOSIGNAL) != k)
		return 1;
	/* only a successful CRIU's answer is worth keeping (it exits 0) */
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		char tmp[4200];
		snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
		int w = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (w >= 0) {
			bool ok = write(w, resp, (size_t)k) == k;
			ok &= close(w) == 0;
			if (!ok || rename(tmp, path) < 0)
				unlink(tmp);
		}
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

/* 0: the gate is open (or there is none); else the exit status to give up with. */
static int gate_wait(void)
{
	const char *path = getenv("FM_RESTORE_GATE");
	if (!path || !*path)
		return 0;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;   /* opened already, for an earlier question */
		fprintf(stderr, "fm-criu-shim: cannot open the restore gate %s: %s\n", path, strerror(errno));
		return 1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
		fprintf(stderr, "fm-criu-shim: the restore gate %s is no FIFO\n", path);
		close(fd);
		return 1;
	}
	const char *p = getenv("FM_RESTORE_GATE_PID"), *ms = getenv("FM_RESTORE_GATE_MS");
	long daemon = p ? strtol(p, NULL, 10) : 0, limit = ms ? strtol(ms, NULL, 10) : 0;
	struct pollfd pf[2] = { { fd, POLLIN, 0 }, { -1, POLLIN, 0 } };
	if (daemon > 0 && (pf[1].fd = (int)syscall(SYS_pidfd_open, (pid_t)daemon, 0)) < 0 && errno == ESRCH) {
		fprintf(stderr, "fm-criu-shim: the restore gate %s lost its daemon\n", path);
		close(fd);
		return 1;
	}
	char byte = 0;
	int r;
	do
		r = poll(pf, 2, limit > 0 ? (int)limit : -1);
	while (r < 0 && errno == EINTR);
	bool go = r > 0 && (pf[0].revents & POLLIN) && read(fd, &byte, 1) == 1 && byte == 'g';
	if (go)
		unlink(path);
	else
		fprintf(stderr, "fm-criu-shim: the restore gate %s %s\n", path,
			r == 0 ? "stayed shut too long" : byte ? "was closed: the migration ends here" :
			pf[1].fd >= 0 && pf[1].revents ? "lost its daemon" : "failed");
	close(fd);
	if (pf[1].fd >= 0)
		close(pf[1].fd);
	return go ? 0 : 1;
}

/* Protocol buffers, as far as the relay reads them: field after field. */
typedef struct {
	uint32_t num;
	uint64_t v;              /* a varint's value */
	const uint8_t *data;     /* a length-delimited field's bytes */
	size_t len;
} pb_field;

static bool pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; *p < end && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;
		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

/* The next field at *p; false at the end or on what is no protobuf. */
static bool pb_next(const uint8_t **p, const uint8_t *end, pb_field *f)
{
	uint64_t key;
	if (*p >= end || !pb_varint(p, end, &key))
		return false;
	*f = (pb_field){ .num = (uint32_t)(key >> 3) };
	switch (key & 7) {
	case 0:
		return pb_varint(p, end, &f->v);
	case 1:
	case 5: {
		size_t k = (key & 7) == 1 ? 8 : 4;
		if ((size_t)(end - *p) < k)
			return false;
		*p += k;
		return true;
	}
	case 2:
		if (!pb_varint(p, end, &f->v) || f->v > (uint64_t)(end - *p))
			return false;
		f->data = *p;
		f->len = (size_t)f->v;
		*p += f->len;
		return true;
	default:
		return false;
	}
}

/* criu_resp { type NOTIFY (1), notify (5) { script (1) "post-resume" } } */
static bool is_post_resume(const uint8_t *m, size_t n)
{
	const uint8_t *p = m, *end = m + n;
	bool notify = false, resumed = false;
	pb_field f;
	while (pb_next(&p, end, &f)) {
		if (f.num == 1 && !f.data)
			notify = f.v == CRIU_REQ_NOTIFY;
		else if (f.num == 5 && f.data) {
			const uint8_t *q = f.data;
			pb_field g;
			while (pb_next(&q, f.data + f.len, &g))
				if (g.num == 1 && g.data)
					resumed = g.len == 11 && !memcmp(g.data, "post-resume", 11);
		}
	}
	return notify && resumed;
}

/* The descriptors of runc's that CRIU opens as /proc/PEER/fd/N: criu_req's
 * opts (2): images_dir_fd (1), work_dir_fd (17), status_fd (49). */
static int fds_named(const uint8_t *m, size_t n, int *out)
{
	const uint8_t *p = m, *end = m + n;
	int k = 0;
	pb_field f;
	while (pb_next(&p, end, &f)) {
		if (f.num != 2 || !f.data)
			continue;
		const uint8_t *q = f.data;
		pb_field g;
		while (pb_next(&q, f.data + f.len, &g))
			if ((g.num == 1 || g.num == 17 || g.num == 49) && !g.data && (int32_t)g.v >= 0 &&
			    g.v < 65536 && k < BORROW_MAX)
				out[k++] = (int)g.v;
	}
	return k;
}

/* fd moved to the lowest free number at or above min. */
static int move_fd(int fd, int min)
{
	int n = fcntl(fd, F_DUPFD_CLOEXEC, min);
	if (n >= 0)
		close(fd);
	return n;
}

/* One message, with its descriptors, from one side to the other; *eof at
 * the sender's end (passed on as a shutdown).  note >= 0: the message is
 * CRIU's, and if it is post-resume, 'r' goes into note before runc has it.
 * False on an error: the relay ends. */
static bool pass(int from, int to, uint8_t *buf, bool *eof, int note)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * RELAY_FDS)];
	} cm;
	struct iovec iov = { buf, RELAY_MAX };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
	ssize_t n = recvmsg(from, &m, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN;
	if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		return false;
	if (n == 0 && m.msg_controllen == 0) {
		*eof = true;
		shutdown(to, SHUT_WR);
		return true;
	}
	if (note >= 0 && is_post_resume(buf, (size_t)n) && write(note, "r", 1) != 1)
		return false;
	iov.iov_len = (size_t)n;
	if (m.msg_controllen == 0)
		m.msg_control = NULL;
	bool ok = sendmsg(to, &m, MSG_NOSIGNAL) == n;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++)
				close(((int *)CMSG_DATA(c))[i]);
	return ok;
}

/* Passes messages between runc (runc_sk) and CRIU (criu_sk) through buf
 * (RELAY_MAX bytes) until both are done; 'r' into note at post-resume; the
 * borrowed descriptors closed once CRIU first speaks. */
static bool relay(int runc_sk, int criu_sk, int note, int *borrowed, int nb, uint8_t *buf)
{
	struct pollfd pf[2] = { { runc_sk, POLLIN, 0 }, { criu_sk, POLLIN, 0 } };
	bool eof[2] = { false, false };
	while (!eof[0] || !eof[1]) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		for (int i = 0; i < 2; i++) {
			if (eof[i] || !pf[i].revents)
				continue;
			if (!pass(pf[i].fd, pf[1 - i].fd, buf, &eof[i], i == 1 ? note : -1))
				return false;
			if (eof[i])
				pf[i].fd = -1;
			/* CRIU speaks: it has opened what it wanted of runc's */
			while (i == 1 && nb)
				close(borrowed[--nb]);
		}
	}
	return true;
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* Closes every descriptor from 3 up but the n in keep (sorted here). */
static void close_all_but(int *keep, int n)
{
	qsort(keep, (size_t)n, sizeof(int), cmp_int);
	unsigned from = 3;
	for (int i = 0; i < n; i++) {
		if ((unsigned)keep[i] > from)
			syscall(SYS_close_range, from, (unsigned)keep[i] - 1, 0);
		if ((unsigned)keep[i] >= from)
			from = (unsigned)keep[i] + 1;
	}
	syscall(SYS_close_range, from, ~0U, 0);
}

/* CRIU behind the relay, when the daemon asked for it (FM_RESTORE_RESUMED):
 * this process, runc's child, relays; CRIU is its child, on a socket this
 * process made (so its peer), and starts once runc's descriptors that the
 * request names are here at their numbers.  Without the FIFO, or when the
 * relay cannot start, CRIU talks to runc itself. */
static int exec_criu_relayed(const char *criu, char **argv, int fd)
{
	static uint8_t req[RELAY_MAX];
	const char *path = getenv("FM_RESTORE_RESUMED");
	if (!path || !*path)
		return exec_criu(criu, argv);
	ssize_t n;
	do
		n = recv(fd, req, sizeof(req), MSG_PEEK | MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	if (n <= 0 || n > RELAY_MAX)
		return exec_criu(criu, argv);
	int want[BORROW_MAX], nw = fds_named(req, (size_t)n, want), top = 2;
	for (int i = 0; i < nw; i++)
		top = want[i] > top ? want[i] : top;
	/* runc's descriptors, above every number they are to take */
	int held[BORROW_MAX], nh = 0;
	int pidfd = (int)syscall(SYS_pidfd_open, getppid(), 0);
	for (; pidfd >= 0 && nh < nw; nh++) {
		int b = (int)syscall(SYS_pidfd_getfd, pidfd, want[nh], 0);
		if (b < 0 || (held[nh] = move_fd(b, top + 1)) < 0)
			break;
	}
	if (pidfd >= 0)
		close(pidfd);
	int note = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	int sp[2] = { -1, -1 }, go[2] = { -1, -1 };
	if (nh < nw || note < 0 || fstat(note, &st) < 0 || !S_ISFIFO(st.st_mode) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0 || pipe2(go, O_CLOEXEC) < 0) {
		fprintf(stderr, "fm-criu-shim: no relay (%s): %s\n", path, strerror(errno));
		return exec_criu(criu, argv);
	}
	pid_t pid = fork();
	if (pid < 0)
		return exec_criu(criu, argv);
	if (pid == 0) {
		/* CRIU, once the relay is ready (no byte: the relay died) */
		char byte;
		if (read(go[0], &byte, 1) != 1 || dup2(sp[1], fd) < 0)
			_exit(1);
		_exit(exec_criu(criu, argv));
	}
	/* the relay keeps runc's socket, its end of CRIU's, the FIFO, the go
	 * pipe and runc's descriptors, all above the numbers those take;
	 * nothing else of runc's: CRIU has its own copies */
	int own[4] = { fd, sp[0], note, go[1] }, keep[4 + BORROW_MAX], nk = 0;
	bool ok = true;
	for (int i = 0; i < 4 && ok; i++)
		ok = (own[i] = move_fd(own[i], top + 1)) >= 0;
	for (int i = 0; i < 4; i++)
		keep[nk++] = own[i];
	for (int i = 0; i < nh; i++)
		keep[nk++] = held[i];
	if (ok) {
		close_all_but(keep, nk);
		for (int i = 0; i < nh && ok; i++)
			ok = dup2(held[i], want[i]) == want[i];
		for (int i = 0; i < nh; i++)
			close(held[i]);
	}
	ok = ok && write(own[3], "g", 1) == 1;
	close(own[3]);
	/* (req is free again: the request was only peeked at) */
	ok = ok && relay(own[0], own[1], own[2], want, nw, req);
	if (!ok)
		kill(pid, SIGKILL);
	close(own[0]);
	close(own[1]);
	int wst = 0;
	while (waitpid(pid, &wst, 0) < 0 && errno == EINTR)
		;
	if (!ok)
		return 1;
	return WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + (WIFSIGNALED(wst) ? WTERMSIG(wst) : 0);
}

int main(int argc, char **argv)
{
	const char *criu = getenv("FM_CRIU"), *dir = getenv("FM_CRIU_RPC_CACHE");
	if (!criu || !*criu) {
		fprintf(stderr, "fm-criu-shim: FM_CRIU (the real CRIU) is not set\n");
		return 127;
	}
	char *end;
	long fd = argc == 3 && !strcmp(argv[1], "swrk") ? strtol(argv[2], &end, 10) : -1;
	int g = gate_wait();
	if (g)
		return g;
	if (fd < 0 || fd > 1023 || *end)
		return exec_criu(criu, argv);
	if (!dir || !*dir)
		return exec_criu_relayed(criu, argv, (int)fd);
	uint8_t req[REQ_MAX + 1];
	ssize_t n;
	do
		n = recv((int)fd, req, sizeof(req), MSG_PEEK);
	while (n < 0 && errno == EINTR);
	if (n > REQ_MAX || !cacheable(req, n))
		return exec_criu_relayed(criu, argv, (int)fd);
	/* the question is ours now */
	if (recv((int)fd, req, sizeof(req), 0) != n)
		return 1;
	char path[4096];
	cache_path(path, sizeof(path), dir, req, n);
	uint8_t resp[RESP_MAX];
	int c = open(path, O_RDONLY | O_CLOEXEC);
	if (c < 0)
		return ask_criu(criu, (int)fd, req, n, path);
	ssize_t k = read(c, resp, sizeof(resp));
	close(c);
	if (k <= 0)
		return ask_criu(criu, (int)fd, req, n, path);
	return send((int)fd, resp, (size_t)k, MSG_NOSIGNAL) == k ? 0 : 1;
}
