/* Image Manager: the content-addressed image store described in image.h.
 *
 * Every import follows the same path: the archive is written (or copied) into tmp/
 * while it is hashed, then adopt() unpacks it, publishes blob and rootfs by rename
 * and finally points the ref at them.  A failure anywhere before the ref is written
 * leaves the store as it was.
 */
#include "runtime/image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <nettle/sha2.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <search.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "basic/log.h"
#include "basic/util.h"
#include "basic/cmd.h"
#include "runtime/archive_dl.h"

#define DIGEST_PREFIX "sha256:"
#define DIGEST_PREFIX_LEN 7
#define HEX_LEN 64
#define COPY_BUF (128 * 1024)

struct fm_image_store {
	char *root, *blobs, *rootfs, *refs, *tmp;
	char *helper;   /* the daemon's own binary: archives are packed and unpacked there */
	/* Serialises publishing and deleting blobs, trees and refs, so a remove cannot
	 * delete a digest that a concurrent import is about to point a ref at. */
	pthread_mutex_t lock;
};

bool fm_digest_valid(const char *d)
{
	if (!d || strncmp(d, DIGEST_PREFIX, DIGEST_PREFIX_LEN) != 0)
		return false;
	d += DIGEST_PREFIX_LEN;
	/* Lower case only: the hex is also a file name, and two spellings of one digest
	 * would be two images. */
	for (int i = 0; i < HEX_LEN; i++)
		if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
			return false;
	return d[HEX_LEN] == '\0';
}

static void digest_format(const unsigned char md[32], char out[FM_DIGEST_LEN])
{
	static const char hex[] = "0123456789abcdef";

	memcpy(out, DIGEST_PREFIX, DIGEST_PREFIX_LEN);
	for (int i = 0; i < 32; i++) {
		out[DIGEST_PREFIX_LEN + 2 * i] = hex[md[i] >> 4];
		out[DIGEST_PREFIX_LEN + 2 * i + 1] = hex[md[i] & 15];
	}
	out[DIGEST_PREFIX_LEN + HEX_LEN] = '\0';
}

static int write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Reads src to the end, hashing it and copying it to dst unless dst is -1. */
static int copy_hashed(int src, int dst, char digest[FM_DIGEST_LEN])
{
	_cleanup_free_ char *buf = fm_xmalloc(COPY_BUF);
	struct sha256_ctx h;
	unsigned char md[32];
	int r = 0;

	sha256_init(&h);
	for (;;) {
		ssize_t k = read(src, buf, COPY_BUF);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			r = k < 0 ? -errno : 0;
			break;
		}
		sha256_update(&h, (size_t)k, (const uint8_t *)buf);
		if (dst >= 0 && (r = write_all(dst, buf, (size_t)k)) < 0)
			break;
	}
	sha256_digest(&h, sizeof(md), md);
	if (r == 0)
		digest_format(md, digest);
	return r;
}

int fm_sha256_file(const char *path, char out[FM_DIGEST_LEN], fm_error *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	int r;

	if (fd < 0)
		return fm_error_set(err, -errno, "cannot open %s to compute its SHA-256: %m", path);
	r = copy_hashed(fd, -1, out);
	if (r < 0)
		return fm_error_set(err, r, "cannot read %s to compute its SHA-256: %s", path, strerror(-r));
	return 0;
}

/* Copies a file into the store's tmp/ (dst, created), hashing it on the way. */
static int copy_into(const char *src, const char *dst, char digest[FM_DIGEST_LEN], fm_error *err)
{
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	int out, r;

	if (in < 0)
		return fm_error_set(err, -errno, "cannot open %s: %m", src);
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (out < 0)
		return fm_error_set(err, -errno, "cannot create %s: %m; check the image store's disk", dst);
	r = copy_hashed(in, out, digest);
	if (r == 0 && fsync(out) < 0)
		r = -errno;
	if (close(out) < 0 && r == 0)
		r = -errno;
	if (r < 0) {
		unlink(dst);
		return fm_error_set(err, r, "cannot copy %s into the image store: %s", src, strerror(-r));
	}
	return 0;
}

/* ---- deterministic archive of a directory tree ---- */

struct blob_sink {
	int fd;
	struct sha256_ctx h;
};

static la_ssize_t sink_write(struct archive *a, void *data, const void *buf, size_t n)
{
	struct blob_sink *k = data;
	int r = write_all(k->fd, buf, n);

	if (r < 0) {
		archive_set_error(a, -r, "cannot write image blob: %s", strerror(-r));
		return -1;
	}
	sha256_update(&k->h, n, buf);
	return (la_ssize_t)n;
}

