/* Small utilities shared by every layer: cleanup attributes, time, files, ids. */
#pragma once
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "basic/error.h"

static inline void fm_freep(void *p) { free(*(void **)p); }

/* Little-endian integers in wire formats (ours, and CRIU's on x86-64). */
static inline void fm_put_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void fm_put_le32(uint8_t *p, uint32_t v) { fm_put_le16(p, (uint16_t)v); fm_put_le16(p + 2, (uint16_t)(v >> 16)); }
static inline void fm_put_le64(uint8_t *p, uint64_t v) { fm_put_le32(p, (uint32_t)v); fm_put_le32(p + 4, (uint32_t)(v >> 32)); }
static inline uint16_t fm_get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t fm_get_le32(const uint8_t *p) { return fm_get_le16(p) | (uint32_t)fm_get_le16(p + 2) << 16; }
static inline uint64_t fm_get_le64(const uint8_t *p) { return fm_get_le32(p) | (uint64_t)fm_get_le32(p + 4) << 32; }
static inline void fm_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define _cleanup_free_ __attribute__((cleanup(fm_freep)))
#define _cleanup_close_ __attribute__((cleanup(fm_closep)))
/* Hands ownership out of a cleanup variable. */
#define TAKE_PTR(p) ({ __typeof__(p) _p = (p); (p) = NULL; _p; })
#define TAKE_FD(fd) ({ int _fd = (fd); (fd) = -1; _fd; })
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Milliseconds: monotonic (for durations) and wall clock (for journals). */
int64_t fm_now_mono_ms(void);
int64_t fm_now_mono_us(void);
/* The CPU time the calling thread has used (not the time it waited for a CPU). */
int64_t fm_thread_cpu_us(void);
int64_t fm_now_wall_ms(void);
/* "2026-11-25T10:11:12.345Z" into buf (>= 32 bytes). */
void fm_format_wall_ms(int64_t ms, char *buf, size_t len);

/* malloc that aborts on exhaustion: a daemon that cannot allocate a few bytes
 * cannot report it either. */
void *fm_xmalloc(size_t n);
void *fm_xcalloc(size_t n, size_t m);
char *fm_xstrdup(const char *s);
char *fm_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *fm_xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* mkdir -p with mode; 0 or -errno. */
int fm_mkdir_p(const char *path, unsigned mode);
/* rm -rf that never crosses into another mount (mounts below path are an error). */
int fm_rm_rf(const char *path);
/* Makes a directory tree durable: fsync() of every regular file and directory
 * in it (the same filesystem only), the directory itself last.  0, or an
 * -errno of one that failed (it goes on past failures). */
int fm_fsync_tree(const char *path);
/* Reads a whole small file (<= max bytes) into a NUL-terminated buffer. */
int fm_read_file(const char *path, size_t max, char **out, size_t *len);
/* Writes data to path atomically (temp file + fsync + rename). */
int fm_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);
/* The same without the fsync: whole for its readers, not durable.  For a
 * migration's staging files, read at once and discarded after a crash (an
 * fsync inside a freeze is downtime: 0.3-3 ms here). */
int fm_write_file_staged(const char *path, const void *data, size_t len, unsigned mode);
/* Last `max` bytes of a file, from the start of a line; NULL if unreadable. */
char *fm_file_tail(const char *path, size_t max);
/* Lines of a file that match `needle`, at most `max_lines`, each prefixed "  ". */
char *fm_file_grep(const char *path, const char *needle, const char *skip, int max_lines);

/* Names of containers, hosts and images: [A-Za-z0-9][A-Za-z0-9_.-]{0,62}. */
bool fm_name_valid(const char *s);
/* An absolute path in canonical form: starts with '/', no empty, "." or ".."
 * component, no trailing '/' (except "/" itself), no control characters, at
 * most 4095 bytes.  Says nothing about what is there. */
bool fm_abs_path_clean(const char *s);
/* A fresh random identifier: prefix + 12 hex digits (not a measurement). */
void fm_random_id(const char *prefix, char *buf, size_t len);
/* Random bytes from the kernel. */
int fm_random_bytes(void *buf, size_t len);

/* Parses "1.5G", "512M", "64k", "1024" (bytes) into bytes. */
int fm_parse_size(const char *s, uint64_t *out);
/* Parses a rate in bits per second: "200M", "1G", "50000k", "1000000"
 * (decimal multiples; an optional "bit" or "bps" after the suffix). */
int fm_parse_rate(const char *s, uint64_t *bps);
/* "12.3 MiB" into buf. */
void fm_format_bytes(uint64_t n, char *buf, size_t len);

/* "host:port" -> parts; host may be "[v6]". */
int fm_split_hostport(const char *s, char *host, size_t hostlen, int *port);

/* Base64 (RFC 4648) for small binary blobs in JSON; caller frees. */
char *fm_base64_encode(const void *data, size_t len);
/* -EINVAL on bad input. */
int fm_base64_decode(const char *s, unsigned char **out, size_t *len);

/* A bandwidth cap (token bucket with debt): fm_pacer_take says how long to wait
 * before sending n more bytes so that the average stays at bps (bits/s).  Not
 * thread-safe: callers sharing one pacer hold their own lock. */
typedef struct fm_pacer {
	uint64_t bps;        /* 0 = no cap */
	double tokens;       /* bytes that may go without waiting (negative: debt) */
	int64_t refill_us;
} fm_pacer;
/* Microseconds to wait before the n bytes go (0 = at once). */
int64_t fm_pacer_take(fm_pacer *p, size_t n);
/* Blocks until fd has something (1: readable, or an error for the caller's read
 * to collect) or stop_fd is readable (0: stop); -errno if poll fails. */
int fm_wait_readable(int fd, int stop_fd);
/* Sleeps us microseconds in steps of at most 100 ms, stopping early once
 * *stop (if given) becomes true. */
void fm_sleep_us(int64_t us, const volatile bool *stop);
/* Returns the memory a migration freed to the kernel (malloc_trim): its
 * threads' malloc arenas keep freed pages resident otherwise (an idle daemon
 * after migrations: ~14 MiB resident instead of ~9.5). */
void fm_memory_release(void);

/* fn(arg) on a detached thread of its own; -errno when none could start. */
int fm_start_detached(void *(*fn)(void *), void *arg);
/* Closes fd on such a thread (or here, when none starts): closing a packet
 * or netlink socket waits for an RCU grace period (packet_release ->
 * synchronize_net: 7-30 ms here), which must not sit in a migration's
 * path.  fd < 0: nothing. */
void fm_close_later(int fd);

/* The Internet checksum (RFC 1071): add big-endian 16-bit words of data to
 * sum (an odd last byte padded), then fold to the checksum's value (host
 * order; store it big-endian). */
uint32_t fm_csum_add(uint32_t sum, const void *data, size_t len);
uint16_t fm_csum_fold(uint32_t sum);
