/* The daemon's HTTP/JSON API: the shared daemon context and the route table.
 * docs/api.md lists every endpoint. */
#pragma once
#include "api/http.h"
#include "manager/coordinator.h"
#include "runtime/runtime.h"
#include "store/journal.h"
#include "sync/migrate.h"

typedef struct fm_daemon {
	char *name;        /* host name */
	char *listen;      /* TCP host:port peers use */
	char *socket_path; /* local UNIX socket for the CLI */
	char *state_dir;
	int64_t started_ms;
	fm_journal *journal;
	fm_runtime rt;
	fm_agent agent;
	fm_controller ctl;
	struct fm_monitor *monitor; /* Resource Monitor (monitor_api.c) */
	char *uplink;               /* the interface to the other hosts, or NULL */
	uint64_t uplink_rate_bps;   /* --uplink-rate, 0 = not stated */
	struct fm_planner *planner; /* Decision Engine's Migration Planner */
	const char *switch_port;    /* --switch-port: this host's port on the fabric's switch */
} fm_daemon;

/* Resource Monitor (monitor_api.c) */
int fm_daemon_monitor_start(fm_daemon *d);
void fm_daemon_monitor_stop(fm_daemon *d);
void fm_api_metrics(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_plan(void *ctx, const fm_http_req *req, fm_http_resp *resp);

/* NULL-method-terminated. */
extern const fm_http_route fm_api_routes[];

/* Agent handlers (agent_api.c) */
void fm_api_info(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_cordon(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_image_import(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_image_list(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_image_get(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_image_blob(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_image_remove(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_container_run(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_container_list(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_container_get(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_container_workingset(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_container_stop(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_container_remove(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_agent_cpuinfo(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_agent_cpuinfo_check(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_agent_op(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_agent_status(void *ctx, const fm_http_req *req, fm_http_resp *resp);

/* Controller handlers (controller_api.c) */
void fm_api_host_list(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_host_add(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_host_remove(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_host_proxy(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_migration_submit(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_migration_list(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_migration_get(void *ctx, const fm_http_req *req, fm_http_resp *resp);
void fm_api_migration_cancel(void *ctx, const fm_http_req *req, fm_http_resp *resp);

/* Blob download used by the destination agent (fm_blob_fetch_fn). */
int fm_api_fetch_blob(const char *source_endpoint, const char *digest, const char *file, uint64_t bandwidth_bps,
		      fm_error *err);
