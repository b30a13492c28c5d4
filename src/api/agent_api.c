/* Agent endpoints: this host's images, containers, and its part in migrations. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>

#include "api/api.h"
#include "network/forward.h"
#include "fm-config.h"
#include "basic/log.h"
#include "basic/util.h"
#include "manager/allocator.h"
#include "monitor/metrics.h"
#include "monitor/monitor.h"
#include "runtime/net.h"
#include "sync/checkpoint.h"

#define BLOB_TIMEOUT_MS (30 * 60 * 1000)

void fm_api_info(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_host_metrics m;
	json_t *o;

	fm_metrics_host_read(&m);
	o = json_pack("{s:s, s:s, s:s, s:s, s:O, s:o, s:o, s:b, s:I, s:I}", "name", d->name, "version", FM_VERSION,
		      "address", d->listen, "data_host", d->agent.data_host, "capabilities", d->agent.caps,
		      "resources", fm_metrics_host_json(&m), "allocation", fm_alloc_usage(d->journal, d->agent.cpu_overcommit),
		      "cordoned", d->agent.cordoned, "started_ms", (json_int_t)d->started_ms,
		      "rss_kib", (json_int_t)fm_metrics_self_rss_kib());
	if (d->monitor)
		json_object_set_new(o, "monitor", fm_monitor_host_json(d->monitor));
	json_object_set_new(o, "network", json_pack("{s:s?}", "switch_port", d->switch_port));
	struct statvfs sv;
	if (statvfs(d->state_dir, &sv) == 0)
		json_object_set_new(json_object_get(o, "resources"), "disk_free_bytes",
				    json_integer((json_int_t)sv.f_bavail * (json_int_t)sv.f_frsize));
	fm_http_ok(resp, 200, o);
}

void fm_api_cordon(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	json_t *v = json_object_get(req->body, "cordoned");
	if (!json_is_boolean(v))
		return fm_http_error(resp, 400, "invalid", "body must be {\"cordoned\": true|false}");
	d->agent.cordoned = json_is_true(v);
	fm_info(FM_C_CONTAINER_MANAGER, "Host %s %s", d->name,
		d->agent.cordoned ? "cordoned: incoming migrations are refused" : "uncordoned");
	fm_http_ok(resp, 200, json_pack("{s:b}", "cordoned", d->agent.cordoned));
}

static json_t *image_json(const fm_image *i)
{
	return json_pack("{s:s, s:s, s:I, s:I}", "name", i->name, "digest", i->digest, "size", (json_int_t)i->size,
			 "created_ms", (json_int_t)i->created_ms);
}

void fm_api_image_import(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	const char *name = json_string_value(json_object_get(req->body, "name"));
	const char *path = json_string_value(json_object_get(req->body, "path"));
	fm_error err = FM_ERROR_INIT;
	fm_image img;

	if (!name || !path || path[0] != '/')
		return fm_http_error(resp, 400, "invalid", "body must be {\"name\": NAME, \"path\": ABSOLUTE_PATH}");
	if (fm_image_import(d->rt.images, name, path, &img, &err) < 0) {
		fm_http_fail(resp, &err);
		fm_error_clear(&err);
		return;
	}
	fm_info(FM_C_IMAGE_MANAGER, "Imported image %s (%s) from %s", name, img.digest, path);
	fm_http_ok(resp, 201, image_json(&img));
}

void fm_api_image_list(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_image *imgs = NULL;
	size_t n = 0;
	json_t *a = json_array();

	if (fm_image_list(d->rt.images, &imgs, &n) == 0)
		for (size_t i = 0; i < n; i++)
			json_array_append_new(a, image_json(&imgs[i]));
	free(imgs);
	fm_http_ok(resp, 200, a);
}

void fm_api_image_get(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_image img;
	if (fm_image_lookup(d->rt.images, req->params[0], &img) < 0)
		return fm_http_error(resp, 404, "not_found", "no image %s on %s", req->params[0], d->name);
	fm_http_ok(resp, 200, image_json(&img));
}

void fm_api_image_blob(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_image img;
	if (!fm_digest_valid(req->params[0]) || fm_image_lookup(d->rt.images, req->params[0], &img) < 0)
		return fm_http_error(resp, 404, "not_found", "no image blob %s on %s", req->params[0], d->name);
	resp->status = 200;
	resp->file_path = fm_image_blob_path(d->rt.images, img.digest);
}

void fm_api_image_remove(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_error err = FM_ERROR_INIT;
	if (fm_image_remove(d->rt.images, req->params[0], &err) < 0) {
		fm_http_fail(resp, &err);
		fm_error_clear(&err);
		return;
	}
	fm_http_ok(resp, 200, NULL);
}

int fm_api_fetch_blob(const char *source_endpoint, const char *digest, const char *file, uint64_t bandwidth_bps,
		      fm_error *err)
{
	_cleanup_free_ char *path = fm_xasprintf("/v1/images/%s/blob", digest);
	return fm_http_download(source_endpoint, path, file, BLOB_TIMEOUT_MS, bandwidth_bps, err);
}

void fm_api_container_run(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_container_spec spec;
	fm_error err = FM_ERROR_INIT;
	json_t *o;

	char ip[INET_ADDRSTRLEN] = "";
	if (fm_container_spec_from_json(req->body, &spec, &err) == 0 && spec.net_ip)
		fm_net_addr_of(spec.net_ip, ip, sizeof(ip));
	/* flows of ours that hold its address elsewhere (a container that had it
	 * moved away) go first, then the switch learns it here */
	if (fm_error_is_set(&err) || (*ip && fm_ctl_address_claim(&d->ctl, ip, &err) < 0) ||
	    fm_rt_run(&d->rt, &spec, &err) < 0) {
		fm_http_fail(resp, &err);
		fm_error_clear(&err);
		fm_container_spec_clear(&spec);
		return;
	}
	fm_info(FM_C_RUNTIME_CONTROLLER, "Started container %s from image %s", spec.name, spec.image);
	/* neighbours that knew the address at another MAC or port learn it here */
	if (*ip && fm_net_announce(&d->rt, spec.name, spec.net_ip, spec.net_mac, &err) < 0) {
		fm_warn(FM_C_NETWORK_MANAGER, "%s: neighbours learn it when it first sends", err.msg);
		fm_error_clear(&err);
	}
	o = fm_rt_get(&d->rt, spec.name);
	fm_container_spec_clear(&spec);
	fm_http_ok(resp, 201, o);
}