struct link_key {
	dev_t dev;
	ino_t ino;
	char *path;
};

static int link_cmp(const void *a, const void *b)
{
	const struct link_key *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static void link_free(void *p)
{
	free(((struct link_key *)p)->path);
	free(p);
}

struct walker {
	struct archive *a;
	void *links; /* tsearch tree: (dev, ino) -> first path, so hard links stay links */
	const char *src;
	fm_error *err;
};

static int walk_fail(struct walker *w, int r, const char *what, const char *path)
{
	return fm_error_set(w->err, r, "cannot %s %s (below %s) while importing an image: %s", what,
			    path, w->src, strerror(-r));
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int add_xattrs(struct archive_entry *e, int fd)
{
	_cleanup_free_ char *names = NULL;
	_cleanup_free_ const char **v = NULL;
	ssize_t n = flistxattr(fd, NULL, 0);
	size_t cnt = 0;

	if (n <= 0)
		return n < 0 && errno != ENOTSUP ? -errno : 0;
	names = fm_xmalloc((size_t)n);
	n = flistxattr(fd, names, (size_t)n);
	if (n < 0)
		return -errno;
	v = fm_xcalloc((size_t)n, sizeof(*v));
	for (char *p = names; p < names + n; p += strlen(p) + 1)
		v[cnt++] = p;
	/* listxattr order is the filesystem's, and the digest must not depend on it */
	qsort(v, cnt, sizeof(*v), cmp_str);
	for (size_t i = 0; i < cnt; i++) {
		/* SELinux labels are the host's policy, not image content */
		if (!strcmp(v[i], "security.selinux"))
			continue;
		ssize_t vn = fgetxattr(fd, v[i], NULL, 0);
		if (vn < 0)
			return -errno;
		_cleanup_free_ char *val = fm_xmalloc((size_t)vn);
		vn = fgetxattr(fd, v[i], val, (size_t)vn);
		if (vn < 0)
			return -errno;
		archive_entry_xattr_add_entry(e, v[i], val, (size_t)vn);
	}
	return 0;
}

static int walk_dir(struct walker *w, int dfd, const char *path);

static int copy_contents(struct walker *w, int fd, int64_t size, const char *path)
{
	_cleanup_free_ char *buf = fm_xmalloc(COPY_BUF);

	while (size > 0) {
		ssize_t k = read(fd, buf, size < COPY_BUF ? (size_t)size : COPY_BUF);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return walk_fail(w, -errno, "read", path);
		if (k == 0) /* the header already promised `size` bytes */
			return walk_fail(w, -ESTALE, "archive (file shrank while reading)", path);
		if (archive_write_data(w->a, buf, (size_t)k) < 0)
			return fm_error_set(w->err, -EIO, "cannot write image archive: %s",
					    archive_error_string(w->a));
		size -= k;
	}
	return 0;
}

/* Adds name (relative to dfd) as `path`, recursing into directories.  Everything is
 * opened O_NOFOLLOW relative to its parent, so a tree changed under us cannot
 * smuggle files from elsewhere into the image. */
static int archive_one(struct walker *w, int dfd, const char *name, const char *path)
{
	_cleanup_close_ int fd = -1;
	struct archive_entry *e;
	struct stat st, st2;
	bool data = false;
	int r = 0;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return walk_fail(w, -errno, "stat", path);
	e = archive_entry_new();
	archive_entry_set_pathname(e, path);
	archive_entry_set_perm(e, st.st_mode & 07777);
	/* numeric ids only: user names would make the digest depend on the host */
	archive_entry_set_uid(e, st.st_uid);
	archive_entry_set_gid(e, st.st_gid);
	archive_entry_set_mtime(e, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);

	switch (st.st_mode & S_IFMT) {
	case S_IFREG:
	case S_IFDIR:
		fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY |
				       (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0));
		if (fd < 0) {
			r = walk_fail(w, -errno, "open", path);
			goto out;
		}
		if (fstat(fd, &st2) < 0 || st2.st_ino != st.st_ino || st2.st_dev != st.st_dev) {
			r = walk_fail(w, -ESTALE, "archive (it changed while reading)", path);
			goto out;
		}
		archive_entry_set_filetype(e, S_ISDIR(st.st_mode) ? AE_IFDIR : AE_IFREG);
		r = add_xattrs(e, fd);
		if (r < 0) {
			r = walk_fail(w, r, "read extended attributes of", path);
			goto out;
		}
		if (S_ISDIR(st.st_mode))
			break;
		if (st.st_nlink > 1) {
			struct link_key key = { st.st_dev, st.st_ino, NULL };
			struct link_key *const *found = tfind(&key, &w->links, link_cmp);
			if (found) {
				archive_entry_set_hardlink(e, (*found)->path);
				break;
			}
			struct link_key *k = fm_xmalloc(sizeof(*k));
			*k = (struct link_key){ st.st_dev, st.st_ino, fm_xstrdup(path) };
			if (!tsearch(k, &w->links, link_cmp))
				abort();
		}
		archive_entry_set_size(e, st2.st_size);
		data = true;
		break;
	case S_IFLNK: {
		char target[PATH_MAX];
		ssize_t n = readlinkat(dfd, name, target, sizeof(target));
		if (n < 0 || n >= (ssize_t)sizeof(target)) {
			r = walk_fail(w, n < 0 ? -errno : -ENAMETOOLONG, "read symlink", path);
			goto out;
		}
		target[n] = '\0';
		archive_entry_set_filetype(e, AE_IFLNK);
		archive_entry_set_symlink(e, target);
		break;
	}
	case S_IFIFO:
		archive_entry_set_filetype(e, AE_IFIFO);
		break;
	default:
		/* devices and sockets: containers get /dev from the runtime */
		fm_debug(FM_C_IMAGE_MANAGER, "skipping special file %s in %s", path, w->src);
		goto out;
	}

	if (archive_write_header(w->a, e) < ARCHIVE_WARN) {
		r = fm_error_set(w->err, -EIO, "cannot add %s to the image archive: %s", path,
				 archive_error_string(w->a));
		goto out;
	}
	if (data)
		r = copy_contents(w, fd, st2.st_size, path);
	else if (S_ISDIR(st.st_mode))
		r = walk_dir(w, fd, path);
out:
	archive_entry_free(e);
	return r;
}

static int not_dots(const struct dirent *de)
{
	return strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
}

/* strcmp, not alphasort: the order must not depend on the locale */
static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int walk_dir(struct walker *w, int dfd, const char *path)
{
	struct dirent **ents;
	int n = scandirat(dfd, ".", &ents, not_dots, by_name), r = 0;

	if (n < 0)
		return walk_fail(w, -errno, "list directory", path);
	for (int i = 0; i < n; i++) {
		if (r == 0) {
			_cleanup_free_ char *p = fm_xasprintf("%s/%s", path, ents[i]->d_name);
			r = archive_one(w, dfd, ents[i]->d_name, p);
		}
		free(ents[i]);
	}
	free(ents);
	return r;
}

/* Writes a pax archive of the directory src to dst, hashing as it goes.  Names are
 * "./…" in strcmp order with numeric ids and on-disk modes and mtimes, so the same
 * tree always gives the same bytes. */
static int archive_tree_here(const char *src, const char *dst, char digest[FM_DIGEST_LEN], fm_error *err)
{
	struct blob_sink k = { .fd = -1 };
	struct walker w = { .src = src, .err = err };
	unsigned char md[32];
	int r;

	k.fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (k.fd < 0)
		return fm_error_set(err, -errno, "cannot create %s: %m; check the image store's disk", dst);
	sha256_init(&k.h);
	if ((r = fm_archive_acquire(err)) < 0) {
		close(k.fd);
		unlink(dst);
		return r;
	}
	w.a = archive_write_new();
	if (archive_write_set_format_pax_restricted(w.a) != ARCHIVE_OK ||
	    archive_write_open(w.a, &k, NULL, sink_write, NULL) != ARCHIVE_OK)
		r = fm_error_set(err, -EIO, "cannot start image archive: %s", archive_error_string(w.a));
	else
		r = archive_one(&w, AT_FDCWD, src, ".");
	if (r == 0 && archive_write_close(w.a) != ARCHIVE_OK)
		r = fm_error_set(err, -EIO, "cannot finish image archive: %s", archive_error_string(w.a));
	archive_write_free(w.a);
	fm_archive_release();
	tdestroy(w.links, link_free);
	sha256_digest(&k.h, sizeof(md), md);
	if (r == 0 && fsync(k.fd) < 0)
		r = fm_error_set(err, -errno, "cannot sync %s: %m", dst);
	if (close(k.fd) < 0 && r == 0)
		r = fm_error_set(err, -errno, "cannot write %s: %m", dst);
	if (r < 0) {
		unlink(dst);
		return r;
	}
	digest_format(md, digest);
	return 0;
}

/* ---- unpacking ---- */

struct unpack_job {
	const char *blob;
	int destfd;
	int r;
	char msg[512];
};

/* Copies every entry of in to out; returns the archive that failed, or NULL. */
static struct archive *copy_entries(struct archive *in, struct archive *out)
{
	struct archive_entry *e;
	int r;

	while ((r = archive_read_next_header(in, &e)) != ARCHIVE_EOF) {
		if (r < ARCHIVE_WARN)
			return in;
		mode_t t = archive_entry_filetype(e);
		if (t == AE_IFCHR || t == AE_IFBLK || t == AE_IFSOCK) {
			/* the runtime provides /dev; a device node in a rootfs is only a hazard */
			fm_debug(FM_C_IMAGE_MANAGER, "skipping special file %s", archive_entry_pathname(e));
			continue;
		}
		if (archive_write_header(out, e) < ARCHIVE_WARN)
			return out;
		const void *buf;
		size_t len;
		la_int64_t off;
		while ((r = archive_read_data_block(in, &buf, &len, &off)) != ARCHIVE_EOF) {
			if (r < ARCHIVE_WARN)
				return in;
			if (archive_write_data_block(out, buf, len, off) < ARCHIVE_WARN)
				return out;
		}
		/* ARCHIVE_WARN (an xattr or owner that cannot be set) is not fatal */
		if (archive_write_finish_entry(out) < ARCHIVE_WARN)
			return out;
	}
	/* close applies the deferred directory modes and times */
	return archive_write_close(out) < ARCHIVE_WARN ? out : NULL;
}

static void *unpack_thread(void *p)
{
	struct unpack_job *j = p;
	struct archive *in = archive_read_new(), *out = archive_write_disk_new(), *bad;
	_cleanup_close_ int fd = -1;

	/* archive_write_disk resolves names against the working directory, and its
	 * secure flags are only meaningful for names relative to the destination.  This
	 * thread gets its own working directory, so the rest of the daemon is not moved;
	 * it dies with the thread. */
	if (unshare(CLONE_FS) < 0 || fchdir(j->destfd) < 0 ||
	    (fd = open(j->blob, O_RDONLY | O_CLOEXEC)) < 0) {
		j->r = -errno;
		snprintf(j->msg, sizeof(j->msg), "cannot set up unpacking: %m");
		goto out;
	}
	archive_read_support_filter_all(in);
	archive_read_support_format_tar(in);
	archive_read_support_format_gnutar(in);
	/* No user/group lookup: numeric ids from the archive, not this host's passwd. */
	archive_write_disk_set_options(out, ARCHIVE_EXTRACT_SECURE_NODOTDOT |
						    ARCHIVE_EXTRACT_SECURE_SYMLINKS |
						    ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS |
						    ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME |
						    ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_XATTR);
	bad = archive_read_open_fd(in, fd, COPY_BUF) != ARCHIVE_OK ? in : copy_entries(in, out);
	if (bad) {
		int e = archive_errno(bad);
		snprintf(j->msg, sizeof(j->msg), "%s", archive_error_string(bad) ?: "unknown libarchive error");
		j->r = e > 0 ? -e : -EINVAL;
	}
out:
	archive_read_free(in);
	archive_write_free(out);
	return NULL;
}

static int unpack_here(const char *blob, const char *dest, const char *digest, fm_error *err)
{
	struct unpack_job j = { .blob = blob, .destfd = -1 };
	pthread_t t;
	int r;

	(void)fm_rm_rf(dest); /* left by a crash */
	if (mkdir(dest, 0755) < 0)
		return fm_error_set(err, -errno, "cannot create %s: %m", dest);
	j.destfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j.destfd < 0) {
		r = -errno;
		snprintf(j.msg, sizeof(j.msg), "cannot open %s: %s", dest, strerror(-r));
	} else if ((r = fm_archive_acquire(NULL)) < 0) {
		snprintf(j.msg, sizeof(j.msg), "cannot load libarchive (apt-get install libarchive13)");
	} else if ((r = -pthread_create(&t, NULL, unpack_thread, &j)) < 0) {
		fm_archive_release();
		snprintf(j.msg, sizeof(j.msg), "cannot start unpack thread: %s", strerror(-r));
	} else {
		pthread_join(t, NULL);
		fm_archive_release();
		r = j.r;
		/* so a crash after the rename cannot publish a half-written tree */
		if (r == 0 && syncfs(j.destfd) < 0) {
			r = -errno;
			snprintf(j.msg, sizeof(j.msg), "cannot sync: %s", strerror(-r));
		}
	}
	if (j.destfd >= 0)
		close(j.destfd);
	if (r < 0) {
		(void)fm_rm_rf(dest);
		return fm_error_set(err, r,
				    "cannot unpack image %s: %s; the archive is damaged or holds unsafe "
				    "entries (\"..\", absolute paths, writes through symlinks) - "
				    "rebuild it or fetch it again",
				    digest, j.msg);
	}
	return 0;
}

