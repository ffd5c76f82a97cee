/*
 * tollsim.c: replay request times against a limit model on a virtual clock.
 *
 * The simulator of the image field guide tollgate grew from (a 4-ticket
 * bucket, one back every ~165 s, a 120 s lockout), run on the library's
 * own algorithm code: gcra.c for rate limits, window.c for windows, with a
 * virtual `now' in place of CLOCK_MONOTONIC.  Two questions:
 *
 *   paced (default)  when would tollgate let each request go so that none
 *                    is refused?  First come, first served, as tg_acquire
 *                    serves its reservations.
 *   --server         what does a server enforcing the limits answer to the
 *                    requests as given?  ACCEPT or BLOCK, and the lockouts.
 *
 * Everything is read and checked before anything runs; bad input is a
 * message on stderr and exit status 2.
 */
#include <sys/types.h>
#include <err.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "gcra.h"
#include "seg.h"
#include "window.h"

#define NS_PER_MS	UINT64_C(1000000)
#define NS_PER_S	UINT64_C(1000000000)
#define DAY_S		INT64_C(86400)

/*
 * A limit's virtual clock reads about SIM_BASE_NS + t for a request t ns
 * after the start: window epochs are then far from 0, as a real clock's
 * are.  Each limit keeps its own state, so each may have its own clock: a
 * window's is a whole number of its sub-windows, so that one starts at
 * t = 0 and results do not depend on an accident of alignment.  It
 * is the cautious alignment: a unit taken at 0 stays counted longest.
 */
#define SIM_BASE_NS	(UINT64_C(1000) * DAY_S * NS_PER_S)
#define SIM_SPAN_S	(INT64_C(100) * 366 * DAY_S) /* times given, at most */
#define SIM_HORIZON_NS	(UINT64_C(200) * 366 * DAY_S * NS_PER_S) /* paced */
#define SIM_TIMES_MAX	1000000		/* requests in one run */
#define SIM_LIMITS_MAX	CFG_CHAIN_MAX
#define CELL_MAX	96		/* bytes in one table cell */
#define NOTE_MAX	256		/* bytes in one note line */
#define CLIP_MAX	64		/* bytes of user text in a message */

/* A limit as the simulator runs it: the spec and its own state. */
struct sim_limit {
	struct limit_spec spec;
	const char	*key;		/* its config key; NULL: -l */
	int		line;		/* its line in that config */
	uint64_t	units;		/* a request's cost, its unit */
	uint64_t	cost_ns;	/* rate: bucket ns of `units' */
	uint64_t	one_ns;		/* rate: bucket ns of one unit */
	uint64_t	tau_ns;		/* rate: GCRA tau; window: sub */
	uint64_t	cap;		/* requests it admits at once */
	uint64_t	spacing_ns;	/* steady interval it admits */
	uint64_t	base_ns;	/* its virtual clock at t = 0 */
	_Atomic uint64_t tat_ns;	/* rate: 0 is a full bucket */
	_Atomic uint64_t ring[SEG_WIN_SLOTS];	/* window */
};

struct sim {
	struct sim_limit lim[SIM_LIMITS_MAX];
	unsigned	nlim;
	uint64_t	cost[UNIT_COUNT];	/* of one request */
	uint64_t	lock_until_ns;	/* --server: lockout ends */
};

/* The kinds of TIME; one run takes one kind. */
enum tkind {
	TK_SECONDS = 1,		/* from the start: 0, 12.5, 2min */
	TK_CLOCK,		/* HH:MM:SS[.frac], from the first */
	TK_ISO,			/* ISO 8601, from the first */
};

static const char *const tkind_name[] = {
	[TK_SECONDS] = "seconds",
	[TK_CLOCK] = "HH:MM:SS",
	[TK_ISO] = "an ISO 8601 timestamp",
};

/* One request: when it comes, and what happened to it. */
struct req {
	uint64_t	at_ns;		/* from the start */
	char		*text;		/* as given; NULL: generated */
	uint64_t	go_ns;		/* paced: when it goes */
	uint64_t	lockout_ns;	/* --server: the lockout it starts */
	int		result;		/* enum result */
	int		by;		/* --server: limit that blocked */
};

enum result {
	R_ACCEPT,
	R_BLOCK,		/* found limit `by' empty */
	R_LOCKED,		/* came during a lockout */
};

/* Where the times came from, for messages. */
struct source {
	const char	*what;		/* "argument", "line" */
	unsigned	n;
	enum tkind	kind;		/* of the first time; 0: none yet */
	int64_t		sec0;		/* the first (TK_CLOCK, TK_ISO) */
	uint32_t	nsec0;
	int64_t		psec;		/* the one before it */
	uint32_t	pnsec;
	const char	*ptext;
};

