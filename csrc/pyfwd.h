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
#define PYFWD_R_FORWARD_REPLY 1		/* NAT/SNAT: a real server's answer */
#define PYFWD_R_FORWARD_ICMP 2		/* an ICMP error about a flow: DR, to
					 * its real; NAT/SNAT, translated */
#define PYFWD_R_PASS_OTHER_MAC 3	/* unicast to another host's MAC */
#define PYFWD_R_PASS_ETHERTYPE 4	/* not ARP, IPv4 or IPv6 (or QinQ) */
#define PYFWD_R_PASS_ARP 5		/* ARP that names no VIP */
#define PYFWD_R_PASS_NOT_VIP 6		/* IP to no VIP and of no flow */
#define PYFWD_R_PASS_VIP_OTHER 7	/* VIP address, port/proto not served */
#define PYFWD_R_PUNT_ARP 8		/* ARP asking for or claiming a VIP */
#define PYFWD_R_PUNT_ICMP 9		/* ICMP/ICMPv6 to a VIP */
#define PYFWD_R_PUNT_NDP 10		/* NS or NA to a multicast address, target a VIP */
#define PYFWD_R_DROP_RUNT 11		/* empty or shorter than Ethernet */
#define PYFWD_R_DROP_OVERSIZE 12	/* longer than max_frame or buffer */
#define PYFWD_R_DROP_VLAN_TRUNC 13	/* VLAN tag cut short */
#define PYFWD_R_DROP_ARP_TRUNC 14	/* ARP body cut short */
#define PYFWD_R_DROP_IP4_TRUNC 15	/* IPv4 header (with options) cut */
#define PYFWD_R_DROP_IP4_VERSION 16	/* ethertype IPv4, version not 4 */
#define PYFWD_R_DROP_IP4_IHL 17		/* IHL below 5 */
#define PYFWD_R_DROP_IP4_TOTLEN 18	/* total length < IHL or > frame */
#define PYFWD_R_DROP_IP6_TRUNC 19	/* IPv6 fixed header cut short */
#define PYFWD_R_DROP_IP6_VERSION 20	/* ethertype IPv6, version not 6 */
#define PYFWD_R_DROP_IP6_PAYLEN 21	/* payload length > frame */
#define PYFWD_R_DROP_IP6_EXTHDR 22	/* extension header cut or too many */
#define PYFWD_R_DROP_FRAGMENT 23	/* IP fragment to a VIP */
#define PYFWD_R_DROP_L4_TRUNC 24	/* TCP/UDP/ICMP header cut short */
#define PYFWD_R_DROP_TCP_DOFF 25	/* TCP data offset < 5 or > segment */
#define PYFWD_R_DROP_UDP_LEN 26		/* UDP length < 8 or > datagram */
#define PYFWD_R_DROP_NO_REAL 27		/* VIP service with no real to take it */
#define PYFWD_R_DROP_TABLE_FULL 28	/* NAT/SNAT: no room for a new flow */
#define PYFWD_R_DROP_PORTS_FULL 29	/* SNAT: every source port is taken */
#define PYFWD_R_DROP_ICMP_QUOTE 30	/* ICMP error to a VIP quoting no whole
					 * TCP/UDP header (cut, bad, other) */
#define PYFWD_R_DROP_ICMP_NO_FLOW 31	/* ICMP error about a VIP service's
					 * packet: no flow, no hash to follow */
#define PYFWD_R_DROP_TTL_EXPIRED 32	/* NAT/SNAT: TTL or hop limit <= 1 */
#define PYFWD_R_DROP_NO_FLOW 33		/* an answer from a NAT real's
					 * addr:port or to SNAT's ports (or
					 * an ICMP error about one) that no
					 * flow claims */
#define PYFWD_R_DROP_HANDOFF_FULL 34	/* for another worker's flow: its
					 * ring full (pyfwd_mq.h) */
