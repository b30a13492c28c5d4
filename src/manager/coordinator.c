#include "manager/coordinator.h"
#include "manager/lb_hook.h"
#include "manager/policy.h"
#include "network/dns.h"
#include "network/probe.h"
#include "network/redirect.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "basic/log.h"
#include "basic/util.h"
#include "manager/fsm.h"
#include "manager/strategy.h"
#include "runtime/net.h"

/* Rollback retries an unreachable agent this often before giving up on it. */
#define ROLLBACK_ATTEMPTS 3
#define ROLLBACK_BACKOFF_MS 200
#define ROLLBACK_CALL_TIMEOUT_MS 3000
/* An incomplete rollback (a host unreachable) is retried at most this far apart. */
#define ROLLBACK_RETRY_MAX_S 30

/* One migration being driven. */
typedef struct fm_mig {
	fm_controller *ctl;
	char id[32];
	char container[64], source[64], dest[64];
	char *src_ep, *dst_ep;
	fm_strategy requested, strategy;
	fm_mstate state;
	json_t *req;        /* the request as submitted */
	json_t *cinfo;      /* source's description of the container */
	json_t *src_info, *dst_info;
	json_t *prep;       /* destination's prepare reply (data channel) */
	fm_error err;       /* the first error: survives rollback */
	int64_t t0_us;      /* monotonic start */
	int64_t downtime_ms;
	int64_t bytes;
	json_t *held_events; /* log events of the freeze, journaled after it (under held_lock) */
	bool recovering;    /* resolving after a controller restart */
	bool cancelled;     /* `migration cancel` or the deadline (under ctl->lock) ... */
	char stop_reason[320]; /* ... and why, for the error */
	bool committing;    /* past the point of no return: cancel refused (under ctl->lock) */
	int precopy_rounds; /* PRE_COPY/HYBRID: rounds done (the last one is the final dump's parent) */
	bool converged;     /* ... and whether they converged */
	/* the admission queue (CONSTRAINTS max_concurrent_migrations), under ctl->lock */
	int prio;           /* FM_PRIO_*: the queue's order, then seq */
	uint64_t seq;
	int limit;          /* the admitting policy's max_concurrent_migrations (0: none) */
	bool waiting;       /* in PENDING's queue */
	bool admitted;      /* past PENDING: counts against the limits */
	int64_t deadline_us; /* CONSTRAINTS migration_duration's end, monotonic (0: none; under ctl->lock) */
	int duration_s;
	char policy[65];    /* the policy that allowed it (PLANNING) */
	bool hinted;        /* its prefer_strategy ... */
	fm_strategy hint;
	bool lb_wanted;     /* its trigger_load_balancer_reconfiguration */
	struct lb_run {
		pthread_t thread;
		bool started;
		json_t *event;
		int rc;
		char outcome[600];
	} lb;
	/* the Network Orchestrator's part: the container's address, its MAC and
	 * the switch ports of both hosts (empty: nothing to steer) */
	char net_ip[20], net_mac[18], net_src_port[64], net_dst_port[64];
	/* the DNS Manager's: the container's name, its record before the
	 * migration and the address it gets (empty name: nothing to update) */
	char dns_name[256], dns_old_ip[20], dns_new_ip[20];
	uint32_t dns_old_ttl;
	bool forward_ready; /* the source is ready to forward the old address (network_forward_prepare) */
	pthread_t thread;
	struct fm_mig *next;
} fm_mig;

/* A migration's priority (request "priority", policy action set_priority):
 * orders the admission queue. */
enum { FM_PRIO_LOW, FM_PRIO_NORMAL, FM_PRIO_HIGH };
static const char *const prio_names[] = { "low", "normal", "high" };

static int prio_from_name(const char *s)
{
	for (int i = 0; s && i < (int)ARRAY_SIZE(prio_names); i++)
		if (!strcmp(s, prio_names[i]))
			return i;
	return -1;
}

/* ------------------------------------------------------------ journal + log */

