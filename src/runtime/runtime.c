#include "runtime/runtime.h"
#include "runtime/net.h"
#include "runtime/tmpfs.h"

#include <errno.h>
#include <fcntl.h>
#include <fts.h>
#include <time.h>
#include <unistd.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <sys/syscall.h>

#include "basic/cmd.h"
#include "basic/log.h"
#include "basic/util.h"

#define RUNC_TIMEOUT_MS 60000

/* The bundle template: runc's own `runc spec` defaults (capabilities, masked
 * paths, mounts), without a terminal, with a writable root. */
static const char bundle_template[] =
	"{\"ociVersion\":\"1.0.2-dev\","
	"\"process\":{\"terminal\":false,\"user\":{\"uid\":0,\"gid\":0},\"args\":[\"sh\"],"
	"\"env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],"
	"\"cwd\":\"/\","
	"\"capabilities\":{"
	"\"bounding\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
	"\"effective\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
	"\"permitted\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
	"\"ambient\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"]},"
	"\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"hard\":1024,\"soft\":1024}],"
	"\"noNewPrivileges\":true},"
	"\"root\":{\"path\":\"rootfs\",\"readonly\":false},"
	"\"hostname\":\"container\","
	"\"mounts\":["
	"{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
	"{\"destination\":\"/dev\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":[\"nosuid\",\"strictatime\",\"mode=755\",\"size=65536k\"]},"
	"{\"destination\":\"/dev/pts\",\"type\":\"devpts\",\"source\":\"devpts\",\"options\":[\"nosuid\",\"noexec\",\"newinstance\",\"ptmxmode=0666\",\"mode=0620\",\"gid=5\"]},"
	"{\"destination\":\"/dev/shm\",\"type\":\"tmpfs\",\"source\":\"shm\",\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"mode=1777\",\"size=65536k\"]},"
	"{\"destination\":\"/dev/mqueue\",\"type\":\"mqueue\",\"source\":\"mqueue\",\"options\":[\"nosuid\",\"noexec\",\"nodev\"]},"
	"{\"destination\":\"/sys\",\"type\":\"sysfs\",\"source\":\"sysfs\",\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"ro\"]}],"
	"\"linux\":{\"resources\":{\"devices\":[{\"allow\":false,\"access\":\"rwm\"}]},"
	"\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"network\"},{\"type\":\"ipc\"},{\"type\":\"uts\"},{\"type\":\"mount\"}],"
	"\"maskedPaths\":[\"/proc/acpi\",\"/proc/asound\",\"/proc/kcore\",\"/proc/keys\",\"/proc/latency_stats\",\"/proc/timer_list\",\"/proc/timer_stats\",\"/proc/sched_debug\",\"/sys/firmware\",\"/proc/scsi\"],"
	"\"readonlyPaths\":[\"/proc/bus\",\"/proc/fs\",\"/proc/irq\",\"/proc/sys\",\"/proc/sysrq-trigger\"]}}";

/* CRIU's key for a directory runc masks (criu_restore_text_make):
 * "fm-masked-proc-acpi" for /proc/acpi; NULL for a path that would not make a
 * plain key (then CRIU dumps that mount's contents as usual). */
static char *criu_masked_key(const char *path)
{
	if (path[0] != '/' || path[strspn(path, "abcdefghijklmnopqrstuvwxyz0123456789_/")] != '\0')
		return NULL;
	char *k = fm_xasprintf("fm-masked%s", path);
	for (char *p = k; *p; p++)
		if (*p == '/')
			*p = '-';
	return k;
}

/* The host's own cgroup hierarchies, when they can serve as CRIU's cgroup yard:
 * a directory holding one mount per hierarchy, named as CRIU names it ("cpu,cpuacct",
 * "systemd" for name=systemd, "unified" for the v2 one).  Without a yard, every
 * dump and restore mounts each hierarchy afresh and detaches it again: ~25 ms of a
 * 1 GiB lazy dump here (ten v1 hierarchies), frozen time.  Debian's
 * /sys/fs/cgroup has this layout on a v1 or hybrid host; on a pure v2 host
 * (the hierarchy is /sys/fs/cgroup itself) CRIU mounts its own, as before. */
static const char *criu_cgroup_yard(void)
{
	static const char root[] = "/sys/fs/cgroup";
	_cleanup_free_ char *own = NULL;
	int n = 0;

	if (fm_read_file("/proc/self/cgroup", 1 << 16, &own, NULL) < 0)
		return NULL;
	for (char *line = own, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		char *ctrls = strchr(line, ':'), *end = ctrls ? strchr(ctrls + 1, ':') : NULL;
		if (!end)
			return NULL;
		*end = '\0';
		ctrls++;
		if (!strncmp(ctrls, "name=", 5))
			ctrls += 5;
		_cleanup_free_ char *dir = fm_xasprintf("%s/%s", root, *ctrls ? ctrls : "unified");
		struct statfs sf;
		if (statfs(dir, &sf) < 0 || (sf.f_type != CGROUP_SUPER_MAGIC && sf.f_type != CGROUP2_SUPER_MAGIC))
			return NULL;
		n++;
	}
	return n > 0 ? root : NULL;
}

/* What every restore on this host tells CRIU, at the start of each
 * restore's own configuration (sync/restore.c; runc passes its environment,
 * CRIU_CONFIG_FILE among it, to `criu swrk`, which reads the file):
 *  - the directories runc masks (/proc/acpi, /sys/firmware: empty read-only
 *    tmpfs mounts) are dumped as external mounts (criu_masked_key), not as
 *    tmpfs contents (CRIU tars each one: ~6 ms per mount in a dump and again
 *    in a restore); each comes back as a bind of its own empty directory
 *    below <state>/masked, read-only like the original.  (One directory for
 *    all would make the next dump see the second mount as a bind of the
 *    first, and CRIU would then restore it without its read-only flag.)
 *  - no network lock (iptables-restore in the container's namespace, 60-75
 *    ms, and as much again to unlock): a container with an address is held
 *    by us (fm_net_hold) the whole time CRIU's lock would hold it, and one
 *    without has only a loopback nobody outside can reach.
 *  - the cgroup yard, if the host has one (criu_cgroup_yard). */
static int criu_restore_text_make(fm_runtime *rt, fm_error *err)
{
	_cleanup_free_ char *masked = fm_xasprintf("%s/masked", rt->state_dir);
	_cleanup_free_ char *lines = fm_xstrdup("");
	json_t *tmpl = json_loads(bundle_template, 0, NULL), *v;
	size_t i;
	int r = 0;

	/* CRIU's configuration parser takes a quoted value but no newline */
	if (strpbrk(masked, "\"\\\n"))
		r = fm_error_set(err, -EINVAL, "state directory %s: a path with quotes, backslashes or newlines "
				 "cannot be handed to CRIU; choose another --state-dir", rt->state_dir);
	json_array_foreach(json_object_get(json_object_get(tmpl, "linux"), "maskedPaths"), i, v) {
		_cleanup_free_ char *key = criu_masked_key(json_string_value(v) ?: "");
		if (!key || r < 0)
			continue;
		_cleanup_free_ char *dir = fm_xasprintf("%s/%s", masked, key);
		if ((r = fm_mkdir_p(dir, 0555)) < 0 || (r = chmod(dir, 0555) < 0 ? -errno : 0) < 0) {
			fm_error_set(err, r, "cannot create %s: %s", dir, strerror(-r));
			break;
		}
		char *more = fm_xasprintf("%sexternal \"mnt[%s]:%s\"\n", lines, key, dir);
		free(lines);
		lines = more;
	}
	json_decref(tmpl);
	_cleanup_free_ char *yard = rt->cgroup_yard ? fm_xasprintf("cgroup-yard %s\n", rt->cgroup_yard) : fm_xstrdup("");
	if (r < 0)
		return r;
	free(rt->criu_restore_text);
	rt->criu_restore_text = fm_xasprintf("# written by fleximigrated for runc restore (runtime/runtime.c)\n"
					     "%s%snetwork-lock skip\n", yard, lines);
	return 0;
}

/* runc asks CRIU for its version and features before every restore: the shim
 * beside our binary answers what CRIU answered the first time.  Without it
 * (a test binary elsewhere) runc runs CRIU itself. */
static void criu_shim_find(fm_runtime *rt)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0 || !rt->criu || !*rt->criu)
		return;
	self[n] = 0;
	char *slash = strrchr(self, '/');
	if (!slash)
		return;
	*slash = 0;
	_cleanup_free_ char *shim = fm_xasprintf("%s/fm-criu-shim", self);
	/* emptied at every start: CRIU or the kernel may have changed meanwhile */
	_cleanup_free_ char *cache = fm_xasprintf("%s/criu-rpc", rt->state_dir);
	fm_rm_rf(cache);
	if (access(shim, X_OK) < 0 || fm_mkdir_p(cache, 0700) < 0) {
		fm_debug(FM_C_RUNTIME_CONTROLLER, "no %s: runc runs CRIU for its version and feature checks", shim);
		return;
	}
	rt->criu_shim = fm_xstrdup(shim);
	rt->criu_rpc_cache = fm_xstrdup(cache);
	/* CRIU's version, asked once now: the first restore need not ask it */
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		return;
	fm_cmd *c = fm_cmd_new(rt->criu_shim);
	fm_cmd_arg(c, "swrk");
	fm_cmd_arg(c, "3");
	fm_cmd_env(c, "FM_CRIU", rt->criu);
	fm_cmd_env(c, "FM_CRIU_RPC_CACHE", rt->criu_rpc_cache);
	fm_rt_criu_env(c);
	fm_cmd_pass_fd(c, sp[1], 3);
	fm_cmd_set_stdio_null(c);
	fm_cmd_set_timeout_ms(c, RUNC_TIMEOUT_MS);
	static const uint8_t version_req[] = { 0x08, 0x0a };   /* criu_req { type: VERSION } */
	uint8_t resp[256];
	struct timeval tv = { 10, 0 };   /* CRIU answers in ~20 ms */
	(void)setsockopt(sp[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (fm_cmd_start(c, NULL) == 0) {
		close(sp[1]);
		sp[1] = -1;
		if (send(sp[0], version_req, sizeof(version_req), MSG_NOSIGNAL) < 0 || recv(sp[0], resp, sizeof(resp), 0) <= 0)
			fm_debug(FM_C_RUNTIME_CONTROLLER, "CRIU's version not recorded at start: %m");
		close(sp[0]);
		sp[0] = -1;
		(void)fm_cmd_wait(c, NULL);
	}
	fm_cmd_free(c);
	for (int i = 0; i < 2; i++)
		if (sp[i] >= 0)
			close(sp[i]);
}

int fm_rt_open(fm_runtime *rt, const char *host, const char *state_dir, const char *runc,
	       const char *criu, fm_journal *journal, fm_error *err)
{
	_cleanup_free_ char *cdir = fm_xasprintf("%s/containers", state_dir);
	_cleanup_free_ char *idir = fm_xasprintf("%s/images", state_dir);
	int r;

	memset(rt, 0, sizeof(*rt));
	rt->host = fm_xstrdup(host);
	rt->state_dir = fm_xstrdup(state_dir);
	rt->runc = fm_xstrdup(runc);
	rt->criu = fm_xstrdup(criu);
	rt->runc_root = fm_xasprintf("%s/runc", state_dir);
	rt->journal = journal;
	rt->cgroup_yard = criu_cgroup_yard();
	rt->tmp_dir = fm_xasprintf("%s/tmp", state_dir);
	fm_rm_rf(rt->tmp_dir);
	if ((r = fm_mkdir_p(cdir, 0700)) < 0 || (r = fm_mkdir_p(rt->runc_root, 0700)) < 0 ||
	    (r = fm_mkdir_p(rt->tmp_dir, 0700)) < 0)
		return fm_error_set(err, r, "cannot create %s: %s", state_dir, strerror(-r));
	if ((r = criu_restore_text_make(rt, err)) < 0)
		return r;
	criu_shim_find(rt);
	return fm_image_store_open(idir, &rt->images, err);
}

void fm_rt_close(fm_runtime *rt)
{
	fm_image_store_free(rt->images);
	free(rt->host);
	free(rt->state_dir);
	free(rt->runc);
	free(rt->criu);
	free(rt->criu_shim);
	free(rt->criu_rpc_cache);
	free(rt->runc_root);
	free(rt->criu_restore_text);
	free(rt->bridge);
	free(rt->tmp_dir);
	memset(rt, 0, sizeof(*rt));
}

void fm_container_spec_clear(fm_container_spec *spec)
{
	free(spec->name);
	free(spec->image);
	free(spec->digest);
	json_decref(spec->args);
	json_decref(spec->env);
	free(spec->net_ip);
	free(spec->net_mac);
	free(spec->net_dns_name);
	json_decref(spec->volumes);
	json_decref(spec->labels);
	memset(spec, 0, sizeof(*spec));
}

static bool string_array_valid(json_t *a, size_t max)
{
	size_t i;
	json_t *v;
	if (!json_is_array(a) || json_array_size(a) > max)
		return false;
	json_array_foreach(a, i, v) if (!json_is_string(v) || json_string_length(v) > 4096) return false;
	return true;
}

#define FM_VOLUMES_MAX 16

/* Paths runc mounts itself: no volume goes there or below. */
static bool volume_destination_reserved(const char *dest)
{
	static const char *const reserved[] = { "/proc", "/sys", "/dev" };
	if (!strcmp(dest, "/"))
		return true;
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		size_t n = strlen(reserved[i]);
		if (!strncmp(dest, reserved[i], n) && (dest[n] == '\0' || dest[n] == '/'))
			return true;
	}
	return false;
}

