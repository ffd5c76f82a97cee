/* json.c: tollstat -j. */
#include <err.h>
#include <inttypes.h>
#include <stdlib.h>

#include "stat.h"

/*
 * -j: JSON.  The schema, version 1 ("schema": 1).  A field is added
 * without a new version; one removed, renamed or whose meaning changes
 * gets a new version.  Integers are exact unsigned 64-bit unless said
 * (beware of doubles past 2^53); times are ns: durations, or
 * CLOCK_MONOTONIC for now_ns.  "u64" below is such an integer.
 *
 * {
 *   "schema":      1,
 *   "segment":     string, the segment's name,
 *   "now_ns":      u64, CLOCK_MONOTONIC when the state was read,
 *   "key_filter":  string (-k KEY) or null,
 *   "broker": {
 *     "state":     "live" | "none" (none attached) | "dead" (its pid
 *                  is gone) | "other" (its pid is another process now),
 *     "pid":       int, the last broker's pid (0: none ever),
 *     "uptime_ns": u64, 0 unless live,
 *     "heartbeat_age_ns": u64, since its last tick,
 *     "stale":     bool, heartbeat_age_ns over 1 s: it hangs,
 *     "repairs":   u64, count of state garbage it fixed
 *   },
 *   "federation": null without a `redis', else {
 *     "redis_connected": bool,
 *     "outage":    "safe" | "closed" | "open", the mode while it is not,
 *     "lapses":    u64, caps its thread let end (it was late)
 *   },
 *   "config": {
 *     "generation": u64, publish count of the config copy,
 *     "keys":      u64, keys in the config (whatever key_filter shows),
 *     "limits":    u64, limits in the config
 *   },
 *   "clients": {
 *     "live":      u64, slots of running clients,
 *     "slots":     u64, slots in the segment,
 *     "list": [    every slot in use (-c or not), by slot:
 *       { "slot": u64, "pid": int, as the client sees itself,
 *         "own_pid_ns": bool, the client runs in tollstat's PID
 *                  namespace (else its pid names no process here),
 *         "comm":  string, /proc/PID/comm, "?" if unreadable,
 *         "state": "claiming" | "live" | "gone" (exited; the broker
 *                  reclaims it) | "invalid" (garbage owner word),
 *         "leases": u64, leases held on the concurrency limits of the
 *                  keys listed,
 *         "acquired", "denied", "released", "waits", "polls": u64,
 *                  tickets; denied: given up (-ETIMEDOUT); polls: "not
 *                  now" answers (-EAGAIN), which are no refusals }
 *     ]
 *   },
 *   "ctl": {       what tollctl had the broker do, counted by the broker:
 *     "pause", "resume", "reset", "drain", "undrain": u64, actions,
 *     "denied", "malformed", "failed": u64, requests refused (the
 *                  caller may not write the state object; a malformed
 *                  request; no such key),
 *     "last": the last action, or null:
 *       { "action": string, "key": string, "uid": u64,
 *         "pid": int (0: the caller was in another PID namespace),
 *         "ago_ns": u64, "pause_ns": u64 (pause: its length; else 0) }
 *   },
 *   "tickets": { "acquired", "denied", "released", "waits", "polls": u64:
 *                every slot's, plus slots reclaimed since },
 *   "keys": [      in name order, a parent before its children
 *     { "name":    string,
 *       "parent":  string, or null at the top,
 *       "granted", "denied": u64, tickets,
 *       "paused_ns": u64, pause left; 0 none,
 *       "drained": bool, tollctl drain: it takes no new tickets,
 *       "status": { "ok", "limited", "auth", "client_error",
 *                   "server_error": u64, responses by class,
 *                   "paused_total_ns": u64, all the pauses },
 *       "limits": [ its own limits (ancestors' are under the ancestor)
 *         { "spec":  string, in the config's syntax,
 *           "kind":  "rate" | "window" | "concurrency",
 *           "unit":  "requests" | "tokens" | "images",
 *           "count": u64, in force: per period, per window, in flight
 *                    (the server's once learned),
 *           "configured_count": u64, the config file's,
 *           "period_ns": u64, 0 for concurrency,
 *           "burst": u64, rate: bucket size in units; else 0,
 *           "cooldown_ns": u64, 0 none,
 *           "adaptive": bool,
 *           "effective": u64, concurrency: leases allowed now (below
 *                    count while adaptive cut it); else null,
 *           "available": u64, units that fit now; null if the limit's
 *                    cells failed the check (shown "?" in the table),
 *           "next_ns": u64, until one more unit fits (0: now); null
 *                    for a full concurrency limit (when a lease is
 *                    released) and if unchecked.  available and
 *                    next_ns are the limit's own; "server" may cap it,
 *           "in_flight": u64, concurrency: leases held; else null,
 *           "holders": [int], concurrency: distinct pids holding its
 *                    leases, ascending (0: a slot no client owns);
 *                    else [],
 *           "server": { "remaining": u64, "reset_ns": u64 } while a
 *                    server's remaining caps it; else null,
 *           "server_limit": u64, a limit the server reported unlike
 *                    count; else null,
 *           "federation": null unless `scope = global', else {
 *                    "held": u64, units of this host's slices,
 *                    "granted": u64, units Redis granted this host,
 *                    "hosts": u64, hosts leasing it (last lease),
 *                    "lease_age_ns": u64 since the last lease, or null,
 *                    "disagree": bool, Redis holds other limits for it },
 *           "granted": u64, units (leases for concurrency),
 *           "denied":  u64, refusals }
 *       ]
 *     }
 *   ]
 * }
 */
