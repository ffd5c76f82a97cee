/*
 * headers.c: the response-header parser behind tg_observe (DESIGN 3).
 *
 * Header values are untrusted input and the block is not NUL-terminated,
 * so every scanner here takes a [p, e) range and never looks past e.  No
 * libc number or time functions: strtoull and friends need a NUL and
 * consult the locale, timegm and mktime may open time zone files.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "headers.h"

#define MAX_VALUE	256		/* bytes; a longer value is ignored */
#define NS_PER_US	1000ull
#define NS_PER_MS	1000000ull
#define NS_PER_S	1000000000ull
#define NS_PER_MIN	(60 * NS_PER_S)
#define NS_PER_HOUR	(3600 * NS_PER_S)
#define NS_MAX		(HDR_UNKNOWN - 1)	/* durations saturate here */

/* What a recognised header says. */
enum what {
	W_LIMIT,
	W_REMAINING,
	W_RESET,
	W_RETRY,
	W_SF_RATELIMIT,		/* IETF structured RateLimit */
	W_SF_POLICY		/* IETF structured RateLimit-Policy */
};

/* How its value is written. */
enum form {
	F_COUNT,		/* a bare non-negative integer */
	F_COUNT_LIST,		/* IETF draft: "10, 10;w=1" */
	F_GO,			/* Go duration: 1m2.5s */
	F_RFC3339,		/* 2026-11-23T10:00:30Z */
	F_MAGNITUDE,		/* epoch ms, epoch s or delta s, by size */
	F_SECONDS,		/* delta seconds, fraction allowed */
	F_SECONDS_LIST,		/* delta seconds, maybe a list after */
	F_MS,			/* delta milliseconds, fraction allowed */
	F_RETRY_AFTER		/* delta seconds or HTTP-date */
};

struct field {
	enum what	what;
	enum form	form;
	int		unit;		/* enum lim_unit */
	uint32_t	model;		/* HDR_MODEL_*: what its reset means */
};

/* A decimal number: ip + f / den, plus sticky if digits were dropped. */
struct dec {
	uint64_t	ip;
	uint64_t	f;
	uint64_t	den;		/* 1 when there is no fraction */
	int		sticky;
};

static int
lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static int
is_alpha(int c)
{
	c = lower(c);
	return c >= 'a' && c <= 'z';
}

static int
is_ows(int c)
{
	return c == ' ' || c == '\t';
}

static size_t
lit_len(const char *lit)
{
	size_t n = 0;

	while (lit[n] != '\0')
		n++;
	return n;
}

/* Does [*pp, e) start with lit, case-insensitively?  If so, step past it. */
static int
eat(const char **pp, const char *e, const char *lit)
{
	const char *p = *pp;

	for (; *lit != '\0'; lit++, p++)
		if (p == e || lower((unsigned char)*p) != (unsigned char)*lit)
			return 0;
	*pp = p;
	return 1;
}

/* Is [p, e) exactly lit, case-insensitively?  lit is lower case. */
static int
is(const char *p, const char *e, const char *lit)
{
	return (size_t)(e - p) == lit_len(lit) && eat(&p, e, lit);
}

static uint64_t
sat_add(uint64_t a, uint64_t b)
{
	return b > NS_MAX || a > NS_MAX - b ? NS_MAX : a + b;
}

static uint64_t
sat_mul(uint64_t a, uint64_t b)
{
	if (a != 0 && b > NS_MAX / a)
		return NS_MAX;
	return a * b;
}

/* Keep the most restrictive: the lowest count. */
static void
take_min(uint64_t *dst, uint64_t v)
{
	if (v < *dst)
		*dst = v;
}

/* Keep the most restrictive: the longest wait; unknown is no wait at all. */
static void
take_max(uint64_t *dst, uint64_t v)
{
	if (*dst == HDR_UNKNOWN || v > *dst)
		*dst = v;
}

/*
 * Read one or more digits.  A number that does not fit is unknown, not
 * clamped: a count of 2^64 is garbage, not a large budget.
 */