void fm_api_container_list(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	json_t *list = fm_rt_list(&d->rt), *c;
	const char *disk = fm_http_query(req, "disk");
	size_t i;
	json_array_foreach(list, i, c) {
		if (disk && !strcmp(disk, "1"))
			json_object_set_new(c, "rootfs_bytes",
					    json_integer(fm_rt_upper_bytes(&d->rt, json_string_value(json_object_get(c, "name")))));
		json_t *usage = d->monitor ? fm_monitor_container_json(d->monitor, json_string_value(json_object_get(c, "name")),
								       false) : NULL;
		if (usage)
			json_object_set_new(c, "usage", usage);
	}
	fm_http_ok(resp, 200, list);
}

void fm_api_container_get(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	json_t *o = fm_name_valid(req->params[0]) ? fm_rt_get(&d->rt, req->params[0]) : NULL;
	if (!o)
		return fm_http_error(resp, 404, "not_found", "no container %s on %s", req->params[0], d->name);
	const char *series = fm_http_query(req, "series");
	json_t *usage = d->monitor ? fm_monitor_container_json(d->monitor, req->params[0], series && !strcmp(series, "1"))
				   : NULL;
	if (usage)
		json_object_set_new(o, "usage", usage);
	fm_http_ok(resp, 200, o);
}

/* GET /v1/containers/NAME/workingset?ms=500: memory touched in a window. */
void fm_api_container_workingset(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	const char *q = fm_http_query(req, "ms");
	int ms = q ? atoi(q) : 500;
	pid_t pids[1024];
	fm_working_set ws;
	int n;

	if (ms < 50 || ms > 10000)
		return fm_http_error(resp, 400, "invalid", "ms must be 50..10000");
	if (!fm_name_valid(req->params[0]) || !fm_rt_exists(&d->rt, req->params[0]))
		return fm_http_error(resp, 404, "not_found", "no container %s on %s", req->params[0], d->name);
	if ((n = fm_rt_pids(&d->rt, req->params[0], pids, ARRAY_SIZE(pids))) < 0 ||
	    fm_metrics_working_set(pids, (size_t)n, ms, &ws) < 0)
		return fm_http_error(resp, 409, "not_running", "container %s is not running on %s", req->params[0],
				     d->name);
	fm_http_ok(resp, 200, json_pack("{s:I, s:I, s:i, s:i, s:f}", "rss_bytes", (json_int_t)ws.rss,
					"referenced_bytes", (json_int_t)ws.referenced, "interval_ms", ws.interval_ms,
					"processes", ws.processes,
					"touch_rate_bps", (double)ws.referenced * 8000.0 / (double)ws.interval_ms));
}