#define PYFWD_R_FORWARD_TOO_BIG 35	/* TUN: an ICMP error back instead */
#define PYFWD_R_DROP_TUN_NO_ROOM 36	/* TUN: no headroom, or no source */
#define PYFWD_R_DROP_TUN_TOO_BIG 37	/* TUN: too big, IPv4 without DF */
#define PYFWD_R_DROP_TUN_GSO 38		/* TUN: GSO frame (io/afp_gso.c) */
#define PYFWD_R_MAX 39

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
#define PYFWD_REALS_MAX_DEFAULT 4096
#define PYFWD_RING_MAX_DEFAULT 1048592	/* 16 Maglev tables of 65537 */
#define PYFWD_FLOWS_DEFAULT 2097152	/* flow slots per worker: 72 bytes
					 * each; DR takes 1, NAT/SNAT 2 */
#define PYFWD_WORKERS_MAX 64
#define PYFWD_NO_REAL 65535		/* ring entry: nobody */

/*
 * Flow timeouts, idle seconds by state (pyfwd_config's, 0 = these).  A
 * TCP flow made by a SYN is half-open (tcp_syn) until the handshake is
 * done: DR on the client's ACK, NAT/SNAT on the client's ACK after the
 * real's SYN-ACK; then established (tcp); after a FIN or RST, tcp_fin.
 */
#define PYFWD_TCP_SYN_TIMEOUT_DEFAULT 30
#define PYFWD_TCP_TIMEOUT_DEFAULT 900
#define PYFWD_TCP_FIN_TIMEOUT_DEFAULT 10
#define PYFWD_UDP_TIMEOUT_DEFAULT 300
#define PYFWD_TIMEOUT_LIMIT 2147483648u	/* 1 << 31 seconds */

/* The most pyfwd_config (and pyfwd_ctx_create) accepts. */
#define PYFWD_FRAME_LIMIT 65535
#define PYFWD_VIPS_LIMIT 1048576	/* 1 << 20 */
#define PYFWD_REALS_LIMIT 65535		/* ids 0..65534: 65535 is NO_REAL */
#define PYFWD_RING_LIMIT 268435456	/* 1 << 28 */
#define PYFWD_FLOWS_LIMIT 67108864	/* 1 << 26 */

/* pyfwd_vip.mode */
#define PYFWD_MODE_DR 0		/* rewrite the MACs, send back out */
#define PYFWD_MODE_NAT 1	/* destination := real; replies come back */
#define PYFWD_MODE_SNAT 2	/* and source := the balancer's address:port */
#define PYFWD_MODE_TUN 3	/* IPIP/IP6IP6 to the real (pyfwd_tun.h) */

#define PYFWD_IFACES_MAX 2	/* interface slots: 0 outside, 1 inside */

/* pyfwd_vip.sched: how a new flow indexes the VIP's ring */
#define PYFWD_SCHED_HASH 0	/* hash of the 5-tuple (Maglev) */
#define PYFWD_SCHED_SEQ 1	/* next entry in turn (weighted round robin) */
#define PYFWD_SCHED_SRC_HASH 2	/* hash of the client's address (sh) */
#define PYFWD_SCHED_LEAST 3	/* fewest live flows per weight (lc, wlc):
				 * the ring lists the candidates once */

/* pyfwd_real.flags */
#define PYFWD_REAL_F_USED 1	/* the id is a real server: flows may use it */

/*
 * pyfwd_frame.flags, set by the backends.  CSUM_PARTIAL: the frame's
 * TCP/UDP checksum may be unfinished (the sender's CHECKSUM_PARTIAL: a
 * veth, or AF_PACKET's TP_STATUS_CSUMNOTREADY); the core completes it if
 * it is (csum.c).  Without it the core never reads a checksum.  GSO: the
 * payload of several segments behind one set of headers (AF_PACKET's
 * virtio_net_hdr says so: a veth passes a sender's TSO on), which the
 * kernel cuts on the way out, finishing each segment's checksum: the
 * checksum stays the pseudo-header sum (NAT keeps it right) and the frame
 * is not held to max_frame.
 */
