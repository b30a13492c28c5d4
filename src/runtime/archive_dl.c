#define FM_ARCHIVE_DL_IMPL
#include "runtime/archive_dl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>

#define FM_ARCHIVE_DEFINE(f) __typeof__(f) *fm_dl_##f;
FM_ARCHIVE_SYMBOLS(FM_ARCHIVE_DEFINE)
#undef FM_ARCHIVE_DEFINE

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *handle;
static int refs;

int fm_archive_acquire(fm_error *err)
{
	int r = 0;

	pthread_mutex_lock(&lock);
	if (refs == 0) {
		handle = dlopen("libarchive.so.13", RTLD_NOW | RTLD_LOCAL);
		if (!handle) {
			r = fm_error_set(err, -ENOENT, "cannot load libarchive (apt-get install libarchive13): %s", dlerror());
			goto out;
		}
#define FM_ARCHIVE_LOAD(f)                                                                                   \
		if (!(fm_dl_##f = (__typeof__(f) *)dlsym(handle, #f))) {                                     \
			r = fm_error_set(err, -ENOENT, "libarchive lacks %s", #f);                             \
			dlclose(handle);                                                                     \
			goto out;                                                                            \
		}
		FM_ARCHIVE_SYMBOLS(FM_ARCHIVE_LOAD)
#undef FM_ARCHIVE_LOAD
	}
	refs++;
out:
	pthread_mutex_unlock(&lock);
	return r;
}

void fm_archive_release(void)
{
	pthread_mutex_lock(&lock);
	if (refs > 0 && --refs == 0) {
		dlclose(handle);
		handle = NULL;
	}
	pthread_mutex_unlock(&lock);
}
