/* SPDX-License-Identifier: MIT */
/*
 * tunnel.c - L4 TUN (pyfwd_tun.h): the client's packet inside an outer
 * IPv4 (IPIP) or IPv6 (IP6IP6) header to its real server, or, when that
 * would not fit the interface's MTU, the ICMP error that tells the client
 * so (Katran's ICMP_TOOBIG_GENERATION).
 *
 * Both grow the frame at the front, into the headroom the backend lends
 * (PYFWD_FRAME_HEADROOM): only the L2 header moves (Katran's
 * bpf_xdp_adjust_head), the packet stays where it is.
 */
#include <errno.h>

#include "pyfwd_tun.h"
#include "rewrite.h"

#define IP4_DF 0x4000
#define IP4_TOS_OFF 1
#define IP4_ID_OFF 4
#define PROTO_IPIP 4
#define PROTO_IPV6 41
#define ICMP4_FRAG_NEEDED 4	/* code of ICMP4_DEST_UNREACH */
#define ICMP4_QUOTE_MAX (576 - IP4_HDR_MIN - ICMP4_HDR_LEN)	/* RFC 1812 */
#define ICMP6_QUOTE_MAX (1280 - IP6_HDR_LEN - ICMP6_ERR_HDR_LEN) /* 4443 */

static const uint8_t zero16[16];

int pyfwd_tun_set(struct pyfwd_ctx *ctx, uint32_t slot,
		  const struct pyfwd_tun *tun)
{
	if (slot >= PYFWD_IFACES_MAX ||
	    (tun->mtu && tun->mtu < 576 + IP6_HDR_LEN))
		return -EINVAL;
	ctx->tun[slot] = *tun;
	return 0;
}

/* The frame grown by `grow` bytes at the front, its L2 header (l2 bytes,
 * a VLAN tag included) moved there; the caller checked the headroom. */
static inline uint8_t *frame_push(struct pyfwd_frame *f, uint32_t l2,
				  uint32_t grow)
{
	uint8_t *old = f->data;

	f->data -= grow;
	memmove(f->data, old, l2);
	f->cap = (uint16_t)(f->cap + grow > UINT16_MAX ? UINT16_MAX :
			    f->cap + grow);
	return f->data + l2;
}

/* An IPv4 header (no options) at h, its sum computed. */
static void ip4_header(uint8_t *h, uint8_t tos, uint16_t totlen, uint16_t id,
		       uint16_t frag, uint8_t proto, const uint8_t *saddr,
		       const uint8_t *daddr)
{
	h[0] = 0x45;
	h[IP4_TOS_OFF] = tos;
	st_be16(h + 2, totlen);
	st_be16(h + IP4_ID_OFF, id);
	st_be16(h + IP4_FRAG_OFF, frag);
	h[IP4_TTL_OFF] = PYFWD_TUN_TTL;
	h[9] = proto;
	st_be16(h + IP4_CSUM_OFF, 0);
	memcpy(h + IP4_SADDR_OFF, saddr, 4);
	memcpy(h + IP4_DADDR_OFF, daddr, 4);
	st_be16(h + IP4_CSUM_OFF, (uint16_t)~csum_be16(csum_add(0, h, 20)));
}

/* An IPv6 header at h. */
static void ip6_header(uint8_t *h, uint8_t tclass, uint32_t label,
		       uint16_t paylen, uint8_t nh, const uint8_t *saddr,
		       const uint8_t *daddr)
{
	st_be32(h, 6u << 28 | (uint32_t)tclass << 20 | (label & 0xfffff));
	st_be16(h + 4, paylen);
	h[6] = nh;
	h[IP6_HOPLIMIT_OFF] = PYFWD_TUN_TTL;
	memcpy(h + IP6_SADDR_OFF, saddr, 16);
	memcpy(h + IP6_DADDR_OFF, daddr, 16);
}

static inline uint8_t ip6_tclass(const uint8_t *h)
{
	return (uint8_t)(ld_be32(h) >> 20);
}

/*
 * The packet at l3 (inlen bytes, too big for mtu) answered in place: an
 * ICMP fragmentation-needed (IPv4) or ICMPv6 packet-too-big error from
 * the VIP to the client, quoting the start of it, back where it came
 * from.  Returns the reason.
 */
