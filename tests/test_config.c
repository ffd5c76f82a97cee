/* test_config.c: the config parser, on good files, bad files and limits. */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "gcra.h"

#define S	UINT64_C(1000000000)	/* ns in a second */
#define MS	UINT64_C(1000000)	/* ns in a millisecond */
#define MAXMSG	64

/* What the parser reported, through the callback. */
struct cap {
	int	n;
	char	*msg[MAXMSG];
};

static void
capture(void *arg, const char *msg)
{
	struct cap *c = arg;

	if (c->n < MAXMSG)
		c->msg[c->n] = strdup(msg);
	c->n++;
}

static void
cap_free(struct cap *c)
{
	for (int i = 0; i < c->n && i < MAXMSG; i++)
		free(c->msg[i]);
	c->n = 0;
}

static void
cap_print(const struct cap *c)
{
	for (int i = 0; i < c->n && i < MAXMSG; i++)
		print_message("  reported: %s\n", c->msg[i]);
}

/* Parse text as the file "t.conf"; returns the error count. */
static int
load(const char *text, struct config *cfg, struct cap *c)
{
	memset(c, 0, sizeof(*c));
	return config_load_mem("t.conf", text, strlen(text), cfg, capture, c);
}

/* A good file: no error, nothing reported. */
static void
good(const char *text, struct config *cfg)
{
	struct cap c;

	if (load(text, cfg, &c) != 0 || c.n != 0) {
		cap_print(&c);
		fail_msg("a good file was refused");
	}
}

/* Message i of c starts with "t.conf:LINE: " and contains word. */
static void
assert_msg(const struct cap *c, int i, int line, const char *word)
{
	char prefix[32];
	size_t n;

	assert_true(i < c->n && i < MAXMSG);
	n = (size_t)snprintf(prefix, sizeof(prefix), "t.conf:%d: ", line);
	if (strncmp(c->msg[i], prefix, n) != 0 ||
	    strstr(c->msg[i] + n, word) == NULL) {
		cap_print(c);
		fail_msg("message %d is not \"%s...%s...\"", i, prefix, word);
	}
}

/* The parser left nothing in cfg, and nothing to free. */
static void
assert_empty(const struct config *cfg)
{
	assert_null(cfg->keys);
	assert_null(cfg->limits);
	assert_int_equal(cfg->nkeys, 0);
	assert_int_equal(cfg->nlimits, 0);
}

/*
 * A bad file: exactly one error, on line, whose message contains word,
 * and nothing left allocated.
 */
static void
bad1(const char *text, int line, const char *word)
{
	struct config cfg;
	struct cap c;
	int n;

	n = load(text, &cfg, &c);
	if (n != 1 || c.n != 1) {
		cap_print(&c);
		fail_msg("%d errors, %d reported; want 1 on line %d (%s)", n,
		    c.n, line, word);
	}
	assert_msg(&c, 0, line, word);
	assert_empty(&cfg);
	cap_free(&c);
}

static const struct limit_spec *
lim(const struct config *cfg, int key, unsigned i)
{
	assert_true(key >= 0 && (unsigned)key < cfg->nkeys);
	assert_true(i < cfg->keys[key].nlimits);
	return &cfg->limits[cfg->keys[key].first_limit + i];
}

static void
assert_rate(const struct limit_spec *l, uint64_t count, unsigned unit,
    uint64_t period_ns, uint64_t burst, uint64_t cooldown_ns)
{
	assert_int_equal(l->kind, LIM_RATE);
	assert_int_equal(l->unit, unit);
	assert_int_equal(l->count, count);
	assert_int_equal(l->period_ns, period_ns);
	assert_int_equal(l->burst, burst);
	assert_int_equal(l->cooldown_ns, cooldown_ns);
	assert_int_equal(l->adaptive, 0);
}

/* DESIGN.md section 7, less `state_file', which is not a setting yet. */
static const char design_conf[] =
    "[broker]\n"
    "segment = tollgate\n"
    "mode = 0660\n"
    "\n"
    "[openai]\n"
    "limit = 500 requests/min\n"
    "limit = 30000 tokens/min\n"
    "limit = 10000 requests/day window\n"
    "\n"
    "[openai/gpt-image-1]\n"
    "limit = 5 images/min\n"
    "concurrency = 4 adaptive\n"
    "\n"
    "[chatgpt-web]\n"
    "limit = 1 requests/165s burst 4 cooldown 120s\n"
    "concurrency = 1\n";

/* Every field of the design's example. */
static void
test_design_example(void **state)
{
	const struct limit_spec *l;
	struct config cfg;

	(void)state;
	good(design_conf, &cfg);
	assert_string_equal(cfg.path, "t.conf");
	assert_string_equal(cfg.segment, "tollgate");
	assert_int_equal(cfg.mode, 0660);
	assert_int_equal(cfg.has_group, 0);
	assert_string_equal(cfg.pidfile, "/run/tollgate/tollgate.pid");
	assert_int_equal(cfg.max_clients, 1024);
	assert_int_equal(cfg.nkeys, 3);
	assert_int_equal(cfg.nlimits, 7);

	assert_string_equal(cfg.keys[0].name, "openai");
	assert_int_equal(cfg.keys[0].parent, -1);
	assert_int_equal(cfg.keys[0].line, 5);
	assert_int_equal(cfg.keys[0].first_limit, 0);
	assert_int_equal(cfg.keys[0].nlimits, 3);
	assert_rate(lim(&cfg, 0, 0), 500, UNIT_REQUESTS, 60 * S, 500, 0);
	assert_int_equal(lim(&cfg, 0, 0)->line, 6);
	assert_rate(lim(&cfg, 0, 1), 30000, UNIT_TOKENS, 60 * S, 30000, 0);
	assert_int_equal(lim(&cfg, 0, 1)->line, 7);
	l = lim(&cfg, 0, 2);
	assert_int_equal(l->kind, LIM_WINDOW);
	assert_int_equal(l->unit, UNIT_REQUESTS);
	assert_int_equal(l->count, 10000);
	assert_int_equal(l->period_ns, 86400 * S);
	assert_int_equal(l->burst, 0);
	assert_int_equal(l->cooldown_ns, 0);
	assert_int_equal(l->line, 8);

	assert_string_equal(cfg.keys[1].name, "openai/gpt-image-1");
	assert_int_equal(cfg.keys[1].parent, 0);
	assert_int_equal(cfg.keys[1].line, 10);
	assert_int_equal(cfg.keys[1].first_limit, 3);
	assert_int_equal(cfg.keys[1].nlimits, 2);
	assert_rate(lim(&cfg, 1, 0), 5, UNIT_IMAGES, 60 * S, 5, 0);
	l = lim(&cfg, 1, 1);
	assert_int_equal(l->kind, LIM_CONC);
	assert_int_equal(l->unit, UNIT_REQUESTS);
	assert_int_equal(l->count, 4);
	assert_int_equal(l->adaptive, 1);
	assert_int_equal(l->period_ns, 0);
	assert_int_equal(l->line, 12);

	assert_string_equal(cfg.keys[2].name, "chatgpt-web");
	assert_int_equal(cfg.keys[2].parent, -1);
	assert_int_equal(cfg.keys[2].first_limit, 5);
	assert_int_equal(cfg.keys[2].nlimits, 2);
	assert_rate(lim(&cfg, 2, 0), 1, UNIT_REQUESTS, 165 * S, 4, 120 * S);
	l = lim(&cfg, 2, 1);
	assert_int_equal(l->kind, LIM_CONC);
	assert_int_equal(l->count, 1);
	assert_int_equal(l->adaptive, 0);
	assert_int_equal(l->line, 16);
	config_free(&cfg);
}

/* An empty file is every default and no key. */
static void
test_defaults(void **state)
{
	struct config cfg;

	(void)state;
	good("", &cfg);
	assert_string_equal(cfg.segment, "tollgate");
	assert_int_equal(cfg.mode, 0660);
	assert_int_equal(cfg.has_group, 0);
	assert_int_equal(cfg.group, 0);
	assert_string_equal(cfg.pidfile, "/run/tollgate/tollgate.pid");
	assert_int_equal(cfg.max_clients, 1024);
	assert_empty(&cfg);
	config_free(&cfg);

	good("[broker]\n", &cfg);
	assert_string_equal(cfg.pidfile, "/run/tollgate/tollgate.pid");
	config_free(&cfg);
}

static void
test_broker_settings(void **state)
{
	struct config cfg;

	(void)state;
	good("[broker]\nsegment = Tg_2.test-x\nmode = 600\ngroup = 4242\n"
	    "pidfile = /tmp/t.pid\nmax_clients = 65520\n", &cfg);
	assert_string_equal(cfg.segment, "Tg_2.test-x");
	assert_int_equal(cfg.mode, 0600);
	assert_int_equal(cfg.has_group, 1);
	assert_int_equal(cfg.group, 4242);
	assert_string_equal(cfg.pidfile, "/tmp/t.pid");
	assert_int_equal(cfg.max_clients, 65520);
	config_free(&cfg);

	good("[broker]\nmode = 0777\nmax_clients = 1\ngroup = 0\n", &cfg);
	assert_int_equal(cfg.mode, 0777);
	assert_int_equal(cfg.max_clients, 1);
	assert_int_equal(cfg.has_group, 1);
	assert_int_equal(cfg.group, 0);
	config_free(&cfg);
}

/* `group' by name goes through getgrnam_r; root is always there. */
static void
test_group_by_name(void **state)
{
	struct config cfg;

	(void)state;
	good("[broker]\ngroup = root\n", &cfg);
	assert_int_equal(cfg.has_group, 1);
	assert_int_equal(cfg.group, 0);
	config_free(&cfg);
}