static void mlog(fm_mig *m, fm_log_level lvl, const char *comp, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;

static void event_insert(fm_mig *m, int64_t at_ms, const char *level, const char *comp, const char *msg)
{
	fm_journal_exec(m->ctl->journal,
			"INSERT INTO events(mid, seq, at_ms, level, component, message) VALUES(?, "
			"(SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE mid = ?), ?, ?, ?, ?)",
			"ssisss", m->id, m->id, at_ms, level, comp, msg);
}

static void mlog(fm_mig *m, fm_log_level lvl, const char *comp, const char *fmt, ...)
{
	char msg[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fm_log(lvl, comp, m->id, "%s", msg);
	int64_t at = fm_now_wall_ms();
	pthread_mutex_lock(&held_lock);
	bool held = m->held_events != NULL;
	if (held)
		json_array_append_new(m->held_events, json_pack("{s:I, s:s, s:s, s:s}", "at", (json_int_t)at, "level",
								fm_log_level_name(lvl), "comp", comp, "msg", msg));
	pthread_mutex_unlock(&held_lock);
	if (!held)
		event_insert(m, at, fm_log_level_name(lvl), comp, msg);
}

/* While the container is frozen, each journal commit (an fsync) is downtime:
 * the log's events wait in memory, in order and with their times, and are
 * journaled in one commit after the restore (events_flush; the daemon's own
 * log has them at once).  Only the migration's thread holds and flushes. */
static void events_hold(fm_mig *m)
{
	pthread_mutex_lock(&held_lock);
	if (!m->held_events)
		m->held_events = json_array();
	pthread_mutex_unlock(&held_lock);
}

static void events_flush(fm_mig *m)
{
	pthread_mutex_lock(&held_lock);
	json_t *ev = m->held_events;
	m->held_events = NULL;
	pthread_mutex_unlock(&held_lock);
	if (!ev)
		return;
	bool tx = fm_journal_begin(m->ctl->journal) == 0;
	size_t i;
	json_t *e;
	json_array_foreach(ev, i, e)
		event_insert(m, json_integer_value(json_object_get(e, "at")), json_string_value(json_object_get(e, "level")),
			     json_string_value(json_object_get(e, "comp")), json_string_value(json_object_get(e, "msg")));
	if (tx && fm_journal_commit(m->ctl->journal) < 0)
		fm_err(FM_C_MIGRATION_MANAGER, "journal: cannot record the log of %s's freeze", m->id);
	json_decref(ev);
}

/* Journals the transition (durably), then logs it in the seed's format. */
static void transition(fm_mig *m, fm_mstate to, fm_log_level lvl, const char *comp, const char *what)
{
	fm_mstate from = m->state;
	fm_journal *j = m->ctl->journal;
	int64_t now = fm_now_wall_ms();

	if (!fm_fsm_allowed(from, to))
		fm_err(FM_C_MIGRATION_MANAGER, "internal: transition %s -> %s is not in the FSM",
		       fm_mstate_name(from), fm_mstate_name(to));
	if (fm_journal_begin(j) == 0) {
		fm_journal_exec(j, "INSERT INTO transitions(mid, seq, from_state, to_state, at_ms, reason) VALUES(?, "
				"(SELECT COALESCE(MAX(seq), 0) + 1 FROM transitions WHERE mid = ?), ?, ?, ?, ?)",
				"ssssis", m->id, m->id, fm_mstate_name(from), fm_mstate_name(to), now, what);
		fm_journal_exec(j, "UPDATE migrations SET state = ?, updated_ms = ? WHERE id = ?", "sis",
				fm_mstate_name(to), now, m->id);
		if (fm_journal_commit(j) < 0)
			fm_err(FM_C_MIGRATION_MANAGER, "journal: cannot record %s -> %s for %s",
			       fm_mstate_name(from), fm_mstate_name(to), m->id);
	}
	m->state = to;
	mlog(m, lvl, comp, "%s - Transitioning: %s -> %s", what, fm_mstate_name(from), fm_mstate_name(to));
}

/* Journals a step; a step whose start cannot be journaled must not be taken (a
 * restart would not know to undo it). */
static int step_mark_err(fm_mig *m, const char *step, const char *status, fm_error *err)
{
	int r = fm_journal_exec(m->ctl->journal, "INSERT OR REPLACE INTO steps(mid, step, status, at_ms) VALUES(?, ?, ?, ?)",
				"sssi", m->id, step, status, fm_now_wall_ms());
	if (r < 0)
		return fm_error_set(err, r, "cannot journal step %s (%s): is the state directory's disk full?", step,
				    strerror(-r));
	return 0;
}

static int step_mark(fm_mig *m, const char *step, const char *status)
{
	return step_mark_err(m, step, status, &m->err);
}

static bool step_started(fm_mig *m, const char *step)
{
	return fm_journal_query_int(m->ctl->journal, 0, "SELECT COUNT(*) FROM steps WHERE mid = ? AND step = ?",
				    "ss", m->id, step) > 0;
}

/* What must be durable before the destination restores, in the freeze's one
 * journal commit: the checkpoint done and its bytes, the link's rate
 * (link_bps > 0), "restore" and, with an address, "redirect" started. */
static int restore_marks(fm_mig *m, double link_bps)
{
	fm_journal *j = m->ctl->journal;
	if (fm_journal_begin(j) < 0)
		return fm_error_set(&m->err, -EIO, "cannot journal the restore's start: is the state directory's disk full?");
	/* (fm_journal_exec counts the rows changed: only < 0 is a failure) */
	int r = step_mark(m, "checkpoint", "done");
	if (r >= 0)
		r = fm_journal_exec(j, "UPDATE migrations SET bytes_transferred = ? WHERE id = ?", "is", m->bytes, m->id);
	if (r >= 0 && link_bps > 0)
		r = fm_journal_exec(j, "INSERT OR REPLACE INTO links(source, destination, bps, at_ms, mid) VALUES(?, ?, ?, ?, ?)",
				    "ssdis", m->source, m->dest, link_bps, fm_now_wall_ms(), m->id);
	if (r >= 0)
		r = step_mark(m, "restore", "started");
	if (r >= 0 && *m->net_ip)
		r = step_mark(m, "redirect", "started");
	if (r < 0) {
		fm_journal_rollback(j);
		/* (step_mark has said why already: the first error stays) */
		return fm_error_set(&m->err, r, "cannot journal the restore's start: %s", strerror(-r));
	}
	if ((r = fm_journal_commit(j)) < 0)
		return fm_error_set(&m->err, r, "cannot journal the restore's start: is the state directory's disk full?");
	return 0;
}

/* Waits before retry number `attempt` (200 ms doubling, capped): the peer may be
 * restarting or the link recovering.  Returns false at once when the controller
 * is stopping; the migration then stays unresolved and the next start resumes it. */
static bool retry_wait(fm_controller *c, int attempt)
{
	int64_t ms = (int64_t)ROLLBACK_BACKOFF_MS << (attempt < 8 ? attempt : 8);
	struct timespec until;

	if (ms > ROLLBACK_RETRY_MAX_S * 1000)
		ms = ROLLBACK_RETRY_MAX_S * 1000;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&c->lock);
	while (!c->stopping && pthread_cond_timedwait(&c->changed, &c->lock, &until) == 0)
		;
	bool go_on = !c->stopping;
	pthread_mutex_unlock(&c->lock);
	return go_on;
}

/* ------------------------------------------------------------ agent calls */

static int agent(fm_mig *m, const char *ep, const char *method, int timeout_ms, json_t *body,
		 json_t **out, fm_error *err, const char *pathfmt, ...) __attribute__((format(printf, 8, 9)));

static int agent(fm_mig *m, const char *ep, const char *method, int timeout_ms, json_t *body,
		 json_t **out, fm_error *err, const char *pathfmt, ...)
{
	char path[512];
	va_list ap;
	int r;

	va_start(ap, pathfmt);
	vsnprintf(path, sizeof(path), pathfmt, ap);
	va_end(ap);
	if (!ep) {
		/* a host forgotten (or never known) by this controller */
		json_decref(body);
		return fm_error_set(err, -EHOSTUNREACH, "no address known for the host of %s", path);
	}
	r = m->ctl->call(ep, method, path, body, timeout_ms ? timeout_ms : m->ctl->rpc_timeout_ms, out, err);
	json_decref(body);
	return r;
}

/* ------------------------------------------------------------ the steps */

static int admit(fm_mig *m);

/* PENDING: the request is valid, both hosts answer, the container exists and
 * runs; then it waits its turn in the admission queue. */
static int step_pending(fm_mig *m)
{
	fm_controller *c = m->ctl;
	const char *from = json_string_value(json_object_get(m->req, "from"));
	fm_error *err = &m->err;
	json_t *hosts;
	int r;

	mlog(m, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "Migration request %s received: container %s to %s, strategy %s",
	     m->id, m->container, m->dest, fm_strategy_name(m->requested));
	if (json_is_string(json_object_get(m->req, "reason")))
		mlog(m, FM_LOG_INFO, FM_C_DECISION_ENGINE, "Requested by the Decision Engine: %s",
		     json_string_value(json_object_get(m->req, "reason")));
	m->dst_ep = fm_ctl_endpoint(c, m->dest);
	if (!m->dst_ep)
		return fm_error_set(err, -ENOENT, "unknown destination host %s (add it with `fleximigrate host add`)", m->dest);

	if (from) {
		snprintf(m->source, sizeof(m->source), "%s", from);
		m->src_ep = fm_ctl_endpoint(c, from);
		if (!m->src_ep)
			return fm_error_set(err, -ENOENT, "unknown source host %s", from);
		r = agent(m, m->src_ep, "GET", 0, NULL, &m->cinfo, err, "/v1/containers/%s", m->container);
		if (r == -ENOENT) {
			fm_error_clear(err);
			return fm_error_set(err, -ENOENT, "unknown container %s: not on %s", m->container, from);
		}
		if (r < 0) {
			fm_error_prefix(err, "source host %s is unreachable", from);
			return r;
		}
	} else {
		/* find the container: this host first, then every known host */
		char unreachable[512] = "";
		hosts = fm_ctl_host_list(c);
		size_t i;
		json_t *h;
		json_array_foreach(hosts, i, h) {
			const char *name = json_string_value(json_object_get(h, "name"));
			const char *ep = json_string_value(json_object_get(h, "address"));
			fm_error e = FM_ERROR_INIT;
			json_t *ci = NULL;
			r = agent(m, ep, "GET", 0, NULL, &ci, &e, "/v1/containers/%s", m->container);
			fm_error_clear(&e);
			if (r == 0) {
				snprintf(m->source, sizeof(m->source), "%s", name);
				m->src_ep = fm_xstrdup(ep);
				m->cinfo = ci;
				break;
			}
			if (r != -ENOENT)
				snprintf(unreachable + strlen(unreachable), sizeof(unreachable) - strlen(unreachable),
					 "%s%s", *unreachable ? ", " : "", name);
		}
		json_decref(hosts);
		if (!m->cinfo) {
			if (*unreachable)
				return fm_error_set(err, -EHOSTUNREACH,
						    "container %s not found on any reachable host; unreachable: %s",
						    m->container, unreachable);
			return fm_error_set(err, -ENOENT, "unknown container %s: no known host runs it", m->container);
		}
	}
	fm_journal_exec(c->journal, "UPDATE migrations SET source = ? WHERE id = ?", "ss", m->source, m->id);
	if (!strcmp(m->source, m->dest))
		return fm_error_set(err, -EINVAL, "destination %s equals the source: container %s is already there",
				    m->dest, m->container);
	const char *status = json_string_value(json_object_get(m->cinfo, "status"));
	if (!status || strcmp(status, "running") != 0)
		return fm_error_set(err, -EINVAL, "container %s is %s on %s: only running containers are migrated",
				    m->container, status ? status : "in an unknown state", m->source);
	if ((r = agent(m, m->src_ep, "GET", 0, NULL, &m->src_info, err, "/v1/info")) < 0) {
		fm_error_prefix(err, "source host %s is unreachable", m->source);
		return r;
	}
	if ((r = agent(m, m->dst_ep, "GET", 0, NULL, &m->dst_info, err, "/v1/info")) < 0) {
		fm_error_prefix(err, "destination host %s is unreachable", m->dest);
		return r;
	}
	return admit(m);
}

/* The Strategy Selector's window for measuring what a container touches. */
#define FM_WORKING_SET_WINDOW_MS 500
/* A transfer smaller than this says little about the link's rate. */
#define FM_LINK_SAMPLE_MIN (8 << 20)

/* A policy CONTEXT variable's value for this migration: the facts the
 * controller gathered in PENDING (manager/policy.h). */
static bool policy_lookup(void *opaque, const char *var, fm_cond_value *v)
{
	fm_mig *m = opaque;
	fm_policy_facts f = { .container = m->container, .source = m->source, .destination = m->dest,
			      .strategy = fm_strategy_name(m->requested), .cinfo = m->cinfo, .src_info = m->src_info,
			      .dst_info = m->dst_info, .link_bps = -1 };
	if (!strcmp(var, "link_bandwidth_mbit")) {
		json_t *row = fm_journal_query_one(m->ctl->journal, "SELECT bps FROM links WHERE source = ? AND destination = ?",
						   "ss", m->source, m->dest);
		if (row)
			f.link_bps = json_real_value(json_object_get(row, "bps"));
		json_decref(row);
	}
	return fm_policy_facts_lookup(&f, var, v);
}

/* PLANNING's decision, with the values of this moment; the deciding policy's
 * actions and constraints become the migration's. */
static int enforce_policies(fm_mig *m)
{
	fm_controller *c = m->ctl;
	int r = 0;
	/* the set in force stays whole while it decides (a reload waits) */
	pthread_mutex_lock(&c->policy_lock);
	const fm_policy_set *ps = c->policies;
	if (!ps || ps->n == 0) {
		mlog(m, FM_LOG_INFO, FM_C_POLICY_ENFORCER, "No migration policies loaded: migration allowed by default");
		goto out;
	}
	fm_policy_decision d;
	fm_policy_decide(ps, policy_lookup, m, &d);
	if (!d.allowed) {
		r = fm_error_set(&m->err, -EPERM, "migration policy: %s", d.why);
		goto out;
	}
	mlog(m, FM_LOG_INFO, FM_C_POLICY_ENFORCER, "Migration allowed: %s", d.why);
	snprintf(m->policy, sizeof(m->policy), "%s", d.by->name);
	for (size_t i = 0; i < d.by->nactions; i++) {
		const fm_policy_action *a = &d.by->actions[i];
		switch (a->kind) {
		case FM_ACTION_SET_PRIORITY:
			m->prio = prio_from_name(a->arg); /* applied in the queue already; kept for the record */
			break;
		case FM_ACTION_PREFER_STRATEGY:
			m->hint = fm_strategy_from_name(a->arg);
			m->hinted = m->hint != _FM_STRATEGY_INVALID;
			break;
		case FM_ACTION_LB_RECONFIGURE:
			m->lb_wanted = true;
			if (!c->lb_hook)
				mlog(m, FM_LOG_WARN, FM_C_POLICY_ENFORCER, "Policy %s asks to reconfigure the load balancer, "
				     "but this controller has no --lb-hook: nothing will run", d.by->name);
			break;
		default:
			break;
		}
	}
	if (d.by->duration_s > 0) {
		pthread_mutex_lock(&c->lock);
		m->duration_s = d.by->duration_s;
		m->deadline_us = fm_now_mono_us() + (int64_t)d.by->duration_s * 1000000;
		pthread_cond_broadcast(&c->changed); /* the watchdog takes the new deadline */
		pthread_mutex_unlock(&c->lock);
		mlog(m, FM_LOG_INFO, FM_C_POLICY_ENFORCER, "Policy %s allows this migration %d s (migration_duration): "
		     "aborted and rolled back if it is not past its point of no return by then", d.by->name, d.by->duration_s);
	}
out:
	pthread_mutex_unlock(&c->policy_lock);
	return r;
}

/* ------------------------------------------------------------ admission queue */

/* The queue's order: higher priority first, then earlier requests. */
static bool ahead(const fm_mig *a, const fm_mig *b)
{
	return a->prio != b->prio ? a->prio > b->prio : a->seq < b->seq;
}

/* Under ctl->lock.  The rule (docs/architecture.md, Policies): a request
 * leaves PENDING when fewer migrations than the limit of the policy that
 * allows it are past PENDING, and no request ahead of it that could leave now
 * waits.  *active and *before report what it waits for. */
static bool admissible_locked(fm_controller *c, const fm_mig *m, int *active, int *before)
{
	int n = 0, k = 0;
	bool yield = false;
	for (fm_mig *o = c->running; o; o = o->next)
		n += o->admitted;
	for (fm_mig *o = c->running; o; o = o->next)
		if (o != m && o->waiting && ahead(o, m)) {
			k++;
			yield |= o->limit == 0 || n < o->limit;
		}
	*active = n;
	*before = k;
	return !(m->limit > 0 && n >= m->limit) && !yield;
}

/* The end of PENDING: the policy that would allow the migration now gives the
 * queue its limit (max_concurrent_migrations) and priority (set_priority);
 * PLANNING decides again with the values of its moment.  -ESHUTDOWN when the
 * controller stops meanwhile: the request stays PENDING for its next start. */
static int admit(fm_mig *m)
{
	fm_controller *c = m->ctl;
	int prio = m->prio, limit = 0;
	char by[160] = "";

	pthread_mutex_lock(&c->policy_lock);
	if (c->policies && c->policies->n) {
		fm_policy_decision d;
		fm_policy_decide(c->policies, policy_lookup, m, &d);
		if (d.allowed && d.by) {
			limit = d.by->max_concurrent;
			for (size_t i = 0; i < d.by->nactions; i++)
				if (d.by->actions[i].kind == FM_ACTION_SET_PRIORITY) {
					prio = prio_from_name(d.by->actions[i].arg);
					snprintf(by, sizeof(by), ", set by policy %s", d.by->name);
				}
			if (limit)
				snprintf(by + strlen(by), sizeof(by) - strlen(by), "; policy %s allows %d at a time",
					 d.by->name, limit);
		}
	}
	pthread_mutex_unlock(&c->policy_lock);

	int64_t t0 = fm_now_mono_us();
	int active, before;
	bool queued = false;
	pthread_mutex_lock(&c->lock);
	m->prio = prio;
	m->limit = limit;
	m->waiting = true;
	while (!m->cancelled && !c->stopping && !admissible_locked(c, m, &active, &before)) {
		if (!queued) {
			queued = true;
			pthread_mutex_unlock(&c->lock);
			mlog(m, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "Queued in PENDING (priority %s%s): %d migration%s "
			     "under way, %d request%s ahead of this one", prio_names[prio], by, active, active == 1 ? "" : "s",
			     before, before == 1 ? "" : "s");
			pthread_mutex_lock(&c->lock);
			continue;
		}
		pthread_cond_wait(&c->changed, &c->lock);
	}
	m->waiting = false;
	bool cancelled = m->cancelled, stopping = c->stopping;
	m->admitted = !cancelled && !stopping;
	pthread_cond_broadcast(&c->changed); /* the next in the queue may go */
	pthread_mutex_unlock(&c->lock);
	if (cancelled)
		return -ECANCELED;
	if (stopping)
		return -ESHUTDOWN;
	if (queued) {
		mlog(m, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "Leaves the queue after %.1f s",
		     (double)(fm_now_mono_us() - t0) / 1e6);
		/* PLANNING decides on the hosts and the container as they are now */
		json_t *src = NULL, *dst = NULL, *ci = NULL;
		fm_error e = FM_ERROR_INIT;
		if (agent(m, m->src_ep, "GET", 0, NULL, &src, &e, "/v1/info") == 0 &&
		    agent(m, m->dst_ep, "GET", 0, NULL, &dst, &e, "/v1/info") == 0 &&
		    agent(m, m->src_ep, "GET", 0, NULL, &ci, &e, "/v1/containers/%s", m->container) == 0) {
			json_decref(m->src_info);
			json_decref(m->dst_info);
			json_decref(m->cinfo);
			m->src_info = TAKE_PTR(src);
			m->dst_info = TAKE_PTR(dst);
			m->cinfo = TAKE_PTR(ci);
		} else {
			json_decref(src);
			json_decref(dst);
			json_decref(ci);
			int r = e.code ? e.code : -EIO;
			fm_error_move(&m->err, &e);
			fm_error_prefix(&m->err, "after waiting in the queue");
			return r;
		}
	}
	return 0;
}

void fm_ctl_set_policies(fm_controller *c, fm_policy_set *set)
{
	pthread_mutex_lock(&c->policy_lock);
	fm_policy_set *old = c->policies;
	c->policies = set;
	pthread_mutex_unlock(&c->policy_lock);
	fm_policy_set_free(old);
}

/* The strategy to select from: the request's, or the deciding policy's
 * prefer_strategy when the request left the choice open (no strategy, or
 * LIVE_MIGRATION) and the source can do it. */
static fm_strategy strategy_wanted(fm_mig *m, json_t *src_caps)
{
	fm_error e = FM_ERROR_INIT;
	const char *asked = fm_strategy_name(m->requested);
	if (!m->hinted || m->hint == m->requested)
		return m->requested;
	if (json_is_string(json_object_get(m->req, "strategy")) && m->requested != FM_STRATEGY_LIVE) {
		mlog(m, FM_LOG_INFO, FM_C_STRATEGY_SELECTOR, "Policy %s prefers %s, but the request names %s: the "
		     "request's choice stands", m->policy, fm_strategy_name(m->hint), asked);
		return m->requested;
	}
	if (fm_strategy_host_ready(m->hint, src_caps, "source", m->source, &e) < 0) {
		mlog(m, FM_LOG_INFO, FM_C_STRATEGY_SELECTOR, "Policy %s prefers %s, but %s: selecting from %s instead",
		     m->policy, fm_strategy_name(m->hint), e.msg, asked);
		fm_error_clear(&e);
		return m->requested;
	}
	mlog(m, FM_LOG_INFO, FM_C_STRATEGY_SELECTOR, "Policy %s prefers %s: taken in place of %s%s", m->policy,
	     fm_strategy_name(m->hint), asked, json_is_string(json_object_get(m->req, "strategy")) ? "" : " (the default)");
	return m->hint;
}

/* PLANNING: policies, strategy, resources reserved on the destination. */
static int step_planning(fm_mig *m)
{
	char reason[512];
	int64_t mem, cpu;
	char memtxt[32];
	int r;

	if ((r = enforce_policies(m)) < 0)
		return r;
	fm_strategy_inputs in = { .src_caps = json_object_get(m->src_info, "capabilities") };
	json_auto_t *ws = NULL, *link = NULL;
	char origin[128] = "";
	in.memory_bytes = (uint64_t)json_integer_value(json_object_get(m->cinfo, "memory_usage_bytes"));
	if (m->requested == FM_STRATEGY_LIVE) {
		/* what it touches now: the part of its memory that will fault first */
		if (agent(m, m->src_ep, "GET", 10000, NULL, &ws, NULL, "/v1/containers/%s/workingset?ms=%d", m->container,
			  FM_WORKING_SET_WINDOW_MS) == 0) {
			in.touched_bytes = (uint64_t)json_integer_value(json_object_get(ws, "referenced_bytes"));
			in.touched_interval_ms = (int)json_integer_value(json_object_get(ws, "interval_ms"));
			if (json_integer_value(json_object_get(ws, "rss_bytes")) > 0)
				in.memory_bytes = (uint64_t)json_integer_value(json_object_get(ws, "rss_bytes"));
		}
	}
	if (json_is_integer(json_object_get(m->req, "bandwidth_bps"))) {
		in.link_bps = (double)json_integer_value(json_object_get(m->req, "bandwidth_bps"));
		in.link_origin = "the --bandwidth cap";
	} else if ((link = fm_journal_query_one(m->ctl->journal, "SELECT bps, mid FROM links WHERE source = ? AND destination = ?",
						"ss", m->source, m->dest))) {
		in.link_bps = json_real_value(json_object_get(link, "bps"));
		snprintf(origin, sizeof(origin), "measured by migration %s", json_string_value(json_object_get(link, "mid")) ?: "?");
		in.link_origin = origin;
	}
	r = fm_strategy_select(strategy_wanted(m, in.src_caps), &in, &m->strategy, reason, sizeof(reason), &m->err);
	if (r < 0)
		return r;
	fm_journal_exec(m->ctl->journal, "UPDATE migrations SET strategy = ? WHERE id = ?", "ss",
			fm_strategy_name(m->strategy), m->id);
	mlog(m, FM_LOG_INFO, FM_C_STRATEGY_SELECTOR, "Strategy %s chosen: %s", fm_strategy_name(m->strategy), reason);

	/* reserve what the container may use: its limit, else what it uses now */
	mem = json_integer_value(json_object_get(m->cinfo, "memory_bytes"));
	if (mem <= 0)
		mem = json_integer_value(json_object_get(m->cinfo, "memory_usage_bytes"));
	cpu = json_integer_value(json_object_get(m->cinfo, "cpu_milli"));
	if ((r = step_mark(m, "reserve", "started")) < 0)
		return r;
	r = agent(m, m->dst_ep, "POST", 0,
		  json_pack("{s:s, s:I, s:I}", "container", m->container, "cpu_milli", (json_int_t)cpu,
			    "memory_bytes", (json_int_t)mem),
		  NULL, &m->err, "/v1/agent/migrations/%s/reserve", m->id);
	if (r < 0) {
		fm_error_prefix(&m->err, "no resources on %s", m->dest);
		return r;
	}
	step_mark(m, "reserve", "done");
	fm_format_bytes((uint64_t)mem, memtxt, sizeof(memtxt));
	if (cpu > 0)
		mlog(m, FM_LOG_INFO, FM_C_RESOURCE_ALLOCATOR, "Reserved %.2f CPU and %s of memory on %s",
		     (double)cpu / 1000.0, memtxt, m->dest);
	else
		mlog(m, FM_LOG_INFO, FM_C_RESOURCE_ALLOCATOR, "Reserved %s of memory on %s (no CPU limit to reserve)",
		     memtxt, m->dest);
	return 0;
}

/* Adds the migration's transfer options (bandwidth cap, compression) to an
 * agent request. */
/* The container's address on the destination when the request changes it
 * ("new_ip"), else NULL: it keeps its address. */
static const char *new_ip(fm_mig *m)
{
	return json_string_value(json_object_get(m->req, "new_ip"));
}

static json_t *with_transfer_opts(fm_mig *m, json_t *body)
{
	json_t *bw = json_object_get(m->req, "bandwidth_bps"), *cz = json_object_get(m->req, "compress");
	if (json_is_integer(bw))
		json_object_set(body, "bandwidth_bps", bw);
	json_object_set_new(body, "compress", json_integer(json_is_integer(cz) ? json_integer_value(cz) : -1));
	json_object_set_new(body, "prefetch", json_boolean(!json_is_false(json_object_get(m->req, "prefetch"))));
	if (new_ip(m))
		json_object_set_new(body, "tcp_close", json_true());
	return body;
}

/* ------------------------------------------------------------ load-balancer hook */

static void *lb_thread(void *opaque)
{
	fm_mig *m = opaque;
	m->lb.rc = fm_lb_hook_run(m->ctl->lb_hook, m->lb.event, m->lb.outcome, sizeof(m->lb.outcome));
	return NULL;
}

/* Starts the hook for event ("switchover", "rollback") beside the migration,
 * when the deciding policy asked for it. */
static void lb_start(fm_mig *m, const char *event)
{
	const fm_lb_hook *h = m->ctl->lb_hook;
	if (!m->lb_wanted || !h || m->lb.started)
		return;
	json_decref(m->lb.event);
	m->lb.event = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:s?, s:O?}", "event", event, "migration", m->id,
				"container", m->container, "source", m->source, "destination", m->dest, "strategy",
				fm_strategy_name(m->strategy), "policy", m->policy, "source_address", m->src_ep,
				"destination_address", m->dst_ep, "network", json_object_get(m->cinfo, "network"));
	mlog(m, FM_LOG_INFO, FM_C_NETWORK_ORCH, "Reconfiguring the load balancer for the %s (policy %s's "
	     "trigger_load_balancer_reconfiguration): %s", event, m->policy, h->program ? h->program : h->url);
	m->lb.started = pthread_create(&m->lb.thread, NULL, lb_thread, m) == 0;
	if (!m->lb.started)
		mlog(m, FM_LOG_WARN, FM_C_NETWORK_ORCH, "Cannot start the load-balancer hook: no thread");
}

