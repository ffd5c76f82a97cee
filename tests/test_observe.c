/*
 * test_observe.c: tg_observe against a corpus of real response header
 * blocks, the *.txt files of tests/observe/ (their format is in its README):
 * for each, the advice it must return and the pause, server caps and
 * posted limits it must leave in the segment of a real broker.
 *
 * Every case has a key of its own ([c0], [c1], ... in sorted file order),
 * so no case sees another's pause, backoff round or cap: a fresh key's
 * first hint-less pause is exactly its backoff minimum.
 */
#include <sys/types.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "gcra.h"
#include "helpers.h"
#include "seg.h"
#include "srvcap.h"
#include "tollgate.h"

#define MS		1000000ull
#define NS		1000000000ull
#define MIN_CASES	25		/* an empty corpus must not pass */
#define MAX_CASES	512
#define MAX_FILE	(64 * 1024)	/* bytes in one corpus file */
#define MAX_ERRS	4096		/* bytes of mismatch messages */
/*
 * How far a time may land from what a case says: the observe and the
 * checks around it take a few µs, a loaded or sanitized machine more;
 * the cap word rounds its end up to 2^20 ns.
 */
#define TOL_EARLY_NS	(20 * MS)
#define TOL_LATE_NS	(60 * MS)
#define DEF_MAX_PAUSE	"2min"

/* A time a case expects: exact, or `~' for one a whole-second date gave. */
struct when {
	uint64_t	ns;
	int		coarse;		/* plus the rounding of those dates */
};

/* What a case file expects; see tests/observe/README. */
struct expect {
	int		status;		/* 0 until given */
	int		advice;		/* TG_OK, ...; -1 until given */
	int		cls;		/* enum status_class; -1: not checked */
	int		pause_set;	/* the `pause:' line was given */
	int		paused;		/* 0: pause none */
	struct when	pause;
	int		cap_set[UNIT_COUNT];	/* a `remaining:' line for it */
	int		capped[UNIT_COUNT];	/* 0: it must have no cap */
	uint64_t	cap_left[UNIT_COUNT];
	struct when	cap_reset[UNIT_COUNT];
	int		limit_set[UNIT_COUNT];
	uint64_t	limit[UNIT_COUNT];	/* 0: nothing posted */
	int		bucket_set[UNIT_COUNT];	/* a `bucket:' line for it */
	uint64_t	bucket[UNIT_COUNT];	/* units the rate limit holds */
	char		max_pause[32];	/* the key's, as the config says it */
};

struct ocase {
	char		name[NAME_MAX + 1];	/* the file's, for messages */
	unsigned	idx;			/* its key is c<idx> */
	char		*text;			/* the whole file */
	const char	*block;			/* the raw block, in text */
	size_t		blen;
	struct expect	x;
	char		err[256];	/* why the file does not parse, or "" */
};

static const char *corpus_dir;
static struct ocase *cases;
static unsigned ncases;
static char corpus_err[PATH_MAX + 64];	/* why the corpus did not load */
/*
 * The broker, kept here and not in the group state: cmocka 1.1 hands a
 * test the group state when there is one, and each test here needs its
 * own case as its state.
 */
static struct tbroker *broker;

static const char *const advice_names[] = { "ok", "retry", "give-up" };
static const char *const class_names[] = {
	[ST_OK] = "ok", [ST_LIMITED] = "limited", [ST_AUTH] = "auth",
	[ST_CLIENT] = "client", [ST_SERVER] = "server"
};

