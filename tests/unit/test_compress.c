/* Compression where it pays (sync/compress.h): what AUTO compresses, what it
 * leaves alone without spending CPU, and that a damaged frame is refused. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include <zstd.h>

#include "basic/util.h"
#include "sync/compress.h"

#define N (256 * 1024)

static uint8_t *random_bytes(size_t n, uint64_t seed)
{
	uint8_t *p = fm_xmalloc(n);
	for (size_t i = 0; i < n; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		p[i] = (uint8_t)(seed >> 24);
	}
	return p;
}

static void test_looks_compressible(void **state)
{
	_cleanup_free_ uint8_t *rnd = random_bytes(N, 7), *txt = fm_xmalloc(N), *mixed = random_bytes(N, 8);

	(void)state;
	for (size_t i = 0; i < N; i++)
		txt[i] = "the quick brown fox jumps over the lazy dog\n"[i % 44];
	memset(mixed + N / 2, 0, N / 2); /* half zero pages */
	assert_false(fm_compress_looks_compressible(rnd, N));
	assert_false(fm_compress_looks_compressible(rnd, 1024)); /* small: all of it is the sample */
	assert_true(fm_compress_looks_compressible(txt, N));
	assert_true(fm_compress_looks_compressible(mixed, N));
	memset(rnd, 0, 4096);
	assert_true(fm_compress_looks_compressible(rnd, 4096));
}

static void test_auto(void **state)
{
	_cleanup_free_ uint8_t *rnd = random_bytes(N, 9), *zero = fm_xmalloc(N), *out = fm_xmalloc(fm_compress_bound(N)),
			       *back = fm_xmalloc(N);
	fm_compressor z = FM_COMPRESSOR_INIT(FM_COMPRESS_AUTO);
	fm_decompressor dctx = { 0 };
	size_t cap = fm_compress_bound(N);

	(void)state;
	memset(zero, 0, N);
	/* random frames go raw; zstd tries the first and one in 32 only, and
	 * keeps them raw */
	for (int i = 0; i < 100; i++)
		assert_int_equal(fm_compress_frame(&z, rnd, N, out, cap, 1e9), 0);
	assert_int_equal(z.runs, 4);
	assert_true(z.random_ratio >= 0.97);
	assert_int_equal(z.frames, 100);
	/* zero pages compress, at the level the link calls for */
	size_t c = fm_compress_frame(&z, zero, N, out, cap, 100e6);
	assert_true(c > 0 && c < N / 100);
	assert_int_equal(z.level, 6);
	assert_int_equal(z.compressed, 1);
	assert_true(fm_decompress_frame(&dctx, out, c, back, N));
	assert_memory_equal(back, zero, N);
	/* a frame announcing another size, or cut short, is refused (a damaged
	 * one need not be: zstd's frames carry no checksum here, the carriers
	 * checksum what they send) */
	assert_false(fm_decompress_frame(&dctx, out, c, back, N - 1));
	assert_false(fm_decompress_frame(&dctx, out, c - 1, back, N));
	/* requests and replies are never compressed */
	assert_int_equal(fm_compress_frame(&z, zero, FM_COMPRESS_MIN - 1, out, cap, 1e9), 0);
	fm_compressor_free(&z);
	fm_decompressor_free(&dctx);
}

/* A frame can sample as random and still have a fifth to give (Redis's
 * slabs: 1 KiB random values in 1280-byte slots): the tries of such frames
 * show it, and then they are compressed. */
