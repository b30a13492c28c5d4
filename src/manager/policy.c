/* Policy Enforcer: policy files (see policy.h). */
#include "manager/policy.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "basic/util.h"

#define POLICY_FILE_MAX (1 << 20)
#define POLICIES_MAX 256
#define CONTEXT_MAX 32
#define ACTIONS_MAX 16

static const fm_policy_var_info VARS[] = {
	{ "source_cpu_utilization", FM_COND_NUMBER, "source host's CPU busy, percent (mean of the last minute)" },
	{ "destination_cpu_utilization", FM_COND_NUMBER, "destination host's CPU busy, percent (mean of the last minute)" },
	{ "source_memory_utilization", FM_COND_NUMBER, "source host's memory in use, percent (mean of the last minute)" },
	{ "destination_memory_utilization", FM_COND_NUMBER, "destination host's memory in use, percent (mean of the last minute)" },
	{ "container_cpu_utilization", FM_COND_NUMBER, "the container's CPU use, percent of one core (mean of the last minute)" },
	{ "container_memory_mib", FM_COND_NUMBER, "the container's memory, MiB" },
	{ "link_bandwidth_mbit", FM_COND_NUMBER, "rate to the destination a migration measured, Mbit/s" },
	{ "network_congestion_prob", FM_COND_NUMBER, "congestion probability of the source's link to the other hosts, 0..1 (mean of the last minute)" },
	{ "time_of_day", FM_COND_NUMBER, "local hour, 0..24 (fractional)" },
	{ "day_of_week", FM_COND_NUMBER, "1 (Monday) .. 7 (Sunday)" },
	{ "service_type", FM_COND_STRING, "the container's service_type label (container run --label)" },
	{ "container", FM_COND_STRING, "the container's name" },
	{ "source_host", FM_COND_STRING, "the source host's name" },
	{ "destination_host", FM_COND_STRING, "the destination host's name" },
	{ "strategy", FM_COND_STRING, "the strategy asked for" },
	{ "destination_cordoned", FM_COND_BOOL, "the destination takes no migrations" },
};

const fm_policy_var_info *fm_policy_vars(size_t *n)
{
	*n = ARRAY_SIZE(VARS);
	return VARS;
}

static void policy_clear(fm_policy *p)
{
	free(p->name);
	for (size_t i = 0; i < p->ncontext; i++)
		free(p->context[i]);
	free(p->context);
	free(p->vars);
	free(p->conditions);
	fm_cond_free(p->cond);
	free(p->actions);
	memset(p, 0, sizeof(*p));
}

void fm_policy_set_free(fm_policy_set *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		policy_clear(&s->v[i]);
	free(s->v);
	free(s);
}

void fm_policy_action_format(const fm_policy_action *a, char *buf, size_t len)
{
	static const char *const names[] = { "", "allow_migration", "deny_migration", "set_priority", "prefer_strategy",
					     "trigger_load_balancer_reconfiguration" };
	if (a->arg[0])
		snprintf(buf, len, "%s(\"%s\")", names[a->kind], a->arg);
	else
		snprintf(buf, len, "%s", names[a->kind]);
}

