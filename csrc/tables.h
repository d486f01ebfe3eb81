/* SPDX-License-Identifier: MIT */
/*
 * tables.h - the per-packet look-ups in the published tables (VIPs, real
 * servers, rings; struct vip_bank in core.h).  tables.c builds them.
 */
#ifndef PYFWD_TABLES_H
#define PYFWD_TABLES_H

#include "core.h"

/* tables.c: a bank's memory, sized by the config (set-up only). */
int bank_alloc(struct vip_bank *b, const struct pyfwd_config *cfg);
void bank_free(struct vip_bank *b);

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

/* The vip of addr:port/proto in a table of vip_slots, or -1. */
static inline int32_t svc_lookup(const struct vip_slot *t, uint32_t mask,
				 const uint8_t addr[16], uint8_t family,
				 uint8_t proto, uint16_t port)
{
	uint32_t i = vip_hash(addr, family, svc_extra(proto, port)) & mask;

	for (;; i = (i + 1) & mask) {
		const struct vip_slot *s = &t[i];

		if (s->vip < 0)
			return -1;
		if (s->port == port && s->proto == proto &&
		    s->family == family && addr_eq(s->addr, addr, family))
			return s->vip;
	}
}

/* Index of the VIP serving addr:port/proto, or -1. */
static inline int32_t vip_svc_lookup(const struct vip_bank *b,
				     const uint8_t addr[16], uint8_t family,
				     uint8_t proto, uint16_t port)
{
	return svc_lookup(b->svc, b->mask, addr, family, proto, port);
}

/* The NAT VIP whose real answers from addr:port/proto, or -1. */
static inline int32_t nat_real_lookup(const struct vip_bank *b,
				      const uint8_t addr[16], uint8_t family,
				      uint8_t proto, uint16_t port)
{
	return svc_lookup(b->nat_reals, b->nat_mask, addr, family, proto,
			  port);
}

static inline int real_usable(const struct vip_bank *b, uint32_t id)
{
	return id < b->nreals && (b->reals[id].flags & PYFWD_REAL_F_USED);
}

#endif /* PYFWD_TABLES_H */
