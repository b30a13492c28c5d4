/* State Restoration Module: brings a checkpointed container back to life on this
 * host with `runc restore` (CRIU underneath), into a bundle and root filesystem the
 * Runtime Controller prepared.
 *
 * runc spends ~25 ms starting (Go's runtime, the bundle's configuration, the
 * container's state) before it first asks CRIU anything.  A restore started
 * ahead of its images (fm_restore_start, while the source dumps) does that
 * part outside the downtime and waits in fm-criu-shim's gate (criu_shim.c),
 * a FIFO in the work directory: fm_restore_finish writes 'g' into it once the
 * images, root filesystem and CRIU configuration are in place; fm_restore_cancel
 * writes 'x', and runc gives up and removes what it made.  Such a runc is
 * given work_dir/restore-images as its images: it creates that directory at
 * its start, before the images arrive (where the receiver would take it for a
 * duplicate); fm_restore_finish puts a link to the images there.
 *
 * Every restore has a second FIFO, work_dir/restore.resumed: fm-criu-shim's
 * relay writes 'r' into it when CRIU notifies post-resume, and the caller's
 * resumed callback runs then, not at runc's exit ~12 ms later.
 *
 * A held restore (FM_RESTORE_HELD: COLD's, its memory arriving into the
 * restored processes) has a third, work_dir/restore.hold: at CRIU's
 * pre-resume the relay writes 'p' into restore.resumed and waits; the
 * caller's hold callback runs (until every page is here) and its answer goes
 * into restore.hold, 'g' for CRIU to let the tasks go, 'x' to fail the
 * restore before they ever ran.
 *
 * An early restore also starts its CRIU early: `fm-criu-shim warm
 * work_dir/criu-warm.sock [NETNS]` keeps a CRIU that has loaded and waits
 * for its request, and runc's restore shim hands the restore to it
 * (FM_CRIU_WARM; criu_shim.c says how, and when it declines): CRIU's exec
 * and start, ~10 ms, leave the freeze. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "basic/cmd.h"
#include "basic/log.h"
#include "basic/util.h"
#include "runtime/net.h"
#include "runtime/tmpfs.h"
#include "sync/checkpoint.h"

/* runc gives up on its own once the gate stays shut: the controller gave up
 * on the migration long before */
#define GATE_LIMIT_MS FM_CRIU_TIMEOUT_MS
/* a cancelled runc cleans up in well under a second */
#define CANCEL_WAIT_MS 10000
#define EARLY_IMAGES "restore-images"
#define RESUMED_FIFO "restore.resumed"
#define HOLD_FIFO "restore.hold"
#define WARM_SOCK "criu-warm.sock"
#define WARM_CONF "criu-warm.conf"
/* a warm CRIU's keeper ends right after the restore it took (before runc);
 * one that took none is still waiting: killed */
#define WARM_EXIT_MS 100

struct fm_restore_run {
	fm_runtime *rt;
	char *name, *images_dir, *work_dir;
	fm_restore_mode mode;
	fm_tcp_mode tcp;
	struct fm_cmd *runc;
	fm_criu_fifo gate;       /* runc's first CRIU question waits in it (fd -1: no gate) */
	int resumed;             /* RESUMED_FIFO, held open (-1: none) */
	int hold;                /* HOLD_FIFO, held open (-1: none) */
	struct fm_cmd *warm;     /* a warm CRIU's keeper (fm-criu-shim warm), or NULL */
	fm_criu_fifo warm_conf;  /* its CRIU's CRIU_CONFIG_FILE, sent at the gate */
};

static char *work_file(const fm_restore_run *run, const char *leaf)
{
	return fm_xasprintf("%s/%s", run->work_dir, leaf);
}

/* The restore's CRIU configuration, work_dir/criu-restore.conf: the host's,
 * the fresh tmpfs mounts the images ask for (runtime/tmpfs.h), mounted below
 * the container's directory in tdir (*tmpfs: there are some), and tcp-close
 * when the container's TCP connections are to be restored closed (runc
 * restore has no flag for it). */
