/* Delta Transfer, post-copy page prefetcher (see prefetch.h).
 *
 * CRIU's page-server protocol (criu/page-xfer.c), as lazy-pages uses it: every
 * message starts with
 *
 *   struct page_server_iov { u32 cmd; u64 nr_pages; u64 vaddr; u64 dst_id; }  (32 bytes, host order)
 *
 * PS_IOV_GET asks for nr_pages from vaddr of process dst_id; the answer is the
 * same header with cmd PS_IOV_ADD_F | PE_PRESENT << 16 and nr_pages possibly
 * smaller (CRIU stops at the end of one of its page-pipe buffers), followed by
 * the pages.  Answers come in the order of the requests.  PS_IOV_CLOSE ends it:
 * the server answers with a 4-byte status.
 *
 * One thread, one poll loop, three sockets: the upstream connection (read
 * without blocking: pages land straight in the cache), lazy-pages' connection
 * (requests read without blocking, answers written whole) and a control pipe
 * (release, stop).
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
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "basic/log.h"
#include "basic/util.h"
#include "sync/transfer.h"

#define PAGE 4096ull
#define PSI_LEN 32
#define PS_IOV_ADD_F 6
#define PS_IOV_GET 7
#define PS_IOV_CLOSE 0x1023
#define PS_IOV_FORCE_CLOSE 0x1024
#define PS_CMD_MASK 0xffffu
#define PE_LAZY (1u << 1)
#define PE_PRESENT (1u << 2)
#define IMG_COMMON_MAGIC 0x54564319u
#define PAGEMAP_MAGIC 0x56084025u
#define PAGEMAP_FILE_MAX (256u << 20)
/* lazy-pages asks for 4 MiB at most; a bigger request is not from CRIU */
#define CLIENT_REQ_MAX_PAGES 65536
#define CLIENT_QUEUE 1024
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

enum { PG_WANT = 0, PG_ASKED, PG_HERE, PG_GONE };

typedef struct pf_range {
	uint64_t pid, vaddr, nr;
	uint64_t first;          /* its first page's index in state[] and the cache */
} pf_range;

typedef struct up_req {          /* sent to the source, answered in this order */
	uint64_t pid, vaddr, nr;
	uint64_t g;              /* first page's index; UINT64_MAX = passed through for lazy-pages */
} up_req;

typedef struct cl_req {          /* from lazy-pages, answered in this order */
	uint64_t pid, vaddr, nr;
	int64_t since_us;
	bool asked, missed;
} cl_req;

struct fm_prefetch {
	pf_range *ranges;
	size_t nranges;
	uint64_t total;          /* lazy pages */
	uint8_t *state;
	uint8_t *cache;          /* total pages, mapped without reserve: only what is here uses memory */
	uint64_t want, asked, here;
	uint64_t cursor;         /* where the background order goes on */
	fm_prefetch_pace pace;
	uint64_t window;         /* bytes; follows pace (fm_prefetch_window) */

	fm_xfer_listener *l;
	int up_fd, cl_fd, ctl_rd, ctl_wr; /* control pipe: 'g' releases the background order, 'x' stops */
	pthread_t thread;
	bool started;
	bool held;               /* background requests wait for fm_prefetch_release */
	int64_t t0_us;

	up_req *uq;
	size_t uq_head, uq_len;
	cl_req cq[CLIENT_QUEUE];
	size_t cq_head, cq_len;

	/* the answer being read from upstream */
	uint8_t uhdr[PSI_LEN];
	size_t uhdr_got;
	uint64_t udata_len, udata_got;
	uint8_t pass_buf[65536];

	/* lazy-pages' request being read, and the end of the conversation */
	uint8_t chdr[PSI_LEN];
	size_t chdr_got;
	bool close_pending, close_sent, done;
	uint8_t close_hdr[PSI_LEN];
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
		p->status_code = code;
		fm_error_setv(&p->err, code, fmt, ap);
	}
	pthread_mutex_unlock(&p->mu);
	va_end(ap);
	return code;
}

