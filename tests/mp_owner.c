/*
 * mp_owner.c: whose the segment is.  Objects another user made before
 * the broker, or that are wider than they should be, are refused, naming
 * the owner and the fix; one broker owns a segment, through a lock file
 * only it can open, whatever the pidfile, --reset, or a neighbour who
 * locks the config object; a /dev/shm too small for the segment is a
 * clear refusal that leaves nothing behind, not a SIGBUS; and a state
 * object cut while the broker is down is put back when it starts.
 *
 * Most of it acts as a second user (uid 65534) or mounts a tiny tmpfs
 * over /dev/shm in a mount namespace of its own: as root only, and each
 * test says why when it skips.
 */
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "gcra.h"
#include "helpers.h"
#include "seg.h"

#define NOBODY		65534
#define MS		1000000ull

static const char keys[] = "[k]\nlimit = 10 requests/min\n";

/*
 * The brokers of the test that runs: static, so that the teardown stops
 * them and removes their segment even when the test fails half way.
 */
static struct tbroker tb, tb2;

static int
teardown(void **state)
{
	(void)state;
	tb_kill(&tb2);
	if (tb.dir[0] != '\0')
		tb_cleanup(&tb);
	memset(&tb, 0, sizeof(tb));
	memset(&tb2, 0, sizeof(tb2));
	return 0;
}

/* Skip, saying why, unless we are root (to be another user, to mount). */
static void
need_root(void)
{
	if (geteuid() == 0)
		return;
	print_message("skipped: needs root, to act as uid %d or mount a "
	    "tmpfs\n", NOBODY);
	skip();
}

/* Start tb on keys; skip if the broker cannot run io_uring here. */
static void
start(void)
{
	int r;

	if ((r = tb_start(&tb, keys)) == -ENOSYS) {
		print_message("skipped: the broker cannot run io_uring here\n");
		skip();
	}
	assert_int_equal(r, 0);
}

/* "/dev/shm/<segment of tb><suffix>" */
static const char *
shm_path(const char *suffix, char *buf, size_t len)
{
	snprintf(buf, len, "/dev/shm/%s%s", tb.segment, suffix);
	return buf;
}

/* The whole of a file, malloc'ed; its size in *len. */
static unsigned char *
slurp_file(const char *path, size_t *len)
{
	struct stat st;
	unsigned char *p;
	int fd;

	assert_true((fd = open(path, O_RDONLY)) >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	assert_non_null(p = malloc(*len));
	assert_int_equal(read(fd, p, *len), (ssize_t)*len);
	close(fd);
	return p;
}

/* In a child: become uid/gid 65534, no groups; 0, or -1 if we cannot. */
static int
become_nobody(void)
{
	if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
	    setresuid(NOBODY, NOBODY, NOBODY) < 0)
		return -1;
	return 0;
}

/* As uid 65534: write len bytes of p to a new path, mode `mode'. */
static int
write_as_nobody(const char *path, const void *p, size_t len, mode_t mode)
{
	pid_t pid;
	int fd;

	if ((pid = fork()) == 0) {
		if (become_nobody() < 0)
			_exit(2);
		if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode)) < 0 ||
		    fchmod(fd, mode) < 0 ||
		    write(fd, p, len) != (ssize_t)len)
			_exit(1);
		_exit(close(fd) < 0);
	}
	assert_true(pid > 0);
	return tb_wait_child(pid) == 0 ? 0 : -1;
}

/*
 * As uid 65534, the squatter who owns the live config object: make every
 * rate limit in both config copies `count' a minute.  0 or -1.
 */
static int
forge_as_nobody(const char *path, uint64_t count)
{
	struct seg_map m;
	struct stat st;
	pid_t pid;
	void *p;
	int fd;

	if ((pid = fork()) == 0) {
		if (become_nobody() < 0 || (fd = open(path, O_RDWR)) < 0 ||
		    fstat(fd, &st) < 0)
			_exit(1);
		p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
		    MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			_exit(1);
		memset(&m, 0, sizeof(m));
		m.hdr = p;
		for (unsigned i = 0; i < 2; i++) {
			struct seg_cfg *c = seg_cfg(&m, i);
			struct seg_limit *l = seg_limits(&m, c);

			for (uint32_t j = 0; j < m.hdr->max_limits; j++)
				if (l[j].kind == LIM_RATE) {
					l[j].count = l[j].burst = count;
					l[j].conf_count = count;
					l[j].tau_ns = gcra_tau_ns(count,
					    l[j].period_ns, count);
				}
		}
		_exit(0);
	}
	assert_true(pid > 0);
	return tb_wait_child(pid) == 0 ? 0 : -1;
}

