#define FM_ARCHIVE_DL_IMPL
#include "runtime/archive_dl.h"

#include <stddef.h>

#include "basic/dl.h"

FM_DL_LIBRARY(FM_ARCHIVE_SYMBOLS, "libarchive.so.13", "libarchive13");

int fm_archive_acquire(fm_error *err) { return fm_dl_acquire(&lib, err); }
void fm_archive_release(void) { fm_dl_release(&lib); }
