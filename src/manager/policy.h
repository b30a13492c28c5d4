/* Policy Enforcer: migration policies in the seed's format (MISSION.md,
 * Policies), loaded and validated.
 *
 * A policy file is JSON: a list of policies, an object {"policies": [...]},
 * or one policy.  A policy:
 *
 *   policy_name   1-64 of A-Z a-z 0-9 _ . -, unique in the file
 *   CONTEXT       the variables CONDITIONS may read: names from
 *                 fm_policy_vars() (what FlexiMigrate measures or knows)
 *   CONDITIONS    the condition (manager/policy_cond.h), typed against CONTEXT
 *   ACTIONS       a closed set: allow_migration, deny_migration,
 *                 set_priority("high"|"normal"|"low"),
 *                 prefer_strategy("COLD_MIGRATION"|"PRE_COPY"|"POST_COPY"|"HYBRID"),
 *                 trigger_load_balancer_reconfiguration
 *   CONSTRAINTS   optional: max_concurrent_migrations (1..64),
 *                 migration_duration (seconds, 1..86400)
 *   PRIORITY      optional integer -1000..1000 (default 0)
 *
 * Anything else (an unknown key, variable or action, a wrong type, both
 * allow and deny) is an error naming the policy and the field; a condition's
 * error also names its line and column. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "basic/error.h"
#include "manager/policy_cond.h"

typedef enum fm_policy_action_kind {
	FM_ACTION_ALLOW = 1,
	FM_ACTION_DENY,
	FM_ACTION_SET_PRIORITY,
	FM_ACTION_PREFER_STRATEGY,
	FM_ACTION_LB_RECONFIGURE,
} fm_policy_action_kind;

typedef struct fm_policy_action {
	fm_policy_action_kind kind;
	char arg[32];               /* set_priority's and prefer_strategy's argument */
} fm_policy_action;

typedef struct fm_policy {
	char *name;
	char **context;             /* CONTEXT's names, in its order */
	fm_cond_var *vars;          /* ... typed (the condition's vars[]) */
	size_t ncontext;
	char *conditions;
	fm_cond *cond;
	fm_policy_action *actions;
	size_t nactions;
	int max_concurrent;         /* 0: no limit */
	int duration_s;             /* 0: no limit */
	int priority;
} fm_policy;

typedef struct fm_policy_set {
	fm_policy *v;
	size_t n;
} fm_policy_set;

/* A variable a CONTEXT may name, and where its value comes from. */
typedef struct fm_policy_var_info {
	const char *name;
	fm_cond_type type;
	const char *meaning;
} fm_policy_var_info;
const fm_policy_var_info *fm_policy_vars(size_t *n);

/* Parses a policy file's text; origin names it in errors. */
int fm_policy_set_parse(const char *text, size_t len, const char *origin, fm_policy_set **out, fm_error *err);
int fm_policy_set_load_file(const char *path, fm_policy_set **out, fm_error *err);
void fm_policy_set_free(fm_policy_set *s);
/* "allow_migration", "set_priority(\"high\")": as written in a file. */
void fm_policy_action_format(const fm_policy_action *a, char *buf, size_t len);

/* Which policy decides (the rule, documented in docs/architecture.md):
 * policies are taken by PRIORITY, highest first, equal ones in file order;
 * the first whose condition holds decides: denied if it has deny_migration,
 * allowed otherwise.  A condition that cannot be evaluated (a variable without
 * a value) denies at once: policies fail closed.  When policies are loaded
 * and no condition holds, the migration is denied ("no policy allows it").
 * lookup gives a CONTEXT variable's value (false: unknown). */
typedef bool (*fm_policy_lookup_fn)(void *opaque, const char *var, fm_cond_value *out);

/* What a migration's CONTEXT values come from: the request, the source's
 * description of the container (GET /v1/containers/NAME: labels, usage), both
 * hosts' GET /v1/info (monitor, cordoned), the link's measured rate (< 0:
 * unknown).  fm_policy_facts_lookup is an fm_policy_lookup_fn over them: the
 * controller's and the C API's one rule (fm_policy_vars() lists the
 * variables). */
typedef struct fm_policy_facts {
	const char *container, *source, *destination, *strategy;
	json_t *cinfo, *src_info, *dst_info;
	double link_bps;
} fm_policy_facts;
bool fm_policy_facts_lookup(void *facts, const char *var, fm_cond_value *out);
typedef struct fm_policy_decision {
	bool allowed;
	const fm_policy *by;        /* NULL: no condition held */
	char why[1024];             /* which policy, and the values it saw */
} fm_policy_decision;
void fm_policy_decide(const fm_policy_set *s, fm_policy_lookup_fn lookup, void *opaque, fm_policy_decision *d);
