#include "sync/migrate.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include "basic/cmd.h"
#include "basic/log.h"
#include "basic/util.h"
#include "manager/allocator.h"
#include "network/forward.h"
#include "runtime/net.h"
#include "sync/checkpoint.h"
#include "sync/lazy_gate.h"
#include "sync/prefetch.h"
#include "sync/relay.h"
#include "sync/transfer.h"

/* A fully received migration that neither its restore nor an abort claims within
 * this time is discarded: its controller is gone and will not come back for it. */
#define FM_UNCLAIMED_TTL_MS (10 * 60 * 1000)

/* The migrations whose CRIU and runc logs stay in STATE/logs (staging_remove). */
#define FM_LOGS_KEEP 32

/* Verification watches a restored container this long for an early exit. */
#define FM_VERIFY_SETTLE_MS 50

/* Destination: one migration arriving. */
typedef struct fm_incoming {
	char mid[64];
	fm_container_spec spec;
	char *staging;               /* <state>/migrations/<mid> */
	fm_xfer_listener *listener;
	uint8_t token[FM_XFER_TOKEN_LEN];
	pthread_t thread;
	bool thread_started, thread_done;
	bool claimed;                /* restore or abort took it over (under agent lock) */
	pthread_cond_t claim_cv;
	int recv_status;             /* result of the receive */
	fm_error recv_err;
	fm_xfer_stats stats;         /* updated while receiving (under a->lock) */
	int64_t restored_us;         /* monotonic time the restore returned */
	struct fm_cmd *lazy;         /* POST_COPY: `criu lazy-pages` fetching the memory */
	struct fm_cmd *page_server;  /* diskless COLD, PRE_COPY rounds: `criu page-server` receiving memory */
	char *pages_dir;             /* ... into this directory */
	fm_relay *relay;             /* COLD: ingress relay to page_server; POST_COPY: egress relay to the source */
	fm_prefetch *prefetch;       /* POST_COPY: between lazy-pages and the relay */
	fm_restore_run *restore_run; /* runc restore started at the freeze, waiting for the images (under agent lock) */
	fm_net_nft_ready *unhold;    /* the hold's release, made ready with restore_run (under agent lock) */
	bool recv_failed;            /* the receive failed: nothing will be restored (under agent lock) */
	fm_agent *agent;
	bool presync;                /* a rootfs pre-sync arrives (into presync/) before the state */
	int abort_fd;                /* eventfd: an abort waits for dst_ops; a held restore, which
				      * holds it while the memory arrives, gives up at once */
	struct fm_incoming *next;
} fm_incoming;

/* Source, POST_COPY: CRIU serves pages on the loopback; the destination
 * reaches it through our relay, with its own token.  Set up, and CRIU started,
 * before the freeze (by checkpoint_start, or by the checkpoint itself). */
typedef struct lazy_source {
	fm_dump_early *criu;         /* the lazy dump, waiting for its configuration */
	fm_relay *relay;             /* ingress relay in front of its page server */
	uint8_t token[FM_XFER_TOKEN_LEN];
	int ps_port;
	int parent_round;            /* what it was started for */
	fm_tcp_mode tcp;
	fm_net_nft_ready *hold;      /* FM_TCP_ESTABLISHED: the hold's nftables, ready in its namespace */
} lazy_source;

static void lazy_source_drop(lazy_source *l)
{
	if (!l)
		return;
	fm_ckpt_dump_early_cancel(l->criu);
	fm_relay_free(l->relay);
	fm_net_nft_ready_free(l->hold);
	free(l);
}

/* Source: progress of one migration leaving. */
typedef struct fm_outgoing {
	char mid[64];
	char phase[32];
	fm_xfer_stats stats;
	struct fm_cmd *lazy;         /* POST_COPY: the lazy CRIU dump still serving pages */
	fm_relay *relay;             /* POST_COPY: ingress relay in front of CRIU's page server */
	struct fm_net_capture *capture; /* segments for the container held since the freeze */
	bool throttled;              /* auto-converge lowered its CPU quota */
	fm_xfer_manifest *presync;   /* what the rootfs pre-sync sent, for the checkpoint's transfer */
	lazy_source *early;          /* POST_COPY: set up by checkpoint_start, for the checkpoint */
	struct fm_outgoing *next;
} fm_outgoing;

void fm_agent_init(fm_agent *a)
{
	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->dst_ops, NULL);
	pthread_mutex_init(&a->src_ops, NULL);
	pthread_mutex_init(&a->preflight, NULL);
	a->io_timeout_ms = 10000;
	a->cpu_overcommit = 1.0;
}

/* Waits up to timeout_ms for a started command; then kills its process group.
 * Returns its exit status (or -errno) and frees it. */
static int finish_cmd(struct fm_cmd *c, int timeout_ms, fm_error *err)
{
	int r = fm_cmd_wait_timeout(c, timeout_ms, err);
	fm_cmd_free(c);
	return r;
}

/* The runc restore started early for in (NULL: none), taken out of its
 * record; with failed, none can be put there any more (the receive failed). */
static fm_restore_run *incoming_take_restore(fm_incoming *in, bool failed)
{
	pthread_mutex_lock(&in->agent->lock);
	fm_restore_run *run = in->restore_run;
	in->restore_run = NULL;
	in->recv_failed |= failed;
	pthread_mutex_unlock(&in->agent->lock);
	return run;
}

/* The hold's release made ready ahead (NULL: none), taken out of its record. */
static fm_net_nft_ready *incoming_take_unhold(fm_incoming *in)
{
	pthread_mutex_lock(&in->agent->lock);
	fm_net_nft_ready *u = in->unhold;
	in->unhold = NULL;
	pthread_mutex_unlock(&in->agent->lock);
	return u;
}

static void incoming_free(fm_incoming *in)
{
	pthread_mutex_lock(&in->agent->lock);
	in->claimed = true;
	pthread_cond_signal(&in->claim_cv);
	pthread_mutex_unlock(&in->agent->lock);
	fm_restore_cancel(incoming_take_restore(in, false));
	fm_net_nft_ready_free(incoming_take_unhold(in));
	if (in->lazy)
		finish_cmd(in->lazy, 0, NULL);
	in->lazy = NULL;
	if (in->page_server)
		finish_cmd(in->page_server, 0, NULL);
	in->page_server = NULL;
	fm_prefetch_free(in->prefetch);
	in->prefetch = NULL;
	fm_relay_free(in->relay);
	in->relay = NULL;
	if (in->listener)
		fm_xfer_listener_cancel(in->listener);
	if (in->thread_started)
		pthread_join(in->thread, NULL);
	fm_xfer_listener_free(in->listener);
	free(in->pages_dir);
	fm_container_spec_clear(&in->spec);
	fm_error_clear(&in->recv_err);
	pthread_cond_destroy(&in->claim_cv);
	if (in->abort_fd >= 0)
		close(in->abort_fd);
	free(in->staging);
	free(in);
	fm_memory_release();
}

void fm_agent_fini(fm_agent *a)
{
	fm_forwarder_free(a->forwarder);
	a->forwarder = NULL;
	while (a->incoming) {
		fm_incoming *n = a->incoming->next;
		incoming_free(a->incoming);
		a->incoming = n;
	}
	while (a->outgoing) {
		fm_outgoing *n = a->outgoing->next;
		fm_relay_free(a->outgoing->relay);
		fm_net_capture_stop(a->outgoing->capture, NULL, NULL, NULL);
		lazy_source_drop(a->outgoing->early);
		free(a->outgoing);
		a->outgoing = n;
	}
	json_decref(a->caps);
	free(a->data_host);
	free(a->cpuinfo_b64);
	for (int i = 0; i < a->n_cpu_checks; i++) {
		free(a->cpu_checks[i].msg);
		free(a->cpu_checks[i].detail);
	}
	pthread_mutex_destroy(&a->lock);
	pthread_mutex_destroy(&a->dst_ops);
	pthread_mutex_destroy(&a->src_ops);
	pthread_mutex_destroy(&a->preflight);
}

static char *staging_dir(fm_agent *a, const char *mid)
{
	return fm_xasprintf("%s/migrations/%s", a->rt->state_dir, mid);
}

/* Moves the *.log files below dir (CRIU's and runc's) into keep, named by
 * their path below the staging directory with '/' as '-'. */
static void logs_collect(const char *dir, const char *rel, const char *keep, int depth)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		_cleanup_free_ char *path = fm_xasprintf("%s/%s", dir, e->d_name);
		_cleanup_free_ char *name = *rel ? fm_xasprintf("%s-%s", rel, e->d_name) : fm_xstrdup(e->d_name);
		struct stat st;
		size_t n = strlen(e->d_name);
		if (lstat(path, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode) && depth > 0 && strcmp(e->d_name, "images") && strcmp(e->d_name, "pages"))
			logs_collect(path, name, keep, depth - 1);
		else if (S_ISREG(st.st_mode) && n > 4 && !strcmp(e->d_name + n - 4, ".log")) {
			_cleanup_free_ char *to = fm_xasprintf("%s/%s", keep, name);
			(void)rename(path, to);
		}
	}
	closedir(d);
}

typedef struct log_dir {
	struct timespec mtime;
	char *path;
} log_dir;

static int log_dir_by_age(const void *x, const void *y)
{
	const struct timespec *a = &((const log_dir *)x)->mtime, *b = &((const log_dir *)y)->mtime;
	return a->tv_sec != b->tv_sec ? (a->tv_sec > b->tv_sec) - (a->tv_sec < b->tv_sec)
				      : (a->tv_nsec > b->tv_nsec) - (a->tv_nsec < b->tv_nsec);
}

/* Of STATE/logs, only the newest FM_LOGS_KEEP migrations' directories stay. */
static void logs_prune(const char *root)
{
	DIR *d = opendir(root);
	if (!d)
		return;
	log_dir *v = NULL;
	size_t n = 0;
	for (struct dirent *e; (e = readdir(d));) {
		struct stat st;
		char *path = e->d_name[0] == '.' ? NULL : fm_xasprintf("%s/%s", root, e->d_name);
		if (!path || lstat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
			free(path);
			continue;
		}
		v = realloc(v, (n + 1) * sizeof(*v));
		if (!v)
			abort();
		v[n++] = (log_dir){ st.st_mtim, path };
	}
	closedir(d);
	qsort(v, n, sizeof(*v), log_dir_by_age);
	for (size_t i = 0; i < n; i++) {
		if (i + FM_LOGS_KEEP < n)
			fm_rm_rf(v[i].path);
		free(v[i].path);
	}
	free(v);
}

/* Removes a migration's staging directory.  CRIU's and runc's logs in it
 * outlive it, in STATE/logs/MID (the last FM_LOGS_KEEP migrations): where a
 * freeze's time went, or why a dump or restore failed, stays readable. */
static void staging_remove(fm_agent *a, const char *mid)
{
	_cleanup_free_ char *root = fm_xasprintf("%s/logs", a->rt->state_dir);
	_cleanup_free_ char *keep = fm_xasprintf("%s/%s", root, mid);
	_cleanup_free_ char *staging = staging_dir(a, mid);
	if (access(staging, F_OK) == 0 && fm_mkdir_p(keep, 0700) == 0) {
		logs_collect(staging, "", keep, 3);
		logs_prune(root);
	}
	fm_rm_rf(staging);
}

/* A free TCP port on host for CRIU's page server (bound and released: the window
 * in which another process could take it is a few milliseconds). */
static int free_port(const char *host)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	_cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return -EADDRNOTAVAIL;
	return ntohs(sa.sin_port);
}

static int check_mid(const char *mid, fm_error *err)
{
	if (!fm_name_valid(mid))
		return fm_error_set(err, -EINVAL, "invalid migration id");
	return 0;
}

/* A request's migration id and its "container". */
static int check_mid_container(const char *mid, const char *name, fm_error *err)
{
	int r = check_mid(mid, err);
	if (r == 0 && (!name || !fm_name_valid(name)))
		r = fm_error_set(err, -EINVAL, "\"container\" missing or invalid");
	return r;
}

static int parse_token(const char *s, uint8_t out[FM_XFER_TOKEN_LEN])
{
	if (!s || strlen(s) != 2 * FM_XFER_TOKEN_LEN)
		return -EINVAL;
	for (int i = 0; i < FM_XFER_TOKEN_LEN; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		out[i] = (uint8_t)v;
	}
	return 0;
}

/* The page relay's options from a request: "compress" (-1 auto, 0 off, 1..19)
 * and "bandwidth_bps". */
/* A container with its own network keeps its TCP connections across the move
 * unless the controller asks for them to be closed ("tcp_close": its address
 * changes, see sync/checkpoint.h). */
static fm_tcp_mode tcp_mode_of(json_t *req, bool network)
{
	if (!network)
		return FM_TCP_NONE;
	return json_is_true(json_object_get(req, "tcp_close")) ? FM_TCP_CLOSE : FM_TCP_ESTABLISHED;
}

static void relay_opts_from(fm_agent *a, json_t *req, fm_relay_opts *o)
{
	json_t *c = json_object_get(req, "compress");
	*o = (fm_relay_opts)FM_RELAY_OPTS_INIT;
	o->io_timeout_ms = a->io_timeout_ms;
	o->compress = json_is_integer(c) && json_integer_value(c) >= -1 && json_integer_value(c) <= 19
		? (int)json_integer_value(c) : FM_COMPRESS_AUTO;
	json_int_t bw = json_integer_value(json_object_get(req, "bandwidth_bps"));
	o->bandwidth_bps = bw > 0 ? (uint64_t)bw : 0;
}

