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
 * A warm CRIU (`fm-criu-shim warm SOCK [NETNS]`, started by the daemon with
 * runc's early start, sync/restore.c): from CRIU's exec to its reading of the
 * request is ~10 ms here (the loader, 23 libraries, CRIU's set-up), inside
 * the freeze.  This mode starts CRIU at once, on a socket it made (so it is
 * CRIU's peer), with the container's network namespace at descriptor 4
 * (where runc puts it for CRIU, as the inherited "extRootNetNS"), and keeps
 * it waiting at SOCK.  runc's restore shim (FM_CRIU_WARM=SOCK) hands it runc's
 * socket and the descriptors the request names, instead of starting CRIU:
 * runc's own (borrowed as above) and the inherited ones, which must be what
 * the warm CRIU already has.  The keeper then relays as above and at the end
 * sends CRIU's exit status back, for the restore shim to exit with.  If
 * anything differs the keeper declines and the restore shim starts CRIU
 * itself.  The warm CRIU is not in the container's cgroups (runc put the
 * restore shim there): CRIU moves the restored tasks into them, by the
 * cg_root runc read from the restore shim's.
 *
 * Environment (set by the daemon, src/runtime/runtime.c, sync/restore.c):
 *   FM_CRIU            the real CRIU
 *   FM_CRIU_RPC_CACHE  the directory of recorded answers (emptied at every
 *                      daemon start); a file per request, named by its bytes
 *   FM_RESTORE_GATE    the gate's FIFO (absent: open)
 *   FM_RESTORE_GATE_PID, FM_RESTORE_GATE_MS  the daemon, and the longest wait
 *   FM_RESTORE_RESUMED the FIFO told of the resume (absent: no relay)
 *   FM_RESTORE_HOLD    a FIFO: at CRIU's pre-resume the relay writes 'p' into
 *                      FM_RESTORE_RESUMED and lets CRIU go on (resume the
 *                      tasks) only when the daemon writes 'g' here: COLD's
 *                      restore waits there while its memory arrives
 *   FM_CRIU_WARM       a warm CRIU's keeper's socket (absent: none)
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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
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
#define INHERIT_MAX 4
#define WARM_NETNS_FD 4      /* runc's first extra file for CRIU: the network namespace */
#define HANDOFF_MAGIC 0x464d5731u  /* "FMW1" */
#define HANDOFF_WAIT_S 5     /* the keeper's yes or no */

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

/* criu_resp { type NOTIFY (1), notify (5) { script (1) SCRIPT } } */
static bool is_notify(const uint8_t *m, size_t n, const char *script)
{
	const uint8_t *p = m, *end = m + n;
	bool notify = false, named = false;
	size_t len = strlen(script);
	pb_field f;
	while (pb_next(&p, end, &f)) {
		if (f.num == 1 && !f.data)
			notify = f.v == CRIU_REQ_NOTIFY;
		else if (f.num == 5 && f.data) {
			const uint8_t *q = f.data;
			pb_field g;
			while (pb_next(&q, f.data + f.len, &g))
				if (g.num == 1 && g.data)
					named = g.len == len && !memcmp(g.data, script, len);
		}
	}
	return notify && named;
}

/* CRIU's pre-resume, when the daemon holds the restore (FM_RESTORE_HOLD):
 * 'p' into note, then the daemon's word from the hold FIFO, 'g' to let the
 * tasks go; false for anything else (the daemon gave up, or went: EOF). */
static bool hold_at_pre_resume(int note)
{
	const char *path = getenv("FM_RESTORE_HOLD");
	if (!path || !*path)
		return true;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char byte = 0;
	ssize_t k = -1;
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && write(note, "p", 1) == 1)
		do
			k = read(fd, &byte, 1);
		while (k < 0 && errno == EINTR);
	if (fd >= 0)
		close(fd);
	return k == 1 && byte == 'g';
}

/* criu_req's opts (field 2), as fields: true with the next one in *g. */
static bool opts_next(const uint8_t *m, size_t n, const uint8_t **q, const uint8_t **qend, pb_field *g)
{
	if (!*q) {
		const uint8_t *p = m, *end = m + n;
		pb_field f;
		bool found = false;
		while (!found && pb_next(&p, end, &f))
			found = f.num == 2 && f.data;
		if (!found)
			return false;
		*q = f.data;
		*qend = f.data + f.len;
	}
	return pb_next(q, *qend, g);
}

/* The descriptors of runc's that CRIU opens as /proc/PEER/fd/N: opts'
 * images_dir_fd (1), work_dir_fd (17), status_fd (49). */
static int fds_named(const uint8_t *m, size_t n, int *out)
{
	const uint8_t *q = NULL, *qend = NULL;
	int k = 0;
	pb_field g;
	while (opts_next(m, n, &q, &qend, &g))
		if ((g.num == 1 || g.num == 17 || g.num == 49) && !g.data && (int32_t)g.v >= 3 && g.v < 65536 &&
		    k < BORROW_MAX)
			out[k++] = (int)g.v;
	return k;
}

/* The descriptors of CRIU's own that the request names: opts' inherit_fd
 * (27) { key (1), fd (2) }.  -1 if more than max. */
static int fds_inherited(const uint8_t *m, size_t n, int *out, int max)
{
	const uint8_t *q = NULL, *qend = NULL;
	int k = 0;
	pb_field g;
	while (opts_next(m, n, &q, &qend, &g)) {
		if (g.num != 27 || !g.data)
			continue;
		const uint8_t *r = g.data;
		pb_field e;
		while (pb_next(&r, g.data + g.len, &e))
			if (e.num == 2 && !e.data) {
				if (k == max || (int32_t)e.v < 0 || e.v > 65535)
					return -1;
				out[k++] = (int)e.v;
			}
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
 * CRIU's, and if it is post-resume, 'r' goes into note before runc has it;
 * if it is pre-resume, it waits for the daemon's hold (hold_at_pre_resume).
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
	if (note >= 0 && is_notify(buf, (size_t)n, "pre-resume") && !hold_at_pre_resume(note))
		return false;
	if (note >= 0 && is_notify(buf, (size_t)n, "post-resume") && write(note, "r", 1) != 1)
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

/* ---- the warm CRIU ---- */

/* What the restore shim sends its keeper, with runc's socket, the borrowed
 * descriptors and the inherited ones, in that order, as SCM_RIGHTS. */
struct handoff {
	uint32_t magic;
	int32_t nw, want[BORROW_MAX];    /* runc's numbers (CRIU opens /proc/PEER/fd/N) */
	int32_t ni, inherit[INHERIT_MAX];  /* CRIU's numbers */
};

static bool send_with_fds(int sk, const void *data, size_t len, const int *fds, int nfds)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * RELAY_FDS)];
	} cm;
	struct iovec iov = { (void *)data, len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds > 0) {
		m.msg_control = cm.b;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	return sendmsg(sk, &m, MSG_NOSIGNAL) == (ssize_t)len;
}

