/* SPDX-License-Identifier: MIT */
/*
 * pyfwd_tun.h - the boundary's part for L4 TUN (PYFWD_MODE_TUN; a fourth
 * part of pyfwd.h, read by csrc/build_ffi.py between the cffi markers as
 * the others; the C is csrc/tunnel.c).
 *
 * A TUN VIP is DR with a tunnel instead of a MAC rewrite: the client's
 * packet, unchanged, goes inside an outer IPv4 (IPIP, protocol 4) or IPv6
 * (IP6IP6, next header 41) header of the VIP's family, from the
 * balancer's address on the real's interface slot to the real's address,
 * to the next hop toward it (pyfwd_real.mac: the real, or a gateway).
 * The real server decapsulates, answers the client from the VIP itself.
 * Outer TTL/hop limit 64, TOS/traffic class copied, no DF (as Katran:
 * routers toward the real may fragment the outer packet).
 *
 * The outer header takes room in front of the frame: the core moves
 * pyfwd_frame.data back by 20 or 40 bytes (the L2 header with it) when
 * the frame is flagged PYFWD_FRAME_HEADROOM, else it drops the frame
 * (drop_tun_no_room).  A packet that would no longer fit the slot's MTU
 * is answered to the client, from the VIP: ICMP fragmentation needed
 * (IPv4 with DF) or ICMPv6 packet too big, with the MTU less the outer
 * header (forward_too_big), as Katran does; IPv4 without DF is dropped
 * (drop_tun_too_big: the balancer does not fragment).  A GSO frame (the
 * raw-socket backend's, from a veth peer's TSO or a NIC's GRO) is not
 * tunnelled as one (drop_tun_gso): that backend cuts it into its TCP
 * segments, which come through the core on their own (io/afp_gso.c,
 * counted in tun_gso_cut).
 */
#ifndef PYFWD_TUN_H
#define PYFWD_TUN_H

#include "pyfwd.h"

/* cffi:begin */

/* Bytes before pyfwd_frame.data a PYFWD_FRAME_HEADROOM frame lends the
 * core (an ICMPv6 error's 48 bytes of headers fit). */
#define PYFWD_HEADROOM 64

#define PYFWD_TUN_TTL 64	/* the outer TTL or hop limit */
#define PYFWD_TUN_MTU_DEFAULT 1500

/* The tunnels' ends on one interface slot. */
struct pyfwd_tun {
	uint8_t src4[4];	/* outer IPv4 source; 0.0.0.0: none */
	uint8_t src6[16];	/* outer IPv6 source; :: none */
	uint16_t mtu;		/* IP bytes the slot carries; 0: 1500 */
	uint16_t pad;
};

/*
 * Set the outer sources and MTU of interface slot `slot`.  0 or -EINVAL
 * (no such slot, an MTU below 576 + 40).  Before the loops run (the
 * engine sets it at start); a TUN VIP of a family with no source drops
 * its packets as no_room.
 */
int pyfwd_tun_set(struct pyfwd_ctx *ctx, uint32_t slot,
		  const struct pyfwd_tun *tun);

/*
 * A TUN real server's side, for kernels without ipip/ip6tnl devices:
 * attach the XDP program pyfwd_xdp_decap of bpf_path (bpf/decap.bpf.c:
 * strips an IPIP or IP6IP6 outer header) to ifindex by netlink, so that
 * it outlives the process (pyfwd_xdp_cleanup detaches it); xdp_mode
 * PYFWD_XDP_MODE_*.  0 or -errno (-EBUSY, -EEXIST: another program is
 * attached); errbuf says what failed; *prog_id the program attached.
 */
int pyfwd_decap_attach(const char *bpf_path, uint32_t ifindex,
		       uint32_t xdp_mode, uint32_t *prog_id, char *errbuf,
		       size_t errlen);

/* The XDP program attached to ifindex: its id (0: none) and name. */
int pyfwd_xdp_attached(uint32_t ifindex, uint32_t *prog_id, char *name,
		       size_t namelen);

/* cffi:end */

_Static_assert(sizeof(struct pyfwd_tun) == 24, "pyfwd_tun ABI");

#endif /* PYFWD_TUN_H */
