/* fleximigrated: the FlexiMigrate daemon.  One per host; it plays the agent role
 * (this host's containers and its side of every migration) and the controller role
 * (drives migrations through the FSM).  See fleximigrated(8). */
#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "basic/log.h"
#include "basic/util.h"
#include "fm-config.h"
#include "manager/lb_hook.h"
#include "manager/planner.h"
#include "network/dns.h"
#include "network/redirect.h"
#include "manager/policy.h"
#include "runtime/image.h"
#include "sync/checkpoint.h"

/* above this, the daemon says what the conntrack hash costs each dump */
#define FM_CT_BUCKETS_HINT 65536
#define DEFAULT_CRIU "/opt/fleximigrate/criu/bin/criu"

static void usage(FILE *f)
{
	fprintf(f,
"Usage: fleximigrated --name HOST --listen ADDR:PORT [OPTIONS]\n"
"\n"
"The FlexiMigrate daemon: runs this host's containers (runc + CRIU) and coordinates\n"
"migrations between hosts.  Run one on every host.\n"
"\n"
"Required:\n"
"  --name HOST            this host's name, as other hosts and the CLI call it\n"
"  --listen ADDR:PORT     TCP address for peer daemons (the API and the data channel\n"
"                         bind to ADDR; the data channel uses ephemeral ports)\n"
"\n"
"Options:\n"
"  --socket PATH          local API socket for the CLI (default /run/fleximigrate/fleximigrated.sock)\n"
"  --state-dir DIR        journal, images, containers (default /var/lib/fleximigrate/HOST)\n"
"  --criu PATH            CRIU >= 4.2 (default " DEFAULT_CRIU " if present, else criu)\n"
"  --runc PATH            runc binary (default runc)\n"
"  --log-level LEVEL      DEBUG, INFO, WARN or ERROR (default INFO)\n"
"  --log-json FILE        also write the log as JSON lines to FILE\n"
"  --data-timeout MS      data channel inactivity limit (default 10000)\n"
"  --cordoned             start refusing incoming migrations (maintenance)\n"
"  --policies FILE        migration policies (JSON, the seed's format; check one with\n"
"                         `fleximigrate policy check FILE`): PLANNING denies what they\n"
"                         do not allow.  Without it every migration is allowed\n"
"  --lb-hook PROGRAM|URL  what policies' trigger_load_balancer_reconfiguration runs\n"
"                         when a migration switches over and when one that did is\n"
"                         rolled back: an absolute path, run (no shell) as `PROGRAM\n"
"                         switchover|rollback MIGRATION-ID` with the migration as\n"
"                         JSON on stdin, or http://HOST:PORT/PATH, POSTed that JSON.\n"
"                         Its outcome is logged; it never fails a migration\n"
"  --lb-hook-timeout S    kill or give up on the hook after S seconds (default 10)\n"
"  --bridge BRIDGE        attach containers started with an address (container run\n"
"                         --ip) to this bridge; the hosts' bridges must share one\n"
"                         layer-2 segment so that addresses and TCP connections\n"
"                         can move with their containers\n"
"  --auto-migrate         Decision Engine in automatic mode: when this host stays\n"
"                         overloaded (and its forecast says it will stay so), move\n"
"                         the container whose move helps most to the host that\n"
"                         fits it best (`fleximigrate plan` shows what it would do;\n"
"                         policies still decide each move).  Off by default\n"
"  --overload-cpu PCT     CPU share of this host's cores its containers may use\n"
"                         before it counts as overloaded (default 85)\n"
"  --overload-memory PCT  the same for memory (default 90)\n"
"  --overload-sustain S   ... for this long, on average (default 30)\n"
"  --plan-interval S      how often automatic mode plans (default 30)\n"
"  --sdn TARGET           the switch between the hosts (OpenFlow 1.3: unix:PATH of the\n"
"                         bridge's .mgmt socket, or tcp:HOST:PORT of a passive\n"
"                         listener); with --ovsdb, this controller's migrations move\n"
"                         their container's address through it (Traffic Redirector)\n"
"  --ovsdb DB             that switch's database (unix:PATH or HOST:PORT)\n"
"  --switch-port IFACE    this host's interface on that switch, as OVSDB names it\n"
"  --probe-netns PATH     a client's network namespace (e.g. /run/netns/client): in\n"
"                         VERIFICATION the container must answer there at its\n"
"                         address (ICMP echo, or TCP to migrate --verify-port), and\n"
"                         its DNS name, when the migration moved it, must answer\n"
"                         the new address; else the migration rolls back\n"
"  --dns-server ADDR[:PORT], --dns-key FILE, --dns-zone ZONE\n"
"                         the authoritative DNS server of ZONE, updated by RFC 2136\n"
"                         messages signed with the TSIG key in FILE (one line\n"
"                         ALGORITHM:NAME:SECRET, owned by root, mode 0600): a\n"
"                         migration that changes a container's address (migrate\n"
"                         --new-ip) moves its DNS name (run --dns-name) with it\n"
"  --uplink-rate RATE     capacity of this host's link to the other hosts, in bits\n"
"                         per second (200M, 1G): the Resource Monitor's link\n"
"                         utilisation and congestion estimate use it (default: the\n"
"                         fastest rate a migration from here measured, else the\n"
"                         interface's speed)\n"
"  --secret-file FILE     cluster secret shared by all daemons (mode 0600): peers must\n"
"                         present it; without it the peer API is open to the network\n"
"  --fault NAME           inject a fault, for tests only: corrupt-transfer\n"
"  -h, --help             this text\n"
"  -V, --version          print the version\n"
"\n"
"Logs go to stderr in the seed's format: LEVEL [Component]: Message.\n"
"Example (two hosts in network namespaces):\n"
"  nsenter --net=/run/netns/hostA fleximigrated --name hostA --listen 10.77.0.1:7070\n");
}

