/* Runtime Controller, fresh tmpfs mounts: a container's /dev and empty
 * /dev/shm travel as new tmpfs mounts instead of inside the checkpoint.
 *
 * CRIU dumps the contents of every tmpfs of a container with `tar | gzip` and
 * restores them the same way: three processes per mount, ~11 ms each way on
 * our machines, all of it inside the freeze.  What runc puts in /dev (the
 * standard devices, a few links, mountpoints) and an empty /dev/shm are not
 * worth that: in the freeze (the container is frozen by then) the source
 * lists them and dumps each as a CRIU external mount keyed FM_TMPFS_KEY_*; the
 * images carry a manifest (FM_TMPFS_MANIFEST: size, mode and mount flags, and
 * the entries); the destination mounts a fresh tmpfs with those, private,
 * below the container's directory, makes the entries again, hands it to CRIU
 * (`external "mnt[KEY]:DIR"` in the restore's configuration), and detaches its
 * own copy once the restore is over: the container keeps its bind, nothing
 * stays mounted on the host.  A tmpfs holding anything else (a file with
 * contents, a device not in the standard set, a socket, a full subdirectory),
 * or stacked, read-only or mounted with options this file does not know, is
 * left to CRIU as before. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "basic/cmd.h"
#include "basic/error.h"

#define FM_TMPFS_MANIFEST "fm-tmpfs.json"
#define FM_TMPFS_MAX 4
#define FM_TMPFS_ENTRIES_MAX 64

/* One entry of a tmpfs's root directory. */
typedef struct fm_tmpfs_entry {
	char name[64];
	char type;               /* 'd' empty directory (or another mount's mountpoint),
				  * 'c' a standard character device, 'l' symlink, 'f' empty file */
	unsigned mode, uid, gid, major, minor;
	char target[256];        /* 'l' */
} fm_tmpfs_entry;

typedef struct fm_tmpfs_mount {
	const char *path;        /* in the container, e.g. /dev/shm */
	const char *key;         /* CRIU's external key, e.g. fm-tmpfs-dev-shm */
	unsigned dev_major, dev_minor;
	uint64_t size_kib;       /* 0: the kernel's default */
	uint64_t nr_inodes;      /* 0: the kernel's default */
	unsigned mode;           /* of its root directory */
	bool nosuid, nodev, noexec;
	fm_tmpfs_entry *entries; /* malloc'd (fm_tmpfs_mounts_free) */
	size_t nentries;
} fm_tmpfs_mount;

void fm_tmpfs_mounts_free(fm_tmpfs_mount *m, size_t n);

/* One line of /proc/PID/mountinfo: 1 and *m filled if it is a tmpfs at a path
 * of ours that may travel fresh (read-write, whole, known options); 0 if not. */
int fm_tmpfs_mountinfo_line(const char *line, fm_tmpfs_mount *m);

/* Source, the container name (init pid) frozen: every such tmpfs that holds
 * only what a manifest can say is dumped as an external mount (a line of
 * CRIU's configuration appended to *conf, which starts NULL) and described in
 * images_dir/FM_TMPFS_MANIFEST.  Nothing qualifies: no file, *conf unchanged. */
int fm_tmpfs_dump_conf(const char *name, pid_t pid, const char *images_dir, char **conf, fm_error *err);

/* Parses a manifest (from a peer: everything checked); *n mounts into m
 * (fm_tmpfs_mounts_free them). */
int fm_tmpfs_manifest_parse(const char *json, fm_tmpfs_mount *m, size_t *n, fm_error *err);

/* Destination, before the restore: mounts what images_dir's manifest lists, one
 * fresh private tmpfs per mount below dir, and returns CRIU's configuration
 * lines for them in *conf (NULL: no manifest, nothing mounted). */
int fm_tmpfs_prepare(const char *images_dir, const char *dir, char **conf, fm_error *err);

/* After the restore, whatever its outcome: detaches and removes what
 * fm_tmpfs_prepare mounted below dir (the container keeps its own binds). */
void fm_tmpfs_release(const char *dir);
