#define FM_ARCHIVE_DL_IMPL
#include "runtime/archive_dl.h"

#include <stddef.h>

#include "basic/dl.h"

#define FM_ARCHIVE_DEFINE(f) __typeof__(f) *fm_dl_##f;
FM_ARCHIVE_SYMBOLS(FM_ARCHIVE_DEFINE)
#undef FM_ARCHIVE_DEFINE

#define FM_ARCHIVE_NAME(f) #f,
#define FM_ARCHIVE_SLOT(f) (void **)&fm_dl_##f,
static const char *const names[] = { FM_ARCHIVE_SYMBOLS(FM_ARCHIVE_NAME) NULL };
static void **const slots[] = { FM_ARCHIVE_SYMBOLS(FM_ARCHIVE_SLOT) };
static fm_dl lib = FM_DL_INIT("libarchive.so.13", "libarchive13", names, slots);

int fm_archive_acquire(fm_error *err) { return fm_dl_acquire(&lib, err); }
void fm_archive_release(void) { fm_dl_release(&lib); }
