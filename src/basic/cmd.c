#include "basic/cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/util.h"

#define CMD_CAPTURE_MAX (256 * 1024)
#define CMD_MAX_PASS_FDS 4

struct fm_cmd {
	char **argv;
	size_t argc, argcap;
	char **envp;
	size_t envc;
	int timeout_ms;
	bool stdio_null;
	int pass_fd[CMD_MAX_PASS_FDS], pass_child_fd[CMD_MAX_PASS_FDS];
	int npass;
	int in_fd;          /* stdin: a memfd (fm_cmd_set_input) or -1 */
	pid_t pid;
	char *out, *errbuf;
	char *desc;
};

static fm_cmd_dry_run_fn dry_run_fn;
static void *dry_run_opaque;

void fm_cmd_set_dry_run(fm_cmd_dry_run_fn fn, void *opaque)
{
	dry_run_fn = fn;
	dry_run_opaque = opaque;
}

fm_cmd *fm_cmd_new(const char *program)
{
	fm_cmd *c = fm_xcalloc(1, sizeof(*c));
	c->argcap = 16;
	c->argv = fm_xcalloc(c->argcap, sizeof(char *));
	c->envp = fm_xcalloc(16, sizeof(char *));
	c->envp[c->envc++] = fm_xstrdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	c->timeout_ms = 120000;
	c->pid = -1;
	c->in_fd = -1;
	fm_cmd_arg(c, program);
	return c;
}

void fm_cmd_free(fm_cmd *c)
{
	if (!c)
		return;
	if (c->pid > 0) {
		kill(-c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
	}
	if (c->in_fd >= 0)
		close(c->in_fd);
	for (size_t i = 0; i < c->argc; i++)
		free(c->argv[i]);
	for (size_t i = 0; i < c->envc; i++)
		free(c->envp[i]);
	free(c->argv);
	free(c->envp);
	free(c->out);
	free(c->errbuf);
	free(c->desc);
	free(c);
}

void fm_cmd_arg(fm_cmd *c, const char *arg)
{
	if (c->argc + 2 > c->argcap) {
		c->argcap *= 2;
		char **n = realloc(c->argv, c->argcap * sizeof(char *));
		if (!n)
			abort();
		c->argv = n;
	}
	c->argv[c->argc++] = fm_xstrdup(arg);
	c->argv[c->argc] = NULL;
}

void fm_cmd_argf(fm_cmd *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = fm_xvasprintf(fmt, ap);
	va_end(ap);
	fm_cmd_arg(c, s);
	free(s);
}

void fm_cmd_env(fm_cmd *c, const char *name, const char *value)
{
	if (c->envc + 2 > 16)
		return;
	c->envp[c->envc++] = fm_xasprintf("%s=%s", name, value);
	c->envp[c->envc] = NULL;
}

void fm_cmd_set_timeout_ms(fm_cmd *c, int ms) { c->timeout_ms = ms; }
void fm_cmd_set_stdio_null(fm_cmd *c) { c->stdio_null = true; }

void fm_cmd_pass_fd(fm_cmd *c, int fd, int child_fd)
{
	if (c->npass >= CMD_MAX_PASS_FDS)
		abort();
	c->pass_fd[c->npass] = fd;
	c->pass_child_fd[c->npass] = child_fd;
	c->npass++;
}

int fm_cmd_set_input(fm_cmd *c, const void *data, size_t len, fm_error *err)
{
	/* a file in memory, not a pipe: the child reads at its pace, and
	 * nothing here waits for it to */
	_cleanup_close_ int fd = memfd_create("fm-cmd-input", MFD_CLOEXEC);
	const char *p = data;
	if (fd < 0)
		return fm_error_set(err, -errno, "cannot prepare the input of %s: memfd_create: %m", c->argv[0]);
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return fm_error_set(err, -errno, "cannot prepare the input of %s: %m", c->argv[0]);
		p += w;
		len -= (size_t)w;
	}
	if (lseek(fd, 0, SEEK_SET) < 0)
		return fm_error_set(err, -errno, "cannot prepare the input of %s: %m", c->argv[0]);
	if (c->in_fd >= 0)
		close(c->in_fd);
	c->in_fd = fd;
	fd = -1;
	return 0;
}