static int
name_index(const char *s, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (names[i] != NULL && strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

static int
unit_index(const char *s)
{
	for (unsigned u = 0; u < UNIT_COUNT; u++)
		if (strcmp(s, unit_name(u)) == 0)
			return (int)u;
	return -1;
}

static int
parse_count(const char *s, uint64_t *v)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	*v = strtoull(s, &end, 10);
	return errno != 0 || *end != '\0' ? -1 : 0;
}

/* `6.5s', `~30s', `2min': a duration in the config's own syntax. */
static int
parse_when(const char *s, struct when *w)
{
	w->coarse = *s == '~';
	return config_parse_duration(s + w->coarse, &w->ns) == 0 ? 0 : -1;
}

/* Split s at blanks into at most n words; returns how many. */
static int
words(char *s, char **w, int n)
{
	int k = 0;

	while (k < n) {
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0')
			break;
		w[k++] = s;
		while (*s != '\0' && *s != ' ' && *s != '\t')
			s++;
		if (*s != '\0')
			*s++ = '\0';
	}
	while (*s == ' ' || *s == '\t')
		s++;
	return *s == '\0' ? k : n + 1;
}

/* One expectation line, comment and line end already cut off. */
static int
expect_line(struct expect *x, char *line, char *why, size_t wl)
{
	char *colon = strchr(line, ':'), *w[5];
	int n, u;
	uint64_t ns;

	if (colon == NULL) {
		snprintf(why, wl, "not `name: value'");
		return -1;
	}
	*colon = '\0';
	n = words(colon + 1, w, 4);
	if (n < 1 || n > 4) {
		snprintf(why, wl, "`%s': want 1 to 4 words", line);
		return -1;
	}
	if (strcmp(line, "status") == 0 && n == 1) {
		uint64_t v;

		if (parse_count(w[0], &v) != 0 || v < 200 || v > 599)
			goto bad;
		x->status = (int)v;
	} else if (strcmp(line, "advice") == 0 && n == 1) {
		if ((x->advice = name_index(w[0], advice_names, 3)) < 0)
			goto bad;
	} else if (strcmp(line, "class") == 0 && n == 1) {
		if ((x->cls = name_index(w[0], class_names, ST_SERVER + 1)) < 0)
			goto bad;
	} else if (strcmp(line, "pause") == 0 && n == 1) {
		x->pause_set = 1;
		x->paused = strcmp(w[0], "none") != 0;
		if (x->paused && (parse_when(w[0], &x->pause) != 0 ||
		    x->pause.ns == 0))
			goto bad;
	} else if (strcmp(line, "remaining") == 0 && (n == 2 || n == 4)) {
		if ((u = unit_index(w[0])) < 0 || x->cap_set[u])
			goto bad;
		x->cap_set[u] = 1;
		if (n == 2) {
			if (strcmp(w[1], "none") != 0)
				goto bad;
		} else if (parse_count(w[1], &x->cap_left[u]) != 0 ||
		    strcmp(w[2], "reset") != 0 ||
		    parse_when(w[3], &x->cap_reset[u]) != 0)
			goto bad;
		x->capped[u] = n == 4;
	} else if (strcmp(line, "limit") == 0 && n == 2) {
		if ((u = unit_index(w[0])) < 0 || x->limit_set[u])
			goto bad;
		x->limit_set[u] = 1;
		if (strcmp(w[1], "none") == 0)
			x->limit[u] = 0;
		else if (parse_count(w[1], &x->limit[u]) != 0 ||
		    x->limit[u] == 0)
			goto bad;
	} else if (strcmp(line, "bucket") == 0 && n == 2) {
		if ((u = unit_index(w[0])) < 0 || x->bucket_set[u] ||
		    parse_count(w[1], &x->bucket[u]) != 0)
			goto bad;
		x->bucket_set[u] = 1;
	} else if (strcmp(line, "max_pause") == 0 && n == 1) {
		/* The backoff's 60 s must fit, or the config is refused. */
		if (config_parse_duration(w[0], &ns) != 0 || ns < 60 * NS ||
		    strlen(w[0]) >= sizeof(x->max_pause))
			goto bad;
		snprintf(x->max_pause, sizeof(x->max_pause), "%s", w[0]);
	} else {
		snprintf(why, wl, "unknown line `%s:' (or wrong word count)",
		    line);
		return -1;
	}
	return 0;
bad:
	snprintf(why, wl, "`%s:' has a bad value", line);
	return -1;
}

/* Split a case file into expectations and block; errors go to oc->err. */
static void
case_parse(struct ocase *oc)
{
	struct expect *x = &oc->x;
	char line[512], why[160];
	const char *p = oc->text, *eol;
	size_t n;
	int lineno = 0;

	memset(x, 0, sizeof(*x));
	x->advice = x->cls = -1;
	snprintf(x->max_pause, sizeof(x->max_pause), "%s", DEF_MAX_PAUSE);
	for (;; p = eol + 1) {
		lineno++;
		if ((eol = strchr(p, '\n')) == NULL) {
			snprintf(oc->err, sizeof(oc->err), "no `---' line");
			return;
		}
		n = (size_t)(eol - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n >= sizeof(line)) {
			snprintf(oc->err, sizeof(oc->err), "line %d: too long",
			    lineno);
			return;
		}
		memcpy(line, p, n);
		line[n] = '\0';
		if (strcmp(line, "---") == 0)
			break;
		/* `#' starts a comment at the start or after a blank. */
		for (char *c = line; *c != '\0'; c++)
			if (*c == '#' && (c == line || c[-1] == ' ' ||
			    c[-1] == '\t')) {
				*c = '\0';
				break;
			}
		while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
			line[--n] = '\0';
		n = strspn(line, " \t");
		if (line[n] == '\0')
			continue;
		if (expect_line(x, line + n, why, sizeof(why)) != 0) {
			snprintf(oc->err, sizeof(oc->err), "line %d: %s",
			    lineno, why);
			return;
		}
	}
	oc->block = eol + 1;
	oc->blen = strlen(oc->block);
	if (x->status == 0 || x->advice < 0 || !x->pause_set)
		snprintf(oc->err, sizeof(oc->err), "status, advice and pause "
		    "are required");
}

/*
 * Dates.  Whole-second forms render the instant ceil(now) + N, so that
 * every one of them in a block is the same shift (ceil(now) - now, in
 * [0, 1 s)) past what the case says; ms forms render ceil_ms(now) + N.
 */
enum form { F_IMF, F_RFC850, F_ASCTIME, F_RFC3339, F_RFC3339MS, F_EPOCH,
	F_EPOCHMS, F_EPOCHF };

static const char *const form_names[] = {
	[F_IMF] = "imf", [F_RFC850] = "rfc850", [F_ASCTIME] = "asctime",
	[F_RFC3339] = "rfc3339", [F_RFC3339MS] = "rfc3339ms",
	[F_EPOCH] = "epoch", [F_EPOCHMS] = "epochms", [F_EPOCHF] = "epochf"
};

static int
whole_seconds(int form)
{
	return form != F_RFC3339MS && form != F_EPOCHMS && form != F_EPOCHF;
}

static const char wdays[7][10] = { "Sunday", "Monday", "Tuesday",
	"Wednesday", "Thursday", "Friday", "Saturday" };
static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May",
	"Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/*
 * Write instant ms (ms since the epoch) in form, at UTC offset off_s,
 * into out.  By hand, not strftime: no locale, and %y draws a warning.
 */
static int
format_date(int form, int64_t ms, int off_s, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000 + off_s);
	unsigned frac = (unsigned)(ms % 1000);
	struct tm tm;
	char zone[16];

	if (form == F_EPOCH)
		return snprintf(out, len, "%lld", (long long)(ms / 1000));
	if (form == F_EPOCHMS)
		return snprintf(out, len, "%lld", (long long)ms);
	if (form == F_EPOCHF)
		return snprintf(out, len, "%lld.%03u", (long long)(ms / 1000),
		    frac);
	if (gmtime_r(&t, &tm) == NULL)
		return -1;
	switch (form) {
	case F_IMF:
		return snprintf(out, len, "%.3s, %02d %s %04d %02d:%02d:%02d "
		    "GMT", wdays[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
		    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	case F_RFC850:
		return snprintf(out, len, "%s, %02d-%s-%02d %02d:%02d:%02d GMT",
		    wdays[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
		    tm.tm_year % 100, tm.tm_hour, tm.tm_min, tm.tm_sec);
	case F_ASCTIME:
		return snprintf(out, len, "%.3s %s %2d %02d:%02d:%02d %04d",
		    wdays[tm.tm_wday], months[tm.tm_mon], tm.tm_mday,
		    tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_year + 1900);
	default:
		if (off_s == 0)
			snprintf(zone, sizeof(zone), "Z");
		else
			snprintf(zone, sizeof(zone), "%c%02d:%02d",
			    off_s < 0 ? '-' : '+', abs(off_s) / 3600,
			    abs(off_s) / 60 % 60);
		if (form == F_RFC3339)
			return snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:"
			    "%02d%s", tm.tm_year + 1900, tm.tm_mon + 1,
			    tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, zone);
		return snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d."
		    "%03u%s", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		    tm.tm_hour, tm.tm_min, tm.tm_sec, frac, zone);
	}
}

/*
 * One placeholder, FORM+N or FORM-N with an optional @+hh:mm, p..e
 * without its braces, rendered at wall time wall_ns.  Returns the bytes
 * written, or -1 with *why.  Sets *coarse for a whole-second form.
 */
static int
placeholder(const char *p, const char *e, uint64_t wall_ns, char *out,
    size_t len, int *coarse, char *why, size_t wl)
{
	char form[16], num[32];
	const char *q = p, *at;
	int f, sign, off_s = 0, hh, mm;
	uint64_t n_ns;
	int64_t base_ms;

	while (q < e && ((*q >= 'a' && *q <= 'z') || (*q >= '0' &&
	    *q <= '9')))
		q++;
	for (at = q; at < e && *at != '@'; at++)
		;
	if (q == p || (size_t)(q - p) >= sizeof(form) || q == e ||
	    (*q != '+' && *q != '-') || (size_t)(at - q - 1) >= sizeof(num))
		goto bad;
	memcpy(form, p, (size_t)(q - p));
	form[q - p] = '\0';
	if ((f = name_index(form, form_names, F_EPOCHF + 1)) < 0)
		goto bad;
	sign = *q++ == '-' ? -1 : 1;
	memcpy(num, q, (size_t)(at - q));
	num[at - q] = '\0';
	/* A bare number is seconds to config_parse_duration; no units. */
	if (num[0] < '0' || num[0] > '9' || num[strlen(num) - 1] < '0' ||
	    num[strlen(num) - 1] > '9' || config_parse_duration(num,
	    &n_ns) != 0 || n_ns % (whole_seconds(f) ? NS : MS) != 0)
		goto bad;
	if (at < e) {
		/* @+hh:mm */
		if ((f != F_RFC3339 && f != F_RFC3339MS) || e - at != 7 ||
		    (at[1] != '+' && at[1] != '-') || at[4] != ':')
			goto bad;
		for (int i = 2; i < 7; i++)
			if (i != 4 && (at[i] < '0' || at[i] > '9'))
				goto bad;
		hh = (at[2] - '0') * 10 + (at[3] - '0');
		mm = (at[5] - '0') * 10 + (at[6] - '0');
		if (hh > 23 || mm > 59)
			goto bad;
		off_s = (at[1] == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
	}
	if (whole_seconds(f)) {
		base_ms = (int64_t)((wall_ns + NS - 1) / NS * 1000);
		*coarse = 1;
	} else
		base_ms = (int64_t)((wall_ns + MS - 1) / MS);
	return format_date(f, base_ms + sign * (int64_t)(n_ns / MS), off_s,
	    out, len);
bad:
	snprintf(why, wl, "bad placeholder {%.*s}", (int)(e - p), p);
	return -1;
}

/*
 * The block of oc with its placeholders filled in at wall time wall_ns,
 * into a malloc()ed *out.  Returns its length, or -1 with *why.
 */
static long
render(const struct ocase *oc, uint64_t wall_ns, char **out, int *coarse,
    char *why, size_t wl)
{
	const char *p = oc->block, *e = p + oc->blen, *close;
	size_t cap = oc->blen * 8 + 64, n = 0;
	char *b = malloc(cap);
	int r;

	*coarse = 0;
	assert_non_null(b);
	while (p < e) {
		if (*p != '{' || (p + 1 < e && p[1] == '{')) {
			/* `{{' is a literal brace. */
			b[n++] = *p;
			p += *p == '{' ? 2 : 1;
			continue;
		}
		if ((close = memchr(p, '}', (size_t)(e - p))) == NULL) {
			snprintf(why, wl, "`{' without `}'");
			free(b);
			return -1;
		}
		if ((r = placeholder(p + 1, close, wall_ns, b + n, cap - n,
		    coarse, why, wl)) < 0) {
			free(b);
			return -1;
		}
		n += (size_t)r;
		p = close + 1;
	}
	*out = b;
	return (long)n;
}

/* Mismatches of one case, gathered so a failure names all of them. */
struct errs {
	char	buf[MAX_ERRS];
	size_t	n;
};

__attribute__((format(printf, 2, 3)))
static void
bad(struct errs *er, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (er->n >= sizeof(er->buf) - 1)
		return;
	va_start(ap, fmt);
	r = vsnprintf(er->buf + er->n, sizeof(er->buf) - er->n, fmt, ap);
	va_end(ap);
	if (r > 0)
		er->n += (size_t)r;
	if (er->n > sizeof(er->buf) - 1)
		er->n = sizeof(er->buf) - 1;
}

static double
sec(int64_t ns)
{
	return (double)ns / NS;
}

/* What a case wants, for a message: `~' shows what it adds. */
static const char *
want(const struct when *w, uint64_t shift, char *buf, size_t len)
{
	if (w->coarse)
		snprintf(buf, len, "~%.3fs (%.3fs, the date rounded)",
		    sec((int64_t)w->ns), sec((int64_t)(w->ns + shift)));
	else
		snprintf(buf, len, "%.3fs", sec((int64_t)w->ns));
	return buf;
}

/*
 * Does the instant `at' (CLOCK_MONOTONIC) fall where want, counted from
 * an observe that ran within [t0, t1], says?  shift is what `~' adds.
 */
static int
lands(uint64_t at, const struct when *want, uint64_t shift, uint64_t t0,
    uint64_t t1, uint64_t extra_late)
{
	uint64_t d = want->ns + (want->coarse ? shift : 0);

	return at + TOL_EARLY_NS >= t0 + d && at <= t1 + d + TOL_LATE_NS +
	    extra_late;
}

/* The key's rate and window limit of each unit, from the live config. */
static void
unit_limits(const struct seg_map *m, uint32_t key, uint32_t lid[UNIT_COUNT])
{
	struct seg_cfg *cfg;
	const struct seg_key *k;
	const struct seg_limit *l;
	uint32_t seq, id;

	do {
		cfg = seg_read_begin(m, &seq);
		for (unsigned u = 0; u < UNIT_COUNT; u++)
			lid[u] = UINT32_MAX;
		k = &seg_keys(cfg)[key & 0xffff];
		for (unsigned i = 0; i < k->nchain && i < SEG_CHAIN_MAX; i++) {
			if ((id = k->chain[i]) >= m->hdr->max_limits)
				continue;
			l = &seg_limits(m, cfg)[id];
			if ((l->kind == LIM_RATE || l->kind == LIM_WINDOW) &&
			    l->unit < UNIT_COUNT)
				lid[l->unit] = id;
		}
	} while (!seg_read_ok(cfg, seq));
	for (unsigned u = 0; u < UNIT_COUNT; u++)
		assert_true(lid[u] != UINT32_MAX);
}

/* The pause: in the key's state, and as tg_try_acquire tells it. */
static void
check_pause(struct errs *er, tg_client *c, uint32_t k,
    const struct seg_kstate *ks, const struct expect *x, uint64_t shift,
    uint64_t t0, uint64_t t1)
{
	const tg_cost none = { 0, 0, 0 };	/* tests the pause alone */
	uint64_t until, retry = 0, t2;
	tg_ticket t;
	char wbuf[64];
	int r;

	until = atomic_load(&ks->paused_until_ns);
	memset(&t, 0, sizeof(t));
	r = tg_try_acquire(c, k, &none, &t, &retry);
	t2 = tb_now_ns();
	if (!x->paused) {
		if (until != 0)
			bad(er, "\n  pause: want none, got %.3fs",
			    sec((int64_t)(until - t0)));
		if (r != 0)
			bad(er, "\n  pause: want none, but tg_try_acquire "
			    "says %s (retry in %.3fs)", tg_strerror(r),
			    sec((int64_t)retry));
		tg_release(c, &t);
		return;
	}
	if (until == 0)
		bad(er, "\n  pause: want %s, got none", want(&x->pause, shift,
		    wbuf, sizeof(wbuf)));
	else if (!lands(until, &x->pause, shift, t0, t1, 0))
		bad(er, "\n  pause: want %s, got %.3fs", want(&x->pause, shift,
		    wbuf, sizeof(wbuf)), sec((int64_t)(until - t0)));
	if (r != -EAGAIN) {
		bad(er, "\n  pause: tg_try_acquire says %s, want -EAGAIN",
		    tg_strerror(r));
		tg_release(c, &t);
	} else if (!lands(t2 + retry, &x->pause, shift, t0, t2, 0))
		bad(er, "\n  pause: tg_try_acquire: retry in %.3fs, %.3fs "
		    "after the observe; want %s", sec((int64_t)retry),
		    sec((int64_t)(t2 - t0)), want(&x->pause, shift, wbuf,
		    sizeof(wbuf)));
}

/*
 * Units the rate limit id holds at now, and one unit's cost, as tollstat
 * reads them; 0 and 0 for a window.
 */
static uint64_t
available(const struct seg_map *m, uint32_t id, uint64_t now, uint64_t *one)
{
	struct seg_cfg *cfg;
	uint64_t count, period, tau;
	uint32_t seq;
	unsigned kind;

	do {
		cfg = seg_read_begin(m, &seq);
		kind = seg_limits(m, cfg)[id].kind;
		count = seg_limits(m, cfg)[id].count;
		period = seg_limits(m, cfg)[id].period_ns;
		tau = seg_limits(m, cfg)[id].tau_ns;
	} while (!seg_read_ok(cfg, seq));
	*one = 0;
	if (kind != LIM_RATE)
		return 0;
	*one = gcra_cost_ns(1, period, count);
	return gcra_available(atomic_load(&seg_lstates(m)[id].tat_ns), now,
	    *one, tau);
}

/* The server's caps, posted limits and local buckets, unit by unit. */
static void
check_units(struct errs *er, const struct seg_map *m,
    const uint32_t lid[UNIT_COUNT], const struct expect *x, uint64_t shift,
    uint64_t t0, uint64_t t1)
{
	const struct seg_lstate *ls = seg_lstates(m);
	uint64_t w, lim, have, one, now, slack;
	char wbuf[64];

	for (unsigned u = 0; u < UNIT_COUNT; u++) {
		if (x->bucket_set[u]) {
			now = tb_now_ns();
			have = available(m, lid[u], now, &one);
			/* What refilled since the observe, and a unit. */
			slack = one != 0 ? (now - t0) / one + 1 : 0;
			if (one == 0 || have < x->bucket[u] ||
			    have > x->bucket[u] + slack)
				bad(er, "\n  bucket: %s: want %" PRIu64 " (up "
				    "to %" PRIu64 " refilled since), got %"
				    PRIu64, unit_name(u), x->bucket[u], slack,
				    have);
		}
		w = atomic_load(&ls[lid[u]].srv_cap);
		if (!x->capped[u] && w != 0)
			bad(er, "\n  remaining: %s: want none, got %" PRIu64
			    " reset %.3fs", unit_name(u), cap_left(w),
			    sec((int64_t)(cap_until_ns(w) - t0)));
		else if (x->capped[u] && w == 0)
			bad(er, "\n  remaining: %s: want %" PRIu64 " reset "
			    "%s, got none", unit_name(u), x->cap_left[u],
			    want(&x->cap_reset[u], shift, wbuf, sizeof(wbuf)));
		else if (x->capped[u] && (cap_left(w) != x->cap_left[u] ||
		    !lands(cap_until_ns(w), &x->cap_reset[u], shift, t0, t1,
		    UINT64_C(1) << CAP_Q_SHIFT)))
			bad(er, "\n  remaining: %s: want %" PRIu64 " reset "
			    "%s, got %" PRIu64 " reset %.3fs", unit_name(u),
			    x->cap_left[u], want(&x->cap_reset[u], shift, wbuf,
			    sizeof(wbuf)), cap_left(w),
			    sec((int64_t)(cap_until_ns(w) - t0)));
		lim = atomic_load(&ls[lid[u]].srv_limit);
		if (lim != x->limit[u]) {
			if (x->limit[u] == 0)
				bad(er, "\n  limit: %s: want none, got %"
				    PRIu64, unit_name(u), lim);
			else
				bad(er, "\n  limit: %s: want %" PRIu64 ", got %"
				    PRIu64, unit_name(u), x->limit[u], lim);
		}
	}
}

/* The response class tg_observe counted on the key. */
static void
check_class(struct errs *er, const struct seg_kstate *ks, int cls)
{
	char got[128];
	size_t n = 0;
	uint64_t c;
	int ok = 1;

	if (cls < 0)
		return;
	got[0] = '\0';
	for (int i = ST_OK; i <= ST_SERVER; i++) {
		if ((c = atomic_load(&ks->status[i])) != (i == cls ? 1u : 0u))
			ok = 0;
		if (c != 0 && n < sizeof(got))
			n += (size_t)snprintf(got + n, sizeof(got) - n,
			    " %" PRIu64 " %s", c, class_names[i]);
	}
	if (!ok)
		bad(er, "\n  class: want 1 %s, got%s", class_names[cls],
		    n > 0 ? got : " none");
}

/* One corpus file: observe its block on its own key and check it all. */
static void
test_case(void **state)
{
	struct ocase *oc = *state;
	const struct expect *x = &oc->x;
	struct errs er = { .n = 0 };
	struct seg_map m;
	struct timespec wall;
	uint32_t k, lid[UNIT_COUNT];
	uint64_t t0, t1, shift, wall_ns;
	tg_client *c;
	tg_ticket t;
	char kname[16], why[160], *blk = NULL;
	long n;
	int coarse, r;

	if (broker == NULL)
		skip();
	if (oc->err[0] != '\0')
		fail_msg("%s/%s: %s", corpus_dir, oc->name, oc->err);
	c = tb_client(broker);
	snprintf(kname, sizeof(kname), "c%u", oc->idx);
	k = tb_key(c, kname);
	assert_int_equal(seg_attach(broker->segment, 0, &m), 0);
	unit_limits(&m, k, lid);

	memset(&t, 0, sizeof(t));
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, NULL), 0);
	clock_gettime(CLOCK_REALTIME, &wall);
	wall_ns = (uint64_t)wall.tv_sec * NS + (uint64_t)wall.tv_nsec;
	if ((n = render(oc, wall_ns, &blk, &coarse, why, sizeof(why))) < 0)
		fail_msg("%s/%s: %s", corpus_dir, oc->name, why);
	if (getenv("TG_OBSERVE_DUMP") != NULL)
		print_message("%.*s\n", (int)n, blk);
	/* What a whole-second date adds to the time the case says. */
	shift = (wall_ns + NS - 1) / NS * NS - wall_ns;
	t0 = tb_now_ns();
	r = tg_observe(c, &t, x->status, blk, (size_t)n);
	t1 = tb_now_ns();
	tg_release(c, &t);

	if (!coarse && (x->pause.coarse || x->cap_reset[0].coarse ||
	    x->cap_reset[1].coarse || x->cap_reset[2].coarse))
		bad(&er, "\n  `~' without a whole-second date in the block");
	if (r != x->advice)
		bad(&er, "\n  advice: want %s, got %s", advice_names[x->advice],
		    r >= 0 && r <= 2 ? advice_names[r] : tg_strerror(r));
	check_pause(&er, c, k, &seg_kstates(&m)[k & 0xffff], x, shift, t0, t1);
	check_units(&er, &m, lid, x, shift, t0, t1);
	check_class(&er, &seg_kstates(&m)[k & 0xffff], x->cls);

	free(blk);
	seg_detach(&m);
	tg_close(c);
	if (er.n > 0)
		fail_msg("%s/%s (key c%u):%s", corpus_dir, oc->name, oc->idx,
		    er.buf);
}

