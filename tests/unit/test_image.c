/* Image Manager: import (directory, tarball, blob), lookup, list, remove, and the
 * refusal of hostile archives. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "basic/util.h"
#include "runtime/image.h"

struct fx {
	char dir[64];
	char *store_path;
	fm_image_store *s;
};

static int setup(void **state)
{
	struct fx *f = fm_xcalloc(1, sizeof(*f));
	fm_error err = FM_ERROR_INIT;

	snprintf(f->dir, sizeof(f->dir), "/tmp/fm-test-image-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->store_path = fm_xasprintf("%s/store", f->dir);
	assert_int_equal(fm_image_store_open(f->store_path, &f->s, &err), 0);
	*state = f;
	return 0;
}

/* The same store, packing and unpacking in the daemon's helper process. */
static int setup_helper(void **state)
{
	const char *daemon = getenv("FM_DAEMON");
	if (!daemon) {
		fprintf(stderr, "FM_DAEMON (the built fleximigrated) is not set: run through meson test\n");
		return -1;
	}
	setup(state);
	fm_image_store_set_helper(((struct fx *)*state)->s, daemon);
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	fm_image_store_free(f->s);
	assert_int_equal(fm_rm_rf(f->dir), 0);
	free(f->store_path);
	free(f);
	return 0;
}

/* ---- helpers ---- */

static void write_file(const char *path, const char *data, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	assert_int_equal(fchmod(fd, mode), 0); /* umask must not decide the test */
	close(fd);
}

static void mkdirs(const char *base, const char *rel, mode_t mode)
{
	_cleanup_free_ char *p = fm_xasprintf("%s/%s", base, rel);
	assert_int_equal(fm_mkdir_p(p, 0755), 0);
	assert_int_equal(chmod(p, mode), 0);
}

static void put(const char *base, const char *rel, const char *data, mode_t mode)
{
	_cleanup_free_ char *p = fm_xasprintf("%s/%s", base, rel);
	write_file(p, data, mode);
}

static void put_link(const char *base, const char *rel, const char *target)
{
	_cleanup_free_ char *p = fm_xasprintf("%s/%s", base, rel);
	assert_int_equal(symlink(target, p), 0);
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static int store_count(struct fx *f, const char *sub)
{
	_cleanup_free_ char *p = fm_xasprintf("%s/%s", f->store_path, sub);
	return count_entries(p);
}

static char *slurp(const char *path)
{
	char *buf = NULL;
	assert_int_equal(fm_read_file(path, 1 << 20, &buf, NULL), 0);
	return buf;
}

/* Every entry of a (except device nodes) exists in b with the same type, mode,
 * owner, mtime, content or target, and b has nothing else. */
static void compare_trees(const char *a, const char *b)
{
	struct dirent **ents;
	int n = scandir(a, &ents, NULL, alphasort), in_b = 0, skipped = 0;

	assert_true(n >= 0);
	for (int i = 0; i < n; i++) {
		const char *nm = ents[i]->d_name;
		if (!strcmp(nm, ".") || !strcmp(nm, "..")) {
			free(ents[i]);
			continue;
		}
		_cleanup_free_ char *pa = fm_xasprintf("%s/%s", a, nm), *pb = fm_xasprintf("%s/%s", b, nm);
		struct stat sa, sb;
		assert_int_equal(lstat(pa, &sa), 0);
		if (S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode)) {
			assert_false(exists(pb));
			skipped++;
			free(ents[i]);
			continue;
		}
		if (lstat(pb, &sb) < 0)
			fail_msg("%s missing from the unpacked image", pb);
		in_b++;
		assert_int_equal(sa.st_mode, sb.st_mode);
		assert_int_equal(sa.st_uid, sb.st_uid);
		assert_int_equal(sa.st_gid, sb.st_gid);
		if (!S_ISDIR(sa.st_mode))
			assert_int_equal(sa.st_mtim.tv_sec, sb.st_mtim.tv_sec);
		if (S_ISREG(sa.st_mode)) {
			_cleanup_free_ char *ca = slurp(pa), *cb = slurp(pb);
			assert_string_equal(ca, cb);
		} else if (S_ISLNK(sa.st_mode)) {
			char ta[256] = "", tb[256] = "";
			assert_true(readlink(pa, ta, sizeof(ta) - 1) > 0);
			assert_true(readlink(pb, tb, sizeof(tb) - 1) > 0);
			assert_string_equal(ta, tb);
		} else if (S_ISDIR(sa.st_mode)) {
			compare_trees(pa, pb);
		}
		free(ents[i]);
	}
	free(ents);
	(void)skipped;
	assert_int_equal(count_entries(b), in_b);
}