/* "volumes": [{"source": "/usr", "destination": "/usr", "readonly": true}, ...]
 * into a fresh array in that canonical form ("readonly" defaults to false). */
static int volumes_from_json(json_t *a, json_t **out, fm_error *err)
{
	json_t *v, *res;
	size_t i, j;

	if (!json_is_array(a) || json_array_size(a) > FM_VOLUMES_MAX)
		return fm_error_set(err, -EINVAL, "\"volumes\" must be an array of at most %d "
				    "{\"source\": PATH, \"destination\": PATH, \"readonly\": BOOL}", FM_VOLUMES_MAX);
	res = json_array();
	json_array_foreach(a, i, v) {
		const char *src = json_string_value(json_object_get(v, "source"));
		const char *dst = json_string_value(json_object_get(v, "destination"));
		json_t *ro = json_object_get(v, "readonly"), *x;
		const char *bad = NULL, *key;
		bool known_keys = json_is_object(v);

		json_object_foreach(v, key, x)
			known_keys &= !strcmp(key, "source") || !strcmp(key, "destination") || !strcmp(key, "readonly");
		if (!known_keys)
			bad = "must be an object with \"source\", \"destination\" and optionally \"readonly\"";
		else if (!fm_abs_path_clean(src))
			bad = "\"source\" must be an absolute path without \".\", \"..\", \"//\" or a trailing \"/\"";
		else if (!fm_abs_path_clean(dst))
			bad = "\"destination\" must be an absolute path without \".\", \"..\", \"//\" or a trailing \"/\"";
		else if (volume_destination_reserved(dst))
			bad = "\"destination\" must not be /, or /proc, /sys, /dev or below (the runtime mounts those)";
		else if (ro && !json_is_boolean(ro))
			bad = "\"readonly\" must be true or false";
		for (j = 0; !bad && j < i; j++)
			if (!strcmp(json_string_value(json_object_get(json_array_get(a, j), "destination")), dst))
				bad = "\"destination\" is already the destination of an earlier volume";
		if (bad) {
			json_decref(res);
			return fm_error_set(err, -EINVAL, "\"volumes\"[%zu] %s", i, bad);
		}
		json_array_append_new(res, json_pack("{s:s, s:s, s:b}", "source", src, "destination", dst,
						     "readonly", json_is_true(ro)));
	}
	*out = res;
	return 0;
}

