/* notify.c: sd_notify without libsystemd, for Type=notify supervisors. */
#include <sys/socket.h>
#include <sys/un.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"

/*
 * Send msg ("READY=1", "STATUS=...") to $NOTIFY_SOCKET, if set.  Returns
 * 1 if sent, 0 if there is no socket to send to, or -errno.  A leading
 * '@' names an abstract socket.
 */
int
notify_send(const char *msg)
{
	struct sockaddr_un sun;
	const char *path = getenv("NOTIFY_SOCKET");
	size_t len;
	socklen_t slen;
	int fd, r = 1;

	if (path == NULL || *path == '\0')
		return 0;
	if ((path[0] != '/' && path[0] != '@') ||
	    (len = strlen(path)) >= sizeof(sun.sun_path))
		return -EINVAL;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, len);
	if (sun.sun_path[0] == '@')
		sun.sun_path[0] = '\0';
	slen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL,
	    (struct sockaddr *)&sun, slen) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* The watchdog interval systemd asked for, in ns; 0 if none. */
uint64_t
notify_watchdog_ns(void)
{
	const char *s = getenv("WATCHDOG_USEC"), *p = getenv("WATCHDOG_PID");
	char *end;
	unsigned long long us;

	if (s == NULL)
		return 0;
	if (p != NULL && atoi(p) != getpid())
		return 0;
	errno = 0;
	us = strtoull(s, &end, 10);
	if (errno || *end != '\0' || us == 0)
		return 0;
	return (uint64_t)us * 1000;
}
