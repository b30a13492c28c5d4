/* fm-udpecho: answers every UDP datagram on PORT with the same bytes (the
 * network benchmark's container: the client sends a sequence number every
 * millisecond and counts the echoes).  Static, for a busybox root.
 *   fm-udpecho PORT */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(argc > 1 ? (uint16_t)atoi(argv[1]) : 7000) };
	char buf[2048];
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("fm-udpecho");
		return 1;
	}
	for (;;) {
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
		if (n > 0)
			(void)sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
	}
}
