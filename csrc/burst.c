/* SPDX-License-Identifier: MIT */
/*
 * burst.c - the core on a burst of frames: classify, forward, verdict,
 * count, punt.  Every I/O loop, the cffi tests, the sanitizer replay and
 * the fuzzer come through here; each frame is counted once, here.
 *
 * Per packet: no allocation, no lock, no Python.  Frames are classified a
 * chunk at a time before any of them looks up its flow: classifying reads
 * only the frame and the bank, and the flow slots of the whole chunk are
 * fetched while it runs instead of one miss at a time.  Flows are then
 * looked up and frames rewritten in order.
 */
#include <errno.h>

#include "flow.h"

#define SWEEP_TICK_NS 1000000ULL	/* the expiry runs at most once a ms */
#define SWEEP_ROUND_SHIFT 10	/* a pass of the table per 2^10 ms (~1 s) */
#define SWEEP_SLOTS_MIN 64	/* slots per run at least: small tables */
#define PREFETCH_AHEAD 4	/* frames whose data is fetched ahead */
#define CORE_CHUNK 64		/* frames classified before flows are found */

/* Set the result's reason (and so its verdict) and return it. */
static inline uint32_t decide(struct pyfwd_result *r, uint32_t reason)
{
	r->reason = (uint8_t)reason;
	r->verdict = (uint8_t)reason_verdict(reason);
	return reason;
}

/* The flow slot a parsed frame will look at first, on its way to L1. */
static inline void flow_prefetch(const struct worker *w, struct parse *ps,
				 uint32_t reason)
{
	const struct flow *f;

	if (reason != PYFWD_R_FORWARD && reason != PYFWD_R_FORWARD_REPLY)
		return;
	ps->hash = flow_hash(&ps->key);
	f = &w->flows[ps->hash & w->flow_mask];
	__builtin_prefetch(f);
	__builtin_prefetch(&f->expires_ns);	/* the key may end a line */
}

/* Classify m frames (a chunk): results reset, reasons in why[]. */
static void chunk_classify(const struct pyfwd_ctx *ctx,
			   const struct worker *w, const struct vip_bank *b,
			   struct pyfwd_frame *fr, struct pyfwd_result *res,
			   struct parse *ps, uint32_t *why, uint32_t m)
{
	uint32_t i;

	for (i = 0; i < m; i++) {
		struct pyfwd_result *r = &res[i];
		struct parse *p = &ps[i];

		/* Frames come from the NIC or Python: not in L1 yet. */
		if (i + PREFETCH_AHEAD < m)
			__builtin_prefetch(fr[i + PREFETCH_AHEAD].data);
		memset(r, 0, sizeof(*r));
		r->vip = -1;
		r->out_if = fr[i].in_if;
		/* All but the key (written before it is read). */
		p->p = fr[i].data;
		p->len = fr[i].len;
		p->l3_end = 0;
		p->r = r;
		p->b = b;
		p->tcp_flags = 0;
		p->inner_l3 = p->inner_l4 = p->inner_len = 0;
		why[i] = frame_classify(ctx, p, &fr[i]);
		flow_prefetch(w, p, why[i]);
	}
}

/*
 * Expiry by the clock, not per burst: a burst of one frame used to look
 * at 64 slots, more work than the frame.  Each ms a slice of the table,
 * so that a pass takes about 1 s whatever the load: a flow is freed
 * within a second of its timeout (probing lapses what it meets meanwhile),
 * and a flood's half-open flows leave the gauges about tcp_syn after it
 * (a pass in 8 s left a 65,536-slot table's flood counted for seconds).
 */
void worker_sweep(struct worker *w, uint64_t now)
{
	uint64_t ms, slots, table = (uint64_t)w->flow_mask + 1;

	if (now - w->swept_ns < SWEEP_TICK_NS)
		return;
	ms = (now - w->swept_ns) / SWEEP_TICK_NS;	/* a clock set back: */
	if (ms > (1ULL << SWEEP_ROUND_SHIFT))		/* a huge gap */
		ms = 1ULL << SWEEP_ROUND_SHIFT;
	slots = table * ms >> SWEEP_ROUND_SHIFT;
	if (slots < SWEEP_SLOTS_MIN)
		slots = SWEEP_SLOTS_MIN;
	if (slots > table)
		slots = table;
	flow_sweep(w, now, (uint32_t)slots);
	w->swept_ns = now;
}

