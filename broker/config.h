/* config.h: private; the tollgated config file, parsed: broker, tollsim, tests. */
#ifndef TG_CONFIG_H
#define TG_CONFIG_H

#include <sys/types.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "limit.h"
#include "seg.h"

/* What the segment can hold is the layout's (seg.h): one number each. */
#define CFG_NAME_MAX	(SEG_NAME_MAX - 1) /* bytes in a key name, no NUL */
#define CFG_SEGMENT_MAX	200	/* bytes in a segment name, without the NUL */
#define CFG_CHAIN_MAX	SEG_CHAIN_MAX	/* limits on a key and its ancestors */
#define CFG_DEPTH_MAX	SEG_DEPTH_MAX	/* levels of a name ("a/b/c": 3) */

/* Feedback defaults of a key that neither it nor an ancestor sets. */
#define CFG_BACKOFF_MIN_NS	SEG_BACKOFF_MIN_NS	/* backoff = 1s..60s */
#define CFG_BACKOFF_MAX_NS	SEG_BACKOFF_MAX_NS
#define CFG_MAX_PAUSE_NS	SEG_MAX_PAUSE_NS	/* max_pause = 10min */
#define CFG_MAX_PAUSE_LIMIT_NS	UINT64_C(86400000000000) /* at most 1 day */

/* One [section] other than [broker]. */
struct key_spec {
	char		name[CFG_NAME_MAX + 1];
	int		parent;		/* index into config.keys, -1 at the top */
	int		line;		/* line of the [section] header */
	unsigned	first_limit;	/* its own limits: limits[first_limit..] */
	unsigned	nlimits;
	/*
	 * Feedback settings (DESIGN 3).  Each is the key's own setting, else
	 * its nearest ancestor's, else the default: a parent's `backoff'
	 * applies to its children unless they set their own.
	 */
	uint64_t	backoff_min_ns;	/* `backoff = MIN..MAX': the shared */
	uint64_t	backoff_max_ns;	/* backoff of a hint-less 429 or 5xx */
	uint64_t	max_pause_ns;	/* `max_pause = D': clamp on any pause */
	uint8_t		learn;		/* `learn = yes': adopt server limits */
	uint8_t		refund_rejected; /* `rejected = free' */
	/*
	 * `scope = global': its own limits are shared through Redis by every
	 * broker of the federation (broker/fed.c); 0, `scope = host', the
	 * default, is this host's alone.  Not inherited: a child of a global
	 * key may be host-scoped and the other way round.
	 */
	uint8_t		global;
	int		scope_line;	/* of its `scope =', or 0 */
};

/* `[broker] redis_outage =': what a global key does without Redis. */
enum fed_outage {
	FED_OUTAGE_SAFE = 0,	/* last fair share (the default) */
	FED_OUTAGE_CLOSED = 1,	/* refuse once the slices held run out */
	FED_OUTAGE_OPEN = 2,	/* the local limits alone */
};

#define CFG_HOST_ID_MAX		63	/* bytes: host_id, federation */
#define CFG_REDIS_HOST_MAX	255	/* bytes in a Redis host name */
#define CFG_REDIS_AUTH_MAX	127	/* in its user, its password */

/*
 * `[broker] redis = URL', parsed: unix:/path, or
 * redis://[user:password@]host[:port][/db].  url[0] == 0: no federation.
 */
struct redis_url {
	char		url[PATH_MAX];		/* as written, for messages */
	char		path[108];		/* unix: the socket ("" TCP) */
	char		host[CFG_REDIS_HOST_MAX + 1];
	char		user[CFG_REDIS_AUTH_MAX + 1];	/* "" none */
	char		password[CFG_REDIS_AUTH_MAX + 1]; /* "" no AUTH */
	int		has_password;
	int		port;			/* default 6379 */
	int		db;			/* default 0 */
};

struct config {
	char		path[PATH_MAX];	/* the file it came from */
	/* [broker] */
	char		segment[CFG_SEGMENT_MAX + 1];	/* default "tollgate" */
	mode_t		mode;		/* state object; default 0660 */
	int		has_group;
	gid_t		group;		/* `group =', by name or number */
	char		pidfile[PATH_MAX]; /* default /run/tollgate/<segment>.pid */
	uint32_t	max_clients;	/* default 1024 */
	/* federation (broker/fed.c); redis.url[0] == 0: none */
	struct redis_url redis;
	char		host_id[CFG_HOST_ID_MAX + 1];	/* "": the hostname */
	char		federation[CFG_HOST_ID_MAX + 1]; /* "tollgate" */
	int		redis_outage;	/* enum fed_outage */
	int		redis_line;	/* of `redis =', or 0 */
	/* keys in file order; a parent always comes before its children */
	struct key_spec	*keys;
	unsigned	nkeys;
	/* every key's own limits, grouped by key in file order */
	struct limit_spec *limits;
	unsigned	nlimits;
};

/*
 * Called once per error with a whole message, "FILE:LINE: what is wrong"
 * (no newline).  arg is what was passed to config_load.
 */
typedef void	config_report_fn(void *arg, const char *msg);

/*
 * Parse the file at path into *cfg (which it initialises).  Every error is
 * reported, not just the first.  Returns 0, or the number of errors (> 0),
 * in which case *cfg holds nothing to free.  A file that cannot be read is
 * one error ("FILE: strerror").
 */
int	config_load(const char *path, struct config *cfg,
	    config_report_fn *report, void *arg);

/* The same from memory; name is used in messages in place of a path. */
int	config_load_mem(const char *name, const char *buf, size_t len,
	    struct config *cfg, config_report_fn *report, void *arg);

/* Free what config_load allocated; cfg may be zeroed or already freed. */
void	config_free(struct config *cfg);

/*
 * Parse a `redis =' URL into *u (zeroed first).  Returns 0, or -EINVAL
 * with *why set to a static message.  Shared with the tests.
 */
int	config_parse_redis(const char *s, struct redis_url *u,
	    const char **why);

/* Index of the key named name in cfg, or -1. */
int	config_find_key(const struct config *cfg, const char *name);

#endif /* TG_CONFIG_H */