/* The corpus is there, and big enough that it tests something. */
static void
test_corpus_size(void **state)
{
	(void)state;
	if (corpus_err[0] != '\0')
		fail_msg("%s", corpus_err);
	if (ncases < MIN_CASES)
		fail_msg("%s: %u cases, want at least %d", corpus_dir, ncases,
		    MIN_CASES);
}

static int
is_case(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return d->d_name[0] != '.' && n > 4 &&
	    strcmp(d->d_name + n - 4, ".txt") == 0;
}

static char *
slurp(const char *path, char *why, size_t wl)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;

	if (f == NULL) {
		snprintf(why, wl, "%s", strerror(errno));
		return NULL;
	}
	buf = malloc(MAX_FILE + 1);
	n = buf != NULL ? fread(buf, 1, MAX_FILE + 1, f) : 0;
	fclose(f);
	if (buf == NULL || n > MAX_FILE || memchr(buf, '\0', n) != NULL) {
		snprintf(why, wl, "larger than %d bytes, or holds a NUL",
		    MAX_FILE);
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	return buf;
}

/* Read the corpus, sorted by name; a problem lands in corpus_err. */
static void
corpus_load(void)
{
	struct dirent **ents;
	char path[PATH_MAX];
	int n;

	if ((n = scandir(corpus_dir, &ents, is_case, alphasort)) < 0) {
		snprintf(corpus_err, sizeof(corpus_err), "%s: %s", corpus_dir,
		    strerror(errno));
		return;
	}
	cases = calloc(n > 0 ? (size_t)n : 1, sizeof(*cases));
	assert_non_null(cases);
	for (int i = 0; i < n; i++) {
		struct ocase *oc = &cases[ncases];

		if (ncases == MAX_CASES) {
			snprintf(corpus_err, sizeof(corpus_err), "%s: more "
			    "than %d cases", corpus_dir, MAX_CASES);
			break;
		}
		snprintf(oc->name, sizeof(oc->name), "%s", ents[i]->d_name);
		oc->idx = ncases++;
		snprintf(path, sizeof(path), "%s/%s", corpus_dir, oc->name);
		if ((oc->text = slurp(path, oc->err, sizeof(oc->err))) != NULL)
			case_parse(oc);
	}
	for (int i = 0; i < n; i++)
		free(ents[i]);
	free(ents);
}

