#define FM_LDNS_DL_IMPL
#include "network/ldns_dl.h"

#include <stddef.h>

#include "basic/dl.h"

FM_DL_LIBRARY(FM_LDNS_SYMBOLS, "libldns.so.3", "libldns3");

int fm_ldns_acquire(fm_error *err) { return fm_dl_acquire(&lib, err); }
void fm_ldns_release(void) { fm_dl_release(&lib); }
