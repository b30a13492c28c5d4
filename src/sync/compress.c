/* Delta Transfer, compression: see compress.h. */
#include "sync/compress.h"

#include <string.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getCParams */
#include <zstd.h>
#include <zstd_errors.h>

#include "basic/util.h"

#define GAIN 0.97            /* a compressed frame must be 3 % smaller to be sent compressed */
#define PROBE_EVERY 32       /* AUTO: try one compressible-looking frame in this many while it does not pay */
#define PAYS_MARGIN 1.2      /* ... and zstd must outrun the link by this factor */
#define UNKNOWN_LINK_BPS 1e9 /* a link not measured yet is taken for a fast one */
/* Speed is measured on frames this large only: on a small frame zstd's fixed
 * cost per call and its tables gone cold dominate.  A post-copy's answers to
 * faults (16-200 KiB, between the other side's work on two shared cores) ran
 * at 110-150 MB/s of CPU time against 300-450 on larger frames; those
 * measures sent 60-180 of 1000 frames of Redis's memory raw (+2-4 MB on
 * 252), and a 4 KiB frame's (133 MB/s) once sent every small answer raw. */
#define MEASURE_MIN (256 * 1024)
/* zstd's parameters for a level are those it picks for an input of this size,
 * whatever the frame's: on Redis's memory (1 KiB random values) level 2 so
 * tuned keeps 75.27 % of the bytes in 1 MiB frames at 724 MB/s, where its
 * parameters for 1 MiB keep 75.75 % (level 3 over one whole stream, as
 * Podman's export: 75.27 %).  One window size (2^18) for every level, so a
 * stream can change levels. */
#define TUNE_SIZE (256 * 1024)
#define WINDOW_LOG_MAX 20    /* the largest window a stream's receiver accepts (1 MiB) */
#define SAMPLE_SLICES 16
#define SAMPLE_SLICE 256
/* Rényi (collision) entropy of the sampled bytes below this many bits per byte
 * means compressible: random bytes measure ~7.9 on a 4 KiB sample. */
#define ENTROPY_INV 181
/* A stream's frame: its main zstd stream's piece and, where it has dense
 * units, its dense stream's and which units those are:
 *
 *   u32 main length (bit 31: dense units follow) | main bytes
 *   [u32 dense length | dense bytes | map: a bit per unit, 1 = dense]
 *
 * Each piece is flushed (the receiver decodes it whole); the main one holds
 * the frame's other units in order, the dense one its dense units.  A unit
 * (DENSE_UNIT bytes) is dense when at least DENSE_ZERO_PCT % of a sample of
 * every DENSE_STEP-th byte is zero: a process's structures (pointers,
 * counters, padding).  On Redis's memory (8 % of its pages, mostly one at a
 * time between slabs of values) zstd's lazy matcher at level 6 keeps 14 % of
 * them where level 2 keeps 19 %; on the rest (1 KiB random values in their
 * slots) level 6 gains nothing at a quarter of level 2's speed.  On 253 MB of
 * a Redis checkpoint's pages in 1 MiB frames: all at level 2 188.13 MB, dense
 * units gathered at level 6 187.50 MB (for 0.35 s of CPU), Podman's export
 * of the same with its Go zstd 187.96 MB (and pieces per run of units,
 * without the gathering, 187.57 MB for 0.6 s: a flush per piece). */
#define PIECE_HDR 4
#define PIECE_DENSE 0x80000000u
#define DENSE_UNIT 4096
#define DENSE_STEP 15   /* odd: a sample hits every field of aligned structures */
#define DENSE_ZERO_PCT 30
/* The dense context runs while compression takes at most this share of the
 * time the link needs for what it produced (it runs beside the link: below
 * 1 it costs no time; smoothed over frames). */
#define DENSE_BUSY_MAX 0.8

int fm_compress_level_for_link(double bps)
{
	double bytes = bps / 8;
	/* zstd on one core, incompressible-ish memory: level 6 ~90 MB/s, 2 ~450.
	 * On Redis's memory (1 KiB random values) level 2 with 4-byte matches
	 * keeps what level 3 keeps (74.20 % of a checkpoint's pages, Podman's Go
	 * zstd 74.1) at twice its speed; a stream's dense units go through
	 * level 6 where the link leaves the time (above).  Level 3 on the links
	 * in between was chosen mostly by mistake: a relay whose receiver was
	 * slow (both benchmark hosts on two cores) measured its link at
	 * 400-480 Mbit/s. */
	if (bytes > 0 && bytes < 15e6)
		return 6;
	return 2;
}

