/*
 * goodput_report.c: the goodput section as text and as JSON, and its
 * targets (issue 13), reported, never asserted.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

static double
per100(const struct gp_cell *c)
{
	return c->requests ? 100.0 * c->rejected / c->requests : NAN;
}

static double
util(const struct gp_cell *c)
{
	return c->makespan_s > 0 && c->complete ? c->min_s / c->makespan_s :
	    NAN;
}

/*
 * tollgate's targets: with the matching config at least 0.97 of the
 * minimum and at most 1 429 per 100 requests; with a config twice too
 * generous 0.90 and 10.  1 and the bounds if c has targets, else 0.
 */
int
gp_target(const struct gp_cell *c, double *util_min, double *per100_max)
{
	if (c->model == NULL || strstr(c->name, "-tg-") == NULL)
		return 0;
	*util_min = c->factor == 1 ? 0.97 : 0.90;
	*per100_max = c->factor == 1 ? 1 : 10;
	return 1;
}

/* 1 met, 0 missed, -1 no target or not measured. */
static int
gp_met(const struct gp_cell *c)
{
	double u, p;

	if (!gp_target(c, &u, &p) || !c->done)
		return -1;
	return c->complete && util(c) >= u && per100(c) <= p;
}

static const char *
config_of(const struct gp_cell *c)
{
	if (strstr(c->name, "-none") != NULL)
		return "-";
	return c->factor == 1 ? "match" : "2x";
}

void
goodput_table(FILE *f, const struct results *res)
{
	const struct goodput *g = res->gp;
	const struct gp_model *last = NULL;
	unsigned nt = 0, nmet = 0;

	if (g == NULL || g->ncells == 0)
		return;
	fprintf(f, "\ngoodput: %u worker processes share a fixed batch of "
	    "jobs, one request each,\n  against a strict provider on "
	    "127.0.0.1 (HTTP/1.1, limits time-scaled), a\n  fresh one per "
	    "cell.  match: the config says the provider's limits; 2x:\n  "
	    "twice them.\n  429/100: refused per 100 requests; util: "
	    "theoretical minimum makespan over\n  makespan; silence: longest "
	    "gap between accepted requests; herd: most\n  requests in the "
	    "first 100 ms after a 429's \"ready again\" (-: no 429); wait:\n"
	    "  a job's longest, taken to sent; fcfs: the longest first come "
	    "first served\n  gives with the same sends; fair: Jain's index "
	    "of the workers' jobs (1: even)\n", GP_WORKERS);
	for (unsigned i = 0; i < g->ncells; i++) {
		const struct gp_cell *c = &g->cells[i];
		char herd[16], tgt[16];
		int m;

		if (c->model != last) {
			last = c->model;
			fprintf(f, "\n%s: %s\n%-30s %6s %5s %5s %7s %6s %6s "
			    "%5s %8s %4s %7s %6s %4s %s\n", c->model->name,
			    c->model->label, "limiter", "config", "jobs",
			    "reqs", "429/100", "make s", "min s", "util",
			    "silence", "herd", "wait", "fcfs", "fair",
			    "target");
		}
		if (c->skipped != NULL) {
			fprintf(f, "%-30s %6s  skipped: %s\n",
			    c->strategy_label, config_of(c), c->skipped);
			continue;
		}
		if (c->herd < 0)
			snprintf(herd, sizeof(herd), "-");
		else
			snprintf(herd, sizeof(herd), "%d", c->herd);
		m = gp_met(c);
		snprintf(tgt, sizeof(tgt), "%s", m < 0 ? "" : m ? "met" :
		    "MISSED");
		nt += m >= 0;
		nmet += m > 0;
		fprintf(f, "%-30s %6s %5u %5u %7.1f %6.2f %6.2f %5.2f "
		    "%6.0fms %4s %5.0fms %4.0fms %4.2f %s%s\n",
		    c->strategy_label, config_of(c), c->jobs, c->requests,
		    per100(c), c->makespan_s, c->min_s, util(c),
		    c->silence_s * 1e3, herd, c->wait_s * 1e3,
		    c->fcfs_wait_s * 1e3, c->fair, tgt, c->complete ? "" :
		    " (incomplete)");
	}
	if (nt > 0)
		fprintf(f, "\ngoodput targets (reported, not asserted): "
		    "tollgate, match: util >= 0.97 and\n  429/100 <= 1; 2x: "
		    "util >= 0.90 and 429/100 <= 10.  Met in %u of %u cells\n",
		    nmet, nt);
}

/* ,\n  "goodput": {...}: what goes after the report's last member. */
void
goodput_json(FILE *f, const struct results *res)
{
	const struct goodput *g = res->gp;
	double u, p;
	int m;

	fprintf(f, ",\n  \"goodput\": ");
	if (g == NULL) {
		fprintf(f, "null");
		return;
	}
	fprintf(f, "{\"workers\": %u, \"herd_window_ms\": 100, \"cells\": [",
	    GP_WORKERS);
	for (unsigned i = 0; i < g->ncells; i++) {
		const struct gp_cell *c = &g->cells[i];

		fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
		json_str(f, c->name);
		fprintf(f, ", \"model\": ");
		json_str(f, c->model->name);
		fprintf(f, ", \"provider\": ");
		json_str(f, c->model->label);
		fprintf(f, ", \"limiter\": ");
		json_str(f, c->strategy_label);
		fprintf(f, ", \"config\": ");
		json_str(f, config_of(c));
		if (c->skipped != NULL) {
			fprintf(f, ", \"skipped\": ");
			json_str(f, c->skipped);
			fprintf(f, "}");
			continue;
		}
		fprintf(f, ", \"measured\": %s, \"complete\": %s, "
		    "\"jobs_done\": %u, \"requests\": %u, \"rejected\": %u, "
		    "\"rejected_per_100\": ", c->done ? "true" : "false",
		    c->complete ? "true" : "false", c->jobs, c->requests,
		    c->rejected);
		json_num(f, per100(c));
		fprintf(f, ", \"makespan_s\": ");
		json_num(f, c->makespan_s);
		fprintf(f, ", \"min_s\": ");
		json_num(f, c->min_s);
		fprintf(f, ", \"utilisation\": ");
		json_num(f, util(c));
		fprintf(f, ", \"longest_silence_s\": ");
		json_num(f, c->silence_s);
		fprintf(f, ", \"herd\": ");
		if (c->herd < 0)
			fprintf(f, "null");
		else
			fprintf(f, "%d", c->herd);
		fprintf(f, ", \"longest_wait_s\": ");
		json_num(f, c->wait_s);
		fprintf(f, ", \"fcfs_wait_s\": ");
		json_num(f, c->fcfs_wait_s);
		fprintf(f, ", \"fairness\": ");
		json_num(f, c->fair);
		fprintf(f, ", \"worker_jobs_min\": %u, \"worker_jobs_max\": "
		    "%u", c->jobs_min, c->jobs_max);
		fprintf(f, ", \"target\": ");
		if (gp_target(c, &u, &p)) {
			m = gp_met(c);
			fprintf(f, "{\"utilisation_min\": %g, "
			    "\"rejected_per_100_max\": %g, \"met\": %s}", u, p,
			    m < 0 ? "null" : m ? "true" : "false");
		} else
			fprintf(f, "null");
		fprintf(f, "}");
	}
	fprintf(f, "\n  ]}");
}