/* The default pidfile is made after the whole file, from `segment'. */
static void
test_pidfile_follows_segment(void **state)
{
	struct config cfg;

	(void)state;
	good("[broker]\nmax_clients = 5\nsegment = other\n[a]\n", &cfg);
	assert_string_equal(cfg.pidfile, "/run/tollgate/other.pid");
	config_free(&cfg);
}

/*
 * Children before their parents in the file: keys[] puts each parent
 * first, parent indices follow, and limits[] is grouped in keys[] order.
 */
static void
test_child_before_parent(void **state)
{
	struct config cfg;
	int c, cd, cde, x;

	(void)state;
	good("[c/d/e]\nlimit = 3 requests/s\n"
	    "[x]\nlimit = 4 requests/s\nlimit = 5 requests/s\n"
	    "[c/d]\nlimit = 2 requests/s\n"
	    "[c]\nlimit = 1 requests/s\n", &cfg);
	assert_int_equal(cfg.nkeys, 4);
	assert_int_equal(cfg.nlimits, 5);
	c = config_find_key(&cfg, "c");
	cd = config_find_key(&cfg, "c/d");
	cde = config_find_key(&cfg, "c/d/e");
	x = config_find_key(&cfg, "x");
	/* File order, with each missing parent moved up before its child. */
	assert_int_equal(c, 0);
	assert_int_equal(cd, 1);
	assert_int_equal(cde, 2);
	assert_int_equal(x, 3);
	assert_int_equal(cfg.keys[c].parent, -1);
	assert_int_equal(cfg.keys[cd].parent, c);
	assert_int_equal(cfg.keys[cde].parent, cd);
	assert_int_equal(cfg.keys[x].parent, -1);
	assert_int_equal(cfg.keys[c].line, 8);
	assert_int_equal(cfg.keys[cd].line, 6);
	assert_int_equal(cfg.keys[cde].line, 1);
	assert_int_equal(cfg.keys[x].line, 3);
	/* Limits grouped by key in keys[] order; each key's in file order. */
	assert_int_equal(cfg.keys[c].first_limit, 0);
	assert_int_equal(cfg.keys[cd].first_limit, 1);
	assert_int_equal(cfg.keys[cde].first_limit, 2);
	assert_int_equal(cfg.keys[x].first_limit, 3);
	assert_int_equal(cfg.keys[x].nlimits, 2);
	for (unsigned i = 0; i < 5; i++)
		assert_int_equal(cfg.limits[i].count, i + 1);
	assert_int_equal(lim(&cfg, x, 0)->line, 4);
	assert_int_equal(lim(&cfg, x, 1)->line, 5);
	for (unsigned k = 0; k < cfg.nkeys; k++)
		assert_true(cfg.keys[k].parent < (int)k);
	config_free(&cfg);
}

/* A parent with no settings at all is still a key. */
static void
test_parent_without_settings(void **state)
{
	struct config cfg;

	(void)state;
	good("[p/q]\nlimit = 1 requests/s\n[p]\n", &cfg);
	assert_int_equal(cfg.nkeys, 2);
	assert_string_equal(cfg.keys[0].name, "p");
	assert_int_equal(cfg.keys[0].nlimits, 0);
	assert_int_equal(cfg.keys[0].first_limit, 0);
	assert_int_equal(cfg.keys[1].parent, 0);
	assert_int_equal(cfg.keys[1].first_limit, 0);
	assert_int_equal(cfg.keys[1].nlimits, 1);
	config_free(&cfg);
}

/* Every period unit, with and without a count. */
static void
test_periods(void **state)
{
	static const struct {
		const char	*s;
		uint64_t	ns;
	} t[] = {
		{ "7 tokens/s", S },
		{ "7 tokens/165s", 165 * S },
		{ "7 tokens/min", 60 * S },
		{ "7 tokens/10min", 600 * S },
		{ "7 tokens/h", 3600 * S },
		{ "7 tokens/24h", 86400 * S },
		{ "7 tokens/day", 86400 * S },
		{ "7 tokens/2day", 2 * 86400 * S },
		{ "7 tokens/007s", 7 * S },
	};
	struct limit_spec l;
	const char *why;

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		assert_int_equal(config_parse_limit(t[i].s, &l, &why), 0);
		assert_rate(&l, 7, UNIT_TOKENS, t[i].ns, 7, 0);
	}
}

/* Options come in any order; burst defaults to the count. */
static void
test_limit_options(void **state)
{
	struct limit_spec l;
	const char *why;

	(void)state;
	assert_int_equal(config_parse_limit("1 requests/165s cooldown 120s "
	    "burst 4", &l, &why), 0);
	assert_rate(&l, 1, UNIT_REQUESTS, 165 * S, 4, 120 * S);
	assert_int_equal(config_parse_limit("  30000   tokens/min\tburst 500 ",
	    &l, &why), 0);
	assert_rate(&l, 30000, UNIT_TOKENS, 60 * S, 500, 0);
	assert_int_equal(config_parse_limit("20 images/min", &l, &why), 0);
	assert_rate(&l, 20, UNIT_IMAGES, 60 * S, 20, 0);
	/* A burst smaller than the count smooths a rate; it is allowed. */
	assert_int_equal(config_parse_limit("500 requests/min burst 10", &l,
	    &why), 0);
	assert_int_equal(l.burst, 10);

	assert_int_equal(config_parse_limit("window 9 requests/day", &l, &why),
	    -EINVAL);
	assert_int_equal(config_parse_limit("9 requests/day cooldown 1.5s "
	    "window", &l, &why), 0);
	assert_int_equal(l.kind, LIM_WINDOW);
	assert_int_equal(l.count, 9);
	assert_int_equal(l.burst, 0);
	assert_int_equal(l.cooldown_ns, 1500000000);
	assert_int_equal(l.line, 0);
}

static void
test_concurrency_forms(void **state)
{
	struct limit_spec l;
	const char *why;

	(void)state;
	assert_int_equal(config_parse_limit("concurrency 2", &l, &why), 0);
	assert_int_equal(l.kind, LIM_CONC);
	assert_int_equal(l.unit, UNIT_REQUESTS);
	assert_int_equal(l.count, 2);
	assert_int_equal(l.adaptive, 0);
	assert_int_equal(l.period_ns, 0);
	assert_int_equal(l.burst, 0);
	assert_int_equal(l.cooldown_ns, 0);
	assert_int_equal(config_parse_limit("concurrency 3 adaptive", &l,
	    &why), 0);
	assert_int_equal(l.count, 3);
	assert_int_equal(l.adaptive, 1);
	assert_int_equal(config_parse_limit("concurrency 0", &l, &why),
	    -EINVAL);
	assert_int_equal(config_parse_limit("concurrency 2 adaptive adaptive",
	    &l, &why), -EINVAL);
}

/*
 * What inih allows around the settings: a byte order mark, CRLF, tabs,
 * comment lines, inline comments, indentation (not a continuation here,
 * since every indented line is a whole setting), `:' for `='.
 */
static void
test_comments_and_whitespace(void **state)
{
	struct config cfg;

	(void)state;
	good("\xef\xbb\xbf; a comment\r\n"
	    "# another\r\n"
	    "\r\n"
	    "  [broker]   ; the broker\r\n"
	    "\tsegment\t=\tws ; inline\r\n"
	    "[k]\r\n"
	    "    limit = 1 requests/s\r\n"
	    "    limit = 2 requests/s ; two\r\n"
	    "\tconcurrency: 3\r\n"
	    "\n"
	    "   \t\n"
	    "; last, without a newline", &cfg);
	assert_string_equal(cfg.segment, "ws");
	assert_int_equal(cfg.nkeys, 1);
	assert_int_equal(cfg.keys[0].line, 6);
	assert_int_equal(cfg.keys[0].nlimits, 3);
	assert_int_equal(lim(&cfg, 0, 0)->count, 1);
	assert_int_equal(lim(&cfg, 0, 1)->count, 2);
	assert_int_equal(lim(&cfg, 0, 1)->line, 8);
	assert_int_equal(lim(&cfg, 0, 2)->kind, LIM_CONC);
	assert_int_equal(lim(&cfg, 0, 2)->count, 3);
	config_free(&cfg);
}

/* 199 bytes is the longest line, whether or not a newline ends it. */
static void
test_line_199_bytes(void **state)
{
	char text[512], path[200];
	struct config cfg;
	int n;

	(void)state;
	/* "pidfile = " is 10 bytes; the path makes the line 199. */
	memset(path, 'p', sizeof(path));
	path[0] = '/';
	path[189] = '\0';
	n = snprintf(text, sizeof(text), "[broker]\npidfile = %s\n", path);
	assert_int_equal(n, 9 + 199 + 1);
	good(text, &cfg);
	assert_string_equal(cfg.pidfile, path);
	config_free(&cfg);

	/* And the same as the last line, without its newline. */
	text[n - 1] = '\0';
	good(text, &cfg);
	assert_string_equal(cfg.pidfile, path);
	config_free(&cfg);

	/* Then a line after it: nothing of the long one leaks into it. */
	snprintf(text, sizeof(text), "[broker]\npidfile = %s\nsegment = x\n",
	    path);
	good(text, &cfg);
	assert_string_equal(cfg.segment, "x");
	config_free(&cfg);
}

static void
test_key_name_47_bytes(void **state)
{
	char text[128], name[48];
	struct config cfg;

	(void)state;
	memset(name, 'n', 47);
	name[47] = '\0';
	name[10] = '/';
	snprintf(text, sizeof(text), "[nnnnnnnnnn]\n[%s]\nlimit = 1 images/s\n",
	    name);
	good(text, &cfg);
	assert_int_equal(config_find_key(&cfg, name), 1);
	assert_int_equal(cfg.keys[1].parent, 0);
	config_free(&cfg);
}

