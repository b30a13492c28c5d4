/* Fresh tmpfs mounts (runtime/tmpfs.h): which mounts of a container's
 * mountinfo may travel fresh, and the manifest a destination accepts from its
 * peer (only mounts it knows, numbers in range, nothing else). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "basic/error.h"
#include "basic/util.h"
#include "runtime/tmpfs.h"

static void test_mountinfo_lines(void **state)
{
	(void)state;
	fm_tmpfs_mount m;
	/* runc's /dev/shm */
	assert_int_equal(fm_tmpfs_mountinfo_line("85 83 0:45 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm "
						 "rw,size=65536k", &m), 1);
	assert_string_equal(m.path, "/dev/shm");
	assert_string_equal(m.key, "fm-tmpfs-dev-shm");
	assert_int_equal(m.dev_major, 0);
	assert_int_equal(m.dev_minor, 45);
	assert_int_equal(m.size_kib, 65536);
	assert_int_equal(m.mode, 01777);
	assert_true(m.nosuid && m.nodev && m.noexec);
	/* optional fields, a mode, an inode count */
	assert_int_equal(fm_tmpfs_mountinfo_line("85 83 0:46 / /dev/shm rw,nosuid shared:7 master:2 - tmpfs shm "
						 "rw,size=1024k,nr_inodes=100,mode=1770,inode64", &m), 1);
	assert_int_equal(m.nr_inodes, 100);
	assert_int_equal(m.mode, 01770);
	assert_false(m.nodev || m.noexec);
	/* runc's /dev */
	assert_int_equal(fm_tmpfs_mountinfo_line("83 81 0:43 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755",
						 &m), 1);
	assert_string_equal(m.key, "fm-tmpfs-dev");
	assert_int_equal(m.mode, 0755);
	assert_true(m.nosuid && !m.nodev && !m.noexec);
	/* not ours: another path, another type, a part of a tmpfs, read-only,
	 * options that change ownership or behaviour, garbage */
	const char *no[] = {
		"83 81 0:43 / /dev/mqueue rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755",
		"85 83 0:45 / /dev/shm rw,nosuid - ramfs shm rw",
		"85 83 0:45 /sub /dev/shm rw,nosuid - tmpfs shm rw,size=65536k",
		"85 83 0:45 / /dev/shm ro,nosuid - tmpfs shm ro,size=65536k",
		"85 83 0:45 / /dev/shm rw,nosuid,noatime - tmpfs shm rw,size=65536k",
		"85 83 0:45 / /dev/shm rw,nosuid - tmpfs shm rw,size=65536k,uid=1000",
		"85 83 0:45 / /dev/shm rw,nosuid - tmpfs shm rw,size=65536k,huge=always",
		"85 83 0:45 / /dev/shm rw,nosuid - tmpfs shm rw,size=12x",
		"85 83 0:45 / /dev/shm rw,nosuid - tmpfs shm rw,mode=99999",
		"85 83 0:45 / /dev/shm rw,nosuid - tmpfs shm",
		"85 83 0:45 / /dev/shm rw,nosuid tmpfs shm rw",
		"",
		"- - - - - - - - -",
	};
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_int_equal(fm_tmpfs_mountinfo_line(no[i], &m), 0);
}

