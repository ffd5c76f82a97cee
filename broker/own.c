/*
 * own.c: the segment's objects must be the broker's, and one broker owns
 * a segment.  /dev/shm is world-writable: any user can make
 * /dev/shm/<segment>.conf before the broker does, with a layout it would
 * attach to and limits of their choosing.  So every object the broker
 * attaches to is checked on the open fd (never a path, which can change
 * between the check and the use): ours, a regular file, no wider than it
 * should be.  The lock that keeps a second broker off is a file of the
 * broker's own, 0600, which nobody else can open, let alone lock.
 */
#include <sys/stat.h>
#include <sys/mman.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "access.h"
#include "log.h"
#include "own.h"

#define CAP_FOWNER_BIT	3	/* linux/capability.h: CAP_FOWNER */

/* Whether we have CAP_FOWNER, which the sticky bit yields to. */
static int
have_fowner(void)
{
	unsigned long long eff;
	char line[256];
	FILE *f;
	int yes = 0;

	if ((f = fopen("/proc/self/status", "re")) == NULL)
		return geteuid() == 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1) {
			yes = (eff >> CAP_FOWNER_BIT) & 1;
			break;
		}
	fclose(f);
	return yes;
}

/*
 * Whether this broker could unlink an object owned by uid: /dev/shm is
 * sticky (1777), so only the owner, the directory's owner or CAP_FOWNER
 * can remove a file in it.
 */
static int
can_unlink(uid_t uid)
{
	struct stat d;

	if (uid == geteuid() || have_fowner())
		return 1;
	if (stat("/dev/shm", &d) < 0)
		return 1;		/* say --reset; it will say if not */
	return !(d.st_mode & S_ISVTX) || d.st_uid == geteuid();
}

/* Who can remove an object of uid that we cannot remove ourselves. */
static void
who_removes(uid_t uid, const char *name, char *buf, size_t len)
{
	char u[128];

	if (uid == 0)
		snprintf(buf, len, "/dev/shm is sticky, so only root can "
		    "remove it: have root run `rm /dev/shm%s', then start "
		    "again", name);
	else
		snprintf(buf, len, "/dev/shm is sticky, so only %s or root "
		    "can remove it: have them run `rm /dev/shm%s', then start "
		    "again", access_user(uid, 1, u, sizeof(u)), name);
}

int
own_check(int fd, const char *name, mode_t widest, enum own_kind kind)
{
	char owner[128], me[128], fix[512];
	struct stat st;
	mode_t mode;

	if (fstat(fd, &st) < 0) {
		log_warn("/dev/shm%s", name);
		return -errno;
	}
	mode = st.st_mode & 07777;
	if (st.st_uid != geteuid() && !can_unlink(st.st_uid))
		who_removes(st.st_uid, name, fix, sizeof(fix));
	else if (kind == OWN_LOCK)
		snprintf(fix, sizeof(fix), "remove it while no broker runs "
		    "(`rm /dev/shm%s'; --reset never removes it), then start "
		    "again", name);
	else
		snprintf(fix, sizeof(fix), "start with --reset to remove it "
		    "and recreate the segment (every counter is lost)");
	if (st.st_uid != geteuid()) {
		log_warnx("/dev/shm%s belongs to %s, mode %04o, not to %s, "
		    "who runs this broker: another user made it, so nothing "
		    "in it can be trusted; %s", name,
		    access_user(st.st_uid, 1, owner, sizeof(owner)),
		    (unsigned)mode, access_user(geteuid(), 1, me, sizeof(me)),
		    fix);
		return -EPERM;
	}
	if (!S_ISREG(st.st_mode)) {
		log_warnx("/dev/shm%s is not a regular file; %s", name, fix);
		return -EPERM;
	}
	if (mode & ~widest) {
		access_user(st.st_uid, 1, owner, sizeof(owner));
		if (kind == OWN_CONF)
			log_warnx("/dev/shm%s, owned by %s, has mode %04o: "
			    "group or others may write it, and only the broker "
			    "should (it is made 0644); %s", name, owner,
			    (unsigned)mode, fix);
		else if (kind == OWN_STATE)
			/*
			 * Wider than the config: others may have written it
			 * while it was.  A narrower `mode' the operator just
			 * set looks the same; a reload would have applied it.
			 */
			log_warnx("/dev/shm%s, owned by %s, has mode %04o, "
			    "wider than %04o, the `mode' of the config; if "
			    "you narrowed `mode' yourself, `chmod %04o "
			    "/dev/shm%s' keeps every counter (or send the "
			    "running broker SIGHUP next time); else %s", name,
			    owner, (unsigned)mode, (unsigned)widest,
			    (unsigned)widest, name, fix);
		else
			log_warnx("/dev/shm%s, owned by %s, has mode %04o, not "
			    "%04o: others may open and lock it; %s", name,
			    owner, (unsigned)mode, (unsigned)widest, fix);
		return -EPERM;
	}
	return 0;
}

void
own_explain(const char *name, const char *verb, int err)
{
	char fix[512], owner[128], path[300];
	struct stat st;

	/* The path only names the owner in the message: nothing hangs on it. */
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	if (err == ELOOP)
		log_warnx("cannot %s /dev/shm%s: a symbolic link, which is "
		    "never followed: remove it", verb, name);
	else if ((err == EPERM || err == EACCES || err == EEXIST) &&
	    lstat(path, &st) == 0 && st.st_uid != geteuid()) {
		if (can_unlink(st.st_uid))
			snprintf(fix, sizeof(fix), "remove it (`rm /dev/shm%s')"
			    ", then start again", name);
		else
			who_removes(st.st_uid, name, fix, sizeof(fix));
		log_warnx("cannot %s /dev/shm%s, which belongs to %s, mode "
		    "%04o: %s; %s", verb, name,
		    access_user(st.st_uid, 1, owner, sizeof(owner)),
		    (unsigned)(st.st_mode & 07777),
		    strerror(err), fix);
	} else
		log_warnx("cannot %s /dev/shm%s: %s", verb, name,
		    strerror(err));
}