/* "name" or "name(\"arg\")", the argument one of a closed list. */
static int parse_action(const char *s, fm_policy_action *a, char *why, size_t whylen)
{
	static const struct { const char *name; fm_policy_action_kind kind; const char *args; } acts[] = {
		{ "allow_migration", FM_ACTION_ALLOW, NULL },
		{ "deny_migration", FM_ACTION_DENY, NULL },
		{ "set_priority", FM_ACTION_SET_PRIORITY, "high\0normal\0low\0" },
		{ "prefer_strategy", FM_ACTION_PREFER_STRATEGY, "COLD_MIGRATION\0PRE_COPY\0POST_COPY\0HYBRID\0" },
		{ "trigger_load_balancer_reconfiguration", FM_ACTION_LB_RECONFIGURE, NULL },
	};
	memset(a, 0, sizeof(*a));
	size_t n = strcspn(s, "(");
	for (size_t i = 0; i < ARRAY_SIZE(acts); i++) {
		if (strlen(acts[i].name) != n || strncmp(s, acts[i].name, n) != 0)
			continue;
		a->kind = acts[i].kind;
		if (!acts[i].args) {
			if (s[n]) {
				snprintf(why, whylen, "%s takes no argument", acts[i].name);
				return -1;
			}
			return 0;
		}
		/* ("ARG") exactly */
		const char *arg = s + n;
		size_t alen = strlen(arg);
		if (alen < 4 || arg[0] != '(' || arg[1] != '"' || arg[alen - 2] != '"' || arg[alen - 1] != ')' ||
		    alen - 4 >= sizeof(a->arg)) {
			snprintf(why, whylen, "%s needs one quoted argument, as in %s(\"%s\")", acts[i].name, acts[i].name,
				 acts[i].args);
			return -1;
		}
		memcpy(a->arg, arg + 2, alen - 4);
		a->arg[alen - 4] = 0;
		for (const char *o = acts[i].args; *o; o += strlen(o) + 1)
			if (!strcmp(o, a->arg))
				return 0;
		char list[128] = "";
		for (const char *o = acts[i].args; *o; o += strlen(o) + 1)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s\"%s\"", list[0] ? ", " : "", o);
		snprintf(why, whylen, "%s(\"%s\"): the argument must be one of %s", acts[i].name, a->arg, list);
		return -1;
	}
	snprintf(why, whylen, "\"%.64s\" is not an action (allow_migration, deny_migration, set_priority(...), "
		 "prefer_strategy(...), trigger_load_balancer_reconfiguration)", s);
	return -1;
}

static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == '-'))
			return false;
	}
	return true;
}

