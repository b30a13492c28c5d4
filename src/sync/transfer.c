/* Delta Transfer: framed, checksummed tree streaming over one TCP connection.
 *
 * Wire details beyond transfer.h (all integers little endian):
 *   checksum = XXH3_64(payload, seed = XXH3_64(header[0..16), FMX_SEED)): the header
 *              fields seed the payload hash, so a flipped bit anywhere in the frame,
 *              or a frame replayed at another position (seq), fails the check.
 *   HELLO    version u32 | token[16]
 *   ENTRY    kind u8 | flags u8 (1 = opaque dir, 2 = reuse file) | path_len u16 |
 *            mode u32 | uid u32 | gid u32 | mtime_sec i64 | mtime_nsec u32 |
 *            target_len u32 | size u64 | path | symlink target
 *   DATA     the file's bytes; with header flag 1 (zstd): raw_len u32 | zstd frame
 *   END      entries u32 | reserved u32 | payload_bytes u64
 *   ACK      status i32 (0 or -errno) | entries u32 | payload_bytes u64 | error text
 * Each direction numbers its frames from 0.
 */
#include "sync/transfer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <xxhash.h>

#include "basic/log.h"
#include "basic/util.h"
#include "sync/compress.h"

#define FMX_MAGIC "FMX1"
#define FMX_HDR 24
#define FMX_VERSION 3 /* 2: zstd DATA frames, reuse entries; 3: one zstd stream */
#define FMX_MAX_FRAME (FM_XFER_CHUNK + 8192)
#define FMX_PATH_MAX 4096
#define FMX_DEPTH_MAX 64
#define FMX_SEED 0x464d58317846ULL
#define FMX_DEFAULT_MAX_BYTES (64ULL << 30)
#define OPAQUE_XATTR "trusted.overlay.opaque"

enum { T_HELLO = 1, T_ENTRY, T_DATA, T_END, T_ACK };
enum { K_DIR = 1, K_FILE, K_SYMLINK, K_WHITEOUT };
#define EF_OPAQUE 0x01
#define EF_REUSE 0x02
#define FF_ZSTD 0x01 /* header flag of a DATA frame: the next piece of the connection's zstd stream */
#define HELLO_LEN 20
#define ENTRY_FIXED 40
#define END_LEN 16
#define ACK_FIXED 16

/* Fails with errno and its text appended. */
#define SYSERR(err, fmt, ...) fm_error_set(err, -errno, fmt ": %s", ##__VA_ARGS__, strerror(errno))


static uint64_t frame_sum(const uint8_t *hdr, const uint8_t *payload, size_t len)
{
	return XXH3_64bits_withSeed(payload, len, XXH3_64bits_withSeed(hdr, 16, FMX_SEED));
}

static const char *type_name(uint8_t t)
{
	static const char *const n[] = { "unknown", "HELLO", "ENTRY", "DATA", "END", "ACK" };
	return t < ARRAY_SIZE(n) ? n[t] : n[0];
}

