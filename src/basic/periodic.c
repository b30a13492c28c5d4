#include "basic/periodic.h"

#include <errno.h>
#include <time.h>

#include "basic/util.h"

static void *periodic_thread(void *opaque)
{
	fm_periodic *p = opaque;
	bool call = p->at_once;
	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		if (call) {
			pthread_mutex_unlock(&p->lock);
			p->fn(p->opaque);
			pthread_mutex_lock(&p->lock);
		}
		call = true;
		int64_t next = fm_now_mono_us() + p->interval_us;
		struct timespec until = { .tv_sec = next / 1000000, .tv_nsec = (next % 1000000) * 1000 };
		while (!p->stop && pthread_cond_timedwait(&p->wake, &p->lock, &until) == 0)
			;
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int fm_periodic_start(fm_periodic *p, int64_t interval_us, bool at_once, void (*fn)(void *opaque), void *opaque)
{
	pthread_condattr_t ca;
	*p = (fm_periodic){ .interval_us = interval_us, .at_once = at_once, .fn = fn, .opaque = opaque };
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->wake, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&p->thread, NULL, periodic_thread, p) != 0) {
		pthread_mutex_destroy(&p->lock);
		pthread_cond_destroy(&p->wake);
		return -EAGAIN;
	}
	p->running = true;
	return 0;
}

void fm_periodic_stop(fm_periodic *p)
{
	if (!p->running)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->wake);
	p->running = false;
}
