/*
 * tollgate.c: the library's hot path through its public API, against the
 * real broker: a ticket on one rate limit, on a key with five limits, on
 * a two-level key, and tg_observe on a typical OpenAI response.  The
 * limits are set so that nothing ever refuses: what is measured is the
 * grant path (a refusal is counted, and reported).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate.h"

#include "bench.h"

/*
 * The keys of the bench broker.  1e9 requests/s costs 1 ns of bucket a
 * request and holds a burst of 1e9: no process count can empty it.  The
 * five-limit key has the limits of an OpenAI image model (requests per
 * minute, a rolling day, tokens and images per minute, a cap in flight),
 * each too large to refuse.  observe's limits are those its header block
 * reports.  wake and reclaim are for latency.c.
 */
const char tollgate_keys[] =
    "[one]\n"
    "limit = 1000000000 requests/s\n"
    "\n"
    "[five]\n"
    "limit = 1000000000000 requests/min\n"
    "limit = 1000000000000000 requests/day window\n"
    "limit = 1000000000000000 tokens/min\n"
    "limit = 1000000000000 images/min\n"
    "concurrency = 64\n"
    "\n"
    "[tree]\n"
    "limit = 1000000000 requests/s\n"
    "\n"
    "[tree/leaf]\n"
    "limit = 1000000000 requests/s\n"
    "\n"
    "[observe]\n"
    "limit = 5000 requests/min\n"
    "limit = 4000000 tokens/min\n"
    "\n"
    "[wake]\n"
    "concurrency = 1\n"
    "\n"
    "[reclaim]\n"
    "concurrency = 10\n";

/*
 * A chat completion's 200 as OpenAI sends it (tests/observe/
 * openai_200_all_six.txt, with a token reset that is not 0s): all six
 * x-ratelimit-* fields, plenty remaining, so the caps it posts never cap.
 */
static const char openai_200[] =
    "HTTP/2 200\r\n"
    "date: Sat, 23 Nov 2024 10:00:00 GMT\r\n"
    "content-type: application/json\r\n"
    "access-control-expose-headers: X-Request-ID\r\n"
    "openai-organization: user-9qzkf3kq2vbwlzmdnxjehq2r\r\n"
    "openai-processing-ms: 523\r\n"
    "openai-version: 2020-10-01\r\n"
    "strict-transport-security: max-age=31536000; includeSubDomains; "
    "preload\r\n"
    "x-ratelimit-limit-requests: 5000\r\n"
    "x-ratelimit-limit-tokens: 4000000\r\n"
    "x-ratelimit-remaining-requests: 4999\r\n"
    "x-ratelimit-remaining-tokens: 3999950\r\n"
    "x-ratelimit-reset-requests: 12ms\r\n"
    "x-ratelimit-reset-tokens: 1ms\r\n"
    "x-request-id: req_7f2b1c0e4d5a6b7c8d9e0f1a2b3c4d5e\r\n"
    "x-content-type-options: nosniff\r\n"
    "cf-cache-status: DYNAMIC\r\n"
    "server: cloudflare\r\n"
    "cf-ray: 8e6f3a1b2c4d5e6f-SJC\r\n"
    "alt-svc: h3=\":443\"; ma=86400\r\n"
    "\r\n";

struct tgarg {
	const char	*segment;
	const char	*key;
	tg_cost		cost;
	int		use_cost;	/* else NULL: one request */
};

struct tgctx {
	tg_client	*c;
	uint32_t	key;
	const tg_cost	*cost;
	tg_ticket	t;
};

static int
tg_setup(void *arg, void **ctxp)
{
	struct tgarg *a = arg;
	struct tgctx *x;
	int r;

	if ((x = calloc(1, sizeof(*x))) == NULL)
		return -ENOMEM;
	if ((r = tg_open(a->segment, &x->c)) < 0 ||
	    (r = tg_key(x->c, a->key, &x->key)) < 0) {
		bench_warnx("%s: %s", a->key, tg_strerror(r));
		tg_close(x->c);
		free(x);
		return r;
	}
	x->cost = a->use_cost ? &a->cost : NULL;
	*ctxp = x;
	return 0;
}

static void
tg_teardown(void *ctx)
{
	struct tgctx *x = ctx;

	tg_close(x->c);
	free(x);
}

/* A ticket and its release: what a worker does around each request. */
static void
ticket_loop(void *ctx, const _Atomic uint32_t *stop, struct loop_out *out)
{
	struct tgctx *x = ctx;
	uint64_t n = 0, refused = 0, r0 = casstat_read();

	while (!atomic_load_explicit(stop, memory_order_relaxed)) {
		if (tg_try_acquire(x->c, x->key, x->cost, &x->t, NULL) != 0)
			refused++;
		tg_release(x->c, &x->t);
		n++;
	}
	out->ops = n;
	out->refused = refused;
	out->retries = casstat_linked() ? casstat_read() - r0 : NA;
}

/* tg_observe works on a spent ticket: take one, release it, observe. */
static int
observe_setup(void *arg, void **ctxp)
{
	struct tgctx *x;
	int r;

	if ((r = tg_setup(arg, ctxp)) < 0)
		return r;
	x = *ctxp;
	if ((r = tg_try_acquire(x->c, x->key, NULL, &x->t, NULL)) < 0) {
		tg_teardown(x);
		return r;
	}
	tg_release(x->c, &x->t);
	return 0;
}

static void
observe_loop(void *ctx, const _Atomic uint32_t *stop, struct loop_out *out)
{
	struct tgctx *x = ctx;
	uint64_t n = 0, refused = 0, r0 = casstat_read();

	while (!atomic_load_explicit(stop, memory_order_relaxed)) {
		if (tg_observe(x->c, &x->t, 200, openai_200,
		    sizeof(openai_200) - 1) != TG_OK)
			refused++;
		n++;
	}
	out->ops = n;
	out->refused = refused;
	out->retries = casstat_linked() ? casstat_read() - r0 : NA;
}

static struct row *
tg_row(struct results *res, const struct broker *b, const char *name,
    const char *label, const char *key, const tg_cost *cost)
{
	struct tgarg *a;
	struct row *r;

	if ((r = row_add(res, name, label)) == NULL)
		return NULL;
	if (b == NULL) {
		r->skipped = "tollgated did not start";
		return r;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		r->skipped = "out of memory";
		return r;
	}
	a->segment = b->segment;
	a->key = key;
	if (cost != NULL) {
		a->cost = *cost;
		a->use_cost = 1;
	}
	r->arg = a;
	r->setup = tg_setup;
	r->loop = ticket_loop;
	r->teardown = tg_teardown;
	return r;
}

/*
 * Add the library's rows, on broker b (running tollgate_keys); NULL: the
 * broker did not start, and the rows say so.
 */
int
tollgate_rows(struct results *res, const struct broker *b)
{
	static const tg_cost full = { 1, 500, 1 };
	struct row *r;

	tg_row(res, b, "tg-one", "tollgate: try_acquire+release, 1 rate "
	    "limit", "one", NULL);
	tg_row(res, b, "tg-five", "tollgate: ticket on 5 limits (rpm rpd "
	    "tpm ipm conc)", "five", &full);
	tg_row(res, b, "tg-tree", "tollgate: ticket on a 2-level key "
	    "(tree/leaf)", "tree/leaf", NULL);
	if ((r = tg_row(res, b, "tg-observe", "tollgate: tg_observe, OpenAI "
	    "200 header block", "observe", NULL)) != NULL && b != NULL) {
		r->setup = observe_setup;
		r->loop = observe_loop;
	}
	return 0;
}