static void
test_depth_8(void **state)
{
	struct config cfg;

	(void)state;
	good("[a/b/c/d/e/f/g/h]\n[a/b/c/d/e/f/g]\n[a/b/c/d/e/f]\n[a/b/c/d/e]\n"
	    "[a/b/c/d]\n[a/b/c]\n[a/b]\n[a]\n", &cfg);
	assert_int_equal(cfg.nkeys, 8);
	assert_string_equal(cfg.keys[0].name, "a");
	assert_string_equal(cfg.keys[7].name, "a/b/c/d/e/f/g/h");
	for (int i = 0; i < 8; i++)
		assert_int_equal(cfg.keys[i].parent, i - 1);
	config_free(&cfg);
}

/* Build a config: a parent with np limits, a child with nc. */
static char *
chain_conf(int np, int nc)
{
	size_t len = 64 + 32 * (size_t)(np + nc);
	char *s = malloc(len);
	size_t o;

	assert_non_null(s);
	o = (size_t)snprintf(s, len, "[p]\n");
	for (int i = 0; i < np; i++)
		o += (size_t)snprintf(s + o, len - o, "limit = %d tokens/s\n",
		    i + 1);
	o += (size_t)snprintf(s + o, len - o, "[p/c]\n");
	for (int i = 0; i < nc; i++)
		o += (size_t)snprintf(s + o, len - o, "limit = %d images/s\n",
		    i + 1);
	return s;
}

static void
test_chain_16(void **state)
{
	struct config cfg;
	char *s = chain_conf(10, 6);

	(void)state;
	good(s, &cfg);
	assert_int_equal(cfg.nlimits, 16);
	config_free(&cfg);
	free(s);
	s = chain_conf(0, 16);
	good(s, &cfg);
	config_free(&cfg);
	free(s);
}

static void
test_find_key(void **state)
{
	struct config cfg, zero;

	(void)state;
	good(design_conf, &cfg);
	assert_int_equal(config_find_key(&cfg, "openai"), 0);
	assert_int_equal(config_find_key(&cfg, "chatgpt-web"), 2);
	assert_int_equal(config_find_key(&cfg, "openai/gpt-image-1"), 1);
	assert_int_equal(config_find_key(&cfg, "openai/"), -1);
	assert_int_equal(config_find_key(&cfg, "broker"), -1);
	assert_int_equal(config_find_key(&cfg, ""), -1);
	config_free(&cfg);
	memset(&zero, 0, sizeof(zero));
	assert_int_equal(config_find_key(&zero, "openai"), -1);
}

/* config_load_mem reads len bytes and not one more: ASan watches. */
static void
test_not_nul_terminated(void **state)
{
	static const char text[] = "[k]\nlimit = 1 requests/s\n"
	    "concurrency = 12";
	size_t len = sizeof(text) - 1;
	struct config cfg;
	struct cap c;
	char *buf;

	(void)state;
	buf = malloc(len);
	assert_non_null(buf);
	memcpy(buf, text, len);
	memset(&c, 0, sizeof(c));
	assert_int_equal(config_load_mem("m", buf, len, &cfg, capture, &c), 0);
	assert_int_equal(c.n, 0);
	assert_int_equal(lim(&cfg, 0, 1)->count, 12);
	config_free(&cfg);
	/* Cut in the middle of the number: "1", not "12". */
	assert_int_equal(config_load_mem("m", buf, len - 1, &cfg, capture, &c),
	    0);
	assert_int_equal(lim(&cfg, 0, 1)->count, 1);
	config_free(&cfg);
	/* And nothing at all. */
	assert_int_equal(config_load_mem("m", NULL, 0, &cfg, capture, &c), 0);
	assert_int_equal(cfg.nkeys, 0);
	config_free(&cfg);
	free(buf);
}

/* config_free on a zeroed config, and twice on a loaded one. */
static void
test_free_twice(void **state)
{
	struct config cfg;

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	config_free(&cfg);
	good(design_conf, &cfg);
	config_free(&cfg);
	assert_null(cfg.keys);
	config_free(&cfg);
	config_free(NULL);
}

/* A real file, through config_load. */
static void
test_load_file(void **state)
{
	char path[] = "/tmp/test_config.XXXXXX";
	struct config cfg;
	struct cap c;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, design_conf, sizeof(design_conf) - 1),
	    (ssize_t)sizeof(design_conf) - 1);
	assert_int_equal(write(fd, "[bad]\nlimit = 0 images/s\n", 25), 25);
	close(fd);

	memset(&c, 0, sizeof(c));
	assert_int_equal(config_load(path, &cfg, capture, &c), 1);
	assert_int_equal(c.n, 1);
	/* The message names the file by its path and line 18. */
	assert_true(strncmp(c.msg[0], path, strlen(path)) == 0);
	assert_true(strncmp(c.msg[0] + strlen(path), ":18: ", 5) == 0);
	assert_non_null(strstr(c.msg[0], "smaller than one"));
	assert_empty(&cfg);
	cap_free(&c);

	/* Now without the bad key. */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, design_conf, sizeof(design_conf) - 1),
	    (ssize_t)sizeof(design_conf) - 1);
	close(fd);
	assert_int_equal(config_load(path, &cfg, capture, &c), 0);
	assert_int_equal(c.n, 0);
	assert_string_equal(cfg.path, path);
	assert_int_equal(cfg.nkeys, 3);
	config_free(&cfg);
	unlink(path);
}

static void
test_missing_file(void **state)
{
	struct config cfg;
	struct cap c;

	(void)state;
	memset(&c, 0, sizeof(c));
	assert_int_equal(config_load("/nonexistent/tollgate.conf", &cfg,
	    capture, &c), 1);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.msg[0],
	    "/nonexistent/tollgate.conf: No such file or directory");
	assert_empty(&cfg);
	cap_free(&c);

	assert_int_equal(config_load("/", &cfg, capture, &c), 1);
	assert_string_equal(c.msg[0], "/: Is a directory");
	cap_free(&c);

	/* No callback: the count alone. */
	assert_int_equal(config_load("/nonexistent", &cfg, NULL, NULL), 1);
}

/* The bundled config parses, when the test runs from the tree's top. */
static void
test_bundled_config(void **state)
{
	struct config cfg;
	struct cap c;

	(void)state;
	if (access("broker/tollgate.conf", R_OK) != 0)
		skip();
	memset(&c, 0, sizeof(c));
	if (config_load("broker/tollgate.conf", &cfg, capture, &c) != 0) {
		cap_print(&c);
		fail_msg("broker/tollgate.conf does not parse");
	}
	assert_true(config_find_key(&cfg, "chatgpt-web") >= 0);
	assert_true(config_find_key(&cfg, "openai/gpt-image-1") >= 0);
	config_free(&cfg);
}

/* Many keys: duplicates and parents are found by sorting, not scanning. */
static void
test_many_keys(void **state)
{
	size_t len = 20000 * 24, o = 0;
	char *s = malloc(len);
	struct config cfg;

	(void)state;
	assert_non_null(s);
	for (int i = 0; i < 10000; i++)
		o += (size_t)snprintf(s + o, len - o, "[k%d/c]\n[k%d]\n", i, i);
	good(s, &cfg);
	assert_int_equal(cfg.nkeys, 20000);
	for (unsigned i = 0; i < cfg.nkeys; i += 2) {
		assert_int_equal(cfg.keys[i].parent, -1);
		assert_int_equal(cfg.keys[i + 1].parent, (int)i);
	}
	config_free(&cfg);
	free(s);
}

/* A key's feedback settings: backoff MIN..MAX, max_pause, learn. */
static void
assert_feedback(const struct config *cfg, const char *name, uint64_t min_ns,
    uint64_t max_ns, uint64_t pause_ns, int learn)
{
	int k;

	if ((k = config_find_key(cfg, name)) < 0)
		fail_msg("no key [%s]", name);
	assert_int_equal(cfg->keys[k].backoff_min_ns, min_ns);
	assert_int_equal(cfg->keys[k].backoff_max_ns, max_ns);
	assert_int_equal(cfg->keys[k].max_pause_ns, pause_ns);
	assert_int_equal(cfg->keys[k].learn, learn);
}

/* Keys that set nothing, nor their ancestors, get the defaults. */
static void
test_feedback_defaults(void **state)
{
	struct config cfg;

	(void)state;
	assert_true(CFG_BACKOFF_MAX_NS <= CFG_MAX_PAUSE_NS);
	good(design_conf, &cfg);
	for (unsigned k = 0; k < cfg.nkeys; k++)
		assert_feedback(&cfg, cfg.keys[k].name, CFG_BACKOFF_MIN_NS,
		    CFG_BACKOFF_MAX_NS, CFG_MAX_PAUSE_NS, 0);
	config_free(&cfg);
	good("[p/q]\n[p]\n", &cfg);
	assert_feedback(&cfg, "p", 1 * S, 60 * S, 600 * S, 0);
	assert_feedback(&cfg, "p/q", 1 * S, 60 * S, 600 * S, 0);
	config_free(&cfg);
}

