/*
 * config.c: the tollgated config parser (DESIGN.md section 7).
 *
 * inih splits a line into name and value; everything else is ours.  Lines
 * reach inih through read_line(), our own ini_reader, which sees each raw
 * line first.  It counts lines: Debian's inih r55 is built with
 * INI_HANDLER_LINENO=0, so the handler is never told one.  It refuses what
 * inih would silently mangle: lines over 199 bytes (inih splits them),
 * section names over 49 bytes (inih truncates them), NUL bytes (which end a
 * C string early).  It removes comments, and indentation, so that inih
 * never takes an indented line for the continuation of the previous value.
 * And it parses [section] headers itself, because inih does not tell the
 * handler about a section that has no settings, and a parent key often has
 * none.  A line it refuses or has fully handled reaches inih as an empty
 * line, so inih's own state never matters, nor do the options Debian's
 * build lets any code in the process change at run time (ini_max_line,
 * ini_allow_multiline, ini_stop_on_first_error...).
 *
 * Every error is reported where it is found and parsing goes on, so that
 * one run shows them all.  What needs the whole file is resolved after it:
 * duplicates, parents (which may come later in the file), the number of
 * limits along each chain, the feedback settings (`backoff', `max_pause',
 * `learn') that each key takes from its ancestors unless it sets its own,
 * a backoff longer than the max_pause that clamps it, the default pidfile
 * (which follows `segment').
 * Nothing here prints, exits, or keeps state outside the struct parser on
 * the caller's stack.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "gcra.h"

#define LINE_BYTES_MAX	199	/* without its '\n': inih r55 splits longer */
#define FILE_BYTES_MAX	(1u << 20) /* a config is a few KiB; stops /dev/zero */
#define QUOTE_MAX	64	/* bytes of user text quoted in a message */

#define SEC_NONE	(-1)	/* before the first [section] */
#define SEC_BROKER	(-2)
#define SEC_BAD		(-3)	/* a refused header: check, keep nothing */

#define PARENT_TOP	(-1)
#define PARENT_MISSING	(-2)


enum {
	BS_SEGMENT,
	BS_MODE,
	BS_GROUP,
	BS_PIDFILE,
	BS_MAX_CLIENTS,
	BS_REDIS,
	BS_HOST_ID,
	BS_FEDERATION,
	BS_REDIS_OUTAGE,
	BS_COUNT
};

static const char *const broker_settings[BS_COUNT] = {
	[BS_SEGMENT] = "segment",
	[BS_MODE] = "mode",
	[BS_GROUP] = "group",
	[BS_PIDFILE] = "pidfile",
	[BS_MAX_CLIENTS] = "max_clients",
	[BS_REDIS] = "redis",
	[BS_HOST_ID] = "host_id",
	[BS_FEDERATION] = "federation",
	[BS_REDIS_OUTAGE] = "redis_outage",
};

/*
 * A key's feedback settings, each with the line that set it (0: none, or
 * the default).  `backoff' is one setting: MIN and MAX go together.
 */
struct feedback {
	uint64_t	backoff_min_ns;
	uint64_t	backoff_max_ns;
	uint64_t	max_pause_ns;
	int		backoff_line;
	int		pause_line;
	int		learn_line;
	int		rejected_line;
	uint8_t		learn;
	uint8_t		refund_rejected;
};

/* What a key gets when neither it nor an ancestor says otherwise. */
static const struct feedback feedback_defaults = {
	.backoff_min_ns = CFG_BACKOFF_MIN_NS,
	.backoff_max_ns = CFG_BACKOFF_MAX_NS,
	.max_pause_ns = CFG_MAX_PAUSE_NS,
};

/* check_feedback relies on it: a key that sets nothing is never wrong. */
static_assert(CFG_BACKOFF_MIN_NS > 0 &&
    CFG_BACKOFF_MIN_NS <= CFG_BACKOFF_MAX_NS &&
    CFG_BACKOFF_MAX_NS <= CFG_MAX_PAUSE_NS &&
    CFG_MAX_PAUSE_NS <= CFG_MAX_PAUSE_LIMIT_NS, "feedback defaults");

/* A key while the file is read; ints, as the file is at most 1 MiB. */
struct pkey {
	char		name[CFG_NAME_MAX + 1];
	int		line;		/* of its [section] header */
	int		dup_of;		/* first key of that name, or -1 */
	int		parent;		/* index; PARENT_TOP, PARENT_MISSING */
	int		conc_line;	/* of its `concurrency =', or 0 */
	int		nlimits;
	int		chain;		/* limits with ancestors'; -1 unknown */
	int		chain_done;
	struct feedback	own;		/* what its section sets */
	struct feedback	fb;		/* with ancestors', once fb_done */
	int		fb_done;
	int		pos;		/* in cfg->keys, -1 until placed */
	unsigned	fill;		/* in cfg->limits, for its next limit */
	int		scope_line;	/* of its `scope =', or 0 */
	uint8_t		global;		/* `scope = global' */
};

struct plimit {
	struct limit_spec l;
	int		key;		/* index into parser.keys */
};

struct parser {
	struct config	*cfg;
	const char	*name;		/* file name in messages */
	config_report_fn *report;
	void		*arg;
	int		nerrors;
	int		oom;		/* reported once; stops reading */
	const char	*buf;		/* all the text, maybe not NUL-ended */
	size_t		len;
	size_t		pos;		/* start of the next line in buf */
	int		lineno;		/* of the line inih is handling */
	int		want_pair;	/* inih got a line that must be one */
	int		got_pair;	/* and the handler was called for it */
	int		indented;	/* that line was indented */
	const char	*text;		/* that line, for the message */
	size_t		text_len;
	int		short_line;	/* inih got a line without its '\n' */
	int		short_num;	/* in a buffer of this size */
	int		cur;		/* index into keys, or SEC_* */
	int		broker_line;
	int		set_line[BS_COUNT];
	struct pkey	*keys;
	int		nkeys;
	int		keys_cap;
	struct plimit	*lims;
	int		nlims;
	int		lims_cap;
};

struct qbuf {
	char		s[4 * QUOTE_MAX + 4];
};

static void	report_at(struct parser *, int, const char *, ...)
		    __attribute__((format(printf, 3, 4)));


/*
 * Copy len bytes of user text into q, printable: the messages go to logs
 * and terminals, and a config may hold any byte.  Long text is cut.
 */
static const char *
quote(struct qbuf *q, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, o = 0;
	unsigned char c;

	for (i = 0; i < len && i < QUOTE_MAX; i++) {
		c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f)
			q->s[o++] = (char)c;
		else {
			q->s[o++] = '\\';
			q->s[o++] = 'x';
			q->s[o++] = hex[c >> 4];
			q->s[o++] = hex[c & 15];
		}
	}
	if (i < len) {
		q->s[o++] = '.';
		q->s[o++] = '.';
		q->s[o++] = '.';
	}
	q->s[o] = '\0';
	return q->s;
}

static const char *
quotes(struct qbuf *q, const char *s)
{
	return quote(q, s, strlen(s));
}

