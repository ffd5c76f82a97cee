/*
 * fuzz_headers.c: libFuzzer target for the response-header parser, which
 * reads what any server on the network chose to send.  The input is the
 * header block as it is: not NUL-ended, maybe with NULs inside, maybe cut.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "headers.h"

#define NOW	1795428000000000000ull	/* 2026-11-23T10:00:00Z */
#define MAX_IN	65536			/* bytes; longer adds nothing */

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static size_t
count_lf(const uint8_t *data, size_t size)
{
	size_t i, n = 0;

	for (i = 0; i < size; i++)
		n += data[i] == '\n';
	return n;
}

/*
 * Parse one input, then the same block, LF-ended, twice over.  Lines are
 * read one at a time and merged by min and max, so the doubled block must
 * give the same values and twice the counts; a broken merge or a state
 * leaking between lines shows up here.
 */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hdr_result a, b;
	uint8_t *two;
	int u;

	if (size > MAX_IN)
		return 0;
	if (hdr_parse((const char *)data, size, NOW, &a) != 0)
		abort();
	/* Lines: one per LF, and the last one ended by the buffer. */
	if (a.nheaders > count_lf(data, size) + 1 || a.nbad > a.nheaders)
		abort();

	if ((two = malloc(2 * (size + 1))) == NULL)
		return 0;
	memcpy(two, data, size);
	two[size] = '\n';
	memcpy(two + size + 1, two, size + 1);
	if (hdr_parse((const char *)two, size + 1, NOW, &a) != 0 ||
	    hdr_parse((const char *)two, 2 * (size + 1), NOW, &b) != 0)
		abort();
	free(two);
	if (a.retry_after_ns != b.retry_after_ns ||
	    b.nheaders != 2 * a.nheaders || b.nbad != 2 * a.nbad)
		abort();
	for (u = 0; u < UNIT_COUNT; u++)
		if (a.unit[u].limit != b.unit[u].limit ||
		    a.unit[u].remaining != b.unit[u].remaining ||
		    a.unit[u].reset_ns != b.unit[u].reset_ns ||
		    a.unit[u].model != b.unit[u].model ||
		    (a.unit[u].model & ~(uint32_t)(HDR_MODEL_WINDOW |
		    HDR_MODEL_BUCKET)) != 0)
			abort();
	return 0;
}