pid_t fm_cmd_pid(const fm_cmd *c) { return c->pid; }
const char *fm_cmd_stdout(const fm_cmd *c) { return c->out ? c->out : ""; }
const char *fm_cmd_stderr(const fm_cmd *c) { return c->errbuf ? c->errbuf : ""; }

const char *fm_cmd_describe(fm_cmd *c)
{
	size_t n = 1;
	char *p;

	free(c->desc);
	for (size_t i = 0; i < c->argc; i++)
		n += strlen(c->argv[i]) + 1;
	c->desc = p = fm_xmalloc(n);
	for (size_t i = 0; i < c->argc; i++) {
		size_t l = strlen(c->argv[i]);
		memcpy(p, c->argv[i], l);
		p += l;
		*p++ = i + 1 < c->argc ? ' ' : '\0';
	}
	if (c->argc == 0)
		*p = '\0';
	return c->desc;
}

/* Where a program without a '/' in its name is: the first executable one
 * in the fixed PATH (the child's, set by fm_cmd_new).  NULL: none. */
static char *find_program(fm_cmd *c)
{
	const char *path = "";
	for (size_t i = 0; i < c->envc; i++)
		if (!strncmp(c->envp[i], "PATH=", 5))
			path = c->envp[i] + 5;
	for (const char *p = path; *p;) {
		size_t n = strcspn(p, ":");
		char *cand = fm_xasprintf("%.*s/%s", (int)n, p, c->argv[0]);
		if (n > 0 && access(cand, X_OK) == 0)
			return cand;
		free(cand);
		p += n + (p[n] == ':');
	}
	return NULL;
}

/* The child by posix_spawn, which shares our memory until its execve
 * (glibc: clone with CLONE_VM and CLONE_VFORK) instead of fork()'s copy:
 * forking the daemon copied its page tables (an `ip` cost ~10 ms from it
 * against 3 ms from a shell) and left every page of it copy-on-write, so
 * each thread's next write to each page faulted (~13 us a fault on our
 * virtual machines; 270-500 of them for one nftables transaction after a
 * fork).  The child: its own process group, default signal dispositions and
 * an empty mask, stdin/stdout/stderr from in/out/err (else /dev/null), the
 * passed descriptors at their numbers, no other descriptor.  -errno: it
 * could not start (-ENOENT: no such program). */
static int spawn(fm_cmd *c, int out_fd, int err_fd, fm_error *err)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	int src[3 + CMD_MAX_PASS_FDS], dst[3 + CMD_MAX_PASS_FDS], n = 0, r = 0, first = 3;
	pid_t pid;
	_cleanup_free_ char *prog = strchr(c->argv[0], '/') ? fm_xstrdup(c->argv[0]) : find_program(c);

	if (!prog)
		return fm_error_set(err, -ENOENT, "cannot start %s: not found in %s", c->argv[0], c->envp[0] + 5);
	for (int i = 0; i < c->npass; i++)
		if (c->pass_child_fd[i] + 1 > first)
			first = c->pass_child_fd[i] + 1;
	/* each source copied above all targets first (close-on-exec copies), so
	 * that placing one never overwrites another not yet placed */
	const int from[3] = { c->in_fd, out_fd, err_fd };
	for (int i = 0; i < 3 + c->npass; i++) {
		int fd = i < 3 ? from[i] : c->pass_fd[i - 3];
		if (fd < 0)
			continue;
		if ((src[n] = fcntl(fd, F_DUPFD_CLOEXEC, first)) < 0) {
			r = fm_error_set(err, -errno, "cannot start %s: %m", c->argv[0]);
			goto out_fds;
		}
		dst[n++] = i < 3 ? i : c->pass_child_fd[i - 3];
	}
	posix_spawn_file_actions_init(&fa);
	for (int fd = 0; fd < 3; fd++)
		if (!(fd == 0 ? c->in_fd >= 0 : fd == 1 ? out_fd >= 0 : err_fd >= 0))
			posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", O_RDWR, 0);
	for (int i = 0; i < n; i++)
		posix_spawn_file_actions_adddup2(&fa, src[i], dst[i]);
	for (int fd = 3; fd < first; fd++) {
		bool kept = false;
		for (int i = 0; i < n; i++)
			kept |= dst[i] == fd;
		if (!kept)
			posix_spawn_file_actions_addclose(&fa, fd);
	}
	posix_spawn_file_actions_addclosefrom_np(&fa, first);
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	r = -posix_spawn(&pid, prog, &fa, &at, c->argv, c->envp);
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	if (r < 0)
		fm_error_set(err, r, "cannot start %s: %s", prog, strerror(-r));
	else
		c->pid = pid;