int
own_apply(int fd, const char *name, mode_t mode, int has_group, gid_t group)
{
	char was[128], now[128], me[128];
	struct stat st;
	int r = 0;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		log_warn("/dev/shm%s", name);
		return r;
	}
	if (has_group && st.st_gid != group) {
		access_group(st.st_gid, 1, was, sizeof(was));
		access_group(group, 1, now, sizeof(now));
		/* The owner may give a file to a group it is in; root, any. */
		if (fchown(fd, (uid_t)-1, group) == 0)
			log_info("/dev/shm%s: group %s, was %s, as the config "
			    "says", name, now, was);
		else {
			r = -errno;
			log_warnx("cannot give /dev/shm%s to group %s (it stays "
			    "%s): %s; %s is neither root nor in that group, so "
			    "the workers of %s cannot open it: run the broker "
			    "as root or as a member of the group, or have root "
			    "run `chgrp %u /dev/shm%s'", name, now, was,
			    strerror(-r),
			    access_user(geteuid(), 1, me, sizeof(me)), now,
			    (unsigned)group, name);
		}
	}
	if (mode != 0 && (st.st_mode & 07777) != mode) {
		if (fchmod(fd, mode) == 0)
			log_info("/dev/shm%s: mode %04o, was %04o, as the config "
			    "says", name, (unsigned)mode,
			    (unsigned)(st.st_mode & 07777));
		else {
			r = -errno;
			log_warn("cannot chmod /dev/shm%s to %04o (it stays "
			    "%04o)", name, (unsigned)mode,
			    (unsigned)(st.st_mode & 07777));
		}
	}
	return r;
}

int
own_unlink(const char *name)
{
	int e;

	if (shm_unlink(name) == 0 || errno == ENOENT)
		return 0;
	e = errno;
	own_explain(name, "remove", e);
	return -e;
}

int
seglock_take(struct seglock *l, const char *segment, pid_t *holder)
{
	struct flock fl;
	struct stat st;
	int fd, r;

	l->fd = -1;
	l->created = 0;
	*holder = 0;
	if ((size_t)snprintf(l->name, sizeof(l->name), "/%s.lock", segment) >=
	    sizeof(l->name))
		return -ENAMETOOLONG;
	for (;;) {
		/*
		 * Make it, or open the one there; O_NOFOLLOW: a symlink
		 * planted by someone else is not followed.  No O_CREAT on an
		 * existing file: fs.protected_regular refuses that in a
		 * sticky directory for a file of another user.
		 */
		l->created = 1;
		fd = shm_open(l->name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0600);
		if (fd < 0 && errno == EEXIST) {
			l->created = 0;
			fd = shm_open(l->name, O_RDWR | O_NOFOLLOW | O_CLOEXEC,
			    0);
			if (fd < 0 && errno == ENOENT)
				continue;	/* removed meanwhile */
		}
		if (fd < 0) {
			r = -errno;
			own_explain(l->name, "open", -r);
			return r;
		}
		/* shm_open's mode went through the umask: fchmod to ours. */
		if (l->created && fchmod(fd, 0600) < 0) {
			r = -errno;
			log_warn("chmod /dev/shm%s", l->name);
			goto out_close;
		}
		if ((r = own_check(fd, l->name, 0600, OWN_LOCK)) < 0)
			goto out_close;
		memset(&fl, 0, sizeof(fl));
		fl.l_type = F_WRLCK;
		fl.l_whence = SEEK_SET;
		if (fcntl(fd, F_SETLK, &fl) < 0) {
			r = -errno;
			if (r != -EAGAIN && r != -EACCES) {
				log_warn("lock /dev/shm%s", l->name);
				goto out_close;
			}
			/* F_GETLK names a POSIX lock's holder. */
			memset(&fl, 0, sizeof(fl));
			fl.l_type = F_WRLCK;
			fl.l_whence = SEEK_SET;
			if (fcntl(fd, F_GETLK, &fl) == 0 &&
			    fl.l_type == F_UNLCK) {
				close(fd);	/* let go of meanwhile */
				continue;
			}
			*holder = fl.l_type == F_WRLCK ? fl.l_pid : 0;
			r = -EAGAIN;
			goto out_close;
		}
		/*
		 * A broker that failed to start removes a lock file it made,
		 * while it holds it: if ours was removed between our open and
		 * our lock, the lock guards nothing.  Start over.
		 */
		if (fstat(fd, &st) < 0) {
			r = -errno;
			log_warn("/dev/shm%s", l->name);
			goto out_close;
		}
		if (st.st_nlink == 0) {
			close(fd);
			continue;
		}
		l->fd = fd;
		return 0;
	}

out_close:
	close(fd);
	l->created = 0;
	return r;
}

void
seglock_drop(struct seglock *l, int remove)
{
	if (l->fd < 0)
		return;
	/* Unlink before the close that lets go: see seglock_take. */
	if (remove)
		(void)shm_unlink(l->name);
	close(l->fd);
	l->fd = -1;
}
