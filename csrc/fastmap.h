/* SPDX-License-Identifier: MIT */
/*
 * fastmap.h - the core's side of the XDP fast path (bpf/fastpath.h): the
 * flow table's established flows, cached in BPF maps (bpf/fastmap.h).
 *
 * The core keeps owning connection tracking.  forward.c calls
 * fastmap_learn() after it rewrote a packet of a flow: an established
 * flow the XDP program can carry is installed (one map update per flow,
 * never per packet), a closing one removed.  flow.c calls fastmap_forget()
 * whenever an entry is freed or lapses, and fastmap_revive() before it
 * takes an entry for expired: the program's last-seen time (an mmapped
 * array, no syscall) may say the flow is alive after all.  Off (w->fast
 * NULL), each hook is one predictable branch.
 */
#ifndef PYFWD_FASTMAP_CORE_H
#define PYFWD_FASTMAP_CORE_H

#include "core.h"
#include "bpf/fastmap.h"

#define PYFWD_FAST_CPUS_MAX 1024	/* fast_stats read: CPUs at most */

/* A flow slot's entry in fast_flows: none while seen1 is 0. */
struct fast_slot {
	uint32_t seen1;		/* its fast_seen index + 1 */
	uint32_t gen;		/* the real's generation it was installed at */
	uint8_t in_if;		/* the interface slot of its key */
	uint8_t refused;	/* the map refused it: no retry per packet
				 * until the flow is freed */
	uint8_t pad[2];
};

/* One worker's share of the maps (w->fast): its own seen indices. */
struct fast_worker {
	struct fastmap *m;
	struct fast_slot *slot;	/* by flow slot (flow_mask + 1) */
	uint32_t *free;		/* a stack of free fast_seen indices */
	uint32_t nfree;
};

/* The fast path of a context (ctx->fast), set up by io/fastpath.c. */
struct fastmap {
	const struct pyfwd_ctx *ctx;
	int flows_fd;		/* fast_flows */
	int stats_fd;		/* fast_stats (per CPU) */
	int reals_fd;		/* fast_reals (per CPU) */
	uint32_t ncpus;		/* possible CPUs: fast_stats' values */
	uint64_t *seen;		/* fast_seen, mmapped */
	uint64_t *gens;		/* fast_gens, mmapped */
	size_t seen_size, gens_size;
	uint32_t ifindex[PYFWD_IFACES_MAX];
	uint64_t tcp_ttl_ns, udp_ttl_ns;
	/* What the last publish held: what changed bumps fast_gens. */
	struct pyfwd_real *reals;	/* max_reals */
	struct pyfwd_vip *vips;		/* max_vips */
	uint32_t nvips;
	uint32_t nworkers;
	int folded;		/* its counters are worker 0's now */
	struct fast_worker w[];
};

struct parse;

void fastmap_learn_(const struct pyfwd_ctx *ctx, struct worker *w,
		    const struct vip_bank *b, struct flow *fl,
		    const struct parse *ps, const struct pyfwd_frame *f);
void fastmap_forget_(struct worker *w, struct flow *fl);
int fastmap_revive_(struct worker *w, struct flow *fl, uint64_t now);

/* forward.c: packet f of flow fl was forwarded, rewritten. */
static inline void fastmap_learn(const struct pyfwd_ctx *ctx,
				 struct worker *w, const struct vip_bank *b,
				 struct flow *fl, const struct parse *ps,
				 const struct pyfwd_frame *f)
{
	if (unlikely(w->fast))
		fastmap_learn_(ctx, w, b, fl, ps, f);
}

/* flow.c: entry fl is freed, or lapses. */
static inline void fastmap_forget(struct worker *w, struct flow *fl)
{
	if (unlikely(w->fast))
		fastmap_forget_(w, fl);
}

/* flow.c: fl looks expired; 1 if the fast path saw it lately (its
 * expiry pushed on), 0 if it is. */
static inline int fastmap_revive(struct worker *w, struct flow *fl,
				 uint64_t now)
{
	return unlikely(w->fast) && fastmap_revive_(w, fl, now);
}

/* tables.c: a new bank is active; bump the generation of every real
 * whose entry changed (all of them if the VIPs changed). */
void fastmap_published(struct pyfwd_ctx *ctx);

/* stats.c: the program's counters into a snapshot (summed over CPUs). */
void fastmap_stats_add(const struct pyfwd_ctx *ctx, struct pyfwd_stats *out);

/* stats.c: what the program sent to real ids 0..n-1 into out. */
void fastmap_real_stats_add(const struct pyfwd_ctx *ctx,
			    struct pyfwd_real_stats *out, uint32_t n);

/* io/fastpath.c: set up (maps found, arrays mapped) and torn down. */
int fastmap_start(struct pyfwd_ctx *ctx, struct fastmap *m);
void fastmap_close(struct pyfwd_ctx *ctx);
/* io.c, the loops stopped: the program's counters into worker 0's, which
 * outlive the maps (the counters stay where they were). */
void fastmap_fold(struct pyfwd_ctx *ctx);
void fastmap_free(struct fastmap *m);	/* fastmap_start's error path */

#endif /* PYFWD_FASTMAP_CORE_H */