static void relay_stats_json(fm_relay *r, json_t *obj, const char *prefix)
{
	fm_relay_stats st;
	char k[64];
	fm_relay_get_stats(r, &st);
#define SET(name, val) (snprintf(k, sizeof(k), "%s%s", prefix, name), json_object_set_new(obj, k, val))
	SET("wire_tx", json_integer((json_int_t)st.wire_tx));
	SET("wire_rx", json_integer((json_int_t)st.wire_rx));
	SET("raw_tx", json_integer((json_int_t)st.raw_tx));
	SET("raw_rx", json_integer((json_int_t)st.raw_rx));
	SET("compressed_frames", json_integer(st.compressed_frames));
	SET("frames", json_integer(st.frames_tx));
	SET("zstd_level", json_integer(st.level));
	SET("dense_bytes", json_integer((json_int_t)st.dense_tx));
	SET("dense_level", json_integer(FM_COMPRESS_DENSE_LEVEL));
	SET("link_bps", json_real(st.link_bps));
#undef SET
}

static void prefetch_stats_json(fm_prefetch *p, json_t *obj)
{
	fm_prefetch_stats st;
	fm_prefetch_get_stats(p, &st);
	json_object_set_new(obj, "prefetch", json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:I, s:I}",
		"lazy_bytes", (json_int_t)st.lazy_bytes, "fetched_bytes", (json_int_t)st.fetched_bytes,
		"served_bytes", (json_int_t)st.served_bytes, "faults", (json_int_t)st.faults,
		"zero_pages", (json_int_t)st.zero_pages, "misses", (json_int_t)st.misses,
		"wait_max_ms", st.wait_max_ms, "wait_sum_ms", st.wait_sum_ms, "all_here_ms", st.all_here_ms,
		"link_bps", st.link_bps, "window_min_bytes", (json_int_t)st.window_min,
		"window_max_bytes", (json_int_t)st.window_max));
}

/* An abort leaves a tombstone: a prepare or reserve that was already on its way
 * (sent by a controller that died) must not recreate what the abort removed. */
static int check_not_aborted(fm_agent *a, const char *mid, fm_error *err)
{
	if (fm_journal_query_int(a->journal, 0, "SELECT COUNT(*) FROM incoming WHERE mid = ? AND state = 'ABORTED'",
				 "s", mid) > 0)
		return fm_error_set(err, -ECANCELED, "migration %s was already aborted on %s", mid, a->rt->host);
	return 0;
}

/* Takes the incoming record out of the list (caller frees), or NULL. */
static fm_incoming *incoming_take(fm_agent *a, const char *mid)
{
	fm_incoming **pp, *in = NULL;
	pthread_mutex_lock(&a->lock);
	for (pp = &a->incoming; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->mid, mid)) {
			in = *pp;
			*pp = in->next;
			break;
		}
	pthread_mutex_unlock(&a->lock);
	return in;
}

static fm_incoming *incoming_find(fm_agent *a, const char *mid)
{
	fm_incoming *in;
	for (in = a->incoming; in; in = in->next)
		if (!strcmp(in->mid, mid))
			return in;
	return NULL;
}

/* The incoming migration mid (looked up under the agent lock): 0, or -EINVAL
 * for an invalid id, -ENOENT for an unknown one, with err set. */
static int incoming_get(fm_agent *a, const char *mid, fm_incoming **in, fm_error *err)
{
	if (!fm_name_valid(mid))
		return fm_error_set(err, -EINVAL, "invalid migration id");
	pthread_mutex_lock(&a->lock);
	*in = incoming_find(a, mid);
	pthread_mutex_unlock(&a->lock);
	return *in ? 0 : fm_error_set(err, -ENOENT, "no incoming migration %s on %s", mid, a->rt->host);
}

/* ------------------------------------------------------------------ destination */

/* Removes what an incoming migration put on disk and in the journal: the restored
 * container if it is not committed, its bundle, the staging directory, the
 * reservation.  Idempotent; safe without the in-memory record. */
static int discard_incoming(fm_agent *a, const char *mid, fm_error *err)
{
	json_t *row = fm_journal_query_one(a->journal, "SELECT container FROM incoming WHERE mid = ?", "s", mid);
	/* only a container this migration created, never a committed one */
	json_t *crow = fm_journal_query_one(a->journal,
					    "SELECT name FROM containers WHERE migration = ? AND committed = 0", "s", mid);
	const char *name = json_string_value(json_object_get(crow ? crow : row, crow ? "name" : "container"));
	int r = 0;

	if (name && fm_name_valid(name) && (crow || !fm_rt_exists(a->rt, name))) {
		char status[32];
		fm_rt_runc_destroy(a->rt, name, NULL);
		/* the controller resumes the source on our word: make sure the copy is gone */
		if (fm_rt_status(a->rt, name, status, sizeof(status), NULL) == 0) {
			r = fm_error_set(err, -EBUSY, "container %s is still %s on %s after being destroyed", name, status,
					 a->rt->host);
			goto out;
		}
		fm_rt_bundle_destroy(a->rt, name);
		fm_journal_exec(a->journal, "DELETE FROM containers WHERE name = ? AND committed = 0", "s", name);
	}
	staging_remove(a, mid);
	fm_alloc_release(a->journal, mid);
	fm_journal_exec(a->journal, "DELETE FROM incoming WHERE mid = ?", "s", mid);
out:
	json_decref(row);
	json_decref(crow);
	return r;
}

static int dst_reserve_locked(fm_agent *a, const char *mid, json_t *req, fm_error *err)
{
	const char *name = json_string_value(json_object_get(req, "container"));
	int r;

	if ((r = check_mid_container(mid, name, err)) < 0)
		return r;
	if ((r = check_not_aborted(a, mid, err)) < 0)
		return r;
	return fm_alloc_reserve(a->journal, mid, name,
				json_integer_value(json_object_get(req, "cpu_milli")),
				json_integer_value(json_object_get(req, "memory_bytes")), a->cpu_overcommit, err);
}

static void recv_progress(void *opaque, const fm_xfer_stats *s)
{
	fm_incoming *in = opaque;
	in->stats = *s; /* a torn read by a status query is harmless */
}