/* Count an error and hand it to the caller as "FILE:LINE: message". */
static void
report_at(struct parser *p, int line, const char *fmt, ...)
{
	char msg[PATH_MAX + 512];
	va_list ap;
	size_t off;
	int n;

	p->nerrors++;
	if (p->report == NULL)
		return;
	if (line > 0)
		n = snprintf(msg, sizeof(msg), "%s:%d: ", p->name, line);
	else
		n = snprintf(msg, sizeof(msg), "%s: ", p->name);
	off = n < 0 ? 0 : (size_t)n >= sizeof(msg) ? sizeof(msg) - 1 :
	    (size_t)n;
	va_start(ap, fmt);
	vsnprintf(msg + off, sizeof(msg) - off, fmt, ap);
	va_end(ap);
	p->report(p->arg, msg);
}

static void
report_oom(struct parser *p)
{
	if (!p->oom)
		report_at(p, p->lineno, "out of memory");
	p->oom = 1;
}

/* The glibc strerror_r under _GNU_SOURCE; strerror is not thread-safe. */
static const char *
errstr(int e, char *buf, size_t len)
{
#ifdef _GNU_SOURCE
	return strerror_r(e, buf, len);
#else
	if (strerror_r(e, buf, len) != 0)
		snprintf(buf, len, "error %d", e);
	return buf;
#endif
}

/*
 * Return arr (of *cap elements of size) grown if need be to hold one more
 * than n, or NULL with arr untouched.
 */
static void *
grow(void *arr, int *cap, int n, size_t size)
{
	void *na;
	int ncap;

	if (n < *cap)
		return arr;
	if (*cap > INT_MAX / 2)
		return NULL;
	ncap = *cap ? *cap * 2 : 16;
	if ((na = reallocarray(arr, (size_t)ncap, size)) == NULL)
		return NULL;
	*cap = ncap;
	return na;
}


/*
 * Check a key name.  Returns 0, or reports what is wrong and returns -1.
 */
static int
check_key_name(struct parser *p, const char *s, size_t len)
{
	struct qbuf q, qc;
	size_t i, seg = 0;
	int depth = 1;
	char c;

	if (len == 0) {
		report_at(p, p->lineno, "empty key name");
		return -1;
	}
	if (len > CFG_NAME_MAX) {
		report_at(p, p->lineno, "key name too long: `%s' is %zu bytes, "
		    "at most %d", quote(&q, s, len), len, CFG_NAME_MAX);
		return -1;
	}
	for (i = 0; i < len; i++) {
		c = s[i];
		if (c == '/') {
			if (i == seg)
				break;
			depth++;
			seg = i + 1;
		} else if (c >= 'A' && c <= 'Z') {
			report_at(p, p->lineno, "uppercase in key name `%s': "
			    "key names are lowercase", quote(&q, s, len));
			return -1;
		} else if (!(c >= 'a' && c <= 'z') && !tok_digit(c) &&
		    c != '.' && c != '_' && c != '-') {
			report_at(p, p->lineno, "`%s' in key name `%s' (use "
			    "a-z, 0-9, `.', `_', `-', and `/' between levels)",
			    quote(&qc, &s[i], 1), quote(&q, s, len));
			return -1;
		}
	}
	if (i < len || seg == len) {
		report_at(p, p->lineno, "empty level in key name `%s' (a `/' "
		    "at an end or `//')", quote(&q, s, len));
		return -1;
	}
	if (depth > CFG_DEPTH_MAX) {
		report_at(p, p->lineno, "key name `%s' has %d levels, at most "
		    "%d", quote(&q, s, len), depth, CFG_DEPTH_MAX);
		return -1;
	}
	if (len > 7 && memcmp(s, "broker/", 7) == 0) {
		report_at(p, p->lineno, "key name `%s': `broker' is reserved "
		    "for the [broker] section", quote(&q, s, len));
		return -1;
	}
	return 0;
}

/*
 * A [section] line, [t, te) without its comment.  Returns 1 if inih
 * should see it (it is valid), 0 if not; p->cur says where the settings
 * that follow go.
 */
static int
section_line(struct parser *p, const char *t, const char *te)
{
	const char *close, *name;
	struct qbuf q;
	struct pkey *k;
	size_t len;

	p->cur = SEC_BAD;
	if ((close = memchr(t, ']', (size_t)(te - t))) == NULL) {
		report_at(p, p->lineno, "missing `]' in section header");
		return 0;
	}
	if (close + 1 != te) {
		report_at(p, p->lineno, "`%s' after the section header",
		    quote(&q, close + 1, (size_t)(te - close - 1)));
		return 0;
	}
	name = t + 1;
	len = (size_t)(close - name);
	if (tok_is(name, len, "broker")) {
		if (p->broker_line != 0)
			report_at(p, p->lineno, "duplicate section [broker] "
			    "(first on line %d)", p->broker_line);
		else
			p->broker_line = p->lineno;
		p->cur = SEC_BROKER;
		return 1;
	}
	if (check_key_name(p, name, len) < 0)
		return 0;
	if ((k = grow(p->keys, &p->keys_cap, p->nkeys, sizeof(*k))) == NULL) {
		report_oom(p);
		return 0;
	}
	p->keys = k;
	k = &p->keys[p->nkeys];
	memset(k, 0, sizeof(*k));
	memcpy(k->name, name, len);
	k->name[len] = '\0';
	k->line = p->lineno;
	k->dup_of = -1;
	k->parent = PARENT_TOP;
	k->pos = -1;
	p->cur = p->nkeys++;
	return 1;
}

/*
 * Called before each line and after the last: a line that inih should
 * have handed to on_pair and did not had no `=' (or `:').
 */
static void
finish_line(struct parser *p)
{
	struct qbuf q;

	if (p->want_pair && !p->got_pair) {
		if (p->indented)
			report_at(p, p->lineno, "indented line `%s' is not "
			    "`name = value': continuation lines are not "
			    "supported", quote(&q, p->text, p->text_len));
		else
			report_at(p, p->lineno, "`%s' is not `name = value'",
			    quote(&q, p->text, p->text_len));
	}
	p->want_pair = 0;
}

/* The line inih gets for one it must ignore. */
static char *
blank(char *str)
{
	str[0] = '\n';
	str[1] = '\0';
	return str;
}

/*
 * Copy the n bytes at t into inih's buffer str of num bytes, with a '\n'
 * if it fits.  read_line has checked that n < num.
 */
static char *
hand(struct parser *p, char *str, int num, const char *t, size_t n)
{
	memcpy(str, t, n);
	if (n + 1 < (size_t)num)
		str[n++] = '\n';
	else {
		p->short_line = 1;
		p->short_num = num;
	}
	str[n] = '\0';
	return str;
}

/*
 * Our ini_reader: hand inih the next line of p->buf, as fgets would, or
 * NULL at the end.  See the comment at the top of the file.
 */
