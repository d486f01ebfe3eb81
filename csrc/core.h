/* SPDX-License-Identifier: MIT */
/*
 * core.h - the core's private state: the context, the table banks, the
 * flow table's entries, the workers; and the functions the core's files
 * share.  Not part of the cffi boundary (that is pyfwd.h).
 *
 * The files of the core, each one concern; a file calls only files below
 * it in this list (no cycle):
 *
 *   burst.c     the burst: classify, forward, count, punt (per packet)
 *   forward.c   the three kinds of forward: flow, real, rewrite
 *   csum.c      unfinished TCP/UDP checksums completed (veth's)
 *   sched.c     which real a new flow goes to; Maglev table fill
 *   flow.c      the flow table: probe, pairs, sweep, expiry (flow.h: the
 *               per-packet look-up and touch, inline)
 *   classify.c  parse and classify one frame (tables.h: the look-ups)
 *   tunnel.c    TUN: the outer header, or the ICMP error of a packet too
 *               big for the tunnel
 *   rewrite.c   NAT/SNAT translation (rewrite.h: L2), checksums kept right
 *   punt.c      the punt ring: the worker pushes, Python drains
 *   handoff.c   several workers: flow owners, frames handed to them
 *   stats.c     counters and reason names, read by Python
 *   ctx.c       the context: create, destroy, SNAT pools, clock
 *   tables.c    publishing the tables into the inactive bank
 *
 * proto.h holds the protocol numbers (shared with bpf/), packet.h the
 * byte and checksum helpers, hash.h the hash.  The I/O backends (io/)
 * feed bursts to burst.c and sweep when idle.
 */
#ifndef PYFWD_CORE_H
#define PYFWD_CORE_H

#include <time.h>

#include "hash.h"
#include "packet.h"
#include "proto.h"
#include "pyfwd.h"
#include "pyfwd_mq.h"
#include "pyfwd_tun.h"
#include "pyfwd_flows.h"

/* How many IPv6 extension headers we walk before giving up on a frame. */
#define IP6_EXTHDR_MAX 8
#define PROTO_PERSIST 255	/* flow_key.proto of a persistence entry */
#define NS_PER_S 1000000000ull

/* --- the published tables (tables.c builds, tables.h looks up) ---------- */

/* One slot of the VIP service table (open addressing, linear probing). */
struct vip_slot {
	uint8_t addr[16];
	uint8_t family;
	uint8_t proto;
	uint16_t port;
	int32_t vip;		/* index into the published array; -1 = empty */
};

/* One slot of the VIP address set: is this address any VIP's? */
struct addr_slot {
	uint8_t addr[16];
	uint8_t family;
	uint8_t pad[3];
	int32_t vip;		/* first VIP with this address; -1 = empty */
};

/*
 * A bank is one complete set of tables.  There are two: the workers read
 * the active one while Python builds the other (Katran's and Cilium's way).
 */
struct vip_bank {
	uint32_t mask;		/* slots - 1; slots is a power of two */
	uint32_t count;		/* VIPs */
	struct vip_slot *svc;
	struct addr_slot *addr;
	struct pyfwd_vip *vips;		/* max_vips */
	struct pyfwd_real *reals;	/* max_reals, index = id */
	uint32_t nreals;
	uint32_t nring;
	uint16_t *ring;			/* max_ring */
	uint32_t nat_vips;		/* VIPs in NAT or SNAT mode */
	/* NAT VIPs' reals' addr:port/proto (vip: the VIP), the sources of
	 * their answers: one no flow claims is a stray (forward.c). */
	struct vip_slot *nat_reals;
	uint32_t nat_mask;		/* its slots - 1 */
	uint8_t *seen;			/* publishing's scratch, per real id */
};

/* --- flows (flow.c, flow.h) ---------------------------------------------- */

/* The 5-tuple of a flow, as seen from the client. */
struct flow_key {
	uint8_t saddr[16];
	uint8_t daddr[16];
	uint16_t sport;
	uint16_t dport;
	uint8_t proto;
	uint8_t family;
	uint8_t pad[2];
};

