/* SPDX-License-Identifier: MIT */
/*
 * handoff.c - NAT and SNAT on several workers (RX queues): which worker
 * owns a flow, and the rings that carry a frame to its owner (the
 * contract is pyfwd_mq.h's).
 *
 * Per packet: no allocation, no lock, no Python.  A ring is a single
 * producer (its `from` worker), single consumer (its `to` worker) array
 * of fixed slots, allocated at create; a hand-over is one copy in and one
 * copy out, and a full ring drops the frame, counted.  A worker asleep in
 * poll() is woken through its eventfd, once per burst that handed it
 * something (a syscall, only when it sleeps).
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tables.h"

/* Incoming slots per worker, over its n - 1 rings; a ring has 64 at least. */
#define HANDOFF_IN_SLOTS 1024
#define HANDOFF_RING_MIN 64

static struct handoff_ring *ring_of(const struct pyfwd_ctx *ctx,
				    uint32_t from, uint32_t to)
{
	return &ctx->handoff[from * ctx->cfg.workers + to];
}

int handoff_alloc(struct pyfwd_ctx *ctx)
{
	uint32_t n = ctx->cfg.workers, i, slots;

	for (i = 0; i < n; i++)
		ctx->workers[i].id = i;
	if (n < 2)
		return 0;
	slots = pow2_at_least(HANDOFF_IN_SLOTS / (n - 1), HANDOFF_RING_MIN);
	ctx->handoff = aligned_alloc(64, (size_t)n * n *
					     sizeof(*ctx->handoff));
	if (!ctx->handoff)
		return -ENOMEM;
	memset(ctx->handoff, 0, (size_t)n * n * sizeof(*ctx->handoff));
	for (i = 0; i < n * n; i++) {
		struct handoff_ring *r = &ctx->handoff[i];

		if (i / n == i % n)
			continue;	/* no ring to itself */
		r->mask = slots - 1;
		r->len = calloc(slots, sizeof(*r->len));
		r->in_if = calloc(slots, 1);
		r->flags = calloc(slots, 1);
		/* calloc maps zero pages: memory is used as slots are */
		r->data = calloc(slots, PYFWD_HANDOFF_SNAP);
		if (!r->len || !r->in_if || !r->flags || !r->data)
			return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		struct worker *w = &ctx->workers[i];

		w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->wake_fd < 0)
			return -errno;
	}
	return 0;
}

void handoff_free(struct pyfwd_ctx *ctx)
{
	uint32_t n = ctx->cfg.workers, i;

	if (!ctx->handoff)
		return;
	for (i = 0; i < n * n; i++) {
		free(ctx->handoff[i].len);
		free(ctx->handoff[i].in_if);
		free(ctx->handoff[i].flags);
		free(ctx->handoff[i].data);
	}
	for (i = 0; i < n; i++)
		if (ctx->workers[i].wake_fd >= 0)
			close(ctx->workers[i].wake_fd);
	free(ctx->handoff);
	ctx->handoff = NULL;
}

uint32_t pyfwd_flow_owner(const struct pyfwd_ctx *ctx, const uint8_t *addr,
			  uint8_t family, uint16_t port)
{
	const struct pyfwd_snat *s = &ctx->snat;
	uint32_t n = ctx->owners, w[5];

	if (n < 2)
		return 0;
	if (s->port_hi && s->family == family && port >= s->port_lo &&
	    port <= s->port_hi && addr_eq(s->addr, addr, family))
		return snat_port_worker(s, port, n);
	memcpy(w, addr, 16);
	w[4] = port;
	return hash_words(w, family == PYFWD_AF_INET ? 1 : 4, port) % n;
}

/*
 * The client-side endpoint of a classified frame's flow (pyfwd_mq.h):
 * FORWARD to a NAT/SNAT VIP, the source; FORWARD_REPLY, the destination;
 * an ICMP error quoting our packet Q, Q's destination if Q left a VIP
 * (to the client), else Q's source (to a real, from the client or SNAT).
 */
uint32_t handoff_owner(const struct pyfwd_ctx *ctx, const struct worker *w,
		       const struct parse *ps, uint32_t reason)
{
	const struct flow_key *k = &ps->key;
	int32_t vip = ps->r->vip;

	if (reason == PYFWD_R_FORWARD_REPLY)
		return pyfwd_flow_owner(ctx, k->daddr, k->family, k->dport);
	if (vip >= 0 && !mode_paired(ps->b->vips[vip].mode))
		return w->id;	/* DR, TUN: no owner, any worker */
	if (reason == PYFWD_R_FORWARD || vip >= 0)
		return pyfwd_flow_owner(ctx, reason == PYFWD_R_FORWARD ?
						k->saddr : k->daddr,
					k->family, reason == PYFWD_R_FORWARD ?
						k->sport : k->dport);
	return pyfwd_flow_owner(ctx, k->saddr, k->family, k->sport);
}

