/* SPDX-License-Identifier: MIT */
/*
 * afp.c - the raw-socket backend's set-up: the same core behind AF_PACKET
 * sockets, for interfaces where AF_XDP is not available.
 *
 * Per interface: a TPACKET_V3 receive ring on a socket whose BPF filter
 * keeps what the engine may own, and a socket for batched transmit
 * (sendmmsg, past the qdisc).  AF_PACKET taps, it does not steal, so the
 * kernel gets every frame too: a tc ingress program attached with tcx (a
 * bpf_link, gone with the process) drops what the engine owns after the
 * taps took their copy, so that the kernel neither answers SNAT's returns
 * with a reset nor forwards NAT's a second time.  One loop (afp_loop.c)
 * serves every interface.
 *
 * Both sockets carry a virtio_net_hdr before each frame (PACKET_VNET_HDR):
 * a veth hands over its sender's TSO frames whole (up to 64 KiB, the
 * checksum unfinished), and the header that says so on receipt lets the
 * kernel cut them into segments, and finish their checksums, as they are
 * sent on.
 */
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "io/afp.h"

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif
#ifndef SO_ATTACH_BPF
#define SO_ATTACH_BPF 50
#endif
/* Linux 6.6 (tcx); Debian 12's uapi headers predate it. */
#define ATTACH_TCX_INGRESS 46

static void port_close(struct afp_port *p)
{
	if (p->ring)
		munmap(p->ring, p->ring_size);
	if (p->rx_fd >= 0)
		close(p->rx_fd);
	if (p->tx_fd >= 0)
		close(p->tx_fd);
	if (p->link_fd >= 0)
		close(p->link_fd);	/* detaches the tc program */
	p->ring = NULL;
	p->rx_fd = p->tx_fd = p->link_fd = -1;
}

static void afp_io_free(void *p)
{
	struct afp_io *io = p;
	uint32_t i;

	for (i = 0; i < PYFWD_IFACES_MAX; i++)
		port_close(&io->port[i]);
	if (io->obj)
		bpf_object__close(io->obj);
	free(io->gso_buf);
	free(io);
}

static int port_open(struct afp_port *p, uint32_t ifindex, int filter_fd,
		     int tc_fd, char *errbuf, size_t errlen)
{
	struct tpacket_req3 req = {
		.tp_block_size = AFP_BLOCK_SIZE,
		.tp_block_nr = AFP_BLOCKS,
		.tp_frame_size = AFP_FRAME_SIZE,
		.tp_frame_nr = AFP_BLOCK_SIZE / AFP_FRAME_SIZE * AFP_BLOCKS,
		.tp_retire_blk_tov = AFP_RETIRE_MS,
	};
	struct sockaddr_ll sll = { .sll_family = AF_PACKET,
				   .sll_protocol = htons(ETH_P_ALL),
				   .sll_ifindex = (int)ifindex };
	int v3 = TPACKET_V3, one = 1, err;
	unsigned int room = PYFWD_HEADROOM;	/* TUN's outer header */
	char name[IF_NAMESIZE] = "?";

	if_indextoname(ifindex, name);
	p->ifindex = ifindex;
	p->rx_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	p->tx_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (p->rx_fd < 0 || p->tx_fd < 0)
		goto errno_out;
	/* Filter first, then bind: nothing unfiltered is queued. */
	if (setsockopt(p->rx_fd, SOL_SOCKET, SO_ATTACH_BPF, &filter_fd,
		       sizeof(filter_fd)) ||
	    setsockopt(p->rx_fd, SOL_PACKET, PACKET_VERSION, &v3,
		       sizeof(v3)) ||
	    setsockopt(p->rx_fd, SOL_PACKET, PACKET_VNET_HDR, &one,
		       sizeof(one)) ||
	    setsockopt(p->rx_fd, SOL_PACKET, PACKET_RESERVE, &room,
		       sizeof(room)) ||
	    setsockopt(p->rx_fd, SOL_PACKET, PACKET_RX_RING, &req,
		       sizeof(req)) ||
	    setsockopt(p->rx_fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one,
		       sizeof(one)))
		goto errno_out;
	p->ring_size = (size_t)req.tp_block_size * req.tp_block_nr;
	p->ring = mmap(NULL, p->ring_size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_LOCKED, p->rx_fd, 0);
	if (p->ring == MAP_FAILED) {
		p->ring = NULL;
		goto errno_out;
	}
	if (bind(p->rx_fd, (struct sockaddr *)&sll, sizeof(sll)))
		goto errno_out;
	sll.sll_protocol = 0;	/* the transmit socket receives nothing */
	if (bind(p->tx_fd, (struct sockaddr *)&sll, sizeof(sll)) ||
	    setsockopt(p->tx_fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one,
		       sizeof(one)) ||
	    setsockopt(p->tx_fd, SOL_PACKET, PACKET_VNET_HDR, &one,
		       sizeof(one)))
		goto errno_out;
	p->link_fd = bpf_link_create(tc_fd, (int)ifindex, ATTACH_TCX_INGRESS,
				     NULL);
	if (p->link_fd < 0) {
		err = -errno;
		say(errbuf, errlen, "attaching the tc program to %s (tcx needs "
		    "Linux 6.6 or newer)", name);
		return err;
	}
	return 0;

errno_out:
	err = -errno;
	say(errbuf, errlen, "AF_PACKET socket on %s", name);
	return err;
}