static int restore_conf(fm_restore_run *run, const char *images_dir, const char *tdir, bool *tmpfs, fm_error *err)
{
	_cleanup_free_ char *lines = NULL;
	int r;

	if ((r = fm_tmpfs_prepare(images_dir, tdir, &lines, err)) < 0)
		return r;
	*tmpfs = lines != NULL;
	_cleanup_free_ char *path = work_file(run, "criu-restore.conf");
	_cleanup_free_ char *text = fm_xasprintf("%s%s%s", run->rt->criu_restore_text, lines ? lines : "",
						 run->tcp == FM_TCP_CLOSE ? "tcp-close\n" : "");
	if ((r = fm_write_file_staged(path, text, strlen(text), 0600)) < 0) {
		if (*tmpfs)
			fm_tmpfs_release(tdir);
		return fm_error_set(err, r, "cannot write %s: %s", path, strerror(-r));
	}
	return 0;
}

/* For fm-criu-shim's waits: the daemon (it gives up when that is gone) and
 * the longest wait. */
static void gate_env(struct fm_cmd *c)
{
	char v[32];
	snprintf(v, sizeof(v), "%d", (int)getpid());
	fm_cmd_env(c, "FM_RESTORE_GATE_PID", v);
	snprintf(v, sizeof(v), "%d", GATE_LIMIT_MS);
	fm_cmd_env(c, "FM_RESTORE_GATE_MS", v);
}

/* The relay's FIFOs, for the shim that runs CRIU. */
static void restore_env(fm_restore_run *run, struct fm_cmd *c)
{
	if (run->resumed >= 0) {
		_cleanup_free_ char *resumed = work_file(run, RESUMED_FIFO);
		fm_cmd_env(c, "FM_RESTORE_RESUMED", resumed);
	}
	if (run->hold >= 0) {
		_cleanup_free_ char *hold = work_file(run, HOLD_FIFO);
		fm_cmd_env(c, "FM_RESTORE_HOLD", hold);
	}
}

/* Starts a warm CRIU for runc's restore shim to hand the restore to; best
 * effort (without it the restore shim starts CRIU).  The socket's path, or
 * NULL. */
static char *spawn_warm(fm_restore_run *run, const char *conf)
{
	char *sock = work_file(run, WARM_SOCK);
	_cleanup_free_ char *netns = fm_net_ns_path(run->rt, run->name);
	if (strlen(sock) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
		free(sock);
		return NULL;
	}
	/* CRIU reads CRIU_CONFIG_FILE at its start, before its request: the
	 * restore's configuration, known at the gate, reaches it through a FIFO */
	_cleanup_free_ char *fifo = work_file(run, WARM_CONF);
	fm_error e = FM_ERROR_INIT;
	if (fm_criu_fifo_open(fifo, &run->warm_conf, &e) < 0) {
		fm_debug(FM_C_STATE_RESTORATION, "no warm CRIU for %s: %s", run->name, e.msg);
		fm_error_clear(&e);
		free(sock);
		return NULL;
	}
	fm_cmd *c = fm_cmd_new(run->rt->criu_shim);
	fm_rt_criu_env(c);   /* as runc's CRIU would have it */
	fm_cmd_env(c, "FM_CRIU", run->rt->criu);
	fm_cmd_env(c, "CRIU_CONFIG_FILE", fifo);
	gate_env(c);
	restore_env(run, c);
	fm_cmd_arg(c, "warm");
	fm_cmd_arg(c, sock);
	/* runc gives CRIU the container's own network namespace (a path in its
	 * configuration) as the inherited "extRootNetNS" */
	if (access(netns, F_OK) == 0)
		fm_cmd_arg(c, netns);
	fm_cmd_set_stdio_null(c);
	if (fm_cmd_start(c, &e) < 0) {
		fm_debug(FM_C_STATE_RESTORATION, "no warm CRIU for %s: %s", run->name, e.msg);
		fm_error_clear(&e);
		fm_cmd_free(c);
		fm_criu_fifo_close(&run->warm_conf);
		free(sock);
		return NULL;
	}
	run->warm = c;
	return sock;
}

