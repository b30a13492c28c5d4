/* Delta Transfer, compression: zstd on a stream of frames, only where it pays.
 *
 * Used by both carriers of a migration: the page relay (CRIU's pages) and the
 * data channel (images and the writable layer).  A sender keeps one
 * fm_compressor per direction and hands it each frame:
 *
 *   FM_COMPRESS_OFF    never;
 *   level 1..19        always tried at that level (kept when 3 % smaller);
 *   FM_COMPRESS_AUTO   a frame whose sampled bytes look random (encrypted,
 *                      already compressed, the memory of most workloads) goes
 *                      raw without spending CPU on it, but for the first and
 *                      one in 32 that are tried: while those tries save, such frames are
 *                      compressed too (a sample can miss what a frame has
 *                      to give: Redis's slabs of random values, 1 KiB each,
 *                      sample as random and compress to 78 %); any other frame is
 *                      compressed while it saves at least 3 % and zstd
 *                      outruns the link (measured: how well such frames
 *                      compress and how fast zstd runs here; it compresses
 *                      one frame while the last is on the wire), at the
 *                      level the link speed calls for.
 *
 * A stream (.stream) keeps a second zstd stream for dense pages (structures:
 * 4 KiB units with many zero bytes) at level 6 under AUTO, while the link
 * leaves compression time to spare; each of its frames is a run of pieces,
 * each of one of the two streams (compress.c says why and what it saved).
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FM_COMPRESS_OFF 0
#define FM_COMPRESS_AUTO (-1)
/* Below this a frame is a request or a reply: never worth compressing alone. */
#define FM_COMPRESS_MIN 4096
/* ... but a frame of a stream (below) is compressed with what came before:
 * the small files of a checkpoint (a few hundred bytes of protobuf each)
 * shrink there, where alone they would not. */
#define FM_COMPRESS_STREAM_MIN 128
/* The largest frame a stream takes apart into dense units and the rest (a
 * larger one goes whole through the main stream). */
#define FM_COMPRESS_MAX_FRAME (1024 * 1024)
/* The level of a stream's dense units (AUTO, at a lower level) */
#define FM_COMPRESS_DENSE_LEVEL 6

typedef struct fm_compressor {
	int mode;              /* OFF, AUTO or a level */
	bool stream;           /* the frames it compresses are one zstd stream: each
	                        * uses what the earlier ones held, the receiver
	                        * decodes them in order with one context
	                        * (fm_decompress_stream), and a frame once
	                        * compressed goes compressed whatever it saved */
	int applied;           /* the level the context is set up for (0 = none) */
	void *cctx;            /* ZSTD_CCtx, made on first use */
	bool dense;            /* a stream that may send dense units through a second one
	                        * (AUTO): one that runs beside a long transfer, whose
	                        * link hides the time (the page relay), not one whose
	                        * every millisecond is downtime (the state in the freeze) */
	void *dense_cctx;      /* ... that second stream's */
	double busy;           /* compression time over the link time of what it made, smoothed
	                        * (0 = not measured): the dense context runs while it is low */
	bool dense_failed;     /* the dense context could not be made: never again */
	uint64_t dense_bytes;  /* raw bytes compressed through the dense context */
	uint8_t *gather;       /* a frame's units sorted main, dense (FM_COMPRESS_MAX_FRAME) */
	double ratio;          /* compressed / raw of compressible-looking frames, smoothed */
	double zstd_Bps;       /* compression speed in this thread's CPU time (the time the
	                        * scheduler gave to others is not zstd's), smoothed;
	                        * 0 = not measured yet (the first
	                        * compression is not a measure: a cold context and first-touch
	                        * page faults made it 3.5x slower here, and turned AUTO off;
	                        * nor is a small frame's) */
	uint32_t runs;         /* compressions done */
	uint32_t tried;        /* ... of them of compressible-looking frames */
	unsigned since_probe;
	double random_ratio;   /* compressed / raw of random-looking frames tried, smoothed */
	uint32_t random_tried; /* ... how many */
	unsigned since_random_probe;
	uint32_t frames, compressed;
	int level;             /* the level of the last compressed frame (0 = none yet) */
} fm_compressor;

#define FM_COMPRESSOR_INIT(m) { .mode = (m), .ratio = 1.0, .random_ratio = 1.0 }
#define FM_COMPRESSOR_INIT_STREAM(m) { .mode = (m), .stream = true, .ratio = 1.0, .random_ratio = 1.0 }

/* The zstd level worth running in front of a link of link_bps (0 = unknown):
 * the highest level whose compression speed comfortably outruns the link. */
int fm_compress_level_for_link(double link_bps);

/* Does a sample of p[0..n) look compressible (byte entropy clearly below 8 bits)?
 * A few microseconds for any n. */
bool fm_compress_looks_compressible(const uint8_t *p, size_t n);

/* The capacity dst must have for n bytes. */
size_t fm_compress_bound(size_t n);

/* Compresses src[0..n) into dst when it pays on a link of link_bps (0 = not
 * measured); returns the compressed length, or 0: send the frame raw.
 * dst holds fm_compress_bound(n). */
size_t fm_compress_frame(fm_compressor *z, const void *src, size_t n, void *dst, size_t cap, double link_bps);

/* A receiver's zstd contexts (a stream's two), made on first use. */
typedef struct fm_decompressor {
	void *dctx[2];
	uint8_t *scatter;      /* a frame's two pieces decoded, before the units go back in order */
} fm_decompressor;

/* Decompresses a frame that must become exactly raw_len bytes; false if it
 * does not. */
bool fm_decompress_frame(fm_decompressor *d, const void *src, size_t n, void *dst, size_t raw_len);
/* The same for the next frame of a stream (a compressor with .stream): the
 * frames in the order they were compressed, through the same *d. */
bool fm_decompress_stream(fm_decompressor *d, const void *src, size_t n, void *dst, size_t raw_len);

void fm_compressor_free(fm_compressor *z);
void fm_decompressor_free(fm_decompressor *d);
