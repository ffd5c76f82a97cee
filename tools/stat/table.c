/* table.c: the default table and -c, the client slots. */
#include <err.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "stat.h"

/* One line of the table, every cell already a string. */
struct row {
	char		name[SPEC_MAX + 2]; /* key name, or "  " and a spec */
	char		avail[16];
	char		next[16];
	char		inflight[16];
	char		granted[16];
	char		denied[16];
	char		note[160];	/* "paused 12s; ok 120; limited 3" */
};

#define NCOLS	6

static const char *const col_head[NCOLS] = {
	"KEY / LIMIT", "AVAILABLE", "NEXT", "IN FLIGHT", "GRANTED", "DENIED",
};

static void
row_cells(const struct row *r, const char *cell[NCOLS])
{
	cell[0] = r->name;
	cell[1] = r->avail;
	cell[2] = r->next;
	cell[3] = r->inflight;
	cell[4] = r->granted;
	cell[5] = r->denied;
}

/* What tollctl had the broker do: a line of counts, one of the last. */
static void
print_ctl(FILE *f, const struct st_ctl *c)
{
	char a[32], key[SEG_NAME_MAX];
	uint64_t refused = 0;

	fprintf(f, "%-10s", "tollctl");
	for (int i = 0; i < SEG_CTL_NACT; i++) {
		fmt_count(a, sizeof(a), c->count[i]);
		fprintf(f, " %s %s%s", ctl_names[i], a,
		    i + 1 < SEG_CTL_NACT ? "," : ";");
	}
	for (int i = SEG_CTL_NACT; i < SEG_CTL_COUNT; i++)
		refused += c->count[i];
	fmt_count(a, sizeof(a), refused);
	fprintf(f, " refused %s\n", a);
	if (!c->has_last)
		return;
	memcpy(key, c->key, sizeof(key));
	tame(key);
	fprintf(f, "%-10s %s %s", "last ctl", ctl_names[c->action], key);
	if (c->action == SEG_CTL_PAUSE) {
		fmt_dur(a, sizeof(a), c->arg_ns);
		fprintf(f, " %s", a);
	}
	fmt_dur(a, sizeof(a), c->ago_ns);
	fprintf(f, " by uid %" PRIu32 " pid %" PRId32 "%s, %s ago\n", c->uid,
	    c->pid, c->pid == 0 ? " (another pid ns)" : "", a);
}

void
print_header(FILE *f, const struct snap *s)
{
	char a[32], b[32], c[32], d[32], e[32];

	fprintf(f, "%-10s %s\n", "segment", s->segment);
	switch (s->broker) {
	case BROKER_LIVE:
		fmt_dur(a, sizeof(a), s->uptime_ns);
		fprintf(f, "%-10s pid %d, up %s\n", "broker",
		    (int)s->broker_pid, a);
		break;
	case BROKER_NONE:
		fprintf(f, "%-10s no broker\n", "broker");
		break;
	case BROKER_DEAD:
		fprintf(f, "%-10s no broker (pid %d is gone)\n", "broker",
		    (int)s->broker_pid);
		break;
	case BROKER_OTHER:
		fprintf(f, "%-10s no broker (pid %d is another process now)\n",
		    "broker", (int)s->broker_pid);
		break;
	}
	fmt_dur(a, sizeof(a), s->heartbeat_age_ns);
	fprintf(f, "%-10s %s ago%s\n", "heartbeat", a,
	    s->heartbeat_age_ns > STALE_NS ? " (stale)" : "");
	fprintf(f, "%-10s %" PRIu32 " of %" PRIu32 " slots\n", "clients",
	    s->clients, s->max_clients);
	fprintf(f, "%-10s generation %" PRIu64 ": %u key%s, %u limit%s\n",
	    "config", s->gen, s->cfg_nkeys, s->cfg_nkeys == 1 ? "" : "s",
	    s->cfg_nlimits, s->cfg_nlimits == 1 ? "" : "s");
	fmt_count(a, sizeof(a), s->repairs);
	fprintf(f, "%-10s %s\n", "repairs", a);
	print_ctl(f, &s->ctl);
	if (s->fed_state != 0)
		fprintf(f, "%-10s Redis %s (outage mode %s)%s\n", "federation",
		    s->fed_state & SEG_FED_UP ? "connected" : "NOT connected",
		    fed_outage_name(s->fed_state), s->fed_lapses > 0 ?
		    "; the thread was late: see tollgated's log" : "");
	fmt_count(a, sizeof(a), s->acquired);
	fmt_count(b, sizeof(b), s->denied);
	fmt_count(c, sizeof(c), s->released);
	fmt_count(d, sizeof(d), s->waits);
	fmt_count(e, sizeof(e), s->polls);
	/* Denied: given up; a poll answered "not now" is no refusal. */
	fprintf(f, "%-10s %s acquired, %s denied, %s released, %s waited, "
	    "%s polled\n", "tickets", a, b, c, d, e);
}

