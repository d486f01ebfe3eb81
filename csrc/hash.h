/* SPDX-License-Identifier: MIT */
/*
 * hash.h - the one hash of the core: flows, the VIP tables and the source
 * hash scheduler all use it.
 *
 * Words are taken in pairs as one 64-bit word (a last odd one alone), each
 * xored in, multiplied and xor-shifted; murmur3's 64-bit finaliser, low 32
 * bits.  Fixed, never seeded: it picks a flow's Maglev entry, which must be
 * the same on every node behind ECMP (changing it moves flows during a
 * rolling upgrade).  Words are in host order (the targets are
 * little-endian).
 */
#ifndef PYFWD_HASH_H
#define PYFWD_HASH_H

#include <stdint.h>

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

#endif /* PYFWD_HASH_H */
