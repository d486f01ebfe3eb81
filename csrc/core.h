/* SPDX-License-Identifier: MIT */
/*
 * core.h - the core's private state and its small per-packet helpers.
 * Not part of the cffi boundary (that is pyfwd.h).
 */
#ifndef PYFWD_CORE_H
#define PYFWD_CORE_H

#include <string.h>

#include "pyfwd.h"

#ifndef likely
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

#define ETH_HLEN_ 14
#define VLAN_HLEN_ 4
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806
#define ETHERTYPE_VLAN 0x8100
#define ETHERTYPE_QINQ 0x88a8
#define ETHERTYPE_IPV6 0x86dd

#define PROTO_HOPOPTS 0
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ROUTING 43
#define PROTO_FRAGMENT 44
#define PROTO_ICMPV6 58
#define PROTO_DSTOPTS 60
#define PROTO_PERSIST 255	/* flow_key.proto of a persistence entry */

/* How many IPv6 extension headers we walk before giving up on a frame. */
#define IP6_EXTHDR_MAX 8

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
};

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

#define FLOW_OPEN 1	/* DR: any packet; NAT: the real answered */
#define FLOW_CLOSING 2	/* FIN or RST seen: short timeout */
#define FLOW_SYN 3	/* NAT/SNAT: the client's SYN, no answer yet */
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
	uint64_t expires_ns;	/* 0 or past: the slot is free */
	uint32_t peer;		/* other direction's slot + 1, or NO_PEER */
	uint16_t real;		/* real server id */
	uint16_t snat_port;	/* ORIG of SNAT: the source port we gave */
	uint8_t state;
	uint8_t dir;		/* DIR_* */
	uint8_t mode;		/* PYFWD_MODE_* */
	uint8_t in_if;		/* ORIG: where the client's frames come in */
	uint8_t mac[6];		/* ORIG: the MAC they come from (next hop back) */
	uint8_t counted;	/* in its real's active count */
	uint8_t pad[5];
};

_Static_assert(sizeof(struct flow) == 72, "flow entry size (documented)");

/* SNAT source ports: a stack of free ones, a map of taken ones. */
struct port_pool {
	uint16_t *free;		/* stack */
	uint32_t nfree;
	uint32_t size;
	uint8_t *taken;		/* by port number: 65536 */
};

/* Frames punted to Python, per worker: single producer, single consumer. */
#define PUNT_SLOTS 256
#define PUNT_SNAP 2048	/* longer punted frames are cut to this */

struct punt_ring {
	uint32_t head;		/* written by the worker */
	uint32_t tail;		/* written by Python */
	uint16_t len[PUNT_SLOTS];
	uint8_t (*data)[PUNT_SNAP];
};

struct xsk_queue;

#define EPOCH_IDLE UINT64_MAX

/*
 * Everything one loop thread writes.  Aligned so that two workers never
 * share a cache line.
 */
struct worker {
	uint64_t epoch;		/* generation being read, or EPOCH_IDLE */
	uint32_t flow_mask;
	uint32_t sweep;		/* next slot the incremental expiry looks at */
	struct flow *flows;
	struct port_pool ports;
	uint32_t *seq;		/* per VIP index: next ring entry (SEQ) */
	uint32_t *active;	/* per real id: flows alive (this worker) */
	struct pyfwd_real_stats *real_stats;
	struct punt_ring punt;
	struct xsk_queue *xq;
	struct pyfwd_stats stats;
} __attribute__((aligned(64)));

/* The steering maps of the loaded BPF object (whichever backend). */
struct steer_maps {
	int addrs;
	int svcs;
	int rsvcs;
	int snat;
};

#define IO_NONE 0
#define IO_XSK 1	/* AF_XDP: xsk.c, loop.c */
#define IO_AFP 2	/* AF_PACKET: afpacket.c */

