#include "basic/util.h"

#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>

static int64_t clock_us(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t fm_now_mono_us(void) { return clock_us(CLOCK_MONOTONIC); }

int64_t fm_thread_cpu_us(void) { return clock_us(CLOCK_THREAD_CPUTIME_ID); }

int64_t fm_now_mono_ms(void) { return fm_now_mono_us() / 1000; }

int64_t fm_now_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fm_format_wall_ms(int64_t ms, char *buf, size_t len)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	char tmp[32];

	gmtime_r(&s, &tm);
	strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03dZ", tmp, (int)(ms % 1000));
}

void *fm_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		abort();
	return p;
}

void *fm_xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (!p)
		abort();
	return p;
}

char *fm_xstrdup(const char *s)
{
	char *p = strdup(s ? s : "");
	if (!p)
		abort();
	return p;
}

char *fm_xvasprintf(const char *fmt, va_list ap)
{
	char *p;
	if (vasprintf(&p, fmt, ap) < 0)
		abort();
	return p;
}

char *fm_xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *p = fm_xvasprintf(fmt, ap);
	va_end(ap);
	return p;
}

int fm_mkdir_p(const char *path, unsigned mode)
{
	char buf[4096];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

typedef int (*tree_fn)(int dirfd, const char *name, const struct stat *st);

/* Calls fn for every entry below dirfd (which it closes), depth first: a
 * directory's entries before the directory.  Refuses to descend into a
 * different filesystem (-EBUSY): a mount left below a directory we work on is
 * a bug elsewhere, and going through it would touch data that is not ours.
 * Goes on past failures; returns the last. */
static int tree_walk_at(int dirfd, dev_t dev, tree_fn fn)
{
	DIR *d = fdopendir(dirfd);
	struct dirent *de;
	int r = 0, q;

	if (!d) {
		close(dirfd);
		return -errno;
	}
	while ((de = readdir(d))) {
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				r = -errno;
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			if (st.st_dev != dev) {
				r = -EBUSY;
				continue;
			}
			int fd = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0) {
				r = -errno;
				continue;
			}
			if ((q = tree_walk_at(fd, dev, fn)) < 0)
				r = q;
		}
		if ((q = fn(dirfd, de->d_name, &st)) < 0)
			r = q;
	}
	closedir(d);
	return r;
}

