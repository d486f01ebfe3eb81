/* SPDX-License-Identifier: MIT */
/*
 * packet.h - per-packet byte helpers: loads and stores of the fields of a
 * frame (big-endian on the wire, unaligned words) and the Internet
 * checksum's arithmetic.  Small and inline: the hot path calls them per
 * field.
 */
#ifndef PYFWD_PACKET_H
#define PYFWD_PACKET_H

#include <stdint.h>
#include <string.h>

#ifndef likely
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

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

/* Host-order words at any alignment. */
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

/* A ones' complement sum of 16-bit words, kept in 64 bits, to 16. */
static inline uint16_t csum_fold(uint64_t s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/*
 * The ones' complement sum of len bytes at p, added to s: 16-bit words in
 * the host's order, which the sum does not care about until the end (RFC
 * 1071, 2.B): fold, then swap to read it big-endian (csum_be16).  64-bit
 * words go into a 128-bit sum (add with carry); each carry out of 64 bits
 * is worth 1, as 2^64 is 1 modulo 2^16 - 1.  A last odd byte is the high
 * byte of a big-endian word: the low one of a little-endian word (core.h
 * asserts little-endian).
 */
static inline uint64_t csum_add(uint64_t s, const uint8_t *p, uint32_t len)
{
	unsigned __int128 w = s;
	uint64_t lo;

	for (; len >= 32; p += 32, len -= 32) {
		w += ld_u64(p);
		w += ld_u64(p + 8);
		w += ld_u64(p + 16);
		w += ld_u64(p + 24);
	}
	for (; len >= 8; p += 8, len -= 8)
		w += ld_u64(p);
	lo = (uint64_t)w;
	s = (lo & 0xffffffff) + (lo >> 32) + (uint64_t)(w >> 64);
	if (len >= 4) {
		s += ld_u32(p);
		p += 4;
		len -= 4;
	}
	if (len >= 2) {
		s += (uint32_t)p[0] | (uint32_t)p[1] << 8;
		p += 2;
		len -= 2;
	}
	if (len)
		s += p[0];
	return s;
}

/* csum_add's sum, folded, as the big-endian 16-bit value on the wire. */
static inline uint16_t csum_be16(uint64_t s)
{
	return __builtin_bswap16(csum_fold(s));
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

#endif /* PYFWD_PACKET_H */