bool fm_compress_looks_compressible(const uint8_t *p, size_t n)
{
	uint32_t count[256] = { 0 };
	uint64_t total = 0, sq = 0;
	size_t slices = n <= SAMPLE_SLICES * SAMPLE_SLICE ? 1 : SAMPLE_SLICES;
	size_t len = slices == 1 ? n : SAMPLE_SLICE, stride = slices == 1 ? 0 : (n - SAMPLE_SLICE) / (SAMPLE_SLICES - 1);

	for (size_t s = 0; s < slices; s++)
		for (size_t i = 0; i < len; i++)
			count[p[s * stride + i]]++;
	for (int b = 0; b < 256; b++) {
		total += count[b];
		sq += (uint64_t)count[b] * count[b];
	}
	/* sum(p^2) > 2^-7.5, with sum(c (c - 1)) / (n (n - 1)) the unbiased
	 * estimate of sum(p^2) (small samples would look compressible otherwise) */
	return total > 1 && (sq - total) * ENTROPY_INV > total * (total - 1);
}

/* (a stream's frame: its blocks' headers; a zstd frame's header, and the end of
 * the one before, where it starts one) */
size_t fm_compress_bound(size_t n)
{
	/* two pieces' headers and zstd's flushes, the map, both streams' frame
	 * headers, and the end of the frame before */
	return ZSTD_compressBound(n) + n / DENSE_UNIT / 8 + 128;
}

/* AUTO: is a frame of a kind that compressed to ratio so far (known: any
 * tried yet) worth compressing on this link? */
static bool pays(fm_compressor *z, double ratio, bool known, double link_bps)
{
	double link = (link_bps > 0 ? link_bps : UNKNOWN_LINK_BPS) / 8;
	/* A sender compresses a frame while the previous one is on the wire (the
	 * socket's buffer holds it), so compression costs no time as long as zstd
	 * outruns the link, and then every byte it saves is wire time saved.
	 * (Counting its CPU time against the saving, z * (1 - ratio) > L, sent
	 * Redis's memory raw at 1 Gbit/s: 237 MiB where Podman's zstd sent 179.) */
	if (z->zstd_Bps == 0 || !known || (ratio < GAIN && z->zstd_Bps > link * PAYS_MARGIN))
		return true;
	if (++z->since_probe >= PROBE_EVERY) {
		z->since_probe = 0;
		return true;
	}
	return false;
}

static int set_level(ZSTD_CCtx *c, int level)
{
	ZSTD_compressionParameters p = ZSTD_getCParams(level, TUNE_SIZE, 0);
	/* level 2's double-fast matcher with 4-byte matches: on Redis's memory
	 * 0.03 % fewer bytes (level 3's) at level 2's speed */
	if (p.strategy == ZSTD_dfast && p.minMatch > 4)
		p.minMatch = 4;
	const struct { ZSTD_cParameter k; int v; } set[] = {
		{ ZSTD_c_compressionLevel, level }, { ZSTD_c_windowLog, (int)p.windowLog },
		{ ZSTD_c_chainLog, (int)p.chainLog }, { ZSTD_c_hashLog, (int)p.hashLog },
		{ ZSTD_c_searchLog, (int)p.searchLog }, { ZSTD_c_minMatch, (int)p.minMatch },
		{ ZSTD_c_targetLength, (int)p.targetLength }, { ZSTD_c_strategy, (int)p.strategy },
	};
	for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++)
		if (ZSTD_isError(ZSTD_CCtx_setParameter(c, set[i].k, set[i].v)))
			return -1;
	return 0;
}

/* All of src through c into dst, flushed (the receiver can decode it whole
 * without what follows), or with end the end of c's zstd frame: its length,
 * or a zstd error code. */
static size_t flush_into(ZSTD_CCtx *c, const void *src, size_t n, bool end, uint8_t *dst, size_t cap)
{
	ZSTD_inBuffer in = { src, n, 0 };
	ZSTD_outBuffer out = { dst, cap, 0 };
	for (;;) {
		size_t left = ZSTD_compressStream2(c, &out, &in, end ? ZSTD_e_end : ZSTD_e_flush);
		if (ZSTD_isError(left))
			return left;
		if (left == 0)
			return out.pos;
		if (out.pos == out.size)
			return (size_t)-ZSTD_error_dstSize_tooSmall;
	}
}