static void test_auto_random_looking_frames_that_compress(void **state)
{
	_cleanup_free_ uint8_t *slab = random_bytes(N, 11), *out = fm_xmalloc(fm_compress_bound(N)),
			       *back = fm_xmalloc(N);
	size_t cap = fm_compress_bound(N);
	fm_compressor z = FM_COMPRESSOR_INIT(FM_COMPRESS_AUTO);
	fm_decompressor dctx = { 0 };

	(void)state;
	for (size_t i = 0; i + 1280 <= N; i += 1280)
		memset(slab + i + 1024, 0, 256);
	/* the sampler misses it: the slices fall into the values */
	for (size_t s = 0; s < 16; s++)
		memcpy(slab + s * ((N - 256) / 15), slab + 1280 * (40 + s), 256);
	assert_false(fm_compress_looks_compressible(slab, N));
	size_t c = fm_compress_frame(&z, slab, N, out, cap, 1e9);
	assert_true(c > 0 && c < N * 0.9);
	assert_true(fm_decompress_frame(&dctx, out, c, back, N));
	assert_memory_equal(back, slab, N);
	/* from now on, every such frame */
	for (int i = 0; i < 10; i++)
		assert_true(fm_compress_frame(&z, slab, N, out, cap, 1e9) > 0);
	assert_int_equal(z.compressed, 11);
	fm_compressor_free(&z);
	fm_decompressor_free(&dctx);
}

/* AUTO compresses while zstd outruns the link and saves: then it costs no time
 * (it runs while the last frame is on the wire). */
static void test_auto_pays_while_zstd_outruns_the_link(void **state)
{
	_cleanup_free_ uint8_t *zero = fm_xmalloc(N), *out = fm_xmalloc(fm_compress_bound(N));
	size_t cap = fm_compress_bound(N);
	(void)state;
	memset(zero, 0, N);
	/* measured before: 200 MB/s, 20 % saved (too little to beat its own CPU
	 * time at 1 Gbit/s, but it runs beside the link, not before it) */
	fm_compressor z = FM_COMPRESSOR_INIT(FM_COMPRESS_AUTO);
	z.zstd_Bps = 200e6;
	z.ratio = 0.8;
	z.tried = 1;
	assert_true(fm_compress_frame(&z, zero, N, out, cap, 1e9) > 0);
	fm_compressor_free(&z);
	/* a 10 Gbit/s link outruns it: raw (but for a probe now and then) */
	fm_compressor fast = FM_COMPRESSOR_INIT(FM_COMPRESS_AUTO);
	fast.zstd_Bps = 200e6;
	fast.ratio = 0.8;
	fast.tried = 1;
	assert_int_equal(fm_compress_frame(&fast, zero, N, out, cap, 10e9), 0);
	/* nothing saved: raw however fast zstd is */
	fm_compressor flat = FM_COMPRESSOR_INIT(FM_COMPRESS_AUTO);
	flat.zstd_Bps = 5e9;
	flat.ratio = 0.99;
	flat.tried = 1;
	assert_int_equal(fm_compress_frame(&flat, zero, N, out, cap, 1e9), 0);
	assert_null(fast.cctx);
	assert_null(flat.cctx);
}

/* The first compression warms zstd up (its context, first-touch page faults:
 * 3.5x slower here), and a small frame's time is mostly zstd's fixed cost:
 * neither is a measure of its speed, or AUTO would stop at once. */
static void test_first_compression_is_not_a_measure(void **state)
{
	_cleanup_free_ uint8_t *zero = fm_xmalloc(N), *out = fm_xmalloc(fm_compress_bound(N));
	size_t cap = fm_compress_bound(N);
	(void)state;
	memset(zero, 0, N);
	fm_compressor z = FM_COMPRESSOR_INIT(FM_COMPRESS_AUTO);
	assert_true(fm_compress_frame(&z, zero, N, out, cap, 0) > 0);
	assert_true(z.zstd_Bps == 0);
	assert_true(z.ratio < 0.01);
	/* nor is a small frame's (zstd's fixed cost per call dominates it) */
	assert_true(fm_compress_frame(&z, zero, 8192, out, cap, 0) > 0);
	assert_true(z.zstd_Bps == 0);
	assert_true(fm_compress_frame(&z, zero, N, out, cap, 0) > 0);   /* compressed again, and measured */
	assert_true(z.zstd_Bps > 0);
	assert_int_equal(z.compressed, 3);
	fm_compressor_free(&z);
}