static int
parse_uint(const char **pp, const char *e, uint64_t *v)
{
	const char *p = *pp;
	uint64_t n = 0;
	unsigned d;

	if (p == e || !is_digit(*p))
		return -1;
	for (; p < e && is_digit(*p); p++) {
		d = (unsigned)(*p - '0');
		if (n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
	}
	*pp = p;
	*v = n;
	return 0;
}

/* Read digits after a '.': the first 9 count, the rest only round up. */
static int
parse_frac(const char **pp, const char *e, struct dec *d)
{
	const char *p = *pp;

	d->f = 0;
	d->den = 1;
	d->sticky = 0;
	if (p == e || !is_digit(*p))
		return -1;
	for (; p < e && is_digit(*p); p++) {
		if (d->den < NS_PER_S) {
			d->f = d->f * 10 + (uint64_t)(*p - '0');
			d->den *= 10;
		} else if (*p != '0')
			d->sticky = 1;
	}
	*pp = p;
	return 0;
}

/* Read digits with an optional fraction: 12, 1.5, 0.000001. */
static int
parse_dec(const char **pp, const char *e, struct dec *d)
{
	const char *p = *pp;

	if (parse_uint(&p, e, &d->ip) != 0)
		return -1;
	d->f = 0;
	d->den = 1;
	d->sticky = 0;
	if (p < e && *p == '.') {
		p++;
		if (parse_frac(&p, e, d) != 0)
			return -1;
	}
	*pp = p;
	return 0;
}

/*
 * d in units of unit_ns, as ns rounded up and saturated.  The fraction is
 * split so no product overflows: f < den, so f * (unit / den) < unit, and
 * f * (unit % den) < den * den <= 1e18.
 */
static uint64_t
dec_to_ns(const struct dec *d, uint64_t unit_ns)
{
	uint64_t q = unit_ns / d->den, r = unit_ns % d->den, frac;

	frac = d->f * q + d->f * r / d->den;
	if ((d->f * r) % d->den != 0 || d->sticky)
		frac++;
	return sat_add(sat_mul(d->ip, unit_ns), frac);
}

/* A whole value as a decimal number in unit_ns units. */
static int
parse_delta(const char *p, const char *e, uint64_t unit_ns, uint64_t *ns)
{
	struct dec d;

	if (parse_dec(&p, e, &d) != 0 || p != e)
		return -1;
	*ns = dec_to_ns(&d, unit_ns);
	return 0;
}

/* A count, and for the IETF draft lists, what may follow it. */
static int
parse_count(const char *p, const char *e, int list, uint64_t *v)
{
	if (parse_uint(&p, e, v) != 0 || *v == HDR_UNKNOWN)
		return -1;
	if (p == e)
		return 0;
	if (!list)
		return -1;
	while (p < e && is_ows(*p))
		p++;
	return p < e && (*p == ',' || *p == ';') ? 0 : -1;
}

/* A Go time.Duration as OpenAI prints it: 6m0s, 2m59.56s, 20ms, 0. */
static int
parse_go(const char *p, const char *e, uint64_t *ns)
{
	uint64_t total = 0, unit;
	struct dec d;

	if (is(p, e, "0")) {
		*ns = 0;
		return 0;
	}
	if (p == e)
		return -1;
	while (p < e) {
		if (parse_dec(&p, e, &d) != 0)
			return -1;
		/* "ms" before "m"; U+00B5 and U+03BC are both micro. */
		if (eat(&p, e, "ns"))
			unit = 1;
		else if (eat(&p, e, "us") || eat(&p, e, "\xc2\xb5s") ||
		    eat(&p, e, "\xce\xbcs"))
			unit = NS_PER_US;
		else if (eat(&p, e, "ms"))
			unit = NS_PER_MS;
		else if (eat(&p, e, "s"))
			unit = NS_PER_S;
		else if (eat(&p, e, "m"))
			unit = NS_PER_MIN;
		else if (eat(&p, e, "h"))
			unit = NS_PER_HOUR;
		else
			return -1;
		total = sat_add(total, dec_to_ns(&d, unit));
	}
	*ns = total;
	return 0;
}

/* Exactly n digits. */
static int
digits(const char **pp, const char *e, int n, unsigned *v)
{
	const char *p = *pp;

	*v = 0;
	for (; n > 0; n--, p++) {
		if (p == e || !is_digit(*p))
			return -1;
		*v = *v * 10 + (unsigned)(*p - '0');
	}
	*pp = p;
	return 0;
}

static int
is_leap(unsigned y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
valid_date(unsigned y, unsigned m, unsigned d)
{
	static const unsigned char mdays[12] = {
		31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
	};

	if (m < 1 || m > 12 || d < 1)
		return 0;
	return d <= mdays[m - 1] + (unsigned)(m == 2 && is_leap(y));
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* An instant, seconds since the epoch plus frac_ns, as time from now. */
static uint64_t
until(int64_t secs, uint64_t frac_ns, uint64_t now_unix_ns)
{
	uint64_t t;

	if (secs < 0)
		return 0;	/* before 1970: long past */
	t = sat_add(sat_mul((uint64_t)secs, NS_PER_S), frac_ns);
	return t > now_unix_ns ? t - now_unix_ns : 0;
}

/* hh:mm:ss, with a leap second's 60 allowed. */
static int
parse_hms(const char **pp, const char *e, unsigned *sod)
{
	unsigned h, mi, s;

	if (digits(pp, e, 2, &h) != 0 || !eat(pp, e, ":") ||
	    digits(pp, e, 2, &mi) != 0 || !eat(pp, e, ":") ||
	    digits(pp, e, 2, &s) != 0)
		return -1;
	if (h > 23 || mi > 59 || s > 60)
		return -1;
	*sod = h * 3600 + mi * 60 + s;
	return 0;
}

/* RFC 3339: 2026-11-23T10:00:30.5+02:00. */
static int
parse_rfc3339(const char *p, const char *e, uint64_t now_unix_ns,
    uint64_t *ns)
{
	unsigned y, m, d, sod, oh, om;
	int64_t secs, off = 0;
	struct dec fr = { 0, 0, 1, 0 };
	int sign;

	if (digits(&p, e, 4, &y) != 0 || !eat(&p, e, "-") ||
	    digits(&p, e, 2, &m) != 0 || !eat(&p, e, "-") ||
	    digits(&p, e, 2, &d) != 0 || !valid_date(y, m, d))
		return -1;
	if (!eat(&p, e, "t") && !eat(&p, e, " "))
		return -1;
	if (parse_hms(&p, e, &sod) != 0)
		return -1;
	if (eat(&p, e, ".") && parse_frac(&p, e, &fr) != 0)
		return -1;
	if (!eat(&p, e, "z")) {
		if (p == e || (*p != '+' && *p != '-'))
			return -1;
		sign = *p++ == '+' ? 1 : -1;
		if (digits(&p, e, 2, &oh) != 0 || !eat(&p, e, ":") ||
		    digits(&p, e, 2, &om) != 0 || oh > 23 || om > 59)
			return -1;
		off = sign * (int64_t)(oh * 3600 + om * 60);
	}
	if (p != e)
		return -1;
	/* Local time minus its offset is UTC. */
	secs = days_from_civil(y, m, d) * 86400 + sod - off;
	*ns = until(secs, dec_to_ns(&fr, NS_PER_S), now_unix_ns);
	return 0;
}

/* Jan..Dec as 1..12, or 0. */
static unsigned
month(const char **pp, const char *e)
{
	static const char names[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	char lit[4];
	unsigned i;

	for (i = 0; i < 12; i++) {
		lit[0] = names[3 * i];
		lit[1] = names[3 * i + 1];
		lit[2] = names[3 * i + 2];
		lit[3] = '\0';
		if (eat(pp, e, lit))
			return i + 1;
	}
	return 0;
}

/*
 * An HTTP-date (RFC 9110 5.6.7) in any of its three forms:
 *	Sun, 06 Nov 1994 08:49:37 GMT		IMF-fixdate
 *	Sunday, 06-Nov-94 08:49:37 GMT		rfc850
 *	Sun Nov  6 08:49:37 1994		asctime
 * The weekday is skipped, not checked: the date alone says when.
 */
static int
parse_http_date(const char *p, const char *e, uint64_t now_unix_ns,
    uint64_t *ns)
{
	unsigned y, m, d, sod;

	if (p == e || !is_alpha(*p))
		return -1;
	while (p < e && is_alpha(*p))
		p++;
	if (eat(&p, e, ", ")) {
		if (digits(&p, e, 2, &d) != 0)
			return -1;
		if (eat(&p, e, " ")) {
			if ((m = month(&p, e)) == 0 || !eat(&p, e, " ") ||
			    digits(&p, e, 4, &y) != 0)
				return -1;
		} else if (eat(&p, e, "-")) {
			if ((m = month(&p, e)) == 0 || !eat(&p, e, "-") ||
			    digits(&p, e, 2, &y) != 0)
				return -1;
			/* Two-digit years: 70..99 are 19xx, as in RFC 6265. */
			y += y < 70 ? 2000 : 1900;
		} else
			return -1;
		if (!eat(&p, e, " ") || parse_hms(&p, e, &sod) != 0 ||
		    !eat(&p, e, " gmt"))
			return -1;
	} else if (eat(&p, e, " ")) {
		if ((m = month(&p, e)) == 0 || !eat(&p, e, " "))
			return -1;
		if (eat(&p, e, " ")) {
			if (digits(&p, e, 1, &d) != 0)
				return -1;
		} else if (digits(&p, e, 2, &d) != 0)
			return -1;
		if (!eat(&p, e, " ") || parse_hms(&p, e, &sod) != 0 ||
		    !eat(&p, e, " ") || digits(&p, e, 4, &y) != 0)
			return -1;
	} else
		return -1;
	if (p != e || !valid_date(y, m, d))
		return -1;
	*ns = until(days_from_civil(y, m, d) * 86400 + sod, 0, now_unix_ns);
	return 0;
}

/*
 * The generic x-ratelimit-reset: GitHub sends epoch seconds, some send
 * epoch ms, Together and others delta seconds.  Tell them by size.
 */
static int
parse_magnitude(const char *p, const char *e, uint64_t now_unix_ns,
    uint64_t *ns)
{
	struct dec d;
	uint64_t t;

	if (parse_dec(&p, e, &d) != 0 || p != e)
		return -1;
	if (d.ip > 1000000000000ull)
		t = dec_to_ns(&d, NS_PER_MS);
	else if (d.ip > 1000000000ull)
		t = dec_to_ns(&d, NS_PER_S);
	else {
		*ns = dec_to_ns(&d, NS_PER_S);
		return 0;
	}
	*ns = t > now_unix_ns ? t - now_unix_ns : 0;
	return 0;
}

/* Skip an sf-string, from its opening quote past its closing one. */
static int
skip_string(const char **pp, const char *e)
{
	const char *p = *pp + 1;

	for (; p < e; p++) {
		if (*p == '\\') {
			if (++p == e)
				return -1;
		} else if (*p == '"') {
			*pp = p + 1;
			return 0;
		}
	}
	return -1;
}

/* Skip a bare item that is not a string: token, number, boolean. */
static void
skip_bare(const char **pp, const char *e)
{
	const char *p = *pp;

	while (p < e && *p != ';' && *p != ',' && !is_ows(*p))
		p++;
	*pp = p;
}

/*
 * The structured fields of the IETF draft (RFC 8941 lists):
 *	RateLimit: "default";r=50;t=30, "daily";r=900;t=3000
 *	RateLimit-Policy: "default";q=100;w=10
 * For RateLimit the item with the lowest r wins, and its t is the reset
 * (a tie takes the longer t); for RateLimit-Policy the lowest q.  Each
 * item's r, t and q must be non-negative integers, or the field is bad.
 * Draft 07's dictionary (RateLimit: limit=100, remaining=50, reset=5) and
 * bare-quota policy (RateLimit-Policy: 100;w=60) read the same way.
 */
static int
parse_sf(const char *p, const char *e, int policy, struct hdr_unit *u)
{
	uint64_t best_r = HDR_UNKNOWN, best_t = HDR_UNKNOWN;
	uint64_t best_q = HDR_UNKNOWN, r, t, q, v, *dst;
	uint64_t dlimit = HDR_UNKNOWN, dreset = HDR_UNKNOWN;
	const char *s;

	for (;;) {
		while (p < e && is_ows(*p))
			p++;
		if (p == e)
			return -1;	/* empty list or trailing comma */
		r = t = q = HDR_UNKNOWN;
		s = p;
		if (*p == '"') {
			if (skip_string(&p, e) != 0)
				return -1;
		} else if (is_digit(*p)) {
			/* A bare integer item is a draft 07 quota. */
			if (parse_uint(&p, e, &q) != 0 || q == HDR_UNKNOWN)
				return -1;
		} else {
			while (p < e && *p != ';' && *p != ',' && *p != '=' &&
			    !is_ows(*p))
				p++;
		}
		if (p < e && *p == '=') {
			/* A dictionary member: key=value;params. */
			dst = NULL;
			if (is(s, p, "limit"))
				dst = &dlimit;
			else if (is(s, p, "remaining"))
				dst = &r;
			else if (is(s, p, "reset"))
				dst = &dreset;
			p++;
			if (dst != NULL) {
				if (parse_uint(&p, e, &v) != 0 ||
				    v == HDR_UNKNOWN)
					return -1;
				if (dst == &dreset)
					take_max(dst, v);
				else
					take_min(dst, v);
			} else if (p < e && *p == '"') {
				if (skip_string(&p, e) != 0)
					return -1;
			} else
				skip_bare(&p, e);
		}
		while (p < e && *p == ';') {
			p++;
			while (p < e && *p == ' ')
				p++;
			dst = NULL;
			if (eat(&p, e, "r="))
				dst = &r;
			else if (eat(&p, e, "t="))
				dst = &t;
			else if (eat(&p, e, "q="))
				dst = &q;
			if (dst != NULL) {
				if (parse_uint(&p, e, &v) != 0 ||
				    v == HDR_UNKNOWN)
					return -1;
				*dst = v;
				continue;
			}
			skip_bare(&p, e);	/* key, maybe =token */
			if (p < e && *p == '"' && skip_string(&p, e) != 0)
				return -1;
		}
		if (r != HDR_UNKNOWN && (r < best_r ||
		    (r == best_r && t != HDR_UNKNOWN &&
		    (best_t == HDR_UNKNOWN || t > best_t)))) {
			best_r = r;
			best_t = t;
		}
		take_min(&best_q, q);
		while (p < e && is_ows(*p))
			p++;
		if (p == e)
			break;
		if (*p++ != ',')
			return -1;
	}
	if (policy) {
		take_min(&u->limit, best_q);
		return 0;
	}
	/* A dictionary states one policy: its reset goes with its r. */
	if (dreset != HDR_UNKNOWN && (best_t == HDR_UNKNOWN ||
	    dreset > best_t))
		best_t = dreset;
	take_min(&u->limit, dlimit);
	take_min(&u->remaining, best_r);
	if ((best_r != HDR_UNKNOWN || dreset != HDR_UNKNOWN) &&
	    best_t != HDR_UNKNOWN)
		take_max(&u->reset_ns, sat_mul(best_t, NS_PER_S));
	return 0;
}

/* requests, tokens, images: the unit, or -1. */
static int
unit_of(const char *p, const char *e)
{
	if (is(p, e, "requests"))
		return UNIT_REQUESTS;
	if (is(p, e, "tokens"))
		return UNIT_TOKENS;
	if (is(p, e, "images"))
		return UNIT_IMAGES;
	return -1;
}

/* limit-U, remaining-U, reset-U (OpenAI); 0, or -1 for another suffix. */
static int
openai_field(const char *p, const char *e, struct field *f)
{
	if (eat(&p, e, "limit-"))
		f->what = W_LIMIT;
	else if (eat(&p, e, "remaining-"))
		f->what = W_REMAINING;
	else if (eat(&p, e, "reset-"))
		f->what = W_RESET;
	else
		return -1;
	f->form = f->what == W_RESET ? F_GO : F_COUNT;
	/* OpenAI's bucket refills all the time; reset is when it is full. */
	f->model = HDR_MODEL_BUCKET;
	return (f->unit = unit_of(p, e)) < 0 ? -1 : 0;
}

/* Anthropic: KIND-limit, KIND-remaining, KIND-reset. */
static int
anthropic_field(const char *p, const char *e, struct field *f)
{
	if (eat(&p, e, "requests-"))
		f->unit = UNIT_REQUESTS;
	else if (eat(&p, e, "tokens-") || eat(&p, e, "input-tokens-") ||
	    eat(&p, e, "output-tokens-"))
		f->unit = UNIT_TOKENS;	/* the lowest of the three wins */
	else
		return -1;
	f->form = F_COUNT;
	/*
	 * Anthropic documents a token bucket "continuously replenished up
	 * to your maximum limit", its reset the time it is full again.
	 */
	f->model = HDR_MODEL_BUCKET;
	if (is(p, e, "limit"))
		f->what = W_LIMIT;
	else if (is(p, e, "remaining"))
		f->what = W_REMAINING;
	else if (is(p, e, "reset")) {
		f->what = W_RESET;
		f->form = F_RFC3339;
	} else
		return -1;
	return 0;
}

/* Which header is [p, e)?  0 and *f, or -1 for one we do not read. */
static int
lookup(const char *p, const char *e, struct field *f)
{
	f->unit = UNIT_REQUESTS;
	f->form = F_COUNT;
	f->model = HDR_MODEL_WINDOW;	/* unless a provider's says else */
	if (is(p, e, "retry-after")) {
		f->what = W_RETRY;
		f->form = F_RETRY_AFTER;
	} else if (is(p, e, "retry-after-ms")) {
		f->what = W_RETRY;
		f->form = F_MS;
	} else if (is(p, e, "x-ratelimit-retry-after")) {
		f->what = W_RETRY;
		f->form = F_SECONDS;
	} else if (is(p, e, "x-ratelimit-limit")) {
		f->what = W_LIMIT;
	} else if (is(p, e, "x-ratelimit-remaining")) {
		f->what = W_REMAINING;
	} else if (is(p, e, "x-ratelimit-reset")) {
		f->what = W_RESET;
		f->form = F_MAGNITUDE;
	} else if (eat(&p, e, "x-ratelimit-")) {
		return openai_field(p, e, f);
	} else if (is(p, e, "x-tokenlimit-limit")) {
		f->what = W_LIMIT;
		f->unit = UNIT_TOKENS;
	} else if (is(p, e, "x-tokenlimit-remaining")) {
		f->what = W_REMAINING;
		f->unit = UNIT_TOKENS;
	} else if (eat(&p, e, "anthropic-ratelimit-")) {
		return anthropic_field(p, e, f);
	} else if (is(p, e, "ratelimit-limit")) {
		f->what = W_LIMIT;
		f->form = F_COUNT_LIST;
	} else if (is(p, e, "ratelimit-remaining")) {
		f->what = W_REMAINING;
		f->form = F_COUNT_LIST;
	} else if (is(p, e, "ratelimit-reset")) {
		f->what = W_RESET;
		f->form = F_SECONDS_LIST;
	} else if (is(p, e, "ratelimit")) {
		f->what = W_SF_RATELIMIT;
	} else if (is(p, e, "ratelimit-policy")) {
		f->what = W_SF_POLICY;
	} else
		return -1;
	return 0;
}

/* A time value in f's form, as ns from now. */
static int
parse_time(const char *p, const char *e, enum form form,
    uint64_t now_unix_ns, uint64_t *ns)
{
	const char *q;

	switch (form) {
	case F_GO:
		return parse_go(p, e, ns);
	case F_RFC3339:
		return parse_rfc3339(p, e, now_unix_ns, ns);
	case F_MAGNITUDE:
		return parse_magnitude(p, e, now_unix_ns, ns);
	case F_SECONDS:
		return parse_delta(p, e, NS_PER_S, ns);
	case F_SECONDS_LIST:
		/* Draft 03 allowed "30, 30;w=60": the first is the reset. */
		for (q = p; q < e && *q != ',' && *q != ';' && !is_ows(*q); q++)
			;
		if (parse_delta(p, q, NS_PER_S, ns) != 0)
			return -1;
		while (q < e && is_ows(*q))
			q++;
		return q == e || *q == ',' || *q == ';' ? 0 : -1;
	case F_MS:
		return parse_delta(p, e, NS_PER_MS, ns);
	case F_RETRY_AFTER:
		if (p < e && is_digit(*p))
			return parse_delta(p, e, NS_PER_S, ns);
		return parse_http_date(p, e, now_unix_ns, ns);
	default:
		return -1;
	}
}

/* One `name: value' line, name and value already trimmed. */
static void
header(const char *np, const char *ne, const char *vp, const char *ve,
    uint64_t now_unix_ns, struct hdr_result *out)
{
	struct hdr_unit *u;
	struct field f;
	uint64_t v;
	int ret;

	if (lookup(np, ne, &f) != 0)
		return;
	if ((size_t)(ve - vp) > MAX_VALUE) {
		if (out->nbad < UINT32_MAX)
			out->nbad++;
		return;
	}
	u = &out->unit[f.unit];
	if (f.what != W_RETRY && f.what != W_SF_POLICY)
		u->model |= f.model;
	switch (f.what) {
	case W_LIMIT:
	case W_REMAINING:
		if ((ret = parse_count(vp, ve, f.form == F_COUNT_LIST,
		    &v)) == 0)
			take_min(f.what == W_LIMIT ? &u->limit : &u->remaining,
			    v);
		break;
	case W_RESET:
		if ((ret = parse_time(vp, ve, f.form, now_unix_ns, &v)) == 0)
			take_max(&u->reset_ns, v);
		break;
	case W_RETRY:
		if ((ret = parse_time(vp, ve, f.form, now_unix_ns, &v)) == 0)
			take_max(&out->retry_after_ns, v);
		break;
	case W_SF_RATELIMIT:
	case W_SF_POLICY:
		ret = parse_sf(vp, ve, f.what == W_SF_POLICY, u);
		break;
	default:
		ret = -1;
		break;
	}
	if (ret != 0 && out->nbad < UINT32_MAX)
		out->nbad++;
}

/*
 * Parse a raw response header block into *out; see headers.h.  The end of
 * the buffer ends its last line: callers hand over a whole block, often
 * without the final newline (a Python join, a header copied by hand), and
 * dropping that line would lose a Retry-After.  A caller that may hold a
 * cut block passes len up to its last LF.
 */
int
hdr_parse(const char *buf, size_t len, uint64_t now_unix_ns,
    struct hdr_result *out)
{
	const char *p, *e, *eol, *colon, *np, *ne, *vp, *ve;
	int i;

	if (out == NULL || (buf == NULL && len != 0))
		return -EINVAL;
	out->retry_after_ns = HDR_UNKNOWN;
	for (i = 0; i < UNIT_COUNT; i++) {
		out->unit[i].limit = HDR_UNKNOWN;
		out->unit[i].remaining = HDR_UNKNOWN;
		out->unit[i].reset_ns = HDR_UNKNOWN;
		out->unit[i].model = 0;
	}
	out->nheaders = 0;
	out->nbad = 0;
	if (buf == NULL)
		return 0;
	for (p = buf, e = buf + len; p < e; p = eol + 1) {
		for (eol = p; eol < e && *eol != '\n'; eol++)
			;
		ve = eol;	/* at LF, or at the end of the buffer */
		if (ve > p && ve[-1] == '\r')
			ve--;
		/* Status lines (one per block, curl -D -L gives several). */
		if (eat(&p, ve, "http/"))
			continue;
		/* Blank lines end a block; obs-fold continuations we skip. */
		if (p == ve || is_ows(*p))
			continue;
		for (colon = p; colon < ve && *colon != ':'; colon++)
			;
		if (colon == ve || colon == p)
			continue;	/* no name: not a header */
		np = p;
		ne = colon;
		while (ne > np && is_ows(ne[-1]))
			ne--;
		vp = colon + 1;
		while (vp < ve && is_ows(*vp))
			vp++;
		while (ve > vp && is_ows(ve[-1]))
			ve--;
		if (out->nheaders < UINT32_MAX)
			out->nheaders++;
		header(np, ne, vp, ve, now_unix_ns, out);
	}
	return 0;
}
