#include "manager/strategy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "basic/util.h"

/* CRIU's lazy pages want 4 MiB pipes (HOST-NOTES: with less the transfer fails). */
#define LAZY_PIPE_MIN (4 << 20)

bool fm_strategy_lazy_ok(json_t *caps)
{
	return json_is_true(json_object_get(caps, "lazy_pages")) &&
	       json_integer_value(json_object_get(caps, "pipe_max_size")) >= LAZY_PIPE_MIN;
}

int fm_strategy_host_ready(fm_strategy s, json_t *caps, const char *role, const char *host, fm_error *err)
{
	if (!json_is_true(json_object_get(caps, "criu_ok")))
		return fm_error_set(err, -ENOTSUP, "CRIU does not work on the %s host %s: %s", role, host,
				    json_string_value(json_object_get(caps, "criu_error")) ?: "criu check failed");
	/* dirty-memory tracking is the source's business; the destination only
	 * receives pages */
	if ((s == FM_STRATEGY_PRE_COPY || s == FM_STRATEGY_HYBRID) && !strcmp(role, "source") &&
	    !json_is_true(json_object_get(caps, "mem_dirty_track")))
		return fm_error_set(err, -ENOTSUP, "%s needs dirty-memory tracking, which the kernel of %s lacks",
				    fm_strategy_name(s), host);
	if ((s == FM_STRATEGY_POST_COPY || s == FM_STRATEGY_HYBRID) && !fm_strategy_lazy_ok(caps))
		return fm_error_set(err, -ENOTSUP, "POST_COPY needs userfaultfd and fs.pipe-max-size >= 4 MiB on %s "
				    "(run scripts/setup.sh there)", host);
	return 0;
}

/* "memory 1.0 GiB, link 941 Mbit/s (measured ...), touched 12.0 MiB in 500 ms" */
static void describe_inputs(const fm_strategy_inputs *in, char *buf, size_t len)
{
	char mem[32] = "unknown", touched[32], link[128] = "link rate unknown (no transfer measured between these hosts yet)";
	if (in->memory_bytes)
		fm_format_bytes(in->memory_bytes, mem, sizeof(mem));
	if (in->link_bps > 0)
		snprintf(link, sizeof(link), "link %.0f Mbit/s (%s)", in->link_bps / 1e6, in->link_origin ?: "measured");
	int n = snprintf(buf, len, "memory %s, %s", mem, link);
	if (in->touched_interval_ms > 0 && n > 0 && (size_t)n < len) {
		fm_format_bytes(in->touched_bytes, touched, sizeof(touched));
		snprintf(buf + n, len - (size_t)n, ", touched %s in %d ms", touched, in->touched_interval_ms);
	}
}