bool fm_xfer_path_valid(const char *path, size_t len)
{
	const char *p = path, *end = path + len;
	unsigned depth = 0;

	if (!path || len == 0 || len > FMX_PATH_MAX || memchr(path, '\0', len))
		return false;
	for (;;) {
		const char *s = memchr(p, '/', (size_t)(end - p));
		size_t n = (size_t)((s ? s : end) - p);
		if (n == 0 || n > NAME_MAX || (n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.') || ++depth > FMX_DEPTH_MAX)
			return false;
		if (!s)
			return true;
		p = s + 1;
	}
}

/* ---- connection: non-blocking socket, every wait bounded by the io timeout ---- */

typedef struct conn {
	int fd;
	int cancel_fd;     /* listener's eventfd on the receiver, -1 on the sender */
	int timeout_ms;
	bool watch_in;     /* sender: input while sending means the receiver gave up */
	const char *peer;  /* "sender" / "receiver", for messages */
	uint32_t tx_seq, rx_seq;
	uint64_t wire;
} conn;

/* Returns revents of c->fd, or -ETIMEDOUT / -ECANCELED / -errno. */
static int conn_wait(conn *c, short events)
{
	struct pollfd p[2] = { { .fd = c->fd, .events = events }, { .fd = c->cancel_fd, .events = POLLIN } };
	int64_t deadline = fm_now_mono_ms() + c->timeout_ms;

	for (;;) {
		int64_t left = deadline - fm_now_mono_ms();
		int n = poll(p, 2, left > 0 ? (int)left : 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ETIMEDOUT;
		if (p[1].revents)
			return -ECANCELED;
		return p[0].revents;
	}
}

/* Sends (out) or receives len bytes; each wait for the socket is bounded by the io
 * timeout, so a silent peer is noticed whichever way the data flows. */
static int conn_io(conn *c, const void *buf, size_t len, bool out, bool more, fm_error *err)
{
	uint8_t *p = (uint8_t *)buf;

	while (len > 0) {
		/* MSG_MORE lets small ENTRY frames share packets; HELLO/END/ACK push. */
		ssize_t k = out ? send(c->fd, p, len, MSG_NOSIGNAL | (more ? MSG_MORE : 0))
				: recv(c->fd, p, len, 0);
		if (k > 0) {
			p += k;
			len -= (size_t)k;
			c->wire += (uint64_t)k;
			continue;
		}
		if (k == 0 && !out)
			return fm_error_set(err, -ECONNRESET, "%s closed the connection unexpectedly",
					    c->peer);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno != EAGAIN)
			return SYSERR(err, "%s %s", out ? "sending to" : "receiving from", c->peer);
		int r = conn_wait(c, out ? POLLOUT | (c->watch_in ? POLLIN : 0) : POLLIN);
		if (r == -ETIMEDOUT && out)
			return fm_error_set(err, r, "%s accepted no data for %d ms: link down or %s stalled?",
					    c->peer, c->timeout_ms, c->peer);
		if (r == -ETIMEDOUT)
			return fm_error_set(err, r, "no data from %s for %d ms: link down or %s gone?",
					    c->peer, c->timeout_ms, c->peer);
		if (r == -ECANCELED)
			return fm_error_set(err, r, "transfer cancelled");
		if (r < 0)
			return fm_error_set(err, r, "waiting for %s: %s", c->peer, strerror(-r));
		/* The receiver only speaks at the end: input now means it gave up. */
		if (out && (r & POLLIN) && !(r & POLLOUT))
			return fm_error_set(err, -ECONNABORTED, "%s stopped reading, replied early", c->peer);
	}
	return 0;
}

#define conn_send(c, buf, len, more, err) conn_io(c, buf, len, true, more, err)
#define conn_recv(c, buf, len, err) conn_io(c, buf, len, false, false, err)

/* buf = FMX_HDR bytes of room for the header, then len bytes of payload. */
static void frame_seal(conn *c, uint8_t *buf, uint8_t type, uint8_t flags, uint32_t len)
{
	memcpy(buf, FMX_MAGIC, 4);
	buf[4] = type;
	buf[5] = flags;
	fm_put_le16(buf + 6, 0);
	fm_put_le32(buf + 8, len);
	fm_put_le32(buf + 12, c->tx_seq++);
	fm_put_le64(buf + 16, frame_sum(buf, buf + FMX_HDR, len));
}

typedef struct frame {
	uint8_t type, flags;
	uint32_t len, seq;
	uint8_t *payload;
} frame;

/* Reads and verifies one frame into buf (FMX_HDR + FMX_MAX_FRAME bytes).  file names
 * the file a DATA frame belongs to, for the error message. */
static int frame_recv(conn *c, uint8_t *buf, const char *file, frame *f, fm_error *err)
{
	int r = conn_recv(c, buf, FMX_HDR, err);
	if (r < 0)
		return r;
	if (memcmp(buf, FMX_MAGIC, 4) != 0)
		return fm_error_set(err, -EBADMSG, "bad magic %02x%02x%02x%02x in frame %u from %s: not a "
				    "FlexiMigrate transfer, or the stream lost sync",
				    buf[0], buf[1], buf[2], buf[3], c->rx_seq, c->peer);
	f->type = buf[4];
	f->len = fm_get_le32(buf + 8);
	f->seq = fm_get_le32(buf + 12);
	if (f->len > FMX_MAX_FRAME)
		return fm_error_set(err, -EBADMSG, "frame %u from %s announces %" PRIu32 " bytes (limit %d): "
				    "transfer corrupted", c->rx_seq, c->peer, f->len, FMX_MAX_FRAME);
	r = conn_recv(c, buf + FMX_HDR, f->len, err);
	if (r < 0)
		return r;
	if (fm_get_le64(buf + 16) != frame_sum(buf, buf + FMX_HDR, f->len)) {
		bool d = f->type == T_DATA && file;
		return fm_error_set(err, -EBADMSG, "checksum mismatch in %s frame %u%s%s%s: transfer "
				    "corrupted", type_name(f->type), c->rx_seq, d ? " (file " : "",
				    d ? file : "", d ? ")" : "");
	}
	f->flags = buf[5];
	if ((f->flags & ~(f->type == T_DATA ? FF_ZSTD : 0)) || fm_get_le16(buf + 6))
		return fm_error_set(err, -EPROTO, "frame %u from %s has unknown flags set", c->rx_seq,
				    c->peer);
	if (f->seq != c->rx_seq)
		return fm_error_set(err, -EPROTO, "frame sequence gap from %s: expected frame %u, got "
				    "%" PRIu32 " (frames lost or reordered)", c->peer, c->rx_seq, f->seq);
	c->rx_seq++;
	f->payload = buf + FMX_HDR;
	return 0;
}

static void sock_setup(int fd, int timeout_ms)
{
	int one = 1;
	unsigned t = (unsigned)timeout_ms;
	/* Small frames are pushed by MSG_MORE's absence, not by Nagle's timer. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Unacknowledged data for longer than the io timeout kills the connection
	 * in the kernel too, so a dead link cannot hold buffers forever. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &t, sizeof(t));
}

static void stats_update(fm_xfer_stats *st, const conn *c, int64_t start_us)
{
	st->wire_bytes = c->wire;
	st->duration_us = fm_now_mono_us() - start_us;
	st->rate_bps = st->duration_us > 0 ? (double)st->payload_bytes * 8e6 / (double)st->duration_us : 0;
}

static int io_timeout(const fm_xfer_opts *o) { return o && o->io_timeout_ms > 0 ? o->io_timeout_ms : 10000; }

/* ---- pre-sync manifest: sorted by wire path once recorded ---- */

typedef struct mfile {
	char *path;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
} mfile;

struct fm_xfer_manifest {
	mfile *v;
	size_t n, alloc;
	bool sorted;
};

fm_xfer_manifest *fm_xfer_manifest_new(void) { return fm_xcalloc(1, sizeof(fm_xfer_manifest)); }

void fm_xfer_manifest_free(fm_xfer_manifest *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].path);
	free(m->v);
	free(m);
}

size_t fm_xfer_manifest_files(const fm_xfer_manifest *m) { return m ? m->n : 0; }

static bool ts_eq(struct timespec a, struct timespec b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

static bool same_file(const mfile *f, const struct stat *st)
{
	return f->dev == st->st_dev && f->ino == st->st_ino && f->size == st->st_size &&
	       ts_eq(f->mtime, st->st_mtim) && ts_eq(f->ctime, st->st_ctim);
}

static int mfile_cmp(const void *a, const void *b)
{
	return strcmp(((const mfile *)a)->path, ((const mfile *)b)->path);
}

static void manifest_add(fm_xfer_manifest *m, const char *path, const struct stat *st)
{
	if (m->n == m->alloc) {
		m->alloc = m->alloc ? m->alloc * 2 : 256;
		m->v = realloc(m->v, m->alloc * sizeof(*m->v));
		if (!m->v)
			abort();
	}
	m->v[m->n++] = (mfile){ fm_xstrdup(path), st->st_dev, st->st_ino, st->st_size, st->st_mtim, st->st_ctim };
	m->sorted = false;
}

static void manifest_sort(fm_xfer_manifest *m)
{
	if (m->n)
		qsort(m->v, m->n, sizeof(*m->v), mfile_cmp);
	m->sorted = true;
}

/* Is path, as stat'ed now, the file the pre-sync sent? */
static bool manifest_unchanged(const fm_xfer_manifest *m, const char *path, const struct stat *st)
{
	mfile key = { .path = (char *)path };
	const mfile *f = m->sorted && m->n ? bsearch(&key, m->v, m->n, sizeof(*m->v), mfile_cmp) : NULL;
	return f && same_file(f, st);
}

/* ---- sender ---- */

typedef struct sender {
	conn c;
	const fm_xfer_opts *o;
	fm_xfer_stats *st;
	int64_t start_us;
	fm_pacer pacer;                /* opts->bandwidth_bps */
	fm_compressor z;               /* opts->compress */
	uint8_t *buf, *zbuf;           /* a frame; a compressed DATA frame */
	size_t zcap;
	const char *local_dir;
	size_t root_len;               /* length of remote_name at the start of path */
	char path[FMX_PATH_MAX + 1];   /* wire path of the current entry */
} sender;

/* "%s%s" arguments naming the current entry's local path in messages. */
#define LOCAL(s) (s)->local_dir, (s)->path + (s)->root_len

static int send_entry(sender *s, uint8_t kind, uint8_t eflags, const struct stat *st, uint64_t size,
		      size_t plen, const char *target, size_t tlen, fm_error *err)
{
	uint8_t *p = s->buf + FMX_HDR;

	p[0] = kind;
	p[1] = eflags;
	fm_put_le16(p + 2, (uint16_t)plen);
	fm_put_le32(p + 4, st->st_mode & 07777);
	fm_put_le32(p + 8, st->st_uid);
	fm_put_le32(p + 12, st->st_gid);
	fm_put_le64(p + 16, (uint64_t)st->st_mtim.tv_sec);
	fm_put_le32(p + 24, (uint32_t)st->st_mtim.tv_nsec);
	fm_put_le32(p + 28, (uint32_t)tlen);
	fm_put_le64(p + 32, size);
	memcpy(p + ENTRY_FIXED, s->path, plen);
	if (tlen)
		memcpy(p + ENTRY_FIXED + plen, target, tlen);
	frame_seal(&s->c, s->buf, T_ENTRY, 0, (uint32_t)(ENTRY_FIXED + plen + tlen));
	s->st->entries++;
	return conn_send(&s->c, s->buf, FMX_HDR + ENTRY_FIXED + plen + tlen, true, err);
}

static int send_content(sender *s, int fd, uint64_t size, fm_error *err)
{
	for (uint64_t left = size; left > 0;) {
		size_t want = left < FM_XFER_CHUNK ? (size_t)left : FM_XFER_CHUNK, got = 0;
		uint8_t *p = s->buf + FMX_HDR;

		while (got < want) {
			ssize_t k = read(fd, p + got, want - got);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return SYSERR(err, "reading %s%s", LOCAL(s));
			if (k == 0)
				return fm_error_set(err, -EIO, "%s%s shrank while being sent (expected %"
						    PRIu64 " bytes): is something still writing to it?",
						    LOCAL(s), size);
			got += (size_t)k;
		}
		uint8_t *out = s->buf, *zp = s->zbuf + FMX_HDR + 4;
		size_t wl = want, c = fm_compress_frame(&s->z, p, want, zp, s->zcap, s->o->link_bps);
		if (c) {
			fm_put_le32(s->zbuf + FMX_HDR, (uint32_t)want);
			out = s->zbuf;
			wl = 4 + c;
			s->st->compressed_frames++;
			s->st->zstd_level = s->z.level;
		}
		frame_seal(&s->c, out, T_DATA, c ? FF_ZSTD : 0, (uint32_t)wl);
		int64_t off = s->o->fault_corrupt_offset;
		uint64_t rel = (uint64_t)off - s->st->payload_bytes;
		if (off >= 0 && (uint64_t)off >= s->st->payload_bytes && rel < want)
			out[FMX_HDR + (c ? 4 + rel % c : rel)] ^= 0xff; /* after the checksum: the receiver must catch it */
		fm_sleep_us(fm_pacer_take(&s->pacer, FMX_HDR + wl), NULL);
		int r = conn_send(&s->c, out, FMX_HDR + wl, true, err);
		if (r < 0)
			return r;
		left -= want;
		s->st->payload_bytes += want;
		stats_update(s->st, &s->c, s->start_us);
		if (s->o->progress)
			s->o->progress(s->o->progress_opaque, s->st);
	}
	return 0;
}

static int send_walk(sender *s, int dfd, size_t plen, unsigned depth, fm_error *err);

/* A pre-sync reads a running container's layer: an entry listed a moment ago
 * may be gone (a temporary file renamed into place).  Nothing to send: if
 * something stands there in the freeze, that transfer sends it. */
static bool vanished(const sender *s)
{
	if (errno != ENOENT || !s->o->record)
		return false;
	fm_debug(FM_C_DELTA_TRANSFER, "%s%s vanished while the pre-sync read it", LOCAL(s));
	return true;
}

/* Sends the directory `name` below dfd (or the tree root when dfd == AT_FDCWD),
 * whose wire path is s->path[0..plen), then everything below it. */
static int send_dir(sender *s, int dfd, const char *name, size_t plen, unsigned depth, fm_error *err)
{
	int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (dfd == AT_FDCWD ? 0 : O_NOFOLLOW);
	_cleanup_close_ int fd = openat(dfd, name, flags);
	struct stat st;
	char v[2];
	uint8_t ef = 0;

	if (fd < 0 && vanished(s))
		return 0;
	if (fd < 0 || fstat(fd, &st) < 0)
		return SYSERR(err, "opening directory %s%s", LOCAL(s));
	ssize_t n = fgetxattr(fd, OPAQUE_XATTR, v, sizeof(v));
	if (n == 1 && v[0] == 'y')
		ef |= EF_OPAQUE;
	else if (n < 0 && errno != ENODATA && errno != EOPNOTSUPP && errno != ERANGE)
		return SYSERR(err, "reading %s of %s%s", OPAQUE_XATTR, LOCAL(s));
	int r = send_entry(s, K_DIR, ef, &st, 0, plen, NULL, 0, err);
	return r < 0 ? r : send_walk(s, fd, plen, depth, err);
}

static int send_file(sender *s, int dfd, const char *name, size_t plen, fm_error *err)
{
	/* O_NONBLOCK: should a fifo take the file's place, open must not hang. */
	_cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	struct stat st;

	if (fd < 0 && vanished(s))
		return 0;
	if (fd < 0 || fstat(fd, &st) < 0)
		return SYSERR(err, "opening %s%s", LOCAL(s));
	if (!S_ISREG(st.st_mode))
		return fm_error_set(err, -EBUSY, "%s%s changed type while being sent", LOCAL(s));
	if (s->o->reuse && manifest_unchanged(s->o->reuse, s->path, &st)) {
		s->st->reused_files++;
		s->st->reused_bytes += (uint64_t)st.st_size;
		return send_entry(s, K_FILE, EF_REUSE, &st, (uint64_t)st.st_size, plen, NULL, 0, err);
	}
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int r = send_entry(s, K_FILE, 0, &st, (uint64_t)st.st_size, plen, NULL, 0, err);
	if (r >= 0)
		r = send_content(s, fd, (uint64_t)st.st_size, err);
	/* Recorded if it did not change while it was read, nor shortly before:
	 * a write within the same timestamp tick would leave no trace. */
	struct stat after;
	int64_t age_ms = (now.tv_sec - st.st_ctim.tv_sec) * 1000 + (now.tv_nsec - st.st_ctim.tv_nsec) / 1000000;
	if (r >= 0 && s->o->record && age_ms >= s->o->settle_ms && fstat(fd, &after) == 0 &&
	    after.st_size == st.st_size && ts_eq(after.st_mtim, st.st_mtim) && ts_eq(after.st_ctim, st.st_ctim))
		manifest_add(s->o->record, s->path, &st);
	return r;
}

static int send_one(sender *s, int dfd, const char *name, size_t plen, unsigned depth, fm_error *err)
{
	size_t nlen = strlen(name);
	char target[FMX_PATH_MAX];
	struct stat st;

	if (plen + 1 + nlen > FMX_PATH_MAX || depth > FMX_DEPTH_MAX)
		return fm_error_set(err, -ENAMETOOLONG, "%s%s/%s is nested too deep or its path is too long "
				    "to transfer", LOCAL(s), name);
	s->path[plen] = '/';
	memcpy(s->path + plen + 1, name, nlen + 1);
	plen += 1 + nlen;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return vanished(s) ? 0 : SYSERR(err, "inspecting %s%s", LOCAL(s));
	switch (st.st_mode & S_IFMT) {
	case S_IFDIR:
		return send_dir(s, dfd, name, plen, depth, err);
	case S_IFREG:
		return send_file(s, dfd, name, plen, err);
	case S_IFLNK: {
		ssize_t n = readlinkat(dfd, name, target, sizeof(target));
		if (n < 0)
			return SYSERR(err, "reading symlink %s%s", LOCAL(s));
		if ((size_t)n >= sizeof(target))
			return fm_error_set(err, -ENAMETOOLONG, "symlink %s%s: target too long", LOCAL(s));
		return send_entry(s, K_SYMLINK, 0, &st, 0, plen, target, (size_t)n, err);
	}
	case S_IFCHR:
		if (st.st_rdev == makedev(0, 0)) /* overlayfs whiteout */
			return send_entry(s, K_WHITEOUT, 0, &st, 0, plen, NULL, 0, err);
		break;
	}
	fm_debug(FM_C_DELTA_TRANSFER, "skipping %s%s: not a file, directory, symlink or whiteout (mode %o)",
		 LOCAL(s), (unsigned)st.st_mode);
	return 0;
}

static int not_dots(const struct dirent *d) { return strcmp(d->d_name, ".") && strcmp(d->d_name, ".."); }
static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int send_walk(sender *s, int dfd, size_t plen, unsigned depth, fm_error *err)
{
	struct dirent **names;
	int n = scandirat(dfd, ".", &names, not_dots, by_name), r = 0;

	if (n < 0)
		return SYSERR(err, "listing %s%s", LOCAL(s));
	for (int i = 0; i < n; i++) {
		if (r >= 0)
			r = send_one(s, dfd, names[i]->d_name, plen, depth + 1, err);
		free(names[i]);
	}
	free(names);
	return r;
}

int fm_xfer_connect(const char *host, int port, int timeout_ms, fm_error *err)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai = NULL;
	char ps[16];
	int r;

	snprintf(ps, sizeof(ps), "%d", port);
	r = getaddrinfo(host, ps, &hints, &ai);
	if (r != 0)
		return fm_error_set(err, -EHOSTUNREACH, "cannot resolve %s: %s", host, gai_strerror(r));
	r = -EHOSTUNREACH;
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		_cleanup_close_ int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		conn c = { .fd = fd, .cancel_fd = -1, .timeout_ms = timeout_ms };
		int e = 0;
		socklen_t el = sizeof(e);

		if (fd < 0) {
			r = -errno;
			continue;
		}
		sock_setup(fd, timeout_ms);
		if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
			if (errno != EINPROGRESS) {
				r = -errno;
				continue;
			}
			r = conn_wait(&c, POLLOUT);
			if (r < 0)
				continue;
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e != 0) {
				r = e ? -e : -errno;
				continue;
			}
		}
		freeaddrinfo(ai);
		return TAKE_FD(fd);
	}
	freeaddrinfo(ai);
	if (r == -ETIMEDOUT)
		return fm_error_set(err, r, "connecting to %s:%d timed out after %d ms: host down or "
				    "firewalled?", host, port, timeout_ms);
	return fm_error_set(err, r, "cannot connect to %s:%d: %s", host, port, strerror(-r));
}