#define PYFWD_FRAME_CSUM_PARTIAL 1
#define PYFWD_FRAME_GSO 2
#define PYFWD_FRAME_HANDED 4	/* handed over by another worker: its
				 * owner's now, never handed on (pyfwd_mq.h) */
#define PYFWD_FRAME_HEADROOM 8	/* room before data: pyfwd_tun.h */

/* One frame of a batch: the core reads and rewrites it in place. */
struct pyfwd_frame {
	uint8_t *data;
	uint32_t len;		/* bytes of frame in data */
	uint16_t cap;		/* bytes the buffer can hold (>= len) */
	uint8_t in_if;		/* interface slot it came in on */
	uint8_t flags;		/* PYFWD_FRAME_* */
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
	uint8_t out_if;		/* FORWARD: interface slot to send it on */
};

/* A VIP service, as Python publishes it. */
struct pyfwd_vip {
	uint8_t addr[16];	/* IPv4 in the first 4 bytes, rest zero */
	uint8_t family;		/* PYFWD_AF_INET or PYFWD_AF_INET6 */
	uint8_t proto;		/* IPPROTO_TCP or IPPROTO_UDP */
	uint16_t port;		/* host byte order, 1..65535 */
	uint8_t mode;		/* PYFWD_MODE_* */
	uint8_t sched;		/* PYFWD_SCHED_* */
	uint16_t persist;	/* seconds a client sticks to its real; 0 off */
	uint32_t ring_off;	/* the VIP's ring: ring[ring_off..+ring_len] */
	uint32_t ring_len;	/* 0: no real, new flows are dropped */
};

/* A real server, published at index == its id (ids are stable). */
struct pyfwd_real {
	uint8_t mac[6];		/* next hop toward it (DR: the real itself) */
	uint8_t flags;		/* PYFWD_REAL_F_* */
	uint8_t family;		/* of addr (NAT and SNAT) */
	uint8_t addr[16];
	uint16_t port;		/* 0 = the VIP's port */
	uint8_t out_if;		/* interface slot toward it */
	uint8_t pad;
	uint32_t weight;	/* PYFWD_SCHED_LEAST: flows per weight */
};

/* Fixed at create time; 0 takes the default everywhere. */
struct pyfwd_config {
	uint8_t mac[6];		/* the balancer's MAC; all zero = any */
	uint16_t workers;	/* loop threads, one per RX queue; 0 = 1 */
	uint32_t max_frame;	/* PYFWD_FRAME_MAX_DEFAULT */
	uint32_t max_vips;	/* PYFWD_VIPS_MAX_DEFAULT */
	uint32_t max_reals;	/* PYFWD_REALS_MAX_DEFAULT, at most 65535 */
	uint32_t max_ring;	/* PYFWD_RING_MAX_DEFAULT entries in all */
	uint32_t flows;		/* per worker, rounded up to a power of 2 */
	uint32_t tcp_timeout;	/* idle seconds of an established TCP flow */
	uint32_t tcp_fin_timeout; /* after FIN or RST */
	uint32_t udp_timeout;	/* idle seconds of a UDP flow */
	uint32_t tcp_syn_timeout; /* half-open: handshake not done yet */
	uint8_t mac2[6];	/* interface slot 1 (two-arm NAT: inside) */
	uint16_t pad2;
	/*
	 * New flows a worker (= RX queue) makes per second; 0 = no cap.
	 * Beyond it a DR VIP with Maglev forwards by its table without a
	 * flow entry (flows_bypassed); the others drop (drop_table_full).
	 */
	uint32_t new_flows_per_second;
};

/*
 * An address, port and protocol: a key of the steering maps (a VIP
 * service; a NAT real server whose answers the engine owns; SNAT's
 * address, port and proto 0).
 */