/* fill_key and flow_hash treat sport..pad as one little-endian word. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian");
_Static_assert(offsetof(struct flow_key, sport) == 32 &&
	       sizeof(struct flow_key) == 40, "flow_key layout");

/*
 * TCP states, as a balancer needs them (UDP flows stay FLOW_OPEN).  A flow
 * made by a SYN is half-open (tcp_syn_timeout) until the client's ACK
 * completes the handshake: DR sees only the client (SYN, then an ACK
 * without SYN); NAT/SNAT wait for the real's answer first, so that a
 * spoofed SYN, answered by a SYN-ACK nobody acknowledges, holds its slots
 * and SNAT port for tcp_syn_timeout, not tcp_timeout.  A DR flow made by
 * another segment (a connection under way: a restart, another node's
 * flow; or a lone late segment of one gone) is half-open too, until the
 * client's next segment; a NAT one still waits for the real.
 */
#define FLOW_OPEN PYFWD_FLOW_OPEN	/* established: tcp_timeout */
#define FLOW_CLOSING PYFWD_FLOW_CLOSING	/* FIN or RST: tcp_fin_timeout */
#define FLOW_SYN PYFWD_FLOW_SYN	/* half-open: the client's SYN only */
#define FLOW_SYN_ACK PYFWD_FLOW_SYN_ACK	/* half-open, NAT/SNAT: the real
					 * answered, the client's ACK not
					 * seen yet */
#define FLOW_PROBE 16	/* slots looked at from each of two hashes */

#define DIR_ORIG 0	/* client -> VIP */
#define DIR_REPLY 1	/* real server -> client (NAT and SNAT) */
#define NO_PEER 0	/* flow.peer is the other entry's slot + 1 */

/*
 * One direction of a flow: 72 bytes.  A DR flow takes one entry; a NAT or
 * SNAT flow two (ORIG and REPLY, each the other's peer): 144 bytes.
 */
struct flow {
	struct flow_key key;	/* the tuple as it arrives */
	uint64_t expires_ns;	/* past: expired; 0: the slot is free */
	uint32_t peer;		/* other direction's slot + 1, or NO_PEER */
	uint16_t real;		/* real server id */
	uint16_t snat_port;	/* ORIG of SNAT: the source port we gave */
	uint8_t state;
	uint8_t dir;		/* DIR_* */
	uint8_t mode;		/* PYFWD_MODE_* */
	uint8_t in_if;		/* ORIG: where the client's frames come in */
	uint8_t mac[6];		/* ORIG: the MAC they come from (next hop) */
	uint8_t counted;	/* in its real's active count (and, closing,
				 * its inactive one) */
	uint8_t pad[5];
};

_Static_assert(sizeof(struct flow) == 72, "flow entry size (documented)");

/*
 * SNAT source ports: a FIFO ring of free ones, the flow of taken ones.  A
 * freed port goes last, so that it is used again as late as the pool
 * allows: the real server keeps its connection from that port in
 * TIME-WAIT for 60 s, and drops a new SYN from it whose TCP timestamp is
 * older (PAWS), as a new connection's is half the time (Linux clients
 * offset their timestamps per connection).  See flow.c snat_port_take.
 */
#define PORT_RING_MASK 0xffffu	/* the ring holds 65536 */

struct port_pool {
	uint16_t *free;		/* ring: nfree ports from head */
	uint32_t head;
	uint32_t nfree;
	uint32_t size;
	uint32_t *owner;	/* by port number (65536): the ORIG entry's
				 * flow_link, 0 = not taken */
	uint32_t cursor;	/* where reclaiming looks next (flow.c) */
};

/* --- workers ------------------------------------------------------------- */

/* Frames punted to Python, per worker: single producer, single consumer. */
#define PUNT_SLOTS 256
/* The last PUNT_NEIGH slots take ARP and NDP only: a ping flood at a VIP
 * fills the ring no further, and the neighbours are still answered. */
#define PUNT_NEIGH 64
#define PUNT_SNAP 2048	/* longer punted frames are cut to this */

struct punt_ring {
	uint32_t head;		/* written by the worker */
	uint32_t tail;		/* written by Python */
	uint16_t len[PUNT_SLOTS];
	uint8_t (*data)[PUNT_SNAP];
};

#define EPOCH_IDLE UINT64_MAX

/*
 * Everything one loop thread writes.  Aligned so that two workers never
 * share a cache line.
 */
struct flow_list;	/* flowlist.c */