/* Reads the receiver's ACK: 0 if it confirms our totals, else -errno with its reason. */
static int read_ack(sender *s, bool *rejected, fm_error *err)
{
	frame f;
	int r = frame_recv(&s->c, s->buf, NULL, &f, err);

	if (r < 0)
		return r;
	if (f.type != T_ACK || f.len < ACK_FIXED)
		return fm_error_set(err, -EPROTO, "unexpected %s frame from receiver instead of ACK",
				    type_name(f.type));
	int32_t status = (int32_t)fm_get_le32(f.payload);
	uint32_t entries = fm_get_le32(f.payload + 4);
	uint64_t bytes = fm_get_le64(f.payload + 8);
	if (status != 0) {
		if (rejected)
			*rejected = true;
		int len = (int)(f.len - ACK_FIXED < 512 ? f.len - ACK_FIXED : 512);
		for (int i = 0; i < len; i++) /* the text goes into logs: keep it printable */
			if (f.payload[ACK_FIXED + i] < 0x20 || f.payload[ACK_FIXED + i] > 0x7e)
				f.payload[ACK_FIXED + i] = '?';
		return fm_error_set(err, status < 0 && status > -4096 ? status : -EIO,
				    "receiver rejected the transfer: %.*s", len,
				    (const char *)f.payload + ACK_FIXED);
	}
	if (entries != s->st->entries || bytes != s->st->payload_bytes)
		return fm_error_set(err, -EPROTO, "receiver acknowledged %" PRIu32 " entries and %" PRIu64
				    " bytes, but %" PRIu32 " entries and %" PRIu64 " bytes were sent",
				    entries, bytes, s->st->entries, s->st->payload_bytes);
	return 0;
}

