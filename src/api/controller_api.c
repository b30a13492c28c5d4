/* Controller endpoints: hosts and migrations; and the daemon's route table. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "basic/util.h"

void fm_api_host_list(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_http_ok(resp, 200, fm_ctl_host_list(&d->ctl));
}

/* GET /v1/hosts/:name/info and /v1/hosts/:name/containers/:container: a
 * known host's answer, asked by this controller (with the cluster secret),
 * so that local clients (the C API) need only the local socket. */
void fm_api_host_proxy(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_error err = FM_ERROR_INIT;
	json_t *out = NULL;
	char path[160];

	if (!fm_name_valid(req->params[0]) || (req->params[1] && !fm_name_valid(req->params[1])))
		return fm_http_error(resp, 400, "invalid", "host and container names are [A-Za-z0-9_.-]");
	_cleanup_free_ char *ep = fm_ctl_endpoint(&d->ctl, req->params[0]);
	if (!ep)
		return fm_http_error(resp, 404, "not_found", "unknown host %s (add it with `fleximigrate host add`)",
				     req->params[0]);
	if (req->params[1])
		snprintf(path, sizeof(path), "/v1/containers/%s", req->params[1]);
	else
		snprintf(path, sizeof(path), "/v1/info");
	if (d->ctl.call(ep, "GET", path, NULL, d->ctl.rpc_timeout_ms, &out, &err) < 0) {
		fm_http_fail(resp, &err);
		fm_error_clear(&err);
		return;
	}
	fm_http_ok(resp, 200, out);
}

void fm_api_host_add(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	const char *name = json_string_value(json_object_get(req->body, "name"));
	const char *addr = json_string_value(json_object_get(req->body, "address"));
	bool check = !json_is_false(json_object_get(req->body, "check"));
	fm_error err = FM_ERROR_INIT;
	json_t *info = NULL;

	if (!name || !addr)
		return fm_http_error(resp, 400, "invalid", "body must be {\"name\": HOST, \"address\": \"HOST:PORT\"}");
	if (check) {
		/* the peer must answer, under the name we are told */
		if (fm_http_call(addr, "GET", "/v1/info", NULL, 5000, &info, &err) < 0) {
			fm_error_prefix(&err, "host %s not added", name);
			fm_http_fail(resp, &err);
			fm_error_clear(&err);
			return;
		}
		const char *real = json_string_value(json_object_get(info, "name"));
		if (!real || strcmp(real, name) != 0) {
			fm_http_error(resp, 409, "conflict", "the daemon at %s calls itself %s, not %s", addr,
				      real ? real : "?", name);
			json_decref(info);
			return;
		}
		json_decref(info);
	}
	if (fm_ctl_host_add(&d->ctl, name, addr, &err) < 0) {
		fm_http_fail(resp, &err);
		fm_error_clear(&err);
		return;
	}
	fm_http_ok(resp, 201, json_pack("{s:s, s:s}", "name", name, "address", addr));
}

void fm_api_host_remove(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_error err = FM_ERROR_INIT;
	if (fm_ctl_host_remove(&d->ctl, req->params[0], &err) < 0) {
		fm_http_fail(resp, &err);
		fm_error_clear(&err);
		return;
	}
	fm_http_ok(resp, 200, NULL);
}

void fm_api_migration_submit(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_error err = FM_ERROR_INIT;
	char id[32];

	if (!req->body)
		return fm_http_error(resp, 400, "invalid", "body must be {\"container\": NAME, \"to\": HOST, ...}");
	if (fm_ctl_submit(&d->ctl, req->body, id, sizeof(id), &err) < 0) {
		fm_http_fail(resp, &err);
		fm_error_clear(&err);
		return;
	}
	fm_http_ok(resp, 202, json_pack("{s:s}", "id", id));
}

void fm_api_migration_list(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_http_ok(resp, 200, fm_ctl_list(&d->ctl));
}

