/* own.h: private; whose the segment's objects are, and the broker's lock. */
#ifndef TG_OWN_H
#define TG_OWN_H

#include <sys/types.h>

/* The widest mode of the config object: nobody else may write it. */
#define OWN_CONF_MODE_MAX	0755

/* Which object own_check looks at: the rule and the fix differ. */
enum own_kind {
	OWN_CONF,		/* <segment>.conf: only the broker writes */
	OWN_STATE,		/* <segment>: no wider than `mode' */
	OWN_LOCK,		/* <segment>.lock: 0600; --reset leaves it */
};

/* The broker's lock on a segment: /dev/shm/<segment>.lock. */
struct seglock {
	int	fd;		/* -1 when not held */
	int	created;	/* this broker made the file */
	char	name[256];	/* "/<segment>.lock", for shm_open */
};

/*
 * Refuse the object open on fd (shm name `name') unless the broker's
 * user owns it, it is a regular file, and its mode is within `widest'.
 * Logs why, whose it is and what to do; returns 0 or -EPERM (-errno if
 * fstat fails).
 */
int	own_check(int fd, const char *name, mode_t widest,
	    enum own_kind kind);

/*
 * Log that we cannot `verb' object `name' (errno err); for another user's
 * object, whose it is and who can remove it.
 */
void	own_explain(const char *name, const char *verb, int err);

/*
 * Give the object open on fd (shm name `name') the config's group, if
 * has_group, and its mode, unless mode is 0: a broker that attaches to a
 * segment a config with another `group' or `mode' made applies them, as
 * a new segment would have them.  Logs each change, and why one cannot
 * be made (the broker's user is neither root nor in the group).  Returns
 * 0 or -errno, logged; the caller goes on either way.
 */
int	own_apply(int fd, const char *name, mode_t mode, int has_group,
	    gid_t group);

/* shm_unlink that is quiet about ENOENT and says who can, if we cannot. */
int	own_unlink(const char *name);

/*
 * Take the broker's lock on `segment', making the lock file if need be.
 * 0; -EAGAIN when another process holds it (*holder: its pid, 0 if it is
 * in another pid namespace); another -errno, logged.
 */
int	seglock_take(struct seglock *l, const char *segment, pid_t *holder);

/* Let go of the lock; `remove' unlinks the lock file first. */
void	seglock_drop(struct seglock *l, int remove);

#endif /* TG_OWN_H */
