/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * decap.bpf.c - a TUN real server's decapsulation in XDP (Katran's
 * decap program does the same), for kernels without the ipip/ip6tnl
 * devices (`pyfwd realserver setup --tun --decap xdp`).
 *
 * An IPv4 packet in IPv4 (IPIP, protocol 4) or IPv6 in IPv6 (next header
 * 41), outer header without options or extension headers and not a
 * fragment, loses its outer header here: the Ethernet header moves up
 * over it and the kernel receives the client's packet, to the VIP, on
 * this interface (the VIP sits on lo, as for DR).  Everything else
 * passes untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "proto.h"

#define PROTO_IPIP 4
#define PROTO_IPV6 41

/* How many bytes of outer header to strip at off (0: none). */
static __always_inline __u32 outer_len(void *data, void *end)
{
	__u8 *ip = data + ETH_HDR_LEN;
	__u16 type;

	if (data + ETH_HDR_LEN > end)
		return 0;
	type = bpf_ntohs(*(__u16 *)(data + ETH_TYPE_OFF));
	if (type == ETHERTYPE_IPV4) {
		if ((void *)(ip + IP4_HDR_MIN + 1) > end)
			return 0;
		if (ip[0] != 0x45 || ip[9] != PROTO_IPIP ||
		    (bpf_ntohs(*(__u16 *)(ip + IP4_FRAG_OFF)) &
		     IP4_FRAG_MF_OFFSET) || (ip[IP4_HDR_MIN] >> 4) != 4)
			return 0;
		return IP4_HDR_MIN;
	}
	if (type == ETHERTYPE_IPV6) {
		if ((void *)(ip + IP6_HDR_LEN + 1) > end)
			return 0;
		if ((ip[0] >> 4) != 6 || ip[6] != PROTO_IPV6 ||
		    (ip[IP6_HDR_LEN] >> 4) != 6)
			return 0;
		return IP6_HDR_LEN;
	}
	return 0;
}

SEC("xdp")
int pyfwd_xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 eth[ETH_HDR_LEN];
	__u32 strip = outer_len(data, end);

	if (!strip)
		return XDP_PASS;
	__builtin_memcpy(eth, data, ETH_HDR_LEN);
	if (bpf_xdp_adjust_head(ctx, (int)strip))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + ETH_HDR_LEN > end)
		return XDP_DROP;
	/* the inner packet is of the outer's family: same ethertype */
	__builtin_memcpy(data, eth, ETH_HDR_LEN);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
