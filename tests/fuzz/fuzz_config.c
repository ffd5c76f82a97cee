/*
 * fuzz_config.c: libFuzzer target for the config parser, the daemon's
 * front door.  config_load_mem takes the input as it is: not NUL-ended,
 * maybe with NULs inside, exactly as a file read from disk.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
ignore(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

/*
 * Parse one input.  A good parse is checked for what the broker relies
 * on, so that a broken invariant crashes here rather than there.
 */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct limit_spec back;
	struct config cfg;
	const char *why;
	char buf[256];
	unsigned i, sum = 0;

	if (config_load_mem("fuzz", (const char *)data, size, &cfg, ignore,
	    NULL) != 0) {
		if (cfg.keys != NULL || cfg.limits != NULL)
			__builtin_trap();	/* errors leave nothing */
		return 0;
	}
	for (i = 0; i < cfg.nkeys; i++) {
		if (cfg.keys[i].parent >= (int)i ||
		    cfg.keys[i].first_limit != sum ||
		    memchr(cfg.keys[i].name, '\0', sizeof(cfg.keys[i].name)) ==
		    NULL)
			__builtin_trap();
		sum += cfg.keys[i].nlimits;
	}
	if (sum != cfg.nlimits)
		__builtin_trap();
	for (i = 0; i < cfg.nlimits; i++) {
		limit_format(&cfg.limits[i], buf, sizeof(buf));
		if (config_parse_limit(buf, &back, &why) != 0 ||
		    back.kind != cfg.limits[i].kind ||
		    back.count != cfg.limits[i].count ||
		    back.period_ns != cfg.limits[i].period_ns ||
		    back.burst != cfg.limits[i].burst ||
		    back.cooldown_ns != cfg.limits[i].cooldown_ns)
			__builtin_trap();	/* limit_format round trip */
	}
	config_free(&cfg);
	return 0;
}