static uint32_t tun_too_big(const struct pyfwd_ctx *ctx, struct parse *ps,
			    struct pyfwd_frame *f, uint32_t inlen,
			    uint32_t mtu)
{
	struct pyfwd_result *r = ps->r;
	const struct flow_key *k = &ps->key;
	uint32_t l2 = r->l3_off, quote, grow;
	uint8_t mac[6], *h, *icmp, pseudo[8];
	uint64_t s;

	if (k->family == PYFWD_AF_INET) {
		if (!(ld_be16(f->data + l2 + IP4_FRAG_OFF) & IP4_DF))
			return PYFWD_R_DROP_TUN_TOO_BIG;
		if (unlikely(!(f->flags & PYFWD_FRAME_HEADROOM)))
			return PYFWD_R_DROP_TUN_NO_ROOM;
		grow = IP4_HDR_MIN + ICMP4_HDR_LEN;
		quote = inlen < ICMP4_QUOTE_MAX ? inlen : ICMP4_QUOTE_MAX;
		memcpy(mac, f->data + 6, 6);	/* the client's next hop */
		h = frame_push(f, l2, grow);
		ip4_header(h, 0, (uint16_t)(grow + quote), 0, 0, PROTO_ICMP,
			   k->daddr, k->saddr);
		icmp = h + IP4_HDR_MIN;
		icmp[0] = ICMP4_DEST_UNREACH;
		icmp[1] = ICMP4_FRAG_NEEDED;
		st_be16(icmp + 2, 0);
		st_be16(icmp + 4, 0);
		st_be16(icmp + 6, (uint16_t)(mtu - IP4_HDR_MIN));
		s = csum_add(0, icmp, ICMP4_HDR_LEN + quote);
	} else {
		if (unlikely(!(f->flags & PYFWD_FRAME_HEADROOM)))
			return PYFWD_R_DROP_TUN_NO_ROOM;
		grow = IP6_HDR_LEN + ICMP6_ERR_HDR_LEN;
		quote = inlen < ICMP6_QUOTE_MAX ? inlen : ICMP6_QUOTE_MAX;
		memcpy(mac, f->data + 6, 6);
		h = frame_push(f, l2, grow);
		ip6_header(h, 0, 0, (uint16_t)(ICMP6_ERR_HDR_LEN + quote),
			   PROTO_ICMPV6, k->daddr, k->saddr);
		icmp = h + IP6_HDR_LEN;
		icmp[0] = ICMP6_PACKET_TOO_BIG;
		icmp[1] = 0;
		st_be16(icmp + 2, 0);
		st_be32(icmp + 4, mtu - IP6_HDR_LEN);
		st_be32(pseudo, ICMP6_ERR_HDR_LEN + quote);
		st_be32(pseudo + 4, PROTO_ICMPV6);
		s = csum_add(0, h + IP6_SADDR_OFF, 32);
		s = csum_add(s, pseudo, 8);
		s = csum_add(s, icmp, ICMP6_ERR_HDR_LEN + quote);
	}
	st_be16(icmp + 2, (uint16_t)~csum_be16(s));
	f->len = l2 + grow + quote;
	r->l4proto = k->family == PYFWD_AF_INET ? PROTO_ICMP : PROTO_ICMPV6;
	r->l4_off = (uint16_t)(icmp - f->data);
	rewrite_l2(ctx, f->data, mac, f->in_if, r);
	return PYFWD_R_FORWARD_TOO_BIG;
}

uint32_t tun_forward(const struct pyfwd_ctx *ctx, struct worker *w,
		     const struct vip_bank *b, uint32_t id, struct parse *ps,
		     struct pyfwd_frame *f, uint32_t reason)
{
	const struct pyfwd_real *real = &b->reals[id];
	const struct pyfwd_tun *t = &ctx->tun[real->out_if % PYFWD_IFACES_MAX];
	struct pyfwd_result *r = ps->r;
	uint32_t l2 = r->l3_off, inlen = ps->l3_end - l2, grow, mtu;
	int v4 = r->family == PYFWD_AF_INET;
	uint8_t *in, *h;

	mtu = t->mtu ? t->mtu : PYFWD_TUN_MTU_DEFAULT;
	grow = v4 ? IP4_HDR_MIN : IP6_HDR_LEN;
	if (unlikely(f->flags & PYFWD_FRAME_GSO))
		return PYFWD_R_DROP_TUN_GSO;	/* one frame in, one out: the
						 * backend cuts it */
	if (unlikely(real->family != r->family ||
		     !memcmp(v4 ? t->src4 : t->src6, zero16, v4 ? 4 : 16)))
		return PYFWD_R_DROP_TUN_NO_ROOM;	/* nothing to send from */
	if (unlikely(inlen + grow > mtu)) {
		if (reason != PYFWD_R_FORWARD)
			return PYFWD_R_DROP_TUN_TOO_BIG;  /* no error about one */
		return tun_too_big(ctx, ps, f, inlen, mtu);
	}
	if (unlikely(!(f->flags & PYFWD_FRAME_HEADROOM)))
		return PYFWD_R_DROP_TUN_NO_ROOM;
	/* Only now: a frame dropped leaves as it came. */
	if (reason == PYFWD_R_FORWARD && (f->flags & PYFWD_FRAME_CSUM_PARTIAL))
		csum_finish(w, ps, f->data);	/* the real cannot */
	in = f->data + l2;
	if (v4) {
		/*
		 * No DF outside, as Katran: a router toward the real with a
		 * smaller MTU fragments the outer packet and the real puts it
		 * together.  With DF its ICMP error would come to the
		 * balancer's own address, which nobody reads: a black hole.
		 * This interface's MTU is enforced here (tun_too_big).  The
		 * inner identification, so that fragments of two packets
		 * differ as their senders' packets do.
		 */
		uint16_t ident = ld_be16(in + IP4_ID_OFF);
		uint8_t tos = in[IP4_TOS_OFF];

		h = frame_push(f, l2, grow);
		ip4_header(h, tos, (uint16_t)(inlen + grow), ident, 0,
			   PROTO_IPIP, t->src4, real->addr);
	} else {
		/* The flow label spreads the tunnels over ECMP paths
		 * (RFC 6438): the flow's hash. */
		uint32_t label = hash_words((const uint32_t *)&ps->key,
					    sizeof(ps->key) / 4, 0);
		uint8_t tclass = ip6_tclass(in);

		h = frame_push(f, l2, grow);
		ip6_header(h, tclass, label, (uint16_t)inlen, PROTO_IPV6,
			   t->src6, real->addr);
	}
	f->len = l2 + grow + inlen;	/* Ethernet padding left behind */
	r->l4_off = (uint16_t)(r->l4_off + grow);
	rewrite_l2(ctx, f->data, real->mac, real->out_if, r);
	return reason;
}