/* Waits for the warm CRIU's keeper, at most ms (then kills it). */
static void warm_end(fm_restore_run *run, int ms)
{
	fm_criu_fifo_close(&run->warm_conf);
	if (!run->warm)
		return;
	int st = fm_cmd_wait_timeout(run->warm, ms, NULL);
	fm_debug(FM_C_STATE_RESTORATION, "%s: %s", run->name, st == 0 ? "restored by a warm CRIU" :
		 st == 1 ? "the warm CRIU's restore failed" : "the warm CRIU was not used");
	fm_cmd_free(run->warm);
	run->warm = NULL;
	_cleanup_free_ char *sock = work_file(run, WARM_SOCK);
	unlink(sock);
}

/* The warm CRIU gets the restore's configuration (conf, written): it then
 * waits for its request.  If it cannot, it goes, and runc's restore shim
 * starts a CRIU of its own. */
static void warm_configure(fm_restore_run *run, const char *conf)
{
	_cleanup_free_ char *text = NULL;
	fm_error e = FM_ERROR_INIT;
	int r;
	if (!run->warm)
		return;
	/* in the freeze: a CRIU not loaded by now is not waited for */
	if (fm_criu_fifo_wait_open(&run->warm_conf, fm_cmd_pid(run->warm), 0) < 0)
		fm_error_set(&e, -ETIMEDOUT, "it has not loaded yet");
	else if ((r = fm_read_file(conf, 65535, &text, NULL)) < 0)
		fm_error_set(&e, r, "cannot read %s: %s", conf, strerror(-r));
	else
		fm_criu_fifo_send(&run->warm_conf, fm_cmd_pid(run->warm), text, &e);
	if (e.msg[0]) {
		fm_debug(FM_C_STATE_RESTORATION, "%s: no warm CRIU: %s", run->name, e.msg);
		warm_end(run, 0);
	}
	fm_error_clear(&e);
}

/* Starts runc; with a gate, it stops at its first question to CRIU. */
static int spawn_runc(fm_restore_run *run, bool gated, fm_error *err)
{
	_cleanup_free_ char *conf = work_file(run, "criu-restore.conf");
	_cleanup_free_ char *log = work_file(run, "runc-restore.log");
	_cleanup_free_ char *gate = work_file(run, "restore.gate");
	_cleanup_free_ char *bundle = fm_rt_container_dir(run->rt, run->name);
	int r;

	_cleanup_free_ char *resumed = work_file(run, RESUMED_FIFO);
	unlink(log);
	unlink(gate);
	if (run->resumed < 0) {
		/* kept for a runc started again; best effort: without it, the
		 * tasks count as running at runc's exit */
		unlink(resumed);
		if (run->rt->criu_shim && mkfifo(resumed, 0600) == 0 &&
		    (run->resumed = open(resumed, O_RDWR | O_NONBLOCK | O_CLOEXEC)) < 0)
			unlink(resumed);
	}
	if (run->mode == FM_RESTORE_HELD && run->hold < 0) {
		/* not best effort: unheld, the tasks would run without their memory */
		_cleanup_free_ char *hold = work_file(run, HOLD_FIFO);
		unlink(hold);
		if (run->resumed < 0)
			return fm_error_set(err, -ENOTSUP, "a held restore needs fm-criu-shim's relay (%s)",
					    run->rt->criu_shim ? "its FIFO could not be made" : "no fm-criu-shim here");
		if (mkfifo(hold, 0600) < 0 || (run->hold = open(hold, O_RDWR | O_NONBLOCK | O_CLOEXEC)) < 0) {
			r = fm_error_set(err, -errno, "cannot make %s: %m", hold);
			unlink(hold);
			return r;
		}
	}
	if (gated) {
		/* the byte waits in the FIFO for a runc still starting */
		if ((r = fm_criu_fifo_open(gate, &run->gate, err)) < 0)
			return r;
	}
	_cleanup_free_ char *warm = gated && run->rt->criu_shim && !run->warm ? spawn_warm(run, conf) : NULL;
	struct fm_cmd *c = fm_rt_runc_restore_cmd(run->rt, conf, log);
	if (warm)
		fm_cmd_env(c, "FM_CRIU_WARM", warm);
	if (gated) {
		fm_cmd_env(c, "FM_RESTORE_GATE", gate);
		gate_env(c);
	}
	restore_env(run, c);
	fm_cmd_arg(c, "--detach");
	if (run->mode != FM_RESTORE_EAGER)
		fm_cmd_arg(c, "--lazy-pages");
	if (run->tcp == FM_TCP_ESTABLISHED)
		fm_cmd_arg(c, "--tcp-established");
	fm_cmd_arg(c, "--image-path");
	fm_cmd_arg(c, run->images_dir);
	fm_cmd_arg(c, "--work-path");
	fm_cmd_arg(c, run->work_dir);
	fm_cmd_arg(c, "--bundle");
	fm_cmd_arg(c, bundle);
	fm_cmd_arg(c, run->name);
	fm_cmd_set_stdio_null(c);
	if ((r = fm_cmd_start(c, err)) < 0) {
		fm_cmd_free(c);
		return r;
	}
	run->runc = c;
	return 0;
}