/* Each setting and each of its forms. */
static void
test_feedback_settings(void **state)
{
	static const struct {
		const char	*text;
		uint64_t	min_ns, max_ns, pause_ns;
		int		learn;
	} t[] = {
		{ "backoff = 1s..60s", 1 * S, 60 * S, 600 * S, 0 },
		{ "backoff = 250ms..10s", S / 4, 10 * S, 600 * S, 0 },
		{ "backoff = 1.5s .. 2min", 3 * S / 2, 120 * S, 600 * S, 0 },
		{ "backoff=2..2 ; the same", 2 * S, 2 * S, 600 * S, 0 },
		{ "backoff = 1s..10min", 1 * S, 600 * S, 600 * S, 0 },
		{ "max_pause = 1h", 1 * S, 60 * S, 3600 * S, 0 },
		{ "max_pause = 1day", 1 * S, 60 * S, 86400 * S, 0 },
		{ "max_pause = 60s", 1 * S, 60 * S, 60 * S, 0 },
		{ "learn = yes", 1 * S, 60 * S, 600 * S, 1 },
		{ "learn = true", 1 * S, 60 * S, 600 * S, 1 },
		{ "learn = on", 1 * S, 60 * S, 600 * S, 1 },
		{ "learn = no", 1 * S, 60 * S, 600 * S, 0 },
		{ "learn = false", 1 * S, 60 * S, 600 * S, 0 },
		{ "learn = off", 1 * S, 60 * S, 600 * S, 0 },
	};
	struct config cfg;
	char text[128];

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		snprintf(text, sizeof(text), "[k]\nlimit = 1 requests/s\n%s\n",
		    t[i].text);
		good(text, &cfg);
		assert_feedback(&cfg, "k", t[i].min_ns, t[i].max_ns,
		    t[i].pause_ns, t[i].learn);
		config_free(&cfg);
	}
	good("[k]\nlearn = yes\nbackoff = 5s..5min\nmax_pause = 1h\n", &cfg);
	assert_feedback(&cfg, "k", 5 * S, 300 * S, 3600 * S, 1);
	assert_int_equal(cfg.keys[0].nlimits, 0);
	config_free(&cfg);
}

/*
 * A child takes what it does not set from its nearest ancestor, backoff
 * as a pair, whatever the order in the file; keys[] is reordered, and
 * the values go with the keys.
 */
static void
test_feedback_inherit(void **state)
{
	struct config cfg;

	(void)state;
	good("[a/b/c]\n"
	    "max_pause = 30min\n"
	    "[x]\n"
	    "learn = yes\n"
	    "[a/b]\n"
	    "backoff = 2s..20s\n"
	    "[a/d]\n"
	    "learn = no\n"
	    "[a]\n"
	    "backoff = 1s..5min\n"
	    "max_pause = 15min\n"
	    "learn = yes\n"
	    "[a/d/e]\n", &cfg);
	assert_int_equal(cfg.nkeys, 6);
	assert_string_equal(cfg.keys[0].name, "a");
	assert_feedback(&cfg, "a", 1 * S, 300 * S, 900 * S, 1);
	assert_feedback(&cfg, "a/b", 2 * S, 20 * S, 900 * S, 1);
	assert_feedback(&cfg, "a/b/c", 2 * S, 20 * S, 1800 * S, 1);
	assert_feedback(&cfg, "a/d", 1 * S, 300 * S, 900 * S, 0);
	assert_feedback(&cfg, "a/d/e", 1 * S, 300 * S, 900 * S, 0);
	assert_feedback(&cfg, "x", 1 * S, 60 * S, 600 * S, 1);
	config_free(&cfg);
}

static void
test_bad_backoff(void **state)
{
	(void)state;
	bad1("[k]\nlimit = 1 requests/s\nbackoff = 5s\n", 3,
	    "backoff `5s' is not MIN..MAX (e.g. 1s..60s)");
	bad1("[k]\nbackoff = 1s-60s\n", 2, "is not MIN..MAX");
	bad1("[k]\nbackoff =\n", 2, "backoff `' is not MIN..MAX");
	bad1("[k]\nbackoff = 1x..60s\n", 2,
	    "backoff: `1x': unknown unit (want ms, s, m or min, h, d or day)");
	bad1("[k]\nbackoff = -1s..60s\n", 2,
	    "backoff: `-1s': a duration is never negative");
	bad1("[k]\nbackoff = 1s..soon\n", 2, "backoff: `soon': not a duration");
	bad1("[k]\nbackoff = 1 s..60s\n", 2, "backoff: `1 s': unknown unit");
	bad1("[k]\nbackoff = 1s..2s..3s\n", 2,
	    "backoff: `2s..3s': unknown unit");
	bad1("[k]\nbackoff = 1s..300000day\n", 2,
	    "backoff: `300000day': too long");
	bad1("[k]\nbackoff = ..60s\n", 2,
	    "backoff `..60s': missing the minimum");
	bad1("[k]\nbackoff = 1s ..\n", 2,
	    "backoff `1s ..': missing the maximum");
	bad1("[k]\nbackoff = 0s..60s\n", 2,
	    "backoff: `0s': minimum must be longer than zero");
	bad1("[k]\nbackoff = 0 .. 0\n", 2, "`0': minimum must be longer");
	bad1("[k]\n\nbackoff = 10s..1s\n", 3,
	    "backoff `10s..1s': minimum longer than maximum");
	bad1("[k]\nbackoff = 1001ms..1s\n", 2, "minimum longer than maximum");
}

static void
test_bad_max_pause(void **state)
{
	(void)state;
	bad1("[k]\nmax_pause = soon\n", 2,
	    "max_pause `soon': not a duration (want a number and a unit: "
	    "500ms, 6.1s, 5m, 2h, 1d)");
	bad1("[k]\nmax_pause =\n", 2, "max_pause `': empty duration");
	bad1("[k]\nmax_pause = 5 m\n", 2, "max_pause `5 m': unknown unit");
	bad1("[k]\nmax_pause = -5m\n", 2, "max_pause `-5m': a duration is "
	    "never negative");
	bad1("[k]\nmax_pause = 0s\n", 2,
	    "max_pause `0s': must be longer than zero");
	bad1("[k]\nmax_pause = 0\n", 2, "must be longer than zero");
	bad1("[k]\nlimit = 1 requests/s\nmax_pause = 2day\n", 3,
	    "max_pause `2day': at most 1day");
	bad1("[k]\nmax_pause = 86400.000000001s\n", 2, "at most 1day");
	bad1("[k]\nmax_pause = 300000day\n", 2, "at most 1day");
}

static void
test_bad_learn(void **state)
{
	(void)state;
	bad1("[k]\nlearn = maybe\n", 2,
	    "learn `maybe': want yes or no (or true/false, on/off)");
	bad1("[k]\nlearn = Yes\n", 2, "learn `Yes': want yes or no");
	bad1("[k]\nlearn = 1\n", 2, "learn `1'");
	bad1("[k]\nlearn =\n", 2, "learn `'");
	bad1("[broker]\nlearn = yes\n", 2, "unknown setting `learn'");
	bad1("[broker]\nbackoff = 1s..2s\n", 2, "unknown setting `backoff'");
	bad1("[broker]\nmax_pause = 1s\n", 2, "unknown setting `max_pause'");
}

/* Each setting once per section, even with the same value. */
static void
test_bad_duplicate_feedback(void **state)
{
	(void)state;
	bad1("[k]\nbackoff = 1s..2s\nlimit = 1 requests/s\nbackoff = 1s..2s\n",
	    4, "second `backoff' for [k] (first on line 2)");
	bad1("[k]\nmax_pause = 1min\n\nmax_pause = 2min\n", 4,
	    "second `max_pause' for [k] (first on line 2)");
	bad1("[a]\n[k]\nlearn = yes\nlearn = no\n", 4,
	    "second `learn' for [k] (first on line 3)");
	/* Apart, in two sections of one key: the key is the duplicate. */
	bad1("[k]\nlearn = yes\n[k]\nlearn = yes\n", 3, "duplicate key [k]");
	/* In a parent and its child, each is its own. */
	{
		struct config cfg;

		good("[k]\nlearn = yes\n[k/c]\nlearn = no\n", &cfg);
		config_free(&cfg);
	}
}

/* A refused first value is not a first setting, as with concurrency. */
static void
test_bad_feedback_value_then_good(void **state)
{
	struct config cfg;
	struct cap c;

	(void)state;
	assert_int_equal(load("[k]\nbackoff = 5s\nbackoff = 1s..5s\n"
	    "learn = yes\nlearn = never\n", &cfg, &c), 2);
	assert_msg(&c, 0, 2, "not MIN..MAX");
	assert_msg(&c, 1, 5, "learn `never'");
	assert_empty(&cfg);
	cap_free(&c);
	/* Under a refused header, values are still checked. */
	assert_int_equal(load("[K]\nbackoff = 5s..1s\nlearn = yes\n"
	    "learn = yes\n", &cfg, &c), 2);
	assert_msg(&c, 0, 1, "uppercase");
	assert_msg(&c, 1, 2, "minimum longer than maximum");
	cap_free(&c);
}

/*
 * A backoff maximum past max_pause, the key's own or inherited, reported
 * on the line of whichever of the two came last in the file, once, for
 * the key that brought them together.
 */
static void
test_bad_backoff_over_pause(void **state)
{
	(void)state;
	/* Both its own. */
	bad1("[k]\nbackoff = 1s..2min\nmax_pause = 1min\n", 3,
	    "backoff maximum 120s exceeds max_pause 60s of [k] "
	    "(backoff: line 2, max_pause: line 3)");
	bad1("[k]\nmax_pause = 1min\nlimit = 1 requests/s\n"
	    "backoff = 1s..2min\n", 4, "of [k] (backoff: line 4, "
	    "max_pause: line 2)");
	/* Against a default. */
	bad1("[k]\nbackoff = 1s..11min\n", 2, "backoff maximum 660s exceeds "
	    "max_pause 600s of [k] (backoff: line 2, max_pause: default)");
	bad1("[k]\nmax_pause = 30s\n", 2, "backoff maximum 60s exceeds "
	    "max_pause 30s of [k] (backoff: default, max_pause: line 2)");
	/* Inherited: the child's own backoff against its parent's pause. */
	bad1("[a]\nmax_pause = 1min\n[a/b]\nbackoff = 1s..90s\n", 4,
	    "backoff maximum 90s exceeds max_pause 60s of [a/b] "
	    "(backoff: line 4, max_pause: line 2)");
	/* The parent's pause later in the file: its line. */
	bad1("[a/b/c]\nbackoff = 1s..90s\n[a/b]\n[a]\nmax_pause = 1min\n", 5,
	    "of [a/b/c] (backoff: line 2, max_pause: line 5)");
	/* The parent's backoff against the child's own pause. */
	bad1("[a]\nbackoff = 1s..5min\nmax_pause = 5min\n[a/b]\n"
	    "max_pause = 4min\n", 5, "backoff maximum 300s exceeds "
	    "max_pause 240s of [a/b]");
	/* A parent's own conflict, not again for the child inheriting it. */
	bad1("[a]\nbackoff = 1s..2min\nmax_pause = 1min\n[a/b]\nlearn = yes\n"
	    "[a/b/c]\n", 3, "of [a] (backoff: line 2");
	/* A child that sets its own fixes it for itself, not its parent. */
	bad1("[a]\nmax_pause = 1min\nbackoff = 1s..2min\n[a/b]\n"
	    "max_pause = 1h\n", 3, "of [a]");
	/* Under a missing parent the settings above are unknown: quiet. */
	bad1("[x/y]\nbackoff = 1s..1h\n", 1, "parent [x] of [x/y]");
}

