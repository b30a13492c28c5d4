/* Runtime Controller: runs this host's containers through runc.
 *
 * A container is an OCI bundle below <state>/containers/<name>/: config.json, a
 * root filesystem mounted as overlayfs (the image's unpacked tree as the read-only
 * lower layer, upper/ holding everything the container wrote), and runc's own log.
 * The container's writable layer is therefore exactly upper/: that, and not the
 * image, is what a migration has to move besides the process state.
 *
 * runc keeps its state below <state>/runc, so two daemons on one machine (two
 * namespace "hosts") never see each other's containers; cgroups are placed under
 * /fleximigrate/<host>/<name> for the same reason.
 */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "basic/error.h"

struct fm_cmd;
#include "runtime/image.h"
#include "store/journal.h"

typedef struct fm_runtime {
	char *host;         /* this daemon's host name */
	char *state_dir;
	char *runc;         /* runc binary */
	char *criu;         /* CRIU binary (wrapper) */
	char *criu_shim;    /* fm-criu-shim beside the daemon, handed to runc --criu (src/sync/criu_shim.c); NULL: criu */
	char *criu_rpc_cache; /* ... its recorded answers: <state>/criu-rpc, emptied at start */
	char *runc_root;
	char *criu_restore_text;    /* what every restore's CRIU configuration starts with (criu_restore_text_make) */
	const char *cgroup_yard; /* the host's cgroup mounts as CRIU's --cgroup-yard, or NULL (fm_rt_open) */
	fm_image_store *images;
	fm_journal *journal;
	char *bridge;       /* bridge for container networks (daemon --bridge), or NULL */
	char *tmp_dir;      /* <state>/tmp: scratch directories, emptied at every start */
} fm_runtime;

/* What a user asks for.  Owned strings; fm_container_spec_clear frees them. */
typedef struct fm_container_spec {
	char *name;
	char *image;        /* name or digest as given */
	char *digest;       /* resolved */
	json_t *args;       /* array of strings */
	json_t *env;        /* array of "K=V" strings, may be NULL */
	int64_t cpu_milli;  /* 0 = unlimited */
	int64_t memory_bytes;
	char *net_ip;       /* "A.B.C.D/P": its own network namespace on the bridge; NULL = none */
	char *net_mac;      /* with net_ip; derived from it when not given */
	char *net_dns_name; /* with net_ip: the DNS name of its address (the DNS Manager's), may be NULL */
	json_t *volumes;    /* array of {"source", "destination", "readonly"}, may be NULL */
	json_t *labels;     /* object of name -> string (service_type, ...), may be NULL: for
			     * policies (CONTEXT service_type) and people; they move with it */
} fm_container_spec;

#define FM_LABELS_MAX 32
#define FM_LABEL_VALUE_MAX 256

int fm_rt_open(fm_runtime *rt, const char *host, const char *state_dir, const char *runc,
	       const char *criu, fm_journal *journal, fm_error *err);
void fm_rt_close(fm_runtime *rt);

/* Parses and validates a spec from API JSON; fills errors that name the bad field. */
int fm_container_spec_from_json(json_t *o, fm_container_spec *spec, fm_error *err);
json_t *fm_container_spec_to_json(const fm_container_spec *spec);
void fm_container_spec_clear(fm_container_spec *spec);
/* Volumes are host paths bound into the container (like `podman run -v`): the
 * same path must exist on every host the container moves to (shared storage,
 * or the same packages: they are not copied).  0 when every source of spec's
 * volumes is a directory or regular file on this host, else an error naming
 * the first one that is not. */
int fm_rt_volumes_check(fm_runtime *rt, const fm_container_spec *spec, fm_error *err);

/* Creates and starts a container from a local image. */
int fm_rt_run(fm_runtime *rt, fm_container_spec *spec, fm_error *err);
/* 0 when no container on this host but name has the address of cidr (its
 * prefix ignored), else -EADDRINUSE naming the one that has it. */
int fm_rt_address_free(fm_runtime *rt, const char *cidr, const char *name, fm_error *err);
/* "running", "paused", "stopped", "created" or NULL when runc does not know it. */
int fm_rt_status(fm_runtime *rt, const char *name, char *status, size_t len, pid_t *pid);
/* Array of container objects (name, image, digest, status, pid, rootfs, …). */
json_t *fm_rt_list(fm_runtime *rt);
json_t *fm_rt_get(fm_runtime *rt, const char *name);
bool fm_rt_exists(fm_runtime *rt, const char *name);
/* SIGTERM, then SIGKILL after timeout_ms; the container stays (status stopped). */
int fm_rt_stop(fm_runtime *rt, const char *name, int timeout_ms, fm_error *err);
/* Removes the container entirely (kills it if force). */
int fm_rt_remove(fm_runtime *rt, const char *name, bool force, fm_error *err);
/* CPU quota for auto-converge: percent of one CPU (1..100, never above the
 * container's own limit), or 0 to go back to its own limit. */
