/* fm-memload: a container workload with a large, busy, self-checking memory,
 * for the end-to-end tests and the benchmarks (not part of the product).
 *
 *   fm-memload SIZE_MIB [HOT_MIB] [STATUS_FILE] [HEARTBEAT_PORT] [COLD_PAGES] [DIRTY_MBIT]
 *
 * Fills SIZE_MIB of anonymous memory with a pattern derived from each page's
 * index and the number of times it has been rewritten, then loops forever:
 *   - rewrites the next 1 MiB of the first HOT_MIB (the working set; default
 *     all): each page is checked against the pattern it must hold, then given
 *     the next one; with DIRTY_MBIT (the dirty rate D, in Mbit/s) pages are
 *     rewritten at most that fast (a token bucket of 1 MiB) and the others of
 *     the working set only checked; 0: the working set is only read;
 *   - checks COLD_PAGES pages of the rest (default 64), round robin, so that
 *     the whole memory is verified every few seconds (0: never; a benchmark of
 *     a small working set wants few: the check touches the whole memory);
 *   - measures the gap since the previous iteration: a frozen or page-faulting
 *     process shows as a gap.
 * Every 100 ms it writes STATUS_FILE (default /tmp/memload.status) atomically
 * (status_write):
 *   iterations errors full_scans max_gap_ms gap_sum_ms hot_passes size_mib hot_mib
 * where full_scans counts complete verifications of every page and gap_sum_ms
 * sums the gaps over 20 ms.  A corrupted page (errors > 0) is never repaired.
 * With HEARTBEAT_PORT it also accepts TCP clients and sends each one a line
 * "<seq> <monotonic ms>\n" every HEARTBEAT_MS from inside the same loop (the clock is read
 * every BEAT_PAGES pages), so a client sees the same stalls at a 1 ms grain: a
 * stall is time in which the loop made no progress (frozen, or waiting for
 * pages), not the time one 1 MiB iteration takes.
 *
 * Build: static (it runs in a busybox root filesystem).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / 8)
#define CHUNK_PAGES 256          /* 1 MiB of the working set per iteration */
#define COLD_PAGES_DEFAULT 64    /* pages outside it verified per iteration */
#define GAP_MS 20.0
#define MAX_CLIENTS 16
#define HEARTBEAT_MS 1.0
#define BEAT_PAGES 16            /* pages between two looks at the clock */
#define DIRTY_BURST (256.0 * PAGE) /* the dirty-rate token bucket: at most 1 MiB at once */
#define STATUS_LEN 128           /* the status record, padded with spaces */

static uint64_t *mem;
static uint32_t *gen;            /* rewrites of each page so far */
static uint64_t errors;

static int lfd = -1, clients[MAX_CLIENTS], nclients;
static uint64_t seq;
static double last_beat;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static inline uint64_t mix(uint64_t x)
{
	x ^= x >> 31;
	x *= 0x7fb5d329728ea185ull;
	x ^= x >> 27;
	x *= 0x81dadef4bc2dd44dull;
	x ^= x >> 33;
	return x;
}

static void fill(size_t pg, uint32_t g)
{
	uint64_t *p = mem + pg * WORDS, s = mix(((uint64_t)pg << 32) ^ g ^ 0x5eedull);
	for (size_t k = 0; k < WORDS; k++)
		p[k] = s + k * 0x9e3779b97f4a7c15ull;
}

static int check(size_t pg)
{
	uint64_t *p = mem + pg * WORDS, s = mix(((uint64_t)pg << 32) ^ gen[pg] ^ 0x5eedull);
	for (size_t k = 0; k < WORDS; k++)
		if (p[k] != s + k * 0x9e3779b97f4a7c15ull) {
			if (errors++ < 5)
				fprintf(stderr, "memload: page %zu word %zu corrupted\n", pg, k);
			return -1;
		}
	return 0;
}

/* Replaces STATUS_FILE's content atomically without allocating or freeing a
 * disk block: STATUS_FILE.0 and .1, each rewritten in place with a record of
 * STATUS_LEN bytes, take turns being linked as STATUS_FILE (an extra link,
 * renamed over it: the file it replaces keeps its own name).  Writing a new
 * file and renaming it over the old one freed the old one's blocks, and on a
 * filesystem mounted with `discard` (our VMs' root) that waited for the
 * disk's discard in ext4_free_blocks: 17-43 ms in D state, stalls of the
 * workload's own that showed up among a migration's. */
static void status_write(const char *status, const char *line)
{
	static int turn;
	char path[4096], link_path[4096], rec[STATUS_LEN + 1];
	snprintf(path, sizeof(path), "%s.%d", status, turn);
	snprintf(link_path, sizeof(link_path), "%s.link", status);
	snprintf(rec, sizeof(rec), "%-*.*s\n", STATUS_LEN - 1, STATUS_LEN - 1, line);
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	ssize_t n = pwrite(fd, rec, STATUS_LEN, 0);
	close(fd);
	if (n != STATUS_LEN)
		return;
	(void)unlink(link_path);   /* left by a kill between link and rename */
	if (link(path, link_path) == 0 && rename(link_path, status) == 0)
		turn ^= 1;
}