int fm_rt_volumes_check(fm_runtime *rt, const fm_container_spec *spec, fm_error *err)
{
	json_t *v;
	size_t i;

	json_array_foreach(spec->volumes, i, v) {
		const char *src = json_string_value(json_object_get(v, "source"));
		struct stat st;
		if (stat(src, &st) < 0)
			return fm_error_set(err, -errno, "volume %s of %s: %m on %s (a volume's source must exist on "
					    "every host the container runs on)", src, spec->name, rt->host);
		if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
			return fm_error_set(err, -EINVAL, "volume %s of %s: neither a directory nor a regular file on %s",
					    src, spec->name, rt->host);
	}
	return 0;
}

int fm_container_spec_from_json(json_t *o, fm_container_spec *spec, fm_error *err)
{
	json_t *v;

	memset(spec, 0, sizeof(*spec));
	if (!json_is_object(o))
		return fm_error_set(err, -EINVAL, "container spec must be a JSON object");
	v = json_object_get(o, "name");
	if (!json_is_string(v) || !fm_name_valid(json_string_value(v)))
		return fm_error_set(err, -EINVAL,
				    "\"name\" must be 1-63 characters of [A-Za-z0-9_.-], starting with a letter or digit");
	spec->name = fm_xstrdup(json_string_value(v));
	v = json_object_get(o, "image");
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 128)
		return fm_error_set(err, -EINVAL, "\"image\" must name an imported image (see `fleximigrate image list`)");
	spec->image = fm_xstrdup(json_string_value(v));
	v = json_object_get(o, "digest");
	if (json_is_string(v)) {
		if (!fm_digest_valid(json_string_value(v)))
			return fm_error_set(err, -EINVAL, "\"digest\" must be sha256:<64 hex digits>");
		spec->digest = fm_xstrdup(json_string_value(v));
	}
	v = json_object_get(o, "args");
	if (!string_array_valid(v, 256) || json_array_size(v) == 0)
		return fm_error_set(err, -EINVAL, "\"args\" must be a non-empty array of strings (the command to run)");
	spec->args = json_incref(v);
	v = json_object_get(o, "env");
	if (v && !json_is_null(v)) {
		if (!string_array_valid(v, 256))
			return fm_error_set(err, -EINVAL, "\"env\" must be an array of \"NAME=VALUE\" strings");
		spec->env = json_incref(v);
	}
	v = json_object_get(o, "cpu_milli");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1024000)
			return fm_error_set(err, -EINVAL, "\"cpu_milli\" must be an integer 0..1024000 (1000 = one CPU)");
		spec->cpu_milli = json_integer_value(v);
	}
	v = json_object_get(o, "memory_bytes");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    (json_integer_value(v) > 0 && json_integer_value(v) < 4 << 20))
			return fm_error_set(err, -EINVAL, "\"memory_bytes\" must be 0 (unlimited) or at least 4 MiB");
		spec->memory_bytes = json_integer_value(v);
	}
	v = json_object_get(o, "network");
	if (v && !json_is_null(v)) {
		const char *ip = json_string_value(json_object_get(v, "ip"));
		const char *mac = json_string_value(json_object_get(v, "mac"));
		char derived[18];
		if (!json_is_object(v) || !fm_net_cidr_valid(ip))
			return fm_error_set(err, -EINVAL, "\"network\" must be {\"ip\": \"A.B.C.D/PREFIX\", \"mac\": ...}");
		if (json_object_get(v, "mac") && !fm_net_mac_valid(mac))
			return fm_error_set(err, -EINVAL, "\"network.mac\" must be a unicast MAC address xx:xx:xx:xx:xx:xx");
		json_t *dn = json_object_get(v, "dns_name");
		if (dn && !json_is_null(dn) && !fm_net_dns_name_valid(json_string_value(dn)))
			return fm_error_set(err, -EINVAL, "\"network.dns_name\" must be a DNS name (letters, digits, "
					    "hyphens, dots; up to 253 characters)");
		if (dn && !json_is_null(dn))
			spec->net_dns_name = fm_xstrdup(json_string_value(dn));
		if (!mac) {
			fm_net_mac_for_ip(ip, derived);
			mac = derived;
		}
		spec->net_ip = fm_xstrdup(ip);
		spec->net_mac = fm_xstrdup(mac);
	}
	v = json_object_get(o, "volumes");
	if (v && !json_is_null(v) && volumes_from_json(v, &spec->volumes, err) < 0)
		return -EINVAL;
	v = json_object_get(o, "labels");
	if (v && !json_is_null(v)) {
		const char *k;
		json_t *x;
		if (!json_is_object(v) || json_object_size(v) > FM_LABELS_MAX)
			return fm_error_set(err, -EINVAL, "\"labels\" must be an object of at most %d NAME: \"VALUE\" pairs",
					    FM_LABELS_MAX);
		json_object_foreach(v, k, x) {
			if (!fm_name_valid(k))
				return fm_error_set(err, -EINVAL, "label name \"%.64s\" must be [A-Za-z0-9][A-Za-z0-9_.-], up to "
						    "63 characters", k);
			if (!json_is_string(x) || json_string_length(x) > FM_LABEL_VALUE_MAX ||
			    strlen(json_string_value(x)) != json_string_length(x))
				return fm_error_set(err, -EINVAL, "label %s must be a string of at most %d bytes", k,
						    FM_LABEL_VALUE_MAX);
		}
		spec->labels = json_incref(v);
	}
	return 0;
}

json_t *fm_container_spec_to_json(const fm_container_spec *spec)
{
	json_t *o = json_pack("{s:s, s:s, s:O, s:I, s:I}", "name", spec->name, "image", spec->image,
			      "args", spec->args, "cpu_milli", (json_int_t)spec->cpu_milli,
			      "memory_bytes", (json_int_t)spec->memory_bytes);
	if (spec->digest)
		json_object_set_new(o, "digest", json_string(spec->digest));
	if (spec->env)
		json_object_set(o, "env", spec->env);
	if (spec->net_ip)
		json_object_set_new(o, "network", json_pack("{s:s, s:s}", "ip", spec->net_ip, "mac", spec->net_mac));
	if (spec->net_ip && spec->net_dns_name)
		json_object_set_new(json_object_get(o, "network"), "dns_name", json_string(spec->net_dns_name));
	if (spec->volumes && json_array_size(spec->volumes) > 0)
		json_object_set(o, "volumes", spec->volumes);
	if (spec->labels && json_object_size(spec->labels) > 0)
		json_object_set(o, "labels", spec->labels);
	return o;
}

char *fm_rt_scratch_dir(fm_runtime *rt, const char *what, fm_error *err)
{
	char *dir = fm_xasprintf("%s/%s.XXXXXX", rt->tmp_dir, what);
	if (!mkdtemp(dir)) {
		fm_error_set(err, -errno, "cannot create a scratch directory in %s: %m", rt->tmp_dir);
		free(dir);
		return NULL;
	}
	return dir;
}

char *fm_rt_container_dir(fm_runtime *rt, const char *name)
{
	return fm_xasprintf("%s/containers/%s", rt->state_dir, name);
}

void fm_rt_criu_env(struct fm_cmd *c)
{
	/* CRIU links GnuTLS for --tls, which we never use (our relays carry its
	 * pages), and leaves its initialisation to the library's constructor:
	 * without it no GnuTLS and p11-kit set-up at CRIU's start, and none of
	 * their teardown in every helper CRIU forks and exits (a dump's
	 * namespace dumpers: ~160 page faults each, 15-30 us apiece on our VMs,
	 * all inside the freeze) */
	fm_cmd_env(c, "GNUTLS_NO_IMPLICIT_INIT", "1");
	/* CRIU's large buffers (a 1 GiB process: ~4 MiB of page-pipe iovecs and
	 * pagemap regions, written during the freeze) in transparent huge
	 * pages: ~1000 page faults fewer (THP's "madvise" mode is the default) */
	fm_cmd_env(c, "GLIBC_TUNABLES", "glibc.malloc.hugetlb=1");
}

