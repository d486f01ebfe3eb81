/* SPDX-License-Identifier: MIT */
/*
 * rewrite.c - NAT and SNAT translation of a forwarded packet, and of the
 * packet an ICMP or ICMPv6 error quotes (so that path MTU discovery works
 * through the balancer); the TTL or hop limit a router takes off.
 * Checksums take the delta of the words changed (RFC 1624); a UDP
 * checksum of 0 (none, IPv4) stays 0.
 */
#include "rewrite.h"

/* Write v at p (16 bits), fixing the checksums that cover it. */
static inline void set16(uint8_t *p, uint16_t v, uint8_t *sum1,
			 uint8_t *sum2, uint8_t *sum3)
{
	uint16_t old = ld_be16(p);

	if (old == v)
		return;
	st_be16(p, v);
	if (sum1)
		csum_fix16(sum1, old, v);
	if (sum2)
		csum_fix16(sum2, old, v);
	if (sum3)
		csum_fix16(sum3, old, v);
}

static inline void set_addr(uint8_t *p, const uint8_t *a, int len,
			    uint8_t *sum1, uint8_t *sum2, uint8_t *sum3)
{
	int k;

	for (k = 0; k < len; k += 2)
		set16(p + k, ld_be16(a + k), sum1, sum2, sum3);
}

/*
 * The L4 checksum field of the TCP/UDP header at l4 if it is within the
 * `avail` bytes there and in use (IPv4 UDP may send none: 0 stays 0).
 */
static inline uint8_t *l4_sum(uint8_t *l4, uint32_t avail, uint8_t proto,
			      uint8_t family)
{
	uint32_t off = proto == PROTO_TCP ? TCP_CSUM_OFF : UDP_CSUM_OFF;

	if (avail < off + 2)
		return NULL;
	if (proto == PROTO_UDP && family == PYFWD_AF_INET &&
	    !ld_be16(l4 + off))
		return NULL;
	return l4 + off;
}

/* A UDP checksum that came out 0 is sent as 0xffff (RFC 768). */
static inline void udp_sum_nonzero(uint8_t *sum, uint8_t proto)
{
	if (sum && proto == PROTO_UDP && !ld_be16(sum))
		st_be16(sum, 0xffff);
}

/* What replacing the 32-bit word at old by the one at new_ adds to a sum. */
static inline uint64_t delta32(const uint8_t *old, const uint8_t *new_)
{
	return (uint64_t)(uint32_t)~ld_be32(old) + ld_be32(new_);
}

/*
 * The delta is summed 32 bits at a time and folded once.  An unfinished
 * sum (the pseudo-header's, not complemented) takes the addresses' delta
 * as it is; the ports are the segment's, summed when it is finished.
 */
void rewrite_nat(uint8_t *l3, uint8_t *l4, uint32_t l4_avail, uint8_t family,
		 uint8_t proto, const uint8_t *saddr, uint16_t sport,
		 const uint8_t *daddr, uint16_t dport, int unfinished)
{
	uint8_t *sum = l4_sum(l4, l4_avail, proto, family);
	uint32_t ports = (uint32_t)sport << 16 | dport;
	uint64_t dports = (uint64_t)(uint32_t)~ld_be32(l4) + ports, daddrs = 0;
	int k;

	st_be32(l4, ports);
	if (family == PYFWD_AF_INET) {
		uint8_t *ipsum = l3 + IP4_CSUM_OFF;

		daddrs = delta32(l3 + IP4_SADDR_OFF, saddr) +
			 delta32(l3 + IP4_DADDR_OFF, daddr);
		memcpy(l3 + IP4_SADDR_OFF, saddr, 4);
		memcpy(l3 + IP4_DADDR_OFF, daddr, 4);
		st_be16(ipsum, (uint16_t)~csum_fold((uint16_t)~ld_be16(ipsum) +
						    daddrs));
	} else {
		/* No IPv6 header sum; the L4 one covers the addresses. */
		for (k = 0; k < 16; k += 4)
			daddrs += delta32(l3 + IP6_SADDR_OFF + k, saddr + k) +
				  delta32(l3 + IP6_DADDR_OFF + k, daddr + k);
		memcpy(l3 + IP6_SADDR_OFF, saddr, 16);
		memcpy(l3 + IP6_DADDR_OFF, daddr, 16);
	}
	if (sum && unfinished) {
		st_be16(sum, csum_fold(ld_be16(sum) + daddrs));
	} else if (sum) {
		st_be16(sum, (uint16_t)~csum_fold((uint16_t)~ld_be16(sum) +
						  daddrs + dports));
		udp_sum_nonzero(sum, proto);
	}
}

/*
 * Word by word: every word changed also changes icmp_sum's cover.  IPv4:
 * the quoted header's own sum changes too, and is quoted as well.
 */
void rewrite_quoted(uint8_t *l3, uint8_t *l4, uint32_t l4_avail,
		    uint8_t family, uint8_t proto, const uint8_t *saddr,
		    uint16_t sport, const uint8_t *daddr, uint16_t dport,
		    uint8_t *icmp_sum)
{
	uint8_t *sum = l4_sum(l4, l4_avail, proto, family);
	int v4 = family == PYFWD_AF_INET, alen = v4 ? 4 : 16;
	uint8_t *ipsum = v4 ? l3 + IP4_CSUM_OFF : NULL;
	uint16_t ipsum0 = v4 ? ld_be16(ipsum) : 0;
	uint16_t sum0 = sum ? ld_be16(sum) : 0;

	/* The L4 sum covers the addresses through the pseudo-header. */
	set_addr(l3 + (v4 ? IP4_SADDR_OFF : IP6_SADDR_OFF), saddr, alen,
		 ipsum, sum, icmp_sum);
	set_addr(l3 + (v4 ? IP4_DADDR_OFF : IP6_DADDR_OFF), daddr, alen,
		 ipsum, sum, icmp_sum);
	set16(l4, sport, sum, icmp_sum, NULL);
	set16(l4 + 2, dport, sum, icmp_sum, NULL);
	udp_sum_nonzero(sum, proto);
	/* The sums we changed are quoted bytes too: icmp_sum covers them. */
	if (v4)
		csum_fix16(icmp_sum, ipsum0, ld_be16(ipsum));
	if (sum)
		csum_fix16(icmp_sum, sum0, ld_be16(sum));
}

void rewrite_ip_daddr(uint8_t *l3, uint8_t family, const uint8_t *daddr,
		      uint8_t *icmp6_sum)
{
	if (family == PYFWD_AF_INET)
		set_addr(l3 + IP4_DADDR_OFF, daddr, 4, l3 + IP4_CSUM_OFF,
			 NULL, NULL);
	else
		set_addr(l3 + IP6_DADDR_OFF, daddr, 16, icmp6_sum, NULL,
			 NULL);
}

void rewrite_ttl_dec(uint8_t *l3, uint8_t family)
{
	uint16_t old;

	if (family != PYFWD_AF_INET) {
		l3[IP6_HOPLIMIT_OFF]--;
		return;
	}
	old = ld_be16(l3 + IP4_TTL_OFF);
	l3[IP4_TTL_OFF]--;
	csum_fix16(l3 + IP4_CSUM_OFF, old, ld_be16(l3 + IP4_TTL_OFF));
}
