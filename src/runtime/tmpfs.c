/* Runtime Controller, fresh tmpfs mounts (see tmpfs.h). */
#include "runtime/tmpfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "basic/log.h"
#include "basic/util.h"

#define MOUNTINFO_MAX (1u << 20)
#define MANIFEST_MAX (64u * 1024)
#define SIZE_KIB_MAX (1ull << 30)        /* 1 TiB */
#define NR_INODES_MAX (1ull << 32)

/* The tmpfs mounts that may travel fresh, their keys, and whether entries may
 * travel with them (else: only an empty one travels). */
static const struct {
	const char *path, *key;
	bool entries;
} known[] = {
	{ "/dev", "fm-tmpfs-dev", true },
	{ "/dev/shm", "fm-tmpfs-dev-shm", false },
};

/* The devices every OCI container has (runc makes them in /dev): null, zero,
 * full, random, urandom, tty, ptmx.  A peer can ask for no other. */
static const struct {
	unsigned major, minor;
} std_devices[] = { { 1, 3 }, { 1, 5 }, { 1, 7 }, { 1, 8 }, { 1, 9 }, { 5, 0 }, { 5, 2 } };

/* Where the container's other mounts go: CRIU mounts there (as root, in the
 * container's namespace), so they must be directories, never links. */
static bool mountpoint_name(const char *name)
{
	return !strcmp(name, "pts") || !strcmp(name, "shm") || !strcmp(name, "mqueue");
}

static bool std_device(unsigned major, unsigned minor)
{
	for (size_t i = 0; i < ARRAY_SIZE(std_devices); i++)
		if (std_devices[i].major == major && std_devices[i].minor == minor)
			return true;
	return false;
}

/* One path component of a few plain characters. */
static bool entry_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= sizeof(((fm_tmpfs_entry *)0)->name) || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-") == n;
}

void fm_tmpfs_mounts_free(fm_tmpfs_mount *m, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(m[i].entries);
		m[i].entries = NULL;
		m[i].nentries = 0;
	}
}

static int known_by_path(const char *path)
{
	for (size_t i = 0; i < ARRAY_SIZE(known); i++)
		if (!strcmp(known[i].path, path))
			return (int)i;
	return -1;
}

static int known_by_key(const char *key)
{
	for (size_t i = 0; i < ARRAY_SIZE(known); i++)
		if (!strcmp(known[i].key, key))
			return (int)i;
	return -1;
}

/* "123" as an unsigned number no larger than max (base 8 or 10). */
static bool parse_num(const char *s, int base, uint64_t max, uint64_t *v)
{
	char *end;
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long long x = strtoull(s, &end, base);
	if (errno || *end || x > max)
		return false;
	*v = x;
	return true;
}

/* Per-mount options: rw, and flags a fresh mount can have again. */
static bool mount_opts_ok(char *opts, fm_tmpfs_mount *m)
{
	bool rw = false;
	for (char *save = NULL, *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		if (!strcmp(o, "rw"))
			rw = true;
		else if (!strcmp(o, "nosuid"))
			m->nosuid = true;
		else if (!strcmp(o, "nodev"))
			m->nodev = true;
		else if (!strcmp(o, "noexec"))
			m->noexec = true;
		else if (strcmp(o, "relatime") != 0)
			return false;
	}
	return rw;
}

/* Superblock options: size, mode and inode count; nothing that changes who
 * owns it or how it behaves. */
static bool super_opts_ok(char *opts, fm_tmpfs_mount *m)
{
	uint64_t v;
	m->mode = 01777;
	for (char *save = NULL, *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		size_t n = strlen(o);
		if (!strcmp(o, "rw") || !strcmp(o, "inode64"))
			continue;
		if (!strncmp(o, "size=", 5) && n > 6 && o[n - 1] == 'k') {
			o[n - 1] = 0;
			if (!parse_num(o + 5, 10, SIZE_KIB_MAX, &m->size_kib) || m->size_kib == 0)
				return false;
		} else if (!strncmp(o, "nr_inodes=", 10)) {
			if (!parse_num(o + 10, 10, NR_INODES_MAX, &m->nr_inodes))
				return false;
		} else if (!strncmp(o, "mode=", 5)) {
			if (!parse_num(o + 5, 8, 07777, &v))
				return false;
			m->mode = (unsigned)v;
		} else {
			return false;
		}
	}
	return true;
}