struct pyfwd_endpoint {
	uint8_t addr[16];	/* IPv4 in the first 4 bytes, rest zero */
	uint8_t family;		/* PYFWD_AF_INET or PYFWD_AF_INET6 */
	uint8_t proto;		/* IPPROTO_TCP or IPPROTO_UDP */
	uint16_t port;		/* host byte order */
};

/* SNAT: the balancer's address and the source ports it hands out. */
struct pyfwd_snat {
	uint8_t addr[16];
	uint8_t family;
	uint8_t pad;
	uint16_t port_lo;	/* inclusive */
	uint16_t port_hi;	/* inclusive */
	uint16_t pad2;
};

/*
 * The counters, in groups (Python reads the groups' field names from
 * here: pyfwd.dataplane.native's TABLE_COUNTERS, FLOW_COUNTERS,
 * CSUM_COUNTERS, IO_COUNTERS).  Every field is a uint64_t: they are
 * summed as an array.
 */
struct pyfwd_table_stats {
	uint64_t vip_generation;	/* bumped by every publish */
	uint64_t vip_count;
};

struct pyfwd_flow_stats {
	uint64_t flows_new;		/* flows scheduled */
	uint64_t flow_hits;		/* frames of a known flow */
	uint64_t flows_rescheduled;	/* their real was removed */
	uint64_t flows_evicted;		/* pushed out of a full table (or
					 * SNAT port range): half-open flows
					 * first, then DR ones */
	uint64_t flows_expired;		/* NAT/SNAT flows the sweep freed */
	uint64_t snat_ports_used;	/* SNAT source ports in use now */
	uint64_t flows_half_open;	/* TCP flows whose handshake is not
					 * done, now (expired ones leave as
					 * the sweep finds them) */
	uint64_t flows_bypassed;	/* frames of new flows beyond
					 * new_flows_per_second, forwarded
					 * by the Maglev table, untracked */
	uint64_t snat_ports_pool;	/* SNAT source ports it may give:
					 * each worker its share */
};

/* TCP/UDP checksums of frames flagged PYFWD_FRAME_CSUM_PARTIAL. */
struct pyfwd_csum_stats {
	uint64_t csum_completed;	/* unfinished: completed */
	uint64_t csum_bad;		/* neither unfinished nor right: sent
					 * on as they came, wrong */
};

struct pyfwd_io_stats {
	uint64_t rx;			/* frames from the rings */
	uint64_t tx;			/* frames put on the TX ring */
	uint64_t tx_ring_full;		/* forwards dropped: TX ring full */
	uint64_t punt_overflow;		/* punts dropped: punt ring full */
	uint64_t wakeups;		/* sendto/recvfrom kicks */
	uint64_t polls;			/* poll() calls */
	uint64_t handoff_out;		/* frames handed to their flow's
					 * owner (another worker) */
	uint64_t handoff_in;		/* frames taken from other workers */
	uint64_t tun_gso_cut;		/* TUN: GSO frames cut (afp_gso.c) */
};

/* The XDP fast path (csrc/fastmap.c): frames it carried count in
 * frames, bytes, verdict and reason, and flow_hits, as the core's. */
struct pyfwd_fast_stats {
	uint64_t fast_frames;		/* of those, carried by XDP */
	uint64_t fast_bytes;
	uint64_t fast_stale;		/* entries whose real changed: the
					 * frame went to the core */
	uint64_t fast_installed;	/* flows handed to XDP */
	uint64_t fast_removed;		/* taken back: closed, expired, freed */
	uint64_t fast_install_failed;	/* no room: stayed on AF_XDP */
};

/* A snapshot of the counters, summed over the workers (or of one). */
struct pyfwd_stats {
	uint64_t frames;
	uint64_t bytes;
	uint64_t verdict[4];		/* PYFWD_VERDICT_MAX */
	uint64_t reason[39];		/* PYFWD_R_MAX */
	struct pyfwd_table_stats tables;
	struct pyfwd_flow_stats flows;
	struct pyfwd_csum_stats csum;
	struct pyfwd_fast_stats fast;
	struct pyfwd_io_stats io;	/* the last group (see below) */
};

