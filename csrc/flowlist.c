/* SPDX-License-Identifier: MIT */
/*
 * flowlist.c - pyfwd_flow_list (`pyfwd ctl flows`): a copy of the live
 * flows of a worker's table; and the tests' count of its held slots.
 *
 * A loop owns its table and writes it without locks: a thread reading it
 * beside the loop could copy an entry half rewritten.  So the reader posts
 * a request (w->list_req) and the loop copies its own table between
 * bursts, FLOW_LIST_CHUNK slots per iteration (io_beat): no torn entry,
 * and forwarding never stalls for a whole table (2M slots by default).
 * An idle loop does not sleep while it lists (io_idle_poll); a paused
 * one copies the rest at once.
 *
 * The request is the reader's allocation (control plane), and only the
 * control plane frees it (the loop never allocates nor frees).  Its state
 * says who: the reader, once the loop said DONE (or withdrew it before
 * the loop took it); when the reader gave up waiting (ABANDONED) the loop
 * parks it in w->list_dead when done, and the next reader frees it (a
 * loop takes no request while one is parked: at most one is); ctx destroy
 * frees what is left (parked, or a listing its loop ended in the middle
 * of).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fastmap.h"
#include "flow.h"

#define FLOW_LIST_CHUNK 8192	/* slots per loop iteration: ~600 KB */

#define LIST_POSTED 0		/* waiting for, or being copied by, a loop */
#define LIST_DONE 1
#define LIST_ABANDONED 2	/* the reader left: the loop parks it */

struct flow_list {
	struct pyfwd_flow_filter filter;
	uint32_t max, n;	/* room in out, copied */
	uint64_t total;		/* matches, copied or not */
	uint32_t cursor;	/* the next slot to look at */
	int state;		/* LIST_* */
	struct pyfwd_flow_info out[];
};

static int list_match(const struct pyfwd_flow_filter *m,
		      const struct flow_key *k)
{
	if (!m->family)
		return 1;
	return k->family == m->family && (!m->proto || k->proto == m->proto) &&
	       (!m->port || k->dport == m->port) &&
	       !memcmp(k->daddr, m->addr, 16);
}

static void list_copy(const struct worker *w, const struct flow *f,
		      struct pyfwd_flow_info *o, uint64_t now)
{
	uint32_t slot = (uint32_t)(f - w->flows);

	memset(o, 0, sizeof(*o));
	memcpy(o->client, f->key.saddr, 16);
	memcpy(o->vip, f->key.daddr, 16);
	o->client_port = f->key.sport;
	o->vip_port = f->key.dport;
	o->family = f->key.family;
	o->proto = f->key.proto;
	o->state = f->state;
	o->mode = f->mode;
	o->real_id = f->real;
	o->worker = (uint8_t)w->id;
	o->expires_ms = (f->expires_ns - now) / 1000000u;
	if (f->peer != NO_PEER) {
		const struct flow *r = &w->flows[f->peer - 1];

		memcpy(o->real, r->key.saddr, 16);
		o->real_port = r->key.sport;
	}
	if (f->mode == PYFWD_MODE_SNAT)
		o->snat_port = f->snat_port;
	o->fast = w->fast && w->fast->slot[slot].seen1;
}

/* Slots cursor..end-1; revive: ask the fast path about a lapsed entry (as
 * the sweep does: only the loop may, it pushes the expiry on). */
static void list_scan(struct worker *w, struct flow_list *l, uint32_t end,
		      uint64_t now, int revive)
{
	for (; l->cursor < end; l->cursor++) {
		struct flow *f = &w->flows[l->cursor];

		/* a persistence entry (PROTO_PERSIST) is no flow */
		if (!f->expires_ns || f->dir != DIR_ORIG ||
		    f->key.proto == PROTO_PERSIST)
			continue;
		if (!flow_alive(f, now) &&
		    !(revive && fastmap_revive(w, f, now)))
			continue;
		if (!list_match(&l->filter, &f->key))
			continue;
		if (l->n < l->max)
			list_copy(w, f, &l->out[l->n++], now);
		l->total++;
	}
}