/* Waits for the hook (bounded by its timeout) and logs what it did; its
 * failure is reported, never the migration's. */
static void lb_join(fm_mig *m)
{
	if (!m->lb.started)
		return;
	pthread_join(m->lb.thread, NULL);
	m->lb.started = false;
	const char *event = json_string_value(json_object_get(m->lb.event, "event"));
	if (m->lb.rc == 0)
		mlog(m, FM_LOG_INFO, FM_C_NETWORK_ORCH, "Load balancer reconfigured for the %s: %s", event, m->lb.outcome);
	else
		mlog(m, FM_LOG_WARN, FM_C_NETWORK_ORCH, "The load-balancer hook failed for the %s (the migration goes on "
		     "regardless): %s", event, m->lb.outcome);
}

/* Rootfs pre-sync (request "presync", default on). */
static bool presync_wanted(fm_mig *m)
{
	return !json_is_false(json_object_get(m->req, "presync"));
}

static bool diskless(fm_mig *m)
{
	return m->strategy == FM_STRATEGY_COLD && !json_is_false(json_object_get(m->req, "diskless"));
}

/* Diskless COLD whose restore overlaps the transfer (request "overlap",
 * default on, where both hosts restore lazily, our page handler runs and the
 * destination has fm-criu-shim to hold the restore):
 * the source's dump leaves the memory out, the destination restores at once
 * and holds the restored tasks at CRIU's pre-resume while the memory streams
 * into them; they run once all of it is there.  Otherwise the memory streams
 * to a CRIU page server while the source dumps, and the restore follows. */
static bool restore_overlapped(fm_mig *m)
{
	return diskless(m) && !json_is_false(json_object_get(m->req, "overlap")) &&
	       !json_is_false(json_object_get(m->req, "prefetch")) &&
	       fm_strategy_lazy_ok(json_object_get(m->src_info, "capabilities")) &&
	       fm_strategy_lazy_ok(json_object_get(m->dst_info, "capabilities")) &&
	       json_is_true(json_object_get(json_object_get(m->dst_info, "capabilities"), "restore_hold"));
}

/* ------------------------------------------------------------ Network Orchestrator */

/* Points the switch's flows for the container's address at one host's port,
 * for FM_REDIRECT_HOLD_S. */
static int network_point(fm_mig *m, const char *host, const char *port, const char *why)
{
	double ms;
	fm_error e = FM_ERROR_INIT;
	int r = fm_redirector_point(m->ctl->redirector, m->net_ip, m->net_mac, port, FM_REDIRECT_HOLD_S, &ms, &e);
	if (r < 0) {
		r = fm_error_set(&m->err, r, "the switch could not be programmed: %s", e.msg);
		fm_error_clear(&e);
		return r;
	}
	mlog(m, FM_LOG_INFO, FM_C_TRAFFIC_REDIRECTOR, "Traffic for %s goes to %s's switch port %s%s (flows confirmed in "
	     "%.1f ms; they expire in %d s, when the switch's own learning has long caught up)", m->net_ip, host, port,
	     why, ms, FM_REDIRECT_HOLD_S);
	return 0;
}

/* The Network Orchestrator's facts, journaled with the request: a controller
 * restarted mid-migration still knows which flows to undo. */
static int network_journal(fm_mig *m)
{
	json_object_set_new(m->req, "_net", json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "ip", m->net_ip,
						       "mac", m->net_mac, "source_port", m->net_src_port,
						       "dest_port", m->net_dst_port, "dns_name", m->dns_name,
						       "dns_old_ip", m->dns_old_ip, "dns_new_ip", m->dns_new_ip,
						       "dns_old_ttl", (json_int_t)m->dns_old_ttl));
	char *text = json_dumps(m->req, JSON_COMPACT);
	int r = fm_journal_exec(m->ctl->journal, "UPDATE migrations SET request = ? WHERE id = ?", "ss", text, m->id);
	free(text);
	if (r < 0)
		return fm_error_set(&m->err, r, "cannot journal the network plan (%s)", strerror(-r));
	return 0;
}

static void network_recover(fm_mig *m)
{
	json_t *n = json_object_get(m->req, "_net");
	if (!n)
		return;
	snprintf(m->dns_name, sizeof(m->dns_name), "%s", json_string_value(json_object_get(n, "dns_name")) ?: "");
	snprintf(m->dns_old_ip, sizeof(m->dns_old_ip), "%s", json_string_value(json_object_get(n, "dns_old_ip")) ?: "");
	snprintf(m->dns_new_ip, sizeof(m->dns_new_ip), "%s", json_string_value(json_object_get(n, "dns_new_ip")) ?: "");
	m->dns_old_ttl = (uint32_t)json_integer_value(json_object_get(n, "dns_old_ttl"));
	if (*m->dns_name && !m->ctl->dns) {
		mlog(m, FM_LOG_WARN, FM_C_DNS_MANAGER, "This controller has no DNS server to update now (no --dns-server): "
		     "%s stays as it was", m->dns_name);
		*m->dns_name = '\0';
	}
	const char *ip = json_string_value(json_object_get(n, "ip"));
	if (!ip || !*ip)
		return;
	if (!m->ctl->redirector) {
		mlog(m, FM_LOG_WARN, FM_C_TRAFFIC_REDIRECTOR, "This controller has no switch to program now (no --sdn): "
		     "the flows for %s stay as they were", ip);
		return;
	}
	snprintf(m->net_ip, sizeof(m->net_ip), "%s", ip);
	snprintf(m->net_mac, sizeof(m->net_mac), "%s", json_string_value(json_object_get(n, "mac")) ?: "");
	snprintf(m->net_src_port, sizeof(m->net_src_port), "%s", json_string_value(json_object_get(n, "source_port")) ?: "");
	snprintf(m->net_dst_port, sizeof(m->net_dst_port), "%s", json_string_value(json_object_get(n, "dest_port")) ?: "");
}

/* ------------------------------------------------------------ DNS Manager */

/* The TTL a migrating container's name has from PREPARATION until the
 * commit: resolvers that ask meanwhile keep the answer this long at most. */
#define DNS_MIGRATION_TTL 5

/* The name within the zone, case-insensitively, with or without final dots. */
static bool dns_in_zone(const char *name, const char *zone)
{
	size_t n = strlen(name), z = strlen(zone);
	if (n && name[n - 1] == '.')
		n--;
	if (z && zone[z - 1] == '.')
		z--;
	return z > 0 && n >= z && strncasecmp(name + n - z, zone, z) == 0 && (n == z || name[n - z - 1] == '.');
}

/* PREPARATION: a move that changes the container's address, of a container
 * with a DNS name, on a controller with a DNS server: the name must answer
 * the container's address now (else it is not ours to change); its TTL is
 * lowered, and the old record journaled for the rollback. */
static int dns_prepare(fm_mig *m)
{
	const fm_dns *d = m->ctl->dns;
	json_t *net = json_object_get(m->cinfo, "network");
	const char *name = json_string_value(json_object_get(net, "dns_name"));
	const char *cur = json_string_value(json_object_get(net, "ip"));
	fm_error e = FM_ERROR_INIT;
	char ip[64];
	uint32_t ttl;
	double ms;
	int r;

	if (!new_ip(m) || !name || !cur)
		return 0;
	if (!d) {
		mlog(m, FM_LOG_WARN, FM_C_DNS_MANAGER, "%s is %s in DNS, but this controller has no DNS server to update "
		     "(fleximigrated --dns-server): the name keeps answering its old address", m->container, name);
		return 0;
	}
	if (!dns_in_zone(name, m->ctl->dns_zone))
		return fm_error_set(&m->err, -EINVAL, "DNS name %s of %s is outside zone %s (fleximigrated --dns-zone)",
				    name, m->container, m->ctl->dns_zone);
	if ((r = fm_dns_lookup(d, name, ip, sizeof(ip), &ttl, &e)) < 0) {
		r = fm_error_set(&m->err, r, "DNS name %s of %s: %s", name, m->container, e.msg);
		fm_error_clear(&e);
		return r;
	}
	char old[20], new[20];
	fm_net_addr_of(cur, old, sizeof(old));
	fm_net_addr_of(new_ip(m), new, sizeof(new));
	if (strcmp(ip, old) != 0)
		return fm_error_set(&m->err, -EINVAL, "DNS name %s answers %s, not %s's address %s: not ours to change",
				    name, ip, m->container, old);
	snprintf(m->dns_name, sizeof(m->dns_name), "%s", name);
	snprintf(m->dns_old_ip, sizeof(m->dns_old_ip), "%s", old);
	snprintf(m->dns_new_ip, sizeof(m->dns_new_ip), "%s", new);
	m->dns_old_ttl = ttl;
	if ((r = network_journal(m)) < 0 || (r = step_mark(m, "dns", "started")) < 0)
		return r;
	if ((r = fm_dns_set(d, m->ctl->dns_zone, name, old, DNS_MIGRATION_TTL, &ms, &e)) < 0) {
		r = fm_error_set(&m->err, r, "the DNS server did not lower the TTL of %s: %s", name, e.msg);
		fm_error_clear(&e);
		return r;
	}
	mlog(m, FM_LOG_INFO, FM_C_DNS_MANAGER, "TTL of %s lowered from %u to %d s (still %s; update signed and "
	     "confirmed in %.1f ms): resolvers will not keep the old answer long", name, ttl, DNS_MIGRATION_TTL, old, ms);
	return 0;
}

/* After the restore: the name answers the new address. */
static int dns_switch(fm_mig *m)
{
	fm_error e = FM_ERROR_INIT;
	double ms;
	int r;
	if (!*m->dns_name)
		return 0;
	if ((r = fm_dns_set(m->ctl->dns, m->ctl->dns_zone, m->dns_name, m->dns_new_ip, DNS_MIGRATION_TTL, &ms, &e)) < 0) {
		r = fm_error_set(&m->err, r, "the DNS server did not take the new address of %s: %s", m->dns_name, e.msg);
		fm_error_clear(&e);
		return r;
	}
	mlog(m, FM_LOG_INFO, FM_C_DNS_MANAGER, "%s answers %s from now (was %s; update signed and confirmed in %.1f ms)",
	     m->dns_name, m->dns_new_ip, m->dns_old_ip, ms);
	return 0;
}

/* After the commit: the name keeps the new address with its old TTL.  A
 * failure is only logged: the migration is done, the record right, its TTL
 * short. */
static void dns_commit(fm_mig *m)
{
	fm_error e = FM_ERROR_INIT;
	double ms;
	if (!*m->dns_name)
		return;
	if (fm_dns_set(m->ctl->dns, m->ctl->dns_zone, m->dns_name, m->dns_new_ip, m->dns_old_ttl, &ms, &e) < 0)
		mlog(m, FM_LOG_WARN, FM_C_DNS_MANAGER, "The TTL of %s stays %d s: the DNS server did not take it back to "
		     "%u s (%s)", m->dns_name, DNS_MIGRATION_TTL, m->dns_old_ttl, e.msg);
	else
		mlog(m, FM_LOG_INFO, FM_C_DNS_MANAGER, "TTL of %s back to %u s (answering %s; confirmed in %.1f ms)",
		     m->dns_name, m->dns_old_ttl, m->dns_new_ip, ms);
	fm_error_clear(&e);
}

/* ROLLBACK: the old record and TTL, unless the server has them still (an
 * update it refused changed nothing). */
static void dns_rollback(fm_mig *m)
{
	fm_error e = FM_ERROR_INIT;
	char ip[64];
	uint32_t ttl;
	double ms;
	int r = -1;
	if (!*m->dns_name || !step_started(m, "dns"))
		return;
	if (fm_dns_lookup(m->ctl->dns, m->dns_name, ip, sizeof(ip), &ttl, &e) == 0 && strcmp(ip, m->dns_old_ip) == 0 &&
	    ttl == m->dns_old_ttl) {
		mlog(m, FM_LOG_INFO, FM_C_DNS_MANAGER, "%s unchanged: it answers %s, TTL %u s, as before the migration",
		     m->dns_name, ip, ttl);
		return;
	}
	fm_error_clear(&e);
	for (int i = 0; i < ROLLBACK_ATTEMPTS; i++) {
		if ((r = fm_dns_set(m->ctl->dns, m->ctl->dns_zone, m->dns_name, m->dns_old_ip, m->dns_old_ttl, &ms, &e)) == 0)
			break;
		mlog(m, FM_LOG_WARN, FM_C_DNS_MANAGER, "Cannot restore %s: %s", m->dns_name, e.msg);
		fm_error_clear(&e);
		if (i + 1 < ROLLBACK_ATTEMPTS && !retry_wait(m->ctl, i + 1))
			break;
	}
	if (r == 0)
		mlog(m, FM_LOG_INFO, FM_C_DNS_MANAGER, "%s restored: it answers %s again, TTL %u s (confirmed in %.1f ms)",
		     m->dns_name, m->dns_old_ip, m->dns_old_ttl, ms);
	else
		mlog(m, FM_LOG_WARN, FM_C_DNS_MANAGER, "%s could not be restored: it may answer %s, TTL %d s, until it is "
		     "set back to %s by hand", m->dns_name, m->dns_new_ip, DNS_MIGRATION_TTL, m->dns_old_ip);
}

/* A move that changes the container's address: the source forwards the old
 * one to the new one (network/forward.h) for "forward_s" seconds after the
 * switchover (default: the DNS name's old TTL + FORWARD_GRACE_S, what a
 * resolver may still hold, else FORWARD_DEFAULT_S; 0: none).  Prepared in
 * PREPARATION, engaged first thing after the restore (one call, ~1 ms).
 * Best effort: clients that ask DNS again find the container without it. */
#define FORWARD_GRACE_S 10
#define FORWARD_DEFAULT_S 60
static json_int_t forward_seconds(fm_mig *m)
{
	json_t *fs = json_object_get(m->req, "forward_s");
	return json_is_integer(fs) ? json_integer_value(fs) :
	       *m->dns_name ? (json_int_t)m->dns_old_ttl + FORWARD_GRACE_S : FORWARD_DEFAULT_S;
}

/* The source's preparation runs alongside the destination's (its own
 * thread, from before the destination's prepare until the end of
 * PREPARATION): what it adds to a migration is the wait for it, if any. */
typedef struct forward_prep {
	fm_mig *m;
	pthread_t thread;
	bool running;
	int64_t took_us;
} forward_prep;