/* Per real server id; LC and WLC weigh active + inactive (live flows). */
struct pyfwd_real_stats {
	uint64_t frames;
	uint64_t bytes;
	uint64_t flows_new;
	uint64_t active;	/* alive, established or half-open */
	uint64_t inactive;	/* alive, closing: a FIN or RST seen */
};

/* AF_XDP set-up. */
#define PYFWD_XDP_MODE_AUTO 0	/* native, else generic */
#define PYFWD_XDP_MODE_NATIVE 1
#define PYFWD_XDP_MODE_GENERIC 2
#define PYFWD_XSK_COPY_AUTO 0	/* zero-copy, else copy */
#define PYFWD_XSK_COPY 1
#define PYFWD_XSK_ZEROCOPY 2

struct pyfwd_xsk_config {
	uint32_t ifindex;	/* interface slot 0 */
	uint32_t ifindex2;	/* slot 1 (two-arm NAT's inside), 0 = none */
	uint32_t queues;	/* RX queues 0..queues-1, one socket each */
	uint32_t xdp_mode;	/* PYFWD_XDP_MODE_* */
	uint32_t copy_mode;	/* PYFWD_XSK_* */
	uint32_t frames;	/* UMEM frames per queue: 2 fill rings each */
	uint32_t frame_size;	/* 4096 (2048 also works) */
	uint32_t ring_size;	/* the rings below left 0: 2048 */
	uint32_t batch;		/* frames per burst: 64 */
	uint32_t busy_poll_usecs; /* SO_BUSY_POLL; 0 = no busy polling */
	uint32_t busy_poll_budget; /* SO_BUSY_POLL_BUDGET: 64 */
	uint32_t poll_mode;	/* PYFWD_POLL_* (io/xsk_loop.c) */
	uint32_t rx_ring;	/* ring sizes, powers of two; 0: ring_size */
	uint32_t tx_ring;
	uint32_t fill_ring;	/* 0: 2 * ring_size */
	uint32_t comp_ring;
};
#define PYFWD_POLL_BUSY 0	/* busy polling: always */
#define PYFWD_POLL_ADAPTIVE 1	/* under load; poll() when idle */

/* What the set-up got. */
struct pyfwd_xsk_info {
	uint32_t xdp_mode;	/* NATIVE or GENERIC */
	uint32_t copy_mode;	/* COPY or ZEROCOPY */
	uint32_t busy_poll;	/* 1 if the socket options took */
	uint32_t queues;
	uint32_t prog_id;	/* the attached XDP program's id */
	uint32_t pad;
};

struct pyfwd_ctx;

/* Create a context; 0 or -errno (-EINVAL: bad config, -ENOMEM). */
int pyfwd_ctx_create(const struct pyfwd_config *cfg, struct pyfwd_ctx **out);
void pyfwd_ctx_destroy(struct pyfwd_ctx *ctx);

/* The configuration the context runs with (defaults filled in). */
void pyfwd_ctx_config_read(const struct pyfwd_ctx *ctx,
			   struct pyfwd_config *out);

/*
 * Publish the tables: VIPs, real servers (index = id) and the rings the
 * VIPs schedule from.  Built in the inactive bank, made active with one
 * release store, after every worker has left the bank it overwrites.
 * 0 or -errno: -E2BIG (over max_vips, max_reals or max_ring), -EINVAL (a
 * bad family, proto, port, mode, sched or ring slice), -EEXIST (a service
 * twice).  Calls are serialised by the caller (Python holds a lock).
 */
int pyfwd_tables_publish(struct pyfwd_ctx *ctx, const struct pyfwd_vip *vips,
			 uint32_t nvips, const struct pyfwd_real *reals,
			 uint32_t nreals, const uint16_t *ring, uint32_t nring);

