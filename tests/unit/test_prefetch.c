/* Post-copy page prefetcher and userfaultfd handler: pagemap images written
 * here byte by byte as CRIU writes them; a fake CRIU page server (fake_server:
 * answers PS_IOV_GET from a pattern, stops at its own page-pipe boundaries like
 * CRIU, and dies on a request for a page it lacks, like CRIU); and the test
 * plays CRIU's restore: it maps memory of its own, registers it with a real
 * userfaultfd (missing pages; fork, remap, remove and unmap events, as CRIU's
 * restorer does) and hands that to the prefetcher over lazy-pages.socket.  Its
 * reads then fault for real, and so do a forked child's. */
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
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
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

/* What the source holds: the lazy ranges of the test's images. */
static struct { uint64_t pid, vaddr, nr; } held_ranges[8];
static size_t n_held;

typedef struct fake_server {
	int lfd, port;
	pthread_t th;
	int die_after;           /* answer this many requests, then hang up (0 = never) */
	int requests, bad_requests, closed;
	uint64_t pages_sent;
	int split_go;            /* >= 0: the first answer's first page goes alone, the rest once this
				  * eventfd is written (or after 10 s) */
	int split;               /* 1 once it sent a first page alone */
	int rest_sent;           /* ... and then this is 1 */
} fake_server;

static uint8_t pattern(uint64_t pid, uint64_t vaddr, size_t i) { return (uint8_t)(pid * 31 + vaddr / PAGE * 7 + i + 1); }