static char *
read_line(char *str, int num, void *stream)
{
	struct parser *p = stream;
	const char *line, *end, *nl, *t, *te, *c;
	size_t room;
	int indented;

	finish_line(p);
	if (p->short_line) {
		/*
		 * The last line filled inih's buffer without its '\n'.  inih
		 * r55 goes on to the next line, later releases read on into
		 * a small scratch buffer to discard the rest: there is none.
		 */
		p->short_line = 0;
		if (num < p->short_num)
			return NULL;
	}
	if (p->oom || p->pos >= p->len)
		return NULL;
	if (num < 2) {
		report_at(p, p->lineno + 1, "inih's line buffer is too small");
		p->oom = 1;		/* stop: we cannot hand it a line */
		return NULL;
	}
	room = (size_t)num - 1;
	line = p->buf + p->pos;
	nl = memchr(line, '\n', p->len - p->pos);
	end = nl != NULL ? nl : p->buf + p->len;
	p->pos = (size_t)(end - p->buf) + (nl != NULL);
	p->lineno++;

	/* Where the text starts, for the checks below that refuse it. */
	for (t = line; t < end && tok_space((unsigned char)*t); t++)
		;
	if ((size_t)(end - line) > LINE_BYTES_MAX ||
	    (size_t)(end - line) > room) {
		report_at(p, p->lineno, "line too long: %zu bytes, at most %zu",
		    (size_t)(end - line), room < LINE_BYTES_MAX ? room :
		    (size_t)LINE_BYTES_MAX);
		goto refuse;
	}
	if (memchr(line, '\0', (size_t)(end - line)) != NULL) {
		report_at(p, p->lineno, "NUL byte in line");
		goto refuse;
	}
	/* A UTF-8 byte order mark, as inih would skip it. */
	if (p->lineno == 1 && end - line >= 3 && memcmp(line, "\xef\xbb\xbf",
	    3) == 0)
		line += 3;
	for (t = line; t < end && tok_space((unsigned char)*t); t++)
		;
	indented = t > line;
	if (t == end || *t == ';' || *t == '#')
		return blank(str);
	/* An inline comment: `;' after a space, as inih has it. */
	for (c = t + 1; c < end; c++)
		if (*c == ';' && tok_space((unsigned char)c[-1]))
			break;
	for (te = c; te > t && tok_space((unsigned char)te[-1]); te--)
		;

	if (*t == '[') {
		if (!section_line(p, t, te))
			return blank(str);
		return hand(p, str, num, t, (size_t)(te - t));
	}

	p->want_pair = 1;
	p->got_pair = 0;
	p->indented = indented;
	p->text = t;
	p->text_len = (size_t)(te - t);
	return hand(p, str, num, t, (size_t)(te - t));

refuse:
	/* Settings after a header we could not read belong to no key. */
	if (t < end && *t == '[')
		p->cur = SEC_BAD;
	return blank(str);
}

/* Report a limit that limit_parse or limit_parse_conc refused. */
static void
report_why(struct parser *p, const char *name, const char *value,
    const struct limit_why *w)
{
	struct qbuf q;

	if (w->at != NULL && w->what != NULL)
		report_at(p, p->lineno, "%s: %s `%s': %s", name, w->what,
		    quote(&q, w->at, w->len), w->msg);
	else if (w->at != NULL)
		report_at(p, p->lineno, "%s: `%s': %s", name,
		    quote(&q, w->at, w->len), w->msg);
	else
		report_at(p, p->lineno, "%s `%s': %s", name,
		    quotes(&q, value), w->msg);
}

/*
 * One side, [s, e), of `backoff = MIN..MAX' into *ns.  Returns 0, or
 * reports what is wrong and returns -1.
 */
static int
backoff_side(struct parser *p, const char *v, const char *s, const char *e,
    const char *which, uint64_t *ns)
{
	const char *why;
	struct qbuf q;

	if (s == e) {
		report_at(p, p->lineno, "backoff `%s': missing the %s",
		    quotes(&q, v), which);
		return -1;
	}
	if (duration_read(s, (size_t)(e - s), ns, &why) < 0) {
		report_at(p, p->lineno, "backoff: `%s': %s",
		    quote(&q, s, (size_t)(e - s)), why);
		return -1;
	}
	return 0;
}

/* `backoff = MIN..MAX' into *f.  0, or -1 once reported. */
static int
set_backoff(struct parser *p, const char *v, struct feedback *f)
{
	const char *dots, *le, *rs;
	uint64_t min, max;
	struct qbuf q;

	if ((dots = strstr(v, "..")) == NULL) {
		report_at(p, p->lineno, "backoff `%s' is not MIN..MAX (e.g. "
		    "1s..60s)", quotes(&q, v));
		return -1;
	}
	/* inih trimmed the ends; "1s .. 60s" leaves spaces at the dots. */
	for (le = dots; le > v && tok_space((unsigned char)le[-1]); le--)
		;
	for (rs = dots + 2; tok_space((unsigned char)*rs); rs++)
		;
	if (backoff_side(p, v, v, le, "minimum", &min) < 0 ||
	    backoff_side(p, v, rs, rs + strlen(rs), "maximum", &max) < 0)
		return -1;
	/* A zero minimum would retry a failing server at once, forever. */
	if (min == 0) {
		report_at(p, p->lineno, "backoff: `%s': minimum must be longer "
		    "than zero", quote(&q, v, (size_t)(le - v)));
		return -1;
	}
	if (min > max) {
		report_at(p, p->lineno, "backoff `%s': minimum longer than "
		    "maximum", quotes(&q, v));
		return -1;
	}
	f->backoff_min_ns = min;
	f->backoff_max_ns = max;
	return 0;
}

/* `max_pause = DURATION' into *f.  0, or -1 once reported. */
static int
set_max_pause(struct parser *p, const char *v, struct feedback *f)
{
	const char *why;
	char most[32];
	struct qbuf q;
	uint64_t ns;
	int ret;

	ret = duration_read(v, strlen(v), &ns, &why);
	if (ret == -EINVAL) {
		report_at(p, p->lineno, "max_pause `%s': %s", quotes(&q, v),
		    why);
		return -1;
	}
	if (ret == 0 && ns == 0) {
		report_at(p, p->lineno, "max_pause `%s': must be longer than "
		    "zero", quotes(&q, v));
		return -1;
	}
	if (ret == -ERANGE || ns > CFG_MAX_PAUSE_LIMIT_NS) {
		duration_format(most, sizeof(most), CFG_MAX_PAUSE_LIMIT_NS);
		report_at(p, p->lineno, "max_pause `%s': at most %s",
		    quotes(&q, v), most);
		return -1;
	}
	f->max_pause_ns = ns;
	return 0;
}

/* `learn = yes|no' into *f.  0, or -1 once reported. */
static int
set_learn(struct parser *p, const char *v, struct feedback *f)
{
	struct qbuf q;

	if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 ||
	    strcmp(v, "on") == 0)
		f->learn = 1;
	else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0 ||
	    strcmp(v, "off") == 0)
		f->learn = 0;
	else {
		report_at(p, p->lineno, "learn `%s': want yes or no (or "
		    "true/false, on/off)", quotes(&q, v));
		return -1;
	}
	return 0;
}

/*
 * `rejected = charged|free' into *f: whether the provider counts a
 * request it refused with a 429 toward its limit (OpenAI does).
 */
