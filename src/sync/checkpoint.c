#include "sync/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <linux/magic.h>

#include "basic/cmd.h"
#include "basic/log.h"
#include "basic/util.h"


/* Attaches the last Error lines of a CRIU log (without the harmless rlimit one
 * CRIU prints on every run here) to err. */
void fm_ckpt_attach_criu_log(fm_error *err, const char *work_dir, const char *logname)
{
	_cleanup_free_ char *path = fm_xasprintf("%s/%s", work_dir, logname);
	char *lines = fm_file_grep(path, "Error", "RLIMIT_NOFILE", 6);
	if (lines)
		fm_error_set_detail(err, fm_xasprintf("CRIU %s (%s):\n%s", logname, path, lines));
	free(lines);
}

#define KDAT_DIR "/run" /* CRIU's KDAT_RUNDIR, fixed in CRIU */
#define KDAT_NAME "criu.kdat"
#define KDAT_TMP_NAME "criu.kdat.fleximigrate"
#define KDAT_MAX 65536 /* 912 bytes in CRIU 4.2 */

/* The forked child of fm_ckpt_kdat_prime: system calls only (the daemon may
 * not be single-threaded forever; nothing here takes a lock).  Exit codes say
 * which step failed. */
static void __attribute__((noreturn)) kdat_child(char *const argv[], int rundir, int devnull)
{
	static char buf[KDAT_MAX];
	ssize_t n, w, done = 0;
	int status, fd;
	pid_t p;

	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("fm-kdat", KDAT_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=0755") < 0)
		_exit(10);
	p = fork();
	if (p < 0)
		_exit(11);
	if (p == 0) {
		dup2(devnull, STDIN_FILENO);
		dup2(devnull, STDOUT_FILENO);
		dup2(devnull, STDERR_FILENO);
		execvp(argv[0], argv);
		_exit(127);
	}
	/* its verdict on the feature does not matter: the probe ran before it */
	while (waitpid(p, &status, 0) < 0)
		if (errno != EINTR)
			_exit(12);
	if ((fd = open(KDAT_DIR "/" KDAT_NAME, O_RDONLY | O_CLOEXEC)) < 0)
		_exit(13);
	n = read(fd, buf, sizeof(buf));
	if (n <= 0 || n == (ssize_t)sizeof(buf))
		_exit(14);
	/* rundir is the real /run, opened before the tmpfs covered it */
	if ((fd = openat(rundir, KDAT_TMP_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0)
		_exit(15);
	while (done < n) {
		w = write(fd, buf + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			_exit(16);
		done += w;
	}
	if (close(fd) < 0 || renameat(rundir, KDAT_TMP_NAME, rundir, KDAT_NAME) < 0)
		_exit(17);
	_exit(0);
}

int fm_ckpt_kdat_prime(const char *criu, fm_error *err)
{
	char *const argv[] = { (char *)criu, "check", "--feature", "uffd-noncoop", NULL };
	struct statfs sf;
	int rundir, devnull, status;
	pid_t p;

	if (statfs(KDAT_DIR, &sf) < 0)
		return fm_error_set(err, -errno, "cannot stat %s: %m", KDAT_DIR);
	if (sf.f_type == TMPFS_MAGIC)
		return 0;
	rundir = open(KDAT_DIR, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rundir < 0)
		return fm_error_set(err, -errno, "cannot open %s: %m", KDAT_DIR);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0) {
		int r = -errno;
		close(rundir);
		return fm_error_set(err, r, "cannot open /dev/null: %s", strerror(-r));
	}
	p = fork();
	if (p == 0)
		kdat_child(argv, rundir, devnull);
	close(rundir);
	close(devnull);
	if (p < 0)
		return fm_error_set(err, -errno, "cannot fork: %m");
	while (waitpid(p, &status, 0) < 0)
		if (errno != EINTR)
			return fm_error_set(err, -errno, "cannot wait for the CRIU probe: %m");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		static const char *const step[] = { "a private mount namespace with a tmpfs on " KDAT_DIR,
						    "fork", "wait for CRIU", "CRIU wrote no " KDAT_NAME,
						    "the cache has an unexpected size", "write " KDAT_DIR "/" KDAT_TMP_NAME,
						    "write", "rename it to " KDAT_DIR "/" KDAT_NAME };
		int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		/* a cache of an earlier boot must not outlive a failed refresh */
		(void)unlink(KDAT_DIR "/" KDAT_NAME);
		return fm_error_set(err, -EIO, "cannot prime CRIU's kernel probe cache: step \"%s\" failed",
				    code >= 10 && code <= 17 ? step[code - 10] : "CRIU probe (killed)");
	}
	return 1;
}

int fm_ckpt_freeze(fm_runtime *rt, const char *name, fm_error *err)
{
	int r = fm_rt_pause(rt, name, err);
	if (r < 0)
		fm_error_prefix(err, "cannot freeze %s", name);
	return r;
}

#define DUMP_CONF "dump.conf"

/* `criu dump` (or pre-dump) of a container, treated as runc's checkpoint
 * treats it (fm_rt_criu_dump_args); CRIU's log is work_dir/dump.log.  A dump
 * leaves the frozen source in place: rollback is then a resume, not a restore. */
static int criu_dump_cmd(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir,
			 bool pre_dump, fm_tcp_mode tcp, const char *parent, const char *what, struct fm_cmd **out,
			 fm_error *err)
{
	struct fm_cmd *c = fm_cmd_new(rt->criu);
	int r;

	fm_cmd_arg(c, pre_dump ? "pre-dump" : "dump");
	fm_rt_criu_env(c);
	if ((r = fm_rt_criu_dump_args(rt, name, c, pre_dump ? NULL : images_dir, err)) < 0) {
		fm_cmd_free(c);
		fm_error_prefix(err, "%s failed", what);
		return r;
	}
	fm_cmd_arg(c, "-D");
	fm_cmd_arg(c, images_dir);
	fm_cmd_arg(c, "-W");
	fm_cmd_arg(c, work_dir);
	fm_cmd_arg(c, "-o");
	fm_cmd_arg(c, "dump.log");
	/* info, not debug: a 1 GiB process's debug log (~260 KB, a line per
	 * page range) kept it frozen ~25 ms longer (lazy dump: ready after 111
	 * against 86 ms, medians of 8); errors and warnings are there either way */
	fm_cmd_arg(c, "-v3");
	fm_cmd_arg(c, "--manage-cgroups");
	if (rt->cgroup_yard) { /* see criu_cgroup_yard (runtime/runtime.c) */
		fm_cmd_arg(c, "--cgroup-yard");
		fm_cmd_arg(c, rt->cgroup_yard);
	}
	if (!pre_dump)
		fm_cmd_arg(c, "--leave-running");
	if (tcp != FM_TCP_NONE && !pre_dump)
		fm_cmd_arg(c, tcp == FM_TCP_CLOSE ? "--tcp-close" : "--tcp-established");
	/* no network lock, for the reasons criu_restore_conf_write gives */
	fm_cmd_arg(c, "--network-lock");
	fm_cmd_arg(c, "skip");
	if (parent) {
		fm_cmd_arg(c, "--prev-images-dir");
		fm_cmd_arg(c, parent);
		fm_cmd_arg(c, "--track-mem");
	}
	/* what is decided on the frozen container (dump_conf_write) */
	if (!pre_dump) {
		fm_cmd_arg(c, "--config");
		fm_cmd_argf(c, "%s/" DUMP_CONF, work_dir);
	}
	*out = c;
	return 0;
}

/* The dump's --config file, written once the container is frozen. */
static int dump_conf_write(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir,
			   fm_error *err)
{
	_cleanup_free_ char *text = fm_rt_criu_dump_conf(rt, name, images_dir);
	_cleanup_free_ char *path = fm_xasprintf("%s/" DUMP_CONF, work_dir);
	int r = fm_write_file_staged(path, text, strlen(text), 0600);
	return r < 0 ? fm_error_set(err, r, "cannot write %s: %s", path, strerror(-r)) : 0;
}

int fm_ckpt_dump(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir,
		 const fm_dump_opts *o, fm_error *err)
{
	const char *what = o->pre_dump ? "pre-copy round" : "checkpoint";
	_cleanup_free_ char *whole = fm_xasprintf("%s of %s", what, name);
	struct fm_cmd *c;
	int r;

	if ((r = criu_dump_cmd(rt, name, images_dir, work_dir, o->pre_dump, o->tcp, o->parent, whole, &c, err)) < 0)
		return r;
	if (!o->pre_dump && (r = dump_conf_write(rt, name, images_dir, work_dir, err)) < 0) {
		fm_cmd_free(c);
		return r;
	}
	if (o->page_server_sk > STDERR_FILENO) {
		fm_cmd_arg(c, "--page-server");
		fm_cmd_arg(c, "--ps-socket");
		fm_cmd_arg(c, "3");
		fm_cmd_pass_fd(c, o->page_server_sk, 3);
	}
	return fm_ckpt_run(c, work_dir, "dump.log", what, name, err);
}

int fm_ckpt_run(struct fm_cmd *c, const char *work_dir, const char *logname, const char *what,
		     const char *name, fm_error *err)
{
	int r;

	fm_cmd_set_timeout_ms(c, FM_CRIU_TIMEOUT_MS);
	r = fm_cmd_run(c, err);
	fm_cmd_free(c);
	if (r != 0) {
		fm_ckpt_attach_criu_log(err, work_dir, logname);
		fm_error_prefix(err, "%s of %s failed", what, name);
		return r > 0 ? -EIO : r;
	}
	return 0;
}

/* Starts c with its status fd (--status-fd 3) on a pipe; *ready_fd is the
 * pipe's end CRIU writes one byte to once ready (fm_ckpt_ready_wait). */
static int start_with_status_fd(struct fm_cmd *c, int *ready_fd, fm_error *err)
{
	int p[2], r;

	if (pipe2(p, O_CLOEXEC) < 0) {
		fm_cmd_free(c);
		return fm_error_set(err, -errno, "pipe: %m");
	}
	fm_cmd_pass_fd(c, p[1], 3);
	r = fm_cmd_start(c, err);
	close(p[1]);
	if (r < 0) {
		close(p[0]);
		fm_cmd_free(c);
		return r;
	}
	*ready_fd = p[0];
	return 0;
}

int fm_ckpt_ready_wait(struct fm_cmd **running, int ready_fd, int timeout_ms, const char *work_dir,
		       const char *logname, const char *what, fm_error *err)
{
	struct pollfd pf = { ready_fd, POLLIN, 0 };
	char byte;
	int r = poll(&pf, 1, timeout_ms) > 0 && read(ready_fd, &byte, 1) == 1 ? 0 : -EIO;

	close(ready_fd);
	if (r < 0) {
		fm_error_set(err, -EIO, "%s failed", what);
		fm_ckpt_kill_running(running, work_dir, logname, err);
	}
	return r;
}

void fm_ckpt_kill_running(struct fm_cmd **running, const char *work_dir, const char *logname, fm_error *err)
{
	fm_error e = FM_ERROR_INIT;
	kill(-fm_cmd_pid(*running), SIGKILL);
	fm_cmd_wait(*running, &e);
	fm_error_clear(&e);
	fm_cmd_free(*running);
	*running = NULL;
	fm_ckpt_attach_criu_log(err, work_dir, logname);
}

/* Starts a long-running CRIU given "--status-fd 3" among its arguments and
 * returns once it wrote its status byte: listening, or its images complete
 * (fm_ckpt_ready_wait says what happens when it gives up instead). */
static int start_until_ready(struct fm_cmd *c, int timeout_ms, const char *work_dir, const char *logname,
			     const char *what, struct fm_cmd **running, fm_error *err)
{
	int fd, r;

	if ((r = start_with_status_fd(c, &fd, err)) < 0)
		return r;
	*running = c;
	return fm_ckpt_ready_wait(running, fd, timeout_ms, work_dir, logname, what, err);
}

/* The lazy dump's command, up to its configuration. */
static int lazy_dump_cmd(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir,
			 const char *host, int port, fm_tcp_mode tcp, const char *parent, struct fm_cmd **c,
			 fm_error *err)
{
	_cleanup_free_ char *what = fm_xasprintf("lazy checkpoint of %s", name);
	int r;

	if ((r = criu_dump_cmd(rt, name, images_dir, work_dir, false, tcp, parent, what, c, err)) < 0)
		return r;
	/* the pages stay behind, served from host:port (no --page-server: that
	 * would send them) */
	fm_cmd_arg(*c, "--lazy-pages");
	fm_cmd_arg(*c, "--address");
	fm_cmd_arg(*c, host);
	fm_cmd_arg(*c, "--port");
	fm_cmd_argf(*c, "%d", port);
	fm_cmd_arg(*c, "--status-fd");
	fm_cmd_arg(*c, "3");
	return 0;
}

int fm_ckpt_dump_lazy(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir,
		      const char *host, int port, fm_tcp_mode tcp, const char *parent, struct fm_cmd **running,
		      fm_error *err)
{
	_cleanup_free_ char *what = fm_xasprintf("lazy checkpoint of %s", name);
	struct fm_cmd *c;
	int r;

	if ((r = lazy_dump_cmd(rt, name, images_dir, work_dir, host, port, tcp, parent, &c, err)) < 0)
		return r;
	if ((r = dump_conf_write(rt, name, images_dir, work_dir, err)) < 0) {
		fm_cmd_free(c);
		return r;
	}
	/* the status byte arrives when the non-memory images are written */
	return start_until_ready(c, FM_CRIU_TIMEOUT_MS, work_dir, "dump.log", what, running, err);
}

/* ---- a lazy dump started before the freeze ----
 * CRIU's start (exec, its libraries: ~380 page faults, ~10-14 ms on these
 * machines) happens before the freeze: it blocks reading its --config file, a
 * FIFO, until fm_ckpt_dump_lazy_go writes what is decided on the frozen
 * container into it and closes it (CRIU reads its configuration before
 * anything else: crtools.c, parse_options).  We hold the FIFO open for
 * writing from the start, so that CRIU's open returns at once; the bytes wait
 * in it, and our close (the end of the file) waits for CRIU's open, seen by
 * inotify: a FIFO whose last writer closes before its reader opened loses
 * what was written. */
struct fm_dump_early {
	struct fm_cmd *criu;
	int ready_fd;            /* its status byte */
	fm_criu_fifo conf;  /* its --config */
	char *name, *images_dir, *work_dir;
};

int fm_criu_fifo_open(const char *path, fm_criu_fifo *f, fm_error *err)
{
	*f = (fm_criu_fifo)FM_CRIU_FIFO_INIT;
	f->path = fm_xstrdup(path);
	unlink(path);
	if (mkfifo(path, 0600) < 0 || (f->fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)) < 0) {
		int r = fm_error_set(err, -errno, "cannot create %s: %m", path);
		fm_criu_fifo_close(f);
		return r;
	}
	/* after our own open: the next one is CRIU's */
	if ((f->opened = inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) < 0 || inotify_add_watch(f->opened, path, IN_OPEN) < 0) {
		int r = fm_error_set(err, -errno, "inotify on %s: %m", path);
		fm_criu_fifo_close(f);
		return r;
	}
	return 0;
}

void fm_criu_fifo_close(fm_criu_fifo *f)
{
	if (f->fd >= 0)
		close(f->fd);
	if (f->opened >= 0)
		close(f->opened);
	if (f->path)
		unlink(f->path);
	free(f->path);
	*f = (fm_criu_fifo)FM_CRIU_FIFO_INIT;
}

int fm_criu_fifo_wait_open(fm_criu_fifo *f, pid_t pid, int timeout_ms)
{
	if (f->read)
		return 0;
	_cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	struct pollfd p[2] = { { f->opened, POLLIN, 0 }, { pidfd, POLLIN, 0 } };
	int k;
	do
		k = poll(p, 2, timeout_ms);
	while (k < 0 && errno == EINTR);
	f->read = k > 0 && (p[0].revents & POLLIN);
	return f->read ? 0 : k > 0 ? -EIO : -ETIMEDOUT;
}

int fm_criu_fifo_send(fm_criu_fifo *f, pid_t pid, const char *text, fm_error *err)
{
	size_t len = strlen(text);
	/* a few lines: far below the FIFO's 64 KiB, written at once */
	if (f->fd < 0 || len >= 65536)
		return fm_error_set(err, -EINVAL, "%s: no FIFO open, or %zu bytes of configuration",
				    f->path ? f->path : "CRIU's configuration", len);
	if (write(f->fd, text, len) != (ssize_t)len)
		return fm_error_set(err, -EIO, "cannot write %s: %m", f->path ? f->path : "CRIU's configuration");
	/* CRIU may still be starting: its open, or its end */
	int r = fm_criu_fifo_wait_open(f, pid, FM_READY_TIMEOUT_MS);
	if (r < 0)
		return r == -EIO ? fm_error_set(err, r, "CRIU exited before reading its configuration")
				 : fm_error_set(err, r, "CRIU did not read its configuration within %d s",
						FM_READY_TIMEOUT_MS / 1000);
	close(f->fd);   /* the end of CRIU's configuration */
	f->fd = -1;
	return 0;
}

void fm_ckpt_dump_early_cancel(fm_dump_early *e)
{
	if (!e)
		return;
	if (e->criu)
		fm_ckpt_kill_running(&e->criu, e->work_dir, "dump.log", NULL);
	if (e->ready_fd >= 0)
		close(e->ready_fd);
	fm_criu_fifo_close(&e->conf);
	free(e->name);
	free(e->images_dir);
	free(e->work_dir);
	free(e);
}

int fm_ckpt_dump_lazy_start(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir,
			    const char *host, int port, fm_tcp_mode tcp, const char *parent, fm_dump_early **out,
			    fm_error *err)
{
	_cleanup_free_ char *path = fm_xasprintf("%s/" DUMP_CONF, work_dir);
	fm_dump_early *e = fm_xmalloc(sizeof(*e));
	struct fm_cmd *c;
	int r;

	*e = (fm_dump_early){ .ready_fd = -1, .conf = FM_CRIU_FIFO_INIT, .name = fm_xstrdup(name),
			      .images_dir = fm_xstrdup(images_dir), .work_dir = fm_xstrdup(work_dir) };
	*out = NULL;
	if ((r = fm_criu_fifo_open(path, &e->conf, err)) < 0)
		goto fail;
	if ((r = lazy_dump_cmd(rt, name, images_dir, work_dir, host, port, tcp, parent, &c, err)) < 0)
		goto fail;
	/* every symbol bound now, while it waits, not by the first call of each
	 * function in the freeze (a page fault for each GOT page written) */
	fm_cmd_env(c, "LD_BIND_NOW", "1");
	if ((r = start_with_status_fd(c, &e->ready_fd, err)) < 0)
		goto fail;
	e->criu = c;
	*out = e;
	/* loaded before the freeze, not beside it (best effort) */
	fm_criu_fifo_wait_open(&e->conf, fm_cmd_pid(c), FM_EARLY_SETTLE_MS);
	return 0;
fail:
	fm_ckpt_dump_early_cancel(e);
	return r;
}

int fm_ckpt_dump_lazy_go(fm_dump_early *e, fm_runtime *rt, struct fm_cmd **running, fm_error *err)
{
	_cleanup_free_ char *what = fm_xasprintf("lazy checkpoint of %s", e->name);
	_cleanup_free_ char *text = fm_rt_criu_dump_conf(rt, e->name, e->images_dir);
	/* its end: CRIU dumps */
	int r = fm_criu_fifo_send(&e->conf, fm_cmd_pid(e->criu), text, err);
	if (r < 0) {
		fm_ckpt_dump_early_cancel(e);
		return r;
	}
	*running = e->criu;
	e->criu = NULL;
	int ready = e->ready_fd;
	e->ready_fd = -1;
	_cleanup_free_ char *work = fm_xstrdup(e->work_dir);
	fm_ckpt_dump_early_cancel(e);   /* frees the rest */
	/* the status byte arrives when the non-memory images are written */
	return fm_ckpt_ready_wait(running, ready, FM_CRIU_TIMEOUT_MS, work, "dump.log", what, err);
}

int fm_ckpt_lazy_pages_start(fm_runtime *rt, const char *images_dir, const char *work_dir, const char *host,
			     int port, struct fm_cmd **running, int *ready_fd, fm_error *err)
{
	struct fm_cmd *c = fm_cmd_new(rt->criu);

	fm_rt_criu_env(c);
	fm_cmd_arg(c, "lazy-pages");
	fm_cmd_arg(c, "--page-server");
	fm_cmd_arg(c, "--address");
	fm_cmd_arg(c, host);
	fm_cmd_arg(c, "--port");
	fm_cmd_argf(c, "%d", port);
	fm_cmd_arg(c, "-D");
	fm_cmd_arg(c, images_dir);
	fm_cmd_arg(c, "-W");
	fm_cmd_arg(c, work_dir);
	fm_cmd_arg(c, "-o");
	fm_cmd_arg(c, "lazy-pages.log");
	/* ready = its socket for the restore listens (else the restore cannot connect) */
	fm_cmd_arg(c, "--status-fd");
	fm_cmd_arg(c, "3");
	int r = start_with_status_fd(c, ready_fd, err);
	*running = r < 0 ? NULL : c;
	return r;
}

int fm_ckpt_page_server_start(fm_runtime *rt, const char *images_dir, const char *work_dir, int port,
			      struct fm_cmd **running, fm_error *err)
{
	struct fm_cmd *c = fm_cmd_new(rt->criu);

	fm_rt_criu_env(c);
	fm_cmd_arg(c, "page-server");
	fm_cmd_arg(c, "--images-dir");
	fm_cmd_arg(c, images_dir);
	fm_cmd_arg(c, "-W");
	fm_cmd_arg(c, work_dir);
	fm_cmd_arg(c, "--address");
	fm_cmd_arg(c, "127.0.0.1");
	fm_cmd_arg(c, "--port");
	fm_cmd_argf(c, "%d", port);
	fm_cmd_arg(c, "-o");
	fm_cmd_arg(c, "page-server.log");
	/* ready = listening (else the source's relay finds nobody to connect to) */
	fm_cmd_arg(c, "--status-fd");
	fm_cmd_arg(c, "3");
	return start_until_ready(c, FM_READY_TIMEOUT_MS, work_dir, "page-server.log", "criu page-server", running, err);
}

static bool criu_feature(const char *criu, const char *feature)
{
	struct fm_cmd *c = fm_cmd_new(criu);
	fm_cmd_arg(c, "check");
	fm_cmd_arg(c, "--feature");
	fm_cmd_arg(c, feature);
	fm_cmd_set_timeout_ms(c, 20000);
	int r = fm_cmd_run(c, NULL);
	fm_cmd_free(c);
	return r == 0;
}

json_t *fm_ckpt_capabilities(const char *criu)
{
	struct utsname u;
	json_t *o = json_object();
	fm_error e = FM_ERROR_INIT;
	struct fm_cmd *c;
	_cleanup_free_ char *pipemax = NULL;

	uname(&u);
	json_object_set_new(o, "kernel", json_string(u.release));
	json_object_set_new(o, "arch", json_string(u.machine));
	json_object_set_new(o, "criu_path", json_string(criu));

	c = fm_cmd_new(criu);
	fm_cmd_arg(c, "--version");
	fm_cmd_set_timeout_ms(c, 10000);
	if (fm_cmd_run(c, NULL) == 0) {
		/* "Version: 4.2.1" */
		const char *v = strstr(fm_cmd_stdout(c), "Version:");
		char ver[32] = "";
		if (v)
			sscanf(v, "Version: %31s", ver);
		json_object_set_new(o, "criu_version", json_string(ver));
	} else {
		json_object_set_new(o, "criu_version", json_null());
	}
	fm_cmd_free(c);

	c = fm_cmd_new(criu);
	fm_cmd_arg(c, "check");
	fm_cmd_set_timeout_ms(c, 20000);
	int r = fm_cmd_run(c, &e);
	fm_cmd_free(c);
	json_object_set_new(o, "criu_ok", json_boolean(r == 0));
	if (r != 0)
		json_object_set_new(o, "criu_error", json_string(e.msg));
	fm_error_clear(&e);

	json_object_set_new(o, "lazy_pages", json_boolean(r == 0 && criu_feature(criu, "uffd-noncoop")));
	json_object_set_new(o, "mem_dirty_track", json_boolean(r == 0 && criu_feature(criu, "mem_dirty_track")));
	if (fm_read_file("/proc/sys/fs/pipe-max-size", 64, &pipemax, NULL) == 0)
		json_object_set_new(o, "pipe_max_size", json_integer(strtoll(pipemax, NULL, 10)));
	return o;
}

static int cpuinfo(const char *criu, const char *verb, const char *dir, fm_error *err)
{
	struct fm_cmd *c = fm_cmd_new(criu);
	int r;
	fm_cmd_arg(c, "cpuinfo");
	fm_cmd_arg(c, verb);
	fm_cmd_arg(c, "-D");
	fm_cmd_arg(c, dir);
	fm_cmd_arg(c, "-o");
	fm_cmd_argf(c, "cpuinfo-%s.log", verb);
	fm_cmd_set_timeout_ms(c, 20000);
	r = fm_cmd_run(c, err);
	fm_cmd_free(c);
	if (r != 0) {
		_cleanup_free_ char *log = fm_xasprintf("cpuinfo-%s.log", verb);
		fm_ckpt_attach_criu_log(err, dir, log);
		return r > 0 ? -EIO : r;
	}
	return 0;
}

int fm_ckpt_cpuinfo_dump(const char *criu, const char *dir, fm_error *err)
{
	return cpuinfo(criu, "dump", dir, err);
}

int fm_ckpt_cpuinfo_check(const char *criu, const char *dir, fm_error *err)
{
	return cpuinfo(criu, "check", dir, err);
}