/* The synopsis; with -h (status 0) the whole help, on stdout. */
static void
usage(FILE *f, int status)
{
	fprintf(f,
"usage: tollsim (-l SPEC ... | -c FILE -k KEY) [--server] [--tokens N]\n"
"               [--images N] [--every DURATION --count N] [TIME ...]\n");
	if (status != 0) {
		fprintf(f, "(tollsim -h for help)\n");
		exit(status);
	}
	fprintf(f,
"Replay request times against limits on a virtual clock, with tollgate's\n"
"own rate (GCRA) and window code.  Without --server: the time tollgate\n"
"would let each request go so that none is refused (first come, first\n"
"served), its wait and the makespan.  With --server: what a server\n"
"enforcing the limits answers to the requests as given.  Both end with\n"
"the steady spacing that would avoid every block.\n"
"  -l SPEC         a limit in the config's syntax, e.g. '1 requests/165s\n"
"                  burst 4 cooldown 120s' or '100 requests/day window';\n"
"                  may repeat\n"
"  -c FILE -k KEY  KEY's limits in a tollgated config and its ancestors',\n"
"                  all charged, as a ticket on KEY is\n"
"  --server        ACCEPT or BLOCK each request as it comes\n"
"  --tokens N      each request also costs N tokens (default 0)\n"
"  --images N      each request also costs N images (default 0)\n"
"  --every D --count N  N requests D apart (30s, 1.5s, 2min), from 0\n"
"  -h, --help      this help\n"
"      --version   the version\n"
"TIME: seconds from the start (0, 12.5, or a duration such as 2min);\n"
"HH:MM:SS[.frac]; or ISO 8601 (2026-11-23T10:15:30Z, .250 and +02:00\n"
"allowed; a space for the T, or no zone, too).  The last two count from\n"
"the first time given.  TIMEs come as arguments or, with none, one per\n"
"line on standard input (blank lines and # comments skipped).  They must\n"
"not go back in time: out of order is an error, not sorted.\n"
"Server model (the field guide's): a request that finds a limit empty is\n"
"blocked and, if that limit has a cooldown, starts a lockout that long in\n"
"which every request is blocked.  Blocks in a lockout neither extend it\n"
"nor use anything.  Without a cooldown a block is just a refusal.\n"
"Concurrency limits mean nothing to requests that take no time: -l\n"
"refuses them, and those of a -k key are left out with a note.\n"
"Times print in seconds, rounded up to the millisecond.  Exit status 0;\n"
"2 for bad usage or input; 1 if the paced schedule would run past 200\n"
"years.\n");
	exit(status);
}

/* A usage error: the message, a pointer to --help, exit 2. */
static void __attribute__((format(printf, 1, 2), noreturn))
bad(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "tollsim: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n(tollsim -h for help)\n");
	exit(2);
}

/* s for a message: at most CLIP_MAX bytes of it, "..." when cut. */
static const char *
clip(const char *s, char buf[CLIP_MAX + 4])
{
	if (strlen(s) <= CLIP_MAX)
		return s;
	memcpy(buf, s, CLIP_MAX);
	memcpy(buf + CLIP_MAX, "...", 4);
	return buf;
}

/* A decimal number, all of s, into *out.  Returns 0 or -1. */
static int
parse_count(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9' ||
		    v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

/*
 * n of a unit, in the plural unless n is 1: "1 image", "2 images",
 * "0 requests".  plural is "requests", "tokens", "images".
 */
static char *
count_of(char *buf, size_t len, uint64_t n, const char *plural)
{
	size_t pl = strlen(plural);

	if (n == 1 && pl > 1 && plural[pl - 1] == 's')
		snprintf(buf, len, "1 %.*s", (int)(pl - 1), plural);
	else
		snprintf(buf, len, "%" PRIu64 " %s", n, plural);
	return buf;
}

/* Seconds with milliseconds, rounded up: a wait printed is never short. */
static char *
fmt_ms(char *buf, size_t len, uint64_t ns)
{
	uint64_t ms = ns / NS_PER_MS + (ns % NS_PER_MS != 0);

	snprintf(buf, len, "%" PRIu64 ".%03" PRIu64, ms / 1000, ms % 1000);
	return buf;
}

/*
 * Times.  Each parser takes all of s and returns 0 with the time as
 * seconds and nanoseconds, or -1 with *why set.
 */

/* n digits at *sp, exactly, into *out. */
static int
digits(const char **sp, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if ((*sp)[i] < '0' || (*sp)[i] > '9')
			return -1;
		v = v * 10 + ((*sp)[i] - '0');
	}
	*sp += n;
	*out = v;
	return 0;
}

/* ".frac" or ",frac" at *sp, if there is one, into *nsec. */
static int
fraction(const char **sp, uint32_t *nsec, const char **why)
{
	const char *s = *sp;
	uint32_t v = 0, pow = NS_PER_S;
	int n = 0;

	*nsec = 0;
	if (*s != '.' && *s != ',')
		return 0;
	for (s++; *s >= '0' && *s <= '9'; s++, n++) {
		if (n == 9) {
			*why = "more than 9 digits after the point";
			return -1;
		}
		pow /= 10;
		v += (uint32_t)(*s - '0') * pow;
	}
	if (n == 0) {
		*why = "no digits after the point";
		return -1;
	}
	*nsec = v;
	*sp = s;
	return 0;
}