static int
set_rejected(struct parser *p, const char *v, struct feedback *f)
{
	struct qbuf q;

	if (strcmp(v, "charged") == 0)
		f->refund_rejected = 0;
	else if (strcmp(v, "free") == 0)
		f->refund_rejected = 1;
	else {
		report_at(p, p->lineno, "rejected `%s': want charged or free",
		    quotes(&q, v));
		return -1;
	}
	return 0;
}

/*
 * A feedback setting of key k (NULL under a refused header: its value is
 * still checked).  Returns 1 if name is one, else 0.
 */
static int
feedback_setting(struct parser *p, struct pkey *k, const char *name,
    const char *value)
{
	struct feedback f;
	int *linep, ret;

	f = k != NULL ? k->own : feedback_defaults;
	if (strcmp(name, "backoff") == 0) {
		ret = set_backoff(p, value, &f);
		linep = &f.backoff_line;
	} else if (strcmp(name, "max_pause") == 0) {
		ret = set_max_pause(p, value, &f);
		linep = &f.pause_line;
	} else if (strcmp(name, "learn") == 0) {
		ret = set_learn(p, value, &f);
		linep = &f.learn_line;
	} else if (strcmp(name, "rejected") == 0) {
		ret = set_rejected(p, value, &f);
		linep = &f.rejected_line;
	} else
		return 0;
	/* As with `concurrency': a value it could not read was not set. */
	if (ret < 0 || k == NULL)
		return 1;
	if (*linep != 0) {
		report_at(p, p->lineno, "second `%s' for [%s] (first on line "
		    "%d)", name, k->name, *linep);
		return 1;
	}
	*linep = p->lineno;
	k->own = f;
	return 1;
}

/*
 * `scope = global|host' of key k (NULL under a refused header: the value
 * is still checked).  Its own, never inherited (config.h).
 */
static void
set_scope(struct parser *p, struct pkey *k, const char *v)
{
	struct qbuf q;
	uint8_t global;

	if (strcmp(v, "global") == 0)
		global = 1;
	else if (strcmp(v, "host") == 0)
		global = 0;
	else {
		report_at(p, p->lineno, "scope `%s': want global or host",
		    quotes(&q, v));
		return;
	}
	if (k == NULL)
		return;
	if (k->scope_line != 0) {
		report_at(p, p->lineno, "second `scope' for [%s] (first on "
		    "line %d)", k->name, k->scope_line);
		return;
	}
	k->scope_line = p->lineno;
	k->global = global;
}

/* A `limit =', `concurrency =' or feedback line, or anything else. */
static void
key_setting(struct parser *p, const char *name, const char *value)
{
	struct pkey *k = p->cur >= 0 ? &p->keys[p->cur] : NULL;
	struct limit_spec l;
	struct plimit *pl;
	struct qbuf q, qk;
	struct limit_why w;

	if (feedback_setting(p, k, name, value))
		return;
	if (strcmp(name, "scope") == 0) {
		set_scope(p, k, value);
		return;
	}
	if (strcmp(name, "limit") == 0) {
		if (limit_parse(value, &l, &w) < 0) {
			report_why(p, name, value, &w);
			return;
		}
		if (l.kind == LIM_CONC) {
			report_at(p, p->lineno, "write a concurrency limit as "
			    "`concurrency = N'");
			return;
		}
	} else if (strcmp(name, "concurrency") == 0) {
		if (limit_parse_conc(value, &l, &w) < 0) {
			report_why(p, name, value, &w);
			return;
		}
		if (k != NULL && k->conc_line != 0) {
			report_at(p, p->lineno, "second `concurrency' for [%s] "
			    "(first on line %d)", k->name, k->conc_line);
			return;
		}
		if (k != NULL)
			k->conc_line = p->lineno;
	} else {
		/*
		 * Under a refused header, which may have been [broker], say
		 * nothing: the header's error already fails the file.
		 */
		if (k != NULL)
			report_at(p, p->lineno, "unknown setting `%s' in [%s]",
			    quotes(&q, name), quotes(&qk, k->name));
		return;
	}
	if (k == NULL)
		return;			/* its header was refused */
	if ((pl = grow(p->lims, &p->lims_cap, p->nlims, sizeof(*pl))) == NULL) {
		report_oom(p);
		return;
	}
	p->lims = pl;
	l.line = p->lineno;
	p->lims[p->nlims].l = l;
	p->lims[p->nlims].key = p->cur;
	p->nlims++;
	k->nlimits++;
}

/* Look a group up by name; 0, -ENOENT, or -errno from getgrnam_r. */
static int
group_by_name(const char *name, gid_t *gid)
{
	struct group gr, *res = NULL;
	size_t size;
	long hint;
	char *buf;
	int e;

	hint = sysconf(_SC_GETGR_R_SIZE_MAX);
	size = hint > 0 ? (size_t)hint : 1024;
	for (;;) {
		if ((buf = malloc(size)) == NULL)
			return -ENOMEM;
		e = getgrnam_r(name, &gr, buf, size, &res);
		if (e != ERANGE)
			break;
		/* A group with that many members: try a bigger buffer. */
		free(buf);
		if (size > (1u << 24))
			return -ERANGE;
		size *= 2;
	}
	if (e == 0 && res != NULL)
		*gid = gr.gr_gid;
	free(buf);
	/* Not found is 0 and no entry, or one of these, depending on NSS. */
	if ((e == 0 && res == NULL) || e == ENOENT || e == ESRCH)
		return -ENOENT;
	return -e;
}

/*
 * A character of a segment name, a host id or a Redis host name: letters,
 * digits, `.', `_' and `-', safe in shm_open, pidfile and Redis key names.
 */
static int
name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    tok_digit(c) || c == '.' || c == '_' || c == '-';
}

static void
set_segment(struct parser *p, const char *v)
{
	struct config *cfg = p->cfg;
	struct qbuf q, qc;
	size_t i, len = strlen(v);

	if (len == 0) {
		report_at(p, p->lineno, "empty segment name");
		return;
	}
	if (len > CFG_SEGMENT_MAX) {
		report_at(p, p->lineno, "segment name is %zu bytes, at most %d",
		    len, CFG_SEGMENT_MAX);
		return;
	}
	/* It becomes "/NAME" for shm_open and part of the pidfile's name. */
	for (i = 0; i < len; i++) {
		if (name_char(v[i]))
			continue;
		report_at(p, p->lineno, "`%s' in segment name `%s' (use "
		    "A-Z, a-z, 0-9, `.', `_' and `-')", quote(&qc, &v[i], 1),
		    quotes(&q, v));
		return;
	}
	if (strcmp(v, ".") == 0 || strcmp(v, "..") == 0) {
		report_at(p, p->lineno, "segment name cannot be `%s'", v);
		return;
	}
	memcpy(cfg->segment, v, len + 1);
}

