#include "basic/log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "basic/util.h"

static struct {
	pthread_mutex_t lock;
	char host[64];
	fm_log_level min;
	int human_fd;
	int json_fd;
} L = { PTHREAD_MUTEX_INITIALIZER, "", FM_LOG_INFO, 2, -1 };

static const char *const level_names[_FM_LOG_LEVEL_MAX] = {
	[FM_LOG_DEBUG] = "DEBUG",
	[FM_LOG_INFO] = "INFO",
	[FM_LOG_WARN] = "WARN",
	[FM_LOG_ERROR] = "ERROR",
};

const char *fm_log_level_name(fm_log_level l)
{
	return l < _FM_LOG_LEVEL_MAX ? level_names[l] : "?";
}

int fm_log_level_parse(const char *s, fm_log_level *out)
{
	for (int i = 0; i < _FM_LOG_LEVEL_MAX; i++)
		if (!strcasecmp(s, level_names[i])) {
			*out = (fm_log_level)i;
			return 0;
		}
	return -1;
}

void fm_log_setup(const char *host, fm_log_level min, int human_fd, int json_fd)
{
	pthread_mutex_lock(&L.lock);
	snprintf(L.host, sizeof(L.host), "%s", host ? host : "");
	L.min = min;
	L.human_fd = human_fd;
	L.json_fd = json_fd;
	pthread_mutex_unlock(&L.lock);
}

void fm_log_format_human(char *buf, unsigned len, fm_log_level level, const char *component,
			 const char *msg)
{
	snprintf(buf, len, "%s [%s]: %s", fm_log_level_name(level), component, msg);
}

static void write_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, s, n);
		if (k <= 0)
			return; /* a log that cannot be written must not stop the daemon */
		s += k;
		n -= (size_t)k;
	}
}

void fm_log(fm_log_level level, const char *component, const char *migration_id,
	    const char *fmt, ...)
{
	char msg[4096], line[4200], ts[40];
	va_list ap;

	if (level < L.min)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	pthread_mutex_lock(&L.lock);
	if (L.human_fd >= 0) {
		fm_log_format_human(line, sizeof(line) - 1, level, component, msg);
		size_t n = strlen(line);
		line[n++] = '\n';
		write_all(L.human_fd, line, n);
	}
	if (L.json_fd >= 0) {
		fm_format_wall_ms(fm_now_wall_ms(), ts, sizeof(ts));
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "ts", ts, "host", L.host,
				      "level", fm_log_level_name(level), "component", component,
				      "message", msg);
		if (o && migration_id)
			json_object_set_new(o, "migration", json_string(migration_id));
		char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
		if (s) {
			write_all(L.json_fd, s, strlen(s));
			write_all(L.json_fd, "\n", 1);
		}
		free(s);
		json_decref(o);
	}
	pthread_mutex_unlock(&L.lock);
}
