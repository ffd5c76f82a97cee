/*
 * watch.c: tollstat -w, the live view.  Every interval it takes a fresh
 * snapshot and shows, per key and per limit, granted and denied per
 * second over the last interval and averaged over the last 10, 100 and
 * 1000 intervals, the way varnishstat does: until an average has seen N
 * intervals it is their plain mean, then each interval moves it 1/N of
 * the way (an exponential average with the window's weight).
 *
 * A row's history follows its key name and limit id, which a reload
 * keeps; a counter that goes down (a new segment, --reset) starts its
 * row over.  The segment is attached afresh for each frame, so the view
 * outlives a broker restart and shows why while there is nothing to read.
 */
#include <sys/ioctl.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "stat.h"

#define NAVG		3
#define SERIES_NAME	(SEG_NAME_MAX + 8)	/* "key" or "key#id" */

static const unsigned avg_n[NAVG] = { 10, 100, 1000 };

/* One counter's history: the value last read and its averages. */
struct rate {
	uint64_t	last;
	double		now;		/* per second, last interval */
	double		avg[NAVG];
	unsigned	n;		/* intervals seen, up to 1000 */
};

/* A row's history: a key's tickets or a limit's units. */
struct series {
	char		name[SERIES_NAME];
	struct rate	granted;
	struct rate	denied;
};

struct history {
	struct series	*v;		/* sorted by name */
	size_t		n;
	uint64_t	when_ns;	/* the snapshot v was read at */
};

static int
series_cmp(const void *a, const void *b)
{
	return strcmp(((const struct series *)a)->name,
	    ((const struct series *)b)->name);
}

/* Account one interval of dt_ns in which the counter went to v. */
static void
rate_step(struct rate *r, uint64_t v, uint64_t dt_ns, int seen)
{
	double x;

	if (!seen || v < r->last || dt_ns == 0) {
		/* First sight, or counted over from zero: no interval. */
		memset(r, 0, sizeof(*r));
		r->last = v;
		r->now = NAN;
		return;
	}
	x = (double)(v - r->last) * 1e9 / (double)dt_ns;
	r->last = v;
	r->now = x;
	if (r->n < avg_n[NAVG - 1])
		r->n++;
	for (int i = 0; i < NAVG; i++)
		r->avg[i] += (x - r->avg[i]) /
		    (double)(r->n < avg_n[i] ? r->n : avg_n[i]);
}

/* A rate in at most 7 columns: "-" before the first interval. */
static void
fmt_rate(char *buf, size_t len, double x, int have)
{
	if (!have || isnan(x))
		snprintf(buf, len, "-");
	else if (x < 99.995)
		snprintf(buf, len, "%.2f", x);
	else if (x < 9999.5)
		snprintf(buf, len, "%.0f", x);
	else if (x < 9999.5e3)
		snprintf(buf, len, "%.0fk", x / 1e3);
	else
		snprintf(buf, len, "%.0fM", x / 1e6);
}

/* Step series *v (its name set) from its previous value in h, if any. */
static void
series_step(const struct history *h, struct series *v, uint64_t granted,
    uint64_t denied, uint64_t dt)
{
	const struct series *old = h->n == 0 ? NULL : bsearch(v, h->v, h->n,
	    sizeof(*h->v), series_cmp);

	if (old != NULL) {
		v->granted = old->granted;
		v->denied = old->denied;
	}
	rate_step(&v->granted, granted, dt, old != NULL);
	rate_step(&v->denied, denied, dt, old != NULL);
}

/* Advance the history to snapshot s: one series per key and limit shown. */
static int
history_step(struct history *h, const struct snap *s)
{
	struct series *v;
	size_t n = 0;
	uint64_t dt = s->now_ns > h->when_ns ? s->now_ns - h->when_ns : 0;

	if ((v = calloc(s->nkeys + s->nlimits + 1, sizeof(*v))) == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < s->nkeys; i++) {
		const struct st_key *k = &s->keys[i];

		snprintf(v[n].name, SERIES_NAME, "%s", k->name);
		series_step(h, &v[n++], k->granted, k->denied, dt);
		for (unsigned j = k->first; j < k->first + k->nlimits; j++) {
			const struct st_limit *l = &s->limits[j];

			snprintf(v[n].name, SERIES_NAME, "%s#%u", k->name,
			    (unsigned)l->id);
			series_step(h, &v[n++], l->granted, l->denied, dt);
		}
	}
	free(h->v);
	qsort(v, n, sizeof(*v), series_cmp);
	h->v = v;
	h->n = n;
	h->when_ns = s->now_ns;
	return 0;
}

