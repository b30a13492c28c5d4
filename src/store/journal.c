#include "store/journal.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <string.h>

#include "basic/log.h"
#include "basic/util.h"

struct fm_journal {
	sqlite3 *db;
	/* Recursive so that exec/query may run inside begin/commit from one thread. */
	pthread_mutex_t lock;
};

/* The schema.  Tables only grow new columns; old daemons' databases keep working. */
static const char schema[] =
	"PRAGMA journal_mode=WAL;"
	"PRAGMA synchronous=FULL;"
	"PRAGMA foreign_keys=ON;"
	"CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
	/* controller: migrations and their history */
	"CREATE TABLE IF NOT EXISTS migrations("
	"  id TEXT PRIMARY KEY, container TEXT NOT NULL, source TEXT NOT NULL,"
	"  destination TEXT NOT NULL, strategy TEXT NOT NULL, state TEXT NOT NULL,"
	"  resolved INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL,"
	"  updated_ms INTEGER, finished_ms INTEGER, error TEXT, error_detail TEXT,"
	"  downtime_ms INTEGER, total_ms INTEGER, bytes_transferred INTEGER NOT NULL DEFAULT 0,"
	"  point_of_no_return INTEGER NOT NULL DEFAULT 0, request TEXT);"
	"CREATE TABLE IF NOT EXISTS transitions("
	"  mid TEXT NOT NULL REFERENCES migrations(id), seq INTEGER NOT NULL,"
	"  from_state TEXT, to_state TEXT NOT NULL, at_ms INTEGER NOT NULL, reason TEXT,"
	"  PRIMARY KEY(mid, seq));"
	"CREATE TABLE IF NOT EXISTS steps("
	"  mid TEXT NOT NULL REFERENCES migrations(id), step TEXT NOT NULL,"
	"  status TEXT NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY(mid, step));"
	"CREATE TABLE IF NOT EXISTS events("
	"  mid TEXT NOT NULL REFERENCES migrations(id), seq INTEGER NOT NULL,"
	"  at_ms INTEGER NOT NULL, level TEXT NOT NULL, component TEXT NOT NULL,"
	"  message TEXT NOT NULL, PRIMARY KEY(mid, seq));"
	"CREATE TABLE IF NOT EXISTS hosts("
	"  name TEXT PRIMARY KEY, address TEXT NOT NULL, added_ms INTEGER NOT NULL);"
	/* controller: the link rate last measured from one host to another */
	"CREATE TABLE IF NOT EXISTS links("
	"  source TEXT NOT NULL, destination TEXT NOT NULL, bps REAL NOT NULL,"
	"  at_ms INTEGER NOT NULL, mid TEXT, PRIMARY KEY(source, destination));"
	/* agent: containers, reservations, in-flight migrations */
	"CREATE TABLE IF NOT EXISTS containers("
	"  name TEXT PRIMARY KEY, image TEXT NOT NULL, spec TEXT NOT NULL,"
	"  created_ms INTEGER NOT NULL, migration TEXT, committed INTEGER NOT NULL DEFAULT 1);"
	"CREATE TABLE IF NOT EXISTS reservations("
	"  mid TEXT PRIMARY KEY, container TEXT NOT NULL, cpu_milli INTEGER NOT NULL,"
	"  memory_bytes INTEGER NOT NULL, at_ms INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS incoming("
	"  mid TEXT PRIMARY KEY, container TEXT NOT NULL, controller TEXT, source TEXT,"
	"  state TEXT NOT NULL, at_ms INTEGER NOT NULL);"
	/* agent: moved addresses this host forwards (network/forward.h) */
	"CREATE TABLE IF NOT EXISTS forwards("
	"  old_ip TEXT PRIMARY KEY, new_ip TEXT NOT NULL, mac TEXT NOT NULL, mid TEXT NOT NULL,"
	"  until_ms INTEGER NOT NULL, engaged INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS outgoing("
	"  mid TEXT PRIMARY KEY, container TEXT NOT NULL, controller TEXT,"
	"  state TEXT NOT NULL, at_ms INTEGER NOT NULL);";

int fm_journal_open(const char *path, fm_journal **out, fm_error *err)
{
	fm_journal *j = fm_xcalloc(1, sizeof(*j));
	pthread_mutexattr_t a;
	char *msg = NULL;
	int r;

	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&j->lock, &a);
	pthread_mutexattr_destroy(&a);

	r = sqlite3_open_v2(path, &j->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
	if (r != SQLITE_OK) {
		fm_error_set(err, -EIO, "cannot open journal %s: %s", path,
			     j->db ? sqlite3_errmsg(j->db) : sqlite3_errstr(r));
		fm_journal_close(j);
		return -EIO;
	}
	sqlite3_busy_timeout(j->db, 5000);
	if (sqlite3_exec(j->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
		fm_error_set(err, -EIO, "cannot initialise journal %s: %s", path, msg ? msg : "?");
		sqlite3_free(msg);
		fm_journal_close(j);
		return -EIO;
	}
	*out = j;
	return 0;
}

void fm_journal_close(fm_journal *j)
{
	if (!j)
		return;
	if (j->db)
		sqlite3_close_v2(j->db);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

static int bind_args(sqlite3_stmt *st, const char *fmt, va_list ap)
{
	for (int i = 0; fmt && fmt[i]; i++) {
		int r;
		switch (fmt[i]) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			r = s ? sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT)
			      : sqlite3_bind_null(st, i + 1);
			break;
		}
		case 'i':
			r = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
			break;
		case 'd':
			r = sqlite3_bind_double(st, i + 1, va_arg(ap, double));
			break;
		default:
			return -EINVAL;
		}
		if (r != SQLITE_OK)
			return -EINVAL;
	}
	return 0;
}