/* ---- the helper process ----
 *
 * libarchive (with libxml2, ICU and libstdc++ behind it) parses archives,
 * some from peers: in the daemon, the libraries stay mapped after dlclose
 * (~1.2 MiB of an idle daemon's 10), and a parser's crash would be the
 * daemon's.  So the daemon packs and unpacks in a child: its own binary run
 * as `fleximigrated --image-helper archive SRC DST` (prints the digest) or
 * `... unpack BLOB DEST DIGEST`; an error's message on stderr, its errno as
 * the exit status.  Without a helper (unit tests) the work is done here. */

#define IMAGE_HELPER_TIMEOUT_MS (30 * 60 * 1000)

void fm_image_store_set_helper(fm_image_store *s, const char *exe)
{
	free(s->helper);
	s->helper = exe ? fm_xstrdup(exe) : NULL;
}

static int run_helper(fm_image_store *s, const char *op, const char *a, const char *b, const char *digest,
		      char digest_out[FM_DIGEST_LEN], fm_error *err)
{
	fm_cmd *c = fm_cmd_new(s->helper);
	fm_cmd_arg(c, "--image-helper");
	fm_cmd_arg(c, op);
	fm_cmd_arg(c, a);
	fm_cmd_arg(c, b);
	if (digest)
		fm_cmd_arg(c, digest);
	fm_cmd_set_timeout_ms(c, IMAGE_HELPER_TIMEOUT_MS);
	int r = fm_cmd_run(c, NULL);
	if (r != 0) {
		/* its message is its last line */
		const char *e = fm_cmd_stderr(c) ?: "";
		size_t n = strlen(e);
		while (n > 0 && e[n - 1] == '\n')
			n--;
		const char *line = e;
		for (size_t i = 0; i < n; i++)
			if (e[i] == '\n')
				line = e + i + 1;
		r = fm_error_set(err, r > 0 ? -r : r, "%.*s", (int)(n - (size_t)(line - e)),
				 n ? line : "the image helper failed without a word");
	} else if (digest_out) {
		const char *o = fm_cmd_stdout(c) ?: "";
		size_t n = strcspn(o, "\n");
		if (n >= FM_DIGEST_LEN || (memcpy(digest_out, o, n), digest_out[n] = 0, !fm_digest_valid(digest_out)))
			r = fm_error_set(err, -EPROTO, "the image helper printed no digest");
	}
	fm_cmd_free(c);
	return r;
}