/* Tickets of key "k" to be had right now from the segment of b. */
static int
drain(const struct tbroker *b)
{
	tg_client *c = tb_client(b);
	uint32_t k = tb_key(c, "k");
	uint64_t retry;
	tg_ticket t;
	int n = 0;

	while (n < 1000 && tg_try_acquire(c, k, NULL, &t, &retry) == 0) {
		tg_release(c, &t);
		n++;
	}
	tg_close(c);
	return n;
}

/*
 * Start b again, expecting a refusal: it must exit, not serve, and its
 * log must hold every string of want[] (NULL-terminated).  A broker that
 * serves fails the test, saying how many tickets of "k" (10 a minute in
 * the file) a worker then took, after the squatter, if `squat', rewrote
 * the limit in the config object it owns.
 */
static void
expect_refusal(struct tbroker *b, const char *const want[], int squat)
{
	char conf[PATH_MAX];
	int r = tb_restart(b);

	if (r == 0) {
		if (squat)
			assert_int_equal(forge_as_nobody(shm_path(".conf",
			    conf, sizeof(conf)), 30), 0);
		fail_msg("the broker served the segment: a worker took %d "
		    "tickets under `limit = 10 requests/min'", drain(b));
	}
	assert_int_equal(r, -ECHILD);
	for (int i = 0; want[i] != NULL; i++)
		if (tb_log_count(b, want[i]) == 0)
			fail_msg("the broker's log lacks \"%s\"", want[i]);
}

/*
 * Another user makes both objects before the broker starts, with a valid
 * layout: the broker refuses them, naming their owner, mode and the fix.
 * (It attached; the squatter then rewrote the limit in the config object
 * and a worker took 30 tickets under `limit = 10 requests/min'.)  With
 * --reset, root removes them and makes a segment of its own.
 */
static void
test_squatted_objects_refused(void **state)
{
	static const char *const want[] = { "belongs to nobody (uid 65534)",
	    "mode 0644", "--reset", NULL };
	char conf[PATH_MAX], st[PATH_MAX];
	unsigned char *cbuf, *sbuf;
	size_t clen, slen;
	struct stat sb;

	(void)state;
	need_root();
	start();
	assert_int_equal(tb_stop(&tb), 0);
	shm_path(".conf", conf, sizeof(conf));
	shm_path("", st, sizeof(st));
	cbuf = slurp_file(conf, &clen);
	sbuf = slurp_file(st, &slen);
	assert_int_equal(unlink(conf), 0);
	assert_int_equal(unlink(st), 0);
	if (write_as_nobody(conf, cbuf, clen, 0644) < 0 ||
	    write_as_nobody(st, sbuf, slen, 0666) < 0) {
		print_message("skipped: cannot write /dev/shm as uid %d\n",
		    NOBODY);
		skip();
	}
	free(cbuf);
	free(sbuf);
	expect_refusal(&tb, want, 1);
	/* Refused, not touched: still theirs. */
	assert_int_equal(stat(conf, &sb), 0);
	assert_int_equal((int)sb.st_uid, NOBODY);
	assert_int_equal(stat(st, &sb), 0);
	assert_int_equal((int)sb.st_uid, NOBODY);

	tb.extra = "--reset";
	assert_int_equal(tb_restart(&tb), 0);
	assert_int_equal(stat(conf, &sb), 0);
	assert_int_equal((int)sb.st_uid, 0);
	assert_int_equal(drain(&tb), 10);
}

/*
 * Objects it owns but others may write: a config object group- or
 * world-writable, a state object wider than `mode', a lock file others
 * can open.  Each is refused with its mode and the fix; back to the
 * right mode, the broker attaches.
 */
