/*
 * report.c: the machine, the table, the latencies, the memory and the
 * targets of issue 5, as text or as JSON.  Targets are reported, never
 * asserted: a missed one is a finding, not a failure of the bench.
 */
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

/* A target: measured against limit, by op ("<=", ">=", "<"). */
struct target {
	const char	*name;
	const char	*what;
	const char	*op;
	double		limit;
	double		measured;	/* NAN: not measured */
	const char	*unit;		/* "x", "us", "ms" */
	char		detail[96];
};

#define NTARGETS	7

void
machine_info(struct results *res)
{
	struct utsname u;
	char line[512], *p;
	FILE *f;

	snprintf(res->cpu, sizeof(res->cpu), "unknown CPU");
	if ((f = fopen("/proc/cpuinfo", "r")) != NULL) {
		while (fgets(line, sizeof(line), f))
			if (strncmp(line, "model name", 10) == 0 &&
			    (p = strchr(line, ':')) != NULL) {
				p += strspn(p + 1, " \t") + 1;
				p[strcspn(p, "\n")] = '\0';
				snprintf(res->cpu, sizeof(res->cpu), "%s", p);
				break;
			}
		fclose(f);
	}
	res->ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (uname(&u) == 0)
		snprintf(res->kernel, sizeof(res->kernel), "%s %s %s",
		    u.sysname, u.release, u.machine);
	if (getloadavg(res->load_before, 3) < 0)
		res->load_before[0] = -1;
}

/* Busy and stolen CPU seconds of the machine so far, from /proc/stat. */
static void
proc_stat(double *busy, double *steal)
{
	unsigned long long v[8] = { 0 };
	long hz = sysconf(_SC_CLK_TCK);
	FILE *f;

	*busy = *steal = 0;
	if ((f = fopen("/proc/stat", "r")) == NULL)
		return;
	/* cpu user nice system idle iowait irq softirq steal */
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
	    &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8 && hz > 0) {
		*busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / (double)hz;
		*steal = (double)v[7] / (double)hz;
	}
	fclose(f);
}

static double
tv_s(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/*
 * At the start (end = 0) and at the end, after every child is reaped:
 * how much CPU the machine, the bench and the hypervisor took in between.
 * What the machine used beyond the bench is the noise the figures ran in.
 */
void
cpu_account(struct results *res, int end)
{
	static double busy0, steal0, ours0, wall0;
	struct rusage self, kids;
	double busy, steal, ours;

	proc_stat(&busy, &steal);
	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &kids);
	ours = tv_s(self.ru_utime) + tv_s(self.ru_stime) +
	    tv_s(kids.ru_utime) + tv_s(kids.ru_stime);
	if (!end) {
		busy0 = busy;
		steal0 = steal;
		ours0 = ours;
		wall0 = (double)now_ns_bench() / 1e9;
		return;
	}
	res->cpu_all_s = busy - busy0;
	res->cpu_ours_s = ours - ours0;
	res->cpu_steal_s = steal - steal0;
	res->wall_s = (double)now_ns_bench() / 1e9 - wall0;
}

/* CPU seconds other processes used during the run, never below 0. */
static double
cpu_others(const struct results *res)
{
	double o = res->cpu_all_s - res->cpu_ours_s;

	return o > 0 ? o : 0;
}

static const struct row *
find_row(const struct results *res, const char *name)
{
	for (unsigned i = 0; i < res->nrows; i++)
		if (strcmp(res->rows[i]->name, name) == 0)
			return res->rows[i];
	return NULL;
}

/* ns/op of row `name' at `procs' processes, or NAN. */
static double
ns_at(const struct results *res, const char *name, unsigned procs)
{
	const struct row *r = find_row(res, name);
	struct figure f;

	if (r == NULL || r->skipped != NULL)
		return NAN;
	for (unsigned pi = 0; pi < opt.nprocs; pi++)
		if (opt.procs[pi] == procs) {
			row_figure(r, pi, &f);
			return f.ok ? f.ns_per_op : NAN;
		}
	return NAN;
}