out_fds:
	for (int i = 0; i < n; i++)
		close(src[i]);
	return r;
}

/* Appends what is readable on fd to *buf (bounded).  Returns false at EOF. */
static bool drain(int fd, char **buf, size_t *len)
{
	char tmp[8192];
	ssize_t k = read(fd, tmp, sizeof(tmp));
	if (k < 0)
		return errno == EINTR || errno == EAGAIN;
	if (k == 0)
		return false;
	if (*len < CMD_CAPTURE_MAX) {
		size_t take = (size_t)k;
		if (*len + take > CMD_CAPTURE_MAX)
			take = CMD_CAPTURE_MAX - *len;
		char *n = realloc(*buf, *len + take + 1);
		if (!n)
			abort();
		memcpy(n + *len, tmp, take);
		*len += take;
		n[*len] = '\0';
		*buf = n;
	}
	return true;
}

static int exit_to_error(fm_cmd *c, int status, bool timed_out, fm_error *err)
{
	if (timed_out)
		return fm_error_set(err, -ETIMEDOUT, "%s timed out after %d ms and was killed",
				    c->argv[0], c->timeout_ms);
	if (WIFSIGNALED(status))
		return fm_error_set(err, -EINTR, "%s was killed by signal %d", c->argv[0],
				    WTERMSIG(status));
	int code = WEXITSTATUS(status);
	if (code != 0 && err) {
		/* last non-empty lines of stderr, else stdout: the useful part */
		const char *src = c->errbuf && *c->errbuf ? c->errbuf : (c->out ? c->out : "");
		size_t n = strlen(src);
		while (n > 0 && (src[n - 1] == '\n' || src[n - 1] == ' '))
			n--;
		size_t start = n > 600 ? n - 600 : 0;
		fm_error_set(err, -EIO, "%s failed (exit %d)%s%.*s", c->argv[0], code,
			     n ? ": " : "", (int)(n - start), src + start);
	}
	return code;
}