static size_t unit_len(size_t n, size_t u) { return n - u * DENSE_UNIT < DENSE_UNIT ? n - u * DENSE_UNIT : DENSE_UNIT; }

/* Is unit u of src dense (many zero bytes: structures, not values)? */
static bool unit_dense(const uint8_t *src, size_t n, size_t u)
{
	const uint8_t *p = src + u * DENSE_UNIT;
	size_t len = unit_len(n, u), zero = 0, seen = 0;
	for (size_t i = 0; i < len; i += DENSE_STEP, seen++)
		zero += p[i] == 0;
	return zero * 100 >= seen * DENSE_ZERO_PCT;
}

/* A stream's frame (the format above) into dst, after the ended bytes
 * already there (the end of the main stream's zstd frame before, if any);
 * its length, or a zstd error code.  The time each stream took. */
static size_t put_stream_frame(fm_compressor *z, const uint8_t *src, size_t n, bool dense_ok, uint8_t *dst,
			       size_t cap, size_t ended, int64_t *main_us, uint64_t *main_bytes, int64_t *dense_us)
{
	size_t units = (n + DENSE_UNIT - 1) / DENSE_UNIT, mapn = (units + 7) / 8, dense_n = 0;
	uint8_t map[FM_COMPRESS_MAX_FRAME / DENSE_UNIT / 8 + 1] = { 0 };
	const uint8_t *main_src = src;

	if (dense_ok && n <= FM_COMPRESS_MAX_FRAME)
		for (size_t u = 0; u < units; u++)
			if (unit_dense(src, n, u)) {
				map[u / 8] |= (uint8_t)(1u << (u % 8));
				dense_n += unit_len(n, u);
			}
	if (dense_n) {   /* gathered: the main units in front, the dense ones behind */
		if (!z->gather)
			z->gather = fm_xmalloc(FM_COMPRESS_MAX_FRAME);
		for (size_t u = 0, mc = 0, dc = n - dense_n; u < units; u++) {
			size_t *at = map[u / 8] & (1u << (u % 8)) ? &dc : &mc;
			memcpy(z->gather + *at, src + u * DENSE_UNIT, unit_len(n, u));
			*at += unit_len(n, u);
		}
		main_src = z->gather;
	}
	size_t main_n = n - dense_n;
	if (cap < PIECE_HDR + ended)
		return (size_t)-ZSTD_error_dstSize_tooSmall;
	int64_t t0 = fm_thread_cpu_us();
	/* (a frame of dense units only has nothing for the main stream: its
	 * piece is the end of the zstd frame before, if any) */
	size_t len = PIECE_HDR + ended;
	size_t k = main_n ? flush_into(z->cctx, main_src, main_n, false, dst + len, cap - len) : 0;
	if (ZSTD_isError(k))
		return k;
	*main_us += fm_thread_cpu_us() - t0;
	*main_bytes += main_n;
	fm_put_le32(dst, (uint32_t)(ended + k) | (dense_n ? PIECE_DENSE : 0));
	len += k;
	if (!dense_n)
		return len;
	if (cap - len < PIECE_HDR + mapn)
		return (size_t)-ZSTD_error_dstSize_tooSmall;
	t0 = fm_thread_cpu_us();
	k = flush_into(z->dense_cctx, z->gather + main_n, dense_n, false, dst + len + PIECE_HDR,
		       cap - len - PIECE_HDR - mapn);
	if (ZSTD_isError(k))
		return k;
	*dense_us += fm_thread_cpu_us() - t0;
	z->dense_bytes += dense_n;
	fm_put_le32(dst + len, (uint32_t)k);
	len += PIECE_HDR + k;
	memcpy(dst + len, map, mapn);
	return len + mapn;
}