static const struct series *
history_find(const struct history *h, const char *name)
{
	struct series key;

	snprintf(key.name, sizeof(key.name), "%s", name);
	return h->n == 0 ? NULL : bsearch(&key, h->v, h->n, sizeof(*h->v),
	    series_cmp);
}

#define WCOLS	10
#define WIDTH	100	/* a frame fits this many columns */

/*
 * Two heading lines: the groups ("granted per second") over the columns,
 * so that the columns are as narrow as their numbers.
 */
static const char *const wcol_head[WCOLS] = {
	"now", "10", "100", "1000", "now", "10", "100", "1000", "AVAIL",
	"NEXT",
};

struct wrow {
	char		name[SPEC_MAX + 2];
	char		cell[WCOLS][12];
	char		note[160];
};

static void
rate_cells(char cell[][12], const struct rate *r)
{
	int have = !isnan(r->now);

	fmt_rate(cell[0], sizeof(cell[0]), r->now, have);
	for (int i = 0; i < NAVG; i++)
		fmt_rate(cell[1 + i], sizeof(cell[0]), r->avg[i], have);
}

static void
fill_row(struct wrow *w, const struct history *h, const char *series)
{
	const struct series *sr = history_find(h, series);
	struct rate none = { .now = NAN };

	rate_cells(&w->cell[0], sr != NULL ? &sr->granted : &none);
	rate_cells(&w->cell[4], sr != NULL ? &sr->denied : &none);
}

/* What goes before column c: a wider gap between the groups. */
static const char *
sep(int c)
{
	return c == 4 || c == 8 ? "   " : " ";
}

/*
 * The line over the headings: each group's title over its columns,
 * centred when it fits, else from the group's first column.
 */
static void
group_heads(FILE *f, const size_t *w)
{
	static const char *const title[2] = {
		"granted per second", "denied per second",
	};
	size_t at = w[0], span, tl, pad, col = 0;

	for (int g = 0; g < 2; g++) {
		span = 0;
		for (int c = 4 * g; c < 4 * g + 4; c++)
			span += strlen(sep(c)) + w[c + 1];
		tl = strlen(title[g]);
		pad = span > tl ? (span - tl + 1) / 2 : 1;
		fprintf(f, "%*s%s", (int)(at + pad - col), "", title[g]);
		col = at + pad + tl;
		at += span;
	}
	fputc('\n', f);
}

/* Rows that fit the terminal, or all of them when out is no terminal. */
static unsigned
room(int tty, unsigned used)
{
	struct winsize ws;

	if (!tty || ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0 ||
	    ws.ws_row == 0)
		return UINT32_MAX;
	return ws.ws_row > used + 1 ? ws.ws_row - used - 1 : 1;
}