/* --policies FILE: loaded now (an invalid file stops the daemon) and again
 * whenever it is replaced or rewritten (inotify on its directory: editors
 * write a new file and rename it over the old).  A reload that fails keeps
 * the policies in force and says why. */
typedef struct policies_watcher {
	fm_controller *ctl;
	char *path, *dir, *base;
	int fd;
} policies_watcher;

static int policies_load(policies_watcher *w, bool first)
{
	fm_policy_set *set = NULL;
	fm_error err = FM_ERROR_INIT;
	if (fm_policy_set_load_file(w->path, &set, &err) < 0) {
		if (first)
			fm_err(FM_C_POLICY_ENFORCER, "%s", err.msg);
		else
			fm_err(FM_C_POLICY_ENFORCER, "Policies not reloaded, the ones in force stay: %s", err.msg);
		fm_error_clear(&err);
		return -EINVAL;
	}
	size_t n = set->n;
	fm_ctl_set_policies(w->ctl, set);
	fm_info(FM_C_POLICY_ENFORCER, "%zu migration polic%s %s from %s", n, n == 1 ? "y" : "ies",
		first ? "loaded" : "reloaded", w->path);
	return 0;
}

static void *policies_thread(void *opaque)
{
	policies_watcher *w = opaque;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(w->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return NULL;
		bool ours = false;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *e = (struct inotify_event *)p;
			if (e->len && !strcmp(e->name, w->base))
				ours = true;
			p += sizeof(*e) + e->len;
		}
		if (ours)
			(void)policies_load(w, false);
	}
}