static void run_free(fm_restore_run *run)
{
	if (!run)
		return;
	warm_end(run, 0);
	fm_criu_fifo_close(&run->gate);
	if (run->resumed >= 0) {
		close(run->resumed);
		_cleanup_free_ char *resumed = work_file(run, RESUMED_FIFO);
		unlink(resumed);
	}
	if (run->hold >= 0) {
		close(run->hold);
		_cleanup_free_ char *hold = work_file(run, HOLD_FIFO);
		unlink(hold);
	}
	if (run->runc) {
		fm_cmd_wait_timeout(run->runc, 0, NULL);
		fm_cmd_free(run->runc);
	}
	free(run->name);
	free(run->images_dir);
	free(run->work_dir);
	free(run);
}

static fm_restore_run *run_new(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir,
			       fm_restore_mode mode, fm_tcp_mode tcp)
{
	fm_restore_run *run = fm_xmalloc(sizeof(*run));
	*run = (fm_restore_run){ .rt = rt, .name = fm_xstrdup(name), .images_dir = fm_xstrdup(images_dir),
				 .work_dir = fm_xstrdup(work_dir), .mode = mode, .tcp = tcp, .gate = FM_CRIU_FIFO_INIT,
				 .resumed = -1, .hold = -1, .warm_conf = FM_CRIU_FIFO_INIT };
	return run;
}

/* Waits, at most ms, until runc stands at its gate and the warm CRIU has
 * loaded (FM_EARLY_SETTLE_MS). */
static void early_settle(fm_restore_run *run, int ms)
{
	int64_t deadline = fm_now_mono_ms() + ms;
	_cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, fm_cmd_pid(run->runc), 0);
	_cleanup_close_ int keeper = run->warm ? (int)syscall(SYS_pidfd_open, fm_cmd_pid(run->warm), 0) : -1;
	while (!run->gate.read || (run->warm && !run->warm_conf.read)) {
		int64_t left = deadline - fm_now_mono_ms();
		struct pollfd p[4] = { { run->gate.read ? -1 : run->gate.opened, POLLIN, 0 }, { pidfd, POLLIN, 0 },
				       { run->warm && !run->warm_conf.read ? run->warm_conf.opened : -1, POLLIN, 0 },
				       { keeper, POLLIN, 0 } };
		int k = left > 0 ? poll(p, 4, (int)left) : 0;
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0 || p[1].revents || p[3].revents)
			return;
		if (p[0].revents & POLLIN)
			run->gate.read = true;
		if (p[2].revents & POLLIN)
			run->warm_conf.read = true;
	}
}

int fm_restore_start(fm_runtime *rt, const char *name, const char *work_dir, fm_restore_mode mode, fm_tcp_mode tcp,
		     fm_restore_run **out, fm_error *err)
{
	*out = NULL;
	if (!rt->criu_shim)
		return fm_error_set(err, -ENOTSUP, "no fm-criu-shim beside the daemon: a restore cannot wait for its images");
	_cleanup_free_ char *images = fm_xasprintf("%s/" EARLY_IMAGES, work_dir);
	fm_rm_rf(images);
	fm_restore_run *run = run_new(rt, name, images, work_dir, mode, tcp);
	int r = spawn_runc(run, true, err);
	if (r < 0) {
		run_free(run);
		return r;
	}
	/* their start-up before the freeze, not beside the dump */
	early_settle(run, FM_EARLY_SETTLE_MS);
	*out = run;
	return 0;
}

