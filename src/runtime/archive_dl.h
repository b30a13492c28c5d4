/* libarchive, loaded only while an image is packed or unpacked.
 *
 * libarchive pulls in libxml2, ICU and libstdc++: several MiB of resident memory
 * that an idle daemon has no use for.  As systemd does for its optional heavy
 * libraries, we dlopen() it for the duration of an import and dlclose() it after
 * (libstdc++ stays mapped regardless: the daemon itself packs and unpacks in a
 * child process, `fleximigrated --image-helper`, runtime/image.h).
 * Include this header *instead of* <archive.h>: calls to archive_*() below it go
 * through function pointers filled by fm_archive_acquire().
 */
#pragma once
#include <archive.h>
#include <archive_entry.h>

#include "basic/dl.h"
#include "basic/error.h"

#define FM_ARCHIVE_SYMBOLS(X) \
	X(archive_entry_filetype) X(archive_entry_free) X(archive_entry_new) X(archive_entry_pathname) \
	X(archive_entry_set_filetype) X(archive_entry_set_gid) X(archive_entry_set_hardlink) \
	X(archive_entry_set_mtime) X(archive_entry_set_pathname) X(archive_entry_set_perm) \
	X(archive_entry_set_size) X(archive_entry_set_symlink) X(archive_entry_set_uid) \
	X(archive_entry_xattr_add_entry) X(archive_errno) X(archive_error_string) X(archive_read_data_block) \
	X(archive_read_free) X(archive_read_new) X(archive_read_next_header) X(archive_read_open_fd) \
	X(archive_read_support_filter_all) X(archive_read_support_format_gnutar) \
	X(archive_read_support_format_tar) X(archive_set_error) X(archive_write_close) X(archive_write_data) \
	X(archive_write_data_block) X(archive_write_disk_new) X(archive_write_disk_set_options) \
	X(archive_write_finish_entry) X(archive_write_free) X(archive_write_header) X(archive_write_new) \
	X(archive_write_open) X(archive_write_set_format_pax_restricted)

FM_DL_DECLARE(FM_ARCHIVE_SYMBOLS)

/* Loads libarchive (reference counted); 0 or -errno with err filled. */
int fm_archive_acquire(fm_error *err);
/* Drops a reference; the last one unloads the library. */
void fm_archive_release(void);

#ifndef FM_ARCHIVE_DL_IMPL
#define archive_entry_filetype fm_dl_archive_entry_filetype
#define archive_entry_free fm_dl_archive_entry_free
#define archive_entry_new fm_dl_archive_entry_new
#define archive_entry_pathname fm_dl_archive_entry_pathname
#define archive_entry_set_filetype fm_dl_archive_entry_set_filetype
#define archive_entry_set_gid fm_dl_archive_entry_set_gid
#define archive_entry_set_hardlink fm_dl_archive_entry_set_hardlink
#define archive_entry_set_mtime fm_dl_archive_entry_set_mtime
#define archive_entry_set_pathname fm_dl_archive_entry_set_pathname
#define archive_entry_set_perm fm_dl_archive_entry_set_perm
#define archive_entry_set_size fm_dl_archive_entry_set_size
#define archive_entry_set_symlink fm_dl_archive_entry_set_symlink
#define archive_entry_set_uid fm_dl_archive_entry_set_uid
#define archive_entry_xattr_add_entry fm_dl_archive_entry_xattr_add_entry
#define archive_errno fm_dl_archive_errno
#define archive_error_string fm_dl_archive_error_string
#define archive_read_data_block fm_dl_archive_read_data_block
#define archive_read_free fm_dl_archive_read_free
#define archive_read_new fm_dl_archive_read_new
#define archive_read_next_header fm_dl_archive_read_next_header
#define archive_read_open_fd fm_dl_archive_read_open_fd
#define archive_read_support_filter_all fm_dl_archive_read_support_filter_all
#define archive_read_support_format_gnutar fm_dl_archive_read_support_format_gnutar
#define archive_read_support_format_tar fm_dl_archive_read_support_format_tar
#define archive_set_error fm_dl_archive_set_error
#define archive_write_close fm_dl_archive_write_close
#define archive_write_data fm_dl_archive_write_data
#define archive_write_data_block fm_dl_archive_write_data_block
#define archive_write_disk_new fm_dl_archive_write_disk_new
#define archive_write_disk_set_options fm_dl_archive_write_disk_set_options
#define archive_write_finish_entry fm_dl_archive_write_finish_entry
#define archive_write_free fm_dl_archive_write_free
#define archive_write_header fm_dl_archive_write_header
#define archive_write_new fm_dl_archive_write_new
#define archive_write_open fm_dl_archive_write_open
#define archive_write_set_format_pax_restricted fm_dl_archive_write_set_format_pax_restricted
#endif