/* A small image-like tree with every kind of entry the store must keep. */
static void make_rootfs(const char *d)
{
	assert_int_equal(fm_mkdir_p(d, 0755), 0);
	mkdirs(d, "etc/deep/nested", 0755);
	mkdirs(d, "bin", 0755);
	mkdirs(d, "lib", 0755);
	mkdirs(d, "empty", 0750);
	mkdirs(d, "home/user", 0700);
	put(d, "etc/hostname", "box\n", 0644);
	put(d, "etc/deep/nested/file", "nested content\n", 0600);
	put(d, "bin/busybox", "#!/bin/sh\necho busybox\n", 0755);
	put(d, "bin/passwd", "suid\n", 04755);
	put_link(d, "bin/sh", "busybox");
	put_link(d, "lib/os-release", "/usr/lib/os-release");
	_cleanup_free_ char *bb = fm_xasprintf("%s/bin/busybox", d), *ls = fm_xasprintf("%s/bin/ls", d);
	assert_int_equal(link(bb, ls), 0);
	put(d, "home/user/.profile", "export PS1='$ '\n", 0644);
	_cleanup_free_ char *home = fm_xasprintf("%s/home/user", d), *prof = fm_xasprintf("%s/.profile", home);
	assert_int_equal(lchown(home, 1000, 1000), 0);
	assert_int_equal(lchown(prof, 1000, 1000), 0);
	_cleanup_free_ char *fifo = fm_xasprintf("%s/etc/initctl", d);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(chmod(fifo, 0600), 0);
	/* where the sandbox allows it: a device node, which the import must drop */
	_cleanup_free_ char *dev = fm_xasprintf("%s/etc/null", d);
	(void)mknod(dev, S_IFCHR | 0666, makedev(1, 3));
	(void)setxattr(prof, "user.fm-test", "xattr-value", 11, 0);
}

struct tent {
	const char *name;
	int type;           /* AE_IF*; 0 = hard link to `data` */
	const char *data;   /* file content, symlink target or hard link target */
	unsigned mode;
};