static void
test_wide_modes_refused(void **state)
{
	static const char *const want_conf[] = { ".conf, owned by root",
	    "mode 0666", "--reset", NULL };
	static const char *const want_state[] = { "mode 0666, wider than 0660",
	    "--reset", NULL };
	static const char *const want_lock[] = { ".lock, owned by root",
	    "mode 0644", "rm /dev/shm/", NULL };
	char conf[PATH_MAX], st[PATH_MAX], lock[PATH_MAX];

	(void)state;
	start();
	assert_int_equal(tb_stop(&tb), 0);
	shm_path(".conf", conf, sizeof(conf));
	shm_path("", st, sizeof(st));
	shm_path(".lock", lock, sizeof(lock));

	assert_int_equal(chmod(conf, 0666), 0);
	expect_refusal(&tb, want_conf, 0);
	assert_int_equal(chmod(conf, 0644), 0);
	assert_int_equal(chmod(st, 0666), 0);
	expect_refusal(&tb, want_state, 0);
	assert_int_equal(chmod(st, 0660), 0);
	/* The lock file; the old broker made none. */
	if (access(lock, F_OK) == 0) {
		assert_int_equal(chmod(lock, 0644), 0);
		expect_refusal(&tb, want_lock, 0);
		assert_int_equal(chmod(lock, 0600), 0);
	}
	assert_int_equal(tb_restart(&tb), 0);
	assert_int_equal(drain(&tb), 10);
}

/*
 * A broker that is not root cannot remove root's objects from the sticky
 * /dev/shm, with or without --reset: it says whose they are and that
 * only root can, and leaves no lock file of its own behind.
 */
static void
test_sticky_names_who_removes(void **state)
{
	char bin[PATH_MAX], nb[PATH_MAX], path[PATH_MAX], lock[PATH_MAX];
	char cmd[4 * PATH_MAX], out[8192];
	FILE *f;

	(void)state;
	need_root();
	start();
	assert_int_equal(tb_stop(&tb), 0);
	/* A config and a pidfile directory that uid 65534 can use. */
	snprintf(nb, sizeof(nb), "%s/nobody", tb.dir);
	assert_int_equal(chmod(tb.dir, 0755), 0);
	assert_int_equal(mkdir(nb, 0755), 0);
	assert_int_equal(chown(nb, NOBODY, NOBODY), 0);
	snprintf(path, sizeof(path), "%s/nobody.conf", tb.dir);
	assert_non_null(f = fopen(path, "w"));
	fprintf(f, "[broker]\nsegment = %s\npidfile = %s/pid\n\n%s",
	    tb.segment, nb, keys);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, 0644), 0);
	/* root's lock file would stop it first: this is about the segment. */
	shm_path(".lock", lock, sizeof(lock));
	(void)unlink(lock);

	for (int reset = 0; reset < 2; reset++) {
		snprintf(cmd, sizeof(cmd), "setpriv --reuid=%d --regid=%d "
		    "--clear-groups timeout -k 1 5 %s %s -c %s 2>&1; "
		    "echo rc=$?", NOBODY, NOBODY, tb_bin("tollgated", bin,
		    sizeof(bin)), reset ? "--reset" : "", path);
		(void)tb_run(cmd, out, sizeof(out));
		if (strstr(out, "tollgated") == NULL) {
			print_message("skipped: cannot run the broker as uid "
			    "%d: %s", NOBODY, out);
			skip();
		}
		if (strstr(out, "rc=1\n") == NULL ||
		    strstr(out, "belongs to root (uid 0)") == NULL ||
		    strstr(out, "only root can remove it") == NULL)
			fail_msg("%s as uid %d: %s", reset ? "--reset" :
			    "a start", NOBODY, out);
		/* The lock file it made for nothing is gone again. */
		assert_int_equal(access(lock, F_OK), -1);
	}
}

/* Rewrite tb's config: our [broker], then body. */
static void
rewrite(const char *body)
{
	FILE *f;

	assert_non_null(f = fopen(tb.conf, "w"));
	fprintf(f, "[broker]\nsegment = %s\npidfile = %s/tollgated.pid\n\n%s",
	    tb.segment, tb.dir, body);
	assert_int_equal(fclose(f), 0);
}

/*
 * As uid/gid 65534 (no other group): tg_open of tb's segment, then a
 * ticket of "k".  Returns 0 if both worked, else tg_open's errno; -1 if
 * the child could not become uid 65534.
 */
static int
open_as_nobody(void)
{
	tg_client *c;
	tg_ticket t;
	uint32_t k;
	pid_t pid;
	int r;

	if ((pid = fork()) == 0) {
		if (become_nobody() < 0)
			_exit(255);
		if ((r = tg_open(tb.segment, &c)) < 0)
			_exit(-r);
		if (tg_key(c, "k", &k) < 0 ||
		    tg_try_acquire(c, k, NULL, &t, NULL) < 0)
			_exit(254);
		tg_release(c, &t);
		tg_close(c);
		_exit(0);
	}
	assert_true(pid > 0);
	r = tb_wait_child(pid);
	return r == 255 ? -1 : r;
}

