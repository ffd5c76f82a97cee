/* prom.c: tollstat -p. */
#include <inttypes.h>
#include <string.h>

#include "stat.h"

/*
 * -p: Prometheus text exposition format 0.0.4.  Every family has its
 * HELP and TYPE, then all its samples; counters end in _total; seconds
 * are exact, from ns.  Labels: key (its name), limit (its spec in the
 * config's syntax; a second identical spec on one key gets " (2)", so no
 * two series collide), class.  A family whose samples do not apply
 * (in_flight of a rate limit, a server figure never reported) has none.
 */
struct pmetric {
	const char	*name;
	const char	*type;
	const char	*help;		/* no backslash or newline */
	int		secs;		/* the value is ns, shown as seconds */
};

enum {
	KM_GRANTED, KM_DENIED, KM_RESPONSES, KM_PAUSE, KM_PAUSED, KM_DRAINED,
	KM_COUNT
};

static const struct pmetric key_metrics[KM_COUNT] = {
	[KM_GRANTED] = { "tollgate_key_granted_total", "counter",
	    "Tickets granted on the key.", 0 },
	[KM_DENIED] = { "tollgate_key_denied_total", "counter",
	    "Tickets given up on the key (out of time), not polls.", 0 },
	[KM_RESPONSES] = { "tollgate_key_responses_total", "counter",
	    "Responses tg_observe saw on the key, by class.", 0 },
	[KM_PAUSE] = { "tollgate_key_pause_remaining_seconds", "gauge",
	    "Time left in the key's pause; 0 when not paused.", 1 },
	[KM_PAUSED] = { "tollgate_key_paused_seconds_total", "counter",
	    "Time the key spent paused, all pauses.", 1 },
	[KM_DRAINED] = { "tollgate_key_drained", "gauge",
	    "1 while tollctl drain has the key refuse new tickets.", 0 },
};

enum {
	LM_AVAILABLE, LM_NEXT, LM_IN_FLIGHT, LM_EFFECTIVE, LM_LIMIT,
	LM_GRANTED, LM_DENIED, LM_SRV_REMAINING, LM_SRV_RESET, LM_SRV_LIMIT,
	LM_FED_HELD, LM_FED_GRANTED, LM_FED_HOSTS, LM_COUNT
};

static const struct pmetric limit_metrics[LM_COUNT] = {
	[LM_AVAILABLE] = { "tollgate_limit_available", "gauge",
	    "Units of the limit that would fit now (leases for "
	    "concurrency).", 0 },
	[LM_NEXT] = { "tollgate_limit_next_seconds", "gauge",
	    "Time until one more unit fits; absent while a full concurrency "
	    "limit waits for a release.", 1 },
	[LM_IN_FLIGHT] = { "tollgate_limit_in_flight", "gauge",
	    "Leases held on a concurrency limit.", 0 },
	[LM_EFFECTIVE] = { "tollgate_limit_effective", "gauge",
	    "Leases a concurrency limit allows now (adaptive may cut it).",
	    0 },
	[LM_LIMIT] = { "tollgate_limit_size", "gauge",
	    "The limit in force: units per period or window, leases in "
	    "flight.", 0 },
	[LM_GRANTED] = { "tollgate_limit_granted_total", "counter",
	    "Units granted on the limit (leases for concurrency).", 0 },
	[LM_DENIED] = { "tollgate_limit_denied_total", "counter",
	    "Refusals by the limit, polls and waits included: which "
	    "limit binds.", 0 },
	[LM_SRV_REMAINING] = { "tollgate_limit_server_remaining", "gauge",
	    "Units the server said remain, while that caps the limit.", 0 },
	[LM_SRV_RESET] = { "tollgate_limit_server_reset_seconds", "gauge",
	    "Time until the server's remaining resets.", 1 },
	[LM_SRV_LIMIT] = { "tollgate_limit_server_limit", "gauge",
	    "A limit the server reported unlike the configured one.", 0 },
	[LM_FED_HELD] = { "tollgate_limit_federation_held", "gauge",
	    "Units of a global limit's slices this host holds.", 0 },
	[LM_FED_GRANTED] = { "tollgate_limit_federation_granted_total",
	    "counter", "Units of a global limit Redis granted this host.",
	    0 },
	[LM_FED_HOSTS] = { "tollgate_limit_federation_hosts", "gauge",
	    "Hosts leasing a global limit, as its last lease said.", 0 },
};

