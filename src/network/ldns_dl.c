#define FM_LDNS_DL_IMPL
#include "network/ldns_dl.h"

#include <stddef.h>

#include "basic/dl.h"

#define FM_LDNS_DEFINE(f) __typeof__(f) *fm_dl_##f;
FM_LDNS_SYMBOLS(FM_LDNS_DEFINE)
#undef FM_LDNS_DEFINE

#define FM_LDNS_NAME(f) #f,
#define FM_LDNS_SLOT(f) (void **)&fm_dl_##f,
static const char *const names[] = { FM_LDNS_SYMBOLS(FM_LDNS_NAME) NULL };
static void **const slots[] = { FM_LDNS_SYMBOLS(FM_LDNS_SLOT) };
static fm_dl lib = FM_DL_INIT("libldns.so.3", "libldns3", names, slots);

int fm_ldns_acquire(fm_error *err) { return fm_dl_acquire(&lib, err); }
void fm_ldns_release(void) { fm_dl_release(&lib); }
