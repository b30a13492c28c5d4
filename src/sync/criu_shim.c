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
 * Environment (set by the daemon, src/runtime/runtime.c, sync/restore.c):
 *   FM_CRIU            the real CRIU
 *   FM_CRIU_RPC_CACHE  the directory of recorded answers (emptied at every
 *                      daemon start); a file per request, named by its bytes
 *   FM_RESTORE_GATE    the gate's FIFO (absent: open)
 *   FM_RESTORE_GATE_PID, FM_RESTORE_GATE_MS  the daemon, and the longest wait
 *
 * Only libc: it starts once per question. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define REQ_MAX 64          /* the two questions are a few bytes */
#define RESP_MAX 4096
#define CRIU_REQ_FEATURE_CHECK 9
#define CRIU_REQ_VERSION 10

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
	if (fd < 0 || fd > 1023 || *end || !dir || !*dir)
		return exec_criu(criu, argv);
	uint8_t req[REQ_MAX + 1];
	ssize_t n;
	do
		n = recv((int)fd, req, sizeof(req), MSG_PEEK);
	while (n < 0 && errno == EINTR);
	if (n > REQ_MAX || !cacheable(req, n))
		return exec_criu(criu, argv);
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
