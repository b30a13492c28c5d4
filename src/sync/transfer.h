/* Delta Transfer: the data channel between two agents.
 *
 * One TCP connection per migration carries directory trees (CRIU images, the
 * container's writable layer) from the source agent to the destination agent.
 * Everything is framed; every frame carries a sequence number and an XXH3-64
 * checksum of its header fields and payload, so a flipped bit, a dropped or a
 * reordered frame is caught and the transfer fails instead of restoring garbage.
 *
 *   frame   = header(24 bytes, little endian) payload(length bytes)
 *   header  = magic "FMX1" u32 | type u8 | flags u8 | reserved u16 |
 *             length u32 | seq u32 | checksum u64
 *   HELLO   sender -> receiver: protocol version, 16-byte token (authenticates the
 *           sender: the destination handed it to the controller in PREPARATION)
 *   ENTRY   one tree entry: kind (dir, file, symlink, whiteout), mode, uid, gid,
 *           mtime, size, path relative to the receiver's root, symlink target,
 *           overlayfs opaque flag, "reuse" flag (below)
 *   DATA    up to FM_XFER_CHUNK bytes of the current file; flag zstd: compressed,
 *           the next piece of one zstd stream over the connection's compressed
 *           DATA frames, so that a small file shrinks with what came before it
 *           (sync/compress.h decides when compressing pays)
 *   END     totals (entries, payload bytes) — the receiver checks them
 *   ACK     receiver -> sender: status 0 and the receiver's totals, or an error text
 *
 * The receiver trusts nothing: paths must be relative, without "." / ".." or empty
 * components, and are created component by component with O_NOFOLLOW below its
 * root; sizes and frame lengths are bounded; anything unexpected closes the
 * connection with an error.
 *
 * Pre-sync (only what changed travels while the container is frozen): a first
 * transfer while the container runs records, per regular file it sent, what
 * stat() said before and after reading it (fm_xfer_manifest).  The transfer in
 * the freeze sends every entry again, but a file whose inode, size, mtime and
 * ctime are still those recorded goes as a "reuse" entry without data: the
 * receiver moves it over from the pre-synced tree (path validated as always,
 * size checked).  A file changed within settle_ms (FM_XFER_SETTLE_MS) before
 * it was read is not recorded: timestamps are coarse, a write within the same
 * tick would leave none.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "basic/error.h"

#define FM_XFER_CHUNK (1024 * 1024)
#define FM_XFER_TOKEN_LEN 16

typedef struct fm_xfer_stats {
	uint64_t wire_bytes;     /* bytes on the socket, headers included */
	uint64_t payload_bytes;  /* file content bytes */
	uint32_t entries;
	int64_t duration_us;
	double rate_bps;         /* payload bits per second */
	uint32_t reused_files;   /* "reuse" entries: content taken from the pre-synced tree */
	uint64_t reused_bytes;
	uint32_t compressed_frames;
	int zstd_level;          /* of the last compressed frame, 0 = none */
} fm_xfer_stats;

#define FM_XFER_SETTLE_MS 1000

/* What a pre-sync sent: wire path, inode and times of each file sent whole and
 * unchanged. */
typedef struct fm_xfer_manifest fm_xfer_manifest;
fm_xfer_manifest *fm_xfer_manifest_new(void);
void fm_xfer_manifest_free(fm_xfer_manifest *m);
size_t fm_xfer_manifest_files(const fm_xfer_manifest *m);

/* Called from the transferring thread after every chunk. */
typedef void (*fm_xfer_progress_fn)(void *opaque, const fm_xfer_stats *so_far);

typedef struct fm_xfer_opts {
	int io_timeout_ms;           /* no progress for this long = failure (default 10000) */
	uint64_t max_bytes;          /* receiver: refuse streams larger than this (0 = 64 GiB) */
	uint64_t bandwidth_bps;      /* sender: cap in bits per second (0 = none) */
	fm_xfer_progress_fn progress;
	void *progress_opaque;
	/* Fault injection for tests (daemon --fault corrupt-transfer): flip one payload
	 * byte at this stream offset *after* its checksum was computed. -1 = off. */
	int64_t fault_corrupt_offset;
	int compress;                /* sender: FM_COMPRESS_OFF (default), _AUTO or a zstd level */
	double link_bps;             /* sender: the link's speed where known, for AUTO (0 = unknown) */
	fm_xfer_manifest *record;    /* sender: record the files sent (a pre-sync) */
	int settle_ms;               /* ... unless changed less than this long before */
	const fm_xfer_manifest *reuse; /* sender: files unchanged since this pre-sync go as "reuse" */
	const char *reuse_dir;       /* receiver: the pre-synced tree "reuse" entries take files from */
} fm_xfer_opts;

#define FM_XFER_OPTS_INIT { .io_timeout_ms = 10000, .fault_corrupt_offset = -1, .settle_ms = FM_XFER_SETTLE_MS }

/* A tree to send: the local directory and the name it gets below the receiver's
 * root (a single path component such as "images" or "upper"). */
typedef struct fm_xfer_tree {
	const char *local_dir;
	const char *remote_name;
} fm_xfer_tree;

/* Sender: connects to host:port, sends HELLO with token, every tree, END, then
 * waits for the receiver's ACK.  0 or -errno with err filled. */
int fm_xfer_send(const char *host, int port, const uint8_t token[FM_XFER_TOKEN_LEN],
		 const fm_xfer_tree *trees, size_t ntrees, const fm_xfer_opts *opts,
		 fm_xfer_stats *stats, fm_error *err);

/* Receiver: a listening socket on bind_host (port 0 = ephemeral). */
typedef struct fm_xfer_listener fm_xfer_listener;
int fm_xfer_listen(const char *bind_host, int port, fm_xfer_listener **out, fm_error *err);
int fm_xfer_listener_port(const fm_xfer_listener *l);
/* For other listeners of the data plane (relay.c): the listening socket and an
 * eventfd that becomes readable on fm_xfer_listener_cancel. */
int fm_xfer_listener_fd(const fm_xfer_listener *l);
int fm_xfer_listener_cancel_fd(const fm_xfer_listener *l);
/* A non-blocking TCP connection to host:port with the data plane's socket options
 * (no Nagle, TCP_USER_TIMEOUT = timeout_ms); fd or -errno with err filled. */
int fm_xfer_connect(const char *host, int port, int timeout_ms, fm_error *err);
/* Accepts one connection (waiting at most accept_timeout_ms), checks the token,
 * receives into dest_dir (which must exist and be empty), verifies, sends ACK.
 * Nothing is flushed to disk here (a syncfs() cost 200 ms of every freeze
 * after CRIU's page server had written the memory): the caller makes what it
 * keeps durable (fm_fsync_tree) before the source lets go of its copy.
 * A connection with a wrong token is dropped and the wait continues. */
int fm_xfer_receive(fm_xfer_listener *l, const uint8_t token[FM_XFER_TOKEN_LEN],
		    const char *dest_dir, int accept_timeout_ms, const fm_xfer_opts *opts,
		    fm_xfer_stats *stats, fm_error *err);
/* Wakes a thread blocked in fm_xfer_receive (it fails with -ECANCELED). */
void fm_xfer_listener_cancel(fm_xfer_listener *l);
void fm_xfer_listener_free(fm_xfer_listener *l);

/* Exposed for unit tests and fuzzing: validates a relative path as received. */
bool fm_xfer_path_valid(const char *path, size_t len);