static void
print_frame(FILE *f, const struct snap *s, const struct history *h,
    uint64_t interval, unsigned long frame, int tty)
{
	struct wrow *rows;
	char series[SERIES_NAME], a[32];
	size_t w[WCOLS + 1], len, nums;
	unsigned nrows = 0, fit;

	print_header(f, s);
	fmt_dur(a, sizeof(a), interval);
	fprintf(f, "%-10s every %s, frame %lu: per second over the last "
	    "interval (now),\n%-10s and averaged over the last 10, 100 and "
	    "1000 intervals\n\n", "rates", a, frame, "");
	if (s->nkeys == 0) {
		fprintf(f, "(no keys)\n");
		return;
	}
	if ((rows = calloc(s->nkeys + s->nlimits, sizeof(*rows))) == NULL) {
		fprintf(f, "(out of memory)\n");
		return;
	}
	for (unsigned i = 0; i < s->nkeys; i++) {
		const struct st_key *k = &s->keys[i];
		struct wrow *r = &rows[nrows++];

		snprintf(r->name, sizeof(r->name), "%s", k->name);
		fill_row(r, h, k->name);
		snprintf(r->cell[8], sizeof(r->cell[8]), " ");
		snprintf(r->cell[9], sizeof(r->cell[9]), " ");
		key_note(k, r->note, sizeof(r->note));
		for (unsigned j = k->first; j < k->first + k->nlimits; j++) {
			const struct st_limit *l = &s->limits[j];

			r = &rows[nrows++];
			snprintf(r->name, sizeof(r->name), "  %s",
			    l->spec_str);
			snprintf(series, sizeof(series), "%s#%u", k->name,
			    (unsigned)l->id);
			fill_row(r, h, series);
			limit_cells(l, r->cell[8], r->cell[9],
			    sizeof(r->cell[8]));
			limit_note(l, r->note, sizeof(r->note));
		}
	}
	w[0] = strlen("KEY / LIMIT");
	/* Rates at least as wide as "0.00", so frames keep their columns. */
	for (int c = 0; c < WCOLS; c++)
		w[c + 1] = c < 8 && strlen(wcol_head[c]) < 4 ? 4 :
		    strlen(wcol_head[c]);
	for (unsigned i = 0; i < nrows; i++)
		for (int c = 0; c < WCOLS; c++)
			if ((len = strlen(rows[i].cell[c])) > w[c + 1])
				w[c + 1] = len;
	/* The numbers' width; a name wider than what is left gets a line. */
	nums = 0;
	for (int c = 0; c < WCOLS; c++)
		nums += strlen(sep(c)) + w[c + 1];
	for (unsigned i = 0; i < nrows; i++)
		if ((len = strlen(rows[i].name)) > w[0] &&
		    len + nums <= WIDTH)
			w[0] = len;
	group_heads(f, w);
	fprintf(f, "%-*s", (int)w[0], "KEY / LIMIT");
	for (int c = 0; c < WCOLS; c++)
		fprintf(f, "%s%*s", sep(c), (int)w[c + 1], wcol_head[c]);
	fputc('\n', f);
	/* 14 lines above: the header, the rates lines, the headings. */
	fit = room(tty, 14);
	for (unsigned i = 0; i < nrows; i++) {
		if (i + 1 == fit && i + 1 < nrows) {
			fprintf(f, "(%u more rows: -k KEY shows one key)\n",
			    nrows - i);
			break;
		}
		if (strlen(rows[i].name) > w[0])
			fprintf(f, "%s\n%-*s", rows[i].name, (int)w[0], "");
		else
			fprintf(f, "%-*s", (int)w[0], rows[i].name);
		for (int c = 0; c < WCOLS; c++)
			fprintf(f, "%s%*s", sep(c), (int)w[c + 1],
			    rows[i].cell[c]);
		/* A note that does not fit goes under the row. */
		if (rows[i].note[0] && w[0] + nums + 2 +
		    strlen(rows[i].note) <= WIDTH)
			fprintf(f, "  %s", rows[i].note);
		else if (rows[i].note[0])
			fprintf(f, "\n    %s", rows[i].note);
		fputc('\n', f);
	}
	free(rows);
}

/* Sleep until the monotonic time *next, then set the one after it. */
static void
tick(struct timespec *next, uint64_t interval)
{
	uint64_t t = (uint64_t)next->tv_sec * NS_PER_S +
	    (uint64_t)next->tv_nsec + interval;
	struct timespec now;

	next->tv_sec = (time_t)(t / NS_PER_S);
	next->tv_nsec = (long)(t % NS_PER_S);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL) ==
	    EINTR)
		;
	/* Stopped (^Z) or starved: skip missed ticks instead of racing. */
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec > next->tv_sec + 1)
		*next = now;
}

int
watch(const char *segment, const char *key, uint64_t interval,
    unsigned long frames)
{
	struct history h = { 0 };
	struct timespec next;
	struct snap s;
	char why[512];
	int tty = isatty(STDOUT_FILENO);

	clock_gettime(CLOCK_MONOTONIC, &next);
	for (unsigned long frame = 1; frames == 0 || frame <= frames;
	    frame++) {
		if (frame > 1)
			tick(&next, interval);
		if (tty)
			fputs("\033[H\033[J", stdout);	/* home, clear */
		else if (frame > 1)
			fputc('\n', stdout);
		if (snap_read(segment, key, &s, why, sizeof(why)) < 0)
			printf("%s\n(frame %lu; trying again every "
			    "interval)\n", why, frame);
		else if (history_step(&h, &s) < 0)
			printf("(out of memory)\n");
		else
			print_frame(stdout, &s, &h, interval, frame, tty);
		snap_free(&s);
		if (fflush(stdout) == EOF || ferror(stdout)) {
			perror("tollstat: stdout");
			free(h.v);
			return 1;
		}
	}
	free(h.v);
	return 0;
}