static void
targets(const struct results *res, struct target *t)
{
	double one1 = ns_at(res, "tg-one", 1), one2 = ns_at(res, "tg-one", 2);
	double floor1 = ns_at(res, "floor-gcra", 1);
	double mutex2 = ns_at(res, "alt-mutex", 2);
	double five1 = ns_at(res, "tg-five", 1);
	double sock1 = ns_at(res, "alt-socket", 1);
	double redis1 = ns_at(res, "alt-redis", 1);
	const struct latency *w = res->lat[0], *k = res->lat[1];

	memset(t, 0, NTARGETS * sizeof(*t));
	t[0] = (struct target){ "gcra-floor", "1 rate limit vs the GCRA "
	    "floor, 1 proc", "<=", 1.3, one1 / floor1, "x", "" };
	snprintf(t[0].detail, sizeof(t[0].detail), "%.1f vs %.1f ns", one1,
	    floor1);
	t[1] = (struct target){ "mutex", "1 rate limit vs the mutex, 2 "
	    "procs", "<=", 1.0, one2 / mutex2, "x", "" };
	snprintf(t[1].detail, sizeof(t[1].detail), "%.1f vs %.1f ns", one2,
	    mutex2);
	t[2] = (struct target){ "five-limits", "5-limit ticket vs 1 rate "
	    "limit, 1 proc", "<=", 4.0, five1 / one1, "x", "" };
	snprintf(t[2].detail, sizeof(t[2].detail), "%.1f vs %.1f ns", five1,
	    one1);
	t[3] = (struct target){ "socket", "Unix-socket broker / 1 rate "
	    "limit, 1 proc", ">=", 300, sock1 / one1, "x", "" };
	snprintf(t[3].detail, sizeof(t[3].detail), "%.0f vs %.1f ns", sock1,
	    one1);
	t[4] = (struct target){ "redis", "Redis Lua GCRA / 1 rate limit, 1 "
	    "proc", ">=", 500, redis1 / one1, "x", "" };
	snprintf(t[4].detail, sizeof(t[4].detail), "%.0f vs %.1f ns", redis1,
	    one1);
	t[5] = (struct target){ "wakeup-p99", "tg_acquire wake-up p99", "<",
	    100, w && w->n ? (double)w->p99_ns / 1e3 : NAN, "us", "" };
	t[6] = (struct target){ "reclaim-p99", "reclaim after SIGKILL p99",
	    "<", 20, k && k->n ? (double)k->p99_ns / 1e6 : NAN, "ms", "" };
}

/* 1 met, 0 missed, -1 not measured. */
static int
met(const struct target *t)
{
	if (isnan(t->measured))
		return -1;
	if (strcmp(t->op, "<=") == 0)
		return t->measured <= t->limit;
	if (strcmp(t->op, ">=") == 0)
		return t->measured >= t->limit;
	return t->measured < t->limit;
}

static void
header(FILE *f, const struct results *res)
{
	fprintf(f, "tollbench: tollgate beside a CAS floor and what users "
	    "would pick instead\n");
	fprintf(f, "machine: %s, %ld CPUs, %s\n", res->cpu, res->ncpu,
	    res->kernel);
	fprintf(f, "load: %.2f %.2f %.2f before; during the %.1f s run, other "
	    "processes used\n  %.1f CPU-s (%.0f%% of one CPU), the hypervisor "
	    "stole %.1f CPU-s\n", res->load_before[0], res->load_before[1],
	    res->load_before[2], res->wall_s, cpu_others(res),
	    res->wall_s > 0 ? 100 * cpu_others(res) / res->wall_s : 0,
	    res->cpu_steal_s);
	fprintf(f, "runs: median of %u run%s of %.0f ms; processes forked, "
	    "released together by a\n  barrier in shared memory, %s\n",
	    opt.runs, opt.runs == 1 ? "" : "s",
	    (double)opt.duration_ns / 1e6, opt.pin ? "process i pinned to "
	    "CPU i mod the CPU count" : "not pinned");
	fprintf(f, "ns/op: each process's time per operation (the sum of "
	    "the processes' times\n  over all their ops); Mops/s: all "
	    "processes together; retry/op: failed\n  CAS per operation (-: "
	    "not counted%s); fair: the slowest process's\n  ops/s over the "
	    "fastest's (1.00: even)\n\n", res->casstat ? "" : ", the "
	    "library was built without TG_CASSTAT");
}