static int send_stream(sender *s, const uint8_t *token, const fm_xfer_tree *trees, size_t ntrees,
		       fm_error *err)
{
	uint8_t *p = s->buf + FMX_HDR;
	int r;

	fm_put_le32(p, FMX_VERSION);
	memcpy(p + 4, token, FM_XFER_TOKEN_LEN);
	frame_seal(&s->c, s->buf, T_HELLO, 0, HELLO_LEN);
	r = conn_send(&s->c, s->buf, FMX_HDR + HELLO_LEN, false, err);
	for (size_t i = 0; r >= 0 && i < ntrees; i++) {
		s->local_dir = trees[i].local_dir;
		s->root_len = strlen(trees[i].remote_name);
		memcpy(s->path, trees[i].remote_name, s->root_len + 1);
		r = send_dir(s, AT_FDCWD, s->local_dir, s->root_len, 1, err);
	}
	if (r < 0)
		return r;
	fm_put_le32(p, s->st->entries);
	fm_put_le32(p + 4, 0);
	fm_put_le64(p + 8, s->st->payload_bytes);
	frame_seal(&s->c, s->buf, T_END, 0, END_LEN);
	return conn_send(&s->c, s->buf, FMX_HDR + END_LEN, false, err);
}

int fm_xfer_send(const char *host, int port, const uint8_t token[FM_XFER_TOKEN_LEN],
		 const fm_xfer_tree *trees, size_t ntrees, const fm_xfer_opts *opts,
		 fm_xfer_stats *stats, fm_error *err)
{
	static const fm_xfer_opts defaults = FM_XFER_OPTS_INIT;
	fm_xfer_stats local = { 0 };
	_cleanup_free_ uint8_t *buf = NULL, *zbuf = NULL;
	_cleanup_close_ int fd = -1;
	sender s = { .o = opts ? opts : &defaults, .st = stats ? stats : &local,
		     .start_us = fm_now_mono_us() };
	fm_error serr = FM_ERROR_INIT;
	int r;

	*s.st = (fm_xfer_stats){ 0 };
	s.pacer.bps = s.o->bandwidth_bps;
	s.z = (fm_compressor)FM_COMPRESSOR_INIT_STREAM(s.o->compress);
	for (size_t i = 0; i < ntrees; i++) {
		const char *n = trees[i].remote_name;
		if (!n || !fm_xfer_path_valid(n, strlen(n)) || strchr(n, '/'))
			return fm_error_set(err, -EINVAL, "invalid remote name \"%s\" for %s: must be one "
					    "path component",
					    n ? n : "(null)", trees[i].local_dir);
	}
	fd = fm_xfer_connect(host, port, io_timeout(opts), err);
	if (fd < 0)
		return fd;
	s.c = (conn){ .fd = fd, .cancel_fd = -1, .timeout_ms = io_timeout(opts), .watch_in = true,
		      .peer = "receiver" };
	buf = s.buf = fm_xmalloc(FMX_HDR + FMX_MAX_FRAME);
	s.zcap = fm_compress_bound(FM_XFER_CHUNK);
	zbuf = s.zbuf = fm_xmalloc(FMX_HDR + 4 + s.zcap);
	fm_debug(FM_C_DELTA_TRANSFER, "sending %zu tree(s) to %s:%d", ntrees, host, port);

	r = send_stream(&s, token, trees, ntrees, &serr);
	fm_compressor_free(&s.z);
	if (s.o->record)
		manifest_sort(s.o->record);
	if (r == -EPIPE || r == -ECONNRESET || r == -ECONNABORTED) {
		/* The receiver hung up or answered early: its ACK, if it got through, says why. */
		fm_error aerr = FM_ERROR_INIT;
		bool rejected = false;
		if (read_ack(&s, &rejected, &aerr) < 0 && rejected) {
			fm_error_clear(&serr);
			r = aerr.code;
		}
		fm_error_move(&serr, &aerr);
	}
	if (r >= 0)
		r = read_ack(&s, NULL, &serr);
	stats_update(s.st, &s.c, s.start_us);
	if (r < 0) {
		fm_error_move(err, &serr);
		return r;
	}
	fm_debug(FM_C_DELTA_TRANSFER, "sent %" PRIu32 " entries, %" PRIu64 " bytes in %" PRId64
		 " ms (%.0f Mbit/s)",
		 s.st->entries, s.st->payload_bytes, s.st->duration_us / 1000, s.st->rate_bps / 1e6);
	return 0;
}