/* Mode and gid of /dev/shm/<tb's segment><suffix>. */
static void
perms(const char *suffix, mode_t *mode, gid_t *gid)
{
	char path[PATH_MAX];
	struct stat st;

	assert_int_equal(stat(shm_path(suffix, path, sizeof(path)), &st), 0);
	*mode = st.st_mode & 07777;
	*gid = st.st_gid;
}

/*
 * A changed `group' and a wider `mode' apply to the objects there when
 * the broker attaches (the lock takes the group, staying 0600), and a
 * reload applies a narrower mode: a worker of the group gets in, then is
 * kept out again.  (They kept root:root 0600: the worker stayed out.)
 */
static void
test_group_mode_applied(void **state)
{
	static const char body0[] = "mode = 0600\n[k]\n"
	    "limit = 10 requests/min\n";
	static const char body1[] = "mode = 0660\ngroup = 65534\n[k]\n"
	    "limit = 10 requests/min\n";
	static const char body2[] = "mode = 0640\ngroup = 65534\n[k]\n"
	    "limit = 10 requests/min\n";
	mode_t mode;
	gid_t gid;
	int r;

	(void)state;
	need_root();
	if ((r = tb_start(&tb, body0)) == -ENOSYS) {
		print_message("skipped: the broker cannot run io_uring here\n");
		skip();
	}
	assert_int_equal(r, 0);
	perms("", &mode, &gid);
	assert_int_equal(mode, 0600);
	assert_int_equal(gid, 0);
	if ((r = open_as_nobody()) == -1) {
		print_message("skipped: cannot act as uid %d\n", NOBODY);
		skip();
	}
	assert_int_equal(r, EACCES);

	assert_int_equal(tb_stop(&tb), 0);
	rewrite(body1);
	assert_int_equal(tb_restart(&tb), 0);
	perms("", &mode, &gid);
	assert_int_equal(mode, 0660);
	assert_int_equal(gid, NOBODY);
	perms(".lock", &mode, &gid);
	assert_int_equal(mode, 0600);
	assert_int_equal(gid, NOBODY);
	if (tb_log_count(&tb, "was root (gid 0), as the config says") == 0 ||
	    tb_log_count(&tb, "mode 0660, was 0600, as the config says") == 0)
		fail_msg("the broker did not log the group and mode it set");
	assert_int_equal(open_as_nobody(), 0);

	/* A reload narrows it: read only for the group. */
	assert_int_equal(tb_reload(&tb, body2), 0);
	perms("", &mode, &gid);
	assert_int_equal(mode, 0640);
	assert_int_equal(open_as_nobody(), EACCES);
}

/*
 * A broker that may not give its objects the config's group (not root,
 * not in it) says so, naming the group and what to do, and serves on.
 */
static void
test_group_refused_says_why(void **state)
{
	char bin[PATH_MAX], nb[PATH_MAX], path[PATH_MAX], seg[96];
	char cmd[4 * PATH_MAX], out[8192];
	FILE *f;

	(void)state;
	need_root();
	start();
	assert_int_equal(tb_stop(&tb), 0);
	/* Its own segment, made by uid 65534, whose config says root. */
	snprintf(seg, sizeof(seg), "%s-nb", tb.segment);
	snprintf(nb, sizeof(nb), "%s/nobody", tb.dir);
	assert_int_equal(chmod(tb.dir, 0755), 0);
	assert_int_equal(mkdir(nb, 0755), 0);
	assert_int_equal(chown(nb, NOBODY, NOBODY), 0);
	snprintf(path, sizeof(path), "%s/nobody.conf", tb.dir);
	assert_non_null(f = fopen(path, "w"));
	fprintf(f, "[broker]\nsegment = %s\npidfile = %s/pid\ngroup = 0\n\n%s",
	    seg, nb, keys);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, 0644), 0);
	snprintf(cmd, sizeof(cmd), "setpriv --reuid=%d --regid=%d "
	    "--clear-groups timeout -s TERM 2 %s -c %s 2>&1; echo rc=$?; "
	    "rm -f /dev/shm/%s /dev/shm/%s.conf /dev/shm/%s.lock", NOBODY,
	    NOBODY, tb_bin("tollgated", bin, sizeof(bin)), path, seg, seg,
	    seg);
	(void)tb_run(cmd, out, sizeof(out));
	if (strstr(out, "tollgated") == NULL) {
		print_message("skipped: cannot run the broker as uid %d: %s",
		    NOBODY, out);
		skip();
	}
	if (strstr(out, "cannot give /dev/shm/") == NULL ||
	    strstr(out, "to group root (gid 0) (it stays") == NULL ||
	    strstr(out, "is neither root nor in that group") == NULL ||
	    strstr(out, "created segment") == NULL)
		fail_msg("as uid %d with group = 0: %s", NOBODY, out);
}