size_t fm_compress_frame(fm_compressor *z, const void *src, size_t n, void *dst, size_t cap, double link_bps)
{
	int level = z->mode;

	z->frames++;
	if (z->mode == FM_COMPRESS_OFF || n < (z->stream ? FM_COMPRESS_STREAM_MIN : FM_COMPRESS_MIN))
		return 0;
	bool looks_random = false;
	if (z->mode == FM_COMPRESS_AUTO) {
		looks_random = !fm_compress_looks_compressible(src, n);
		double ratio = looks_random ? z->random_ratio : z->ratio;
		if (looks_random && ratio >= GAIN) {
			/* such frames saved nothing so far: the first and then one in
			 * PROBE_EVERY are tried */
			if (z->random_tried > 0 && ++z->since_random_probe < PROBE_EVERY)
				return 0;
			z->since_random_probe = 0;
		} else if (!pays(z, ratio, looks_random || z->tried > 0, link_bps)) {
			return 0;
		}
		level = fm_compress_level_for_link(link_bps);
	}
	if (!z->cctx && !(z->cctx = ZSTD_createCCtx()))
		return 0;
	/* a stream's parameters are its zstd frame's: at another level, the frame
	 * ends here (in front of this one's output; the receiver goes on into
	 * the next) and a new one starts (zstd refuses new parameters inside a
	 * frame: every frame after the link's level changed went raw) */
	size_t ended = 0;
	bool warmup = z->applied != level;   /* new parameters: zstd's tables made anew */
	if (warmup) {
		if (z->stream && z->applied) {   /* behind the main piece's header */
			ended = cap > PIECE_HDR ? flush_into(z->cctx, NULL, 0, true, (uint8_t *)dst + PIECE_HDR, cap - PIECE_HDR)
						: (size_t)-ZSTD_error_dstSize_tooSmall;
			if (ZSTD_isError(ended)) {
				z->mode = FM_COMPRESS_OFF;
				return 0;
			}
		}
		if (set_level(z->cctx, level) < 0) {
			if (ended)   /* the receiver's frame ended, ours cannot go on */
				z->mode = FM_COMPRESS_OFF;
			return 0;
		}
		z->applied = level;
	}
	/* the dense context: where AUTO runs below its level and compression
	 * leaves the link time to spare (its level never changes) */
	bool dense_ok = z->stream && z->dense && z->mode == FM_COMPRESS_AUTO && level < FM_COMPRESS_DENSE_LEVEL &&
			z->busy < DENSE_BUSY_MAX && !z->dense_failed;
	if (dense_ok && !z->dense_cctx &&
	    (!(z->dense_cctx = ZSTD_createCCtx()) || set_level(z->dense_cctx, FM_COMPRESS_DENSE_LEVEL) < 0)) {
		ZSTD_freeCCtx(z->dense_cctx);
		z->dense_cctx = NULL;
		z->dense_failed = true;
		dense_ok = false;
	}
	int64_t main_us = 0, dense_us = 0;
	uint64_t main_bytes = 0;
	size_t c;
	if (z->stream) {
		c = put_stream_frame(z, src, n, dense_ok, dst, cap, ended, &main_us, &main_bytes, &dense_us);
	} else {
		int64_t t0 = fm_thread_cpu_us();
		c = ZSTD_compress2(z->cctx, dst, cap, src, n);
		main_us = fm_thread_cpu_us() - t0;
		main_bytes = n;
	}
	if (ZSTD_isError(c)) {
		/* this frame goes raw; so does the rest of a stream, whose context
		 * the receiver's no longer matches */
		if (z->stream)
			z->mode = FM_COMPRESS_OFF;
		return 0;
	}
	double ratio = (double)c / (double)n, speed = (double)main_bytes * 1e6 / (double)(main_us > 0 ? main_us : 1);
	if (looks_random)
		z->random_ratio = z->random_tried++ > 0 ? 0.75 * z->random_ratio + 0.25 * ratio : ratio;
	else
		z->ratio = z->tried++ > 0 ? 0.75 * z->ratio + 0.25 * ratio : ratio;
	if (z->runs++ > 0 && !warmup && n >= MEASURE_MIN) {   /* the first at a level: a warm-up, not a measure */
		/* the main context's speed (the dense one runs on the time it leaves) */
		if (main_bytes >= MEASURE_MIN)
			z->zstd_Bps = z->zstd_Bps > 0 ? 0.75 * z->zstd_Bps + 0.25 * speed : speed;
		double link = (link_bps > 0 ? link_bps : UNKNOWN_LINK_BPS) / 8;
		double busy = (double)(main_us + dense_us) / 1e6 / ((double)c / link);
		z->busy = z->busy > 0 ? 0.75 * z->busy + 0.25 * busy : busy;
	}
	if (!z->stream && (double)c >= (double)n * GAIN)
		return 0;
	z->compressed++;
	z->level = level;
	return c;
}

bool fm_decompress_frame(fm_decompressor *d, const void *src, size_t n, void *dst, size_t raw_len)
{
	if (!d->dctx[0] && !(d->dctx[0] = ZSTD_createDCtx()))
		return false;
	size_t k = ZSTD_decompressDCtx(d->dctx[0], dst, raw_len, src, n);
	return !ZSTD_isError(k) && k == raw_len;
}