/* ---- receiver ---- */

struct fm_xfer_listener {
	int fd;
	int cancel_fd;
	int port;
};

typedef struct entry {
	uint8_t kind, eflags;
	uint32_t mode, uid, gid;
	struct timespec mtime;
	uint64_t size;
	char path[FMX_PATH_MAX + 1];
	char target[FMX_PATH_MAX];
} entry;

typedef struct dir_meta {
	char *path;
	uint32_t mode;
	struct timespec mtime;
} dir_meta;

typedef struct receiver {
	conn c;
	const fm_xfer_opts *o;
	fm_xfer_stats *st;
	int64_t start_us;
	uint64_t max_bytes, announced;
	uint8_t *buf, *zbuf;            /* a frame; a decompressed DATA frame */
	fm_decompressor dctx;
	int root_fd;
	int reuse_fd;                   /* opts->reuse_dir, -1 = none */
	char parent[FMX_PATH_MAX + 1]; /* cache: the last parent directory and its fd */
	int parent_fd;
	entry cur;                      /* the last ENTRY; its file is open while file_fd >= 0 */
	int file_fd;
	uint64_t file_left;
	dir_meta *dirs;                 /* mode and mtime, set once nothing is added below */
	size_t ndirs, adirs;
} receiver;

/* Opens the directory path[0..plen) below root, one component at a time with
 * O_NOFOLLOW, so a symlink received earlier is never followed.  fd to close,
 * or -errno with err filled; path names the entry, for messages. */
static int walk_dirs(int root, const char *path, size_t plen, fm_error *err)
{
	int cur = root;

	for (const char *p = path; p < path + plen;) {
		const char *e = memchr(p, '/', (size_t)(path + plen - p));
		char comp[NAME_MAX + 1];
		size_t n = (size_t)((e ? e : path + plen) - p);

		memcpy(comp, p, n);
		comp[n] = '\0';
		int fd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int e2 = errno;
		if (cur != root)
			close(cur);
		if (fd < 0) {
			if (e2 == ENOENT)
				return fm_error_set(err, -EPROTO, "entry %s arrived before its parent "
						    "directory %.*s",
						    path, (int)plen, path);
			if (e2 == ELOOP || e2 == ENOTDIR)
				return fm_error_set(err, -EPROTO, "parent %.*s of entry %s is not a "
						    "directory (a symlink?): refusing to follow it",
						    (int)plen, path, path);
			return fm_error_set(err, -e2, "opening %.*s: %s", (int)plen, path, strerror(e2));
		}
		cur = fd;
		p += n + 1;
	}
	return cur == root ? fcntl(root, F_DUPFD_CLOEXEC, 3) : cur;
}

static size_t parent_len(const char *path, const char **name)
{
	const char *slash = strrchr(path, '/');
	*name = slash ? slash + 1 : path;
	return slash ? (size_t)(slash - path) : 0;
}

/* Returns an fd for the parent directory of path (not to be closed). */
static int open_parent(receiver *r, const char *path, const char **name, fm_error *err)
{
	size_t plen = parent_len(path, name);

	if (plen == 0)
		return r->root_fd;
	if (r->parent_fd >= 0 && strlen(r->parent) == plen && memcmp(r->parent, path, plen) == 0)
		return r->parent_fd;
	if (r->parent_fd >= 0)
		close(r->parent_fd);
	r->parent_fd = walk_dirs(r->root_fd, path, plen, err);
	if (r->parent_fd < 0)
		return r->parent_fd;
	memcpy(r->parent, path, plen);
	r->parent[plen] = '\0';
	return r->parent_fd;
}

static int create_failed(const char *path, fm_error *err)
{
	if (errno == EEXIST)
		return fm_error_set(err, -EPROTO, "duplicate entry %s in the stream", path);
	return SYSERR(err, "creating %s", path);
}

static int finish_file(receiver *r, fm_error *err)
{
	entry *e = &r->cur;
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, e->mtime };
	int fd = TAKE_FD(r->file_fd);

	/* chown before chmod: chown clears setuid/setgid bits. */
	if (fchown(fd, e->uid, e->gid) < 0 || fchmod(fd, e->mode) < 0 || futimens(fd, ts) < 0) {
		int k = errno;
		close(fd);
		return fm_error_set(err, -k, "setting owner, mode and mtime of %s: %s", e->path, strerror(k));
	}
	if (close(fd) < 0)
		return SYSERR(err, "writing %s", e->path);
	return 0;
}