static void
set_mode(struct parser *p, const char *v)
{
	struct qbuf q;
	unsigned mode = 0;
	const char *s;

	for (s = v; *s >= '0' && *s <= '7'; s++) {
		mode = mode * 8 + (unsigned)(*s - '0');
		if (mode > 0777)
			break;
	}
	if (s == v || (*s != '\0' && mode <= 0777)) {
		report_at(p, p->lineno, "mode `%s' is not an octal number",
		    quotes(&q, v));
		return;
	}
	if (mode > 0777) {
		report_at(p, p->lineno, "mode `%s' is beyond 0777",
		    quotes(&q, v));
		return;
	}
	/* The broker itself must read and write the state object. */
	if ((mode & 0600) != 0600) {
		report_at(p, p->lineno, "mode %04o does not let the owner read "
		    "and write", mode);
		return;
	}
	p->cfg->mode = (mode_t)mode;
}

static void
set_group(struct parser *p, const char *v)
{
	char eb[128];
	struct qbuf q;
	uint64_t n;
	gid_t gid = 0;
	int ret;

	if (*v == '\0') {
		report_at(p, p->lineno, "empty group");
		return;
	}
	/* All digits is a number, as chown(1) has it; else a name. */
	ret = dec_parse(v, v + strlen(v), &n);
	if (ret != -EINVAL) {
		if (ret == -ERANGE || n >= (gid_t)-1) {
			report_at(p, p->lineno, "group number `%s' is too "
			    "large", quotes(&q, v));
			return;
		}
		gid = (gid_t)n;
	} else if ((ret = group_by_name(v, &gid)) < 0) {
		if (ret == -ENOMEM)
			report_oom(p);
		else if (ret == -ENOENT)
			report_at(p, p->lineno, "unknown group `%s'",
			    quotes(&q, v));
		else
			report_at(p, p->lineno, "group `%s': %s",
			    quotes(&q, v), errstr(-ret, eb, sizeof(eb)));
		return;
	}
	p->cfg->has_group = 1;
	p->cfg->group = gid;
}

static void
set_pidfile(struct parser *p, const char *v)
{
	struct qbuf q;
	size_t len = strlen(v);

	/* The broker may chdir; and a pidfile in "." is never found again. */
	if (v[0] != '/' || v[len - 1] == '/') {
		report_at(p, p->lineno, "pidfile `%s' is not an absolute path "
		    "to a file", quotes(&q, v));
		return;
	}
	if (len >= sizeof(p->cfg->pidfile)) {
		report_at(p, p->lineno, "pidfile path too long");
		return;
	}
	memcpy(p->cfg->pidfile, v, len + 1);
}

static void
set_max_clients(struct parser *p, const char *v)
{
	struct qbuf q;
	uint64_t n;
	int ret;

	if ((ret = dec_parse(v, v + strlen(v), &n)) < 0) {
		report_at(p, p->lineno, "max_clients `%s' is not a decimal "
		    "number%s", quotes(&q, v), ret == -ERANGE ?
		    " (too large)" : "");
		return;
	}
	/* A segment's slots are numbered with the ids: SEG_IDS_MAX. */
	if (n < 1 || n > 65520) {
		report_at(p, p->lineno, "max_clients %" PRIu64 " is not within "
		    "1..65520", n);
		return;
	}
	p->cfg->max_clients = (uint32_t)n;
}

/* Copy [s, e) into d of size n; 0, or -1 if it does not fit. */
static int
url_part(char *d, size_t n, const char *s, const char *e)
{
	if ((size_t)(e - s) >= n)
		return -1;
	memcpy(d, s, (size_t)(e - s));
	d[e - s] = '\0';
	return 0;
}

/*
 * Percent-decode d in place (a password may hold `@' or `:' written as
 * %40, %3a).  0, or -1 on a bad escape or a NUL.
 */
static int
url_unescape(char *d)
{
	static const char hex[] = "0123456789abcdef";
	const char *h1, *h2;
	char *o = d;

	for (const char *s = d; *s; s++) {
		if (*s != '%') {
			*o++ = *s;
			continue;
		}
		if (s[1] == '\0' || s[2] == '\0' ||
		    (h1 = strchr(hex, s[1] | 0x20)) == NULL ||
		    (h2 = strchr(hex, s[2] | 0x20)) == NULL)
			return -1;
		if ((*o++ = (char)((h1 - hex) << 4 | (h2 - hex))) == '\0')
			return -1;
		s += 2;
	}
	*o = '\0';
	return 0;
}

int
config_parse_redis(const char *s, struct redis_url *u, const char **why)
{
	const char *at, *hs, *he, *ps, *slash, *colon, *e = s + strlen(s);
	uint64_t n;

	memset(u, 0, sizeof(*u));
	u->port = 6379;
	if (url_part(u->url, sizeof(u->url), s, e) < 0) {
		*why = "URL too long";
		return -EINVAL;
	}
	if (strncmp(s, "unix:", 5) == 0) {
		s += 5;
		/* unix:///path, as some clients write it, is unix:/path. */
		if (strncmp(s, "//", 2) == 0)
			s += 2;
		if (*s != '/' || s[strlen(s) - 1] == '/') {
			*why = "unix: wants an absolute path to a socket";
			return -EINVAL;
		}
		if (url_part(u->path, sizeof(u->path), s, e) < 0) {
			*why = "socket path too long (at most 107 bytes)";
			return -EINVAL;
		}
		return 0;
	}
	if (strncmp(s, "redis://", 8) != 0) {
		*why = "want unix:/path/to/socket or "
		    "redis://[user:password@]host[:port][/db]";
		return -EINVAL;
	}
	s += 8;
	slash = strchr(s, '/');
	he = slash != NULL ? slash : e;
	/* The last `@' before the path: a password may hold one escaped. */
	at = NULL;
	for (const char *c = s; c < he; c++)
		if (*c == '@')
			at = c;
	if (at != NULL) {
		colon = memchr(s, ':', (size_t)(at - s));
		if (colon == NULL) {
			*why = "user without `:password' before `@' (write "
			    "user:password@ or :password@)";
			return -EINVAL;
		}
		if (url_part(u->user, sizeof(u->user), s, colon) < 0 ||
		    url_part(u->password, sizeof(u->password), colon + 1,
		    at) < 0) {
			*why = "user or password too long (127 bytes each)";
			return -EINVAL;
		}
		if (url_unescape(u->user) < 0 ||
		    url_unescape(u->password) < 0) {
			*why = "bad %-escape in user or password";
			return -EINVAL;
		}
		u->has_password = 1;
		s = at + 1;
	}
	/* host, [v6 address] or name, then :port */
	if (*s == '[') {
		hs = s + 1;
		if ((ps = memchr(hs, ']', (size_t)(he - hs))) == NULL) {
			*why = "missing `]' after an IPv6 address";
			return -EINVAL;
		}
		if (url_part(u->host, sizeof(u->host), hs, ps) < 0) {
			*why = "host too long";
			return -EINVAL;
		}
		ps++;
		if (ps != he && *ps != ':') {
			*why = "junk after `]' (want :port or /db)";
			return -EINVAL;
		}
	} else {
		hs = s;
		ps = memchr(hs, ':', (size_t)(he - hs));
		if (ps == NULL)
			ps = he;
		if (url_part(u->host, sizeof(u->host), hs, ps) < 0) {
			*why = "host too long";
			return -EINVAL;
		}
		for (const char *c = u->host; *c; c++)
			if (!name_char(*c)) {
				*why = "bad character in host (IPv6 addresses "
				    "go in [brackets])";
				return -EINVAL;
			}
	}
	if (u->host[0] == '\0') {
		*why = "empty host";
		return -EINVAL;
	}
	if (ps != he) {
		if (dec_parse(ps + 1, he, &n) < 0 || n < 1 || n > 65535) {
			*why = "port not within 1..65535";
			return -EINVAL;
		}
		u->port = (int)n;
	}
	if (slash != NULL && slash + 1 != e) {
		if (dec_parse(slash + 1, e, &n) < 0 || n > 1000000) {
			*why = "database is not a number within 0..1000000";
			return -EINVAL;
		}
		u->db = (int)n;
	}
	return 0;
}

