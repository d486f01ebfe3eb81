/* SPDX-License-Identifier: MIT */
/*
 * fastmap.c - the core's side of the XDP fast path: which flows go into
 * fast_flows and when they leave it (see fastmap.h, bpf/fastmap.h).
 *
 * An entry says what the core did to the flow's packet it was made from:
 * the bytes it wrote are read back from the rewritten frame, so that the
 * program writes the same (tests/cases/test_fastpath_cases.py checks it
 * case by case).  The map updates are bpf(2) calls made by the worker,
 * one per flow established or closed; the last-seen times and the reals'
 * generations are shared memory (BPF_F_MMAPABLE arrays).  Raw bpf(2): the
 * core builds without libbpf (csrc/Makefile's sanitizer and fuzzer).
 */
#include <errno.h>
#include <linux/bpf.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fastmap.h"
#include "flow.h"
#include "pyfwd_fast.h"

_Static_assert(PYFWD_FAST_FLOWS_MAX == FAST_FLOWS_MAX, "pyfwd_fast.h");
_Static_assert(sizeof(struct fast_key) == 44 &&
	       sizeof(struct fast_val) == 96, "fast_flows layout");

static int map_call(int cmd, int fd, const void *key, void *value,
		    uint64_t flags)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_fd = (uint32_t)fd;
	a.key = (uint64_t)(uintptr_t)key;
	a.value = (uint64_t)(uintptr_t)value;
	a.flags = flags;
	return syscall(__NR_bpf, cmd, &a, sizeof(a)) ? -errno : 0;
}

static void fast_key_of(const struct fastmap *m, const struct flow *fl,
			uint8_t in_if, struct fast_key *k)
{
	memset(k, 0, sizeof(*k));
	memcpy(k->saddr, fl->key.saddr, 16);
	memcpy(k->daddr, fl->key.daddr, 16);
	st_be16((uint8_t *)&k->sport, fl->key.sport);
	st_be16((uint8_t *)&k->dport, fl->key.dport);
	k->proto = fl->key.proto;
	k->family = fl->key.family;
	k->ifindex = m->ifindex[in_if % PYFWD_IFACES_MAX];
}

void fastmap_forget_(struct worker *w, struct flow *fl)
{
	struct fast_worker *fw = w->fast;
	struct fast_slot *s = &fw->slot[fl - w->flows];
	struct fast_key k;

	if (!s->seen1) {
		if (unlikely(s->refused))
			s->refused = 0;		/* a new flow may try again */
		return;
	}
	fast_key_of(fw->m, fl, s->in_if, &k);
	map_call(BPF_MAP_DELETE_ELEM, fw->m->flows_fd, &k, NULL, 0);
	fw->free[fw->nfree++] = s->seen1 - 1;
	s->seen1 = 0;
	w->stats.fast.fast_removed++;
}

/* When the program last carried entry fl (0: it does not). */
static uint64_t fast_seen_of(struct worker *w, const struct flow *fl)
{
	const struct fast_slot *s = &w->fast->slot[fl - w->flows];

	if (!s->seen1)
		return 0;
	return __atomic_load_n(&w->fast->m->seen[s->seen1 - 1],
			       __ATOMIC_RELAXED);
}

int fastmap_revive_(struct worker *w, struct flow *fl, uint64_t now)
{
	struct fast_worker *fw = w->fast;
	struct flow *peer = fl->peer == NO_PEER ? NULL : flow_peer(w, fl);
	uint64_t seen, other, ttl;

	if (!fl->expires_ns)
		return 0;	/* freed on purpose */
	/* A pair lives while either way is seen, as the core's flow_touch
	 * refreshes both. */
	seen = fast_seen_of(w, fl);
	other = peer ? fast_seen_of(w, peer) : 0;
	if (other > seen)
		seen = other;
	if (!seen)
		return 0;
	/* A test's fixed clock is not the program's: it alone decides. */
	if (__atomic_load_n(&fw->m->ctx->clock_ns, __ATOMIC_RELAXED))
		return 0;
	ttl = fl->key.proto == PROTO_UDP ? fw->m->udp_ttl_ns :
					   fw->m->tcp_ttl_ns;
	if (seen + ttl <= now)
		return 0;
	fl->expires_ns = seen + ttl;
	if (peer)
		peer->expires_ns = fl->expires_ns;
	return 1;
}

