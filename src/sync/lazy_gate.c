/* State Restoration Module, POST_COPY: the lazy-pages gate (see lazy_gate.h).
 *
 * One thread: waits for lazy-pages' status byte, accepts the restore's
 * connection (queued by the kernel meanwhile, with whatever it sent), connects
 * to lazy-pages and copies.  On a UNIX stream socket the kernel hands the
 * descriptors of a message to the read that reaches its last byte, and a read
 * stops there, so a read that brought descriptors ends with the byte they
 * came on (CRIU sends them on a single dummy byte): the gate sends what came
 * before it on its own, then that byte with them, so lazy-pages' reads find
 * them where the restore put them.  Every wait also watches an eventfd that
 * fm_lazy_gate_free raises. */
#include "sync/lazy_gate.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "basic/util.h"

#define SOCK_NAME "lazy-pages.socket"
#define MAX_FDS 8

struct fm_lazy_gate {
	int listen_fd, ready_fd, stop_fd, lazy_dir_fd;
	int timeout_ms;
	pthread_t thread;
	bool started;
	int status;
	fm_error err;
};

/* "/proc/self/fd/N/lazy-pages.socket": a work directory's path may be longer
 * than a socket address holds. */
static void sock_addr(int dir_fd, struct sockaddr_un *sa, socklen_t *len)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s", dir_fd, SOCK_NAME);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(sa->sun_path) + 1);
}

int fm_lazy_socket_listen(const char *work_dir, fm_error *err)
{
	_cleanup_close_ int dir = open(work_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	struct sockaddr_un sa;
	socklen_t len;
	if (dir < 0)
		return fm_error_set(err, -errno, "cannot open %s: %m", work_dir);
	sock_addr(dir, &sa, &len);
	(void)unlinkat(dir, SOCK_NAME, 0);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 4) < 0) {
		int r = fm_error_set(err, -errno, "cannot listen at %s/%s: %m", work_dir, SOCK_NAME);
		if (fd >= 0)
			close(fd);
		return r;
	}
	return fd;
}

/* 1 when fd is ready for events, 0 when stopped, -ETIMEDOUT after
 * timeout_ms (-1: none). */
static int wait_fd(fm_lazy_gate *g, int fd, short events, int timeout_ms)
{
	for (;;) {
		struct pollfd p[2] = { { fd, events, 0 }, { g->stop_fd, POLLIN, 0 } };
		int k = poll(p, 2, timeout_ms);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -ETIMEDOUT;
		return p[1].revents ? 0 : 1;
	}
}

/* Sends to lazy-pages, which must keep reading (a full socket for
 * timeout_ms: it hangs). */
static int send_part(fm_lazy_gate *g, int fd, const uint8_t *p, size_t n, const int *fds, int nfds)
{
	char ctl[CMSG_SPACE(sizeof(int) * MAX_FDS)];
	while (n > 0) {
		struct iovec iov = { (void *)p, n };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (nfds > 0) {
			memset(ctl, 0, sizeof(ctl));
			m.msg_control = ctl;
			m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
			struct cmsghdr *c = CMSG_FIRSTHDR(&m);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
			memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
		}
		ssize_t k = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EAGAIN) {
			int w = wait_fd(g, fd, POLLOUT, g->timeout_ms);
			if (w <= 0)
				return w == 0 ? -ECANCELED : w;
			continue;
		}
		if (k < 0)
			return -errno;
		p += k;
		n -= (size_t)k;
		nfds = 0;   /* sent with the first byte of this part */
	}
	return 0;
}

/* Copies the restore's side (rfd) to lazy-pages' (lfd) until the restore
 * hangs up.  However slow the restore, no time limit: a failed one is
 * stopped by fm_lazy_gate_free. */
static int copy_stream(fm_lazy_gate *g, int rfd, int lfd)
{
	uint8_t buf[4096];
	char ctl[CMSG_SPACE(sizeof(int) * MAX_FDS)];
	for (;;) {
		int w = wait_fd(g, rfd, POLLIN, -1);
		if (w <= 0)
			return w == 0 ? -ECANCELED : fm_error_set(&g->err, w, "waiting for the restore's messages to "
								 "criu lazy-pages: %s", strerror(-w));
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
		ssize_t n = recvmsg(rfd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return fm_error_set(&g->err, -errno, "reading the restore's messages to criu lazy-pages: %m");
		int fds[MAX_FDS], nfds = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < k && nfds < MAX_FDS; i++)
				memcpy(&fds[nfds++], CMSG_DATA(c) + (size_t)i * sizeof(int), sizeof(int));
		}
		int r = 0;
		if (n == 0)
			return 0;
		if (m.msg_flags & MSG_CTRUNC)
			r = fm_error_set(&g->err, -EPROTO, "the restore sent criu lazy-pages more descriptors at once "
					 "than it can take");
		else if (nfds == 0)
			r = send_part(g, lfd, buf, (size_t)n, NULL, 0);
		else if ((r = send_part(g, lfd, buf, (size_t)n - 1, NULL, 0)) == 0)
			r = send_part(g, lfd, buf + n - 1, 1, fds, nfds);
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		if (r < 0)
			return g->err.msg[0] ? r : fm_error_set(&g->err, r, "passing the restore's messages on to criu "
								"lazy-pages: %s", strerror(-r));
	}
}