static int archive_tree(fm_image_store *s, const char *src, const char *dst, char digest[FM_DIGEST_LEN],
			fm_error *err)
{
	return s->helper ? run_helper(s, "archive", src, dst, NULL, digest, err) : archive_tree_here(src, dst, digest, err);
}

static int unpack(fm_image_store *s, const char *blob, const char *dest, const char *digest, fm_error *err)
{
	return s->helper ? run_helper(s, "unpack", blob, dest, digest, NULL, err) : unpack_here(blob, dest, digest, err);
}

int fm_image_helper_main(int argc, char **argv)
{
	fm_error err = FM_ERROR_INIT;
	char digest[FM_DIGEST_LEN];
	int r;

	if (argc == 5 && !strcmp(argv[2], "archive"))
		r = archive_tree_here(argv[3], argv[4], digest, &err);
	else if (argc == 6 && !strcmp(argv[2], "unpack") && fm_digest_valid(argv[5]))
		r = unpack_here(argv[3], argv[4], argv[5], &err);
	else
		r = fm_error_set(&err, -EINVAL, "usage: fleximigrated --image-helper archive SRC DST | unpack BLOB DEST DIGEST");
	if (r < 0) {
		fprintf(stderr, "%s\n", err.msg);
		fm_error_clear(&err);
		return -r > 0 && -r < 256 ? -r : EIO;
	}
	if (!strcmp(argv[2], "archive"))
		printf("%s\n", digest);
	return 0;
}

