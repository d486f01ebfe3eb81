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
 * A bank is one complete VIP table.  There are two: the loop reads the
 * active one while Python builds the other (Katran's and Cilium's way).
 */
struct vip_bank {
	uint32_t mask;		/* slots - 1; slots is a power of two */
	uint32_t count;
	struct vip_slot *svc;
	struct addr_slot *addr;
};

struct pyfwd_ctx {
	struct pyfwd_config cfg;
	int any_mac;		/* cfg.mac is all zero: accept any unicast */
	uint32_t active;	/* bank index; written with a release store */
	uint64_t generation;
	struct vip_bank bank[2];
	struct pyfwd_stats stats __attribute__((aligned(64)));
};

static inline uint16_t ld_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

/* The reasons are ordered by verdict: see PYFWD_R_* in pyfwd.h. */
static inline uint32_t reason_verdict(uint32_t reason)
{
	if (reason == PYFWD_R_FORWARD)
		return PYFWD_VERDICT_FORWARD;
	if (reason <= PYFWD_R_PASS_VIP_OTHER)
		return PYFWD_VERDICT_PASS;
	if (reason <= PYFWD_R_PUNT_NDP)
		return PYFWD_VERDICT_PUNT;
	return PYFWD_VERDICT_DROP;
}

/* A 32-bit mix of a VIP key (murmur3's finaliser over the words). */
static inline uint32_t vip_hash(const uint8_t addr[16], uint8_t family,
				uint32_t extra)
{
	uint32_t w[4], h = family * 0x9e3779b9u ^ extra;
	int i;

	memcpy(w, addr, sizeof(w));
	for (i = 0; i < 4; i++) {
		h ^= w[i];
		h *= 0xcc9e2d51u;
		h = (h << 15) | (h >> 17);
		h *= 0x1b873593u;
	}
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

static inline uint32_t svc_extra(uint8_t proto, uint16_t port)
{
	return ((uint32_t)proto << 16) | port;
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
		if (s->family == family && !memcmp(s->addr, addr, 16))
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
		    s->family == family && !memcmp(s->addr, addr, 16))
			return s->vip;
	}
}

#endif /* PYFWD_CORE_H */