static void *forward_prepare_thread(void *opaque)
{
	forward_prep *p = opaque;
	fm_mig *m = p->m;
	json_t *net = json_object_get(m->cinfo, "network");
	const char *old = json_string_value(json_object_get(net, "ip"));
	const char *mac = json_string_value(json_object_get(net, "mac"));
	fm_error e = FM_ERROR_INIT;
	int64_t t0 = fm_now_mono_us();
	/* (m->err is the migration thread's meanwhile: e here) */
	if (step_mark_err(m, "forward", "started", &e) < 0 ||
	    agent(m, m->src_ep, "POST", 0, json_pack("{s:s, s:s, s:s, s:s*}", "container", m->container, "from", old,
						      "to", new_ip(m), "mac", mac),
		  NULL, &e, "/v1/agent/migrations/%s/forward_prepare", m->id) < 0)
		mlog(m, FM_LOG_WARN, FM_C_TRAFFIC_REDIRECTOR, "%s cannot forward %s to %s (%s): after the move clients "
		     "reach %s at its new address only", m->source, old, new_ip(m), e.msg, m->container);
	else
		m->forward_ready = true;
	fm_error_clear(&e);
	p->took_us = fm_now_mono_us() - t0;
	return NULL;
}

/* Starts it, for a move that changes the container's address (and has
 * not been told --forward-for 0). */
static void network_forward_prepare_start(fm_mig *m, forward_prep *p)
{
	json_t *fs = json_object_get(m->req, "forward_s");
	json_t *net = json_object_get(m->cinfo, "network");
	memset(p, 0, sizeof(*p));
	p->m = m;
	if (!new_ip(m) || !json_string_value(json_object_get(net, "ip")) ||
	    (json_is_integer(fs) && json_integer_value(fs) <= 0))
		return;
	if (pthread_create(&p->thread, NULL, forward_prepare_thread, p) == 0)
		p->running = true;
	else
		forward_prepare_thread(p);
}

static void network_forward_prepare_join(fm_mig *m, forward_prep *p)
{
	int64_t t0 = fm_now_mono_us();
	if (!p->running)
		return;
	pthread_join(p->thread, NULL);
	p->running = false;
	if (m->forward_ready)
		mlog(m, FM_LOG_INFO, FM_C_TRAFFIC_REDIRECTOR, "%s ready to forward %s to %s from the switchover (a "
		     "stand-in with its MAC on the bridge, its port down until then; nftables DNAT and SNAT; prepared in "
		     "%.1f ms alongside the destination's preparation, waited for %.1f ms)", m->source,
		     json_string_value(json_object_get(json_object_get(m->cinfo, "network"), "ip")), new_ip(m),
		     (double)p->took_us / 1000.0, (double)(fm_now_mono_us() - t0) / 1000.0);
}

static void network_forward(fm_mig *m)
{
	const char *old = json_string_value(json_object_get(json_object_get(m->cinfo, "network"), "ip"));
	fm_error e = FM_ERROR_INIT;
	if (!m->forward_ready)
		return;
	json_int_t seconds = forward_seconds(m);
	int64_t t0 = fm_now_mono_us();
	if (agent(m, m->src_ep, "POST", 0, json_pack("{s:s, s:I}", "container", m->container, "seconds", seconds),
		  NULL, &e, "/v1/agent/migrations/%s/forward", m->id) < 0)
		mlog(m, FM_LOG_WARN, FM_C_TRAFFIC_REDIRECTOR, "%s does not forward %s to %s (%s): clients reach %s at its "
		     "new address only", m->source, old, new_ip(m), e.msg, m->container);
	else
		mlog(m, FM_LOG_INFO, FM_C_TRAFFIC_REDIRECTOR, "%s forwards %s to %s for %" JSON_INTEGER_FORMAT " s "
		     "(the stand-in took the frozen copy's place on the bridge in %.1f ms): clients still using the old "
		     "address reach %s until they have moved", m->source, old, new_ip(m), seconds,
		     (double)(fm_now_mono_us() - t0) / 1000.0, m->container);
	fm_error_clear(&e);
}

/* VERIFICATION, with a client's namespace to probe from (--probe-netns):
 * the container answers at its address there (a TCP connection to the
 * request's "verify_port", else an ICMP echo), and its DNS name, when this
 * migration moved it, answers the new address. */
#define NETWORK_VERIFY_TIMEOUT_MS 5000
static int network_verify(fm_mig *m)
{
	const char *ns = m->ctl->probe_netns;
	json_t *net = json_object_get(m->cinfo, "network");
	const char *cidr = new_ip(m) ?: json_string_value(json_object_get(net, "ip"));
	int port = (int)json_integer_value(json_object_get(m->req, "verify_port"));
	fm_error e = FM_ERROR_INIT;
	char ip[20], got[64];
	double ms;
	int r;

	if (!ns || !cidr)
		return 0;
	fm_net_addr_of(cidr, ip, sizeof(ip));
	if ((r = fm_probe_reach(ns, ip, port, NETWORK_VERIFY_TIMEOUT_MS, &ms, &e)) < 0) {
		r = fm_error_set(&m->err, r, "a client cannot reach %s: %s", m->container, e.msg);
		fm_error_clear(&e);
		return r;
	}
	if (port > 0)
		mlog(m, FM_LOG_INFO, FM_C_NETWORK_ORCH, "From the client namespace %s, %s:%d accepts TCP connections "
		     "(connected in %.1f ms)", ns, ip, port, ms);
	else
		mlog(m, FM_LOG_INFO, FM_C_NETWORK_ORCH, "From the client namespace %s, %s answers (ICMP echo in %.1f ms)",
		     ns, ip, ms);
	if (!*m->dns_name)
		return 0;
	if ((r = fm_probe_dns(ns, m->ctl->dns, m->dns_name, got, sizeof(got), &e)) < 0) {
		r = fm_error_set(&m->err, r, "a client cannot resolve %s: %s", m->dns_name, e.msg);
		fm_error_clear(&e);
		return r;
	}
	if (strcmp(got, m->dns_new_ip) != 0)
		return fm_error_set(&m->err, -EPROTO, "from the client namespace %s, %s answers %s, not %s", ns,
				    m->dns_name, got, m->dns_new_ip);
	mlog(m, FM_LOG_INFO, FM_C_DNS_MANAGER, "From the client namespace %s, %s answers %s", ns, m->dns_name, got);
	return 0;
}

/* PREPARATION's network part: with a switch to program (--sdn) and both
 * hosts' switch ports known, the switch must answer, both ports exist, and
 * it must take the container's flows: they are installed, pointing where
 * the address is now, and taken out again.  A switch that refuses them (an
 * OFPT_ERROR: table full, bad match ...) fails the migration here, before
 * anything is frozen.  They do not stay: pinned, they would hold the address
 * on the source after the restore until the controller turns them, while
 * the destination's gratuitous ARP moves it sooner (measured: 2-4 packets of
 * a 1 ms stream lost beyond the freeze with a pin, 0 without).  The trial
 * changes no path; each flow table change delays the switch's traffic ~10-15
 * ms while its caches are revalidated, losing nothing (0 of 4000 in a 1 ms
 * UDP stream). */
static int network_prepare(fm_mig *m)
{
	fm_redirector *rd = m->ctl->redirector;
	json_t *net = json_object_get(m->cinfo, "network");
	const char *sp = json_string_value(json_object_get(json_object_get(m->src_info, "network"), "switch_port"));
	const char *dp = json_string_value(json_object_get(json_object_get(m->dst_info, "network"), "switch_port"));
	const char *ip = json_string_value(json_object_get(net, "ip")), *mac = json_string_value(json_object_get(net, "mac"));
	if (!rd || !net || !ip || !mac || new_ip(m))
		return 0;
	if (!sp || !dp) {
		mlog(m, FM_LOG_WARN, FM_C_NETWORK_MANAGER, "No switch port known for %s (fleximigrated --switch-port): "
		     "%s's traffic follows its gratuitous ARP only", !sp ? m->source : m->dest, ip);
		return 0;
	}
	int64_t so, dof;
	fm_error e = FM_ERROR_INIT;
	int r;
	if ((r = fm_redirector_port(rd, sp, &so, &e)) < 0 || (r = fm_redirector_port(rd, dp, &dof, &e)) < 0 ||
	    (r = fm_redirector_ready(rd, &e)) < 0) {
		r = fm_error_set(&m->err, r, "the switch is not ready: %s", e.msg);
		fm_error_clear(&e);
		return r;
	}
	fm_net_addr_of(ip, m->net_ip, sizeof(m->net_ip));
	snprintf(m->net_mac, sizeof(m->net_mac), "%s", mac);
	snprintf(m->net_src_port, sizeof(m->net_src_port), "%s", sp);
	snprintf(m->net_dst_port, sizeof(m->net_dst_port), "%s", dp);
	mlog(m, FM_LOG_INFO, FM_C_SDN, "Switch at %s ready: %s is on %s (OpenFlow port %lld), %s on %s (port %lld)",
	     fm_redirector_target(rd), m->source, sp, (long long)so, m->dest, dp, (long long)dof);
	if ((r = network_journal(m)) < 0 || (r = step_mark(m, "flows_trial", "started")) < 0)
		return r;
	int64_t t0 = fm_now_mono_us();
	if ((r = fm_redirector_point(rd, m->net_ip, m->net_mac, sp, 0, NULL, &e)) < 0) {
		r = fm_error_set(&m->err, r, "the switch refused the container's flows: %s", e.msg);
		fm_error_clear(&e);
		return r;
	}
	if ((r = fm_redirector_release(rd, m->net_ip, &e)) < 0) {
		r = fm_error_set(&m->err, r, "the switch took the container's flows but not their removal: %s", e.msg);
		fm_error_clear(&e);
		return r;
	}
	mlog(m, FM_LOG_INFO, FM_C_TRAFFIC_REDIRECTOR, "Flows for %s accepted by the switch (a trial: installed pointing at "
	     "%s's port %s, where the address is, and taken out again, flows confirmed in %.1f ms; they go in at the "
	     "switchover)", m->net_ip, m->source, sp, (double)(fm_now_mono_us() - t0) / 1000.0);
	return 0;
}

/* PREPARATION: compatibility checked before anything is frozen; image, bundle and
 * data channel ready on the destination. */
static int step_preparation(fm_mig *m)
{
	json_t *cpu = NULL, *spec;
	int r;

	/* the destination's kernel and CRIU must do what the strategy needs ... */
	r = fm_strategy_host_ready(m->strategy, json_object_get(m->dst_info, "capabilities"), "destination", m->dest,
				   &m->err);
	if (r < 0) {
		fm_error_prefix(&m->err, "pre-flight compatibility check failed");
		return r;
	}
	/* ... and its CPU must offer what the source's processes may use */
	if ((r = agent(m, m->src_ep, "GET", 0, NULL, &cpu, &m->err, "/v1/agent/cpuinfo")) < 0) {
		fm_error_prefix(&m->err, "cannot read the source CPU description");
		return r;
	}
	r = agent(m, m->dst_ep, "POST", 0, json_incref(cpu), NULL, &m->err, "/v1/agent/cpuinfo/check");
	json_decref(cpu);
	if (r < 0) {
		fm_error_prefix(&m->err, "pre-flight compatibility check failed: the CPU of %s lacks features the "
				"processes on %s may use", m->dest, m->source);
		return r;
	}
	mlog(m, FM_LOG_INFO, FM_C_STATE_SYNC, "Pre-flight check passed: %s's CPU and CRIU %s can run what %s dumps",
	     m->dest, json_string_value(json_object_get(json_object_get(m->dst_info, "capabilities"), "criu_version")) ?: "?",
	     m->source);

	/* the container spec (fm_container_spec_from_json's keys) from the source's record of it */
	spec = json_pack("{s:s}", "name", m->container);
	for (const char *key = "image\0digest\0args\0env\0cpu_milli\0memory_bytes\0network\0volumes\0labels\0"; *key;
	     key += strlen(key) + 1)
		if (json_object_get(m->cinfo, key))
			json_object_set(spec, key, json_object_get(m->cinfo, key));
	json_t *net = json_object_get(m->cinfo, "network");
	char new_mac[18] = "";
	if (new_ip(m)) {
		/* a new address there: a MAC of its own too (derived from it), the
		 * rest of the network (its DNS name) as it was */
		const char *old = json_string_value(json_object_get(net, "ip"));
		if (!net || !old) {
			json_decref(spec);
			return fm_error_set(&m->err, -EINVAL, "%s has no address of its own (fleximigrate run --ip) for "
					    "\"new_ip\" to change", m->container);
		}
		if (strcmp(old, new_ip(m)) == 0) {
			json_decref(spec);
			return fm_error_set(&m->err, -EINVAL, "%s has the address %s already", m->container, old);
		}
		fm_net_mac_for_ip(new_ip(m), new_mac);
		json_t *nn = json_deep_copy(net);
		json_object_set_new(nn, "ip", json_string(new_ip(m)));
		json_object_set_new(nn, "mac", json_string(new_mac));
		json_object_set_new(spec, "network", nn);
	}
	if ((r = step_mark(m, "prepare", "started")) < 0)
		return r;
	forward_prep fwd;
	network_forward_prepare_start(m, &fwd);
	r = agent(m, m->dst_ep, "POST", m->ctl->long_timeout_ms,
		  with_transfer_opts(m, json_pack("{s:o, s:s, s:s, s:s, s:b, s:b}", "spec", spec, "source_endpoint", m->src_ep,
						  "source", m->source, "controller", m->ctl->self_endpoint,
						  "diskless", diskless(m) && !restore_overlapped(m), "presync", presync_wanted(m))),
		  &m->prep, &m->err, "/v1/agent/migrations/%s/prepare", m->id);
	if (r < 0) {
		fm_error_prefix(&m->err, "destination %s could not be prepared", m->dest);
		network_forward_prepare_join(m, &fwd);
		return r;
	}
	step_mark(m, "prepare", "done");
	mlog(m, FM_LOG_INFO, FM_C_CONTAINER_MANAGER, "Destination %s prepared: image %s %s, bundle ready, data channel on %s:%" JSON_INTEGER_FORMAT,
	     m->dest, json_string_value(json_object_get(m->cinfo, "digest")),
	     json_is_true(json_object_get(m->prep, "image_pulled")) ? "pulled from the source" : "already present",
	     json_string_value(json_object_get(m->prep, "data_host")), json_integer_value(json_object_get(m->prep, "port")));
	if (net && new_ip(m))
		mlog(m, FM_LOG_INFO, FM_C_NETWORK_ORCH,
		     "Network prepared: %s will be %s on %s (MAC %s); an address change ends its TCP connections "
		     "(restored closed: clients reconnect), a gratuitous ARP announces it after the restore",
		     m->container, new_ip(m), m->dest, new_mac);
	else if (net)
		mlog(m, FM_LOG_INFO, FM_C_NETWORK_ORCH,
		     "Network prepared: %s (%s) will move to %s with its established TCP connections; its port there "
		     "stays down until the restore, then a gratuitous ARP announces it",
		     json_string_value(json_object_get(net, "ip")), json_string_value(json_object_get(net, "mac")), m->dest);
	else
		mlog(m, FM_LOG_INFO, FM_C_NETWORK_ORCH,
		     "Network prepared: the container has no address of its own (no --ip); nothing to move");
	r = network_prepare(m);
	if (r == 0)
		r = dns_prepare(m);
	network_forward_prepare_join(m, &fwd);
	return r;
}

/* EXECUTION: freeze, checkpoint and stream on the source; restore on the destination. */
/* Opens a page transfer on the destination (a pre-copy round, or the final
 * dump's when final) and returns {host, port} for the source's relay. */
static int open_pages(fm_mig *m, int round, bool final, json_t **page_relay)
{
	json_auto_t *po = NULL;
	json_t *body = with_transfer_opts(m, json_object());
	if (final)
		json_object_set_new(body, "final", json_true());
	else
		json_object_set_new(body, "round", json_integer(round));
	if ((final && m->precopy_rounds > 0) || round > 1)
		json_object_set_new(body, "parent_round", json_integer(final ? m->precopy_rounds : round - 1));
	int r = agent(m, m->dst_ep, "POST", 0, body, &po, &m->err, "/v1/agent/migrations/%s/pages_open", m->id);
	if (r < 0)
		return r;
	*page_relay = json_pack("{s:O, s:O}", "host", json_object_get(po, "data_host"), "port",
				json_object_get(po, "page_relay_port"));
	return 0;
}