/* One policy; errors say "FIELD: ..." (the caller names the policy). */
static int parse_policy(json_t *o, fm_policy *p, fm_error *err)
{
	const char *key;
	json_t *v;
	if (!json_is_object(o))
		return fm_error_set(err, -EINVAL, "a policy must be a JSON object");
	json_object_foreach(o, key, v) {
		static const char *const known[] = { "policy_name", "CONTEXT", "CONDITIONS", "ACTIONS", "CONSTRAINTS",
						     "PRIORITY" };
		bool ok = false;
		for (size_t i = 0; i < ARRAY_SIZE(known); i++)
			ok |= !strcmp(key, known[i]);
		if (!ok)
			return fm_error_set(err, -EINVAL, "unknown field \"%.64s\" (policy_name, CONTEXT, CONDITIONS, "
					    "ACTIONS, CONSTRAINTS, PRIORITY)", key);
	}
	const char *name = json_string_value(json_object_get(o, "policy_name"));
	if (!name || !name_ok(name))
		return fm_error_set(err, -EINVAL, "policy_name: 1-64 characters of A-Z a-z 0-9 _ . - required");
	p->name = fm_xstrdup(name);

	json_t *ctx = json_object_get(o, "CONTEXT");
	if (!json_is_array(ctx) || json_array_size(ctx) > CONTEXT_MAX)
		return fm_error_set(err, -EINVAL, "CONTEXT: a list of at most %d variable names required", CONTEXT_MAX);
	p->ncontext = json_array_size(ctx);
	p->context = fm_xcalloc(p->ncontext + 1, sizeof(*p->context));
	p->vars = fm_xcalloc(p->ncontext + 1, sizeof(*p->vars));
	for (size_t i = 0; i < p->ncontext; i++) {
		const char *vn = json_string_value(json_array_get(ctx, i));
		size_t k;
		for (k = 0; vn && k < ARRAY_SIZE(VARS); k++)
			if (!strcmp(vn, VARS[k].name))
				break;
		if (!vn || k == ARRAY_SIZE(VARS))
			return fm_error_set(err, -EINVAL, "CONTEXT: \"%.64s\" is not a variable FlexiMigrate measures or "
					    "knows (fleximigrate policy vars lists them)", vn ? vn : "(not a string)");
		for (size_t j = 0; j < i; j++)
			if (!strcmp(p->context[j], vn))
				return fm_error_set(err, -EINVAL, "CONTEXT: \"%s\" is named twice", vn);
		p->context[i] = fm_xstrdup(vn);
		p->vars[i] = (fm_cond_var){ p->context[i], VARS[k].type };
	}

	const char *cond = json_string_value(json_object_get(o, "CONDITIONS"));
	if (!cond)
		return fm_error_set(err, -EINVAL, "CONDITIONS: a string required");
	p->conditions = fm_xstrdup(cond);
	int r = fm_cond_parse(cond, p->vars, p->ncontext, &p->cond, err);
	if (r < 0) {
		fm_error_prefix(err, "CONDITIONS");
		return r;
	}

	json_t *acts = json_object_get(o, "ACTIONS");
	if (!json_is_array(acts) || json_array_size(acts) == 0 || json_array_size(acts) > ACTIONS_MAX)
		return fm_error_set(err, -EINVAL, "ACTIONS: a list of 1 to %d actions required", ACTIONS_MAX);
	p->nactions = json_array_size(acts);
	p->actions = fm_xcalloc(p->nactions, sizeof(*p->actions));
	bool allow = false, deny = false;
	for (size_t i = 0; i < p->nactions; i++) {
		const char *s = json_string_value(json_array_get(acts, i));
		char why[256];
		if (!s)
			return fm_error_set(err, -EINVAL, "ACTIONS: action %zu is not a string", i + 1);
		if (parse_action(s, &p->actions[i], why, sizeof(why)) < 0)
			return fm_error_set(err, -EINVAL, "ACTIONS: %s", why);
		allow |= p->actions[i].kind == FM_ACTION_ALLOW;
		deny |= p->actions[i].kind == FM_ACTION_DENY;
	}
	if (allow && deny)
		return fm_error_set(err, -EINVAL, "ACTIONS: allow_migration and deny_migration together");

	json_t *cons = json_object_get(o, "CONSTRAINTS");
	if (cons && !json_is_object(cons))
		return fm_error_set(err, -EINVAL, "CONSTRAINTS: an object required");
	json_object_foreach(cons, key, v) {
		bool conc = !strcmp(key, "max_concurrent_migrations"), dur = !strcmp(key, "migration_duration");
		if (!conc && !dur)
			return fm_error_set(err, -EINVAL, "CONSTRAINTS: unknown constraint \"%.64s\" "
					    "(max_concurrent_migrations, migration_duration)", key);
		json_int_t n = json_integer_value(v);
		if (!json_is_integer(v) || n < 1 || n > (conc ? 64 : 86400))
			return fm_error_set(err, -EINVAL, "CONSTRAINTS: %s must be an integer from 1 to %d%s", key,
					    conc ? 64 : 86400, dur ? " (seconds)" : "");
		if (conc)
			p->max_concurrent = (int)n;
		else
			p->duration_s = (int)n;
	}

	json_t *prio = json_object_get(o, "PRIORITY");
	if (prio && (!json_is_integer(prio) || json_integer_value(prio) < -1000 || json_integer_value(prio) > 1000))
		return fm_error_set(err, -EINVAL, "PRIORITY: an integer from -1000 to 1000 required");
	p->priority = prio ? (int)json_integer_value(prio) : 0;
	return 0;
}

