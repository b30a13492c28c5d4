/* The seed's API in C (include/fleximigrate.h): a framework over one host's
 * daemon, its HTTP API on the local socket. */
#include "fleximigrate.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http.h"
#include "basic/util.h"
#include "manager/policy.h"

#define DEFAULT_SOCKET "/run/fleximigrate/fleximigrated.sock"
#define CALL_TIMEOUT_MS 60000
#define RUN_POLL_MS 200
#define MAX_HOSTS 64
#define MAX_CONTAINERS 256
#define MAX_REQUESTS 256

struct flexi_migrate {
	char socket[512];          /* "unix:PATH" */
	char self[64];             /* the daemon's host */
	fm_policy_set *policies;
	char err[1024];
	struct {
		char name[64];
		int cpu, mem, storage;
	} hosts[MAX_HOSTS];
	size_t nhosts;
	struct {
		char name[64];
		double cpu;
		int mem, storage;
	} cont[MAX_CONTAINERS];
	size_t ncont;
	char ids[MAX_REQUESTS][32];
	size_t nids;
};

static int fail(flexi_migrate *fm, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(flexi_migrate *fm, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(fm->err, sizeof(fm->err), fmt, ap);
	va_end(ap);
	return r;
}

/* A call to our daemon; errors into fm->err. */
static int call(flexi_migrate *fm, const char *method, const char *path, json_t *body, json_t **out)
{
	fm_error e = FM_ERROR_INIT;
	int r = fm_http_call(fm->socket, method, path, body, CALL_TIMEOUT_MS, out, &e);
	json_decref(body);
	if (r < 0)
		fail(fm, r, "%s", e.msg);
	fm_error_clear(&e);
	return r;
}

static const char *strategy_name(flexi_strategy s)
{
	static const char *const n[] = { "COLD_MIGRATION", "PRE_COPY", "POST_COPY", "HYBRID", "LIVE_MIGRATION" };
	return (unsigned)s < sizeof(n) / sizeof(n[0]) ? n[s] : NULL;
}

flexi_migrate *flexi_migrate_new(const char *policies_json, const char *socket, char *err, size_t errlen)
{
	flexi_migrate *fm = fm_xcalloc(1, sizeof(*fm));
	json_t *info = NULL;
	fm_error e = FM_ERROR_INIT;

	snprintf(fm->socket, sizeof(fm->socket), "unix:%s", socket ? socket : DEFAULT_SOCKET);
	if (policies_json && fm_policy_set_parse(policies_json, strlen(policies_json), "policies", &fm->policies, &e) < 0) {
		snprintf(fm->err, sizeof(fm->err), "%s", e.msg);
		fm_error_clear(&e);
		goto fail;
	}
	if (call(fm, "GET", "/v1/info", NULL, &info) < 0)
		goto fail;
	snprintf(fm->self, sizeof(fm->self), "%s", json_string_value(json_object_get(info, "name")) ?: "");
	json_decref(info);
	return fm;
fail:
	if (err && errlen)
		snprintf(err, errlen, "%s", fm->err);
	flexi_migrate_free(fm);
	return NULL;
}

void flexi_migrate_free(flexi_migrate *fm)
{
	if (!fm)
		return;
	fm_policy_set_free(fm->policies);
	free(fm);
}

const char *flexi_migrate_last_error(const flexi_migrate *fm)
{
	return fm->err;
}

static int host_index(const flexi_migrate *fm, const char *name)
{
	for (size_t i = 0; i < fm->nhosts; i++)
		if (!strcmp(fm->hosts[i].name, name))
			return (int)i;
	return -1;
}

int flexi_migrate_add_host(flexi_migrate *fm, const flexi_host *h)
{
	if (!h || !h->host_id || !fm_name_valid(h->host_id))
		return fail(fm, -EINVAL, "a host needs a host_id of [A-Za-z0-9_.-]");
	if (h->total_cpu < 0 || h->total_memory < 0 || h->total_storage < 0)
		return fail(fm, -EINVAL, "host %s: capacities cannot be negative", h->host_id);
	int i = host_index(fm, h->host_id);
	if (i < 0 && fm->nhosts == MAX_HOSTS)
		return fail(fm, -ENOSPC, "at most %d hosts", MAX_HOSTS);
	if (strcmp(h->host_id, fm->self) != 0) {
		if (!h->address)
			return fail(fm, -EINVAL, "host %s: give its daemon's address (HOST:PORT, its --listen)", h->host_id);
		if (call(fm, "POST", "/v1/hosts", json_pack("{s:s, s:s, s:b}", "name", h->host_id, "address", h->address,
								 "check", 1), NULL) < 0)
			return -EHOSTUNREACH;
	}
	if (i < 0)
		i = (int)fm->nhosts++;
	snprintf(fm->hosts[i].name, sizeof(fm->hosts[i].name), "%s", h->host_id);
	fm->hosts[i].cpu = h->total_cpu;
	fm->hosts[i].mem = h->total_memory;
	fm->hosts[i].storage = h->total_storage;
	return 0;
}

int flexi_migrate_add_container(flexi_migrate *fm, const flexi_container *c)
{
	json_t *out = NULL;
	if (!c || !c->container_id || !fm_name_valid(c->container_id))
		return fail(fm, -EINVAL, "a container needs a container_id of [A-Za-z0-9_.-]");
	if (!c->host || strcmp(c->host, fm->self) != 0)
		return fail(fm, -EINVAL, "container %s: its host must be %s, the host whose daemon this framework talks to",
			    c->container_id, fm->self);
	if (fm->ncont == MAX_CONTAINERS)
		return fail(fm, -ENOSPC, "at most %d containers", MAX_CONTAINERS);
	if (c->cpu_limit < 0 || c->memory_limit < 0 || c->storage_limit < 0)
		return fail(fm, -EINVAL, "container %s: limits cannot be negative", c->container_id);
	char path[128];
	snprintf(path, sizeof(path), "/v1/containers/%s", c->container_id);
	fm_error e = FM_ERROR_INIT;
	int r = fm_http_call(fm->socket, "GET", path, NULL, CALL_TIMEOUT_MS, &out, &e);
	fm_error_clear(&e);
	bool running = r == 0 && !strcmp(json_string_value(json_object_get(out, "status")) ?: "", "running");
	json_decref(out);
	if (!running) {
		if (!c->image || !c->command || !c->command[0])
			return fail(fm, -EINVAL, "container %s: give an image and a command", c->container_id);
		json_t *args = json_array();
		for (size_t i = 0; c->command[i]; i++)
			json_array_append_new(args, json_string(c->command[i]));
		json_t *spec = json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", c->container_id, "image", c->image, "args", args,
					 "cpu_milli", (json_int_t)(c->cpu_limit * 1000 + 0.5),
					 "memory_bytes", (json_int_t)c->memory_limit << 20);
		if (c->service_type)
			json_object_set_new(spec, "labels", json_pack("{s:s}", "service_type", c->service_type));
		if (call(fm, "POST", "/v1/containers", spec, NULL) < 0)
			return -EIO;
	}
	snprintf(fm->cont[fm->ncont].name, sizeof(fm->cont[0].name), "%s", c->container_id);
	fm->cont[fm->ncont].cpu = c->cpu_limit;
	fm->cont[fm->ncont].mem = c->memory_limit;
	fm->cont[fm->ncont++].storage = c->storage_limit;
	return 0;
}