static void *recv_thread(void *opaque)
{
	fm_incoming *in = opaque;
	_cleanup_free_ char *dir = fm_xasprintf("%s/recv", in->staging);
	_cleanup_free_ char *pre = fm_xasprintf("%s/presync", in->staging);
	fm_xfer_opts opts = FM_XFER_OPTS_INIT;
	fm_xfer_stats st = { 0 };

	opts.progress = recv_progress;
	opts.progress_opaque = in;
	opts.io_timeout_ms = in->recv_status; /* handed over in the status field */
	/* the writable layer while the container runs; then the state, with the
	 * files unchanged since taken from it */
	in->recv_status = in->presync ? fm_xfer_receive(in->listener, in->token, pre, FM_CRIU_TIMEOUT_MS +
							opts.io_timeout_ms, &opts, &st, &in->recv_err) : 0;
	if (in->recv_status == 0 && in->presync) {
		opts.reuse_dir = pre;
		fm_log(FM_LOG_DEBUG, FM_C_DELTA_TRANSFER, in->mid, "Rootfs pre-sync received: %" PRIu32 " entries, %"
		       PRIu64 " bytes", st.entries, st.payload_bytes);
	}
	/* the source freezes and dumps before it connects: allow as long as a dump may take */
	if (in->recv_status == 0)
		in->recv_status = fm_xfer_receive(in->listener, in->token, dir, FM_CRIU_TIMEOUT_MS + opts.io_timeout_ms,
						  &opts, &st, &in->recv_err);
	in->stats = st;
	if (in->recv_status == 0) {
		/* wait for the controller to restore (or abort) what arrived */
		fm_agent *a = in->agent;
		struct timespec until;
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += FM_UNCLAIMED_TTL_MS / 1000;
		pthread_mutex_lock(&a->lock);
		while (!in->claimed && pthread_cond_timedwait(&in->claim_cv, &a->lock, &until) == 0)
			;
		if (!in->claimed)
			in->recv_status = fm_error_set(&in->recv_err, -ETIMEDOUT,
						       "received, but no restore came within %d s: controller gone",
						       FM_UNCLAIMED_TTL_MS / 1000);
		pthread_mutex_unlock(&a->lock);
	}
	if (in->recv_status < 0) {
		/* A failed receive can never be restored.  Clean up now: a destination
		 * cut off from its controller must not keep the half-received state,
		 * nor a runc waiting for it. */
		fm_log(FM_LOG_WARN, FM_C_DELTA_TRANSFER, in->mid, "Receiving migration %s failed (%s): discarding it",
		       in->mid, in->recv_err.msg);
		fm_restore_cancel(incoming_take_restore(in, true));
		discard_incoming(in->agent, in->mid, NULL);
	}
	__atomic_store_n(&in->thread_done, true, __ATOMIC_RELEASE);
	return NULL;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

/* Is the name used by a container, a bundle directory, or another migration
 * arriving here?  Checked under dst_ops, before the incoming row claims it. */
static bool name_taken(fm_agent *a, const char *name, const char *mid)
{
	_cleanup_free_ char *cdir = fm_rt_container_dir(a->rt, name);
	struct stat st;
	return fm_rt_exists(a->rt, name) || lstat(cdir, &st) == 0 ||
	       fm_journal_query_int(a->journal, 0,
				    "SELECT COUNT(*) FROM incoming WHERE container = ? AND state != 'ABORTED' AND mid != ?",
				    "ss", name, mid) > 0;
}

/* What a source sends is exactly images/ and, optionally, upper/ — both real
 * directories.  Anything else (a symlink named upper pointing at a host directory
 * would become the container's writable layer) is refused before it is used. */
int fm_sync_check_received(const char *staging, fm_error *err)
{
	_cleanup_free_ char *dir = fm_xasprintf("%s/recv", staging);
	DIR *d = opendir(dir);
	struct dirent *de;
	bool images = false;
	int r = 0;

	if (!d)
		return fm_error_set(err, -errno, "cannot read %s: %m", dir);
	while (r == 0 && (de = readdir(d))) {
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (strcmp(de->d_name, "images") != 0 && strcmp(de->d_name, "upper") != 0)
			r = fm_error_set(err, -EBADMSG, "the source sent an unexpected top-level entry \"%.64s\"", de->d_name);
		else if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			r = fm_error_set(err, -EBADMSG, "the source sent %s as something other than a directory", de->d_name);
		else if (!strcmp(de->d_name, "images"))
			images = true;
	}
	closedir(d);
	if (r == 0 && !images)
		r = fm_error_set(err, -EBADMSG, "the source sent no checkpoint images");
	return r;
}

/* Starts `criu page-server` writing into <staging>/pages/<name> behind an
 * ingress relay (the migration's token).  parent: an earlier round's name,
 * linked as the directory's "parent" (pre-copy: pages not dirtied since stay
 * there).  One page server at a time per migration. */
static int pages_open(fm_agent *a, fm_incoming *in, const char *name, const char *parent, json_t *req,
		      fm_error *err)
{
	_cleanup_free_ char *dir = fm_xasprintf("%s/pages/%s", in->staging, name);
	_cleanup_free_ char *work = fm_xasprintf("%s/work", in->staging);
	fm_relay_opts ro;
	int ps_port, r;

	if (in->page_server)
		return fm_error_set(err, -EBUSY, "a page transfer of migration %s is still open", in->mid);
	relay_opts_from(a, req, &ro);
	fm_rm_rf(dir);
	if ((r = fm_mkdir_p(dir, 0700)) < 0)
		return fm_error_set(err, r, "cannot create %s: %s", dir, strerror(-r));
	if (parent) {
		/* relative: CRIU may follow it from inside the restored container's root */
		_cleanup_free_ char *target = fm_xasprintf("../%s", parent);
		_cleanup_free_ char *link = fm_xasprintf("%s/parent", dir);
		if (symlink(target, link) < 0)
			return fm_error_set(err, -errno, "cannot link %s to its parent %s: %m", link, target);
	}
	if ((ps_port = free_port("127.0.0.1")) < 0)
		return fm_error_set(err, ps_port, "no free local port for CRIU's page server");
	if ((r = fm_ckpt_page_server_start(a->rt, dir, work, ps_port, &in->page_server, err)) < 0)
		return r;
	if ((r = fm_relay_ingress(a->data_host, in->token, "127.0.0.1", ps_port, &ro, &in->relay, err)) < 0) {
		finish_cmd(in->page_server, 0, NULL);
		in->page_server = NULL;
		return r;
	}
	free(in->pages_dir);
	in->pages_dir = TAKE_PTR(dir);
	return 0;
}

/* Waits for the open page transfer to end (the dump hung up) and the page
 * server to exit 0; its relay's figures go into stats. */
static int pages_close(fm_agent *a, fm_incoming *in, json_t *stats, fm_error *err)
{
	_cleanup_free_ char *work = fm_xasprintf("%s/work", in->staging);
	struct fm_cmd *ps = TAKE_PTR(in->page_server);
	fm_error e = FM_ERROR_INIT;
	int r;

	if (!ps)
		return fm_error_set(err, -ENOENT, "no page transfer open for migration %s", in->mid);
	if ((r = fm_relay_wait(in->relay, a->io_timeout_ms, &e)) < 0 ||
	    (r = finish_cmd(ps, a->io_timeout_ms, &e)) != 0) {
		r = r > 0 ? -EIO : r;
		if (e.code == 0)
			fm_error_set(&e, r, "CRIU's page server failed");
		fm_ckpt_attach_criu_log(&e, work, "page-server.log");
		fm_error_prefix(&e, "receiving the memory pages failed");
		fm_error_move(err, &e);
	} else {
		relay_stats_json(in->relay, stats, "pages_");
	}
	fm_error_clear(&e);
	fm_relay_free(in->relay);
	in->relay = NULL;
	return r;
}

static int dst_prepare_locked(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	const char *source_ep = json_string_value(json_object_get(req, "source_endpoint"));
	const char *controller = json_string_value(json_object_get(req, "controller"));
	const char *source = json_string_value(json_object_get(req, "source"));
	fm_incoming *in;
	fm_image img;
	char tokhex[2 * FM_XFER_TOKEN_LEN + 1];
	_cleanup_free_ char *recv = NULL, *work = NULL, *presync = NULL;
	int r;

	if ((r = check_mid(mid, err)) < 0)
		return r;
	if (a->cordoned)
		return fm_error_set(err, -EPERM, "host %s is cordoned and refuses incoming migrations "
				    "(`fleximigrate host uncordon` on it)", a->rt->host);
	if ((r = check_not_aborted(a, mid, err)) < 0)
		return r;

	pthread_mutex_lock(&a->lock);
	in = incoming_find(a, mid);
	if (in) {
		/* repeated by a controller that lost the reply */
		hex(in->token, sizeof(in->token), tokhex);
		*out = json_pack("{s:s, s:i, s:s, s:b}", "data_host", a->data_host, "port",
				 fm_xfer_listener_port(in->listener), "token", tokhex, "image_pulled", 0);
		if (in->relay)
			json_object_set_new(*out, "page_relay_port", json_integer(fm_relay_port(in->relay)));
		pthread_mutex_unlock(&a->lock);
		return 0;
	}
	pthread_mutex_unlock(&a->lock);

	in = fm_xcalloc(1, sizeof(*in));
	in->agent = a;
	in->abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	{
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&in->claim_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	snprintf(in->mid, sizeof(in->mid), "%s", mid);
	if ((r = fm_container_spec_from_json(json_object_get(req, "spec"), &in->spec, err)) < 0)
		goto fail_free;
	if (!in->spec.digest) {
		r = fm_error_set(err, -EINVAL, "the container spec must carry the image digest");
		goto fail_free;
	}
	if (name_taken(a, in->spec.name, mid)) {
		r = fm_error_set(err, -EEXIST, "a container named %s already exists or is arriving on %s",
				 in->spec.name, a->rt->host);
		goto fail_free;
	}
	if ((r = fm_rt_volumes_check(a->rt, &in->spec, err)) < 0) {
		fm_error_prefix(err, "destination %s cannot take %s", a->rt->host, in->spec.name);
		goto fail_free;
	}

	/* the image: here already, or pulled from the source and verified by digest */
	bool pulled = false;
	if (fm_image_lookup(a->rt->images, in->spec.digest, &img) < 0) {
		_cleanup_free_ char *tmp = fm_image_tmp_path(a->rt->images);
		if (!source_ep || !a->fetch_blob) {
			r = fm_error_set(err, -ENOENT, "image %s is not on %s and no source to pull it from",
					 in->spec.digest, a->rt->host);
			goto fail_free;
		}
		fm_relay_opts cap;
		relay_opts_from(a, req, &cap);
		if ((r = a->fetch_blob(source_ep, in->spec.digest, tmp, cap.bandwidth_bps, err)) < 0 ||
		    (r = fm_image_import_blob(a->rt->images, in->spec.image, tmp, in->spec.digest, &img, err)) < 0) {
			unlink(tmp);
			fm_error_prefix(err, "destination %s cannot obtain image %s (%s)", a->rt->host,
					in->spec.image, in->spec.digest);
			goto fail_free;
		}
		pulled = true;
	}

	r = fm_journal_exec(a->journal, "INSERT OR REPLACE INTO incoming(mid, container, controller, source, state, at_ms)"
			    " VALUES(?, ?, ?, ?, 'PREPARED', ?)", "ssssi", mid, in->spec.name, controller, source,
			    fm_now_wall_ms());
	if (r < 0) {
		fm_error_set(err, r, "cannot journal the incoming migration");
		goto fail_free;
	}
	in->staging = staging_dir(a, mid);
	fm_rm_rf(in->staging);
	recv = fm_xasprintf("%s/recv", in->staging);
	work = fm_xasprintf("%s/work", in->staging);
	presync = fm_xasprintf("%s/presync", in->staging);
	in->presync = json_is_true(json_object_get(req, "presync"));
	if ((r = fm_mkdir_p(recv, 0700)) < 0 || (r = fm_mkdir_p(work, 0700)) < 0 ||
	    (in->presync && (r = fm_mkdir_p(presync, 0700)) < 0)) {
		fm_error_set(err, r, "cannot create %s: %s", in->staging, strerror(-r));
		goto fail_undo;
	}
	/* its address is reserved here: no other container may hold it */
	if (in->spec.net_ip && (r = fm_rt_address_free(a->rt, in->spec.net_ip, in->spec.name, err)) < 0)
		goto fail_undo;
	if ((r = fm_rt_bundle_create(a->rt, &in->spec, err)) < 0)
		goto fail_undo;
	/* the same address and MAC as on the source, its bridge port down until the
	 * restore: nothing may reach the copy before it exists */
	if (in->spec.net_ip &&
	    ((r = fm_net_create(a->rt, in->spec.name, in->spec.net_ip, in->spec.net_mac, false, err)) < 0 ||
	     (r = fm_net_hold(a->rt, in->spec.name, true, false, err)) < 0))
		goto fail_undo;
	if ((r = fm_xfer_listen(a->data_host, 0, &in->listener, err)) < 0)
		goto fail_undo;
	if ((r = fm_random_bytes(in->token, sizeof(in->token))) < 0) {
		fm_error_set(err, r, "getrandom: %s", strerror(-r));
		goto fail_undo;
	}
	/* diskless COLD: the memory streams into a page server while the source dumps */
	if (json_is_true(json_object_get(req, "diskless")) && (r = pages_open(a, in, "final", NULL, req, err)) < 0)
		goto fail_undo;
	in->recv_status = a->io_timeout_ms;
	if (pthread_create(&in->thread, NULL, recv_thread, in) != 0) {
		r = fm_error_set(err, -EAGAIN, "cannot start the receiver thread");
		goto fail_undo;
	}
	in->thread_started = true;
	hex(in->token, sizeof(in->token), tokhex);
	*out = json_pack("{s:s, s:i, s:s, s:b}", "data_host", a->data_host, "port",
			 fm_xfer_listener_port(in->listener), "token", tokhex, "image_pulled", pulled);
	if (in->relay)
		json_object_set_new(*out, "page_relay_port", json_integer(fm_relay_port(in->relay)));
	pthread_mutex_lock(&a->lock);
	in->next = a->incoming;
	a->incoming = in;
	pthread_mutex_unlock(&a->lock);
	return 0;

fail_undo:
	fm_rt_bundle_destroy(a->rt, in->spec.name);
	if (in->staging)
		fm_rm_rf(in->staging);
	fm_journal_exec(a->journal, "DELETE FROM incoming WHERE mid = ?", "s", mid);
fail_free:
	incoming_free(in);
	return r;
}

/* Diskless COLD and PRE_COPY's final dump: the page server has written
 * pagemap-*.img and pages-*.img; they join the other images (with the link to
 * the last pre-copy round, if any).  The dump on the source finished before the
 * controller asked for the restore, so the page server is ending. */
static int collect_pages(fm_agent *a, fm_incoming *in, const char *images, json_t *stats, fm_error *err)
{
	_cleanup_free_ char *pages = fm_xstrdup(in->pages_dir);
	_cleanup_free_ char *plink = fm_xasprintf("%s/parent", pages);
	_cleanup_free_ char *ilink = fm_xasprintf("%s/parent", images);
	char target[4096];
	ssize_t tl;
	int r;

	if ((r = pages_close(a, in, stats, err)) < 0)
		return r;
	if ((tl = readlink(plink, target, sizeof(target) - 1)) > 0) {
		/* "../rN" beside the final pages; the images are in recv/images */
		target[tl] = '\0';
		const char *round = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;
		_cleanup_free_ char *rel = fm_xasprintf("../../pages/%s", round);
		if (symlink(rel, ilink) < 0)
			return fm_error_set(err, -errno, "cannot link the images to the pre-copied pages: %m");
	}
	_cleanup_close_ int sfd = open(pages, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int dfd = open(images, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = sfd >= 0 ? fdopendir(dup(sfd)) : NULL;
	struct dirent *de;
	unsigned moved = 0;
	if (!d || dfd < 0) {
		if (d)
			closedir(d);
		return fm_error_set(err, -EIO, "cannot open the received pages in %s", pages);
	}
	while ((de = readdir(d))) {
		/* only what CRIU's page server writes, and nothing the sender already sent */
		if (de->d_type != DT_REG || (strncmp(de->d_name, "pagemap-", 8) && strncmp(de->d_name, "pages-", 6)))
			continue;
		if (renameat2(sfd, de->d_name, dfd, de->d_name, RENAME_NOREPLACE) < 0) {
			r = fm_error_set(err, -errno, "cannot move %s/%s into the images: %m", pages, de->d_name);
			closedir(d);
			return r;
		}
		moved++;
	}
	closedir(d);
	if (moved == 0)
		return fm_error_set(err, -EIO, "the page server received no memory pages");
	return 0;
}

/* The destination's side of the address, beside the restore: the capture of
 * what clients send, the port up, a gratuitous ARP. */
typedef struct address_up {
	fm_runtime *rt;
	const char *name, *ip, *mac;
	fm_net_capture *held;
	int r;
	fm_error err;
} address_up;

static void *address_up_run(void *opaque)
{
	address_up *u = opaque;
	u->err = (fm_error)FM_ERROR_INIT;
	if ((u->r = fm_net_capture_start(u->rt, u->name, &u->held, &u->err)) < 0 ||
	    (u->r = fm_net_port_set(u->rt, u->name, true, &u->err)) < 0 ||
	    (u->r = fm_net_announce(u->rt, u->name, u->ip, u->mac, &u->err)) < 0) {
		fm_net_capture_stop(u->held, NULL, NULL, NULL);
		u->held = NULL;
	}
	return NULL;
}

/* Its capture (NULL: none, or it failed: then err says why). */
static fm_net_capture *address_up_join(address_up *u, pthread_t *thread, fm_error *err)
{
	if (!u->ip)
		return NULL;
	if (thread)
		pthread_join(*thread, NULL);
	if (u->r < 0 && err)
		fm_error_move(err, &u->err);
	fm_error_clear(&u->err);
	if (u->r < 0 || !err) {
		fm_net_capture_stop(u->held, NULL, NULL, NULL);
		return NULL;
	}
	return u->held;
}

/* What follows the restore once the restored tasks run: the address's part
 * joined (the hold stays if it failed), the hold lifted, what clients sent
 * meanwhile replayed, the address announced again, the page prefetch let go.
 * At CRIU's post-resume (fm_restore_resumed), or after the restore. */
typedef struct {
	fm_incoming *in;
	fm_runtime *rt;
	address_up *up;
	pthread_t *up_thread;
	fm_net_nft_ready *unhold;  /* consumed when the hold lifts */
	bool done;
	int r;                     /* < 0: the address's part failed (err) */
	fm_error err;
	unsigned replayed;
	int64_t t_start, t_end;
	int64_t pages_in_us;       /* a held restore: its wait for the memory */
} tasks_running;

static void tasks_running_run(void *opaque)
{
	tasks_running *t = opaque;
	if (t->done)
		return;
	t->done = true;
	t->t_start = fm_now_mono_us();
	fm_net_capture *held = address_up_join(t->up, t->up_thread, &t->err);
	if (t->up->ip && t->up->r < 0) {
		t->r = t->up->r;
		t->t_end = fm_now_mono_us();
		return;
	}
	t->in->restored_us = t->t_start;
	fm_prefetch_release(t->in->prefetch);
	if (t->in->spec.net_ip) {
		/* the sockets are out of repair: let clients in, and hand over what
		 * they sent meanwhile, acknowledged at once instead of retransmitted
		 * after a back-off */
		unsigned char *frames = NULL;
		size_t flen = 0;
		unsigned count = 0;
		fm_net_hold_with(t->unhold, t->rt, t->in->spec.name, false, false, NULL);
		t->unhold = NULL;
		fm_net_capture_stop(held, &frames, &flen, &count);
		fm_net_inject(t->rt, t->in->spec.name, frames, flen, &t->replayed, NULL);
		free(frames);
		/* again: the first announcement went out as the port came up */
		fm_net_announce(t->rt, t->in->spec.name, t->in->spec.net_ip, t->in->spec.net_mac, NULL);
	}
	t->t_end = fm_now_mono_us();
}

/* A held restore (COLD): at CRIU's pre-resume, with the tasks restored and
 * stopped, the memory streams into them (no fault can wait behind it: the
 * window is the largest); they go on once every page is here.  An abort or
 * a failed transfer fails the restore before they ever ran. */
static int pages_in_run(void *opaque, fm_error *err)
{
	tasks_running *t = opaque;
	fm_prefetch *p = t->in->prefetch;
	int64_t t0 = fm_now_mono_us();
	fm_prefetch_release_paused(p);
	struct pollfd fds[2] = { { fm_prefetch_here_fd(p), POLLIN, 0 }, { t->in->abort_fd, POLLIN, 0 } };
	while (poll(fds, 2, -1) < 0 && errno == EINTR)
		;
	if (fds[1].revents)
		return fm_error_set(err, -ECANCELED, "the migration was aborted while the memory arrived (the "
				    "restored copy never ran)");
	fm_prefetch_stats st;
	fm_error pe = FM_ERROR_INIT;
	int r = fm_prefetch_failed(p, &pe);
	fm_prefetch_get_stats(p, &st);
	if (r == 0 && st.lazy_bytes > 0 && st.all_here_ms == 0)
		r = fm_error_set(&pe, -EIO, "page prefetcher: stopped before every page arrived");
	if (r < 0) {
		fm_error_move(err, &pe);
		fm_error_prefix(err, "the memory transfer failed (the restored copy never ran)");
		return r;
	}
	t->pages_in_us = fm_now_mono_us() - t0;
	return 0;
}

static int dst_restore_locked(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	fm_incoming *in;
	int64_t t0, t_in = fm_now_mono_us(), t_recv, t_lazy, t_net;
	int lazy_ready = -1; /* criu lazy-pages started, its status byte not yet read */
	int r;

	if ((r = incoming_get(a, mid, &in, err)) < 0)
		return r;

	/* The receiver ends by itself: on END + ACK, on an error, or when the data
	 * channel has been silent for io_timeout_ms. */
	if (in->thread_started) {
		pthread_mutex_lock(&a->lock);
		in->claimed = true;
		pthread_cond_signal(&in->claim_cv);
		pthread_mutex_unlock(&a->lock);
		pthread_join(in->thread, NULL);
		in->thread_started = false;
	}
	t_recv = fm_now_mono_us();
	if (fm_journal_query_int(a->journal, 0, "SELECT COUNT(*) FROM incoming WHERE mid = ? AND state = 'RESTORED'",
				 "s", mid) > 0) {
		/* repeated by a controller that lost the reply */
		*out = json_pack("{s:f, s:I}", "restore_ms", 0.0, "received_payload_bytes",
				 (json_int_t)in->stats.payload_bytes);
		return 0;
	}
	if (in->recv_status < 0) {
		fm_error e = FM_ERROR_INIT;
		fm_error_set(&e, in->recv_status, "%s", in->recv_err.msg);
		fm_error_prefix(&e, "receiving the container state failed");
		fm_error_move(err, &e);
		return in->recv_status;
	}

	_cleanup_free_ char *cdir = fm_rt_container_dir(a->rt, in->spec.name);
	_cleanup_free_ char *upper = fm_xasprintf("%s/upper", cdir);
	_cleanup_free_ char *rupper = fm_xasprintf("%s/recv/upper", in->staging);
	_cleanup_free_ char *images = fm_xasprintf("%s/recv/images", in->staging);
	_cleanup_free_ char *work = fm_xasprintf("%s/work", in->staging);
	json_auto_t *pstats = json_object();
	struct stat st;

	if ((r = fm_sync_check_received(in->staging, err)) < 0)
		return r;
	/* The source's dump links its images to its own pre-copy rounds; that link
	 * means nothing here, and a peer's link is not to be followed anyway: only
	 * ours, to the pages this host received, may stand there. */
	_cleanup_free_ char *peer_link = fm_xasprintf("%s/parent", images);
	if (unlink(peer_link) < 0 && errno != ENOENT)
		return fm_error_set(err, -errno, "cannot remove %s: %m", peer_link);
	if (in->page_server && (r = collect_pages(a, in, images, pstats, err)) < 0)
		return r;
	if (lstat(rupper, &st) == 0) {
		fm_rm_rf(upper);
		if (rename(rupper, upper) < 0)
			return fm_error_set(err, -errno, "cannot move the received layer into place: %m");
	}
	if ((r = fm_rt_rootfs_mount(a->rt, in->spec.name, in->spec.digest, err)) < 0)
		return r;
	t0 = fm_now_mono_us();
	json_t *ps = json_object_get(req, "page_server");
	if (json_is_null(ps))
		ps = NULL;
	/* HYBRID switched to post-copy: the pages of the pre-copy rounds are here */
	json_int_t parent_round = json_integer_value(json_object_get(req, "parent_round"));
	_cleanup_free_ char *plink = fm_xasprintf("%s/parent", images);
	struct stat lst;
	if (parent_round > 0 && parent_round <= 99 && lstat(plink, &lst) < 0) {
		_cleanup_free_ char *target = fm_xasprintf("../../pages/r%d", (int)parent_round);
		if (symlink(target, plink) < 0)
			return fm_error_set(err, -errno, "cannot link the images to the pre-copied pages: %m");
	}
	const char *ps_host = json_string_value(json_object_get(ps, "host"));
	int ps_port = (int)json_integer_value(json_object_get(ps, "port"));
	uint8_t ps_token[FM_XFER_TOKEN_LEN];
	if (ps && (!ps_host || ps_port <= 0 || ps_port > 65535 ||
		   parse_token(json_string_value(json_object_get(ps, "token")), ps_token) < 0))
		return fm_error_set(err, -EINVAL, "page_server needs host, port and token");
	/* the restore's work directory: its lazy-pages.socket is ours (the
	 * prefetcher's, or the gate's in front of criu lazy-pages) */
	_cleanup_free_ char *rwork = fm_xasprintf("%s/restore", work);
	fm_lazy_gate *gate = NULL;
	if (ps) {
		/* POST_COPY: the pages come through our relay from the source's page server */
		fm_relay_opts ro;
		relay_opts_from(a, req, &ro);
		fm_prefetch_free(in->prefetch);
		in->prefetch = NULL;
		fm_relay_free(in->relay);
		in->relay = NULL;
		if ((r = fm_relay_egress(ps_host, ps_port, ps_token, &ro, &in->relay, err)) < 0)
			return r;
		if ((r = fm_mkdir_p(rwork, 0700)) < 0)
			return fm_error_set(err, r, "cannot create %s: %s", rwork, strerror(-r));
		int lazy_port = fm_relay_port(in->relay);
		if (!json_is_false(json_object_get(req, "prefetch"))) {
			/* we serve the restored processes' page faults; pages flow
			 * in the background once the restore is done (fm_prefetch_release) */
			fm_error pe = FM_ERROR_INIT;
			if (fm_prefetch_start(images, rwork, "127.0.0.1", lazy_port, a->io_timeout_ms, &in->prefetch, &pe) < 0)
				fm_warn(FM_C_DELTA_TRANSFER, "migration %s: no page prefetch (criu lazy-pages fetches on its "
					"own): %s", mid, pe.msg);
			fm_error_clear(&pe);
		}
		if (!in->prefetch &&
		    (r = fm_ckpt_lazy_pages_start(a->rt, images, work, "127.0.0.1", lazy_port, &in->lazy, &lazy_ready,
						  err)) < 0)
			return r;
	}
	/* the restore starts without waiting for lazy-pages' start: the gate
	 * holds its connection to lazy-pages until lazy-pages listens */
	if (lazy_ready >= 0) {
		fm_error ge = FM_ERROR_INIT;
		if (fm_lazy_gate_start(rwork, work, lazy_ready, FM_READY_TIMEOUT_MS, &gate, &ge) == 0)
			lazy_ready = -1;
		else
			fm_warn(FM_C_STATE_RESTORATION, "migration %s: the restore waits for criu lazy-pages' start: %s",
				mid, ge.msg);
		fm_error_clear(&ge);
	}
	int64_t t_spawned = fm_now_mono_us();
	/* The address lives here from now on: announce it while the restore runs,
	 * so that clients' segments come here; the hold (since prepare) keeps
	 * them from the sockets in repair, the capture keeps them for later.  On
	 * a thread of its own, beside the restore: joined before the hold lifts. */
	address_up up = { .rt = a->rt, .name = in->spec.name, .ip = in->spec.net_ip, .mac = in->spec.net_mac };
	pthread_t up_thread;
	bool up_started = in->spec.net_ip && pthread_create(&up_thread, NULL, address_up_run, &up) == 0;
	if (in->spec.net_ip && !up_started)
		address_up_run(&up);
	t_net = fm_now_mono_us();
	if (lazy_ready >= 0 && (r = fm_ckpt_ready_wait(&in->lazy, lazy_ready, FM_READY_TIMEOUT_MS, work,
						       "lazy-pages.log", "criu lazy-pages", err)) < 0) {
		address_up_join(&up, up_started ? &up_thread : NULL, NULL);
		fm_lazy_gate_free(gate);
		return r;
	}
	t_lazy = fm_now_mono_us();
	/* runc started at the freeze (dst_restore_start_locked) is waiting for
	 * exactly this restore, unless the page handler changed its mind */
	const char *rdir = gate || in->prefetch ? rwork : work;
	fm_tcp_mode tcp = tcp_mode_of(req, in->spec.net_ip != NULL);
	bool hold = ps && json_is_true(json_object_get(req, "hold"));
	if (hold && !in->prefetch) {
		address_up_join(&up, up_started ? &up_thread : NULL, NULL);
		fm_lazy_gate_free(gate);
		return fm_error_set(err, -ENOTSUP, "a held restore needs the page prefetcher (not criu lazy-pages)");
	}
	fm_restore_mode mode = !ps ? FM_RESTORE_EAGER : hold ? FM_RESTORE_HELD : FM_RESTORE_LAZY;
	fm_restore_run *early = incoming_take_restore(in, false);
	if (early && !fm_restore_matches(early, rdir, mode, tcp)) {
		fm_restore_cancel(early);
		early = NULL;
	}
	json_object_set_new(pstats, "restore_started_early", json_boolean(early != NULL));
	/* the hold's release: made ready with runc's early start, else now, while
	 * CRIU restores */
	fm_net_nft_ready *unhold = incoming_take_unhold(in);
	if (!unhold && in->spec.net_ip)
		unhold = fm_net_nft_ready_new(a->rt, in->spec.name);
	tasks_running tr = { .in = in, .rt = a->rt, .up = &up, .up_thread = up_started ? &up_thread : NULL,
			     .unhold = unhold, .err = FM_ERROR_INIT };
	/* with criu lazy-pages behind the gate, after the gate's end as before */
	/* an abort gives the restore up at once, as does a page stream that broke
	 * (CRIU may wait for a page that will not come) */
	fm_restore_resumed resumed = { tasks_running_run, &tr, hold ? pages_in_run : NULL,
				       { in->abort_fd, in->prefetch ? fm_prefetch_fail_fd(in->prefetch) : -1 } };
	fm_restore_resumed *rsm = gate ? NULL : &resumed;
	r = early ? fm_restore_finish(early, images, rsm, err) : fm_restore(a->rt, in->spec.name, images, rdir, mode, tcp, rsm, err);
	bool ran_early = tr.done;
	if (r == 0 && gate && (r = fm_lazy_gate_finish(gate, err)) < 0) {
		/* restored, but nobody serves its page faults */
		fm_error_prefix(err, "criu lazy-pages");
		fm_ckpt_kill_running(&in->lazy, work, "lazy-pages.log", err);
	}
	fm_lazy_gate_free(gate);
	if (r == 0)
		tasks_running_run(&tr);
	else if (!tr.done)
		address_up_join(&up, up_started ? &up_thread : NULL, NULL);
	if (r == 0 && tr.r < 0) {
		r = tr.r;
		fm_error_move(err, &tr.err);
	}
	fm_error_clear(&tr.err);
	if (r < 0) {
		fm_net_nft_ready_free(tr.unhold);
		fm_rt_runc_destroy(a->rt, in->spec.name, NULL);
		fm_rt_rootfs_umount(a->rt, in->spec.name);
		return r;
	}
	int64_t restore_us = in->restored_us - t0;
	fm_rt_record(a->rt, &in->spec, mid, false);
	fm_journal_exec(a->journal, "UPDATE incoming SET state = 'RESTORED' WHERE mid = ?", "s", mid);
	*out = json_incref(pstats);
	json_object_set_new(*out, "restore_ms", json_real((double)restore_us / 1000.0));
	/* where the destination's part of the downtime went (the migration log's
	 * downtime breakdown) */
	int64_t t_end = fm_now_mono_us();
	/* the container ran, reachable, from tr.t_end on when CRIU's post-resume
	 * came before runc's exit: what follows (runc's end, the journal) is
	 * not downtime, and the controller takes it off its own count
	 * (after_resume_ms) */
	int64_t t_down = ran_early ? tr.t_end : t_end;
	json_object_set_new(*out, "phases", json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
		"wait_receive_ms", (double)(t_recv - t_in) / 1000.0, "prepare_ms", (double)(t0 - t_recv) / 1000.0,
		"page_handler_ms", (double)(t_spawned - t0 + t_lazy - t_net) / 1000.0,
		"network_ms", (double)(t_net - t_spawned + tr.t_end - tr.t_start) / 1000.0,
		"criu_restore_ms", (double)(in->restored_us - t_lazy - tr.pages_in_us) / 1000.0,
		"memory_in_ms", (double)tr.pages_in_us / 1000.0, "agent_ms", (double)(t_down - t_in) / 1000.0,
		"after_resume_ms", (double)(t_end - t_down) / 1000.0));
	json_object_set_new(*out, "received_payload_bytes", json_integer((json_int_t)in->stats.payload_bytes));
	json_object_set_new(*out, "received_wire_bytes", json_integer((json_int_t)in->stats.wire_bytes));
	json_object_set_new(*out, "entries", json_integer((int)in->stats.entries));
	if (in->spec.net_ip)
		json_object_set_new(*out, "replayed_segments", json_integer(tr.replayed));
	return 0;
}

int fm_sync_dst_verify(fm_agent *a, const char *mid, json_t *req, fm_error *err)
{
	const char *name = json_string_value(json_object_get(req, "container"));
	json_t *health = json_object_get(req, "health_cmd");
	char status[32];
	int r;

	if ((r = check_mid_container(mid, name, err)) < 0)
		return r;
	pid_t pid = 0;
	json_int_t settle = json_integer_value(json_object_get(req, "settle_ms"));
	if (settle <= 0 || settle > 60000)
		settle = FM_VERIFY_SETTLE_MS;
	if (fm_rt_status(a->rt, name, status, sizeof(status), &pid) < 0)
		return fm_error_set(err, -ENOENT, "container %s does not exist on %s after restore", name, a->rt->host);
	if (strcmp(status, "running") != 0)
		return fm_error_set(err, -EIO, "container %s is %s on %s after restore, not running", name, status,
				    a->rt->host);
	/* a process that crashes on its first steps after restore is caught here: its
	 * pidfd becomes readable if it exits within the settle time, counted from the
	 * end of the restore */
	pthread_mutex_lock(&a->lock);
	fm_incoming *in = incoming_find(a, mid);
	int64_t since_ms = in && in->restored_us ? (fm_now_mono_us() - in->restored_us) / 1000 : 0;
	pthread_mutex_unlock(&a->lock);
	int wait_ms = since_ms >= settle ? 0 : (int)(settle - since_ms);
	_cleanup_close_ int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	struct pollfd p = { pfd, POLLIN, 0 };
	if (pfd < 0 || poll(&p, 1, wait_ms) > 0)
		return fm_error_set(err, -EIO, "container %s exited on %s within %d ms after restore: not running",
				    name, a->rt->host, (int)settle);
	if (json_is_array(health) && json_array_size(health) > 0) {
		json_int_t t = json_integer_value(json_object_get(req, "health_timeout_ms"));
		if ((r = fm_rt_exec(a->rt, name, health, t > 0 ? (int)t : 10000, err)) < 0) {
			fm_error_prefix(err, "health command failed in %s on %s", name, a->rt->host);
			return r;
		}
	}
	/* the received layer on disk before the source deletes its copy (the
	 * receiver flushed nothing: not during the freeze) */
	_cleanup_free_ char *cdir = fm_rt_container_dir(a->rt, name);
	_cleanup_free_ char *upper = fm_xasprintf("%s/upper", cdir);
	if ((r = fm_fsync_tree(upper)) < 0 && r != -ENOENT)
		return fm_error_set(err, r, "cannot flush the file system layer of %s to disk on %s: %s", name,
				    a->rt->host, strerror(-r));
	return 0;
}

/* The source freezes now: start runc restore, which waits for the images in
 * fm-criu-shim's gate, so that its own start-up is not part of the downtime.
 * Request: "lazy" (POST_COPY), "tcp_close", as the restore's.  Best effort:
 * without it the restore starts runc itself. */
static int dst_restore_start_locked(fm_agent *a, const char *mid, json_t *req, fm_error *err)
{
	fm_incoming *in;
	int r;

	if ((r = incoming_get(a, mid, &in, err)) < 0)
		return r;
	if (fm_journal_query_int(a->journal, 0, "SELECT COUNT(*) FROM incoming WHERE mid = ? AND state = 'RESTORED'",
				 "s", mid) > 0)
		return 0;
	bool lazy = json_is_true(json_object_get(req, "lazy"));
	fm_restore_mode mode = !lazy ? FM_RESTORE_EAGER : json_is_true(json_object_get(req, "hold")) ? FM_RESTORE_HELD
											      : FM_RESTORE_LAZY;
	_cleanup_free_ char *work = lazy ? fm_xasprintf("%s/work/restore", in->staging) : fm_xasprintf("%s/work", in->staging);
	if ((r = fm_mkdir_p(work, 0700)) < 0)
		return fm_error_set(err, r, "cannot create %s: %s", work, strerror(-r));
	/* one runc per container: an earlier one (asked again) goes first */
	fm_restore_run *run;
	fm_restore_cancel(incoming_take_restore(in, false));
	if ((r = fm_restore_start(a->rt, in->spec.name, work, mode, tcp_mode_of(req, in->spec.net_ip != NULL), &run,
				  err)) < 0)
		return r;
	/* the hold's release too: its socket opened in the container's
	 * namespace now, not beside CRIU's restore */
	fm_net_nft_ready *unhold = in->spec.net_ip ? fm_net_nft_ready_new(a->rt, in->spec.name) : NULL;
	/* the receiver gives up by itself (and cancels it) while it holds the lock */
	pthread_mutex_lock(&a->lock);
	bool failed = in->recv_failed;
	if (!failed) {
		in->restore_run = run;
		fm_net_nft_ready *old = in->unhold;
		in->unhold = unhold;
		unhold = old;
	}
	pthread_mutex_unlock(&a->lock);
	fm_net_nft_ready_free(unhold);   /* NULL, or the one it replaced, or unused */
	if (failed) {
		fm_restore_cancel(run);
		return fm_error_set(err, -ECANCELED, "migration %s: receiving its state failed on %s", mid, a->rt->host);
	}
	return 0;
}

static int dst_commit_locked(fm_agent *a, const char *mid, fm_error *err)
{
	fm_incoming *in;
	int r;

	if ((r = check_mid(mid, err)) < 0)
		return r;
	/* the container now owns what the reservation held */
	if (fm_journal_begin(a->journal) < 0)
		return fm_error_set(err, -EIO, "journal busy");
	fm_journal_exec(a->journal, "UPDATE containers SET committed = 1 WHERE migration = ?", "s", mid);
	fm_journal_exec(a->journal, "DELETE FROM reservations WHERE mid = ?", "s", mid);
	fm_journal_exec(a->journal, "DELETE FROM incoming WHERE mid = ?", "s", mid);
	if (fm_journal_commit(a->journal) < 0)
		return fm_error_set(err, -EIO, "cannot commit migration %s in the journal", mid);
	in = incoming_take(a, mid);
	staging_remove(a, mid);
	if (in)
		incoming_free(in);
	return 0;
}

static int dst_abort_locked(fm_agent *a, const char *mid, fm_error *err)
{
	fm_incoming *in;
	int r;

	if ((r = check_mid(mid, err)) < 0)
		return r;
	in = incoming_take(a, mid);
	/* a copy restored with pages still in flight dies while its faults
	 * wait: stopping the prefetcher closes their userfaultfds, after which
	 * a missing page would read as zeroes */
	if (in && in->prefetch && in->restored_us > 0)
		fm_rt_runc_destroy(a->rt, in->spec.name, NULL);
	if (in)
		incoming_free(in); /* cancels and joins the receiver */
	if ((r = discard_incoming(a, mid, err)) < 0)
		return r;
	fm_journal_exec(a->journal, "INSERT OR REPLACE INTO incoming(mid, container, state, at_ms) VALUES(?, '', 'ABORTED', ?)",
			"si", mid, fm_now_wall_ms());
	return 0;
}

/* A pre-copy round's name: "r1".."r99". */
static bool round_name(json_t *v, char out[8])
{
	json_int_t n = json_integer_value(v);
	if (!json_is_integer(v) || n < 1 || n > 99)
		return false;
	snprintf(out, 8, "r%d", (int)n);
	return true;
}

static int dst_pages_open_locked(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	char name[8], parent[8];
	json_t *pr = json_object_get(req, "parent_round");
	fm_incoming *in;
	int r;

	if ((r = check_mid(mid, err)) < 0)
		return r;
	bool final = json_is_true(json_object_get(req, "final"));
	if ((!final && !round_name(json_object_get(req, "round"), name)) || (pr && !round_name(pr, parent)))
		return fm_error_set(err, -EINVAL, "pages_open needs \"round\" 1..99 or \"final\": true, and an "
				    "optional \"parent_round\" 1..99");
	if ((r = incoming_get(a, mid, &in, err)) < 0)
		return r;
	if ((r = pages_open(a, in, final ? "final" : name, pr ? parent : NULL, req, err)) < 0)
		return r;
	*out = json_pack("{s:s, s:i}", "data_host", a->data_host, "page_relay_port", fm_relay_port(in->relay));
	return 0;
}

static int dst_pages_close_locked(fm_agent *a, const char *mid, json_t **out, fm_error *err)
{
	fm_incoming *in;
	int r;

	if ((r = incoming_get(a, mid, &in, err)) < 0)
		return r;
	*out = json_object();
	return pages_close(a, in, *out, err);
}

static int dst_inject_locked(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	const char *b64 = json_string_value(json_object_get(req, "frames"));
	unsigned char *frames = NULL;
	size_t len = 0;
	unsigned sent = 0;
	fm_incoming *in;
	int r;

	if ((r = incoming_get(a, mid, &in, err)) < 0)
		return r;
	if (!in->spec.net_ip)
		return fm_error_set(err, -ENOENT, "incoming migration %s on %s has no network", mid, a->rt->host);
	if (!b64 || fm_base64_decode(b64, &frames, &len) < 0)
		return fm_error_set(err, -EINVAL, "\"frames\" must be base64 frame records");
	r = fm_net_inject(a->rt, in->spec.name, frames, len, &sent, err);
	free(frames);
	if (r < 0)
		return r;
	*out = json_pack("{s:i}", "replayed_segments", sent);
	return 0;
}

json_t *fm_sync_dst_status(fm_agent *a, const char *mid)
{
	json_t *row = fm_journal_query_one(a->journal, "SELECT * FROM incoming WHERE mid = ?", "s", mid);
	fm_incoming *in;
	if (!row)
		return NULL;
	pthread_mutex_lock(&a->lock);
	in = incoming_find(a, mid);
	if (in)
		json_object_set_new(row, "received_payload_bytes", json_integer((json_int_t)in->stats.payload_bytes));
	pthread_mutex_unlock(&a->lock);
	return row;
}

/* Waits (bounded) for CRIU dumps and runc restores of a previous run of this
 * daemon that are still working: touching a container while CRIU works on it
 * would corrupt it.  They are recognised by a path below our state directory
 * on their command line (runc's --root, CRIU's --root and -D). */
static void wait_for_orphaned_criu(fm_agent *a)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	size_t statelen = strlen(a->rt->state_dir);

	if (!d)
		return;
	while ((de = readdir(d))) {
		char path[64], buf[8192];
		pid_t pid = (pid_t)atoi(de->d_name);
		if (pid <= 0 || pid == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (n <= 0)
			continue;
		buf[n] = '\0';
		bool ours = false, busy = false, dump = false, lazy = false;
		const char *server = NULL;
		for (char *p = buf; p < buf + n; p += strlen(p) + 1) {
			if (!strncmp(p, a->rt->state_dir, statelen) && p[statelen] == '/')
				ours = true;
			if (!strcmp(p, "dump") || !strcmp(p, "pre-dump") || !strcmp(p, "restore"))
				busy = true;
			dump = dump || !strcmp(p, "dump");
			lazy = lazy || !strcmp(p, "--lazy-pages");
			if (!strcmp(p, "page-server"))
				server = "page server";
			else if (!strcmp(p, "lazy-pages"))
				server = "lazy-pages daemon";
		}
		/* a lazy dump ends as a page server, for our relay, which went
		 * with the previous run (the migration is rolled back: the
		 * source runs again) */
		if (dump && lazy)
			server = "lazy dump's page server";
		if (ours && server) {
			/* a page server or lazy-pages daemon of ours waits for a peer
			 * that went with the previous run: it would wait for ever */
			fm_info(FM_C_STATE_SYNC, "Stopping CRIU's %s (pid %d) left by the previous run", server, (int)pid);
			pid_t pg = getpgid(pid);
			kill(pg == pid ? -pg : pid, SIGKILL);
			continue;
		}
		if (!ours || !busy)
			continue;
		fm_info(FM_C_STATE_SYNC, "Waiting for CRIU or runc (pid %d) left working by the previous run", (int)pid);
		_cleanup_close_ int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
		struct pollfd p = { pfd, POLLIN, 0 };
		/* as long as our own timeout would have let it run; then it is hung: stop
		 * it, so that what we clean up next cannot come back to life */
		if (pfd >= 0 && poll(&p, 1, FM_CRIU_TIMEOUT_MS) == 0) {
			fm_warn(FM_C_STATE_SYNC, "CRIU or runc (pid %d) still running after %d s: killing it", (int)pid,
				FM_CRIU_TIMEOUT_MS / 1000);
			pid_t pg = getpgid(pid);
			kill(pg == pid ? -pg : pid, SIGKILL);
			poll(&p, 1, 10000);
		}
	}
	closedir(d);
}

void fm_agent_recover(fm_agent *a)
{
	json_t *rows = NULL, *row;
	size_t i;

	wait_for_orphaned_criu(a);
	if (!a->forwarder)
		a->forwarder = fm_forwarder_new(a->rt, a->journal);
	fm_journal_exec(a->journal, "DELETE FROM incoming WHERE state = 'ABORTED' AND at_ms < ?", "i",
			fm_now_wall_ms() - 7 * 24 * 3600 * 1000LL);

	/* A receive that was cut by our restart cannot be resumed (the sender's
	 * connection is gone): discard it.  A restored container waits for its
	 * controller's verdict (commit or abort). */
	if (fm_journal_query(a->journal, &rows, "SELECT mid FROM incoming WHERE state = 'PREPARED'", NULL) < 0)
		return;
	json_array_foreach(rows, i, row) {
		const char *mid = json_string_value(json_object_get(row, "mid"));
		fm_info(FM_C_STATE_SYNC, "Discarding incoming migration %s interrupted by a restart", mid);
		fm_sync_dst_abort(a, mid, NULL);
	}
	json_decref(rows);
}

/* ------------------------------------------------------------------ source */

static fm_outgoing *outgoing_get(fm_agent *a, const char *mid, bool create)
{
	fm_outgoing *o;
	for (o = a->outgoing; o; o = o->next)
		if (!strcmp(o->mid, mid))
			return o;
	if (!create)
		return NULL;
	o = fm_xcalloc(1, sizeof(*o));
	snprintf(o->mid, sizeof(o->mid), "%s", mid);
	o->next = a->outgoing;
	a->outgoing = o;
	return o;
}

static void set_phase(fm_agent *a, const char *mid, const char *phase)
{
	pthread_mutex_lock(&a->lock);
	snprintf(outgoing_get(a, mid, true)->phase, sizeof(((fm_outgoing *)0)->phase), "%s", phase);
	pthread_mutex_unlock(&a->lock);
}

static void send_progress(void *opaque, const fm_xfer_stats *s)
{
	fm_outgoing *o = opaque;
	o->stats = *s;
}

/* Does the container have its own address (runtime/net.h)? */
static bool has_network(fm_agent *a, const char *name)
{
	json_auto_t *c = fm_rt_get(a->rt, name);
	return json_object_get(c, "network") != NULL;
}

static bool holds_claim(fm_agent *a, const char *mid, const char *container)
{
	return fm_journal_query_int(a->journal, 0, "SELECT COUNT(*) FROM outgoing WHERE mid = ? AND container = ?",
				    "ss", mid, container) > 0;
}

/* A dump whose pages stream through an egress relay to the destination's page
 * relay {host, port} (diskless COLD, pre-copy rounds, PRE_COPY's last dump). */
static int stream_dump(fm_agent *a, const char *name, const char *images, const char *work, json_t *page_relay,
		       const uint8_t *token, const fm_relay_opts *ro, fm_dump_opts *d, json_t *stats, fm_error *err)
{
	const char *rh = json_string_value(json_object_get(page_relay, "host"));
	int rp = (int)json_integer_value(json_object_get(page_relay, "port"));
	fm_error e = FM_ERROR_INIT;
	fm_relay *relay = NULL;
	int r, sk;

	if (!rh || rp <= 0 || rp > 65535)
		return fm_error_set(err, -EINVAL, "page_relay needs host and port");
	if ((r = fm_relay_egress_pair(rh, rp, token, ro, &sk, &relay, err)) < 0)
		return r;
	d->page_server_sk = sk;
	r = fm_ckpt_dump(a->rt, name, images, work, d, err);
	close(sk); /* CRIU's end: the relay sees the stream end once CRIU's copy closes too */
	d->page_server_sk = -1;
	if (fm_relay_failed(relay, &e) < 0) {
		/* the relay's reason is the root cause of CRIU's "page server" errors */
		fm_error_clear(err);
		fm_error_move(err, &e);
		fm_error_prefix(err, "streaming the memory of %s to %s:%d failed", name, rh, rp);
		r = err->code;
	} else if (r == 0 && (r = fm_relay_wait(relay, a->io_timeout_ms, &e)) < 0) {
		fm_error_move(err, &e);
	}
	fm_error_clear(&e);
	relay_stats_json(relay, stats, "pages_");
	fm_relay_free(relay);
	return r;
}

/* Claims the container for migration mid (the outgoing row); -EBUSY if another
 * migration has it. */
static int claim(fm_agent *a, const char *mid, const char *name, const char *controller, const char *state,
		 bool *ours, fm_error *err)
{
	json_auto_t *row = fm_journal_query_one(a->journal, "SELECT mid FROM outgoing WHERE container = ?", "s", name);
	const char *owner = json_string_value(json_object_get(row, "mid"));
	*ours = owner && !strcmp(owner, mid);
	if (owner && !*ours)
		return fm_error_set(err, -EBUSY, "container %s is already being migrated by %s", name, owner);
	if (state)
		fm_journal_exec(a->journal, "INSERT OR REPLACE INTO outgoing(mid, container, controller, state, at_ms)"
				" VALUES(?, ?, ?, ?, ?)", "ssssi", mid, name, controller, state, fm_now_wall_ms());
	return 0;
}

static int src_predump_locked(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	const char *name = json_string_value(json_object_get(req, "container"));
	json_t *page_relay = json_object_get(req, "page_relay");
	uint8_t token[FM_XFER_TOKEN_LEN];
	char status[32], rname[8], parent[16];
	fm_relay_opts ro;
	bool ours;
	int r;

	if ((r = check_mid(mid, err)) < 0)
		return r;
	if (!name || !fm_name_valid(name) || !round_name(json_object_get(req, "round"), rname) || !page_relay ||
	    parse_token(json_string_value(json_object_get(req, "token")), token) < 0)
		return fm_error_set(err, -EINVAL, "predump request needs container, round 1..99, page_relay and token");
	if (fm_rt_status(a->rt, name, status, sizeof(status), NULL) < 0 || strcmp(status, "running") != 0)
		return fm_error_set(err, -ENOENT, "no running container %s on %s", name, a->rt->host);
	if ((r = claim(a, mid, name, json_string_value(json_object_get(req, "controller")), "PRECOPY", &ours, err)) < 0)
		return r;
	_cleanup_free_ char *staging = staging_dir(a, mid);
	_cleanup_free_ char *dir = fm_xasprintf("%s/rounds/%s", staging, rname);
	_cleanup_free_ char *work = fm_xasprintf("%s/work", staging);
	fm_rm_rf(dir);
	if ((r = fm_mkdir_p(dir, 0700)) < 0 || (r = fm_mkdir_p(work, 0700)) < 0)
		return fm_error_set(err, r, "cannot create %s: %s", dir, strerror(-r));
	json_int_t n = json_integer_value(json_object_get(req, "round"));
	snprintf(parent, sizeof(parent), "../r%d", (int)n - 1);
	fm_dump_opts d = { .pre_dump = true, .parent = n > 1 ? parent : NULL };
	relay_opts_from(a, req, &ro);
	set_phase(a, mid, "pre-copying");
	int64_t t0 = fm_now_mono_us();
	*out = json_object();
	if ((r = stream_dump(a, name, dir, work, page_relay, token, &ro, &d, *out, err)) < 0)
		return r;
	json_object_set_new(*out, "predump_ms", json_real((double)(fm_now_mono_us() - t0) / 1000.0));
	return 0;
}

/* The data channel's options for a transfer of migration mid to the destination. */
static void xfer_opts_from(fm_agent *a, const char *mid, const fm_relay_opts *ro, fm_xfer_opts *o)
{
	*o = (fm_xfer_opts)FM_XFER_OPTS_INIT;
	o->io_timeout_ms = a->io_timeout_ms;
	o->bandwidth_bps = ro->bandwidth_bps;
	o->link_bps = (double)ro->bandwidth_bps;
	o->compress = ro->compress;
	o->progress = send_progress;
	pthread_mutex_lock(&a->lock);
	o->progress_opaque = outgoing_get(a, mid, true);
	pthread_mutex_unlock(&a->lock);
}

/* The fields every request that sends to the destination's data channel
 * carries ({container, data_host, port, token}); the container must be here.
 * status: its runtime status. */
typedef struct send_target {
	const char *name, *host;
	int port;
	uint8_t token[FM_XFER_TOKEN_LEN];
	char status[32];
} send_target;

static int parse_send_target(fm_agent *a, const char *mid, json_t *req, const char *what, send_target *t,
			     fm_error *err)
{
	int r;

	t->name = json_string_value(json_object_get(req, "container"));
	t->host = json_string_value(json_object_get(req, "data_host"));
	t->port = (int)json_integer_value(json_object_get(req, "port"));
	if ((r = check_mid(mid, err)) < 0)
		return r;
	if (!t->name || !fm_name_valid(t->name) || !t->host || t->port <= 0 || t->port > 65535 ||
	    parse_token(json_string_value(json_object_get(req, "token")), t->token) < 0)
		return fm_error_set(err, -EINVAL, "%s request needs container, data_host, port and token", what);
	if (fm_rt_status(a->rt, t->name, t->status, sizeof(t->status), NULL) < 0)
		return fm_error_set(err, -ENOENT, "no container %s on %s", t->name, a->rt->host);
	return 0;
}

/* Rootfs pre-sync: the container's writable layer goes to the destination while
 * the container runs; the checkpoint's transfer then sends only what changed. */
static int src_presync_locked(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	send_target t;
	fm_relay_opts ro;
	fm_xfer_opts opts;
	fm_xfer_stats st = { 0 };
	bool ours;
	int r;

	if ((r = parse_send_target(a, mid, req, "presync", &t, err)) < 0)
		return r;
	const char *name = t.name;
	if ((r = claim(a, mid, name, json_string_value(json_object_get(req, "controller")), "PRESYNC", &ours, err)) < 0)
		return r;
	_cleanup_free_ char *cdir = fm_rt_container_dir(a->rt, name);
	_cleanup_free_ char *upper = fm_xasprintf("%s/upper", cdir);
	fm_xfer_tree trees[] = { { upper, "upper" } };
	fm_xfer_manifest *m = fm_xfer_manifest_new();
	relay_opts_from(a, req, &ro);
	xfer_opts_from(a, mid, &ro, &opts);
	opts.record = m;
	set_phase(a, mid, "pre-syncing rootfs");
	r = fm_xfer_send(t.host, t.port, t.token, trees, ARRAY_SIZE(trees), &opts, &st, err);
	if (r < 0) {
		fm_xfer_manifest_free(m);
		fm_error_prefix(err, "pre-syncing the writable layer of %s to %s:%d failed", name, t.host, t.port);
		return r;
	}
	pthread_mutex_lock(&a->lock);
	fm_outgoing *o = outgoing_get(a, mid, true);
	fm_xfer_manifest_free(o->presync);
	o->presync = m;
	pthread_mutex_unlock(&a->lock);
	*out = json_pack("{s:f, s:I, s:I, s:i, s:I, s:f, s:i}", "presync_ms", (double)st.duration_us / 1000.0,
			 "wire_bytes", (json_int_t)st.wire_bytes, "payload_bytes", (json_int_t)st.payload_bytes,
			 "entries", (int)st.entries, "recorded_files", (json_int_t)fm_xfer_manifest_files(m),
			 "rate_bps", st.rate_bps, "compressed_frames", (int)st.compressed_frames);
	return 0;
}

static struct fm_net_capture *outgoing_take_capture(fm_agent *a, const char *mid)
{
	pthread_mutex_lock(&a->lock);
	fm_outgoing *o = outgoing_get(a, mid, false);
	struct fm_net_capture *c = o ? o->capture : NULL;
	if (o)
		o->capture = NULL;
	pthread_mutex_unlock(&a->lock);
	return c;
}

/* Rollback: the container answers on its address again (and reclaims it from
 * the segment when the destination had announced it). */
static void release_network(fm_agent *a, const char *mid, const char *name, bool announce)
{
	fm_net_capture_stop(outgoing_take_capture(a, mid), NULL, NULL, NULL);
	fm_net_hold(a->rt, name, false, true, NULL);
	json_auto_t *c = fm_rt_get(a->rt, name);
	json_t *net = json_object_get(c, "network");
	if (announce && net)
		fm_net_announce(a->rt, name, json_string_value(json_object_get(net, "ip")),
				json_string_value(json_object_get(net, "mac")), NULL);
}

/* The segments held on the source since the freeze, for the destination to
 * replay; the hold stays until the cleanup deletes this copy. */
static int src_capture_locked(fm_agent *a, const char *mid, json_t **out, fm_error *err)
{
	unsigned char *frames = NULL;
	size_t len = 0;
	unsigned count = 0;
	int r;

	if ((r = check_mid(mid, err)) < 0)
		return r;
	fm_net_capture_stop(outgoing_take_capture(a, mid), &frames, &len, &count);
	/* the destination owns the address now: nothing of this copy may reach the
	 * segment any more, not even an ARP answer that would pull the address back */
	pthread_mutex_lock(&a->lock);
	fm_outgoing *o = outgoing_get(a, mid, false);
	pthread_mutex_unlock(&a->lock);
	json_auto_t *row = fm_journal_query_one(a->journal, "SELECT container FROM outgoing WHERE mid = ?", "s", mid);
	const char *name = json_string_value(json_object_get(row, "container"));
	if (o && name)
		fm_net_port_set(a->rt, name, false, NULL);
	char *b64 = fm_base64_encode(frames ? frames : (const unsigned char *)"", len);
	*out = json_pack("{s:s, s:i}", "frames", b64, "count", count);
	free(b64);
	free(frames);
	return 0;
}

/* Gives back the CPU auto-converge took (frozen or resumed, it needs it again). */
static void unthrottle(fm_agent *a, const char *mid, const char *name)
{
	pthread_mutex_lock(&a->lock);
	fm_outgoing *o = outgoing_get(a, mid, false);
	bool t = o && o->throttled;
	if (o)
		o->throttled = false;
	pthread_mutex_unlock(&a->lock);
	if (t)
		fm_rt_cpu_throttle(a->rt, name, 0, NULL);
}

/* Auto-converge: CPU quota of the container, stepwise, while pre-copy runs. */
static int src_throttle_locked(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	const char *name = json_string_value(json_object_get(req, "container"));
	json_t *pct = json_object_get(req, "cpu_percent");
	int r;

	if ((r = check_mid(mid, err)) < 0)
		return r;
	if (!name || !fm_name_valid(name) || !json_is_integer(pct) || json_integer_value(pct) < 0 ||
	    json_integer_value(pct) > 100)
		return fm_error_set(err, -EINVAL, "throttle request needs container and cpu_percent 0..100");
	if (!holds_claim(a, mid, name))
		return fm_error_set(err, -EPERM, "migration %s does not hold container %s", mid, name);
	if ((r = fm_rt_cpu_throttle(a->rt, name, (int)json_integer_value(pct), err)) < 0)
		return r;
	pthread_mutex_lock(&a->lock);
	outgoing_get(a, mid, true)->throttled = json_integer_value(pct) > 0;
	pthread_mutex_unlock(&a->lock);
	*out = json_pack("{s:I}", "cpu_percent", json_integer_value(pct));
	return 0;
}

/* POST_COPY's page serving, set up while the container still runs: a port
 * and token for CRIU's page server, our relay in front of it, and CRIU itself
 * started, waiting for its configuration (sync/checkpoint.h).  A CRIU that
 * cannot start early starts after the freeze, as before. */
/* What checkpoint_start set up for mid (NULL: nothing), taken out of its record. */
static lazy_source *outgoing_take_early(fm_agent *a, const char *mid)
{
	pthread_mutex_lock(&a->lock);
	fm_outgoing *o = outgoing_get(a, mid, false);
	lazy_source *l = o ? o->early : NULL;
	if (o)
		o->early = NULL;
	pthread_mutex_unlock(&a->lock);
	return l;
}

/* The checkpoint's images and work directories, the images empty (those of
 * pre-copy rounds, staging/rounds, stay: the dump refers to them). */
static int dump_dirs(const char *staging, const char *images, const char *work, fm_error *err)
{
	int r;
	fm_rm_rf(images);
	if ((r = fm_mkdir_p(images, 0700)) < 0 || (r = fm_mkdir_p(work, 0700)) < 0)
		return fm_error_set(err, r, "cannot create %s: %s", staging, strerror(-r));
	return 0;
}

static int lazy_source_start(fm_agent *a, const char *mid, const char *name, const char *images, const char *work,
			     fm_tcp_mode tcp, int parent_round, const fm_relay_opts *ro, lazy_source **out, fm_error *err)
{
	lazy_source *l = fm_xcalloc(1, sizeof(*l));
	char parent[32];
	int r;

	*out = NULL;
	l->tcp = tcp;
	l->parent_round = parent_round;
	snprintf(parent, sizeof(parent), "../rounds/r%d", parent_round);
	if ((l->ps_port = free_port("127.0.0.1")) < 0) {
		r = fm_error_set(err, l->ps_port, "no free local port for the page server");
		goto fail;
	}
	if ((r = fm_random_bytes(l->token, sizeof(l->token))) < 0) {
		fm_error_set(err, r, "getrandom: %s", strerror(-r));
		goto fail;
	}
	if ((r = fm_relay_ingress(a->data_host, l->token, "127.0.0.1", l->ps_port, ro, &l->relay, err)) < 0)
		goto fail;
	fm_error ee = FM_ERROR_INIT;
	if (fm_ckpt_dump_lazy_start(a->rt, name, images, work, "127.0.0.1", l->ps_port, tcp,
				    parent_round ? parent : NULL, &l->criu, &ee) < 0)
		fm_info(FM_C_CHECKPOINTING, "migration %s: CRIU starts after the freeze (%s)", mid, ee.msg);
	fm_error_clear(&ee);
	/* its thread primes a context (~2-4 ms, 15-20 ms when started just
	 * before the freezer, which then competes with it): here it has time */
	if (tcp == FM_TCP_ESTABLISHED)
		l->hold = fm_net_nft_ready_new(a->rt, name);
	*out = l;
	return 0;
fail:
	lazy_source_drop(l);
	return r;
}

/* POST_COPY, before the presync: what the checkpoint will need is set up
 * while the container runs ({container, lazy, parent_round, tcp_close,
 * compress, bandwidth_bps}: as the checkpoint's request).  Best effort: the
 * checkpoint sets up whatever is not there, or not for it. */
static int src_checkpoint_start_locked(fm_agent *a, const char *mid, json_t *req, fm_error *err)
{
	const char *name = json_string_value(json_object_get(req, "container"));
	json_int_t parent_round = json_integer_value(json_object_get(req, "parent_round"));
	char status[32];
	int r;

	if ((r = check_mid_container(mid, name, err)) < 0)
		return r;
	if (parent_round < 0 || parent_round > 99)
		return fm_error_set(err, -EINVAL, "parent_round must be 1..99");
	if (!json_is_true(json_object_get(req, "lazy")))
		return 0;
	if (fm_rt_status(a->rt, name, status, sizeof(status), NULL) < 0 || strcmp(status, "running") != 0)
		return fm_error_set(err, -ESRCH, "container %s does not run on %s", name, a->rt->host);
	lazy_source_drop(outgoing_take_early(a, mid));

	_cleanup_free_ char *staging = staging_dir(a, mid);
	_cleanup_free_ char *images = fm_xasprintf("%s/images", staging);
	_cleanup_free_ char *work = fm_xasprintf("%s/work", staging);
	if ((r = dump_dirs(staging, images, work, err)) < 0)
		return r;
	fm_relay_opts ro;
	relay_opts_from(a, req, &ro);
	lazy_source *l;
	if ((r = lazy_source_start(a, mid, name, images, work, tcp_mode_of(req, has_network(a, name)), (int)parent_round,
				   &ro, &l, err)) < 0)
		return r;
	pthread_mutex_lock(&a->lock);
	outgoing_get(a, mid, true)->early = l;
	pthread_mutex_unlock(&a->lock);
	return 0;
}


static int src_checkpoint_locked(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	send_target t;
	int64_t t0, t1, t2, t3;
	json_auto_t *pstats = json_object();
	int r;

	if ((r = parse_send_target(a, mid, req, "checkpoint", &t, err)) < 0)
		return r;
	const char *name = t.name, *host = t.host, *status = t.status;
	const uint8_t *token = t.token;
	int port = t.port;
	/* one migration at a time per container: the claim is the outgoing row */
	bool ours;
	if ((r = claim(a, mid, name, NULL, NULL, &ours, err)) < 0)
		return r;
	if (!strcmp(status, "paused") && !ours)
		return fm_error_set(err, -EBUSY, "container %s is paused; resume it before migrating it", name);

	_cleanup_free_ char *staging = staging_dir(a, mid);
	_cleanup_free_ char *images = fm_xasprintf("%s/images", staging);
	_cleanup_free_ char *work = fm_xasprintf("%s/work", staging);
	_cleanup_free_ char *cdir = fm_rt_container_dir(a->rt, name);
	_cleanup_free_ char *upper = fm_xasprintf("%s/upper", cdir);
	fm_tcp_mode tcp = tcp_mode_of(req, has_network(a, name));
	bool lazy = json_is_true(json_object_get(req, "lazy"));
	json_t *page_relay = json_object_get(req, "page_relay");
	/* after pre-copy rounds: only what changed since the last one */
	json_int_t parent_round = json_integer_value(json_object_get(req, "parent_round"));
	char parent[32];
	snprintf(parent, sizeof(parent), "../rounds/r%d", (int)parent_round);
	if (parent_round < 0 || parent_round > 99)
		return fm_error_set(err, -EINVAL, "parent_round must be 1..99");
	fm_relay_opts ro;
	relay_opts_from(a, req, &ro);
	/* what checkpoint_start set up, if it is for this dump */
	lazy_source *ls = outgoing_take_early(a, mid);
	if (ls && (!lazy || ls->parent_round != parent_round || ls->tcp != tcp)) {
		lazy_source_drop(ls);
		ls = NULL;
	}
	if (!ls) {
		if ((r = dump_dirs(staging, images, work, err)) < 0)
			return r;
		if (lazy && (r = lazy_source_start(a, mid, name, images, work, tcp, (int)parent_round, &ro, &ls, err)) < 0)
			return r;
	}
	struct fm_cmd *serving = NULL;
	int relay_port = ls ? fm_relay_port(ls->relay) : 0;

	/* From the freeze until the rollback's resume or the cleanup this copy must
	 * not answer for its connections (they will live elsewhere): the hold drops
	 * its TCP both ways.  What clients send meanwhile is captured, for the
	 * destination to replay (runtime/net.h).  The capture starts first, before
	 * the freeze even (its start is no part of the downtime): a segment
	 * dropped by the hold before the capture ran would be lost to both copies
	 * (an ACK of the last data sent before the freeze arrives within a round
	 * trip of it; lost, the restored socket waits out a retransmission
	 * timeout, ~1 s).  What both see is replayed as an old segment, which TCP
	 * ignores. */
	fm_net_nft_ready *hold = NULL;
	if (tcp == FM_TCP_ESTABLISHED) {
		fm_net_capture *cap = NULL;
		if ((r = fm_net_capture_start(a->rt, name, &cap, err)) < 0) {
			lazy_source_drop(ls);
			return r;
		}
		pthread_mutex_lock(&a->lock);
		outgoing_get(a, mid, true)->capture = cap;
		pthread_mutex_unlock(&a->lock);
		hold = ls && ls->hold ? TAKE_PTR(ls->hold) : fm_net_nft_ready_new(a->rt, name);
	}
	/* (the journal's write gives the threads just started time to settle
	 * before the freezer competes with them) */
	fm_journal_exec(a->journal, "INSERT OR REPLACE INTO outgoing(mid, container, controller, state, at_ms)"
			" VALUES(?, ?, ?, 'FREEZING', ?)", "sssi", mid, name,
			json_string_value(json_object_get(req, "controller")), fm_now_wall_ms());
	set_phase(a, mid, "freezing");
	t0 = fm_now_mono_us();
	if (strcmp(status, "paused") != 0 && (r = fm_ckpt_freeze(a->rt, name, err)) < 0) {
		fm_net_nft_ready_free(hold);
		lazy_source_drop(ls);
		if (tcp == FM_TCP_ESTABLISHED)
			release_network(a, mid, name, false);
		return r;
	}
	int64_t t_frozen = fm_now_mono_us();
	if (tcp == FM_TCP_ESTABLISHED && (r = fm_net_hold_with(hold, a->rt, name, true, true, err)) < 0)
		goto thaw;
	unthrottle(a, mid, name);
	t1 = fm_now_mono_us();
	/* the freeze's parts: the freezer, then the hold on its connections */
	json_object_set_new(pstats, "freezer_ms", json_real((double)(t_frozen - t0) / 1000.0));
	json_object_set_new(pstats, "hold_ms", json_real((double)(t1 - t_frozen) / 1000.0));
	set_phase(a, mid, "checkpointing");
	if (lazy) {
		fm_dump_early *e = ls->criu;
		ls->criu = NULL;
		json_object_set_new(pstats, "criu_started_early", json_boolean(e != NULL));
		r = e ? fm_ckpt_dump_lazy_go(e, a->rt, &serving, err)
		      : fm_ckpt_dump_lazy(a->rt, name, images, work, "127.0.0.1", ls->ps_port, tcp,
					  parent_round ? parent : NULL, &serving, err);
		if (r < 0)
			goto thaw;
		pthread_mutex_lock(&a->lock);
		fm_outgoing *o = outgoing_get(a, mid, true);
		o->lazy = serving;
		o->relay = ls->relay;
		ls->relay = NULL;
		pthread_mutex_unlock(&a->lock);
	} else {
		/* diskless COLD and PRE_COPY's last step: the pages stream to the
		 * destination's page server while CRIU dumps; only the other images are
		 * written here */
		fm_dump_opts d = { .tcp = tcp, .parent = parent_round ? parent : NULL };
		if ((r = page_relay ? stream_dump(a, name, images, work, page_relay, token, &ro, &d, pstats, err)
				    : fm_ckpt_dump(a->rt, name, images, work, &d, err)) < 0)
			goto thaw;
	}
	t2 = fm_now_mono_us();

	set_phase(a, mid, "transferring");
	fm_xfer_tree trees[] = { { images, "images" }, { upper, "upper" } };
	fm_xfer_opts opts;
	fm_xfer_stats st = { 0 };
	xfer_opts_from(a, mid, &ro, &opts);
	if (json_real_value(json_object_get(pstats, "pages_link_bps")) > 0)
		opts.link_bps = json_real_value(json_object_get(pstats, "pages_link_bps"));
	if (a->fault_corrupt)
		opts.fault_corrupt_offset = 1000;
	/* after a rootfs pre-sync, files unchanged since go without their bytes */
	pthread_mutex_lock(&a->lock);
	fm_outgoing *og = outgoing_get(a, mid, true);
	fm_xfer_manifest *presynced = og->presync;
	og->presync = NULL;
	pthread_mutex_unlock(&a->lock);
	opts.reuse = presynced;
	r = fm_xfer_send(host, port, token, trees, ARRAY_SIZE(trees), &opts, &st, err);
	fm_xfer_manifest_free(presynced);
	t3 = fm_now_mono_us();
	if (r < 0) {
		fm_error_prefix(err, "sending the state of %s to %s:%d failed", name, host, port);
		goto thaw;
	}
	/* (no journal commit: the record of the freeze is what a restart needs,
	 * and every fsync from here to the restore is downtime) */
	set_phase(a, mid, "sent");
	*out = json_incref(pstats);
	json_object_update_new(*out, json_pack("{s:f, s:f, s:f, s:I, s:I, s:f, s:i}",
			 "freeze_ms", (double)(t1 - t0) / 1000.0, "dump_ms", (double)(t2 - t1) / 1000.0,
			 "transfer_ms", (double)(t3 - t2) / 1000.0, "wire_bytes", (json_int_t)st.wire_bytes,
			 "payload_bytes", (json_int_t)st.payload_bytes, "rate_bps", st.rate_bps,
			 "entries", (int)st.entries));
	json_object_update_new(*out, json_pack("{s:i, s:I, s:i, s:i}", "reused_files", (int)st.reused_files,
					       "reused_bytes", (json_int_t)st.reused_bytes, "compressed_frames",
					       (int)st.compressed_frames, "zstd_level", st.zstd_level));
	if (lazy) {
		char tokhex[2 * FM_XFER_TOKEN_LEN + 1];
		hex(ls->token, sizeof(ls->token), tokhex);
		lazy_source_drop(ls);
		json_object_set_new(*out, "page_server", json_pack("{s:s, s:i, s:s}", "host", a->data_host, "port",
								    relay_port, "token", tokhex));
	}
	return 0;
thaw:
	lazy_source_drop(ls);
	/* nothing restored anywhere yet: let the container run on while the controller
	 * decides (a rollback's resume is then a no-op) */
	if (tcp == FM_TCP_ESTABLISHED)
		release_network(a, mid, name, false);
	fm_rt_resume(a->rt, name, NULL);
	return r;
}

/* Takes the page-serving CRIU dump of a POST_COPY source out of its record. */
static struct fm_cmd *outgoing_take_lazy(fm_agent *a, const char *mid)
{
	struct fm_cmd *c = NULL;
	pthread_mutex_lock(&a->lock);
	fm_outgoing *o = outgoing_get(a, mid, false);
	if (o) {
		c = o->lazy;
		o->lazy = NULL;
	}
	pthread_mutex_unlock(&a->lock);
	return c;
}

static void outgoing_forget(fm_agent *a, const char *mid)
{
	fm_outgoing **pp, *o = NULL;
	pthread_mutex_lock(&a->lock);
	for (pp = &a->outgoing; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->mid, mid)) {
			o = *pp;
			*pp = o->next;
			break;
		}
	pthread_mutex_unlock(&a->lock);
	/* out of the list: its threads are joined and its log line written
	 * without the agent's lock */
	if (o) {
		if (o->relay) {
			fm_relay_stats st;
			fm_relay_get_stats(o->relay, &st);
			char dense[32];
			fm_format_bytes(st.dense_tx, dense, sizeof(dense));
			fm_log(FM_LOG_INFO, FM_C_DELTA_TRANSFER, mid, "Memory pages served: %" PRIu64 " bytes, %" PRIu64
			       " on the wire in %u frames, %u of them compressed (zstd level %d; %s of dense pages at level %d)",
			       st.raw_tx, st.wire_tx, st.frames_tx, st.compressed_frames, st.level, dense,
			       FM_COMPRESS_DENSE_LEVEL);
		}
		fm_relay_free(o->relay);
		fm_net_capture_stop(o->capture, NULL, NULL, NULL);
		fm_xfer_manifest_free(o->presync);
		lazy_source_drop(o->early);
		free(o);
	}
	fm_journal_exec(a->journal, "DELETE FROM outgoing WHERE mid = ?", "s", mid);
	staging_remove(a, mid);
	fm_memory_release();
}

static int src_resume_locked(fm_agent *a, const char *mid, const char *container, fm_error *err)
{
	char status[32];
	int r;

	if ((r = check_mid_container(mid, container, err)) < 0)
		return r;
	lazy_source_drop(outgoing_take_early(a, mid));
	if (!holds_claim(a, mid, container))
		return 0; /* never frozen by this migration (or already resumed) */
	/* POST_COPY: CRIU serves pages with the tasks seized; once the destination is
	 * gone it ends and freezes them again.  Wait for that before resuming. */
	struct fm_cmd *serving = outgoing_take_lazy(a, mid);
	if (serving)
		finish_cmd(serving, 60000, NULL);
	if (fm_rt_status(a->rt, container, status, sizeof(status), NULL) < 0)
		return fm_error_set(err, -ENOENT, "container %s is no longer on %s: nothing to resume", container,
				    a->rt->host);
	/* a forward of the old address (an address-changing move) ends: the
	 * address is the container's again */
	fm_forwarder_drop(a->forwarder, mid, NULL);
	/* the destination may have announced the address already: take it back */
	if (has_network(a, container)) {
		fm_net_port_set(a->rt, container, true, NULL);
		release_network(a, mid, container, true);
	}
	unthrottle(a, mid, container);
	if (!strcmp(status, "paused") && (r = fm_rt_resume(a->rt, container, err)) < 0) {
		fm_error_prefix(err, "cannot resume %s on %s", container, a->rt->host);
		return r;
	}
	outgoing_forget(a, mid);
	return 0;
}

static int src_cleanup_locked(fm_agent *a, const char *mid, const char *container, fm_error *err)
{
	int r;

	if ((r = check_mid_container(mid, container, err)) < 0)
		return r;
	lazy_source_drop(outgoing_take_early(a, mid));
	if (!holds_claim(a, mid, container))
		return 0; /* already cleaned up, or not ours: never delete what another migration brought */
	fm_net_capture_stop(outgoing_take_capture(a, mid), NULL, NULL, NULL);
	/* POST_COPY: every page has arrived, so the page server is ending */
	struct fm_cmd *serving = outgoing_take_lazy(a, mid);
	if (serving)
		finish_cmd(serving, FM_CRIU_TIMEOUT_MS, NULL);
	if (fm_rt_exists(a->rt, container) && (r = fm_rt_remove(a->rt, container, true, err)) < 0)
		return r;
	outgoing_forget(a, mid);
	return 0;
}

static int src_forward_locked(fm_agent *a, const char *mid, json_t *req, bool engage, fm_error *err)
{
	const char *container = json_string_value(json_object_get(req, "container"));
	json_t *sec = json_object_get(req, "seconds");
	int r;

	if ((r = check_mid_container(mid, container, err)) < 0)
		return r;
	if (!a->forwarder)
		return fm_error_set(err, -ENOTSUP, "host %s does not forward addresses (not started yet)", a->rt->host);
	if (!engage)
		return fm_forwarder_prepare(a->forwarder, mid, json_string_value(json_object_get(req, "from")),
					    json_string_value(json_object_get(req, "to")),
					    json_string_value(json_object_get(req, "mac")), err);
	if (!json_is_integer(sec))
		return fm_error_set(err, -EINVAL, "\"seconds\" must be an integer");
	/* the frozen copy still answers ARP for the old address, and its MAC must
	 * have one port: off the bridge */
	if (holds_claim(a, mid, container) && has_network(a, container) &&
	    (r = fm_net_port_set(a->rt, container, false, err)) < 0)
		return r;
	return fm_forwarder_engage(a->forwarder, mid, (int)json_integer_value(sec), err);
}

json_t *fm_sync_src_progress(fm_agent *a, const char *mid)
{
	fm_outgoing *o;
	json_t *j = NULL;
	pthread_mutex_lock(&a->lock);
	o = outgoing_get(a, mid, false);
	if (o)
		j = json_pack("{s:s, s:I, s:I, s:f}", "phase", o->phase, "bytes", (json_int_t)o->stats.payload_bytes,
			      "wire_bytes", (json_int_t)o->stats.wire_bytes, "rate_bps", o->stats.rate_bps);
	pthread_mutex_unlock(&a->lock);
	return j;
}

/* The public operations: each runs its *_locked body under its role's lock. */
#define UNDER(lock, call)                                                                         \
	({                                                                                        \
		pthread_mutex_lock(lock);                                                          \
		int r_ = (call);                                                                   \
		pthread_mutex_unlock(lock);                                                        \
		r_;                                                                                \
	})

int fm_sync_dst_restore(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	return UNDER(&a->dst_ops, dst_restore_locked(a, mid, req, out, err));
}

int fm_sync_dst_restore_start(fm_agent *a, const char *mid, json_t *req, fm_error *err)
{
	return UNDER(&a->dst_ops, dst_restore_start_locked(a, mid, req, err));
}

int fm_sync_dst_commit(fm_agent *a, const char *mid, fm_error *err)
{
	return UNDER(&a->dst_ops, dst_commit_locked(a, mid, err));
}

int fm_sync_dst_abort(fm_agent *a, const char *mid, fm_error *err)
{
	/* a held restore waiting for its memory gives up first (it holds dst_ops) */
	pthread_mutex_lock(&a->lock);
	fm_incoming *in = check_mid(mid, NULL) == 0 ? incoming_find(a, mid) : NULL;
	if (in && in->abort_fd >= 0)
		(void)!eventfd_write(in->abort_fd, 1);
	pthread_mutex_unlock(&a->lock);
	return UNDER(&a->dst_ops, dst_abort_locked(a, mid, err));
}

int fm_sync_dst_reserve(fm_agent *a, const char *mid, json_t *req, fm_error *err)
{
	return UNDER(&a->dst_ops, dst_reserve_locked(a, mid, req, err));
}

int fm_sync_dst_prepare(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	return UNDER(&a->dst_ops, dst_prepare_locked(a, mid, req, out, err));
}

int fm_sync_src_checkpoint_start(fm_agent *a, const char *mid, json_t *req, fm_error *err)
{
	return UNDER(&a->src_ops, src_checkpoint_start_locked(a, mid, req, err));
}

int fm_sync_src_checkpoint(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	return UNDER(&a->src_ops, src_checkpoint_locked(a, mid, req, out, err));
}

int fm_sync_src_resume(fm_agent *a, const char *mid, const char *container, fm_error *err)
{
	return UNDER(&a->src_ops, src_resume_locked(a, mid, container, err));
}

int fm_sync_src_cleanup(fm_agent *a, const char *mid, const char *container, fm_error *err)
{
	return UNDER(&a->src_ops, src_cleanup_locked(a, mid, container, err));
}

int fm_sync_src_forward(fm_agent *a, const char *mid, json_t *req, bool engage, fm_error *err)
{
	return UNDER(&a->src_ops, src_forward_locked(a, mid, req, engage, err));
}

int fm_sync_dst_pages_open(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	return UNDER(&a->dst_ops, dst_pages_open_locked(a, mid, req, out, err));
}

int fm_sync_dst_pages_close(fm_agent *a, const char *mid, json_t **out, fm_error *err)
{
	return UNDER(&a->dst_ops, dst_pages_close_locked(a, mid, out, err));
}

int fm_sync_src_predump(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	return UNDER(&a->src_ops, src_predump_locked(a, mid, req, out, err));
}

int fm_sync_src_presync(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	return UNDER(&a->src_ops, src_presync_locked(a, mid, req, out, err));
}

int fm_sync_src_capture(fm_agent *a, const char *mid, json_t **out, fm_error *err)
{
	return UNDER(&a->src_ops, src_capture_locked(a, mid, out, err));
}

int fm_sync_dst_inject(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	return UNDER(&a->dst_ops, dst_inject_locked(a, mid, req, out, err));
}

int fm_sync_src_throttle(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err)
{
	return UNDER(&a->src_ops, src_throttle_locked(a, mid, req, out, err));
}

int fm_sync_dst_pages(fm_agent *a, const char *mid, json_t **out, fm_error *err)
{
	int64_t t0 = fm_now_mono_us();
	json_auto_t *pstats = json_object();
	pid_t pid = 0;
	int r;

	if ((r = check_mid(mid, err)) < 0)
		return r;
	_cleanup_close_ int done_fd = -1;
	pthread_mutex_lock(&a->lock);
	fm_incoming *in = incoming_find(a, mid);
	if (in && in->lazy)
		pid = fm_cmd_pid(in->lazy);
	else if (in && in->prefetch)
		done_fd = fcntl(fm_prefetch_done_fd(in->prefetch), F_DUPFD_CLOEXEC, 0);
	pthread_mutex_unlock(&a->lock);
	if (!in)
		return fm_error_set(err, -ENOENT, "no incoming migration %s on %s", mid, a->rt->host);
	if (pid > 0 || done_fd >= 0) {
		/* no lock while waiting: an abort must be able to stop the transfer
		 * (the descriptors waited on outlive what an abort frees) */
		_cleanup_close_ int pfd = pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
		struct pollfd p = { pid > 0 ? pfd : done_fd, POLLIN, 0 };
		if (p.fd >= 0 && poll(&p, 1, FM_CRIU_TIMEOUT_MS) == 0)
			return fm_error_set(err, -ETIMEDOUT, "memory pages still arriving after %d s", FM_CRIU_TIMEOUT_MS / 1000);
		pthread_mutex_lock(&a->dst_ops);
		pthread_mutex_lock(&a->lock);
		in = incoming_find(a, mid);
		struct fm_cmd *c = in ? in->lazy : NULL;
		if (in)
			in->lazy = NULL;
		pthread_mutex_unlock(&a->lock);
		_cleanup_free_ char *staging = staging_dir(a, mid);
		_cleanup_free_ char *work = fm_xasprintf("%s/work", staging);
		fm_error pe = FM_ERROR_INIT;
		if (!in || (pid > 0 && !c) || (done_fd >= 0 && !in->prefetch)) {
			r = fm_error_set(err, -ECANCELED, "migration %s was aborted while its pages arrived", mid);
		} else if (c) {
			r = fm_cmd_wait(c, err);
			fm_cmd_free(c);
			if (r != 0) {
				fm_error_prefix(err, "the memory page transfer failed");
				fm_ckpt_attach_criu_log(err, work, "lazy-pages.log");
				r = r > 0 ? -EIO : r;
			} else if (in->relay) {
				relay_stats_json(in->relay, pstats, "pages_");
			}
		} else if ((r = fm_prefetch_failed(in->prefetch, &pe)) < 0) {
			fm_error_move(err, &pe);
			fm_error_prefix(err, "the memory page transfer failed");
		} else {
			if (in->relay)
				relay_stats_json(in->relay, pstats, "pages_");
			prefetch_stats_json(in->prefetch, pstats);
		}
		fm_error_clear(&pe);
		pthread_mutex_unlock(&a->dst_ops);
		if (r < 0)
			return r;
	}
	*out = json_incref(pstats);
	json_object_set_new(*out, "pages_ms", json_real((double)(fm_now_mono_us() - t0) / 1000.0));
	return 0;
}