int fm_policy_set_parse(const char *text, size_t len, const char *origin, fm_policy_set **out, fm_error *err)
{
	json_error_t je;
	*out = NULL;
	/* a duplicate key is a mistake; never take the last silently */
	json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (!doc)
		return fm_error_set(err, -EINVAL, "%s: line %d, column %d: %s", origin, je.line, je.column, je.text);
	json_t *list = doc;
	if (json_is_object(doc) && json_object_get(doc, "policies"))
		list = json_object_get(doc, "policies");
	json_t *one = NULL;
	if (json_is_object(list)) {
		one = json_array();
		json_array_append(one, list);
		list = one;
	}
	int r = 0;
	if (!json_is_array(list) || json_array_size(list) > POLICIES_MAX) {
		r = fm_error_set(err, -EINVAL, "%s: a list of at most %d policies (or one policy) required", origin,
				 POLICIES_MAX);
		goto out;
	}
	fm_policy_set *s = fm_xcalloc(1, sizeof(*s));
	s->v = fm_xcalloc(json_array_size(list) + 1, sizeof(*s->v));
	for (size_t i = 0; i < json_array_size(list); i++) {
		fm_policy *p = &s->v[s->n++];
		json_t *o = json_array_get(list, i);
		if ((r = parse_policy(o, p, err)) < 0) {
			const char *nm = json_string_value(json_object_get(o, "policy_name"));
			fm_error_prefix(err, "%s: policy %zu%s%.64s%s", origin, i + 1, nm ? " (" : "", nm ? nm : "",
					nm ? ")" : "");
			fm_policy_set_free(s);
			goto out;
		}
		for (size_t j = 0; j + 1 < s->n; j++)
			if (!strcmp(s->v[j].name, p->name)) {
				r = fm_error_set(err, -EINVAL, "%s: policy %zu: the name %s is taken by policy %zu", origin,
						 i + 1, p->name, j + 1);
				fm_policy_set_free(s);
				goto out;
			}
	}
	*out = s;
out:
	json_decref(one);
	json_decref(doc);
	return r;
}

int fm_policy_set_load_file(const char *path, fm_policy_set **out, fm_error *err)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r = fm_read_file(path, POLICY_FILE_MAX, &text, &len);
	if (r < 0)
		return fm_error_set(err, r, "cannot read policy file %s: %s", path, r == -EFBIG ? "larger than 1 MiB" :
				    strerror(-r));
	return fm_policy_set_parse(text, len, path, out, err);
}

static int by_priority(const void *a, const void *b)
{
	const fm_policy *const *x = a, *const *y = b;
	if ((*x)->priority != (*y)->priority)
		return (*x)->priority > (*y)->priority ? -1 : 1;
	return *x < *y ? -1 : *x > *y;   /* file order */
}

/* "var=value, ..." of what the condition reads. */
static void seen(const fm_policy *p, const fm_cond_value *v, char *buf, size_t len)
{
	size_t k = 0;
	buf[0] = 0;
	for (size_t i = 0; i < p->ncontext && k + 1 < len; i++) {
		if (!fm_cond_reads(p->cond, i))
			continue;
		const char *sep = k ? ", " : "";
		if (!v[i].known)
			k += (size_t)snprintf(buf + k, len - k, "%s%s unknown", sep, p->context[i]);
		else if (p->vars[i].type == FM_COND_NUMBER)
			k += (size_t)snprintf(buf + k, len - k, "%s%s=%g", sep, p->context[i], v[i].num);
		else if (p->vars[i].type == FM_COND_STRING)
			k += (size_t)snprintf(buf + k, len - k, "%s%s=\"%.64s\"", sep, p->context[i], v[i].str ? v[i].str : "");
		else
			k += (size_t)snprintf(buf + k, len - k, "%s%s=%s", sep, p->context[i], v[i].b ? "true" : "false");
	}
}

void fm_policy_decide(const fm_policy_set *s, fm_policy_lookup_fn lookup, void *opaque, fm_policy_decision *d)
{
	memset(d, 0, sizeof(*d));
	const fm_policy **order = fm_xcalloc(s->n + 1, sizeof(*order));
	for (size_t i = 0; i < s->n; i++)
		order[i] = &s->v[i];
	qsort(order, s->n, sizeof(*order), by_priority);
	for (size_t i = 0; i < s->n; i++) {
		const fm_policy *p = order[i];
		fm_cond_value *v = fm_xcalloc(p->ncontext + 1, sizeof(*v));
		for (size_t k = 0; k < p->ncontext; k++)
			if (!lookup(opaque, p->context[k], &v[k]))
				v[k] = (fm_cond_value){ .known = false };
		char vals[512];
		seen(p, v, vals, sizeof(vals));
		bool holds = false;
		fm_error err = FM_ERROR_INIT;
		int r = fm_cond_eval(p->cond, v, &holds, &err);
		free(v);
		if (r < 0) {
			d->by = p;
			snprintf(d->why, sizeof(d->why), "policy %s (priority %d) cannot be evaluated: %.200s (%.400s): denied, as "
				 "policies fail closed", p->name, p->priority, err.msg, vals);
			fm_error_clear(&err);
			break;
		}
		if (!holds)
			continue;
		d->by = p;
		d->allowed = true;
		for (size_t k = 0; k < p->nactions; k++)
			if (p->actions[k].kind == FM_ACTION_DENY)
				d->allowed = false;
		snprintf(d->why, sizeof(d->why), "policy %s (priority %d) %s: its condition holds (%.500s)", p->name,
			 p->priority, d->allowed ? "allows the migration" : "denies the migration", vals);
		break;
	}
	if (!d->by)
		snprintf(d->why, sizeof(d->why), "no policy allows the migration: none of the %zu policies' conditions "
			 "holds", s->n);
	free(order);
}

