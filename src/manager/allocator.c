#include "manager/allocator.h"

#include <errno.h>

#include "basic/util.h"
#include "monitor/metrics.h"

#define FM_RESERVATION_TTL_MS (10 * 60 * 1000)

struct usage {
	int64_t cpu_milli, memory_bytes;
};

static struct usage committed(fm_journal *j)
{
	struct usage u = { 0, 0 };
	u.cpu_milli = fm_journal_query_int(j, 0,
		"SELECT COALESCE(SUM(json_extract(spec, '$.cpu_milli')), 0) FROM containers", NULL);
	u.memory_bytes = fm_journal_query_int(j, 0,
		"SELECT COALESCE(SUM(json_extract(spec, '$.memory_bytes')), 0) FROM containers", NULL);
	return u;
}

static struct usage reserved(fm_journal *j, const char *except_mid)
{
	struct usage u;
	u.cpu_milli = fm_journal_query_int(j, 0, "SELECT COALESCE(SUM(cpu_milli), 0) FROM reservations WHERE mid != ?",
					   "s", except_mid ? except_mid : "");
	u.memory_bytes = fm_journal_query_int(j, 0, "SELECT COALESCE(SUM(memory_bytes), 0) FROM reservations WHERE mid != ?",
					      "s", except_mid ? except_mid : "");
	return u;
}

int fm_alloc_reserve(fm_journal *j, const char *mid, const char *container, int64_t cpu_milli,
		     int64_t memory_bytes, double cpu_overcommit, fm_error *err)
{
	fm_host_metrics m;
	char need[32], avail[32];
	int r;

	if ((r = fm_metrics_host_read(&m)) < 0)
		return fm_error_set(err, r, "cannot read this host's resources from /proc");
	/* the check and the insert are one transaction: two migrations racing for
	 * the last CPU cannot both win */
	if (fm_journal_begin(j) < 0)
		return fm_error_set(err, -EIO, "journal busy");
	/* a reservation whose migration never prepared (its controller went away)
	 * expires, or it would hold resources forever */
	fm_journal_exec(j, "DELETE FROM reservations WHERE at_ms < ? AND mid NOT IN (SELECT mid FROM incoming)", "i",
			fm_now_wall_ms() - FM_RESERVATION_TTL_MS);
	struct usage c = committed(j), rs = reserved(j, mid);
	int64_t cpu_cap = (int64_t)((double)m.cpus * 1000.0 * cpu_overcommit);
	if (cpu_milli > 0 && c.cpu_milli + rs.cpu_milli + cpu_milli > cpu_cap) {
		fm_journal_rollback(j);
		return fm_error_set(err, -ENOSPC,
				    "not enough CPU: %.2f CPUs requested, %.2f of %.2f already committed or reserved",
				    (double)cpu_milli / 1000, (double)(c.cpu_milli + rs.cpu_milli) / 1000,
				    (double)cpu_cap / 1000);
	}
	if (memory_bytes > 0 &&
	    ((uint64_t)(c.memory_bytes + rs.memory_bytes + memory_bytes) > m.mem_total ||
	     (uint64_t)memory_bytes > m.mem_available)) {
		fm_journal_rollback(j);
		fm_format_bytes((uint64_t)memory_bytes, need, sizeof(need));
		fm_format_bytes(m.mem_available, avail, sizeof(avail));
		return fm_error_set(err, -ENOSPC, "not enough memory: %s requested, %s available", need, avail);
	}
	r = fm_journal_exec(j, "INSERT OR REPLACE INTO reservations(mid, container, cpu_milli, memory_bytes, at_ms)"
			    " VALUES(?, ?, ?, ?, ?)", "ssiii", mid, container, cpu_milli, memory_bytes,
			    fm_now_wall_ms());
	if (r < 0) {
		fm_journal_rollback(j);
		return fm_error_set(err, r, "cannot record the reservation");
	}
	if (fm_journal_commit(j) < 0)
		return fm_error_set(err, -EIO, "cannot commit the reservation");
	return 0;
}

int fm_alloc_release(fm_journal *j, const char *mid)
{
	int r = fm_journal_exec(j, "DELETE FROM reservations WHERE mid = ?", "s", mid);
	return r < 0 ? r : 0;
}

json_t *fm_alloc_usage(fm_journal *j, double cpu_overcommit)
{
	fm_host_metrics m;
	if (fm_metrics_host_read(&m) < 0)
		return json_object();
	struct usage c = committed(j), rs = reserved(j, NULL);
	return json_pack("{s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}}",
			 "capacity", "cpu_milli", (json_int_t)((double)m.cpus * 1000 * cpu_overcommit),
			 "memory_bytes", (json_int_t)m.mem_total,
			 "committed", "cpu_milli", (json_int_t)c.cpu_milli, "memory_bytes", (json_int_t)c.memory_bytes,
			 "reserved", "cpu_milli", (json_int_t)rs.cpu_milli, "memory_bytes", (json_int_t)rs.memory_bytes);
}
