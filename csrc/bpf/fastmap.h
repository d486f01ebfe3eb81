/* SPDX-License-Identifier: MIT */
/*
 * fastmap.h - the maps of the XDP fast path (bpf/fastpath.h) as the core
 * fills them (fastmap.c) and its set-up finds them (io/fastpath.c).
 *
 * The core owns connection tracking; these maps are its cache.  When a
 * flow is established the core installs an entry keyed by the tuple as
 * it arrives on an interface, saying how the core rewrote that packet;
 * the XDP program rewrites the flow's next packets the same way and sends
 * them itself.  Fixed-width fields, explicit padding: both sides read
 * them.
 */
#ifndef PYFWD_FASTMAP_H
#define PYFWD_FASTMAP_H

#include <linux/types.h>

#define FAST_FLOWS_MAX 65536	/* entries of fast_flows, and fast_seen */
#define FAST_REALS_MAX 65536	/* fast_gens: by real id */
#define FAST_REAL_STATS_MAX 4096	/* fast_reals: real ids counted */

/* fast_cfg's one entry: is the fast path on (the program looks for
 * nothing when it is off: one array load). */
struct fast_cfg {
	__u32 on;
	__u32 pad;
};

/* Key of fast_flows: a flow's packet as it arrives. */
struct fast_key {
	__u8 saddr[16];		/* IPv4 in the first 4 bytes, rest zero */
	__u8 daddr[16];
	__be16 sport;		/* as on the wire */
	__be16 dport;
	__u8 proto;		/* PROTO_TCP or PROTO_UDP */
	__u8 family;		/* STEER_AF_INET or STEER_AF_INET6 */
	__u8 pad[2];
	__u32 ifindex;		/* where it arrives */
};

#define FAST_DR 1		/* the MACs only */
#define FAST_NAT 2		/* NAT, SNAT: addresses, ports, their sums,
				 * the TTL (a routed hop), the MACs */

/* Value of fast_flows: what the core did to the flow's last packet. */
struct fast_val {
	/* NAT: what the addresses' and the ports' change add to a sum, as
	 * rewrite_nat() sums them (constants of the flow) */
	__u64 daddrs;
	__u64 dports;
	__u8 dmac[6];		/* the next hop's */
	__u8 smac[6];		/* ours on the way out */
	__u32 seen;		/* index into fast_seen */
	__u32 gen;		/* fast_gens[real] when installed (low 32 bits) */
	__u16 real;		/* its real server's id */
	__u16 max_frame;	/* longer frames: the core's (it drops them) */
	__u8 action;		/* FAST_* */
	__u8 csum_check;	/* the interface hands over unfinished L4
				 * sums (veth): completed (csum.c's rule) */
	__u8 out_slot;		/* interface slot out (fast_ports' key) */
	__u8 reply;		/* a real server's answer (NAT, SNAT) */
	__u8 mymac[6];		/* ours on the way in (the frame's dst) */
	__u8 pad2[2];
	__u8 saddr[16];		/* NAT: the packet as it leaves */
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u32 out_ifindex;	/* the way in: XDP_TX; else a redirect */
	__u32 pad3;
};

/* fast_stats (per CPU): what the program carried, by reason. */
struct fast_stats {
	__u64 frames;
	__u64 bytes;
	__u64 forward;		/* PYFWD_R_FORWARD: to a real */
	__u64 forward_reply;	/* PYFWD_R_FORWARD_REPLY (NAT, SNAT) */
	__u64 stale;		/* an entry whose real changed: the core's */
	__u64 csum_completed;	/* unfinished L4 sums completed (csum.c) */
};

/* fast_reals (per CPU, by real id): what the program sent to it. */
struct fast_real_stats {
	__u64 frames;
	__u64 bytes;
};

#endif /* PYFWD_FASTMAP_H */