struct fm_cmd *fm_rt_runc_cmd(fm_runtime *rt)
{
	fm_cmd *c = fm_cmd_new(rt->runc);
	fm_cmd_arg(c, "--root");
	fm_cmd_arg(c, rt->runc_root);
	fm_rt_criu_env(c);   /* runc's CRIU inherits runc's environment */
	if (rt->criu_shim) {
		fm_cmd_arg(c, "--criu");
		fm_cmd_arg(c, rt->criu_shim);
		fm_cmd_env(c, "FM_CRIU", rt->criu);
		fm_cmd_env(c, "FM_CRIU_RPC_CACHE", rt->criu_rpc_cache);
	} else if (rt->criu && *rt->criu) {
		fm_cmd_arg(c, "--criu");
		fm_cmd_arg(c, rt->criu);
	}
	fm_cmd_set_timeout_ms(c, RUNC_TIMEOUT_MS);
	return c;
}

struct fm_cmd *fm_rt_runc_restore_cmd(fm_runtime *rt, const char *criu_conf, const char *runc_log)
{
	fm_cmd *c = fm_rt_runc_cmd(rt);
	fm_cmd_env(c, "CRIU_CONFIG_FILE", criu_conf);
	if (runc_log) {
		fm_cmd_arg(c, "--log");
		fm_cmd_arg(c, runc_log);
		fm_cmd_arg(c, "--log-format");
		fm_cmd_arg(c, "json");
	}
	fm_cmd_arg(c, "restore");
	return c;
}

void fm_rt_attach_runc_log(fm_error *err, const char *log)
{
	char *lines = fm_file_grep(log, "\"level\":\"error\"", NULL, 4);
	if (lines)
		fm_error_set_detail(err, lines);
}

int fm_rt_bundle_create(fm_runtime *rt, const fm_container_spec *spec, fm_error *err)
{
	_cleanup_free_ char *dir = fm_rt_container_dir(rt, spec->name);
	_cleanup_free_ char *cfgpath = fm_xasprintf("%s/config.json", dir);
	json_error_t jerr;
	json_t *cfg, *proc, *linux_, *res;
	int r;

	for (const char *sub = "rootfs\0upper\0work\0"; *sub; sub += strlen(sub) + 1) {
		_cleanup_free_ char *p = fm_xasprintf("%s/%s", dir, sub);
		if ((r = fm_mkdir_p(p, 0700)) < 0)
			return fm_error_set(err, r, "cannot create %s: %s", p, strerror(-r));
	}
	cfg = json_loads(bundle_template, 0, &jerr);
	if (!cfg)
		return fm_error_set(err, -EINVAL, "internal: bad bundle template: %s", jerr.text);
	proc = json_object_get(cfg, "process");
	json_object_set(proc, "args", spec->args);
	if (spec->env) {
		json_t *env = json_object_get(proc, "env");
		json_array_extend(env, spec->env);
	}
	json_object_set_new(json_object_get(cfg, "root"), "path", json_sprintf("%s/rootfs", dir));
	json_object_set_new(cfg, "hostname", json_string(spec->name));
	linux_ = json_object_get(cfg, "linux");
	json_object_set_new(linux_, "cgroupsPath", json_sprintf("/fleximigrate/%s/%s", rt->host, spec->name));
	if (spec->net_ip) {
		/* join the namespace fm_net_create builds (runc and CRIU treat it as external) */
		_cleanup_free_ char *nspath = fm_net_ns_path(rt, spec->name);
		size_t i;
		json_t *ns;
		json_array_foreach(json_object_get(linux_, "namespaces"), i, ns)
			if (!strcmp(json_string_value(json_object_get(ns, "type")) ?: "", "network"))
				json_object_set_new(ns, "path", json_string(nspath));
	}
	/* volumes: plain (not recursive) binds, so that no host mount below the
	 * source becomes part of the container's mount tree; runc checkpoints and
	 * restores each as an external mount keyed by its destination
	 * (fm_rt_criu_dump_args) and binds the source again on the destination */
	json_t *vol;
	size_t vi;
	json_array_foreach(spec->volumes, vi, vol)
		json_array_append_new(json_object_get(cfg, "mounts"),
				      json_pack("{s:O, s:s, s:O, s:[s, s, s]}", "destination",
						json_object_get(vol, "destination"), "type", "bind", "source",
						json_object_get(vol, "source"), "options", "bind", "nosuid",
						json_is_true(json_object_get(vol, "readonly")) ? "ro" : "rw"));
	res = json_object_get(linux_, "resources");
	if (spec->memory_bytes > 0)
		json_object_set_new(res, "memory", json_pack("{s:I}", "limit", (json_int_t)spec->memory_bytes));
	if (spec->cpu_milli > 0)
		json_object_set_new(res, "cpu", json_pack("{s:I, s:I}", "quota", (json_int_t)spec->cpu_milli * 100,
							  "period", (json_int_t)100000));
	char *s = json_dumps(cfg, JSON_INDENT(1));
	json_decref(cfg);
	r = fm_write_file_atomic(cfgpath, s, strlen(s), 0600);
	free(s);
	if (r < 0)
		return fm_error_set(err, r, "cannot write %s: %s", cfgpath, strerror(-r));
	return 0;
}

int fm_rt_rootfs_mount(fm_runtime *rt, const char *name, const char *digest, fm_error *err)
{
	_cleanup_free_ char *dir = fm_rt_container_dir(rt, name);
	_cleanup_free_ char *lower = fm_image_rootfs_path(rt->images, digest);
	_cleanup_free_ char *opts = fm_xasprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work", lower, dir, dir);
	_cleanup_free_ char *target = fm_xasprintf("%s/rootfs", dir);

	if (mount("overlay", target, "overlay", 0, opts) < 0)
		return fm_error_set(err, -errno, "cannot mount the root filesystem of %s (overlay on %s): %m",
				    name, target);
	return 0;
}