/* GET of a host's /v1/info or one of its containers, through our daemon
 * (which holds the cluster secret). */
static int host_get(flexi_migrate *fm, const char *host, const char *container, json_t **out)
{
	char path[256];
	if (!strcmp(host, fm->self))
		snprintf(path, sizeof(path), container ? "/v1/containers/%s" : "/v1/info", container);
	else if (container)
		snprintf(path, sizeof(path), "/v1/hosts/%s/containers/%s", host, container);
	else
		snprintf(path, sizeof(path), "/v1/hosts/%s/info", host);
	return call(fm, "GET", path, NULL, out);
}

bool flexi_migrate_enforce_policies(flexi_migrate *fm, const flexi_migration_request *req, char *why, size_t whylen)
{
	json_t *cinfo = NULL, *src = NULL, *dst = NULL;
	bool allowed = false;

	if (why && whylen)
		why[0] = '\0';
	if (!req || !req->container_id || !req->source_host || !req->destination_host || !strategy_name(req->migration_type)) {
		fail(fm, -EINVAL, "a migration request needs a container_id, a source_host, a destination_host and a strategy");
		goto out;
	}
	int d = host_index(fm, req->destination_host);
	if (d < 0 || host_index(fm, req->source_host) < 0) {
		fail(fm, -ENOENT, "add the hosts %s and %s first", req->source_host, req->destination_host);
		goto out;
	}
	/* the destination's declared capacities (the seed's Host totals) */
	for (size_t i = 0; i < fm->ncont; i++) {
		if (strcmp(fm->cont[i].name, req->container_id) != 0)
			continue;
		const char *what = NULL;
		double need = 0, have = 0;
		if (fm->hosts[d].cpu && fm->cont[i].cpu > fm->hosts[d].cpu)
			what = "cores", need = fm->cont[i].cpu, have = fm->hosts[d].cpu;
		else if (fm->hosts[d].mem && fm->cont[i].mem > fm->hosts[d].mem)
			what = "MiB of memory", need = fm->cont[i].mem, have = fm->hosts[d].mem;
		else if (fm->hosts[d].storage && fm->cont[i].storage > fm->hosts[d].storage)
			what = "GiB of storage", need = fm->cont[i].storage, have = fm->hosts[d].storage;
		if (what) {
			fail(fm, -ENOSPC, "container %s needs %g %s; host %s declares %g", req->container_id, need, what,
			     req->destination_host, have);
			goto out;
		}
	}
	/* the values the daemons measure */
	if (host_get(fm, req->source_host, req->container_id, &cinfo) < 0 || host_get(fm, req->source_host, NULL, &src) < 0 ||
	    host_get(fm, req->destination_host, NULL, &dst) < 0)
		goto out;
	if (!fm->policies || fm->policies->n == 0) {
		allowed = true;
		snprintf(fm->err, sizeof(fm->err), "no policies: every request is allowed");
		goto out;
	}
	fm_policy_facts facts = { .container = req->container_id, .source = req->source_host,
				  .destination = req->destination_host, .strategy = strategy_name(req->migration_type),
				  .cinfo = cinfo, .src_info = src, .dst_info = dst, .link_bps = -1 };
	fm_policy_decision dec;
	fm_policy_decide(fm->policies, fm_policy_facts_lookup, &facts, &dec);
	allowed = dec.allowed;
	snprintf(fm->err, sizeof(fm->err), "%s", dec.why);
out:
	if (why && whylen)
		snprintf(why, whylen, "%s", fm->err);
	json_decref(cinfo);
	json_decref(src);
	json_decref(dst);
	return allowed;
}