/* PRE_COPY and HYBRID: pre-dump rounds while the container runs, each sending
 * what it dirtied since the previous one, until a stop rule holds.
 * Auto-converge (request "auto_converge") lowers its CPU quota stepwise when a
 * round does not shrink enough. */
static int precopy(fm_mig *m)
{
	static const int throttle_steps[] = FM_AUTOCONVERGE_STEPS;
	bool autoconv = json_is_true(json_object_get(m->req, "auto_converge"));
	unsigned step = 0;
	json_int_t prev = 0, first = 0;
	int r;

	if ((r = step_mark(m, "precopy", "started")) < 0)
		return r;
	for (int n = 1; n <= FM_PRECOPY_MAX_ROUNDS; n++) {
		json_auto_t *pd = NULL, *pc = NULL;
		json_t *relay = NULL;
		char sent[32];
		if ((r = open_pages(m, n, false, &relay)) < 0)
			return r;
		r = agent(m, m->src_ep, "POST", m->ctl->long_timeout_ms,
			  with_transfer_opts(m, json_pack("{s:s, s:i, s:o, s:O, s:s}", "container", m->container, "round", n,
							  "page_relay", relay, "token", json_object_get(m->prep, "token"),
							  "controller", m->ctl->self_endpoint)),
			  &pd, &m->err, "/v1/agent/migrations/%s/predump", m->id);
		if (r < 0)
			return r;
		if ((r = agent(m, m->dst_ep, "POST", 0, json_object(), &pc, &m->err, "/v1/agent/migrations/%s/pages_close",
			       m->id)) < 0)
			return r;
		m->precopy_rounds = n;
		json_int_t bytes = json_integer_value(json_object_get(pd, "pages_raw_tx"));
		if (n == 1)
			first = bytes;
		m->bytes += json_integer_value(json_object_get(pd, "pages_wire_tx"));
		fm_format_bytes((uint64_t)bytes, sent, sizeof(sent));
		mlog(m, FM_LOG_INFO, FM_C_STATE_SYNC, "Pre-copy round %d: %s of memory sent in %.0f ms while %s kept running",
		     n, sent, json_real_value(json_object_get(pd, "predump_ms")), m->container);
		if (bytes < FM_PRECOPY_MIN_PAGES * 4096LL) {
			m->converged = true;
			mlog(m, FM_LOG_INFO, FM_C_STRATEGY_SELECTOR, "Pre-copy converged: round %d sent fewer than %d pages",
			     n, FM_PRECOPY_MIN_PAGES);
			break;
		}
		if (n > 1 && (double)bytes > (double)prev * FM_PRECOPY_MAX_GROWTH &&
		    (double)bytes <= (double)first * FM_PRECOPY_PLATEAU) {
			/* no longer shrinking, but down to a small working set: the final
			 * dump of that much is what pre-copy is for */
			m->converged = true;
			mlog(m, FM_LOG_INFO, FM_C_STRATEGY_SELECTOR, "Pre-copy reached the working set: round %d sent %s, "
			     "about as much as round %d and at most %.0f%% of the first; final dump now", n, sent, n - 1,
			     FM_PRECOPY_PLATEAU * 100);
			break;
		}
		if (n > 1 && (double)bytes > (double)prev * FM_PRECOPY_MAX_GROWTH) {
			if (autoconv && step < ARRAY_SIZE(throttle_steps)) {
				r = agent(m, m->src_ep, "POST", 0,
					  json_pack("{s:s, s:i}", "container", m->container, "cpu_percent", throttle_steps[step]),
					  NULL, &m->err, "/v1/agent/migrations/%s/throttle", m->id);
				if (r < 0)
					return r;
				mlog(m, FM_LOG_INFO, FM_C_STATE_SYNC, "Auto-converge: round %d did not shrink below %.0f%% of the "
				     "one before; %s limited to %d%% of a CPU", n, FM_PRECOPY_MAX_GROWTH * 100, m->container,
				     throttle_steps[step]);
				step++;
			} else {
				mlog(m, FM_LOG_INFO, FM_C_STRATEGY_SELECTOR, "Pre-copy is not converging: round %d sent more than "
				     "%.0f%% of round %d", n, FM_PRECOPY_MAX_GROWTH * 100, n - 1);
				break;
			}
		}
		prev = bytes;
	}
	fm_journal_exec(m->ctl->journal, "UPDATE migrations SET bytes_transferred = ? WHERE id = ?", "is", m->bytes, m->id);
	step_mark(m, "precopy", "done");
	return 0;
}

/* Rootfs pre-sync: the container's writable layer crosses while it runs; in
 * the freeze only the files changed since go again. */
static int presync(fm_mig *m)
{
	json_auto_t *ps = NULL;
	char sent[32];
	int r;

	if (!presync_wanted(m))
		return 0;
	if ((r = step_mark(m, "presync", "started")) < 0)
		return r;
	r = agent(m, m->src_ep, "POST", m->ctl->long_timeout_ms,
		  with_transfer_opts(m, json_pack("{s:s, s:O, s:O, s:O, s:s}", "container", m->container, "data_host",
						  json_object_get(m->prep, "data_host"), "port", json_object_get(m->prep, "port"),
						  "token", json_object_get(m->prep, "token"), "controller", m->ctl->self_endpoint)),
		  &ps, &m->err, "/v1/agent/migrations/%s/presync", m->id);
	if (r < 0)
		return r;
	step_mark(m, "presync", "done");
	m->bytes += json_integer_value(json_object_get(ps, "wire_bytes"));
	fm_format_bytes((uint64_t)json_integer_value(json_object_get(ps, "payload_bytes")), sent, sizeof(sent));
	mlog(m, FM_LOG_INFO, FM_C_DELTA_TRANSFER, "Rootfs pre-sync: %s of %s's writable layer (%d entries) sent to %s in "
	     "%.0f ms while it kept running; %" JSON_INTEGER_FORMAT " files unchanged by the freeze will not travel again",
	     sent, m->container, (int)json_integer_value(json_object_get(ps, "entries")), m->dest,
	     json_real_value(json_object_get(ps, "presync_ms")), json_integer_value(json_object_get(ps, "recorded_files")));
	return 0;
}

/* Where the downtime went, from the agents' own clocks; what neither agent
 * accounts for is the controller's messages and scheduling. */
static void log_downtime(fm_mig *m, const double src_ms[3], bool dump_early, json_t *rs, double flows_ms)
{
	json_t *ph = json_object_get(rs, "phases");
	bool restore_early = json_is_true(json_object_get(rs, "restore_started_early"));
#define PH(k) json_real_value(json_object_get(ph, k))
	if (!json_is_object(ph))
		return;
	double accounted = src_ms[0] + src_ms[1] + src_ms[2] + PH("agent_ms");
	char resumed[160] = "", memory[64] = "", flows[192] = "";
	if (PH("memory_in_ms") > 0)
		snprintf(memory, sizeof(memory), ", memory arriving %.0f", PH("memory_in_ms"));
	if (flows_ms >= 0) {   /* behind a switch: unreachable until the flows turned */
		accounted += PH("after_resume_ms") + flows_ms;
		snprintf(flows, sizeof(flows), ", running again until %s answered %.0f, turning the flows %.0f", m->dest,
			 PH("after_resume_ms"), flows_ms);
	} else if (PH("after_resume_ms") > 0) {
		snprintf(resumed, sizeof(resumed), " (running again %.1f ms before %s answered, not counted)",
			 PH("after_resume_ms"), m->dest);
	}
	mlog(m, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "Downtime %" PRId64 " ms%s%s: freeze %.0f, dump %.0f, state transfer "
	     "%.0f, waiting for it %.0f, restore preparation %.0f, page handler start %.0f, network handover %.0f, CRIU "
	     "restore %.0f, control messages %.0f%s%s", m->downtime_ms,
	     dump_early && restore_early ? " (CRIU's dump and runc restore started before the freeze)" :
	     restore_early ? " (runc restore started before the freeze)" :
	     dump_early ? " (CRIU's dump started before the freeze)" : "", resumed,
	     src_ms[0], src_ms[1], src_ms[2], PH("wait_receive_ms"), PH("prepare_ms"), PH("page_handler_ms"),
	     PH("network_ms"), PH("criu_restore_ms"), (double)m->downtime_ms - accounted, memory, flows);
#undef PH
}

/* What the freeze will need starts now, while the container runs: on the
 * destination runc restore, waiting for the images (its own start-up, ~25 ms);
 * for POST_COPY on the source the page relay and CRIU, waiting for its last
 * options (~10-15 ms).  Their start-up and their CPU are spent before the
 * freeze, not in the downtime.  Best effort: without them the steps start
 * these themselves, as before. */
static void prestart(fm_mig *m, bool lazy)
{
	fm_error e = FM_ERROR_INIT;
	if (agent(m, m->dst_ep, "POST", 0, with_transfer_opts(m, json_pack("{s:s, s:b, s:b}", "container", m->container,
									  "lazy", lazy, "hold", restore_overlapped(m))),
		  NULL, &e, "/v1/agent/migrations/%s/restore_start", m->id) < 0)
		mlog(m, FM_LOG_INFO, FM_C_STATE_RESTORATION, "runc restore on %s starts after the dump (%s)", m->dest, e.msg);
	fm_error_clear(&e);
	if (lazy && agent(m, m->src_ep, "POST", 0, with_transfer_opts(m, json_pack("{s:s, s:b, s:i}", "container",
			m->container, "lazy", lazy, "parent_round", m->precopy_rounds)),
			  NULL, &e, "/v1/agent/migrations/%s/checkpoint_start", m->id) < 0)
		mlog(m, FM_LOG_INFO, FM_C_CHECKPOINTING, "CRIU on %s starts at the freeze (%s)", m->source, e.msg);
	fm_error_clear(&e);
}

