/* The one way to open a stream to an endpoint ("unix:PATH" or "HOST:PORT"),
 * bounded by a deadline: the HTTP client, the SDN Controller Interface. */
#include "basic/dial.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "basic/util.h"

/* Waits until fd is ready for `events` or the deadline passes. */
int fm_wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - fm_now_mono_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd p = { fd, events, 0 };
		int r = poll(&p, 1, (int)left);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

int fm_dial(const char *endpoint, int64_t deadline, fm_error *err)
{
	_cleanup_close_ int fd = -1;
	int r;

	if (!strncmp(endpoint, "unix:", 5)) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		if (strlen(endpoint + 5) >= sizeof(sa.sun_path))
			return fm_error_set(err, -ENAMETOOLONG, "socket path too long: %s", endpoint + 5);
		strcpy(sa.sun_path, endpoint + 5);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return fm_error_set(err, -errno, "socket: %m");
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			return fm_error_set(err, errno == ENOENT ? -ECONNREFUSED : -errno, "cannot reach %s: %m", endpoint);
		return TAKE_FD(fd);
	}

	char host[256], port[16];
	int p;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
	if (fm_split_hostport(endpoint, host, sizeof(host), &p) < 0)
		return fm_error_set(err, -EINVAL, "invalid address \"%s\": expected HOST:PORT or unix:PATH", endpoint);
	snprintf(port, sizeof(port), "%d", p);
	if ((r = getaddrinfo(host, port, &hints, &ai)) != 0)
		return fm_error_set(err, -EHOSTUNREACH, "cannot reach %s: %s", endpoint, gai_strerror(r));
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		freeaddrinfo(ai);
		return fm_error_set(err, -errno, "socket: %m");
	}
	r = connect(fd, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (r < 0 && errno != EINPROGRESS)
		return fm_error_set(err, errno == ECONNREFUSED ? -ECONNREFUSED : -EHOSTUNREACH, "cannot reach %s: %m",
				    endpoint);
	if (r < 0) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if ((r = fm_wait_fd(fd, POLLOUT, deadline)) < 0)
			return fm_error_set(err, r, "cannot reach %s: %s", endpoint,
					    r == -ETIMEDOUT ? "connection timed out" : strerror(-r));
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr)
			return fm_error_set(err, soerr == ECONNREFUSED ? -ECONNREFUSED : -EHOSTUNREACH,
					    "cannot reach %s: %s", endpoint, strerror(soerr));
	}
	return TAKE_FD(fd);
}