/* Accepts new heartbeat clients and sends every client the next beat if
 * HEARTBEAT_MS have passed since the last one. */
static void beat(double t)
{
	if (lfd < 0 || t - last_beat < HEARTBEAT_MS)
		return;
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
	if (fd >= 0 && nclients < MAX_CLIENTS)
		clients[nclients++] = fd;
	else if (fd >= 0)
		close(fd);
	/* "<seq> <monotonic ms when sent>": the clock is the host's (no time
	 * namespace), so a client on the same machine tells a beat the
	 * application sent late from one the network or itself took late */
	char line[48];
	int n = snprintf(line, sizeof(line), "%llu %.3f\n", (unsigned long long)++seq, t);
	for (int c = 0; c < nclients; c++)
		if (send(clients[c], line, (size_t)n, MSG_NOSIGNAL) < 0 && errno != EAGAIN) {
			close(clients[c]);
			clients[c--] = clients[--nclients];
		}
	last_beat = t;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s SIZE_MIB [HOT_MIB] [STATUS_FILE] [HEARTBEAT_PORT] [COLD_PAGES] [DIRTY_MBIT]\n",
			argv[0]);
		return 2;
	}
	size_t size_mib = strtoul(argv[1], NULL, 10);
	size_t hot_mib = argc > 2 ? strtoul(argv[2], NULL, 10) : size_mib;
	const char *status = argc > 3 ? argv[3] : "/tmp/memload.status";
	int port = argc > 4 ? atoi(argv[4]) : 0;
	size_t cold_pages = argc > 5 ? strtoul(argv[5], NULL, 10) : COLD_PAGES_DEFAULT;
	double dirty_mbit = argc > 6 ? strtod(argv[6], NULL) : -1; /* < 0: as fast as the loop goes */
	if (size_mib == 0 || hot_mib == 0 || hot_mib > size_mib) {
		fprintf(stderr, "memload: need 0 < HOT_MIB <= SIZE_MIB\n");
		return 2;
	}
	size_t pages = size_mib * 256, hot = hot_mib * 256;
	mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	gen = calloc(pages, sizeof(*gen));
	if (mem == MAP_FAILED || !gen) {
		perror("memload: memory");
		return 1;
	}
	/* 4 KiB pages: with transparent huge pages dirty tracking is 2 MiB-coarse */
	(void)madvise(mem, pages * PAGE, MADV_NOHUGEPAGE);
	for (size_t pg = 0; pg < pages; pg++)
		fill(pg, 0);

	if (port > 0) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
		int one = 1;
		lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4) < 0) {
			perror("memload: heartbeat port");
			return 1;
		}
	}

	uint64_t iter = 0, full_scans = 0, hot_passes = 0;
	size_t hpos = 0, cpos = hot;
	double prev = now_ms(), last_status = 0, max_gap = 0, gap_sum = 0;
	double tokens = 0, t_tokens = prev; /* bytes the dirty rate allows now */
	char buf[256];
	for (;;) {
		for (size_t i = 0; i < CHUNK_PAGES; i++) {
			check(hpos);
			if (dirty_mbit < 0) {
				fill(hpos, ++gen[hpos]);
			} else if (tokens >= PAGE) {
				fill(hpos, ++gen[hpos]);
				tokens -= PAGE;
			}
			if (++hpos == hot) {
				hpos = 0;
				hot_passes++;
				if (hot == pages)
					full_scans++;
			}
			if (i % BEAT_PAGES == BEAT_PAGES - 1) {
				double t = now_ms();
				beat(t);
				if (dirty_mbit >= 0) {
					tokens += (t - t_tokens) * dirty_mbit * 1e6 / 8 / 1e3;
					if (tokens > DIRTY_BURST)
						tokens = DIRTY_BURST;
					t_tokens = t;
				}
			}
		}
		if (hot < pages)
			for (size_t i = 0; i < cold_pages; i++) {
				check(cpos);
				if (++cpos == pages) {
					cpos = hot;
					full_scans++;
				}
			}
		iter++;
		double t = now_ms(), gap = t - prev;
		prev = t;
		if (gap > max_gap && iter > 1)
			max_gap = gap;
		if (gap > GAP_MS)
			gap_sum += gap;
		beat(t);
		if (t - last_status >= 100) {
			snprintf(buf, sizeof(buf), "%llu %llu %llu %.1f %.1f %llu %zu %zu", (unsigned long long)iter,
				 (unsigned long long)errors, (unsigned long long)full_scans, max_gap, gap_sum,
				 (unsigned long long)hot_passes, size_mib, hot_mib);
			status_write(status, buf);
			last_status = t;
		}
		usleep(500);
	}
}