void flow_list_serve(struct pyfwd_ctx *ctx, struct worker *w, int all)
{
	struct flow_list *l = w->listing;
	uint32_t size = w->flow_mask + 1, end;
	int posted = LIST_POSTED;

	if (!l) {
		/* one parked at a time: the waiting reader frees it first */
		if (__atomic_load_n(&w->list_dead, __ATOMIC_RELAXED))
			return;
		l = __atomic_exchange_n(&w->list_req, NULL, __ATOMIC_ACQUIRE);
		if (!l)
			return;
		w->listing = l;
	}
	end = all || size - l->cursor <= FLOW_LIST_CHUNK ?
		      size : l->cursor + FLOW_LIST_CHUNK;
	list_scan(w, l, end, ctx_now(ctx), 1);
	if (l->cursor < size)
		return;
	w->listing = NULL;
	if (!__atomic_compare_exchange_n(&l->state, &posted, LIST_DONE, 0,
					 __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
		/* abandoned by its reader: the next one frees it */
		__atomic_store_n(&w->list_dead, l, __ATOMIC_RELEASE);
}

/* Free the request a loop parked (abandoned, copied), if any. */
static void list_reap(struct worker *w)
{
	free(__atomic_exchange_n(&w->list_dead, NULL, __ATOMIC_ACQUIRE));
}

void flow_list_free(struct worker *w)
{
	list_reap(w);
	free(w->listing);	/* abandoned: its loop ended midway */
	w->listing = NULL;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Wait for the loop to copy l; 0, or -ETIMEDOUT (l is no longer ours). */
static int list_wait(struct worker *w, struct flow_list *l, uint32_t wait_ms)
{
	const struct timespec tick = { .tv_nsec = 1000 * 1000 };
	uint64_t deadline = mono_ms() + wait_ms;
	struct flow_list *mine;
	int posted;

	while (__atomic_load_n(&l->state, __ATOMIC_ACQUIRE) != LIST_DONE) {
		list_reap(w);	/* the loop waits for that before taking l */
		if (mono_ms() < deadline) {
			nanosleep(&tick, NULL);
			continue;
		}
		mine = l;	/* not taken yet: withdraw it */
		if (__atomic_compare_exchange_n(&w->list_req, &mine, NULL, 0,
						__ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE)) {
			free(l);
			return -ETIMEDOUT;
		}
		posted = LIST_POSTED;	/* taken: the loop parks it */
		if (__atomic_compare_exchange_n(&l->state, &posted,
						LIST_ABANDONED, 0,
						__ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			return -ETIMEDOUT;
		break;			/* DONE meanwhile */
	}
	return 0;
}

int pyfwd_flow_list(struct pyfwd_ctx *ctx, uint32_t worker,
		    const struct pyfwd_flow_filter *filter,
		    struct pyfwd_flow_info *out, uint32_t max,
		    uint64_t *total, uint32_t wait_ms)
{
	struct flow_list *l, *none = NULL;
	struct worker *w;
	uint64_t one = 1;
	int n, err;

	if (worker >= ctx->cfg.workers || (max && !out) || !total ||
	    !wait_ms)
		return -EINVAL;
	w = &ctx->workers[worker];
	list_reap(w);
	l = calloc(1, sizeof(*l) + (size_t)max * sizeof(*out));
	if (!l)
		return -ENOMEM;
	if (filter)
		l->filter = *filter;
	l->max = max;
	if (wait_ms == PYFWD_FLOW_LIST_INPLACE) {
		list_scan(w, l, w->flow_mask + 1, ctx_now(ctx), 0);
	} else {
		if (!__atomic_compare_exchange_n(&w->list_req, &none, l, 0,
						 __ATOMIC_RELEASE,
						 __ATOMIC_RELAXED)) {
			free(l);
			return -EBUSY;
		}
		/* a loop asleep in poll() wakes now, else in IDLE_POLL_MS */
		if (w->wake_fd >= 0 && write(w->wake_fd, &one, sizeof(one)) < 0)
			(void)0;	/* EAGAIN: woken already */
		err = list_wait(w, l, wait_ms);
		if (err)
			return err;
	}
	memcpy(out, l->out, (size_t)l->n * sizeof(*out));
	*total = l->total;
	n = (int)l->n;
	free(l);
	return n;
}

int64_t pyfwd_flow_slots_scan(const struct pyfwd_ctx *ctx, uint32_t worker)
{
	const struct worker *w;
	int64_t n = 0;
	uint64_t i;

	if (worker >= ctx->cfg.workers)
		return -EINVAL;
	w = &ctx->workers[worker];
	for (i = 0; i <= w->flow_mask; i++)
		n += !!w->flows[i].expires_ns;
	return n;
}

int pyfwd_flow_counts_check(const struct pyfwd_ctx *ctx, uint32_t worker)
{
	const struct worker *w;
	uint32_t *all, *closing, r, n = ctx->cfg.max_reals;
	int bad = 0;
	uint64_t i;

	if (worker >= ctx->cfg.workers)
		return -EINVAL;
	w = &ctx->workers[worker];
	all = calloc(n, sizeof(*all));
	closing = calloc(n, sizeof(*closing));
	if (!all || !closing) {
		free(all);
		free(closing);
		return -ENOMEM;
	}
	for (i = 0; i <= w->flow_mask; i++) {
		const struct flow *f = &w->flows[i];

		if (!f->counted)
			continue;
		if (!f->expires_ns || f->dir != DIR_ORIG || f->real >= n) {
			bad = 1;	/* only a held ORIG entry counts */
			break;
		}
		all[f->real]++;
		closing[f->real] += f->state == FLOW_CLOSING;
	}
	for (r = 0; r < n && !bad; r++)
		bad = all[r] != w->active[r] || closing[r] != w->inactive[r];
	free(all);
	free(closing);
	return bad;
}