/* One key per case, all alike but for a case's own max_pause. */
static char *
config_body(void)
{
	static const char fmt[] =
	    "[c%u]\n"
	    "limit = 100000 requests/min\n"
	    "limit = 10000000 tokens/min\n"
	    "limit = 1000 images/min\n"
	    "max_pause = %s\n"
	    "backoff = 1s..60s\n\n";
	size_t cap = (ncases + 1) * 256, n = 0;
	char *body = malloc(cap);

	assert_non_null(body);
	body[0] = '\0';
	for (unsigned i = 0; i < ncases; i++)
		n += (size_t)snprintf(body + n, cap - n, fmt, i,
		    cases[i].x.max_pause[0] != '\0' ? cases[i].x.max_pause :
		    DEF_MAX_PAUSE);
	assert_true(n < cap);
	return body;
}

static int
setup(void **state)
{
	char *body = config_body();
	int r;

	r = tb_group_setup(state, body);
	free(body);
	broker = *state;
	*state = NULL;		/* so each test gets its case: see broker */
	return r;
}

static int
teardown(void **state)
{
	*state = broker;
	broker = NULL;
	return tb_group_teardown(state);
}

int
main(void)
{
	struct CMUnitTest *tests;
	const char *dir = getenv("TG_OBSERVE_DIR");
	int r;

	corpus_dir = dir != NULL && *dir != '\0' ? dir : "tests/observe";
	corpus_load();
	tests = calloc(ncases + 1, sizeof(*tests));
	assert_non_null(tests);
	tests[0] = (struct CMUnitTest){ .name = "corpus_size",
	    .test_func = test_corpus_size };
	for (unsigned i = 0; i < ncases; i++)
		tests[i + 1] = (struct CMUnitTest){ .name = cases[i].name,
		    .test_func = test_case, .initial_state = &cases[i] };
	r = _cmocka_run_group_tests("test_observe", tests, ncases + 1, setup,
	    teardown);
	for (unsigned i = 0; i < ncases; i++)
		free(cases[i].text);
	free(cases);
	free(tests);
	return r;
}