struct pyfwd_ctx {
	struct pyfwd_config cfg;
	uint8_t if_mac[PYFWD_IFACES_MAX][6];	/* per interface slot */
	struct pyfwd_snat snat;
	int any_mac;		/* cfg.mac is all zero: accept any unicast */
	uint64_t gen;		/* bank = gen & 1; written with a release store */
	uint64_t clock_ns;	/* fixed clock for tests, 0 = real clock */
	struct vip_bank bank[2];
	struct worker *workers;	/* cfg.workers of them */
	void *io;		/* the backend's state, NULL when none */
	int io_kind;		/* IO_* */
	void (*io_close)(struct pyfwd_ctx *ctx);	/* set with io */
	struct steer_maps maps;
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

/* What parsing a frame found; filled by classify_frame. */
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

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* Set-up code's errors: what failed, for errbuf (steer.c). */
void say(char *errbuf, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * steer.c: open the steering object at path, load only the n programs
 * named (the backend's), find its maps.  0 or -errno, errbuf says what.
 */
struct bpf_object;
struct bpf_program;
int steer_object_load(const char *path, const char *const *names,
		      struct bpf_program **progs, int n,
		      struct bpf_object **objp, struct steer_maps *maps,
		      char *errbuf, size_t errlen);

uint32_t classify_frame(const struct pyfwd_ctx *ctx, struct parse *ps,
			const struct pyfwd_frame *f);
uint64_t core_now(const struct pyfwd_ctx *ctx);
/* Expire NAT/SNAT pairs in the next `slots` slots (loop: when idle). */
void core_sweep(struct worker *w, uint64_t now, uint32_t slots);
uint32_t core_burst(struct pyfwd_ctx *ctx, struct worker *w,
		    struct pyfwd_frame *frames, uint32_t n,
		    struct pyfwd_result *out);
void punt_push(struct worker *w, const uint8_t *data, uint32_t len);

static inline uint16_t ld_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t ld_be32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return __builtin_bswap32(v);
}

/* A ones' complement sum of 16-bit words, kept in 64 bits, to 16. */
static inline uint16_t csum_fold(uint64_t s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/* The reasons are ordered by verdict: see PYFWD_R_* in pyfwd.h. */
static inline uint32_t reason_verdict(uint32_t reason)
{
	if (reason <= PYFWD_R_FORWARD_ICMP)
		return PYFWD_VERDICT_FORWARD;
	if (reason <= PYFWD_R_PASS_VIP_OTHER)
		return PYFWD_VERDICT_PASS;
	if (reason <= PYFWD_R_PUNT_NDP)
		return PYFWD_VERDICT_PUNT;
	return PYFWD_VERDICT_DROP;
}

/*
 * The hash of flows and of the VIP tables.  Words are taken in pairs as
 * one 64-bit word (a last odd one alone), each xored in, multiplied and
 * xor-shifted; murmur3's 64-bit finaliser, low 32 bits.  Fixed, never
 * seeded: it picks a flow's Maglev entry, which must be the same on every
 * node behind ECMP (changing it moves flows during a rolling upgrade).
 * Words are in host order (the targets are little-endian).
 */
static inline uint64_t hash_mix(uint64_t h, uint64_t v)
{
	h ^= v;
	h *= 0xbf58476d1ce4e5b9ull;
	return h ^ (h >> 31);
}

static inline uint32_t hash_fin(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	return (uint32_t)(h ^ (h >> 33));
}

static inline uint32_t hash_words(const uint32_t *w, int n, uint32_t seed)
{
	uint64_t h = seed ^ 0x9e3779b97f4a7c15ull;
	int i;

	for (i = 0; i + 1 < n; i += 2)
		h = hash_mix(h, w[i] | (uint64_t)w[i + 1] << 32);
	if (n & 1)
		h = hash_mix(h, w[n - 1]);
	return hash_fin(h);
}

static inline uint32_t ld_u32(const void *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

static inline uint64_t ld_u64(const void *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* IPv4 uses only the address's first word: the rest is zero. */
static inline uint32_t vip_hash(const uint8_t addr[16], uint8_t family,
				uint32_t extra)
{
	uint32_t w[5];

	if (family == PYFWD_AF_INET)
		return hash_fin(hash_mix(family ^ 0x9e3779b97f4a7c15ull,
					 ld_u32(addr) | (uint64_t)extra << 32));
	memcpy(w, addr, 16);
	w[4] = extra;
	return hash_words(w, 5, family);
}

/*
 * IPv4: the words saddr, daddr, sport | dport << 16 and proto | family
 * << 8 (pad is 0), loaded as fill_key stored them.  IPv6: the whole key,
 * 10 words.
 */
static inline uint32_t flow_hash(const struct flow_key *k)
{
	uint32_t w[sizeof(*k) / 4];
	uint64_t h;

	if (k->family == PYFWD_AF_INET) {
		h = 0x70667764u ^ 0x9e3779b97f4a7c15ull;
		h = hash_mix(h, ld_u32(k->saddr) |
				(uint64_t)ld_u32(k->daddr) << 32);
		h = hash_mix(h, ld_u64(&k->sport));
		return hash_fin(h);
	}
	memcpy(w, k, sizeof(w));
	return hash_words(w, sizeof(w) / 4, 0x70667764u);
}

static inline uint32_t svc_extra(uint8_t proto, uint16_t port)
{
	return ((uint32_t)proto << 16) | port;
}

/*
 * Is the 16-byte address of a table slot addr?  An IPv4 addr is the caller's
 * 4 bytes and 12 zeros: comparing its first word only (and the slot's zeros)
 * spares a wide load waiting for the narrow store that wrote addr.
 */
static inline int addr_eq(const uint8_t *slot, const uint8_t *addr,
			  uint8_t family)
{
	if (family == PYFWD_AF_INET)
		return ld_u32(slot) == ld_u32(addr) && !ld_u32(slot + 4) &&
		       !ld_u64(slot + 8);
	return !memcmp(slot, addr, 16);
}

/* Index of the first VIP with this address, or -1. */
static inline int32_t vip_addr_lookup(const struct vip_bank *b,
				      const uint8_t addr[16], uint8_t family)
{
	uint32_t i = vip_hash(addr, family, 0) & b->mask;

	for (;; i = (i + 1) & b->mask) {
		const struct addr_slot *s = &b->addr[i];

		if (s->vip < 0)
			return -1;
		if (s->family == family && addr_eq(s->addr, addr, family))
			return s->vip;
	}
}

/* Index of the VIP serving addr:port/proto, or -1. */
static inline int32_t vip_svc_lookup(const struct vip_bank *b,
				     const uint8_t addr[16], uint8_t family,
				     uint8_t proto, uint16_t port)
{
	uint32_t i = vip_hash(addr, family, svc_extra(proto, port)) & b->mask;

	for (;; i = (i + 1) & b->mask) {
		const struct vip_slot *s = &b->svc[i];

		if (s->vip < 0)
			return -1;
		if (s->port == port && s->proto == proto &&
		    s->family == family && addr_eq(s->addr, addr, family))
			return s->vip;
	}
}

/*
 * Internet checksum, updated in place when a 16-bit word of what it covers
 * changes (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
 */
static inline void csum_fix16(uint8_t *sum, uint16_t old, uint16_t new_)
{
	uint32_t s = (uint16_t)~((sum[0] << 8) | sum[1]);

	s += (uint16_t)~old;
	s += new_;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (uint16_t)~s;
	sum[0] = (uint8_t)(s >> 8);
	sum[1] = (uint8_t)s;
}

static inline void st_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void st_be32(uint8_t *p, uint32_t v)
{
	v = __builtin_bswap32(v);
	memcpy(p, &v, 4);
}

#endif /* PYFWD_CORE_H */