/* tb2: a second broker on tb's segment, its own pidfile and log. */
static void
second_broker(const char *extra)
{
	FILE *f;

	tb2 = tb;
	tb2.pid = 0;
	tb2.extra = extra;
	snprintf(tb2.conf, sizeof(tb2.conf), "%s/second.conf", tb.dir);
	snprintf(tb2.log, sizeof(tb2.log), "%s/second.log", tb.dir);
	assert_non_null(f = fopen(tb2.conf, "w"));
	fprintf(f, "[broker]\nsegment = %s\npidfile = %s/second.pid\n\n%s",
	    tb.segment, tb.dir, keys);
	assert_int_equal(fclose(f), 0);
}

/*
 * A second broker with a pidfile of its own, then one with --reset,
 * while the first serves: both refused, naming the first's pid, before
 * the --reset one removed anything.  The first broker and its client go
 * on with the same segment and counters.  (The --reset one removed the
 * segment, made another and served it beside the first.)
 */
static void
test_second_broker_and_reset_refused(void **state)
{
	char conf[PATH_MAX], want[64];
	const char *const wants[] = { "owned by another broker", want, NULL };
	struct stat before, after;
	struct seg_map m;
	tg_client *c;
	tg_ticket t;
	uint64_t retry;
	uint32_t k;
	int left;

	(void)state;
	start();
	snprintf(want, sizeof(want), "pid %d", (int)tb.pid);
	shm_path(".conf", conf, sizeof(conf));
	assert_int_equal(stat(conf, &before), 0);
	c = tb_client(&tb);
	k = tb_key(c, "k");
	for (int i = 0; i < 4; i++) {
		assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
		tg_release(c, &t);
	}

	second_broker(NULL);
	expect_refusal(&tb2, wants, 0);
	second_broker("--reset");
	expect_refusal(&tb2, wants, 0);
	assert_int_equal(tb_log_count(&tb2, "serving segment"), 0);

	/* The same objects, still the first broker's. */
	assert_true(tb_alive(&tb));
	assert_int_equal(stat(conf, &after), 0);
	assert_int_equal(before.st_ino, after.st_ino);
	assert_int_equal(seg_attach(tb.segment, 0, &m), 0);
	assert_int_equal(atomic_load(&m.hdr->broker_pid), tb.pid);
	seg_detach(&m);
	/* Its client goes on; a new one sees the same bucket, 5 left. */
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	tg_release(c, &t);
	tg_close(c);
	left = drain(&tb);
	assert_true(left == 5 || left == 6);	/* one more every 6 s */
}

/*
 * A neighbour (uid 65534) opens the config object, which is 0644, takes
 * every lock it can on it (flock, a POSIX read lock) and tries the lock
 * file: the broker restarts all the same.  (It failed: "segment ... is
 * owned by another broker, pid 0".)
 */
