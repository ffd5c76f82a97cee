/*
 * memory.c: what a broker with many keys costs: the two shared-memory
 * objects of its segment, and the broker's own resident memory (VmRSS,
 * and Pss, which shares the segment's pages with whoever maps them).
 */
#include <sys/stat.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define MEM_KEYS	1000
#define MEM_LIMITS	4
#define MEM_CLIENTS	1024

/* The kB of `field:' in a /proc file, or NA. */
static uint64_t
proc_kb(const char *path, const char *field)
{
	char line[256];
	size_t len = strlen(field);
	unsigned long long v;
	uint64_t r = NA;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL)
		return NA;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, len) == 0 && line[len] == ':' &&
		    sscanf(line + len + 1, "%llu", &v) == 1) {
			r = v;
			break;
		}
	fclose(f);
	return r;
}

int
memory_measure(struct memory *m)
{
	struct broker b;
	struct stat st;
	char *body, path[128], extra[64];
	size_t cap = MEM_KEYS * 160 + 1, len = 0;
	int r;

	memset(m, 0, sizeof(*m));
	m->keys = MEM_KEYS;
	m->limits_per_key = MEM_LIMITS;
	m->max_clients = MEM_CLIENTS;
	if ((body = malloc(cap)) == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < MEM_KEYS; i++)
		len += (size_t)snprintf(body + len, cap - len, "[key%04u]\n"
		    "limit = 500 requests/min\n"
		    "limit = 30000 tokens/min\n"
		    "limit = 10000 requests/day window\n"
		    "concurrency = 4\n\n", i);
	snprintf(extra, sizeof(extra), "max_clients = %u\n", MEM_CLIENTS);
	r = broker_start(&b, "mem", extra, body);
	free(body);
	if (r < 0) {
		broker_stop(&b);
		return r;
	}
	snprintf(path, sizeof(path), "/dev/shm/%s.conf", b.segment);
	if (stat(path, &st) == 0) {
		m->conf_bytes = (uint64_t)st.st_size;
		m->conf_alloc = (uint64_t)st.st_blocks * 512;
	}
	snprintf(path, sizeof(path), "/dev/shm/%s", b.segment);
	if (stat(path, &st) == 0) {
		m->state_bytes = (uint64_t)st.st_size;
		m->state_alloc = (uint64_t)st.st_blocks * 512;
	}
	snprintf(path, sizeof(path), "/proc/%d/status", (int)b.pid);
	m->rss_kb = proc_kb(path, "VmRSS");
	m->rss_shmem_kb = proc_kb(path, "RssShmem");
	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)b.pid);
	m->pss_kb = proc_kb(path, "Pss");
	broker_stop(&b);
	if (m->conf_bytes == 0 || m->state_bytes == 0 || m->rss_kb == NA)
		return -ENODATA;
	return 0;
}