void
report_table(FILE *f, const struct results *res)
{
	struct target t[NTARGETS];
	struct figure fg;
	int refused = 0;

	header(f, res);
	fprintf(f, "%-52s %5s %9s %8s %8s %5s\n", "operation", "procs",
	    "ns/op", "Mops/s", "retry/op", "fair");
	for (unsigned i = 0; i < res->nrows; i++) {
		const struct row *r = res->rows[i];

		if (r->skipped != NULL) {
			fprintf(f, "%-52s  skipped: %s\n", r->label,
			    r->skipped);
			continue;
		}
		for (unsigned pi = 0; pi < opt.nprocs; pi++) {
			char retry[16];

			row_figure(r, pi, &fg);
			if (!fg.ok) {
				fprintf(f, "%-52s %5u  not measured\n",
				    pi == 0 ? r->label : "", opt.procs[pi]);
				continue;
			}
			if (fg.retries_per_op < 0)
				snprintf(retry, sizeof(retry), "-");
			else
				snprintf(retry, sizeof(retry), "%.4f",
				    fg.retries_per_op);
			fprintf(f, "%-52s %5u %9.1f %8.3f %8s %5.2f%s\n",
			    pi == 0 ? r->label : "", opt.procs[pi],
			    fg.ns_per_op, fg.mops, retry, fg.fair,
			    fg.refused ? "  (refusals!)" : "");
			refused |= fg.refused != 0;
		}
	}
	if (refused)
		fprintf(f, "(refusals!): some operations were refused: not "
		    "only the grant path was measured\n");

	if (res->lat[0] != NULL || res->lat[1] != NULL)
		fprintf(f, "\n%-46s %7s %9s %9s %9s\n", "latency",
		    "samples", "p50 us", "p99 us", "max us");
	for (unsigned i = 0; i < 2; i++) {
		const struct latency *l = res->lat[i];

		if (l == NULL)
			continue;
		if (l->skipped != NULL || l->n == 0) {
			fprintf(f, "%-46s  skipped: %s\n", l->label,
			    l->skipped ? l->skipped : "no samples");
			continue;
		}
		fprintf(f, "%-46s %7u %9.1f %9.1f %9.1f\n", l->label, l->n,
		    (double)l->p50_ns / 1e3, (double)l->p99_ns / 1e3,
		    (double)l->max_ns / 1e3);
	}

	if (res->mem != NULL) {
		const struct memory *m = res->mem;

		fprintf(f, "\nmemory: a broker with %u keys of %u limits, "
		    "max_clients %u\n", m->keys, m->limits_per_key,
		    m->max_clients);
		if (m->skipped != NULL)
			fprintf(f, "  skipped: %s\n", m->skipped);
		else {
			fprintf(f, "  segment config object  %10llu bytes "
			    "(%llu KiB in memory)\n",
			    (unsigned long long)m->conf_bytes,
			    (unsigned long long)m->conf_alloc / 1024);
			fprintf(f, "  segment state object   %10llu bytes "
			    "(%llu KiB in memory)\n",
			    (unsigned long long)m->state_bytes,
			    (unsigned long long)m->state_alloc / 1024);
			fprintf(f, "  broker VmRSS %llu KiB, Pss %llu KiB, of "
			    "which shared memory %llu KiB\n",
			    (unsigned long long)m->rss_kb,
			    (unsigned long long)(m->pss_kb == NA ? 0 :
			    m->pss_kb), (unsigned long long)(m->rss_shmem_kb ==
			    NA ? 0 : m->rss_shmem_kb));
		}
	}

	goodput_table(f, res);
	targets(res, t);
	fprintf(f, "\ntargets (reported, not asserted)\n");
	for (unsigned i = 0; i < NTARGETS; i++) {
		const char *sp = strcmp(t[i].unit, "x") ? " " : "";
		char got[32], want[32];
		int m = met(&t[i]);

		if (m < 0)
			snprintf(got, sizeof(got), "n/a");
		else
			snprintf(got, sizeof(got), "%.*f%s%s",
			    t[i].measured >= 100 ? 0 : 2, t[i].measured, sp,
			    t[i].unit);
		snprintf(want, sizeof(want), "%s %g%s%s", t[i].op,
		    t[i].limit, sp, t[i].unit);
		fprintf(f, "  %-42s %12s  %-10s %-7s %s\n", t[i].what, got,
		    want, m < 0 ? "n/a" : m ? "met" : "MISSED", m < 0 ? "" :
		    t[i].detail);
	}
	if (res->failed != NULL)
		fprintf(f, "\nfailed: %s\n", res->failed);
}