int fm_tmpfs_mountinfo_line(const char *line, fm_tmpfs_mount *m)
{
	char buf[1024], *f[32];
	int n = 0, dash = -1;
	size_t len = strlen(line);

	if (len >= sizeof(buf))
		return 0;
	memcpy(buf, line, len + 1);
	for (char *save = NULL, *t = strtok_r(buf, " \n", &save); t && n < 32; t = strtok_r(NULL, " \n", &save)) {
		if (dash < 0 && n >= 6 && !strcmp(t, "-"))
			dash = n;
		f[n++] = t;
	}
	if (dash < 0 || n != dash + 4 || strcmp(f[dash + 1], "tmpfs") != 0 || strcmp(f[3], "/") != 0)
		return 0;
	int k = known_by_path(f[4]);
	if (k < 0)
		return 0;
	*m = (fm_tmpfs_mount){ .path = known[k].path, .key = known[k].key };
	if (sscanf(f[2], "%u:%u", &m->dev_major, &m->dev_minor) != 2)
		return 0;
	return mount_opts_ok(f[5], m) && super_opts_ok(f[dash + 3], m) ? 1 : 0;
}

/* Does directory fd hold nothing? (Closes fd.) */
static bool dir_empty(int fd)
{
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return false;
	}
	bool empty = true;
	struct dirent *de;
	while (empty && (de = readdir(d)))
		empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
	closedir(d);
	return empty;
}

/* One entry of the mount's root (dfd, device mdev) as a manifest can say it,
 * or false. */
static bool entry_of(int dfd, dev_t mdev, const char *name, fm_tmpfs_entry *e)
{
	struct stat st;
	if (!entry_name_ok(name) || fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return false;
	*e = (fm_tmpfs_entry){ .mode = st.st_mode & 07777, .uid = st.st_uid, .gid = st.st_gid };
	memcpy(e->name, name, strlen(name) + 1);  /* entry_name_ok: it fits */
	if (S_ISDIR(st.st_mode)) {
		e->type = 'd';
		if (st.st_dev != mdev)
			return true;   /* another mount's mountpoint: CRIU mounts it again */
		int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		return fd >= 0 && dir_empty(fd);
	}
	if (S_ISCHR(st.st_mode)) {
		e->type = 'c';
		e->major = major(st.st_rdev);
		e->minor = minor(st.st_rdev);
		return std_device(e->major, e->minor);
	}
	if (S_ISLNK(st.st_mode)) {
		e->type = 'l';
		ssize_t k = readlinkat(dfd, name, e->target, sizeof(e->target));
		if (k <= 0 || (size_t)k >= sizeof(e->target))
			return false;
		e->target[k] = 0;
		return true;
	}
	e->type = 'f';
	return S_ISREG(st.st_mode) && st.st_size == 0;
}

/* Is path (below the container's root, through /proc) the mount m, holding
 * only what its manifest can say (nothing, for a mount without entries)?
 * Fills m->entries. */
static bool scan_mount(pid_t pid, fm_tmpfs_mount *m, bool entries)
{
	_cleanup_free_ char *p = fm_xasprintf("/proc/%d/root%s", (int)pid, m->path);
	int fd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0)
		return false;
	dev_t mdev = makedev(m->dev_major, m->dev_minor);
	if (fstat(fd, &st) < 0 || st.st_dev != mdev) {
		close(fd);
		return false;
	}
	if (!entries)
		return dir_empty(fd);
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return false;
	}
	m->entries = fm_xcalloc(FM_TMPFS_ENTRIES_MAX, sizeof(*m->entries));
	bool ok = true;
	struct dirent *de;
	while (ok && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		ok = m->nentries < FM_TMPFS_ENTRIES_MAX &&
		     entry_of(dirfd(d), mdev, de->d_name, &m->entries[m->nentries++]);
	}
	closedir(d);
	return ok;
}

static json_t *manifest_entry(const fm_tmpfs_mount *m)
{
	json_t *list = json_array();
	for (size_t i = 0; i < m->nentries; i++) {
		const fm_tmpfs_entry *e = &m->entries[i];
		json_t *o = json_pack("{s:s, s:s#, s:i, s:I, s:I}", "name", e->name, "type", &e->type, (int)1,
				      "mode", (int)e->mode, "uid", (json_int_t)e->uid, "gid", (json_int_t)e->gid);
		if (e->type == 'c') {
			json_object_set_new(o, "major", json_integer(e->major));
			json_object_set_new(o, "minor", json_integer(e->minor));
		} else if (e->type == 'l') {
			json_object_set_new(o, "target", json_string(e->target));
		}
		json_array_append_new(list, o);
	}
	return json_pack("{s:s, s:I, s:I, s:i, s:b, s:b, s:b, s:o}", "key", m->key, "size_kib", (json_int_t)m->size_kib,
			 "nr_inodes", (json_int_t)m->nr_inodes, "mode", (int)m->mode, "nosuid", m->nosuid,
			 "nodev", m->nodev, "noexec", m->noexec, "entries", list);
}

