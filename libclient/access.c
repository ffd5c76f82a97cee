/*
 * access.c: what a tool tells a person who cannot use a segment: which
 * group to join when the state object is not theirs to open, and that no
 * broker keeps it when its heartbeat stopped.  Compiled into the tools,
 * never into the library, which prints nothing and names no group.
 */
#include <sys/stat.h>
#include <sys/types.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "access.h"
#include "clock.h"

#define GROUPS_MAX	256	/* supplementary groups we look through */

const char *
access_group(gid_t gid, int with_id, char *buf, size_t len)
{
	struct group gr, *res = NULL;
	char grbuf[4096];

	if (getgrgid_r(gid, &gr, grbuf, sizeof(grbuf), &res) != 0 ||
	    res == NULL)
		/* Bare, the number usermod -aG and chgrp take. */
		snprintf(buf, len, with_id ? "gid %u" : "%u", (unsigned)gid);
	else if (with_id)
		snprintf(buf, len, "%s (gid %u)", gr.gr_name, (unsigned)gid);
	else
		snprintf(buf, len, "%s", gr.gr_name);
	return buf;
}

const char *
access_user(uid_t uid, int with_id, char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char pwbuf[4096];

	if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) != 0 ||
	    res == NULL)
		snprintf(buf, len, "uid %u", (unsigned)uid);
	else if (with_id)
		snprintf(buf, len, "%s (uid %u)", pw.pw_name, (unsigned)uid);
	else
		snprintf(buf, len, "%s", pw.pw_name);
	return buf;
}

/* Whether this process has gid among its groups. */
static int
in_group(gid_t gid)
{
	gid_t g[GROUPS_MAX];
	int n;

	if (getegid() == gid)
		return 1;
	if ((n = getgroups(GROUPS_MAX, g)) < 0)
		return 0;
	for (int i = 0; i < n; i++)
		if (g[i] == gid)
			return 1;
	return 0;
}

/* Whether the group database lists our user in gid (a later login's). */
static int
listed_in(gid_t gid)
{
	struct passwd pw, *res = NULL;
	char pwbuf[4096];
	gid_t g[GROUPS_MAX];
	int n = GROUPS_MAX;

	if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof(pwbuf), &res) != 0 ||
	    res == NULL || getgrouplist(pw.pw_name, pw.pw_gid, g, &n) < 0)
		return 0;
	for (int i = 0; i < n; i++)
		if (g[i] == gid)
			return 1;
	return 0;
}

void
access_why(const char *segment, char *buf, size_t len)
{
	char conf[256], state[256], path[300], owner[64], group[64], me[64];
	struct stat st;
	mode_t mode;

	if (seg_names(segment, conf, state, sizeof(conf)) < 0) {
		snprintf(buf, len, "permission denied");
		return;
	}
	/* The state object is read and written; the config object read. */
	snprintf(path, sizeof(path), "/dev/shm%s", state);
	if (access(path, R_OK | W_OK) == 0)
		snprintf(path, sizeof(path), "/dev/shm%s", conf);
	if (stat(path, &st) < 0) {
		snprintf(buf, len, "permission denied; %s: %s", path,
		    strerror(errno));
		return;
	}
	mode = st.st_mode & 07777;
	access_user(st.st_uid, 0, owner, sizeof(owner));
	access_group(st.st_gid, 0, group, sizeof(group));
	access_user(geteuid(), 0, me, sizeof(me));
	if ((mode & 060) != 060 && strcmp(path + 8, state) == 0)
		snprintf(buf, len, "permission denied: %s is %s:%s, mode %04o, "
		    "which gives its group no read and write; the broker's "
		    "config sets that: `mode = 0660' and `group = GROUP' (the "
		    "workers' group) in [broker], applied when it starts",
		    path, owner, group, (unsigned)mode);
	else if (st.st_gid == 0)
		snprintf(buf, len, "permission denied: %s is %s:%s, mode %04o: "
		    "the broker's config names no workers' group; set `group "
		    "= GROUP' in its [broker] (a restart applies it), then "
		    "join that group", path, owner, group, (unsigned)mode);
	else if (in_group(st.st_gid))
		snprintf(buf, len, "permission denied: %s is %s:%s, mode %04o, "
		    "and %s is in group %s: the object was changed meanwhile, "
		    "or a security module refuses it", path, owner, group,
		    (unsigned)mode, me, group);
	else if (listed_in(st.st_gid))
		snprintf(buf, len, "permission denied: %s is %s:%s, mode %04o; "
		    "%s was added to group %s, but this login does not have "
		    "it yet: log in again (or run `newgrp %s')", path, owner,
		    group, (unsigned)mode, me, group, group);
	else
		snprintf(buf, len, "permission denied: %s is %s:%s, mode %04o; "
		    "join group %s (`sudo usermod -aG %s %s', then log in "
		    "again)", path, owner, group, (unsigned)mode, group, group,
		    me);
}

int
access_broker(const struct seg_map *m, char *why, size_t len)
{
	int32_t pid;
	uint64_t hb, now, age;

	/*
	 * Relaxed: a guess for a message.  A broker that starts just now
	 * writes its pid, then beats; either read here may be one tick old.
	 */
	pid = atomic_load_explicit(&m->hdr->broker_pid, memory_order_relaxed);
	hb = atomic_load_explicit(&m->hdr->heartbeat_ns, memory_order_relaxed);
	now = now_ns();
	age = now > hb ? now - hb : 0;
	if (pid <= 0) {
		snprintf(why, len, "no broker runs it (the last one stopped)");
		return 0;
	}
	if (age > ACCESS_STALE_NS) {
		snprintf(why, len, "its broker (pid %" PRId32 ") has not beaten "
		    "for %" PRIu64 ".%01" PRIu64 "s: it died or hangs", pid,
		    age / 1000000000, age % 1000000000 / 100000000);
		return 0;
	}
	return 1;
}
