/* Image Manager: a content-addressed store of container root filesystems.
 *
 * An image is a tar archive (the blob) named by its SHA-256 digest, plus the tree
 * it unpacks to (the read-only lower layer of every container made from it), plus
 * human names (refs) pointing at digests.  Layout below the store root:
 *
 *   blobs/sha256/<hex>      the archive, immutable
 *   rootfs/<hex>/           unpacked, read-only by convention
 *   refs/<name>             file holding "sha256:<hex>\n"
 *
 * Importing a directory makes a deterministic archive of it (sorted names, so the
 * same tree gives the same digest); importing a tarball hashes it as it is.
 * Archives are unpacked with libarchive's secure flags (no "..", no absolute
 * paths, no writing through symlinks).
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "basic/error.h"

#define FM_DIGEST_LEN 72 /* "sha256:" + 64 hex + NUL, rounded */

typedef struct fm_image {
	char name[64];
	char digest[FM_DIGEST_LEN];
	uint64_t size;      /* blob bytes */
	int64_t created_ms; /* wall clock, from the ref file's mtime */
} fm_image;

typedef struct fm_image_store fm_image_store;

int fm_image_store_open(const char *root, fm_image_store **out, fm_error *err);
void fm_image_store_free(fm_image_store *s);

/* Imports a directory or a tar archive (optionally gzip/zstd/xz compressed) under
 * `name` (fm_name_valid); an existing name is re-pointed. */
int fm_image_import(fm_image_store *s, const char *name, const char *path, fm_image *out,
		    fm_error *err);
/* Adopts a blob received from a peer: verifies its SHA-256 equals `digest`, moves it
 * into the store, unpacks it and points `name` at it.  blob_path is consumed. */
int fm_image_import_blob(fm_image_store *s, const char *name, const char *blob_path,
			 const char *digest, fm_image *out, fm_error *err);
/* By name or by "sha256:<hex>" digest; -ENOENT if unknown. */
int fm_image_lookup(fm_image_store *s, const char *name_or_digest, fm_image *out);
int fm_image_list(fm_image_store *s, fm_image **out, size_t *n);
int fm_image_remove(fm_image_store *s, const char *name, fm_error *err);

/* Paths into the store for a digest (caller frees). */
char *fm_image_rootfs_path(fm_image_store *s, const char *digest);
char *fm_image_blob_path(fm_image_store *s, const char *digest);
/* A fresh temporary file path inside the store (same filesystem as blobs/). */
char *fm_image_tmp_path(fm_image_store *s);

/* "sha256:<hex>" syntax check. */
bool fm_digest_valid(const char *digest);
/* SHA-256 of a file as "sha256:<hex>". */
int fm_sha256_file(const char *path, char out[FM_DIGEST_LEN], fm_error *err);

/* Packs and unpacks image archives in a child process: exe (the daemon's own
 * binary) run with --image-helper; NULL (the default): in this process. */
void fm_image_store_set_helper(fm_image_store *s, const char *exe);
/* The child's side: `exe --image-helper archive SRC DST` | `unpack BLOB DEST
 * DIGEST`; returns the exit status. */
int fm_image_helper_main(int argc, char **argv);