/* "HH:MM:SS" (H:MM:SS too) at *sp into seconds of the day. */
static int
clock_of_day(const char **sp, int64_t *sec, const char **why)
{
	const char *s = *sp;
	int h, m, sc;

	if (digits(&s, 2, &h) < 0) {
		s = *sp;
		if (digits(&s, 1, &h) < 0)
			goto bad;
	}
	if (*s++ != ':' || digits(&s, 2, &m) < 0 || *s++ != ':' ||
	    digits(&s, 2, &sc) < 0)
		goto bad;
	if (h > 23 || m > 59 || sc > 60) {	/* 60: a leap second */
		*why = "hour, minute or second out of range";
		return -1;
	}
	*sec = (int64_t)h * 3600 + m * 60 + sc;
	*sp = s;
	return 0;
bad:
	*why = "not HH:MM:SS";
	return -1;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar. */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/*
 * YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|+HH:MM|+HHMM|+HH|-...].  No zone: the
 * same as the others', whatever it is (only differences matter here).
 */
static int
parse_iso(const char *s, int64_t *sec, uint32_t *nsec, const char **why)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31,
	    30, 31 };
	int y, mo, d, oh = 0, om = 0, sign = 0, leap;
	int64_t tod;

	if (digits(&s, 4, &y) < 0 || *s++ != '-' || digits(&s, 2, &mo) < 0 ||
	    *s++ != '-' || digits(&s, 2, &d) < 0) {
		*why = "not an ISO 8601 date (YYYY-MM-DD)";
		return -1;
	}
	leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
	    (mo == 2 && d == 29 && !leap)) {
		*why = "no such date";
		return -1;
	}
	if (*s != 'T' && *s != 't' && *s != ' ') {
		*why = "want T and a time after the date";
		return -1;
	}
	s++;
	if (clock_of_day(&s, &tod, why) < 0 || fraction(&s, nsec, why) < 0)
		return -1;
	if (*s == 'Z' || *s == 'z')
		s++;
	else if (*s == '+' || *s == '-') {
		sign = *s++ == '+' ? 1 : -1;
		if (digits(&s, 2, &oh) < 0)
			goto zone;
		if (*s == ':')
			s++;
		if (*s != '\0' && digits(&s, 2, &om) < 0)
			goto zone;
		if (oh > 23 || om > 59)
			goto zone;
	}
	if (*s != '\0') {
		*why = "unexpected text after the time";
		return -1;
	}
	*sec = days_from_civil(y, mo, d) * DAY_S + tod -
	    sign * ((int64_t)oh * 3600 + om * 60);
	return 0;
zone:
	*why = "bad zone offset (want Z, +HH:MM or -HH:MM)";
	return -1;
}

/* One TIME, into its kind and value. */
static int
parse_time(const char *s, enum tkind *kind, int64_t *sec, uint32_t *nsec,
    const char **why)
{
	uint64_t ns;
	int r;

	if (strlen(s) > 4 && s[4] == '-') {
		*kind = TK_ISO;
		return parse_iso(s, sec, nsec, why);
	}
	if (strchr(s, ':') != NULL) {
		*kind = TK_CLOCK;
		if (clock_of_day(&s, sec, why) < 0 ||
		    fraction(&s, nsec, why) < 0)
			return -1;
		if (*s != '\0') {
			*why = "unexpected text after the time";
			return -1;
		}
		return 0;
	}
	*kind = TK_SECONDS;
	if ((r = config_parse_duration(s, &ns)) < 0) {
		*why = r == -ERANGE ? "too large" : "not a time (want seconds "
		    "like 12.5, HH:MM:SS or an ISO 8601 timestamp like "
		    "2026-11-23T10:15:30Z)";
		return -1;
	}
	if (ns / NS_PER_S > (uint64_t)SIM_SPAN_S) {
		*why = "more than 100 years after the start";
		return -1;
	}
	*sec = (int64_t)(ns / NS_PER_S);
	*nsec = (uint32_t)(ns % NS_PER_S);
	return 0;
}

/*
 * Parse the TIME text from src (argument or line src->n) into the next
 * request, checking it is of the first's kind and not before the one
 * before it.  Exits 2 on bad input.
 */
static void
add_time(struct source *src, const char *text, struct req *r)
{
	char cb[CLIP_MAX + 4], pb[CLIP_MAX + 4];
	const char *why, *t = clip(text, cb);
	enum tkind kind;
	int64_t sec, d;
	uint32_t nsec;

	if (parse_time(text, &kind, &sec, &nsec, &why) < 0)
		bad("%s %u: `%s': %s", src->what, src->n, t, why);
	if (src->kind == 0) {
		src->kind = kind;
		src->sec0 = kind == TK_SECONDS ? 0 : sec;
		src->nsec0 = kind == TK_SECONDS ? 0 : nsec;
	} else if (kind != src->kind)
		bad("%s %u: `%s' is %s but the first time was %s: give every "
		    "time the same way", src->what, src->n, t,
		    tkind_name[kind], tkind_name[src->kind]);
	else if (sec < src->psec || (sec == src->psec && nsec < src->pnsec))
		bad("%s %u: `%s' is before the time before it (`%s'): give "
		    "times in order%s", src->what, src->n, t,
		    clip(src->ptext, pb),
		    kind == TK_CLOCK ? " (past midnight? give ISO 8601 "
		    "timestamps)" : "");
	/* In order, so never before the first: d >= 0. */
	if ((d = sec - src->sec0) > SIM_SPAN_S)
		bad("%s %u: `%s': more than 100 years after the first time",
		    src->what, src->n, t);
	src->psec = sec;
	src->pnsec = nsec;
	if ((r->text = strdup(text)) == NULL)
		err(1, "strdup");
	src->ptext = r->text;
	r->at_ns = (uint64_t)d * NS_PER_S + nsec - src->nsec0;
}

