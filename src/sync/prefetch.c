/* Delta Transfer, post-copy page prefetcher and userfaultfd handler (see
 * prefetch.h).
 *
 * CRIU's page-server protocol (criu/page-xfer.c), as lazy-pages uses it: every
 * message starts with
 *
 *   struct page_server_iov { u32 cmd; u64 nr_pages; u64 vaddr; u64 dst_id; }  (32 bytes, host order)
 *
 * PS_IOV_GET asks for nr_pages from vaddr of process dst_id (its pagemap's
 * id); the answer is the same header with cmd PS_IOV_ADD_F | PE_PRESENT << 16
 * and nr_pages possibly smaller (CRIU stops at the end of one of its page-pipe
 * buffers), followed by the pages.  Answers come in the order of the requests.
 * PS_IOV_CLOSE ends it: the server answers with a 4-byte status.
 *
 * The restore's side (criu/uffd.c): per process, its pid as an int (negative:
 * a zombie, nothing follows) and one byte carrying its userfaultfd; at the end
 * 0x52535446 ("restore finished"); then it hangs up.  The userfaultfds were
 * opened with UFFD_FEATURE_EVENT_FORK, _REMAP, _REMOVE and _UNMAP.
 *
 * One thread, one poll loop: the upstream connection (read without blocking:
 * pages land straight in the cache), the restore's connection, every
 * process's userfaultfd and a control pipe (release, stop).
 */
#include "sync/prefetch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "basic/log.h"
#include "basic/util.h"
#include "sync/lazy_gate.h"
#include "sync/transfer.h"

#define PAGE 4096ull
#define PSI_LEN 32
#define PS_IOV_ADD_F 6
#define PS_IOV_GET 7
#define PS_IOV_CLOSE 0x1023
#define PS_CMD_MASK 0xffffu
#define PE_LAZY (1u << 1)
#define IMG_COMMON_MAGIC 0x54564319u
#define PAGEMAP_MAGIC 0x56084025u
#define PAGEMAP_FILE_MAX (256u << 20)
#define UP_QUEUE 8192

/* ---- pagemap images ---- */


static int pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (*p >= end)
			return -1;
		uint8_t b = *(*p)++;
		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

/* A PagemapEntry (images/pagemap.proto): vaddr = 1, compat_nr_pages = 2,
 * in_parent = 3, flags = 4, nr_pages = 5 (newer CRIU; wins over 2). */
static int pb_pagemap_entry(const uint8_t *p, const uint8_t *end, fm_lazy_range *e, uint32_t *flags)
{
	uint64_t compat = 0, nr = 0;
	bool has_vaddr = false, has_nr = false;
	*flags = 0;
	while (p < end) {
		uint64_t key, v = 0;
		if (pb_varint(&p, end, &key) < 0)
			return -1;
		switch (key & 7) {
		case 0:
			if (pb_varint(&p, end, &v) < 0)
				return -1;
			break;
		case 1: /* fixed 64 bits */
		case 5: /* fixed 32 bits */
			v = (key & 7) == 1 ? 8 : 4;
			if (v > (uint64_t)(end - p))
				return -1;
			p += v;
			continue;
		case 2:
			if (pb_varint(&p, end, &v) < 0 || v > (uint64_t)(end - p))
				return -1;
			p += v;
			continue;
		default:
			return -1;
		}
		switch (key >> 3) {
		case 1: e->vaddr = v; has_vaddr = true; break;
		case 2: compat = v; break;
		case 4: *flags = (uint32_t)v; break;
		case 5: nr = v; has_nr = true; break;
		default: break;
		}
	}
	e->nr_pages = has_nr ? nr : compat;
	return has_vaddr ? 0 : -1;
}

static int parse_pagemap(const uint8_t *buf, size_t len, uint64_t pid, fm_lazy_range **out, size_t *n,
			 size_t *cap, const char *path, fm_error *err)
{
	size_t off = 0;
	if (len < 4)
		return fm_error_set(err, -EBADMSG, "%s: not a CRIU image", path);
	uint32_t magic = fm_get_le32(buf);
	off = 4;
	if (magic == IMG_COMMON_MAGIC && len >= 8) {
		magic = fm_get_le32(buf + 4);
		off = 8;
	}
	if (magic != PAGEMAP_MAGIC)
		return fm_error_set(err, -EBADMSG, "%s: not a pagemap image (magic %#x)", path, magic);
	for (bool head = true; off < len; head = false) {
		if (len - off < 4)
			return fm_error_set(err, -EBADMSG, "%s: truncated entry at byte %zu", path, off);
		uint32_t sz = fm_get_le32(buf + off);
		off += 4;
		if (sz > len - off)
			return fm_error_set(err, -EBADMSG, "%s: entry at byte %zu overruns the file", path, off - 4);
		fm_lazy_range e = { .pid = pid };
		uint32_t flags;
		if (!head) {
			if (pb_pagemap_entry(buf + off, buf + off + sz, &e, &flags) < 0 || e.vaddr % PAGE ||
			    e.nr_pages == 0 || e.nr_pages > (1ull << 36) || e.vaddr + e.nr_pages * PAGE < e.vaddr)
				return fm_error_set(err, -EBADMSG, "%s: malformed pagemap entry at byte %zu", path, off - 4);
			if (flags & PE_LAZY) {
				if (*n == *cap) {
					*cap = *cap ? *cap * 2 : 64;
					fm_lazy_range *t = realloc(*out, *cap * sizeof(**out));
					if (!t)
						return fm_error_set(err, -ENOMEM, "out of memory");
					*out = t;
				}
				(*out)[(*n)++] = e;
			}
		}
		off += sz;
	}
	return 0;
}

static int range_cmp(const void *a, const void *b)
{
	const fm_lazy_range *x = a, *y = b;
	if (x->pid != y->pid)
		return x->pid < y->pid ? -1 : 1;
	return x->vaddr < y->vaddr ? -1 : x->vaddr > y->vaddr;
}

int fm_pagemap_lazy_ranges(const char *images_dir, fm_lazy_range **out, size_t *n, fm_error *err)
{
	fm_lazy_range *v = NULL;
	size_t nv = 0, cap = 0;
	int r = 0;
	DIR *d = opendir(images_dir);
	if (!d)
		return fm_error_set(err, -errno, "cannot read %s: %m", images_dir);
	struct dirent *de;
	while (r == 0 && (de = readdir(d))) {
		char *end;
		if (strncmp(de->d_name, "pagemap-", 8) != 0 || de->d_name[8] < '0' || de->d_name[8] > '9')
			continue;
		unsigned long long pid = strtoull(de->d_name + 8, &end, 10);
		if (strcmp(end, ".img") != 0 || pid == 0 || pid > 0x3fffffff)
			continue;
		_cleanup_free_ char *path = fm_xasprintf("%s/%s", images_dir, de->d_name);
		_cleanup_free_ char *buf = NULL;
		size_t len = 0;
		if ((r = fm_read_file(path, PAGEMAP_FILE_MAX, &buf, &len)) < 0) {
			r = fm_error_set(err, r, "cannot read %s: %s", path, strerror(-r));
			break;
		}
		r = parse_pagemap((const uint8_t *)buf, len, pid, &v, &nv, &cap, path, err);
	}
	closedir(d);
	if (r == 0 && nv > 1) {
		qsort(v, nv, sizeof(*v), range_cmp);
		for (size_t i = 1; i < nv && r == 0; i++)
			if (v[i].pid == v[i - 1].pid && v[i].vaddr < v[i - 1].vaddr + v[i - 1].nr_pages * PAGE)
				r = fm_error_set(err, -EBADMSG, "%s: overlapping lazy ranges in pagemap-%llu.img",
						 images_dir, (unsigned long long)v[i].pid);
	}
	if (r < 0) {
		free(v);
		return r;
	}
	*out = v;
	*n = nv;
	return 0;
}