int fm_tmpfs_dump_conf(const char *name, pid_t pid, const char *images_dir, char **conf, fm_error *err)
{
	_cleanup_free_ char *path = fm_xasprintf("/proc/%d/mountinfo", (int)pid), *info = NULL;
	fm_tmpfs_mount found[ARRAY_SIZE(known)] = { 0 };
	unsigned seen[ARRAY_SIZE(known)] = { 0 };
	int r;

	if ((r = fm_read_file(path, MOUNTINFO_MAX, &info, NULL)) < 0)
		return fm_error_set(err, r, "cannot read %s: %s", path, strerror(-r));
	for (char *save = NULL, *l = strtok_r(info, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		/* every mount at a path of ours counts: a stacked one is not ours */
		char mp[256];
		int k = sscanf(l, "%*s %*s %*s %*s %255s", mp) == 1 ? known_by_path(mp) : -1;
		if (k < 0)
			continue;
		seen[k]++;
		if (!fm_tmpfs_mountinfo_line(l, &found[k]))
			found[k].path = NULL;
	}
	json_t *list = json_array();
	bool fresh[ARRAY_SIZE(known)] = { false };
	for (size_t i = 0; i < ARRAY_SIZE(known); i++) {
		fresh[i] = seen[i] == 1 && found[i].path && scan_mount(pid, &found[i], known[i].entries);
		if (fresh[i])
			json_array_append_new(list, manifest_entry(&found[i]));
	}
	r = 0;
	if (json_array_size(list) > 0) {
		/* the manifest first: an external mount without it could not be restored */
		_cleanup_free_ char *file = fm_xasprintf("%s/%s", images_dir, FM_TMPFS_MANIFEST);
		json_t *doc = json_pack("{s:O}", "mounts", list);
		_cleanup_free_ char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
		json_decref(doc);
		/* what a destination would refuse (a mode, a link target, an owner
		 * its checks do not take) is not sent: CRIU carries those mounts */
		fm_tmpfs_mount check[FM_TMPFS_MAX];
		size_t nc = 0;
		if (!text)
			r = fm_error_set(err, -ENOMEM, "out of memory");
		else if ((r = fm_tmpfs_manifest_parse(text, check, &nc, err)) < 0)
			fm_error_prefix(err, "container %s", name);
		else if ((r = fm_write_file_staged(file, text, strlen(text), 0600)) < 0)
			fm_error_set(err, r, "cannot write %s: %s", file, strerror(-r));
		fm_tmpfs_mounts_free(check, nc);
		for (size_t i = 0; i < ARRAY_SIZE(known) && r == 0; i++) {
			if (!fresh[i])
				continue;
			/* known paths and keys: no quote, backslash or newline */
			char *more = fm_xasprintf("%sexternal \"mnt[%s]:%s\"\n", *conf ? *conf : "", found[i].path,
						  found[i].key);
			free(*conf);
			*conf = more;
			fm_info(FM_C_CHECKPOINTING, "%s of %s travels as a fresh tmpfs (%zu entries), not in the checkpoint",
				found[i].path, name, found[i].nentries);
		}
	}
	json_decref(list);
	fm_tmpfs_mounts_free(found, ARRAY_SIZE(known));
	return r;
}

static bool json_uint(json_t *v, uint64_t max, unsigned *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
		return false;
	*out = (unsigned)json_integer_value(v);
	return true;
}

/* A mount's entries from a peer: names of ours, each once, the standard
 * devices only, modes without set-id bits on devices and files. */
static bool parse_entries(json_t *list, bool allowed, fm_tmpfs_mount *m)
{
	json_t *v;
	size_t i;
	if (!list)
		return true;
	if (!json_is_array(list) || json_array_size(list) > (allowed ? FM_TMPFS_ENTRIES_MAX : 0))
		return false;
	m->entries = fm_xcalloc(FM_TMPFS_ENTRIES_MAX, sizeof(*m->entries));
	json_array_foreach(list, i, v) {
		fm_tmpfs_entry *e = &m->entries[m->nentries++];
		const char *name = json_string_value(json_object_get(v, "name"));
		const char *type = json_string_value(json_object_get(v, "type"));
		if (!name || !entry_name_ok(name) || !type || strlen(type) != 1 || !strchr("dclf", type[0]) ||
		    !json_uint(json_object_get(v, "mode"), type[0] == 'd' ? 07777 : 0777, &e->mode) ||
		    !json_uint(json_object_get(v, "uid"), INT32_MAX, &e->uid) ||
		    !json_uint(json_object_get(v, "gid"), INT32_MAX, &e->gid))
			return false;
		memcpy(e->name, name, strlen(name) + 1);  /* entry_name_ok: it fits */
		e->type = type[0];
		if (mountpoint_name(name) && e->type != 'd')
			return false;
		for (size_t j = 0; j + 1 < m->nentries; j++)
			if (!strcmp(m->entries[j].name, name))
				return false;
		if (e->type == 'c' && (!json_uint(json_object_get(v, "major"), 4095, &e->major) ||
				       !json_uint(json_object_get(v, "minor"), 1048575, &e->minor) ||
				       !std_device(e->major, e->minor)))
			return false;
		if (e->type == 'l') {
			json_t *t = json_object_get(v, "target");
			const char *target = json_string_value(t);
			if (!target || !*target || json_string_length(t) != strlen(target) ||
			    strlen(target) >= sizeof(e->target))
				return false;
			snprintf(e->target, sizeof(e->target), "%s", target);
		}
	}
	return true;
}

int fm_tmpfs_manifest_parse(const char *text, fm_tmpfs_mount *m, size_t *n, fm_error *err)
{
	json_error_t je;
	json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &je), *list = json_object_get(o, "mounts"), *v;
	size_t i;
	int r = 0;

	*n = 0;
	if (!json_is_array(list) || json_array_size(list) > FM_TMPFS_MAX) {
		json_decref(o);
		return fm_error_set(err, -EBADMSG, "%s: not a list of at most %d tmpfs mounts", FM_TMPFS_MANIFEST,
				    FM_TMPFS_MAX);
	}
	json_array_foreach(list, i, v) {
		const char *key = json_string_value(json_object_get(v, "key"));
		json_t *size = json_object_get(v, "size_kib"), *inodes = json_object_get(v, "nr_inodes"),
		       *mode = json_object_get(v, "mode"), *nosuid = json_object_get(v, "nosuid"),
		       *nodev = json_object_get(v, "nodev"), *noexec = json_object_get(v, "noexec");
		int k = key ? known_by_key(key) : -1;
		bool dup = false;
		for (size_t j = 0; j < *n; j++)
			dup |= k >= 0 && m[j].key == known[k].key;
		if (k < 0 || dup || !json_is_integer(size) || json_integer_value(size) < 0 ||
		    (uint64_t)json_integer_value(size) > SIZE_KIB_MAX || !json_is_integer(inodes) ||
		    json_integer_value(inodes) < 0 || (uint64_t)json_integer_value(inodes) > NR_INODES_MAX ||
		    !json_is_integer(mode) || json_integer_value(mode) < 0 || json_integer_value(mode) > 07777 ||
		    !json_is_boolean(nosuid) || !json_is_boolean(nodev) || !json_is_boolean(noexec)) {
			r = fm_error_set(err, -EBADMSG, "%s: mount %zu is not one this host can make (%s)",
					 FM_TMPFS_MANIFEST, i, key ? key : "no key");
			break;
		}
		m[(*n)++] = (fm_tmpfs_mount){ .path = known[k].path, .key = known[k].key,
					      .size_kib = (uint64_t)json_integer_value(size),
					      .nr_inodes = (uint64_t)json_integer_value(inodes),
					      .mode = (unsigned)json_integer_value(mode), .nosuid = json_is_true(nosuid),
					      .nodev = json_is_true(nodev), .noexec = json_is_true(noexec) };
		if (!parse_entries(json_object_get(v, "entries"), known[k].entries, &m[*n - 1])) {
			r = fm_error_set(err, -EBADMSG, "%s: the entries of %s are not ones this host makes",
					 FM_TMPFS_MANIFEST, key);
			break;
		}
	}
	json_decref(o);
	if (r < 0) {
		fm_tmpfs_mounts_free(m, *n);
		*n = 0;
	}
	return r;
}