/* Times from standard input, one a line; returns how many. */
static size_t
read_times(struct req **reqs)
{
	struct source src = { .what = "line" };
	struct req *v = NULL;
	size_t n = 0, cap = 0, len = 0;
	char *line = NULL, *s;
	ssize_t got;

	while ((got = getline(&line, &len, stdin)) != -1) {
		src.n++;
		if (strlen(line) != (size_t)got)
			bad("line %u: a NUL byte", src.n);
		for (s = line; *s == ' ' || *s == '\t'; s++)
			;
		while (got > 0 && (line[got - 1] == '\n' ||
		    line[got - 1] == '\r' || line[got - 1] == ' ' ||
		    line[got - 1] == '\t'))
			line[--got] = '\0';
		if (*s == '\0' || *s == '#')
			continue;
		if (n == SIM_TIMES_MAX)
			bad("line %u: more than %d times", src.n,
			    SIM_TIMES_MAX);
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			if ((v = reallocarray(v, cap, sizeof(*v))) == NULL)
				err(1, "reallocarray");
		}
		memset(&v[n], 0, sizeof(v[n]));
		add_time(&src, s, &v[n++]);
	}
	if (ferror(stdin))
		err(2, "standard input");
	free(line);
	*reqs = v;
	return n;
}

/*
 * The limits.
 */

/* Add spec to the simulation, checking what one request costs of it. */
static void
add_limit(struct sim *sm, const struct limit_spec *spec, const char *key,
    int line)
{
	struct sim_limit *l;
	unsigned __int128 span;
	char what[160], cnt[48];

	if (sm->nlim == SIM_LIMITS_MAX)
		bad("more than %d limits", SIM_LIMITS_MAX);
	l = &sm->lim[sm->nlim++];
	memset(l, 0, sizeof(*l));
	l->spec = *spec;
	l->key = key;
	l->line = line;
	l->units = sm->cost[spec->unit];
	limit_format(spec, what, sizeof(what));
	/* What the library's take() refuses with -E2BIG. */
	if ((spec->kind == LIM_RATE && l->units > spec->burst) ||
	    (spec->kind == LIM_WINDOW && (l->units > spec->count ||
	    l->units > WIN_COUNT_MAX)))
		bad("a request costs %s, more than limit %u (%s) ever "
		    "admits", count_of(cnt, sizeof(cnt), l->units,
		    unit_name(spec->unit)), sm->nlim, what);
	l->base_ns = SIM_BASE_NS;
	if (spec->kind == LIM_RATE) {
		l->one_ns = gcra_cost_ns(1, spec->period_ns, spec->count);
		l->tau_ns = gcra_tau_margin_ns(spec->burst, spec->period_ns,
		    spec->count, limit_margin_ns(spec));
		if (l->units == 0)
			return;
		l->cost_ns = gcra_cost_ns(l->units, spec->period_ns,
		    spec->count);
		/* Within the burst, its ns may still never fit: take(). */
		if (gcra_never_fits(l->base_ns, l->cost_ns, l->tau_ns))
			bad("a request costs %s, more than limit %u (%s) "
			    "ever admits", count_of(cnt, sizeof(cnt),
			    l->units, unit_name(spec->unit)), sm->nlim, what);
		l->cap = gcra_available(0, l->base_ns, l->cost_ns, l->tau_ns);
		l->spacing_ns = l->cost_ns;
	} else {
		l->tau_ns = win_sub_ns(spec->period_ns);
		l->base_ns = SIM_BASE_NS - SIM_BASE_NS % l->tau_ns;
		if (l->units == 0)
			return;
		l->cap = spec->count / l->units;
		/*
		 * The ring counts SEG_WIN_SLOTS sub-windows, a little more
		 * than the period: a steady stream fits when that span holds
		 * at most cap requests, so the spacing is span / cap.
		 */
		span = (unsigned __int128)SEG_WIN_SLOTS * l->tau_ns;
		span = (span + l->cap - 1) / l->cap;
		l->spacing_ns = span > UINT64_MAX ? UINT64_MAX :
		    (uint64_t)span;
	}
}

/* -l SPEC; concurrency limits are refused here, the user typed them. */
static void
add_spec(struct sim *sm, const char *s)
{
	struct limit_spec spec;
	const char *why = "bad limit";
	char cb[CLIP_MAX + 4];

	if (config_parse_limit(s, &spec, &why) < 0)
		bad("-l `%s': %s", clip(s, cb), why);
	if (spec.kind == LIM_CONC)
		bad("-l `%s': a concurrency limit means nothing here: "
		    "simulated requests take no time", clip(s, cb));
	add_limit(sm, &spec, NULL, 0);
}

static void
report(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "tollsim: %s\n", msg);
}

/*
 * -c FILE -k KEY: KEY's own limits, then its parent's and so on up, the
 * chain a ticket on KEY takes from.  Concurrency limits are noted in
 * notes[] and left out.
 */
static void
add_key(struct sim *sm, struct config *cfg, const char *file,
    const char *name, char notes[][NOTE_MAX], unsigned *nnotes)
{
	const struct key_spec *k;
	const struct limit_spec *spec;
	char what[64], cb[CLIP_MAX + 4];
	int i, n;

	if ((n = config_load(file, cfg, report, NULL)) != 0) {
		fprintf(stderr, "tollsim: %s: %d error%s\n", file, n,
		    n == 1 ? "" : "s");
		exit(2);
	}
	if ((i = config_find_key(cfg, name)) < 0)
		bad("%s: no key `%s'", file, clip(name, cb));
	for (; i >= 0; i = k->parent) {
		k = &cfg->keys[i];
		for (unsigned j = 0; j < k->nlimits; j++) {
			spec = &cfg->limits[k->first_limit + j];
			if (spec->kind != LIM_CONC) {
				add_limit(sm, spec, k->name, spec->line);
				continue;
			}
			limit_format(spec, what, sizeof(what));
			if (*nnotes < SIM_LIMITS_MAX)
				snprintf(notes[(*nnotes)++], NOTE_MAX, "note: "
				    "%s of key %s (line %d) left out: "
				    "simulated requests take no time", what,
				    k->name, spec->line);
		}
	}
}