/* runc's restore shim, a warm CRIU's keeper listening at sock: hands it the
 * restore whose request (n bytes) is still unread on fd.  CRIU's exit status
 * once it is done; -1 if the keeper cannot be reached or declines: the
 * restore is still this shim's. */
static int warm_handoff(const char *sock, int fd, const uint8_t *req, ssize_t n)
{
	struct handoff h = { .magic = HANDOFF_MAGIC };
	h.nw = fds_named(req, (size_t)n, h.want);
	h.ni = fds_inherited(req, (size_t)n, h.inherit, INHERIT_MAX);
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (h.ni < 0 || strlen(sock) >= sizeof(a.sun_path))
		return -1;
	memcpy(a.sun_path, sock, strlen(sock));
	int fds[1 + BORROW_MAX + INHERIT_MAX], nf = 0, nb = 0;
	fds[nf++] = fd;
	int pidfd = (int)syscall(SYS_pidfd_open, getppid(), 0);
	for (; pidfd >= 0 && nb < h.nw; nb++)
		if ((fds[nf++] = (int)syscall(SYS_pidfd_getfd, pidfd, h.want[nb], 0)) < 0)
			break;
	if (pidfd >= 0)
		close(pidfd);
	int c = -1, r = -1;
	char yes = 0;
	struct timeval tv = { HANDOFF_WAIT_S, 0 };
	if (nb == h.nw) {
		for (int i = 0; i < h.ni; i++)
			fds[nf++] = h.inherit[i];
		c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (c >= 0 && connect(c, (struct sockaddr *)&a, sizeof(a)) == 0 &&
		    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 && send_with_fds(c, &h, sizeof(h), fds, nf))
			(void)!recv(c, &yes, 1, 0);
	}
	for (int i = 1; i <= nb; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (c >= 0 && yes != 'y') {
		/* no answer (yet): from now on the keeper cannot say yes (its send
		 * fails), and it relays only after a yes that went through; one may
		 * have arrived just now */
		shutdown(c, SHUT_RDWR);
		if (recv(c, &yes, 1, MSG_DONTWAIT) != 1)
			yes = yes == 'n' ? 'n' : 0;
	}
	if (yes == 'y') {
		/* runc's socket is the keeper's now; what comes back is CRIU's end */
		close(fd);
		tv.tv_sec = 0;
		int32_t st = 1;
		ssize_t k;
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		do
			k = recv(c, &st, sizeof(st), 0);
		while (k < 0 && errno == EINTR);
		r = k == (ssize_t)sizeof(st) ? st : 1;
	} else if (c >= 0) {
		fprintf(stderr, "fm-criu-shim: the warm CRIU at %s %s: CRIU starts now\n", sock,
			yes == 'n' ? "does not fit this restore" : "did not answer");
	}
	if (c >= 0)
		close(c);
	return r;
}

/* The handoff fits the warm CRIU: every inherited descriptor is its network
 * namespace, at the number it has it, and no borrowed number collides with
 * the standard ones. */
static bool handoff_fits(const struct handoff *h, int nfds, const int *fds, const struct stat *ns)
{
	if (h->magic != HANDOFF_MAGIC || h->nw < 0 || h->nw > BORROW_MAX || h->ni < 0 || h->ni > INHERIT_MAX ||
	    nfds != 1 + h->nw + h->ni)
		return false;
	for (int i = 0; i < h->nw; i++)
		if (h->want[i] < 3 || h->want[i] > 65535)
			return false;
	for (int i = 0; i < h->ni; i++) {
		struct stat st;
		if (!ns || h->inherit[i] != WARM_NETNS_FD || fstat(fds[1 + h->nw + i], &st) < 0 ||
		    st.st_dev != ns->st_dev || st.st_ino != ns->st_ino)
			return false;
	}
	return true;
}

/* Waits for the restore shim's connection: -1 when CRIU exited, the daemon
 * is gone, or the wait outlasted its limit. */
static int warm_accept(int lsk, pid_t criu_pid)
{
	const char *p = getenv("FM_RESTORE_GATE_PID"), *ms = getenv("FM_RESTORE_GATE_MS");
	long daemon = p ? strtol(p, NULL, 10) : 0, limit = ms ? strtol(ms, NULL, 10) : 0;
	struct pollfd pf[3] = { { lsk, POLLIN, 0 }, { (int)syscall(SYS_pidfd_open, criu_pid, 0), POLLIN, 0 },
				{ daemon > 0 ? (int)syscall(SYS_pidfd_open, (pid_t)daemon, 0) : -1, POLLIN, 0 } };
	int k, c = -1;
	do
		k = poll(pf, 3, limit > 0 ? (int)limit : -1);
	while (k < 0 && errno == EINTR);
	if (k > 0 && (pf[0].revents & POLLIN) && !pf[1].revents && !pf[2].revents)
		c = accept4(lsk, NULL, NULL, SOCK_CLOEXEC);
	for (int i = 1; i < 3; i++)
		if (pf[i].fd >= 0)
			close(pf[i].fd);
	struct ucred cr;
	socklen_t l = sizeof(cr);
	if (c >= 0 && (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0 || cr.uid != 0)) {
		close(c);
		c = -1;
	}
	return c;
}

/* `fm-criu-shim warm SOCK [NETNS]`: starts CRIU, waits for the restore at
 * SOCK, relays it, reports CRIU's exit status.  Exits 0 when it carried a
 * restore to CRIU's end, 1 when that failed, 3 when it took none. */
static int warm_keep(const char *criu, const char *sock, const char *netns)
{
	static uint8_t buf[RELAY_MAX];
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct stat ns;
	int lsk = -1, nsfd = -1, sp[2] = { -1, -1 };
	if (strlen(sock) >= sizeof(a.sun_path))
		return 2;
	memcpy(a.sun_path, sock, strlen(sock));
	unlink(sock);
	if ((lsk = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)) < 0 ||
	    bind(lsk, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lsk, 1) < 0 ||
	    (netns && ((nsfd = open(netns, O_RDONLY | O_CLOEXEC)) < 0 || fstat(nsfd, &ns) < 0)) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
		fprintf(stderr, "fm-criu-shim: warm CRIU at %s: %s\n", sock, strerror(errno));
		unlink(sock);
		return 2;
	}
	/* out of the way of 3 and 4, which CRIU's are to be */
	sp[1] = move_fd(sp[1], 10);
	if (nsfd >= 0 && (nsfd = move_fd(nsfd, 10)) < 0) {
		fprintf(stderr, "fm-criu-shim: warm CRIU at %s: %s\n", sock, strerror(errno));
		unlink(sock);
		return 2;
	}
	pid_t parent = getpid(), pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent || sp[1] < 0 || dup2(sp[1], 3) < 0 ||
		    (nsfd >= 0 && dup2(nsfd, WARM_NETNS_FD) < 0))
			_exit(127);
		syscall(SYS_close_range, nsfd >= 0 ? WARM_NETNS_FD + 1 : 4, ~0U, 0);
		char *argv[] = { (char *)criu, (char *)"swrk", (char *)"3", NULL };
		execv(criu, argv);
		_exit(127);
	}
	close(sp[1]);
	if (nsfd >= 0)
		close(nsfd);
	int c = pid > 0 ? warm_accept(lsk, pid) : -1;
	close(lsk);
	unlink(sock);
	struct handoff h;
	int fds[RELAY_FDS], nfds = 0;
	if (c >= 0) {
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int) * RELAY_FDS)];
		} cm;
		struct iovec iov = { &h, sizeof(h) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
		struct timeval tv = { HANDOFF_WAIT_S, 0 };
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (recvmsg(c, &m, MSG_CMSG_CLOEXEC) == (ssize_t)sizeof(h) && !(m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
			for (struct cmsghdr *cmh = CMSG_FIRSTHDR(&m); cmh; cmh = CMSG_NXTHDR(&m, cmh))
				if (cmh->cmsg_level == SOL_SOCKET && cmh->cmsg_type == SCM_RIGHTS)
					for (size_t i = 0; i < (cmh->cmsg_len - CMSG_LEN(0)) / sizeof(int) && nfds < RELAY_FDS; i++)
						fds[nfds++] = ((int *)CMSG_DATA(cmh))[i];
	}
	bool ok = c >= 0 && nfds > 0 && handoff_fits(&h, nfds, fds, netns ? &ns : NULL), took = false;
	for (int i = 1 + (ok ? h.nw : 0); i < nfds; i++)
		close(fds[i]);   /* the inherited ones (CRIU has its own), or all but runc's socket */
	if (!ok) {
		if (c >= 0)
			(void)!send(c, "n", 1, MSG_NOSIGNAL);
		if (nfds > 0)
			close(fds[0]);
		if (pid > 0)
			kill(pid, SIGKILL);
	} else {
		/* as exec_criu_relayed: runc's descriptors at their numbers, ours
		 * above them all */
		int top = 4;
		for (int i = 0; i < h.nw; i++)
			top = h.want[i] > top ? h.want[i] : top;
		const char *path = getenv("FM_RESTORE_RESUMED");
		int note = path && *path ? open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC) : -1;
		struct stat nst;
		if (note >= 0 && (fstat(note, &nst) < 0 || !S_ISFIFO(nst.st_mode))) {
			close(note);
			note = -1;
		}
		int own[4] = { fds[0], sp[0], c, note };
		for (int i = 0; i < 4 && ok; i++)
			ok = own[i] < 0 || (own[i] = move_fd(own[i], top + 1)) >= 0;
		/* all of them above top first: a received one may sit at a number
		 * another is to take */
		for (int i = 0; i < h.nw && ok; i++)
			ok = (fds[1 + i] = move_fd(fds[1 + i], top + 1)) >= 0;
		for (int i = 0; i < h.nw && ok; i++)
			ok = dup2(fds[1 + i], h.want[i]) == h.want[i];
		for (int i = 0; i < h.nw; i++)
			if (fds[1 + i] >= 0)
				close(fds[1 + i]);
		c = own[2];
		ok = ok && send(c, "y", 1, MSG_NOSIGNAL) == 1;
		took = ok;
		ok = ok && relay(own[0], own[1], own[3], h.want, h.nw, buf);
		if (!ok)
			kill(pid, SIGKILL);
		close(own[0]);
		close(own[1]);
		if (own[3] >= 0)
			close(own[3]);
	}
	int wst = 0;
	while (pid > 0 && waitpid(pid, &wst, 0) < 0 && errno == EINTR)
		;
	int32_t st = WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + (WIFSIGNALED(wst) ? WTERMSIG(wst) : 0);
	if (ok && send(c, &st, sizeof(st), MSG_NOSIGNAL) != (ssize_t)sizeof(st))
		ok = false;
	if (c >= 0)
		close(c);
	return !took ? 3 : ok ? 0 : 1;
}