/*
 * The core on a burst of n frames (as worker 0): classify each, find or
 * make its flow, rewrite it in place, write one result per frame.  Pure
 * function of the frames, the published tables and the flow table; no
 * allocation, no I/O.  Returns the number of frames whose verdict is
 * FORWARD.  One thread per ctx at a time (not beside a loop).  The I/O
 * loops run the same burst on their own worker.
 */
uint32_t pyfwd_core_burst(struct pyfwd_ctx *ctx, struct pyfwd_frame *frames,
			  uint32_t n, struct pyfwd_result *out);

void pyfwd_stats_read(const struct pyfwd_ctx *ctx, struct pyfwd_stats *out);

/* The counters of one worker (= RX queue); -EINVAL past the last. */
int pyfwd_worker_stats_read(const struct pyfwd_ctx *ctx, uint32_t worker,
			    struct pyfwd_stats *out);

/* Counters of real ids 0..n-1 (n <= max_reals), summed over workers. */
int pyfwd_real_stats_read(const struct pyfwd_ctx *ctx,
			  struct pyfwd_real_stats *out, uint32_t n);

/*
 * Expire now whatever has timed out in every worker's flow table (the
 * loops do it a few slots at a time themselves).  Not while loops run.
 */
void pyfwd_flows_expire(struct pyfwd_ctx *ctx);

/*
 * Fill a Maglev table of size entries (scheduler.py's maglev_table: it
 * checks the inputs and computes the turns).  Real i's permutation is
 * next[i] + j * skip[i] mod size; turns[k] is the real whose turn k is,
 * and each turn claims the first free entry left on its real's
 * permutation.  next is the reals' offsets on entry, their cursors on
 * return.  Unclaimed entries are PYFWD_NO_REAL.  0, or -EINVAL for an
 * offset, skip or turn out of range, nturns > size, or a permutation that
 * finds no free entry (size not prime).
 */
int pyfwd_maglev_fill(uint16_t *table, uint32_t size, uint32_t *next,
		      const uint32_t *skip, uint32_t nreals,
		      const uint32_t *turns, uint32_t nturns);

/* Tests: a fixed clock in ns (0 = CLOCK_MONOTONIC again). */
void pyfwd_clock_set(struct pyfwd_ctx *ctx, uint64_t now_ns);

/*
 * Punted frames (ARP, ICMP, NDP for a VIP) wait in a ring per worker for
 * Python.  Copies up to max frames into buf (frames back to back, their
 * lengths in lens); returns how many, never blocks.
 */
uint32_t pyfwd_punt_drain(struct pyfwd_ctx *ctx, uint8_t *buf, size_t bufsize,
			  uint32_t *lens, uint32_t max);

/* Set the SNAT address and port range (every worker's pool). 0 or -errno;
 * -EBUSY when flows hold ports already. */
int pyfwd_snat_set(struct pyfwd_ctx *ctx, const struct pyfwd_snat *snat);

/*
 * The I/O backends (csrc/io/), one at a time per context: they feed the
 * core's bursts from an interface (slot 0) and a second one (slot 1, the
 * inside of a two-arm NAT) and send what it forwards.  Both load the
 * steering object bpf_path (bpf/steer.bpf.c).  open: 0 or -errno (-EBUSY:
 * a backend is open already); errbuf says what failed.  run: the loop of
 * one queue; blocks until pyfwd_io_stop, the GIL released (cffi).
 *
 * AF_XDP: attach the XDP program pyfwd_xdp_steer to ifindex with a
 * bpf_link that is not pinned (the kernel detaches it when the process
 * ends, even on SIGKILL) and create one socket per queue.
 */
int pyfwd_xsk_open(struct pyfwd_ctx *ctx, const char *bpf_path,
		   const struct pyfwd_xsk_config *cfg,
		   struct pyfwd_xsk_info *info, char *errbuf, size_t errlen);
int pyfwd_xsk_run(struct pyfwd_ctx *ctx, uint32_t queue);