static int parse_entry(receiver *r, const uint8_t *p, uint32_t len, fm_error *err)
{
	entry *e = &r->cur;
	size_t plen, tlen;

	if (len < ENTRY_FIXED)
		return fm_error_set(err, -EPROTO, "ENTRY frame %u is truncated", r->c.rx_seq - 1);
	plen = fm_get_le16(p + 2);
	tlen = fm_get_le32(p + 28);
	if ((uint64_t)ENTRY_FIXED + plen + tlen != len)
		return fm_error_set(err, -EPROTO, "ENTRY frame %u has inconsistent lengths", r->c.rx_seq - 1);
	if (!fm_xfer_path_valid((const char *)p + ENTRY_FIXED, plen))
		return fm_error_set(err, -EPROTO, "ENTRY frame %u carries an invalid path \"%.*s\": must be "
				    "relative, without empty, \".\" or \"..\" components", r->c.rx_seq - 1,
				    (int)(plen > 200 ? 200 : plen), (const char *)p + ENTRY_FIXED);
	memcpy(e->path, p + ENTRY_FIXED, plen);
	e->path[plen] = '\0';
	e->kind = p[0];
	e->eflags = p[1];
	e->mode = fm_get_le32(p + 4);
	e->uid = fm_get_le32(p + 8);
	e->gid = fm_get_le32(p + 12);
	e->mtime.tv_sec = (time_t)(int64_t)fm_get_le64(p + 16);
	e->mtime.tv_nsec = fm_get_le32(p + 24);
	e->size = fm_get_le64(p + 32);
	if (e->kind < K_DIR || e->kind > K_WHITEOUT || e->mode > 07777 || e->mtime.tv_nsec >= 1000000000 ||
	    (e->eflags & ~(EF_OPAQUE | EF_REUSE)) || ((e->eflags & EF_OPAQUE) && e->kind != K_DIR) ||
	    ((e->eflags & EF_REUSE) && e->kind != K_FILE) || (e->size && e->kind != K_FILE) ||
	    (e->kind == K_SYMLINK) != (tlen > 0) || e->uid == (uint32_t)-1 || e->gid == (uint32_t)-1)
		return fm_error_set(err, -EPROTO, "ENTRY frame %u for %s has invalid fields",
				    r->c.rx_seq - 1, e->path);
	if (tlen >= sizeof(e->target) || memchr(p + ENTRY_FIXED + plen, '\0', tlen))
		return fm_error_set(err, -EPROTO, "symlink %s has an invalid target", e->path);
	memcpy(e->target, p + ENTRY_FIXED + plen, tlen);
	e->target[tlen] = '\0';
	return 0;
}

/* A "reuse" entry: the file comes over from the pre-synced tree, where it
 * must be a regular file of the announced size; then owner, mode, mtime. */
static int reuse_file(receiver *r, int pfd, const char *name, fm_error *err)
{
	entry *e = &r->cur;
	const char *rname;
	struct stat st;

	if (r->reuse_fd < 0)
		return fm_error_set(err, -EPROTO, "%s was sent as unchanged since a pre-sync, but no pre-synced "
				    "tree is here", e->path);
	_cleanup_close_ int dfd = walk_dirs(r->reuse_fd, e->path, parent_len(e->path, &rname), err);
	if (dfd < 0) {
		fm_error_prefix(err, "the pre-synced copy of %s", e->path);
		return dfd;
	}
	_cleanup_close_ int fd = openat(dfd, rname, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != e->size)
		return fm_error_set(err, -EPROTO, "%s was sent as unchanged since the pre-sync, but the pre-synced "
				    "copy is missing or differs (%s)", e->path,
				    fd < 0 ? strerror(errno) : "not a file of the announced size");
	if (renameat2(dfd, rname, pfd, name, RENAME_NOREPLACE) < 0)
		return create_failed(e->path, err);
	r->st->reused_files++;
	r->st->reused_bytes += e->size;
	r->file_fd = TAKE_FD(fd);
	return finish_file(r, err);
}

static int recv_entry(receiver *r, const uint8_t *p, uint32_t len, fm_error *err)
{
	entry *e = &r->cur;
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { 0 } };
	const char *name;
	int pfd, k;

	if (r->file_fd >= 0)
		return fm_error_set(err, -EPROTO, "file %s is incomplete: %" PRIu64 " of %" PRIu64 " bytes "
				    "missing before the next entry", e->path, r->file_left, e->size);
	k = parse_entry(r, p, len, err);
	if (k < 0)
		return k;
	ts[1] = e->mtime;
	r->st->entries++;
	pfd = open_parent(r, e->path, &name, err);
	if (pfd < 0)
		return pfd;
	switch (e->kind) {
	case K_DIR: {
		if (mkdirat(pfd, name, 0700) < 0)
			return create_failed(e->path, err);
		_cleanup_close_ int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || fchown(fd, e->uid, e->gid) < 0)
			return SYSERR(err, "setting up directory %s", e->path);
		if ((e->eflags & EF_OPAQUE) && fsetxattr(fd, OPAQUE_XATTR, "y", 1, 0) < 0) {
			if (errno != EOPNOTSUPP)
				return SYSERR(err, "marking %s opaque", e->path);
			fm_debug(FM_C_DELTA_TRANSFER, "cannot mark %s opaque: not supported here", e->path);
		}
		if (r->ndirs == r->adirs) {
			r->adirs = r->adirs ? r->adirs * 2 : 64;
			r->dirs = realloc(r->dirs, r->adirs * sizeof(*r->dirs));
			if (!r->dirs)
				abort();
		}
		r->dirs[r->ndirs++] = (dir_meta){ fm_xstrdup(e->path), e->mode, e->mtime };
		return 0;
	}
	case K_FILE:
		if (e->eflags & EF_REUSE)
			return reuse_file(r, pfd, name, err);
		if (e->size > r->max_bytes - r->announced)
			return fm_error_set(err, -EFBIG, "transfer exceeds the receiver's limit of %" PRIu64
					    " bytes (at %s, %" PRIu64 " bytes)", r->max_bytes, e->path,
					    e->size);
		r->announced += e->size;
		r->file_fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (r->file_fd < 0)
			return create_failed(e->path, err);
		r->file_left = e->size;
		return e->size == 0 ? finish_file(r, err) : 0;
	case K_SYMLINK:
		if (symlinkat(e->target, pfd, name) < 0)
			return create_failed(e->path, err);
		break;
	default: /* K_WHITEOUT: only ever 0:0, whatever the sender had in mind */
		if (mknodat(pfd, name, S_IFCHR | 0600, makedev(0, 0)) < 0)
			return create_failed(e->path, err);
		if (fchmodat(pfd, name, e->mode, AT_SYMLINK_NOFOLLOW) < 0)
			return SYSERR(err, "setting mode of %s", e->path);
		break;
	}
	if (fchownat(pfd, name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0 ||
	    utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return SYSERR(err, "setting owner and mtime of %s", e->path);
	return 0;
}

static int recv_data(receiver *r, const frame *f, fm_error *err)
{
	if (r->file_fd < 0)
		return fm_error_set(err, -EPROTO, "DATA frame %" PRIu32 " does not follow a file entry",
				    f->seq);
	const uint8_t *data = f->payload;
	uint32_t len = f->len;
	if (f->flags & FF_ZSTD) {
		len = f->len >= 4 ? fm_get_le32(f->payload) : 0;
		if (len == 0 || len > FM_XFER_CHUNK || len > r->file_left ||
		    !fm_decompress_stream(&r->dctx, f->payload + 4, f->len - 4, r->zbuf, len))
			return fm_error_set(err, -EBADMSG, "file %s: a compressed DATA frame does not decompress "
					    "to what it announces", r->cur.path);
		data = r->zbuf;
	}
	if (len > r->file_left)
		return fm_error_set(err, -EPROTO, "file %s: more data than the %" PRIu64 " bytes announced",
				    r->cur.path, r->cur.size);
	for (const uint8_t *p = data, *end = p + len; p < end;) {
		ssize_t k = write(r->file_fd, p, (size_t)(end - p));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return SYSERR(err, "writing %s", r->cur.path);
		p += k;
	}
	r->file_left -= len;
	r->st->payload_bytes += len;
	stats_update(r->st, &r->c, r->start_us);
	if (r->o->progress)
		r->o->progress(r->o->progress_opaque, r->st);
	return r->file_left == 0 ? finish_file(r, err) : 0;
}

static int recv_end(receiver *r, const frame *f, fm_error *err)
{
	if (f->len != END_LEN)
		return fm_error_set(err, -EPROTO, "END frame has %" PRIu32 " bytes instead of %d", f->len,
				    END_LEN);
	if (r->file_fd >= 0)
		return fm_error_set(err, -EPROTO, "file %s is incomplete: %" PRIu64 " of %" PRIu64 " bytes "
				    "missing at the end of the stream", r->cur.path, r->file_left,
				    r->cur.size);
	uint32_t entries = fm_get_le32(f->payload);
	uint64_t bytes = fm_get_le64(f->payload + 8);
	if (entries != r->st->entries || bytes != r->st->payload_bytes)
		return fm_error_set(err, -EPROTO, "sender announced %" PRIu32 " entries and %" PRIu64
				    " bytes, but %" PRIu32 " entries and %" PRIu64 " bytes arrived",
				    entries, bytes, r->st->entries, r->st->payload_bytes);
	/* Directories last: creating children changed their mtimes, and until now they
	 * were 0700, so nobody could look into a half-received tree (nor would a
	 * read-only directory mode stop us from filling it). */
	for (size_t i = r->ndirs; i-- > 0;) {
		struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, r->dirs[i].mtime };
		const char *name;
		int pfd = open_parent(r, r->dirs[i].path, &name, err);
		if (pfd < 0)
			return pfd;
		_cleanup_close_ int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || fchmod(fd, r->dirs[i].mode) < 0 || futimens(fd, ts) < 0)
			return SYSERR(err, "setting mode and mtime of %s", r->dirs[i].path);
	}
	return 0;
}