/* ---- the window ---- */

void fm_prefetch_pace_init(fm_prefetch_pace *pc)
{
	*pc = (fm_prefetch_pace){ .since_us = -1 };
}

void fm_prefetch_pace_busy(fm_prefetch_pace *pc, int64_t now_us)
{
	pc->since_us = now_us;
	pc->bytes = 0;
}

void fm_prefetch_pace_idle(fm_prefetch_pace *pc)
{
	pc->since_us = -1;
	pc->bytes = 0;
}

void fm_prefetch_pace_arrived(fm_prefetch_pace *pc, uint64_t bytes, int64_t now_us)
{
	if (pc->since_us < 0)
		return;
	pc->bytes += bytes;
	int64_t span = now_us - pc->since_us;
	if (span < FM_PREFETCH_RATE_SAMPLE_US)
		return;
	pc->samples[pc->next] = (double)pc->bytes * 1e6 / (double)span;
	pc->next = (pc->next + 1) % FM_PREFETCH_RATE_SAMPLES;
	if (pc->nsamples < FM_PREFETCH_RATE_SAMPLES)
		pc->nsamples++;
	pc->since_us = now_us;
	pc->bytes = 0;
}

double fm_prefetch_pace_rate(const fm_prefetch_pace *pc)
{
	double m = 0;
	for (unsigned i = 0; i < pc->nsamples; i++)
		if (pc->samples[i] > m)
			m = pc->samples[i];
	return m;
}

uint64_t fm_prefetch_window(double rate_Bps)
{
	double w = rate_Bps * FM_PREFETCH_QUEUE_MS / 1000.0;
	if (!(w > FM_PREFETCH_WINDOW_MIN))
		return FM_PREFETCH_WINDOW_MIN;
	return w < FM_PREFETCH_WINDOW ? (uint64_t)w : FM_PREFETCH_WINDOW;
}

uint64_t fm_prefetch_window_now(double rate_Bps, double peak_Bps, int64_t since_release_us, int64_t since_fault_us)
{
	uint64_t w = fm_prefetch_window(rate_Bps);
	if (since_release_us < 0 || since_release_us >= (int64_t)FM_PREFETCH_SETTLE_MS * 1000 || since_fault_us < 0 ||
	    since_fault_us >= FM_PREFETCH_FAULT_RECENT_US)
		return w;
	double f = peak_Bps * FM_PREFETCH_FAULT_QUEUE_MS / 1000.0;
	uint64_t fw = f > FM_PREFETCH_WINDOW_MIN ? (uint64_t)f : FM_PREFETCH_WINDOW_MIN;
	return fw < w ? fw : w;
}

uint64_t fm_prefetch_chunk_pages(uint64_t window)
{
	uint64_t n = window / 2 / PAGE;
	return n < 1 ? 1 : n > FM_PREFETCH_CHUNK_PAGES ? FM_PREFETCH_CHUNK_PAGES : n;
}

uint64_t fm_prefetch_readahead_pages(uint64_t window)
{
	uint64_t n = fm_prefetch_chunk_pages(window);
	return n < FM_PREFETCH_READAHEAD_PAGES ? n : FM_PREFETCH_READAHEAD_PAGES;
}

/* ---- the prefetcher ---- */

/* A lazy page: not asked for yet (or wanted again by a forked child), asked
 * from the source, in the cache waiting to be copied (the copy met pending
 * events: -EAGAIN), or copied into every task that lacked it. */
enum { PG_WANT = 0, PG_ASKED, PG_HERE, PG_DONE };

typedef struct pf_range {
	uint64_t pid, vaddr, nr;
	uint64_t first;          /* its first page's index in state[] and the cache */
} pf_range;

typedef struct up_req {          /* sent to the source, answered in this order */
	uint64_t pid, vaddr, nr;
	uint64_t g;              /* first page's index */
} up_req;

/* Where pages g .. g + nr - 1 of a task live now (a remap moves them). */
typedef struct uf_seg {
	uint64_t g, nr, rt;
} uf_seg;

/* A restored process: its userfaultfd and the lazy pages it still lacks. */
typedef struct uf_task {
	int fd;                  /* -1: exited */
	uint64_t pid;            /* its pagemap's (a forked child: its parent's) */
	uint64_t g0, gn;         /* its pid's pages: [g0, g0 + gn) */
	uint8_t *need;           /* gn entries, 1 = not copied yet */
	uint64_t needed;
	uf_seg *segs;            /* sorted by g */
	size_t nsegs;
} uf_task;

typedef struct uf_wait {         /* a fault waiting for the network */
	size_t task;
	uint64_t g;
	int64_t since_us;
} uf_wait;

/* The largest answer: a background chunk (a fault's readahead is smaller). */
#define RBUF_PAGES FM_PREFETCH_PAUSED_CHUNK_PAGES   /* mapped; FM_PREFETCH_CHUNK_PAGES of it faulted in
						     * at the start, the rest at a paused release */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define MAX_TASKS 4096
#define MAX_WAITS 4096
#define UFFD_MSGS 64
#define RESTORE_FINISHED 0x52535446u   /* CRIU's "ReSTore Finished" */
#define RESTORE_MAX_FDS 8

struct fm_prefetch {
	pf_range *ranges;
	size_t nranges;
	uint64_t total;          /* lazy pages */
	uint8_t *state;
	uint8_t *cache;          /* total pages, mapped without reserve: only pages kept for a later copy use memory */
	uint8_t *rbuf;           /* the answer being read lands here (RBUF_PAGES, faulted in once) */
	uint64_t rbuf_pages;     /* ... of which this many are faulted in: the largest request */
	uint64_t want, asked, here;
	uint64_t cursor;         /* where the background order goes on */
	fm_prefetch_pace pace;
	uint64_t window;         /* bytes; follows pace (fm_prefetch_window) */

	int listen_fd;           /* <restore work>/lazy-pages.socket */
	int rs_fd;               /* the restore's connection */
	int up_fd, ctl_rd, ctl_wr, done_fd; /* control pipe: 'g' releases the background order, 'p' too
					     * for paused processes, 'x' stops */
	int here_fd;             /* eventfd: every lazy page arrived, or stopped */
	int fail_fd;             /* eventfd: failed (or stopped before the end) */
	pthread_t thread;
	bool started;
	bool held;               /* background requests wait for fm_prefetch_release */
	bool paused;             /* ... released for processes that do not run yet: no fault
				  * waits behind the window */
	int64_t fault_us;        /* the last fault that had to wait for the network (0: none) */
	double peak_rate;        /* the highest arrival rate seen, bytes per second */
	bool retry;              /* pages wait in the cache for a copy that met pending events */
	int64_t t0_us;