int fm_rt_rootfs_umount(fm_runtime *rt, const char *name)
{
	_cleanup_free_ char *target = fm_xasprintf("%s/containers/%s/rootfs", rt->state_dir, name);
	/* lazily: a process that still holds the mount (a dying container) must not
	 * keep us from cleaning up; the kernel finishes when it lets go */
	if (umount2(target, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		return -errno;
	return 0;
}

int fm_rt_bundle_destroy(fm_runtime *rt, const char *name)
{
	_cleanup_free_ char *dir = fm_rt_container_dir(rt, name);
	fm_rt_rootfs_umount(rt, name);
	fm_net_destroy(rt, name);
	return fm_rm_rf(dir);
}

int fm_rt_record(fm_runtime *rt, const fm_container_spec *spec, const char *migration, bool committed)
{
	json_t *o = fm_container_spec_to_json(spec);
	char *s = json_dumps(o, JSON_COMPACT);
	int r = fm_journal_exec(rt->journal,
				"INSERT OR REPLACE INTO containers(name, image, spec, created_ms, migration, committed)"
				" VALUES(?, ?, ?, ?, ?, ?)",
				"sssisi", spec->name, spec->digest, s, fm_now_wall_ms(), migration,
				(int64_t)committed);
	free(s);
	json_decref(o);
	return r < 0 ? r : 0;
}

/* runc's own record of a container (<runc_root>/<name>/state.json): the init
 * process and the freezer cgroup.  Reading it costs microseconds where spawning
 * `runc state` costs ~10 ms, and status queries sit on the migration path. */
struct runc_state {
	pid_t pid;
	unsigned long long start;   /* init's start time in clock ticks (proc(5) field 22) */
	char freezer[512];          /* cgroup v1 freezer dir, or "" */
	char unified[512];          /* cgroup v2 dir, or "" */
};

/* With whole, the parsed file too (the caller's reference), when it returns 0. */
static int runc_state_read_whole(fm_runtime *rt, const char *name, struct runc_state *st, json_t **whole)
{
	_cleanup_free_ char *path = fm_xasprintf("%s/%s/state.json", rt->runc_root, name);
	json_t *o = json_load_file(path, 0, NULL);
	json_t *cg;

	if (!o)
		return access(path, F_OK) == 0 ? -EIO : -ENOENT;
	memset(st, 0, sizeof(*st));
	st->pid = (pid_t)json_integer_value(json_object_get(o, "init_process_pid"));
	st->start = (unsigned long long)json_integer_value(json_object_get(o, "init_process_start"));
	cg = json_object_get(o, "cgroup_paths");
	snprintf(st->freezer, sizeof(st->freezer), "%s", json_string_value(json_object_get(cg, "freezer")) ?: "");
	snprintf(st->unified, sizeof(st->unified), "%s", json_string_value(json_object_get(cg, "")) ?: "");
	if (st->pid <= 0) {
		json_decref(o);
		return -EIO;
	}
	if (whole)
		*whole = o;
	else
		json_decref(o);
	return 0;
}

static int runc_state_read(fm_runtime *rt, const char *name, struct runc_state *st)
{
	return runc_state_read_whole(rt, name, st, NULL);
}

/* Is st->pid still the container's init (not a recycled pid)? */
static bool init_alive(const struct runc_state *st)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)st->pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (n <= 0)
		return false;
	buf[n] = '\0';
	/* fields after the command name, which may contain spaces: start after ") " */
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return false;
	p += 2;
	if (*p == 'Z' || *p == 'X')
		return false;
	/* p is field 3; the start time is field 22 */
	for (int f = 3; f < 22 && p; f++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	return p && strtoull(p, NULL, 10) == st->start;
}

static bool frozen(const struct runc_state *st)
{
	if (*st->freezer) {
		_cleanup_free_ char *p = fm_xasprintf("%s/freezer.state", st->freezer);
		_cleanup_free_ char *v = NULL;
		return fm_read_file(p, 64, &v, NULL) == 0 && strncmp(v, "THAWED", 6) != 0;
	}
	if (*st->unified) {
		_cleanup_free_ char *p = fm_xasprintf("%s/cgroup.freeze", st->unified);
		_cleanup_free_ char *v = NULL;
		return fm_read_file(p, 64, &v, NULL) == 0 && v[0] == '1';
	}
	return false;
}

/* One "--external KEY" argument, KEY formatted. */
#define criu_external(c, ...)                    \
	do {                                     \
		fm_cmd_arg(c, "--external");     \
		fm_cmd_argf(c, __VA_ARGS__);     \
	} while (0)

int fm_rt_criu_dump_args(fm_runtime *rt, const char *name, fm_cmd *c, const char *images_dir, fm_error *err)
{
	_cleanup_free_ char *fds = NULL, *dpath = NULL;
	struct runc_state st;
	json_t *o = NULL, *cfg, *v;
	size_t i;
	int r = 0;

	if (runc_state_read_whole(rt, name, &st, &o) < 0 || !init_alive(&st)) {
		json_decref(o);
		return fm_error_set(err, -ESRCH, "container %s does not run on %s", name, rt->host);
	}
	cfg = json_object_get(o, "config");
	const char *rootfs = json_string_value(json_object_get(cfg, "rootfs"));
	if (!rootfs || (!*st.freezer && !*st.unified)) {
		r = fm_error_set(err, -EIO, "runc's state of %s names no root filesystem or no freezer cgroup", name);
		goto out;
	}
	fm_cmd_arg(c, "-t");
	fm_cmd_argf(c, "%d", (int)st.pid);
	fm_cmd_arg(c, "--root");
	fm_cmd_arg(c, rootfs);
	/* CRIU freezes (or finds frozen) the cgroup instead of stopping each task */
	fm_cmd_arg(c, "--freeze-cgroup");
	fm_cmd_arg(c, *st.freezer ? st.freezer : st.unified);
	/* namespaces the container joined by path (our own network, runtime/net.h)
	 * are not the container's to dump: the restore finds them in place */
	json_array_foreach(json_object_get(cfg, "namespaces"), i, v) {
		const char *type = json_string_value(json_object_get(v, "type")) ?: "";
		const char *nspath = json_string_value(json_object_get(v, "path")) ?: "";
		struct stat sb;
		if (!*nspath || (strcmp(type, "NEWNET") != 0 && strcmp(type, "NEWPID") != 0))
			continue;
		if (stat(nspath, &sb) < 0) {
			r = fm_error_set(err, -errno, "container %s: namespace %s: %m", name, nspath);
			goto out;
		}
		criu_external(c, "%s[%lu]:%s", !strcmp(type, "NEWNET") ? "net" : "pid", (unsigned long)sb.st_ino,
			      !strcmp(type, "NEWNET") ? "extRootNetNS" : "extRootPidNS");
	}
	if (!images_dir)
		goto out;
	/* bind mounts and device nodes come from the host: the restore binds them
	 * again (runc restore maps each key to its source); masked files are
	 * /dev/null binds */
	json_array_foreach(json_object_get(cfg, "mounts"), i, v) {
		const char *dest = json_string_value(json_object_get(v, "destination"));
		if (dest && !strcmp(json_string_value(json_object_get(v, "device")) ?: "", "bind"))
			criu_external(c, "mnt[%s]:%s", dest, dest);
	}
	json_array_foreach(json_object_get(cfg, "mask_paths"), i, v) {
		_cleanup_free_ char *in = fm_xasprintf("/proc/%d/root%s", (int)st.pid, json_string_value(v) ?: "");
		struct stat sb;
		if (!json_string_value(v) || stat(in, &sb) < 0)
			continue;   /* runc masks only what exists */
		_cleanup_free_ char *key = criu_masked_key(json_string_value(v));
		if (!S_ISDIR(sb.st_mode))
			criu_external(c, "mnt[%s]:/dev/null", json_string_value(v));
		else if (key) /* see criu_restore_text_make */
			criu_external(c, "mnt[%s]:%s", json_string_value(v), key);
	}
	json_array_foreach(json_object_get(cfg, "devices"), i, v) {
		const char *dev = json_string_value(json_object_get(v, "path"));
		if (dev)
			criu_external(c, "mnt[%s]:%s", dev, dev);
	}
	/* what runc restore reads to hand the restored init its stdio again */
	json_t *ext = json_object_get(o, "external_descriptors");
	fds = ext ? json_dumps(ext, JSON_COMPACT) : fm_xstrdup("[]");
	dpath = fm_xasprintf("%s/descriptors.json", images_dir);
	if (!fds || (r = fm_write_file_staged(dpath, fds, strlen(fds), 0600)) < 0)
		r = fm_error_set(err, r < 0 ? r : -ENOMEM, "cannot write %s", dpath);
out:
	json_decref(o);
	return r;
}

char *fm_rt_criu_dump_conf(fm_runtime *rt, const char *name, const char *images_dir)
{
	struct runc_state st;
	char *conf = NULL;
	fm_error te = FM_ERROR_INIT;

	/* empty tmpfs mounts travel as fresh ones, not as tars (runtime/tmpfs.h);
	 * if that cannot be arranged, CRIU carries them as before */
	if (runc_state_read(rt, name, &st) < 0)
		fm_error_set(&te, -ESRCH, "no runc state");
	else if (fm_tmpfs_dump_conf(name, st.pid, images_dir, &conf, &te) < 0) {
		free(conf);
		conf = NULL;
	}
	if (te.msg[0])
		fm_warn(FM_C_CHECKPOINTING, "container %s: its tmpfs mounts go inside the checkpoint: %s", name, te.msg);
	fm_error_clear(&te);
	return conf ? conf : fm_xstrdup("");
}

int fm_rt_status(fm_runtime *rt, const char *name, char *status, size_t len, pid_t *pid)
{
	struct runc_state st;
	int r = runc_state_read(rt, name, &st);

	if (r < 0)
		return r;
	bool alive = init_alive(&st);
	snprintf(status, len, "%s", !alive ? "stopped" : frozen(&st) ? "paused" : "running");
	if (pid)
		*pid = alive ? st.pid : 0;
	return 0;
}

/* Freezes or thaws the container's cgroup directly and waits until the kernel
 * reports the new state.  -ENOENT when there is no freezer to use. */
static int freezer_set(fm_runtime *rt, const char *name, bool freeze, fm_error *err)
{
	struct runc_state st;
	int r;

	if ((r = runc_state_read(rt, name, &st)) < 0)
		return r;
	if (*st.freezer) {
		_cleanup_free_ char *p = fm_xasprintf("%s/freezer.state", st.freezer);
		const char *want = freeze ? "FROZEN" : "THAWED";
		_cleanup_close_ int fd = open(p, O_RDWR | O_CLOEXEC);
		if (fd < 0 || write(fd, want, strlen(want)) < 0)
			return fm_error_set(err, -errno, "cannot write %s: %m", p);
		/* cgroup v1 offers no notification: the state goes FREEZING -> FROZEN as
		 * the kernel stops each task, normally within a millisecond */
		for (int i = 0; i < 5000; i++) {
			char v[32] = "";
			ssize_t n = pread(fd, v, sizeof(v) - 1, 0);
			if (n > 0 && !strncmp(v, want, strlen(want)))
				return 0;
			if (freeze && i % 50 == 49)
				(void)!pwrite(fd, want, strlen(want), 0); /* re-kick a stuck FREEZING */
			struct timespec ts = { 0, 200000 }; /* wait for the kernel's freezer */
			nanosleep(&ts, NULL);
		}
		return fm_error_set(err, -ETIMEDOUT, "%s did not become %s within 1 s", name, want);
	}
	if (*st.unified) {
		_cleanup_free_ char *p = fm_xasprintf("%s/cgroup.freeze", st.unified);
		_cleanup_free_ char *ev = fm_xasprintf("%s/cgroup.events", st.unified);
		if ((r = fm_write_file_atomic(p, freeze ? "1" : "0", 1, 0644)) < 0) {
			/* cgroup files cannot be renamed into place: write in place */
			_cleanup_close_ int fd = open(p, O_WRONLY | O_CLOEXEC);
			if (fd < 0 || write(fd, freeze ? "1" : "0", 1) < 0)
				return fm_error_set(err, -errno, "cannot write %s: %m", p);
		}
		_cleanup_close_ int efd = open(ev, O_RDONLY | O_CLOEXEC);
		for (int64_t end = fm_now_mono_ms() + 1000; efd >= 0 && fm_now_mono_ms() < end;) {
			char buf[256] = "";
			ssize_t n = pread(efd, buf, sizeof(buf) - 1, 0);
			if (n > 0 && strstr(buf, freeze ? "frozen 1" : "frozen 0"))
				return 0;
			struct pollfd pf = { efd, POLLPRI, 0 }; /* cgroup.events notifies changes */
			poll(&pf, 1, 100);
		}
		return fm_error_set(err, -ETIMEDOUT, "%s did not become %s within 1 s", name, freeze ? "frozen" : "thawed");
	}
	return -ENOENT;
}

bool fm_rt_exists(fm_runtime *rt, const char *name)
{
	return fm_journal_query_int(rt->journal, 0, "SELECT COUNT(*) FROM containers WHERE name = ?", "s", name) > 0;
}

static json_t *describe(fm_runtime *rt, json_t *row)
{
	const char *name = json_string_value(json_object_get(row, "name"));
	json_t *spec = json_loads(json_string_value(json_object_get(row, "spec")) ?: "{}", 0, NULL);
	char status[32] = "missing";
	pid_t pid = 0;
	uint64_t mem = 0;
	json_t *o;

	fm_rt_status(rt, name, status, sizeof(status), &pid);
	o = json_pack("{s:s, s:s, s:o, s:s, s:I, s:o, s:I, s:o, s:s}",
		      "name", name, "host", rt->host,
		      "image", json_incref(json_object_get(spec, "image")) ?: json_null(),
		      "digest", json_string_value(json_object_get(row, "image")) ?: "",
		      "created_ms", (json_int_t)json_integer_value(json_object_get(row, "created_ms")),
		      "args", json_incref(json_object_get(spec, "args")) ?: json_array(),
		      "pid", (json_int_t)pid,
		      "committed", json_boolean(json_integer_value(json_object_get(row, "committed"))),
		      "status", status);
	json_object_set_new(o, "rootfs", json_sprintf("%s/containers/%s/rootfs", rt->state_dir, name));
	/* the rest of the spec as recorded (limits, env, network, volumes):
	 * what a migration hands the destination (coordinator.c) */
	json_object_update_missing(o, spec);
	if (fm_rt_memory_usage(rt, name, &mem) == 0)
		json_object_set_new(o, "memory_usage_bytes", json_integer((json_int_t)mem));
	if (!json_is_null(json_object_get(row, "migration")))
		json_object_set(o, "migration", json_object_get(row, "migration"));
	json_decref(spec);
	return o;
}

json_t *fm_rt_list(fm_runtime *rt)
{
	json_t *rows = NULL, *out = json_array(), *row;
	size_t i;

	if (fm_journal_query(rt->journal, &rows, "SELECT * FROM containers ORDER BY name", NULL) < 0)
		return out;
	json_array_foreach(rows, i, row) json_array_append_new(out, describe(rt, row));
	json_decref(rows);
	return out;
}

json_t *fm_rt_get(fm_runtime *rt, const char *name)
{
	json_t *row = fm_journal_query_one(rt->journal, "SELECT * FROM containers WHERE name = ?", "s", name);
	json_t *o;
	if (!row)
		return NULL;
	o = describe(rt, row);
	json_decref(row);
	return o;
}

static size_t pids_of(const struct runc_state *st, pid_t *pids, size_t max)
{
	const char *dir = *st->freezer ? st->freezer : st->unified;
	_cleanup_free_ char *procs = fm_xasprintf("%s/cgroup.procs", dir);
	_cleanup_free_ char *list = NULL;
	size_t n = 0;
	if (*dir && fm_read_file(procs, 1 << 20, &list, NULL) == 0)
		for (char *p = list; *p && n < max;) {
			pid_t pid = (pid_t)strtol(p, &p, 10);
			if (pid > 0)
				pids[n++] = pid;
			while (*p == '\n')
				p++;
		}
	if (n == 0 && max > 0 && st->pid > 0)
		pids[n++] = st->pid;
	return n;
}

int fm_rt_cgroups(fm_runtime *rt, const char *name, json_t **paths, pid_t *pid)
{
	struct runc_state st;
	json_t *whole = NULL;
	if (runc_state_read_whole(rt, name, &st, &whole) < 0)
		return -ESRCH;
	if (!init_alive(&st)) {
		json_decref(whole);
		return -ESRCH;
	}
	*paths = json_incref(json_object_get(whole, "cgroup_paths"));
	*pid = st.pid;
	json_decref(whole);
	return *paths ? 0 : -ESRCH;
}

int fm_rt_pids(fm_runtime *rt, const char *name, pid_t *pids, size_t max)
{
	struct runc_state st;
	if (runc_state_read(rt, name, &st) < 0 || !init_alive(&st))
		return -ESRCH;
	return (int)pids_of(&st, pids, max);
}

/* Kills every process of the container and waits for its init to go.  Signals
 * reach frozen tasks only once they thaw, so thaw after killing: nothing runs
 * between the two but the tasks' deaths. */
/* value into dir/file, in place (cgroup files cannot be renamed into place) */
static void cg_write(const char *dir, const char *file, const char *value)
{
	_cleanup_free_ char *p = fm_xasprintf("%s/%s", dir, file);
	_cleanup_close_ int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd >= 0)
		(void)!write(fd, value, strlen(value));
}