static void test_off_and_forced(void **state)
{
	_cleanup_free_ uint8_t *rnd = random_bytes(N, 10), *zero = fm_xmalloc(N), *out = fm_xmalloc(fm_compress_bound(N));
	fm_compressor off = FM_COMPRESSOR_INIT(FM_COMPRESS_OFF), lvl = FM_COMPRESSOR_INIT(9);
	size_t cap = fm_compress_bound(N);

	(void)state;
	memset(zero, 0, N);
	assert_int_equal(fm_compress_frame(&off, zero, N, out, cap, 1e6), 0);
	assert_null(off.cctx);
	/* a level is always tried; random data still goes raw (not 3 % smaller) */
	assert_int_equal(fm_compress_frame(&lvl, rnd, N, out, cap, 1e9), 0);
	assert_non_null(lvl.cctx);
	assert_true(fm_compress_frame(&lvl, zero, N, out, cap, 1e9) > 0);
	assert_int_equal(lvl.level, 9);
	fm_compressor_free(&lvl);
}

static void test_level_for_link(void **state)
{
	(void)state;
	assert_int_equal(fm_compress_level_for_link(0), 2);
	assert_int_equal(fm_compress_level_for_link(10e9), 2);
	assert_int_equal(fm_compress_level_for_link(1e9), 2);
	assert_int_equal(fm_compress_level_for_link(300e6), 2);
	assert_int_equal(fm_compress_level_for_link(100e6), 6);
}

/* A stream: small frames (a checkpoint's files: a few hundred bytes of
 * protobuf each) shrink with what came before them, where alone they are not
 * worth compressing; the receiver takes them in order through one context. */
static void test_stream_small_frames(void **state)
{
	enum { FRAMES = 40, LEN = 600 };
	uint8_t frames[FRAMES][LEN], out[FRAMES][LEN + 256], back[LEN + 1];
	size_t clen[FRAMES], total = 0;
	fm_compressor alone = FM_COMPRESSOR_INIT(1), z = FM_COMPRESSOR_INIT_STREAM(1);
	fm_decompressor dctx = { 0 }, fresh = { 0 };

	(void)state;
	for (int f = 0; f < FRAMES; f++)
		for (int i = 0; i < LEN; i++) /* alike, not the same: a counter in each record */
			frames[f][i] = (uint8_t)("core-entry{pid:" [i % 15] + (i % 60 == 59 ? f : 0));
	/* alone, such a frame goes raw: below FM_COMPRESS_MIN */
	assert_int_equal(fm_compress_frame(&alone, frames[0], LEN, out[0], sizeof(out[0]), 1e9), 0);
	for (int f = 0; f < FRAMES; f++) {
		assert_true(fm_compress_bound(LEN) <= sizeof(out[f]));
		clen[f] = fm_compress_frame(&z, frames[f], LEN, out[f], sizeof(out[f]), 1e9);
		assert_true(clen[f] > 0);
		total += clen[f];
	}
	/* the later frames are a fraction of the first */
	assert_true(clen[FRAMES - 1] < LEN / 10);
	assert_true(total < FRAMES * LEN / 5);
	for (int f = 0; f < FRAMES; f++) {
		/* announced one byte short or long: refused (on a context of its own,
		 * the stream's must stay in step) */
		if (f == 0) {
			fm_decompressor d1 = { 0 }, d2 = { 0 };
			assert_false(fm_decompress_stream(&d1, out[0], clen[0], back, LEN - 1));
			assert_false(fm_decompress_stream(&d2, out[0], clen[0], back, LEN + 1));
			fm_decompressor_free(&d1);
			fm_decompressor_free(&d2);
		}
		assert_true(fm_decompress_stream(&dctx, out[f], clen[f], back, LEN));
		assert_memory_equal(back, frames[f], LEN);
	}
	/* a later frame without what came before it cannot be decoded */
	assert_false(fm_decompress_stream(&fresh, out[FRAMES - 1], clen[FRAMES - 1], back, LEN));
	/* a stream's frame below FM_COMPRESS_STREAM_MIN goes raw */
	assert_int_equal(fm_compress_frame(&z, frames[0], FM_COMPRESS_STREAM_MIN - 1, out[0], sizeof(out[0]), 1e9), 0);
	fm_compressor_free(&z);
	fm_compressor_free(&alone);
	fm_decompressor_free(&dctx);
	fm_decompressor_free(&fresh);
}