/*
 * What the program can carry: an established flow (TCP past its
 * handshake, or UDP) whose packet came in plain (no tag, no options), a
 * client's on the interface its flow came in on, and did not change its
 * state; out where it came in (XDP_TX), or for NAT/SNAT out of the other
 * interface (a redirect).
 */
static int fast_carries(const struct fastmap *m, const struct flow *fl,
			const struct parse *ps, const struct pyfwd_frame *f)
{
	const struct pyfwd_result *r = ps->r;

	if (fl->mode == PYFWD_MODE_TUN)
		return 0;	/* the program cannot grow a frame */
	if (fl->dir == DIR_ORIG ? fl->in_if != f->in_if :
				  fl->mode == PYFWD_MODE_DR)
		return 0;
	if (r->out_if != f->in_if &&
	    (fl->mode == PYFWD_MODE_DR ||
	     !m->ifindex[r->out_if % PYFWD_IFACES_MAX]))
		return 0;
	if (fl->key.proto == PROTO_TCP && fl->state != FLOW_OPEN)
		return 0;
	if (ps->tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST))
		return 0;
	return !(r->flags & (PYFWD_F_VLAN | PYFWD_F_IP_OPTIONS |
			     PYFWD_F_FRAGMENT)) &&
	       !(f->flags & PYFWD_FRAME_GSO);
}

static inline uint8_t io_flags(const struct pyfwd_ctx *ctx, uint8_t in_if)
{
	return ctx->if_flags[in_if % PYFWD_IFACES_MAX];
}

/* What replacing the 32-bit word at old by the one at new_ adds to a sum
 * (rewrite.c's). */
static inline uint64_t delta32(const uint8_t *old, const uint8_t *new_)
{
	return (uint64_t)(uint32_t)~ld_be32(old) + ld_be32(new_);
}

/*
 * NAT, SNAT: the packet's tuple as the core wrote it (f, rewritten) and
 * the deltas rewrite_nat() added to its sums, from the tuple it came with
 * (fl's key): constants of the flow.
 */
static void fast_nat_of(const struct flow *fl, const struct parse *ps,
			const struct pyfwd_frame *f, struct fast_val *v)
{
	const uint8_t *l3 = f->data + ps->r->l3_off;
	const uint8_t *l4 = f->data + ps->r->l4_off;
	int v4 = fl->key.family == PYFWD_AF_INET, alen = v4 ? 4 : 16, k;
	uint32_t old_ports = (uint32_t)fl->key.sport << 16 | fl->key.dport;

	memcpy(v->saddr, l3 + (v4 ? IP4_SADDR_OFF : IP6_SADDR_OFF), alen);
	memcpy(v->daddr, l3 + (v4 ? IP4_DADDR_OFF : IP6_DADDR_OFF), alen);
	memcpy(&v->sport, l4, 2);
	memcpy(&v->dport, l4 + 2, 2);
	for (k = 0; k < alen; k += 4)
		v->daddrs += delta32(fl->key.saddr + k, v->saddr + k) +
			     delta32(fl->key.daddr + k, v->daddr + k);
	v->dports = (uint64_t)(uint32_t)~old_ports + ld_be32(l4);
}

