/*
 * test_fedconfig.c: the federation's settings in the config: [broker]
 * redis, host_id, federation, redis_outage; a key's scope.
 */
#include <errno.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"

#define MAXMSG	16

struct cap {
	int	n;
	char	msg[MAXMSG][256];
};

static void
capture(void *arg, const char *msg)
{
	struct cap *c = arg;

	if (c->n < MAXMSG)
		snprintf(c->msg[c->n], sizeof(c->msg[0]), "%s", msg);
	c->n++;
}

static int
load(const char *text, struct config *cfg, struct cap *c)
{
	memset(c, 0, sizeof(*c));
	return config_load_mem("t.conf", text, strlen(text), cfg, capture, c);
}

/* Whether some message is exactly want. */
static int
reported(const struct cap *c, const char *want)
{
	for (int i = 0; i < c->n && i < MAXMSG; i++)
		if (strcmp(c->msg[i], want) == 0)
			return 1;
	for (int i = 0; i < c->n && i < MAXMSG; i++)
		print_message("  reported: %s\n", c->msg[i]);
	return 0;
}

static void
test_urls(void **state)
{
	struct redis_url u;
	const char *why;

	(void)state;
	assert_int_equal(config_parse_redis("unix:/run/redis.sock", &u, &why),
	    0);
	assert_string_equal(u.path, "/run/redis.sock");
	assert_int_equal(config_parse_redis("unix:///tmp/r.sock", &u, &why), 0);
	assert_string_equal(u.path, "/tmp/r.sock");
	assert_int_equal(config_parse_redis("redis://localhost", &u, &why), 0);
	assert_string_equal(u.path, "");
	assert_string_equal(u.host, "localhost");
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, 0);
	assert_int_equal(u.has_password, 0);
	assert_int_equal(config_parse_redis(
	    "redis://me:p%40ss%3a@10.0.0.1:7000/3", &u, &why), 0);
	assert_string_equal(u.user, "me");
	assert_string_equal(u.password, "p@ss:");
	assert_int_equal(u.has_password, 1);
	assert_string_equal(u.host, "10.0.0.1");
	assert_int_equal(u.port, 7000);
	assert_int_equal(u.db, 3);
	assert_int_equal(config_parse_redis("redis://:pw@[::1]:6380", &u, &why),
	    0);
	assert_string_equal(u.user, "");
	assert_string_equal(u.password, "pw");
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 6380);
	/* Refused, each for its reason. */
	assert_int_equal(config_parse_redis("http://h", &u, &why), -EINVAL);
	assert_int_equal(config_parse_redis("unix:rel.sock", &u, &why),
	    -EINVAL);
	assert_int_equal(config_parse_redis("redis://", &u, &why), -EINVAL);
	assert_int_equal(config_parse_redis("redis://h:0", &u, &why), -EINVAL);
	assert_int_equal(config_parse_redis("redis://h:65536", &u, &why),
	    -EINVAL);
	assert_int_equal(config_parse_redis("redis://h/x", &u, &why), -EINVAL);
	assert_int_equal(config_parse_redis("redis://user@h", &u, &why),
	    -EINVAL);
	assert_int_equal(config_parse_redis("redis://a:b%4@h", &u, &why),
	    -EINVAL);
	assert_int_equal(config_parse_redis("redis://[::1", &u, &why), -EINVAL);
	assert_int_equal(config_parse_redis("redis://h h", &u, &why), -EINVAL);
}

static void
test_settings(void **state)
{
	struct config cfg;
	struct cap c;

	(void)state;
	assert_int_equal(load("[broker]\nredis = unix:/tmp/r.sock\n"
	    "host_id = node-1\nfederation = fleet\nredis_outage = open\n"
	    "[a]\nscope = global\nlimit = 600 requests/min burst 10\n"
	    "[a/b]\nscope = host\nlimit = 1 requests/s\n"
	    "[c]\nlimit = 1 requests/s\n", &cfg, &c), 0);
	assert_string_equal(cfg.redis.path, "/tmp/r.sock");
	assert_int_equal(cfg.redis_line, 2);
	assert_string_equal(cfg.host_id, "node-1");
	assert_string_equal(cfg.federation, "fleet");
	assert_int_equal(cfg.redis_outage, FED_OUTAGE_OPEN);
	assert_int_equal(cfg.keys[config_find_key(&cfg, "a")].global, 1);
	assert_int_equal(cfg.keys[config_find_key(&cfg, "a/b")].global, 0);
	assert_int_equal(cfg.keys[config_find_key(&cfg, "c")].global, 0);
	config_free(&cfg);
	/* Defaults: no federation; its names as documented. */
	assert_int_equal(load("[a]\nlimit = 1 requests/s\n", &cfg, &c), 0);
	assert_string_equal(cfg.redis.url, "");
	assert_string_equal(cfg.host_id, "");
	assert_string_equal(cfg.federation, "tollgate");
	assert_int_equal(cfg.redis_outage, FED_OUTAGE_SAFE);
	config_free(&cfg);
}

static void
test_errors(void **state)
{
	struct config cfg;
	struct cap c;

	(void)state;
	assert_int_equal(load("[broker]\nredis = redis://u:secret@h:99999\n"
	    "host_id = a{b}\nfederation =\nredis_outage = maybe\n"
	    "redis_outage = safe\n[k]\nscope = all\nscope = host\n"
	    "scope = global\n", &cfg, &c), 7);
	assert_true(reported(&c, "t.conf:2: redis `...@h:99999': port not "
	    "within 1..65535"));
	assert_true(reported(&c, "t.conf:3: `{' in host_id `a{b}' (use A-Z, "
	    "a-z, 0-9, `.', `_' and `-')"));
	assert_true(reported(&c, "t.conf:4: federation `': want 1 to 63 "
	    "bytes"));
	assert_true(reported(&c, "t.conf:5: redis_outage `maybe': want safe, "
	    "closed or open"));
	assert_true(reported(&c, "t.conf:6: `redis_outage' already set on "
	    "line 5"));
	assert_true(reported(&c, "t.conf:8: scope `all': want global or "
	    "host"));
	assert_true(reported(&c, "t.conf:10: second `scope' for [k] (first "
	    "on line 9)"));
	/* The password never reaches a message. */
	for (int i = 0; i < c.n && i < MAXMSG; i++)
		assert_null(strstr(c.msg[i], "secret"));
	assert_int_equal(load("[k]\nlimit = 1 requests/s\nscope = host\n"
	    "scope = global\n", &cfg, &c), 1);
	assert_true(reported(&c, "t.conf:4: second `scope' for [k] (first on "
	    "line 3)"));
	/* Global without a Redis would be N times the limit: refused. */
	assert_int_equal(load("[k]\nlimit = 1 requests/s\nscope = global\n",
	    &cfg, &c), 1);
	assert_true(reported(&c, "t.conf:3: [k]: scope = global needs "
	    "`redis = URL' in [broker]"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_urls),
		cmocka_unit_test(test_settings),
		cmocka_unit_test(test_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