/* Where the container's cgroup is (its config's cgroupsPath), when runc has
 * no record of it: in the v1 freezer hierarchy, or the unified one (a pure
 * v2 host's /sys/fs/cgroup, a hybrid host's /sys/fs/cgroup/unified). */
static void cgroup_dirs_of(fm_runtime *rt, const char *name, struct runc_state *st)
{
	static const char *const v2[] = { "/sys/fs/cgroup", "/sys/fs/cgroup/unified" };
	struct statfs sf;
	memset(st, 0, sizeof(*st));
	snprintf(st->freezer, sizeof(st->freezer), "/sys/fs/cgroup/freezer/fleximigrate/%s/%s", rt->host, name);
	if (statfs(st->freezer, &sf) < 0 || sf.f_type != CGROUP_SUPER_MAGIC)
		*st->freezer = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(v2) && !*st->unified; i++) {
		snprintf(st->unified, sizeof(st->unified), "%s/fleximigrate/%s/%s", v2[i], rt->host, name);
		if (statfs(st->unified, &sf) < 0 || sf.f_type != CGROUP2_SUPER_MAGIC)
			*st->unified = '\0';
	}
}

/* Every process of the container killed: runc's init and whatever else is in
 * its cgroup.  Without runc's record too: a restore whose tasks CRIU let go
 * but that runc never recorded (runc killed, or timed out, after CRIU's
 * resume) leaves them running in the cgroup, and the copy that is to go on
 * running is elsewhere. */