/*
 * AF_PACKET (raw sockets): one TPACKET_V3 ring per interface (ifindex2 0:
 * none), a tc program (pyfwd_tc_owned, tcx bpf_link, gone with the
 * process) that keeps the engine's frames from the kernel.  One loop:
 * run(ctx, 0).
 */
int pyfwd_afp_open(struct pyfwd_ctx *ctx, const char *bpf_path,
		   uint32_t ifindex, uint32_t ifindex2, char *errbuf,
		   size_t errlen);
int pyfwd_afp_run(struct pyfwd_ctx *ctx, uint32_t queue);

/*
 * The interface slots whose frames the open backend flags
 * PYFWD_FRAME_CSUM_PARTIAL, all of them, as a bit mask (bit s: slot s):
 * those whose driver hands over unfinished checksums (veth), decided at
 * open from the driver's name (ethtool GDRVINFO).  AF_PACKET flags the
 * frames the kernel marks TP_STATUS_CSUMNOTREADY on any slot besides.
 * 0 when no backend is open.
 */
uint32_t pyfwd_io_csum_slots(const struct pyfwd_ctx *ctx);

/*
 * Liveness.  Each loop adds one to its worker's heartbeat every iteration,
 * idle ones included (an idle loop wakes from poll() every 100 ms at
 * most): a count that stops moving while the loop's thread lives is a
 * stalled loop.  beats: the count of worker (0 past the last).
 */
uint64_t pyfwd_io_worker_beats(const struct pyfwd_ctx *ctx, uint32_t worker);

/*
 * For tests and operators rehearsing a failure: PYFWD_LOOP_PAUSE stalls
 * the loop of worker (it sleeps, handles no frame and stops beating until
 * PYFWD_LOOP_RUN or pyfwd_io_stop); PYFWD_LOOP_EXIT makes it return
 * -ECANCELED, as a loop that died.  0 or -EINVAL (no such worker or how).
 */
#define PYFWD_LOOP_RUN 0
#define PYFWD_LOOP_PAUSE 1
#define PYFWD_LOOP_EXIT 2
int pyfwd_io_worker_pause(struct pyfwd_ctx *ctx, uint32_t worker, int how);

/*
 * What the kernel counted at the backend's sockets: frames it dropped
 * there before a loop could see them (a loop too slow or stalled, a ring
 * too small).  Python reads the field names (pyfwd.dataplane.native's
 * XSK_SOCK_COUNTERS, AFP_SOCK_COUNTERS); every field is a uint64_t.
 *
 * AF_XDP: the socket's XDP_STATISTICS (struct xdp_statistics), the
 * kernel's counts since the socket was made.
 */
struct pyfwd_xsk_sock_stats {
	uint64_t rx_dropped;		/* dropped, other reasons (frame too
					 * big, no frame to copy it into) */
	uint64_t rx_invalid_descs;	/* dropped: a bad RX descriptor */
	uint64_t tx_invalid_descs;	/* not sent: a bad TX descriptor */
	uint64_t rx_ring_full;		/* dropped: the RX ring was full */
	uint64_t rx_fill_ring_empty_descs; /* the fill ring had no frame */
	uint64_t tx_ring_empty_descs;	/* a kick found the TX ring empty:
					 * not a drop */
};

/*
 * AF_PACKET: the receive socket's PACKET_STATISTICS (struct
 * tpacket_stats_v3).  The kernel resets them on every read and keeps 32
 * bits: the backend adds them up from open on (its loop reads them every
 * AFP_STATS_BLOCKS blocks, and so does every pyfwd_io_sock_stats_read).
 */
struct pyfwd_afp_sock_stats {
	uint64_t packets;	/* frames the filter kept, dropped included */
	uint64_t drops;		/* dropped: the ring had no room */
	uint64_t freeze_q_cnt;	/* times the ring filled up (froze) */
};

