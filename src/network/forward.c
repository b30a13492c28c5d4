#include "network/forward.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/log.h"
#include "basic/periodic.h"
#include "basic/util.h"
#include "runtime/net.h"
#include "runtime/runtime.h"
#include "store/journal.h"

#define IP_FORWARD "/proc/sys/net/ipv4/ip_forward"
/* meta key: set while IPv4 forwarding is on because of us */
#define META_IP_FORWARD "forward.ip_forward_was_off"

struct fm_forwarder {
	fm_runtime *rt;
	fm_journal *j;
	pthread_mutex_t lock;
	fm_periodic watch;
};

static int ip_forward_set(bool on, fm_error *err)
{
	/* procfs files are written in place */
	FILE *fp = fopen(IP_FORWARD, "we");
	if (!fp || fputs(on ? "1\n" : "0\n", fp) < 0 || fclose(fp) != 0) {
		int e = errno;
		if (fp)
			fclose(fp);
		return fm_error_set(err, -e, "cannot switch IPv4 forwarding %s (%s): %s", on ? "on" : "off", IP_FORWARD,
				    strerror(e));
	}
	return 0;
}

/* Whether IPv4 forwarding is off (journaled as META_IP_FORWARD before it
 * goes on: it goes off again after the last forward). */
static int ip_forward_off(bool *off, fm_error *err)
{
	_cleanup_free_ char *cur = NULL;
	if (fm_read_file(IP_FORWARD, 16, &cur, NULL) < 0)
		return fm_error_set(err, -errno, "cannot read %s: %m", IP_FORWARD);
	*off = cur[0] != '1';
	return 0;
}

static int ip_forward_switched_on(fm_error *err)
{
	int r = ip_forward_set(true, err);
	if (r == 0)
		fm_info(FM_C_TRAFFIC_REDIRECTOR, "IPv4 forwarding switched on for forwarding moved addresses (it goes "
			"off again after the last)");
	return r;
}

/* Remembers that IPv4 forwarding was off (before switching it on). */
static int ip_forward_journal_off(fm_forwarder *f)
{
	return fm_journal_exec(f->j, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, '1')", "s", META_IP_FORWARD);
}

/* The first forward: IPv4 forwarding on, remembering that it was off. */
static int ip_forward_on(fm_forwarder *f, fm_error *err)
{
	bool off;
	int r = ip_forward_off(&off, err);
	if (r < 0 || !off)
		return r;
	ip_forward_journal_off(f);
	return ip_forward_switched_on(err);
}

/* After the last forward: back off, when we switched it on. */
static void ip_forward_restore(fm_forwarder *f)
{
	if (fm_journal_query_int(f->j, 0, "SELECT COUNT(*) FROM forwards", NULL) > 0 ||
	    fm_journal_query_int(f->j, 0, "SELECT COUNT(*) FROM meta WHERE key = ?", "s", META_IP_FORWARD) == 0)
		return;
	fm_error e = FM_ERROR_INIT;
	if (ip_forward_set(false, &e) < 0)
		fm_warn(FM_C_TRAFFIC_REDIRECTOR, "%s", e.msg);
	else
		fm_info(FM_C_TRAFFIC_REDIRECTOR, "IPv4 forwarding switched off again (no moved address left to forward)");
	fm_error_clear(&e);
	fm_journal_exec(f->j, "DELETE FROM meta WHERE key = ?", "s", META_IP_FORWARD);
}

