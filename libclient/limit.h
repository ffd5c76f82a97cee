/* limit.h: private; one limit or duration in the config's syntax (limit.c). */
#ifndef TG_LIMIT_H
#define TG_LIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "seg.h"

/* One `limit =' or `concurrency =' line. */
struct limit_spec {
	uint8_t		kind;		/* enum lim_kind */
	uint8_t		unit;		/* enum lim_unit; UNIT_REQUESTS for LIM_CONC */
	uint8_t		adaptive;	/* LIM_CONC: `concurrency = N adaptive' */
	uint8_t		margin_pct;	/* LIM_RATE: `margin P%' (period) */
	int		line;		/* where it was defined, for messages */
	uint64_t	count;		/* N per period, N per window, N in flight */
	uint64_t	period_ns;	/* LIM_RATE, LIM_WINDOW; 0 for LIM_CONC */
	uint64_t	burst;		/* LIM_RATE: bucket capacity in units */
	uint64_t	cooldown_ns;	/* 0: none */
	uint64_t	margin_ns;	/* LIM_RATE: `margin D'; 0: none */
};

/*
 * A rate limit's margin for the trip to the server, in ns: what of its
 * bucket it keeps unused, so that a request that reaches the server
 * earlier than the one before it (a warm connection after a cold one)
 * still finds room there.  `margin D', or `margin P%' of the period.
 */
static inline uint64_t
limit_margin_ns(const struct limit_spec *l)
{
	if (l->margin_pct != 0)
		return l->period_ns / 100 * l->margin_pct +
		    l->period_ns % 100 * l->margin_pct / 100;
	return l->margin_ns;
}

/* Why a limit was refused: a static message and the token at fault. */
struct limit_why {
	const char	*msg;
	const char	*what;		/* the part, "cooldown"; NULL: none */
	const char	*at;		/* NULL: the whole value */
	size_t		len;
};

/* isspace() in the C locale, whatever the process's locale is. */
static inline int
tok_space(int c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' ||
	    c == '\f' || c == '\r';
}

static inline int
tok_digit(int c)
{
	return c >= '0' && c <= '9';
}

static inline int
tok_is(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && memcmp(s, word, len) == 0;
}

/*
 * Parse all of [s, e) as a decimal number.  Only digits: no sign, space,
 * base prefix or suffix.  0, -EINVAL, -ERANGE.
 */
int	dec_parse(const char *s, const char *e, uint64_t *out);

/* The next blank-separated token of *sp in *tok, *len; 0 at the end. */
int	tok_next(const char **sp, const char **tok, size_t *len);

/* Examples of durations, for messages. */
#define DURATION_EG	"500ms, 6.1s, 5m, 2h, 1d"

/*
 * A duration of len bytes: a number, with a fraction if need be, and a
 * unit: ms, s, m or min, h, d or day (none: seconds).  "6.1s", "500ms",
 * "5m", "1.5h".  Zero is one; callers that cannot use it say so.  Returns
 * 0, or -EINVAL or -ERANGE with *why (unless NULL) a static message: what
 * is wrong with it.  The one parser of durations: the config, a limit's
 * period and every tool's options go through it.
 */
int	duration_read(const char *s, size_t len, uint64_t *out_ns,
	    const char **why);

/* duration_read without the message. */
int	duration_parse(const char *s, size_t len, uint64_t *out_ns);

/* A duration as the config writes it ("2m45s", "1.5s"), into buf. */
void	duration_format(char *buf, size_t len, uint64_t ns);

/*
 * The value of a `limit =' or `concurrency =' line into *out; 0, or
 * -EINVAL with *w saying why (limit_parse_conc: after the keyword).
 */
int	limit_parse(const char *s, struct limit_spec *out,
	    struct limit_why *w);
int	limit_parse_conc(const char *s, struct limit_spec *out,
	    struct limit_why *w);

/*
 * Parse the value of a `limit =' line ("30000 tokens/min burst 500",
 * "1 requests/165s burst 4 cooldown 120s", "10000 requests/day window")
 * into *out.  Returns 0, or -EINVAL with *why set to a static message.
 * Shared with tollsim's -l.
 */
int	config_parse_limit(const char *s, struct limit_spec *out,
	    const char **why);

/* duration_parse of a C string (NULL: -EINVAL). */
int	config_parse_duration(const char *s, uint64_t *out_ns);

/*
 * An option's duration for a tool: s into *out_ns, at least min_ns and at
 * most max_ns.  Returns 0, or -EINVAL/-ERANGE with why (len bytes) saying
 * what is wrong ("negative", "longer than 1h", "shorter than 100ms").
 */
int	duration_arg(const char *s, uint64_t min_ns, uint64_t max_ns,
	    uint64_t *out_ns, char *why, size_t len);

/* "requests", "tokens", "images"; "?" for anything else. */
const char *unit_name(unsigned unit);

/*
 * Write a limit back in the config's own syntax ("5 images/min",
 * "1 requests/165s burst 4 cooldown 120s", "concurrency 4") into buf.
 * Returns what snprintf returns.
 */
int	limit_format(const struct limit_spec *l, char *buf, size_t len);

#endif /* TG_LIMIT_H */