static int step_execution(fm_mig *m)
{
	json_t *ck = NULL, *rs = NULL;
	char bytes[32];
	int64_t t_freeze;
	int r;
	bool precopied = m->strategy == FM_STRATEGY_PRE_COPY || m->strategy == FM_STRATEGY_HYBRID;
	bool held = restore_overlapped(m);
	bool lazy = m->strategy == FM_STRATEGY_POST_COPY || held;

	if (held)
		mlog(m, FM_LOG_INFO, FM_C_STATE_SYNC, "Diskless COLD with its restore overlapping the transfer: %s is "
		     "restored on %s at once and held there, stopped, while its memory streams in; it runs once all of "
		     "it is there (a failure before that resumes the source, nothing lost)", m->container, m->dest);
	prestart(m, lazy);
	if ((r = presync(m)) < 0)
		return r;
	if (precopied) {
		if ((r = precopy(m)) < 0)
			return r;
		if (m->strategy == FM_STRATEGY_HYBRID && !m->converged) {
			lazy = true;
			prestart(m, lazy);
			mlog(m, FM_LOG_INFO, FM_C_STRATEGY_SELECTOR, "HYBRID switches to post-copy: the pages dirtied since "
			     "round %d follow on demand after the restore", m->precopy_rounds);
		}
	}
	json_t *page_relay = NULL;
	if (precopied && !lazy && (r = open_pages(m, 0, true, &page_relay)) < 0)
		return r;
	mlog(m, FM_LOG_INFO, FM_C_CHECKPOINTING, "Freezing %s on %s and checkpointing it", m->container, m->source);
	if ((r = step_mark(m, "checkpoint", "started")) < 0) {
		json_decref(page_relay);
		return r;
	}
	t_freeze = fm_now_mono_us();
	json_t *ckreq = with_transfer_opts(m, json_pack("{s:s, s:O, s:O, s:O, s:s, s:b}", "container", m->container,
		"data_host", json_object_get(m->prep, "data_host"), "port", json_object_get(m->prep, "port"),
		"token", json_object_get(m->prep, "token"), "controller", m->ctl->self_endpoint,
		"lazy", lazy));
	if (m->precopy_rounds > 0)
		json_object_set_new(ckreq, "parent_round", json_integer(m->precopy_rounds));
	if (page_relay)
		json_object_set_new(ckreq, "page_relay", page_relay);
	else if (json_is_integer(json_object_get(m->prep, "page_relay_port")))
		json_object_set_new(ckreq, "page_relay", json_pack("{s:O, s:O}", "host", json_object_get(m->prep, "data_host"),
								   "port", json_object_get(m->prep, "page_relay_port")));
	r = agent(m, m->src_ep, "POST", m->ctl->long_timeout_ms, ckreq, &ck, &m->err,
		  "/v1/agent/migrations/%s/checkpoint", m->id);
	if (r < 0)
		return r;
	/* from here to the restore's answer, one journal commit (restore_marks) */
	events_hold(m);
	m->bytes += json_integer_value(json_object_get(ck, "wire_bytes")) + json_integer_value(json_object_get(ck, "pages_wire_tx"));
	fm_format_bytes((uint64_t)m->bytes, bytes, sizeof(bytes));
	char parts[96] = "";
	if (json_object_get(ck, "freezer_ms"))
		snprintf(parts, sizeof(parts), " (freezer %.1f, connections held %.1f)",
			 json_real_value(json_object_get(ck, "freezer_ms")), json_real_value(json_object_get(ck, "hold_ms")));
	mlog(m, FM_LOG_INFO, FM_C_CHECKPOINTING, "Checkpoint of %s done: frozen in %.1f ms%s, dumped in %.1f ms%s",
	     m->container, json_real_value(json_object_get(ck, "freeze_ms")), parts,
	     json_real_value(json_object_get(ck, "dump_ms")),
	     held ? " (all but memory, which streams into the restored copy before it runs)" :
	     lazy ? " (all but memory: pages are served on demand from the source)" : "");
	json_t *page_server = json_incref(json_object_get(ck, "page_server"));
	/* the link rate, for the next Strategy Selector: the page relay's measurement
	 * of a link it saturated, else the rate of a transfer large enough to tell */
	double link_bps = json_real_value(json_object_get(ck, "pages_link_bps"));
	if (link_bps <= 0 && json_integer_value(json_object_get(ck, "payload_bytes")) >= FM_LINK_SAMPLE_MIN)
		link_bps = json_real_value(json_object_get(ck, "rate_bps"));

	if (json_object_get(ck, "pages_raw_tx")) {
		char raw[32], wire[32];
		fm_format_bytes((uint64_t)json_integer_value(json_object_get(ck, "pages_raw_tx")), raw, sizeof(raw));
		fm_format_bytes((uint64_t)json_integer_value(json_object_get(ck, "pages_wire_tx")), wire, sizeof(wire));
		json_int_t zf = json_integer_value(json_object_get(ck, "pages_compressed_frames"));
		double link = json_real_value(json_object_get(ck, "pages_link_bps"));
		char how[160] = "sent raw", lk[64] = "";
		if (zf > 0) {
			char dense[32];
			fm_format_bytes((uint64_t)json_integer_value(json_object_get(ck, "pages_dense_bytes")), dense,
					sizeof(dense));
			snprintf(how, sizeof(how), "zstd level %" JSON_INTEGER_FORMAT " on %" JSON_INTEGER_FORMAT " of %"
				 JSON_INTEGER_FORMAT " frames (%s of dense pages at level %" JSON_INTEGER_FORMAT ")",
				 json_integer_value(json_object_get(ck, "pages_zstd_level")), zf,
				 json_integer_value(json_object_get(ck, "pages_frames")), dense,
				 json_integer_value(json_object_get(ck, "pages_dense_level")));
		}
		if (link > 0)
			snprintf(lk, sizeof(lk), "; link measured at %.0f Mbit/s", link / 1e6);
		mlog(m, FM_LOG_INFO, FM_C_DELTA_TRANSFER,
		     "Memory streamed to %s while it was dumped (diskless): %s of pages, %s on the wire, %s%s",
		     m->dest, raw, wire, how, lk);
	}
	/* the state and writable layer on the data channel (memory is logged above) */
	fm_format_bytes((uint64_t)json_integer_value(json_object_get(ck, "payload_bytes")), bytes, sizeof(bytes));
	char reused[96] = "", zs[64] = "";
	if (json_integer_value(json_object_get(ck, "reused_files")) > 0) {
		char rb[32];
		fm_format_bytes((uint64_t)json_integer_value(json_object_get(ck, "reused_bytes")), rb, sizeof(rb));
		snprintf(reused, sizeof(reused), "; %" JSON_INTEGER_FORMAT " unchanged files (%s) taken from the pre-sync",
			 json_integer_value(json_object_get(ck, "reused_files")), rb);
	}
	if (json_integer_value(json_object_get(ck, "compressed_frames")) > 0)
		snprintf(zs, sizeof(zs), ", zstd level %" JSON_INTEGER_FORMAT " on %" JSON_INTEGER_FORMAT " chunks",
			 json_integer_value(json_object_get(ck, "zstd_level")), json_integer_value(json_object_get(ck, "compressed_frames")));
	mlog(m, FM_LOG_INFO, FM_C_DELTA_TRANSFER, "Transferred %s of state (%" JSON_INTEGER_FORMAT " files) to %s in %.1f ms at %.1f Mbit/s, every chunk checksummed%s%s",
	     bytes, json_integer_value(json_object_get(ck, "entries")), m->dest,
	     json_real_value(json_object_get(ck, "transfer_ms")), json_real_value(json_object_get(ck, "rate_bps")) / 1e6, zs, reused);
	double src_ms[3] = { json_real_value(json_object_get(ck, "freeze_ms")), json_real_value(json_object_get(ck, "dump_ms")),
			     json_real_value(json_object_get(ck, "transfer_ms")) };
	bool dump_early = json_is_true(json_object_get(ck, "criu_started_early"));
	json_decref(ck);

	/* "redirect" journaled already: after the restore, the flows turn without
	 * waiting for a journal write (pointing them back on a rollback is right
	 * either way) */
	if ((r = restore_marks(m, link_bps)) < 0) {
		events_flush(m);
		json_decref(page_server);
		return r;
	}
	r = agent(m, m->dst_ep, "POST", m->ctl->long_timeout_ms,
		  with_transfer_opts(m, json_pack("{s:o, s:i, s:b}", "page_server", page_server ? page_server : json_null(),
						  "parent_round", m->precopy_rounds, "hold", held)),
		  &rs, &m->err, "/v1/agent/migrations/%s/restore", m->id);
	events_flush(m);
	if (r < 0)
		return r;
	/* the destination's reply may come after the container ran again (runc
	 * ending after CRIU let the tasks go): that part is no downtime */
	int64_t after_resume_us = (int64_t)(json_real_value(json_object_get(json_object_get(rs, "phases"),
									  "after_resume_ms")) * 1000.0);
	int64_t t_reply = fm_now_mono_us(), t_up = t_reply - after_resume_us;
	/* make-before-break: the address is up on the destination; now, first of
	 * all (every millisecond the switch still sends it to the source is a
	 * packet lost), the flows send its traffic there */
	double flows_ms = -1;   /* behind a switch: from the reply until the flows turned */
	if (*m->net_ip) {
		if ((r = network_point(m, m->dest, m->net_dst_port, " from now, the address being ready there")) < 0) {
			json_decref(rs);
			return r;
		}
		/* the container is reachable only now: clients' datagrams went to
		 * the source until the flows turned (a UDP stream lost 20-60 ms
		 * more than the downtime said, the time runc took to end) */
		t_up = fm_now_mono_us();
		flows_ms = (double)(t_up - t_reply) / 1000.0;
	}
	m->downtime_ms = (t_up - t_freeze + 500) / 1000;
	/* an address that changed: the source stands in for the old one */
	network_forward(m);
	step_mark(m, "restore", "done");
	fm_journal_exec(m->ctl->journal, "UPDATE migrations SET downtime_ms = ? WHERE id = ?", "is", m->downtime_ms, m->id);
	mlog(m, FM_LOG_INFO, FM_C_STATE_RESTORATION, "Restored %s on %s in %.1f ms (downtime %" PRId64 " ms)",
	     m->container, m->dest, json_real_value(json_object_get(rs, "restore_ms")), m->downtime_ms);
	log_downtime(m, src_ms, dump_early, rs, flows_ms);
	if (json_object_get(m->cinfo, "network") && !new_ip(m)) {
		/* what clients sent to the source while it was frozen: replayed into the
		 * restored copy, so their connections resume without a back-off */
		json_auto_t *cap = NULL, *inj = NULL;
		if (agent(m, m->src_ep, "POST", 0, json_object(), &cap, NULL, "/v1/agent/migrations/%s/capture", m->id) == 0 &&
		    agent(m, m->dst_ep, "POST", 0, json_pack("{s:O}", "frames", json_object_get(cap, "frames")), &inj, NULL,
			  "/v1/agent/migrations/%s/inject", m->id) == 0)
			mlog(m, FM_LOG_INFO, FM_C_NETWORK_ORCH, "%s announced on %s; TCP segments clients sent meanwhile "
			     "replayed into it: %" JSON_INTEGER_FORMAT " held on %s, %" JSON_INTEGER_FORMAT " held on %s",
			     json_string_value(json_object_get(json_object_get(m->cinfo, "network"), "ip")), m->dest,
			     json_integer_value(json_object_get(inj, "replayed_segments")), m->source,
			     json_integer_value(json_object_get(rs, "replayed_segments")), m->dest);
		else
			mlog(m, FM_LOG_WARN, FM_C_NETWORK_ORCH, "Could not replay the TCP segments held on %s: clients "
			     "retransmit them after their back-off", m->source);
	}
	json_decref(rs);
	/* its name too, when its address changed */
	if ((r = dns_switch(m)) < 0)
		return r;
	/* the container serves from the destination now: traffic may follow */
	lb_start(m, "switchover");
	return 0;
}

/* VERIFICATION: the destination copy runs (and passes its health command); then
 * the point of no return: the source copy is deleted. */
static int step_verification(fm_mig *m)
{
	json_t *health = json_object_get(m->req, "health_cmd");
	int r;

	json_int_t ht = json_integer_value(json_object_get(m->req, "health_timeout_ms"));
	r = agent(m, m->dst_ep, "POST", (int)((ht > 0 ? ht : 10000) + 30000),
		  json_pack("{s:s, s:O, s:O}", "container", m->container, "health_cmd", health ? health : json_null(),
			    "health_timeout_ms", json_object_get(m->req, "health_timeout_ms") ?: json_null()),
		  NULL, &m->err, "/v1/agent/migrations/%s/verify", m->id);
	if (r < 0)
		return r;
	mlog(m, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "Checks passed: %s is running on %s%s", m->container, m->dest,
	     json_array_size(health) ? " and its health command succeeds" : "");
	if ((r = network_verify(m)) < 0)
		return r;
	bool held = restore_overlapped(m);
	if (m->strategy == FM_STRATEGY_POST_COPY || m->strategy == FM_STRATEGY_HYBRID || held) {
		/* (a HYBRID that converged has no pages in flight, nor a COLD whose
		 * restore waited for them: this returns at once, with the figures)
		 * the source keeps the only complete copy of the memory until every page
		 * has arrived: the point of no return waits for that */
		json_t *pg = NULL;
		if (!held)
			mlog(m, FM_LOG_INFO, FM_C_STATE_SYNC, "Waiting for the remaining memory pages of %s to reach %s",
			     m->container, m->dest);
		r = agent(m, m->dst_ep, "POST", m->ctl->long_timeout_ms, json_object(), &pg, &m->err,
			  "/v1/agent/migrations/%s/pages", m->id);
		if (r < 0) {
			fm_error_prefix(&m->err, "pages were still in flight; what %s did on %s since its restore is lost "
					"(its memory was incomplete there), the source copy resumes from the checkpoint",
					m->container, m->dest);
			return r;
		}
		char wire[32];
		m->bytes += json_integer_value(json_object_get(pg, "pages_wire_rx"));
		fm_journal_exec(m->ctl->journal, "UPDATE migrations SET bytes_transferred = ? WHERE id = ?", "is",
				m->bytes, m->id);
		fm_format_bytes((uint64_t)json_integer_value(json_object_get(pg, "pages_wire_rx")), wire, sizeof(wire));
		json_t *pf = json_object_get(pg, "prefetch");
		char how[320] = "";
		if (pf) {
			char lazy[32], fetched[32];
			fm_format_bytes((uint64_t)json_integer_value(json_object_get(pf, "lazy_bytes")), lazy, sizeof(lazy));
			fm_format_bytes((uint64_t)json_integer_value(json_object_get(pf, "fetched_bytes")), fetched,
					sizeof(fetched));
			snprintf(how, sizeof(how), "; %s of memory, %s fetched; prefetched at %.0f Mbit/s with a window of "
				 "%.0f-%.0f KiB, every page "
				 "here %.0f ms after the restore began; %d page faults, %d waited for the network "
				 "(longest %.1f ms, mean %.2f ms)", lazy, fetched, json_real_value(json_object_get(pf, "link_bps")) / 1e6,
				 (double)json_integer_value(json_object_get(pf, "window_min_bytes")) / 1024,
				 (double)json_integer_value(json_object_get(pf, "window_max_bytes")) / 1024,
				 json_real_value(json_object_get(pf, "all_here_ms")),
				 (int)json_integer_value(json_object_get(pf, "faults")),
				 (int)json_integer_value(json_object_get(pf, "misses")),
				 json_real_value(json_object_get(pf, "wait_max_ms")),
				 json_real_value(json_object_get(pf, "wait_sum_ms")) /
					 (double)(json_integer_value(json_object_get(pf, "misses")) ?: 1));
		}
		mlog(m, FM_LOG_INFO, FM_C_DELTA_TRANSFER, "All memory pages of %s arrived on %s%s (%.0f ms after the checks, %s on the wire%s)",
		     m->container, m->dest, held ? " before it ran (diskless)" : "",
		     json_real_value(json_object_get(pg, "pages_ms")), wire, how);
		json_decref(pg);
	}

	/* point of no return, journaled before the first irreversible act; from here
	 * on a cancel is refused */
	pthread_mutex_lock(&m->ctl->lock);
	bool cancelled = m->cancelled;
	m->committing = !cancelled;
	pthread_mutex_unlock(&m->ctl->lock);
	if (cancelled)
		return fm_error_set(&m->err, -ECANCELED, "%s before the point of no return", m->stop_reason);
	if ((r = step_mark(m, "commit", "started")) < 0)
		return r;
	if ((r = fm_journal_exec(m->ctl->journal, "UPDATE migrations SET point_of_no_return = 1 WHERE id = ?", "s",
				 m->id)) < 0)
		return fm_error_set(&m->err, r, "cannot journal the point of no return: not deleting the source");
	return 0;
}

/* After the point of no return: retried until done, including after a restart. */
static int finish_commit(fm_mig *m)
{
	fm_error e = FM_ERROR_INIT;
	int r;

	r = agent(m, m->src_ep, "POST", 0, json_pack("{s:s}", "container", m->container), NULL, &e,
		  "/v1/agent/migrations/%s/cleanup", m->id);
	if (r < 0) {
		mlog(m, FM_LOG_WARN, FM_C_CONTAINER_MANAGER, "Source cleanup on %s failed: %s", m->source, e.msg);
		fm_error_clear(&e);
		return r;
	}
	mlog(m, FM_LOG_INFO, FM_C_CONTAINER_MANAGER, "Source cleaned up: %s removed from %s", m->container, m->source);
	r = agent(m, m->dst_ep, "POST", 0, json_object(), NULL, &e, "/v1/agent/migrations/%s/commit", m->id);
	if (r < 0) {
		mlog(m, FM_LOG_WARN, FM_C_RESOURCE_ALLOCATOR, "Commit on %s failed: %s", m->dest, e.msg);
		fm_error_clear(&e);
		return r;
	}
	step_mark(m, "commit", "done");
	dns_commit(m);
	return 0;
}

/* ROLLBACK: undo in reverse.  The destination copy goes first, so that at no
 * moment two copies of the container run. */
static bool rollback(fm_mig *m)
{
	fm_error e = FM_ERROR_INIT;
	bool dst_clean = true;
	int r = 0;

	dns_rollback(m);
	if (step_started(m, "forward") &&
	    agent(m, m->src_ep, "POST", ROLLBACK_CALL_TIMEOUT_MS, json_object(), NULL, &e,
		  "/v1/agent/migrations/%s/forward_cancel", m->id) < 0) {
		/* the source's resume ends it too; unreachable now, it ends by itself */
		mlog(m, FM_LOG_WARN, FM_C_TRAFFIC_REDIRECTOR, "Cannot end the forward on %s: %s", m->source, e.msg);
		fm_error_clear(&e);
	}
	if (step_started(m, "reserve")) {
		for (int i = 0; i < ROLLBACK_ATTEMPTS; i++) {
			r = agent(m, m->dst_ep, "POST", ROLLBACK_CALL_TIMEOUT_MS, json_object(), NULL, &e,
				  "/v1/agent/migrations/%s/abort", m->id);
			if (r == 0 || i + 1 == ROLLBACK_ATTEMPTS || !retry_wait(m->ctl, i + 1))
				break;
			fm_error_clear(&e);
		}
		if (r == 0) {
			mlog(m, FM_LOG_INFO, FM_C_RESOURCE_ALLOCATOR,
			     "Destination %s cleaned up: partial state discarded, reservation released", m->dest);
		} else {
			dst_clean = false;
			mlog(m, FM_LOG_WARN, FM_C_RESOURCE_ALLOCATOR,
			     "Destination %s unreachable during rollback (%s); it discards the migration itself when it "
			     "restarts or when its receiver times out", m->dest, e.msg);
		}
		fm_error_clear(&e);
	}
	if (*m->net_ip && step_started(m, "redirect")) {
		/* the switch sends the address back where the container resumes */
		fm_error saved = FM_ERROR_INIT;
		fm_error_move(&saved, &m->err);
		int nr = -1;
		for (int i = 0; i < ROLLBACK_ATTEMPTS && (nr = network_point(m, m->source, m->net_src_port, ", back")) < 0; i++) {
			mlog(m, FM_LOG_WARN, FM_C_TRAFFIC_REDIRECTOR, "%s", m->err.msg);
			fm_error_clear(&m->err);
			if (i + 1 < ROLLBACK_ATTEMPTS && !retry_wait(m->ctl, i + 1))
				break;
		}
		if (nr < 0)
			mlog(m, FM_LOG_WARN, FM_C_TRAFFIC_REDIRECTOR, "The switch could not be reprogrammed: the flows for %s "
			     "may still point at %s until it is", m->net_ip, m->dest);
		fm_error_clear(&m->err);
		fm_error_move(&m->err, &saved);
	} else if (*m->net_ip && step_started(m, "flows_trial")) {
		/* never turned: whatever is left of the trial goes, the switch's
		 * learning carries on */
		int nr = -1;
		for (int i = 0; i < ROLLBACK_ATTEMPTS && (nr = fm_redirector_release(m->ctl->redirector, m->net_ip, &e)) < 0;
		     i++) {
			mlog(m, FM_LOG_WARN, FM_C_TRAFFIC_REDIRECTOR, "Cannot remove the flows for %s: %s", m->net_ip, e.msg);
			fm_error_clear(&e);
			if (i + 1 < ROLLBACK_ATTEMPTS && !retry_wait(m->ctl, i + 1))
				break;
		}
		if (nr == 0)
			mlog(m, FM_LOG_INFO, FM_C_TRAFFIC_REDIRECTOR, "No flows for %s left on the switch: it forwards "
			     "the address by learning, to %s", m->net_ip, m->source);
		fm_error_clear(&e);
	}
	bool frozen = step_started(m, "checkpoint");
	if (frozen || step_started(m, "presync") || step_started(m, "precopy")) {
		/* also after a pre-sync or pre-copy: the source releases its claim */
		if (frozen && !dst_clean && step_started(m, "restore")) {
			/* the destination may be running the container: resuming the source
			 * now could run it twice.  Leave it frozen and say so. */
			mlog(m, FM_LOG_WARN, FM_C_MIGRATION_MANAGER,
			     "Source copy of %s stays frozen on %s until %s confirms its copy is gone (resuming now could "
			     "run the container twice); retrying", m->container, m->source, m->dest);
			return false;
		}
		r = agent(m, m->src_ep, "POST", 0, json_pack("{s:s}", "container", m->container), NULL, &e,
			  "/v1/agent/migrations/%s/resume", m->id);
		if (r < 0) {
			mlog(m, FM_LOG_ERROR, FM_C_CONTAINER_MANAGER, "Cannot resume %s on %s: %s", m->container,
			     m->source, e.msg);
			fm_error_clear(&e);
			/* a container that is gone has nothing to resume; anything else
			 * (unreachable, runc failing) is retried: it must not stay frozen */
			return r == -ENOENT;
		}
		if (frozen)
			mlog(m, FM_LOG_INFO, FM_C_CONTAINER_MANAGER, "Container %s resumed on source %s", m->container,
			     m->source);
		else
			mlog(m, FM_LOG_INFO, FM_C_CONTAINER_MANAGER, "Container %s was never frozen: it keeps running on "
			     "%s, released by this migration", m->container, m->source);
		fm_error_clear(&e);
	} else if (m->src_ep) {
		mlog(m, FM_LOG_INFO, FM_C_CONTAINER_MANAGER, "Container %s was never frozen: it keeps running on %s",
		     m->container, m->source);
	}
	return true;
}