/* CRIU without the relay; but a restore the daemon holds (FM_RESTORE_HOLD)
 * fails instead: unheld, its tasks would run before their memory is here. */
static int unrelayed(const char *criu, char **argv)
{
	const char *hold = getenv("FM_RESTORE_HOLD");
	if (hold && *hold) {
		fprintf(stderr, "fm-criu-shim: the restore is to be held at CRIU's pre-resume, and no relay can hold it\n");
		return 1;
	}
	return exec_criu(criu, argv);
}

/* CRIU behind the relay, when the daemon asked for it (FM_RESTORE_RESUMED):
 * this process, runc's child, relays; CRIU is its child, on a socket this
 * process made (so its peer), and starts once runc's descriptors that the
 * request names are here at their numbers.  Without the FIFO, or when the
 * relay cannot start, CRIU talks to runc itself. */
static int exec_criu_relayed(const char *criu, char **argv, int fd)
{
	static uint8_t req[RELAY_MAX];
	const char *path = getenv("FM_RESTORE_RESUMED"), *warm = getenv("FM_CRIU_WARM");
	bool relayed = path && *path, warmed = warm && *warm;
	if (!relayed && !warmed)
		return unrelayed(criu, argv);
	ssize_t n;
	do
		n = recv(fd, req, sizeof(req), MSG_PEEK | MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	if (n <= 0 || n > RELAY_MAX)
		return unrelayed(criu, argv);
	if (warmed) {
		int st = warm_handoff(warm, fd, req, n);
		if (st >= 0)
			return st;
	}
	if (!relayed)
		return unrelayed(criu, argv);
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
		return unrelayed(criu, argv);
	}
	pid_t pid = fork();
	if (pid < 0)
		return unrelayed(criu, argv);
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
	if ((argc == 3 || argc == 4) && !strcmp(argv[1], "warm"))
		return warm_keep(criu, argv[2], argc == 4 ? argv[3] : NULL);
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
