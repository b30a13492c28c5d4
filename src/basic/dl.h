/* A shared library loaded with dlopen() only while something needs it.
 *
 * As systemd does with its optional heavy libraries: an idle daemon should
 * not carry in its resident memory what it rarely uses (libarchive pulls in
 * libxml2 and ICU; libldns pulls in OpenSSL's libcrypto and libssl, ~1.9 MiB
 * resident for a daemon that has no DNS server to update).  A user lists its
 * symbols once (an X-macro), declares a function pointer for each, and calls
 * through those after fm_dl_acquire: see runtime/archive_dl.h and
 * network/ldns_dl.h. */
#pragma once
#include <pthread.h>

#include "basic/error.h"

typedef struct fm_dl {
	const char *soname;        /* "libldns.so.3" */
	const char *package;       /* Debian's package that has it, for the error */
	const char *const *names;  /* its symbols, NULL-terminated */
	void **const *slots;       /* where each one's address goes, in the same order */
	pthread_mutex_t lock;
	void *handle;
	int refs;
} fm_dl;

#define FM_DL_INIT(soname, package, names, slots) { soname, package, names, slots, PTHREAD_MUTEX_INITIALIZER, NULL, 0 }

/* In a user's header: a pointer fm_dl_NAME for each symbol of SYMBOLS (the
 * X-macro); in its .c, FM_DL_LIBRARY defines them and `lib`, the fm_dl to
 * acquire and release. */
#define FM_DL_DECLARE_(f) extern __typeof__(f) *fm_dl_##f;
#define FM_DL_DEFINE_(f) __typeof__(f) *fm_dl_##f;
#define FM_DL_NAME_(f) #f,
#define FM_DL_SLOT_(f) (void **)&fm_dl_##f,
#define FM_DL_DECLARE(SYMBOLS) SYMBOLS(FM_DL_DECLARE_)
#define FM_DL_LIBRARY(SYMBOLS, soname, package)                                                   \
	SYMBOLS(FM_DL_DEFINE_)                                                                    \
	static const char *const names[] = { SYMBOLS(FM_DL_NAME_) NULL };                          \
	static void **const slots[] = { SYMBOLS(FM_DL_SLOT_) };                                    \
	static fm_dl lib = FM_DL_INIT(soname, package, names, slots)

/* Loads the library and fills every slot (reference counted); 0 or -ENOENT
 * with err filled (err may be NULL). */
int fm_dl_acquire(fm_dl *d, fm_error *err);
/* Drops a reference; the last one unloads the library. */
void fm_dl_release(fm_dl *d);