void fm_api_container_stop(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_error err = FM_ERROR_INIT;
	json_int_t t = json_integer_value(json_object_get(req->body, "timeout_ms"));

	if (!fm_name_valid(req->params[0]) || !fm_rt_exists(&d->rt, req->params[0]))
		return fm_http_error(resp, 404, "not_found", "no container %s on %s", req->params[0], d->name);
	if (fm_rt_stop(&d->rt, req->params[0], t > 0 && t < 3600000 ? (int)t : 10000, &err) < 0) {
		fm_http_fail(resp, &err);
		fm_error_clear(&err);
		return;
	}
	fm_http_ok(resp, 200, fm_rt_get(&d->rt, req->params[0]));
}

void fm_api_container_remove(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_error err = FM_ERROR_INIT;
	const char *force = fm_http_query(req, "force");

	if (!fm_name_valid(req->params[0]))
		return fm_http_error(resp, 404, "not_found", "no container %s on %s", req->params[0], d->name);
	if (fm_rt_remove(&d->rt, req->params[0], force && !strcmp(force, "1"), &err) < 0) {
		fm_http_fail(resp, &err);
		fm_error_clear(&err);
		return;
	}
	fm_http_ok(resp, 200, NULL);
}

void fm_api_agent_cpuinfo(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_agent *a = &d->agent;
	fm_error err = FM_ERROR_INIT;

	pthread_mutex_lock(&a->preflight);
	if (!a->cpuinfo_b64) {
		_cleanup_free_ char *dir = fm_rt_scratch_dir(&d->rt, "cpuinfo", &err);
		_cleanup_free_ char *data = NULL;
		size_t len;
		if (dir) {
			_cleanup_free_ char *img = fm_xasprintf("%s/cpuinfo.img", dir);
			if (fm_ckpt_cpuinfo_dump(d->rt.criu, dir, &err) == 0 && fm_read_file(img, 1 << 20, &data, &len) < 0)
				fm_error_set(&err, -EIO, "criu cpuinfo dump produced nothing");
			if (!fm_error_is_set(&err))
				a->cpuinfo_b64 = fm_base64_encode(data, len);
			fm_rm_rf(dir);
		}
	}
	if (a->cpuinfo_b64)
		fm_http_ok(resp, 200, json_pack("{s:s, s:s}", "host", d->name, "image", a->cpuinfo_b64));
	else
		fm_http_fail(resp, &err);
	pthread_mutex_unlock(&a->preflight);
	fm_error_clear(&err);
}

/* Runs `criu cpuinfo check` on a peer's CPU description; results are cached. */
void fm_api_agent_cpuinfo_check(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_agent *a = &d->agent;
	const char *b = json_string_value(json_object_get(req->body, "image"));
	fm_error err = FM_ERROR_INIT;
	unsigned char *data = NULL;
	size_t len;

	if (!b || strlen(b) > (1 << 20) || fm_base64_decode(b, &data, &len) < 0)
		return fm_http_error(resp, 400, "invalid", "body must be {\"image\": BASE64 of cpuinfo.img}");
	uint64_t h = XXH3_64bits(data, len);
	pthread_mutex_lock(&a->preflight);
	struct fm_cpu_check *c = NULL;
	for (int i = 0; i < a->n_cpu_checks; i++)
		if (a->cpu_checks[i].hash == h)
			c = &a->cpu_checks[i];
	if (!c) {
		_cleanup_free_ char *dir = fm_rt_scratch_dir(&d->rt, "cpuinfo", &err);
		if (dir) {
			_cleanup_free_ char *img = fm_xasprintf("%s/cpuinfo.img", dir);
			if (fm_write_file_atomic(img, data, len, 0600) < 0)
				fm_error_set(&err, -EIO, "cannot write %s", img);
			else if (fm_ckpt_cpuinfo_check(d->rt.criu, dir, &err) == -EIO)
				err.code = -EPERM; /* CRIU refused: a verdict about the CPU */
			fm_rm_rf(dir);
			/* remember verdicts of CRIU (it ran and said no), not failures of our own:
			 * a timeout, a signal, or a CRIU that could not be run */
			bool verdict = !fm_error_is_set(&err) || (err.code == -EPERM && !strstr(err.msg, "exit 127") &&
								  !strstr(err.msg, "timed out") && !strstr(err.msg, "killed"));
			if (verdict) {
				int slot = a->n_cpu_checks < 16 ? a->n_cpu_checks++ : (int)(h % 16);
				c = &a->cpu_checks[slot];
				free(c->msg);
				free(c->detail);
				c->hash = h;
				c->code = err.code;
				c->msg = fm_xstrdup(err.msg);
				c->detail = err.detail ? fm_xstrdup(err.detail) : NULL;
			}
		}
	}
	if (c && c->code == 0) {
		fm_http_ok(resp, 200, json_pack("{s:b}", "compatible", 1));
	} else if (c) {
		fm_error_clear(&err);
		fm_error_set(&err, c->code, "%s", c->msg);
		if (c->detail)
			fm_error_set_detail(&err, fm_xstrdup(c->detail));
		fm_http_fail(resp, &err);
	} else {
		fm_http_fail(resp, &err);
	}
	pthread_mutex_unlock(&a->preflight);
	fm_error_clear(&err);
	free(data);
}

