#include "manager/strategy.h"

#include <errno.h>
#include <stdio.h>

#include "basic/util.h"

int fm_strategy_host_ready(fm_strategy s, json_t *caps, const char *role, const char *host, fm_error *err)
{
	if (!json_is_true(json_object_get(caps, "criu_ok")))
		return fm_error_set(err, -ENOTSUP, "CRIU does not work on the %s host %s: %s", role, host,
				    json_string_value(json_object_get(caps, "criu_error")) ?: "criu check failed");
	if ((s == FM_STRATEGY_PRE_COPY || s == FM_STRATEGY_HYBRID) &&
	    !json_is_true(json_object_get(caps, "mem_dirty_track")))
		return fm_error_set(err, -ENOTSUP, "%s needs dirty-memory tracking, which the kernel of %s lacks",
				    fm_strategy_name(s), host);
	return 0;
}

int fm_strategy_select(fm_strategy requested, json_t *src_caps, json_t *container, fm_strategy *chosen,
		       char *reason, size_t reason_len, fm_error *err)
{
	char mem[32] = "unknown size";
	json_t *m = json_object_get(container, "memory_usage_bytes");

	if (json_is_integer(m))
		fm_format_bytes((uint64_t)json_integer_value(m), mem, sizeof(mem));
	if (!json_is_true(json_object_get(src_caps, "criu_ok")))
		return fm_error_set(err, -ENOTSUP, "CRIU does not work on the source host: %s",
				    json_string_value(json_object_get(src_caps, "criu_error")) ?: "criu check failed");

	switch (requested) {
	case FM_STRATEGY_COLD:
		*chosen = FM_STRATEGY_COLD;
		snprintf(reason, reason_len, "COLD_MIGRATION as requested (container memory %s)", mem);
		return 0;
	case FM_STRATEGY_PRE_COPY:
	case FM_STRATEGY_HYBRID:
		if (!json_is_true(json_object_get(src_caps, "mem_dirty_track")))
			return fm_error_set(err, -ENOTSUP,
					    "%s needs dirty-memory tracking, which the source kernel lacks "
					    "(CONFIG_MEM_SOFT_DIRTY; `criu check --feature mem_dirty_track` fails): "
					    "use POST_COPY or COLD_MIGRATION", fm_strategy_name(requested));
		return fm_error_set(err, -ENOTSUP, "%s is not implemented in this version yet: use COLD_MIGRATION",
				    fm_strategy_name(requested));
	case FM_STRATEGY_POST_COPY:
		return fm_error_set(err, -ENOTSUP, "POST_COPY is not implemented in this version yet: use COLD_MIGRATION");
	case FM_STRATEGY_LIVE:
		/* No live strategy is available yet: say so, and move the container the
		 * way that works rather than refuse. */
		*chosen = FM_STRATEGY_COLD;
		snprintf(reason, reason_len,
			 "LIVE_MIGRATION requested; no live strategy is available in this version, "
			 "so COLD_MIGRATION (container memory %s)", mem);
		return 0;
	default:
		return fm_error_set(err, -EINVAL, "unknown strategy");
	}
}
