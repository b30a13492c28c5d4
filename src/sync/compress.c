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
/* Speed is measured on frames this large only: on a 4 KiB frame zstd's fixed
 * cost per call dominates (133 MB/s measured, against ~420 on 256 KiB), and
 * that one figure sent a post-copy's small, 20x compressible page answers
 * raw for the rest of the transfer. */
#define MEASURE_MIN (64 * 1024)
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

int fm_compress_level_for_link(double bps)
{
	double bytes = bps / 8;
	/* zstd on one core, incompressible-ish memory: level 6 ~90 MB/s, 3 ~250, 1 ~400.
	 * Level 2 on Redis's memory (1 KiB random values, 256 KiB frames, one
	 * core here): 506 MB/s for 76.33 % of the bytes, against 578 MB/s and
	 * 76.76 % for level 1 and 226 MB/s and 76.27 % for level 3 (Podman's):
	 * level 3's bytes at nearly level 1's speed. */
	if (bytes > 0 && bytes < 15e6)
		return 6;
	if (bytes > 0 && bytes < 60e6)
		return 3;
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
size_t fm_compress_bound(size_t n) { return ZSTD_compressBound(n) + 32; }

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

/* The next frame of a stream: all of src, flushed (the receiver can decode it
 * whole without what follows). */
static size_t compress_stream(ZSTD_CCtx *c, const void *src, size_t n, void *dst, size_t cap)
{
	ZSTD_inBuffer in = { src, n, 0 };
	ZSTD_outBuffer out = { dst, cap, 0 };
	for (;;) {
		size_t left = ZSTD_compressStream2(c, &out, &in, ZSTD_e_flush);
		if (ZSTD_isError(left))
			return left;
		if (left == 0)
			return out.pos;
		if (out.pos == out.size)
			return (size_t)-ZSTD_error_dstSize_tooSmall;
	}
}

/* Ends a stream's zstd frame into dst: its length (a few bytes), 0 if it
 * could not. */
static size_t end_stream(ZSTD_CCtx *c, void *dst, size_t cap)
{
	ZSTD_inBuffer none = { NULL, 0, 0 };
	ZSTD_outBuffer out = { dst, cap, 0 };
	for (;;) {
		size_t left = ZSTD_compressStream2(c, &out, &none, ZSTD_e_end);
		if (ZSTD_isError(left) || (left && out.pos == out.size))
			return 0;
		if (left == 0)
			return out.pos;
	}
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
		if (z->stream && z->applied && (ended = end_stream(z->cctx, dst, cap)) == 0) {
			z->mode = FM_COMPRESS_OFF;
			return 0;
		}
		if (set_level(z->cctx, level) < 0) {
			if (ended)   /* the receiver's frame ended, ours cannot go on */
				z->mode = FM_COMPRESS_OFF;
			return 0;
		}
		z->applied = level;
	}
	int64_t t0 = fm_now_mono_us();
	size_t c = z->stream ? compress_stream(z->cctx, src, n, (uint8_t *)dst + ended, cap - ended)
			     : ZSTD_compress2(z->cctx, dst, cap, src, n);
	int64_t dt = fm_now_mono_us() - t0;
	if (!ZSTD_isError(c))
		c += ended;
	if (ZSTD_isError(c)) {
		/* this frame goes raw; so does the rest of a stream, whose context
		 * the receiver's no longer matches */
		if (z->stream)
			z->mode = FM_COMPRESS_OFF;
		return 0;
	}
	double ratio = (double)c / (double)n, speed = (double)n * 1e6 / (double)(dt > 0 ? dt : 1);
	if (looks_random)
		z->random_ratio = z->random_tried++ > 0 ? 0.75 * z->random_ratio + 0.25 * ratio : ratio;
	else
		z->ratio = z->tried++ > 0 ? 0.75 * z->ratio + 0.25 * ratio : ratio;
	if (z->runs++ > 0 && !warmup && n >= MEASURE_MIN)   /* the first at a level: a warm-up, not a measure */
		z->zstd_Bps = z->zstd_Bps > 0 ? 0.75 * z->zstd_Bps + 0.25 * speed : speed;
	if (!z->stream && (double)c >= (double)n * GAIN)
		return 0;
	z->compressed++;
	z->level = level;
	return c;
}

bool fm_decompress_frame(void **dctx, const void *src, size_t n, void *dst, size_t raw_len)
{
	if (!*dctx && !(*dctx = ZSTD_createDCtx()))
		return false;
	size_t d = ZSTD_decompressDCtx(*dctx, dst, raw_len, src, n);
	return !ZSTD_isError(d) && d == raw_len;
}

bool fm_decompress_stream(void **dctx, const void *src, size_t n, void *dst, size_t raw_len)
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
	ZSTD_outBuffer out = { dst, raw_len, 0 };
	while (in.pos < in.size) {
		size_t in0 = in.pos, out0 = out.pos;
		if (ZSTD_isError(ZSTD_decompressStream(*dctx, &out, &in)))
			return false;
		if (in.pos == in0 && out.pos == out0)
			return false;   /* more than raw_len in it */
	}
	/* nothing held back either */
	uint8_t extra;
	ZSTD_outBuffer more = { &extra, 1, 0 };
	ZSTD_inBuffer none = { NULL, 0, 0 };
	if (ZSTD_isError(ZSTD_decompressStream(*dctx, &more, &none)) || more.pos)
		return false;
	return out.pos == raw_len;
}

void fm_compressor_free(fm_compressor *z)
{
	ZSTD_freeCCtx(z->cctx);
	z->cctx = NULL;
	z->applied = 0;
}

void fm_decompressor_free(void *dctx) { ZSTD_freeDCtx(dctx); }
