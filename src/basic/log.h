/* Logging & Monitoring: one call per event, in two forms.
 *
 * Human lines follow the seed's format, so a migration reads like the paper's
 * examples:
 *     LEVEL [ComponentName]: Message - Transitioning: STATE_A -> STATE_B
 * Machine lines are JSON objects, one per line, with time, host, level, component,
 * migration id and message, for log shippers.
 *
 * Library code below the manager logs at DEBUG only; the layer that decides what a
 * failure means logs it once.
 */
#pragma once
#include <stdbool.h>

typedef enum fm_log_level {
	FM_LOG_DEBUG,
	FM_LOG_INFO,
	FM_LOG_WARN,
	FM_LOG_ERROR,
	_FM_LOG_LEVEL_MAX,
} fm_log_level;

/* Seed component names in CamelCase, as users and logs name them. */
#define FM_C_MIGRATION_MANAGER   "MigrationManager"
#define FM_C_POLICY_ENFORCER     "PolicyEnforcer"
#define FM_C_RESOURCE_ALLOCATOR  "ResourceAllocator"
#define FM_C_STRATEGY_SELECTOR   "MigrationStrategySelector"
#define FM_C_NETWORK_ORCH        "NetworkOrchestrator"
#define FM_C_CONTAINER_MANAGER   "ContainerManager"
#define FM_C_RUNTIME_CONTROLLER  "RuntimeController"
#define FM_C_IMAGE_MANAGER       "ImageManager"
#define FM_C_STATE_SYNC          "StateSynchronizer"
#define FM_C_CHECKPOINTING       "CheckpointingModule"
#define FM_C_DELTA_TRANSFER      "DeltaTransfer"
#define FM_C_STATE_RESTORATION   "StateRestorationModule"
#define FM_C_RESOURCE_MONITOR    "ResourceMonitor"
#define FM_C_DECISION_ENGINE     "DecisionEngine"
#define FM_C_NETWORK_MANAGER     "NetworkManager"
#define FM_C_SDN                 "SDNControllerInterface"
#define FM_C_TRAFFIC_REDIRECTOR  "TrafficRedirector"
#define FM_C_DNS_MANAGER         "DNSManager"
#define FM_C_API                 "API"
#define FM_C_DAEMON              "Daemon"

const char *fm_log_level_name(fm_log_level l);
int fm_log_level_parse(const char *s, fm_log_level *out);

/* host: this daemon's host name (JSON lines); human_fd/json_fd: -1 disables. */
void fm_log_setup(const char *host, fm_log_level min, int human_fd, int json_fd);

void fm_log(fm_log_level level, const char *component, const char *migration_id,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Formats one seed-format line into buf (no newline); used by the log and the CLI. */
void fm_log_format_human(char *buf, unsigned len, fm_log_level level, const char *component,
			 const char *msg);

#define fm_debug(comp, ...) fm_log(FM_LOG_DEBUG, comp, NULL, __VA_ARGS__)
#define fm_info(comp, ...)  fm_log(FM_LOG_INFO, comp, NULL, __VA_ARGS__)
#define fm_warn(comp, ...)  fm_log(FM_LOG_WARN, comp, NULL, __VA_ARGS__)
#define fm_err(comp, ...)   fm_log(FM_LOG_ERROR, comp, NULL, __VA_ARGS__)