static const char *const class_names[ST_PAUSED_NS] = {
	[ST_OK] = "ok", [ST_LIMITED] = "limited", [ST_AUTH] = "auth",
	[ST_CLIENT] = "client_error", [ST_SERVER] = "server_error",
};

/* A label value: backslash, double quote and newline escaped. */
static void
prom_esc(FILE *f, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void
prom_head(FILE *f, const struct pmetric *m)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
	    m->type);
}

/* A sample's name and labels (key, limit, class: each NULL if none). */
static void
prom_sample(FILE *f, const struct pmetric *m, const char *key,
    const char *limit, const char *cls, uint64_t v)
{
	const char *lab[3][2] = {
		{ "key", key }, { "limit", limit }, { "class", cls },
	};
	char frac[16];
	int n = 0;

	fputs(m->name, f);
	for (int i = 0; i < 3; i++) {
		if (lab[i][1] == NULL)
			continue;
		fprintf(f, "%s%s=\"", n++ ? "," : "{", lab[i][0]);
		prom_esc(f, lab[i][1]);
		fputc('"', f);
	}
	if (n > 0)
		fputc('}', f);
	if (!m->secs) {
		fprintf(f, " %" PRIu64 "\n", v);
		return;
	}
	/* Exact seconds, trailing zeros off: "12", "0.5", "0.000125". */
	n = snprintf(frac, sizeof(frac), "%09" PRIu64, v % NS_PER_S);
	while (n > 0 && frac[n - 1] == '0')
		frac[--n] = '\0';
	fprintf(f, " %" PRIu64 "%s%s\n", v / NS_PER_S, n > 0 ? "." : "",
	    frac);
}

/* One family of one sample without labels. */
static void
prom_one(FILE *f, const char *name, const char *type, const char *help,
    int secs, uint64_t v)
{
	const struct pmetric m = { name, type, help, secs };

	prom_head(f, &m);
	prom_sample(f, &m, NULL, NULL, NULL, v);
}

/* Limit metric i of l into *v; 0 if it has no sample. */
static int
limit_value(const struct st_limit *l, int i, uint64_t *v)
{
	int conc = l->spec.kind == LIM_CONC;

	switch (i) {
	case LM_AVAILABLE:
		*v = l->available;
		return l->ok;
	case LM_NEXT:
		*v = l->next_ns;
		return l->ok && l->next_ns != NEXT_RELEASE;
	case LM_IN_FLIGHT:
		*v = l->in_flight;
		return conc && l->ok;
	case LM_EFFECTIVE:
		*v = l->eff;
		return conc;
	case LM_LIMIT:
		*v = l->spec.count;
		return 1;
	case LM_GRANTED:
		*v = l->granted;
		return 1;
	case LM_DENIED:
		*v = l->denied;
		return 1;
	case LM_SRV_REMAINING:
		*v = l->srv_left;
		return l->srv_left != UINT64_MAX;
	case LM_SRV_RESET:
		*v = l->srv_reset_ns;
		return l->srv_left != UINT64_MAX;
	case LM_SRV_LIMIT:
		*v = l->srv_limit;
		return l->srv_limit != 0;
	case LM_FED_HELD:
		*v = l->fed_held;
		return l->fed_global;
	case LM_FED_GRANTED:
		*v = l->fed_granted;
		return l->fed_global;
	case LM_FED_HOSTS:
		*v = l->fed_hosts;
		return l->fed_global;
	}
	return 0;
}

/* The limit label of s->limits[j], owned by k: unique within k. */
static const char *
limit_label(const struct snap *s, const struct st_key *k, unsigned j,
    char *buf, size_t len)
{
	unsigned same = 0;

	for (unsigned i = k->first; i < j; i++)
		same += strcmp(s->limits[i].spec_str,
		    s->limits[j].spec_str) == 0;
	if (same == 0)
		return s->limits[j].spec_str;
	snprintf(buf, len, "%s (%u)", s->limits[j].spec_str, same + 1);
	return buf;
}

