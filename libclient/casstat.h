/* casstat.h: private; counts failed CAS in tollbench's build of the library. */
#ifndef TG_CASSTAT_H
#define TG_CASSTAT_H

/*
 * TG_CAS_COUNT(ok) wraps the result of a compare-and-swap that a loop
 * retries when it fails.  In every real build it is (ok), nothing more.
 * tollbench compiles the library objects again with -DTG_CASSTAT: then a
 * failure also counts one in tg_cas_retries, a thread's own counter that
 * tollbench defines and reads (it is a per-process figure after fork),
 * and each object carries the weak marker tg_casstat_built, by which
 * tollbench knows the counter means something.
 */
#ifdef TG_CASSTAT
#include <stdint.h>

extern _Thread_local uint64_t tg_cas_retries;
__attribute__((weak)) extern const int tg_casstat_built;
__attribute__((weak)) const int tg_casstat_built = 1;

#define TG_CAS_COUNT(ok)	((ok) ? 1 : (tg_cas_retries++, 0))
#else
#define TG_CAS_COUNT(ok)	(ok)
#endif

#endif /* TG_CASSTAT_H */
