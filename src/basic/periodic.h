/* A thread that calls a function every interval until stopped (the Resource
 * Monitor's sampling, the Migration Planner's automatic mode).  The wait is
 * the period itself: a stop ends it at once. */
#pragma once
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct fm_periodic {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread;
	bool running, stop, at_once;
	int64_t interval_us;
	void (*fn)(void *opaque);
	void *opaque;
} fm_periodic;

/* at_once: the first call right away, else after one interval.  0 or -EAGAIN. */
int fm_periodic_start(fm_periodic *p, int64_t interval_us, bool at_once, void (*fn)(void *opaque), void *opaque);
/* Waits for a call in progress to end; harmless on one never started. */
void fm_periodic_stop(fm_periodic *p);