	/* what the restore sends: (pid, uffd) per task, then RESTORE_FINISHED */
	uint8_t rs_buf[4];
	size_t rs_got;
	bool rs_want_fd;         /* the pid came, its descriptor's byte is next */
	int rs_pid;
	int rs_fds[RESTORE_MAX_FDS];
	size_t rs_nfds;
	bool restore_finished, restore_gone;

	uf_task *tasks;
	size_t ntasks;
	uf_wait waits[MAX_WAITS];
	size_t nwaits;
	uf_wait zero[MAX_WAITS]; /* zero pages to map again (g: the address) */
	size_t nzero;

	up_req *uq;
	size_t uq_head, uq_len;

	/* the answer being read from upstream */
	uint8_t uhdr[PSI_LEN];
	size_t uhdr_got;
	uint64_t udata_len, udata_got;
	uint64_t udata_done;     /* its pages copied already (a fault waited for one of them) */

	bool close_sent, done;
	uint8_t status[4];
	size_t status_got;

	pthread_mutex_t mu;
	int status_code;
	fm_error err;
	fm_prefetch_stats st;
};

static int fail(fm_prefetch *p, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(fm_prefetch *p, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pthread_mutex_lock(&p->mu);
	if (p->status_code == 0) {
		uint64_t one = 1;
		p->status_code = code;
		fm_error_setv(&p->err, code, fmt, ap);
		(void)!write(p->fail_fd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&p->mu);
	va_end(ap);
	return code;
}

static int send_all(int fd, const uint8_t *b, size_t n)
{
	while (n > 0) {
		ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

static void psi(uint8_t *h, uint32_t cmd, uint64_t nr, uint64_t vaddr, uint64_t pid)
{
	memset(h, 0, PSI_LEN);
	fm_put_le32(h, cmd);
	fm_put_le64(h + 8, nr);
	fm_put_le64(h + 16, vaddr);
	fm_put_le64(h + 24, pid);
}

/* The range holding page index g. */
static const pf_range *range_of(const fm_prefetch *p, uint64_t g)
{
	size_t lo = 0, hi = p->nranges;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (p->ranges[mid].first <= g)
			lo = mid;
		else
			hi = mid;
	}
	return &p->ranges[lo];
}

static void stat_add(fm_prefetch *p, uint64_t *field, uint64_t n)
{
	pthread_mutex_lock(&p->mu);
	*field += n;
	pthread_mutex_unlock(&p->mu);
}

static int up_send(fm_prefetch *p, uint64_t pid, uint64_t vaddr, uint64_t nr, uint64_t g)
{
	if (p->uq_len == UP_QUEUE)
		return fail(p, -EOVERFLOW, "page prefetcher: too many requests in flight");
	if (nr > p->rbuf_pages)
		return fail(p, -EINVAL, "page prefetcher: a request of %llu pages", (unsigned long long)nr);
	uint8_t h[PSI_LEN];
	psi(h, PS_IOV_GET, nr, vaddr, pid);
	int r = send_all(p->up_fd, h, PSI_LEN);
	if (r < 0)
		return fail(p, r, "page prefetcher: cannot ask the source for pages: %s", strerror(-r));
	if (p->pace.since_us < 0)
		fm_prefetch_pace_busy(&p->pace, fm_now_mono_us());
	p->uq[(p->uq_head + p->uq_len++) % UP_QUEUE] = (up_req){ pid, vaddr, nr, g };
	memset(p->state + g, PG_ASKED, nr);
	p->want -= nr;
	p->asked += nr;
	return 0;
}

/* ---- the tasks ---- */

static bool task_live(const uf_task *t) { return t->fd >= 0; }

static void need_clear(uf_task *t, uint64_t g, uint64_t n)
{
	for (uint64_t i = g; i < g + n; i++)
		if (t->need[i - t->g0]) {
			t->need[i - t->g0] = 0;
			t->needed--;
		}
}

static bool needed_by_any(const fm_prefetch *p, uint64_t pid, uint64_t g)
{
	for (size_t i = 0; i < p->ntasks; i++) {
		const uf_task *t = &p->tasks[i];
		if (task_live(t) && t->pid == pid && g >= t->g0 && g < t->g0 + t->gn && t->need[g - t->g0])
			return true;
	}
	return false;
}

/* Pages of [g0, g0 + n) of pid nobody lacks any more are not fetched. */
static void settle(fm_prefetch *p, uint64_t pid, uint64_t g0, uint64_t n)
{
	for (uint64_t g = g0; g < g0 + n; g++)
		if (p->state[g] == PG_WANT && !needed_by_any(p, pid, g)) {
			p->state[g] = PG_DONE;
			p->want--;
		}
}

static void task_exit(fm_prefetch *p, uf_task *t)
{
	fm_debug(FM_C_DELTA_TRANSFER, "page prefetcher: a task of pid %llu exited with %llu pages not copied",
		 (unsigned long long)t->pid, (unsigned long long)t->needed);
	close(t->fd);
	t->fd = -1;
	memset(t->need, 0, t->gn);
	t->needed = 0;
	settle(p, t->pid, t->g0, t->gn);
}

/* Splits the task's segments at run-time addresses a and b, then moves the
 * pages in [a, b) by delta, or (drop) forgets them. */
static void seg_cut(fm_prefetch *p, uf_task *t, uint64_t a, uint64_t b, int64_t delta, bool drop)
{
	uf_seg *out = fm_xcalloc(t->nsegs * 3 + 1, sizeof(*out));
	size_t n = 0;
	for (size_t i = 0; i < t->nsegs; i++) {
		uf_seg s = t->segs[i];
		uint64_t end = s.rt + s.nr * PAGE;
		uint64_t lo = s.rt > a ? s.rt : a, hi = end < b ? end : b;
		if (lo >= hi) {
			out[n++] = s;
			continue;
		}
		if (s.rt < lo)
			out[n++] = (uf_seg){ s.g, (lo - s.rt) / PAGE, s.rt };
		uint64_t g = s.g + (lo - s.rt) / PAGE, nr = (hi - lo) / PAGE;
		if (drop) {
			need_clear(t, g, nr);
			settle(p, t->pid, g, nr);
		} else
			out[n++] = (uf_seg){ g, nr, (uint64_t)((int64_t)lo + delta) };
		if (hi < end)
			out[n++] = (uf_seg){ g + nr, (end - hi) / PAGE, hi };
	}
	free(t->segs);
	t->segs = out;
	t->nsegs = n;
}

/* The page index at run-time address a, or UINT64_MAX. */
static uint64_t task_page(const uf_task *t, uint64_t a)
{
	for (size_t i = 0; i < t->nsegs; i++)
		if (a >= t->segs[i].rt && a < t->segs[i].rt + t->segs[i].nr * PAGE)
			return t->segs[i].g + (a - t->segs[i].rt) / PAGE;
	return UINT64_MAX;
}

/* The segment holding page g, or NULL. */
static const uf_seg *task_seg(const uf_task *t, uint64_t g)
{
	for (size_t i = 0; i < t->nsegs; i++)
		if (g >= t->segs[i].g && g < t->segs[i].g + t->segs[i].nr)
			return &t->segs[i];
	return NULL;
}

static uf_task *task_add(fm_prefetch *p, int fd, uint64_t pid)
{
	if (p->ntasks == MAX_TASKS) {
		close(fd);
		fail(p, -EOVERFLOW, "page prefetcher: more than %d restored processes", MAX_TASKS);
		return NULL;
	}
	uf_task *v = realloc(p->tasks, (p->ntasks + 1) * sizeof(*v));
	if (!v) {
		close(fd);
		fail(p, -ENOMEM, "page prefetcher: out of memory");
		return NULL;
	}
	p->tasks = v;
	uf_task *t = &p->tasks[p->ntasks++];
	*t = (uf_task){ .fd = fd, .pid = pid };
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	return t;
}

/* A restored task's userfaultfd arrived: it lacks every lazy page of its pid. */
static int task_new(fm_prefetch *p, int fd, uint64_t pid)
{
	uf_task *t = task_add(p, fd, pid);
	if (!t)
		return p->status_code;
	size_t first = p->nranges;
	for (size_t i = 0; i < p->nranges; i++)
		if (p->ranges[i].pid == pid) {
			if (first == p->nranges)
				first = i;
			t->nsegs++;
		}
	t->segs = fm_xcalloc(t->nsegs + 1, sizeof(*t->segs));
	for (size_t i = 0; i < t->nsegs; i++) {
		const pf_range *r = &p->ranges[first + i];
		t->segs[i] = (uf_seg){ r->first, r->nr, r->vaddr };
		t->gn += r->nr;
	}
	t->g0 = t->nsegs ? t->segs[0].g : 0;
	t->need = fm_xcalloc(t->gn + 1, 1);
	for (uint64_t g = t->g0; g < t->g0 + t->gn; g++)
		if (p->state[g] != PG_DONE) {   /* another task of this pid got it already: not ours */
			t->need[g - t->g0] = 1;
			t->needed++;
		}
	fm_debug(FM_C_DELTA_TRANSFER, "page prefetcher: pid %llu restored, %llu lazy pages",
		 (unsigned long long)pid, (unsigned long long)t->needed);
	return 0;
}

/* UFFD_EVENT_FORK: the child lacks what its parent lacks. */
static int task_fork(fm_prefetch *p, size_t parent, int fd)
{
	uf_task *c = task_add(p, fd, p->tasks[parent].pid);
	if (!c)
		return p->status_code;
	const uf_task *t = &p->tasks[parent];   /* after the realloc */
	c->g0 = t->g0;
	c->gn = t->gn;
	c->needed = t->needed;
	c->need = fm_xcalloc(t->gn + 1, 1);
	memcpy(c->need, t->need, t->gn);
	c->nsegs = t->nsegs;
	c->segs = fm_xcalloc(t->nsegs + 1, sizeof(*c->segs));
	memcpy(c->segs, t->segs, t->nsegs * sizeof(*t->segs));
	for (uint64_t g = c->g0; g < c->g0 + c->gn; g++)
		if (c->need[g - c->g0] && p->state[g] == PG_DONE) {
			p->state[g] = PG_WANT;   /* copied into the parent and dropped: again */
			p->want++;
		}
	fm_debug(FM_C_DELTA_TRANSFER, "page prefetcher: a task of pid %llu forked, the child lacks %llu pages",
		 (unsigned long long)c->pid, (unsigned long long)c->needed);
	return 0;
}

/* Copies pages [g, g + n), whose bytes are at src, into task t where it
 * lacks them.  0, or 1 when a copy met pending events (the rest waits in the
 * cache). */
static int task_copy(fm_prefetch *p, size_t ti, uint64_t g, uint64_t n, const uint8_t *src)
{
	const uint64_t g_src = g;
	uf_task *t = &p->tasks[ti];
	bool single = false;   /* a run crossing VMAs: page by page */
	uint64_t end = g + n;
	while (g < end && task_live(t)) {
		if (!t->need[g - t->g0]) {
			g++;
			continue;
		}
		const uf_seg *s = task_seg(t, g);
		if (!s) {
			need_clear(t, g, 1);
			g++;
			continue;
		}
		uint64_t m = 0, lim = s->g + s->nr < end ? s->g + s->nr : end;
		while (g + m < lim && t->need[g + m - t->g0] && !(single && m == 1))
			m++;
		struct uffdio_copy c = { .dst = s->rt + (g - s->g) * PAGE, .src = (uintptr_t)(src + (g - g_src) * PAGE),
					 .len = m * PAGE, .mode = 0 };
		if (ioctl(t->fd, UFFDIO_COPY, &c) == 0) {
			need_clear(t, g, m);
			stat_add(p, &p->st.served_bytes, m * PAGE);
			g += m;
			continue;
		}
		int e = errno;
		if (c.copy > 0) {   /* part of it */
			uint64_t k = (uint64_t)c.copy / PAGE;
			need_clear(t, g, k);
			stat_add(p, &p->st.served_bytes, k * PAGE);
			g += k;
			continue;
		}
		if (c.copy < 0)
			e = (int)-c.copy;
		switch (e) {
		case EEXIST:   /* there already */
			need_clear(t, g, 1);
			g++;
			break;
		case ENOENT:   /* no VMA there (gone, or the run crosses into the next one) */
			if (m > 1) {
				single = true;
			} else {
				need_clear(t, g, 1);
				g++;
			}
			break;
		case EAGAIN:   /* the task's mappings are changing: read its events first */
			return 1;
		case ESRCH:
		case ENOSPC:   /* its memory is gone: it exited */
			task_exit(p, t);
			return 0;
		default:
			return fail(p, -e, "page prefetcher: cannot copy %llu pages to %#llx of pid %llu: %s",
				    (unsigned long long)m, (unsigned long long)c.dst, (unsigned long long)t->pid,
				    strerror(e));
		}
	}
	return 0;
}

/* Faults that waited are over once their page is copied. */
static void waits_check(fm_prefetch *p)
{
	int64_t now = fm_now_mono_us();
	for (size_t i = 0; i < p->nwaits;) {
		uf_wait *w = &p->waits[i];
		const uf_task *t = &p->tasks[w->task];
		if (task_live(t) && t->need[w->g - t->g0]) {
			i++;
			continue;
		}
		double ms = (double)(now - w->since_us) / 1000.0;
		pthread_mutex_lock(&p->mu);
		p->st.wait_sum_ms += ms;
		if (ms > p->st.wait_max_ms)
			p->st.wait_max_ms = ms;
		pthread_mutex_unlock(&p->mu);
		*w = p->waits[--p->nwaits];
	}
}

/* Pages [g, g + n) of pid are here, at src (the cache, or the answer just
 * read): into every task that lacks them.  A page a copy has to try again
 * stays in the cache (copied there from src); the others leave it. */
static int deliver(fm_prefetch *p, uint64_t pid, uint64_t g, uint64_t n, const uint8_t *src)
{
	bool from_cache = src == p->cache + g * PAGE;
	for (size_t i = 0; i < p->ntasks; i++) {
		uf_task *t = &p->tasks[i];
		if (!task_live(t) || t->pid != pid)
			continue;
		int r = task_copy(p, i, g, n, src);
		if (r < 0)
			return r;
		if (r > 0)
			p->retry = true;
	}
	bool keep = false;
	for (uint64_t k = g; k < g + n; k++) {
		bool still = needed_by_any(p, pid, k);
		uint8_t s = still ? PG_HERE : PG_DONE;
		if (p->state[k] == PG_HERE && !still)
			p->here--;
		else if (p->state[k] != PG_HERE && still)
			p->here++;
		p->state[k] = s;
		keep |= still;
		if (still && !from_cache)
			memcpy(p->cache + k * PAGE, src + (k - g) * PAGE, PAGE);
	}
	if (!keep && from_cache)
		(void)madvise(p->cache + g * PAGE, n * PAGE, MADV_DONTNEED);
	waits_check(p);
	return 0;
}

static int uffd_zero(fm_prefetch *p, size_t ti, uint64_t a);

/* Copies that met pending events, again (their events have been read). */
static int redeliver(fm_prefetch *p)
{
	p->retry = false;
	/* a zero page that meets pending events again goes back on the list, at
	 * an index already read */
	size_t nz = p->nzero;
	p->nzero = 0;
	for (size_t i = 0; i < nz; i++) {
		uf_wait z = p->zero[i];
		if (task_live(&p->tasks[z.task])) {
			int k = uffd_zero(p, z.task, z.g);
			if (k < 0)
				return k;
		}
	}
	for (uint64_t g = 0; g < p->total;) {
		uint8_t *s = memchr(p->state + g, PG_HERE, p->total - g);
		if (!s)
			break;
		g = (uint64_t)(s - p->state);
		const pf_range *r = range_of(p, g);
		uint64_t n = 1;
		while (g + n < r->first + r->nr && p->state[g + n] == PG_HERE)
			n++;
		int k = deliver(p, r->pid, g, n, p->cache + g * PAGE);
		if (k < 0)
			return k;
		g += n;
	}
	return 0;
}

static int uffd_zero(fm_prefetch *p, size_t ti, uint64_t a)
{
	uf_task *t = &p->tasks[ti];
	struct uffdio_zeropage z = { .range = { .start = a, .len = PAGE } };
	if (ioctl(t->fd, UFFDIO_ZEROPAGE, &z) == 0 || errno == EEXIST || errno == ENOENT)
		return 0;
	if (errno == EAGAIN) {   /* pending events: read them, then again */
		if (p->nzero == MAX_WAITS)
			return fail(p, -EOVERFLOW, "page prefetcher: too many zero pages waiting");
		p->zero[p->nzero++] = (uf_wait){ ti, a, 0 };
		p->retry = true;
		return 0;
	}
	if (errno == ESRCH || errno == ENOSPC) {
		task_exit(p, t);
		return 0;
	}
	return fail(p, -errno, "page prefetcher: cannot map a zero page at %#llx of pid %llu: %m",
		    (unsigned long long)a, (unsigned long long)t->pid);
}

static void uffd_wake(uf_task *t, uint64_t a)
{
	struct uffdio_range w = { .start = a, .len = PAGE };
	(void)ioctl(t->fd, UFFDIO_WAKE, &w);
}

static int on_fault(fm_prefetch *p, size_t ti, uint64_t addr)
{
	uf_task *t = &p->tasks[ti];
	uint64_t a = addr & ~(PAGE - 1), g = task_page(t, a);
	stat_add(p, &p->st.faults, 1);
	if (g == UINT64_MAX) {   /* registered, never dumped: it was never touched */
		stat_add(p, &p->st.zero_pages, 1);
		return uffd_zero(p, ti, a);
	}
	if (!t->need[g - t->g0]) {   /* copied meanwhile (the copy woke it) */
		uffd_wake(t, a);
		return 0;
	}
	/* No copy from here: the rest of this batch of messages may hold events
	 * (a fork, a remap, an unmap) the kernel considers done once read, and
	 * a copy before they are handled would land in the parent only, at the
	 * old address, or after the zap.  A page kept in the cache goes with
	 * redeliver, the waited-for bytes of an answer with up_partial, both
	 * once every task's events are read and handled (prefetch_thread). */
	if (p->state[g] == PG_HERE) {
		p->retry = true;
		return 0;
	}
	stat_add(p, &p->st.misses, 1);
	p->fault_us = fm_now_mono_us();
	if (p->nwaits < MAX_WAITS)
		p->waits[p->nwaits++] = (uf_wait){ ti, g, fm_now_mono_us() };
	if (p->state[g] == PG_ASKED)
		return 0;   /* its bytes may be here already: up_partial, after the events */
	if (p->state[g] == PG_DONE) {   /* not expected: a page some task lacks is wanted */
		p->state[g] = PG_WANT;
		p->want++;
	}
	/* now, with a readahead of pages nobody has asked for; the background
	 * order continues right after it (an application walking its memory
	 * finds the next pages on their way) */
	const pf_range *r = range_of(p, g);
	uint64_t n = 1, ra = fm_prefetch_readahead_pages(p->window);
	while (n < ra && g + n < r->first + r->nr && p->state[g + n] == PG_WANT)
		n++;
	p->cursor = g + n;
	return up_send(p, r->pid, r->vaddr + (g - r->first) * PAGE, n, g);
}

/* Reads a task's events: faults, forks, remaps, unmaps. */
static int uffd_read(fm_prefetch *p, size_t ti)
{
	struct uffd_msg msgs[UFFD_MSGS];
	for (;;) {
		if (!task_live(&p->tasks[ti]))
			return 0;
		ssize_t k = read(p->tasks[ti].fd, msgs, sizeof(msgs));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EAGAIN)
			return 0;
		if (k < 0)
			return fail(p, -errno, "page prefetcher: reading the events of pid %llu: %m",
				    (unsigned long long)p->tasks[ti].pid);
		if (k == 0 || k % (ssize_t)sizeof(msgs[0]))
			return fail(p, -EPROTO, "page prefetcher: a short userfaultfd message from pid %llu",
				    (unsigned long long)p->tasks[ti].pid);
		for (size_t i = 0; i < (size_t)k / sizeof(msgs[0]); i++) {
			const struct uffd_msg *m = &msgs[i];
			uf_task *t = &p->tasks[ti];
			int r = 0;
			switch (m->event) {
			case UFFD_EVENT_PAGEFAULT:
				r = on_fault(p, ti, m->arg.pagefault.address);
				break;
			case UFFD_EVENT_FORK:
				r = task_fork(p, ti, (int)m->arg.fork.ufd);
				break;
			case UFFD_EVENT_REMAP:
				seg_cut(p, t, m->arg.remap.from, m->arg.remap.from + m->arg.remap.len,
					(int64_t)(m->arg.remap.to - m->arg.remap.from), false);
				break;
			case UFFD_EVENT_REMOVE:
			case UFFD_EVENT_UNMAP: {
				uint64_t a = m->arg.remove.start, b = m->arg.remove.end;
				/* MADV_DONTNEED keeps the VMA: its pages fault again, as fresh
				 * zeroes, not ours to serve */
				struct uffdio_range u = { .start = a, .len = b - a };
				if (m->event == UFFD_EVENT_REMOVE && ioctl(t->fd, UFFDIO_UNREGISTER, &u) < 0) {
					if (errno == ENOMEM || errno == ESRCH) {
						task_exit(p, t);
						break;
					}
					r = fail(p, -errno, "page prefetcher: cannot unregister %#llx-%#llx of pid %llu: %m",
						 (unsigned long long)a, (unsigned long long)b, (unsigned long long)t->pid);
					break;
				}
				seg_cut(p, t, a, b, 0, true);
				break;
			}
			default:
				r = fail(p, -EPROTO, "page prefetcher: unexpected userfaultfd event %u from pid %llu",
					 m->event, (unsigned long long)t->pid);
			}
			if (r < 0)
				return r;
		}
	}
}

/* ---- the restore's connection ---- */

/* Reads what the restore sends: per task its pid (an int; negative: a
 * zombie, nothing follows) and one byte carrying its userfaultfd; at the end
 * RESTORE_FINISHED; then it hangs up.  The descriptors come with the read
 * that reaches their byte. */
static int rs_read(fm_prefetch *p)
{
	for (;;) {
		uint8_t buf[256];
		char ctl[CMSG_SPACE(sizeof(int) * RESTORE_MAX_FDS)];
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
		ssize_t n = recvmsg(p->rs_fd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0)
			return fail(p, -errno, "page prefetcher: reading the restore's messages: %m");
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (p->rs_nfds < RESTORE_MAX_FDS)
					p->rs_fds[p->rs_nfds++] = fd;
				else
					close(fd);
			}
		}
		if (m.msg_flags & MSG_CTRUNC)
			return fail(p, -EPROTO, "page prefetcher: the restore sent more descriptors at once than expected");
		if (n == 0) {
			p->restore_gone = true;
			if (!p->restore_finished)
				return fail(p, -ECONNRESET, "page prefetcher: the restore hung up before it finished");
			return 0;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (p->restore_finished)
				return fail(p, -EPROTO, "page prefetcher: the restore sent more after it finished");
			if (p->rs_want_fd) {
				p->rs_want_fd = false;
				if (p->rs_nfds == 0)
					return fail(p, -EPROTO, "page prefetcher: pid %d came without its userfaultfd", p->rs_pid);
				int fd = p->rs_fds[0];
				memmove(p->rs_fds, p->rs_fds + 1, --p->rs_nfds * sizeof(int));
				int r = task_new(p, fd, (uint64_t)p->rs_pid);
				if (r < 0)
					return r;
				continue;
			}
			p->rs_buf[p->rs_got++] = buf[i];
			if (p->rs_got < 4)
				continue;
			p->rs_got = 0;
			int32_t v;
			memcpy(&v, p->rs_buf, 4);
			if ((uint32_t)v == RESTORE_FINISHED) {
				p->restore_finished = true;
				/* pages of processes that never came (zombies) are not fetched */
				for (size_t k = 0; k < p->nranges; k++)
					settle(p, p->ranges[k].pid, p->ranges[k].first, p->ranges[k].nr);
			} else if (v > 0 && v <= 0x3fffffff) {
				p->rs_pid = v;
				p->rs_want_fd = true;
			} else if (v >= 0 || v < -0x3fffffff) {
				return fail(p, -EPROTO, "page prefetcher: the restore sent %d for a pid", v);
			}
		}
	}
}