bool fm_restore_matches(const fm_restore_run *run, const char *work_dir, fm_restore_mode mode, fm_tcp_mode tcp)
{
	return run && run->mode == mode && run->tcp == tcp && !strcmp(run->work_dir, work_dir);
}

/* Has runc exited already (its gate wait failed, or it could not start)? */
static bool runc_gone(const fm_restore_run *run)
{
	int pidfd = (int)syscall(SYS_pidfd_open, fm_cmd_pid(run->runc), 0);
	struct pollfd p = { pidfd, POLLIN, 0 };
	bool gone = pidfd >= 0 && poll(&p, 1, 0) == 1;
	if (pidfd >= 0)
		close(pidfd);
	return gone;
}

/* What runc and CRIU said about a failed restore, as the error's detail. */
static void attach_logs(const fm_restore_run *run, fm_error *err)
{
	_cleanup_free_ char *log = work_file(run, "runc-restore.log");
	if (!err)
		return;
	fm_rt_attach_runc_log(err, log);
	_cleanup_free_ char *runc = err->detail ? fm_xasprintf("runc:\n%s", err->detail) : NULL;
	fm_ckpt_attach_criu_log(err, run->work_dir, "restore.log");
	if (runc && err->detail && strncmp(err->detail, "CRIU", 4) == 0)
		fm_error_set_detail(err, fm_xasprintf("%s\n%s", runc, err->detail));
	else if (runc)
		fm_error_set_detail(err, fm_xstrdup(runc));
}

/* The early runc's images directory (its own, empty) becomes a link to the
 * received images. */
static int link_images(fm_restore_run *run, const char *images_dir, fm_error *err)
{
	for (int tries = 0; tries < 3; tries++) {
		if (rmdir(run->images_dir) < 0 && errno != ENOENT)
			break;
		if (symlink(images_dir, run->images_dir) == 0)
			return 0;
		if (errno != EEXIST)
			break;
		/* runc made it just now */
	}
	return fm_error_set(err, -errno, "cannot link %s to the images: %m", run->images_dir);
}

/* Waits for runc; resumed->fn runs when CRIU lets the tasks go, if the relay
 * says so before runc exits; a held restore's resumed->hold at CRIU's
 * pre-resume (CRIU waits meanwhile).  A readable resumed->stop_fd gives the
 * restore up (runc and its CRIU killed): -ECANCELED.  runc's exit status, as
 * fm_cmd_wait_timeout, or the hold's failure (runc gone). */
static int runc_wait(fm_restore_run *run, const fm_restore_resumed *resumed, fm_error *err)
{
	int r = 0;
	bool held = false, watch = run->resumed >= 0 && ((resumed && resumed->fn) || run->hold >= 0);
	_cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, fm_cmd_pid(run->runc), 0);
	int64_t deadline = fm_now_mono_ms() + FM_CRIU_TIMEOUT_MS;
	for (;;) {
		struct pollfd p[4] = { { watch ? run->resumed : -1, POLLIN, 0 }, { pidfd, POLLIN, 0 },
				       { resumed ? resumed->stop_fd[0] : -1, POLLIN, 0 },
				       { resumed ? resumed->stop_fd[1] : -1, POLLIN, 0 } };
		int64_t left = deadline - fm_now_mono_ms();
		int n = pidfd >= 0 && left > 0 ? poll(p, 4, (int)left) : 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || p[1].revents)
			break;   /* runc ended, or no way to watch it: wait below */
		if (p[2].revents || p[3].revents) {
			r = fm_error_set(err, -ECANCELED, "the restore was given up (the migration was aborted, or "
					 "its memory stream failed)");
			break;
		}
		char byte = 0;
		if (!(p[0].revents & POLLIN) || read(run->resumed, &byte, 1) != 1)
			continue;
		if (byte == 'p' && run->hold >= 0 && !held) {
			held = true;
			r = resumed && resumed->hold ? resumed->hold(resumed->arg, err) : 0;
			if (write(run->hold, r == 0 ? "g" : "x", 1) != 1 && r == 0)
				r = fm_error_set(err, -errno, "cannot let the held restore go on: %m");
			if (r < 0)
				break;
		} else if (byte == 'r') {
			if (resumed && resumed->fn)
				resumed->fn(resumed->arg);
			watch = false;   /* only runc's end is left */
		}
	}
	if (r < 0) {
		/* runc's group (CRIU with it; a warm CRIU's keeper sees runc go) */
		kill(-fm_cmd_pid(run->runc), SIGKILL);
		fm_cmd_wait_timeout(run->runc, CANCEL_WAIT_MS, NULL);
		return r;
	}
	int64_t left = deadline - fm_now_mono_ms();
	int w = fm_cmd_wait_timeout(run->runc, left > 0 ? (int)left : 0, err);
	if (w == 0 && run->hold >= 0 && !held)
		return fm_error_set(err, -EPROTO, "the restore was to be held at CRIU's pre-resume, and CRIU never "
				    "got there through the relay");
	return w;
}