void fm_tmpfs_release(const char *dir)
{
	for (size_t i = 0; i < ARRAY_SIZE(known); i++) {
		_cleanup_free_ char *p = fm_xasprintf("%s/%s", dir, known[i].key);
		(void)umount2(p, MNT_DETACH);
		(void)rmdir(p);
	}
	(void)umount2(dir, MNT_DETACH);
	(void)rmdir(dir);
}

/* Makes entry e in directory dfd (a fresh tmpfs of ours: nothing in it to
 * follow). */
static int make_entry(int dfd, const fm_tmpfs_entry *e)
{
	int r = 0;
	switch (e->type) {
	case 'd':
		r = mkdirat(dfd, e->name, 0700);
		break;
	case 'c':
		r = mknodat(dfd, e->name, S_IFCHR | 0600, makedev(e->major, e->minor));
		break;
	case 'l':
		r = symlinkat(e->target, dfd, e->name);
		break;
	default: {
		int fd = openat(dfd, e->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		r = fd < 0 ? -1 : close(fd);
	}
	}
	if (r == 0 && e->type != 'l')
		r = fchmodat(dfd, e->name, e->mode, 0);
	if (r == 0)
		r = fchownat(dfd, e->name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW);
	return r < 0 ? -errno : 0;
}

/* A fresh private tmpfs at p as m says, with its entries. */
static int make_mount(const char *p, const fm_tmpfs_mount *m, fm_error *err)
{
	char data[96];
	int k = snprintf(data, sizeof(data), "mode=%o", m->mode);
	if (m->size_kib)
		k += snprintf(data + k, sizeof(data) - (size_t)k, ",size=%lluk", (unsigned long long)m->size_kib);
	if (m->nr_inodes)
		snprintf(data + k, sizeof(data) - (size_t)k, ",nr_inodes=%llu", (unsigned long long)m->nr_inodes);
	unsigned long flags = (m->nosuid ? MS_NOSUID : 0) | (m->nodev ? MS_NODEV : 0) | (m->noexec ? MS_NOEXEC : 0);
	if (mkdir(p, 0700) < 0 || mount("tmpfs", p, "tmpfs", flags, data) < 0 ||
	    mount(NULL, p, NULL, MS_PRIVATE, NULL) < 0)
		return fm_error_set(err, -errno, "cannot make a fresh tmpfs for %s at %s: %m", m->path, p);
	_cleanup_close_ int dfd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return fm_error_set(err, -errno, "cannot open %s: %m", p);
	for (size_t i = 0; i < m->nentries; i++) {
		int r = make_entry(dfd, &m->entries[i]);
		if (r < 0)
			return fm_error_set(err, r, "cannot make %s/%s in a fresh tmpfs for %s: %s", p,
					    m->entries[i].name, m->path, strerror(-r));
	}
	return 0;
}

int fm_tmpfs_prepare(const char *images_dir, const char *dir, char **conf, fm_error *err)
{
	_cleanup_free_ char *file = fm_xasprintf("%s/%s", images_dir, FM_TMPFS_MANIFEST), *text = NULL;
	fm_tmpfs_mount m[FM_TMPFS_MAX];
	size_t n = 0;
	int r;

	*conf = NULL;
	if ((r = fm_read_file(file, MANIFEST_MAX, &text, NULL)) == -ENOENT)
		return 0;
	if (r < 0)
		return fm_error_set(err, r, "cannot read %s: %s", file, strerror(-r));
	if ((r = fm_tmpfs_manifest_parse(text, m, &n, err)) < 0)
		return r;
	/* CRIU's configuration parser takes a quoted value but no newline */
	if (strpbrk(dir, "\"\\\n")) {
		fm_tmpfs_mounts_free(m, n);
		return fm_error_set(err, -EINVAL, "%s: a path with quotes, backslashes or newlines cannot be handed "
				    "to CRIU", dir);
	}
	fm_tmpfs_release(dir);   /* what a daemon killed mid-restore left */
	/* dir a private mount of its own first: a mount made below a shared one
	 * would be copied to its peers before it could be made private */
	if ((r = fm_mkdir_p(dir, 0700)) < 0 || (r = mount(dir, dir, NULL, MS_BIND, NULL) < 0 ? -errno : 0) < 0 ||
	    (r = mount(NULL, dir, NULL, MS_PRIVATE, NULL) < 0 ? -errno : 0) < 0) {
		fm_tmpfs_mounts_free(m, n);
		fm_tmpfs_release(dir);
		return fm_error_set(err, r, "cannot make %s a private mount: %s", dir, strerror(-r));
	}
	char *lines = fm_xstrdup("");
	for (size_t i = 0; i < n && r == 0; i++) {
		_cleanup_free_ char *p = fm_xasprintf("%s/%s", dir, m[i].key);
		if ((r = make_mount(p, &m[i], err)) < 0)
			break;
		char *more = fm_xasprintf("%sexternal \"mnt[%s]:%s\"\n", lines, m[i].key, p);
		free(lines);
		lines = more;
	}
	fm_tmpfs_mounts_free(m, n);
	if (r < 0) {
		free(lines);
		fm_tmpfs_release(dir);
		return r;
	}
	*conf = lines;
	return 0;
}
