/* Checkpointing Module and State Restoration Module: CRIU through runc.
 *
 * A cold migration freezes the container (cgroup freezer, `runc pause`), dumps it
 * with --leave-running so that it stays frozen on the source, and restores it on
 * the destination.  Keeping the source frozen instead of killed makes rollback
 * cheap and safe: until the destination is verified, undoing the migration is one
 * `runc resume`, and the process the user had is the process that continues.
 *
 * Every CRIU failure carries the last Error lines of CRIU's own log as detail.
 */
#pragma once
#include <jansson.h>
#include <stdbool.h>

#include "basic/error.h"
#include "runtime/runtime.h"

/* A dump or restore of many GiB to a slow disk may take long; beyond this it hangs. */
#define FM_CRIU_TIMEOUT_MS (30 * 60 * 1000)
/* A CRIU page server or lazy-pages daemon that does not listen within this long
 * is broken. */
#define FM_READY_TIMEOUT_MS (60 * 1000)
/* What a migration starts ahead of its freeze (runc's restore, the dump's and
 * the restore's CRIU) is waited for this long at most to finish its own
 * start-up before the freeze: on hosts that share CPUs, a start-up beside the
 * dump slows the dump. */
#define FM_EARLY_SETTLE_MS 1000

/* CRIU probes the kernel ("kerndat": 35-55 ms here, two iptables runs among
 * them) at the start of every dump, restore, page server, lazy-pages daemon and
 * feature check, unless it finds its cache /run/criu.kdat.  CRIU writes that
 * cache only where /run is a tmpfs, so that a reboot clears it; where /run is a
 * plain directory (our test machines, many containers and VMs) it never does,
 * and every run probes again: runc alone runs CRIU twice per checkpoint.
 * There this makes the cache the way CRIU would: CRIU probes once in a private
 * mount namespace with a tmpfs on /run, and its file is copied into the real
 * /run.  Run at every daemon start, before any thread exists (it forks), so a
 * new kernel after a reboot is probed afresh.
 * Returns 1 when it primed the cache, 0 when /run is a tmpfs (CRIU keeps the
 * cache itself), < 0 on failure (CRIU then probes on every run, as before). */
int fm_ckpt_kdat_prime(const char *criu, fm_error *err);

/* Freezes the container (its processes stop at once; the clock of the downtime
 * starts here). */
int fm_ckpt_freeze(fm_runtime *rt, const char *name, fm_error *err);
/* What becomes of a container's established TCP connections.  With its own
 * network (runtime/net.h) they move with it (--tcp-established) when its
 * address moves too; when the address changes they cannot, and are closed
 * (--tcp-close: their state is not dumped, the restored sockets are closed;
 * the application sees its peers go and clients reconnect). */
typedef enum { FM_TCP_NONE, FM_TCP_ESTABLISHED, FM_TCP_CLOSE } fm_tcp_mode;

typedef struct fm_dump_opts {
	int page_server_sk;     /* > STDERR_FILENO: the memory goes through this
				 * socket (a page relay's, fm_relay_egress_pair) to a
				 * page server, not into images_dir */
	fm_tcp_mode tcp;
	bool pre_dump;          /* a pre-copy round: memory only, the container runs on */
	const char *parent;     /* images of the previous round, relative to images_dir */
} fm_dump_opts;
/* Dumps a frozen container into images_dir (work_dir holds CRIU's log), or
 * with o->pre_dump one pre-copy round of a running one. */
int fm_ckpt_dump(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir,
		 const fm_dump_opts *o, fm_error *err);
/* Diskless COLD destination: `criu page-server` on 127.0.0.1:port writing the
 * pages (pagemap-*.img, pages-*.img) it receives into images_dir; it exits 0
 * when the dump is complete. */
int fm_ckpt_page_server_start(fm_runtime *rt, const char *images_dir, const char *work_dir, int port,
			      struct fm_cmd **running, fm_error *err);
/* POST_COPY source: dumps everything but memory and then serves pages from
 * host:port until the destination has them all.  Run on a frozen container with
 * --leave-running: CRIU keeps the tasks seized while serving and freezes them
 * again at the end, so the source can always be resumed if the destination
 * fails.  Returns once the non-memory images are complete (CRIU's status fd);
 * *running is the CRIU process still serving pages (reap with fm_cmd_wait). */
int fm_ckpt_dump_lazy(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir,
		      const char *host, int port, fm_tcp_mode tcp, const char *parent, struct fm_cmd **running,
		      fm_error *err);
/* A FIFO that a process started ahead reads, to wait there: a CRIU
 * configuration file, for a CRIU started before its options are known (CRIU
 * reads its configuration files first thing: a dump's --config, a restore's
 * CRIU_CONFIG_FILE), or runc's restore gate (sync/restore.c).  Open makes the
 * FIFO at path and holds it for writing (the reader's open returns at once)
 * and watches for the reader's open (inotify; wait_open); send writes the
 * text (< 64 KiB) and closes it once the reader has opened it (the end of
 * the file: CRIU goes on), or fails if the process pid exits first or none
 * opens it in time. */
typedef struct fm_criu_fifo {
	int fd, opened;   /* the FIFO (-1: none); inotify on its opens */
	bool read;        /* the reader has opened it */
	char *path;
} fm_criu_fifo;
#define FM_CRIU_FIFO_INIT { -1, -1, false, NULL }
int fm_criu_fifo_open(const char *path, fm_criu_fifo *f, fm_error *err);
/* Waits, at most timeout_ms, until CRIU (the process pid, or its keeper)
 * has opened it: CRIU has loaded.  0, -EIO if pid exited, -ETIMEDOUT. */