/* The largest max_pause, and a backoff as long as it. */
static void
test_feedback_limits(void **state)
{
	struct config cfg;

	(void)state;
	good("[k]\nmax_pause = 86400s\nbackoff = 1ms..1day\n", &cfg);
	assert_feedback(&cfg, "k", S / 1000, CFG_MAX_PAUSE_LIMIT_NS,
	    CFG_MAX_PAUSE_LIMIT_NS, 0);
	config_free(&cfg);
	good("[k]\nbackoff = 0.000000001s..0.000000001s\nmax_pause = 1ms\n",
	    &cfg);
	assert_feedback(&cfg, "k", 1, 1, S / 1000, 0);
	config_free(&cfg);
}

/* Bad files: one error each, on the line named. */

static void
test_bad_unknown_unit(void **state)
{
	(void)state;
	bad1("[k]\nlimit = 5 images/min\nlimit = 5 pictures/min\n", 3,
	    "unknown unit");
	bad1("[k]\nlimit = 5 Images/min\n", 2, "unknown unit");
	bad1("[k]\nlimit = 5 images\n", 2, "UNIT/PERIOD");
	bad1("[k]\nlimit = 5\n", 2, "missing UNIT/PERIOD");
}

static void
test_bad_period(void **state)
{
	(void)state;
	bad1("[k]\n\nlimit = 5 images/0min\n", 3, "zero period");
	bad1("[k]\nlimit = 5 images/0s\n", 2, "zero period");
	bad1("[k]\nlimit = 5 images/0.0ms\n", 2, "zero period");
	bad1("[k]\nlimit = 5 images/\n", 2, "missing the period after `/'");
	bad1("[k]\nlimit = 5 images/week\n", 2,
	    "limit: period `week': unknown unit (want ms, s, m or min, h, d "
	    "or day, after an optional number)");
	bad1("[k]\nlimit = 5 images/mins\n", 2, "period `mins': unknown unit");
	bad1("[k]\nlimit = 5 images/-1s\n", 2,
	    "limit: period `-1s': a duration is never negative");
	bad1("[k]\nlimit = 5 images/min/s\n", 2, "period `min/s': unknown "
	    "unit");
	bad1("[k]\nlimit = 5 images/60\n", 2,
	    "limit: period `60': period without a unit");
	bad1("[k]\nlimit = 5 images/1.5\n", 2, "period without a unit");
	bad1("[k]\nlimit = 5 images/1.s\n", 2,
	    "no digit after the decimal point");
	bad1("[k]\nlimit = 5 images/.5s\n", 2, "period `.5s': not a "
	    "duration");
	bad1("[k]\nlimit = 5 images/1.5.5s\n", 2, "unknown unit");
	bad1("[k]\nlimit = 5 images/0.0000000001s\n", 2,
	    "period `0.0000000001s': finer than a nanosecond");
	bad1("[k]\nlimit = 5 images/6.1 s\n", 2, "period without a unit");
}

/*
 * A period is a duration with its unit: fractions and ms give a margin
 * below a server's limit (5 images/6.1s under its 5 images/6s), m and d
 * are minutes and days, and `ms' is never `m' then `s'.
 */
static void
test_period_durations(void **state)
{
	static const struct {
		const char	*spec;
		uint64_t	period_ns;
	} t[] = {
		{ "5 images/6.1s", 6100000000 },
		{ "10 requests/500ms", 500000000 },
		{ "10 requests/0.5ms", 500000 },
		{ "10 requests/m", 60 * S },
		{ "10 requests/5m", 300 * S },
		{ "10 requests/1.5min", 90 * S },
		{ "10 requests/d", 86400 * S },
		{ "10 requests/2d window", 2 * 86400 * S },
		{ "10 requests/0.5h", 1800 * S },
		{ "10 requests/ms", 1000000 },
		{ "10 requests/1.000000001s", 1000000001 },
	};
	struct config cfg;
	struct limit_spec l;
	char file[128];

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		memset(&l, 0, sizeof(l));
		if (config_parse_limit(t[i].spec, &l, NULL) != 0)
			fail_msg("\"%s\" was refused", t[i].spec);
		assert_int_equal(l.period_ns, t[i].period_ns);
	}
	/* And in a file, as the broker reads it. */
	snprintf(file, sizeof(file), "[k]\nlimit = 5 images/6.1s\n"
	    "limit = 10 requests/500ms cooldown 1.5m\nmax_pause = 2.5m\n"
	    "backoff = 250ms..1.5m\n");
	good(file, &cfg);
	assert_int_equal(cfg.nlimits, 2);
	assert_int_equal(cfg.limits[0].period_ns, 6100000000);
	assert_int_equal(cfg.limits[1].period_ns, 500000000);
	assert_int_equal(cfg.limits[1].cooldown_ns, 90 * S);
	assert_int_equal(cfg.keys[0].max_pause_ns, 150 * S);
	assert_int_equal(cfg.keys[0].backoff_min_ns, 250000000);
	assert_int_equal(cfg.keys[0].backoff_max_ns, 90 * S);
	config_free(&cfg);
}

static void
test_bad_zero_count(void **state)
{
	(void)state;
	bad1("[k]\nlimit = 0 requests/min\n", 2, "count smaller than one");
	bad1("[k]\nconcurrency = 0\n", 2, "smaller than one");
}

static void
test_bad_burst(void **state)
{
	(void)state;
	bad1("[k]\nlimit = 1 requests/165s burst 0\n", 2,
	    "burst smaller than one");
	bad1("[k]\nlimit = 1 requests/s burst\n", 2, "burst needs a number");
	bad1("[k]\nlimit = 1 requests/s burst 4 burst 4\n", 2, "twice");
}

static void
test_bad_burst_on_window(void **state)
{
	(void)state;
	bad1("[k]\nlimit = 10 requests/day\nlimit = 10 requests/day burst 5 "
	    "window\n", 3, "only for rate limits");
	bad1("[k]\nlimit = 10 requests/day window burst 5\n", 2,
	    "only for rate limits");
}

static void
test_bad_cooldown(void **state)
{
	(void)state;
	bad1("[k]\nlimit = 1 requests/s cooldown 0s\n", 2, "longer than zero");
	bad1("[k]\nlimit = 1 requests/s cooldown 0\n", 2, "longer than zero");
	bad1("[k]\nlimit = 1 requests/s cooldown soon\n", 2,
	    "limit: cooldown `soon': not a duration");
	bad1("[k]\nlimit = 1 requests/s cooldown 2x\n", 2,
	    "limit: cooldown `2x': unknown unit (want ms, s, m or min, h, d "
	    "or day)");
	bad1("[k]\nlimit = 1 requests/s cooldown -2s\n", 2,
	    "limit: cooldown `-2s': a duration is never negative");
	bad1("[k]\nlimit = 1 requests/s cooldown 0.0000000001s\n", 2,
	    "finer than a nanosecond");
	bad1("[k]\nlimit = 1 requests/s cooldown 5 s\n", 2, "unknown option");
	bad1("[k]\nlimit = 1 requests/s cooldown\n", 2, "needs a duration");
	bad1("[k]\nlimit = 1 requests/s cooldown 1s cooldown 2s\n", 2,
	    "twice");
	bad1("[k]\nlimit = 1 requests/s cooldown 300000day\n", 2,
	    "limit: cooldown `300000day': too long");
}

/*
 * Issue 13, 5: `margin D' or `margin P%' keeps part of a rate limit's
 * bucket for the trip to the server; default none.  It must leave room
 * for one unit, and is for rate limits only.
 */
static void
test_margin(void **state)
{
	struct limit_spec l;
	struct config cfg;
	const char *why;

	(void)state;
	assert_int_equal(config_parse_limit("20 requests/6s", &l, &why), 0);
	assert_int_equal(limit_margin_ns(&l), 0);
	assert_int_equal(config_parse_limit("20 requests/6s margin 50ms", &l,
	    &why), 0);
	assert_int_equal(limit_margin_ns(&l), 50 * MS);
	/* The bucket shrinks by it; the rate stays. */
	assert_int_equal(gcra_tau_margin_ns(l.burst, l.period_ns, l.count,
	    limit_margin_ns(&l)), 6 * S - 50 * MS);
	assert_int_equal(config_parse_limit("20 requests/6s burst 4 margin 5%",
	    &l, &why), 0);
	assert_int_equal(limit_margin_ns(&l), 300 * MS);
	assert_int_equal(l.burst, 4);
	good("[k]\nlimit = 500 requests/min margin 1% cooldown 2s\n", &cfg);
	assert_int_equal(limit_margin_ns(&cfg.limits[0]), 600 * MS);
	assert_int_equal(cfg.limits[0].cooldown_ns, 2 * S);
	config_free(&cfg);
	bad1("[k]\nlimit = 9 images/h margin 1s window\n", 2,
	    "only for rate limits");
	bad1("[k]\nlimit = 1 requests/s margin 10ms\n", 2,
	    "beyond one unit");
	bad1("[k]\nlimit = 20 requests/6s margin 6s\n", 2, "beyond one unit");
	bad1("[k]\nlimit = 20 requests/6s margin 51%\n", 2, "1% to 50%");
	bad1("[k]\nlimit = 20 requests/6s margin 0\n", 2,
	    "limit: margin `0': must be longer than zero");
	bad1("[k]\nlimit = 20 requests/6s margin soon\n", 2,
	    "limit: margin `soon': not a duration");
	bad1("[k]\nlimit = 20 requests/6s margin\n", 2, "needs a duration");
	bad1("[k]\nlimit = 20 requests/6s margin 1ms margin 2ms\n", 2,
	    "twice");
}