#define JSON_SCHEMA	1
#define JW_DEPTH	8

/* A JSON writer: members, commas and indentation by nesting. */
struct jw {
	FILE		*f;
	int		depth;
	int		more[JW_DEPTH];	/* the open container has members */
};

/* s as a JSON string; a byte that is not UTF-8 becomes U+FFFD. */
static void
jw_quote(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	int n;

	fputc('"', f);
	while (*p != '\0') {
		if (*p == '"' || *p == '\\') {
			fputc('\\', f);
			fputc(*p++, f);
		} else if (*p == '\n') {
			fputs("\\n", f);
			p++;
		} else if (*p == '\t') {
			fputs("\\t", f);
			p++;
		} else if (*p < 0x20) {
			fprintf(f, "\\u%04x", *p++);
		} else if ((n = utf8_len(p)) == 0) {
			fputs("\\ufffd", f);
			p++;
		} else {
			fwrite(p, 1, (size_t)n, f);
			p += n;
		}
	}
	fputc('"', f);
}

/* Start a member (named, in an object) or an element (name NULL). */
static void
jw_member(struct jw *w, const char *name)
{
	if (w->depth > 0) {
		if (w->more[w->depth])
			fputc(',', w->f);
		fprintf(w->f, "\n%*s", 2 * w->depth, "");
		w->more[w->depth] = 1;
	}
	if (name != NULL) {
		jw_quote(w->f, name);
		fputs(": ", w->f);
	}
}

static void
jw_open(struct jw *w, const char *name, int c)
{
	assert(w->depth + 1 < JW_DEPTH);
	jw_member(w, name);
	fputc(c, w->f);
	w->more[++w->depth] = 0;
}

static void
jw_close(struct jw *w, int c)
{
	if (w->more[w->depth--])
		fprintf(w->f, "\n%*s", 2 * w->depth, "");
	fputc(c, w->f);
}

static void
jw_u64(struct jw *w, const char *name, uint64_t v)
{
	jw_member(w, name);
	fprintf(w->f, "%" PRIu64, v);
}

static void
jw_int(struct jw *w, const char *name, int64_t v)
{
	jw_member(w, name);
	fprintf(w->f, "%" PRId64, v);
}

static void
jw_str(struct jw *w, const char *name, const char *s)
{
	jw_member(w, name);
	if (s != NULL)
		jw_quote(w->f, s);
	else
		fputs("null", w->f);
}

static void
jw_bool(struct jw *w, const char *name, int v)
{
	jw_member(w, name);
	fputs(v ? "true" : "false", w->f);
}

