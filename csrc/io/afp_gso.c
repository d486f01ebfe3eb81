/* SPDX-License-Identifier: MIT */
/*
 * afp_gso.c - TUN under the raw-socket backend.  AF_PACKET hands over GSO
 * frames (a veth passes its sender's TSO on; a NIC's GRO merges): one
 * frame of many TCP segments behind one set of headers, which the kernel
 * cuts on the way out.  An IPIP packet of one cannot be cut so (no
 * virtio_net_hdr GSO type says "inside a tunnel"), and the core makes one
 * frame of one (drop_tun_gso).  Here such a frame is cut into the
 * segments its sender's kernel would have sent, gso_size bytes of payload
 * each, and each goes through the core on its own, as if received.
 *
 * Each segment: the headers copied, IPv4 total length, identification
 * (the first's plus its index) and header sum, IPv6 payload length, the
 * TCP sequence number, FIN and PSH on the last only, CWR on the first
 * only; its TCP sum left unfinished (the pseudo-header's, as the sender's
 * stack leaves it) and the segment flagged so: the core completes it
 * (csum.c).  Only TCP, without IPv4 options or IPv6 extension headers;
 * anything else stays dropped.  The segments go in slots of a buffer
 * allocated at open, with the core's headroom in front.
 */
#include <string.h>

#include "io/afp.h"

#define TCP_SEQ_OFF 4
#define TCP_FLAGS_CWR 0x80
#define TCP_FLAGS_LAST_ONLY (TCP_FIN | 0x08)	/* FIN, PSH */

uint32_t afp_gso_cut(const struct pyfwd_frame *f,
		     const struct virtio_net_hdr *vh, uint8_t *buf,
		     struct pyfwd_frame *out)
{
	uint32_t l3 = ETH_HDR_LEN, l3len, l4len, hdrs, payload, mss, n, k;
	uint16_t type = ld_be16(f->data + ETH_TYPE_OFF), id0 = 0;
	uint8_t family, proto, *seg;
	uint32_t seq0;

	if (type == ETHERTYPE_VLAN && f->len >= ETH_HDR_LEN + VLAN_HDR_LEN) {
		l3 += VLAN_HDR_LEN;
		type = ld_be16(f->data + ETH_TYPE_OFF + VLAN_HDR_LEN);
	}
	if (type == ETHERTYPE_IPV4 && f->len >= l3 + IP4_HDR_MIN) {
		family = PYFWD_AF_INET;
		l3len = IP4_HDR_MIN;
		proto = f->data[l3 + 9];
		if (f->data[l3] != 0x45)
			return 0;
		payload = ld_be16(f->data + l3 + 2);
		id0 = ld_be16(f->data + l3 + 4);
	} else if (type == ETHERTYPE_IPV6 && f->len >= l3 + IP6_HDR_LEN) {
		family = PYFWD_AF_INET6;
		l3len = IP6_HDR_LEN;
		proto = f->data[l3 + 6];
		payload = IP6_HDR_LEN + ld_be16(f->data + l3 + 4);
	} else {
		return 0;
	}
	if (proto != PROTO_TCP || f->len < l3 + l3len + TCP_HDR_MIN)
		return 0;
	l4len = (uint32_t)(f->data[l3 + l3len + 12] >> 4) * 4;
	hdrs = l3 + l3len + l4len;
	mss = vh->gso_size;
	if (l4len < TCP_HDR_MIN || payload > f->len - l3 ||
	    payload < l3len + l4len || !mss ||
	    PYFWD_HEADROOM + hdrs + mss > AFP_GSO_SLOT)
		return 0;
	payload -= l3len + l4len;
	n = (payload + mss - 1) / mss;
	if (!n || n > AFP_GSO_SEGS)
		return 0;
	seq0 = ld_be32(f->data + l3 + l3len + TCP_SEQ_OFF);
	for (k = 0; k < n; k++) {
		uint32_t size = k + 1 < n ? mss : payload - k * mss;
		uint8_t *ip, *tcp;

		seg = buf + (size_t)k * AFP_GSO_SLOT + PYFWD_HEADROOM;
		memcpy(seg, f->data, hdrs);
		memcpy(seg + hdrs, f->data + hdrs + k * mss, size);
		ip = seg + l3;
		tcp = ip + l3len;
		if (family == PYFWD_AF_INET) {
			st_be16(ip + 2, (uint16_t)(l3len + l4len + size));
			st_be16(ip + 4, (uint16_t)(id0 + k));
			st_be16(ip + IP4_CSUM_OFF, 0);
			st_be16(ip + IP4_CSUM_OFF,
				(uint16_t)~csum_be16(csum_add(0, ip, l3len)));
		} else {
			st_be16(ip + 4, (uint16_t)(l4len + size));
		}
		st_be32(tcp + TCP_SEQ_OFF, seq0 + k * mss);
		if (k + 1 < n)
			tcp[TCP_FLAGS_OFF] &= (uint8_t)~TCP_FLAGS_LAST_ONLY;
		if (k)
			tcp[TCP_FLAGS_OFF] &= (uint8_t)~TCP_FLAGS_CWR;
		st_be16(tcp + TCP_CSUM_OFF,
			csum_pseudo(ip, family, PROTO_TCP, l4len + size));
		out[k].data = seg;
		out[k].len = hdrs + size;
		out[k].cap = (uint16_t)(AFP_GSO_SLOT - PYFWD_HEADROOM);
		out[k].in_if = f->in_if;
		out[k].flags = (uint8_t)((f->flags & ~PYFWD_FRAME_GSO) |
					 PYFWD_FRAME_CSUM_PARTIAL |
					 PYFWD_FRAME_HEADROOM);
	}
	return n;
}