static uint64_t holds(uint64_t pid, uint64_t vaddr)
{
	for (size_t i = 0; i < n_held; i++)
		if (held_ranges[i].pid == pid && vaddr >= held_ranges[i].vaddr &&
		    vaddr < held_ranges[i].vaddr + held_ranges[i].nr * PAGE)
			return held_ranges[i].vaddr + held_ranges[i].nr * PAGE - vaddr;  /* bytes to the range's end */
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
			f->closed = 1;   /* before the answer: the prefetcher ends on it */
			send(fd, st, 4, MSG_NOSIGNAL);
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
		uint64_t first = 0;
		if (__atomic_load_n(&f->split_go, __ATOMIC_ACQUIRE) >= 0 && !f->rest_sent && bytes > PAGE) {
			struct pollfd go = { f->split_go, POLLIN, 0 };
			if (send(fd, h, 32, MSG_NOSIGNAL) != 32 || send(fd, data, PAGE, MSG_NOSIGNAL) != PAGE)
				break;
			__atomic_store_n(&f->split, 1, __ATOMIC_RELEASE);
			(void)poll(&go, 1, 10000);
			__atomic_store_n(&f->rest_sent, 1, __ATOMIC_RELEASE);
			first = PAGE;
		} else if (send(fd, h, 32, MSG_NOSIGNAL) != 32) {
			break;
		}
		if (send(fd, data + first, bytes - first, MSG_NOSIGNAL) != (ssize_t)(bytes - first))
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
	f->split_go = -1;
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

/* ---- the restore's side ---- */

/* The restored process (the test itself, pid 1 in the images): MEM_PAGES of
 * memory registered with a userfaultfd.  Lazy: [0, 100), [105, 135) and
 * [135, 160) (two pagemap entries side by side); [100, 105) was never dumped
 * (a fault there gets zeroes). */
#define MEM_PAGES 160
typedef struct restored {
	uint8_t *mem;
	int uffd;
	char *dir;
	fake_server f;
	fm_prefetch *p;
} restored;

static uint8_t *pg(restored *r, size_t i) { return r->mem + i * PAGE; }

static void check_page(const uint8_t *at, uint64_t vaddr)
{
	for (size_t i = 0; i < PAGE; i += 512)
		assert_int_equal(at[i], pattern(1, vaddr, i));
}

static void check_pages(restored *r, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		check_page(pg(r, i), (uintptr_t)pg(r, i));
}

static void check_zero(restored *r, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		for (size_t k = 0; k < PAGE; k += 512)
			assert_int_equal(pg(r, i)[k], 0);
}

static void send_int(int sk, int32_t v)
{
	assert_int_equal(send(sk, &v, 4, MSG_NOSIGNAL), 4);
}

static void send_fd(int sk, int fd)
{
	char ctl[CMSG_SPACE(sizeof(int))] = { 0 };
	char byte = 0;
	struct iovec iov = { &byte, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	assert_int_equal(sendmsg(sk, &m, MSG_NOSIGNAL), 1);
}

static int restore_connect(restored *r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/lazy-pages.socket", r->dir);
	int sk = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(connect(sk, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return sk;
}

/* Maps and registers the memory, writes its images, starts the source and
 * the prefetcher (held) in front of it. */
static void restored_setup(restored *r, int die_after)
{
	memset(r, 0, sizeof(*r));
	r->mem = mmap(NULL, MEM_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(r->mem != MAP_FAILED);
	r->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (r->uffd < 0)
		fail_msg("userfaultfd: %s (run the unit tests as root, as make check does)", strerror(errno));
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
				  UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP };
	if (ioctl(r->uffd, UFFDIO_API, &api) < 0)
		fail_msg("UFFDIO_API with fork/remap/remove/unmap events: %s (needs root)", strerror(errno));
	struct uffdio_register reg = { .range = { (uintptr_t)r->mem, MEM_PAGES * PAGE }, .mode = UFFDIO_REGISTER_MODE_MISSING };
	assert_int_equal(ioctl(r->uffd, UFFDIO_REGISTER, &reg), 0);

	r->dir = fm_xstrdup("/tmp/fm-test-prefetch-XXXXXX");
	assert_non_null(mkdtemp(r->dir));
	img a = pagemap_start();
	entry(&a, (uintptr_t)pg(r, 0), 100, 2, false);
	entry(&a, (uintptr_t)pg(r, 105), 30, 2, true);
	entry(&a, (uintptr_t)pg(r, 135), 25, 2, false);
	write_img(r->dir, "pagemap-1.img", &a);
	n_held = 3;
	held_ranges[0].pid = held_ranges[1].pid = held_ranges[2].pid = 1;
	held_ranges[0].vaddr = (uintptr_t)pg(r, 0), held_ranges[0].nr = 100;
	held_ranges[1].vaddr = (uintptr_t)pg(r, 105), held_ranges[1].nr = 30;
	held_ranges[2].vaddr = (uintptr_t)pg(r, 135), held_ranges[2].nr = 25;

	fm_error err = FM_ERROR_INIT;
	fake_start(&r->f, die_after);
	if (fm_prefetch_start(r->dir, r->dir, "127.0.0.1", r->f.port, 5000, &r->p, &err) < 0)
		fail_msg("fm_prefetch_start: %s", err.msg);
}

/* What CRIU's restore sends: the pid, its userfaultfd, a zombie, the end;
 * then, as CRIU's restorer does, the process closes its own userfaultfd (the
 * handler's is the last: when it closes it, the registration ends). */
static void restore_sends_all(restored *r)
{
	int sk = restore_connect(r);
	send_int(sk, 1);
	send_fd(sk, r->uffd);
	send_int(sk, -3);
	send_int(sk, 0x52535446);
	close(sk);
	close(r->uffd);
	r->uffd = -1;
}

/* 0 once the prefetcher stopped (within 10 s), with its verdict in *why. */
static int wait_done(restored *r, fm_error *why)
{
	struct pollfd p = { fm_prefetch_done_fd(r->p), POLLIN, 0 };
	assert_int_equal(poll(&p, 1, 10000), 1);
	return fm_prefetch_failed(r->p, why);
}

static void restored_teardown(restored *r)
{
	fm_prefetch_free(r->p);
	fake_stop(&r->f);
	if (r->uffd >= 0)
		close(r->uffd);
	munmap(r->mem, MEM_PAGES * PAGE);
	fm_rm_rf(r->dir);
	free(r->dir);
}

static void test_prefetch_serves_faults_then_every_page(void **state)
{
	(void)state;
	restored r;
	fm_prefetch_stats s;
	restored_setup(&r, 0);
	restore_sends_all(&r);

	/* held (the restore runs): faults are served, nothing else moves */
	check_page(pg(&r, 40), (uintptr_t)pg(&r, 40));
	check_zero(&r, 102, 103);
	check_page(pg(&r, 110), (uintptr_t)pg(&r, 110));
	usleep(50 * 1000);
	fm_prefetch_get_stats(r.p, &s);
	uint64_t ra = fm_prefetch_readahead_pages(FM_PREFETCH_WINDOW_MIN);
	/* two faults and their readahead (the source may answer with less: its
	 * page pipe ends) */
	assert_in_range(s.fetched_bytes, 2 * PAGE, 2 * ra * PAGE);
	assert_int_equal(s.faults, 3);
	assert_int_equal(s.zero_pages, 1);
	assert_int_equal(s.misses, 2);
	assert_true(s.all_here_ms == 0);

	/* released: every page, each fetched once, then the transfer closes */
	fm_prefetch_release(r.p);
	assert_int_equal(wait_done(&r, NULL), 0);
	fm_prefetch_get_stats(r.p, &s);
	assert_int_equal(s.lazy_bytes, 155 * PAGE);
	assert_int_equal(s.fetched_bytes, 155 * PAGE);
	assert_int_equal(s.served_bytes, 155 * PAGE);
	assert_true(s.all_here_ms > 0);
	assert_int_equal(r.f.closed, 1);
	assert_int_equal(r.f.bad_requests, 0);
	assert_int_equal(r.f.pages_sent, 155);
	check_pages(&r, 0, 100);
	check_zero(&r, 100, 105);
	check_pages(&r, 105, MEM_PAGES);
	restored_teardown(&r);
}

/* The process moves, unmaps and drops memory while its pages are on their
 * way: moved pages land where they are now, dropped ones are not fetched. */
static void test_prefetch_follows_remap_unmap_and_remove(void **state)
{
	(void)state;
	restored r;
	fm_prefetch_stats s;
	restored_setup(&r, 0);
	restore_sends_all(&r);
	uint64_t old = (uintptr_t)pg(&r, 135);
	uint8_t *to = mmap(NULL, 10 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(to != MAP_FAILED);
	assert_ptr_equal(mremap(pg(&r, 135), 10 * PAGE, 10 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, to), to);
	assert_int_equal(munmap(pg(&r, 145), 5 * PAGE), 0);
	assert_int_equal(madvise(pg(&r, 150), 5 * PAGE, MADV_DONTNEED), 0);

	fm_prefetch_release(r.p);
	assert_int_equal(wait_done(&r, NULL), 0);
	fm_prefetch_get_stats(r.p, &s);
	assert_int_equal(s.fetched_bytes, 145 * PAGE);   /* 155 less 5 unmapped, 5 dropped */
	assert_int_equal(r.f.bad_requests, 0);
	for (size_t i = 0; i < 10; i++)
		check_page(to + i * PAGE, old + i * PAGE);
	check_zero(&r, 150, 155);                        /* dropped: zeroes, as the process asked */
	check_pages(&r, 155, MEM_PAGES);
	check_pages(&r, 0, 100);
	munmap(to, 10 * PAGE);
	assert_int_equal(mmap(pg(&r, 135), 15 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			      -1, 0), pg(&r, 135));   /* whole again for the teardown */
	restored_teardown(&r);
}

/* A child forked while pages are missing lacks them too: it gets them
 * through its own userfaultfd, even those its parent already had copied. */
static void test_prefetch_serves_a_forked_child(void **state)
{
	(void)state;
	restored r;
	restored_setup(&r, 0);
	restore_sends_all(&r);
	check_page(pg(&r, 0), (uintptr_t)pg(&r, 0));   /* the parent has page 0 (and its readahead) */
	pid_t c = fork();
	assert_true(c >= 0);
	if (c == 0) {
		/* the child: its faults go to the parent's prefetcher */
		bool ok = true;
		size_t want[] = { 0, 50, 99, 120, 159 };
		for (size_t k = 0; k < ARRAY_SIZE(want); k++)
			for (size_t i = 0; i < PAGE; i += 512)
				ok &= pg(&r, want[k])[i] == pattern(1, (uintptr_t)pg(&r, want[k]), i);
		_exit(ok ? 0 : 1);
	}
	int st = -1;
	for (int i = 0; i < 1000 && waitpid(c, &st, WNOHANG) == 0; i++)
		usleep(10 * 1000);
	if (!WIFEXITED(st)) {
		kill(c, SIGKILL);
		waitpid(c, &st, 0);
		fail_msg("the forked child's faults were not served");
	}
	assert_int_equal(WEXITSTATUS(st), 0);
	/* the child is gone: its copies fail (ESRCH) and the rest is the parent's */
	fm_prefetch_release(r.p);
	assert_int_equal(wait_done(&r, NULL), 0);
	check_pages(&r, 0, 100);
	check_pages(&r, 105, MEM_PAGES);
	restored_teardown(&r);
}

/* A fault waits for its own page, not for the whole answer it comes in: the
 * readahead behind it may still be on its way. */
static void test_prefetch_copies_a_faulting_page_before_its_answer_ends(void **state)
{
	(void)state;
	restored r;
	restored_setup(&r, 0);
	int go = eventfd(0, EFD_CLOEXEC);
	assert_true(go >= 0);
	__atomic_store_n(&r.f.split_go, go, __ATOMIC_RELEASE);
	restore_sends_all(&r);

	/* a page with at least its readahead before the fake's page-pipe end, so
	 * that its answer has more than it to hold back */
	size_t k = 40;
	while (((uintptr_t)pg(&r, k) / PAGE) % PIPE_PAGES + fm_prefetch_readahead_pages(FM_PREFETCH_WINDOW_MIN) >
	       PIPE_PAGES)
		k++;
	check_page(pg(&r, k), (uintptr_t)pg(&r, k));
	/* served while the source still held the rest of the answer back
	 * (without this, the fault would have waited the source's 10 s) */
	assert_int_equal(__atomic_load_n(&r.f.split, __ATOMIC_ACQUIRE), 1);
	assert_int_equal(__atomic_load_n(&r.f.rest_sent, __ATOMIC_ACQUIRE), 0);
	uint64_t one = 1;
	assert_int_equal(write(go, &one, sizeof(one)), sizeof(one));
	/* the readahead arrives and is copied as usual */
	check_page(pg(&r, k + 1), (uintptr_t)pg(&r, k + 1));

	fm_prefetch_release(r.p);
	assert_int_equal(wait_done(&r, NULL), 0);
	fm_prefetch_stats s;
	fm_prefetch_get_stats(r.p, &s);
	assert_int_equal(s.fetched_bytes, 155 * PAGE);
	assert_int_equal(s.served_bytes, 155 * PAGE);
	check_pages(&r, 0, 100);
	check_pages(&r, 105, MEM_PAGES);
	restored_teardown(&r);
	close(go);
}

/* COLD's held restore: released for processes that do not run yet, every
 * page arrives with the largest window and here_fd says so; nothing failed. */
static void test_prefetch_paused_release_brings_every_page_first(void **state)
{
	(void)state;
	restored r;
	fm_prefetch_stats s;
	restored_setup(&r, 0);
	/* as a restore does it: its processes' userfaultfds first, then the
	 * release (CRIU's pre-resume comes after every task sent its own) */
	restore_sends_all(&r);
	fm_prefetch_release_paused(r.p);
	struct pollfd ph = { fm_prefetch_here_fd(r.p), POLLIN, 0 };
	assert_int_equal(poll(&ph, 1, 10000), 1);
	fm_prefetch_get_stats(r.p, &s);
	assert_int_equal(s.fetched_bytes, 155 * PAGE);
	assert_true(s.all_here_ms > 0);
	assert_int_equal(s.window_max, 2 * FM_PREFETCH_PAUSED_CHUNK_PAGES * PAGE);
	assert_int_equal(s.faults, 0);
	struct pollfd pf = { fm_prefetch_fail_fd(r.p), POLLIN, 0 };
	assert_int_equal(poll(&pf, 1, 0), 0);
	/* the processes run: the transfer closes */
	fm_prefetch_release(r.p);
	assert_int_equal(wait_done(&r, NULL), 0);
	assert_int_equal(r.f.closed, 1);
	assert_int_equal(r.f.pages_sent, 155);
	check_pages(&r, 0, 100);
	check_pages(&r, 105, MEM_PAGES);
	restored_teardown(&r);
}

static void test_prefetch_source_gone_fails_it(void **state)
{
	(void)state;
	restored r;
	fm_error why = FM_ERROR_INIT;
	restored_setup(&r, 2);
	restore_sends_all(&r);
	fm_prefetch_release(r.p);
	/* (no page touched here: after a failure the faults wait, for good) */
	assert_true(wait_done(&r, &why) < 0);
	assert_non_null(strstr(why.msg, "source"));
	/* the failure is told on its own descriptor too (a held restore gives up) */
	struct pollfd pf = { fm_prefetch_fail_fd(r.p), POLLIN, 0 };
	assert_int_equal(poll(&pf, 1, 0), 1);
	fm_error_clear(&why);
	restored_teardown(&r);
}

static void test_prefetch_refuses_garbage_from_the_restore(void **state)
{
	(void)state;
	for (int k = 0; k < 3; k++) {
		restored r;
		fm_error why = FM_ERROR_INIT;
		restored_setup(&r, 0);
		int sk = restore_connect(&r);
		if (k == 0) {
			send_int(sk, 0);                 /* no such pid */
		} else if (k == 1) {
			send_int(sk, 1);
			send_int(sk, 7);                 /* the fd's byte, but no fd */
		} else {
			send_int(sk, 1);
			send_fd(sk, r.uffd);             /* and then it hangs up, unfinished */
			close(r.uffd);
			r.uffd = -1;
		}
		close(sk);
		assert_true(wait_done(&r, &why) < 0);
		const char *expect[] = { "for a pid", "without its userfaultfd", "hung up before it finished" };
		if (!strstr(why.msg, expect[k]))
			fail_msg("case %d: %s", k, why.msg);
		fm_error_clear(&why);
		restored_teardown(&r);
	}
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
	/* 1 Gbit/s: FM_PREFETCH_QUEUE_MS of it too */
	assert_int_equal(fm_prefetch_window(125e6), (uint64_t)(125e6 * FM_PREFETCH_QUEUE_MS / 1000));
	/* 2 Gbit/s and more: the most, with full-size chunks and readahead */
	w = fm_prefetch_window(250e6);
	assert_int_equal(w, FM_PREFETCH_WINDOW);
	assert_int_equal(fm_prefetch_chunk_pages(w), FM_PREFETCH_CHUNK_PAGES);
	assert_int_equal(fm_prefetch_readahead_pages(w), FM_PREFETCH_READAHEAD_PAGES);
	assert_int_equal(fm_prefetch_window(1e12), FM_PREFETCH_WINDOW);
	assert_int_equal(fm_prefetch_chunk_pages(1), 1);

	/* while the application settles after the restore and its faults wait:
	 * FM_PREFETCH_FAULT_QUEUE_MS of the highest rate seen, not of the current
	 * one (which a small window itself would hold down) */
	uint64_t full = fm_prefetch_window(125e6), settling = (uint64_t)(125e6 * FM_PREFETCH_FAULT_QUEUE_MS / 1000);
	assert_true(settling < full);
	assert_int_equal(fm_prefetch_window_now(125e6, 125e6, 1000, 0), settling);
	assert_int_equal(fm_prefetch_window_now(60e6, 125e6, 1000, 5000), settling);
	assert_int_equal(fm_prefetch_window_now(125e6, 0, 1000, 0), FM_PREFETCH_WINDOW_MIN);
	/* no fault waiting lately, the settling over, still held, or no fault
	 * yet: the window follows the rate */
	assert_int_equal(fm_prefetch_window_now(125e6, 125e6, 1000, FM_PREFETCH_FAULT_RECENT_US), full);
	assert_int_equal(fm_prefetch_window_now(125e6, 125e6, FM_PREFETCH_SETTLE_MS * 1000, 0), full);
	assert_int_equal(fm_prefetch_window_now(125e6, 125e6, -1, 0), full);
	assert_int_equal(fm_prefetch_window_now(125e6, 125e6, 1000, -1), full);
	/* never more than the rate's own window */
	assert_int_equal(fm_prefetch_window_now(2.5e6, 125e6, 1000, 0), fm_prefetch_window(2.5e6));

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
		cmocka_unit_test(test_prefetch_serves_faults_then_every_page),
		cmocka_unit_test(test_prefetch_follows_remap_unmap_and_remove),
		cmocka_unit_test(test_prefetch_serves_a_forked_child),
		cmocka_unit_test(test_prefetch_copies_a_faulting_page_before_its_answer_ends),
		cmocka_unit_test(test_prefetch_paused_release_brings_every_page_first),
		cmocka_unit_test(test_prefetch_source_gone_fails_it),
		cmocka_unit_test(test_prefetch_refuses_garbage_from_the_restore),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
