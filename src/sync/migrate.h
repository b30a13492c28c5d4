/* State Synchronizer, agent side: what one host does in a migration.
 *
 * Source role (…Src…): freeze, checkpoint, stream the images and the container's
 * writable layer to the destination over the data channel; on rollback resume the
 * frozen container; on commit delete it.
 *
 * Destination role (…Dst…): reserve resources, obtain the image, prepare the
 * bundle, open the data channel and receive; restore; verify; commit, or abort and
 * leave nothing behind.
 *
 * Every operation is idempotent per migration id, so a controller that lost track
 * (it was killed, a reply got lost) can simply repeat it.  In-flight state is
 * journaled (tables incoming/outgoing) so a restarted agent can clean up.
 */
#pragma once
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "basic/error.h"
#include "runtime/runtime.h"
#include "store/journal.h"

/* Downloads an image blob from the source agent (provided by the API layer). */
typedef int (*fm_blob_fetch_fn)(const char *source_endpoint, const char *digest, const char *file,
				uint64_t bandwidth_bps, fm_error *err);

struct fm_incoming;
struct fm_outgoing;

typedef struct fm_agent {
	fm_runtime *rt;
	fm_journal *journal;
	char *data_host;          /* address peers reach our data channel on */
	int io_timeout_ms;        /* data channel inactivity limit */
	double cpu_overcommit;
	bool cordoned;            /* refuses incoming migrations */
	bool fault_corrupt;       /* test fault: corrupt one byte on the data channel */
	json_t *caps;             /* fm_ckpt_capabilities() */
	fm_blob_fetch_fn fetch_blob;
	/* Pre-flight results kept for the daemon's lifetime: a CPU does not change
	 * under a running daemon, and each CRIU run costs ~45 ms. */
	char *cpuinfo_b64;        /* this host's `criu cpuinfo dump`, base64 */
	struct fm_cpu_check {
		uint64_t hash;        /* XXH3 of a peer's cpuinfo image */
		int code;             /* 0 compatible, else -errno */
		char *msg, *detail;
	} cpu_checks[16];
	int n_cpu_checks;
	/* Guards the pre-flight cache above.  Its own lock: a first CRIU run (up to
	 * 20 s) must not hold up the progress of a checkpoint in flight. */
	pthread_mutex_t preflight;
	pthread_mutex_t lock;
	/* Serializes restore, commit and abort: an abort must wait for a restore in
	 * progress, or it would delete a container that runc is about to start. */
	pthread_mutex_t dst_ops;
	/* Serializes checkpoint, resume and cleanup: a rollback's resume waits for a
	 * checkpoint still running, instead of being undone by CRIU re-freezing. */
	pthread_mutex_t src_ops;
	struct fm_incoming *incoming;
	struct fm_outgoing *outgoing;
	struct fm_forwarder *forwarder; /* moved addresses forwarded from here (fm_agent_recover starts it) */
} fm_agent;

void fm_agent_init(fm_agent *a);
void fm_agent_fini(fm_agent *a);
/* At start-up: discards the half-received incoming migrations of a previous run. */
void fm_agent_recover(fm_agent *a);

/* Destination role */
int fm_sync_dst_reserve(fm_agent *a, const char *mid, json_t *req, fm_error *err);
int fm_sync_dst_prepare(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err);
/* At the freeze: starts runc restore ahead of the images ({"lazy", "tcp_close"}
 * as the restore's request); the restore then only opens its gate. */
int fm_sync_dst_restore_start(fm_agent *a, const char *mid, json_t *req, fm_error *err);
int fm_sync_dst_restore(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err);
/* POST_COPY: waits until every memory page has arrived (the lazy-pages daemon
 * exits 0); -errno when the page transfer failed. */
int fm_sync_dst_pages(fm_agent *a, const char *mid, json_t **out, fm_error *err);
/* PRE_COPY/HYBRID: opens a page transfer for a round ({"round": N} or
 * {"final": true}, with {"parent_round": N} for the pages sent before) and
 * returns its relay port; close waits for it to end and returns its figures. */
int fm_sync_dst_pages_open(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err);
int fm_sync_dst_pages_close(fm_agent *a, const char *mid, json_t **out, fm_error *err);
int fm_sync_dst_verify(fm_agent *a, const char *mid, json_t *req, fm_error *err);
int fm_sync_dst_commit(fm_agent *a, const char *mid, fm_error *err);
int fm_sync_dst_abort(fm_agent *a, const char *mid, fm_error *err);
json_t *fm_sync_dst_status(fm_agent *a, const char *mid);

/* Source role */
/* POST_COPY, while the container runs: the page relay set up and CRIU started
 * for the checkpoint to come ({container, lazy, parent_round, tcp_close}). */
int fm_sync_src_checkpoint_start(fm_agent *a, const char *mid, json_t *req, fm_error *err);
int fm_sync_src_checkpoint(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err);
/* PRE_COPY/HYBRID: one pre-dump round of the running container, its memory
 * streamed to the destination's page relay ({container, round, page_relay,
 * token}); returns the bytes sent. */
int fm_sync_src_predump(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err);
/* Rootfs pre-sync: the container's writable layer sent while it runs
 * ({container, data_host, port, token}; the destination was prepared with
 * "presync"); the checkpoint's transfer then resends only what changed. */
int fm_sync_src_presync(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err);
/* Auto-converge: limits the container's CPU to {"cpu_percent": P} of one CPU
 * (0 = back to its own limit) while pre-copy runs. */
int fm_sync_src_throttle(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err);
/* Containers with an address: the TCP segments held on the source since the
 * freeze ({frames: base64, count}), and their replay into the restored copy. */
int fm_sync_src_capture(fm_agent *a, const char *mid, json_t **out, fm_error *err);
int fm_sync_dst_inject(fm_agent *a, const char *mid, json_t *req, json_t **out, fm_error *err);
int fm_sync_src_resume(fm_agent *a, const char *mid, const char *container, fm_error *err);
/* A move that changes the container's address: in PREPARATION (engage
 * false) this host prepares to forward the old address to the new one
 * (network/forward.h; req {"container", "from", "to", "mac"}); at the
 * switchover (engage true; req {"container", "seconds"}) the frozen copy
 * leaves the bridge and the stand-in takes its place. */
int fm_sync_src_forward(fm_agent *a, const char *mid, json_t *req, bool engage, fm_error *err);
int fm_sync_src_cleanup(fm_agent *a, const char *mid, const char *container, fm_error *err);
/* Exposed for unit tests: is <staging>/recv exactly images/ (+ upper/), both
 * real directories? */
int fm_sync_check_received(const char *staging, fm_error *err);

/* {phase, bytes, rate_bps} of an outgoing migration, or NULL. */
json_t *fm_sync_src_progress(fm_agent *a, const char *mid);
