/* fleximigrate: the command-line client.  Talks to the local daemon over its UNIX
 * socket (--socket, $FM_SOCKET, default /run/fleximigrate/fleximigrated.sock). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/http.h"
#include "manager/policy.h"
#include "runtime/net.h"
#include "basic/log.h"
#include "basic/util.h"
#include "fm-config.h"

#define DEFAULT_SOCKET "/run/fleximigrate/fleximigrated.sock"
#define POLL_MS 100

static char endpoint[4200];
static bool opt_json;

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static int die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int die_usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("fleximigrate: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(" (see --help)\n", stderr);
	va_end(ap);
	return EXIT_USAGE;
}

static int report(const fm_error *e)
{
	fprintf(stderr, "fleximigrate: %s\n", e->msg);
	if (e->detail)
		fprintf(stderr, "%s%s", e->detail, e->detail[strlen(e->detail) - 1] == '\n' ? "" : "\n");
	if (e->code == -ECONNREFUSED || (e->code == -EHOSTUNREACH && strstr(e->msg, "unix")))
		fprintf(stderr, "  is fleximigrated running? (socket %s; set --socket or FM_SOCKET)\n", endpoint + 5);
	return EXIT_FAIL;
}

/* One API call; on failure prints the error and returns EXIT_FAIL. */
static int call(const char *method, const char *path, json_t *body, json_t **out)
{
	fm_error e = FM_ERROR_INIT;
	int r = fm_http_call(endpoint, method, path, body, 3600 * 1000, out, &e);
	json_decref(body);
	if (r < 0) {
		r = report(&e);
		fm_error_clear(&e);
		return r;
	}
	return EXIT_OK;
}

static void print_json(json_t *o)
{
	char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	puts(s);
	free(s);
}

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "-";
}

static void fmt_time(json_t *ms, char *buf, size_t len)
{
	if (!json_is_integer(ms)) {
		snprintf(buf, len, "-");
		return;
	}
	time_t s = (time_t)(json_integer_value(ms) / 1000);
	struct tm tm;
	localtime_r(&s, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* ------------------------------------------------------------------ help */

static const char main_help[] =
"Usage: fleximigrate [--socket PATH] [--json] COMMAND [ARGS]\n"
"\n"
"Move running Linux containers between hosts with FlexiMigrate.\n"
"\n"
"Commands:\n"
"  host add NAME ADDR:PORT      tell this daemon about another host's daemon\n"
"  host list                    known hosts (this one first)\n"
"  host rm NAME                 forget a host\n"
"  host info                    this host: CRIU, kernel, resources, allocation\n"
"  host cordon | uncordon       refuse / accept incoming migrations on this host\n"
"  image import NAME PATH       import a rootfs directory or tarball into the store\n"
"  image list | image rm NAME\n"
"  container run NAME --image IMAGE [--cpus N] [--memory SIZE] [--env K=V] [--ip CIDR [--dns-name NAME]]\n"
"                [--volume SRC:DST[:ro]] [--label K=V] -- CMD [ARG...]\n"
"  container list | show NAME | stop NAME | rm NAME [--force]\n"
"  run ...                      same as `container run`\n"
"  migrate CONTAINER --to HOST [--strategy S] [-- HEALTH-CMD...]\n"
"                               move a running container to HOST\n"
"  migration list               migrations this host's controller ran\n"
"  migration show ID [--json]   one migration: states, timings, bytes, error, log\n"
"  migration cancel ID          stop a migration before its point of no return\n"
"  policy check FILE            validate a policy file, offline (no daemon needed)\n"
"  policy explain FILE [VAR=VALUE...] | policy explain MIGRATION-ID\n"
"                               which policy decides, and the values it saw\n"
"  policy vars                  the variables a policy's CONTEXT may name\n"
"  plan                         the Decision Engine's view: hosts, containers (class,\n"
"                               forecast), whether this host is overloaded, the move\n"
"\n"
"Global options:\n"
"  -s, --socket PATH   daemon socket (default $FM_SOCKET or " DEFAULT_SOCKET ")\n"
"  --json              machine-readable output\n"
"  -h, --help          help; `fleximigrate COMMAND --help` for a command\n"
"  -V, --version\n"
"\n"
"Example:\n"
"  fleximigrate image import busybox /srv/rootfs/busybox\n"
"  fleximigrate run counter --image busybox -- /bin/sh -c 'i=0; while :; do i=$((i+1)); echo $i >/tmp/n; sleep 1; done'\n"
"  fleximigrate host add edge1 10.0.0.2:7070\n"
"  fleximigrate migrate counter --to edge1\n";

static const char migrate_help[] =
"Usage: fleximigrate migrate CONTAINER --to HOST [OPTIONS] [-- HEALTH-CMD [ARG...]]\n"
"\n"
"Moves a running container to HOST through the migration FSM (PENDING, PLANNING,\n"
"PREPARATION, EXECUTION, VERIFICATION, COMPLETED; on any failure FAILED, ROLLBACK,\n"
"FAILED with the container running again on its source).\n"
"\n"
"Options:\n"
"  --to HOST            destination host (see `fleximigrate host list`)\n"
"  --from HOST          source host (default: found by asking every known host)\n"
"  --strategy S         COLD_MIGRATION (default: stop, copy, restore), POST_COPY\n"
"                       (resume on the destination at once, memory follows on\n"
"                       demand), LIVE_MIGRATION (the best live strategy the hosts\n"
"                       support), PRE_COPY or HYBRID (need dirty-memory tracking;\n"
"                       refused in PLANNING where the kernel lacks it)\n"
"  --priority P         high, normal (default) or low: the order in which\n"
"                       requests that wait in PENDING (a policy's\n"
"                       max_concurrent_migrations) are taken; a policy's\n"
"                       set_priority overrides it\n"
"  --health-timeout MS  limit for the health command (default 10000)\n"
"  --verify-port PORT   with the controller's --probe-netns: VERIFICATION makes\n"
"                       a TCP connection to the container's address and PORT\n"
"                       from that client namespace (default: an ICMP echo)\n"
"  --new-ip A.B.C.D/P   give the container this address on the destination\n"
"                       (another subnet, an edge site) instead of moving its\n"
"                       own: its TCP connections end (restored closed; clients\n"
"                       reconnect), and with the controller's --dns-* options\n"
"                       its DNS name follows (TTL lowered first, record switched\n"
"                       at the switchover, TTL restored after; put back on a\n"
"                       rollback), and the source forwards the old address to\n"
"                       the new one for a while (nftables), so that clients\n"
"                       still using it reach the container until they move\n"
"  --forward-for S      how long: S seconds, 0 for not at all (default: the\n"
"                       DNS name's TTL + 10 s, or 60 s without DNS)\n"
"  --bandwidth RATE     cap every transfer of this migration (state, pages) at\n"
"                       RATE bits per second: 200M, 1G, 50000k (default: none)\n"
"  --compress C         zstd on the memory and state streams: auto (default:\n"
"                       only on data that looks compressible and only while it\n"
"                       pays, level by the link speed), off, or a level 1..19\n"
"                       (tried on every block)\n"
"  --auto-converge      PRE_COPY/HYBRID: when a pre-copy round does not shrink,\n"
"                       limit the container's CPU (50%, 25%, 10% of a CPU) so\n"
"                       that the rounds converge; given back at the freeze\n"
"  --no-diskless        COLD_MIGRATION writes memory to disk and copies it after\n"
"                       the dump, instead of streaming it to the destination\n"
"                       (default: diskless)\n"
"  --no-overlap         diskless COLD_MIGRATION streams the memory to the\n"
"                       destination's CRIU page server while dumping and\n"
"                       restores after, instead of restoring at once and\n"
"                       holding the restored copy, stopped, while its memory\n"
"                       streams into it (default where both hosts restore\n"
"                       lazily: overlap; the copy runs once all memory is in)\n"
"  --no-presync         send the container's writable layer (its root filesystem\n"
"                       changes) only in the freeze, instead of once while it\n"
"                       runs and then, in the freeze, only the files changed\n"
"                       since (default: pre-sync)\n"
"  --no-prefetch        POST_COPY/HYBRID: let CRIU's lazy-pages daemon serve the\n"
"                       page faults and fetch the memory itself, one request\n"
"                       at a time, instead of our prefetcher, which serves the\n"
"                       faults in the destination daemon and streams every page\n"
"                       at line rate from the moment of the restore\n"
"                       (default: prefetch)\n"
"  --detach             print the migration id and return at once\n"
"  -v, --verbose        print the migration log even when not on a terminal\n"
"\n"
"After `--`, a command run inside the container on the destination before the\n"
"source copy is deleted; if it fails the migration rolls back.  No shell is\n"
"involved: give the program and its arguments.\n"
"\n"
"On a terminal the migration log and a progress line (phase, bytes, rate) are\n"
"shown; otherwise only the result.  Exit status 0 when the migration completed,\n"
"1 with the reason on stderr when it failed.\n";

static const char run_help[] =
"Usage: fleximigrate container run NAME --image IMAGE [OPTIONS] -- CMD [ARG...]\n"
"\n"
"Creates and starts a container on this host from an imported image.  Its stdio\n"
"is /dev/null (CRIU cannot checkpoint host files as stdio): log inside the rootfs.\n"
"\n"
"Options:\n"
"  --image IMAGE    image name or sha256 digest (see `fleximigrate image list`)\n"
"  --cpus N         CPU limit, e.g. 0.5 (default unlimited)\n"
"  --memory SIZE    memory limit, e.g. 256M (default unlimited)\n"
"  --env K=V        environment variable (repeatable)\n"
"  --ip A.B.C.D/P   its own network namespace with this address on the host's\n"
"                   bridge (fleximigrated --bridge); the address and the\n"
"                   container's TCP connections move with it on migration;\n"
"                   announced (gratuitous ARP) once it runs\n"
"  --mac MAC        its MAC address (default 02:fd: and the four bytes of --ip)\n"
"  --dns-name NAME  the DNS name of its address: a migration that changes the\n"
"                   address (migrate --new-ip) updates its A record on the\n"
"                   controller's DNS server (fleximigrated --dns-server)\n"
"  --label K=V      a label (repeatable, up to 32); it moves with the container.\n"
"                   Policies read service_type (CONTEXT service_type), e.g.\n"
"                   --label service_type=critical\n"
"  --volume SRC[:DST][:ro|:rw]\n"
"                   bind the host path SRC (absolute) at DST in the container\n"
"                   (default DST = SRC, read-write; repeatable).  Volumes are not\n"
"                   copied on migration: SRC must exist on the destination host\n"
"                   too (shared storage, or the same packages), or the migration\n"
"                   fails in PREPARATION.  e.g. --volume /usr:/usr:ro\n";

static bool want_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			return false;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return true;
	}
	return false;
}