static void
set_redis(struct parser *p, const char *v)
{
	const char *why;
	struct qbuf q;

	const char *at = strrchr(v, '@');

	/* The URL may carry a password: quote only what follows an `@'. */
	if (config_parse_redis(v, &p->cfg->redis, &why) < 0) {
		report_at(p, p->lineno, "redis `%s%s': %s", at != NULL ?
		    "...@" : "", quotes(&q, at != NULL ? at + 1 : v), why);
		memset(&p->cfg->redis, 0, sizeof(p->cfg->redis));
		return;
	}
	p->cfg->redis_line = p->lineno;
}

/*
 * host_id and federation: they become part of Redis keys and channel
 * names, inside a {hash tag}, so braces and blanks would break them.
 */
static void
set_fed_name(struct parser *p, const char *what, const char *v, char *d)
{
	struct qbuf q, qc;
	size_t i, len = strlen(v);

	if (len == 0 || len > CFG_HOST_ID_MAX) {
		report_at(p, p->lineno, "%s `%s': want 1 to %d bytes", what,
		    quotes(&q, v), CFG_HOST_ID_MAX);
		return;
	}
	for (i = 0; i < len; i++) {
		if (name_char(v[i]))
			continue;
		report_at(p, p->lineno, "`%s' in %s `%s' (use A-Z, a-z, 0-9, "
		    "`.', `_' and `-')", quote(&qc, &v[i], 1), what,
		    quotes(&q, v));
		return;
	}
	memcpy(d, v, len + 1);
}

static void
set_outage(struct parser *p, const char *v)
{
	struct qbuf q;

	if (strcmp(v, "safe") == 0)
		p->cfg->redis_outage = FED_OUTAGE_SAFE;
	else if (strcmp(v, "closed") == 0)
		p->cfg->redis_outage = FED_OUTAGE_CLOSED;
	else if (strcmp(v, "open") == 0)
		p->cfg->redis_outage = FED_OUTAGE_OPEN;
	else
		report_at(p, p->lineno, "redis_outage `%s': want safe, closed "
		    "or open", quotes(&q, v));
}

static void
broker_setting(struct parser *p, const char *name, const char *value)
{
	struct qbuf q;
	int i;

	for (i = 0; i < BS_COUNT; i++)
		if (strcmp(name, broker_settings[i]) == 0)
			break;
	if (i == BS_COUNT) {
		report_at(p, p->lineno, "unknown setting `%s' in [broker]",
		    quotes(&q, name));
		return;
	}
	if (p->set_line[i] != 0) {
		report_at(p, p->lineno, "`%s' already set on line %d", name,
		    p->set_line[i]);
		return;
	}
	p->set_line[i] = p->lineno;
	switch (i) {
	case BS_SEGMENT:
		set_segment(p, value);
		break;
	case BS_MODE:
		set_mode(p, value);
		break;
	case BS_GROUP:
		set_group(p, value);
		break;
	case BS_PIDFILE:
		set_pidfile(p, value);
		break;
	case BS_MAX_CLIENTS:
		set_max_clients(p, value);
		break;
	case BS_REDIS:
		set_redis(p, value);
		break;
	case BS_HOST_ID:
		set_fed_name(p, "host_id", value, p->cfg->host_id);
		break;
	case BS_FEDERATION:
		set_fed_name(p, "federation", value, p->cfg->federation);
		break;
	case BS_REDIS_OUTAGE:
		set_outage(p, value);
		break;
	}
}

/* inih's handler: one `name = value' line, in section p->cur. */
#if INI_HANDLER_LINENO
static int
on_pair(void *user, const char *section, const char *name, const char *value,
    int lineno)
#else
static int
on_pair(void *user, const char *section, const char *name, const char *value)
#endif
{
	struct parser *p = user;
	struct qbuf q;

#if INI_HANDLER_LINENO
	(void)lineno;			/* ours counts the same lines */
#endif
	(void)section;			/* ours also knows refused headers */
	p->got_pair = 1;
	/* Always 1: inih would only remember the first error's line. */
	if (p->oom)
		return 1;
	/* Debian's inih has ini_allow_no_value, for any caller to set. */
	if (value == NULL)
		report_at(p, p->lineno, "`%s' is not `name = value'",
		    quotes(&q, name));
	else if (*name == '\0')
		report_at(p, p->lineno, "missing setting name before `='");
	else if (p->cur == SEC_NONE)
		report_at(p, p->lineno, "setting `%s' before any [section]",
		    quotes(&q, name));
	else if (p->cur == SEC_BROKER)
		broker_setting(p, name, value);
	else
		key_setting(p, name, value);
	return 1;
}

static int
cmp_name(const void *a, const void *b)
{
	const struct pkey *const *ka = a, *const *kb = b;

	return strcmp((*ka)->name, (*kb)->name);
}

static int
cmp_name_line(const void *a, const void *b)
{
	const struct pkey *const *ka = a, *const *kb = b;
	int c;

	if ((c = cmp_name(a, b)) != 0)
		return c;
	return ((*ka)->line > (*kb)->line) - ((*ka)->line < (*kb)->line);
}

/* Limits on key k and its ancestors, or -1 if an ancestor is missing. */
static int
chain_of(struct parser *p, int k)
{
	struct pkey *key = &p->keys[k];
	int c = 0;

	if (key->chain_done)
		return key->chain;
	/* Recursion is as deep as the name: CFG_DEPTH_MAX at most. */
	if (key->parent == PARENT_MISSING)
		c = -1;
	else if (key->parent >= 0)
		c = chain_of(p, key->parent);
	key->chain = c < 0 ? -1 : c + key->nlimits;
	key->chain_done = 1;
	return key->chain;
}

/*
 * Key k's feedback settings: its own, else its nearest ancestor's, else
 * the defaults, each with the line it came from.
 */
static const struct feedback *
feedback_of(struct parser *p, int k)
{
	struct pkey *key = &p->keys[k];
	const struct feedback *up;
	struct feedback f;

	if (key->fb_done)
		return &key->fb;
	/* Recursion is as deep as the name: CFG_DEPTH_MAX at most. */
	up = key->parent >= 0 ? feedback_of(p, key->parent) :
	    &feedback_defaults;
	f = *up;
	if (key->own.backoff_line != 0) {
		f.backoff_min_ns = key->own.backoff_min_ns;
		f.backoff_max_ns = key->own.backoff_max_ns;
		f.backoff_line = key->own.backoff_line;
	}
	if (key->own.pause_line != 0) {
		f.max_pause_ns = key->own.max_pause_ns;
		f.pause_line = key->own.pause_line;
	}
	if (key->own.learn_line != 0) {
		f.learn = key->own.learn;
		f.learn_line = key->own.learn_line;
	}
	if (key->own.rejected_line != 0) {
		f.refund_rejected = key->own.refund_rejected;
		f.rejected_line = key->own.rejected_line;
	}
	key->fb = f;
	key->fb_done = 1;
	return &key->fb;
}