int fm_cmd_run(fm_cmd *c, fm_error *err)
{
	int outp[2] = { -1, -1 }, errp[2] = { -1, -1 };
	size_t outlen = 0, errlen = 0;
	bool timed_out = false;
	int status = 0, r;
	_cleanup_close_ int pidfd = -1;

	free(c->out);
	free(c->errbuf);
	c->out = c->errbuf = NULL;

	if (dry_run_fn) {
		char *o = NULL;
		int code = dry_run_fn((const char *const *)c->argv, dry_run_opaque, &o);
		c->out = o;
		if (code != 0)
			return fm_error_set(err, -EIO, "%s failed (exit %d)", c->argv[0], code), code;
		return 0;
	}

	if (!c->stdio_null) {
		if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
			r = fm_error_set(err, -errno, "pipe: %m");
			goto out;
		}
	}
	r = spawn(c, outp[1], errp[1], err);
	if (outp[1] >= 0)
		close(outp[1]);
	if (errp[1] >= 0)
		close(errp[1]);
	outp[1] = errp[1] = -1;
	if (r < 0)
		goto out;

	/* A pidfd tells when the process exits; pipes may stay open longer when a
	 * grandchild inherited them, so the exit, not EOF, ends the wait. */
	pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
	int64_t deadline = fm_now_mono_ms() + c->timeout_ms;
	bool out_open = outp[0] >= 0, err_open = errp[0] >= 0, exited = false;
	while (!exited) {
		struct pollfd p[3] = { { out_open ? outp[0] : -1, POLLIN, 0 },
				       { err_open ? errp[0] : -1, POLLIN, 0 },
				       { pidfd, POLLIN, 0 } };
		int64_t left = deadline - fm_now_mono_ms();
		if (left <= 0) {
			timed_out = true;
			break;
		}
		if (pidfd < 0) /* no pidfd: fall back to waiting for EOF, bounded by the deadline */
			left = left > 10 ? 10 : left;
		int k = poll(p, 3, (int)left);
		if (k < 0 && errno != EINTR)
			break;
		if (out_open && (p[0].revents & (POLLIN | POLLHUP)))
			out_open = drain(outp[0], &c->out, &outlen);
		if (err_open && (p[1].revents & (POLLIN | POLLHUP)))
			err_open = drain(errp[0], &c->errbuf, &errlen);
		if (pidfd >= 0 ? (p[2].revents & POLLIN) != 0 : waitpid(c->pid, &status, WNOHANG) == c->pid) {
			exited = true;
			if (pidfd < 0)
				c->pid = 0;
		}
	}
	if (timed_out) {
		kill(-c->pid, SIGKILL);
		kill(c->pid, SIGKILL);
	}
	if (c->pid > 0)
		while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
			;
	/* whatever the program wrote before exiting is already in the pipes */
	for (int i = 0; i < 2; i++) {
		int fd = i ? errp[0] : outp[0];
		if (fd < 0 || !(i ? err_open : out_open))
			continue;
		fcntl(fd, F_SETFL, O_NONBLOCK);
		while (drain(fd, i ? &c->errbuf : &c->out, i ? &errlen : &outlen)) {
			struct pollfd q = { fd, POLLIN, 0 };
			if (poll(&q, 1, 0) <= 0)
				break;
		}
	}
	c->pid = -1;
	r = exit_to_error(c, status, timed_out, err);
	if (timed_out || WIFSIGNALED(status))
		r = r < 0 ? r : -EINTR;
out:
	for (int i = 0; i < 2; i++) {
		if (outp[i] >= 0)
			close(outp[i]);
		if (errp[i] >= 0)
			close(errp[i]);
	}
	return r;
}

int fm_cmd_start(fm_cmd *c, fm_error *err)
{
	if (dry_run_fn)
		return fm_error_set(err, -ENOTSUP, "fm_cmd_start in dry-run mode");
	return spawn(c, -1, -1, err);
}

int fm_cmd_wait_timeout(fm_cmd *c, int timeout_ms, fm_error *err)
{
	if (c->pid <= 0)
		return fm_error_set(err, -ECHILD, "%s was not started", c->argv[0]);
	int pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
	struct pollfd p = { pidfd, POLLIN, 0 };
	int k = -1;
	if (pidfd >= 0) {
		int64_t deadline = fm_now_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
		do
			k = poll(&p, 1, (int)(deadline > fm_now_mono_ms() ? deadline - fm_now_mono_ms() : 0));
		while (k < 0 && errno == EINTR);
		close(pidfd);
	}
	if (k == 0) {
		kill(-c->pid, SIGKILL);
		kill(c->pid, SIGKILL);
	}
	int status;
	while (waitpid(c->pid, &status, 0) < 0) {
		if (errno != EINTR)
			return fm_error_set(err, -errno, "waitpid: %m");
	}
	c->pid = -1;
	c->timeout_ms = timeout_ms;
	int r = exit_to_error(c, status, k == 0, err);
	return k == 0 || WIFSIGNALED(status) ? (r < 0 ? r : -EINTR) : r;
}

int fm_cmd_wait(fm_cmd *c, fm_error *err)
{
	int status;
	if (c->pid <= 0)
		return fm_error_set(err, -ECHILD, "%s was not started", c->argv[0]);
	while (waitpid(c->pid, &status, 0) < 0) {
		if (errno != EINTR)
			return fm_error_set(err, -errno, "waitpid: %m");
	}
	c->pid = -1;
	return exit_to_error(c, status, false, err);
}