static void *gate_thread(void *opaque)
{
	fm_lazy_gate *g = opaque;
	int r, rfd = -1, lfd = -1;
	char byte;

	/* lazy-pages listens: within timeout_ms, or it is broken */
	if ((r = wait_fd(g, g->ready_fd, POLLIN, g->timeout_ms)) <= 0) {
		r = r == 0 ? -ECANCELED : fm_error_set(&g->err, r, "criu lazy-pages did not get ready");
		goto out;
	}
	if (read(g->ready_fd, &byte, 1) != 1) {
		r = fm_error_set(&g->err, -EIO, "criu lazy-pages exited before it was ready");
		goto out;
	}
	/* the restore's connection (it comes, or the restore failed and
	 * fm_lazy_gate_free stops this) */
	if ((r = wait_fd(g, g->listen_fd, POLLIN, -1)) <= 0) {
		r = r == 0 ? -ECANCELED : fm_error_set(&g->err, r, "the restore did not connect to criu lazy-pages");
		goto out;
	}
	if ((rfd = accept4(g->listen_fd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
		r = fm_error_set(&g->err, -errno, "accepting the restore's connection to criu lazy-pages: %m");
		goto out;
	}
	struct sockaddr_un sa;
	socklen_t len;
	sock_addr(g->lazy_dir_fd, &sa, &len);
	/* lazy-pages listens (its status byte says so): a connect does not wait */
	if ((lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0 ||
	    connect(lfd, (struct sockaddr *)&sa, len) < 0) {
		r = fm_error_set(&g->err, -errno, "cannot reach criu lazy-pages: %m");
		goto out;
	}
	r = copy_stream(g, rfd, lfd);
out:
	if (rfd >= 0)
		close(rfd);
	if (lfd >= 0)
		close(lfd);   /* lazy-pages sees the restore hang up */
	g->status = r;
	return NULL;
}

static void gate_close(fm_lazy_gate *g)
{
	int *fds[] = { &g->listen_fd, &g->ready_fd, &g->stop_fd, &g->lazy_dir_fd };
	for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
		if (*fds[i] >= 0) {
			close(*fds[i]);
			*fds[i] = -1;
		}
}

int fm_lazy_gate_start(const char *restore_work, const char *lazy_work, int ready_fd, int timeout_ms,
		       fm_lazy_gate **out, fm_error *err)
{
	fm_lazy_gate *g = fm_xcalloc(1, sizeof(*g));
	int r;

	g->ready_fd = ready_fd;
	g->timeout_ms = timeout_ms;
	g->listen_fd = g->stop_fd = -1;
	g->lazy_dir_fd = open(lazy_work, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (g->lazy_dir_fd < 0) {
		r = fm_error_set(err, -errno, "cannot open %s: %m", lazy_work);
		goto fail;
	}
	if ((r = g->listen_fd = fm_lazy_socket_listen(restore_work, err)) < 0)
		goto fail;
	if ((g->stop_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
		r = fm_error_set(err, -errno, "eventfd: %m");
		goto fail;
	}
	if (pthread_create(&g->thread, NULL, gate_thread, g) != 0) {
		r = fm_error_set(err, -EAGAIN, "cannot start the lazy-pages gate");
		goto fail;
	}
	g->started = true;
	*out = g;
	return 0;
fail:
	g->ready_fd = -1;   /* the caller's still, on failure */
	gate_close(g);
	free(g);
	return r;
}

int fm_lazy_gate_finish(fm_lazy_gate *g, fm_error *err)
{
	if (g->started)
		pthread_join(g->thread, NULL);
	g->started = false;
	int r = g->status;
	if (r < 0)
		fm_error_set(err, r, "%s", g->err.msg[0] ? g->err.msg : strerror(-r));
	return r;
}

void fm_lazy_gate_free(fm_lazy_gate *g)
{
	if (!g)
		return;
	if (g->started) {
		uint64_t one = 1;
		(void)!write(g->stop_fd, &one, sizeof(one));
		pthread_join(g->thread, NULL);
	}
	gate_close(g);
	fm_error_clear(&g->err);
	free(g);
}