int flexi_migrate_add_migration_request(flexi_migrate *fm, const flexi_migration_request *req, char *id, size_t idlen)
{
	json_t *out = NULL;
	if (!req || !req->container_id || !req->destination_host || !strategy_name(req->migration_type))
		return fail(fm, -EINVAL, "a migration request needs a container_id, a destination_host and a strategy");
	if (fm->nids == MAX_REQUESTS)
		return fail(fm, -ENOSPC, "at most %d requests", MAX_REQUESTS);
	json_t *body = json_pack("{s:s, s:s, s:s}", "container", req->container_id, "to", req->destination_host, "strategy",
				 strategy_name(req->migration_type));
	if (req->source_host)
		json_object_set_new(body, "from", json_string(req->source_host));
	if (call(fm, "POST", "/v1/migrations", body, &out) < 0)
		return -EIO;
	snprintf(fm->ids[fm->nids], sizeof(fm->ids[0]), "%s", json_string_value(json_object_get(out, "id")) ?: "");
	if (id && idlen)
		snprintf(id, idlen, "%s", fm->ids[fm->nids]);
	fm->nids++;
	json_decref(out);
	return 0;
}

int flexi_migrate_run(flexi_migrate *fm, void (*on_log)(const char *line, void *opaque), void *opaque)
{
	int failed = 0;
	for (size_t i = 0; i < fm->nids; i++) {
		int since = 0;
		for (;;) {
			char path[128], line[4600];
			json_t *m = NULL, *ev;
			size_t k;
			snprintf(path, sizeof(path), "/v1/migrations/%s?events_since=%d", fm->ids[i], since);
			if (call(fm, "GET", path, NULL, &m) < 0)
				return -1;
			json_array_foreach(json_object_get(m, "events"), k, ev) {
				since = (int)json_integer_value(json_object_get(ev, "seq"));
				snprintf(line, sizeof(line), "%s [%s]: %s", json_string_value(json_object_get(ev, "level")) ?: "?",
					 json_string_value(json_object_get(ev, "component")) ?: "?",
					 json_string_value(json_object_get(ev, "message")) ?: "");
				if (on_log)
					on_log(line, opaque);
				else
					puts(line);
			}
			bool done = json_is_true(json_object_get(m, "finished"));
			if (done && strcmp(json_string_value(json_object_get(m, "state")) ?: "", "COMPLETED") != 0) {
				failed++;
				fail(fm, -EIO, "migration %s: %s", fm->ids[i], json_string_value(json_object_get(m, "error")) ?: "failed");
			}
			json_decref(m);
			if (done)
				break;
			/* the migration runs in the daemon: this is how often its log is read */
			fm_sleep_us(RUN_POLL_MS * 1000, NULL);
		}
	}
	fm->nids = 0;
	return failed;
}
