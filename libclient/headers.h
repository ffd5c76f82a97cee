/* headers.h: private; the response-header parser behind tg_observe (DESIGN 3). */
#ifndef TG_HEADERS_H
#define TG_HEADERS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define HDR_UNKNOWN	UINT64_MAX	/* a value the headers did not give */

/* What the server said of one unit; each member HDR_UNKNOWN if not said. */
struct hdr_unit {
	uint64_t	limit;
	uint64_t	remaining;
	uint64_t	reset_ns;	/* from now until the budget resets */
};

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