/* A CONTEXT variable the Resource Monitors measure: its window figures
 * ({last, mean, ...}) from the hosts' /v1/info or the container's usage,
 * NULL when not measured (yet). */
static json_t *monitored(const fm_policy_facts *f, const char *var)
{
	static const struct {
		const char *var;
		int from;           /* 0 source, 1 destination, 2 container */
		const char *field;
	} map[] = {
		{ "source_cpu_utilization", 0, "cpu_utilization_percent" },
		{ "destination_cpu_utilization", 1, "cpu_utilization_percent" },
		{ "source_memory_utilization", 0, "memory_utilization_percent" },
		{ "destination_memory_utilization", 1, "memory_utilization_percent" },
		{ "network_congestion_prob", 0, "network_congestion_prob" },
		{ "container_cpu_utilization", 2, "cpu_utilization_percent" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(map); i++) {
		if (strcmp(var, map[i].var) != 0)
			continue;
		json_t *o = map[i].from == 0 ? json_object_get(f->src_info, "monitor")
			  : map[i].from == 1 ? json_object_get(f->dst_info, "monitor")
					     : json_object_get(f->cinfo, "usage");
		json_t *w = json_object_get(o, map[i].field);
		return json_is_number(json_object_get(w, "mean")) ? w : NULL;
	}
	return NULL;
}

bool fm_policy_facts_lookup(void *opaque, const char *var, fm_cond_value *v)
{
	const fm_policy_facts *f = opaque;
	json_t *j;
	*v = (fm_cond_value){ .known = true };
	if (!strcmp(var, "container")) {
		v->str = f->container;
	} else if (!strcmp(var, "source_host")) {
		v->str = f->source;
	} else if (!strcmp(var, "destination_host")) {
		v->str = f->destination;
	} else if (!strcmp(var, "strategy")) {
		v->str = f->strategy;
	} else if (!strcmp(var, "time_of_day") || !strcmp(var, "day_of_week")) {
		time_t now = time(NULL);
		struct tm tm;
		localtime_r(&now, &tm);
		v->num = !strcmp(var, "time_of_day") ? tm.tm_hour + tm.tm_min / 60.0 + tm.tm_sec / 3600.0
						     : (tm.tm_wday == 0 ? 7 : tm.tm_wday);
	} else if (!strcmp(var, "container_memory_mib") &&
		   json_is_integer(j = json_object_get(f->cinfo, "memory_usage_bytes"))) {
		v->num = (double)json_integer_value(j) / (1 << 20);
	} else if (!strcmp(var, "destination_cordoned") && json_is_boolean(j = json_object_get(f->dst_info, "cordoned"))) {
		v->b = json_is_true(j);
	} else if (!strcmp(var, "service_type") &&
		   json_is_string(j = json_object_get(json_object_get(f->cinfo, "labels"), "service_type"))) {
		v->str = json_string_value(j);
	} else if (!strcmp(var, "link_bandwidth_mbit") && f->link_bps >= 0) {
		v->num = f->link_bps / 1e6;
	} else if ((j = monitored(f, var))) {
		/* the Resource Monitor's mean over its window (docs/architecture.md) */
		v->num = json_real_value(json_object_get(j, "mean"));
	} else {
		v->known = false;
	}
	return v->known;
}
