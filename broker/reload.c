/* reload.c: SIGHUP: read the config file again and publish what changed. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "broker.h"
#include "log.h"
#include "own.h"

static void
report_log(void *arg, const char *msg)
{
	(void)arg;
	log_warnx("reload: %s", msg);
}

void
reload_run(struct broker *b)
{
	struct config cfg;
	char err[256], status[320], conf[256], state[256];
	int n;

	notify_send("RELOADING=1");
	log_info("reloading %s", b->config_path);
	if ((n = config_load(b->config_path, &cfg, report_log, NULL)) != 0) {
		log_warnx("reload refused: %d error%s; the old config stays",
		    n, n == 1 ? "" : "s");
		goto out;
	}
	if (strcmp(cfg.segment, b->cfg.segment) != 0)
		log_warnx("reload: segment changes only on restart; "
		    "still serving %s", b->cfg.segment);
	if (segment_publish(b, &cfg, err, sizeof(err)) < 0) {
		log_warnx("reload refused: %s; the old config stays", err);
		config_free(&cfg);
		goto out;
	}
	/*
	 * What the segment already has stays: name and capacities.  A new
	 * `group' or `mode' applies now, to an object only we wrote under
	 * the old one (narrower is as safe as wider here).
	 */
	memcpy(cfg.segment, b->cfg.segment, sizeof(cfg.segment));
	if (seg_names(b->cfg.segment, conf, state, sizeof(conf)) == 0)
		(void)own_apply(b->m.state_fd, state, cfg.mode, cfg.has_group,
		    cfg.group);
	config_free(&b->cfg);
	b->cfg = cfg;
	/* Relaxed: the index is ours; we just wrote it. */
	log_info("reloaded: %u keys, %u limits (generation %llu)",
	    cfg.nkeys, cfg.nlimits, (unsigned long long)seg_cfg(&b->m,
	    atomic_load_explicit(&b->m.hdr->config_idx,
	    memory_order_relaxed))->gen);
out:
	snprintf(status, sizeof(status), "STATUS=serving %s: %u keys, "
	    "%u limits", b->cfg.segment, b->cfg.nkeys, b->cfg.nlimits);
	notify_send(status);
	notify_send("READY=1");
}