/* ---- refs and the store ---- */

static int read_ref(fm_image_store *s, const char *name, char digest[FM_DIGEST_LEN], struct stat *st)
{
	_cleanup_free_ char *path = fm_xasprintf("%s/%s", s->refs, name), *buf = NULL;
	size_t len;
	int r = fm_read_file(path, 256, &buf, &len);

	if (r < 0)
		return r;
	if (len > 0 && buf[len - 1] == '\n')
		buf[len - 1] = '\0';
	if (!fm_digest_valid(buf))
		return -EBADMSG;
	memcpy(digest, buf, DIGEST_PREFIX_LEN + HEX_LEN + 1);
	if (st && stat(path, st) < 0)
		return -errno;
	return 0;
}

static int write_ref(fm_image_store *s, const char *name, const char *digest)
{
	_cleanup_free_ char *t = fm_image_tmp_path(s), *path = fm_xasprintf("%s/%s", s->refs, name),
			    *line = fm_xasprintf("%s\n", digest);
	int r = fm_write_file_atomic(t, line, strlen(line), 0644);

	if (r < 0)
		return r;
	/* staged in tmp/ so refs/ never holds a half-written file that looks like a name */
	if (rename(t, path) < 0) {
		r = -errno;
		unlink(t);
	}
	return r;
}