static void
test_neighbour_lock_no_matter(void **state)
{
	char conf[PATH_MAX], lock[PATH_MAX];
	int p[2], r, got = 0;
	pid_t pid;

	(void)state;
	need_root();
	start();
	assert_int_equal(tb_stop(&tb), 0);
	shm_path(".conf", conf, sizeof(conf));
	shm_path(".lock", lock, sizeof(lock));
	assert_int_equal(pipe(p), 0);
	if ((pid = fork()) == 0) {
		struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
		int fd, res = 0;

		close(p[0]);
		if (become_nobody() < 0)
			_exit(2);
		if ((fd = open(conf, O_RDONLY)) < 0)
			_exit(3);
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			res |= 1;
		if (fcntl(fd, F_SETLK, &fl) == 0)
			res |= 2;
		/* The lock file is not for its eyes. */
		if (open(lock, O_RDONLY) < 0 && errno == EACCES)
			res |= 4;
		if (write(p[1], &res, sizeof(res)) != sizeof(res))
			_exit(4);
		pause();
		_exit(0);
	}
	assert_true(pid > 0);
	close(p[1]);
	if (read(p[0], &got, sizeof(got)) != sizeof(got)) {
		print_message("skipped: cannot act as uid %d (child: %d)\n",
		    NOBODY, tb_wait_child(pid));
		close(p[0]);
		skip();
	}
	close(p[0]);
	r = tb_restart(&tb);
	kill(pid, SIGKILL);
	tb_wait_child(pid);
	/* It held flock and a POSIX lock on the config object. */
	assert_int_equal(got & 3, 3);
	if (r != 0)
		fail_msg("restart with a neighbour's locks on the config "
		    "object: %d; the log says \"owned by another broker\" %d times",
		    r, tb_log_count(&tb, "owned by another broker"));
	/* The old broker made no lock file; this one's is 0600. */
	assert_int_equal(got & 4, access(lock, F_OK) == 0 ? 4 : 0);
	assert_int_equal(drain(&tb), 10);
}

/*
 * Run the broker of tb in a mount namespace of its own whose /dev/shm is
 * a tmpfs of size_k KiB; out gets its output, "rc=N" and a "left: PATH"
 * line for each file in that /dev/shm afterwards.  Returns the seconds it
 * took, or skips (saying why) if the namespace cannot be made here.
 */
static double
run_in_small_shm(unsigned size_k, char *out, size_t len)
{
	char bin[PATH_MAX], cmd[2 * PATH_MAX + 512];
	uint64_t t0;
	int r;

	snprintf(cmd, sizeof(cmd), "unshare --mount sh -c 'mount -t tmpfs -o "
	    "size=%uk tollgate-test /dev/shm || exit 99; timeout -k 1 4 %s "
	    "-c %s 2>&1; echo rc=$?; for f in /dev/shm/* /dev/shm/.[!.]*; "
	    "do [ -e \"$f\" ] && echo \"left: $f\"; done; exit 0' 2>&1",
	    size_k, tb_bin("tollgated", bin, sizeof(bin)), tb.conf);
	t0 = tb_now_ns();
	if ((r = tb_run(cmd, out, len)) != 0) {
		print_message("skipped: no mount namespace with a tmpfs on "
		    "/dev/shm here (%d): %s", r, out);
		skip();
	}
	return (double)(tb_now_ns() - t0) / 1e9;
}

/*
 * /dev/shm without room for the segment: 64 KiB, then room for the
 * config object but not the state.  The broker exits 1 at once, saying
 * which object needs how many bytes, and leaves nothing in /dev/shm.
 * (It died of SIGBUS and left both objects, which the next start took
 * for a segment of another layout; with room for the config object, it
 * faulted forever at full CPU, deaf to SIGTERM.)
 */