int fm_strategy_select(fm_strategy requested, const fm_strategy_inputs *in, fm_strategy *chosen, char *reason,
		       size_t reason_len, fm_error *err)
{
	char facts[320];
	json_t *caps = in->src_caps;

	describe_inputs(in, facts, sizeof(facts));
	if (!json_is_true(json_object_get(caps, "criu_ok")))
		return fm_error_set(err, -ENOTSUP, "CRIU does not work on the source host: %s",
				    json_string_value(json_object_get(caps, "criu_error")) ?: "criu check failed");

	switch (requested) {
	case FM_STRATEGY_COLD:
		*chosen = FM_STRATEGY_COLD;
		snprintf(reason, reason_len, "COLD_MIGRATION as requested (%s)", facts);
		return 0;
	case FM_STRATEGY_PRE_COPY:
	case FM_STRATEGY_HYBRID:
		if (!json_is_true(json_object_get(caps, "mem_dirty_track")))
			return fm_error_set(err, -ENOTSUP,
					    "%s needs dirty-memory tracking, which the source kernel lacks "
					    "(CONFIG_MEM_SOFT_DIRTY; `criu check --feature mem_dirty_track` fails): "
					    "use POST_COPY or COLD_MIGRATION", fm_strategy_name(requested));
		if (requested == FM_STRATEGY_HYBRID && !fm_strategy_lazy_ok(caps))
			return fm_error_set(err, -ENOTSUP, "HYBRID may switch to post-copy, which needs userfaultfd and "
					    "fs.pipe-max-size >= 4 MiB on the source (run scripts/setup.sh)");
		*chosen = requested;
		snprintf(reason, reason_len, "%s as requested: pre-dump rounds while the container runs, then a "
			 "short final dump%s (%s)", fm_strategy_name(requested),
			 requested == FM_STRATEGY_HYBRID ? ", or post-copy if the rounds stop converging" : "", facts);
		return 0;
	case FM_STRATEGY_POST_COPY:
		if (!fm_strategy_lazy_ok(caps))
			return fm_error_set(err, -ENOTSUP, "POST_COPY needs userfaultfd and fs.pipe-max-size >= 4 MiB on "
					    "the source (run scripts/setup.sh)");
		*chosen = FM_STRATEGY_POST_COPY;
		snprintf(reason, reason_len, "POST_COPY as requested: the container resumes on the destination at once, "
			 "its memory follows on demand (%s)", facts);
		return 0;
	case FM_STRATEGY_LIVE: {
		double t_ms = in->link_bps > 0 && in->memory_bytes ? (double)in->memory_bytes * 8e3 / in->link_bps : -1;
		if (json_is_true(json_object_get(caps, "mem_dirty_track"))) {
			/* it converges when it dirties memory well below the link's rate */
			double touch_bps = in->touched_interval_ms > 0
				? (double)in->touched_bytes * 8e3 / in->touched_interval_ms : -1;
			bool slow_writer = touch_bps >= 0 && in->link_bps > 0 && touch_bps < in->link_bps / 2;
			*chosen = slow_writer || !fm_strategy_lazy_ok(caps) ? FM_STRATEGY_PRE_COPY : FM_STRATEGY_HYBRID;
			snprintf(reason, reason_len, "LIVE_MIGRATION: %s, %s (%s)", fm_strategy_name(*chosen),
				 slow_writer ? "since it touches memory at well under half the link's rate, so pre-copy "
					       "rounds converge"
					     : "since it may dirty memory faster than pre-copy rounds converge: post-copy "
					       "takes over if they do not", facts);
			return 0;
		}
		if (!fm_strategy_lazy_ok(caps)) {
			*chosen = FM_STRATEGY_COLD;
			snprintf(reason, reason_len, "LIVE_MIGRATION: no live strategy works on the source (no dirty-memory "
				 "tracking for PRE_COPY, no lazy pages for POST_COPY), so COLD_MIGRATION (%s)", facts);
			return 0;
		}
		if (t_ms >= 0 && t_ms <= FM_COLD_ENOUGH_MS) {
			*chosen = FM_STRATEGY_COLD;
			snprintf(reason, reason_len, "LIVE_MIGRATION: COLD_MIGRATION, since the whole memory crosses in about "
				 "%.0f ms, no longer than post-copy's own freeze, and nothing is then left in flight (%s)",
				 t_ms, facts);
			return 0;
		}
		*chosen = FM_STRATEGY_POST_COPY;
		int n = snprintf(reason, reason_len, "LIVE_MIGRATION: POST_COPY (no dirty-memory tracking here for "
				 "PRE_COPY); the container resumes on the destination after a short freeze");
		if (t_ms > 0 && n > 0 && (size_t)n < reason_len) {
			/* what it touches keeps faulting until its pages arrive: about touched / link */
			double degraded_ms = in->touched_interval_ms > 0 ? (double)in->touched_bytes * 8e3 / in->link_bps : -1;
			n += snprintf(reason + n, reason_len - (size_t)n, ", all memory follows in about %.1f s", t_ms / 1000);
			if (degraded_ms >= 0 && (size_t)n < reason_len)
				n += snprintf(reason + n, reason_len - (size_t)n, ", and it runs slowed by page faults "
					      "for roughly %.1f s while its working set arrives", degraded_ms / 1000);
		}
		if (n > 0 && (size_t)n < reason_len)
			snprintf(reason + n, reason_len - (size_t)n, " (%s)", facts);
		return 0;
	}
	default:
		return fm_error_set(err, -EINVAL, "unknown strategy");
	}
}
