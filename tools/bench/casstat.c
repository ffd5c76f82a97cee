/*
 * casstat.c: the CAS-retry counter of the library.  Built with
 * -DTG_CASSTAT (libclient/casstat.h), the library counts each failed CAS
 * of a retry loop in tg_cas_retries, which it expects its program to
 * define: here, a per-thread counter, so per process after fork.
 */
#include <stdint.h>

#include "bench.h"

_Thread_local uint64_t tg_cas_retries;

/* Defined (weak) by every library object built with TG_CASSTAT. */
extern const int tg_casstat_built __attribute__((weak));

/* Whether the library linked in counts its CAS retries. */
int
casstat_linked(void)
{
	return &tg_casstat_built != NULL;
}

uint64_t
casstat_read(void)
{
	return tg_cas_retries;
}