/* Removes the forwards the rows name (under the lock). */
static int remove_rows(fm_forwarder *f, json_t *rows, const char *why, fm_error *err)
{
	size_t i;
	json_t *row;
	int r = 0;
	json_array_foreach(rows, i, row) {
		const char *old = json_string_value(json_object_get(row, "old_ip"));
		const char *new = json_string_value(json_object_get(row, "new_ip"));
		const char *mac = json_string_value(json_object_get(row, "mac"));
		fm_error e = FM_ERROR_INIT;
		if (fm_net_forward(f->rt, old, new, mac, FM_FORWARD_OFF, &e) < 0) {
			fm_warn(FM_C_TRAFFIC_REDIRECTOR, "%s", e.msg);
			if (r == 0)
				r = fm_error_set(err, e.code, "%s", e.msg);
			fm_error_clear(&e);
			continue;
		}
		fm_journal_exec(f->j, "DELETE FROM forwards WHERE old_ip = ?", "s", old);
		fm_info(FM_C_TRAFFIC_REDIRECTOR, "%s no longer forwarded to %s (migration %s): %s", old, new,
			json_string_value(json_object_get(row, "mid")), why);
	}
	ip_forward_restore(f);
	return r;
}

static void watch(void *opaque)
{
	fm_forwarder *f = opaque;
	json_t *rows = NULL;
	pthread_mutex_lock(&f->lock);
	if (fm_journal_query(f->j, &rows, "SELECT * FROM forwards WHERE until_ms <= ?", "i", fm_now_wall_ms()) == 0 &&
	    json_array_size(rows) > 0)
		remove_rows(f, rows, "its time is up, clients have had time to move", NULL);
	pthread_mutex_unlock(&f->lock);
	json_decref(rows);
}

fm_forwarder *fm_forwarder_new(fm_runtime *rt, fm_journal *j)
{
	fm_forwarder *f = fm_xcalloc(1, sizeof(*f));
	json_t *rows = NULL;
	size_t i;
	json_t *row;
	f->rt = rt;
	f->j = j;
	pthread_mutex_init(&f->lock, NULL);
	/* a previous run's: ended ones go at the first watch, as do prepared ones
	 * never engaged (their migration could not go on without this daemon);
	 * the others are put in place again (the tables and the stand-in may be
	 * gone with a reboot) */
	fm_journal_exec(j, "UPDATE forwards SET until_ms = 0 WHERE engaged = 0", NULL);
	if (fm_journal_query(j, &rows, "SELECT * FROM forwards WHERE until_ms > ?", "i", fm_now_wall_ms()) == 0)
		json_array_foreach(rows, i, row) {
			fm_error e = FM_ERROR_INIT;
			const char *old = json_string_value(json_object_get(row, "old_ip"));
			const char *new = json_string_value(json_object_get(row, "new_ip"));
			const char *mac = json_string_value(json_object_get(row, "mac"));
			if (ip_forward_on(f, &e) < 0 || fm_net_forward(rt, old, new, mac, FM_FORWARD_PREPARE, &e) < 0 ||
			    fm_net_forward(rt, old, new, mac, FM_FORWARD_ENGAGE, &e) < 0)
				fm_warn(FM_C_TRAFFIC_REDIRECTOR, "Cannot take up forwarding %s to %s again: %s", old, new,
					e.msg);
			else
				fm_info(FM_C_TRAFFIC_REDIRECTOR, "Forwarding %s to %s again (migration %s), for %lld s more",
					old, new, json_string_value(json_object_get(row, "mid")),
					(long long)(json_integer_value(json_object_get(row, "until_ms")) - fm_now_wall_ms()) /
						1000);
			fm_error_clear(&e);
		}
	json_decref(rows);
	if (fm_periodic_start(&f->watch, (int64_t)FM_FORWARD_WATCH_MS * 1000, true, watch, f) < 0)
		fm_warn(FM_C_TRAFFIC_REDIRECTOR, "No watch on forwarded addresses: they end at the next start only");
	fm_error e = FM_ERROR_INIT;
	if (rt->bridge && fm_net_forward_warm_up(&e) < 0)
		fm_warn(FM_C_TRAFFIC_REDIRECTOR, "This host cannot forward moved addresses (nftables: %s): moves that "
			"change a container's address will not be forwarded from here", e.msg);
	fm_error_clear(&e);
	return f;
}

