/* fmt.c: numbers, durations and names as a person reads them. */
#include <inttypes.h>

#include "stat.h"

/* Bytes of the valid UTF-8 sequence at p, 0 if there is none. */
int
utf8_len(const unsigned char *p)
{
	int n;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4;
	else
		return 0;
	for (int i = 1; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	/* Overlong, surrogate, past U+10FFFF. */
	if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) ||
	    (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
		return 0;
	return n;
}

/*
 * A process name for the terminal: it is the process's to choose, so
 * control characters and bytes that are not UTF-8 become '?' and cannot
 * rewrite the screen.
 */
void
tame(char *s)
{
	unsigned char *p = (unsigned char *)s;
	int n;

	while (*p != '\0') {
		if (*p < 0x20 || *p == 0x7f || (n = utf8_len(p)) == 0) {
			*p++ = '?';
			continue;
		}
		while (n-- > 0 && *p != '\0')
			p++;
	}
}

const char *
kind_name(unsigned kind)
{
	switch (kind) {
	case LIM_RATE:
		return "rate";
	case LIM_WINDOW:
		return "window";
	case LIM_CONC:
		return "concurrency";
	}
	return "?";
}

/*
 * The table printers.  Counts below 100000 are exact; above, three
 * significant digits and an SI suffix ("1.23M").
 */
void
fmt_count(char *buf, size_t len, uint64_t v)
{
	static const char sfx[] = "kMGTPE";
	double x = (double)v;
	int i = -1;

	if (v < 100000) {
		snprintf(buf, len, "%" PRIu64, v);
		return;
	}
	while (x >= 999.5 && i < 5) {
		x /= 1000;
		i++;
	}
	snprintf(buf, len, x < 9.995 ? "%.2f%c" : x < 99.95 ? "%.1f%c" :
	    "%.0f%c", x, sfx[i]);
}

/* A duration the way a human reads it: "12ms", "4.2s", "3m07s", "2d04h". */
void
fmt_dur(char *buf, size_t len, uint64_t ns)
{
	uint64_t s = ns / NS_PER_S;

	if (ns < NS_PER_MS)
		snprintf(buf, len, "%" PRIu64 "us", ns / 1000);
	else if (ns < NS_PER_S)
		snprintf(buf, len, "%" PRIu64 "ms", ns / NS_PER_MS);
	else if (s < 60)
		snprintf(buf, len, "%" PRIu64 ".%" PRIu64 "s", s,
		    ns % NS_PER_S / (NS_PER_S / 10));
	else if (s < 3600)
		snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", s / 60,
		    s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m", s / 3600,
		    s % 3600 / 60);
	else
		snprintf(buf, len, "%" PRIu64 "d%02" PRIu64 "h", s / 86400,
		    s % 86400 / 3600);
}

const char *
fed_outage_name(uint64_t fed_state)
{
	switch (SEG_FED_OUTAGE(fed_state)) {
	case 1:
		return "closed";
	case 2:
		return "open";
	default:
		return "safe";
	}
}
