/* Migration Coordinator: the controller role.  Runs each migration through the
 * FSM (manager/fsm.h) in its own thread, talking to the source and destination
 * agents through an injected call function (HTTP in the daemon, a fake in unit
 * tests).  Every transition and every side-effecting step is journaled before it
 * starts; fm_ctl_recover() resolves what a killed controller left behind.
 */
#pragma once
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "basic/error.h"
#include "store/journal.h"

/* How the controller reaches an agent: endpoint "host:port". */
typedef int (*fm_agent_call_fn)(const char *endpoint, const char *method, const char *path,
				json_t *body, int timeout_ms, json_t **out, fm_error *err);

struct fm_mig;

typedef struct fm_controller {
	fm_journal *journal;
	char *host;           /* this daemon's host name */
	char *self_endpoint;  /* this daemon's agent, "host:port" */
	fm_agent_call_fn call;
	int rpc_timeout_ms;   /* ordinary agent calls */
	int long_timeout_ms;  /* checkpoint+transfer, restore */
	pthread_mutex_t lock;
	pthread_cond_t changed;
	struct fm_mig *running;
	bool stopping;
	pthread_mutex_t policy_lock;
	struct fm_policy_set *policies; /* --policies (fm_ctl_set_policies); NULL: none, every migration allowed */
	struct fm_lb_hook *lb_hook;     /* --lb-hook (fm_ctl_set_lb_hook); NULL: none */
	struct fm_redirector *redirector; /* --sdn/--ovsdb (fm_ctl_set_redirector); NULL: no switch to program */
	struct fm_dns *dns;             /* --dns-server/--dns-key (fm_ctl_set_dns); NULL: no DNS to update */
	char *dns_zone;                 /* --dns-zone: the zone the containers' names are updated in */
	char *probe_netns;              /* --probe-netns: a client's network namespace VERIFICATION probes from */
	uint64_t next_seq;              /* submission order, for the admission queue (under lock) */
	pthread_t watchdog;             /* ends migrations that overrun their migration_duration */
} fm_controller;

void fm_ctl_init(fm_controller *c, fm_journal *j, const char *host, const char *self_endpoint,
		 fm_agent_call_fn call);
/* Waits for running migrations to reach a safe point, then frees. */
void fm_ctl_fini(fm_controller *c);

/* Takes set (NULL: none) in place of the policies in force, which it frees;
 * migrations in PLANNING decide with one or the other, whole. */
void fm_ctl_set_policies(fm_controller *c, struct fm_policy_set *set);

/* Takes the load-balancer hook (manager/lb_hook.h) that policies with
 * trigger_load_balancer_reconfiguration run; set before the first migration. */
void fm_ctl_set_lb_hook(fm_controller *c, struct fm_lb_hook *hook);

/* Takes the Traffic Redirector (network/redirect.h) that steers migrating
 * containers' addresses through the switch; set before the first migration. */
void fm_ctl_set_redirector(fm_controller *c, struct fm_redirector *r);
/* A container is given address ip (A.B.C.D) here: flows of ours that still
 * send it to another port (a container that had it moved away, less than
 * FM_REDIRECT_HOLD_S ago) are released, so that the switch learns where it
 * is now.  -EBUSY while a migration of this controller is moving it.
 * Without a switch to program, or no such flows: nothing (the switch is not
 * asked). */
int fm_ctl_address_claim(fm_controller *c, const char *ip, fm_error *err);

/* Takes the DNS Manager's server and key (network/dns.h, heap-allocated) and
 * the zone to update: migrations that change a container's address move its
 * DNS name (network.dns_name) with it; set before the first migration. */
void fm_ctl_set_dns(fm_controller *c, struct fm_dns *dns, const char *zone);

/* Resolves migrations a previous run left unfinished (rollback, or roll forward
 * past the point of no return).  Runs them in background threads. */
void fm_ctl_recover(fm_controller *c);

/* Accepts a request {container, to, from?, strategy?, priority?, health_cmd?, health_timeout_ms?, ...}
 * and starts it; the id is written to id (>= 32 bytes).  Errors here are about the
 * request's shape; everything else happens in the FSM and is recorded there. */
int fm_ctl_submit(fm_controller *c, json_t *req, char *id, size_t idlen, fm_error *err);
/* The migration record with transitions and events after `since` (-1 = none). */
json_t *fm_ctl_get(fm_controller *c, const char *id, int since);
json_t *fm_ctl_list(fm_controller *c);
/* Cancels a migration before its point of no return (also one waiting in
 * PENDING's queue); it then rolls back (FAILED, error "cancelled by the user").  -EBUSY past that point or finished. */
int fm_ctl_cancel(fm_controller *c, const char *id, fm_error *err);

/* Known hosts. */
int fm_ctl_host_add(fm_controller *c, const char *name, const char *address, fm_error *err);
int fm_ctl_host_remove(fm_controller *c, const char *name, fm_error *err);
json_t *fm_ctl_host_list(fm_controller *c);
/* Endpoint of a host ("host:port"), NULL if unknown; caller frees. */
char *fm_ctl_endpoint(fm_controller *c, const char *name);