static void kill_all(fm_runtime *rt, const char *name)
{
	struct runc_state st;
	pid_t pids[4096];
	bool known = runc_state_read(rt, name, &st) == 0 && init_alive(&st);
	if (!known)
		cgroup_dirs_of(rt, name, &st);
	_cleanup_close_ int pfd = known ? (int)syscall(SYS_pidfd_open, st.pid, 0) : -1;
	/* v1: frozen first, so that nothing forks past the kill */
	if (!known && *st.freezer)
		cg_write(st.freezer, "freezer.state", "FROZEN");
	size_t n = pids_of(&st, pids, ARRAY_SIZE(pids));
	for (size_t i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	if (!known && *st.unified)
		cg_write(st.unified, "cgroup.kill", "1"); /* v2 (5.14+): the rest, descendants too */
	if (!known && n > 0)
		pfd = (int)syscall(SYS_pidfd_open, pids[0], 0);
	if (known && frozen(&st))
		freezer_set(rt, name, false, NULL);
	else if (!known && *st.freezer)
		cg_write(st.freezer, "freezer.state", "THAWED");
	if (pfd >= 0) {
		struct pollfd p = { pfd, POLLIN, 0 };
		poll(&p, 1, 5000);
	}
	if (!known && n > 0)
		fm_warn(FM_C_CONTAINER_MANAGER, "container %s: %zu process%s left in its cgroup without runc's record "
			"killed (a restore runc did not see to its end)", name, n, n == 1 ? "" : "es");
}

int fm_rt_runc_destroy(fm_runtime *rt, const char *name, fm_error *err)
{
	fm_error e = FM_ERROR_INIT;
	int r;

	kill_all(rt, name);
	/* a restore killed midway (given up: an abort, a broken page stream)
	 * leaves runc's bind of the root filesystem for CRIU */
	_cleanup_free_ char *cdir = fm_xasprintf("%s/%s", rt->runc_root, name);
	_cleanup_free_ char *croot = fm_xasprintf("%s/criu-root", cdir);
	if (umount2(croot, MNT_DETACH) == 0)
		(void)rmdir(croot);
	/* a stopped container: a plain delete is quick; --force only as a fallback
	 * (it polls for the kill in 100 ms steps) */
	for (int force = 0; force < 2; force++) {
		fm_cmd *c = fm_rt_runc_cmd(rt);
		fm_cmd_arg(c, "delete");
		if (force)
			fm_cmd_arg(c, "--force");
		fm_cmd_arg(c, name);
		fm_error_clear(&e);
		r = fm_cmd_run(c, &e);
		if (r != 0 && strstr(fm_cmd_stderr(c), "does not exist"))
			r = 0;
		fm_cmd_free(c);
		if (r == 0)
			break;
	}
	if (r != 0)
		fm_error_move(err, &e);
	else
		(void)rmdir(cdir);   /* what such a restore left of runc's state, if empty */
	fm_error_clear(&e);
	return r > 0 ? -EIO : r;
}

int fm_rt_address_free(fm_runtime *rt, const char *cidr, const char *name, fm_error *err)
{
	json_t *rows = NULL, *row;
	size_t i, n = strcspn(cidr, "/");
	int r = 0;
	if (fm_journal_query(rt->journal, &rows, "SELECT name, spec FROM containers WHERE name != ?", "s", name) < 0)
		return fm_error_set(err, -EIO, "cannot read the containers of %s", rt->host);
	json_array_foreach(rows, i, row) {
		json_t *spec = json_loads(json_string_value(json_object_get(row, "spec")) ?: "{}", 0, NULL);
		const char *ip = json_string_value(json_object_get(json_object_get(spec, "network"), "ip"));
		if (ip && strcspn(ip, "/") == n && strncmp(ip, cidr, n) == 0)
			r = fm_error_set(err, -EADDRINUSE, "address %.*s is taken on %s by container %s", (int)n, cidr,
					 rt->host, json_string_value(json_object_get(row, "name")));
		json_decref(spec);
	}
	json_decref(rows);
	return r;
}

int fm_rt_run(fm_runtime *rt, fm_container_spec *spec, fm_error *err)
{
	_cleanup_free_ char *dir = fm_rt_container_dir(rt, spec->name);
	_cleanup_free_ char *log = fm_xasprintf("%s/runc.log", dir);
	fm_image img;
	struct stat st;
	fm_cmd *c;
	int r;

	if (fm_rt_exists(rt, spec->name) || stat(dir, &st) == 0)
		return fm_error_set(err, -EEXIST, "a container named %s already exists on %s", spec->name, rt->host);
	if (spec->net_ip && (r = fm_rt_address_free(rt, spec->net_ip, spec->name, err)) < 0)
		return r;
	if (fm_image_lookup(rt->images, spec->image, &img) < 0)
		return fm_error_set(err, -ENOENT, "image %s is not in the store of %s: import it with `fleximigrate image import`",
				    spec->image, rt->host);
	free(spec->digest);
	spec->digest = fm_xstrdup(img.digest);
	if ((r = fm_rt_volumes_check(rt, spec, err)) < 0)
		return r;

	if ((r = fm_rt_bundle_create(rt, spec, err)) < 0)
		goto fail;
	if ((r = fm_rt_rootfs_mount(rt, spec->name, spec->digest, err)) < 0)
		goto fail;
	if ((r = fm_rt_record(rt, spec, NULL, true)) < 0) {
		fm_error_set(err, r, "cannot record container %s in the journal", spec->name);
		goto fail;
	}
	if (spec->net_ip && (r = fm_net_create(rt, spec->name, spec->net_ip, spec->net_mac, true, err)) < 0) {
		fm_journal_exec(rt->journal, "DELETE FROM containers WHERE name = ?", "s", spec->name);
		goto fail;
	}
	c = fm_rt_runc_cmd(rt);
	fm_cmd_arg(c, "--log");
	fm_cmd_arg(c, log);
	fm_cmd_arg(c, "--log-format");
	fm_cmd_arg(c, "json");
	fm_cmd_arg(c, "run");
	fm_cmd_arg(c, "--detach");
	fm_cmd_arg(c, "--bundle");
	fm_cmd_arg(c, dir);
	fm_cmd_arg(c, spec->name);
	/* the container inherits our stdio: /dev/null, which CRIU can checkpoint */
	fm_cmd_set_stdio_null(c);
	r = fm_cmd_run(c, err);
	fm_cmd_free(c);
	if (r != 0) {
		fm_rt_attach_runc_log(err, log);
		fm_error_prefix(err, "cannot start container %s", spec->name);
		r = r > 0 ? -EIO : r;
		fm_journal_exec(rt->journal, "DELETE FROM containers WHERE name = ?", "s", spec->name);
		fm_rt_runc_destroy(rt, spec->name, NULL);
		goto fail;
	}
	return 0;
fail:
	fm_rt_bundle_destroy(rt, spec->name);
	return r;
}

static int runc_simple(fm_runtime *rt, const char *verb, const char *name, const char *extra,
		       fm_error *err)
{
	fm_cmd *c = fm_rt_runc_cmd(rt);
	int r;
	fm_cmd_arg(c, verb);
	fm_cmd_arg(c, name);
	if (extra)
		fm_cmd_arg(c, extra);
	r = fm_cmd_run(c, err);
	fm_cmd_free(c);
	return r > 0 ? -EIO : r;
}

int fm_rt_cpu_throttle(fm_runtime *rt, const char *name, int percent, fm_error *err)
{
	json_auto_t *c = fm_rt_get(rt, name);
	json_int_t own = json_integer_value(json_object_get(c, "cpu_milli"));
	/* percent of one CPU, never above the container's own limit; 0 = that limit */
	json_int_t quota = own > 0 ? own * 100 : -1;
	if (!c)
		return fm_error_set(err, -ENOENT, "no container %s on %s", name, rt->host);
	if (percent > 0 && (quota < 0 || percent * 1000 < quota))
		quota = percent * 1000;
	fm_cmd *u = fm_rt_runc_cmd(rt);
	fm_cmd_arg(u, "update");
	fm_cmd_arg(u, "--cpu-period");
	fm_cmd_arg(u, "100000");
	fm_cmd_arg(u, "--cpu-quota");
	fm_cmd_argf(u, "%lld", (long long)quota);
	fm_cmd_arg(u, name);
	int r = fm_cmd_run(u, err);
	fm_cmd_free(u);
	if (r != 0)
		fm_error_prefix(err, "cannot set the CPU quota of %s", name);
	return r > 0 ? -EIO : r;
}

int fm_rt_pause(fm_runtime *rt, const char *name, fm_error *err)
{
	int r = freezer_set(rt, name, true, err);
	return r == -ENOENT ? runc_simple(rt, "pause", name, NULL, err) : r;
}

int fm_rt_resume(fm_runtime *rt, const char *name, fm_error *err)
{
	int r = freezer_set(rt, name, false, err);
	return r == -ENOENT ? runc_simple(rt, "resume", name, NULL, err) : r;
}

/* Waits for pid to exit, at most timeout_ms (pidfd: no polling loop). */
static bool wait_exit(pid_t pid, int timeout_ms)
{
	_cleanup_close_ int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	struct pollfd p;
	if (fd < 0)
		return errno == ESRCH;
	p.fd = fd;
	p.events = POLLIN;
	return poll(&p, 1, timeout_ms) > 0;
}

int fm_rt_stop(fm_runtime *rt, const char *name, int timeout_ms, fm_error *err)
{
	char status[32];
	pid_t pid = 0;

	if (fm_rt_status(rt, name, status, sizeof(status), &pid) < 0)
		return fm_error_set(err, -ENOENT, "container %s is not known to runc on %s", name, rt->host);
	if (!strcmp(status, "stopped"))
		return 0;
	if (!strcmp(status, "paused"))
		fm_rt_resume(rt, name, NULL); /* a frozen process cannot handle SIGTERM */
	runc_simple(rt, "kill", name, "TERM", NULL);
	if (pid > 0 && wait_exit(pid, timeout_ms))
		return 0;
	runc_simple(rt, "kill", name, "KILL", NULL);
	if (pid > 0 && !wait_exit(pid, 5000))
		return fm_error_set(err, -ETIMEDOUT, "container %s (pid %d) did not die after SIGKILL", name, (int)pid);
	return 0;
}

int fm_rt_remove(fm_runtime *rt, const char *name, bool force, fm_error *err)
{
	char status[32];
	int r;

	if (!fm_rt_exists(rt, name))
		return fm_error_set(err, -ENOENT, "no container named %s on %s", name, rt->host);
	if (fm_rt_status(rt, name, status, sizeof(status), NULL) == 0 && strcmp(status, "stopped") != 0 && !force)
		return fm_error_set(err, -EBUSY, "container %s is %s: stop it first or remove with --force",
				    name, status);
	if ((r = fm_rt_runc_destroy(rt, name, err)) < 0)
		return r;
	if ((r = fm_rt_bundle_destroy(rt, name)) < 0)
		return fm_error_set(err, r, "cannot remove the files of %s: %s", name, strerror(-r));
	fm_journal_exec(rt->journal, "DELETE FROM containers WHERE name = ?", "s", name);
	return 0;
}

int fm_rt_exec(fm_runtime *rt, const char *name, json_t *argv, int timeout_ms, fm_error *err)
{
	fm_cmd *c = fm_rt_runc_cmd(rt);
	size_t i;
	json_t *v;
	int r;

	fm_cmd_arg(c, "exec");
	fm_cmd_arg(c, name);
	json_array_foreach(argv, i, v) fm_cmd_arg(c, json_string_value(v));
	fm_cmd_set_timeout_ms(c, timeout_ms);
	fm_error e = FM_ERROR_INIT;
	r = fm_cmd_run(c, &e);
	if (r > 0) {
		/* runc exec passes the command's own exit status through */
		const char *out = fm_cmd_stderr(c)[0] ? fm_cmd_stderr(c) : fm_cmd_stdout(c);
		fm_error_set(err, -EIO, "command exited with status %d%s%.300s", r, *out ? ": " : "", out);
		fm_error_clear(&e);
		r = -EIO;
	} else {
		fm_error_move(err, &e);
	}
	fm_cmd_free(c);
	return r;
}

int64_t fm_rt_upper_bytes(fm_runtime *rt, const char *name)
{
	_cleanup_free_ char *dir = fm_rt_container_dir(rt, name);
	_cleanup_free_ char *upper = fm_xasprintf("%s/upper", dir);
	char *paths[] = { upper, NULL };
	FTS *f = fts_open(paths, FTS_PHYSICAL | FTS_XDEV | FTS_NOCHDIR, NULL);
	int64_t bytes = 0, n = 0;
	FTSENT *e;
	if (!f)
		return -1;
	errno = 0;
	while ((e = fts_read(f)) && n++ < FM_UPPER_WALK_MAX)
		if (e->fts_info == FTS_F || e->fts_info == FTS_D || e->fts_info == FTS_SL)
			bytes += (int64_t)e->fts_statp->st_blocks * 512;
	bool failed = !e && errno != 0;
	fts_close(f);
	return failed ? -1 : bytes;
}

int fm_rt_memory_usage(fm_runtime *rt, const char *name, uint64_t *bytes)
{
	/* cgroup v1 memory controller first, then the unified hierarchy */
	static const char *const files[] = { "/sys/fs/cgroup/memory/fleximigrate/%/memory.usage_in_bytes",
					     "/sys/fs/cgroup/fleximigrate/%/memory.current",
					     "/sys/fs/cgroup/unified/fleximigrate/%/memory.current" };
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		const char *pct = strchr(files[i], '%');
		_cleanup_free_ char *p = fm_xasprintf("%.*s%s/%s%s", (int)(pct - files[i]), files[i], rt->host, name, pct + 1);
		_cleanup_free_ char *s = NULL;
		if (fm_read_file(p, 64, &s, NULL) == 0) {
			*bytes = strtoull(s, NULL, 10);
			return 0;
		}
	}
	return -ENOENT;
}