/* A stream's frame is sent compressed whatever it saved (the receiver's
 * context must see every frame the sender's did): random bytes, tried, come
 * out within bytes of their size. */
static void test_stream_keeps_what_it_tried(void **state)
{
	_cleanup_free_ uint8_t *rnd = random_bytes(N, 5), *out = fm_xmalloc(fm_compress_bound(N)),
			       *back = fm_xmalloc(N);
	fm_compressor z = FM_COMPRESSOR_INIT_STREAM(FM_COMPRESS_AUTO);
	fm_decompressor dctx = { 0 };

	(void)state;
	size_t c = fm_compress_frame(&z, rnd, N, out, fm_compress_bound(N), 1e9); /* the first: tried */
	assert_true(c > 0 && c <= fm_compress_bound(N) && c < N + 64);
	assert_true(fm_decompress_stream(&dctx, out, c, back, N));
	assert_memory_equal(back, rnd, N);
	/* the next ones are not tried (they saved nothing): raw */
	assert_int_equal(fm_compress_frame(&z, rnd, N, out, fm_compress_bound(N), 1e9), 0);
	fm_compressor_free(&z);
	fm_decompressor_free(&dctx);
}

/* A peer's stream announcing a window larger than ours (2^18) with room to
 * spare is refused: a stream's receiver keeps its window in memory. */
static void test_stream_window_bounded(void **state)
{
	_cleanup_free_ uint8_t *data = random_bytes(N, 12), *out = fm_xmalloc(fm_compress_bound(N)),
			       *back = fm_xmalloc(N);
	(void)state;
	for (int big = 0; big <= 1; big++) {
		ZSTD_CCtx *c = ZSTD_createCCtx();
		fm_decompressor dctx = { 0 };
		assert_non_null(c);
		assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 3)));
		assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, big ? 24 : 18)));
		ZSTD_inBuffer in = { data, N, 0 };
		ZSTD_outBuffer o = { out + 4, fm_compress_bound(N) - 4, 0 };
		assert_int_equal(ZSTD_compressStream2(c, &o, &in, ZSTD_e_flush), 0);
		fm_put_le32(out, (uint32_t)o.pos);   /* one piece of the main stream */
		assert_true(fm_decompress_stream(&dctx, out, 4 + o.pos, back, N) == !big);
		ZSTD_freeCCtx(c);
		fm_decompressor_free(&dctx);
	}
}

/* A stream whose level changes with the link (AUTO): zstd takes no new
 * parameters inside its frame, so the frame ends there and a new one starts
 * in the same piece of our stream; every piece stays compressed and decodes
 * in order. */
