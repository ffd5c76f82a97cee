/*
 * limit.c: one limit or duration in the config's syntax, parsed and
 * written back: what the broker's config file parser, tollsim's -l and
 * tollstat need of it, apart from the file itself (broker/config.c).
 * Nothing here prints, exits or keeps state.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "gcra.h"
#include "limit.h"

#define NS_PER_MS	UINT64_C(1000000)
#define NS_PER_S	UINT64_C(1000000000)

/* Largest first: limit_format picks the largest that divides. */
static const struct unit_len {
	const char	*name;
	uint64_t	ns;
} periods[] = {
	{ "day",	86400 * NS_PER_S },
	{ "h",		3600 * NS_PER_S },
	{ "min",	60 * NS_PER_S },
	{ "s",		NS_PER_S },
}, durations[] = {
	{ "day",	86400 * NS_PER_S },
	{ "h",		3600 * NS_PER_S },
	{ "min",	60 * NS_PER_S },
	{ "s",		NS_PER_S },
	{ "ms",		NS_PER_MS },
};

static const char *const units[UNIT_COUNT] = {
	[UNIT_REQUESTS] = "requests",
	[UNIT_TOKENS] = "tokens",
	[UNIT_IMAGES] = "images",
};

/*
 * Parse all of [s, e) as a decimal number.  Only digits: no sign, space,
 * base prefix or suffix, which strtoull would take.  0, -EINVAL, -ERANGE.
 */