/* Rolls back until complete; a controller that stops meanwhile leaves the
 * migration unresolved, and its next start resumes the rollback. */
static bool rollback_until_done(fm_mig *m)
{
	for (int k = 0; !rollback(m); k++)
		if (!retry_wait(m->ctl, k + 2))
			return false;
	return true;
}

static const struct {
	fm_mstate state;
	int (*run)(fm_mig *m);
	const char *component;
	const char *done; /* log text of the success transition */
} steps[] = {
	{ FM_MS_PENDING, step_pending, FM_C_MIGRATION_MANAGER, "Request validated, source and destination reachable" },
	{ FM_MS_PLANNING, step_planning, FM_C_MIGRATION_MANAGER, "Plan ready: policies allow, strategy chosen, resources reserved" },
	{ FM_MS_PREPARATION, step_preparation, FM_C_MIGRATION_MANAGER, "Destination prepared" },
	{ FM_MS_EXECUTION, step_execution, FM_C_STATE_SYNC, "State transferred and restored" },
	{ FM_MS_VERIFICATION, step_verification, FM_C_MIGRATION_MANAGER, "Verification passed" },
};

static void finish(fm_mig *m, bool completed)
{
	int64_t total = (fm_now_mono_us() - m->t0_us + 500) / 1000;
	fm_journal_exec(m->ctl->journal,
			"UPDATE migrations SET resolved = 1, finished_ms = ?, total_ms = COALESCE(total_ms, ?), error = ?,"
			" error_detail = ? WHERE id = ?", "iisss", fm_now_wall_ms(), total,
			completed ? NULL : m->err.msg, completed ? NULL : m->err.detail, m->id);
}

static void fail_and_rollback(fm_mig *m)
{
	const char *path = fm_fsm_failure_path(m->state);
	char what[1200];

	snprintf(what, sizeof(what), "Migration failed in %s (path %s): %s", fm_mstate_name(m->state),
		 path ? path : "-", m->err.msg);
	fm_journal_exec(m->ctl->journal, "UPDATE migrations SET error = ?, error_detail = ? WHERE id = ?", "sss",
			m->err.msg, m->err.detail, m->id);
	if (m->err.detail)
		mlog(m, FM_LOG_ERROR, FM_C_MIGRATION_MANAGER, "Details:\n%s", m->err.detail);
	transition(m, FM_MS_FAILED, FM_LOG_ERROR, FM_C_MIGRATION_MANAGER, what);
	transition(m, FM_MS_ROLLBACK, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "Initiating rollback");
	if (!rollback_until_done(m))
		return; /* resolved at the next start */
	if (m->lb.event) {
		/* a switchover was announced: the source serves again */
		lb_join(m);
		lb_start(m, "rollback");
		lb_join(m);
	}
	transition(m, FM_MS_FAILED, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "Rollback finished");
	mlog(m, FM_LOG_ERROR, FM_C_MIGRATION_MANAGER, "Migration %s of %s failed: %s. Final State: FAILED", m->id,
	     m->container, m->err.msg);
	finish(m, false); /* last: "finished" means the log is complete */
}

static void run_fsm(fm_mig *m)
{
	for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
		if (steps[i].state != m->state)
			continue;
		pthread_mutex_lock(&m->ctl->lock);
		bool cancelled = m->cancelled;
		pthread_mutex_unlock(&m->ctl->lock);
		int r = cancelled ? -ECANCELED : steps[i].run(m);
		if (r == -ESHUTDOWN && m->state == FM_MS_PENDING) {
			mlog(m, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "The controller stops: the request stays PENDING and "
			     "is taken up again at its next start");
			return;
		}
		if (r < 0) {
			/* a cancel also breaks the step it interrupted: that error is the
			 * symptom, the cancel (or the deadline) is the reason */
			pthread_mutex_lock(&m->ctl->lock);
			cancelled = m->cancelled;
			pthread_mutex_unlock(&m->ctl->lock);
			if (cancelled) {
				fm_error_clear(&m->err);
				fm_error_set(&m->err, -ECANCELED, "%s in %s", m->stop_reason, fm_mstate_name(m->state));
			}
			fail_and_rollback(m);
			return;
		}
		if (m->state == FM_MS_VERIFICATION) {
			/* past the point of no return: retry until the commit lands */
			for (int k = 0; finish_commit(m) < 0; k++)
				if (!retry_wait(m->ctl, k))
					return; /* resolved at the next start */
		}
		transition(m, steps[i].state == FM_MS_VERIFICATION ? FM_MS_COMPLETED : fm_fsm_success_target(m->state),
			   FM_LOG_INFO, steps[i].component, steps[i].done);
	}
	if (m->state == FM_MS_COMPLETED) {
		lb_join(m);
		int64_t late = m->deadline_us ? fm_now_mono_us() - m->deadline_us : 0;
		if (late > 0)
			mlog(m, FM_LOG_WARN, FM_C_POLICY_ENFORCER, "The migration ran %.1f s past the %d s policy %s allows: "
			     "it was past its point of no return, so it completed", (double)late / 1e6, m->duration_s, m->policy);
		mlog(m, FM_LOG_INFO, FM_C_MIGRATION_MANAGER,
		     "Migration %s of %s from %s to %s completed (downtime %" PRId64 " ms). Final State: COMPLETED",
		     m->id, m->container, m->source, m->dest, m->downtime_ms);
		finish(m, true); /* last: "finished" means the log is complete */
	}
}

/* ------------------------------------------------------------ threads */

static void mig_free(fm_mig *m)
{
	if (m->lb.started)
		pthread_join(m->lb.thread, NULL);
	json_decref(m->lb.event);
	free(m->src_ep);
	free(m->dst_ep);
	json_decref(m->req);
	json_decref(m->cinfo);
	json_decref(m->src_info);
	json_decref(m->dst_info);
	json_decref(m->prep);
	events_flush(m);
	fm_error_clear(&m->err);
	free(m);
	fm_memory_release();
}

static void *mig_thread(void *opaque)
{
	fm_mig *m = opaque;
	fm_controller *c = m->ctl;

	if (m->recovering) {
		if (json_integer_value(json_object_get(m->req, "_pnr"))) {
			mlog(m, FM_LOG_INFO, FM_C_MIGRATION_MANAGER,
			     "Controller restarted past the point of no return: finishing the commit");
			bool done;
			for (int k = 0; !(done = finish_commit(m) == 0); k++)
				if (!retry_wait(c, k))
					break;
			if (done) {
				if (m->state != FM_MS_COMPLETED)
					transition(m, FM_MS_COMPLETED, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "Commit finished after restart");
				mlog(m, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "Migration %s completed. Final State: COMPLETED", m->id);
				finish(m, true); /* last: "finished" means the log is complete */
			}
		} else if (m->state == FM_MS_FAILED || m->state == FM_MS_ROLLBACK) {
			fm_error_set(&m->err, -EINTR, "%s", json_string_value(json_object_get(m->req, "_error")) ?: "controller restarted");
			if (m->state == FM_MS_FAILED)
				transition(m, FM_MS_ROLLBACK, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "Resuming rollback after restart");
			if (!rollback_until_done(m))
				goto out;
			transition(m, FM_MS_FAILED, FM_LOG_INFO, FM_C_MIGRATION_MANAGER, "Rollback finished");
			mlog(m, FM_LOG_ERROR, FM_C_MIGRATION_MANAGER, "Migration %s failed: %s. Final State: FAILED", m->id, m->err.msg);
			finish(m, false); /* last: "finished" means the log is complete */
		} else {
			fm_error_set(&m->err, -EINTR, "the controller was restarted while the migration was in %s",
				     fm_mstate_name(m->state));
			fail_and_rollback(m);
		}
	} else {
		run_fsm(m);
	}
out:
	pthread_mutex_lock(&c->lock);
	for (fm_mig **pp = &c->running; *pp; pp = &(*pp)->next)
		if (*pp == m) {
			*pp = m->next;
			break;
		}
	pthread_cond_broadcast(&c->changed);
	pthread_mutex_unlock(&c->lock);
	pthread_detach(pthread_self());
	mig_free(m);
	return NULL;
}

static int start(fm_controller *c, fm_mig *m, fm_error *err)
{
	pthread_mutex_lock(&c->lock);
	m->seq = c->next_seq++;
	/* a migration resolved after a restart is past PENDING: it counts */
	m->admitted = m->recovering;
	m->next = c->running;
	c->running = m;
	if (pthread_create(&m->thread, NULL, mig_thread, m) != 0) {
		c->running = m->next;
		pthread_mutex_unlock(&c->lock);
		return fm_error_set(err, -EAGAIN, "cannot start a migration thread");
	}
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* Stops m before its point of no return (under ctl->lock): the step in
 * progress breaks and the migration rolls back; reason becomes its error.
 * Returns the destination to abort (the caller frees it), or NULL when
 * nothing was asked of it yet. */
static char *interrupt_locked(fm_mig *m, const char *reason)
{
	m->cancelled = true;
	snprintf(m->stop_reason, sizeof(m->stop_reason), "%s", reason);
	pthread_cond_broadcast(&m->ctl->changed); /* a request waiting in the queue */
	return m->admitted && m->dst_ep ? fm_xstrdup(m->dst_ep) : NULL;
}

/* Breaks a long step (transfer, restore, page wait) at once: aborting the
 * destination makes it fail; the migration thread then rolls back as usual.
 * The abort is idempotent and waits for a restore in progress. */
static void abort_destination(fm_controller *c, const char *id, char *dst_ep)
{
	char path[128];
	if (!dst_ep)
		return;
	snprintf(path, sizeof(path), "/v1/agent/migrations/%s/abort", id);
	json_t *body = json_object();
	c->call(dst_ep, "POST", path, body, 30000, NULL, NULL);
	json_decref(body);
	free(dst_ep);
}

/* CONSTRAINTS migration_duration: a migration still short of its point of no
 * return at its deadline is stopped like a cancel. */
static void *watchdog_thread(void *opaque)
{
	fm_controller *c = opaque;

	pthread_mutex_lock(&c->lock);
	while (!c->stopping || c->running) {
		int64_t now = fm_now_mono_us(), next = 0;
		fm_mig *late = NULL;
		for (fm_mig *m = c->running; m && !late; m = m->next) {
			if (!m->deadline_us || m->cancelled || m->committing)
				continue;
			if (m->deadline_us <= now)
				late = m;
			else if (!next || m->deadline_us < next)
				next = m->deadline_us;
		}
		if (late) {
			char reason[256], id[32];
			snprintf(reason, sizeof(reason), "migration_duration exceeded: policy %s allows %d s", late->policy,
				 late->duration_s);
			snprintf(id, sizeof(id), "%s", late->id);
			char *ep = interrupt_locked(late, reason);
			pthread_mutex_unlock(&c->lock);
			fm_log(FM_LOG_WARN, FM_C_POLICY_ENFORCER, id, "Migration %s: %s; aborting it", id, reason);
			abort_destination(c, id, ep);
			pthread_mutex_lock(&c->lock);
			continue;
		}
		if (!next) {
			pthread_cond_wait(&c->changed, &c->lock);
			continue;
		}
		struct timespec until = { .tv_sec = next / 1000000, .tv_nsec = (next % 1000000) * 1000 };
		pthread_cond_timedwait(&c->changed, &c->lock, &until);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

void fm_ctl_init(fm_controller *c, fm_journal *j, const char *host, const char *self_endpoint,
		 fm_agent_call_fn call)
{
	memset(c, 0, sizeof(*c));
	c->journal = j;
	c->host = fm_xstrdup(host);
	c->self_endpoint = fm_xstrdup(self_endpoint);
	c->call = call;
	c->rpc_timeout_ms = 15000;
	c->long_timeout_ms = 60 * 60 * 1000;
	pthread_condattr_t ca;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->policy_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->changed, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&c->watchdog, NULL, watchdog_thread, c) != 0)
		abort(); /* as an allocation failure: no way to run without it */
}

void fm_ctl_set_dns(fm_controller *c, fm_dns *dns, const char *zone)
{
	free(c->dns);
	free(c->dns_zone);
	c->dns = dns;
	c->dns_zone = zone ? fm_xstrdup(zone) : NULL;
}

void fm_ctl_set_redirector(fm_controller *c, fm_redirector *r)
{
	fm_redirector_free(c->redirector);
	c->redirector = r;
}

int fm_ctl_address_claim(fm_controller *c, const char *ip, fm_error *err)
{
	const char *busy = NULL;
	fm_error e = FM_ERROR_INIT;
	if (!c->redirector || !fm_redirector_holds(c->redirector, ip))
		return 0;
	pthread_mutex_lock(&c->lock);
	for (fm_mig *m = c->running; m && !busy; m = m->next)
		if (!strcmp(m->net_ip, ip))
			busy = m->id;
	if (busy) {
		int r = fm_error_set(err, -EBUSY, "address %s is being moved by migration %s", ip, busy);
		pthread_mutex_unlock(&c->lock);
		return r;
	}
	pthread_mutex_unlock(&c->lock);
	/* best effort: without the switch, its learning still takes over when
	 * the flows' hard timeout ends */
	if (fm_redirector_release(c->redirector, ip, &e) < 0)
		fm_warn(FM_C_SDN, "Cannot release the switch's flows for %s (%s): it may reach the new "
			"container only after they expire (%d s after the move that set them)", ip, e.msg,
			FM_REDIRECT_HOLD_S);
	fm_error_clear(&e);
	return 0;
}

void fm_ctl_set_lb_hook(fm_controller *c, fm_lb_hook *hook)
{
	fm_lb_hook_free(c->lb_hook);
	c->lb_hook = hook;
}

void fm_ctl_fini(fm_controller *c)
{
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_cond_broadcast(&c->changed); /* wakes retry_wait() */
	while (c->running)
		pthread_cond_wait(&c->changed, &c->lock);
	pthread_cond_broadcast(&c->changed);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->watchdog, NULL);
	fm_lb_hook_free(c->lb_hook);
	fm_redirector_free(c->redirector);
	fm_ctl_set_dns(c, NULL, NULL);
	free(c->probe_netns);
	free(c->host);
	free(c->self_endpoint);
	fm_ctl_set_policies(c, NULL);
	pthread_mutex_destroy(&c->policy_lock);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->changed);
}