/* Fills out; returns -errno if the blob is missing (out is filled anyway). */
static int fill(fm_image_store *s, const char *name, const char *digest, const struct stat *ref,
		fm_image *out)
{
	_cleanup_free_ char *blob = fm_image_blob_path(s, digest);
	struct stat bst;
	int r = stat(blob, &bst) < 0 ? -errno : 0;

	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", name);
	snprintf(out->digest, sizeof(out->digest), "%s", digest);
	if (r == 0)
		out->size = (uint64_t)bst.st_size;
	if (ref || r == 0) {
		const struct stat *t = ref ?: &bst;
		out->created_ms = (int64_t)t->st_mtim.tv_sec * 1000 + t->st_mtim.tv_nsec / 1000000;
	}
	return r;
}

static int cmp_image(const void *a, const void *b)
{
	return strcmp(((const fm_image *)a)->name, ((const fm_image *)b)->name);
}

int fm_image_list(fm_image_store *s, fm_image **out, size_t *n)
{
	DIR *d = opendir(s->refs);
	fm_image *v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		char digest[FM_DIGEST_LEN];
		struct stat st;
		if (!fm_name_valid(de->d_name) || read_ref(s, de->d_name, digest, &st) < 0)
			continue; /* vanished meanwhile, or not ours */
		if (cnt == cap) {
			cap = cap ? cap * 2 : 16;
			fm_image *nv = realloc(v, cap * sizeof(*v));
			if (!nv)
				abort();
			v = nv;
		}
		/* a ref whose blob is gone is still listed, so it can be seen and removed */
		(void)fill(s, de->d_name, digest, &st, &v[cnt++]);
	}
	closedir(d);
	if (cnt > 0)
		qsort(v, cnt, sizeof(*v), cmp_image);
	*out = v;
	*n = cnt;
	return 0;
}

int fm_image_lookup(fm_image_store *s, const char *q, fm_image *out)
{
	char digest[FM_DIGEST_LEN];
	struct stat st;
	int r;

	if (!q)
		return -EINVAL;
	if (!strncmp(q, DIGEST_PREFIX, DIGEST_PREFIX_LEN)) {
		_cleanup_free_ fm_image *all = NULL;
		size_t n = 0;
		if (!fm_digest_valid(q))
			return -EINVAL;
		r = fill(s, "", q, NULL, out);
		if (r < 0)
			return r;
		if (fm_image_list(s, &all, &n) < 0)
			return 0; /* the image exists; only its name is unknown */
		for (size_t i = 0; i < n; i++)
			if (!strcmp(all[i].digest, q)) {
				*out = all[i]; /* sorted: the first name is stable */
				break;
			}
		return 0;
	}
	if (!fm_name_valid(q))
		return -EINVAL;
	r = read_ref(s, q, digest, &st);
	if (r < 0)
		return r == -EBADMSG ? -ENOENT : r;
	return fill(s, q, digest, &st, out);
}

char *fm_image_blob_path(fm_image_store *s, const char *digest)
{
	if (!fm_digest_valid(digest))
		return NULL;
	return fm_xasprintf("%s/%s", s->blobs, digest + DIGEST_PREFIX_LEN);
}

char *fm_image_rootfs_path(fm_image_store *s, const char *digest)
{
	if (!fm_digest_valid(digest))
		return NULL;
	return fm_xasprintf("%s/%s", s->rootfs, digest + DIGEST_PREFIX_LEN);
}

char *fm_image_tmp_path(fm_image_store *s)
{
	char id[32];

	fm_random_id("t-", id, sizeof(id));
	return fm_xasprintf("%s/%s", s->tmp, id);
}

