/* SPDX-License-Identifier: MIT */
/*
 * rewrite.h - what the core writes into a frame it forwards: L2 (inline,
 * every forward), NAT/SNAT translation (rewrite.c).  Checksums are updated
 * incrementally (RFC 1624), never recomputed.
 */
#ifndef PYFWD_REWRITE_H
#define PYFWD_REWRITE_H

#include "core.h"

/* L2: to `mac` from our MAC on interface slot out_if. */
static inline void rewrite_l2(const struct pyfwd_ctx *ctx, uint8_t *frame,
			      const uint8_t *mac, uint8_t out_if,
			      struct pyfwd_result *r)
{
	memcpy(frame, mac, 6);
	memcpy(frame + 6, ctx->if_mac[out_if], 6);
	r->out_if = out_if;
}

/*
 * Translate the TCP/UDP packet at l3/l4 (l4_avail bytes of L4) to
 * saddr:sport -> daddr:dport, IP and L4 checksums kept right; unfinished:
 * the L4 checksum is the pseudo-header sum and stays so (a GSO frame).
 */
void rewrite_nat(uint8_t *l3, uint8_t *l4, uint32_t l4_avail, uint8_t family,
		 uint8_t proto, const uint8_t *saddr, uint16_t sport,
		 const uint8_t *daddr, uint16_t dport, int unfinished);

/*
 * rewrite_nat() for a packet quoted in an ICMP or ICMPv6 error:
 * `icmp_sum` is the error's checksum, which covers the quoted bytes, sums
 * included.
 */
void rewrite_quoted(uint8_t *l3, uint8_t *l4, uint32_t l4_avail,
		    uint8_t family, uint8_t proto, const uint8_t *saddr,
		    uint16_t sport, const uint8_t *daddr, uint16_t dport,
		    uint8_t *icmp_sum);

/*
 * The IP header at l3 to daddr, its checksum kept right: IPv4's header
 * sum; IPv6 has none, but icmp6_sum (an ICMPv6 sum, or NULL) covers the
 * address through its pseudo-header.
 */
void rewrite_ip_daddr(uint8_t *l3, uint8_t family, const uint8_t *daddr,
		      uint8_t *icmp6_sum);

/* The TTL (IPv4, its header sum kept right) or hop limit minus one: the
 * caller has checked that it is above 1. */
void rewrite_ttl_dec(uint8_t *l3, uint8_t family);

/* The TTL or hop limit of the IP header at l3. */
static inline uint8_t ip_ttl(const uint8_t *l3, uint8_t family)
{
	return l3[family == PYFWD_AF_INET ? IP4_TTL_OFF : IP6_HOPLIMIT_OFF];
}

#endif /* PYFWD_REWRITE_H */