/* ---- the source's answers ---- */

/* Sets the window from the arrival rate measured so far (its range goes to the
 * stats, which only this thread writes). */
static void window_update(fm_prefetch *p)
{
	double rate = fm_prefetch_pace_rate(&p->pace);
	if (rate > p->peak_rate)
		p->peak_rate = rate;
	int64_t now = fm_now_mono_us();
	p->window = p->paused ? 2 * p->rbuf_pages * PAGE
			      : fm_prefetch_window_now(rate, p->peak_rate, p->held ? -1 : now - p->t0_us,
						       p->fault_us ? now - p->fault_us : -1);
	if (p->held || (p->window >= p->st.window_min && p->window <= p->st.window_max))
		return;
	pthread_mutex_lock(&p->mu);
	if (p->st.window_min == 0 || p->window < p->st.window_min)
		p->st.window_min = p->window;
	if (p->window > p->st.window_max)
		p->st.window_max = p->window;
	pthread_mutex_unlock(&p->mu);
}

/* Keeps the window of background requests full, in address order from the cursor. */
static int pump(fm_prefetch *p)
{
	window_update(p);
	uint64_t chunk = p->paused ? p->rbuf_pages : fm_prefetch_chunk_pages(p->window);
	/* paused processes: not before the restore has named every one of them
	 * (CRIU says so before its pre-resume): a page that arrives before its
	 * process's userfaultfd is needed by nobody yet, and would be dropped */
	while (!p->held && !(p->paused && !p->restore_finished) && !p->close_sent && p->want > 0 &&
	       p->asked * PAGE < p->window &&
	       (p->here + p->asked) * PAGE < FM_PREFETCH_CACHE_MAX) {
		if (p->cursor >= p->total)
			p->cursor = 0;
		uint8_t *s = memchr(p->state + p->cursor, PG_WANT, p->total - p->cursor);
		if (!s)
			s = memchr(p->state, PG_WANT, p->cursor);
		if (!s)
			break;
		uint64_t g = (uint64_t)(s - p->state);
		const pf_range *r = range_of(p, g);
		uint64_t n = 0, end = r->first + r->nr;
		while (n < chunk && g + n < end && p->state[g + n] == PG_WANT)
			n++;
		int k = up_send(p, r->pid, r->vaddr + (g - r->first) * PAGE, n, g);
		if (k < 0)
			return k;
		p->cursor = g + n;
	}
	if (p->uq_len == 0)
		fm_prefetch_pace_idle(&p->pace);
	return 0;
}