static void test_stream_level_changes(void **state)
{
	enum { LEN = 64 * 1024 };
	static const double links[] = { 480e6, 100e6, 400e6, 100e6, 480e6, 100e6 };
	static const int levels[] = { 2, 6, 2, 6, 2, 6 };
	enum { FRAMES = sizeof(links) / sizeof(links[0]) };
	_cleanup_free_ uint8_t *data = fm_xmalloc(LEN), *out = fm_xmalloc(fm_compress_bound(LEN)),
			       *back = fm_xmalloc(LEN);
	fm_compressor z = FM_COMPRESSOR_INIT_STREAM(FM_COMPRESS_AUTO);
	fm_decompressor dctx = { 0 };

	(void)state;
	for (int f = 0; f < FRAMES; f++) {
		for (int i = 0; i < LEN; i++)
			data[i] = (uint8_t)("dict entry key:0000 value "[i % 26] + (i % 997 == 0 ? f : 0));
		size_t c = fm_compress_frame(&z, data, LEN, out, fm_compress_bound(LEN), links[f]);
		assert_true(c > 0 && c < LEN / 4);
		assert_int_equal(z.level, levels[f]);
		assert_true(fm_decompress_stream(&dctx, out, c, back, LEN));
		assert_memory_equal(back, data, LEN);
	}
	assert_int_equal(z.compressed, FRAMES);
	fm_compressor_free(&z);
	fm_decompressor_free(&dctx);
}

/* Memory as a process has it: slabs of 1 KiB random values in 1280-byte
 * slots, and between them pages of structures (hash-table entries: pointers
 * into one region, small counters, zero padding). */
static void process_memory(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t pg = 0; pg < n / 4096; pg++) {
		uint8_t *q = p + pg * 4096;
		if (pg % 4 == 3) {
			for (size_t e = 0; e < 4096 / 32; e++) {
				seed = seed * 6364136223846793005ull + 1442695040888963407ull;
				uint64_t ent[4] = { 0x00007f3a00000000ull | ((seed >> 20) & 0xfffff0), (seed >> 60) + 1,
						    0x00007f3a00000000ull | ((seed >> 36) & 0xffff8), 0 };
				memcpy(q + e * 32, ent, sizeof(ent));
			}
		} else {
			_cleanup_free_ uint8_t *v = random_bytes(4096, seed + pg);
			memcpy(q, v, 4096);
			for (size_t i = 1024; i < 4096; i += 1280)
				memset(q + i, 0, i + 256 <= 4096 ? 256 : 4096 - i);
		}
	}
}

/* A stream at level 2 takes the dense units (structures) through its level-6
 * stream while the link leaves the time: fewer bytes than level 2 alone,
 * every frame decoded in order through the receiver's two contexts. */
static void test_stream_dense_pieces(void **state)
{
	enum { FRAMES = 6 };
	_cleanup_free_ uint8_t *mem = fm_xmalloc(N), *out = fm_xmalloc(fm_compress_bound(N)), *back = fm_xmalloc(N);
	fm_compressor z = FM_COMPRESSOR_INIT_STREAM(FM_COMPRESS_AUTO), plain = FM_COMPRESSOR_INIT_STREAM(2);
	fm_decompressor d = { 0 }, dp = { 0 };
	size_t with = 0, without = 0;

	(void)state;
	z.dense = true;
	for (int f = 0; f < FRAMES; f++) {
		process_memory(mem, N, 77 + f);
		/* time to spare, whatever this machine's speed (what it measured
		 * is forgotten; the next test takes the time away) */
		z.busy = z.zstd_Bps = 0;
		/* an unmeasured link is taken for 1 Gbit/s: level 2 */
		size_t c = fm_compress_frame(&z, mem, N, out, fm_compress_bound(N), 0);
		assert_true(c > 0);
		assert_int_equal(z.level, 2);
		assert_true(fm_decompress_stream(&d, out, c, back, N));
		assert_memory_equal(back, mem, N);
		with += c;
		c = fm_compress_frame(&plain, mem, N, out, fm_compress_bound(N), 0);
		assert_true(c > 0 && fm_decompress_stream(&dp, out, c, back, N));
		assert_memory_equal(back, mem, N);
		without += c;
	}
	assert_int_equal(z.dense_bytes, FRAMES * N / 4);   /* every structure page, nothing else */
	assert_int_equal(plain.dense_bytes, 0);            /* a level asked for is that level */
	/* a stream not allowed the second one (the state in the freeze) */
	fm_compressor state_z = FM_COMPRESSOR_INIT_STREAM(FM_COMPRESS_AUTO);
	fm_decompressor ds = { 0 };
	size_t sc = fm_compress_frame(&state_z, mem, N, out, fm_compress_bound(N), 0);
	assert_true(sc > 0 && fm_decompress_stream(&ds, out, sc, back, N));
	assert_memory_equal(back, mem, N);
	assert_int_equal(state_z.dense_bytes, 0);
	fm_compressor_free(&state_z);
	fm_decompressor_free(&ds);
	assert_true(with < without);
	/* the dense stream's pieces need the dense context: a receiver that
	 * takes them for the main stream's fails */
	fm_decompressor other = { 0 };
	process_memory(mem, N, 99);
	z.busy = z.zstd_Bps = 0;
	size_t c = fm_compress_frame(&z, mem, N, out, fm_compress_bound(N), 0);
	assert_true(fm_get_le32(out) & 0x80000000u);   /* it has dense units */
	other.dctx[0] = d.dctx[0];   /* the main stream's context, in step */
	d.dctx[0] = NULL;
	assert_false(fm_decompress_stream(&other, out, c, back, N));
	fm_compressor_free(&z);
	fm_compressor_free(&plain);
	fm_decompressor_free(&d);
	fm_decompressor_free(&dp);
	fm_decompressor_free(&other);
}

