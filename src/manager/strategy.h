/* Migration Strategy Selector: turns the requested strategy into the one this
 * migration will use, checking what the kernels and CRIUs of both hosts support,
 * and says why. */
#pragma once
#include <jansson.h>

#include "basic/error.h"
#include "manager/fsm.h"

/* In PLANNING.  src_caps: fm_ckpt_capabilities() of the source; container: the
 * source agent's description (memory_usage_bytes …).  On success *chosen is set and
 * reason holds one sentence for the log. */
int fm_strategy_select(fm_strategy requested, json_t *src_caps, json_t *container, fm_strategy *chosen,
		       char *reason, size_t reason_len, fm_error *err);
/* In PREPARATION's pre-flight: can the host with these capabilities play its part
 * of `s`?  role is "source" or "destination", for the message. */
int fm_strategy_host_ready(fm_strategy s, json_t *caps, const char *role, const char *host, fm_error *err);