static int send_all(int fd, const struct iovec *iov0, int n)
{
	struct iovec iov[2];
	memcpy(iov, iov0, (size_t)n * sizeof(*iov));
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };
	while (m.msg_iovlen > 0) {
		ssize_t k = sendmsg(fd, &m, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		while (k > 0 && m.msg_iovlen > 0) {
			size_t t = (size_t)k < m.msg_iov->iov_len ? (size_t)k : m.msg_iov->iov_len;
			m.msg_iov->iov_base = (uint8_t *)m.msg_iov->iov_base + t;
			m.msg_iov->iov_len -= t;
			k -= (ssize_t)t;
			if (m.msg_iov->iov_len == 0) {
				m.msg_iov++;
				m.msg_iovlen--;
			}
		}
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

/* The range holding pid's page at vaddr, or -1. */
static long find_range(const fm_prefetch *p, uint64_t pid, uint64_t vaddr)
{
	size_t lo = 0, hi = p->nranges;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const pf_range *r = &p->ranges[mid];
		if (r->pid < pid || (r->pid == pid && r->vaddr + r->nr * PAGE <= vaddr))
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < p->nranges && p->ranges[lo].pid == pid && p->ranges[lo].vaddr <= vaddr)
		return (long)lo;
	return -1;
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

static int up_send(fm_prefetch *p, uint64_t pid, uint64_t vaddr, uint64_t nr, uint64_t g)
{
	if (p->uq_len == UP_QUEUE)
		return fail(p, -EOVERFLOW, "page prefetcher: too many requests in flight");
	uint8_t h[PSI_LEN];
	psi(h, PS_IOV_GET, nr, vaddr, pid);
	struct iovec iov = { h, PSI_LEN };
	int r = send_all(p->up_fd, &iov, 1);
	if (r < 0)
		return fail(p, r, "page prefetcher: cannot ask the source for pages: %s", strerror(-r));
	if (p->pace.since_us < 0)
		fm_prefetch_pace_busy(&p->pace, fm_now_mono_us());
	p->uq[(p->uq_head + p->uq_len++) % UP_QUEUE] = (up_req){ pid, vaddr, nr, g };
	if (g != UINT64_MAX) {
		for (uint64_t i = g; i < g + nr; i++) {
			if (p->state[i] == PG_WANT)
				p->want--;
			p->state[i] = PG_ASKED;
		}
		p->asked += nr;
	}
	return 0;
}

/* Sets the window from the arrival rate measured so far (its range goes to the
 * stats, which only this thread writes). */
static void window_update(fm_prefetch *p)
{
	p->window = fm_prefetch_window(fm_prefetch_pace_rate(&p->pace));
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
	uint64_t chunk = fm_prefetch_chunk_pages(p->window);
	while (!p->held && !p->close_pending && p->want > 0 && p->asked * PAGE < p->window &&
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

static void note_served(fm_prefetch *p, cl_req *c, uint64_t bytes)
{
	pthread_mutex_lock(&p->mu);
	p->st.served_bytes += bytes;
	if (c->missed) {
		double w = (double)(fm_now_mono_us() - c->since_us) / 1000.0;
		p->st.wait_sum_ms += w;
		if (w > p->st.wait_max_ms)
			p->st.wait_max_ms = w;
	} else {
		p->st.served_cached += bytes;
	}
	pthread_mutex_unlock(&p->mu);
}

/* Answers lazy-pages' requests in order, for as long as the pages are here. */
static int serve(fm_prefetch *p)
{
	while (p->cq_len > 0) {
		cl_req *c = &p->cq[p->cq_head];
		long ri = find_range(p, c->pid, c->vaddr);
		if (ri < 0) {
			/* not a lazy page we know: the source answers it, through us */
			if (!c->asked) {
				c->asked = c->missed = true;
				pthread_mutex_lock(&p->mu);
				p->st.passthrough++;
				p->st.misses++;
				pthread_mutex_unlock(&p->mu);
				return up_send(p, c->pid, c->vaddr, c->nr, UINT64_MAX);
			}
			return 0;
		}
		const pf_range *r = &p->ranges[ri];
		uint64_t g = r->first + (c->vaddr - r->vaddr) / PAGE, end = r->first + r->nr;
		uint64_t avail = c->nr < end - g ? c->nr : end - g, k = 0;
		while (k < avail && p->state[g + k] == PG_HERE)
			k++;
		if (k > 0) {
			uint8_t h[PSI_LEN];
			psi(h, PS_IOV_ADD_F | PE_PRESENT << 16, k, c->vaddr, c->pid);
			struct iovec iov[2] = { { h, PSI_LEN }, { p->cache + g * PAGE, k * PAGE } };
			int e = send_all(p->cl_fd, iov, 2);
			if (e < 0)
				return fail(p, e, "page prefetcher: cannot answer criu lazy-pages: %s", strerror(-e));
			memset(p->state + g, PG_GONE, k);
			p->here -= k;
			(void)madvise(p->cache + g * PAGE, k * PAGE, MADV_DONTNEED);
			note_served(p, c, k * PAGE);
			p->cq_head = (p->cq_head + 1) % CLIENT_QUEUE;
			p->cq_len--;
			continue;
		}
		if (!c->missed) {
			c->missed = true;
			pthread_mutex_lock(&p->mu);
			p->st.misses++;
			pthread_mutex_unlock(&p->mu);
		}
		if (p->state[g] == PG_ASKED)
			return 0;
		/* not asked for (or asked again): now, with a readahead of pages
		 * nobody has, and the background order continues right after it.
		 * A large request of lazy-pages' own asks for a chunk at a time
		 * (it is answered in parts), so that the faults behind it do not
		 * wait for all of it. */
		uint64_t n = 0, ra = fm_prefetch_readahead_pages(p->window);
		uint64_t most = avail > ra ? fm_prefetch_chunk_pages(p->window) : ra;
		while (n < avail && n < most && (p->state[g + n] == PG_WANT || p->state[g + n] == PG_GONE))
			n++;
		while (n < most && g + n < end && p->state[g + n] == PG_WANT)
			n++;
		p->cursor = g + n;
		return up_send(p, c->pid, c->vaddr, n, g);
	}
	return 0;
}

/* lazy-pages has asked to close and everything asked is answered: pass the
 * close on (the source's dump finishes when it gets it). */
static int maybe_close(fm_prefetch *p)
{
	if (!p->close_pending || p->close_sent || p->cq_len > 0 || p->uq_len > 0)
		return 0;
	struct iovec iov = { p->close_hdr, PSI_LEN };
	int r = send_all(p->up_fd, &iov, 1);
	if (r < 0)
		return fail(p, r, "page prefetcher: cannot close the page transfer: %s", strerror(-r));
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
	if (q->g == UINT64_MAX) {
		struct iovec iov = { p->uhdr, PSI_LEN };
		int r = send_all(p->cl_fd, &iov, 1);
		if (r < 0)
			return fail(p, r, "page prefetcher: cannot answer criu lazy-pages: %s", strerror(-r));
	}
	return 0;
}

static int up_done(fm_prefetch *p)
{
	up_req *q = &p->uq[p->uq_head];
	uint64_t nr = p->udata_len / PAGE;
	if (q->g == UINT64_MAX) {
		cl_req *c = &p->cq[p->cq_head];
		note_served(p, c, p->udata_len);
		p->cq_head = (p->cq_head + 1) % CLIENT_QUEUE;
		p->cq_len--;
	} else {
		memset(p->state + q->g, PG_HERE, nr);
		memset(p->state + q->g + nr, PG_WANT, q->nr - nr);   /* the rest: asked again later */
		p->here += nr;
		p->want += q->nr - nr;
		p->asked -= q->nr;
		pthread_mutex_lock(&p->mu);
		p->st.fetched_bytes += nr * PAGE;
		if (p->want == 0 && p->asked == 0 && p->st.all_here_ms == 0) {
			p->st.all_here_ms = (double)(fm_now_mono_us() - p->t0_us) / 1000.0;
			p->st.link_bps = (double)p->st.fetched_bytes * 8e3 / (p->st.all_here_ms > 0 ? p->st.all_here_ms : 1);
		}
		pthread_mutex_unlock(&p->mu);
	}
	p->uq_head = (p->uq_head + 1) % UP_QUEUE;
	p->uq_len--;
	p->uhdr_got = 0;
	return 0;
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
			up_req *q = &p->uq[p->uq_head];
			size_t want = (size_t)(p->udata_len - p->udata_got);
			if (q->g == UINT64_MAX && want > sizeof(p->pass_buf))
				want = sizeof(p->pass_buf);
			uint8_t *dst = q->g == UINT64_MAX ? p->pass_buf : p->cache + q->g * PAGE + p->udata_got;
			k = recv(p->up_fd, dst, want, MSG_DONTWAIT);
			if (k > 0 && q->g == UINT64_MAX) {
				struct iovec iov = { p->pass_buf, (size_t)k };
				int r = send_all(p->cl_fd, &iov, 1);
				if (r < 0)
					return fail(p, r, "page prefetcher: cannot answer criu lazy-pages: %s", strerror(-r));
			}
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (k < 0)
			return fail(p, -errno, "page prefetcher: the page stream from the source broke: %m");
		if (k == 0)
			return fail(p, -ECONNRESET, "page prefetcher: the source's page stream ended before the transfer did");
		fm_prefetch_pace_arrived(&p->pace, (uint64_t)k, fm_now_mono_us());
		if (p->close_sent) {
			p->status_got += (size_t)k;
			if (p->status_got == sizeof(p->status)) {
				struct iovec iov = { p->status, sizeof(p->status) };
				int r = send_all(p->cl_fd, &iov, 1);
				p->done = true;
				return r < 0 ? fail(p, r, "page prefetcher: cannot pass the close on: %s", strerror(-r)) : 0;
			}
		} else if (p->uhdr_got < PSI_LEN) {
			p->uhdr_got += (size_t)k;
			int r = p->uhdr_got == PSI_LEN ? up_header(p) : 0;
			if (r < 0)
				return r;
		} else {
			p->udata_got += (uint64_t)k;
			if (p->udata_got == p->udata_len)
				up_done(p);
		}
	}
}

/* Reads lazy-pages' requests without waiting for more. */
static int cl_read(fm_prefetch *p)
{
	for (;;) {
		ssize_t k = recv(p->cl_fd, p->chdr + p->chdr_got, PSI_LEN - p->chdr_got, MSG_DONTWAIT);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (k <= 0)
			return fail(p, k < 0 ? -errno : -ECONNRESET,
				    "page prefetcher: criu lazy-pages hung up before the transfer ended");
		if ((p->chdr_got += (size_t)k) < PSI_LEN)
			continue;
		p->chdr_got = 0;
		uint32_t cmd = fm_get_le32(p->chdr) & PS_CMD_MASK;
		if (p->close_pending)
			return fail(p, -EPROTO, "page prefetcher: criu lazy-pages sent %#x after closing", cmd);
		if (cmd == PS_IOV_CLOSE || cmd == PS_IOV_FORCE_CLOSE) {
			p->close_pending = true;
			memcpy(p->close_hdr, p->chdr, PSI_LEN);
			continue;
		}
		uint64_t nr = fm_get_le64(p->chdr + 8), vaddr = fm_get_le64(p->chdr + 16), pid = fm_get_le64(p->chdr + 24);
		if (cmd != PS_IOV_GET || nr == 0 || nr > CLIENT_REQ_MAX_PAGES || vaddr % PAGE)
			return fail(p, -EPROTO, "page prefetcher: unexpected request %#x (%llu pages at %#llx) from "
				    "criu lazy-pages", cmd, (unsigned long long)nr, (unsigned long long)vaddr);
		if (p->cq_len == CLIENT_QUEUE)
			return fail(p, -EOVERFLOW, "page prefetcher: criu lazy-pages has too many requests in flight");
		p->cq[(p->cq_head + p->cq_len++) % CLIENT_QUEUE] =
			(cl_req){ .pid = pid, .vaddr = vaddr, .nr = nr, .since_us = fm_now_mono_us() };
		pthread_mutex_lock(&p->mu);
		p->st.requests++;
		pthread_mutex_unlock(&p->mu);
	}
}

static void set_nodelay(int fd)
{
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void *prefetch_thread(void *opaque)
{
	fm_prefetch *p = opaque;
	int lfd = fm_xfer_listener_fd(p->l);

	while (!p->done) {
		if (pump(p) < 0 || serve(p) < 0 || maybe_close(p) < 0)
			break;
		struct pollfd fds[3] = { { p->ctl_rd, POLLIN, 0 }, { p->up_fd, POLLIN, 0 },
					 { p->cl_fd >= 0 ? p->cl_fd : lfd, POLLIN, 0 } };
		if (poll(fds, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			fail(p, -errno, "page prefetcher: poll: %m");
			break;
		}
		if (fds[0].revents) {
			char cmd = 'x';
			if (read(p->ctl_rd, &cmd, 1) == 1 && cmd == 'g') {
				p->held = false;
				p->t0_us = fm_now_mono_us();
				continue;
			}
			break;
		}
		if (fds[2].revents && p->cl_fd < 0) {
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0) {
				p->cl_fd = fd;
				set_nodelay(fd);
			}
			continue;
		}
		if (fds[1].revents && up_read(p) < 0)
			break;
		if (fds[2].revents && p->cl_fd >= 0 && !p->done && cl_read(p) < 0)
			break;
	}
	/* a broken side must break the other: lazy-pages fails instead of waiting,
	 * and if it has not connected yet, it is refused when it does */
	(void)shutdown(lfd, SHUT_RDWR);
	if (p->cl_fd >= 0)
		(void)shutdown(p->cl_fd, SHUT_RDWR);
	(void)shutdown(p->up_fd, SHUT_RDWR);
	return NULL;
}

int fm_prefetch_start(const char *images_dir, const char *up_host, int up_port, int io_timeout_ms,
		      fm_prefetch **out, fm_error *err)
{
	fm_lazy_range *v = NULL;
	size_t nv = 0;
	int r = fm_pagemap_lazy_ranges(images_dir, &v, &nv, err);
	if (r < 0)
		return r;
	fm_prefetch *p = fm_xcalloc(1, sizeof(*p));
	p->up_fd = p->cl_fd = p->ctl_rd = p->ctl_wr = -1;
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
	if ((r = fm_xfer_listen("127.0.0.1", 0, &p->l, err)) < 0)
		goto fail;
	if ((r = fm_xfer_connect(up_host, up_port, io_timeout_ms, err)) < 0) {
		fm_error_prefix(err, "page prefetcher");
		goto fail;
	}
	p->up_fd = r;
	int fl = fcntl(p->up_fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(p->up_fd, F_SETFL, fl & ~O_NONBLOCK);
	set_nodelay(p->up_fd);
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

int fm_prefetch_port(const fm_prefetch *p) { return fm_xfer_listener_port(p->l); }

void fm_prefetch_release(fm_prefetch *p)
{
	if (p && p->started)
		(void)!write(p->ctl_wr, "g", 1);
}

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
	if (p->cl_fd >= 0)
		close(p->cl_fd);
	if (p->up_fd >= 0)
		close(p->up_fd);
	if (p->ctl_rd >= 0)
		close(p->ctl_rd);
	if (p->ctl_wr >= 0)
		close(p->ctl_wr);
	fm_xfer_listener_free(p->l);
	if (p->cache)
		munmap(p->cache, p->total * PAGE);
	free(p->state);
	free(p->uq);
	free(p->ranges);
	fm_error_clear(&p->err);
	pthread_mutex_destroy(&p->mu);
	free(p);
}