/* "line N", or "default" for a setting no key made. */
static const char *
from_line(char *buf, size_t len, int line)
{
	if (line == 0)
		return "default";
	snprintf(buf, len, "line %d", line);
	return buf;
}

/*
 * A backoff longer than max_pause could never run its course: the pause
 * is clamped first.  Report it on whichever of the two came last in the
 * file, and only for the key that brought them together: a key that sets
 * neither has its parent's pair, already reported there.  The defaults
 * agree, so some key on the chain set one of them.
 */
static void
check_feedback(struct parser *p, int k)
{
	const struct feedback *f = feedback_of(p, k);
	struct pkey *key = &p->keys[k];
	char bmax[32], pause[32], bl[24], pl[24];
	int line;

	if (f->backoff_max_ns <= f->max_pause_ns ||
	    (key->own.backoff_line == 0 && key->own.pause_line == 0))
		return;
	line = f->backoff_line > f->pause_line ? f->backoff_line :
	    f->pause_line;
	duration_format(bmax, sizeof(bmax), f->backoff_max_ns);
	duration_format(pause, sizeof(pause), f->max_pause_ns);
	report_at(p, line != 0 ? line : key->line, "backoff maximum %s "
	    "exceeds max_pause %s of [%s] (backoff: %s, max_pause: %s)",
	    bmax, pause, key->name, from_line(bl, sizeof(bl), f->backoff_line),
	    from_line(pl, sizeof(pl), f->pause_line));
}

/*
 * What needs the whole file: duplicate keys, parents, the limits along
 * each chain, feedback settings against each other.  Reports what is
 * wrong.
 */
static void
resolve_keys(struct parser *p)
{
	struct pkey **sorted, want, *wp = &want, **found, *k;
	char *slash;
	int i, c, pc;

	if (p->nkeys == 0)
		return;
	if ((sorted = calloc((size_t)p->nkeys, sizeof(*sorted))) == NULL) {
		report_oom(p);
		return;
	}
	for (i = 0; i < p->nkeys; i++)
		sorted[i] = &p->keys[i];
	/* Sorting, not a search per key: a config may have many keys. */
	qsort(sorted, (size_t)p->nkeys, sizeof(*sorted), cmp_name_line);
	for (i = 1; i < p->nkeys; i++)
		if (strcmp(sorted[i]->name, sorted[i - 1]->name) == 0)
			sorted[i]->dup_of = sorted[i - 1]->dup_of >= 0 ?
			    sorted[i - 1]->dup_of :
			    (int)(sorted[i - 1] - p->keys);

	for (i = 0; i < p->nkeys; i++) {
		k = &p->keys[i];
		if (k->dup_of >= 0) {
			report_at(p, k->line, "duplicate key [%s] (first on "
			    "line %d)", k->name, p->keys[k->dup_of].line);
			continue;
		}
		if ((slash = strrchr(k->name, '/')) == NULL)
			continue;
		memcpy(want.name, k->name, (size_t)(slash - k->name));
		want.name[slash - k->name] = '\0';
		found = bsearch(&wp, sorted, (size_t)p->nkeys,
		    sizeof(*sorted), cmp_name);
		if (found == NULL) {
			k->parent = PARENT_MISSING;
			report_at(p, k->line, "parent [%s] of [%s] is not "
			    "defined", want.name, k->name);
		} else
			k->parent = (*found)->dup_of >= 0 ? (*found)->dup_of :
			    (int)(*found - p->keys);
	}
	free(sorted);

	/*
	 * Report a chain where it first goes over, not again for each
	 * descendant of that key.
	 */
	for (i = 0; i < p->nkeys; i++) {
		k = &p->keys[i];
		if (k->dup_of >= 0 || (c = chain_of(p, i)) <= CFG_CHAIN_MAX)
			continue;
		pc = k->parent >= 0 ? chain_of(p, k->parent) : 0;
		if (pc <= CFG_CHAIN_MAX)
			report_at(p, k->line, "[%s] has %d limits with its "
			    "ancestors', at most %d", k->name, c,
			    CFG_CHAIN_MAX);
	}

	/*
	 * A duplicate is reported already; so is a missing ancestor, whose
	 * settings nobody knows (chain_of is -1 for both).
	 */
	for (i = 0; i < p->nkeys; i++)
		if (p->keys[i].dup_of < 0 && chain_of(p, i) >= 0)
			check_feedback(p, i);
}

/* Put key k in cfg order after its ancestors (recursion: CFG_DEPTH_MAX). */
static void
place(struct parser *p, int k, int *order, int *n)
{
	struct pkey *key = &p->keys[k];

	if (key->pos >= 0)
		return;
	if (key->parent >= 0)
		place(p, key->parent, order, n);
	key->pos = *n;
	order[(*n)++] = k;
}

/*
 * Fill cfg->keys (in file order, but each parent moved up before its
 * first child, each with its feedback settings resolved) and cfg->limits
 * (grouped by key in that order, each key's in file order).  Only for a
 * file without errors.  0 or -ENOMEM.
 */
static int
build(struct parser *p)
{
	struct config *cfg = p->cfg;
	struct key_spec *ks = NULL;
	struct limit_spec *ls = NULL;
	const struct feedback *f;
	struct pkey *k;
	unsigned first = 0;
	int *order, i, n = 0;

	if (p->nkeys == 0)
		return 0;
	order = calloc((size_t)p->nkeys, sizeof(*order));
	ks = calloc((size_t)p->nkeys, sizeof(*ks));
	if (p->nlims > 0)
		ls = calloc((size_t)p->nlims, sizeof(*ls));
	if (order == NULL || ks == NULL || (p->nlims > 0 && ls == NULL)) {
		free(order);
		free(ks);
		free(ls);
		return -ENOMEM;
	}
	for (i = 0; i < p->nkeys; i++)
		place(p, i, order, &n);
	for (i = 0; i < n; i++) {
		k = &p->keys[order[i]];
		memcpy(ks[i].name, k->name, sizeof(ks[i].name));
		ks[i].parent = k->parent >= 0 ? p->keys[k->parent].pos : -1;
		ks[i].line = k->line;
		ks[i].first_limit = first;
		ks[i].nlimits = (unsigned)k->nlimits;
		f = feedback_of(p, order[i]);
		ks[i].backoff_min_ns = f->backoff_min_ns;
		ks[i].backoff_max_ns = f->backoff_max_ns;
		ks[i].max_pause_ns = f->max_pause_ns;
		ks[i].learn = f->learn;
		ks[i].refund_rejected = f->refund_rejected;
		ks[i].global = k->global;
		ks[i].scope_line = k->scope_line;
		k->fill = first;
		first += (unsigned)k->nlimits;
	}
	for (i = 0; ls != NULL && i < p->nlims; i++)
		ls[p->keys[p->lims[i].key].fill++] = p->lims[i].l;
	free(order);
	cfg->keys = ks;
	cfg->nkeys = (unsigned)n;
	cfg->limits = ls;
	cfg->nlimits = (unsigned)p->nlims;
	return 0;
}