int fm_ctl_submit(fm_controller *c, json_t *req, char *id, size_t idlen, fm_error *err)
{
	const char *container = json_string_value(json_object_get(req, "container"));
	const char *to = json_string_value(json_object_get(req, "to"));
	const char *from = json_string_value(json_object_get(req, "from"));
	const char *strategy = json_string_value(json_object_get(req, "strategy"));
	json_t *health = json_object_get(req, "health_cmd");
	fm_strategy s = FM_STRATEGY_COLD;
	fm_mig *m;
	char *reqs;
	int r;

	if (!container || !fm_name_valid(container))
		return fm_error_set(err, -EINVAL, "\"container\" must be a container name");
	if (!to || !fm_name_valid(to))
		return fm_error_set(err, -EINVAL, "\"to\" must be a host name");
	if (json_object_get(req, "from") && (!from || !fm_name_valid(from)))
		return fm_error_set(err, -EINVAL, "\"from\" must be a host name");
	if (strategy && (s = fm_strategy_from_name(strategy)) == _FM_STRATEGY_INVALID)
		return fm_error_set(err, -EINVAL,
				    "unknown strategy \"%s\": use COLD_MIGRATION, PRE_COPY, POST_COPY, HYBRID or LIVE_MIGRATION",
				    strategy);
	if (health && !json_is_null(health)) {
		size_t i;
		json_t *v;
		if (!json_is_array(health) || json_array_size(health) == 0 || json_array_size(health) > 64)
			return fm_error_set(err, -EINVAL, "\"health_cmd\" must be a non-empty array of strings");
		json_array_foreach(health, i, v) if (!json_is_string(v)) return fm_error_set(err, -EINVAL,
			"\"health_cmd\" must be a non-empty array of strings");
	}
	json_t *ht = json_object_get(req, "health_timeout_ms");
	if (ht && !json_is_null(ht) && (!json_is_integer(ht) || json_integer_value(ht) <= 0 ||
					json_integer_value(ht) > 3600000))
		return fm_error_set(err, -EINVAL, "\"health_timeout_ms\" must be 1..3600000");
	json_t *bw = json_object_get(req, "bandwidth_bps");
	if (bw && !json_is_null(bw) && (!json_is_integer(bw) || json_integer_value(bw) < 1000000))
		return fm_error_set(err, -EINVAL, "\"bandwidth_bps\" must be at least 1000000 (1 Mbit/s)");
	json_t *cz = json_object_get(req, "compress");
	if (cz && !json_is_null(cz) && (!json_is_integer(cz) || json_integer_value(cz) < -1 || json_integer_value(cz) > 19))
		return fm_error_set(err, -EINVAL, "\"compress\" must be -1 (auto), 0 (off) or a zstd level 1..19");
	json_t *why = json_object_get(req, "reason");
	if (why && !json_is_null(why) && (!json_is_string(why) || json_string_length(why) > 1024 ||
					  strlen(json_string_value(why)) != json_string_length(why)))
		return fm_error_set(err, -EINVAL, "\"reason\" must be a string of at most 1024 bytes");
	json_t *prio = json_object_get(req, "priority");
	if (prio && !json_is_null(prio) && prio_from_name(json_string_value(prio)) < 0)
		return fm_error_set(err, -EINVAL, "\"priority\" must be \"high\", \"normal\" or \"low\"");
	json_t *fws = json_object_get(req, "forward_s");
	if (fws && !json_is_null(fws) && (!json_is_integer(fws) || json_integer_value(fws) < 0 ||
					  json_integer_value(fws) > 86400))
		return fm_error_set(err, -EINVAL, "\"forward_s\" must be 0..86400 (seconds)");
	json_t *vp = json_object_get(req, "verify_port");
	if (vp && !json_is_null(vp) && (!json_is_integer(vp) || json_integer_value(vp) < 1 || json_integer_value(vp) > 65535))
		return fm_error_set(err, -EINVAL, "\"verify_port\" must be a TCP port, 1..65535");
	json_t *nip = json_object_get(req, "new_ip");
	if (nip && !json_is_null(nip) && !fm_net_cidr_valid(json_string_value(nip)))
		return fm_error_set(err, -EINVAL, "\"new_ip\" must be an address with its prefix, A.B.C.D/P");
	const char *key;
	json_t *val;
	json_object_foreach(req, key, val) if (*key == '_') return fm_error_set(err, -EINVAL,
		"\"%.64s\": names starting with _ are the controller's own", key);
	static const char *const flags[] = { "diskless", "overlap", "prefetch", "auto_converge", "presync" };
	for (size_t i = 0; i < ARRAY_SIZE(flags); i++) {
		json_t *f = json_object_get(req, flags[i]);
		if (f && !json_is_boolean(f))
			return fm_error_set(err, -EINVAL, "\"%s\" must be true or false", flags[i]);
	}

	json_t *busy = fm_journal_query_one(c->journal, "SELECT id FROM migrations WHERE container = ? AND resolved = 0",
					    "s", container);
	if (busy) {
		r = fm_error_set(err, -EBUSY, "container %s is already being migrated (%s)", container,
				 json_string_value(json_object_get(busy, "id")));
		json_decref(busy);
		return r;
	}
	m = fm_xcalloc(1, sizeof(*m));
	m->ctl = c;
	fm_random_id("m", m->id, sizeof(m->id));
	snprintf(m->container, sizeof(m->container), "%s", container);
	snprintf(m->dest, sizeof(m->dest), "%s", to);
	snprintf(m->source, sizeof(m->source), "%s", from ? from : "");
	m->requested = m->strategy = s;
	m->state = FM_MS_PENDING;
	m->prio = prio && json_is_string(prio) ? prio_from_name(json_string_value(prio)) : FM_PRIO_NORMAL;
	m->req = json_deep_copy(req);
	m->t0_us = fm_now_mono_us();

	reqs = json_dumps(req, JSON_COMPACT);
	int64_t now = fm_now_wall_ms();
	r = fm_journal_exec(c->journal,
			    "INSERT INTO migrations(id, container, source, destination, strategy, state, created_ms, updated_ms, request)"
			    " VALUES(?, ?, ?, ?, ?, 'PENDING', ?, ?, ?)",
			    "sssssiis", m->id, container, m->source, to, fm_strategy_name(s), now, now, reqs);
	if (r >= 0)
		r = fm_journal_exec(c->journal, "INSERT INTO transitions(mid, seq, from_state, to_state, at_ms, reason)"
				    " VALUES(?, 1, NULL, 'PENDING', ?, 'request received')", "si", m->id, now);
	free(reqs);
	if (r < 0) {
		mig_free(m);
		return fm_error_set(err, r, "cannot journal the migration request");
	}
	snprintf(id, idlen, "%s", m->id);
	if ((r = start(c, m, err)) < 0) {
		mig_free(m);
		return r;
	}
	return 0;
}

void fm_ctl_recover(fm_controller *c)
{
	json_t *rows = NULL, *row;
	size_t i;

	if (fm_journal_query(c->journal, &rows, "SELECT * FROM migrations WHERE resolved = 0 ORDER BY created_ms", NULL) < 0)
		return;
	json_array_foreach(rows, i, row) {
		fm_mig *m = fm_xcalloc(1, sizeof(*m));
		const char *reqs = json_string_value(json_object_get(row, "request"));
		m->ctl = c;
		m->recovering = true;
		snprintf(m->id, sizeof(m->id), "%s", json_string_value(json_object_get(row, "id")));
		snprintf(m->container, sizeof(m->container), "%s", json_string_value(json_object_get(row, "container")));
		snprintf(m->source, sizeof(m->source), "%s", json_string_value(json_object_get(row, "source")) ?: "");
		snprintf(m->dest, sizeof(m->dest), "%s", json_string_value(json_object_get(row, "destination")));
		m->state = fm_mstate_from_name(json_string_value(json_object_get(row, "state")));
		m->strategy = fm_strategy_from_name(json_string_value(json_object_get(row, "strategy")));
		m->req = reqs ? json_loads(reqs, 0, NULL) : NULL;
		if (!m->req)
			m->req = json_object();
		json_object_set_new(m->req, "_pnr", json_integer(json_integer_value(json_object_get(row, "point_of_no_return")) ||
								 step_started(m, "commit")));
		if (json_is_string(json_object_get(row, "error")))
			json_object_set(m->req, "_error", json_object_get(row, "error"));
		m->src_ep = *m->source ? fm_ctl_endpoint(c, m->source) : NULL;
		m->dst_ep = fm_ctl_endpoint(c, m->dest);
		network_recover(m);
		/* durations restart from here: the record keeps the original timestamps */
		m->t0_us = fm_now_mono_us() - (fm_now_wall_ms() - json_integer_value(json_object_get(row, "created_ms"))) * 1000;
		if (m->state == FM_MS_PENDING) {
			/* nothing was done for it yet: it queues again, in its order */
			m->recovering = false;
			m->requested = m->strategy;
			free(m->src_ep); /* PENDING finds them again */
			free(m->dst_ep);
			m->src_ep = m->dst_ep = NULL;
			json_t *p = json_object_get(m->req, "priority");
			m->prio = json_is_string(p) ? prio_from_name(json_string_value(p)) : FM_PRIO_NORMAL;
			if (m->prio < 0)
				m->prio = FM_PRIO_NORMAL;
			fm_log(FM_LOG_INFO, FM_C_MIGRATION_MANAGER, m->id, "Request %s for %s was PENDING when the "
			       "controller stopped: taking it up again", m->id, m->container);
			if (start(c, m, NULL) < 0)
				mig_free(m);
			continue;
		}
		fm_log(FM_LOG_WARN, FM_C_MIGRATION_MANAGER, m->id,
		       "Found unfinished migration %s of %s in %s after a restart: resolving it", m->id, m->container,
		       fm_mstate_name(m->state));
		if (start(c, m, NULL) < 0)
			mig_free(m);
	}
	json_decref(rows);
}

json_t *fm_ctl_get(fm_controller *c, const char *id, int since)
{
	json_t *m = fm_journal_query_one(c->journal,
		"SELECT id, container, source, destination, strategy, state, resolved, created_ms, updated_ms,"
		" finished_ms, error, error_detail, downtime_ms, total_ms, bytes_transferred, point_of_no_return"
		" FROM migrations WHERE id = ?", "s", id);
	json_t *tr = NULL, *ev = NULL;

	if (!m)
		return NULL;
	/* a FAILED migration still rolling back is not finished */
	json_object_set_new(m, "finished", json_boolean(json_integer_value(json_object_get(m, "resolved")) != 0));
	json_object_set(m, "resolved", json_boolean(json_integer_value(json_object_get(m, "resolved")) != 0));
	fm_journal_query(c->journal, &tr, "SELECT seq, from_state AS 'from', to_state AS 'to', at_ms, reason"
			 " FROM transitions WHERE mid = ? ORDER BY seq", "s", id);
	json_object_set_new(m, "transitions", tr ? tr : json_array());
	if (since >= 0) {
		fm_journal_query(c->journal, &ev, "SELECT seq, at_ms, level, component, message FROM events"
				 " WHERE mid = ? AND seq > ? ORDER BY seq", "si", id, (int64_t)since);
		json_object_set_new(m, "events", ev ? ev : json_array());
	}
	return m;
}

int fm_ctl_cancel(fm_controller *c, const char *id, fm_error *err)
{
	fm_mig *m;
	char *dst_ep = NULL;

	pthread_mutex_lock(&c->lock);
	for (m = c->running; m; m = m->next)
		if (!strcmp(m->id, id))
			break;
	if (!m || m->recovering) {
		pthread_mutex_unlock(&c->lock);
		json_t *row = fm_journal_query_one(c->journal, "SELECT state FROM migrations WHERE id = ?", "s", id);
		int r = row ? fm_error_set(err, -EBUSY, "migration %s is already %s", id,
					   json_string_value(json_object_get(row, "state")))
			    : fm_error_set(err, -ENOENT, "no migration %s on this controller", id);
		json_decref(row);
		return r;
	}
	if (m->committing) {
		pthread_mutex_unlock(&c->lock);
		return fm_error_set(err, -EBUSY, "migration %s is past the point of no return: it can only complete", id);
	}
	dst_ep = interrupt_locked(m, "cancelled by the user");
	pthread_mutex_unlock(&c->lock);
	fm_log(FM_LOG_WARN, FM_C_MIGRATION_MANAGER, id, "Cancel requested for migration %s", id);
	abort_destination(c, id, dst_ep);
	return 0;
}

json_t *fm_ctl_list(fm_controller *c)
{
	json_t *rows = NULL;
	fm_journal_query(c->journal, &rows,
			 "SELECT id, container, source, destination, strategy, state, resolved, created_ms, downtime_ms,"
			 " total_ms, bytes_transferred, error FROM migrations ORDER BY created_ms", NULL);
	return rows ? rows : json_array();
}

int fm_ctl_host_add(fm_controller *c, const char *name, const char *address, fm_error *err)
{
	char h[256];
	int port;
	if (!fm_name_valid(name))
		return fm_error_set(err, -EINVAL, "invalid host name \"%s\"", name);
	if (!address || fm_split_hostport(address, h, sizeof(h), &port) < 0 || port == 0)
		return fm_error_set(err, -EINVAL, "invalid address \"%s\": expected HOST:PORT", address ? address : "");
	if (!strcmp(name, c->host))
		return fm_error_set(err, -EEXIST, "%s is this host", name);
	if (fm_journal_exec(c->journal, "INSERT OR REPLACE INTO hosts(name, address, added_ms) VALUES(?, ?, ?)",
			    "ssi", name, address, fm_now_wall_ms()) < 0)
		return fm_error_set(err, -EIO, "cannot record host %s", name);
	return 0;
}

int fm_ctl_host_remove(fm_controller *c, const char *name, fm_error *err)
{
	if (fm_journal_query_int(c->journal, 0, "SELECT COUNT(*) FROM migrations WHERE resolved = 0 AND"
				 " (source = ? OR destination = ?)", "ss", name, name) > 0)
		return fm_error_set(err, -EBUSY, "host %s takes part in an unfinished migration; remove it afterwards", name);
	if (fm_journal_exec(c->journal, "DELETE FROM hosts WHERE name = ?", "s", name) <= 0)
		return fm_error_set(err, -ENOENT, "unknown host %s", name);
	return 0;
}

json_t *fm_ctl_host_list(fm_controller *c)
{
	json_t *rows = NULL;
	fm_journal_query(c->journal, &rows, "SELECT name, address, added_ms FROM hosts ORDER BY name", NULL);
	if (!rows)
		rows = json_array();
	json_array_insert_new(rows, 0, json_pack("{s:s, s:s, s:b}", "name", c->host, "address", c->self_endpoint,
						 "local", 1));
	return rows;
}

char *fm_ctl_endpoint(fm_controller *c, const char *name)
{
	json_t *row;
	char *ep = NULL;
	if (!strcmp(name, c->host))
		return fm_xstrdup(c->self_endpoint);
	row = fm_journal_query_one(c->journal, "SELECT address FROM hosts WHERE name = ?", "s", name);
	if (row)
		ep = fm_xstrdup(json_string_value(json_object_get(row, "address")));
	json_decref(row);
	return ep;
}