static int prepare(fm_journal *j, const char *sql, const char *fmt, va_list ap, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v2(j->db, sql, -1, st, NULL) != SQLITE_OK) {
		fm_err(FM_C_DAEMON, "journal: cannot prepare \"%s\": %s", sql, sqlite3_errmsg(j->db));
		return -EINVAL;
	}
	if (bind_args(*st, fmt, ap) < 0) {
		sqlite3_finalize(*st);
		return -EINVAL;
	}
	return 0;
}

int fm_journal_exec(fm_journal *j, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	int r;

	pthread_mutex_lock(&j->lock);
	va_start(ap, fmt);
	r = prepare(j, sql, fmt, ap, &st);
	va_end(ap);
	if (r == 0) {
		int s;
		while ((s = sqlite3_step(st)) == SQLITE_ROW)
			;
		if (s != SQLITE_DONE) {
			fm_err(FM_C_DAEMON, "journal: \"%s\" failed: %s", sql, sqlite3_errmsg(j->db));
			r = s == SQLITE_CONSTRAINT ? -EEXIST : -EIO;
		} else {
			r = sqlite3_changes(j->db);
		}
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&j->lock);
	return r;
}

static json_t *column_value(sqlite3_stmt *st, int c)
{
	switch (sqlite3_column_type(st, c)) {
	case SQLITE_INTEGER: return json_integer(sqlite3_column_int64(st, c));
	case SQLITE_FLOAT: return json_real(sqlite3_column_double(st, c));
	case SQLITE_NULL: return json_null();
	default: return json_string((const char *)sqlite3_column_text(st, c));
	}
}

static int query_v(fm_journal *j, json_t **rows, int limit, const char *sql, const char *fmt,
		   va_list ap)
{
	sqlite3_stmt *st;
	json_t *arr;
	int r, s;

	pthread_mutex_lock(&j->lock);
	r = prepare(j, sql, fmt, ap, &st);
	if (r < 0) {
		pthread_mutex_unlock(&j->lock);
		return r;
	}
	arr = json_array();
	while ((limit < 0 || (int)json_array_size(arr) < limit) && (s = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *o = json_object();
		for (int c = 0; c < sqlite3_column_count(st); c++)
			json_object_set_new(o, sqlite3_column_name(st, c), column_value(st, c));
		json_array_append_new(arr, o);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&j->lock);
	*rows = arr;
	return 0;
}

int fm_journal_query(fm_journal *j, json_t **rows, const char *sql, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = query_v(j, rows, -1, sql, fmt, ap);
	va_end(ap);
	return r;
}

json_t *fm_journal_query_one(fm_journal *j, const char *sql, const char *fmt, ...)
{
	json_t *rows = NULL, *row = NULL;
	va_list ap;
	va_start(ap, fmt);
	int r = query_v(j, &rows, 1, sql, fmt, ap);
	va_end(ap);
	if (r == 0 && json_array_size(rows) > 0)
		row = json_incref(json_array_get(rows, 0));
	json_decref(rows);
	return row;
}

int64_t fm_journal_query_int(fm_journal *j, int64_t dflt, const char *sql, const char *fmt, ...)
{
	json_t *rows = NULL;
	int64_t v = dflt;
	va_list ap;
	va_start(ap, fmt);
	int r = query_v(j, &rows, 1, sql, fmt, ap);
	va_end(ap);
	if (r == 0 && json_array_size(rows) > 0) {
		json_t *row = json_array_get(rows, 0);
		const char *k;
		json_t *val;
		json_object_foreach(row, k, val) {
			if (json_is_integer(val))
				v = json_integer_value(val);
			break;
		}
	}
	json_decref(rows);
	return v;
}

int fm_journal_begin(fm_journal *j)
{
	pthread_mutex_lock(&j->lock);
	if (sqlite3_exec(j->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		pthread_mutex_unlock(&j->lock);
		return -EIO;
	}
	return 0; /* lock held until commit/rollback */
}

int fm_journal_commit(fm_journal *j)
{
	int r = sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
	if (r < 0)
		sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&j->lock);
	return r;
}

void fm_journal_rollback(fm_journal *j)
{
	sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&j->lock);
}