/* `rejected = charged|free', inherited; default charged (as OpenAI). */
static void
test_rejected(void **state)
{
	struct config cfg;

	(void)state;
	good("[a]\nrejected = free\n[a/b]\n[c]\n[a/d]\nrejected = charged\n",
	    &cfg);
	assert_int_equal(cfg.keys[config_find_key(&cfg, "a")].refund_rejected,
	    1);
	assert_int_equal(cfg.keys[config_find_key(&cfg, "a/b")].
	    refund_rejected, 1);
	assert_int_equal(cfg.keys[config_find_key(&cfg, "a/d")].
	    refund_rejected, 0);
	assert_int_equal(cfg.keys[config_find_key(&cfg, "c")].refund_rejected,
	    0);
	config_free(&cfg);
	bad1("[k]\nrejected = maybe\n", 2, "want charged or free");
	bad1("[k]\nrejected = free\nrejected = free\n", 3, "second");
}

static void
test_bad_option(void **state)
{
	(void)state;
	bad1("[k]\nlimit = 1 requests/s bursts 4\n", 2, "unknown option");
	bad1("[k]\nlimit = 1 requests/s window window\n", 2, "twice");
	bad1("[k]\nlimit = 1 requests/s # comment\n", 2, "unknown option");
	bad1("[k]\nconcurrency = 2 adaptively\n", 2, "unknown option");
	bad1("[k]\nlimit = concurrency 4\n", 2, "concurrency = N");
	bad1("[k]\nlimit =\n", 2, "empty limit");
	bad1("[k]\nconcurrency =\n", 2, "missing");
}

static void
test_bad_unknown_parent(void **state)
{
	(void)state;
	bad1("[a]\n[a/b/c]\nlimit = 1 requests/s\n[a/b]\n[x/y]\n", 5,
	    "parent [x] of [x/y] is not defined");
	/* A missing grandparent is reported once, for the parent. */
	bad1("[x/y/z]\n[x/y]\n", 2, "parent [x]");
}

static void
test_bad_duplicate_key(void **state)
{
	(void)state;
	bad1("[a]\nlimit = 1 requests/s\n\n[b]\n[a]\n", 5,
	    "duplicate key [a] (first on line 1)");
}

static void
test_bad_duplicate_concurrency(void **state)
{
	(void)state;
	bad1("[k]\nconcurrency = 1\nlimit = 1 requests/s\nconcurrency = 2\n",
	    4, "first on line 2");
}

static void
test_bad_key_name_too_long(void **state)
{
	char text[128], name[49];

	(void)state;
	memset(name, 'x', 48);
	name[48] = '\0';
	snprintf(text, sizeof(text), "[a]\n[%s]\nlimit = 1 requests/s\n", name);
	bad1(text, 2, "key name too long");
	/* Past where inih would cut it, 49 bytes. */
	snprintf(text, sizeof(text), "[a]\n[%s%s]\n", name, "yyyy");
	bad1(text, 2, "key name too long");
	/* The settings after a refused header belong to no key. */
	snprintf(text, sizeof(text), "[a]\n[%s]\nconcurrency = 1\n"
	    "[a]\n", name);
	{
		struct config cfg;
		struct cap c;

		assert_int_equal(load(text, &cfg, &c), 2);
		assert_msg(&c, 0, 2, "too long");
		assert_msg(&c, 1, 4, "duplicate key [a]");
		cap_free(&c);
	}
}

static void
test_bad_line_too_long(void **state)
{
	char text[512];
	int n;

	(void)state;
	n = snprintf(text, sizeof(text), "[k]\nlimit = 1 requests/s\n; ");
	memset(text + n, 'c', 198);
	strcpy(text + n + 198, "\nlimit = 2 requests/s\n");
	/* The comment line is 200 bytes without its newline. */
	bad1(text, 3, "line too long");
	/* A setting: it is refused, not split into two. */
	n = snprintf(text, sizeof(text), "[k]\nlimit = 1 requests/s burst ");
	memset(text + n, '1', 200);
	strcpy(text + n + 200, "\n");
	bad1(text, 2, "line too long");
	/* At the end of the file, without a newline. */
	text[strlen(text) - 1] = '\0';
	bad1(text, 2, "line too long");
}

static void
test_bad_unknown_setting(void **state)
{
	(void)state;
	bad1("[k]\nlimit = 1 requests/s\nlimits = 2 requests/s\n", 3,
	    "unknown setting `limits' in [k]");
	bad1("[broker]\nsegmnet = x\n", 2, "unknown setting `segmnet'");
	bad1("[k]\nsegment = x\n", 2, "unknown setting `segment'");
	bad1("[broker]\nlimit = 1 requests/s\n", 2, "unknown setting `limit'");
	bad1("[broker]\nstate_file = /var/lib/tollgate/state\n", 2,
	    "unknown setting");
	bad1("limit = 1 requests/s\n[k]\n", 1, "before any [section]");
	bad1("[k]\n = 1\n", 2, "missing setting name");
}

static void
test_bad_segment(void **state)
{
	char text[512];
	int n;

	(void)state;
	bad1("[broker]\nsegment = a/b\n", 2, "segment name");
	bad1("[broker]\nsegment =\n", 2, "empty segment");
	bad1("[broker]\nsegment = ..\n", 2, "cannot be");
	bad1("[broker]\nsegment = .\n", 2, "cannot be");
	bad1("[broker]\nsegment = a b\n", 2, "segment name");
	bad1("[broker]\nsegment = caf\xc3\xa9\n", 2, "\\xc3");
	bad1("[broker]\nsegment = a\nsegment = b\n", 3,
	    "already set on line 2");
	/* 189 bytes is as long as a line lets it be, and fine. */
	n = snprintf(text, sizeof(text), "[broker]\nsegment = ");
	memset(text + n, 's', 189);
	text[n + 189] = '\0';
	{
		struct config cfg;

		good(text, &cfg);
		assert_int_equal(strlen(cfg.segment), 189);
		config_free(&cfg);
	}
}

static void
test_bad_mode(void **state)
{
	(void)state;
	bad1("[broker]\nmode = 0888\n", 2, "not an octal number");
	bad1("[broker]\nmode = 0660x\n", 2, "not an octal number");
	bad1("[broker]\nmode = rw\n", 2, "not an octal number");
	bad1("[broker]\nmode =\n", 2, "not an octal number");
	bad1("[broker]\nmode = -0660\n", 2, "not an octal number");
	bad1("[broker]\nmode = 01777\n", 2, "beyond 0777");
	bad1("[broker]\nmode = 77777777777777777777777\n", 2, "beyond 0777");
	bad1("[broker]\nmode = 0400\n", 2, "owner read and write");
	bad1("[broker]\nmode = 0266\n", 2, "owner read and write");
}

static void
test_bad_broker_values(void **state)
{
	(void)state;
	bad1("[broker]\nmax_clients = 0\n", 2, "1..65520");
	bad1("[broker]\nmax_clients = 65521\n", 2, "1..65520");
	bad1("[broker]\nmax_clients = 1k\n", 2, "not a decimal number");
	bad1("[broker]\nmax_clients = 99999999999999999999\n", 2,
	    "too large");
	bad1("[broker]\npidfile = run/t.pid\n", 2, "absolute");
	bad1("[broker]\npidfile = /run/\n", 2, "absolute");
	bad1("[broker]\npidfile =\n", 2, "absolute");
	bad1("[broker]\ngroup = no-such-group-tollgate\n", 2,
	    "unknown group");
	bad1("[broker]\ngroup = 4294967295\n", 2, "too large");
	bad1("[broker]\ngroup =\n", 2, "empty group");
	bad1("[broker]\n[broker]\n", 2, "duplicate section [broker] (first "
	    "on line 1)");
}

static void
test_bad_garbage_number(void **state)
{
	(void)state;
	bad1("[k]\nlimit = 5x requests/min\n", 2, "not a decimal number");
	bad1("[k]\nlimit = -5 requests/min\n", 2, "not a decimal number");
	bad1("[k]\nlimit = +5 requests/min\n", 2, "not a decimal number");
	bad1("[k]\nlimit = 0x10 requests/min\n", 2, "not a decimal number");
	bad1("[k]\nlimit = 1e3 requests/min\n", 2, "not a decimal number");
	bad1("[k]\nlimit = 5 requests/min burst 4.0\n", 2,
	    "not a decimal number");
	bad1("[k]\nconcurrency = four\n", 2, "not a decimal number");
}

static void
test_bad_overflow(void **state)
{
	(void)state;
	bad1("[k]\nlimit = 18446744073709551616 requests/min\n", 2,
	    "too large");
	bad1("[k]\nlimit = 1 requests/min burst 99999999999999999999\n", 2,
	    "too large");
	bad1("[k]\nconcurrency = 18446744073709551616\n", 2, "too large");
	/* The period in ns must fit in 64 bits. */
	bad1("[k]\nlimit = 1 requests/213504day\n", 2,
	    "limit: period `213504day': too long");
	bad1("[k]\nlimit = 1 requests/18446744074s\n", 2,
	    "limit: period `18446744074s': too long");
	bad1("[k]\nlimit = 1 requests/99999999999999999999999s\n", 2,
	    "period `99999999999999999999999s': too long");
}

