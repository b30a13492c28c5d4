#include "manager/fsm.h"

#include <string.h>
#include <strings.h>

static const char *const state_names[_FM_MS_MAX] = {
	[FM_MS_PENDING] = "PENDING",
	[FM_MS_PLANNING] = "PLANNING",
	[FM_MS_PREPARATION] = "PREPARATION",
	[FM_MS_EXECUTION] = "EXECUTION",
	[FM_MS_VERIFICATION] = "VERIFICATION",
	[FM_MS_COMPLETED] = "COMPLETED",
	[FM_MS_ROLLBACK] = "ROLLBACK",
	[FM_MS_FAILED] = "FAILED",
};

/* The whole FSM: for each state, where success leads, and the paper's failure
 * path label.  Every working state fails into FAILED; FAILED leads to ROLLBACK,
 * ROLLBACK back to FAILED (final). */
static const struct {
	fm_mstate on_success;
	const char *failure_path;
} fsm[_FM_MS_MAX] = {
	[FM_MS_PENDING] = { FM_MS_PLANNING, "1F" },
	[FM_MS_PLANNING] = { FM_MS_PREPARATION, "2F" },
	[FM_MS_PREPARATION] = { FM_MS_EXECUTION, "3F" },
	[FM_MS_EXECUTION] = { FM_MS_VERIFICATION, "4F" },
	[FM_MS_VERIFICATION] = { FM_MS_COMPLETED, "5F" },
	[FM_MS_COMPLETED] = { _FM_MS_INVALID, NULL },
	[FM_MS_ROLLBACK] = { FM_MS_FAILED, NULL },
	[FM_MS_FAILED] = { FM_MS_ROLLBACK, NULL },
};

static bool valid(fm_mstate s) { return s >= FM_MS_PENDING && s < _FM_MS_MAX; }

const char *fm_mstate_name(fm_mstate s) { return valid(s) ? state_names[s] : "INVALID"; }

fm_mstate fm_mstate_from_name(const char *s)
{
	for (int i = FM_MS_PENDING; s && i < _FM_MS_MAX; i++)
		if (!strcasecmp(s, state_names[i]))
			return (fm_mstate)i;
	return _FM_MS_INVALID;
}

static bool working(fm_mstate s) { return s >= FM_MS_PENDING && s <= FM_MS_VERIFICATION; }

bool fm_fsm_allowed(fm_mstate from, fm_mstate to)
{
	if (!valid(from) || !valid(to))
		return false;
	if (fsm[from].on_success == to)
		return true;
	return working(from) && to == FM_MS_FAILED;
}

fm_mstate fm_fsm_failure_target(fm_mstate s) { return working(s) ? FM_MS_FAILED : _FM_MS_INVALID; }
fm_mstate fm_fsm_success_target(fm_mstate s) { return valid(s) ? fsm[s].on_success : _FM_MS_INVALID; }
const char *fm_fsm_failure_path(fm_mstate s) { return valid(s) ? fsm[s].failure_path : NULL; }

static const struct {
	fm_strategy s;
	const char *names[4];
} strategy_names[] = {
	{ FM_STRATEGY_COLD, { "COLD_MIGRATION", "cold", "cold-migration", "cold_migration" } },
	{ FM_STRATEGY_PRE_COPY, { "PRE_COPY", "pre-copy", "precopy", "pre_copy" } },
	{ FM_STRATEGY_POST_COPY, { "POST_COPY", "post-copy", "postcopy", "post_copy" } },
	{ FM_STRATEGY_HYBRID, { "HYBRID", "hybrid", NULL, NULL } },
	{ FM_STRATEGY_LIVE, { "LIVE_MIGRATION", "live", "live-migration", "live_migration" } },
};

const char *fm_strategy_name(fm_strategy s)
{
	for (size_t i = 0; i < sizeof(strategy_names) / sizeof(strategy_names[0]); i++)
		if (strategy_names[i].s == s)
			return strategy_names[i].names[0];
	return "INVALID";
}

fm_strategy fm_strategy_from_name(const char *s)
{
	for (size_t i = 0; s && i < sizeof(strategy_names) / sizeof(strategy_names[0]); i++)
		for (int k = 0; k < 4; k++)
			if (strategy_names[i].names[k] && !strcasecmp(s, strategy_names[i].names[k]))
				return strategy_names[i].s;
	return _FM_STRATEGY_INVALID;
}