static void test_manifest(void **state)
{
	(void)state;
	fm_tmpfs_mount m[FM_TMPFS_MAX];
	size_t n = 99;
	fm_error err = FM_ERROR_INIT;

	assert_int_equal(fm_tmpfs_manifest_parse("{\"mounts\":[{\"key\":\"fm-tmpfs-dev-shm\",\"size_kib\":65536,"
						 "\"nr_inodes\":0,\"mode\":1023,\"nosuid\":true,\"nodev\":true,"
						 "\"noexec\":false}]}", m, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(m[0].path, "/dev/shm");
	assert_int_equal(m[0].size_kib, 65536);
	assert_int_equal(m[0].mode, 01777);
	assert_true(m[0].nosuid && m[0].nodev && !m[0].noexec);

	/* /dev as runc makes it */
	const char *dev = "{\"mounts\":[{\"key\":\"fm-tmpfs-dev\",\"size_kib\":65536,\"nr_inodes\":0,\"mode\":493,"
			  "\"nosuid\":true,\"nodev\":false,\"noexec\":false,\"entries\":["
			  "{\"name\":\"null\",\"type\":\"c\",\"mode\":438,\"uid\":0,\"gid\":0,\"major\":1,\"minor\":3},"
			  "{\"name\":\"fd\",\"type\":\"l\",\"mode\":511,\"uid\":0,\"gid\":0,"
			  "\"target\":\"/proc/self/fd\"},"
			  "{\"name\":\"pts\",\"type\":\"d\",\"mode\":493,\"uid\":0,\"gid\":0},"
			  "{\"name\":\"mqueue\",\"type\":\"d\",\"mode\":1023,\"uid\":0,\"gid\":0},"
			  "{\"name\":\"console\",\"type\":\"f\",\"mode\":384,\"uid\":1000,\"gid\":5}]}]}";
	assert_int_equal(fm_tmpfs_manifest_parse(dev, m, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(m[0].path, "/dev");
	assert_int_equal(m[0].nentries, 5);
	assert_int_equal(m[0].entries[0].type, 'c');
	assert_int_equal(m[0].entries[0].minor, 3);
	assert_string_equal(m[0].entries[1].target, "/proc/self/fd");
	assert_int_equal(m[0].entries[3].mode, 01777);
	assert_int_equal(m[0].entries[4].uid, 1000);
	fm_tmpfs_mounts_free(m, n);

	/* entries a peer must not get made: a disk, a block device, paths, set-id
	 * bits on a device, twice a name, an empty link, entries in /dev/shm */
	const char *head = "{\"mounts\":[{\"key\":\"fm-tmpfs-dev\",\"size_kib\":65536,\"nr_inodes\":0,\"mode\":493,"
			   "\"nosuid\":true,\"nodev\":false,\"noexec\":false,\"entries\":[";
	const char *entries[] = {
		"{\"name\":\"sda\",\"type\":\"c\",\"mode\":438,\"uid\":0,\"gid\":0,\"major\":8,\"minor\":0}",
		"{\"name\":\"sda\",\"type\":\"b\",\"mode\":438,\"uid\":0,\"gid\":0,\"major\":1,\"minor\":3}",
		"{\"name\":\"../x\",\"type\":\"f\",\"mode\":384,\"uid\":0,\"gid\":0}",
		"{\"name\":\"a/b\",\"type\":\"d\",\"mode\":493,\"uid\":0,\"gid\":0}",
		"{\"name\":\"..\",\"type\":\"d\",\"mode\":493,\"uid\":0,\"gid\":0}",
		"{\"name\":\"null\",\"type\":\"c\",\"mode\":2486,\"uid\":0,\"gid\":0,\"major\":1,\"minor\":3}",
		"{\"name\":\"x\",\"type\":\"f\",\"mode\":384,\"uid\":0,\"gid\":0},"
		"{\"name\":\"x\",\"type\":\"d\",\"mode\":493,\"uid\":0,\"gid\":0}",
		"{\"name\":\"fd\",\"type\":\"l\",\"mode\":511,\"uid\":0,\"gid\":0,\"target\":\"\"}",
		"{\"name\":\"fd\",\"type\":\"l\",\"mode\":511,\"uid\":0,\"gid\":0}",
		"{\"name\":\"x\",\"type\":\"f\",\"mode\":384,\"uid\":-1,\"gid\":0}",
		/* the host's console; a mountpoint made a link (CRIU mounts there as root) */
		"{\"name\":\"console\",\"type\":\"c\",\"mode\":384,\"uid\":0,\"gid\":0,\"major\":5,\"minor\":1}",
		"{\"name\":\"pts\",\"type\":\"l\",\"mode\":511,\"uid\":0,\"gid\":0,\"target\":\"/etc\"}",
		"{\"name\":\"shm\",\"type\":\"f\",\"mode\":384,\"uid\":0,\"gid\":0}",
	};
	for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
		char *doc = fm_xasprintf("%s%s]}]}", head, entries[i]);
		n = 99;
		assert_true(fm_tmpfs_manifest_parse(doc, m, &n, &err) < 0);
		assert_int_equal(n, 0);
		assert_non_null(strstr(err.msg, "entries of fm-tmpfs-dev"));
		fm_error_clear(&err);
		free(doc);
	}
	n = 99;
	assert_true(fm_tmpfs_manifest_parse("{\"mounts\":[{\"key\":\"fm-tmpfs-dev-shm\",\"size_kib\":1,\"nr_inodes\":0,"
					    "\"mode\":1023,\"nosuid\":true,\"nodev\":true,\"noexec\":true,\"entries\":["
					    "{\"name\":\"x\",\"type\":\"f\",\"mode\":384,\"uid\":0,\"gid\":0}]}]}",
					    m, &n, &err) < 0);
	assert_int_equal(n, 0);
	fm_error_clear(&err);

	const char *bad[] = {
		"",
		"[]",
		"{\"mounts\":{}}",
		/* a key this host does not know: no path of the peer's choosing */
		"{\"mounts\":[{\"key\":\"../../etc\",\"size_kib\":1,\"nr_inodes\":0,\"mode\":1023,\"nosuid\":true,"
		"\"nodev\":true,\"noexec\":true}]}",
		/* twice the same */
		"{\"mounts\":[{\"key\":\"fm-tmpfs-dev-shm\",\"size_kib\":1,\"nr_inodes\":0,\"mode\":1023,\"nosuid\":true,"
		"\"nodev\":true,\"noexec\":true},{\"key\":\"fm-tmpfs-dev-shm\",\"size_kib\":1,\"nr_inodes\":0,"
		"\"mode\":1023,\"nosuid\":true,\"nodev\":true,\"noexec\":true}]}",
		/* out of range, wrong types, missing fields */
		"{\"mounts\":[{\"key\":\"fm-tmpfs-dev-shm\",\"size_kib\":-1,\"nr_inodes\":0,\"mode\":1023,\"nosuid\":true,"
		"\"nodev\":true,\"noexec\":true}]}",
		"{\"mounts\":[{\"key\":\"fm-tmpfs-dev-shm\",\"size_kib\":1,\"nr_inodes\":0,\"mode\":4096,\"nosuid\":true,"
		"\"nodev\":true,\"noexec\":true}]}",
		"{\"mounts\":[{\"key\":\"fm-tmpfs-dev-shm\",\"size_kib\":1,\"nr_inodes\":0,\"mode\":1023,\"nosuid\":1,"
		"\"nodev\":true,\"noexec\":true}]}",
		"{\"mounts\":[{\"key\":\"fm-tmpfs-dev-shm\",\"size_kib\":\"1\",\"nr_inodes\":0,\"mode\":1023,"
		"\"nosuid\":true,\"nodev\":true,\"noexec\":true}]}",
		"{\"mounts\":[{\"key\":\"fm-tmpfs-dev-shm\"}]}",
		"{\"mounts\":[1,2,3,4,5]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = 99;
		assert_true(fm_tmpfs_manifest_parse(bad[i], m, &n, &err) < 0);
		assert_int_equal(n, 0);
		assert_non_null(strstr(err.msg, FM_TMPFS_MANIFEST));
		fm_error_clear(&err);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mountinfo_lines),
		cmocka_unit_test(test_manifest),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
