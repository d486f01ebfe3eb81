/* SPDX-License-Identifier: MIT */
/*
 * pyfwd.h - THE boundary between pyfwd's C data plane and its Python
 * control plane.
 *
 * The part between the "cffi:begin" and "cffi:end" markers is read verbatim
 * by csrc/build_ffi.py as cffi's cdef, so it holds only what cffi parses:
 * integer #defines, structs of fixed-width fields and prototypes.  The C
 * sources #include this whole file.  Structs that cross the boundary have
 * explicit padding and their size is pinned by _Static_assert below.
 */
#ifndef PYFWD_H
#define PYFWD_H

#include <stddef.h>
#include <stdint.h>

/* cffi:begin */

/* What the core decided for one frame. */
#define PYFWD_VERDICT_PASS 0	/* not ours: the kernel gets it untouched */
#define PYFWD_VERDICT_PUNT 1	/* ours, but Python handles it (ARP, ICMP) */
#define PYFWD_VERDICT_FORWARD 2	/* ours: send it out (rewritten) */
#define PYFWD_VERDICT_DROP 3	/* malformed or refused: counted, freed */
#define PYFWD_VERDICT_MAX 4

/*
 * Why.  Every frame gets exactly one reason and every reason implies one
 * verdict (pyfwd_reason_verdict()).  The stats count frames per reason.
 */
#define PYFWD_R_FORWARD 0		/* a VIP service: TCP/UDP to VIP:port */
#define PYFWD_R_PASS_OTHER_MAC 1	/* unicast to another host's MAC */
#define PYFWD_R_PASS_ETHERTYPE 2	/* not ARP, IPv4 or IPv6 (or QinQ) */
#define PYFWD_R_PASS_ARP 3		/* ARP that names no VIP */
#define PYFWD_R_PASS_NOT_VIP 4		/* IP to an address that is no VIP */
#define PYFWD_R_PASS_VIP_OTHER 5	/* VIP address, port/proto not served */
#define PYFWD_R_PUNT_ARP 6		/* ARP asking for or claiming a VIP */
#define PYFWD_R_PUNT_ICMP 7		/* ICMP/ICMPv6 to a VIP */
#define PYFWD_R_PUNT_NDP 8		/* neighbour solicitation for a VIP */
#define PYFWD_R_DROP_RUNT 9		/* empty or shorter than Ethernet */
#define PYFWD_R_DROP_OVERSIZE 10	/* longer than max_frame or buffer */
#define PYFWD_R_DROP_VLAN_TRUNC 11	/* VLAN tag cut short */
#define PYFWD_R_DROP_ARP_TRUNC 12	/* ARP body cut short */
#define PYFWD_R_DROP_IP4_TRUNC 13	/* IPv4 header (with options) cut */
#define PYFWD_R_DROP_IP4_VERSION 14	/* ethertype IPv4, version not 4 */
#define PYFWD_R_DROP_IP4_IHL 15		/* IHL below 5 */
#define PYFWD_R_DROP_IP4_TOTLEN 16	/* total length < IHL or > frame */
#define PYFWD_R_DROP_IP6_TRUNC 17	/* IPv6 fixed header cut short */
#define PYFWD_R_DROP_IP6_VERSION 18	/* ethertype IPv6, version not 6 */
#define PYFWD_R_DROP_IP6_PAYLEN 19	/* payload length > frame */
#define PYFWD_R_DROP_IP6_EXTHDR 20	/* extension header cut or too many */
#define PYFWD_R_DROP_FRAGMENT 21	/* IP fragment to a VIP */
#define PYFWD_R_DROP_L4_TRUNC 22	/* TCP/UDP/ICMP header cut short */
#define PYFWD_R_DROP_TCP_DOFF 23	/* TCP data offset < 5 or > segment */
#define PYFWD_R_DROP_UDP_LEN 24		/* UDP length < 8 or > datagram */
#define PYFWD_R_MAX 25

/* Address families in shared structs (not the OS's AF_* values). */
#define PYFWD_AF_NONE 0
#define PYFWD_AF_INET 4
#define PYFWD_AF_INET6 6
#define PYFWD_AF_ARP 1

/* pyfwd_result.flags */
#define PYFWD_F_VLAN 1		/* one 802.1Q/802.1ad tag was present */
#define PYFWD_F_IP_OPTIONS 2	/* IPv4 options or IPv6 extension headers */
#define PYFWD_F_FRAGMENT 4	/* IP fragment */

#define PYFWD_FRAME_MAX_DEFAULT 9216	/* bytes of L2 frame, jumbo-capable */
#define PYFWD_VIPS_MAX_DEFAULT 1024