void fastmap_learn_(const struct pyfwd_ctx *ctx, struct worker *w,
		    const struct vip_bank *b, struct flow *fl,
		    const struct parse *ps, const struct pyfwd_frame *f)
{
	struct fast_worker *fw = w->fast;
	struct fast_slot *s = &fw->slot[fl - w->flows];
	struct fast_val v = { 0 };
	struct fast_key k;
	uint32_t gen, idx;
	uint64_t g;

	if (fl->state == FLOW_CLOSING) {
		fastmap_forget_(w, fl);		/* FIN or RST: the core's */
		return;
	}
	if (s->refused || !fast_carries(fw->m, fl, ps, f))
		return;
	if (s->seen1 && s->in_if != f->in_if)
		fastmap_forget_(w, fl);	/* answers that moved: a new key */
	gen = (uint32_t)__atomic_load_n(&fw->m->gens[fl->real],
					__ATOMIC_SEQ_CST);
	if (s->seen1 && s->gen == gen)
		return;				/* installed */
	/* A bank already replaced may hold a real the new one halted: the
	 * generation read above would not say so (fastmap_published). */
	g = __atomic_load_n(&ctx->gen, __ATOMIC_SEQ_CST);
	if (b != &ctx->bank[g & 1])
		return;
	if (s->seen1) {
		idx = s->seen1 - 1;		/* a stale entry: overwritten */
	} else if (fw->nfree) {
		idx = fw->free[--fw->nfree];
	} else {
		w->stats.fast.fast_install_failed++;
		s->refused = 1;
		return;
	}
	fast_key_of(fw->m, fl, f->in_if, &k);
	memcpy(v.dmac, f->data, 6);
	memcpy(v.smac, f->data + 6, 6);
	memcpy(v.mymac, ctx->if_mac[f->in_if % PYFWD_IFACES_MAX], 6);
	v.out_slot = ps->r->out_if;
	v.out_ifindex = fw->m->ifindex[v.out_slot % PYFWD_IFACES_MAX];
	v.reply = fl->dir == DIR_REPLY;
	if (fl->mode != PYFWD_MODE_DR)
		fast_nat_of(fl, ps, f, &v);
	v.seen = idx;
	v.gen = gen;
	v.real = fl->real;
	v.max_frame = (uint16_t)(ctx->cfg.max_frame > 0xffff ?
				 0xffff : ctx->cfg.max_frame);
	v.action = fl->mode == PYFWD_MODE_DR ? FAST_DR : FAST_NAT;
	/* The interface's flag, not this frame's: any of its frames may
	 * come unfinished (csum.c) */
	v.csum_check = !!((f->flags | io_flags(ctx, f->in_if)) &
			  PYFWD_FRAME_CSUM_PARTIAL);
	/* seen now (the flow was just touched): its expiry less its ttl */
	__atomic_store_n(&fw->m->seen[idx], fl->expires_ns -
			 (fl->key.proto == PROTO_UDP ? fw->m->udp_ttl_ns :
						       fw->m->tcp_ttl_ns),
			 __ATOMIC_RELAXED);
	if (map_call(BPF_MAP_UPDATE_ELEM, fw->m->flows_fd, &k, &v,
		     BPF_ANY)) {
		/* a stale entry of its own must not stay behind */
		map_call(BPF_MAP_DELETE_ELEM, fw->m->flows_fd, &k, NULL, 0);
		w->stats.fast.fast_install_failed++;
		w->stats.fast.fast_removed += !!s->seen1;
		fw->free[fw->nfree++] = idx;
		s->seen1 = 0;
		s->refused = 1;
		return;
	}
	w->stats.fast.fast_installed += !s->seen1;
	s->seen1 = idx + 1;
	s->gen = gen;
	s->in_if = f->in_if;
}

/* The VIPs as flows see them: a change sends every flow back. */
static int vips_differ(const struct pyfwd_vip *a, const struct pyfwd_vip *b,
		       uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		if (memcmp(a[i].addr, b[i].addr, 16) ||
		    a[i].family != b[i].family || a[i].proto != b[i].proto ||
		    a[i].port != b[i].port || a[i].mode != b[i].mode)
			return 1;
	return 0;
}

void fastmap_published(struct pyfwd_ctx *ctx)
{
	struct fastmap *m = ctx->fast;
	const struct vip_bank *b;
	uint32_t i, n, all;

	if (!m)
		return;
	b = &ctx->bank[__atomic_load_n(&ctx->gen, __ATOMIC_SEQ_CST) & 1];
	all = b->count != m->nvips || vips_differ(b->vips, m->vips, b->count);
	n = ctx->cfg.max_reals < FAST_REALS_MAX ? ctx->cfg.max_reals :
						  FAST_REALS_MAX;
	for (i = 0; i < n; i++)
		if (all || memcmp(&b->reals[i], &m->reals[i],
				  sizeof(m->reals[i])))
			__atomic_add_fetch(&m->gens[i], 1, __ATOMIC_SEQ_CST);
	memcpy(m->reals, b->reals, ctx->cfg.max_reals * sizeof(*m->reals));
	memcpy(m->vips, b->vips, b->count * sizeof(*m->vips));
	m->nvips = b->count;
}