/* Removes entries of dir, all of them or those whose name ends in suffix. */
static void remove_entries(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name), sl = suffix ? strlen(suffix) : 0;
		if (!not_dots(de) || l < sl || (suffix && strcmp(de->d_name + l - sl, suffix) != 0))
			continue;
		_cleanup_free_ char *p = fm_xasprintf("%s/%s", dir, de->d_name);
		fm_debug(FM_C_IMAGE_MANAGER, "removing stale %s", p);
		(void)fm_rm_rf(p);
	}
	closedir(d);
}

int fm_image_store_open(const char *root, fm_image_store **out, fm_error *err)
{
	fm_image_store *s;
	char *abs;
	int r = fm_mkdir_p(root, 0700);

	if (r < 0)
		return fm_error_set(err, r, "cannot create image store %s: %s; check the path and permissions",
				    root, strerror(-r));
	/* rootfs/ holds the images' setuid binaries: no other user may reach them */
	if (chmod(root, 0700) < 0 || !(abs = realpath(root, NULL)))
		return fm_error_set(err, -errno, "cannot secure image store %s: %m", root);
	s = fm_xcalloc(1, sizeof(*s));
	s->root = abs;
	s->blobs = fm_xasprintf("%s/blobs/sha256", abs);
	s->rootfs = fm_xasprintf("%s/rootfs", abs);
	s->refs = fm_xasprintf("%s/refs", abs);
	s->tmp = fm_xasprintf("%s/tmp", abs);
	pthread_mutex_init(&s->lock, NULL);
	const char *dirs[] = { s->blobs, s->rootfs, s->refs, s->tmp };
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		r = fm_mkdir_p(dirs[i], 0755);
		if (r < 0) {
			fm_error_set(err, r, "cannot create %s: %s", dirs[i], strerror(-r));
			fm_image_store_free(s);
			return r;
		}
	}
	/* leftovers of imports interrupted by a crash; nothing refers to them */
	remove_entries(s->tmp, NULL);
	remove_entries(s->rootfs, ".tmp");
	*out = s;
	return 0;
}

void fm_image_store_free(fm_image_store *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s->helper);
	free(s->root);
	free(s->blobs);
	free(s->rootfs);
	free(s->refs);
	free(s->tmp);
	free(s);
}

/* Publishes the archive in tmp (consumed) under digest and points name at it.  The
 * tree is unpacked before anything is published, so a bad archive leaves nothing. */
static int adopt(fm_image_store *s, const char *name, const char *tmp, const char *digest,
		 fm_image *out, fm_error *err)
{
	_cleanup_free_ char *blob = fm_image_blob_path(s, digest), *root = fm_image_rootfs_path(s, digest),
			    *root_tmp = fm_xasprintf("%s.tmp", root);
	bool blob_new = false, root_new = false;
	struct stat st;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	if (lstat(root, &st) < 0) {
		r = unpack(s, tmp, root_tmp, digest, err);
		if (r < 0)
			goto fail;
		if (rename(root_tmp, root) < 0) {
			r = fm_error_set(err, -errno, "cannot move unpacked image into %s: %m", root);
			(void)fm_rm_rf(root_tmp);
			goto fail;
		}
		root_new = true;
	}
	/* Same digest, same bytes: keep the existing blob, which readers may hold open. */
	if (lstat(blob, &st) == 0)
		unlink(tmp);
	else if (rename(tmp, blob) < 0) {
		r = fm_error_set(err, -errno, "cannot move image blob into %s: %m", blob);
		goto fail;
	} else
		blob_new = true;
	r = write_ref(s, name, digest);
	if (r < 0) {
		fm_error_set(err, r, "cannot write image ref %s/%s: %s", s->refs, name, strerror(-r));
		goto fail;
	}
	if (out) /* under the lock, so a concurrent remove cannot leave it unfilled */
		(void)fm_image_lookup(s, name, out);
	pthread_mutex_unlock(&s->lock);
	fm_debug(FM_C_IMAGE_MANAGER, "image %s -> %s%s", name, digest, blob_new ? " (new)" : "");
	return 0;
fail:
	unlink(tmp);
	if (blob_new)
		unlink(blob);
	if (root_new)
		(void)fm_rm_rf(root);
	pthread_mutex_unlock(&s->lock);
	return r;
}

static int invalid_name(const char *name, fm_error *err)
{
	return fm_error_set(err, -EINVAL,
			    "invalid image name \"%s\": use 1-63 characters of A-Z a-z 0-9 _ . -, "
			    "starting with a letter or digit",
			    name ?: "");
}

