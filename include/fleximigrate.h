/* FlexiMigrate's C API: the seed's concepts (its Python snippet) in C.
 *
 *   seed (Python)                                  here (C)
 *   FlexiMigrate(policies=policies)                flexi_migrate_new(policies_json, socket, ...)
 *   Host(host_id, total_cpu, total_memory, ...)    flexi_host + flexi_migrate_add_host()
 *   Container(container_id, image, cpu_limit, ...) flexi_container + flexi_migrate_add_container()
 *   MigrationRequest(container_id, source_host,    flexi_migration_request
 *       destination_host, migration_type)
 *   MigrationStrategy.LIVE_MIGRATION               FLEXI_LIVE_MIGRATION
 *   decision_engine.enforce_policies(request)      flexi_migrate_enforce_policies()
 *   migration_manager.add_migration_request(req)   flexi_migrate_add_migration_request()
 *   flexi_migrate.run()                            flexi_migrate_run()
 *
 * A framework talks to the FlexiMigrate daemon of one host (fleximigrated,
 * over its local socket); that daemon's controller drives the migrations,
 * with real runc, CRIU and bytes between the hosts.  The framework's own
 * policies (the seed's format) gate requests in enforce_policies, evaluated
 * on the values the daemons measure; the daemon's --policies, if any, decide
 * again in PLANNING.
 *
 * Errors: functions return 0 / true on success; otherwise
 * flexi_migrate_last_error() says what went wrong.  Not thread-safe: one
 * framework per thread.  Link with -lfleximigrate (pkg-config fleximigrate). */
#ifndef FLEXIMIGRATE_H
#define FLEXIMIGRATE_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct flexi_migrate flexi_migrate;

typedef enum flexi_strategy {
	FLEXI_COLD_MIGRATION,
	FLEXI_PRE_COPY,
	FLEXI_POST_COPY,
	FLEXI_HYBRID,
	FLEXI_LIVE_MIGRATION,   /* the Strategy Selector chooses */
} flexi_strategy;

/* A host: its daemon's name and peer address (HOST:PORT, as it was started
 * with --listen; NULL for the framework's own host), and the capacities the
 * framework may plan with (0: no limit declared). */
typedef struct flexi_host {
	const char *host_id;
	const char *address;
	int total_cpu;            /* cores */
	int total_memory;         /* MiB */
	int total_storage;        /* GiB */
} flexi_host;

/* A container, started on its host (which must be the framework's own host:
 * containers are started through a host's local socket). */
typedef struct flexi_container {
	const char *container_id;
	const char *image;        /* imported on that host (fleximigrate image import) */
	double cpu_limit;         /* cores, 0: none */
	int memory_limit;         /* MiB, 0: none */
	int storage_limit;        /* GiB it may need on a destination, 0: unknown */
	const char *host;
	const char *const *command;  /* NULL-terminated argv */
	const char *service_type; /* label policies read, or NULL */
} flexi_container;

typedef struct flexi_migration_request {
	const char *container_id;
	const char *source_host;
	const char *destination_host;
	flexi_strategy migration_type;
} flexi_migration_request;

/* policies_json: the seed's policy list as JSON text (NULL: none, every
 * request passes enforce_policies); socket: the local daemon's (NULL: its
 * default).  NULL on error, with the reason in err (if given). */
flexi_migrate *flexi_migrate_new(const char *policies_json, const char *socket, char *err, size_t errlen);
void flexi_migrate_free(flexi_migrate *fm);
const char *flexi_migrate_last_error(const flexi_migrate *fm);

/* Makes the host known to the framework (and its daemon's controller). */
int flexi_migrate_add_host(flexi_migrate *fm, const flexi_host *host);
/* Starts the container on its host (a running container of that name is taken as it is). */
int flexi_migrate_add_container(flexi_migrate *fm, const flexi_container *c);

/* Would the framework's policies allow this request now?  They are evaluated
 * on the measured values (both hosts' Resource Monitors, the container's
 * usage and labels, the clock); a container that exceeds the destination's
 * declared capacities is refused too.  why (if given) says which policy
 * decided and the values it saw. */
bool flexi_migrate_enforce_policies(flexi_migrate *fm, const flexi_migration_request *req, char *why, size_t whylen);
/* Submits the request to the daemon's controller; its id in id (>= 32 bytes). */
int flexi_migrate_add_migration_request(flexi_migrate *fm, const flexi_migration_request *req, char *id, size_t idlen);

/* Drives the framework until every request added so far has finished,
 * handing each line of their logs (the seed's format) to on_log (NULL:
 * stdout).  Returns the number of requests that did not complete (0: all
 * COMPLETED), or -1 on error. */
int flexi_migrate_run(flexi_migrate *fm, void (*on_log)(const char *line, void *opaque), void *opaque);

#ifdef __cplusplus
}
#endif
#endif