uint32_t handoff_push(struct pyfwd_ctx *ctx, struct worker *w, uint32_t to,
		      const struct pyfwd_frame *f)
{
	struct handoff_ring *r = ring_of(ctx, w->id, to);
	uint32_t head = r->head, i;

	if (unlikely(head - __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) >
		     r->mask || f->len > PYFWD_HANDOFF_SNAP))
		return PYFWD_R_DROP_HANDOFF_FULL;
	i = head & r->mask;
	memcpy(r->data + (size_t)i * PYFWD_HANDOFF_SNAP, f->data, f->len);
	r->len[i] = (uint16_t)f->len;
	r->in_if[i] = f->in_if;
	/* the taker's buffer lends no room in front (an XSK frame's start) */
	r->flags[i] = f->flags & (uint8_t)~PYFWD_FRAME_HEADROOM;
	__atomic_store_n(&r->head, head + 1, __ATOMIC_RELEASE);
	w->handed_to |= 1ull << to;
	w->stats.io.handoff_out++;
	return 0;
}

void handoff_wake(struct pyfwd_ctx *ctx, struct worker *w)
{
	static const uint64_t one = 1;
	uint64_t m = w->handed_to;
	struct worker *o;

	w->handed_to = 0;
	/* Pairs with handoff_sleep: our heads, then its flag. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	while (m) {
		o = &ctx->workers[__builtin_ctzll(m)];
		m &= m - 1;
		if (__atomic_load_n(&o->sleeping, __ATOMIC_SEQ_CST) &&
		    write(o->wake_fd, &one, sizeof(one)) > 0)
			w->stats.io.wakeups++;
	}
}

/* 1 if some ring toward worker `to` holds a frame. */
static int handoff_waiting(const struct pyfwd_ctx *ctx, uint32_t to)
{
	uint32_t from;

	for (from = 0; from < ctx->cfg.workers; from++) {
		const struct handoff_ring *r;

		if (from == to)
			continue;
		r = ring_of(ctx, from, to);
		if (__atomic_load_n(&r->head, __ATOMIC_ACQUIRE) != r->tail)
			return 1;
	}
	return 0;
}

int handoff_sleep(struct pyfwd_ctx *ctx, struct worker *w)
{
	if (!ctx->handoff)
		return 0;
	/* Our flag, then their heads: a hander sees one or we see its. */
	__atomic_store_n(&w->sleeping, 1, __ATOMIC_SEQ_CST);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (handoff_waiting(ctx, w->id)) {
		__atomic_store_n(&w->sleeping, 0, __ATOMIC_RELAXED);
		return 1;
	}
	return 0;
}

void handoff_woken(struct worker *w)
{
	uint64_t v;

	if (!w->sleeping)
		return;
	__atomic_store_n(&w->sleeping, 0, __ATOMIC_RELAXED);
	if (read(w->wake_fd, &v, sizeof(v)) < 0)
		return;	/* EAGAIN: nobody wrote */
}

uint32_t pyfwd_handoff_take(struct pyfwd_ctx *ctx, uint32_t worker,
			    struct pyfwd_frame *frames, uint32_t max)
{
	uint32_t k, from, got = 0, n = ctx->cfg.workers;
	struct worker *w;

	if (!ctx->handoff || worker >= n)
		return 0;
	w = &ctx->workers[worker];
	/* Each call starts one ring further: no hander starves the others. */
	w->take_from = (w->take_from + 1) % n;
	if (w->take_from == worker)
		w->take_from = (w->take_from + 1) % n;
	for (k = 0; k < n && got < max; k++) {
		struct handoff_ring *r;
		uint32_t tail, head, i, len;

		from = (w->take_from + k) % n;
		if (from == worker)
			continue;
		r = ring_of(ctx, from, worker);
		tail = r->tail;
		head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
		for (; tail != head && got < max; tail++) {
			struct pyfwd_frame *f = &frames[got];

			i = tail & r->mask;
			len = r->len[i];
			if (unlikely(len > f->cap)) {
				w->stats.frames++;
				w->stats.bytes += len;
				w->stats.reason[PYFWD_R_DROP_HANDOFF_FULL]++;
				w->stats.verdict[PYFWD_VERDICT_DROP]++;
				continue;
			}
			memcpy(f->data,
			       r->data + (size_t)i * PYFWD_HANDOFF_SNAP, len);
			f->len = len;
			f->in_if = r->in_if[i];
			f->flags = r->flags[i] | PYFWD_FRAME_HANDED;
			got++;
		}
		__atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
	}
	w->stats.io.handoff_in += got;
	return got;
}