struct worker {
	uint64_t epoch;		/* generation being read, or EPOCH_IDLE */
	uint32_t flow_mask;
	uint32_t sweep;		/* next slot the incremental expiry looks at */
	uint64_t swept_ns;	/* when it last looked (burst.c) */
	struct flow *flows;
	uint64_t slots_used;	/* slots an entry holds (flow.h flow_slot_*) */
	struct port_pool ports;
	uint32_t *seq;		/* per VIP index: next ring entry (SEQ) */
	uint32_t *active;	/* per real id: flows alive (this worker),
				 * closing ones too: what LC and WLC weigh */
	uint32_t *inactive;	/* per real id: those of them closing
				 * (flow.h: FLOW_CLOSING, after a FIN/RST) */
	struct pyfwd_real_stats *real_stats;
	struct punt_ring punt;
	struct pyfwd_stats stats;
	uint64_t beats;		/* loop iterations: the heartbeat (io/io.h) */
	uint64_t new_second;	/* new_flows_per_second: the second counted */
	uint32_t new_in_second;	/* and the new flows made in it */
	int hold;		/* PYFWD_LOOP_*: set by pyfwd_io_worker_pause */
	/* pyfwd_flow_list (flowlist.c): a request posted, the one this
	 * worker's loop is copying (its own: no other thread reads it), and
	 * one its reader abandoned, copied, for the next reader to free. */
	struct flow_list *list_req;
	struct flow_list *listing;
	struct flow_list *list_dead;
	struct fast_worker *fast;	/* the XDP fast path's, or NULL */
	/* Several workers (handoff.c): */
	uint32_t id;		/* its index: the RX queue it serves */
	int wake_fd;		/* eventfd: wakes its loop from poll(), -1 */
	uint64_t handed_to;	/* bit o: frames pushed to o, not woken yet */
	int sleeping;		/* in poll(): a hander writes wake_fd */
	uint32_t take_from;	/* the ring taken from first next time */
} __attribute__((aligned(64)));

/*
 * Frames a worker hands to another (handoff.c): one ring per (from, to)
 * pair, single producer, single consumer; slots allocated at create.
 */
struct handoff_ring {
	uint32_t head __attribute__((aligned(64)));	/* written by from */
	uint32_t tail __attribute__((aligned(64)));	/* written by to */
	uint32_t mask __attribute__((aligned(64)));	/* slots - 1 */
	uint16_t *len;
	uint8_t *in_if;
	uint8_t *flags;
	uint8_t *data;		/* slots * PYFWD_HANDOFF_SNAP */
};

/* --- the context --------------------------------------------------------- */

/* The steering maps of the loaded BPF object (whichever backend). */
struct steer_maps {
	int vips;
	int rsvcs;
	int snat;
};

#define IO_NONE 0
#define IO_XSK 1	/* AF_XDP: io/xsk.c, io/xsk_loop.c */
#define IO_AFP 2	/* AF_PACKET: io/afp.c, io/afp_loop.c */

struct pyfwd_ctx {
	struct pyfwd_config cfg;
	uint8_t if_mac[PYFWD_IFACES_MAX][6];	/* per interface slot */
	/* Per slot: flags the backend gives every frame (io.c decides). */
	uint8_t if_flags[PYFWD_IFACES_MAX];
	struct pyfwd_snat snat;
	struct pyfwd_tun tun[PYFWD_IFACES_MAX];	/* TUN's outer sources */
	int any_mac;		/* cfg.mac is all zero: accept any unicast */
	uint64_t gen;		/* bank = gen & 1; a release store writes it */
	uint64_t clock_ns;	/* fixed clock for tests, 0 = real clock */
	struct vip_bank bank[2];
	struct worker *workers;	/* cfg.workers of them */
	/* The I/O backend (io/io.c binds and releases it). */
	void *io;		/* the backend's state, NULL when none */
	int io_kind;		/* IO_* */
	void (*io_free)(void *io);	/* the backend's: frees io */
	void (*io_close)(struct pyfwd_ctx *ctx);	/* set with io */
	struct steer_maps maps;
	struct fastmap *fast;	/* the XDP fast path (fastmap.h), or NULL */
	/* workers * workers rings, [from * workers + to]; NULL: one worker */
	struct handoff_ring *handoff;
	/* Workers 0..owners-1 own NAT/SNAT flows and SNAT ports: all of
	 * them, or worker 0 alone under a backend of one loop (AF_PACKET) */
	uint32_t owners;
	int stop;
};

