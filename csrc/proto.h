/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * proto.h - the protocol numbers and header layouts pyfwd reads, written
 * once: #included by the core (classify.c) and by the XDP and tc programs
 * (bpf/steer.bpf.c), which must agree on what a frame is.
 *
 * Plain #defines and no #include, so that it builds for both targets
 * (clang -target bpf and the host compiler).  Names are ours, not the
 * kernel's or libc's (ETH_P_*, IPPROTO_*, ICMP_*), so either may be
 * included beside this file.
 */
#ifndef PYFWD_PROTO_H
#define PYFWD_PROTO_H

/* Ethernet, and one 802.1Q / 802.1ad tag */
#define ETH_HDR_LEN 14
#define ETH_TYPE_OFF 12
#define VLAN_HDR_LEN 4
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806
#define ETHERTYPE_VLAN 0x8100
#define ETHERTYPE_QINQ 0x88a8
#define ETHERTYPE_IPV6 0x86dd

/* ARP for IPv4 over Ethernet: the only kind that can name a VIP */
#define ARP_HTYPE_ETHER 1
#define ARP_LEN 28		/* htype ptype hlen plen op sha spa tha tpa */
#define ARP_OP_OFF 6		/* operation (16 bits) */
#define ARP_OP_REQUEST 1
#define ARP_SPA_OFF 14		/* sender's IPv4 address */
#define ARP_TPA_OFF 24		/* target's IPv4 address */

/* IP protocol numbers (IPv4 protocol, IPv6 next header) */
#define PROTO_HOPOPTS 0		/* IPv6 hop-by-hop options */
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ROUTING 43	/* IPv6 routing header */
#define PROTO_FRAGMENT 44	/* IPv6 fragment header */
#define PROTO_ICMPV6 58
#define PROTO_DSTOPTS 60	/* IPv6 destination options */

/* IPv6 extension headers sized in 8-byte units after the first 8 (the
 * fragment header is not one of them: it ends our walk). */
#define IP6_EXTHDR_WALKED(nh) \
	((nh) == PROTO_HOPOPTS || (nh) == PROTO_ROUTING || \
	 (nh) == PROTO_DSTOPTS)
#define IP6_EXTHDR_LEN(hdr) (((unsigned int)(hdr)[1] + 1) * 8)

/* IPv4 */
#define IP4_HDR_MIN 20
#define IP4_SADDR_OFF 12
#define IP4_DADDR_OFF 16
#define IP4_FRAG_OFF 6		/* flags and fragment offset, 16 bits */
#define IP4_CSUM_OFF 10
#define IP4_FRAG_MF_OFFSET 0x3fff	/* more fragments, or an offset */
#define IP4_FRAG_OFFSET 0x1fff		/* an offset: a later fragment */
#define IP4_IHL(hdr) (((unsigned int)(hdr)[0] & 0x0f) * 4)

/* IPv6 */
#define IP6_HDR_LEN 40
#define IP6_SADDR_OFF 8
#define IP6_DADDR_OFF 24
#define IP6_MULTICAST 0xff	/* first byte of ff00::/8 */

/* TCP and UDP: the ports lead both headers */
#define TCP_HDR_MIN 20
#define UDP_HDR_LEN 8
#define TCP_CSUM_OFF 16
#define UDP_CSUM_OFF 6
#define TCP_FLAGS_OFF 13
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* ICMPv4: the errors that quote the packet they are about */
#define ICMP4_HDR_LEN 8		/* then the quoted IP header */
#define ICMP4_DEST_UNREACH 3
#define ICMP4_TIME_EXCEEDED 11
#define ICMP4_IS_ERROR(type) \
	((type) == ICMP4_DEST_UNREACH || (type) == ICMP4_TIME_EXCEEDED)

/* ICMPv6: the errors that quote the packet they are about */
#define ICMP6_HDR_MIN 4
#define ICMP6_ERR_HDR_LEN 8	/* then the quoted IPv6 header */
#define ICMP6_DEST_UNREACH 1
#define ICMP6_PACKET_TOO_BIG 2
#define ICMP6_TIME_EXCEEDED 3
#define ICMP6_IS_ERROR(type) \
	((type) >= ICMP6_DEST_UNREACH && (type) <= ICMP6_TIME_EXCEEDED)

/* Where the IPv4 TTL (beside the protocol, one 16-bit word) and the IPv6
 * hop limit are */
#define IP4_TTL_OFF 8
#define IP6_HOPLIMIT_OFF 7

/* NDP (ICMPv6): neighbour solicitation and advertisement */
#define NDP_NEIGH_SOLICIT 135
#define NDP_NEIGH_ADVERT 136
#define NDP_TARGET_OFF 8	/* the same place in both */
#define NDP_MSG_MIN 24		/* ICMPv6 header, flags, target */
#define NDP_IS_NS_OR_NA(type) \
	((type) == NDP_NEIGH_SOLICIT || (type) == NDP_NEIGH_ADVERT)

#endif /* PYFWD_PROTO_H */