/* The largest ones that fit are fine. */
static void
test_largest_numbers(void **state)
{
	struct limit_spec l;
	const char *why;

	(void)state;
	assert_int_equal(config_parse_limit("18446744073709551615 tokens/"
	    "213503day burst 18446744073709551615", &l, &why), 0);
	assert_int_equal(l.count, UINT64_MAX);
	assert_int_equal(l.burst, UINT64_MAX);
	assert_int_equal(l.period_ns, 213503 * (86400 * S));
	assert_int_equal(config_parse_limit("1 tokens/18446744073s", &l,
	    &why), 0);
	assert_int_equal(l.period_ns, 18446744073 * S);
}

static void
test_bad_chain_too_long(void **state)
{
	char *s;

	(void)state;
	/* [p] is line 1 with 10 limits (lines 2-11); [p/c] is line 12. */
	s = chain_conf(10, 7);
	bad1(s, 12, "17 limits");
	free(s);
	/* On the parent itself: reported once, not again for the child. */
	s = chain_conf(17, 0);
	bad1(s, 1, "[p] has 17 limits");
	free(s);
}

static void
test_bad_key_names(void **state)
{
	(void)state;
	bad1("[a]\n[OpenAI]\n", 2, "uppercase");
	bad1("[a]\n[a/B]\n", 2, "lowercase");
	bad1("[a b]\n", 1, "` ' in key name");
	bad1("[a:b]\n", 1, "in key name");
	bad1("[]\n", 1, "empty key name");
	bad1("[a//b]\n", 1, "empty level");
	bad1("[/a]\n", 1, "empty level");
	bad1("[a/]\n", 1, "empty level");
	bad1("[a/b/c/d/e/f/g/h/i]\n", 1, "9 levels");
	bad1("[broker/x]\n", 1, "reserved");
	bad1("[k\n", 1, "missing `]'");
	bad1("[k ; x]\n", 1, "missing `]'");
	bad1("[k]x\n", 1, "after the section header");
	bad1("[k] # not a comment\n", 1, "after the section header");
	/* What follows a refused header is checked, but belongs nowhere. */
	bad1("[broker] x\nsegment = a\nlimit = 1 requests/s\n", 1,
	    "after the section header");
	bad1("[Broker]\nsegment = a\nmode = 1\n", 1, "uppercase");
	{
		struct config cfg;
		struct cap c;

		assert_int_equal(load("[Broker]\nlimit = 0 requests/s\n", &cfg,
		    &c), 2);
		assert_msg(&c, 1, 2, "count smaller than one");
		cap_free(&c);
	}
}

/* An indented line goes on a value in inih; here it is an error. */
static void
test_bad_continuation(void **state)
{
	(void)state;
	bad1("[k]\nlimit = 1 requests/165s\n    burst 4 cooldown 120s\n", 3,
	    "continuation");
	bad1("[k]\nlimit = 1 requests/165s\n\tcooldown: 120s\n", 3,
	    "unknown setting `cooldown'");
	bad1("[k]\nlimit\n", 2, "is not `name = value'");
}

static void
test_bad_nul_byte(void **state)
{
	static const char text[] = "[k]\nlimit = 1 requests/s\0junk\n"
	    "limit = 2 requests/s\n";
	struct config cfg;
	struct cap c;

	(void)state;
	memset(&c, 0, sizeof(c));
	assert_int_equal(config_load_mem("t.conf", text, sizeof(text) - 1,
	    &cfg, capture, &c), 1);
	assert_msg(&c, 0, 2, "NUL");
	assert_empty(&cfg);
	cap_free(&c);
}

static void
test_bad_too_large(void **state)
{
	size_t len = (1u << 20) + 1;
	struct config cfg;
	struct cap c;
	char *buf;

	(void)state;
	buf = malloc(len);
	assert_non_null(buf);
	memset(buf, '\n', len);
	memset(&c, 0, sizeof(c));
	assert_int_equal(config_load_mem("t.conf", buf, len, &cfg, capture,
	    &c), 1);
	assert_non_null(strstr(c.msg[0], "too large"));
	cap_free(&c);
	assert_int_equal(config_load_mem("t.conf", buf, len - 1, &cfg, capture,
	    &c), 0);
	config_free(&cfg);
	free(buf);
}

/* Every error in a file, in one run, each on its line. */
static void
test_bad_several(void **state)
{
	static const char text[] =
	    "[broker]\n"				/* 1 */
	    "mode = 0444\n"				/* 2 */
	    "[Top]\n"					/* 3 */
	    "limit = 1 requests/s\n"			/* 4: dropped */
	    "[k]\n"					/* 5 */
	    "limit = 5 fish/min\n"			/* 6 */
	    "limit = 1 requests/165s\n"			/* 7 */
	    "  burst 4\n"				/* 8 */
	    "limit = 1 requests/s burst 0\n"		/* 9 */
	    "colour = blue\n"				/* 10 */
	    "[k/c]\n"					/* 11 */
	    "[z/y]\n"					/* 12 */
	    "concurrency = 1\n"				/* 13 */
	    "concurrency = 2\n"				/* 14 */
	    "[k]\n";					/* 15 */
	struct config cfg;
	struct cap c;

	(void)state;
	assert_int_equal(load(text, &cfg, &c), 9);
	assert_int_equal(c.n, 9);
	assert_msg(&c, 0, 2, "owner read and write");
	assert_msg(&c, 1, 3, "uppercase");
	assert_msg(&c, 2, 6, "unknown unit");
	assert_msg(&c, 3, 8, "continuation");
	assert_msg(&c, 4, 9, "burst smaller than one");
	assert_msg(&c, 5, 10, "unknown setting `colour'");
	assert_msg(&c, 6, 14, "first on line 13");
	/* Then what needs the whole file, in file order. */
	assert_msg(&c, 7, 12, "parent [z]");
	assert_msg(&c, 8, 15, "duplicate key [k] (first on line 5)");
	assert_empty(&cfg);
	cap_free(&c);
}

/* A bad file after a good one leaves nothing of either. */
static void
test_bad_leaves_nothing(void **state)
{
	struct config cfg;
	struct cap c;

	(void)state;
	assert_int_equal(load("[broker]\nsegment = s\n[a]\nlimit = 1 "
	    "requests/s\n[b]\nlimit = 0 requests/s\n", &cfg, &c), 1);
	assert_empty(&cfg);
	assert_string_equal(cfg.segment, "");
	config_free(&cfg);
	cap_free(&c);
}

/* config_parse_limit's own errors, and *out left alone. */
static void
test_parse_limit_errors(void **state)
{
	static const char *const bad[] = {
		"", "   ", "five requests/min", "5 requests/min burst",
		"5 requests/min extra", "5 requests/minute", "5 requests min",
		"5requests/min", "5 requests/ min", "concurrency",
		"concurrency -1", "5 requests/min cooldown -1s",
	};
	struct limit_spec l;
	const char *why;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&l, 0xa5, sizeof(l));
		why = NULL;
		if (config_parse_limit(bad[i], &l, &why) != -EINVAL)
			fail_msg("\"%s\" was taken", bad[i]);
		assert_non_null(why);
		assert_true(why[0] != '\0');
		assert_int_equal(l.count, UINT64_C(0xa5a5a5a5a5a5a5a5));
	}
	assert_int_equal(config_parse_limit(NULL, &l, &why), -EINVAL);
	assert_int_equal(config_parse_limit("x", &l, NULL), -EINVAL);
	assert_int_equal(config_parse_limit("1 tokens/min burst 0", &l, &why),
	    -EINVAL);
	assert_string_equal(why, "burst smaller than one");
}

static void
test_parse_duration(void **state)
{
	static const struct {
		const char	*s;
		uint64_t	ns;
	} ok[] = {
		{ "120s", 120 * S },
		{ "1.5s", 1500000000 },
		{ "500ms", 500000000 },
		{ "10min", 600 * S },
		{ "2h", 7200 * S },
		{ "1day", 86400 * S },
		{ "90", 90 * S },
		{ "0.25", 250000000 },
		{ "1.5min", 90 * S },
		{ "0.5ms", 500000 },
		{ "5m", 300 * S },
		{ "1.5m", 90 * S },
		{ "2d", 2 * 86400 * S },
		{ "0.5d", 43200 * S },
		{ "6.1s", 6100000000 },
		{ "1m", 60 * S },
		{ "1.000000001s", 1000000001 },
		{ "2.500000000000s", 2500000000 },
		{ "0s", 0 },
		{ "18446744073s", 18446744073 * S },
	};
	static const char *const inval[] = {
		"", "s", "ms", "1.", ".5", "1.5.5s", "10 s", " 10s", "10s ",
		"1week", "-1s", "+1s", "1e3s", "1S", "0x10s", "1ns",
		"0.0000000001s", "0.0000000005ms", "5M", "5mn", "5 m", "1sm",
		"1ms5", "5m30s", "1days", "-0s", "5mss",
	};
	static const char *const range[] = {
		"18446744074s", "213504day", "18446744073709551616",
		"99999999999999999999999ms",
	};
	uint64_t ns;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ns = 1;
		if (config_parse_duration(ok[i].s, &ns) != 0)
			fail_msg("\"%s\" was refused", ok[i].s);
		assert_int_equal(ns, ok[i].ns);
	}
	for (size_t i = 0; i < sizeof(inval) / sizeof(inval[0]); i++)
		if (config_parse_duration(inval[i], &ns) != -EINVAL)
			fail_msg("\"%s\" was not -EINVAL", inval[i]);
	for (size_t i = 0; i < sizeof(range) / sizeof(range[0]); i++)
		if (config_parse_duration(range[i], &ns) != -ERANGE)
			fail_msg("\"%s\" was not -ERANGE", range[i]);
	assert_int_equal(config_parse_duration(NULL, &ns), -EINVAL);
}