static int rm_entry(int dirfd, const char *name, const struct stat *st)
{
	if (unlinkat(dirfd, name, S_ISDIR(st->st_mode) ? AT_REMOVEDIR : 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* a symlink's or a device node's entry is its directory's to keep */
static int fsync_entry(int dirfd, const char *name, const struct stat *st)
{
	if (!S_ISDIR(st->st_mode) && !S_ISREG(st->st_mode))
		return 0;
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 || fsync(fd) < 0)
		return -errno;
	return 0;
}

int fm_fsync_tree(const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	int walk, r;

	if (fd < 0 || fstat(fd, &st) < 0 || (walk = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
		return -errno;
	r = tree_walk_at(walk, st.st_dev, fsync_entry);
	if (fsync(fd) < 0) /* the directory itself last */
		return -errno;
	return r;
}

int fm_rm_rf(const char *path)
{
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = tree_walk_at(fd, st.st_dev, rm_entry);
	if (r < 0)
		return r;
	if (rmdir(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int fm_read_file(const char *path, size_t max, char **out, size_t *len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = max < 4096 ? max : 4096, n = 0;
	char *buf;

	if (fd < 0)
		return -errno;
	buf = fm_xmalloc(cap + 1);
	for (;;) {
		if (n == cap) {
			if (cap >= max) {
				free(buf);
				return -EFBIG;
			}
			cap = cap * 2 > max ? max : cap * 2;
			char *nb = realloc(buf, cap + 1);
			if (!nb)
				abort();
			buf = nb;
		}
		ssize_t k = read(fd, buf + n, cap - n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			int r = -errno;
			free(buf);
			return r;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	buf[n] = '\0';
	*out = buf;
	if (len)
		*len = n;
	return 0;
}

static int write_file(const char *path, const void *data, size_t len, unsigned mode, bool durable)
{
	_cleanup_free_ char *tmp = fm_xasprintf("%s.tmp%d", path, (int)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	const char *p = data;

	if (fd < 0)
		return -errno;
	while (len > 0) {
		ssize_t k = write(fd, p, len);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			int r = -errno;
			close(fd);
			unlink(tmp);
			return r;
		}
		p += k;
		len -= (size_t)k;
	}
	if ((durable && fsync(fd) < 0) || close(fd) < 0) {
		int r = -errno;
		unlink(tmp);
		return r;
	}
	if (rename(tmp, path) < 0) {
		int r = -errno;
		unlink(tmp);
		return r;
	}
	return 0;
}

int fm_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
	return write_file(path, data, len, mode, true);
}

int fm_write_file_staged(const char *path, const void *data, size_t len, unsigned mode)
{
	return write_file(path, data, len, mode, false);
}

char *fm_file_tail(const char *path, size_t max)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf;
	off_t off;
	ssize_t n;

	if (fd < 0 || fstat(fd, &st) < 0)
		return NULL;
	off = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
	buf = fm_xmalloc(max + 1);
	n = pread(fd, buf, max, off);
	if (n < 0) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	if (off > 0) {
		char *nl = strchr(buf, '\n');
		if (nl)
			memmove(buf, nl + 1, strlen(nl + 1) + 1);
	}
	return buf;
}

char *fm_file_grep(const char *path, const char *needle, const char *skip, int max_lines)
{
	FILE *f = fopen(path, "re");
	char line[1024];
	char *out = NULL;
	size_t outlen = 0;
	int n = 0;
	FILE *m;

	if (!f)
		return NULL;
	m = open_memstream(&out, &outlen);
	if (!m) {
		fclose(f);
		return NULL;
	}
	/* Keep the last max_lines matches: CRIU's final errors matter most. */
	char **ring = fm_xcalloc((size_t)max_lines, sizeof(char *));
	while (fgets(line, sizeof(line), f)) {
		if (!strstr(line, needle) || (skip && strstr(line, skip)))
			continue;
		free(ring[n % max_lines]);
		ring[n % max_lines] = fm_xstrdup(line);
		n++;
	}
	fclose(f);
	for (int i = n > max_lines ? n - max_lines : 0; i < n; i++) {
		fprintf(m, "  %s", ring[i % max_lines]);
		size_t l = strlen(ring[i % max_lines]);
		if (l == 0 || ring[i % max_lines][l - 1] != '\n')
			fputc('\n', m);
	}
	for (int i = 0; i < max_lines; i++)
		free(ring[i]);
	free(ring);
	fclose(m);
	if (n == 0) {
		free(out);
		return NULL;
	}
	return out;
}

bool fm_abs_path_clean(const char *s)
{
	if (!s || s[0] != '/' || strlen(s) > 4095)
		return false;
	if (!s[1])
		return true;
	for (const char *c = s; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return false;
	for (const char *comp = s + 1;;) {
		size_t n = strcspn(comp, "/");
		if (n == 0 || (n == 1 && comp[0] == '.') || (n == 2 && comp[0] == '.' && comp[1] == '.'))
			return false;
		if (!comp[n])
			return true;
		comp += n + 1;
	}
}

bool fm_name_valid(const char *s)
{
	size_t n;

	if (!s)
		return false;
	n = strlen(s);
	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (i == 0 ? !alnum : !(alnum || c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

int fm_random_bytes(void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t k = getrandom((char *)buf + done, len - done, 0);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)k;
	}
	return 0;
}

void fm_random_id(const char *prefix, char *buf, size_t len)
{
	unsigned char b[6];
	if (fm_random_bytes(b, sizeof(b)) < 0) {
		/* getrandom() cannot fail on a booted kernel; fall back to the clock */
		int64_t t = fm_now_mono_us();
		memcpy(b, &t, sizeof(b));
	}
	snprintf(buf, len, "%s%02x%02x%02x%02x%02x%02x", prefix, b[0], b[1], b[2], b[3], b[4], b[5]);
}

/* A number, an optional k/M/G/T multiple of base, then one of tails (NULL-ended). */
static int parse_scaled(const char *s, uint64_t base, const char *const *tails, double max, uint64_t *out)
{
	char *end;
	double v;
	uint64_t mul = 1;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -EINVAL;
	static const char units[] = "kKmMgGtT";
	const char *u = *end ? strchr(units, *end) : NULL;
	if (u) {
		for (long i = 0; i <= (u - units) / 2; i++)
			mul *= base;
		end++;
	}
	bool ok = false;
	for (const char *const *t = tails; *t && !ok; t++)
		ok = !strcmp(end, *t);
	if (!ok)
		return -EINVAL;
	if (v * (double)mul > max)
		return -ERANGE;
	*out = (uint64_t)(v * (double)mul);
	return 0;
}

int fm_parse_size(const char *s, uint64_t *out)
{
	static const char *const tails[] = { "", "i", "B", "b", "iB", "ib", NULL };
	return parse_scaled(s, 1024, tails, 9.0e18, out);
}

void fm_format_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	int i = 0;

	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%" PRIu64 " B", n);
	else
		snprintf(buf, len, "%.1f %s", v, u[i]);
}

int fm_split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon;
	const char *h = s;
	size_t hl;
	char *end;
	long p;

	if (!s || !*s)
		return -EINVAL;
	if (*s == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':')
			return -EINVAL;
		h = s + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || hl >= hostlen)
		return -EINVAL;
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno || *end || p < 0 || p > 65535 || end == colon + 1)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (int)p;
	return 0;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *fm_base64_encode(const void *data, size_t len)
{
	const unsigned char *p = data;
	char *out = fm_xmalloc(4 * ((len + 2) / 3) + 1), *o = out;
	size_t i;

	for (i = 0; i + 2 < len; i += 3) {
		*o++ = b64[p[i] >> 2];
		*o++ = b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
		*o++ = b64[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)];
		*o++ = b64[p[i + 2] & 63];
	}
	if (i < len) {
		*o++ = b64[p[i] >> 2];
		if (i + 1 < len) {
			*o++ = b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
			*o++ = b64[(p[i + 1] & 15) << 2];
		} else {
			*o++ = b64[(p[i] & 3) << 4];
			*o++ = '=';
		}
		*o++ = '=';
	}
	*o = '\0';
	return out;
}

int fm_base64_decode(const char *s, unsigned char **out, size_t *len)
{
	size_t n = strlen(s), k = 0;
	unsigned char *buf;
	uint32_t acc = 0;
	int bits = 0;

	if (n % 4 != 0)
		return -EINVAL;
	buf = fm_xmalloc(n / 4 * 3 + 1);
	for (size_t i = 0; i < n; i++) {
		const char *q;
		if (s[i] == '=') {
			if (i < n - 2 || (i == n - 2 && s[n - 1] != '='))
				goto bad;
			break;
		}
		q = memchr(b64, s[i], 64);
		if (!q || !s[i])
			goto bad;
		acc = (acc << 6) | (uint32_t)(q - b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[k++] = (unsigned char)(acc >> bits);
		}
	}
	*out = buf;
	*len = k;
	return 0;
bad:
	free(buf);
	return -EINVAL;
}

int64_t fm_pacer_take(fm_pacer *p, size_t n)
{
	if (p->bps == 0)
		return 0;
	double rate = (double)p->bps / 8.0, burst = rate / 20.0 > 65536 ? rate / 20.0 : 65536;
	int64_t now = fm_now_mono_us();
	if (p->refill_us == 0)
		p->refill_us = now, p->tokens = burst;
	p->tokens += rate * (double)(now - p->refill_us) / 1e6;
	if (p->tokens > burst)
		p->tokens = burst;
	p->refill_us = now;
	p->tokens -= (double)n;
	return p->tokens < 0 ? (int64_t)(-p->tokens / rate * 1e6) : 0;
}

void fm_sleep_us(int64_t us, const volatile bool *stop)
{
	while (us > 0 && !(stop && *stop)) {
		int64_t step = us > 100000 ? 100000 : us;
		struct timespec ts = { 0, (long)step * 1000 };
		nanosleep(&ts, NULL);
		us -= step;
	}
}

int fm_parse_rate(const char *s, uint64_t *bps)
{
	static const char *const tails[] = { "", "bit", "bps", "bit/s", NULL };
	return parse_scaled(s, 1000, tails, 1e15, bps);
}

int fm_wait_readable(int fd, int stop_fd)
{
	for (;;) {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = stop_fd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[1].revents)
			return 0;
		if (p[0].revents)
			return 1;
	}
}

uint32_t fm_csum_add(uint32_t sum, const void *data, size_t len)
{
	const uint8_t *p = data;
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

uint16_t fm_csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

int fm_start_detached(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	int r = pthread_create(&t, &at, fn, arg);
	pthread_attr_destroy(&at);
	return r == 0 ? 0 : -r;
}

static void *close_thread(void *opaque)
{
	close((int)(intptr_t)opaque);
	return NULL;
}

void fm_close_later(int fd)
{
	if (fd >= 0 && fm_start_detached(close_thread, (void *)(intptr_t)fd) < 0)
		close(fd);
}

void fm_memory_release(void)
{
	malloc_trim(0);
}