/* Frames of dense units only (zero pages) leave the main stream nothing;
 * its level still changes with the link, its frame's end in front of such a
 * frame's dense piece. */
static void test_stream_dense_only_frames(void **state)
{
	static const double links[] = { 1e9, 1e9, 100e6, 1e9, 1e9 };
	static const bool zero[] = { true, false, false, true, true };
	_cleanup_free_ uint8_t *mem = fm_xmalloc(N), *out = fm_xmalloc(fm_compress_bound(N)), *back = fm_xmalloc(N);
	fm_compressor z = FM_COMPRESSOR_INIT_STREAM(FM_COMPRESS_AUTO);
	fm_decompressor d = { 0 };

	(void)state;
	z.dense = true;
	for (size_t f = 0; f < sizeof(links) / sizeof(links[0]); f++) {
		if (zero[f])
			memset(mem, 0, N);
		else
			process_memory(mem, N, 40 + f);
		z.busy = z.zstd_Bps = 0;   /* time to spare (as in test_stream_dense_pieces) */
		uint64_t before = z.dense_bytes;
		size_t c = fm_compress_frame(&z, mem, N, out, fm_compress_bound(N), links[f]);
		assert_true(c > 0);
		assert_int_equal(z.dense_bytes - before, links[f] > 500e6 ? (zero[f] ? N : N / 4) : 0);
		assert_true(fm_decompress_stream(&d, out, c, back, N));
		assert_memory_equal(back, mem, N);
	}
	fm_compressor_free(&z);
	fm_decompressor_free(&d);
}

/* The dense stream runs on the time the link leaves: on a link far faster
 * than zstd it stops, and the main stream's speed alone decides the rest. */