void fm_api_migration_get(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	const char *since = fm_http_query(req, "events_since");
	json_t *m;

	if (!fm_name_valid(req->params[0]) || !(m = fm_ctl_get(&d->ctl, req->params[0], since ? atoi(since) : -1)))
		return fm_http_error(resp, 404, "not_found", "no migration %s on this controller", req->params[0]);
	/* live progress of the transfer, from the source agent */
	if (!strcmp(json_string_value(json_object_get(m, "state")) ?: "", "EXECUTION")) {
		const char *src = json_string_value(json_object_get(m, "source"));
		char *ep = src && *src ? fm_ctl_endpoint(&d->ctl, src) : NULL;
		json_t *st = NULL;
		if (ep) {
			char path[128];
			snprintf(path, sizeof(path), "/v1/agent/migrations/%s", req->params[0]);
			if (fm_http_call(ep, "GET", path, NULL, 2000, &st, NULL) == 0 && json_object_get(st, "progress"))
				json_object_set(m, "progress", json_object_get(st, "progress"));
			json_decref(st);
		}
		free(ep);
	}
	fm_http_ok(resp, 200, m);
}

/* Routes that change what runs on this host or start migrations are served only on
 * the local socket (the CLI); peers get the read-only and agent-to-agent routes. */
void fm_api_migration_cancel(void *ctx, const fm_http_req *req, fm_http_resp *resp)
{
	fm_daemon *d = ctx;
	fm_error err = FM_ERROR_INIT;
	if (!fm_name_valid(req->params[0]))
		return fm_http_error(resp, 404, "not_found", "no migration %s on this controller", req->params[0]);
	if (fm_ctl_cancel(&d->ctl, req->params[0], &err) < 0) {
		fm_http_fail(resp, &err);
		fm_error_clear(&err);
		return;
	}
	fm_http_ok(resp, 202, json_pack("{s:s, s:b}", "id", req->params[0], "cancelling", 1));
}

const fm_http_route fm_api_routes[] = {
	{ "GET", "/v1/info", fm_api_info, false },
	{ "GET", "/metrics", fm_api_metrics, false },
	{ "GET", "/v1/plan", fm_api_plan, true },
	{ "POST", "/v1/cordon", fm_api_cordon, true },
	{ "GET", "/v1/images", fm_api_image_list, false },
	{ "POST", "/v1/images", fm_api_image_import, true },
	{ "GET", "/v1/images/:ref", fm_api_image_get, false },
	{ "GET", "/v1/images/:digest/blob", fm_api_image_blob, false },
	{ "DELETE", "/v1/images/:name", fm_api_image_remove, true },
	{ "GET", "/v1/containers", fm_api_container_list, false },
	{ "POST", "/v1/containers", fm_api_container_run, true },
	{ "GET", "/v1/containers/:name", fm_api_container_get, false },
	{ "GET", "/v1/containers/:name/workingset", fm_api_container_workingset, false },
	{ "POST", "/v1/containers/:name/stop", fm_api_container_stop, true },
	{ "DELETE", "/v1/containers/:name", fm_api_container_remove, true },
	{ "GET", "/v1/agent/cpuinfo", fm_api_agent_cpuinfo, false },
	{ "POST", "/v1/agent/cpuinfo/check", fm_api_agent_cpuinfo_check, false },
	{ "GET", "/v1/agent/migrations/:id", fm_api_agent_status, false },
	{ "POST", "/v1/agent/migrations/:id/:op", fm_api_agent_op, false },
	{ "GET", "/v1/hosts", fm_api_host_list, false },
	{ "POST", "/v1/hosts", fm_api_host_add, true },
	{ "DELETE", "/v1/hosts/:name", fm_api_host_remove, true },
	{ "GET", "/v1/hosts/:name/info", fm_api_host_proxy, true },
	{ "GET", "/v1/hosts/:name/containers/:container", fm_api_host_proxy, true },
	{ "GET", "/v1/migrations", fm_api_migration_list, false },
	{ "POST", "/v1/migrations", fm_api_migration_submit, true },
	{ "GET", "/v1/migrations/:id", fm_api_migration_get, false },
	{ "POST", "/v1/migrations/:id/cancel", fm_api_migration_cancel, true },
	{ NULL, NULL, NULL, false },
};