/* Every page is in every process that wants it, and the restore has said
 * all it will: the page stream is no longer needed. */
static bool all_delivered(const fm_prefetch *p)
{
	if (!p->restore_finished || p->want > 0 || p->asked > 0 || p->here > 0 || p->uq_len > 0)
		return false;
	for (size_t i = 0; i < p->ntasks; i++)
		if (p->tasks[i].needed > 0)
			return false;
	return true;
}

/* The page stream broke (code, the message) or ended: a failure, unless
 * only its closing handshake was left (a switch restarted after the last
 * page: the source's dump ends on its own when the stream goes). */
static int up_lost(fm_prefetch *p, int code, const char *msg)
{
	if (all_delivered(p)) {
		fm_debug(FM_C_DELTA_TRANSFER, "page prefetcher: %s after every page had arrived", msg);
		p->done = true;
		return 0;
	}
	return fail(p, code, "page prefetcher: %s", msg);
}

/* Every task has every page, and the restore is over: the source's dump
 * finishes when it gets PS_IOV_CLOSE (and answers with a status). */
static int maybe_close(fm_prefetch *p)
{
	if (p->close_sent || !p->restore_finished || !p->restore_gone || p->asked > 0 || p->here > 0 || p->uq_len > 0)
		return 0;
	for (size_t i = 0; i < p->ntasks; i++)
		if (p->tasks[i].needed > 0)
			return 0;
	uint8_t h[PSI_LEN];
	psi(h, PS_IOV_CLOSE, 0, 0, 0);
	int r = send_all(p->up_fd, h, PSI_LEN);
	if (r < 0) {
		char msg[128];
		snprintf(msg, sizeof(msg), "cannot close the page transfer: %s", strerror(-r));
		return up_lost(p, r, msg);
	}
	p->close_sent = true;
	return 0;
}