static void test_stream_dense_only_with_time_to_spare(void **state)
{
	_cleanup_free_ uint8_t *mem = fm_xmalloc(N), *out = fm_xmalloc(fm_compress_bound(N)), *back = fm_xmalloc(N);
	fm_compressor z = FM_COMPRESSOR_INIT_STREAM(FM_COMPRESS_AUTO);
	fm_decompressor d = { 0 };

	(void)state;
	z.dense = true;
	process_memory(mem, N, 5);
	for (int f = 0; f < 12; f++) {
		uint64_t before = z.dense_bytes;
		size_t c = fm_compress_frame(&z, mem, N, out, fm_compress_bound(N), 1e13);   /* 10 Tbit/s */
		if (c > 0) {
			assert_true(fm_decompress_stream(&d, out, c, back, N));
			assert_memory_equal(back, mem, N);
		}
		if (f >= 3)   /* a warm-up, a measure, and then no more */
			assert_int_equal(z.dense_bytes, before);
	}
	assert_true(z.busy > 0.8);
	/* a slow link (level 6 already): no second stream */
	fm_compressor slow = FM_COMPRESSOR_INIT_STREAM(FM_COMPRESS_AUTO);
	fm_decompressor ds = { 0 };
	slow.dense = true;
	size_t c = fm_compress_frame(&slow, mem, N, out, fm_compress_bound(N), 50e6);
	assert_true(c > 0 && fm_decompress_stream(&ds, out, c, back, N));
	assert_int_equal(slow.level, 6);
	assert_int_equal(slow.dense_bytes, 0);
	fm_compressor_free(&z);
	fm_compressor_free(&slow);
	fm_decompressor_free(&d);
	fm_decompressor_free(&ds);
}

/* A stream's frame from a peer is checked piece by piece: a length past the
 * end, a piece of nothing, a truncated header, garbage: refused, never read
 * out of bounds. */
static void test_stream_hostile_pieces(void **state)
{
	_cleanup_free_ uint8_t *mem = fm_xmalloc(N), *out = fm_xmalloc(fm_compress_bound(N) + 64),
			       *back = fm_xmalloc(N);
	fm_compressor z = FM_COMPRESSOR_INIT_STREAM(FM_COMPRESS_AUTO);

	(void)state;
	z.dense = true;
	process_memory(mem, N, 3);
	size_t c = fm_compress_frame(&z, mem, N, out, fm_compress_bound(N), 0);
	assert_true(c > 8);
	uint32_t first = fm_get_le32(out);
	/* the first piece's length one too long, zero, without its dense bit or with it */
	const uint32_t bad[] = { first + 1, first & 0x80000000u, first ^ 0x80000000u, 0xffffffffu };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fm_decompressor d = { 0 };
		fm_put_le32(out, bad[i]);
		assert_false(fm_decompress_stream(&d, out, c, back, N));
		fm_decompressor_free(&d);
	}
	fm_put_le32(out, first);
	for (size_t cut = 1; cut < 4; cut++) {   /* a frame ending inside a header */
		fm_decompressor d = { 0 };
		assert_false(fm_decompress_stream(&d, out, c - (c - 4 - (first & 0x7fffffffu)) + cut, back, N));
		fm_decompressor_free(&d);
	}
	_cleanup_free_ uint8_t *junk = random_bytes(4096, 17);
	for (size_t n = 0; n <= 64; n++) {
		fm_decompressor d = { 0 };
		assert_false(fm_decompress_stream(&d, junk, n, back, N));
		fm_decompressor_free(&d);
	}
	fm_decompressor d = { 0 };
	assert_true(fm_decompress_stream(&d, out, c, back, N));   /* the frame itself is fine */
	assert_memory_equal(back, mem, N);
	fm_decompressor_free(&d);
	fm_compressor_free(&z);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_looks_compressible),
		cmocka_unit_test(test_auto),
		cmocka_unit_test(test_auto_random_looking_frames_that_compress),
		cmocka_unit_test(test_first_compression_is_not_a_measure),
		cmocka_unit_test(test_off_and_forced),
		cmocka_unit_test(test_level_for_link),
		cmocka_unit_test(test_auto_pays_while_zstd_outruns_the_link),
		cmocka_unit_test(test_stream_small_frames),
		cmocka_unit_test(test_stream_keeps_what_it_tried),
		cmocka_unit_test(test_stream_window_bounded),
		cmocka_unit_test(test_stream_level_changes),
		cmocka_unit_test(test_stream_dense_pieces),
		cmocka_unit_test(test_stream_dense_only_frames),
		cmocka_unit_test(test_stream_dense_only_with_time_to_spare),
		cmocka_unit_test(test_stream_hostile_pieces),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