/* v, or null unless has. */
static void
jw_opt(struct jw *w, const char *name, int has, uint64_t v)
{
	if (has)
		jw_u64(w, name, v);
	else
		jw_str(w, name, NULL);
}

static void
json_limit(struct jw *w, const struct snap *s, const struct st_limit *l,
    int32_t *pids)
{
	int conc = l->spec.kind == LIM_CONC;
	unsigned n;

	jw_open(w, NULL, '{');
	jw_str(w, "spec", l->spec_str);
	jw_str(w, "kind", kind_name(l->spec.kind));
	jw_str(w, "unit", unit_name(l->spec.unit));
	jw_u64(w, "count", l->spec.count);
	jw_u64(w, "configured_count", l->conf_count);
	jw_u64(w, "period_ns", l->spec.period_ns);
	jw_u64(w, "burst", l->spec.burst);
	jw_u64(w, "cooldown_ns", l->spec.cooldown_ns);
	jw_bool(w, "adaptive", l->spec.adaptive);
	jw_opt(w, "effective", conc, l->eff);
	jw_opt(w, "available", l->ok, l->available);
	jw_opt(w, "next_ns", l->ok && l->next_ns != NEXT_RELEASE, l->next_ns);
	jw_opt(w, "in_flight", conc && l->ok, l->in_flight);
	jw_open(w, "holders", '[');
	n = limit_holders(s, l, pids);
	for (unsigned i = 0; i < n; i++)
		jw_int(w, NULL, pids[i]);
	jw_close(w, ']');
	if (l->srv_left != UINT64_MAX) {
		jw_open(w, "server", '{');
		jw_u64(w, "remaining", l->srv_left);
		jw_u64(w, "reset_ns", l->srv_reset_ns);
		jw_close(w, '}');
	} else {
		jw_str(w, "server", NULL);
	}
	jw_opt(w, "server_limit", l->srv_limit != 0, l->srv_limit);
	if (l->fed_global) {
		jw_open(w, "federation", '{');
		jw_u64(w, "held", l->fed_held);
		jw_u64(w, "granted", l->fed_granted);
		jw_u64(w, "hosts", l->fed_hosts);
		jw_opt(w, "lease_age_ns", l->fed_lease_age_ns != UINT64_MAX,
		    l->fed_lease_age_ns);
		jw_bool(w, "disagree", l->fed_disagree);
		jw_close(w, '}');
	} else
		jw_str(w, "federation", NULL);
	jw_u64(w, "granted", l->granted);
	jw_u64(w, "denied", l->denied);
	jw_close(w, '}');
}

static void
json_key(struct jw *w, const struct snap *s, const struct st_key *k,
    int32_t *pids)
{
	jw_open(w, NULL, '{');
	jw_str(w, "name", k->name);
	jw_str(w, "parent", k->parent_name[0] ? k->parent_name : NULL);
	jw_u64(w, "granted", k->granted);
	jw_u64(w, "denied", k->denied);
	jw_u64(w, "paused_ns", k->paused_ns);
	jw_bool(w, "drained", k->drained);
	jw_open(w, "status", '{');
	jw_u64(w, "ok", k->status[ST_OK]);
	jw_u64(w, "limited", k->status[ST_LIMITED]);
	jw_u64(w, "auth", k->status[ST_AUTH]);
	jw_u64(w, "client_error", k->status[ST_CLIENT]);
	jw_u64(w, "server_error", k->status[ST_SERVER]);
	jw_u64(w, "paused_total_ns", k->status[ST_PAUSED_NS]);
	jw_close(w, '}');
	jw_open(w, "limits", '[');
	for (unsigned j = k->first; j < k->first + k->nlimits; j++)
		json_limit(w, s, &s->limits[j], pids);
	jw_close(w, ']');
	jw_close(w, '}');
}

