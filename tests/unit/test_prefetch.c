/* Post-copy page prefetcher: pagemap images written here byte by byte as CRIU
 * writes them, and a fake CRIU page server (fake_server: answers PS_IOV_GET
 * from a pattern, stops at its own page-pipe boundaries like CRIU, and dies on a
 * request for a page it lacks, like CRIU) in front of which the test plays
 * criu lazy-pages. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "basic/util.h"
#include "sync/prefetch.h"

#define PAGE 4096u
#define PIPE_PAGES 24   /* the fake server's page-pipe buffers: replies stop at multiples of this */

/* ---- pagemap images ---- */

typedef struct img { uint8_t b[4096]; size_t n; } img;

static void varint(img *m, uint64_t v)
{
	do {
		m->b[m->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
}

static void entry(img *m, uint64_t vaddr, uint64_t nr, uint32_t flags, bool new_nr)
{
	img e = { .n = 0 };
	varint(&e, 1 << 3), varint(&e, vaddr);
	varint(&e, 2 << 3), varint(&e, new_nr ? 0 : nr);
	varint(&e, 4 << 3), varint(&e, flags);
	if (new_nr)
		varint(&e, 5 << 3), varint(&e, nr);
	varint(&e, (9 << 3) | 2), varint(&e, 3), memcpy(e.b + e.n, "xyz", 3), e.n += 3;  /* unknown field: skipped */
	fm_put_le32(m->b + m->n, (uint32_t)e.n);
	memcpy(m->b + m->n + 4, e.b, e.n);
	m->n += 4 + e.n;
}

static void write_img(const char *dir, const char *name, const img *m)
{
	char *p = fm_xasprintf("%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(m->b, 1, m->n, f), m->n);
	fclose(f);
	free(p);
}

static img pagemap_start(void)
{
	img m = { .n = 0 };
	fm_put_le32(m.b, 0x54564319u);
	fm_put_le32(m.b + 4, 0x56084025u);
	m.n = 8;
	img h = { .n = 0 };
	varint(&h, 1 << 3), varint(&h, 1);   /* pagemap_head { pages_id = 1 } */
	fm_put_le32(m.b + m.n, (uint32_t)h.n);
	memcpy(m.b + m.n + 4, h.b, h.n);
	m.n += 4 + h.n;
	return m;
}

/* pid 1: lazy 0x10000 x 100 pages, present-only 0x200000 x 5, lazy 0x400000 x 30 (new nr field);
 * pid 7: lazy 0x7f0000 x 50. */
static char *make_images(void)
{
	char *dir = fm_xstrdup("/tmp/fm-test-prefetch-XXXXXX");
	assert_non_null(mkdtemp(dir));
	img a = pagemap_start();
	entry(&a, 0x10000, 100, 2, false);
	entry(&a, 0x200000, 5, 4, false);
	entry(&a, 0x400000, 30, 2, true);
	write_img(dir, "pagemap-1.img", &a);
	img b = pagemap_start();
	entry(&b, 0x7f0000, 50, 2 | 1, false);
	write_img(dir, "pagemap-7.img", &b);
	img junk = { .n = 5 };
	memcpy(junk.b, "junk!", 5);
	write_img(dir, "pagemap-shmem-3.img", &junk);   /* not a process pagemap: ignored */
	write_img(dir, "pages-1.img", &junk);
	return dir;
}

static void rm_images(char *dir)
{
	fm_rm_rf(dir);
	free(dir);
}

static void test_pagemap_lists_lazy_ranges(void **state)
{
	(void)state;
	char *dir = make_images();
	fm_lazy_range *v = NULL;
	size_t n = 0;
	fm_error err = FM_ERROR_INIT;
	assert_int_equal(fm_pagemap_lazy_ranges(dir, &v, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_int_equal(v[0].pid, 1);
	assert_int_equal(v[0].vaddr, 0x10000);
	assert_int_equal(v[0].nr_pages, 100);
	assert_int_equal(v[1].vaddr, 0x400000);
	assert_int_equal(v[1].nr_pages, 30);
	assert_int_equal(v[2].pid, 7);
	assert_int_equal(v[2].nr_pages, 50);
	free(v);
	rm_images(dir);
}

static void test_pagemap_rejects_garbage(void **state)
{
	(void)state;
	const char *why[] = { "truncated", "magic", "overrun", "unaligned", "overlap" };
	for (size_t i = 0; i < sizeof(why) / sizeof(why[0]); i++) {
		char *dir = fm_xstrdup("/tmp/fm-test-prefetch-XXXXXX");
		assert_non_null(mkdtemp(dir));
		img m = pagemap_start();
		entry(&m, 0x10000, 4, 2, false);
		if (!strcmp(why[i], "truncated"))
			m.n -= 2;
		else if (!strcmp(why[i], "magic"))
			fm_put_le32(m.b + 4, 0x12345678);
		else if (!strcmp(why[i], "overrun"))
			fm_put_le32(m.b + m.n, 4000), m.n += 6;
		else if (!strcmp(why[i], "unaligned"))
			entry(&m, 0x20001, 1, 2, false);
		else
			entry(&m, 0x12000, 4, 2, false);
		write_img(dir, "pagemap-1.img", &m);
		fm_lazy_range *v = NULL;
		size_t n = 0;
		fm_error err = FM_ERROR_INIT;
		assert_true(fm_pagemap_lazy_ranges(dir, &v, &n, &err) < 0);
		assert_non_null(strstr(err.msg, "pagemap"));
		fm_error_clear(&err);
		rm_images(dir);
	}
}

/* ---- the fake page server ---- */

typedef struct fake_server {
	int lfd, port;
	pthread_t th;
	int die_after;           /* answer this many requests, then hang up (0 = never) */
	int requests, bad_requests, closed;
	uint64_t pages_sent;
} fake_server;

static uint8_t pattern(uint64_t pid, uint64_t vaddr, size_t i) { return (uint8_t)(pid * 31 + vaddr / PAGE * 7 + i); }

/* The pages this server holds: the lazy ranges of make_images, and pid 99's
 * 0x1000 x 8 that no pagemap lists (a pass-through). */
static uint64_t holds(uint64_t pid, uint64_t vaddr)
{
	static const uint64_t r[][3] = { { 1, 0x10000, 100 }, { 1, 0x400000, 30 }, { 7, 0x7f0000, 50 }, { 99, 0x1000, 8 } };
	for (size_t i = 0; i < 4; i++)
		if (r[i][0] == pid && vaddr >= r[i][1] && vaddr < r[i][1] + r[i][2] * PAGE)
			return r[i][1] + r[i][2] * PAGE - vaddr;  /* bytes to the range's end */
	return 0;
}

static void *fake_thread(void *opaque)
{
	fake_server *f = opaque;
	int fd = accept(f->lfd, NULL, NULL);
	uint8_t h[32];
	static uint8_t data[1024 * PAGE];
	while (fd >= 0 && recv(fd, h, 32, MSG_WAITALL) == 32) {
		uint32_t cmd = h[0] | h[1] << 8;
		if (cmd == 0x1023) {
			uint8_t st[4] = { 0 };
			send(fd, st, 4, MSG_NOSIGNAL);
			f->closed = 1;
			break;
		}
		uint64_t nr = fm_get_le64(h + 8), vaddr = fm_get_le64(h + 16), pid = fm_get_le64(h + 24);
		uint64_t left = holds(pid, vaddr), to_pipe_end = (PIPE_PAGES - (vaddr / PAGE) % PIPE_PAGES) * PAGE;
		if (cmd != 7 || !left || nr == 0 || nr > 1024) {
			f->bad_requests++;   /* CRIU: "no iovs found", and the server is gone */
			break;
		}
		if (f->die_after && ++f->requests > f->die_after)
			break;
		uint64_t bytes = nr * PAGE;
		bytes = bytes < left ? bytes : left;
		bytes = bytes < to_pipe_end ? bytes : to_pipe_end;
		fm_put_le32(h, 6 | 4 << 16);
		fm_put_le64(h + 8, bytes / PAGE);
		for (uint64_t p = 0; p < bytes / PAGE; p++)
			for (size_t i = 0; i < PAGE; i += 512)
				data[p * PAGE + i] = pattern(pid, vaddr + p * PAGE, i);
		if (send(fd, h, 32, MSG_NOSIGNAL) != 32 || send(fd, data, bytes, MSG_NOSIGNAL) != (ssize_t)bytes)
			break;
		f->pages_sent += bytes / PAGE;
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void fake_start(fake_server *f, int die_after)
{
	memset(f, 0, sizeof(*f));
	f->die_after = die_after;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 4), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &len), 0);
	f->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&f->th, NULL, fake_thread, f), 0);
}

static void fake_stop(fake_server *f)
{
	shutdown(f->lfd, SHUT_RDWR);
	pthread_join(f->th, NULL);
	close(f->lfd);
}

/* ---- lazy-pages' side ---- */

static int lazy_connect(fm_prefetch *p)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				  .sin_port = htons((uint16_t)fm_prefetch_port(p)) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	struct timeval tv = { 10, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void ask(int fd, uint64_t pid, uint64_t vaddr, uint64_t nr)
{
	uint8_t h[32] = { 0 };
	fm_put_le32(h, 7);
	fm_put_le64(h + 8, nr);
	fm_put_le64(h + 16, vaddr);
	fm_put_le64(h + 24, pid);
	assert_int_equal(send(fd, h, 32, 0), 32);
}

/* Ends the conversation as lazy-pages does (PS_IOV_CLOSE), closes fd and
 * returns the 4-byte status the source sent back through the prefetcher. */
static uint32_t close_lazy(int fd)
{
	uint8_t h[32] = { 0 }, st[4] = { 1, 1, 1, 1 };
	fm_put_le32(h, 0x1023);
	assert_int_equal(send(fd, h, 32, 0), 32);
	assert_int_equal(recv(fd, st, 4, MSG_WAITALL), 4);
	close(fd);
	return fm_get_le32(st);
}

/* Reads one answer to (pid, vaddr, <= nr) and checks every page; returns its pages. */
static uint64_t answer(int fd, uint64_t pid, uint64_t vaddr, uint64_t nr)
{
	static uint8_t data[1024 * PAGE];
	uint8_t h[32];
	assert_int_equal(recv(fd, h, 32, MSG_WAITALL), 32);
	uint64_t got = fm_get_le64(h + 8);
	assert_int_equal(h[0], 6);
	assert_int_equal(fm_get_le64(h + 16), vaddr);
	assert_int_equal(fm_get_le64(h + 24), pid);
	assert_true(got >= 1 && got <= nr);
	assert_int_equal(recv(fd, data, got * PAGE, MSG_WAITALL), (ssize_t)(got * PAGE));
	for (uint64_t p = 0; p < got; p++)
		for (size_t i = 0; i < PAGE; i += 512)
			assert_int_equal(data[p * PAGE + i], pattern(pid, vaddr + p * PAGE, i));
	return got;
}

/* Takes a whole range, the way lazy-pages' background transfer does: ask, take
 * what came, ask for the rest. */
static void take_range(int fd, uint64_t pid, uint64_t vaddr, uint64_t nr, uint64_t chunk)
{
	while (nr > 0) {
		uint64_t want = nr < chunk ? nr : chunk;
		ask(fd, pid, vaddr, want);
		uint64_t got = answer(fd, pid, vaddr, want);
		vaddr += got * PAGE;
		nr -= got;
	}
}

/* Images, a fake source holding their pages, and a prefetcher in front of it
 * (held: its background order not yet released). */
static fm_prefetch *start_held(char **dir, fake_server *f, int die_after)
{
	fm_prefetch *p = NULL;
	fm_error err = FM_ERROR_INIT;
	*dir = make_images();
	fake_start(f, die_after);
	assert_int_equal(fm_prefetch_start(*dir, "127.0.0.1", f->port, 5000, &p, &err), 0);
	return p;
}

static fm_prefetch *start(char **dir, fake_server *f, int die_after)
{
	fm_prefetch *p = start_held(dir, f, die_after);
	fm_prefetch_release(p);
	return p;
}

/* The prefetcher failed, saying why; frees it (and the images, when given). */
static void stopped_by(fm_prefetch *p, char *dir, const char *why)
{
	fm_error err = FM_ERROR_INIT;
	assert_true(fm_prefetch_failed(p, &err) < 0);
	assert_non_null(strstr(err.msg, why));
	fm_error_clear(&err);
	fm_prefetch_free(p);
	if (dir)
		rm_images(dir);
}

static void test_prefetch_serves_every_page_once(void **state)
{
	(void)state;
	char *dir;
	fake_server f;
	fm_prefetch *p = start(&dir, &f, 0);
	int fd = lazy_connect(p);

	/* faults first, out of order, two of them pipelined; then a pass-through */
	ask(fd, 7, 0x7f0000 + 40 * PAGE, 1);
	ask(fd, 1, 0x10000 + 99 * PAGE, 1);
	assert_int_equal(answer(fd, 7, 0x7f0000 + 40 * PAGE, 1), 1);
	assert_int_equal(answer(fd, 1, 0x10000 + 99 * PAGE, 1), 1);
	ask(fd, 99, 0x1000, 8);
	assert_int_equal(answer(fd, 99, 0x1000, 8), 8);
	/* the background transfer, in pieces around what was already taken */
	take_range(fd, 1, 0x10000, 99, 16);
	take_range(fd, 1, 0x400000, 30, 64);
	take_range(fd, 7, 0x7f0000, 40, 1024);
	take_range(fd, 7, 0x7f0000 + 41 * PAGE, 9, 3);
	/* close: the status comes back from the source */
	assert_int_equal(close_lazy(fd), 0);
	fake_stop(&f);

	fm_prefetch_stats s;
	fm_prefetch_get_stats(p, &s);
	assert_int_equal(f.bad_requests, 0);
	assert_int_equal(f.closed, 1);
	assert_int_equal(s.lazy_bytes, 180 * PAGE);
	assert_int_equal(s.fetched_bytes, 180 * PAGE);       /* each lazy page crossed once */
	assert_int_equal(f.pages_sent, 180 + 8);            /* ... and the pass-through */
	assert_int_equal(s.served_bytes, (180 + 8) * PAGE);
	assert_int_equal(s.passthrough, 1);
	assert_true(s.all_here_ms > 0);
	assert_int_equal(fm_prefetch_failed(p, NULL), 0);
	fm_prefetch_free(p);
	rm_images(dir);
}

/* Until released (the restore is done) only lazy-pages' own requests cross. */
static void test_prefetch_holds_background_until_released(void **state)
{
	(void)state;
	char *dir;
	fake_server f;
	fm_prefetch *p = start_held(&dir, &f, 0);
	int fd = lazy_connect(p);
	fm_prefetch_stats s;

	ask(fd, 7, 0x7f0000 + 40 * PAGE, 1);
	assert_int_equal(answer(fd, 7, 0x7f0000 + 40 * PAGE, 1), 1);
	usleep(100 * 1000); /* room for background requests that must not come */
	fm_prefetch_get_stats(p, &s);
	/* the fault and its readahead (the window's least before anything was
	 * measured), not beyond the range's end */
	uint64_t ra = fm_prefetch_readahead_pages(FM_PREFETCH_WINDOW_MIN);
	assert_int_equal(s.fetched_bytes, (ra < 10 ? ra : 10) * PAGE);
	assert_true(s.all_here_ms == 0);
	fm_prefetch_release(p);
	take_range(fd, 1, 0x10000, 100, 100);
	take_range(fd, 1, 0x400000, 30, 64);
	take_range(fd, 7, 0x7f0000, 40, 1024);
	take_range(fd, 7, 0x7f0000 + 41 * PAGE, 9, 9);
	/* close, so that the prefetcher's counts are final */
	close_lazy(fd);
	fake_stop(&f);
	fm_prefetch_get_stats(p, &s);
	assert_int_equal(s.fetched_bytes, 180 * PAGE);
	assert_int_equal(s.served_bytes, 180 * PAGE);
	assert_int_equal(f.bad_requests, 0);
	fm_prefetch_free(p);
	rm_images(dir);
}

static void test_prefetch_source_gone_breaks_lazy_pages(void **state)
{
	(void)state;
	char *dir;
	fake_server f;
	fm_prefetch *p = start(&dir, &f, 2);
	/* the source dies after two answers, maybe before lazy-pages connects:
	 * then it is refused; if it got in, its requests end in a hang-up; never a
	 * wait for ever */
	int64_t t0 = fm_now_mono_ms();
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				  .sin_port = htons((uint16_t)fm_prefetch_port(p)) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = { 10, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		static uint8_t page[PAGE];
		for (uint64_t a = 0x400000; a < 0x400000 + 30 * PAGE; a += PAGE) {
			uint8_t h[32];
			ask(fd, 1, a, 1);
			if (recv(fd, h, 32, MSG_WAITALL) != 32)
				break;
			assert_int_equal(recv(fd, page, PAGE, MSG_WAITALL), PAGE);
		}
	}
	assert_true(fm_now_mono_ms() - t0 < 5000);
	close(fd);
	fake_stop(&f);
	stopped_by(p, dir, "source");
}

static void test_prefetch_refuses_garbage_from_lazy_pages(void **state)
{
	(void)state;
	char *dir;
	fake_server f;
	fm_prefetch *p = start(&dir, &f, 0);
	int fd = lazy_connect(p);
	uint8_t junk[32];
	memset(junk, 0xab, sizeof(junk));
	assert_int_equal(send(fd, junk, 32, 0), 32);
	uint8_t h[32];
	assert_true(recv(fd, h, 32, 0) <= 0);   /* hung up on */
	close(fd);
	stopped_by(p, NULL, "unexpected request");
	fake_stop(&f);
	assert_int_equal(f.bad_requests, 0);   /* the garbage never reached the source */
	rm_images(dir);
}

static bool near(double a, double b) { return a - b < 1 && b - a < 1; }

/* The window follows the arrival rate: FM_PREFETCH_QUEUE_MS of it, within its
 * bounds; periods are measured only while requests are out. */
static void test_prefetch_window_follows_the_rate(void **state)
{
	(void)state;
	fm_prefetch_pace pc;
	fm_prefetch_pace_init(&pc);
	assert_true(fm_prefetch_pace_rate(&pc) == 0);
	assert_int_equal(fm_prefetch_window(0), FM_PREFETCH_WINDOW_MIN);

	/* arrivals with nothing asked are not a measure */
	fm_prefetch_pace_arrived(&pc, 1 << 20, 1000000);
	assert_true(fm_prefetch_pace_rate(&pc) == 0);

	/* 20 Mbit/s: 2.5 MB/s, 50 KB per 20 ms period */
	int64_t t = 2000000;
	fm_prefetch_pace_busy(&pc, t);
	for (int i = 0; i < 10; i++) {
		t += 10000;
		fm_prefetch_pace_arrived(&pc, 25000, t);
	}
	assert_true(near(fm_prefetch_pace_rate(&pc), 2.5e6));
	uint64_t w = fm_prefetch_window(fm_prefetch_pace_rate(&pc));
	assert_int_equal(w, FM_PREFETCH_WINDOW_MIN);   /* 25 KB of queue is below the least */
	assert_int_equal(fm_prefetch_chunk_pages(w), FM_PREFETCH_WINDOW_MIN / 2 / PAGE);
	assert_int_equal(fm_prefetch_readahead_pages(w), FM_PREFETCH_WINDOW_MIN / 2 / PAGE);

	/* 100 Mbit/s: FM_PREFETCH_QUEUE_MS of it */
	assert_int_equal(fm_prefetch_window(12.5e6), (uint64_t)(12.5e6 * FM_PREFETCH_QUEUE_MS / 1000));
	/* 1 Gbit/s and more: the most, with full-size chunks and readahead */
	w = fm_prefetch_window(125e6);
	assert_int_equal(w, FM_PREFETCH_WINDOW);
	assert_int_equal(fm_prefetch_chunk_pages(w), FM_PREFETCH_CHUNK_PAGES);
	assert_int_equal(fm_prefetch_readahead_pages(w), FM_PREFETCH_READAHEAD_PAGES);
	assert_int_equal(fm_prefetch_window(1e12), FM_PREFETCH_WINDOW);
	assert_int_equal(fm_prefetch_chunk_pages(1), 1);

	/* idle: the period being measured is dropped; the rate is the largest of
	 * the last FM_PREFETCH_RATE_SAMPLES periods, so it falls only after that
	 * many slower ones */
	fm_prefetch_pace_idle(&pc);
	fm_prefetch_pace_arrived(&pc, 1 << 30, t + 1000);
	assert_true(near(fm_prefetch_pace_rate(&pc), 2.5e6));
	fm_prefetch_pace_busy(&pc, t);
	for (int i = 0; i < FM_PREFETCH_RATE_SAMPLES; i++) {
		t += FM_PREFETCH_RATE_SAMPLE_US;
		fm_prefetch_pace_arrived(&pc, 1000, t);
		if (i < FM_PREFETCH_RATE_SAMPLES - 1)
			assert_true(near(fm_prefetch_pace_rate(&pc), 2.5e6));
	}
	assert_true(near(fm_prefetch_pace_rate(&pc), 1000 * 1e6 / FM_PREFETCH_RATE_SAMPLE_US));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prefetch_window_follows_the_rate),
		cmocka_unit_test(test_pagemap_lists_lazy_ranges),
		cmocka_unit_test(test_pagemap_rejects_garbage),
		cmocka_unit_test(test_prefetch_serves_every_page_once),
		cmocka_unit_test(test_prefetch_holds_background_until_released),
		cmocka_unit_test(test_prefetch_source_gone_breaks_lazy_pages),
		cmocka_unit_test(test_prefetch_refuses_garbage_from_lazy_pages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