static int policies_watch(fm_controller *ctl, const char *path)
{
	static policies_watcher w;   /* for the daemon's lifetime */
	w.ctl = ctl;
	w.path = realpath(path, NULL);
	if (!w.path) {
		fm_err(FM_C_POLICY_ENFORCER, "--policies %s: %m", path);
		return -errno;
	}
	if (policies_load(&w, true) < 0)
		return -EINVAL;
	w.dir = fm_xstrdup(w.path);
	char *slash = strrchr(w.dir, '/');
	w.base = fm_xstrdup(slash + 1);
	slash[slash == w.dir ? 1 : 0] = 0;
	pthread_t t;
	if ((w.fd = inotify_init1(IN_CLOEXEC)) < 0 ||
	    inotify_add_watch(w.fd, w.dir, IN_CLOSE_WRITE | IN_MOVED_TO) < 0 ||
	    pthread_create(&t, NULL, policies_thread, &w) != 0) {
		fm_warn(FM_C_POLICY_ENFORCER, "Policies in %s will not be reloaded when it changes: %m", w.path);
		return 0;
	}
	pthread_detach(t);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "listen", required_argument, NULL, 'l' },
		{ "socket", required_argument, NULL, 's' },
		{ "state-dir", required_argument, NULL, 'd' },
		{ "criu", required_argument, NULL, 'c' },
		{ "runc", required_argument, NULL, 'r' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "log-json", required_argument, NULL, 'J' },
		{ "data-timeout", required_argument, NULL, 'T' },
		{ "cordoned", no_argument, NULL, 'C' },
		{ "policies", required_argument, NULL, 'P' },
		{ "lb-hook", required_argument, NULL, 'H' },
		{ "lb-hook-timeout", required_argument, NULL, 'W' },
		{ "bridge", required_argument, NULL, 'B' },
		{ "fault", required_argument, NULL, 'F' },
		{ "secret-file", required_argument, NULL, 'S' },
		{ "uplink-rate", required_argument, NULL, 'U' },
		{ "sdn", required_argument, NULL, 1010 },
		{ "ovsdb", required_argument, NULL, 1011 },
		{ "switch-port", required_argument, NULL, 1012 },
		{ "dns-server", required_argument, NULL, 1013 },
		{ "dns-key", required_argument, NULL, 1014 },
		{ "dns-zone", required_argument, NULL, 1015 },
		{ "probe-netns", required_argument, NULL, 1016 },
		{ "auto-migrate", no_argument, NULL, 'A' },
		{ "overload-cpu", required_argument, NULL, 1001 },
		{ "overload-memory", required_argument, NULL, 1002 },
		{ "overload-sustain", required_argument, NULL, 1003 },
		{ "plan-interval", required_argument, NULL, 1004 },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	fm_daemon d = { 0 };
	const char *criu = NULL, *runc = "runc", *log_json = NULL, *secret_file = NULL, *bridge = NULL;
	const char *policies_file = NULL, *lb_hook = NULL, *sdn = NULL, *ovsdb = NULL;
	const char *dns_server = NULL, *dns_key = NULL, *dns_zone = NULL, *probe_netns = NULL;
	fm_planner_config plan_cfg = FM_PLANNER_CONFIG_DEFAULT;
	double lb_timeout_s = FM_LB_HOOK_TIMEOUT_MS / 1000.0;
	fm_log_level level = FM_LOG_INFO;
	bool cordoned = false, fault_corrupt = false;
	int data_timeout = 10000, json_fd = -1, c;
	fm_error err = FM_ERROR_INIT;
	fm_http_server *srv = NULL;
	char host[256];
	int port;

	/* a child of ours packing or unpacking an image archive (runtime/image.h) */
	if (argc >= 2 && !strcmp(argv[1], "--image-helper"))
		return fm_image_helper_main(argc, argv);
	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (c) {
		case 'n': d.name = optarg; break;
		case 'l': d.listen = optarg; break;
		case 's': d.socket_path = optarg; break;
		case 'd': d.state_dir = optarg; break;
		case 'c': criu = optarg; break;
		case 'r': runc = optarg; break;
		case 'L':
			if (fm_log_level_parse(optarg, &level) < 0) {
				fprintf(stderr, "fleximigrated: unknown log level %s\n", optarg);
				return 2;
			}
			break;
		case 'J': log_json = optarg; break;
		case 'T':
			data_timeout = atoi(optarg);
			if (data_timeout < 100 || data_timeout > 3600000) {
				fprintf(stderr, "fleximigrated: --data-timeout must be 100..3600000 ms\n");
				return 2;
			}
			break;
		case 'C': cordoned = true; break;
		case 'P': policies_file = optarg; break;
		case 'H': lb_hook = optarg; break;
		case 'W': {
			char *end;
			lb_timeout_s = strtod(optarg, &end);
			if (*end || !(lb_timeout_s >= 0.1 && lb_timeout_s <= 600)) {
				fprintf(stderr, "fleximigrated: --lb-hook-timeout must be 0.1..600 seconds\n");
				return 2;
			}
			break;
		}
		case 'B':
			if (!*optarg || strlen(optarg) > 15 || strchr(optarg, '/') || optarg[0] == '-') {
				fprintf(stderr, "fleximigrated: --bridge needs an interface name (up to 15 characters)\n");
				return 2;
			}
			bridge = optarg;
			break;
		case 'S': secret_file = optarg; break;
		case 'A': plan_cfg.automatic = true; break;
		case 1010: sdn = optarg; break;
		case 1011: ovsdb = optarg; break;
		case 1013: dns_server = optarg; break;
		case 1014: dns_key = optarg; break;
		case 1015: dns_zone = optarg; break;
		case 1016: probe_netns = optarg; break;
		case 1012:
			if (!*optarg || strlen(optarg) > 63 || strpbrk(optarg, "/ \t\n")) {
				fprintf(stderr, "fleximigrated: --switch-port needs an interface name\n");
				return 2;
			}
			d.switch_port = optarg;
			break;
		case 1001: case 1002: case 1003: case 1004: {
			static const struct { const char *opt; double lo, hi; } lim[] = {
				{ "--overload-cpu", 1, 100 }, { "--overload-memory", 1, 100 },
				{ "--overload-sustain", 1, 3600 }, { "--plan-interval", 1, 3600 } };
			char *end;
			double v = strtod(optarg, &end);
			if (*end || !(v >= lim[c - 1001].lo && v <= lim[c - 1001].hi)) {
				fprintf(stderr, "fleximigrated: %s must be %g..%g\n", lim[c - 1001].opt, lim[c - 1001].lo,
					lim[c - 1001].hi);
				return 2;
			}
			if (c == 1001)
				plan_cfg.cpu_pct = v;
			else if (c == 1002)
				plan_cfg.mem_pct = v;
			else if (c == 1003)
				plan_cfg.sustain_s = (int)v;
			else
				plan_cfg.interval_s = (int)v;
			break;
		}
		case 'U':
			if (fm_parse_rate(optarg, &d.uplink_rate_bps) < 0 || d.uplink_rate_bps < 1000000) {
				fprintf(stderr, "fleximigrated: --uplink-rate %s: give bits per second of at least 1M, e.g. 1G\n",
					optarg);
				return 2;
			}
			break;
		case 'F':
			if (strcmp(optarg, "corrupt-transfer") != 0) {
				fprintf(stderr, "fleximigrated: unknown fault %s (known: corrupt-transfer)\n", optarg);
				return 2;
			}
			fault_corrupt = true;
			break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("fleximigrated %s\n", FM_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!sdn != !ovsdb) {
		fprintf(stderr, "fleximigrated: --sdn and --ovsdb go together (the switch and its database)\n");
		return 2;
	}
	if (probe_netns) {
		struct stat pst;
		if (probe_netns[0] != '/' || stat(probe_netns, &pst) < 0) {
			fprintf(stderr, "fleximigrated: --probe-netns %s: give the path of a network namespace, e.g. "
				"/run/netns/NAME\n", probe_netns);
			return 2;
		}
	}
	if (!dns_server != !dns_key || !dns_server != !dns_zone) {
		fprintf(stderr, "fleximigrated: --dns-server, --dns-key and --dns-zone go together\n");
		return 2;
	}
	fm_dns *dns = NULL;
	if (dns_server) {
		fm_error derr = FM_ERROR_INIT;
		dns = fm_xcalloc(1, sizeof(*dns));
		if (fm_dns_open(dns_server, dns_key, FM_DNS_TIMEOUT_MS, dns, &derr) < 0) {
			fprintf(stderr, "fleximigrated: %s\n", derr.msg);
			fm_error_clear(&derr);
			free(dns);
			return 2;
		}
	}
	if (sdn && strncmp(sdn, "unix:", 5) != 0 && strncmp(sdn, "tcp:", 4) != 0) {
		fprintf(stderr, "fleximigrated: --sdn %s: use unix:PATH or tcp:HOST:PORT\n", sdn);
		return 2;
	}
	if (!d.name || !d.listen) {
		fprintf(stderr, "fleximigrated: --name and --listen are required (see --help)\n");
		return 2;
	}
	if (!fm_name_valid(d.name)) {
		fprintf(stderr, "fleximigrated: invalid host name %s: use [A-Za-z0-9_.-], up to 63 characters\n", d.name);
		return 2;
	}
	if (fm_split_hostport(d.listen, host, sizeof(host), &port) < 0 || port == 0) {
		fprintf(stderr, "fleximigrated: --listen must be ADDR:PORT with a fixed port, got %s\n", d.listen);
		return 2;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "fleximigrated: must run as root (runc, CRIU and mounts need it)\n");
		return 1;
	}
	_cleanup_free_ char *sock = d.socket_path ? NULL : fm_xstrdup("/run/fleximigrate/fleximigrated.sock");
	_cleanup_free_ char *state = d.state_dir ? NULL : fm_xasprintf("/var/lib/fleximigrate/%s", d.name);
	if (!d.socket_path)
		d.socket_path = sock;
	if (!d.state_dir)
		d.state_dir = state;
	if (!criu)
		criu = access(DEFAULT_CRIU, X_OK) == 0 ? DEFAULT_CRIU : "criu";
	if (log_json) {
		json_fd = open(log_json, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
		if (json_fd < 0) {
			fprintf(stderr, "fleximigrated: cannot open %s: %m\n", log_json);
			return 1;
		}
	}
	fm_log_setup(d.name, level, STDERR_FILENO, json_fd);
	if (secret_file && fm_http_set_secret_file(secret_file, &err) < 0) {
		fm_err(FM_C_DAEMON, "%s", err.msg);
		return 1;
	}
	if (!secret_file)
		fm_warn(FM_C_DAEMON, "No --secret-file: any host that reaches %s can drive this daemon's agent", d.listen);

	/* signals are handled by sigwait() in this thread only */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* one malloc arena for all threads: a migration's threads each kept an
	 * arena of their own, ~0.3-0.5 MiB resident apiece when idle again */
	mallopt(M_ARENA_MAX, 1);
	/* and no memory given back piecemeal while a migration runs, nor
	 * buffers up to a few MiB (libnftables' take 2 MiB) mapped afresh for
	 * each use: a page faulted in again costs 15-20 us on our VMs, and the
	 * freeze's hold faulted ~130; fm_memory_release gives the heap back
	 * after each migration */
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	mallopt(M_MMAP_THRESHOLD, 4 << 20);
	umask(022);

	_cleanup_free_ char *sockdir = fm_xstrdup(d.socket_path);
	char *slash = strrchr(sockdir, '/');
	if (slash && slash != sockdir) {
		*slash = '\0';
		fm_mkdir_p(sockdir, 0755);
	}
	/* absolute: CRIU and runc get paths below it, and a restarted daemon
	 * recognises its predecessor's CRIU runs by them */
	_cleanup_free_ char *state_abs = NULL;
	if (fm_mkdir_p(d.state_dir, 0700) < 0 || !(state_abs = realpath(d.state_dir, NULL))) {
		fm_err(FM_C_DAEMON, "cannot create state directory %s: %m", d.state_dir);
		return 1;
	}
	d.state_dir = state_abs;
	_cleanup_free_ char *dbpath = fm_xasprintf("%s/fleximigrate.db", d.state_dir);
	if (fm_journal_open(dbpath, &d.journal, &err) < 0 ||
	    fm_rt_open(&d.rt, d.name, d.state_dir, runc, criu, d.journal, &err) < 0) {
		fm_err(FM_C_DAEMON, "%s", err.msg);
		return 1;
	}
	d.started_ms = fm_now_wall_ms();
	char self[PATH_MAX];
	ssize_t self_len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (self_len > 0) {
		self[self_len] = 0;
		fm_image_store_set_helper(d.rt.images, self);
	}
	if (bridge) {
		if (if_nametoindex(bridge) == 0) {
			fm_err(FM_C_DAEMON, "--bridge %s: no such interface in this network namespace", bridge);
			return 1;
		}
		d.rt.bridge = fm_xstrdup(bridge);
	}

	fm_agent_init(&d.agent);
	d.agent.rt = &d.rt;
	d.agent.journal = d.journal;
	d.agent.data_host = fm_xstrdup(host);
	d.agent.io_timeout_ms = data_timeout;
	d.agent.cordoned = cordoned;
	d.agent.fault_corrupt = fault_corrupt;
	d.agent.fetch_blob = fm_api_fetch_blob;
	int r = fm_ckpt_kdat_prime(criu, &err);
	if (r > 0)
		fm_info(FM_C_DAEMON, "CRIU's kernel probe cache primed in /run/criu.kdat (/run is no tmpfs, where CRIU "
				     "would not keep it): each CRIU run skips its 35-55 ms probe");
	else if (r < 0)
		fm_warn(FM_C_DAEMON, "%s: every CRIU run probes the kernel again (35-55 ms each)", err.msg);
	fm_error_clear(&err);
	/* CRIU 4.2 walks the host's whole conntrack hash twice in every dump, in
	 * the freeze (scripts/setup.sh lowers it on our machines) */
	_cleanup_free_ char *ctb = NULL;
	long long buckets = 0;
	if (fm_read_file("/proc/sys/net/netfilter/nf_conntrack_buckets", 64, &ctb, NULL) == 0 &&
	    (buckets = strtoll(ctb, NULL, 10)) > FM_CT_BUCKETS_HINT)
		fm_info(FM_C_DAEMON, "net.netfilter.nf_conntrack_buckets is %lld: every CRIU dump walks all of them twice "
				     "while the container is frozen (12 ms a walk at 262144 here, 0.7 ms at 16384); a host "
				     "with few tracked connections can lower it", buckets);
	d.agent.caps = fm_ckpt_capabilities(criu);
	/* a restore held at CRIU's pre-resume (diskless COLD overlapping its
	 * transfer) needs fm-criu-shim's relay beside the daemon */
	json_object_set_new(d.agent.caps, "restore_hold", json_boolean(d.rt.criu_shim != NULL));
	if (!json_is_true(json_object_get(d.agent.caps, "criu_ok")))
		fm_warn(FM_C_CHECKPOINTING, "CRIU at %s does not work here (%s): migrations from and to this host will fail "
			"until it does (run scripts/setup.sh)", criu,
			json_string_value(json_object_get(d.agent.caps, "criu_error")) ?: "criu check failed");
	if (fault_corrupt)
		fm_warn(FM_C_DAEMON, "Fault injection on: the data channel will corrupt one byte of every transfer");
	fm_agent_recover(&d.agent);

	fm_ctl_init(&d.ctl, d.journal, d.name, d.listen, fm_http_call);
	if (sdn) {
		fm_ctl_set_redirector(&d.ctl, fm_redirector_new(sdn, ovsdb));
		fm_info(FM_C_NETWORK_MANAGER, "Migrations steer their containers' addresses through the switch at %s "
			"(database %s)", sdn, ovsdb);
	}
	if (probe_netns) {
		d.ctl.probe_netns = fm_xstrdup(probe_netns);
		fm_info(FM_C_NETWORK_ORCH, "VERIFICATION probes the migrated containers from the network namespace %s",
			probe_netns);
	}
	if (dns) {
		fm_info(FM_C_DNS_MANAGER, "Migrations that change a container's address update its name in zone %s on the "
			"DNS server %s:%u (TSIG key %s)", dns_zone, dns->server, dns->port, dns->keyname);
		fm_ctl_set_dns(&d.ctl, dns, dns_zone);
	}
	if (lb_hook) {
		fm_lb_hook *h;
		if (fm_lb_hook_new(lb_hook, (int)(lb_timeout_s * 1000), fm_http_post_url, &h, &err) < 0) {
			fm_err(FM_C_DAEMON, "%s", err.msg);
			return 1;
		}
		fm_ctl_set_lb_hook(&d.ctl, h);
	}
	if (policies_file && policies_watch(&d.ctl, policies_file) < 0)
		return 1;
	if (fm_daemon_monitor_start(&d) < 0)
		return 1;
	d.planner = fm_planner_new(&d.ctl, d.monitor, &plan_cfg);
	fm_http_global_init();
	if (fm_http_server_start(fm_api_routes, &d, d.socket_path, d.listen, &srv, &err) < 0) {
		fm_err(FM_C_DAEMON, "%s", err.msg);
		return 1;
	}
	fm_ctl_recover(&d.ctl);
	if (fm_planner_start(d.planner) < 0)
		return 1;
	fm_info(FM_C_DAEMON, "fleximigrated %s ready: host %s, peers on %s, CLI on %s, CRIU %s, state in %s", FM_VERSION,
		d.name, d.listen, d.socket_path,
		json_string_value(json_object_get(d.agent.caps, "criu_version")) ?: "unavailable", d.state_dir);

	for (;;) {
		int sig;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP)
			continue;
		fm_info(FM_C_DAEMON, "Signal %d: shutting down", sig);
		break;
	}
	fm_http_server_stop(srv);
	fm_planner_free(d.planner);
	fm_daemon_monitor_stop(&d);
	fm_ctl_fini(&d.ctl);
	fm_agent_fini(&d.agent);
	fm_rt_close(&d.rt);
	fm_journal_close(d.journal);
	return 0;
}