void
json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s != NULL && *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

void
json_num(FILE *f, double v)
{
	if (isnan(v) || isinf(v))
		fputs("null", f);
	else
		fprintf(f, "%.6g", v);
}

void
report_json(FILE *f, const struct results *res)
{
	struct target t[NTARGETS];
	struct figure fg;
	const char *sep = "";

	fprintf(f, "{\n  \"machine\": {\"cpu\": ");
	json_str(f, res->cpu);
	fprintf(f, ", \"ncpu\": %ld, \"kernel\": ", res->ncpu);
	json_str(f, res->kernel);
	fprintf(f, ", \"load_before\": [%.2f, %.2f, %.2f], \"load_after\": "
	    "[%.2f, %.2f, %.2f], \"wall_s\": %.1f, \"cpu_others_s\": %.2f, "
	    "\"cpu_bench_s\": %.2f, \"cpu_steal_s\": %.2f},\n",
	    res->load_before[0], res->load_before[1], res->load_before[2],
	    res->load_after[0], res->load_after[1], res->load_after[2],
	    res->wall_s, cpu_others(res), res->cpu_ours_s, res->cpu_steal_s);
	fprintf(f, "  \"settings\": {\"duration_ms\": %.3f, \"runs\": %u, "
	    "\"procs\": [", (double)opt.duration_ns / 1e6, opt.runs);
	for (unsigned pi = 0; pi < opt.nprocs; pi++)
		fprintf(f, "%s%u", pi ? ", " : "", opt.procs[pi]);
	fprintf(f, "], \"handoffs\": %u, \"kills\": %u, \"casstat\": %s, "
	    "\"pinned\": %s},\n", opt.handoffs, opt.kills, res->casstat ?
	    "true" : "false", opt.pin ? "true" : "false");

	fprintf(f, "  \"rows\": [");
	for (unsigned i = 0; i < res->nrows; i++) {
		const struct row *r = res->rows[i];

		fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
		json_str(f, r->name);
		fprintf(f, ", \"label\": ");
		json_str(f, r->label);
		if (r->skipped != NULL) {
			fprintf(f, ", \"skipped\": ");
			json_str(f, r->skipped);
			fprintf(f, ", \"results\": []}");
			continue;
		}
		fprintf(f, ", \"results\": [");
		for (unsigned pi = 0; pi < opt.nprocs; pi++) {
			row_figure(r, pi, &fg);
			fprintf(f, "%s\n      {\"procs\": %u, \"measured\": %s",
			    pi ? "," : "", opt.procs[pi], fg.ok ? "true" :
			    "false");
			fprintf(f, ", \"ns_per_op\": ");
			json_num(f, fg.ok ? fg.ns_per_op : NAN);
			fprintf(f, ", \"mops\": ");
			json_num(f, fg.ok ? fg.mops : NAN);
			fprintf(f, ", \"cas_retries_per_op\": ");
			json_num(f, fg.ok && fg.retries_per_op >= 0 ?
			    fg.retries_per_op : NAN);
			fprintf(f, ", \"cpu_ns_per_op\": ");
			json_num(f, fg.ok ? fg.cpu_ns_per_op : NAN);
			fprintf(f, ", \"fairness\": ");
			json_num(f, fg.ok ? fg.fair : NAN);
			fprintf(f, ", \"ops\": %llu, \"refused\": %llu, "
			    "\"runs_ns_per_op\": [", (unsigned long long)fg.ops,
			    (unsigned long long)fg.refused);
			sep = "";
			for (unsigned k = 0; k < opt.runs; k++) {
				const struct run_result *rr = &r->res[pi][k];

				if (!rr->done)
					continue;
				fprintf(f, "%s", sep);
				json_num(f, (double)rr->proc_ns / (double)rr->ops);
				sep = ", ";
			}
			fprintf(f, "]}");
		}
		fprintf(f, "]}");
	}
	fprintf(f, "\n  ],\n  \"latency\": [");
	sep = "";
	for (unsigned i = 0; i < 2; i++) {
		const struct latency *l = res->lat[i];

		if (l == NULL)
			continue;
		fprintf(f, "%s\n    {\"name\": ", sep);
		json_str(f, l->name);
		fprintf(f, ", \"label\": ");
		json_str(f, l->label);
		if (l->skipped != NULL || l->n == 0) {
			fprintf(f, ", \"skipped\": ");
			json_str(f, l->skipped ? l->skipped : "no samples");
		} else
			fprintf(f, ", \"samples\": %u, \"min_ns\": %llu, "
			    "\"p50_ns\": %llu, \"p99_ns\": %llu, \"max_ns\": "
			    "%llu", l->n, (unsigned long long)l->min_ns,
			    (unsigned long long)l->p50_ns,
			    (unsigned long long)l->p99_ns,
			    (unsigned long long)l->max_ns);
		fprintf(f, "}");
		sep = ",";
	}
	fprintf(f, "\n  ],\n  \"memory\": ");
	if (res->mem == NULL)
		fprintf(f, "null");
	else if (res->mem->skipped != NULL) {
		fprintf(f, "{\"skipped\": ");
		json_str(f, res->mem->skipped);
		fprintf(f, "}");
	} else {
		const struct memory *m = res->mem;

		fprintf(f, "{\"keys\": %u, \"limits_per_key\": %u, "
		    "\"max_clients\": %u, \"conf_bytes\": %llu, "
		    "\"state_bytes\": %llu, \"conf_alloc_bytes\": %llu, "
		    "\"state_alloc_bytes\": %llu, \"broker_rss_kb\": %llu, "
		    "\"broker_pss_kb\": ", m->keys, m->limits_per_key,
		    m->max_clients, (unsigned long long)m->conf_bytes,
		    (unsigned long long)m->state_bytes,
		    (unsigned long long)m->conf_alloc,
		    (unsigned long long)m->state_alloc,
		    (unsigned long long)m->rss_kb);
		json_num(f, m->pss_kb == NA ? NAN : (double)m->pss_kb);
		fprintf(f, ", \"broker_rss_shmem_kb\": ");
		json_num(f, m->rss_shmem_kb == NA ? NAN : (double)m->rss_shmem_kb);
		fprintf(f, "}");
	}
	goodput_json(f, res);
	targets(res, t);
	fprintf(f, ",\n  \"targets\": [");
	for (unsigned i = 0; i < NTARGETS; i++) {
		int m = met(&t[i]);

		fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
		json_str(f, t[i].name);
		fprintf(f, ", \"what\": ");
		json_str(f, t[i].what);
		fprintf(f, ", \"measured\": ");
		json_num(f, t[i].measured);
		fprintf(f, ", \"op\": ");
		json_str(f, t[i].op);
		fprintf(f, ", \"target\": %g, \"unit\": ", t[i].limit);
		json_str(f, t[i].unit);
		fprintf(f, ", \"met\": %s}", m < 0 ? "null" : m ? "true" :
		    "false");
	}
	fprintf(f, "\n  ],\n  \"cleanup\": {\"segments\": [");
	for (unsigned i = 0; i < res->nsegments; i++) {
		fprintf(f, "%s", i ? ", " : "");
		json_str(f, res->segments[i]);
	}
	fprintf(f, "], \"tmpdir\": ");
	json_str(f, res->tmpdir);
	fprintf(f, ", \"pids\": [");
	for (unsigned i = 0; i < res->npids; i++)
		fprintf(f, "%s%d", i ? ", " : "", (int)res->pids[i]);
	fprintf(f, "]},\n  \"failed\": ");
	if (res->failed != NULL)
		json_str(f, res->failed);
	else
		fprintf(f, "null");
	fprintf(f, "\n}\n");
}