/* ------------------------------------------------------------------ hosts */

static int cmd_host(int argc, char **argv)
{
	json_t *out = NULL;
	int r;

	if (argc < 2 || want_help(argc, argv)) {
		printf("Usage: fleximigrate host add NAME ADDR:PORT [--no-check] | list | rm NAME | info | cordon | uncordon\n"
		       "\n"
		       "add: this daemon's controller learns another host's daemon (the TCP address it\n"
		       "     was started with --listen); it must answer under that name unless --no-check.\n"
		       "info: what this host can do (CRIU version and features, kernel, resources).\n"
		       "cordon: refuse incoming migrations (maintenance); uncordon: accept them again.\n");
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (!strcmp(argv[1], "add")) {
		if (argc < 4)
			return die_usage("host add needs NAME and ADDR:PORT");
		bool check = !(argc > 4 && !strcmp(argv[4], "--no-check"));
		r = call("POST", "/v1/hosts", json_pack("{s:s, s:s, s:b}", "name", argv[2], "address", argv[3], "check", check), &out);
		if (r == EXIT_OK)
			printf("host %s added (%s)\n", argv[2], argv[3]);
	} else if (!strcmp(argv[1], "list") || !strcmp(argv[1], "ls")) {
		if ((r = call("GET", "/v1/hosts", NULL, &out)) == EXIT_OK) {
			if (opt_json) {
				print_json(out);
			} else {
				size_t i;
				json_t *h;
				printf("%-20s %-28s %s\n", "NAME", "ADDRESS", "");
				json_array_foreach(out, i, h)
					printf("%-20s %-28s %s\n", str(h, "name"), str(h, "address"),
					       json_is_true(json_object_get(h, "local")) ? "(this host)" : "");
			}
		}
	} else if (!strcmp(argv[1], "rm")) {
		if (argc < 3)
			return die_usage("host rm needs NAME");
		char path[256];
		snprintf(path, sizeof(path), "/v1/hosts/%s", argv[2]);
		r = call("DELETE", path, NULL, &out);
	} else if (!strcmp(argv[1], "info")) {
		if ((r = call("GET", "/v1/info", NULL, &out)) == EXIT_OK)
			print_json(out);
	} else if (!strcmp(argv[1], "cordon") || !strcmp(argv[1], "uncordon")) {
		r = call("POST", "/v1/cordon", json_pack("{s:b}", "cordoned", !strcmp(argv[1], "cordon")), &out);
		if (r == EXIT_OK)
			printf("%s\n", json_is_true(json_object_get(out, "cordoned")) ? "cordoned" : "uncordoned");
	} else {
		return die_usage("unknown host command %s", argv[1]);
	}
	json_decref(out);
	return r;
}

/* ------------------------------------------------------------------ images */

static int cmd_image(int argc, char **argv)
{
	json_t *out = NULL;
	int r;

	if (argc < 2 || want_help(argc, argv)) {
		printf("Usage: fleximigrate image import NAME PATH | list | rm NAME\n"
		       "\n"
		       "import: PATH is a root filesystem directory or a tar archive (gzip/xz/zstd\n"
		       "        allowed) on this host; it is stored by its SHA-256 digest.  Hosts that\n"
		       "        lack an image pull it from the source during a migration.\n");
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (!strcmp(argv[1], "import")) {
		if (argc < 4)
			return die_usage("image import needs NAME and PATH");
		char *abs = realpath(argv[3], NULL);
		if (!abs) {
			fprintf(stderr, "fleximigrate: %s: %m\n", argv[3]);
			return EXIT_FAIL;
		}
		r = call("POST", "/v1/images", json_pack("{s:s, s:s}", "name", argv[2], "path", abs), &out);
		free(abs);
		if (r == EXIT_OK)
			printf("%s %s\n", str(out, "name"), str(out, "digest"));
	} else if (!strcmp(argv[1], "list") || !strcmp(argv[1], "ls")) {
		if ((r = call("GET", "/v1/images", NULL, &out)) == EXIT_OK) {
			if (opt_json) {
				print_json(out);
			} else {
				size_t i;
				json_t *im;
				printf("%-24s %-20s %10s\n", "NAME", "DIGEST", "SIZE");
				json_array_foreach(out, i, im) {
					char sz[32];
					fm_format_bytes((uint64_t)json_integer_value(json_object_get(im, "size")), sz, sizeof(sz));
					printf("%-24s %-20.19s %10s\n", str(im, "name"), str(im, "digest"), sz);
				}
			}
		}
	} else if (!strcmp(argv[1], "rm")) {
		if (argc < 3)
			return die_usage("image rm needs NAME");
		char path[256];
		snprintf(path, sizeof(path), "/v1/images/%s", argv[2]);
		r = call("DELETE", path, NULL, &out);
	} else {
		return die_usage("unknown image command %s", argv[1]);
	}
	json_decref(out);
	return r;
}

/* ------------------------------------------------------------------ containers */

/* --volume SOURCE[:DESTINATION][:ro|:rw] as the API's volume object (the daemon
 * validates the paths); NULL when the shape is wrong. */
static json_t *volume_from_arg(const char *arg)
{
	_cleanup_free_ char *a = fm_xstrdup(arg);
	char *mode = strrchr(a, ':'), *dst;
	bool ro = false;

	if (mode && (!strcmp(mode, ":ro") || !strcmp(mode, ":rw"))) {
		ro = mode[2] == 'o';
		*mode = '\0';
	}
	dst = strchr(a, ':');
	if (dst)
		*dst++ = '\0';
	if (!*a || (dst && (!*dst || strchr(dst, ':'))))
		return NULL;
	return json_pack("{s:s, s:s, s:b}", "source", a, "destination", dst ?: a, "readonly", ro);
}

static int container_run(int argc, char **argv)
{
	const char *image = NULL, *ip = NULL, *mac = NULL, *dns_name = NULL;
	json_t *env = json_array(), *args = json_array(), *volumes = json_array(), *labels = json_object(), *out = NULL;
	int64_t cpu = 0;
	uint64_t mem = 0;
	int i, r;

	if (want_help(argc, argv)) {
		fputs(run_help, stdout);
		return EXIT_OK;
	}
	if (argc < 2 || argv[1][0] == '-')
		return die_usage("container run needs NAME");
	for (i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		}
		if (i + 1 >= argc)
			return die_usage("%s needs a value", argv[i]);
		if (!strcmp(argv[i], "--image"))
			image = argv[++i];
		else if (!strcmp(argv[i], "--cpus")) {
			char *end;
			double c = strtod(argv[++i], &end);
			if (*end || c <= 0 || c > 1024)
				return die_usage("--cpus must be a number like 0.5 or 2");
			cpu = (int64_t)(c * 1000 + 0.5);
		} else if (!strcmp(argv[i], "--memory")) {
			if (fm_parse_size(argv[++i], &mem) < 0)
				return die_usage("--memory must be a size like 64M or 1G");
		} else if (!strcmp(argv[i], "--ip")) {
			ip = argv[++i];
		} else if (!strcmp(argv[i], "--mac")) {
			mac = argv[++i];
		} else if (!strcmp(argv[i], "--dns-name")) {
			dns_name = argv[++i];
			if (!fm_net_dns_name_valid(dns_name))
				return die_usage("--dns-name %s: give a DNS name, e.g. web.example.org", dns_name);
		} else if (!strcmp(argv[i], "--env")) {
			if (!strchr(argv[++i], '='))
				return die_usage("--env must be NAME=VALUE");
			json_array_append_new(env, json_string(argv[i]));
		} else if (!strcmp(argv[i], "--label")) {
			char *eq = strchr(argv[++i], '=');
			if (!eq || eq == argv[i])
				return die_usage("--label must be NAME=VALUE, e.g. service_type=critical");
			char key[128];
			snprintf(key, sizeof(key), "%.*s", (int)(eq - argv[i]), argv[i]);
			json_object_set_new(labels, key, json_string(eq + 1));
		} else if (!strcmp(argv[i], "--volume")) {
			json_t *vol = volume_from_arg(argv[++i]);
			if (!vol)
				return die_usage("--volume must be SOURCE[:DESTINATION][:ro|:rw], e.g. /usr:/usr:ro");
			json_array_append_new(volumes, vol);
		} else
			return die_usage("unknown option %s", argv[i]);
	}
	if (!image)
		return die_usage("container run needs --image");
	for (; i < argc; i++)
		json_array_append_new(args, json_string(argv[i]));
	if (json_array_size(args) == 0)
		return die_usage("container run needs a command after --");
	if (mac && !ip)
		return die_usage("--mac needs --ip");
	if (dns_name && !ip)
		return die_usage("--dns-name needs --ip");
	json_t *spec = json_pack("{s:s, s:s, s:o, s:o, s:I, s:I}", "name", argv[1], "image", image, "args", args,
				 "env", env, "cpu_milli", (json_int_t)cpu, "memory_bytes", (json_int_t)mem);
	json_object_set_new(spec, "volumes", volumes);
	if (json_object_size(labels))
		json_object_set(spec, "labels", labels);
	json_decref(labels);
	if (ip) {
		json_t *net = json_pack("{s:s}", "ip", ip);
		if (mac)
			json_object_set_new(net, "mac", json_string(mac));
		if (dns_name)
			json_object_set_new(net, "dns_name", json_string(dns_name));
		json_object_set_new(spec, "network", net);
	}
	r = call("POST", "/v1/containers", spec, &out);
	if (r == EXIT_OK) {
		if (opt_json)
			print_json(out);
		else
			printf("%s running (pid %" JSON_INTEGER_FORMAT ")\n", str(out, "name"),
			       json_integer_value(json_object_get(out, "pid")));
	}
	json_decref(out);
	return r;
}

static int cmd_container(int argc, char **argv)
{
	json_t *out = NULL;
	char path[512];
	int r;

	if (argc < 2 || (want_help(argc, argv) && strcmp(argv[1], "run") != 0)) {
		printf("Usage: fleximigrate container run|list|show|stop|rm ...\n"
		       "  run NAME --image IMAGE [--cpus N] [--memory SIZE] [--env K=V] [--ip CIDR] -- CMD [ARG...]\n"
		       "  list                  containers on this host\n"
		       "  show NAME             one container (status, pid, rootfs, limits, usage)\n"
		       "  stop NAME [--timeout MS]  SIGTERM, SIGKILL after the timeout (default 10000)\n"
		       "  rm NAME [--force]     remove (--force: even if running)\n");
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (!strcmp(argv[1], "run"))
		return container_run(argc - 1, argv + 1);
	if (!strcmp(argv[1], "list") || !strcmp(argv[1], "ls")) {
		if ((r = call("GET", "/v1/containers", NULL, &out)) == EXIT_OK) {
			if (opt_json) {
				print_json(out);
			} else {
				size_t i;
				json_t *c;
				printf("%-20s %-10s %-8s %-16s %s\n", "NAME", "STATUS", "PID", "IMAGE", "CREATED");
				json_array_foreach(out, i, c) {
					char t[32];
					fmt_time(json_object_get(c, "created_ms"), t, sizeof(t));
					printf("%-20s %-10s %-8" JSON_INTEGER_FORMAT " %-16s %s\n", str(c, "name"), str(c, "status"),
					       json_integer_value(json_object_get(c, "pid")), str(c, "image"), t);
				}
			}
		}
	} else if (!strcmp(argv[1], "show") || !strcmp(argv[1], "inspect")) {
		if (argc < 3)
			return die_usage("container show needs NAME");
		snprintf(path, sizeof(path), "/v1/containers/%s", argv[2]);
		if ((r = call("GET", path, NULL, &out)) == EXIT_OK)
			print_json(out);
	} else if (!strcmp(argv[1], "stop")) {
		if (argc < 3)
			return die_usage("container stop needs NAME");
		int t = argc > 4 && !strcmp(argv[3], "--timeout") ? atoi(argv[4]) : 10000;
		snprintf(path, sizeof(path), "/v1/containers/%s/stop", argv[2]);
		if ((r = call("POST", path, json_pack("{s:i}", "timeout_ms", t), &out)) == EXIT_OK)
			printf("%s %s\n", argv[2], str(out, "status"));
	} else if (!strcmp(argv[1], "rm")) {
		if (argc < 3)
			return die_usage("container rm needs NAME");
		bool force = argc > 3 && !strcmp(argv[3], "--force");
		snprintf(path, sizeof(path), "/v1/containers/%s%s", argv[2], force ? "?force=1" : "");
		if ((r = call("DELETE", path, NULL, &out)) == EXIT_OK)
			printf("%s removed\n", argv[2]);
	} else {
		return die_usage("unknown container command %s", argv[1]);
	}
	json_decref(out);
	return r;
}

/* ------------------------------------------------------------------ migrations */

static void print_event(json_t *ev)
{
	char line[8192];
	fm_log_level lvl = FM_LOG_INFO;
	fm_log_level_parse(str(ev, "level"), &lvl);
	fm_log_format_human(line, sizeof(line), lvl, str(ev, "component"), str(ev, "message"));
	puts(line);
}

static void print_migration(json_t *m)
{
	char t[32], b[32];
	size_t i;
	json_t *tr;

	printf("id:                %s\n", str(m, "id"));
	printf("container:         %s\n", str(m, "container"));
	printf("source:            %s\n", str(m, "source"));
	printf("destination:       %s\n", str(m, "destination"));
	printf("strategy:          %s\n", str(m, "strategy"));
	printf("state:             %s%s\n", str(m, "state"),
	       json_is_true(json_object_get(m, "finished")) ? "" : " (in progress)");
	json_t *d = json_object_get(m, "downtime_ms"), *tt = json_object_get(m, "total_ms");
	if (json_is_integer(d))
		printf("downtime_ms:       %" JSON_INTEGER_FORMAT "\n", json_integer_value(d));
	else
		printf("downtime_ms:       -\n");
	if (json_is_integer(tt))
		printf("total_ms:          %" JSON_INTEGER_FORMAT "\n", json_integer_value(tt));
	else
		printf("total_ms:          -\n");
	fm_format_bytes((uint64_t)json_integer_value(json_object_get(m, "bytes_transferred")), b, sizeof(b));
	printf("bytes_transferred: %" JSON_INTEGER_FORMAT " (%s)\n",
	       json_integer_value(json_object_get(m, "bytes_transferred")), b);
	printf("error:             %s\n", json_is_string(json_object_get(m, "error")) ? str(m, "error") : "-");
	printf("transitions:\n");
	json_array_foreach(json_object_get(m, "transitions"), i, tr) {
		int64_t ms = json_integer_value(json_object_get(tr, "at_ms"));
		fmt_time(json_object_get(tr, "at_ms"), t, sizeof(t));
		printf("  %s.%03d  %-12s -> %-12s %s\n", t, (int)(ms % 1000),
		       json_is_string(json_object_get(tr, "from")) ? str(tr, "from") : "",
		       str(tr, "to"), str(tr, "reason"));
	}
	json_t *ev = json_object_get(m, "events");
	if (json_array_size(ev)) {
		printf("log:\n");
		json_array_foreach(ev, i, tr) {
			fputs("  ", stdout);
			print_event(tr);
		}
	}
}

static int follow(const char *id, bool verbose)
{
	bool tty = isatty(STDOUT_FILENO);
	bool show_log = tty || verbose;
	int since = 0, progress_len = 0;
	json_t *m = NULL;
	char path[256];

	for (;;) {
		snprintf(path, sizeof(path), "/v1/migrations/%s?events_since=%d", id, since);
		json_decref(m);
		m = NULL;
		if (call("GET", path, NULL, &m) != EXIT_OK)
			return EXIT_FAIL;
		size_t i;
		json_t *ev;
		json_array_foreach(json_object_get(m, "events"), i, ev) {
			since = (int)json_integer_value(json_object_get(ev, "seq"));
			if (!show_log)
				continue;
			if (progress_len) {
				printf("\r%*s\r", progress_len, "");
				progress_len = 0;
			}
			print_event(ev);
		}
		if (json_is_true(json_object_get(m, "finished")))
			break;
		json_t *p = json_object_get(m, "progress");
		if (tty && p) {
			char b[32];
			fm_format_bytes((uint64_t)json_integer_value(json_object_get(p, "bytes")), b, sizeof(b));
			progress_len = printf("\r[%s] %s: %s at %.1f Mbit/s", str(m, "state"), str(p, "phase"), b,
					      json_real_value(json_object_get(p, "rate_bps")) / 1e6) - 1;
		}
		fflush(stdout);
		struct timespec ts = { 0, POLL_MS * 1000000L }; /* the poll interval of the progress display */
		nanosleep(&ts, NULL);
	}
	if (progress_len)
		printf("\r%*s\r", progress_len, "");
	bool ok = !strcmp(str(m, "state"), "COMPLETED");
	if (opt_json) {
		print_json(m);
	} else if (ok) {
		char b[32];
		fm_format_bytes((uint64_t)json_integer_value(json_object_get(m, "bytes_transferred")), b, sizeof(b));
		printf("migration %s completed: %s now on %s (downtime %" JSON_INTEGER_FORMAT " ms, total %" JSON_INTEGER_FORMAT
		       " ms, %s transferred)\n", id, str(m, "container"), str(m, "destination"),
		       json_integer_value(json_object_get(m, "downtime_ms")), json_integer_value(json_object_get(m, "total_ms")), b);
	}
	if (!ok)
		fprintf(stderr, "fleximigrate: migration %s failed: %s\n", id, str(m, "error"));
	json_decref(m);
	return ok ? EXIT_OK : EXIT_FAIL;
}

static int cmd_migrate(int argc, char **argv)
{
	const char *to = NULL, *from = NULL, *strategy = NULL, *priority = NULL, *new_ip = NULL;
	bool detach = false, verbose = false, no_diskless = false, no_overlap = false, no_prefetch = false,
	     auto_converge = false;
	bool no_presync = false;
	int health_timeout = 0, i, compress = -1;
	long forward_s = -1, verify_port = 0;
	uint64_t bandwidth = 0;
	json_t *health = NULL, *req, *out = NULL;

	if (want_help(argc, argv)) {
		fputs(migrate_help, stdout);
		return EXIT_OK;
	}
	const char *container = NULL;
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			health = json_array();
			for (i++; i < argc; i++)
				json_array_append_new(health, json_string(argv[i]));
			break;
		}
		if (!strcmp(argv[i], "--detach")) {
			detach = true;
			continue;
		}
		if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
			verbose = true;
			continue;
		}
		if (!strcmp(argv[i], "--no-diskless")) {
			no_diskless = true;
			continue;
		}
		if (!strcmp(argv[i], "--no-overlap")) {
			no_overlap = true;
			continue;
		}
		if (!strcmp(argv[i], "--no-prefetch")) {
			no_prefetch = true;
			continue;
		}
		if (!strcmp(argv[i], "--no-presync")) {
			no_presync = true;
			continue;
		}
		if (!strcmp(argv[i], "--auto-converge")) {
			auto_converge = true;
			continue;
		}
		if (argv[i][0] != '-') {
			if (container)
				return die_usage("unexpected argument %s (a health command goes after --)", argv[i]);
			container = argv[i];
			continue;
		}
		if (i + 1 >= argc)
			return die_usage("%s needs a value", argv[i]);
		if (!strcmp(argv[i], "--to"))
			to = argv[++i];
		else if (!strcmp(argv[i], "--from"))
			from = argv[++i];
		else if (!strcmp(argv[i], "--strategy"))
			strategy = argv[++i];
		else if (!strcmp(argv[i], "--priority")) {
			priority = argv[++i];
			if (strcmp(priority, "high") && strcmp(priority, "normal") && strcmp(priority, "low"))
				return die_usage("--priority %s: use high, normal or low", priority);
		} else if (!strcmp(argv[i], "--health-timeout"))
			health_timeout = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--verify-port")) {
			char *end;
			verify_port = strtol(argv[++i], &end, 10);
			if (*end || verify_port < 1 || verify_port > 65535)
				return die_usage("--verify-port %s: give a TCP port, 1..65535", argv[i]);
		} else if (!strcmp(argv[i], "--forward-for")) {
			char *end;
			forward_s = strtol(argv[++i], &end, 10);
			if (*end || forward_s < 0 || forward_s > 86400)
				return die_usage("--forward-for %s: give seconds, 0..86400", argv[i]);
		} else if (!strcmp(argv[i], "--new-ip")) {
			new_ip = argv[++i];
			if (!fm_net_cidr_valid(new_ip))
				return die_usage("--new-ip %s: give the address with its prefix, e.g. 10.0.2.20/24", new_ip);
		}
		else if (!strcmp(argv[i], "--bandwidth")) {
			if (fm_parse_rate(argv[++i], &bandwidth) < 0 || bandwidth < 1000000)
				return die_usage("--bandwidth %s: give bits per second of at least 1M, e.g. 200M or 1G", argv[i]);
		} else if (!strcmp(argv[i], "--compress")) {
			char *end;
			i++;
			if (!strcmp(argv[i], "auto"))
				compress = -1;
			else if (!strcmp(argv[i], "off"))
				compress = 0;
			else if ((compress = (int)strtol(argv[i], &end, 10)) < 1 || compress > 19 || *end)
				return die_usage("--compress %s: use auto, off or a zstd level 1..19", argv[i]);
		} else
			return die_usage("unknown option %s", argv[i]);
	}
	if (!container)
		return die_usage("migrate needs a CONTAINER");
	if (!to)
		return die_usage("migrate needs --to HOST");
	if (health && json_array_size(health) == 0)
		return die_usage("nothing after -- : give a health command or drop the --");
	req = json_pack("{s:s, s:s}", "container", container, "to", to);
	if (from)
		json_object_set_new(req, "from", json_string(from));
	if (strategy)
		json_object_set_new(req, "strategy", json_string(strategy));
	if (priority)
		json_object_set_new(req, "priority", json_string(priority));
	if (new_ip)
		json_object_set_new(req, "new_ip", json_string(new_ip));
	if (verify_port > 0)
		json_object_set_new(req, "verify_port", json_integer(verify_port));
	if (forward_s >= 0) {
		if (!new_ip)
			return die_usage("--forward-for goes with --new-ip");
		json_object_set_new(req, "forward_s", json_integer(forward_s));
	}
	if (health)
		json_object_set_new(req, "health_cmd", health);
	if (health_timeout > 0)
		json_object_set_new(req, "health_timeout_ms", json_integer(health_timeout));
	if (bandwidth)
		json_object_set_new(req, "bandwidth_bps", json_integer((json_int_t)bandwidth));
	json_object_set_new(req, "compress", json_integer(compress));
	if (no_diskless)
		json_object_set_new(req, "diskless", json_false());
	if (no_overlap)
		json_object_set_new(req, "overlap", json_false());
	if (no_presync)
		json_object_set_new(req, "presync", json_false());
	if (no_prefetch)
		json_object_set_new(req, "prefetch", json_false());
	if (auto_converge)
		json_object_set_new(req, "auto_converge", json_true());
	if (call("POST", "/v1/migrations", req, &out) != EXIT_OK)
		return EXIT_FAIL;
	char id[64];
	snprintf(id, sizeof(id), "%s", str(out, "id"));
	json_decref(out);
	if (detach) {
		puts(id);
		return EXIT_OK;
	}
	if (isatty(STDOUT_FILENO) || verbose)
		printf("migration %s started\n", id);
	return follow(id, verbose);
}

