/* Migration Strategy Selector: turns the requested strategy into the one this
 * migration will use, checking what the kernels and CRIUs of both hosts support,
 * and says why. */
#pragma once
#include <jansson.h>

#include "basic/error.h"
#include "manager/fsm.h"

/* src_caps/dst_caps: fm_ckpt_capabilities() of each host; container: the source
 * agent's description (memory_usage_bytes …).  On success *chosen is set and
 * reason holds one sentence for the log. */
int fm_strategy_select(fm_strategy requested, json_t *src_caps, json_t *dst_caps, json_t *container,
		       fm_strategy *chosen, char *reason, size_t reason_len, fm_error *err);