/* ACK: best effort for errors (the connection may be the thing that broke). */
static int send_ack(conn *c, int status, uint32_t entries, uint64_t bytes, const char *msg, fm_error *err)
{
	uint8_t b[FMX_HDR + ACK_FIXED + FM_ERROR_MSG_MAX];
	size_t n = msg ? strnlen(msg, FM_ERROR_MSG_MAX) : 0;

	fm_put_le32(b + FMX_HDR, (uint32_t)status);
	fm_put_le32(b + FMX_HDR + 4, entries);
	fm_put_le64(b + FMX_HDR + 8, bytes);
	memcpy(b + FMX_HDR + ACK_FIXED, msg ? msg : "", n);
	frame_seal(c, b, T_ACK, 0, (uint32_t)(ACK_FIXED + n));
	if (status == 0)
		return conn_send(c, b, FMX_HDR + ACK_FIXED + n, false, err);
	(void)send(c->fd, b, FMX_HDR + ACK_FIXED + n, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)shutdown(c->fd, SHUT_WR);
	return 0;
}

/* Reads the HELLO: 0 if authenticated, -EACCES for anything that is not our sender. */
static int recv_hello(conn *c, uint8_t *buf, const uint8_t *token, fm_error *err)
{
	frame f;
	uint8_t diff = 0;
	int r = frame_recv(c, buf, NULL, &f, err);

	if (r < 0)
		return r;
	if (f.type != T_HELLO || f.len < HELLO_LEN)
		return fm_error_set(err, -EACCES, "expected HELLO, got a %s frame", type_name(f.type));
	for (int i = 0; i < FM_XFER_TOKEN_LEN; i++) /* constant time: no early exit */
		diff |= (uint8_t)(f.payload[4 + i] ^ token[i]);
	if (diff)
		return fm_error_set(err, -EACCES, "authentication failed: wrong transfer token");
	if (fm_get_le32(f.payload) != FMX_VERSION || f.len != HELLO_LEN)
		return fm_error_set(err, -EPROTONOSUPPORT, "sender speaks transfer protocol version %" PRIu32
				    ", this agent version %d: upgrade one of the agents", fm_get_le32(f.payload),
				    FMX_VERSION);
	return 0;
}

/* Waits for a connection that authenticates; returns its fd in c. */
static int accept_sender(fm_xfer_listener *l, const uint8_t *token, int accept_timeout_ms, receiver *r,
			 fm_error *err)
{
	int64_t deadline = fm_now_mono_ms() + accept_timeout_ms;
	unsigned rejected = 0;
	char why[640] = "";

	for (;;) {
		struct pollfd p[2] = { { .fd = l->fd, .events = POLLIN },
				       { .fd = l->cancel_fd, .events = POLLIN } };
		struct sockaddr_storage sa;
		socklen_t salen = sizeof(sa);
		char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";
		fm_error herr = FM_ERROR_INIT;
		int64_t left = deadline - fm_now_mono_ms();

		if (left <= 0)
			return fm_error_set(err, -ETIMEDOUT, "no sender connected within %d ms%s%u%s%s%s",
					    accept_timeout_ms, rejected ? " (" : "", rejected,
					    rejected ? " connection(s) rejected, last: " : "", why,
					    rejected ? ")" : "");
		int n = poll(p, 2, (int)left);
		if (n < 0 && errno != EINTR)
			return SYSERR(err, "waiting for the sender");
		if (n > 0 && p[1].revents)
			return fm_error_set(err, -ECANCELED, "waiting for the sender was cancelled");
		if (n <= 0)
			continue;
		_cleanup_close_ int fd = accept4(l->fd, (struct sockaddr *)&sa, &salen,
						 SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				continue;
			return SYSERR(err, "accepting the sender's connection");
		}
		(void)getnameinfo((struct sockaddr *)&sa, salen, host, sizeof(host), serv, sizeof(serv),
				  NI_NUMERICHOST | NI_NUMERICSERV);
		sock_setup(fd, r->c.timeout_ms);
		r->c.fd = fd;
		r->c.rx_seq = r->c.tx_seq = 0;
		r->c.wire = 0;
		int k = recv_hello(&r->c, r->buf, token, &herr);
		if (k == 0 || k == -ECANCELED || k == -EPROTONOSUPPORT) {
			/* From here on the peer is our sender: its failures are ours. */
			r->c.fd = TAKE_FD(fd);
			fm_error_move(err, &herr);
			return k;
		}
		/* Anyone can connect; only the token holder may make the transfer fail. */
		send_ack(&r->c, k, 0, 0, herr.msg, NULL);
		snprintf(why, sizeof(why), "%.80s:%.8s: %.300s", host, serv, herr.msg);
		fm_debug(FM_C_DELTA_TRANSFER, "rejected transfer connection from %s", why);
		r->c.fd = -1;
		rejected++;
		fm_error_clear(&herr);
	}
}

