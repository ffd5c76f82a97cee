/*
 * tollstat.c: show a segment, read-only: broker, clients, keys, limits.
 * The parts live in tools/stat/: collect.c reads, the rest print.
 */
#include <err.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stat/stat.h"

#define WATCH_MIN_NS	(NS_PER_S / 10)
#define WATCH_MAX_NS	(3600 * NS_PER_S)

static void
usage(FILE *f, int status)
{
	fprintf(f, "usage: tollstat [-chjp] [-k KEY] [-s SEGMENT]\n"
	    "       tollstat -w [INTERVAL] [-n FRAMES] [-k KEY] "
	    "[-s SEGMENT]\n"
	    "  -s SEGMENT  the segment to show (default $TOLLGATE_SEGMENT, else\n"
	    "              \"tollgate\")\n"
	    "  -k KEY      only KEY and the keys under it (KEY/...)\n"
	    "  -c          the client slots instead of the keys; LEASES "
	    "counts\n"
	    "              leases of the keys shown\n"
	    "  -j          JSON, schema 1 (it always lists the clients)\n"
	    "  -p          Prometheus text format 0.0.4\n"
	    "  -w          live: redraw every INTERVAL (default 1s; 100ms to "
	    "1h, as 2,\n"
	    "              500ms or 5m) with rates per second, now and "
	    "averaged over 10,\n"
	    "              100 and 1000 intervals\n"
	    "  -n FRAMES   with -w: stop after FRAMES frames\n"
	    "  -h, --help  this help\n"
	    "  --version   the version\n"
	    "Key rows count tickets; limit rows count the limit's units "
	    "(leases for\nconcurrency).  AVAILABLE is what would fit now; "
	    "NEXT, how long until\none more unit fits (\"release\": when a "
	    "lease is given back).\n");
	exit(status);
}

static int
parse_frames(const char *s, unsigned long *n)
{
	char *end;

	errno = 0;
	if (*s < '1' || *s > '9')
		return -EINVAL;
	*n = strtoul(s, &end, 10);
	return errno != 0 || *end != '\0' ? -EINVAL : 0;
}

int
main(int argc, char *argv[])
{
	const char *segment = seg_default(), *key = NULL;
	uint64_t interval = NS_PER_S;
	unsigned long frames = 0;
	struct snap s;
	char why[512];
	int ch, clients = 0, json = 0, prom = 0, live = 0, nset = 0;

	static const struct option longopts[] = {
		{ "help",	no_argument,	NULL, 'h' },
		{ "version",	no_argument,	NULL, 'V' },
		{ NULL,		0,		NULL, 0 },
	};

	while ((ch = getopt_long(argc, argv, "chjk:n:ps:w", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'c':
			clients = 1;
			break;
		case 'j':
			json = 1;
			break;
		case 'k':
			key = optarg;
			break;
		case 'n':
			if (parse_frames(optarg, &frames) < 0)
				errx(2, "-n %s: not a count of frames (1 or "
				    "more)", optarg);
			nset = 1;
			break;
		case 'p':
			prom = 1;
			break;
		case 's':
			segment = optarg;
			break;
		case 'w':
			live = 1;
			break;
		case 'V':
			printf("tollstat %s\n", TG_VERSION);
			return 0;
		case 'h':
			usage(stdout, 0);
			break;
		default:
			usage(stderr, 2);
		}
	}
	/* -w's INTERVAL is optional, so it is the one operand -w allows. */
	if (live && optind == argc - 1) {
		if (duration_arg(argv[optind], WATCH_MIN_NS, WATCH_MAX_NS,
		    &interval, why, sizeof(why)) < 0)
			errx(2, "-w %s: %s; want 100ms to 1h (a bare number "
			    "is seconds)", argv[optind], why);
		optind++;
	}
	/* JSON lists the clients anyway; Prometheus has no place for them. */
	if (optind != argc || (json && prom) || (clients && prom) ||
	    (live && (json || prom || clients)) || (nset && !live))
		usage(stderr, 2);
	if (live)
		return watch(segment, key, interval, frames);

	if (snap_read(segment, key, &s, why, sizeof(why)) < 0)
		errx(1, "%s", why);
	if (json)
		print_json(stdout, &s);
	else if (prom)
		print_prom(stdout, &s);
	else if (clients)
		print_clients(stdout, &s);
	else
		print_table(stdout, &s);
	snap_free(&s);
	if (fflush(stdout) == EOF || ferror(stdout))
		err(1, "stdout");
	return 0;
}
