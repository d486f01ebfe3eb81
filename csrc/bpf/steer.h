/* SPDX-License-Identifier: MIT */
/*
 * steer.h - maps shared by the steering programs (steer.bpf.c: XDP
 * pyfwd_xdp_steer, tc pyfwd_tc_owned, socket filter pyfwd_sock_filter)
 * and their loader (io/steer.c).  Fixed-width fields, explicit padding:
 * the loader fills them from C.
 */
#ifndef PYFWD_STEER_H
#define PYFWD_STEER_H

#include <linux/types.h>

#define STEER_VIPS_MAX 4096
#define STEER_QUEUES_MAX 64
#define STEER_IFACES_MAX 2	/* xsks key: slot * STEER_QUEUES_MAX + queue */
#define STEER_REALS_MAX 16384

/* steer_*.family: pyfwd.h's PYFWD_AF_INET, PYFWD_AF_INET6 (io/steer.c
 * checks that they agree). */
#define STEER_AF_INET 4
#define STEER_AF_INET6 6

/* Key of steer_vips: a VIP address (IPv4 in the first 4 bytes). */
struct steer_addr {
	__u8 addr[16];
	__u8 family;		/* STEER_AF_INET or STEER_AF_INET6 */
	__u8 pad[3];
};

#define STEER_PORT_WORDS (65536 / 64)

/*
 * Value of steer_vips: the TCP and UDP ports served on that VIP address,
 * one bit each (port p: word p / 64, bit p % 64, host byte order), so
 * that one look-up says both "a VIP" and "served".
 */
struct steer_vip {
	__u64 tcp[STEER_PORT_WORDS];
	__u64 udp[STEER_PORT_WORDS];
};

/* Key of steer_rsvcs: a NAT real server's service. */
struct steer_svc {
	__u8 addr[16];
	__u8 family;
	__u8 proto;		/* IPPROTO_TCP / IPPROTO_UDP */
	__be16 port;		/* network byte order, as on the wire */
};

/* Value of steer_snat (key: a steer_addr): the SNAT port range. */
struct steer_ports {
	__u16 lo;		/* host byte order, inclusive */
	__u16 hi;
};

#endif /* PYFWD_STEER_H */