/*
 * A global key needs a Redis to share it through: without one it would
 * quietly be this host's alone, and N hosts would admit N times its
 * limit.  Said at its `scope' line.  Federation settings without a
 * `redis' are harmless and pass.
 */
static void
check_scopes(struct parser *p)
{
	/* A `redis' line that was refused has its own error already. */
	if (p->set_line[BS_REDIS] != 0)
		return;
	for (int i = 0; i < p->nkeys; i++)
		if (p->keys[i].global && p->keys[i].dup_of < 0)
			report_at(p, p->keys[i].scope_line, "[%s]: scope = "
			    "global needs `redis = URL' in [broker]",
			    p->keys[i].name);
}

/* Both entry points: parse len bytes of buf, named name in messages. */
static int
parse(const char *name, const char *buf, size_t len, struct config *cfg,
    config_report_fn *report, void *arg)
{
	struct parser p;
	size_t before;
	int ret;

	memset(&p, 0, sizeof(p));
	p.cfg = cfg;
	p.name = name;
	p.report = report;
	p.arg = arg;
	p.buf = buf;
	p.len = len;
	p.cur = SEC_NONE;

	strcpy(cfg->segment, "tollgate");
	cfg->mode = 0660;
	cfg->max_clients = 1024;
	strcpy(cfg->federation, "tollgate");
	cfg->redis_outage = FED_OUTAGE_SAFE;

	/*
	 * One pass reads it all; more only if inih stopped early, as it
	 * does when a program in this process set ini_stop_on_first_error.
	 * Every line we have not seen yet gets read, one way or another.
	 */
	do {
		before = p.pos;
		ret = ini_parse_stream(read_line, &p, on_pair, &p);
		finish_line(&p);
		/* -2: a heap build of inih could not allocate its line. */
		if (ret < 0)
			report_oom(&p);
		/* inih saw an error we did not: unexpected, never let by. */
		else if (ret > 0 && p.nerrors == 0)
			report_at(&p, ret, "syntax error");
	} while (!p.oom && p.pos < p.len && p.pos != before);

	if (!p.oom)
		resolve_keys(&p);
	if (!p.oom)
		check_scopes(&p);
	if (p.nerrors == 0 && p.set_line[BS_PIDFILE] == 0)
		snprintf(cfg->pidfile, sizeof(cfg->pidfile),
		    "/run/tollgate/%s.pid", cfg->segment);
	if (p.nerrors == 0 && build(&p) < 0)
		report_oom(&p);
	free(p.keys);
	free(p.lims);
	if (p.nerrors > 0)
		memset(cfg, 0, sizeof(*cfg));
	return p.nerrors;
}

/* One error about the file as a whole, before there is a parser. */
static int
report_file(const char *name, config_report_fn *report, void *arg,
    const char *what)
{
	char msg[PATH_MAX + 256];

	if (report != NULL) {
		snprintf(msg, sizeof(msg), "%s: %s", name, what);
		report(arg, msg);
	}
	return 1;
}

/*
 * Parse len bytes at buf (no NUL needed at the end; one inside is an
 * error) as a config named name in messages.  See config.h.
 */
int
config_load_mem(const char *name, const char *buf, size_t len,
    struct config *cfg, config_report_fn *report, void *arg)
{
	char eb[128];
	size_t nlen;

	memset(cfg, 0, sizeof(*cfg));
	if (name == NULL)
		name = "(config)";
	nlen = strlen(name);
	if (nlen >= sizeof(cfg->path))
		return report_file(name, report, arg,
		    errstr(ENAMETOOLONG, eb, sizeof(eb)));
	if (buf == NULL && len > 0)
		return report_file(name, report, arg,
		    errstr(EFAULT, eb, sizeof(eb)));
	if (len > FILE_BYTES_MAX) {
		snprintf(eb, sizeof(eb), "too large: %zu bytes, at most %u",
		    len, FILE_BYTES_MAX);
		return report_file(name, report, arg, eb);
	}
	memcpy(cfg->path, name, nlen + 1);
	return parse(cfg->path, buf, len, cfg, report, arg);
}

/* Read all of path into a new *bufp; 0, -errno, or -EFBIG if too big. */
static int
read_file(const char *path, char **bufp, size_t *lenp)
{
	size_t len = 0, cap = 0;
	char *buf = NULL, *nb;
	ssize_t n;
	int fd, ret;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0)
		return -errno;
	for (;;) {
		if (len == cap) {
			/* A byte past the limit tells "too big" from "full". */
			if (cap > FILE_BYTES_MAX) {
				ret = -EFBIG;
				goto out_free;
			}
			cap = cap ? cap * 2 : 4096;
			if (cap > FILE_BYTES_MAX + 1)
				cap = FILE_BYTES_MAX + 1;
			if ((nb = realloc(buf, cap)) == NULL) {
				ret = -ENOMEM;
				goto out_free;
			}
			buf = nb;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out_free;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	*bufp = buf;
	*lenp = len;
	return 0;

out_free:
	free(buf);
	close(fd);
	return ret;
}

/*
 * Parse the file at path into *cfg.  See config.h.  The whole file is
 * read first (at most 1 MiB), so that a file and a buffer from
 * config_load_mem go through the same code.
 */
int
config_load(const char *path, struct config *cfg, config_report_fn *report,
    void *arg)
{
	char eb[128], *buf = NULL;
	size_t len = 0;
	int ret;

	memset(cfg, 0, sizeof(*cfg));
	if (path == NULL)
		return report_file("(null)", report, arg,
		    errstr(EINVAL, eb, sizeof(eb)));
	if (strlen(path) >= sizeof(cfg->path))
		return report_file(path, report, arg,
		    errstr(ENAMETOOLONG, eb, sizeof(eb)));
	if ((ret = read_file(path, &buf, &len)) < 0) {
		if (ret == -EFBIG)
			snprintf(eb, sizeof(eb), "too large: more than %u "
			    "bytes", FILE_BYTES_MAX);
		return report_file(path, report, arg, ret == -EFBIG ? eb :
		    errstr(-ret, eb, sizeof(eb)));
	}
	ret = config_load_mem(path, buf, len, cfg, report, arg);
	free(buf);
	return ret;
}

/*
 * Free what config_load allocated and zero *cfg, so that freeing it again
 * does nothing.
 */
void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->keys);
	free(cfg->limits);
	memset(cfg, 0, sizeof(*cfg));
}

/*
 * Return the index of the key named name in cfg->keys, or -1.
 */
int
config_find_key(const struct config *cfg, const char *name)
{
	unsigned i;

	if (cfg == NULL || name == NULL)
		return -1;
	for (i = 0; i < cfg->nkeys; i++)
		if (strcmp(cfg->keys[i].name, name) == 0)
			return (int)i;
	return -1;
}