int fm_criu_fifo_wait_open(fm_criu_fifo *f, pid_t pid, int timeout_ms);
int fm_criu_fifo_send(fm_criu_fifo *f, pid_t pid, const char *text, fm_error *err);
/* Closes and removes it (sent or not). */
void fm_criu_fifo_close(fm_criu_fifo *f);
/* The same, in two steps: CRIU started before the freeze (its own start-up,
 * ~10-14 ms here, outside the downtime), waiting to read its configuration;
 * fm_ckpt_dump_lazy_go, on the frozen container, completes that and returns
 * as fm_ckpt_dump_lazy does; or fm_ckpt_dump_early_cancel.  Both free e. */
typedef struct fm_dump_early fm_dump_early;
int fm_ckpt_dump_lazy_start(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir,
			    const char *host, int port, fm_tcp_mode tcp, const char *parent, fm_dump_early **e,
			    fm_error *err);
int fm_ckpt_dump_lazy_go(fm_dump_early *e, fm_runtime *rt, struct fm_cmd **running, fm_error *err);
void fm_ckpt_dump_early_cancel(fm_dump_early *e);
/* POST_COPY destination: starts `criu lazy-pages` fetching from host:port; it
 * exits 0 once every page has arrived.  It is ready for the restore once
 * fm_ckpt_ready_wait(running, *ready_fd, ...) returns 0: the caller may do
 * other work meanwhile (CRIU reads its images for ~10 ms first). */
int fm_ckpt_lazy_pages_start(fm_runtime *rt, const char *images_dir, const char *work_dir, const char *host,
			     int port, struct fm_cmd **running, int *ready_fd, fm_error *err);
/* Waits for a CRIU process's status byte on ready_fd (closed here).  On failure
 * or timeout the process is killed and reaped, *running is set to NULL, and err
 * says "WHAT failed" with CRIU's log excerpt (work_dir/logname). */
int fm_ckpt_ready_wait(struct fm_cmd **running, int ready_fd, int timeout_ms, const char *work_dir,
		       const char *logname, const char *what, fm_error *err);
/* A long-running CRIU gave up or must: kills it (*running = NULL) and adds the
 * last errors of work_dir/logname to err. */
void fm_ckpt_kill_running(struct fm_cmd **running, const char *work_dir, const char *logname, fm_error *err);

/* State Restoration Module (restore.c).  Restores a container from images_dir; its bundle and root filesystem must be in
 * place (see fm_rt_bundle_create / fm_rt_rootfs_mount).  With resumed, its fn
 * runs as soon as CRIU has let the restored tasks go (its post-resume
 * notification, seen through fm-criu-shim), while runc still ends (~12 ms):
 * the container runs from then on even if the restore then fails.
 * FM_RESTORE_HELD: a lazy restore whose tasks CRIU lets go only once
 * resumed->hold (run at CRIU's pre-resume, the tasks restored but stopped)
 * returns 0; < 0 (its err set) fails the restore before they ever ran.
 * A resumed->stop_fd that becomes readable kills runc and its CRIU: the
 * restore fails with -ECANCELED (an abort, a page stream that broke while
 * CRIU may wait for a page). */
typedef enum {
	FM_RESTORE_EAGER,   /* the memory is in the images */
	FM_RESTORE_LAZY,    /* the memory follows on demand (POST_COPY) */
	FM_RESTORE_HELD,    /* ... and arrives whole before the tasks run (COLD) */
} fm_restore_mode;
typedef struct {
	void (*fn)(void *arg);
	void *arg;
	int (*hold)(void *arg, fm_error *err);
	int stop_fd[2];     /* either readable: the restore is given up (-1: none) */
} fm_restore_resumed;
int fm_restore(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir, fm_restore_mode mode,
	       fm_tcp_mode tcp, const fm_restore_resumed *resumed, fm_error *err);
/* The same restore in two steps: fm_restore_start before the images are there
 * (needs the bundle only; runc starts and waits for them, its ~25 ms of
 * start-up off the downtime), fm_restore_finish once they, the root
 * filesystem and the network are in place (then as fm_restore; a runc that
 * gave up waiting is started again), or fm_restore_cancel.  Both free run. */
typedef struct fm_restore_run fm_restore_run;
int fm_restore_start(fm_runtime *rt, const char *name, const char *work_dir, fm_restore_mode mode, fm_tcp_mode tcp,
		     fm_restore_run **run, fm_error *err);
/* Was run started with these arguments? */
bool fm_restore_matches(const fm_restore_run *run, const char *work_dir, fm_restore_mode mode, fm_tcp_mode tcp);
int fm_restore_finish(fm_restore_run *run, const char *images_dir, const fm_restore_resumed *resumed, fm_error *err);
void fm_restore_cancel(fm_restore_run *run);

/* Runs a prepared CRIU dump or runc restore command (consumed) under CRIU's time
 * limit; on failure err gets "WHAT of NAME failed" and CRIU's log excerpt. */
int fm_ckpt_run(struct fm_cmd *c, const char *work_dir, const char *logname, const char *what,
		     const char *name, fm_error *err);
/* Attaches the last Error lines of a CRIU log in work_dir to err (as detail). */
void fm_ckpt_attach_criu_log(fm_error *err, const char *work_dir, const char *logname);

/* What this host's kernel and CRIU can do, measured once at start-up:
 * {criu_path, criu_version, criu_ok, criu_error, lazy_pages, mem_dirty_track,
 *  pipe_max_size, kernel, arch}. */
json_t *fm_ckpt_capabilities(const char *criu);
/* `criu cpuinfo dump` into dir (cpuinfo.img). */
int fm_ckpt_cpuinfo_dump(const char *criu, const char *dir, fm_error *err);
/* `criu cpuinfo check` of dir/cpuinfo.img against this CPU. */
int fm_ckpt_cpuinfo_check(const char *criu, const char *dir, fm_error *err);