void fastmap_stats_add(const struct pyfwd_ctx *ctx, struct pyfwd_stats *out)
{
	const struct fastmap *m = ctx->fast;
	struct fast_stats st[PYFWD_FAST_CPUS_MAX], sum = { 0 };
	uint32_t zero = 0, c;

	if (!m || m->folded || m->ncpus > PYFWD_FAST_CPUS_MAX ||
	    map_call(BPF_MAP_LOOKUP_ELEM, m->stats_fd, &zero, st, 0))
		return;
	for (c = 0; c < m->ncpus; c++) {
		sum.frames += st[c].frames;
		sum.bytes += st[c].bytes;
		sum.forward += st[c].forward;
		sum.forward_reply += st[c].forward_reply;
		sum.stale += st[c].stale;
		sum.csum_completed += st[c].csum_completed;
	}
	/* One view: what the program carried counts as the core's would. */
	out->frames += sum.frames;
	out->bytes += sum.bytes;
	out->verdict[PYFWD_VERDICT_FORWARD] += sum.frames;
	out->reason[PYFWD_R_FORWARD] += sum.forward;
	out->reason[PYFWD_R_FORWARD_REPLY] += sum.forward_reply;
	out->flows.flow_hits += sum.forward;
	out->fast.fast_frames += sum.frames;
	out->fast.fast_bytes += sum.bytes;
	out->fast.fast_stale += sum.stale;
	out->csum.csum_completed += sum.csum_completed;
}

void fastmap_real_stats_add(const struct pyfwd_ctx *ctx,
			    struct pyfwd_real_stats *out, uint32_t n)
{
	const struct fastmap *m = ctx->fast;
	struct fast_real_stats st[PYFWD_FAST_CPUS_MAX];
	uint32_t r, c;

	if (!m || m->folded || m->ncpus > PYFWD_FAST_CPUS_MAX)
		return;
	for (r = 0; r < n && r < FAST_REAL_STATS_MAX; r++) {
		if (map_call(BPF_MAP_LOOKUP_ELEM, m->reals_fd, &r, st, 0))
			return;
		for (c = 0; c < m->ncpus; c++) {
			out[r].frames += st[c].frames;
			out[r].bytes += st[c].bytes;
		}
	}
}

int fastmap_start(struct pyfwd_ctx *ctx, struct fastmap *m)
{
	uint32_t i, k, per = FAST_FLOWS_MAX / ctx->cfg.workers;

	m->ctx = ctx;
	m->nworkers = ctx->cfg.workers;
	m->tcp_ttl_ns = (uint64_t)ctx->cfg.tcp_timeout * NS_PER_S;
	m->udp_ttl_ns = (uint64_t)ctx->cfg.udp_timeout * NS_PER_S;
	m->reals = calloc(ctx->cfg.max_reals, sizeof(*m->reals));
	m->vips = calloc(ctx->cfg.max_vips, sizeof(*m->vips));
	if (!m->reals || !m->vips)
		return -ENOMEM;
	for (i = 0; i < m->nworkers; i++) {
		struct fast_worker *fw = &m->w[i];

		fw->m = m;
		fw->slot = calloc(ctx->workers[i].flow_mask + 1ull,
				  sizeof(*fw->slot));
		fw->free = calloc(per, sizeof(*fw->free));
		if (!fw->slot || !fw->free)
			return -ENOMEM;
		for (k = 0; k < per; k++)	/* the lowest on top */
			fw->free[k] = i * per + per - 1 - k;
		fw->nfree = per;
	}
	ctx->fast = m;
	fastmap_published(ctx);		/* the snapshot: bumps every real */
	for (i = 0; i < m->nworkers; i++)
		__atomic_store_n(&ctx->workers[i].fast, &m->w[i],
				 __ATOMIC_RELEASE);
	return 0;
}

void fastmap_free(struct fastmap *m)
{
	uint32_t i;

	for (i = 0; i < m->nworkers; i++) {
		free(m->w[i].slot);
		free(m->w[i].free);
	}
	free(m->reals);
	free(m->vips);
	if (m->seen)
		munmap(m->seen, m->seen_size);
	if (m->gens)
		munmap(m->gens, m->gens_size);
	free(m);
}

void fastmap_fold(struct pyfwd_ctx *ctx)
{
	struct worker *w0 = &ctx->workers[0];

	if (!ctx->fast)
		return;
	fastmap_stats_add(ctx, &w0->stats);
	fastmap_real_stats_add(ctx, w0->real_stats, ctx->cfg.max_reals);
	ctx->fast->folded = 1;
}

void fastmap_close(struct pyfwd_ctx *ctx)
{
	uint32_t i;

	if (!ctx->fast)
		return;
	for (i = 0; i < ctx->cfg.workers; i++)
		ctx->workers[i].fast = NULL;
	fastmap_free(ctx->fast);	/* the maps were the backend's */
	ctx->fast = NULL;
}
