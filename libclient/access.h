/* access.h: private; why a segment cannot be used, for the tools' messages. */
#ifndef TG_ACCESS_H
#define TG_ACCESS_H

#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>

#include "seg.h"

/* A heartbeat older than this: no broker keeps the segment. */
#define ACCESS_STALE_NS	(3 * UINT64_C(1000000000))

/*
 * Why this process may not open segment's objects (tg_open said
 * -EACCES), as a sentence for a person into buf: whose the object is,
 * its mode, and what to do (join the group, log in again, or have the
 * broker's config give the group access).  Never fails: at worst it says
 * what stat(2) said.
 */
void	access_why(const char *segment, char *buf, size_t len);

/*
 * Whether a broker keeps the mapped segment m: 1 if one does, else 0
 * with why (len bytes) saying what shows it: no broker pid (the last one
 * stopped), or a heartbeat older than ACCESS_STALE_NS (it died or hangs).
 */
int	access_broker(const struct seg_map *m, char *why, size_t len);

/*
 * A user or group by name for a message into buf: "nobody", with_id
 * "nobody (uid 65534)"; without a name "uid 65534", and for a group
 * "gid 65533" with_id, else "65533" (what usermod -aG takes).  Shared by
 * the tools and the broker (own.c).
 */
const char *access_user(uid_t uid, int with_id, char *buf, size_t len);
const char *access_group(gid_t gid, int with_id, char *buf, size_t len);

#endif /* TG_ACCESS_H */