/*
 * Several workers: a NAT/SNAT frame whose flow another worker owns is
 * handed to it (1: r says PYFWD_HANDOFF), or *reason becomes a drop when
 * its ring is full.  A frame handed over once is its owner's.
 */
static int handoff_elsewhere(struct pyfwd_ctx *ctx, struct worker *w,
			     const struct parse *ps,
			     const struct pyfwd_frame *f,
			     struct pyfwd_result *r, uint32_t *reason)
{
	uint32_t owner;

	if (*reason > PYFWD_R_FORWARD_ICMP || (f->flags & PYFWD_FRAME_HANDED))
		return 0;
	owner = handoff_owner(ctx, w, ps, *reason);
	if (owner == w->id)
		return 0;
	if (handoff_push(ctx, w, owner, f)) {
		*reason = PYFWD_R_DROP_HANDOFF_FULL;
		return 0;
	}
	r->verdict = PYFWD_HANDOFF;
	r->reason = (uint8_t)*reason;
	return 1;
}

uint32_t worker_burst(struct pyfwd_ctx *ctx, struct worker *w,
		      struct pyfwd_frame *frames, uint32_t n,
		      struct pyfwd_result *out)
{
	const struct vip_bank *b = bank_enter(ctx, w);
	uint64_t now = ctx_now(ctx);
	struct parse ps[CORE_CHUNK];
	uint32_t why[CORE_CHUNK];
	uint32_t i, j, m, reason, fwd = 0;

	worker_sweep(w, now);
	for (j = 0; j < n; j += m) {
		struct pyfwd_frame *fr = frames + j;
		struct pyfwd_result *res = out + j;

		m = n - j < CORE_CHUNK ? n - j : CORE_CHUNK;
		chunk_classify(ctx, w, b, fr, res, ps, why, m);
		for (i = 0; i < m; i++) {
			struct pyfwd_result *r = &res[i];
			struct pyfwd_frame *f = &fr[i];
			struct parse *p = &ps[i];

			reason = why[i];
			if (unlikely(ctx->handoff) &&
			    handoff_elsewhere(ctx, w, p, f, r, &reason))
				continue;	/* the owner counts it */
			if (reason == PYFWD_R_FORWARD)
				reason = forward_vip(ctx, w, b, p, f, now);
			else if (reason == PYFWD_R_FORWARD_REPLY)
				reason = forward_reply(ctx, w, b, p, f, now);
			else if (reason == PYFWD_R_FORWARD_ICMP)
				reason = forward_icmp(ctx, w, b, p, f, now);
			decide(r, reason);
			w->stats.frames++;
			w->stats.bytes += f->len;
			w->stats.reason[reason]++;
			w->stats.verdict[r->verdict]++;
			if (r->verdict == PYFWD_VERDICT_PUNT)
				punt_push(w, f->data, f->len, reason);
			fwd += r->verdict == PYFWD_VERDICT_FORWARD;
		}
	}
	bank_leave(w);
	if (w->handed_to)
		handoff_wake(ctx, w);
	return fwd;
}

uint32_t pyfwd_core_burst(struct pyfwd_ctx *ctx, struct pyfwd_frame *frames,
			  uint32_t n, struct pyfwd_result *out)
{
	return worker_burst(ctx, &ctx->workers[0], frames, n, out);
}

int pyfwd_worker_burst(struct pyfwd_ctx *ctx, uint32_t worker,
		       struct pyfwd_frame *frames, uint32_t n,
		       struct pyfwd_result *out)
{
	if (worker >= ctx->cfg.workers)
		return -EINVAL;
	return (int)worker_burst(ctx, &ctx->workers[worker], frames, n, out);
}