/* One frame of a batch: the core reads and rewrites it in place. */
struct pyfwd_frame {
	uint8_t *data;
	uint32_t len;		/* bytes of frame in data */
	uint32_t cap;		/* bytes the buffer can hold (>= len) */
};

/* What the core decided for one frame, and what it found on the way. */
struct pyfwd_result {
	uint8_t verdict;	/* PYFWD_VERDICT_* */
	uint8_t reason;		/* PYFWD_R_* */
	uint8_t family;		/* PYFWD_AF_*: the L3 found */
	uint8_t l4proto;	/* IPPROTO_* when an L4 header was found */
	int32_t vip;		/* index of the VIP matched, -1 for none */
	uint16_t l3_off;	/* offset of the ARP/IP header */
	uint16_t l4_off;	/* offset of the L4 header, 0 if none */
	uint16_t vlan_tci;	/* valid when flags & PYFWD_F_VLAN */
	uint8_t flags;		/* PYFWD_F_* */
	uint8_t pad;
};

/* A VIP service, as Python publishes it. */
struct pyfwd_vip {
	uint8_t addr[16];	/* IPv4 in the first 4 bytes, rest zero */
	uint8_t family;		/* PYFWD_AF_INET or PYFWD_AF_INET6 */
	uint8_t proto;		/* IPPROTO_TCP or IPPROTO_UDP */
	uint16_t port;		/* host byte order, 1..65535 */
	uint8_t mode;		/* reserved for dr/nat/snat; 0 today */
	uint8_t pad[3];
};

/* Fixed at create time. */
struct pyfwd_config {
	uint8_t mac[6];		/* the balancer's MAC; all zero = any */
	uint16_t pad;
	uint32_t max_frame;	/* 0 = PYFWD_FRAME_MAX_DEFAULT */
	uint32_t max_vips;	/* 0 = PYFWD_VIPS_MAX_DEFAULT */
};

/* A snapshot of the counters. */
struct pyfwd_stats {
	uint64_t frames;
	uint64_t bytes;
	uint64_t verdict[4];		/* PYFWD_VERDICT_MAX */
	uint64_t reason[25];		/* PYFWD_R_MAX */
	uint64_t vip_generation;	/* bumped by every publish */
	uint64_t vip_count;
};

struct pyfwd_ctx;

/* Create a context; 0 or -errno (-EINVAL: bad config, -ENOMEM). */
int pyfwd_ctx_create(const struct pyfwd_config *cfg, struct pyfwd_ctx **out);
void pyfwd_ctx_destroy(struct pyfwd_ctx *ctx);

/*
 * Publish a new VIP table: built in the inactive bank, then made active
 * with one release store.  0 or -errno: -E2BIG (more than max_vips),
 * -EINVAL (bad family, proto or port), -EEXIST (a service twice).
 * Calls must be serialised by the caller (Python holds a lock).
 */
int pyfwd_vip_publish(struct pyfwd_ctx *ctx, const struct pyfwd_vip *vips,
		      uint32_t n);

/*
 * The core: classify (and, as modes land, rewrite) n frames in place and
 * write one result per frame.  Pure function of the frames and the
 * published tables; no allocation, no I/O.  Returns the number of frames
 * whose verdict is FORWARD.  One thread per ctx at a time.
 */
uint32_t pyfwd_process_batch(struct pyfwd_ctx *ctx, struct pyfwd_frame *frames,
			     uint32_t n, struct pyfwd_result *out);

void pyfwd_stats_read(const struct pyfwd_ctx *ctx, struct pyfwd_stats *out);

/* Names for logs, metrics and tests. */
const char *pyfwd_reason_name(uint32_t reason);
uint32_t pyfwd_reason_verdict(uint32_t reason);

/*
 * Open and load (through the kernel verifier) a BPF object file, then
 * unload it.  0 or -errno; errbuf gets libbpf's last complaint.
 */
int pyfwd_bpf_object_check(const char *path, char *errbuf, size_t errlen);

/* cffi:end */

_Static_assert(sizeof(struct pyfwd_frame) == 16, "pyfwd_frame ABI");
_Static_assert(sizeof(struct pyfwd_result) == 16, "pyfwd_result ABI");
_Static_assert(sizeof(struct pyfwd_vip) == 24, "pyfwd_vip ABI");
_Static_assert(sizeof(struct pyfwd_config) == 16, "pyfwd_config ABI");
_Static_assert(sizeof(((struct pyfwd_stats *)0)->verdict) ==
	       PYFWD_VERDICT_MAX * sizeof(uint64_t), "verdict counters");
_Static_assert(sizeof(((struct pyfwd_stats *)0)->reason) ==
	       PYFWD_R_MAX * sizeof(uint64_t), "reason counters");

#endif /* PYFWD_H */