static int up_header(fm_prefetch *p)
{
	if (p->uq_len == 0)
		return fail(p, -EPROTO, "page prefetcher: the source sent pages nobody asked for");
	up_req *q = &p->uq[p->uq_head];
	uint32_t cmd = fm_get_le32(p->uhdr);
	uint64_t nr = fm_get_le64(p->uhdr + 8), vaddr = fm_get_le64(p->uhdr + 16), pid = fm_get_le64(p->uhdr + 24);
	if ((cmd & PS_CMD_MASK) != PS_IOV_ADD_F || nr == 0 || nr > q->nr || vaddr != q->vaddr || pid != q->pid)
		return fail(p, -EPROTO, "page prefetcher: the source answered %#x for %llu pages at %#llx of %llu, "
			    "asked %llu pages at %#llx of %llu", cmd, (unsigned long long)nr, (unsigned long long)vaddr,
			    (unsigned long long)pid, (unsigned long long)q->nr, (unsigned long long)q->vaddr,
			    (unsigned long long)q->pid);
	p->udata_len = nr * PAGE;
	p->udata_got = 0;
	p->udata_done = 0;
	return 0;
}

/* While a fault waits, the pages of the answer being read are copied as
 * their bytes arrive (the faulting page first among them), not once the
 * whole answer is in. */
