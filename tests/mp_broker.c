/*
 * mp_broker.c: the daemon around the loop: config check, supervisor
 * notifications, and a segment of another layout version.
 */
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
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

#include "helpers.h"
#include "seg.h"

static const char keys[] = "[k]\nlimit = 5 requests/s\n";

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
test_check_good_and_bad(void **state)
{
	char bin[256], cmd[1024], out[4096], path[] = "/tmp/tgcheck.XXXXXX";
	int fd;

	(void)state;
	assert_true((fd = mkstemp(path)) >= 0);
	close(fd);
	write_file(path, "[broker]\nsegment = tgtest-check\n[a]\n"
	    "limit = 5 requests/min\n");
	snprintf(cmd, sizeof(cmd), "%s -n -c %s 2>&1",
	    tb_bin("tollgated", bin, sizeof(bin)), path);
	assert_int_equal(tb_run(cmd, out, sizeof(out)), 0);
	assert_string_equal(out, "configuration OK\n");
	/* Two errors, each with file and line; nothing created. */
	write_file(path, "[broker]\nsegment = tgtest-check\n[a]\n"
	    "limit = 5 bananas/min\n[b/c]\nlimit = 1 requests/s\n");
	assert_int_equal(tb_run(cmd, out, sizeof(out)), 1);
	assert_non_null(strstr(out, ":4: "));
	assert_non_null(strstr(out, "bananas"));
	assert_non_null(strstr(out, ":5: "));
	assert_int_equal(access("/dev/shm/tgtest-check", F_OK), -1);
	/* Without -n the broker refuses to start on it, the same way. */
	snprintf(cmd, sizeof(cmd), "%s -c %s 2>&1",
	    tb_bin("tollgated", bin, sizeof(bin)), path);
	assert_int_equal(tb_run(cmd, out, sizeof(out)), 1);
	assert_int_equal(access("/dev/shm/tgtest-check", F_OK), -1);
	unlink(path);
}

/* Wait up to 3 s for a datagram on fd containing want. */
static int
expect_msg(int fd, const char *want)
{
	char buf[512];
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t end = tb_now_ns() + 3000000000ull;
	ssize_t n;

	while (tb_now_ns() < end) {
		if (poll(&p, 1, 100) <= 0)
			continue;
		if ((n = recv(fd, buf, sizeof(buf) - 1, 0)) <= 0)
			continue;
		buf[n] = '\0';
		if (strstr(buf, want))
			return 1;
	}
	return 0;
}

static void
test_sd_notify(void **state)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct tbroker tb;
	int fd, r;

	(void)state;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "/tmp/tgnotify.%d",
	    (int)getpid());
	unlink(sun.sun_path);
	assert_true((fd = socket(AF_UNIX, SOCK_DGRAM, 0)) >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	setenv("NOTIFY_SOCKET", sun.sun_path, 1);
	setenv("WATCHDOG_USEC", "200000", 1);
	r = tb_start(&tb, keys);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	if (r == -ENOSYS) {
		tb_cleanup(&tb);
		skip();
	}
	assert_int_equal(r, 0);
	assert_true(expect_msg(fd, "READY=1"));
	assert_true(expect_msg(fd, "WATCHDOG=1"));
	kill(tb.pid, SIGHUP);
	assert_true(expect_msg(fd, "RELOADING=1"));
	assert_true(expect_msg(fd, "STATUS=serving"));
	assert_true(expect_msg(fd, "READY=1"));
	kill(tb.pid, SIGTERM);
	assert_true(expect_msg(fd, "STOPPING=1"));
	assert_int_equal(tb_stop(&tb), 0);
	tb_cleanup(&tb);
	close(fd);
	unlink(sun.sun_path);
}

/* A segment of another layout version: refused, then --reset. */
static void
test_other_version_needs_reset(void **state)
{
	struct tbroker tb;
	char name[128], bin[256], cmd[PATH_MAX + 512], out[4096];
	struct seg_header *h;
	tg_client *c;
	int fd, r;

	(void)state;
	if ((r = tb_start(&tb, keys)) == -ENOSYS) {
		tb_cleanup(&tb);
		skip();
	}
	assert_int_equal(r, 0);
	assert_int_equal(tb_stop(&tb), 0);
	/* Pretend an older tollgate made it. */
	snprintf(name, sizeof(name), "/%s.conf", tb.segment);
	if ((fd = shm_open(name, O_RDWR, 0)) < 0) {
		tb_cleanup(&tb);
		skip();		/* not root: the object is 0644 */
	}
	h = mmap(NULL, sizeof(*h), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(h != MAP_FAILED);
	h->version = TG_SEG_VERSION + 1;
	snprintf(cmd, sizeof(cmd), "%s -c %s 2>&1",
	    tb_bin("tollgated", bin, sizeof(bin)), tb.conf);
	assert_int_equal(tb_run(cmd, out, sizeof(out)), 1);
	assert_non_null(strstr(out, "--reset"));
	assert_int_equal(h->version, TG_SEG_VERSION + 1);	/* untouched */
	assert_int_equal(tg_open(tb.segment, &c), -EPROTO);
	munmap(h, sizeof(*h));
	close(fd);
	tb.extra = "--reset";
	assert_int_equal(tb_restart(&tb), 0);
	c = tb_client(&tb);
	tg_close(c);
	assert_int_equal(tb_stop(&tb), 0);
	tb_cleanup(&tb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_good_and_bad),
		cmocka_unit_test(test_sd_notify),
		cmocka_unit_test(test_other_version_needs_reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