static void make_tar(const char *path, const struct tent *e, size_t n, bool gzip)
{
	struct archive *a = archive_write_new();

	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	if (gzip)
		assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *ae = archive_entry_new();
		archive_entry_set_pathname(ae, e[i].name);
		archive_entry_set_mtime(ae, 1700000000, 0);
		archive_entry_set_perm(ae, e[i].mode);
		if (e[i].type == 0) {
			archive_entry_set_filetype(ae, AE_IFREG);
			archive_entry_set_hardlink(ae, e[i].data);
		} else {
			archive_entry_set_filetype(ae, (unsigned)e[i].type);
		}
		if (e[i].type == AE_IFREG)
			archive_entry_set_size(ae, (la_int64_t)strlen(e[i].data));
		if (e[i].type == AE_IFLNK)
			archive_entry_set_symlink(ae, e[i].data);
		if (e[i].type == AE_IFCHR)
			archive_entry_set_rdev(ae, makedev(1, 3));
		assert_int_equal(archive_write_header(a, ae), ARCHIVE_OK);
		if (e[i].type == AE_IFREG)
			assert_int_equal(archive_write_data(a, e[i].data, strlen(e[i].data)),
					 (la_ssize_t)strlen(e[i].data));
		archive_entry_free(ae);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

static const struct tent image_tar[] = {
	{ "etc/", AE_IFDIR, NULL, 0755 },
	{ "etc/os-release", AE_IFREG, "ID=test\n", 0644 },
	{ "bin/", AE_IFDIR, NULL, 0755 },
	{ "bin/busybox", AE_IFREG, "#!/bin/sh\n", 0755 },
	{ "bin/sh", AE_IFLNK, "busybox", 0777 },
	{ "bin/ls", 0, "bin/busybox", 0755 },
	{ "lib/", AE_IFDIR, NULL, 0755 },
	{ "lib/abs", AE_IFLNK, "/usr/lib/os-release", 0777 },
	{ "dev/", AE_IFDIR, NULL, 0755 },
	{ "dev/null", AE_IFCHR, NULL, 0666 },
};

static void check_image_tar_rootfs(const char *root)
{
	_cleanup_free_ char *osr = fm_xasprintf("%s/etc/os-release", root),
			    *sh = fm_xasprintf("%s/bin/sh", root), *bb = fm_xasprintf("%s/bin/busybox", root),
			    *ls = fm_xasprintf("%s/bin/ls", root), *abs = fm_xasprintf("%s/lib/abs", root),
			    *null = fm_xasprintf("%s/dev/null", root), *dev = fm_xasprintf("%s/dev", root),
			    *content = slurp(osr);
	char t[128] = "";
	struct stat a, b;

	assert_string_equal(content, "ID=test\n");
	assert_true(readlink(sh, t, sizeof(t) - 1) > 0);
	assert_string_equal(t, "busybox");
	memset(t, 0, sizeof(t));
	assert_true(readlink(abs, t, sizeof(t) - 1) > 0);
	assert_string_equal(t, "/usr/lib/os-release");
	assert_int_equal(lstat(bb, &a), 0);
	assert_int_equal(a.st_mode, S_IFREG | 0755);
	assert_int_equal(lstat(ls, &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	assert_true(exists(dev));
	assert_false(exists(null));
}

static char *sha_of(const char *path)
{
	char d[FM_DIGEST_LEN];
	fm_error err = FM_ERROR_INIT;
	assert_int_equal(fm_sha256_file(path, d, &err), 0);
	return fm_xstrdup(d);
}

static void copy_file(const char *from, const char *to)
{
	_cleanup_free_ char *c = NULL;
	size_t len;
	assert_int_equal(fm_read_file(from, 1 << 24, &c, &len), 0);
	assert_int_equal(fm_write_file_atomic(to, c, len, 0600), 0);
}

/* ---- tests ---- */

static void test_digest_helpers(void **state)
{
	struct fx *f = *state;
	fm_error err = FM_ERROR_INIT;
	char d[FM_DIGEST_LEN];
	_cleanup_free_ char *p = fm_xasprintf("%s/abc", f->dir), *missing = fm_xasprintf("%s/nope", f->dir);

	assert_true(fm_digest_valid("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
	assert_false(fm_digest_valid("sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
	assert_false(fm_digest_valid("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a"));
	assert_false(fm_digest_valid("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0"));
	assert_false(fm_digest_valid("sha512:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
	assert_false(fm_digest_valid("sha256:../../../../../../../../../../../../../../../../../../etc/passwd"));
	assert_false(fm_digest_valid(""));
	assert_false(fm_digest_valid(NULL));

	write_file(p, "abc", 0644);
	assert_int_equal(fm_sha256_file(p, d, &err), 0);
	assert_string_equal(d, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_int_equal(fm_sha256_file(missing, d, &err), -ENOENT);
	assert_int_equal(err.code, -ENOENT);
	assert_non_null(strstr(err.msg, missing));
}

static void test_store_open(void **state)
{
	struct fx *f = *state;
	fm_error err = FM_ERROR_INIT;
	struct stat st;
	_cleanup_free_ char *tmpf = fm_image_tmp_path(f->s),
			    *stale_root = fm_xasprintf("%s/rootfs/%064d.tmp", f->store_path, 0),
			    *stale_file = fm_xasprintf("%s/x", stale_root);

	assert_int_equal(stat(f->store_path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(store_count(f, "blobs/sha256"), 0);
	assert_int_equal(store_count(f, "refs"), 0);
	assert_int_equal(strncmp(tmpf, f->store_path, strlen(f->store_path)), 0);

	write_file(tmpf, "partial blob", 0600);
	assert_int_equal(mkdir(stale_root, 0755), 0);
	write_file(stale_file, "x", 0600);
	fm_image_store_free(f->s);
	f->s = NULL;
	assert_int_equal(fm_image_store_open(f->store_path, &f->s, &err), 0);
	assert_false(exists(tmpf));
	assert_false(exists(stale_root));
	assert_int_equal(store_count(f, "tmp"), 0);

	/* an existing store root that others could enter is closed on open */
	fm_image_store_free(f->s);
	f->s = NULL;
	assert_int_equal(chmod(f->store_path, 0755), 0);
	assert_int_equal(fm_image_store_open(f->store_path, &f->s, &err), 0);
	assert_int_equal(stat(f->store_path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
}

static void test_import_directory(void **state)
{
	struct fx *f = *state;
	fm_error err = FM_ERROR_INIT;
	fm_image img, img2, l;
	fm_image *all = NULL;
	size_t n = 0;
	struct stat st, st2;
	_cleanup_free_ char *src = fm_xasprintf("%s/src", f->dir);

	make_rootfs(src);
	int64_t before = fm_now_wall_ms();
	assert_int_equal(fm_image_import(f->s, "alpine", src, &img, &err), 0);
	assert_int_equal(err.code, 0);
	assert_string_equal(img.name, "alpine");
	assert_true(fm_digest_valid(img.digest));
	assert_true(img.created_ms >= before - 1000 && img.created_ms <= fm_now_wall_ms() + 1000);

	_cleanup_free_ char *blob = fm_image_blob_path(f->s, img.digest),
			    *root = fm_image_rootfs_path(f->s, img.digest), *blob_sha = sha_of(blob);
	/* the digest computed while writing is the digest of what was written */
	assert_string_equal(blob_sha, img.digest);
	assert_int_equal(stat(blob, &st), 0);
	assert_int_equal(img.size, (uint64_t)st.st_size);
	compare_trees(src, root);

	/* hard links stay hard links, setuid survives, xattrs travel */
	_cleanup_free_ char *bb = fm_xasprintf("%s/bin/busybox", root), *ls = fm_xasprintf("%s/bin/ls", root),
			    *prof = fm_xasprintf("%s/home/user/.profile", root),
			    *sprof = fm_xasprintf("%s/home/user/.profile", src);
	assert_int_equal(stat(bb, &st), 0);
	assert_int_equal(stat(ls, &st2), 0);
	assert_int_equal(st.st_ino, st2.st_ino);
	char xv[32] = "";
	if (getxattr(sprof, "user.fm-test", xv, sizeof(xv)) > 0) {
		memset(xv, 0, sizeof(xv));
		assert_int_equal(getxattr(prof, "user.fm-test", xv, sizeof(xv)), 11);
		assert_string_equal(xv, "xattr-value");
	}

	/* same tree, same digest; and nothing left in tmp/ */
	assert_int_equal(fm_image_import(f->s, "alpine2", src, &img2, &err), 0);
	assert_string_equal(img.digest, img2.digest);
	assert_int_equal(store_count(f, "tmp"), 0);
	assert_int_equal(store_count(f, "blobs/sha256"), 1);
	assert_int_equal(store_count(f, "rootfs"), 1);

	assert_int_equal(fm_image_lookup(f->s, "alpine", &l), 0);
	assert_string_equal(l.digest, img.digest);
	assert_int_equal(l.size, img.size);
	assert_int_equal(fm_image_lookup(f->s, img.digest, &l), 0);
	assert_string_equal(l.name, "alpine");
	assert_string_equal(l.digest, img.digest);
	assert_int_equal(l.size, img.size);
	assert_int_equal(fm_image_lookup(f->s, "nosuch", &l), -ENOENT);
	assert_int_equal(fm_image_lookup(f->s, "sha256:0000000000000000000000000000000000000000000000000000000000000000", &l), -ENOENT);
	assert_int_equal(fm_image_lookup(f->s, "sha256:nothex", &l), -EINVAL);

	assert_int_equal(fm_image_list(f->s, &all, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(all[0].name, "alpine");
	assert_string_equal(all[1].name, "alpine2");
	assert_string_equal(all[1].digest, img.digest);
	free(all);

	/* a changed tree is a different image, and the name follows it */
	put(src, "etc/hostname", "other\n", 0644);
	assert_int_equal(fm_image_import(f->s, "alpine2", src, &img2, &err), 0);
	assert_string_not_equal(img.digest, img2.digest);
	assert_int_equal(fm_image_lookup(f->s, "alpine2", &l), 0);
	assert_string_equal(l.digest, img2.digest);
}

static struct timespec fixed_times[2] = { { 1600000000, 0 }, { 1600000000, 0 } };

static int set_fixed_time(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return utimensat(AT_FDCWD, p, fixed_times, AT_SYMLINK_NOFOLLOW);
}

static void test_import_deterministic(void **state)
{
	struct fx *f = *state;
	fm_error err = FM_ERROR_INIT;
	fm_image a, b;
	_cleanup_free_ char *s1 = fm_xasprintf("%s/one", f->dir), *s2 = fm_xasprintf("%s/two", f->dir);
	static const char *names[] = { "a-b", "b", "c", "a/y", "a/x", "zz", "A" };

	/* the same tree built in opposite orders: directory order on disk differs */
	assert_int_equal(mkdir(s1, 0755), 0);
	assert_int_equal(mkdir(s2, 0755), 0);
	mkdirs(s1, "a", 0755);
	mkdirs(s2, "a", 0755);
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		put(s1, names[i], names[i], 0644);
		put(s2, names[ARRAY_SIZE(names) - 1 - i], names[ARRAY_SIZE(names) - 1 - i], 0644);
	}
	assert_int_equal(nftw(s1, set_fixed_time, 16, FTW_PHYS | FTW_DEPTH), 0);
	assert_int_equal(nftw(s2, set_fixed_time, 16, FTW_PHYS | FTW_DEPTH), 0);

	assert_int_equal(fm_image_import(f->s, "one", s1, &a, &err), 0);
	assert_int_equal(fm_image_import(f->s, "two", s2, &b, &err), 0);
	assert_string_equal(a.digest, b.digest);

	/* and the archive lists names depth-first in byte order */
	static const char *expect[] = { "./", "./A", "./a/", "./a/x", "./a/y", "./a-b", "./b", "./c", "./zz" };
	_cleanup_free_ char *blob = fm_image_blob_path(f->s, a.digest);
	struct archive *ar = archive_read_new();
	struct archive_entry *e;
	size_t i = 0;
	archive_read_support_format_tar(ar);
	assert_int_equal(archive_read_open_filename(ar, blob, 10240), ARCHIVE_OK);
	while (archive_read_next_header(ar, &e) == ARCHIVE_OK) {
		assert_true(i < ARRAY_SIZE(expect));
		assert_string_equal(archive_entry_pathname(e), expect[i]);
		assert_int_equal(archive_entry_mtime(e), 1600000000);
		/* no user names: they would make the digest depend on the host */
		assert_true(!archive_entry_uname(e) || !*archive_entry_uname(e));
		i++;
	}
	assert_int_equal(i, ARRAY_SIZE(expect));
	archive_read_free(ar);
}

static void test_import_tarball(void **state)
{
	struct fx *f = *state;
	fm_error err = FM_ERROR_INIT;
	fm_image plain, gz;
	_cleanup_free_ char *t = fm_xasprintf("%s/image.tar", f->dir), *tg = fm_xasprintf("%s/image.tar.gz", f->dir);

	make_tar(t, image_tar, ARRAY_SIZE(image_tar), false);
	make_tar(tg, image_tar, ARRAY_SIZE(image_tar), true);
	_cleanup_free_ char *want = sha_of(t), *want_gz = sha_of(tg);

	assert_int_equal(fm_image_import(f->s, "plain", t, &plain, &err), 0);
	assert_string_equal(plain.digest, want); /* a tarball is hashed as it is */
	assert_true(exists(t));                  /* and not consumed */
	assert_int_equal(fm_image_import(f->s, "gz", tg, &gz, &err), 0);
	assert_string_equal(gz.digest, want_gz);
	assert_string_not_equal(plain.digest, gz.digest);

	_cleanup_free_ char *r1 = fm_image_rootfs_path(f->s, plain.digest), *r2 = fm_image_rootfs_path(f->s, gz.digest);
	check_image_tar_rootfs(r1);
	check_image_tar_rootfs(r2);
	assert_int_equal(store_count(f, "tmp"), 0);
}

static void assert_store_untouched(struct fx *f)
{
	fm_image *all = NULL;
	size_t n = 99;

	assert_int_equal(fm_image_list(f->s, &all, &n), 0);
	assert_int_equal(n, 0);
	free(all);
	assert_int_equal(store_count(f, "refs"), 0);
	assert_int_equal(store_count(f, "blobs/sha256"), 0);
	assert_int_equal(store_count(f, "rootfs"), 0);
	assert_int_equal(store_count(f, "tmp"), 0);
}

static void test_import_hostile(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *outside = fm_xasprintf("%s/outside", f->dir),
			    *secret = fm_xasprintf("%s/secret", outside),
			    *abs_x = fm_xasprintf("%s/abs/x", f->dir),
			    *abs_dir = fm_xasprintf("%s/abs", f->dir),
			    *t = fm_xasprintf("%s/evil.tar", f->dir);
	assert_int_equal(mkdir(outside, 0755), 0);
	write_file(secret, "secret\n", 0600);

	struct tent dotdot[] = { { "ok", AE_IFREG, "fine\n", 0644 },
				 { "../../../escape", AE_IFREG, "pwned\n", 0644 } };
	struct tent dotdot2[] = { { "ok", AE_IFREG, "fine\n", 0644 }, { "../escape", AE_IFREG, "pwned\n", 0644 } };
	struct tent absolute[] = { { "ok", AE_IFREG, "fine\n", 0644 }, { abs_x, AE_IFREG, "pwned\n", 0644 } };
	struct tent via_link[] = { { "ok", AE_IFREG, "fine\n", 0644 },
				   { "link", AE_IFLNK, outside, 0777 },
				   { "link/evil", AE_IFREG, "pwned\n", 0644 } };
	struct tent hardlink[] = { { "ok", AE_IFREG, "fine\n", 0644 }, { "h", 0, secret, 0644 } };
	struct {
		struct tent *e;
		size_t n;
	} cases[] = {
		{ dotdot, ARRAY_SIZE(dotdot) },     { dotdot2, ARRAY_SIZE(dotdot2) },
		{ absolute, ARRAY_SIZE(absolute) }, { via_link, ARRAY_SIZE(via_link) },
		{ hardlink, ARRAY_SIZE(hardlink) },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		fm_error err = FM_ERROR_INIT;
		fm_image img;
		for (int gz = 0; gz <= 1; gz++) {
			unlink(t);
			make_tar(t, cases[i].e, cases[i].n, gz);
			int r = fm_image_import(f->s, "evil", t, &img, &err);
			if (r >= 0)
				fail_msg("hostile archive %zu (gzip %d) was imported", i, gz);
			assert_int_equal(err.code, r);
			assert_non_null(strstr(err.msg, "cannot unpack image"));
			fm_error_clear(&err);
			assert_store_untouched(f);
			assert_int_equal(fm_image_lookup(f->s, "evil", &img), -ENOENT);
		}
	}
	/* nothing escaped anywhere we could have reached */
	_cleanup_free_ char *e1 = fm_xasprintf("%s/escape", f->dir), *e2 = fm_xasprintf("%s/rootfs/escape", f->store_path),
			    *e3 = fm_xasprintf("%s/escape", f->store_path), *content = slurp(secret);
	struct stat st;
	assert_false(exists(e1));
	assert_false(exists(e2));
	assert_false(exists(e3));
	assert_false(exists(abs_x));
	assert_false(exists(abs_dir));
	assert_int_equal(count_entries(outside), 1);
	assert_string_equal(content, "secret\n");
	assert_int_equal(stat(secret, &st), 0);
	assert_int_equal(st.st_nlink, 1);

	/* a damaged archive fails the same clean way, with libarchive's reason */
	fm_error err = FM_ERROR_INIT;
	fm_image img;
	_cleanup_free_ char *tg = fm_xasprintf("%s/trunc.tar.gz", f->dir);
	make_tar(tg, image_tar, ARRAY_SIZE(image_tar), true);
	assert_int_equal(stat(tg, &st), 0);
	assert_int_equal(truncate(tg, st.st_size / 2), 0);
	assert_true(fm_image_import(f->s, "trunc", tg, &img, &err) < 0);
	assert_non_null(strstr(err.msg, "cannot unpack image"));
	assert_store_untouched(f);
	fm_error_clear(&err);
}

static void test_import_blob(void **state)
{
	struct fx *f = *state;
	fm_error err = FM_ERROR_INIT;
	fm_image img;
	_cleanup_free_ char *t = fm_xasprintf("%s/image.tar", f->dir), *recv = fm_xasprintf("%s/received", f->dir);

	make_tar(t, image_tar, ARRAY_SIZE(image_tar), false);
	_cleanup_free_ char *want = sha_of(t);

	/* wrong digest: refused, the received file is gone, nothing adopted */
	copy_file(t, recv);
	assert_int_equal(fm_image_import_blob(f->s, "peer", recv,
					      "sha256:0000000000000000000000000000000000000000000000000000000000000000",
					      &img, &err), -EBADMSG);
	assert_int_equal(err.code, -EBADMSG);
	assert_non_null(strstr(err.msg, "digest mismatch"));
	assert_non_null(strstr(err.msg, "expected sha256:0000"));
	assert_non_null(strstr(err.msg, want));
	fm_error_clear(&err);
	assert_false(exists(recv));
	assert_store_untouched(f);

	/* malformed digest */
	copy_file(t, recv);
	assert_int_equal(fm_image_import_blob(f->s, "peer", recv, "sha256:XYZ", &img, &err), -EINVAL);
	fm_error_clear(&err);
	assert_false(exists(recv));
	assert_store_untouched(f);

	/* right digest, from the store's own tmp path as the transfer code uses it */
	_cleanup_free_ char *tp = fm_image_tmp_path(f->s);
	copy_file(t, tp);
	assert_int_equal(fm_image_import_blob(f->s, "peer", tp, want, &img, &err), 0);
	assert_string_equal(img.digest, want);
	assert_string_equal(img.name, "peer");
	assert_false(exists(tp));
	_cleanup_free_ char *blob = fm_image_blob_path(f->s, want), *root = fm_image_rootfs_path(f->s, want);
	assert_true(exists(blob));
	check_image_tar_rootfs(root);
	assert_int_equal(store_count(f, "tmp"), 0);

	/* from another filesystem, if there is one at hand: copied instead of renamed */
	struct stat a, b;
	if (stat("/dev/shm", &a) == 0 && stat(f->dir, &b) == 0 && a.st_dev != b.st_dev) {
		char shm[] = "/dev/shm/fm-test-blob-XXXXXX";
		int fd = mkstemp(shm);
		assert_true(fd >= 0);
		close(fd);
		copy_file(t, shm);
		assert_int_equal(fm_image_import_blob(f->s, "peer2", shm, want, &img, &err), 0);
		assert_false(exists(shm));
		assert_int_equal(fm_image_lookup(f->s, "peer2", &img), 0);
		assert_string_equal(img.digest, want);
	}
}

static void test_remove(void **state)
{
	struct fx *f = *state;
	fm_error err = FM_ERROR_INIT;
	fm_image a, b, l;
	_cleanup_free_ char *src = fm_xasprintf("%s/src", f->dir);

	make_rootfs(src);
	assert_int_equal(fm_image_import(f->s, "a", src, &a, &err), 0);
	assert_int_equal(fm_image_import(f->s, "b", src, &b, &err), 0);
	assert_string_equal(a.digest, b.digest);
	_cleanup_free_ char *blob = fm_image_blob_path(f->s, a.digest), *root = fm_image_rootfs_path(f->s, a.digest);

	assert_int_equal(fm_image_remove(f->s, "a", &err), 0);
	assert_int_equal(fm_image_lookup(f->s, "a", &l), -ENOENT);
	assert_int_equal(fm_image_lookup(f->s, "b", &l), 0);
	assert_true(exists(blob));
	assert_true(exists(root));
	assert_int_equal(fm_image_lookup(f->s, a.digest, &l), 0);
	assert_string_equal(l.name, "b");

	assert_int_equal(fm_image_remove(f->s, "b", &err), 0);
	assert_false(exists(blob));
	assert_false(exists(root));
	assert_int_equal(fm_image_lookup(f->s, a.digest, &l), -ENOENT);
	assert_store_untouched(f);

	assert_int_equal(fm_image_remove(f->s, "b", &err), -ENOENT);
	assert_non_null(strstr(err.msg, "no image named b"));
	fm_error_clear(&err);

	/* an image without a name is still found by digest, with an empty name */
	_cleanup_free_ char *t = fm_xasprintf("%s/image.tar", f->dir), *ref = fm_xasprintf("%s/refs/x", f->store_path);
	make_tar(t, image_tar, ARRAY_SIZE(image_tar), false);
	assert_int_equal(fm_image_import(f->s, "x", t, &a, &err), 0);
	assert_int_equal(unlink(ref), 0);
	assert_int_equal(fm_image_lookup(f->s, a.digest, &l), 0);
	assert_string_equal(l.name, "");
	assert_int_equal(l.size, a.size);
}

static void test_invalid_names(void **state)
{
	struct fx *f = *state;
	char long_name[80];
	fm_image img;
	_cleanup_free_ char *src = fm_xasprintf("%s/src", f->dir), *missing = fm_xasprintf("%s/missing", f->dir);

	memset(long_name, 'a', 64);
	long_name[64] = '\0';
	const char *bad[] = { "", "../x", "a/b", "-x", long_name, ".hidden", "a b" };
	make_rootfs(src);

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		fm_error err = FM_ERROR_INIT;
		assert_int_equal(fm_image_import(f->s, bad[i], src, &img, &err), -EINVAL);
		assert_int_equal(err.code, -EINVAL);
		assert_non_null(strstr(err.msg, "invalid image name"));
		fm_error_clear(&err);
		assert_int_equal(fm_image_remove(f->s, bad[i], &err), -EINVAL);
		fm_error_clear(&err);
		assert_int_equal(fm_image_lookup(f->s, bad[i], &img), -EINVAL);
		_cleanup_free_ char *p = fm_image_tmp_path(f->s);
		write_file(p, "x", 0600);
		assert_int_equal(fm_image_import_blob(f->s, bad[i],
						      p, "sha256:0000000000000000000000000000000000000000000000000000000000000000",
						      &img, &err), -EINVAL);
		fm_error_clear(&err);
	}
	assert_store_untouched(f);

	/* the longest valid name works */
	fm_error err = FM_ERROR_INIT;
	long_name[63] = '\0';
	assert_int_equal(fm_image_import(f->s, long_name, src, &img, &err), 0);
	assert_string_equal(img.name, long_name);

	assert_int_equal(fm_image_import(f->s, "ok", missing, &img, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "does not exist"));
	assert_non_null(strstr(err.msg, missing));
	fm_error_clear(&err);
	assert_int_equal(fm_image_import(f->s, "ok", "/dev/null", &img, &err), -EINVAL);
	fm_error_clear(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_digest_helpers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_directory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_deterministic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_tarball, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_blob, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_directory, setup_helper, teardown),
		cmocka_unit_test_setup_teardown(test_import_deterministic, setup_helper, teardown),
		cmocka_unit_test_setup_teardown(test_import_tarball, setup_helper, teardown),
		cmocka_unit_test_setup_teardown(test_import_hostile, setup_helper, teardown),
		cmocka_unit_test_setup_teardown(test_import_blob, setup_helper, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