int fm_rt_cpu_throttle(fm_runtime *rt, const char *name, int percent, fm_error *err);
int fm_rt_pause(fm_runtime *rt, const char *name, fm_error *err);
int fm_rt_resume(fm_runtime *rt, const char *name, fm_error *err);
/* The processes of a running container (its cgroup), at most max; -ESRCH if
 * it does not run. */
int fm_rt_pids(fm_runtime *rt, const char *name, pid_t *pids, size_t max);
/* The running container's cgroup directories as runc placed them (its
 * state.json's cgroup_paths: controller name -> directory, "" for the
 * unified hierarchy; the caller's reference) and its init's pid, for the
 * Resource Monitor.  -ESRCH if it does not run. */
int fm_rt_cgroups(fm_runtime *rt, const char *name, json_t **paths, pid_t *pid);
/* Runs argv inside the container (runc exec), bounded by timeout_ms. */
int fm_rt_exec(fm_runtime *rt, const char *name, json_t *argv, int timeout_ms, fm_error *err);

/* Building blocks shared with the State Synchronizer. */
char *fm_rt_container_dir(fm_runtime *rt, const char *name);
/* A new, empty scratch directory below <state>/tmp (what a crash leaves there
 * goes at the next start); NULL with err set when it cannot be made. */
char *fm_rt_scratch_dir(fm_runtime *rt, const char *what, fm_error *err);
/* Creates the bundle directory and config.json (no mount, no journal row). */
int fm_rt_bundle_create(fm_runtime *rt, const fm_container_spec *spec, fm_error *err);
int fm_rt_rootfs_mount(fm_runtime *rt, const char *name, const char *digest, fm_error *err);
int fm_rt_rootfs_umount(fm_runtime *rt, const char *name);
/* Unmounts and deletes the bundle directory (not the runc container). */
int fm_rt_bundle_destroy(fm_runtime *rt, const char *name);
/* The container-specific arguments of a `criu dump` or `criu pre-dump` that
 * treats the container as runc 1.1's checkpoint does (libcontainer's
 * Checkpoint()), from runc's state.json: -t (init, checked alive), --root,
 * --freeze-cgroup, --external for namespaces joined by path.  With images_dir
 * (a dump, not a pre-dump): --external for bind mounts, device nodes and
 * masked files, and descriptors.json written there for `runc restore`.
 * CRIU run directly skips runc's own start and its two CRIU probes: 45 ms of
 * a lazy dump's 200 at 1 GiB, inside the freeze. */
int fm_rt_criu_dump_args(fm_runtime *rt, const char *name, struct fm_cmd *c, const char *images_dir,
			 fm_error *err);
/* The rest of a dump's options, decided once the container is frozen: CRIU
 * configuration lines (its dump's --config file; "" for none).  What cannot
 * be arranged is warned about, never fatal. */
char *fm_rt_criu_dump_conf(fm_runtime *rt, const char *name, const char *images_dir);
/* `runc restore` with criu_conf as CRIU's configuration (CRIU_CONFIG_FILE: a
 * file that starts with criu_restore_text, the masked directories' external
 * mounts and no CRIU network lock); with runc_log, runc's errors go there
 * (JSON).  The caller adds the rest. */
struct fm_cmd *fm_rt_runc_restore_cmd(fm_runtime *rt, const char *criu_conf, const char *runc_log);
/* The last error messages runc wrote to its JSON log, as an error detail. */
void fm_rt_attach_runc_log(fm_error *err, const char *log);
/* runc with --root and --criu already set; caller adds the rest. */
struct fm_cmd *fm_rt_runc_cmd(fm_runtime *rt);
/* The environment every CRIU we start (directly, or through runc) gets. */
void fm_rt_criu_env(struct fm_cmd *c);
/* Journal row for a container (migration = NULL for local ones). */
int fm_rt_record(fm_runtime *rt, const fm_container_spec *spec, const char *migration, bool committed);
/* runc kill KILL + delete -f, ignoring "does not exist". */
int fm_rt_runc_destroy(fm_runtime *rt, const char *name, fm_error *err);
/* Bytes its writable layer (what it changed in its root filesystem: what a
 * migration must carry besides memory) takes on disk; -1 if unknown.  Walks
 * at most FM_UPPER_WALK_MAX entries (beyond them: what they hold, a lower
 * bound). */
#define FM_UPPER_WALK_MAX 200000
int64_t fm_rt_upper_bytes(fm_runtime *rt, const char *name);
/* Reads the container's memory usage (bytes) from its cgroup; -errno if unknown. */
int fm_rt_memory_usage(fm_runtime *rt, const char *name, uint64_t *bytes);
