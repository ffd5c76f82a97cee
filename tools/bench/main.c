/*
 * main.c: tollbench, the benchmark of issue 5: tollgate's hot path beside
 * the floors no limiter can beat and the alternatives users would pick
 * instead, all measured in one process tree, in one run.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

struct opts opt = {
	.duration_ns = 250000000,
	.runs = 3,
	.procs = { 1, 2, 4, 8 },
	.nprocs = 4,
	.handoffs = 1000,
	.kills = 100,
	.pin = 1,
};

struct results R;

static struct broker main_broker;
static struct latency lat_wake = { .name = "lat-wakeup", .label =
    "tg_acquire wake-up: tg_release to the waiter" };
static struct latency lat_reclaim = { .name = "lat-reclaim", .label =
    "reclaim: SIGKILL of a holder to its lease free" };
static struct memory mem;

static void __attribute__((noreturn))
usage(int st)
{
	fprintf(st ? stderr : stdout,
	    "usage: tollbench [--json] [--quick] [--duration MS] [--runs N]\n"
	    "                 [--procs 1,2,4,8] [--only NAME,...] "
	    "[--handoffs N] [--kills N] [--no-pin] [-v]\n"
	    "                 [--jobs N]\n"
	    "names: floor-cas floor-clock floor-gcra tg-one tg-five tg-tree "
	    "tg-observe\n"
	    "       alt-mutex alt-socket alt-redis lat-wakeup lat-reclaim "
	    "memory\n"
	    "       gp-MODEL-LIMITER[-1x|-2x]: MODEL retry-after openai "
	    "anthropic window,\n"
	    "       LIMITER none local redis tg (goodput; --jobs: its batch)\n"
	    "       (--only takes prefixes: --only tg,floor,gp-openai)\n");
	exit(st);
}

static unsigned long
number(const char *s, const char *what, unsigned long lo, unsigned long hi)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "tollbench: %s `%s': want %lu..%lu\n", what, s,
		    lo, hi);
		exit(2);
	}
	return v;
}

static void
parse_procs(const char *s)
{
	char buf[128], *tok, *save = NULL;

	if (strlen(s) >= sizeof(buf))
		usage(2);
	snprintf(buf, sizeof(buf), "%s", s);
	opt.nprocs = 0;
	for (tok = strtok_r(buf, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		if (opt.nprocs == BENCH_NPROCS_MAX)
			usage(2);
		opt.procs[opt.nprocs++] = (unsigned)number(tok, "--procs", 1,
		    BENCH_PROCS_MAX);
	}
	if (opt.nprocs == 0)
		usage(2);
}

/* $TG_BUILD, else the directory tollbench runs from. */
static void
build_dir(const char *argv0)
{
	const char *e = getenv("TG_BUILD");
	char self[PATH_MAX];
	ssize_t n;

	if (e != NULL && *e != '\0') {
		snprintf(opt.build, sizeof(opt.build), "%s", e);
		return;
	}
	if (strchr(argv0, '/') != NULL)
		snprintf(self, sizeof(self), "%s", argv0);
	else if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) > 0)
		self[n] = '\0';
	else
		snprintf(self, sizeof(self), "build/tollbench");
	snprintf(opt.build, sizeof(opt.build), "%s", dirname(self));
}

struct row *
row_add(struct results *res, const char *name, const char *label)
{
	struct row **rows, *r;

	if (!bench_match(name))
		return NULL;
	if ((r = calloc(1, sizeof(*r))) == NULL || (rows = realloc(res->rows,
	    (res->nrows + 1) * sizeof(*rows))) == NULL) {
		free(r);
		res->failed = "out of memory";
		return NULL;
	}
	r->name = name;
	r->label = label;
	res->rows = rows;
	res->rows[res->nrows++] = r;
	return r;
}

/* Whether any name starting with one of prefixes is selected. */
static int
wanted(const char *names)
{
	char buf[256], *tok, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", names);
	for (tok = strtok_r(buf, " ", &save); tok != NULL;
	    tok = strtok_r(NULL, " ", &save))
		if (bench_match(tok))
			return 1;
	return 0;
}

static void
note_failure(const char *what, int err)
{
	static char buf[256];

	if (err == -EINTR || bench_signal)
		return;
	bench_warnx("%s: %s", what, strerror(-err));
	if (R.failed == NULL) {
		snprintf(buf, sizeof(buf), "%s: %s", what, strerror(-err));
		R.failed = buf;
	}
}