static void
test_shm_full(void **state)
{
	char conf[PATH_MAX], want[PATH_MAX + 16], out[8192];
	unsigned sizes[2];
	struct stat st;
	double secs;
	int bad = 0;

	(void)state;
	need_root();
	start();
	assert_int_equal(tb_stop(&tb), 0);
	/* The config object's size in KiB, and a page more. */
	assert_int_equal(stat(shm_path(".conf", conf, sizeof(conf)), &st), 0);
	sizes[0] = 64;
	sizes[1] = (unsigned)((st.st_size + 4095) / 4096 * 4 + 4);
	snprintf(want, sizeof(want), "/dev/shm/%s", tb.segment);
	for (int i = 0; i < 2; i++) {
		secs = run_in_small_shm(sizes[i], out, sizeof(out));
		print_message("/dev/shm of %u KiB: the broker took %.2f s\n",
		    sizes[i], secs);
		if (strstr(out, "rc=1\n") == NULL || strstr(out, "left: ") ||
		    strstr(out, "No space left on device") == NULL ||
		    strstr(out, "bytes") == NULL || strstr(out, want) == NULL ||
		    secs > 3) {
			print_error("/dev/shm of %u KiB, %.2f s: %s", sizes[i],
			    secs, out);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

/*
 * A worker cuts the state object while /dev/shm is full, so its pages
 * cannot come back: the broker says so and exits (by SIGBUS) at once,
 * for its supervisor to restart it, which then refuses with a message
 * until there is room.  (It faulted forever at full CPU, deaf to
 * SIGTERM.)  The broker is stopped while the worker cuts and fills, so
 * that it cannot take the pages back first.
 */
static void
test_truncated_when_full(void **state)
{
	char bin[PATH_MAX], path[PATH_MAX], cmd[4 * PATH_MAX], out[16384];
	struct stat cs, ss;
	unsigned size_k;
	int r;

	(void)state;
	need_root();
	start();
	assert_int_equal(tb_stop(&tb), 0);
	assert_int_equal(stat(shm_path(".conf", path, sizeof(path)), &cs), 0);
	assert_int_equal(stat(shm_path("", path, sizeof(path)), &ss), 0);
	size_k = (unsigned)((cs.st_size + 4095) / 4096 * 4 +
	    (ss.st_size + 4095) / 4096 * 4 + 8);
	snprintf(cmd, sizeof(cmd), "unshare --mount sh -c '"
	    "mount -t tmpfs -o size=%uk tollgate-test /dev/shm || exit 99; "
	    "%s -c %s 2>%s/full.log & b=$!; i=0; "
	    "until grep -q \"serving segment\" %s/full.log; do "
	    "[ $i -lt 100 ] || { echo no start; kill -9 $b; exit 0; }; "
	    "sleep 0.05; i=$((i+1)); done; "
	    "kill -STOP $b; cat /dev/zero > /dev/shm/fill 2>/dev/null; "
	    "truncate -s 0 /dev/shm/%s; "
	    "cat /dev/zero > /dev/shm/fill2 2>/dev/null; kill -CONT $b; "
	    "i=0; while kill -0 $b 2>/dev/null && [ $i -lt 30 ]; do "
	    "sleep 0.1; i=$((i+1)); done; "
	    "if kill -0 $b 2>/dev/null; then kill -TERM $b; sleep 1; "
	    "kill -0 $b 2>/dev/null && { echo spinning; kill -9 $b; }; fi; "
	    "wait $b; echo rc=$?; cat %s/full.log; exit 0' 2>&1",
	    size_k, tb_bin("tollgated", bin, sizeof(bin)), tb.conf, tb.dir,
	    tb.dir, tb.segment, tb.dir);
	if ((r = tb_run(cmd, out, sizeof(out))) != 0) {
		print_message("skipped: no mount namespace with a tmpfs on "
		    "/dev/shm here (%d): %s", r, out);
		skip();
	}
	if (strstr(out, "spinning") || strstr(out, "no start") ||
	    strstr(out, "cannot be backed") == NULL)
		fail_msg("/dev/shm of %u KiB, full, state object cut: %s",
		    size_k, out);
}

/*
 * A worker cuts the state object while no broker runs: the next broker
 * puts its size back, says so, and serves.  (It could not map an empty
 * state object and refused to start: "Invalid argument".)
 */
static void
test_truncated_while_down(void **state)
{
	char st[PATH_MAX];
	struct stat sb;
	off_t size;

	(void)state;
	start();
	assert_int_equal(drain(&tb), 10);
	assert_int_equal(tb_stop(&tb), 0);
	assert_int_equal(stat(shm_path("", st, sizeof(st)), &sb), 0);
	size = sb.st_size;
	assert_int_equal(truncate(st, 0), 0);
	assert_int_equal(tb_restart(&tb), 0);
	assert_true(tb_log_count(&tb, "restored") > 0);
	assert_int_equal(stat(st, &sb), 0);
	assert_int_equal(sb.st_size, size);
	/* A new client works; the bucket was cut off with the rest. */
	assert_int_equal(drain(&tb), 10);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_squatted_objects_refused,
		    teardown),
		cmocka_unit_test_teardown(test_wide_modes_refused, teardown),
		cmocka_unit_test_teardown(test_group_mode_applied, teardown),
		cmocka_unit_test_teardown(test_group_refused_says_why,
		    teardown),
		cmocka_unit_test_teardown(test_sticky_names_who_removes,
		    teardown),
		cmocka_unit_test_teardown(test_second_broker_and_reset_refused,
		    teardown),
		cmocka_unit_test_teardown(test_neighbour_lock_no_matter,
		    teardown),
		cmocka_unit_test_teardown(test_shm_full, teardown),
		cmocka_unit_test_teardown(test_truncated_when_full, teardown),
		cmocka_unit_test_teardown(test_truncated_while_down, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