int fm_image_import(fm_image_store *s, const char *name, const char *path, fm_image *out,
		    fm_error *err)
{
	_cleanup_free_ char *tmp = NULL, *src = NULL;
	char digest[FM_DIGEST_LEN];
	struct stat st;
	int r;

	if (!fm_name_valid(name))
		return invalid_name(name, err);
	if (!path || stat(path, &st) < 0) {
		if (!path || errno == ENOENT)
			return fm_error_set(err, -ENOENT, "image source %s does not exist", path ?: "");
		return fm_error_set(err, -errno, "cannot access image source %s: %m", path);
	}
	tmp = fm_image_tmp_path(s);
	if (S_ISDIR(st.st_mode)) {
		/* resolved, so the tree's top is a directory and not a symlink to archive */
		src = realpath(path, NULL);
		if (!src)
			return fm_error_set(err, -errno, "cannot resolve image source %s: %m", path);
		r = archive_tree(s, src, tmp, digest, err);
	} else if (S_ISREG(st.st_mode)) {
		r = copy_into(path, tmp, digest, err);
	} else {
		return fm_error_set(err, -EINVAL,
				    "image source %s is neither a directory nor a tar archive", path);
	}
	if (r < 0)
		return r;
	r = adopt(s, name, tmp, digest, out, err);
	if (r < 0)
		fm_error_prefix(err, "importing image %s from %s", name, path);
	return r;
}

int fm_image_import_blob(fm_image_store *s, const char *name, const char *blob_path,
			 const char *digest, fm_image *out, fm_error *err)
{
	_cleanup_free_ char *tmp = fm_image_tmp_path(s);
	char got[FM_DIGEST_LEN];
	int r;

	/* blob_path is ours from here: every way out removes it */
	if (!fm_name_valid(name)) {
		unlink(blob_path);
		return invalid_name(name, err);
	}
	if (!fm_digest_valid(digest)) {
		unlink(blob_path);
		return fm_error_set(err, -EINVAL, "invalid image digest \"%s\": expected sha256:<64 lower-case hex digits>",
				    digest ?: "");
	}
	/* Moved before hashing, so what is verified is what is kept. */
	if (rename(blob_path, tmp) == 0)
		r = fm_sha256_file(tmp, got, err);
	else if (errno == EXDEV) {
		r = copy_into(blob_path, tmp, got, err);
		unlink(blob_path);
	} else {
		r = fm_error_set(err, -errno, "cannot move received image blob %s into the store: %m", blob_path);
		unlink(blob_path);
	}
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	if (strcmp(got, digest) != 0) {
		unlink(tmp);
		return fm_error_set(err, -EBADMSG,
				    "image blob digest mismatch: expected %s, got %s "
				    "(corrupted in transfer or at the source)",
				    digest, got);
	}
	r = adopt(s, name, tmp, digest, out, err);
	if (r < 0)
		fm_error_prefix(err, "adopting image %s (%s)", name, digest);
	return r;
}

int fm_image_remove(fm_image_store *s, const char *name, fm_error *err)
{
	_cleanup_free_ char *ref = NULL, *blob = NULL, *root = NULL;
	_cleanup_free_ fm_image *all = NULL;
	char digest[FM_DIGEST_LEN];
	size_t n = 0;
	int r;

	if (!fm_name_valid(name))
		return invalid_name(name, err);
	ref = fm_xasprintf("%s/%s", s->refs, name);
	pthread_mutex_lock(&s->lock);
	r = read_ref(s, name, digest, NULL);
	if (r == -ENOENT) {
		r = fm_error_set(err, r, "no image named %s", name);
		goto out;
	}
	if (r < 0 && r != -EBADMSG) {
		r = fm_error_set(err, r, "cannot read image ref %s: %s", ref, strerror(-r));
		goto out;
	}
	if (unlink(ref) < 0) {
		r = fm_error_set(err, -errno, "cannot remove image ref %s: %m", ref);
		goto out;
	}
	if (r < 0) { /* a damaged ref names nothing we could collect */
		r = 0;
		goto out;
	}
	r = fm_image_list(s, &all, &n);
	if (r < 0) {
		r = fm_error_set(err, r, "cannot list image refs in %s: %s", s->refs, strerror(-r));
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (!strcmp(all[i].digest, digest))
			goto out; /* still referenced: keep blob and tree */
	blob = fm_image_blob_path(s, digest);
	root = fm_image_rootfs_path(s, digest);
	if (unlink(blob) < 0 && errno != ENOENT) {
		r = fm_error_set(err, -errno, "cannot remove image blob %s: %m", blob);
		goto out;
	}
	r = fm_rm_rf(root);
	if (r < 0)
		fm_error_set(err, r, "cannot remove image tree %s: %s; is something still mounted below it?",
			     root, strerror(-r));
	fm_debug(FM_C_IMAGE_MANAGER, "removed image %s (%s)", name, digest);
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}