/*
 * The model.  A take is all or nothing over the limits, as the library's
 * take(): each on its own state, undone if a later one refuses.
 */

/* How long from t until limit l could take a request (0: now). */
static uint64_t
limit_wait(struct sim_limit *l, uint64_t t)
{
	_Atomic uint64_t probe;
	uint64_t w, now_ns = l->base_ns + t;

	if (l->units == 0)
		return 0;
	if (l->spec.kind == LIM_WINDOW)
		return win_retry(l->ring, now_ns, l->tau_ns, l->spec.count,
		    l->units);
	/*
	 * gcra_take on a copy: its answer, and the real TAT untouched.
	 * Relaxed, here and on every atomic of this file: one thread owns
	 * the whole simulation; the words are atomic for gcra.c's sake.
	 */
	atomic_init(&probe, atomic_load_explicit(&l->tat_ns,
	    memory_order_relaxed));
	return gcra_take(&probe, now_ns, l->cost_ns, l->tau_ns, &w) == 0 ?
	    0 : w;
}

/* What limit l has left at t, in its own unit. */
static uint64_t
limit_left(struct sim_limit *l, uint64_t t)
{
	uint64_t sum, now_ns = l->base_ns + t;

	if (l->spec.kind == LIM_WINDOW) {
		sum = win_sum(l->ring, now_ns, l->tau_ns);
		return sum < l->spec.count ? l->spec.count - sum : 0;
	}
	return gcra_available(atomic_load_explicit(&l->tat_ns,
	    memory_order_relaxed), now_ns, l->one_ns, l->tau_ns);
}

/*
 * Take a request from every limit at t, or from none.  Returns 0, or
 * -EAGAIN with *by the first limit that refused and *wait_ns the longest
 * any limit needs before it could take one (at least 1 ns): nothing fits
 * sooner, though after it another limit may still refuse.
 */
static int
take_all(struct sim *sm, uint64_t t, int *by, uint64_t *wait_ns)
{
	struct sim_limit *l;
	uint64_t w = 0, pw;
	unsigned i;
	int r = 0;

	for (i = 0; i < sm->nlim; i++) {
		l = &sm->lim[i];
		if (l->units == 0)
			continue;
		if (l->spec.kind == LIM_RATE)
			r = gcra_take(&l->tat_ns, l->base_ns + t, l->cost_ns,
			    l->tau_ns, &w);
		else
			r = win_take(l->ring, l->base_ns + t, l->tau_ns,
			    l->spec.count, l->units, &w);
		if (r < 0)
			break;
	}
	if (r == 0)
		return 0;
	*by = (int)i;
	while (i-- > 0) {
		l = &sm->lim[i];
		if (l->units == 0)
			continue;
		if (l->spec.kind == LIM_RATE)
			gcra_refund(&l->tat_ns, l->cost_ns, l->cost_ns,
			    l->base_ns + t, l->base_ns + t);
		else
			win_undo(l->ring, l->base_ns + t, l->tau_ns, l->units);
	}
	for (i = 0; i < sm->nlim; i++)
		if ((pw = limit_wait(&sm->lim[i], t)) > w)
			w = pw;
	*wait_ns = w > 0 ? w : 1;
	return -EAGAIN;
}

/* Every limit full again, no lockout: a fresh run. */
static void
sim_reset(struct sim *sm)
{
	for (unsigned i = 0; i < sm->nlim; i++) {
		atomic_store_explicit(&sm->lim[i].tat_ns, 0,
		    memory_order_relaxed);
		for (unsigned j = 0; j < SEG_WIN_SLOTS; j++)
			atomic_store_explicit(&sm->lim[i].ring[j], 0,
			    memory_order_relaxed);
	}
	sm->lock_until_ns = 0;
}

/*
 * Paced: each request goes at the first instant from its arrival, and not
 * before the one ahead of it, at which every limit takes it.  For rate
 * limits that is the slot gcra_reserve would give; windows are waited out.
 * The limits' left are stored in left[i * nlim ...] when left is not NULL.
 * Exits 1 if a request would go beyond the horizon.
 */
static void
run_paced(struct sim *sm, struct req *reqs, size_t n, uint64_t *left)
{
	uint64_t t = 0, w;
	int by;

	for (size_t i = 0; i < n; i++) {
		if (reqs[i].at_ns > t)
			t = reqs[i].at_ns;
		while (take_all(sm, t, &by, &w) < 0) {
			/* w may be UINT64_MAX: a bucket of centuries. */
			if (w > SIM_HORIZON_NS - t)
				errx(1, "request %zu would go more than 200 "
				    "years after the start", i + 1);
			t += w;
		}
		reqs[i].go_ns = t;
		for (unsigned j = 0; left != NULL && j < sm->nlim; j++)
			left[i * sm->nlim + j] = limit_left(&sm->lim[j], t);
	}
}

/*
 * The server: each request at its own time.  In a lockout it is blocked.
 * Else it is taken, or blocked by a limit that has too little, which
 * starts a lockout of the longest cooldown among the limits that refuse.
 */