static int cmd_migration(int argc, char **argv)
{
	json_t *out = NULL;
	char path[256];
	int r;

	if (argc < 2 || want_help(argc, argv)) {
		printf("Usage: fleximigrate migration list | show ID [--json] | cancel ID\n"
		       "\n"
		       "show prints id, container, source, destination, strategy, state, downtime_ms\n"
		       "(container frozen on the source until running on the destination), total_ms,\n"
		       "bytes_transferred, error, the transitions with timestamps and the log.\n"
		       "cancel stops a migration before its point of no return (the destination copy\n"
		       "is verified and the source is about to be deleted); it then rolls back.\n");
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (!strcmp(argv[1], "list") || !strcmp(argv[1], "ls")) {
		if ((r = call("GET", "/v1/migrations", NULL, &out)) == EXIT_OK) {
			if (opt_json) {
				print_json(out);
			} else {
				size_t i;
				json_t *m;
				printf("%-16s %-16s %-10s %-10s %-15s %-12s %9s\n", "ID", "CONTAINER", "SOURCE", "DEST",
				       "STRATEGY", "STATE", "DOWNTIME");
				json_array_foreach(out, i, m) {
					char dt[32] = "-";
					if (json_is_integer(json_object_get(m, "downtime_ms")))
						snprintf(dt, sizeof(dt), "%" JSON_INTEGER_FORMAT " ms",
							 json_integer_value(json_object_get(m, "downtime_ms")));
					printf("%-16s %-16s %-10s %-10s %-15s %-12s %9s\n", str(m, "id"), str(m, "container"),
					       str(m, "source"), str(m, "destination"), str(m, "strategy"), str(m, "state"), dt);
				}
			}
		}
	} else if (!strcmp(argv[1], "cancel")) {
		if (argc < 3)
			return die_usage("migration cancel needs ID");
		snprintf(path, sizeof(path), "/v1/migrations/%s/cancel", argv[2]);
		if ((r = call("POST", path, json_object(), &out)) == EXIT_OK)
			printf("migration %s is being cancelled: it rolls back (see `fleximigrate migration show %s`)\n",
			       argv[2], argv[2]);
	} else if (!strcmp(argv[1], "show")) {
		if (argc < 3)
			return die_usage("migration show needs ID");
		for (int i = 3; i < argc; i++)
			if (!strcmp(argv[i], "--json"))
				opt_json = true;
		snprintf(path, sizeof(path), "/v1/migrations/%s?events_since=0", argv[2]);
		if ((r = call("GET", path, NULL, &out)) == EXIT_OK) {
			if (opt_json)
				print_json(out);
			else
				print_migration(out);
		}
	} else {
		return die_usage("unknown migration command %s", argv[1]);
	}
	json_decref(out);
	return r;
}

static const char policy_help[] =
"Usage: fleximigrate policy check FILE\n"
"       fleximigrate policy explain FILE [VAR=VALUE...]\n"
"       fleximigrate policy explain MIGRATION-ID\n"
"       fleximigrate policy vars\n"
"\n"
"check: reads a policy file (JSON, the seed's format: a list of policies with\n"
"policy_name, CONTEXT, CONDITIONS, ACTIONS, CONSTRAINTS, PRIORITY) and says\n"
"whether the daemon would accept it, or what is wrong and where (for a\n"
"condition, its line and column).  Exit status 0 when valid.\n"
"explain FILE: which of FILE's policies would decide a migration with these\n"
"values (offline; variables not given have no value, and a condition reading\n"
"one denies), and the values it saw; exit status 0 allowed, 1 denied.\n"
"explain MIGRATION-ID: what the daemon's policies decided for that migration.\n"
"vars: the variables CONTEXT may name, their types and meaning.\n"
"\n"
"Examples:\n"
"  fleximigrate policy check /etc/fleximigrate/policies.json\n"
"  fleximigrate policy explain policies.json source_cpu_utilization=91 \\\n"
"      destination_cpu_utilization=30 time_of_day=14 network_congestion_prob=0.4 \\\n"
"      service_type=batch\n";

/* explain FILE VAR=VALUE...: the values given, typed by the registry */
typedef struct given_var {
	const char *name;      /* in argv: up to its '=' */
	size_t len;
	fm_cond_value v;
} given_var;

typedef struct given {
	int n;
	given_var *vars;
} given;

/* Reads VAR=VALUE arguments, each VAR one of the registry's, its VALUE of
 * the VAR's type; EXIT_OK or a usage error. */
static int given_parse(int argc, char **argv, given *g)
{
	size_t n;
	const fm_policy_var_info *info = fm_policy_vars(&n);
	g->n = 0;
	g->vars = fm_xcalloc((size_t)argc + 1, sizeof(*g->vars));
	for (int i = 0; i < argc; i++) {
		size_t k, len = strcspn(argv[i], "=");
		for (k = 0; k < n; k++)
			if (strlen(info[k].name) == len && !strncmp(info[k].name, argv[i], len))
				break;
		if (!argv[i][len] || k == n)
			return die_usage("policy explain: %s is not VAR=VALUE with a VAR of `fleximigrate policy vars`",
					 argv[i]);
		const char *val = argv[i] + len + 1;
		char *end = NULL;
		fm_cond_value v = { .known = true, .str = val, .b = !strcmp(val, "true") };
		if (info[k].type == FM_COND_NUMBER)
			v.num = strtod(val, &end);
		if ((info[k].type == FM_COND_BOOL && !v.b && strcmp(val, "false")) ||
		    (info[k].type == FM_COND_NUMBER && (!*val || *end)))
			return die_usage("policy explain: %s: %s takes %s", argv[i], info[k].name,
					 info[k].type == FM_COND_NUMBER ? "a number" : "true or false");
		g->vars[g->n++] = (given_var){ argv[i], len, v };
	}
	return EXIT_OK;
}

static bool given_lookup(void *opaque, const char *var, fm_cond_value *v)
{
	const given *g = opaque;
	*v = (fm_cond_value){ .known = false };
	for (int i = 0; i < g->n; i++)
		if (strlen(var) == g->vars[i].len && !strncmp(g->vars[i].name, var, g->vars[i].len))
			*v = g->vars[i].v;   /* the last one given wins */
	return v->known;
}

/* Loads a policy file for check and explain; EXIT_OK or the error reported. */
static int policies_load(const char *path, fm_policy_set **set)
{
	fm_error err = FM_ERROR_INIT;
	if (fm_policy_set_load_file(path, set, &err) == 0)
		return EXIT_OK;
	int r = report(&err);
	fm_error_clear(&err);
	return r;
}

static int policy_explain_migration(const char *id)
{
	json_t *m = NULL;
	char path[128];
	snprintf(path, sizeof(path), "/v1/migrations/%s", id);
	int r = call("GET", path, NULL, &m);
	if (r != EXIT_OK)
		return r;
	size_t i;
	json_t *e;
	bool any = false;
	json_array_foreach(json_object_get(m, "events"), i, e)
		if (!strcmp(json_string_value(json_object_get(e, "component")) ?: "", "PolicyEnforcer")) {
			printf("%s\n", json_string_value(json_object_get(e, "message")) ?: "");
			any = true;
		}
	const char *err = json_string_value(json_object_get(m, "error"));
	if (err && strstr(err, "migration policy: ")) {
		printf("Denied: %s\n", strstr(err, "migration policy: ") + strlen("migration policy: "));
		any = true;
	}
	if (!any)
		printf("migration %s: no policy decision recorded (it ended before PLANNING)\n", id);
	json_decref(m);
	return EXIT_OK;
}

/* ------------------------------------------------------------------ plan */

static double num(json_t *o, const char *k)
{
	return json_number_value(json_object_get(o, k));
}

static int cmd_plan(int argc, char **argv)
{
	json_t *out = NULL, *x;
	size_t i;
	int r;

	if (want_help(argc, argv)) {
		printf("Usage: fleximigrate plan [--json]\n"
		       "\n"
		       "What this host's Decision Engine sees and would do now: every known host's\n"
		       "cores, memory and what its containers use; this host's containers with their\n"
		       "class (CPU-, memory-, I/O-bound or idle) and their CPU and memory now and\n"
		       "forecast; whether this host is overloaded (its containers above the\n"
		       "threshold, sustained and forecast) and the move that would help most.\n"
		       "fleximigrated --auto-migrate makes such moves itself; without it, make one\n"
		       "with `fleximigrate migrate`.\n");
		return EXIT_OK;
	}
	if ((r = call("GET", "/v1/plan", NULL, &out)) != EXIT_OK)
		return r;
	if (opt_json) {
		print_json(out);
		json_decref(out);
		return EXIT_OK;
	}
	json_t *th = json_object_get(out, "thresholds");
	printf("Host %s: %s: %s\n", str(out, "host"),
	       json_is_true(json_object_get(out, "overloaded")) ? "OVERLOADED" : "not overloaded", str(out, "why"));
	printf("Thresholds: CPU %.0f %%, memory %.0f %%, sustained %d s and forecast %d s ahead (CPU %s, memory %s); "
	       "automatic mode %s\n", num(th, "cpu_percent"), num(th, "memory_percent"), (int)num(th, "sustain_s"),
	       (int)num(th, "horizon_s"), str(th, "cpu_model"), str(th, "memory_model"),
	       json_is_true(json_object_get(out, "automatic")) ? "on" : "off");
	printf("\n%-16s %5s %10s %10s %10s %6s  %s\n", "HOST", "CORES", "CPU-LOAD", "MEMORY", "MEM-LOAD", "UTIL", "ARCH");
	json_array_foreach(json_object_get(out, "hosts"), i, x) {
		if (json_object_get(x, "unreachable")) {
			printf("%-16s unreachable: %s\n", str(x, "name"), str(x, "unreachable"));
			continue;
		}
		char mem[32], load[32];
		fm_format_bytes((uint64_t)num(x, "memory_bytes"), mem, sizeof(mem));
		fm_format_bytes((uint64_t)num(x, "memory_load_bytes"), load, sizeof(load));
		printf("%-16s %5.0f %10.2f %10s %10s %5.0f%%  %s%s\n", str(x, "name"), num(x, "cpus"), num(x, "cpu_load_cores"),
		       mem, load, 100 * num(x, "utilization"), str(x, "arch"),
		       json_is_true(json_object_get(x, "cordoned")) ? " (cordoned)" : "");
	}
	printf("\n%-20s %-13s %16s %22s  %s\n", "CONTAINER", "CLASS", "CPU now->fcst", "MEMORY now->fcst", "MOVABLE");
	json_array_foreach(json_object_get(out, "containers"), i, x) {
		char m0[32], m1[32], cpu[32], mem[72];
		fm_format_bytes((uint64_t)num(x, "memory_bytes"), m0, sizeof(m0));
		fm_format_bytes((uint64_t)num(x, "memory_bytes_forecast"), m1, sizeof(m1));
		snprintf(cpu, sizeof(cpu), "%.2f->%.2f", num(x, "cpu_cores"), num(x, "cpu_cores_forecast"));
		snprintf(mem, sizeof(mem), "%s->%s", m0, m1);
		printf("%-20s %-13s %16s %22s  %s\n", str(x, "name"), str(x, "class"), cpu, mem,
		       json_is_true(json_object_get(x, "movable")) ? "yes" : "no (moving or resting)");
	}
	json_t *mv = json_object_get(out, "move");
	if (mv)
		printf("\nProposed move: %s (%s) to %s, %s: utilisation %.0f %% -> %.0f %% here, %.0f %% -> %.0f %% there\n",
		       str(mv, "container"), str(mv, "class"), str(mv, "to"), str(mv, "strategy"),
		       100 * num(mv, "utilization_before"), 100 * num(mv, "source_utilization_after"),
		       100 * num(mv, "destination_utilization_before"), 100 * num(mv, "destination_utilization_after"));
	else if (json_object_get(out, "no_move"))
		printf("\nNo move: %s\n", str(out, "no_move"));
	json_decref(out);
	return EXIT_OK;
}

static int cmd_policy(int argc, char **argv)
{
	if (argc < 2 || want_help(argc, argv)) {
		fputs(policy_help, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (!strcmp(argv[1], "vars")) {
		size_t n;
		const fm_policy_var_info *v = fm_policy_vars(&n);
		for (size_t i = 0; i < n; i++)
			printf("%-32s %-7s %s\n", v[i].name,
			       v[i].type == FM_COND_NUMBER ? "number" : v[i].type == FM_COND_STRING ? "string" : "boolean",
			       v[i].meaning);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "explain") && argc >= 3) {
		if (access(argv[2], F_OK) != 0 && argc == 3 && fm_name_valid(argv[2]))
			return policy_explain_migration(argv[2]);
		given g;
		fm_policy_set *set = NULL;
		int r = given_parse(argc - 3, argv + 3, &g);
		if (r == EXIT_OK)
			r = policies_load(argv[2], &set);
		if (r != EXIT_OK) {
			free(g.vars);
			return r;
		}
		fm_policy_decision d;
		fm_policy_decide(set, given_lookup, &g, &d);
		printf("%s: %s\n", d.allowed ? "Allowed" : "Denied", d.why);
		fm_policy_set_free(set);
		free(g.vars);
		return d.allowed ? EXIT_OK : EXIT_FAIL;
	}
	if (strcmp(argv[1], "check") != 0 || argc != 3)
		return die_usage("policy: check FILE, explain FILE [VAR=VALUE...], explain MIGRATION-ID or vars");
	fm_policy_set *set = NULL;
	int r = policies_load(argv[2], &set);
	if (r != EXIT_OK)
		return r;
	printf("%s: %zu polic%s, valid\n", argv[2], set->n, set->n == 1 ? "y" : "ies");
	for (size_t i = 0; i < set->n; i++) {
		const fm_policy *p = &set->v[i];
		printf("  %s: priority %d, reads", p->name, p->priority);
		for (size_t k = 0, any = 0; k < p->ncontext; k++)
			if (fm_cond_reads(p->cond, k))
				printf("%s %s", any++ ? "," : "", p->context[k]);
		printf("; actions");
		for (size_t k = 0; k < p->nactions; k++) {
			char a[96];
			fm_policy_action_format(&p->actions[k], a, sizeof(a));
			printf("%s %s", k ? "," : "", a);
		}
		if (p->max_concurrent)
			printf("; at most %d migrations at once", p->max_concurrent);
		if (p->duration_s)
			printf("; a migration may take %d s", p->duration_s);
		printf("\n");
	}
	fm_policy_set_free(set);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	const char *sock = getenv("FM_SOCKET");
	int i;

	/* global options before the command */
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if ((!strcmp(argv[i], "-s") || !strcmp(argv[i], "--socket")) && i + 1 < argc)
			sock = argv[++i];
		else if (!strncmp(argv[i], "--socket=", 9))
			sock = argv[i] + 9;
		else if (!strcmp(argv[i], "--json"))
			opt_json = true;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(main_help, stdout);
			return EXIT_OK;
		} else if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
			printf("fleximigrate %s\n", FM_VERSION);
			return EXIT_OK;
		} else
			return die_usage("unknown option %s", argv[i]);
	}
	if (i >= argc) {
		fputs(main_help, stderr);
		return EXIT_USAGE;
	}
	snprintf(endpoint, sizeof(endpoint), "unix:%s", sock && *sock ? sock : DEFAULT_SOCKET);
	/* --json may also follow the command */
	for (int k = i; k < argc && strcmp(argv[k], "--") != 0; k++)
		if (!strcmp(argv[k], "--json"))
			opt_json = true;
	const char *cmd = argv[i];
	int sub_argc = argc - i;
	char **sub_argv = argv + i;
	/* drop a trailing --json from the subcommand's view */
	for (int k = 1; k < sub_argc; k++)
		if (!strcmp(sub_argv[k], "--"))
			break;
		else if (!strcmp(sub_argv[k], "--json")) {
			memmove(sub_argv + k, sub_argv + k + 1, (size_t)(sub_argc - k - 1) * sizeof(char *));
			sub_argc--;
			k--;
		}
	if (!strcmp(cmd, "host"))
		return cmd_host(sub_argc, sub_argv);
	if (!strcmp(cmd, "image"))
		return cmd_image(sub_argc, sub_argv);
	if (!strcmp(cmd, "container"))
		return cmd_container(sub_argc, sub_argv);
	if (!strcmp(cmd, "run"))
		return container_run(sub_argc, sub_argv);
	if (!strcmp(cmd, "ps"))
		return cmd_container(2, (char *[]){ "container", "list", NULL });
	if (!strcmp(cmd, "migrate"))
		return cmd_migrate(sub_argc, sub_argv);
	if (!strcmp(cmd, "migration") || !strcmp(cmd, "migrations"))
		return cmd_migration(sub_argc, sub_argv);
	if (!strcmp(cmd, "policy") || !strcmp(cmd, "policies"))
		return cmd_policy(sub_argc, sub_argv);
	if (!strcmp(cmd, "plan"))
		return cmd_plan(sub_argc, sub_argv);
	if (!strcmp(cmd, "help")) {
		fputs(main_help, stdout);
		return EXIT_OK;
	}
	return die_usage("unknown command %s", cmd);
}