/* The bank a worker may read for the rest of a burst (see publish). */
static inline const struct vip_bank *bank_enter(struct pyfwd_ctx *ctx,
						struct worker *w)
{
	uint64_t g;

	do {
		g = __atomic_load_n(&ctx->gen, __ATOMIC_SEQ_CST);
		__atomic_store_n(&w->epoch, g, __ATOMIC_SEQ_CST);
	} while (__atomic_load_n(&ctx->gen, __ATOMIC_SEQ_CST) != g);
	return &ctx->bank[g & 1];
}

static inline void bank_leave(struct worker *w)
{
	__atomic_store_n(&w->epoch, EPOCH_IDLE, __ATOMIC_RELEASE);
}

/* Set-up: the smallest power of two >= n, from floor (a power of two). */
static inline uint32_t pow2_at_least(uint32_t n, uint32_t floor)
{
	uint32_t p = floor;

	while (p < n)
		p <<= 1;
	return p;
}

/* The core's clock in ns: the tests' fixed one, else a coarse monotonic. */
static inline uint64_t ctx_now(const struct pyfwd_ctx *ctx)
{
	uint64_t fixed = __atomic_load_n(&ctx->clock_ns, __ATOMIC_RELAXED);
	struct timespec ts;

	if (fixed)
		return fixed;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* The reasons are ordered by verdict: see PYFWD_R_* in pyfwd.h. */
static inline uint32_t reason_verdict(uint32_t reason)
{
	if (reason <= PYFWD_R_FORWARD_ICMP ||
	    reason == PYFWD_R_FORWARD_TOO_BIG)
		return PYFWD_VERDICT_FORWARD;
	if (reason <= PYFWD_R_PASS_VIP_OTHER)
		return PYFWD_VERDICT_PASS;
	if (reason <= PYFWD_R_PUNT_NDP)
		return PYFWD_VERDICT_PUNT;
	return PYFWD_VERDICT_DROP;
}

/* NAT and SNAT: a flow of two entries, routed (TTL), replies come back. */
static inline int mode_paired(uint8_t mode)
{
	return mode == PYFWD_MODE_NAT || mode == PYFWD_MODE_SNAT;
}

/* --- one frame on its way through a burst ------------------------------- */

/* What parsing a frame found; filled by frame_classify. */
struct parse {
	const uint8_t *p;
	uint32_t len;		/* bytes of frame */
	uint32_t l3_end;	/* end of the L3 packet (IP length), <= len */
	struct pyfwd_result *r;
	const struct vip_bank *b;
	struct flow_key key;	/* TCP/UDP tuple, or the one an ICMP quotes */
	uint32_t hash;		/* FORWARD, FORWARD_REPLY: flow_hash(&key) */
	uint8_t tcp_flags;
	uint32_t inner_l3;	/* FORWARD_ICMP: the quoted IP header */
	uint32_t inner_l4;	/* and its L4 header */
	uint32_t inner_len;	/* bytes quoted (ICMP payload) */
};

/* burst.c: n frames through the core as worker w; how many to forward. */
uint32_t worker_burst(struct pyfwd_ctx *ctx, struct worker *w,
		      struct pyfwd_frame *frames, uint32_t n,
		      struct pyfwd_result *out);

/* burst.c: expire the slice of w's flow table the clock says is due (a
 * whole pass every SWEEP_ROUND ms, at most once a ms); the loops call it
 * when idle, worker_burst on every burst. */
void worker_sweep(struct worker *w, uint64_t now);

/* flowlist.c: the loops' side of pyfwd_flow_list: take a request posted
 * and copy the next slice of the table (all of it: the rest at once, for a
 * paused loop); flow_list_free at destroy (a listing its loop left, one
 * parked). */
void flow_list_serve(struct pyfwd_ctx *ctx, struct worker *w, int all);
void flow_list_free(struct worker *w);

/* classify.c: the reason for frame f (ps->r filled on the way). */
uint32_t frame_classify(const struct pyfwd_ctx *ctx, struct parse *ps,
			const struct pyfwd_frame *f);

/*
 * forward.c: a frame classified FORWARD, FORWARD_REPLY or FORWARD_ICMP,
 * rewritten; returns the reason it ends with (FORWARD*, or a PASS, PUNT or
 * DROP one when no flow or real takes it).
 */
uint32_t forward_vip(const struct pyfwd_ctx *ctx, struct worker *w,
		     const struct vip_bank *b, struct parse *ps,
		     struct pyfwd_frame *f, uint64_t now);
uint32_t forward_reply(const struct pyfwd_ctx *ctx, struct worker *w,
		       const struct vip_bank *b, struct parse *ps,
		       struct pyfwd_frame *f, uint64_t now);
uint32_t forward_icmp(const struct pyfwd_ctx *ctx, struct worker *w,
		      const struct vip_bank *b, struct parse *ps,
		      struct pyfwd_frame *f, uint64_t now);

/*
 * tunnel.c: a TUN VIP's frame (the client's packet, or an ICMP error
 * about one: `error`) encapsulated toward real id and its L2 rewritten;
 * or, too big for the tunnel, turned into the ICMP error back to the
 * client.  Returns the reason it ends with: `reason` (FORWARD or
 * FORWARD_ICMP), FORWARD_TOO_BIG, or a drop.
 */
uint32_t tun_forward(const struct pyfwd_ctx *ctx, struct worker *w,
		     const struct vip_bank *b, uint32_t id, struct parse *ps,
		     struct pyfwd_frame *f, uint32_t reason);

/*
 * sched.c: a real server for a new flow of vip (PYFWD_NO_REAL if none);
 * and persistence: the real this client's address was sent to on this VIP
 * within the last vip->persist seconds (a flow entry of its own), or
 * PYFWD_NO_REAL, with *entry the entry to refresh or fill (NULL: none
 * without pushing a flow out) and *pk its key.
 */
uint32_t sched_pick(const struct vip_bank *b, struct worker *w,
		    const struct pyfwd_vip *vip, int32_t vip_index,
		    const struct flow_key *key);
uint32_t sched_persist_lookup(struct worker *w, const struct vip_bank *b,
			      const struct pyfwd_vip *vip,
			      const struct flow_key *key, uint64_t now,
			      struct flow **entry, struct flow_key *pk);

/*
 * csum.c: a TCP/UDP packet about to be forwarded, flagged
 * PYFWD_FRAME_CSUM_PARTIAL: its unfinished checksum completed (counted),
 * a wrong one counted and left as it is.  Before any rewrite.
 */
void csum_finish(struct worker *w, const struct parse *ps, uint8_t *frame);

/* csum.c: the pseudo-header's sum of the IP header at l3, folded, as a
 * big-endian value, not complemented: what a sender leaves unfinished. */
uint16_t csum_pseudo(const uint8_t *l3, uint8_t family, uint8_t proto,
		     uint32_t l4_len);

/*
 * handoff.c: set-up (ctx.c: allocated for several workers, freed); the
 * worker that owns the flow of a classified frame (handoff_owner: w->id
 * when none other does); push a copy of f to its ring (0, or the drop
 * reason); wake the owners pushed to that sleep (after a burst); and the
 * loops' idle: handoff_sleep() before poll() (1: frames wait, do not
 * sleep), handoff_woken() after.
 */
int handoff_alloc(struct pyfwd_ctx *ctx);
void handoff_free(struct pyfwd_ctx *ctx);
uint32_t handoff_owner(const struct pyfwd_ctx *ctx, const struct worker *w,
		       const struct parse *ps, uint32_t reason);
uint32_t handoff_push(struct pyfwd_ctx *ctx, struct worker *w, uint32_t to,
		      const struct pyfwd_frame *f);
void handoff_wake(struct pyfwd_ctx *ctx, struct worker *w);
int handoff_sleep(struct pyfwd_ctx *ctx, struct worker *w);
void handoff_woken(struct worker *w);

/*
 * ctx.c: workers 0..owners-1 own flows from now on (the backends' open:
 * as many as loops run), the SNAT range split between them anew.  0, or
 * -EBUSY when flows hold SNAT ports.
 */
int ctx_owners_set(struct pyfwd_ctx *ctx, uint32_t owners);

/* The worker whose share of the SNAT range holds port (ctx.c, handoff.c). */
static inline uint32_t snat_port_worker(const struct pyfwd_snat *s,
					uint32_t port, uint32_t workers)
{
	return (port - s->port_lo) % workers;
}

/* punt.c: a copy of the frame for Python (counted when the ring is full). */
void punt_push(struct worker *w, const uint8_t *data, uint32_t len,
	       uint32_t reason);

#endif /* PYFWD_CORE_H */