/* POST /v1/agent/migrations/:id/:op — one table for the agent's migration steps. */
void fm_api_agent_op(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_agent *a = &d->agent;
	const char *mid = req->params[0], *op = req->params[1];
	const char *container = json_string_value(json_object_get(req->body, "container"));
	fm_error err = FM_ERROR_INIT;
	json_t *out = NULL;
	int r;

	if (!fm_name_valid(mid))
		return fm_http_error(resp, 400, "invalid", "invalid migration id");
	if (!strcmp(op, "reserve"))
		r = fm_sync_dst_reserve(a, mid, req->body, &err);
	else if (!strcmp(op, "prepare"))
		r = fm_sync_dst_prepare(a, mid, req->body, &out, &err);
	else if (!strcmp(op, "restore_start"))
		r = fm_sync_dst_restore_start(a, mid, req->body, &err);
	else if (!strcmp(op, "restore"))
		r = fm_sync_dst_restore(a, mid, req->body, &out, &err);
	else if (!strcmp(op, "pages_open"))
		r = fm_sync_dst_pages_open(a, mid, req->body, &out, &err);
	else if (!strcmp(op, "pages_close"))
		r = fm_sync_dst_pages_close(a, mid, &out, &err);
	else if (!strcmp(op, "predump"))
		r = fm_sync_src_predump(a, mid, req->body, &out, &err);
	else if (!strcmp(op, "presync"))
		r = fm_sync_src_presync(a, mid, req->body, &out, &err);
	else if (!strcmp(op, "capture"))
		r = fm_sync_src_capture(a, mid, &out, &err);
	else if (!strcmp(op, "inject"))
		r = fm_sync_dst_inject(a, mid, req->body, &out, &err);
	else if (!strcmp(op, "throttle"))
		r = fm_sync_src_throttle(a, mid, req->body, &out, &err);
	else if (!strcmp(op, "pages"))
		r = fm_sync_dst_pages(a, mid, &out, &err);
	else if (!strcmp(op, "verify"))
		r = fm_sync_dst_verify(a, mid, req->body, &err);
	else if (!strcmp(op, "commit"))
		r = fm_sync_dst_commit(a, mid, &err);
	else if (!strcmp(op, "abort"))
		r = fm_sync_dst_abort(a, mid, &err);
	else if (!strcmp(op, "checkpoint_start"))
		r = fm_sync_src_checkpoint_start(a, mid, req->body, &err);
	else if (!strcmp(op, "checkpoint"))
		r = fm_sync_src_checkpoint(a, mid, req->body, &out, &err);
	else if (!strcmp(op, "resume"))
		r = fm_sync_src_resume(a, mid, container, &err);
	else if (!strcmp(op, "cleanup"))
		r = fm_sync_src_cleanup(a, mid, container, &err);
	else if (!strcmp(op, "forward_prepare"))
		r = fm_sync_src_forward(a, mid, req->body, false, &err);
	else if (!strcmp(op, "forward"))
		r = fm_sync_src_forward(a, mid, req->body, true, &err);
	else if (!strcmp(op, "forward_cancel"))
		r = fm_forwarder_drop(a->forwarder, mid, &err);
	else
		return fm_http_error(resp, 404, "no_route", "unknown migration operation %s", op);
	if (r < 0) {
		fm_log(FM_LOG_DEBUG, FM_C_STATE_SYNC, mid, "%s failed: %s", op, err.msg);
		fm_http_fail(resp, &err);
		fm_error_clear(&err);
		return;
	}
	fm_http_ok(resp, 200, out);
}

void fm_api_agent_status(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	json_t *o = fm_name_valid(req->params[0]) ? fm_sync_dst_status(&d->agent, req->params[0]) : NULL;
	json_t *p = fm_name_valid(req->params[0]) ? fm_sync_src_progress(&d->agent, req->params[0]) : NULL;
	if (!o && !p)
		return fm_http_error(resp, 404, "not_found", "no migration %s in flight on %s", req->params[0], d->name);
	if (!o)
		o = json_object();
	if (p)
		json_object_set_new(o, "progress", p);
	fm_http_ok(resp, 200, o);
}