void
print_json(FILE *f, const struct snap *s)
{
	struct jw w = { .f = f };
	uint32_t *held = slot_leases(s);
	int32_t *pids;

	if ((pids = calloc(s->max_cells + 1, sizeof(*pids))) == NULL)
		err(1, NULL);
	jw_open(&w, NULL, '{');
	jw_u64(&w, "schema", JSON_SCHEMA);
	jw_str(&w, "segment", s->segment);
	jw_u64(&w, "now_ns", s->now_ns);
	jw_str(&w, "key_filter", s->filter);

	jw_open(&w, "broker", '{');
	jw_str(&w, "state", broker_names[s->broker]);
	jw_int(&w, "pid", s->broker_pid);
	jw_u64(&w, "uptime_ns", s->uptime_ns);
	jw_u64(&w, "heartbeat_age_ns", s->heartbeat_age_ns);
	jw_bool(&w, "stale", s->heartbeat_age_ns > STALE_NS);
	jw_u64(&w, "repairs", s->repairs);
	jw_close(&w, '}');

	if (s->fed_state != 0) {
		jw_open(&w, "federation", '{');
		jw_bool(&w, "redis_connected",
		    (s->fed_state & SEG_FED_UP) != 0);
		jw_str(&w, "outage", fed_outage_name(s->fed_state));
		jw_u64(&w, "lapses", s->fed_lapses);
		jw_close(&w, '}');
	} else
		jw_str(&w, "federation", NULL);

	jw_open(&w, "config", '{');
	jw_u64(&w, "generation", s->gen);
	jw_u64(&w, "keys", s->cfg_nkeys);
	jw_u64(&w, "limits", s->cfg_nlimits);
	jw_close(&w, '}');

	jw_open(&w, "clients", '{');
	jw_u64(&w, "live", s->clients);
	jw_u64(&w, "slots", s->max_clients);
	jw_open(&w, "list", '[');
	for (uint32_t i = 0; i < s->max_clients; i++) {
		const struct st_client *c = &s->cl[i];

		if (c->state == CL_FREE)
			continue;
		jw_open(&w, NULL, '{');
		jw_u64(&w, "slot", i);
		jw_int(&w, "pid", c->pid);
		jw_bool(&w, "own_pid_ns", c->own_ns);
		jw_str(&w, "comm", c->comm);
		jw_str(&w, "state", client_names[c->state]);
		jw_u64(&w, "leases", held[i]);
		jw_u64(&w, "acquired", c->acquired);
		jw_u64(&w, "denied", c->denied);
		jw_u64(&w, "released", c->released);
		jw_u64(&w, "waits", c->waits);
		jw_u64(&w, "polls", c->polls);
		jw_close(&w, '}');
	}
	jw_close(&w, ']');
	jw_close(&w, '}');

	jw_open(&w, "ctl", '{');
	for (int i = 0; i < SEG_CTL_COUNT; i++)
		jw_u64(&w, ctl_names[i], s->ctl.count[i]);
	if (s->ctl.has_last) {
		jw_open(&w, "last", '{');
		jw_str(&w, "action", ctl_names[s->ctl.action]);
		jw_str(&w, "key", s->ctl.key);
		jw_u64(&w, "uid", s->ctl.uid);
		jw_int(&w, "pid", s->ctl.pid);
		jw_u64(&w, "ago_ns", s->ctl.ago_ns);
		jw_u64(&w, "pause_ns", s->ctl.action == SEG_CTL_PAUSE ?
		    s->ctl.arg_ns : 0);
		jw_close(&w, '}');
	} else
		jw_str(&w, "last", NULL);
	jw_close(&w, '}');

	jw_open(&w, "tickets", '{');
	jw_u64(&w, "acquired", s->acquired);
	jw_u64(&w, "denied", s->denied);
	jw_u64(&w, "released", s->released);
	jw_u64(&w, "waits", s->waits);
	jw_u64(&w, "polls", s->polls);
	jw_close(&w, '}');

	jw_open(&w, "keys", '[');
	for (unsigned i = 0; i < s->nkeys; i++)
		json_key(&w, s, &s->keys[i], pids);
	jw_close(&w, ']');
	jw_close(&w, '}');
	fputc('\n', f);
	free(pids);
	free(held);
}
