/* Delta Transfer over loopback: a receiver thread, the sender (or a hand-built
 * hostile peer) in the test thread.  Every test runs in its own sandbox under /tmp
 * holding src/, dst/ (the receiver's root) and outside/ (which must stay empty). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <dirent.h>
#include <time.h>
#include <xxhash.h>

#include "basic/util.h"
#include "sync/compress.h"
#include "sync/transfer.h"

/* The wire format, restated from transfer.c so these tests notice if it drifts. */
#define SEED 0x464d58317846ULL
#define EF_REUSE 0x02
enum { T_HELLO = 1, T_ENTRY, T_DATA, T_END, T_ACK };
enum { K_DIR = 1, K_FILE, K_SYMLINK, K_WHITEOUT };

static const char TOKEN_S[FM_XFER_TOKEN_LEN + 1] = "0123456789abcdef";
static const char BAD_TOKEN_S[FM_XFER_TOKEN_LEN + 1] = "0123456789abcdeX"; /* last byte differs */
#define TOKEN ((const uint8_t *)TOKEN_S)
#define BAD_TOKEN ((const uint8_t *)BAD_TOKEN_S)

typedef struct sandbox {
	char root[64];
	char src[96], dst[96], outside[96];
} sandbox;

static void sandbox_init(sandbox *sb)
{
	strcpy(sb->root, "/tmp/fm-xfer-test-XXXXXX");
	assert_non_null(mkdtemp(sb->root));
	snprintf(sb->src, sizeof(sb->src), "%s/src", sb->root);
	snprintf(sb->dst, sizeof(sb->dst), "%s/dst", sb->root);
	snprintf(sb->outside, sizeof(sb->outside), "%s/outside", sb->root);
	assert_int_equal(mkdir(sb->src, 0755), 0);
	assert_int_equal(mkdir(sb->dst, 0755), 0);
	assert_int_equal(mkdir(sb->outside, 0755), 0);
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

/* Nothing may appear next to dst/, nor in outside/, nor in / (the "/abs" paths). */
static void sandbox_done(sandbox *sb)
{
	struct stat st;

	assert_int_equal(count_entries(sb->root), 3);
	assert_int_equal(count_entries(sb->outside), 0);
	assert_int_equal(lstat("/evil", &st), -1);
	assert_int_equal(lstat("/tmp/evil", &st), -1);
	assert_int_equal(fm_rm_rf(sb->root), 0);
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
}

static void mkpath(char *buf, size_t len, const char *a, const char *b)
{
	snprintf(buf, len, "%s/%s", a, b);
}

/* Fixed-seed pseudo-random content: reproducible failures. */
static void *pseudo_random(size_t len, uint64_t seed)
{
	uint8_t *p = fm_xmalloc(len);
	for (size_t i = 0; i < len; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		p[i] = (uint8_t)(seed >> 24);
	}
	return p;
}

#define BIG_LEN (3 * 1024 * 1024 + 512 * 1024)

/* ---- receiver thread ---- */

typedef struct rx {
	fm_xfer_listener *l;
	const uint8_t *token;
	const char *dest;
	int accept_ms;
	fm_xfer_opts opts;
	int rc;
	int64_t elapsed_ms;
	fm_error err;
	fm_xfer_stats st;
	pthread_t th;
} rx;

static void *rx_main(void *arg)
{
	rx *x = arg;
	int64_t t0 = fm_now_mono_ms();
	x->rc = fm_xfer_receive(x->l, x->token, x->dest, x->accept_ms, &x->opts, &x->st, &x->err);
	x->elapsed_ms = fm_now_mono_ms() - t0;
	return NULL;
}

static void rx_init(rx *x, const char *dest, int accept_ms, int io_ms)
{
	fm_error err = FM_ERROR_INIT;
	*x = (rx){ .token = TOKEN, .dest = dest, .accept_ms = accept_ms, .opts = FM_XFER_OPTS_INIT };
	x->opts.io_timeout_ms = io_ms;
	assert_int_equal(fm_xfer_listen("127.0.0.1", 0, &x->l, &err), 0);
	assert_true(fm_xfer_listener_port(x->l) > 0);
}

static int rx_go(rx *x)
{
	assert_int_equal(pthread_create(&x->th, NULL, rx_main, x), 0);
	return fm_xfer_listener_port(x->l);
}

static int rx_start(rx *x, const char *dest, int accept_ms, int io_ms)
{
	rx_init(x, dest, accept_ms, io_ms);
	return rx_go(x);
}

static void rx_join(rx *x)
{
	assert_int_equal(pthread_join(x->th, NULL), 0);
	fm_xfer_listener_free(x->l);
	if (x->rc < 0)
		print_message("    receiver: %d %s\n", x->rc, x->err.msg);
}

/* ---- a hand-built peer ---- */

typedef struct raw {
	int fd;
	uint32_t seq;
} raw;

static void raw_connect(raw *r, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 5 };
	r->seq = 0;
	r->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(r->fd >= 0);
	assert_int_equal(connect(r->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
}

static void raw_write(raw *r, const void *p, size_t len)
{
	/* The receiver may already have hung up: that is not the test's failure. */
	(void)!send(r->fd, p, len, MSG_NOSIGNAL);
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* Encodes one frame into out (24 + len bytes). */
static size_t encode(uint8_t *out, uint8_t type, uint32_t seq, const void *payload, size_t len)
{
	memcpy(out, "FMX1", 4);
	out[4] = type;
	out[5] = out[6] = out[7] = 0;
	put32(out + 8, (uint32_t)len);
	put32(out + 12, seq);
	if (len)
		memcpy(out + 24, payload, len);
	put64(out + 16, XXH3_64bits_withSeed(out + 24, len, XXH3_64bits_withSeed(out, 16, SEED)));
	return 24 + len;
}

static void raw_frame(raw *r, uint8_t type, const void *payload, size_t len)
{
	uint8_t *b = fm_xmalloc(24 + len);
	raw_write(r, b, encode(b, type, r->seq++, payload, len));
	free(b);
}

static void raw_hello(raw *r, const uint8_t *token)
{
	uint8_t p[20];
	put32(p, 3); /* the protocol's version */
	memcpy(p + 4, token, 16);
	raw_frame(r, T_HELLO, p, sizeof(p));
}

static void raw_entry_flags(raw *r, uint8_t kind, uint8_t flags, const char *path, uint64_t size,
			    const char *target)
{
	size_t plen = strlen(path), tlen = target ? strlen(target) : 0;
	uint8_t p[40 + 8192] = { kind, flags, (uint8_t)plen, (uint8_t)(plen >> 8) };
	put32(p + 4, kind == K_DIR ? 0755 : 0644);
	put64(p + 16, 1600000000);
	put32(p + 28, (uint32_t)tlen);
	put64(p + 32, size);
	memcpy(p + 40, path, plen);
	memcpy(p + 40 + plen, target ? target : "", tlen);
	raw_frame(r, T_ENTRY, p, 40 + plen + tlen);
}

static void raw_entry(raw *r, uint8_t kind, const char *path, uint64_t size, const char *target)
{
	raw_entry_flags(r, kind, 0, path, size, target);
}

static void raw_end(raw *r, uint32_t entries, uint64_t bytes)
{
	uint8_t p[16] = { 0 };
	put32(p, entries);
	put64(p + 8, bytes);
	raw_frame(r, T_END, p, sizeof(p));
}

/* The receiver must answer a failure with an ACK frame carrying a non-zero status. */
static void raw_expect_error_ack(raw *r)
{
	uint8_t h[24 + 16];
	size_t got = 0;
	while (got < sizeof(h)) {
		ssize_t k = recv(r->fd, h + got, sizeof(h) - got, 0);
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	assert_int_equal(got, sizeof(h));
	assert_memory_equal(h, "FMX1", 4);
	assert_int_equal(h[4], T_ACK);
	assert_true((int32_t)get32(h + 24) < 0);
}

/* ---- tree comparison ---- */

/* Compares a (source) with b (received), recursively; returns the number of entries
 * that must have been transferred (fifos are skipped by design). */
static int compare_node(const char *a, const char *b)
{
	struct stat sa, sb;
	int n = 1;

	assert_int_equal(lstat(a, &sa), 0);
	if (S_ISFIFO(sa.st_mode)) {
		assert_int_equal(lstat(b, &sb), -1);
		return 0;
	}
	if (lstat(b, &sb) < 0)
		fail_msg("%s did not arrive", b);
	assert_int_equal(sa.st_mode, sb.st_mode);
	assert_int_equal(sa.st_uid, sb.st_uid);
	assert_int_equal(sa.st_gid, sb.st_gid);
	assert_int_equal(sa.st_size, sb.st_size);
	assert_int_equal(sa.st_rdev, sb.st_rdev);
	assert_int_equal(sa.st_mtim.tv_sec, sb.st_mtim.tv_sec);
	assert_int_equal(sa.st_mtim.tv_nsec, sb.st_mtim.tv_nsec);
	if (S_ISREG(sa.st_mode)) {
		char *ca, *cb;
		size_t la, lb;
		assert_int_equal(fm_read_file(a, 64 << 20, &ca, &la), 0);
		assert_int_equal(fm_read_file(b, 64 << 20, &cb, &lb), 0);
		assert_int_equal(la, lb);
		assert_memory_equal(ca, cb, la);
		free(ca);
		free(cb);
	} else if (S_ISLNK(sa.st_mode)) {
		char ta[4096] = "", tb[4096] = "";
		assert_true(readlink(a, ta, sizeof(ta) - 1) > 0);
		assert_true(readlink(b, tb, sizeof(tb) - 1) > 0);
		assert_string_equal(ta, tb);
	} else if (S_ISDIR(sa.st_mode)) {
		DIR *d = opendir(a);
		struct dirent *de;
		int direct = 0;

		assert_non_null(d);
		while ((de = readdir(d))) {
			char pa[4096], pb[4096];
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			mkpath(pa, sizeof(pa), a, de->d_name);
			mkpath(pb, sizeof(pb), b, de->d_name);
			int k = compare_node(pa, pb);
			direct += k > 0;
			n += k;
		}
		closedir(d);
		assert_int_equal(count_entries(b), direct); /* nothing extra arrived */
	}
	return n;
}

static void set_mtime(const char *path, time_t sec, long nsec)
{
	struct timespec ts[2] = { { sec, nsec }, { sec, nsec } };
	assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static int progress_calls;
static void on_progress(void *opaque, const fm_xfer_stats *st)
{
	(void)opaque;
	assert_true(st->payload_bytes > 0);
	progress_calls++;
}

/* Builds src/images and src/upper; returns whether the opaque xattr could be set. */
static bool build_tree(sandbox *sb)
{
	char p[512];
	void *big = pseudo_random(BIG_LEN, 0x1234567);
	bool opaque;

	mkpath(p, sizeof(p), sb->src, "images");
	assert_int_equal(mkdir(p, 0700), 0);
	mkpath(p, sizeof(p), sb->src, "images/pages-1.img");
	write_file(p, big, BIG_LEN, 0600);
	set_mtime(p, 1700000000, 123456789);
	free(big);
	mkpath(p, sizeof(p), sb->src, "images/empty.img");
	write_file(p, "", 0, 0644);
	mkpath(p, sizeof(p), sb->src, "images/sub");
	assert_int_equal(fm_mkdir_p(p, 0755), 0);
	mkpath(p, sizeof(p), sb->src, "images/sub/deeper");
	assert_int_equal(mkdir(p, 0750), 0);
	mkpath(p, sizeof(p), sb->src, "images/sub/deeper/note.txt");
	write_file(p, "hello\n", 6, 0640);
	assert_int_equal(chown(p, 1234, 5678), 0);
	mkpath(p, sizeof(p), sb->src, "images/sub/deeper/setuid");
	write_file(p, "#!/bin/sh\n", 10, 0755);
	assert_int_equal(chown(p, 0, 0), 0);
	assert_int_equal(chmod(p, 04755), 0);
	mkpath(p, sizeof(p), sb->src, "images/sub/deeper");
	set_mtime(p, 1500000000, 42);

	mkpath(p, sizeof(p), sb->src, "upper/usr/bin");
	assert_int_equal(fm_mkdir_p(p, 0755), 0);
	mkpath(p, sizeof(p), sb->src, "upper/usr/bin/sh");
	assert_int_equal(symlink("/bin/busybox", p), 0);
	assert_int_equal(lchown(p, 1000, 1000), 0);
	set_mtime(p, 1600000000, 5);
	mkpath(p, sizeof(p), sb->src, "upper/etc");
	assert_int_equal(mkdir(p, 0755), 0);
	mkpath(p, sizeof(p), sb->src, "upper/etc/removed");
	assert_int_equal(mknod(p, S_IFCHR | 0000, makedev(0, 0)), 0);
	mkpath(p, sizeof(p), sb->src, "upper/fifo");
	assert_int_equal(mkfifo(p, 0644), 0);
	mkpath(p, sizeof(p), sb->src, "upper/opaque");
	assert_int_equal(mkdir(p, 0755), 0);
	opaque = setxattr(p, "trusted.overlay.opaque", "y", 1, 0) == 0;
	mkpath(p, sizeof(p), sb->src, "upper/opaque/keep");
	write_file(p, "kept", 4, 0644);
	return opaque;
}

static void test_path_valid(void **state)
{
	static const struct { const char *p; bool ok; } t[] = {
		{ "images", true }, { "images/pages-1.img", true }, { "a/b/c", true }, { ".hidden", true },
		{ "..x", true }, { "x..", true }, { "a/...", true },
		{ "", false }, { "/abs", false }, { "../evil", false }, { "a/../b", false },
		{ "a/..", false },
		{ ".", false }, { "..", false }, { "a/./b", false }, { "./a", false }, { "a//b", false },
		{ "a/", false }, { "/", false }, { "//", false },
	};
	char buf[8192];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		if (fm_xfer_path_valid(t[i].p, strlen(t[i].p)) != t[i].ok)
			fail_msg("fm_xfer_path_valid(\"%s\") should be %d", t[i].p, t[i].ok);
	}
	assert_false(fm_xfer_path_valid(NULL, 0));
	assert_false(fm_xfer_path_valid("a\0b", 3));          /* NUL inside */
	assert_true(fm_xfer_path_valid("a/b\0junk", 3));       /* only len bytes count */
	memset(buf, 'a', 4096);
	assert_true(fm_xfer_path_valid(buf, 255));
	assert_false(fm_xfer_path_valid(buf, 256));            /* component > NAME_MAX */
	for (int i = 0; i < 4096; i += 2)
		buf[i + 1] = '/';
	assert_true(fm_xfer_path_valid(buf, 64 * 2 - 1));      /* depth 64 */
	assert_false(fm_xfer_path_valid(buf, 65 * 2 - 1));     /* depth 65 */
	memset(buf, 'a', sizeof(buf));
	for (int i = 200; i < 8192; i += 201)
		buf[i] = '/';
	assert_true(fm_xfer_path_valid(buf, 4096 - 4096 % 201 - 1));
	assert_false(fm_xfer_path_valid(buf, 4097));           /* longer than 4096 */
}

static void test_roundtrip(void **state)
{
	sandbox sb;
	rx x;
	char images[256], upper[256], p1[512], p2[512];
	fm_xfer_opts o = FM_XFER_OPTS_INIT;
	fm_xfer_stats st;
	fm_error err = FM_ERROR_INIT;
	bool opaque;

	(void)state;
	sandbox_init(&sb);
	opaque = build_tree(&sb);
	mkpath(images, sizeof(images), sb.src, "images");
	mkpath(upper, sizeof(upper), sb.src, "upper");
	fm_xfer_tree trees[] = { { images, "images" }, { upper, "upper" } };
	o.progress = on_progress;
	progress_calls = 0;

	int port = rx_start(&x, sb.dst, 5000, 5000);
	int rc = fm_xfer_send("127.0.0.1", port, TOKEN, trees, 2, &o, &st, &err);
	if (rc < 0)
		print_message("    sender: %s\n", err.msg);
	assert_int_equal(rc, 0);
	rx_join(&x);
	assert_int_equal(x.rc, 0);

	/* images: root, pages, empty, sub, deeper, note, setuid = 7;
	 * upper: root, usr, bin, sh, etc, removed, opaque, keep = 8 (fifo skipped) */
	mkpath(p2, sizeof(p2), sb.dst, "images");
	assert_int_equal(compare_node(images, p2), 7);
	mkpath(p2, sizeof(p2), sb.dst, "upper");
	assert_int_equal(compare_node(upper, p2), 8);
	assert_int_equal(count_entries(sb.dst), 2);
	assert_int_equal(st.entries, 15);
	assert_int_equal(x.st.entries, 15);
	assert_int_equal(st.payload_bytes, BIG_LEN + 6 + 10 + 4);
	assert_int_equal(x.st.payload_bytes, st.payload_bytes);
	assert_true(st.wire_bytes > st.payload_bytes && x.st.wire_bytes == st.wire_bytes);
	assert_true(st.duration_us > 0 && st.rate_bps > 0 && x.st.rate_bps > 0);
	assert_true(progress_calls >= 7); /* 4 chunks of pages-1.img + 3 small files */

	/* The symlink arrived as a symlink, not as a copy of its target. */
	struct stat s;
	mkpath(p1, sizeof(p1), sb.dst, "upper/usr/bin/sh");
	assert_int_equal(lstat(p1, &s), 0);
	assert_true(S_ISLNK(s.st_mode));
	mkpath(p1, sizeof(p1), sb.dst, "upper/etc/removed");
	assert_int_equal(lstat(p1, &s), 0);
	assert_true(S_ISCHR(s.st_mode) && s.st_rdev == makedev(0, 0));
	if (opaque) {
		char v[4] = "";
		mkpath(p1, sizeof(p1), sb.dst, "upper/opaque");
		assert_int_equal(getxattr(p1, "trusted.overlay.opaque", v, sizeof(v)), 1);
		assert_int_equal(v[0], 'y');
		mkpath(p1, sizeof(p1), sb.dst, "upper/etc");
		assert_true(getxattr(p1, "trusted.overlay.opaque", v, sizeof(v)) < 0);
	} else {
		print_message("    trusted xattrs unsupported on /tmp: opaque check skipped\n");
	}
	sandbox_done(&sb);
}

static void test_corrupt(void **state)
{
	sandbox sb;
	rx x;
	char images[256];
	fm_xfer_opts o = FM_XFER_OPTS_INIT;
	fm_error err = FM_ERROR_INIT;

	(void)state;
	sandbox_init(&sb);
	build_tree(&sb);
	mkpath(images, sizeof(images), sb.src, "images");
	fm_xfer_tree trees[] = { { images, "images" } };
	o.fault_corrupt_offset = 1000000;

	int port = rx_start(&x, sb.dst, 5000, 5000);
	int rc = fm_xfer_send("127.0.0.1", port, TOKEN, trees, 1, &o, NULL, &err);
	rx_join(&x);
	assert_int_equal(rc, -EBADMSG); /* the receiver's verdict reaches the sender */
	assert_non_null(strstr(err.msg, "receiver rejected the transfer: checksum mismatch"));
	assert_int_equal(x.rc, -EBADMSG);
	assert_non_null(strstr(x.err.msg, "checksum mismatch in DATA frame"));
	assert_non_null(strstr(x.err.msg, "images/pages-1.img"));
	sandbox_done(&sb);
}

static void test_wrong_token(void **state)
{
	sandbox sb;
	rx x;
	char images[256];
	fm_error err = FM_ERROR_INIT;

	(void)state;
	sandbox_init(&sb);
	mkpath(images, sizeof(images), sb.src, "images");
	assert_int_equal(mkdir(images, 0755), 0);
	fm_xfer_tree trees[] = { { images, "images" } };

	/* A wrong token is turned away, and the receiver still takes the right one. */
	int port = rx_start(&x, sb.dst, 5000, 2000);
	assert_int_equal(fm_xfer_send("127.0.0.1", port, BAD_TOKEN, trees, 1, NULL, NULL, &err), -EACCES);
	print_message("    sender: %s\n", err.msg);
	assert_non_null(strstr(err.msg, "wrong transfer token"));
	fm_error_clear(&err);
	assert_int_equal(fm_xfer_send("127.0.0.1", port, TOKEN, trees, 1, NULL, NULL, &err), 0);
	rx_join(&x);
	assert_int_equal(x.rc, 0);
	assert_int_equal(x.st.entries, 1);
	assert_int_equal(fm_rm_rf(sb.dst), 0);
	assert_int_equal(mkdir(sb.dst, 0755), 0);

	/* Only wrong tokens: the wait ends at accept_timeout_ms. */
	port = rx_start(&x, sb.dst, 600, 2000);
	assert_true(fm_xfer_send("127.0.0.1", port, BAD_TOKEN, trees, 1, NULL, NULL, &err) < 0);
	fm_error_clear(&err);
	rx_join(&x);
	assert_int_equal(x.rc, -ETIMEDOUT);
	assert_non_null(strstr(x.err.msg, "no sender connected within 600 ms"));
	assert_non_null(strstr(x.err.msg, "wrong transfer token"));
	assert_true(x.elapsed_ms >= 550 && x.elapsed_ms < 3000);
	assert_int_equal(count_entries(sb.dst), 0);
	sandbox_done(&sb);
}

/* Junk before a valid HELLO is an unauthenticated peer: dropped, the wait goes on. */
static void test_garbage_before_hello(void **state)
{
	sandbox sb;
	rx x;
	raw r;
	uint8_t *junk = pseudo_random(4096, 99);
	uint8_t huge[24] = "FMX1";

	(void)state;
	sandbox_init(&sb);
	int port = rx_start(&x, sb.dst, 800, 2000);
	raw_connect(&r, port);
	raw_write(&r, junk, 4096);
	raw_expect_error_ack(&r);
	close(r.fd);
	raw_connect(&r, port);
	put32(huge + 8, 0xfffffff0u);
	raw_write(&r, huge, sizeof(huge));
	raw_expect_error_ack(&r);
	close(r.fd);
	rx_join(&x);
	assert_int_equal(x.rc, -ETIMEDOUT);
	assert_non_null(strstr(x.err.msg, "2 connection(s) rejected"));
	assert_non_null(strstr(x.err.msg, "announces 4294967280 bytes"));
	assert_int_equal(count_entries(sb.dst), 0);
	free(junk);
	sandbox_done(&sb);
}

/* After a valid HELLO, anything malformed fails the transfer with a clear message. */
static void test_garbage_after_hello(void **state)
{
	enum { BAD_MAGIC, HUGE_LEN, BAD_SUM, SEQ_GAP, UNKNOWN_TYPE, DATA_NO_FILE, JUNK, SHORT_FILE,
	       LONG_FILE, BAD_TOTALS, SECOND_HELLO, BAD_ENTRY, EARLY_EOF, N_CASES };
	static const struct { int code; const char *msg; } want[N_CASES] = {
		[BAD_MAGIC] = { -EBADMSG, "bad magic 58585858 in frame 1" },
		[HUGE_LEN] = { -EBADMSG, "announces 4000000000 bytes" },
		[BAD_SUM] = { -EBADMSG, "checksum mismatch in ENTRY frame 1" },
		[SEQ_GAP] = { -EPROTO, "expected frame 1, got 7" },
		[UNKNOWN_TYPE] = { -EPROTO, "type 99" },
		[DATA_NO_FILE] = { -EPROTO, "does not follow a file entry" },
		[JUNK] = { -EBADMSG, "bad magic" },
		[SHORT_FILE] = { -EPROTO, "file f is incomplete: 50 of 100 bytes missing" },
		[LONG_FILE] = { -EPROTO, "more data than the 10 bytes announced" },
		[BAD_TOTALS] = { -EPROTO, "sender announced 5 entries" },
		[SECOND_HELLO] = { -EPROTO, "unexpected HELLO frame" },
		[BAD_ENTRY] = { -EPROTO, "inconsistent lengths" },
		[EARLY_EOF] = { -ECONNRESET, "closed the connection" },
	};
	uint8_t buf[256], zeros[100] = { 0 };

	(void)state;
	for (int c = 0; c < N_CASES; c++) {
		sandbox sb;
		rx x;
		raw r;

		sandbox_init(&sb);
		int port = rx_start(&x, sb.dst, 5000, 2000);
		raw_connect(&r, port);
		raw_hello(&r, TOKEN);
		switch (c) {
		case BAD_MAGIC:
			encode(buf, T_END, r.seq++, zeros, 16);
			memcpy(buf, "XXXX", 4);
			raw_write(&r, buf, 24 + 16);
			break;
		case HUGE_LEN:
			encode(buf, T_DATA, r.seq++, NULL, 0);
			put32(buf + 8, 4000000000u);
			raw_write(&r, buf, 24);
			break;
		case BAD_SUM: {
			size_t n = encode(buf, T_ENTRY, r.seq++, zeros, 48);
			buf[30] ^= 1; /* one bit of the payload */
			raw_write(&r, buf, n);
			break;
		}
		case SEQ_GAP:
			r.seq = 7;
			raw_end(&r, 0, 0);
			break;
		case UNKNOWN_TYPE:
			raw_frame(&r, 99, "x", 1);
			break;
		case DATA_NO_FILE:
			raw_frame(&r, T_DATA, "abc", 3);
			break;
		case JUNK: {
			uint8_t *junk = pseudo_random(65536, 7);
			raw_write(&r, junk, 65536);
			free(junk);
			break;
		}
		case SHORT_FILE:
			raw_entry(&r, K_FILE, "f", 100, NULL);
			raw_frame(&r, T_DATA, zeros, 50);
			raw_end(&r, 1, 50);
			break;
		case LONG_FILE:
			raw_entry(&r, K_FILE, "f", 10, NULL);
			raw_frame(&r, T_DATA, zeros, 11);
			break;
		case BAD_TOTALS:
			raw_entry(&r, K_DIR, "d", 0, NULL);
			raw_end(&r, 5, 0);
			break;
		case SECOND_HELLO:
			raw_hello(&r, TOKEN);
			break;
		case BAD_ENTRY:
			raw_frame(&r, T_ENTRY, zeros, 60);
			break;
		case EARLY_EOF:
			raw_entry(&r, K_DIR, "d", 0, NULL);
			shutdown(r.fd, SHUT_WR);
			break;
		}
		rx_join(&x);
		if (x.rc != want[c].code || !strstr(x.err.msg, want[c].msg))
			fail_msg("case %d: got %d \"%s\", want %d \"%s\"", c, x.rc, x.err.msg,
				 want[c].code, want[c].msg);
		if (c != EARLY_EOF)
			raw_expect_error_ack(&r);
		close(r.fd);
		sandbox_done(&sb);
	}
}

/* Paths that try to leave dst/: each must be refused with nothing created outside. */
static void test_hostile_paths(void **state)
{
	static const char *invalid[] = { "../evil", "/tmp/evil", "a//b", "a/./b", "a/..", "a/", "." };
	(void)state;

	for (size_t i = 0; i < ARRAY_SIZE(invalid) + 5; i++) {
		sandbox sb;
		rx x;
		raw r;
		char evil[256];

		sandbox_init(&sb);
		snprintf(evil, sizeof(evil), "%s/evil", sb.outside);
		int port = rx_start(&x, sb.dst, 5000, 2000);
		raw_connect(&r, port);
		raw_hello(&r, TOKEN);
		raw_entry(&r, K_DIR, "a", 0, NULL);
		switch ((int)i - (int)ARRAY_SIZE(invalid)) {
		case 0: /* a symlink to outside/, then a file through it */
			raw_entry(&r, K_SYMLINK, "a/link", 0, sb.outside);
			raw_entry(&r, K_FILE, "a/link/evil", 3, NULL);
			raw_frame(&r, T_DATA, "bad", 3);
			break;
		case 1: /* ... or a directory through it, at the top level */
			raw_entry(&r, K_SYMLINK, "link", 0, sb.outside);
			raw_entry(&r, K_DIR, "link/evil", 0, NULL);
			break;
		case 2: /* a child without its parent */
			raw_entry(&r, K_FILE, "nope/evil", 0, NULL);
			break;
		case 3: /* the same path twice: the second would replace the first */
			raw_entry(&r, K_SYMLINK, "a/x", 0, evil);
			raw_entry(&r, K_FILE, "a/x", 0, NULL);
			break;
		case 4: /* a symlink named like a directory that later gets children */
			raw_entry(&r, K_SYMLINK, "a/b", 0, "..");
			raw_entry(&r, K_SYMLINK, "a/b/evil", 0, evil);
			break;
		default:
			raw_entry(&r, K_FILE, invalid[i], 0, NULL);
			break;
		}
		raw_end(&r, 9, 0);
		rx_join(&x);
		assert_int_equal(x.rc, -EPROTO);
		if (i < ARRAY_SIZE(invalid))
			assert_non_null(strstr(x.err.msg, "invalid path"));
		raw_expect_error_ack(&r);
		close(r.fd);
		sandbox_done(&sb);
	}
}

/* Compressible files go zstd-compressed (AUTO), random ones raw; the tree
 * arrives intact either way, and corruption of a compressed frame is caught. */
static void test_compressed(void **state)
{
	sandbox sb;
	rx x;
	char images[256], p[512];
	fm_xfer_opts o = FM_XFER_OPTS_INIT;
	fm_xfer_stats st;
	fm_error err = FM_ERROR_INIT;
	size_t tlen = 3u << 20;
	_cleanup_free_ char *text = fm_xmalloc(tlen);
	_cleanup_free_ void *rnd = pseudo_random(1u << 20, 99);

	(void)state;
	for (size_t i = 0; i < tlen; i++)
		text[i] = "checkpoint line 0123456789\n"[i % 27];
	sandbox_init(&sb);
	mkpath(images, sizeof(images), sb.src, "images");
	assert_int_equal(mkdir(images, 0700), 0);
	mkpath(p, sizeof(p), images, "text.img");
	write_file(p, text, tlen, 0600);
	mkpath(p, sizeof(p), images, "random.img");
	write_file(p, rnd, 1u << 20, 0600);
	fm_xfer_tree trees[] = { { images, "images" } };
	o.compress = FM_COMPRESS_AUTO;

	int port = rx_start(&x, sb.dst, 5000, 5000);
	assert_int_equal(fm_xfer_send("127.0.0.1", port, TOKEN, trees, 1, &o, &st, &err), 0);
	rx_join(&x);
	assert_int_equal(x.rc, 0);
	mkpath(p, sizeof(p), sb.dst, "images");
	assert_int_equal(compare_node(images, p), 3);
	assert_int_equal(st.payload_bytes, tlen + (1u << 20));
	assert_int_equal(x.st.payload_bytes, st.payload_bytes);
	/* the text's three chunks, and the random chunk AUTO tried (it tries the
	 * first of such frames): a stream's frame goes compressed once tried,
	 * zstd's raw blocks keep it within bytes of its size */
	assert_int_equal(st.compressed_frames, 4);
	assert_int_equal(st.zstd_level, fm_compress_level_for_link(0)); /* AUTO, a link not measured: a fast one */
	assert_true(st.wire_bytes < (1u << 20) + (256u << 10));
	assert_int_equal(fm_rm_rf(p), 0);

	o.fault_corrupt_offset = 2000000; /* inside the text's second (compressed) chunk */
	port = rx_start(&x, sb.dst, 5000, 5000);
	assert_int_equal(fm_xfer_send("127.0.0.1", port, TOKEN, trees, 1, &o, NULL, &err), -EBADMSG);
	rx_join(&x);
	assert_int_equal(x.rc, -EBADMSG);
	assert_non_null(strstr(x.err.msg, "checksum mismatch in DATA frame"));
	assert_int_equal(fm_rm_rf(p), 0);
	sandbox_done(&sb);
}

/* Pre-sync: a first transfer records what it sent; the second sends only what
 * changed and the receiver takes the rest from the pre-synced tree. */
static void test_presync_reuse(void **state)
{
	sandbox sb;
	rx x;
	char upper[256], p[512], q[1024];
	fm_xfer_opts o = FM_XFER_OPTS_INIT;
	fm_xfer_stats st;
	fm_error err = FM_ERROR_INIT;
	fm_xfer_manifest *m = fm_xfer_manifest_new();
	_cleanup_free_ void *keep = pseudo_random(2u << 20, 1), *chg = pseudo_random(1u << 20, 2);
	struct stat s;

	(void)state;
	sandbox_init(&sb);
	mkpath(upper, sizeof(upper), sb.src, "upper");
	mkpath(p, sizeof(p), upper, "sub");
	assert_int_equal(fm_mkdir_p(p, 0755), 0);
	mkpath(p, sizeof(p), upper, "keep.bin");
	write_file(p, keep, 2u << 20, 0644);
	mkpath(p, sizeof(p), upper, "change.bin");
	write_file(p, chg, 1u << 20, 0644);
	mkpath(p, sizeof(p), upper, "gone.txt");
	write_file(p, "gone", 4, 0644);
	mkpath(p, sizeof(p), upper, "sub/deep.txt");
	write_file(p, "deep", 4, 0600);
	fm_xfer_tree trees[] = { { upper, "upper" } };

	/* fresh files are not recorded by default: they may still be being written */
	int port = rx_start(&x, sb.dst, 5000, 5000);
	o.record = m;
	assert_int_equal(fm_xfer_send("127.0.0.1", port, TOKEN, trees, 1, &o, &st, &err), 0);
	rx_join(&x);
	assert_int_equal(x.rc, 0);
	assert_int_equal(fm_xfer_manifest_files(m), 0);
	mkpath(p, sizeof(p), sb.dst, "upper");
	assert_int_equal(fm_rm_rf(p), 0);

	/* the pre-sync proper, into outside/ (settled files) */
	port = rx_start(&x, sb.outside, 5000, 5000);
	o.settle_ms = 0;
	assert_int_equal(fm_xfer_send("127.0.0.1", port, TOKEN, trees, 1, &o, &st, &err), 0);
	rx_join(&x);
	assert_int_equal(x.rc, 0);
	assert_int_equal(fm_xfer_manifest_files(m), 4);

	/* while "running": one file grows, one goes, one comes */
	mkpath(p, sizeof(p), upper, "change.bin");
	_cleanup_close_ int fd = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_int_equal(write(fd, "more", 4), 4);
	mkpath(p, sizeof(p), upper, "gone.txt");
	assert_int_equal(unlink(p), 0);
	mkpath(p, sizeof(p), upper, "sub/new.txt");
	write_file(p, "new!!", 5, 0644);

	/* "in the freeze" */
	rx_init(&x, sb.dst, 5000, 5000);
	x.opts.reuse_dir = sb.outside;
	port = rx_go(&x);
	o.record = NULL;
	o.reuse = m;
	assert_int_equal(fm_xfer_send("127.0.0.1", port, TOKEN, trees, 1, &o, &st, &err), 0);
	rx_join(&x);
	assert_int_equal(x.rc, 0);
	mkpath(p, sizeof(p), sb.dst, "upper");
	assert_int_equal(compare_node(upper, p), 6); /* root, sub, keep, change, deep, new */
	assert_int_equal(st.reused_files, 2);
	assert_int_equal(st.reused_bytes, (2u << 20) + 4);
	assert_int_equal(x.st.reused_files, 2);
	assert_int_equal(x.st.reused_bytes, st.reused_bytes);
	assert_int_equal(st.payload_bytes, (1u << 20) + 4 + 5);
	assert_true(st.wire_bytes < (1u << 20) + (64u << 10));
	/* reused files were moved, not copied */
	mkpath(q, sizeof(q), sb.outside, "upper/keep.bin");
	assert_int_equal(lstat(q, &s), -1);
	mkpath(q, sizeof(q), p, "sub/deep.txt");
	assert_int_equal(lstat(q, &s), 0);
	assert_int_equal(s.st_mode & 07777, 0600);
	assert_int_equal(fm_rm_rf(p), 0);
	mkpath(p, sizeof(p), sb.outside, "upper");
	assert_int_equal(fm_rm_rf(p), 0);
	fm_xfer_manifest_free(m);
	sandbox_done(&sb);
}

/* A sender cannot use "reuse" to reach anything but a regular file of the
 * announced size inside the pre-synced tree. */
static void test_hostile_reuse(void **state)
{
	(void)state;
	for (int i = 0; i < 5; i++) {
		sandbox sb;
		rx x;
		raw r;
		char p[512];

		sandbox_init(&sb);
		mkpath(p, sizeof(p), sb.outside, "upper");
		assert_int_equal(mkdir(p, 0755), 0);
		mkpath(p, sizeof(p), sb.outside, "upper/file");
		write_file(p, "12345", 5, 0644);
		mkpath(p, sizeof(p), sb.outside, "upper/link");
		assert_int_equal(symlink("/etc/passwd", p), 0);
		mkpath(p, sizeof(p), sb.outside, "upper/dirlink");
		assert_int_equal(symlink("/etc", p), 0);
		rx_init(&x, sb.dst, 5000, 2000);
		if (i > 0)
			x.opts.reuse_dir = sb.outside;
		int port = rx_go(&x);
		raw_connect(&r, port);
		raw_hello(&r, TOKEN);
		raw_entry(&r, K_DIR, "upper", 0, NULL);
		switch (i) {
		case 0: /* no pre-synced tree here */
		case 1: /* the size differs */
			raw_entry_flags(&r, K_FILE, EF_REUSE, "upper/file", 6, NULL);
			break;
		case 2: /* a symlink in the pre-synced tree */
			raw_entry_flags(&r, K_FILE, EF_REUSE, "upper/link", 0, NULL);
			break;
		case 3: /* through a symlinked directory */
			raw_entry(&r, K_DIR, "upper/dirlink", 0, NULL);
			raw_entry_flags(&r, K_FILE, EF_REUSE, "upper/dirlink/passwd", 0, NULL);
			break;
		case 4: /* reuse on a directory entry */
			raw_entry_flags(&r, K_DIR, EF_REUSE, "upper/file", 0, NULL);
			break;
		}
		raw_end(&r, 2, 0);
		rx_join(&x);
		assert_int_equal(x.rc, -EPROTO);
		if (i == 3)
			assert_non_null(strstr(x.err.msg, "pre-synced copy of upper/dirlink/passwd: parent upper/dirlink"));
		raw_expect_error_ack(&r);
		close(r.fd);
		mkpath(p, sizeof(p), sb.outside, "upper/file");
		assert_int_equal(access(p, F_OK), 0); /* still there */
		mkpath(p, sizeof(p), sb.outside, "upper");
		assert_int_equal(fm_rm_rf(p), 0);
		mkpath(p, sizeof(p), sb.dst, "upper");
		assert_int_equal(fm_rm_rf(p), 0);
		sandbox_done(&sb);
	}
}

static void nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void test_cancel(void **state)
{
	sandbox sb;
	rx x;
	raw r;

	(void)state;
	sandbox_init(&sb);
	/* blocked in accept */
	rx_start(&x, sb.dst, 20000, 20000);
	nap_ms(100); /* let it block: cancel is sticky, so this only makes the test meaningful */
	fm_xfer_listener_cancel(x.l);
	rx_join(&x);
	assert_int_equal(x.rc, -ECANCELED);
	assert_true(x.elapsed_ms < 5000);

	/* blocked in recv, after an authenticated HELLO */
	int port = rx_start(&x, sb.dst, 20000, 20000);
	raw_connect(&r, port);
	raw_hello(&r, TOKEN);
	raw_entry(&r, K_DIR, "images", 0, NULL);
	nap_ms(100);
	fm_xfer_listener_cancel(x.l);
	rx_join(&x);
	close(r.fd);
	assert_int_equal(x.rc, -ECANCELED);
	assert_true(x.elapsed_ms < 5000);
	assert_int_equal(fm_rm_rf(sb.dst), 0);
	assert_int_equal(mkdir(sb.dst, 0755), 0);
	sandbox_done(&sb);
}

static void test_io_timeout(void **state)
{
	sandbox sb;
	rx x;
	raw r;

	(void)state;
	sandbox_init(&sb);
	int port = rx_start(&x, sb.dst, 5000, 300);
	raw_connect(&r, port);
	int64_t t0 = fm_now_mono_ms();
	raw_hello(&r, TOKEN);
	rx_join(&x);
	int64_t dt = fm_now_mono_ms() - t0;
	close(r.fd);
	assert_int_equal(x.rc, -ETIMEDOUT);
	assert_non_null(strstr(x.err.msg, "no data from sender for 300 ms"));
	assert_true(dt >= 250 && dt < 2000);
	sandbox_done(&sb);
}

/* A receiver that accepts the connection (the kernel does) but never answers. */
static void test_sender_ack_timeout(void **state)
{
	sandbox sb;
	fm_xfer_listener *l;
	fm_error err = FM_ERROR_INIT;
	fm_xfer_opts o = FM_XFER_OPTS_INIT;
	char images[256];

	(void)state;
	sandbox_init(&sb);
	mkpath(images, sizeof(images), sb.src, "images");
	assert_int_equal(mkdir(images, 0755), 0);
	fm_xfer_tree trees[] = { { images, "images" } };
	assert_int_equal(fm_xfer_listen("127.0.0.1", 0, &l, &err), 0);
	o.io_timeout_ms = 300;
	int64_t t0 = fm_now_mono_ms();
	assert_int_equal(fm_xfer_send("127.0.0.1", fm_xfer_listener_port(l), TOKEN, trees, 1, &o, NULL, &err),
			 -ETIMEDOUT);
	int64_t dt = fm_now_mono_ms() - t0;
	assert_non_null(strstr(err.msg, "no data from receiver for 300 ms"));
	assert_true(dt >= 250 && dt < 2000);
	fm_xfer_listener_free(l);
	fm_error_clear(&err);

	/* nobody listening at all */
	assert_true(fm_xfer_send("127.0.0.1", 1, TOKEN, trees, 1, &o, NULL, &err) < 0);
	assert_non_null(strstr(err.msg, "cannot connect to 127.0.0.1:1"));
	fm_error_clear(&err);
	fm_xfer_tree bad[] = { { images, "a/b" } };
	assert_int_equal(fm_xfer_send("127.0.0.1", 1, TOKEN, bad, 1, &o, NULL, &err), -EINVAL);
	sandbox_done(&sb);
}

static void test_limits(void **state)
{
	sandbox sb;
	rx x;
	char images[256], p[512];
	fm_error err = FM_ERROR_INIT;

	(void)state;
	sandbox_init(&sb);
	build_tree(&sb);
	mkpath(images, sizeof(images), sb.src, "images");
	fm_xfer_tree trees[] = { { images, "images" } };

	rx_init(&x, sb.dst, 5000, 5000);
	x.opts.max_bytes = 1 << 20;
	int port = rx_go(&x);
	assert_true(fm_xfer_send("127.0.0.1", port, TOKEN, trees, 1, NULL, NULL, &err) < 0);
	rx_join(&x);
	assert_int_equal(x.rc, -EFBIG);
	assert_non_null(strstr(err.msg, "exceeds the receiver's limit"));
	fm_error_clear(&err);

	/* dst now holds a partial tree: a second receive into it is refused */
	port = rx_start(&x, sb.dst, 300, 300);
	rx_join(&x);
	assert_int_equal(x.rc, -ENOTEMPTY);
	mkpath(p, sizeof(p), sb.dst, "images");
	assert_int_equal(fm_rm_rf(p), 0);
	sandbox_done(&sb);
}

static int fds_at_start;

/* Every path above, failures included, must have closed what it opened. */
static void test_no_fd_leak(void **state)
{
	(void)state;
	assert_int_equal(count_entries("/proc/self/fd"), fds_at_start);
}

int main(void)
{
	fds_at_start = count_entries("/proc/self/fd");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_valid),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_wrong_token),
		cmocka_unit_test(test_garbage_before_hello),
		cmocka_unit_test(test_garbage_after_hello),
		cmocka_unit_test(test_hostile_paths),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_io_timeout),
		cmocka_unit_test(test_sender_ack_timeout),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_compressed),
		cmocka_unit_test(test_presync_reuse),
		cmocka_unit_test(test_hostile_reuse),
		cmocka_unit_test(test_no_fd_leak),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
