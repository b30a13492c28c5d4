/* Streams to endpoints, bounded by deadlines (monotonic milliseconds,
 * fm_now_mono_ms()). */
#pragma once
#include <stdint.h>

#include "basic/error.h"

/* A connected socket to "unix:PATH" or "HOST:PORT" (TCP, non-blocking), or
 * -errno with err saying which endpoint could not be reached and why. */
int fm_dial(const char *endpoint, int64_t deadline, fm_error *err);
/* 0 once fd is ready for events (POLLIN, POLLOUT), -ETIMEDOUT at the deadline. */
int fm_wait_fd(int fd, short events, int64_t deadline);
