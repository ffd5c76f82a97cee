/* headers.h: private; the response-header parser behind tg_observe (DESIGN 3). */
#ifndef TG_HEADERS_H
#define TG_HEADERS_H

#include <stddef.h>
#include <stdint.h>

#include "seg.h"

#define HDR_UNKNOWN	UINT64_MAX	/* a value the headers did not give */

/*
 * How a provider's `reset' is meant (hdr_unit.model).  A window resets
 * at once: `remaining R, reset T' is at most R more until T (GitHub, the
 * IETF RateLimit drafts, the generic x-ratelimit-* of Together and
 * others).  A refilling bucket (OpenAI, Azure and Groq with
 * x-ratelimit-*-<unit>, Anthropic) fills continuously, and T is the time
 * until it is full again: L - R units refill over T, one every
 * T / (L - R), so R = 0 means the next unit in T / L, not in T.
 */
#define HDR_MODEL_WINDOW	0x01	/* a field of window semantics seen */
#define HDR_MODEL_BUCKET	0x02	/* a field of bucket semantics seen */

/* What the server said of one unit; each member HDR_UNKNOWN if not said. */
struct hdr_unit {
	uint64_t	limit;
	uint64_t	remaining;
	uint64_t	reset_ns;	/* from now until the budget resets */
	uint32_t	model;		/* HDR_MODEL_* of the fields read */
};

/*
 * Whether u describes a refilling bucket: its fields all had bucket
 * semantics.  A unit that mixes both families is read as a window, the
 * stricter of the two readings.
 */
static inline int
hdr_refills(const struct hdr_unit *u)
{
	return u->model == HDR_MODEL_BUCKET;
}

struct hdr_result {
	uint64_t	retry_after_ns;	/* HDR_UNKNOWN: no retry hint */
	struct hdr_unit	unit[UNIT_COUNT];	/* requests, tokens, images */
	uint32_t	nheaders;	/* header lines seen */
	uint32_t	nbad;		/* recognised but unparsable values */
};

/*
 * Parse a raw response header block (`Name: value' lines ended by CRLF or
 * LF, the last one by the end of the buffer too; HTTP status lines are
 * allowed and skipped; the block need not be NUL-terminated and is never
 * read past len).  now_unix_ns is CLOCK_REALTIME
 * now, for resets given as dates or epoch times, which come out as time
 * from now.  Fills *out; returns 0, or -EINVAL on NULL arguments.  No
 * allocation, no system call.  Never fails on bad input: what it cannot
 * read stays HDR_UNKNOWN and counts in nbad.
 */
int	hdr_parse(const char *buf, size_t len, uint64_t now_unix_ns,
	    struct hdr_result *out);

#endif /* TG_HEADERS_H */