int afp_stats_fold(struct afp_port *p)
{
	struct tpacket_stats_v3 st = { 0 };
	socklen_t len = sizeof(st);

	if (getsockopt(p->rx_fd, SOL_PACKET, PACKET_STATISTICS, &st, &len))
		return -errno;
	__atomic_fetch_add(&p->sum.packets, st.tp_packets, __ATOMIC_RELAXED);
	__atomic_fetch_add(&p->sum.drops, st.tp_drops, __ATOMIC_RELAXED);
	__atomic_fetch_add(&p->sum.freeze_q_cnt, st.tp_freeze_q_cnt,
			   __ATOMIC_RELAXED);
	return 0;
}

int afp_sock_stats(void *io_, uint32_t queue, uint32_t slot,
		   struct pyfwd_afp_sock_stats *out)
{
	struct afp_io *io = io_;
	struct afp_port *p;
	int err;

	if (queue != 0 || slot >= io->nports)
		return -EINVAL;
	p = &io->port[slot];
	err = afp_stats_fold(p);
	if (err)
		return err;
	out->packets = __atomic_load_n(&p->sum.packets, __ATOMIC_RELAXED);
	out->drops = __atomic_load_n(&p->sum.drops, __ATOMIC_RELAXED);
	out->freeze_q_cnt = __atomic_load_n(&p->sum.freeze_q_cnt,
					    __ATOMIC_RELAXED);
	return 0;
}

int pyfwd_afp_open(struct pyfwd_ctx *ctx, const char *bpf_path,
		   uint32_t ifindex, uint32_t ifindex2, char *errbuf,
		   size_t errlen)
{
	struct bpf_program *progs[2];
	struct afp_io *io;
	uint32_t i;
	int err;

	say(errbuf, errlen, "%s", "");
	if (ctx->io)
		return -EBUSY;	/* one backend at a time */
	/* One loop (worker 0) sees every queue: it owns every flow. */
	if (ctx_owners_set(ctx, 1)) {
		say(errbuf, errlen, "flows hold SNAT ports");
		return -EBUSY;
	}
	io = calloc(1, sizeof(*io));
	if (!io)
		return -ENOMEM;
	io->gso_buf = malloc((size_t)AFP_GSO_SEGS * AFP_GSO_SLOT);
	if (!io->gso_buf) {
		free(io);
		return -ENOMEM;
	}
	for (i = 0; i < PYFWD_IFACES_MAX; i++)
		io->port[i].rx_fd = io->port[i].tx_fd = io->port[i].link_fd = -1;
	io->nports = ifindex2 ? 2 : 1;

	err = steer_object_load(bpf_path, (const char *const[]){
					"pyfwd_sock_filter", "pyfwd_tc_owned" },
				progs, 2, &io->obj, &ctx->maps, errbuf,
				errlen);
	if (err)
		goto err;
	for (i = 0; i < io->nports; i++) {
		err = port_open(&io->port[i], i ? ifindex2 : ifindex,
				bpf_program__fd(progs[0]),
				bpf_program__fd(progs[1]),
				errbuf, errlen);
		if (err)
			goto err;
	}
	io_if_flags_set(ctx, (const uint32_t[]){ ifindex, ifindex2 },
			io->nports);
	io_bind(ctx, io, IO_AFP, afp_io_free);
	return 0;

err:
	io_unbind(ctx);
	afp_io_free(io);
	return err < 0 ? err : -EINVAL;
}
