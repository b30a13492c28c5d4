#include "manager/strategy.h"

#include <errno.h>
#include <stdio.h>

#include "basic/util.h"

/* CRIU's lazy pages want 4 MiB pipes (HOST-NOTES: with less the transfer fails). */
#define LAZY_PIPE_MIN (4 << 20)

static bool lazy_ok(json_t *caps)
{
	return json_is_true(json_object_get(caps, "lazy_pages")) &&
	       json_integer_value(json_object_get(caps, "pipe_max_size")) >= LAZY_PIPE_MIN;
}

int fm_strategy_host_ready(fm_strategy s, json_t *caps, const char *role, const char *host, fm_error *err)
{
	if (!json_is_true(json_object_get(caps, "criu_ok")))
		return fm_error_set(err, -ENOTSUP, "CRIU does not work on the %s host %s: %s", role, host,
				    json_string_value(json_object_get(caps, "criu_error")) ?: "criu check failed");
	if ((s == FM_STRATEGY_PRE_COPY || s == FM_STRATEGY_HYBRID) &&
	    !json_is_true(json_object_get(caps, "mem_dirty_track")))
		return fm_error_set(err, -ENOTSUP, "%s needs dirty-memory tracking, which the kernel of %s lacks",
				    fm_strategy_name(s), host);
	if (s == FM_STRATEGY_POST_COPY && !lazy_ok(caps))
		return fm_error_set(err, -ENOTSUP, "POST_COPY needs userfaultfd and fs.pipe-max-size >= 4 MiB on %s "
				    "(run scripts/setup.sh there)", host);
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
		if (!lazy_ok(src_caps))
			return fm_error_set(err, -ENOTSUP, "POST_COPY needs userfaultfd and fs.pipe-max-size >= 4 MiB on "
					    "the source (run scripts/setup.sh)");
		*chosen = FM_STRATEGY_POST_COPY;
		snprintf(reason, reason_len, "POST_COPY as requested: the container resumes on the destination at once, "
			 "its %s of memory follows on demand", mem);
		return 0;
	case FM_STRATEGY_LIVE:
		/* Pre-copy needs dirty tracking; post-copy needs only userfaultfd. */
		if (lazy_ok(src_caps)) {
			*chosen = FM_STRATEGY_POST_COPY;
			snprintf(reason, reason_len, "LIVE_MIGRATION: POST_COPY, since the source kernel has no dirty-memory "
				 "tracking for PRE_COPY but has userfaultfd (container memory %s)", mem);
		} else {
			*chosen = FM_STRATEGY_COLD;
			snprintf(reason, reason_len, "LIVE_MIGRATION: no live strategy works on the source (no dirty-memory "
				 "tracking, no lazy pages), so COLD_MIGRATION (container memory %s)", mem);
		}
		return 0;
	default:
		return fm_error_set(err, -EINVAL, "unknown strategy");
	}
}