/* Every timed row at every process count, run after run. */
static void
timed_rows(void)
{
	for (unsigned run = 0; run < opt.runs && !bench_signal; run++)
		for (unsigned i = 0; i < R.nrows && !bench_signal; i++) {
			struct row *r = R.rows[i];

			if (r->skipped != NULL)
				continue;
			for (unsigned pi = 0; pi < opt.nprocs; pi++) {
				int e;

				progress("run %u/%u: %s at %u", run + 1,
				    opt.runs, r->name, opt.procs[pi]);
				if ((e = harness_run(r, pi, run)) < 0) {
					note_failure(r->name, e);
					if (!bench_signal)
						r->skipped = "failed to run";
					break;
				}
			}
		}
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "duration", required_argument, NULL, 'd' },
		{ "runs", required_argument, NULL, 'r' },
		{ "procs", required_argument, NULL, 'p' },
		{ "json", no_argument, NULL, 'j' },
		{ "quick", no_argument, NULL, 'q' },
		{ "only", required_argument, NULL, 'o' },
		{ "handoffs", required_argument, NULL, 'H' },
		{ "kills", required_argument, NULL, 'K' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "jobs", required_argument, NULL, 'J' },
		{ "no-pin", no_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch, e, broker_up = 0;

	while ((ch = getopt_long(argc, argv, "d:r:p:jqo:H:K:vh", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'd':
			opt.duration_ns = number(optarg, "--duration", 1,
			    600000) * 1000000ull;
			break;
		case 'r':
			opt.runs = (unsigned)number(optarg, "--runs", 1,
			    BENCH_RUNS_MAX);
			break;
		case 'p':
			parse_procs(optarg);
			break;
		case 'j':
			opt.json = 1;
			break;
		case 'q':
			/* The smoke test's pass: every figure, briefly. */
			opt.duration_ns = 20000000;
			opt.runs = 1;
			opt.procs[0] = 1;
			opt.procs[1] = 2;
			opt.nprocs = 2;
			opt.handoffs = 50;
			opt.kills = 10;
			opt.gp_quick = 1;
			break;
		case 'o':
			opt.only = optarg;
			break;
		case 'H':
			opt.handoffs = (unsigned)number(optarg, "--handoffs", 1,
			    BENCH_LAT_MAX);
			break;
		case 'K':
			opt.kills = (unsigned)number(optarg, "--kills", 1,
			    BENCH_LAT_MAX);
			break;
		case 'v':
			opt.verbose = 1;
			break;
		case 'J':
			opt.gp_jobs = (unsigned)number(optarg, "--jobs", 1,
			    10000);
			break;
		case 'P':
			opt.pin = 0;
			break;
		case 'h':
			usage(0);
		default:
			usage(2);
		}
	}
	if (optind != argc)
		usage(2);
	build_dir(argv[0]);
	signals_install();
	/* Output after cleanup: the report says what was removed. */
	if ((e = harness_init()) < 0) {
		bench_warnx("shared memory: %s", strerror(-e));
		return 1;
	}
	machine_info(&R);
	cpu_account(&R, 0);
	R.casstat = casstat_linked();
	if (tmpdir_get() == NULL) {
		bench_warnx("cannot make a temp directory: %s",
		    strerror(errno));
		return 1;
	}
	snprintf(R.tmpdir, sizeof(R.tmpdir), "%s", tmpdir_get());

	floors_rows(&R);
	if (wanted("tg-one tg-five tg-tree tg-observe lat-wakeup "
	    "lat-reclaim")) {
		progress("starting tollgated from %s", opt.build);
		if ((e = broker_start(&main_broker, "main", NULL,
		    tollgate_keys)) < 0)
			note_failure("tollgated", e);
		else
			broker_up = 1;
	}
	if (wanted("tg-one tg-five tg-tree tg-observe"))
		tollgate_rows(&R, broker_up ? &main_broker : NULL);
	if ((e = mutex_rows(&R)) < 0)
		note_failure("mutex", e);
	if (!bench_signal && (e = socket_rows(&R)) < 0)
		note_failure("socket broker", e);
	if (!bench_signal && (e = redis_rows(&R)) < 0)
		note_failure("redis-server", e);
	if (R.nrows == 0 && !wanted("lat-wakeup lat-reclaim memory") &&
	    !goodput_wanted()) {
		bench_warnx("--only %s: no such measurement", opt.only);
		cleanup_run();
		usage(2);
	}
	timed_rows();
	/* Goodput before redis_stop: its shared GCRA is alt-redis's server. */
	if (!bench_signal && goodput_wanted() && (e = goodput_run(&R)) < 0)
		note_failure("goodput", e);
	socket_stop();
	redis_stop();

	if (bench_match("lat-wakeup") && !bench_signal) {
		R.lat[0] = &lat_wake;
		progress("wake-up latency, %u handoffs", opt.handoffs);
		if (!broker_up)
			lat_wake.skipped = "no broker";
		else if ((e = latency_wakeup(&lat_wake, &main_broker)) < 0) {
			lat_wake.skipped = "failed to run";
			note_failure("wake-up latency", e);
		}
	}
	if (bench_match("lat-reclaim") && !bench_signal) {
		R.lat[1] = &lat_reclaim;
		progress("reclaim latency, %u kills", opt.kills);
		if (!broker_up)
			lat_reclaim.skipped = "no broker";
		else if ((e = latency_reclaim(&lat_reclaim, &main_broker)) <
		    0) {
			lat_reclaim.skipped = "failed to run";
			note_failure("reclaim latency", e);
		}
	}
	broker_stop(&main_broker);
	if (bench_match("memory") && !bench_signal) {
		R.mem = &mem;
		progress("memory of a broker with 1000 keys");
		if ((e = memory_measure(&mem)) < 0) {
			mem.skipped = "failed to run";
			note_failure("memory", e);
		}
	}
	if (getloadavg(R.load_after, 3) < 0)
		R.load_after[0] = -1;
	cleanup_run();
	cpu_account(&R, 1);
	if (bench_signal) {
		bench_warnx("interrupted; everything it started is stopped "
		    "and removed");
		signal(bench_signal, SIG_DFL);
		raise(bench_signal);
		return 128 + bench_signal;
	}
	if (opt.json)
		report_json(stdout, &R);
	else
		report_table(stdout, &R);
	if (fflush(stdout) != 0)
		return 1;
	return R.failed != NULL ? 1 : 0;
}