void fm_forwarder_free(fm_forwarder *f)
{
	if (!f)
		return;
	fm_periodic_stop(&f->watch);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

int fm_forwarder_prepare(fm_forwarder *f, const char *mid, const char *old_ip, const char *new_ip, const char *mac,
			 fm_error *err)
{
	char old[20], new[20];
	int r;
	if (!old_ip || !new_ip || !fm_net_cidr_valid(old_ip) || !fm_net_cidr_valid(new_ip))
		return fm_error_set(err, -EINVAL, "\"from\" and \"to\" must be addresses A.B.C.D/P");
	if (!fm_net_mac_valid(mac))
		return fm_error_set(err, -EINVAL, "the container's MAC is needed to stand in for it");
	fm_net_addr_of(old_ip, old, sizeof(old));
	fm_net_addr_of(new_ip, new, sizeof(new));
	pthread_mutex_lock(&f->lock);
	/* the forward and (when we switch it on) IPv4 forwarding journaled in
	 * one transaction: one disk flush */
	bool off = false;
	if ((r = ip_forward_off(&off, err)) < 0 || (r = fm_journal_begin(f->j)) < 0)
		goto out;
	if ((r = fm_journal_exec(f->j, "INSERT OR REPLACE INTO forwards(old_ip, new_ip, mac, mid, until_ms, engaged) "
				 "VALUES(?, ?, ?, ?, ?, 0)", "ssssi", old, new, mac, mid,
				 fm_now_wall_ms() + (int64_t)FM_FORWARD_PREPARED_MAX_S * 1000)) < 0 ||
	    (off && (r = ip_forward_journal_off(f)) < 0) ||
	    (r = fm_journal_commit(f->j)) < 0) {
		fm_journal_rollback(f->j);
		r = fm_error_set(err, r, "cannot journal the forward of %s", old);
		goto out;
	}
	if ((off && (r = ip_forward_switched_on(err)) < 0) ||
	    (r = fm_net_forward(f->rt, old, new, mac, FM_FORWARD_PREPARE, err)) < 0) {
		fm_net_forward(f->rt, old, new, mac, FM_FORWARD_OFF, NULL);
		fm_journal_exec(f->j, "DELETE FROM forwards WHERE old_ip = ?", "s", old);
		ip_forward_restore(f);
	}
out:
	pthread_mutex_unlock(&f->lock);
	return r < 0 ? r : 0;
}

int fm_forwarder_engage(fm_forwarder *f, const char *mid, int seconds, fm_error *err)
{
	json_t *row;
	int r;
	if (seconds < 1 || seconds > FM_FORWARD_MAX_S)
		return fm_error_set(err, -EINVAL, "a forward lasts 1..%d seconds", FM_FORWARD_MAX_S);
	pthread_mutex_lock(&f->lock);
	row = fm_journal_query_one(f->j, "SELECT * FROM forwards WHERE mid = ? AND engaged = 0", "s", mid);
	if (!row)
		r = fm_error_set(err, -ENOENT, "no forward prepared for migration %s", mid);
	else if ((r = fm_net_forward(f->rt, json_string_value(json_object_get(row, "old_ip")),
				     json_string_value(json_object_get(row, "new_ip")),
				     json_string_value(json_object_get(row, "mac")), FM_FORWARD_ENGAGE, err)) == 0)
		fm_journal_exec(f->j, "UPDATE forwards SET engaged = 1, until_ms = ? WHERE mid = ?", "is",
				fm_now_wall_ms() + (int64_t)seconds * 1000, mid);
	pthread_mutex_unlock(&f->lock);
	json_decref(row);
	return r;
}

int fm_forwarder_drop(fm_forwarder *f, const char *mid, fm_error *err)
{
	json_t *rows = NULL;
	int r = 0;
	if (!f)
		return 0;
	pthread_mutex_lock(&f->lock);
	if (fm_journal_query(f->j, &rows, "SELECT * FROM forwards WHERE mid = ?", "s", mid) == 0 && json_array_size(rows))
		r = remove_rows(f, rows, "the migration rolled back, the address is the container's again", err);
	pthread_mutex_unlock(&f->lock);
	json_decref(rows);
	return r;
}