static int receive_stream(receiver *r, fm_error *err)
{
	for (;;) {
		frame f;
		int k = frame_recv(&r->c, r->buf, r->file_fd >= 0 ? r->cur.path : NULL, &f, err);
		if (k < 0)
			return k;
		switch (f.type) {
		case T_ENTRY:
			k = recv_entry(r, f.payload, f.len, err);
			break;
		case T_DATA:
			k = recv_data(r, &f, err);
			break;
		case T_END:
			return recv_end(r, &f, err);
		default:
			return fm_error_set(err, -EPROTO, "unexpected %s frame %" PRIu32 " (type %u) from "
					    "sender", type_name(f.type), f.seq, f.type);
		}
		if (k < 0)
			return k;
	}
}

static int dir_is_empty(int fd)
{
	struct dirent **names;
	int n = scandirat(fd, ".", &names, not_dots, NULL);

	if (n < 0)
		return -errno;
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return n == 0;
}

int fm_xfer_receive(fm_xfer_listener *l, const uint8_t token[FM_XFER_TOKEN_LEN],
		    const char *dest_dir, int accept_timeout_ms, const fm_xfer_opts *opts,
		    fm_xfer_stats *stats, fm_error *err)
{
	static const fm_xfer_opts defaults = FM_XFER_OPTS_INIT;
	fm_xfer_stats local = { 0 };
	fm_error e = FM_ERROR_INIT; /* ours alone: its text goes back to the sender */
	_cleanup_free_ uint8_t *buf = NULL, *zbuf = NULL;
	_cleanup_close_ int root_fd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	receiver r = {
		.o = opts ? opts : &defaults, .st = stats ? stats : &local, .root_fd = root_fd,
		.parent_fd = -1, .file_fd = -1, .reuse_fd = -1,
		.c = { .fd = -1, .cancel_fd = l->cancel_fd, .timeout_ms = io_timeout(opts),
		       .peer = "sender" },
	};
	int k;

	*r.st = (fm_xfer_stats){ 0 };
	r.max_bytes = r.o->max_bytes ? r.o->max_bytes : FMX_DEFAULT_MAX_BYTES;
	if (root_fd < 0)
		return SYSERR(err, "opening destination %s", dest_dir);
	k = dir_is_empty(root_fd);
	if (k <= 0)
		return fm_error_set(err, k < 0 ? k : -ENOTEMPTY, "destination %s %s", dest_dir,
				    k < 0 ? "cannot be listed" : "is not empty: refusing to mix transfers");
	if (r.o->reuse_dir && (r.reuse_fd = open(r.o->reuse_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return SYSERR(err, "opening the pre-synced tree %s", r.o->reuse_dir);
	buf = r.buf = fm_xmalloc(FMX_HDR + FMX_MAX_FRAME);
	zbuf = r.zbuf = fm_xmalloc(FM_XFER_CHUNK);

	k = accept_sender(l, token, accept_timeout_ms, &r, &e);
	r.start_us = fm_now_mono_us();
	if (k >= 0)
		k = receive_stream(&r, &e);
	if (k >= 0)
		k = send_ack(&r.c, 0, r.st->entries, r.st->payload_bytes, NULL, &e);
	else if (r.c.fd >= 0 && k != -ECANCELED)
		send_ack(&r.c, k, r.st->entries, r.st->payload_bytes, e.msg, NULL);

	stats_update(r.st, &r.c, r.start_us);
	if (r.file_fd >= 0)
		close(r.file_fd);
	if (r.parent_fd >= 0)
		close(r.parent_fd);
	if (r.reuse_fd >= 0)
		close(r.reuse_fd);
	fm_decompressor_free(&r.dctx);
	if (r.c.fd >= 0)
		close(r.c.fd);
	for (size_t i = 0; i < r.ndirs; i++)
		free(r.dirs[i].path);
	free(r.dirs);
	if (k < 0) {
		fm_error_move(err, &e);
		return k;
	}
	fm_debug(FM_C_DELTA_TRANSFER, "received %" PRIu32 " entries, %" PRIu64 " bytes into %s",
		 r.st->entries, r.st->payload_bytes, dest_dir);
	return 0;
}

int fm_xfer_listen(const char *bind_host, int port, fm_xfer_listener **out, fm_error *err)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	struct sockaddr_storage sa;
	socklen_t salen = sizeof(sa);
	char ps[16];
	int r, one = 1;
	_cleanup_close_ int fd = -1;

	snprintf(ps, sizeof(ps), "%d", port);
	r = getaddrinfo(bind_host && *bind_host ? bind_host : NULL, ps, &hints, &ai);
	if (r != 0)
		return fm_error_set(err, -EADDRNOTAVAIL, "cannot resolve %s: %s", bind_host, gai_strerror(r));
	r = -EADDRNOTAVAIL;
	for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, 16) < 0) {
			r = -errno;
			if (fd >= 0)
				close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return fm_error_set(err, r, "cannot listen on %s:%d for transfers: %s",
				    bind_host ? bind_host : "*", port, strerror(-r));
	if (getsockname(fd, (struct sockaddr *)&sa, &salen) < 0)
		return SYSERR(err, "getsockname");
	int cfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (cfd < 0)
		return SYSERR(err, "eventfd");
	fm_xfer_listener *l = fm_xmalloc(sizeof(*l));
	l->cancel_fd = cfd;
	l->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
						 : ((struct sockaddr_in *)&sa)->sin_port);
	l->fd = TAKE_FD(fd);
	*out = l;
	return 0;
}

int fm_xfer_listener_port(const fm_xfer_listener *l) { return l ? l->port : -1; }
int fm_xfer_listener_fd(const fm_xfer_listener *l) { return l->fd; }
int fm_xfer_listener_cancel_fd(const fm_xfer_listener *l) { return l->cancel_fd; }

void fm_xfer_listener_cancel(fm_xfer_listener *l)
{
	uint64_t one = 1;
	/* The eventfd stays readable: a cancel that races ahead of receive still counts. */
	if (l)
		(void)!write(l->cancel_fd, &one, sizeof(one));
}

void fm_xfer_listener_free(fm_xfer_listener *l)
{
	if (!l)
		return;
	close(l->fd);
	close(l->cancel_fd);
	free(l);
}