/* Append to a note, "; "-separated. */
static void
note_add(char *note, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
note_add(char *note, size_t len, const char *fmt, ...)
{
	size_t n = strlen(note);
	va_list ap;

	if (n > 0 && n + 2 < len) {
		memcpy(note + n, "; ", 3);
		n += 2;
	}
	if (n + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(note + n, len - n, fmt, ap);
	va_end(ap);
}

/* A key's pause and the responses its tickets saw, by class. */
void
key_note(const struct st_key *k, char *note, size_t len)
{
	static const char *const cls[ST_PAUSED_NS] = {
		[ST_OK] = "ok", [ST_LIMITED] = "limited", [ST_AUTH] = "auth",
		[ST_CLIENT] = "4xx", [ST_SERVER] = "5xx",
	};
	char a[32], dur[32];

	note[0] = '\0';
	if (k->drained)
		note_add(note, len, "drained");
	if (k->paused_ns > 0) {
		fmt_dur(dur, sizeof(dur), k->paused_ns);
		note_add(note, len, "paused %s", dur);
	}
	for (int c = 0; c < ST_PAUSED_NS; c++)
		if (k->status[c] > 0) {
			fmt_count(a, sizeof(a), k->status[c]);
			note_add(note, len, "%s %s", cls[c], a);
		}
	if (k->status[ST_PAUSED_NS] > 0) {
		fmt_dur(dur, sizeof(dur), k->status[ST_PAUSED_NS]);
		note_add(note, len, "paused %s in all", dur);
	}
}

/* What responses changed on a limit: server figures, learned, adaptive. */
void
limit_note(const struct st_limit *l, char *note, size_t len)
{
	char a[32], dur[32];

	note[0] = '\0';
	if (l->spec.kind == LIM_CONC && l->spec.adaptive)
		note_add(note, len, "adaptive: %" PRIu32 " of %" PRIu64,
		    l->eff, l->spec.count);
	if (l->srv_left != UINT64_MAX) {
		fmt_count(a, sizeof(a), l->srv_left);
		fmt_dur(dur, sizeof(dur), l->srv_reset_ns);
		note_add(note, len, "%s: %s left for %s", l->fed_global ?
		    "slices" : "server", a, dur);
	}
	if (l->fed_global) {
		fmt_count(a, sizeof(a), l->fed_held);
		if (l->fed_lease_age_ns == UINT64_MAX)
			snprintf(dur, sizeof(dur), "none yet");
		else {
			fmt_dur(dur, sizeof(dur), l->fed_lease_age_ns);
			strncat(dur, " ago", sizeof(dur) - strlen(dur) - 1);
		}
		note_add(note, len, "global: %s held, %u host%s, lease %s%s",
		    a, l->fed_hosts, l->fed_hosts == 1 ? "" : "s", dur,
		    l->fed_disagree ? ", limits disagree" : "");
	}
	if (l->conf_count != l->spec.count)
		note_add(note, len, "learned (config %" PRIu64 ")",
		    l->conf_count);
	if (l->srv_limit != 0)
		note_add(note, len, "server says %" PRIu64, l->srv_limit);
}

/* AVAILABLE and NEXT of a limit: "?" where its cells failed the check. */
void
limit_cells(const struct st_limit *l, char *avail, char *next, size_t len)
{
	if (!l->ok) {
		snprintf(avail, len, "?");
		snprintf(next, len, "?");
		return;
	}
	fmt_count(avail, len, l->available);
	if (l->next_ns == 0)
		snprintf(next, len, "now");
	else if (l->next_ns == NEXT_RELEASE)
		snprintf(next, len, "release");
	else
		fmt_dur(next, len, l->next_ns);
}

/* A limit's row. */
static void
limit_row(const struct st_limit *l, struct row *r)
{
	memcpy(r->name, "  ", 2);
	snprintf(r->name + 2, sizeof(r->name) - 2, "%s", l->spec_str);
	_Static_assert(sizeof(r->avail) == sizeof(r->next), "one length");
	limit_cells(l, r->avail, r->next, sizeof(r->avail));
	if (l->spec.kind == LIM_CONC && l->ok)
		fmt_count(r->inflight, sizeof(r->inflight), l->in_flight);
	else
		snprintf(r->inflight, sizeof(r->inflight),
		    l->spec.kind == LIM_CONC ? "?" : "-");
	fmt_count(r->granted, sizeof(r->granted), l->granted);
	fmt_count(r->denied, sizeof(r->denied), l->denied);
	limit_note(l, r->note, sizeof(r->note));
}

void
print_table(FILE *f, const struct snap *s)
{
	struct row *rows;
	const char *cell[NCOLS];
	size_t w[NCOLS], n;
	unsigned nrows = 0;

	print_header(f, s);
	fputc('\n', f);
	if (s->nkeys == 0) {
		fprintf(f, "(no keys)\n");
		return;
	}
	if ((rows = calloc(s->nkeys + s->nlimits, sizeof(*rows))) == NULL)
		err(1, NULL);
	for (unsigned i = 0; i < s->nkeys; i++) {
		const struct st_key *k = &s->keys[i];
		struct row *r = &rows[nrows++];

		snprintf(r->name, sizeof(r->name), "%s", k->name);
		fmt_count(r->granted, sizeof(r->granted), k->granted);
		fmt_count(r->denied, sizeof(r->denied), k->denied);
		key_note(k, r->note, sizeof(r->note));
		for (unsigned j = k->first; j < k->first + k->nlimits; j++)
			limit_row(&s->limits[j], &rows[nrows++]);
	}
	for (int c = 0; c < NCOLS; c++)
		w[c] = strlen(col_head[c]);
	for (unsigned i = 0; i < nrows; i++) {
		row_cells(&rows[i], cell);
		for (int c = 0; c < NCOLS; c++)
			if ((n = strlen(cell[c])) > w[c])
				w[c] = n;
	}
	fprintf(f, "%-*s", (int)w[0], col_head[0]);
	for (int c = 1; c < NCOLS; c++)
		fprintf(f, "  %*s", (int)w[c], col_head[c]);
	fputc('\n', f);
	for (unsigned i = 0; i < nrows; i++) {
		row_cells(&rows[i], cell);
		fprintf(f, "%-*s", (int)w[0], cell[0]);
		for (int c = 1; c < NCOLS; c++)
			fprintf(f, "  %*s", (int)w[c], cell[c]);
		if (rows[i].note[0])
			fprintf(f, "  %s", rows[i].note);
		fputc('\n', f);
	}
	free(rows);
}

/* -c: the slots in use, one a line. */
void
print_clients(FILE *f, const struct snap *s)
{
	char name[COMM_MAX + 1], a[16], d[16], r[16], p[16];
	uint32_t *held = slot_leases(s);
	int any = 0;

	print_header(f, s);
	fputc('\n', f);
	for (uint32_t i = 0; i < s->max_clients; i++) {
		const struct st_client *c = &s->cl[i];

		if (c->state == CL_FREE)
			continue;
		if (!any)
			fprintf(f, "%4s  %7s  %-16s  %-8s  %6s  %8s  %8s  "
			    "%8s  %8s\n", "SLOT", "PID", "NAME", "STATE",
			    "LEASES", "ACQUIRED", "DENIED", "RELEASED",
			    "POLLED");
		any = 1;
		snprintf(name, sizeof(name), "%s", c->comm);
		tame(name);
		fmt_count(a, sizeof(a), c->acquired);
		fmt_count(d, sizeof(d), c->denied);
		fmt_count(r, sizeof(r), c->released);
		fmt_count(p, sizeof(p), c->polls);
		fprintf(f, "%4" PRIu32 "  %7d  %-16s  %-8s  %6" PRIu32
		    "  %8s  %8s  %8s  %8s\n", i, (int)c->pid, name,
		    client_names[c->state], held[i], a, d, r, p);
	}
	if (!any)
		fprintf(f, "(no clients)\n");
	free(held);
}