void
print_prom(FILE *f, const struct snap *s)
{
	char buf[SPEC_MAX + 16];
	uint64_t v;

	/* A hung broker is down: nothing is reclaimed, nothing scrubbed. */
	prom_one(f, "tollgate_broker_up", "gauge",
	    "1 if the segment's broker runs and ticked within 1 s.", 0,
	    s->broker == BROKER_LIVE && s->heartbeat_age_ns <= STALE_NS);
	prom_one(f, "tollgate_broker_uptime_seconds", "gauge",
	    "Time since the broker attached; 0 without one.", 1,
	    s->uptime_ns);
	prom_one(f, "tollgate_heartbeat_age_seconds", "gauge",
	    "Time since the broker's last tick; over 1 s it hangs.", 1,
	    s->heartbeat_age_ns);
	prom_one(f, "tollgate_broker_repairs_total", "counter",
	    "State garbage the broker fixed.", 0, s->repairs);
	if (s->fed_state != 0)
		prom_one(f, "tollgate_federation_up", "gauge",
		    "1 if the broker is connected to the federation's Redis.",
		    0, (s->fed_state & SEG_FED_UP) != 0);
	prom_one(f, "tollgate_config_generation", "gauge",
	    "Publish count of the config copy.", 0, s->gen);
	prom_one(f, "tollgate_clients", "gauge",
	    "Client slots of running clients.", 0, s->clients);
	prom_one(f, "tollgate_client_slots", "gauge",
	    "Client slots in the segment.", 0, s->max_clients);
	/* One family, a request label: actions and refusals of tollctl. */
	fputs("# HELP tollgate_ctl_requests_total Requests of tollctl the "
	    "broker did or refused, by request.\n# TYPE "
	    "tollgate_ctl_requests_total counter\n", f);
	for (int i = 0; i < SEG_CTL_COUNT; i++)
		fprintf(f, "tollgate_ctl_requests_total{request=\"%s\"} %"
		    PRIu64 "\n", ctl_names[i], s->ctl.count[i]);
	prom_one(f, "tollgate_tickets_acquired_total", "counter",
	    "Tickets acquired, all clients.", 0, s->acquired);
	prom_one(f, "tollgate_tickets_denied_total", "counter",
	    "Tickets given up: tg_acquire or tg_reserve out of time, all "
	    "clients.", 0, s->denied);
	prom_one(f, "tollgate_tickets_released_total", "counter",
	    "Tickets released, all clients.", 0, s->released);
	prom_one(f, "tollgate_acquire_waits_total", "counter",
	    "tg_acquire calls that slept, all clients.", 0, s->waits);
	prom_one(f, "tollgate_acquire_polls_total", "counter",
	    "Not-now answers (-EAGAIN) of tg_try_acquire and tg_reserve, all "
	    "clients: polls, not refusals.", 0, s->polls);

	for (int m = 0; m < KM_COUNT; m++) {
		prom_head(f, &key_metrics[m]);
		for (unsigned i = 0; i < s->nkeys; i++) {
			const struct st_key *k = &s->keys[i];

			switch (m) {
			case KM_GRANTED:
				v = k->granted;
				break;
			case KM_DENIED:
				v = k->denied;
				break;
			case KM_RESPONSES:
				for (int c = 0; c < ST_PAUSED_NS; c++)
					prom_sample(f, &key_metrics[m],
					    k->name, NULL, class_names[c],
					    k->status[c]);
				continue;
			case KM_PAUSE:
				v = k->paused_ns;
				break;
			case KM_DRAINED:
				v = (uint64_t)k->drained;
				break;
			default:
				v = k->status[ST_PAUSED_NS];
				break;
			}
			prom_sample(f, &key_metrics[m], k->name, NULL, NULL,
			    v);
		}
	}

	for (int m = 0; m < LM_COUNT; m++) {
		/* A broker without federation has none of its families. */
		if (m >= LM_FED_HELD && s->fed_state == 0)
			break;
		prom_head(f, &limit_metrics[m]);
		for (unsigned i = 0; i < s->nkeys; i++) {
			const struct st_key *k = &s->keys[i];

			for (unsigned j = k->first; j < k->first + k->nlimits;
			    j++)
				if (limit_value(&s->limits[j], m, &v))
					prom_sample(f, &limit_metrics[m],
					    k->name, limit_label(s, k, j, buf,
					    sizeof(buf)), NULL, v);
		}
	}
}