static void
run_server(struct sim *sm, struct req *reqs, size_t n, uint64_t *left)
{
	uint64_t now, w, cd;
	int by;

	for (size_t i = 0; i < n; i++) {
		now = reqs[i].at_ns;
		reqs[i].by = -1;
		reqs[i].lockout_ns = 0;
		if (now < sm->lock_until_ns)
			reqs[i].result = R_LOCKED;
		else if (take_all(sm, now, &by, &w) == 0)
			reqs[i].result = R_ACCEPT;
		else {
			reqs[i].result = R_BLOCK;
			reqs[i].by = by;
			cd = sm->lim[by].spec.cooldown_ns;
			for (unsigned j = 0; j < sm->nlim; j++)
				if (sm->lim[j].spec.cooldown_ns > cd &&
				    limit_wait(&sm->lim[j], now) > 0)
					cd = sm->lim[j].spec.cooldown_ns;
			if (cd > 0) {
				/* A cooldown may be absurd: saturate. */
				reqs[i].lockout_ns = cd;
				sm->lock_until_ns = cd > UINT64_MAX - now ?
				    UINT64_MAX : now + cd;
			}
		}
		for (unsigned j = 0; j < sm->nlim; j++)
			left[i * sm->nlim + j] = limit_left(&sm->lim[j], now);
	}
}

/*
 * Output.  A table is printed twice over the same cells: once to measure
 * each column, once to print it.
 */

struct table {
	struct sim	*sm;
	struct req	*reqs;
	const uint64_t	*left;
	int		server;
	int		input;		/* times were given: a column */
	unsigned	ncols;
	size_t		width[8 + SIM_LIMITS_MAX];
	int		leftal[8 + SIM_LIMITS_MAX]; /* left-aligned */
};

/* Fill cells[] with row i of the table (-1: the header). */
static void
row_cells(struct table *tb, long i, char cells[][CELL_MAX])
{
	const struct req *r = i >= 0 ? &tb->reqs[i] : NULL;
	unsigned c = 0, nlim = tb->sm->nlim;

	tb->leftal[c] = 0;
	if (r == NULL)
		snprintf(cells[c++], CELL_MAX, "#");
	else
		snprintf(cells[c++], CELL_MAX, "%ld", i + 1);
	tb->leftal[c] = 0;
	if (r == NULL)
		snprintf(cells[c++], CELL_MAX, tb->server ? "time" :
		    "arrival");
	else
		fmt_ms(cells[c++], CELL_MAX, r->at_ns);
	if (tb->server) {
		tb->leftal[c] = 1;
		snprintf(cells[c++], CELL_MAX, "%s", r == NULL ? "result" :
		    r->result == R_ACCEPT ? "ACCEPT" : "BLOCK");
	} else {
		tb->leftal[c] = 0;
		if (r == NULL)
			snprintf(cells[c++], CELL_MAX, "go");
		else
			fmt_ms(cells[c++], CELL_MAX, r->go_ns);
		tb->leftal[c] = 0;
		if (r == NULL)
			snprintf(cells[c++], CELL_MAX, "wait");
		else
			fmt_ms(cells[c++], CELL_MAX, r->go_ns - r->at_ns);
	}
	for (unsigned j = 0; j < nlim; j++) {
		tb->leftal[c] = 0;
		if (r == NULL && nlim == 1)
			snprintf(cells[c++], CELL_MAX, "left");
		else if (r == NULL)
			snprintf(cells[c++], CELL_MAX, "left:L%u", j + 1);
		else if (tb->sm->lim[j].units == 0)
			snprintf(cells[c++], CELL_MAX, "-");
		else
			snprintf(cells[c++], CELL_MAX, "%" PRIu64,
			    tb->left[(size_t)i * nlim + j]);
	}
	if (tb->server) {
		tb->leftal[c] = 0;
		if (r == NULL)
			snprintf(cells[c++], CELL_MAX, "lockout");
		else if (r->lockout_ns == 0)
			snprintf(cells[c++], CELL_MAX, "-");
		else
			fmt_ms(cells[c++], CELL_MAX, r->lockout_ns);
		tb->leftal[c] = 1;
		if (r == NULL)
			snprintf(cells[c++], CELL_MAX, "by");
		else if (r->result == R_BLOCK)
			snprintf(cells[c++], CELL_MAX, "L%d", r->by + 1);
		else
			snprintf(cells[c++], CELL_MAX, "%s",
			    r->result == R_LOCKED ? "lockout" : "-");
	}
	if (tb->input) {
		tb->leftal[c] = 1;
		/* The last column: printed whole, never measured. */
		cells[c++][0] = '\0';
	}
	tb->ncols = c;
}

static void
print_row(struct table *tb, long i, int measure)
{
	char cells[8 + SIM_LIMITS_MAX][CELL_MAX];
	size_t len;

	row_cells(tb, i, cells);
	for (unsigned c = 0; c < tb->ncols; c++) {
		len = strlen(cells[c]);
		if (measure) {
			if (len > tb->width[c])
				tb->width[c] = len;
			continue;
		}
		fputs("  ", stdout);	/* indent, or between columns */
		if (tb->input && c == tb->ncols - 1)
			fputs(i < 0 ? "input" : tb->reqs[i].text, stdout);
		else if (tb->leftal[c] && c < tb->ncols - 1)
			printf("%-*s", (int)tb->width[c], cells[c]);
		else if (tb->leftal[c])
			fputs(cells[c], stdout);
		else
			printf("%*s", (int)tb->width[c], cells[c]);
	}
	if (!measure)
		putchar('\n');
}

static void
print_table(struct table *tb, size_t n)
{
	memset(tb->width, 0, sizeof(tb->width));
	for (long i = -1; i < (long)n; i++)
		print_row(tb, i, 1);
	for (long i = -1; i < (long)n; i++)
		print_row(tb, i, 0);
}