static int up_partial(fm_prefetch *p)
{
	if (p->nwaits == 0 || p->close_sent || p->uhdr_got < PSI_LEN || p->uq_len == 0)
		return 0;
	uint64_t full = p->udata_got / PAGE;
	if (full <= p->udata_done)
		return 0;
	const up_req *q = &p->uq[p->uq_head];
	uint64_t from = p->udata_done;
	p->udata_done = full;
	return deliver(p, q->pid, q->g + from, full - from, p->rbuf + from * PAGE);
}

static int up_done(fm_prefetch *p)
{
	up_req q = p->uq[p->uq_head];
	uint64_t nr = p->udata_len / PAGE;
	p->uq_head = (p->uq_head + 1) % UP_QUEUE;
	p->uq_len--;
	p->uhdr_got = 0;
	memset(p->state + q.g + nr, PG_WANT, q.nr - nr);   /* the rest: asked again later */
	p->want += q.nr - nr;
	p->asked -= q.nr;
	pthread_mutex_lock(&p->mu);
	p->st.fetched_bytes += nr * PAGE;
	if (p->want == 0 && p->asked == 0 && p->st.all_here_ms == 0) {
		uint64_t one = 1;
		p->st.all_here_ms = (double)(fm_now_mono_us() - p->t0_us) / 1000.0;
		p->st.link_bps = (double)p->st.fetched_bytes * 8e3 / (p->st.all_here_ms > 0 ? p->st.all_here_ms : 1);
		(void)!write(p->here_fd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&p->mu);
	uint64_t from = p->udata_done;   /* <= nr: up_partial copies whole pages read */
	return deliver(p, q.pid, q.g + from, nr - from, p->rbuf + from * PAGE);
}

/* Reads what the source sent without waiting for more. */
static int up_read(fm_prefetch *p)
{
	for (;;) {
		ssize_t k;
		if (p->close_sent) {
			k = recv(p->up_fd, p->status + p->status_got, sizeof(p->status) - p->status_got, MSG_DONTWAIT);
		} else if (p->uhdr_got < PSI_LEN) {
			k = recv(p->up_fd, p->uhdr + p->uhdr_got, PSI_LEN - p->uhdr_got, MSG_DONTWAIT);
		} else {
			k = recv(p->up_fd, p->rbuf + p->udata_got, (size_t)(p->udata_len - p->udata_got), MSG_DONTWAIT);
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (k < 0) {
			char msg[128];
			snprintf(msg, sizeof(msg), "the page stream from the source broke: %s", strerror(errno));
			return up_lost(p, -errno, msg);
		}
		if (k == 0)
			return up_lost(p, -ECONNRESET, "the source's page stream ended before the transfer did");
		fm_prefetch_pace_arrived(&p->pace, (uint64_t)k, fm_now_mono_us());
		if (p->close_sent) {
			p->status_got += (size_t)k;
			if (p->status_got == sizeof(p->status)) {
				uint32_t st = fm_get_le32(p->status);
				p->done = true;
				return st == 0 ? 0 : fail(p, -EIO, "page prefetcher: the source's page server ended with "
							  "status %u", st);
			}
		} else if (p->uhdr_got < PSI_LEN) {
			p->uhdr_got += (size_t)k;
			int r = p->uhdr_got == PSI_LEN ? up_header(p) : 0;
			if (r < 0)
				return r;
		} else {
			p->udata_got += (uint64_t)k;
			int r = p->udata_got == p->udata_len ? up_done(p) : up_partial(p);
			if (r < 0)
				return r;
		}
	}
}

static void *prefetch_thread(void *opaque)
{
	fm_prefetch *p = opaque;
	struct pollfd *fds = NULL;
	size_t cap = 0;

	while (!p->done) {
		if ((p->retry && redeliver(p) < 0) || pump(p) < 0 || maybe_close(p) < 0)
			break;
		size_t n = 3 + p->ntasks;
		if (n > cap) {
			cap = n * 2;
			struct pollfd *v = realloc(fds, cap * sizeof(*fds));
			if (!v) {
				fail(p, -ENOMEM, "page prefetcher: out of memory");
				break;
			}
			fds = v;
		}
		fds[0] = (struct pollfd){ p->ctl_rd, POLLIN, 0 };
		fds[1] = (struct pollfd){ p->up_fd, POLLIN, 0 };
		fds[2] = (struct pollfd){ p->rs_fd >= 0 ? (p->restore_gone ? -1 : p->rs_fd) : p->listen_fd, POLLIN, 0 };
		for (size_t i = 0; i < p->ntasks; i++)
			fds[3 + i] = (struct pollfd){ p->tasks[i].fd, POLLIN, 0 };
		/* a copy that met pending events is tried again soon, whatever else happens */
		if (poll(fds, (nfds_t)n, p->retry ? 1 : -1) < 0) {
			if (errno == EINTR)
				continue;
			fail(p, -errno, "page prefetcher: poll: %m");
			break;
		}
		if (fds[0].revents) {
			char cmd = 'x';
			if (read(p->ctl_rd, &cmd, 1) == 1 && (cmd == 'g' || cmd == 'p')) {
				/* released once (all_here_ms counts from then); a
				 * 'g' after a 'p': the processes run now */
				if (p->held)
					p->t0_us = fm_now_mono_us();
				p->held = false;
				p->paused = cmd == 'p';
				/* requests of up to 4 MiB (fewer requests and answer
				 * headers on the wire: ~60 B each), as the buffer allows */
				if (p->paused && p->rbuf_pages < RBUF_PAGES &&
				    madvise(p->rbuf + p->rbuf_pages * PAGE, (RBUF_PAGES - p->rbuf_pages) * PAGE,
					    MADV_POPULATE_WRITE) == 0)
					p->rbuf_pages = RBUF_PAGES;
				continue;
			}
			break;
		}
		int r = 0;
		/* the tasks' events first: a fault waits for them, and so does a copy */
		for (size_t i = 0; i < n - 3 && r == 0; i++)
			if (fds[3 + i].revents)
				r = uffd_read(p, i);
		/* a fault just read may wait for bytes already here */
		if (r == 0)
			r = up_partial(p);
		if (r == 0 && fds[2].revents && p->rs_fd < 0) {
			p->rs_fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
			if (p->rs_fd < 0)
				r = fail(p, -errno, "page prefetcher: accepting the restore's connection: %m");
		} else if (r == 0 && fds[2].revents) {
			r = rs_read(p);
		}
		if (r == 0 && fds[1].revents)
			r = up_read(p);
		if (r < 0)
			break;
	}
	free(fds);
	/* a broken side must break the other: the source's dump learns the
	 * transfer failed; the restore (if it still runs) fails */
	(void)shutdown(p->up_fd, SHUT_RDWR);
	if (p->rs_fd >= 0)
		(void)shutdown(p->rs_fd, SHUT_RDWR);
	/* closing the userfaultfds ends their registrations: every page is
	 * there.  After a failure they stay open until fm_prefetch_free (the
	 * processes wait in their faults; the copy is destroyed before that):
	 * closed, a missing page would read as zeroes. */
	for (size_t i = 0; i < p->ntasks && p->done; i++)
		if (p->tasks[i].fd >= 0) {
			close(p->tasks[i].fd);
			p->tasks[i].fd = -1;
		}
	if (!p->done)
		fail(p, -ECANCELED, "page prefetcher: stopped");
	uint64_t one = 1;
	(void)!write(p->here_fd, &one, sizeof(one));
	(void)!write(p->done_fd, &one, sizeof(one));
	return NULL;
}

int fm_prefetch_start(const char *images_dir, const char *restore_work, const char *up_host, int up_port,
		      int io_timeout_ms, fm_prefetch **out, fm_error *err)
{
	fm_lazy_range *v = NULL;
	size_t nv = 0;
	int r = fm_pagemap_lazy_ranges(images_dir, &v, &nv, err);
	if (r < 0)
		return r;
	fm_prefetch *p = fm_xcalloc(1, sizeof(*p));
	p->up_fd = p->ctl_rd = p->ctl_wr = p->done_fd = p->here_fd = p->fail_fd = p->listen_fd = p->rs_fd = -1;
	pthread_mutex_init(&p->mu, NULL);
	p->ranges = fm_xcalloc(nv ? nv : 1, sizeof(*p->ranges));
	p->nranges = nv;
	for (size_t i = 0; i < nv; i++) {
		p->ranges[i] = (pf_range){ v[i].pid, v[i].vaddr, v[i].nr_pages, p->total };
		p->total += v[i].nr_pages;
	}
	free(v);
	p->want = p->total;
	fm_prefetch_pace_init(&p->pace);
	p->window = FM_PREFETCH_WINDOW_MIN;
	p->st.lazy_bytes = p->total * PAGE;
	p->state = fm_xcalloc(p->total ? p->total : 1, 1);
	p->uq = fm_xcalloc(UP_QUEUE, sizeof(*p->uq));
	/* faulted in now, once: pages read into memory never touched before fault
	 * it in page by page (the cache did: ~28,000 faults a second at 1 Gbit/s,
	 * 14 us each on our VMs, ~0.4 s of CPU per second of transfer) */
	p->rbuf = mmap(NULL, RBUF_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p->rbuf == MAP_FAILED) {
		p->rbuf = NULL;
		r = fm_error_set(err, -errno, "page prefetcher: cannot map its receive buffer: %m");
		goto fail;
	}
	p->rbuf_pages = FM_PREFETCH_CHUNK_PAGES;
	if (madvise(p->rbuf, p->rbuf_pages * PAGE, MADV_POPULATE_WRITE) < 0)
		memset(p->rbuf, 0, p->rbuf_pages * PAGE);
	if (p->total) {
		p->cache = mmap(NULL, p->total * PAGE, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p->cache == MAP_FAILED) {
			p->cache = NULL;
			r = fm_error_set(err, -errno, "page prefetcher: cannot map a cache of %llu pages: %m",
					 (unsigned long long)p->total);
			goto fail;
		}
	}
	int sp[2];
	if (pipe2(sp, O_CLOEXEC) < 0) {
		r = fm_error_set(err, -errno, "pipe: %m");
		goto fail;
	}
	p->ctl_rd = sp[0];
	p->ctl_wr = sp[1];
	if ((p->done_fd = eventfd(0, EFD_CLOEXEC)) < 0 || (p->here_fd = eventfd(p->total ? 0 : 1, EFD_CLOEXEC)) < 0 ||
	    (p->fail_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
		r = fm_error_set(err, -errno, "eventfd: %m");
		goto fail;
	}
	if ((r = p->listen_fd = fm_lazy_socket_listen(restore_work, err)) < 0) {
		fm_error_prefix(err, "page prefetcher");
		goto fail;
	}
	if ((r = fm_xfer_connect(up_host, up_port, io_timeout_ms, err)) < 0) {
		fm_error_prefix(err, "page prefetcher");
		goto fail;
	}
	p->up_fd = r;
	int fl = fcntl(p->up_fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(p->up_fd, F_SETFL, fl & ~O_NONBLOCK);
	int one = 1;
	(void)setsockopt(p->up_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	p->t0_us = fm_now_mono_us();
	p->held = true;

	if (pthread_create(&p->thread, NULL, prefetch_thread, p) != 0) {
		r = fm_error_set(err, -EAGAIN, "cannot start the page prefetcher");
		goto fail;
	}
	p->started = true;
	fm_debug(FM_C_DELTA_TRANSFER, "page prefetcher: %zu lazy ranges, %llu pages", p->nranges,
		 (unsigned long long)p->total);
	*out = p;
	return 0;
fail:
	fm_prefetch_free(p);
	return r;
}

void fm_prefetch_release(fm_prefetch *p)
{
	if (p && p->started)
		(void)!write(p->ctl_wr, "g", 1);
}

void fm_prefetch_release_paused(fm_prefetch *p)
{
	if (p && p->started)
		(void)!write(p->ctl_wr, "p", 1);
}

int fm_prefetch_done_fd(const fm_prefetch *p) { return p->done_fd; }
int fm_prefetch_here_fd(const fm_prefetch *p) { return p->here_fd; }
int fm_prefetch_fail_fd(const fm_prefetch *p) { return p->fail_fd; }

int fm_prefetch_failed(fm_prefetch *p, fm_error *err)
{
	pthread_mutex_lock(&p->mu);
	int r = p->status_code;
	if (r < 0 && err)
		fm_error_set(err, r, "%s", p->err.msg);
	pthread_mutex_unlock(&p->mu);
	return r;
}

void fm_prefetch_get_stats(fm_prefetch *p, fm_prefetch_stats *st)
{
	pthread_mutex_lock(&p->mu);
	*st = p->st;
	pthread_mutex_unlock(&p->mu);
}

void fm_prefetch_free(fm_prefetch *p)
{
	if (!p)
		return;
	if (p->started) {
		(void)!write(p->ctl_wr, "x", 1);
		pthread_join(p->thread, NULL);
	}
	int *fds[] = { &p->up_fd, &p->ctl_rd, &p->ctl_wr, &p->done_fd, &p->here_fd, &p->fail_fd, &p->listen_fd, &p->rs_fd };
	for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
		if (*fds[i] >= 0)
			close(*fds[i]);
	for (size_t i = 0; i < p->rs_nfds; i++)
		close(p->rs_fds[i]);
	for (size_t i = 0; i < p->ntasks; i++) {
		if (p->tasks[i].fd >= 0)
			close(p->tasks[i].fd);
		free(p->tasks[i].need);
		free(p->tasks[i].segs);
	}
	free(p->tasks);
	if (p->cache)
		munmap(p->cache, p->total * PAGE);
	if (p->rbuf)
		munmap(p->rbuf, RBUF_PAGES * PAGE);
	free(p->state);
	free(p->uq);
	free(p->ranges);
	fm_error_clear(&p->err);
	pthread_mutex_destroy(&p->mu);
	free(p);
}