/* A piece through its stream's *dctx: exactly want bytes into dst. */
static bool take_piece(void **dctx, const uint8_t *src, size_t n, uint8_t *dst, size_t want)
{
	/* a stream keeps its window in the context: no larger than ours
	 * (TUNE_SIZE's 2^18) with room to spare, whatever a peer announces */
	if (!*dctx && (!(*dctx = ZSTD_createDCtx()) ||
		       ZSTD_isError(ZSTD_DCtx_setParameter(*dctx, ZSTD_d_windowLogMax, WINDOW_LOG_MAX)))) {
		ZSTD_freeDCtx(*dctx);
		*dctx = NULL;
		return false;
	}
	ZSTD_inBuffer in = { src, n, 0 };
	ZSTD_outBuffer out = { dst, want, 0 };
	while (in.pos < in.size) {
		size_t in0 = in.pos, out0 = out.pos;
		if (ZSTD_isError(ZSTD_decompressStream(*dctx, &out, &in)))
			return false;
		if (in.pos == in0 && out.pos == out0)
			return false;   /* more than want in it */
	}
	/* nothing held back either */
	uint8_t extra;
	ZSTD_outBuffer more = { &extra, 1, 0 };
	ZSTD_inBuffer none = { NULL, 0, 0 };
	if (ZSTD_isError(ZSTD_decompressStream(*dctx, &more, &none)) || more.pos)
		return false;
	return out.pos == want;
}

bool fm_decompress_stream(fm_decompressor *d, const void *src, size_t n, void *dst, size_t raw_len)
{
	const uint8_t *p = src;
	if (n < PIECE_HDR)
		return false;
	uint32_t h = fm_get_le32(p);
	size_t main_len = h & ~PIECE_DENSE;
	if (main_len > n - PIECE_HDR)
		return false;
	if (!(h & PIECE_DENSE))
		return n == PIECE_HDR + main_len && main_len > 0 &&
		       take_piece(&d->dctx[0], p + PIECE_HDR, main_len, dst, raw_len);

	/* dense units: the map says where each goes */
	size_t units = (raw_len + DENSE_UNIT - 1) / DENSE_UNIT, mapn = (units + 7) / 8, dense_n = 0;
	const uint8_t *q = p + PIECE_HDR + main_len;
	size_t rest = n - PIECE_HDR - main_len;
	if (raw_len > FM_COMPRESS_MAX_FRAME || rest < PIECE_HDR + mapn)
		return false;
	size_t dense_len = fm_get_le32(q);
	if (dense_len == 0 || dense_len != rest - PIECE_HDR - mapn)
		return false;
	const uint8_t *map = q + PIECE_HDR + dense_len;
	for (size_t u = 0; u < units; u++)
		if (map[u / 8] & (1u << (u % 8)))
			dense_n += unit_len(raw_len, u);
	if (dense_n == 0 || (units % 8 && map[mapn - 1] >> (units % 8)))   /* no dense unit, or bits past the end */
		return false;
	if (!d->scatter)
		d->scatter = fm_xmalloc(FM_COMPRESS_MAX_FRAME);
	size_t main_n = raw_len - dense_n;
	if ((main_len == 0 && main_n) ||
	    (main_len && !take_piece(&d->dctx[0], p + PIECE_HDR, main_len, d->scatter, main_n)) ||
	    !take_piece(&d->dctx[1], q + PIECE_HDR, dense_len, d->scatter + main_n, dense_n))
		return false;
	for (size_t u = 0, mc = 0, dc = main_n; u < units; u++) {
		size_t *at = map[u / 8] & (1u << (u % 8)) ? &dc : &mc;
		memcpy((uint8_t *)dst + u * DENSE_UNIT, d->scatter + *at, unit_len(raw_len, u));
		*at += unit_len(raw_len, u);
	}
	return true;
}

void fm_compressor_free(fm_compressor *z)
{
	ZSTD_freeCCtx(z->cctx);
	ZSTD_freeCCtx(z->dense_cctx);
	free(z->gather);
	z->cctx = z->dense_cctx = NULL;
	z->gather = NULL;
	z->applied = 0;
}

void fm_decompressor_free(fm_decompressor *d)
{
	for (size_t i = 0; i < ARRAY_SIZE(d->dctx); i++) {
		ZSTD_freeDCtx(d->dctx[i]);
		d->dctx[i] = NULL;
	}
	free(d->scatter);
	d->scatter = NULL;
}