/* "1 request, 500 tokens". */
static void
print_cost(const struct sim *sm)
{
	char b[48];

	printf("each request costs 1 request");
	if (sm->cost[UNIT_TOKENS])
		printf(", %s", count_of(b, sizeof(b), sm->cost[UNIT_TOKENS],
		    "tokens"));
	if (sm->cost[UNIT_IMAGES])
		printf(", %s", count_of(b, sizeof(b), sm->cost[UNIT_IMAGES],
		    "images"));
	putchar('\n');
}

static void
print_limits(const struct sim *sm)
{
	const struct sim_limit *l;
	char what[160];

	for (unsigned i = 0; i < sm->nlim; i++) {
		l = &sm->lim[i];
		limit_format(&l->spec, what, sizeof(what));
		printf("L%u: %s", i + 1, what);
		if (l->key != NULL)
			printf("  (key %s, line %d)", l->key, l->line);
		if (l->units == 0)
			printf("  (not charged: a request costs no %s; see "
			    "--%s)", unit_name(l->spec.unit),
			    unit_name(l->spec.unit));
		putchar('\n');
	}
}

/*
 * The steady spacing that never meets an empty limit: the widest of each
 * limit's.  A burst first is safe only over rate limits: a window that
 * took a burst has no room for the steady stream after it.
 */
static void
print_spacing(const struct sim *sm)
{
	const struct sim_limit *l;
	uint64_t cap = UINT64_MAX;
	int tight = -1, windows = 0;
	char buf[32];

	for (unsigned i = 0; i < sm->nlim; i++) {
		l = &sm->lim[i];
		if (l->units == 0)
			continue;
		if (tight < 0 || l->spacing_ns > sm->lim[tight].spacing_ns)
			tight = (int)i;
		if (l->cap < cap)
			cap = l->cap;
		windows |= l->spec.kind == LIM_WINDOW;
	}
	if (tight < 0) {
		printf("spacing: no limit is charged: any spacing\n");
		return;
	}
	printf("spacing: one request every %s s avoids every block (L%d)",
	    fmt_ms(buf, sizeof(buf), sm->lim[tight].spacing_ns), tight + 1);
	if (!windows && cap > 1)
		printf("; a full bucket also lets the first %" PRIu64 " go at "
		    "once", cap);
	putchar('\n');
}

static void
print_paced(struct sim *sm, struct req *reqs, size_t n, const uint64_t *left)
{
	struct table tb = { .sm = sm, .reqs = reqs, .left = left,
	    .input = reqs[0].text != NULL };
	uint64_t total = 0, most = 0, w;
	size_t waited = 0;
	char b1[32], b2[32], b3[32];

	print_table(&tb, n);
	for (size_t i = 0; i < n; i++) {
		w = reqs[i].go_ns - reqs[i].at_ns;
		waited += w > 0;
		total = w > UINT64_MAX - total ? UINT64_MAX : total + w;
		if (w > most)
			most = w;
	}
	printf("makespan: %s s (first arrival at %s, last request goes at "
	    "%s)\n", fmt_ms(b1, sizeof(b1), reqs[n - 1].go_ns -
	    reqs[0].at_ns), fmt_ms(b2, sizeof(b2), reqs[0].at_ns),
	    fmt_ms(b3, sizeof(b3), reqs[n - 1].go_ns));
	printf("waits: %zu of %s wait%s, %s s in all, %s s at most\n",
	    waited, count_of(b3, sizeof(b3), n, "requests"),
	    waited == 1 ? "s" : "", fmt_ms(b1, sizeof(b1), total),
	    fmt_ms(b2, sizeof(b2), most));
	print_spacing(sm);
}

/* The table, a summary, the spacing; run_paced filled go_ns too. */
static void
print_server(struct sim *sm, struct req *reqs, size_t n,
    const uint64_t *left)
{
	struct table tb = { .sm = sm, .reqs = reqs, .left = left,
	    .server = 1, .input = reqs[0].text != NULL };
	size_t acc = 0, empty = 0, locked = 0, lockouts = 0;
	uint64_t lock_ns = 0, last;
	char b1[32], b2[32];

	print_table(&tb, n);
	for (size_t i = 0; i < n; i++) {
		acc += reqs[i].result == R_ACCEPT;
		empty += reqs[i].result == R_BLOCK;
		locked += reqs[i].result == R_LOCKED;
		lockouts += reqs[i].lockout_ns > 0;
		lock_ns = reqs[i].lockout_ns > UINT64_MAX - lock_ns ?
		    UINT64_MAX : lock_ns + reqs[i].lockout_ns;
	}
	printf("summary: %s, %zu accepted, %zu blocked (%zu refused by a "
	    "limit, %zu in a lockout); %zu lockout%s, %s s in all\n",
	    count_of(b2, sizeof(b2), n, "requests"), acc, empty + locked,
	    empty, locked, lockouts, lockouts == 1 ? "" : "s",
	    fmt_ms(b1, sizeof(b1), lock_ns));
	print_spacing(sm);
	/* The same requests paced: what tollgate makes of them instead. */
	last = reqs[n - 1].go_ns;
	printf("paced: tollgate would hold them instead, none blocked; the "
	    "last would go at %s s (makespan %s s; run without --server)\n",
	    fmt_ms(b1, sizeof(b1), last),
	    fmt_ms(b2, sizeof(b2), last - reqs[0].at_ns));
}