int
dec_parse(const char *s, const char *e, uint64_t *out)
{
	const char *c;
	uint64_t v = 0;
	unsigned d;

	/* Every byte a digit first: "99999999999999999999x" is no number. */
	for (c = s; c < e && tok_digit(*c); c++)
		;
	if (s == e || c != e)
		return -EINVAL;
	for (; s < e; s++) {
		d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* The next whitespace-separated token of *sp; 0 at the end. */
int
tok_next(const char **sp, const char **tok, size_t *len)
{
	const char *s = *sp, *t;

	while (*s != '\0' && tok_space((unsigned char)*s))
		s++;
	if (*s == '\0') {
		*sp = s;
		return 0;
	}
	for (t = s; *t != '\0' && !tok_space((unsigned char)*t); t++)
		;
	*tok = s;
	*len = (size_t)(t - s);
	*sp = t;
	return 1;
}

/* Fill *w: msg, about the len bytes at at (NULL: the whole value). */
static int
reject(struct limit_why *w, const char *msg, const char *at, size_t len)
{
	w->msg = msg;
	w->what = NULL;
	w->at = at;
	w->len = len;
	return -EINVAL;
}

/* reject, for the part `what' of the limit ("cooldown", "period"). */
static int
reject_in(struct limit_why *w, const char *what, const char *msg,
    const char *at, size_t len)
{
	reject(w, msg, at, len);
	w->what = what;
	return -EINVAL;
}

/*
 * The units a duration may carry, aliases included: `m' is a minute and
 * `d' a day.  Matched against the whole rest of the token, so `ms' is
 * never `m' and `s'.
 */
static const struct unit_len dur_units[] = {
	{ "ms",		NS_PER_MS },
	{ "s",		NS_PER_S },
	{ "m",		60 * NS_PER_S },
	{ "min",	60 * NS_PER_S },
	{ "h",		3600 * NS_PER_S },
	{ "d",		86400 * NS_PER_S },
	{ "day",	86400 * NS_PER_S },
};

/* The ns of unit [s, s+len), or 0 if it is none of dur_units. */
static uint64_t
dur_unit(const char *s, size_t len)
{
	for (size_t i = 0; i < sizeof(dur_units) / sizeof(dur_units[0]); i++)
		if (tok_is(s, len, dur_units[i].name))
			return dur_units[i].ns;
	return 0;
}

/*
 * Parse [s, s+len) as a duration: digits, an optional fraction, an
 * optional unit (ms, s, m or min, h, d or day; none is seconds).  The
 * result must be a whole number of nanoseconds.  0, or -EINVAL or
 * -ERANGE with *why (if not NULL) a static message saying what is wrong.
 */
int
duration_read(const char *s, size_t len, uint64_t *out_ns, const char **why)
{
	const char *e = s + len, *d, *f, *fe, *msg;
	uint64_t ip, frac = 0, pow = 1, unit = NS_PER_S, q, r, ns, add;
	int ret;

	if (why == NULL)
		why = &msg;
	*why = "not a duration (want a number and a unit: " DURATION_EG ")";
	if (len == 0) {
		*why = "empty duration (want " DURATION_EG ")";
		return -EINVAL;
	}
	if (*s == '-') {
		*why = "a duration is never negative";
		return -EINVAL;
	}
	for (d = s; d < e && tok_digit(*d); d++)
		;
	if ((ret = dec_parse(s, d, &ip)) == -ERANGE)
		goto too_long;
	if (ret < 0)
		return ret;
	if (d < e && *d == '.') {
		for (f = ++d; d < e && tok_digit(*d); d++)
			;
		if (d == f) {
			*why = "no digit after the decimal point";
			return -EINVAL;
		}
		/* Trailing zeros say nothing; nine digits reach 1 ns. */
		for (fe = d; fe > f && fe[-1] == '0'; fe--)
			;
		if (fe - f > 9) {
			*why = "finer than a nanosecond";
			return -EINVAL;
		}
		for (; f < fe; f++) {
			frac = frac * 10 + (uint64_t)(*f - '0');
			pow *= 10;
		}
	}
	if (d < e && (unit = dur_unit(d, (size_t)(e - d))) == 0) {
		*why = "unknown unit (want ms, s, m or min, h, d or day)";
		return -EINVAL;
	}
	if (ip > UINT64_MAX / unit)
		goto too_long;
	ns = ip * unit;
	/*
	 * frac/pow of a unit, exactly, without 128-bit arithmetic: with
	 * unit = q*pow + r it is frac*q + frac*r/pow, where frac*q < unit
	 * and frac*r < pow*pow <= 1e18 cannot overflow.
	 */
	q = unit / pow;
	r = unit % pow;
	if (frac * r % pow != 0) {
		*why = "finer than a nanosecond";
		return -EINVAL;
	}
	add = frac * q + frac * r / pow;
	if (ns > UINT64_MAX - add)
		goto too_long;
	*out_ns = ns + add;
	return 0;

too_long:
	*why = "too long (more than 584 years of nanoseconds)";
	return -ERANGE;
}

/* duration_read without the message.  0, -EINVAL, -ERANGE. */
int
duration_parse(const char *s, size_t len, uint64_t *out_ns)
{
	return duration_read(s, len, out_ns, NULL);
}

/*
 * A limit's period, [u, pe): a duration with its unit, or a unit alone
 * for one of it ("min").  0 or -EINVAL/-ERANGE with *why.
 */
static int
period_read(const char *u, const char *pe, uint64_t *ns, const char **why)
{
	uint64_t one;
	int ret;

	if (u < pe && ((*u >= 'a' && *u <= 'z') || (*u >= 'A' &&
	    *u <= 'Z'))) {
		if ((one = dur_unit(u, (size_t)(pe - u))) == 0) {
			*why = "unknown unit (want ms, s, m or min, h, d or "
			    "day, after an optional number)";
			return -EINVAL;
		}
		*ns = one;
		return 0;
	}
	if ((ret = duration_read(u, (size_t)(pe - u), ns, why)) < 0)
		return ret;
	if (tok_digit(pe[-1])) {
		*why = "period without a unit (want e.g. min, 6.1s, 500ms, "
		    "10m, 1d)";
		return -EINVAL;
	}
	if (*ns == 0) {
		*why = "zero period";
		return -EINVAL;
	}
	return 0;
}

/* "N [adaptive]" of `concurrency =', after the keyword if there was one. */
int
limit_parse_conc(const char *s, struct limit_spec *out, struct limit_why *w)
{
	struct limit_spec l;
	const char *t;
	size_t len;
	int ret;

	memset(&l, 0, sizeof(l));
	l.kind = LIM_CONC;
	l.unit = UNIT_REQUESTS;
	if (!tok_next(&s, &t, &len))
		return reject(w, "missing the number of requests in flight",
		    NULL, 0);
	if ((ret = dec_parse(t, t + len, &l.count)) < 0)
		return reject(w, ret == -ERANGE ? "number too large" :
		    "not a decimal number", t, len);
	if (l.count < 1)
		return reject(w, "concurrency smaller than one", t, len);
	while (tok_next(&s, &t, &len)) {
		if (!tok_is(t, len, "adaptive"))
			return reject(w, "unknown option (want adaptive)", t,
			    len);
		if (l.adaptive)
			return reject(w, "option given twice", t, len);
		l.adaptive = 1;
	}
	*out = l;
	return 0;
}

/* config_parse_limit, saying which token is at fault. */
int
limit_parse(const char *s, struct limit_spec *out, struct limit_why *w)
{
	struct limit_spec l;
	const char *t, *slash, *u, *pe, *burst_at = NULL;
	const char *margin_at = NULL, *dwhy;
	uint64_t pct, one;
	size_t len, i, margin_len = 0;
	int ret, window = 0, burst_set = 0;

	memset(&l, 0, sizeof(l));
	if (s == NULL || !tok_next(&s, &t, &len))
		return reject(w, "empty limit", NULL, 0);
	if (tok_is(t, len, "concurrency"))
		return limit_parse_conc(s, out, w);

	if ((ret = dec_parse(t, t + len, &l.count)) < 0)
		return reject(w, ret == -ERANGE ? "number too large" :
		    "count is not a decimal number", t, len);
	if (l.count < 1)
		return reject(w, "count smaller than one", t, len);

	if (!tok_next(&s, &t, &len))
		return reject(w, "missing UNIT/PERIOD after the count", NULL,
		    0);
	if ((slash = memchr(t, '/', len)) == NULL)
		return reject(w, "expected UNIT/PERIOD", t, len);
	for (i = 0; i < UNIT_COUNT; i++)
		if (tok_is(t, (size_t)(slash - t), units[i]))
			break;
	if (i == UNIT_COUNT)
		return reject(w, "unknown unit (want requests, tokens or "
		    "images)", t, (size_t)(slash - t));
	l.unit = (uint8_t)i;

	/* PERIOD: a duration with its unit (6.1s, 500ms), or a unit (min). */
	pe = t + len;
	u = slash + 1;
	if (u == pe)
		return reject(w, "missing the period after `/' (want e.g. "
		    "min, 6.1s, 500ms)", t, len);
	if (period_read(u, pe, &l.period_ns, &dwhy) < 0)
		return reject_in(w, "period", dwhy, u, (size_t)(pe - u));

	while (tok_next(&s, &t, &len)) {
		if (tok_is(t, len, "window")) {
			if (window)
				return reject(w, "option given twice", t, len);
			window = 1;
		} else if (tok_is(t, len, "burst")) {
			if (burst_set)
				return reject(w, "option given twice", t, len);
			burst_set = 1;
			burst_at = t;
			if (!tok_next(&s, &t, &len))
				return reject(w, "burst needs a number",
				    burst_at, 5);
			if ((ret = dec_parse(t, t + len, &l.burst)) < 0)
				return reject(w, ret == -ERANGE ?
				    "number too large" :
				    "burst is not a decimal number", t, len);
			if (l.burst < 1)
				return reject(w, "burst smaller than one", t,
				    len);
		} else if (tok_is(t, len, "cooldown")) {
			if (l.cooldown_ns != 0)
				return reject(w, "option given twice", t, len);
			if (!tok_next(&s, &t, &len))
				return reject(w, "cooldown needs a duration",
				    NULL, 0);
			if (duration_read(t, len, &l.cooldown_ns, &dwhy) < 0)
				return reject_in(w, "cooldown", dwhy, t, len);
			if (l.cooldown_ns == 0)
				return reject_in(w, "cooldown", "must be longer "
				    "than zero", t, len);
		} else if (tok_is(t, len, "margin")) {
			if (margin_at != NULL)
				return reject(w, "option given twice", t, len);
			margin_at = t;
			if (!tok_next(&s, &t, &len))
				return reject(w, "margin needs a duration or a "
				    "percentage", margin_at, 6);
			margin_at = t;
			margin_len = len;
			if (len > 1 && t[len - 1] == '%') {
				/* Whole percents of the period, up to half. */
				if (dec_parse(t, t + len - 1, &pct) < 0 ||
				    pct < 1 || pct > 50)
					return reject(w, "margin percentage "
					    "must be 1% to 50%", t, len);
				l.margin_pct = (uint8_t)pct;
			} else if (duration_read(t, len, &l.margin_ns,
			    &dwhy) < 0)
				return reject_in(w, "margin", dwhy, t, len);
			else if (l.margin_ns == 0)
				return reject_in(w, "margin", "must be longer "
				    "than zero (or a percentage, e.g. 5%)", t,
				    len);
		} else
			return reject(w, "unknown option (want burst, "
			    "cooldown, margin or window)", t, len);
	}
	if (window && burst_set)
		return reject(w, "burst is only for rate limits, not a window",
		    burst_at, 5);
	if (window && margin_at != NULL)
		return reject(w, "margin is only for rate limits, not a window",
		    margin_at, margin_len);
	if (window)
		l.kind = LIM_WINDOW;
	else {
		l.kind = LIM_RATE;
		if (!burst_set)
			l.burst = l.count;
		/*
		 * A margin is room kept in the bucket: it must leave the
		 * bucket room for one unit, or it would be ignored.
		 */
		one = gcra_cost_ns(1, l.period_ns, l.count);
		if (margin_at != NULL && (l.burst < 2 ||
		    limit_margin_ns(&l) > gcra_tau_ns(l.burst, l.period_ns,
		    l.count) - one))
			return reject(w, "margin larger than the bucket holds "
			    "beyond one unit (raise burst, or lower the "
			    "margin)", margin_at, margin_len);
	}
	*out = l;
	return 0;
}

/*
 * Parse the value of a `limit =' line, or a concurrency limit as
 * limit_format writes it ("concurrency 4 adaptive"), into *out, which is
 * left alone on error.  out->line is 0.  Returns 0, or -EINVAL with *why
 * (if why is not NULL) pointing to a static message.
 */
int
config_parse_limit(const char *s, struct limit_spec *out, const char **why)
{
	struct limit_why w;
	int ret;

	if ((ret = limit_parse(s, out, &w)) < 0 && why != NULL)
		*why = w.msg;
	return ret;
}

/*
 * Parse a duration, "120s", "1.5s", "500ms", "10min", "2h", "1day", or a
 * bare number of seconds, into *out_ns.  Zero is a duration.  Returns 0,
 * -EINVAL if s is not one (or is finer than a nanosecond), or -ERANGE if it
 * does not fit in 64 bits of nanoseconds.
 */
int
config_parse_duration(const char *s, uint64_t *out_ns)
{
	if (s == NULL)
		return -EINVAL;
	return duration_parse(s, strlen(s), out_ns);
}

/*
 * A tool's duration option: duration_read, then within [min_ns, max_ns].
 * why gets a whole sentence for the tool to print after the option.
 */
int
duration_arg(const char *s, uint64_t min_ns, uint64_t max_ns,
    uint64_t *out_ns, char *why, size_t len)
{
	char b[32];
	const char *msg;
	uint64_t ns;
	int ret;

	if ((ret = duration_read(s, strlen(s), &ns, &msg)) < 0) {
		snprintf(why, len, "%s", msg);
		return ret;
	}
	if (ns < min_ns) {
		if (min_ns <= 1)
			snprintf(why, len, "must be longer than zero");
		else {
			duration_format(b, sizeof(b), min_ns);
			snprintf(why, len, "shorter than %s", b);
		}
		return -EINVAL;
	}
	if (ns > max_ns) {
		duration_format(b, sizeof(b), max_ns);
		snprintf(why, len, "longer than %s", b);
		return -ERANGE;
	}
	*out_ns = ns;
	return 0;
}

/*
 * Return the name of a unit, or "?" for a number that is not one.
 */
const char *
unit_name(unsigned unit)
{
	return unit < UNIT_COUNT ? units[unit] : "?";
}

/*
 * A period the way the config writes it: the largest whole unit, alone
 * when one ("min"); else as a duration ("6.1s", "500ms").
 */
static void
format_period(char *buf, size_t len, uint64_t ns)
{
	size_t i;

	for (i = 0; i < sizeof(periods) / sizeof(periods[0]); i++) {
		if (ns == 0 || ns % periods[i].ns != 0)
			continue;
		if (ns == periods[i].ns)
			snprintf(buf, len, "%s", periods[i].name);
		else
			snprintf(buf, len, "%" PRIu64 "%s",
			    ns / periods[i].ns, periods[i].name);
		return;
	}
	duration_format(buf, len, ns);
}

/*
 * A duration that parses back to ns.  Seconds up to an hour (a "120s"
 * lockout reads better than "2min"), whole days, hours or minutes
 * beyond, else seconds; under a second, ms ("500ms", "0.25ms"); else a
 * fraction of a second ("6.1s").
 */
void
duration_format(char *buf, size_t len, uint64_t ns)
{
	size_t i;
	int n;

	if (ns % NS_PER_S == 0 && ns < 3600 * NS_PER_S) {
		snprintf(buf, len, "%" PRIu64 "s", ns / NS_PER_S);
		return;
	}
	/* day, h, min, s: the largest whole one; ms only under a second. */
	for (i = 0; i < sizeof(durations) / sizeof(durations[0]); i++)
		if (ns != 0 && ns % durations[i].ns == 0 &&
		    (durations[i].ns >= NS_PER_S || ns < NS_PER_S)) {
			snprintf(buf, len, "%" PRIu64 "%s",
			    ns / durations[i].ns, durations[i].name);
			return;
		}
	/* Under a second in ms ("0.5ms"), else in s; the fraction not 0. */
	if (ns < NS_PER_S)
		n = snprintf(buf, len, "%" PRIu64 ".%06" PRIu64, ns /
		    NS_PER_MS, ns % NS_PER_MS);
	else
		n = snprintf(buf, len, "%" PRIu64 ".%09" PRIu64, ns /
		    NS_PER_S, ns % NS_PER_S);
	if (n > 0 && (size_t)n < len) {
		while (buf[n - 1] == '0')
			n--;
		snprintf(buf + n, len - (size_t)n, ns < NS_PER_S ? "ms" :
		    "s");
	}
}

/*
 * Write a limit in the config's own syntax ("5 images/min",
 * "1 requests/165s burst 4 cooldown 120s", "10000 requests/day window",
 * "concurrency 4 adaptive") into buf, which config_parse_limit turns back
 * into the same limit.  A rate limit's burst is written only when it is not
 * the default (the count).  Returns what snprintf returns.
 */
int
limit_format(const struct limit_spec *l, char *buf, size_t len)
{
	char per[32], burst[40], cd[48], mg[48];

	switch (l->kind) {
	case LIM_CONC:
		return snprintf(buf, len, "concurrency %" PRIu64 "%s",
		    l->count, l->adaptive ? " adaptive" : "");
	case LIM_RATE:
	case LIM_WINDOW:
		format_period(per, sizeof(per), l->period_ns);
		burst[0] = '\0';
		if (l->kind == LIM_RATE && l->burst != l->count)
			snprintf(burst, sizeof(burst), " burst %" PRIu64,
			    l->burst);
		cd[0] = '\0';
		if (l->cooldown_ns != 0) {
			memcpy(cd, " cooldown ", 11);
			duration_format(cd + 10, sizeof(cd) - 10,
			    l->cooldown_ns);
		}
		mg[0] = '\0';
		if (l->margin_pct != 0)
			snprintf(mg, sizeof(mg), " margin %u%%",
			    (unsigned)l->margin_pct);
		else if (l->margin_ns != 0) {
			memcpy(mg, " margin ", 9);
			duration_format(mg + 8, sizeof(mg) - 8, l->margin_ns);
		}
		return snprintf(buf, len, "%" PRIu64 " %s/%s%s%s%s%s", l->count,
		    unit_name(l->unit), per, burst, cd, mg,
		    l->kind == LIM_WINDOW ? " window" : "");
	default:
		return snprintf(buf, len, "(limit of unknown kind %u)",
		    (unsigned)l->kind);
	}
}
