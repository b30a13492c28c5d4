#include "basic/dl.h"

#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>

int fm_dl_acquire(fm_dl *d, fm_error *err)
{
	int r = 0;

	pthread_mutex_lock(&d->lock);
	if (d->refs == 0) {
		d->handle = dlopen(d->soname, RTLD_NOW | RTLD_LOCAL);
		if (!d->handle) {
			r = fm_error_set(err, -ENOENT, "cannot load %s (apt-get install %s): %s", d->soname, d->package,
					 dlerror());
			goto out;
		}
		for (size_t i = 0; d->names[i]; i++)
			/* dlsym(3)'s own idiom for a pointer to a function */
			if (!(*d->slots[i] = dlsym(d->handle, d->names[i]))) {
				r = fm_error_set(err, -ENOENT, "%s lacks %s", d->soname, d->names[i]);
				dlclose(d->handle);
				d->handle = NULL;
				for (size_t k = 0; k < i; k++)
					*d->slots[k] = NULL;
				goto out;
			}
	}
	d->refs++;
out:
	pthread_mutex_unlock(&d->lock);
	return r;
}

void fm_dl_release(fm_dl *d)
{
	pthread_mutex_lock(&d->lock);
	if (d->refs > 0 && --d->refs == 0) {
		dlclose(d->handle);
		d->handle = NULL;
		for (size_t i = 0; d->names[i]; i++)
			*d->slots[i] = NULL;   /* nothing points into what is gone */
	}
	pthread_mutex_unlock(&d->lock);
}