int
main(int argc, char *argv[])
{
	enum { O_SERVER = 256, O_EVERY, O_COUNT, O_TOKENS, O_IMAGES };
	static const struct option longopts[] = {
		{ "server",	no_argument,		NULL, O_SERVER },
		{ "every",	required_argument,	NULL, O_EVERY },
		{ "count",	required_argument,	NULL, O_COUNT },
		{ "tokens",	required_argument,	NULL, O_TOKENS },
		{ "images",	required_argument,	NULL, O_IMAGES },
		{ "help",	no_argument,		NULL, 'h' },
		{ "version",	no_argument,		NULL, 'V' },
		{ NULL,		0,			NULL, 0 },
	};
	static struct sim sm;		/* 16 rings: not on the stack */
	struct config cfg;
	struct source src = { .what = "argument" };
	struct req *reqs = NULL;
	const char *file = NULL, *key = NULL, *every = NULL, *count = NULL;
	const char *specs[SIM_LIMITS_MAX], *why;
	char notes[SIM_LIMITS_MAX][NOTE_MAX], cb[CLIP_MAX + 4];
	unsigned nspecs = 0, nnotes = 0;
	uint64_t every_ns = 0, nreq = 0, *left;
	size_t n;
	int ch, server = 0;

	memset(&cfg, 0, sizeof(cfg));
	while ((ch = getopt_long(argc, argv, "c:hk:l:", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'l':
			if (nspecs == SIM_LIMITS_MAX)
				bad("more than %d limits", SIM_LIMITS_MAX);
			specs[nspecs++] = optarg;
			break;
		case O_SERVER:
			server = 1;
			break;
		case O_EVERY:
			every = optarg;
			break;
		case O_COUNT:
			count = optarg;
			break;
		case O_TOKENS:
		case O_IMAGES:
			if (parse_count(optarg, &sm.cost[ch == O_TOKENS ?
			    UNIT_TOKENS : UNIT_IMAGES]) < 0)
				bad("--%s `%s': not a whole number",
				    ch == O_TOKENS ? "tokens" : "images",
				    clip(optarg, cb));
			break;
		case 'h':
			usage(stdout, 0);
			break;
		case 'V':
			printf("tollsim %s\n", TG_VERSION);
			return 0;
		default:
			usage(stderr, 2);
		}
	}
	sm.cost[UNIT_REQUESTS] = 1;

	/* The limits, then the times: all checked before anything runs. */
	if ((file != NULL) != (key != NULL))
		bad("-c FILE and -k KEY go together");
	if (file != NULL && nspecs > 0)
		bad("give -l SPEC or -c FILE -k KEY, not both");
	if (file == NULL && nspecs == 0)
		bad("no limits: give -l SPEC (e.g. -l '1 requests/165s burst 4 "
		    "cooldown 120s') or -c FILE -k KEY");
	for (unsigned i = 0; i < nspecs; i++)
		add_spec(&sm, specs[i]);
	if (file != NULL)
		add_key(&sm, &cfg, file, key, notes, &nnotes);
	if (sm.nlim == 0)
		bad("key `%s' has no rate or window limit to simulate", key);

	if ((every != NULL) != (count != NULL))
		bad("--every DURATION and --count N go together");
	if (every != NULL) {
		if (optind < argc)
			bad("give TIMEs or --every/--count, not both");
		if (duration_read(every, strlen(every), &every_ns, &why) < 0)
			bad("--every `%s': %s", clip(every, cb), why);
		if (parse_count(count, &nreq) < 0 || nreq == 0 ||
		    nreq > SIM_TIMES_MAX)
			bad("--count `%s': want a whole number from 1 to %d",
			    clip(count, cb), SIM_TIMES_MAX);
		if (every_ns > 0 && (nreq - 1) > SIM_SPAN_S * NS_PER_S /
		    every_ns)
			bad("--every %s --count %" PRIu64 ": more than 100 "
			    "years", clip(every, cb), nreq);
		if ((reqs = calloc(nreq, sizeof(*reqs))) == NULL)
			err(1, "calloc");
		for (uint64_t i = 0; i < nreq; i++)
			reqs[i].at_ns = i * every_ns;
		n = nreq;
	} else if (optind < argc) {
		n = (size_t)(argc - optind);
		if (n > SIM_TIMES_MAX)
			bad("more than %d times", SIM_TIMES_MAX);
		if ((reqs = calloc(n, sizeof(*reqs))) == NULL)
			err(1, "calloc");
		for (size_t i = 0; i < n; i++) {
			src.n = (unsigned)i + 1;
			add_time(&src, argv[optind + i], &reqs[i]);
		}
	} else
		n = read_times(&reqs);
	if (n == 0)
		bad("no request times (give TIMEs, --every/--count, or times "
		    "on standard input)");
	if ((left = calloc(n * sm.nlim, sizeof(*left))) == NULL)
		err(1, "calloc");

	/* Paced first: --server shows its makespan too. */
	run_paced(&sm, reqs, n, server ? NULL : left);
	if (server) {
		sim_reset(&sm);
		run_server(&sm, reqs, n, left);
	}
	printf("%s: %s; ", server ? "server" : "paced",
	    count_of(cb, sizeof(cb), n, "requests"));
	print_cost(&sm);
	print_limits(&sm);
	for (unsigned i = 0; i < nnotes; i++)
		printf("%s\n", notes[i]);
	if (server)
		print_server(&sm, reqs, n, left);
	else
		print_paced(&sm, reqs, n, left);

	for (size_t i = 0; i < n; i++)
		free(reqs[i].text);
	free(reqs);
	free(left);
	config_free(&cfg);
	if (fflush(stdout) == EOF || ferror(stdout))
		err(1, "stdout");
	return 0;
}
