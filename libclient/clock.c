/* clock.c: the host's CLOCK_MONOTONIC from inside a time namespace. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"

_Atomic int64_t clock_mono_off_ns;

/*
 * A process in a time namespace (unshare --time --monotonic 86400) reads
 * CLOCK_MONOTONIC shifted by its namespace's offset.  Every time in the
 * segment (TATs, window slots, pauses, the heartbeat) is the host's, so a
 * shifted reading would push a TAT a day ahead for everyone, or hide a
 * worker's window counts from the rest.  The kernel says the offset in
 * /proc/self/timens_offsets ("monotonic SECS NSECS"); a kernel without
 * time namespaces has no such file, and then there is no offset.
 */
int
clock_init(void)
{
	char buf[256], *p;
	int64_t sec = 0, nsec = 0;
	ssize_t n;
	int fd;

	if ((fd = open("/proc/self/timens_offsets", O_RDONLY | O_CLOEXEC)) <
	    0) {
		/* No file under a mounted /proc: no time namespaces. */
		if (errno == ENOENT && access("/proc/self/stat", F_OK) == 0) {
			atomic_store_explicit(&clock_mono_off_ns, 0,
			    memory_order_relaxed);
			return 0;
		}
		return -errno;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	for (p = buf; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 :
	    NULL)
		if (sscanf(p, "monotonic %" SCNd64 " %" SCNd64, &sec,
		    &nsec) == 2) {
			atomic_store_explicit(&clock_mono_off_ns,
			    sec * 1000000000 + nsec, memory_order_relaxed);
			return 0;
		}
	return -EIO;
}