/* limit_format writes what a person would. */
static void
test_limit_format(void **state)
{
	static const struct {
		const char	*in;
		const char	*out;
	} t[] = {
		{ "5 images/min", "5 images/min" },
		{ "1 requests/165s burst 4 cooldown 120s",
		  "1 requests/165s burst 4 cooldown 120s" },
		{ "10000 requests/day window", "10000 requests/day window" },
		{ "concurrency 4", "concurrency 4" },
		{ "concurrency 4 adaptive", "concurrency 4 adaptive" },
		{ "500 requests/600s", "500 requests/10min" },
		{ "1 tokens/86400s", "1 tokens/day" },
		{ "1 tokens/24h", "1 tokens/day" },
		{ "1 tokens/120s", "1 tokens/2min" },
		{ "1 tokens/7200s", "1 tokens/2h" },
		{ "1 tokens/60s", "1 tokens/min" },
		{ "7 tokens/2day", "7 tokens/2day" },
		{ "7 tokens/s burst 7", "7 tokens/s" },
		{ "7 tokens/s cooldown 1.5s", "7 tokens/s cooldown 1.5s" },
		{ "7 tokens/s cooldown 2min", "7 tokens/s cooldown 120s" },
		{ "7 tokens/s cooldown 1h", "7 tokens/s cooldown 1h" },
		{ "7 tokens/s cooldown 90min", "7 tokens/s cooldown 90min" },
		{ "7 tokens/s cooldown 1day", "7 tokens/s cooldown 1day" },
		{ "7 tokens/s cooldown 0.5ms", "7 tokens/s cooldown 0.5ms" },
		{ "7 tokens/s cooldown 2m", "7 tokens/s cooldown 120s" },
		{ "7 tokens/s cooldown 3d", "7 tokens/s cooldown 3day" },
		{ "5 images/6.1s", "5 images/6.1s" },
		{ "10 requests/500ms", "10 requests/500ms" },
		{ "10 requests/0.5s", "10 requests/500ms" },
		{ "10 requests/m", "10 requests/min" },
		{ "10 requests/d", "10 requests/day" },
		{ "10 requests/1.5m", "10 requests/90s" },
		{ "10 requests/2d window", "10 requests/2day window" },
		{ "10 requests/0.25ms", "10 requests/0.25ms" },
		{ "10 requests/3600.5s", "10 requests/3600.5s" },
		{ "7 tokens/s cooldown 1.000000001",
		  "7 tokens/s cooldown 1.000000001s" },
		{ "9 images/h cooldown 3s window",
		  "9 images/h cooldown 3s window" },
		{ "20 requests/6s margin 50ms", "20 requests/6s margin 50ms" },
		{ "20 requests/6s margin 5% burst 4",
		  "20 requests/6s burst 4 margin 5%" },
	};
	struct limit_spec l;
	const char *why;
	char buf[128];
	int n;

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		assert_int_equal(config_parse_limit(t[i].in, &l, &why), 0);
		n = limit_format(&l, buf, sizeof(buf));
		assert_int_equal(n, strlen(t[i].out));
		assert_string_equal(buf, t[i].out);
	}
	/* Like snprintf: the length it needs, whatever fits. */
	assert_int_equal(config_parse_limit("5 images/min", &l, &why), 0);
	assert_int_equal(limit_format(&l, buf, 4), 12);
	assert_string_equal(buf, "5 i");
	assert_int_equal(limit_format(&l, NULL, 0), 12);
}

static int
limit_equal(const struct limit_spec *a, const struct limit_spec *b)
{
	return a->kind == b->kind && a->unit == b->unit &&
	    a->adaptive == b->adaptive && a->count == b->count &&
	    a->period_ns == b->period_ns && a->burst == b->burst &&
	    a->cooldown_ns == b->cooldown_ns;
}

/* Check that l survives limit_format then config_parse_limit. */
static void
round_trip(const struct limit_spec *l)
{
	struct limit_spec back;
	const char *why = NULL;
	char buf[256];
	int n;

	n = limit_format(l, buf, sizeof(buf));
	assert_true(n > 0 && (size_t)n < sizeof(buf));
	memset(&back, 0x5a, sizeof(back));
	if (config_parse_limit(buf, &back, &why) != 0)
		fail_msg("\"%s\" does not parse: %s", buf, why);
	if (!limit_equal(l, &back))
		fail_msg("\"%s\" parses to something else", buf);
	assert_int_equal(back.line, 0);
}

/* Every combination of a spread of values comes back the same. */
static void
test_round_trip(void **state)
{
	static const uint64_t counts[] = { 1, 4, 500, 30000, UINT64_MAX };
	static const uint64_t periods[] = {
		S, 59 * S, 60 * S, 165 * S, 600 * S, 3600 * S, 5400 * S,
		86400 * S, 2 * 86400 * S, 213503 * (86400 * S), 18446744073 * S,
	};
	static const uint64_t cooldowns[] = {
		0, 1, 500000, 1000000, 999999999, S, 1500000000, 120 * S,
		3600 * S, 3601 * S, 5400 * S, 86400 * S, 86401 * S,
		UINT64_C(18446744073709551615),
	};
	struct limit_spec l;

	(void)state;
	for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++)
	for (size_t p = 0; p < sizeof(periods) / sizeof(periods[0]); p++)
	for (size_t d = 0; d < sizeof(cooldowns) / sizeof(cooldowns[0]); d++)
	for (unsigned u = 0; u < UNIT_COUNT; u++) {
		memset(&l, 0, sizeof(l));
		l.unit = (uint8_t)u;
		l.count = counts[c];
		l.period_ns = periods[p];
		l.cooldown_ns = cooldowns[d];
		l.kind = LIM_WINDOW;
		round_trip(&l);
		l.kind = LIM_RATE;
		l.burst = l.count;
		round_trip(&l);
		l.burst = counts[(c + 1) % 5];
		round_trip(&l);
	}
	for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
		memset(&l, 0, sizeof(l));
		l.kind = LIM_CONC;
		l.count = counts[c];
		round_trip(&l);
		l.adaptive = 1;
		round_trip(&l);
	}
}

static void
test_unit_name(void **state)
{
	(void)state;
	assert_string_equal(unit_name(UNIT_REQUESTS), "requests");
	assert_string_equal(unit_name(UNIT_TOKENS), "tokens");
	assert_string_equal(unit_name(UNIT_IMAGES), "images");
	assert_string_equal(unit_name(UNIT_COUNT), "?");
	assert_string_equal(unit_name(~0u), "?");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_design_example),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_broker_settings),
		cmocka_unit_test(test_group_by_name),
		cmocka_unit_test(test_pidfile_follows_segment),
		cmocka_unit_test(test_child_before_parent),
		cmocka_unit_test(test_parent_without_settings),
		cmocka_unit_test(test_periods),
		cmocka_unit_test(test_limit_options),
		cmocka_unit_test(test_concurrency_forms),
		cmocka_unit_test(test_comments_and_whitespace),
		cmocka_unit_test(test_line_199_bytes),
		cmocka_unit_test(test_key_name_47_bytes),
		cmocka_unit_test(test_depth_8),
		cmocka_unit_test(test_chain_16),
		cmocka_unit_test(test_find_key),
		cmocka_unit_test(test_not_nul_terminated),
		cmocka_unit_test(test_free_twice),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_bundled_config),
		cmocka_unit_test(test_many_keys),
		cmocka_unit_test(test_feedback_defaults),
		cmocka_unit_test(test_feedback_settings),
		cmocka_unit_test(test_feedback_inherit),
		cmocka_unit_test(test_feedback_limits),
		cmocka_unit_test(test_bad_unknown_unit),
		cmocka_unit_test(test_bad_period),
		cmocka_unit_test(test_period_durations),
		cmocka_unit_test(test_bad_zero_count),
		cmocka_unit_test(test_bad_burst),
		cmocka_unit_test(test_bad_burst_on_window),
		cmocka_unit_test(test_bad_cooldown),
		cmocka_unit_test(test_margin),
		cmocka_unit_test(test_rejected),
		cmocka_unit_test(test_bad_option),
		cmocka_unit_test(test_bad_unknown_parent),
		cmocka_unit_test(test_bad_duplicate_key),
		cmocka_unit_test(test_bad_duplicate_concurrency),
		cmocka_unit_test(test_bad_backoff),
		cmocka_unit_test(test_bad_max_pause),
		cmocka_unit_test(test_bad_learn),
		cmocka_unit_test(test_bad_duplicate_feedback),
		cmocka_unit_test(test_bad_feedback_value_then_good),
		cmocka_unit_test(test_bad_backoff_over_pause),
		cmocka_unit_test(test_bad_key_name_too_long),
		cmocka_unit_test(test_bad_line_too_long),
		cmocka_unit_test(test_bad_unknown_setting),
		cmocka_unit_test(test_bad_segment),
		cmocka_unit_test(test_bad_mode),
		cmocka_unit_test(test_bad_broker_values),
		cmocka_unit_test(test_bad_garbage_number),
		cmocka_unit_test(test_bad_overflow),
		cmocka_unit_test(test_largest_numbers),
		cmocka_unit_test(test_bad_chain_too_long),
		cmocka_unit_test(test_bad_key_names),
		cmocka_unit_test(test_bad_continuation),
		cmocka_unit_test(test_bad_nul_byte),
		cmocka_unit_test(test_bad_too_large),
		cmocka_unit_test(test_bad_several),
		cmocka_unit_test(test_bad_leaves_nothing),
		cmocka_unit_test(test_parse_limit_errors),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_limit_format),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_unit_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