/* One socket's: the open backend's group; the other's stays zero. */
struct pyfwd_sock_stats {
	struct pyfwd_xsk_sock_stats xsk;
	struct pyfwd_afp_sock_stats afp;
};

/*
 * The counters of the socket of RX queue `queue` on interface slot `slot`
 * (AF_PACKET: one socket per slot, queue 0).  0 or -errno: -ENOTCONN (no
 * backend open), -EINVAL (no such queue or slot), getsockopt's.  Not
 * beside pyfwd_io_close: the caller serialises them (Python holds a lock).
 */
int pyfwd_io_sock_stats_read(struct pyfwd_ctx *ctx, uint32_t queue,
			     uint32_t slot, struct pyfwd_sock_stats *out);

/* Stop the loops of the backend (they return within 100 ms). */
void pyfwd_io_stop(struct pyfwd_ctx *ctx);
/* Stop, detach and free the backend (none open: nothing to do). */
void pyfwd_io_close(struct pyfwd_ctx *ctx);

/*
 * Set what the backend's BPF programs steer to the engine (the whole set:
 * what is not named any more is removed): frames to these VIP services;
 * NAT's returns, i.e. frames from these real servers' addr:port/proto; and
 * SNAT's, frames to its address and port range (snat NULL or port_hi 0:
 * none).  ICMP errors about them too.  0 or -errno (-ENOTCONN: no backend
 * open, -E2BIG: over the maps' sizes).
 */
int pyfwd_steer_set(struct pyfwd_ctx *ctx, const struct pyfwd_endpoint *vips,
		    uint32_t nvips, const struct pyfwd_endpoint *replies,
		    uint32_t nreplies, const struct pyfwd_snat *snat);

/*
 * Detach whatever XDP program is attached to ifindex by netlink (leftovers
 * of another attach mode).  0, or -errno (-EBUSY: a live bpf_link holds
 * it: an engine is running).  *prog_id gets what was attached (0: none).
 */
int pyfwd_xdp_cleanup(uint32_t ifindex, uint32_t *prog_id);

/* Names for logs, metrics and tests. */
const char *pyfwd_reason_name(uint32_t reason);
uint32_t pyfwd_reason_verdict(uint32_t reason);

/* cffi:end */

_Static_assert(sizeof(struct pyfwd_frame) == 16, "pyfwd_frame ABI");
_Static_assert(sizeof(struct pyfwd_result) == 16, "pyfwd_result ABI");
_Static_assert(sizeof(struct pyfwd_vip) == 32, "pyfwd_vip ABI");
_Static_assert(sizeof(struct pyfwd_real) == 32, "pyfwd_real ABI");
_Static_assert(sizeof(struct pyfwd_real_stats) == 40, "real stats ABI");
_Static_assert(sizeof(struct pyfwd_config) == 56, "pyfwd_config ABI");
_Static_assert(sizeof(struct pyfwd_xsk_config) == 64, "xsk config ABI");
_Static_assert(sizeof(struct pyfwd_snat) == 24, "pyfwd_snat ABI");
_Static_assert(sizeof(struct pyfwd_endpoint) == 20, "pyfwd_endpoint ABI");
_Static_assert(sizeof(struct pyfwd_sock_stats) == 72, "sock stats ABI");
_Static_assert(sizeof(struct pyfwd_stats) % sizeof(uint64_t) == 0 &&
	       offsetof(struct pyfwd_stats, io) +
	       sizeof(struct pyfwd_io_stats) == sizeof(struct pyfwd_stats),
	       "pyfwd_stats: uint64_t counters, summed as an array");
_Static_assert(sizeof(((struct pyfwd_stats *)0)->verdict) ==
	       PYFWD_VERDICT_MAX * sizeof(uint64_t), "verdict counters");
_Static_assert(sizeof(((struct pyfwd_stats *)0)->reason) ==
	       PYFWD_R_MAX * sizeof(uint64_t), "reason counters");

#endif /* PYFWD_H */