int fm_restore_finish(fm_restore_run *run, const char *images_dir, const fm_restore_resumed *resumed, fm_error *err)
{
	_cleanup_free_ char *bundle = fm_rt_container_dir(run->rt, run->name);
	_cleanup_free_ char *tdir = fm_xasprintf("%s/tmpfs", bundle);
	bool tmpfs = false;
	int r;

	if ((r = restore_conf(run, images_dir, tdir, &tmpfs, err)) < 0)
		goto out;
	if (run->runc && runc_gone(run)) {
		/* it gave up waiting (or never got going): start it afresh, ungated
		 * (and with a CRIU of its own) */
		warm_end(run, 0);
		fm_cmd_wait_timeout(run->runc, 0, NULL);
		fm_cmd_free(run->runc);
		run->runc = NULL;
		fm_criu_fifo_close(&run->gate);
	}
	if (run->runc && strcmp(run->images_dir, images_dir) != 0 && (r = link_images(run, images_dir, err)) < 0) {
		kill(-fm_cmd_pid(run->runc), SIGKILL);
		goto out;
	}
	if (!run->runc) {
		free(run->images_dir);
		run->images_dir = fm_xstrdup(images_dir);
		if ((r = spawn_runc(run, false, err)) < 0)
			goto out;
	}
	if (run->warm) {
		_cleanup_free_ char *conf = work_file(run, "criu-restore.conf");
		warm_configure(run, conf);
	}
	if (run->gate.fd >= 0 && write(run->gate.fd, "g", 1) != 1) {
		r = fm_error_set(err, -errno, "cannot open the restore's gate: %m");
		kill(-fm_cmd_pid(run->runc), SIGKILL);
	}
	int w = r < 0 ? fm_cmd_wait_timeout(run->runc, FM_CRIU_TIMEOUT_MS, NULL) : runc_wait(run, resumed, err);
	fm_cmd_free(run->runc);
	run->runc = NULL;
	warm_end(run, WARM_EXIT_MS);
	if (r == 0 && w != 0) {
		attach_logs(run, err);
		r = w > 0 ? -EIO : w;
	}
out:
	if (r < 0)
		fm_error_prefix(err, "restore of %s failed", run->name);
	/* the restored container holds its own binds of them */
	if (tmpfs)
		fm_tmpfs_release(tdir);
	run_free(run);
	return r;
}

void fm_restore_cancel(fm_restore_run *run)
{
	if (!run)
		return;
	if (run->gate.fd >= 0 && write(run->gate.fd, "x", 1) == 1 && run->runc) {
		/* runc removes the container state it made */
		fm_cmd_wait_timeout(run->runc, CANCEL_WAIT_MS, NULL);
		fm_cmd_free(run->runc);
		run->runc = NULL;
	}
	run_free(run);
}

int fm_restore(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir, fm_restore_mode mode,
	       fm_tcp_mode tcp, const fm_restore_resumed *resumed, fm_error *err)
{
	return fm_restore_finish(run_new(rt, name, images_dir, work_dir, mode, tcp), images_dir, resumed, err);
}
