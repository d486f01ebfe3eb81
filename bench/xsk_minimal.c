// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * xsk_minimal - the reference a userspace AF_XDP loop can reach: receive,
 * swap the MACs, send back out of the same interface and queue.  One
 * socket, copy or zero-copy as the driver allows, preferred busy polling
 * (SO_PREFER_BUSY_POLL, SO_BUSY_POLL, SO_BUSY_POLL_BUDGET) so this thread
 * does the NAPI work instead of a softirq beside it.
 *
 *   xsk_minimal -i IF -o XSKREDIR.bpf.o [-q QUEUE] [-c CPU] [-b USECS]
 *
 * Prints a JSON line when ready and one with its counters on SIGINT or
 * SIGTERM: frames forwarded and the kernel's XDP_STATISTICS of its socket
 * (pyfwd bench reads those from outside, through pidfd_getfd, per window).  The XDP program is attached through an unpinned bpf_link, so
 * it goes when this process does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif

#ifndef BATCH
#define BATCH 64			/* descriptors per ring operation */
#endif
#define RING_SIZE 2048			/* rx, tx, completion */
#define FILL_SIZE (2 * RING_SIZE)
#define NUM_FRAMES (2 * FILL_SIZE)
#define FRAME_SIZE XSK_UMEM__DEFAULT_FRAME_SIZE

struct port {
	struct xsk_ring_prod fill, tx;
	struct xsk_ring_cons comp, rx;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	void *area;
	unsigned long long rx_pkts, tx_pkts;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int die(const char *what, int err)
{
	fprintf(stderr, "xsk_minimal: %s: %s\n", what,
		strerror(err < 0 ? -err : err));
	return 1;
}

/* Frames the kernel has sent go back to the fill ring. */
static void recycle(struct port *p)
{
	__u32 idx_c, idx_f, n, i;

	n = xsk_ring_cons__peek(&p->comp, BATCH, &idx_c);
	if (!n)
		return;
	while (xsk_ring_prod__reserve(&p->fill, n, &idx_f) != n)
		;
	for (i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&p->fill, idx_f + i) =
			*xsk_ring_cons__comp_addr(&p->comp, idx_c + i);
	xsk_ring_prod__submit(&p->fill, n);
	xsk_ring_cons__release(&p->comp, n);
}

static void swap_macs(unsigned char *pkt)
{
	unsigned char tmp[ETH_ALEN];

	memcpy(tmp, pkt, ETH_ALEN);
	memcpy(pkt, pkt + ETH_ALEN, ETH_ALEN);
	memcpy(pkt + ETH_ALEN, tmp, ETH_ALEN);
}

/* One burst; the number of frames it forwarded. */
static unsigned int forward_burst(struct port *p, int fd, int busy)
{
	__u32 idx_rx, idx_tx, n, i;

	recycle(p);
	/* preferred busy polling: this call does the NAPI work that fills
	 * the rx ring, on this core */
	if (busy)
		recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
	n = xsk_ring_cons__peek(&p->rx, BATCH, &idx_rx);
	if (!n)
		return 0;
	while (xsk_ring_prod__reserve(&p->tx, n, &idx_tx) != n) {
		sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
		recycle(p);
	}
	for (i = 0; i < n; i++) {
		const struct xdp_desc *rd =
			xsk_ring_cons__rx_desc(&p->rx, idx_rx + i);
		struct xdp_desc *td = xsk_ring_prod__tx_desc(&p->tx, idx_tx + i);

		swap_macs(xsk_umem__get_data(p->area, rd->addr));
		td->addr = rd->addr;
		td->len = rd->len;
	}
	xsk_ring_prod__submit(&p->tx, n);
	xsk_ring_cons__release(&p->rx, n);
	p->rx_pkts += n;
	p->tx_pkts += n;
	/* copy mode sends only on a syscall */
	sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
	return n;
}

int main(int argc, char **argv)
{
	struct xsk_umem_config ucfg = {
		.fill_size = FILL_SIZE, .comp_size = RING_SIZE,
		.frame_size = FRAME_SIZE,
	};
	struct xsk_socket_config scfg = {
		.rx_size = RING_SIZE, .tx_size = RING_SIZE,
		.libbpf_flags = XSK_LIBBPF_FLAGS__INHIBIT_PROG_LOAD,
		.bind_flags = XDP_USE_NEED_WAKEUP,
	};
	LIBBPF_OPTS(bpf_link_create_opts, lopts, .flags = XDP_FLAGS_DRV_MODE);
	const char *ifname = NULL, *objpath = NULL;
	int queue = 0, cpu = -1, usecs = 20, opt, ifindex, link, fd, err, i;
	int one = 1, budget = BATCH;
	struct bpf_object *obj;
	struct bpf_map *map;
	struct port p = { 0 };
	__u32 idx;

	while ((opt = getopt(argc, argv, "i:o:q:c:b:")) != -1) {
		switch (opt) {
		case 'i': ifname = optarg; break;
		case 'o': objpath = optarg; break;
		case 'q': queue = atoi(optarg); break;
		case 'c': cpu = atoi(optarg); break;
		case 'b': usecs = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: xsk_minimal -i IF -o OBJ "
				"[-q QUEUE] [-c CPU] [-b USECS]\n");
			return 2;
		}
	}
	if (!ifname || !objpath)
		return die("-i and -o are required", EINVAL);
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			return die("sched_setaffinity", errno);
	}
	ifindex = if_nametoindex(ifname);
	if (!ifindex)
		return die(ifname, errno);

	obj = bpf_object__open_file(objpath, NULL);
	if (!obj)
		return die(objpath, errno);
	err = bpf_object__load(obj);
	if (err)
		return die("load", err);
	link = bpf_link_create(bpf_program__fd(bpf_object__next_program(obj,
			       NULL)), ifindex, BPF_XDP, &lopts);
	if (link < 0)
		return die("attach (native)", link);
	map = bpf_object__find_map_by_name(obj, "xsks");
	if (!map)
		return die("no xsks map", ENOENT);

	p.area = mmap(NULL, (size_t)NUM_FRAMES * FRAME_SIZE,
		      PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p.area == MAP_FAILED)
		return die("mmap", errno);
	err = xsk_umem__create(&p.umem, p.area, (size_t)NUM_FRAMES * FRAME_SIZE,
			       &p.fill, &p.comp, &ucfg);
	if (err)
		return die("umem", err);
	err = xsk_socket__create(&p.xsk, ifname, queue, p.umem, &p.rx, &p.tx,
				 &scfg);
	if (err)
		return die("socket", err);
	fd = xsk_socket__fd(p.xsk);
	err = xsk_socket__update_xskmap(p.xsk, bpf_map__fd(map));
	if (err)
		return die("xskmap", err);
	if (usecs > 0 &&
	    (setsockopt(fd, SOL_SOCKET, SO_PREFER_BUSY_POLL, &one, sizeof(one)) ||
	     setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL, &usecs, sizeof(usecs)) ||
	     setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL_BUDGET, &budget,
			sizeof(budget))))
		return die("busy poll", errno);

	if (xsk_ring_prod__reserve(&p.fill, FILL_SIZE, &idx) != FILL_SIZE)
		return die("fill", ENOSPC);
	for (i = 0; i < FILL_SIZE; i++)
		*xsk_ring_prod__fill_addr(&p.fill, idx + i) =
			(__u64)i * FRAME_SIZE;
	xsk_ring_prod__submit(&p.fill, FILL_SIZE);

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	printf("{\"ready\": \"%s\", \"queue\": %d, \"batch\": %d, "
	       "\"ring\": %d, \"fill\": %d, \"busy_poll\": %d, "
	       "\"busy_poll_budget\": %d}\n", ifname, queue, BATCH, RING_SIZE,
	       FILL_SIZE, usecs, budget);
	fflush(stdout);

	while (!stop) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		/* without busy polling, sleep until NAPI has frames for us */
		if (!forward_burst(&p, fd, usecs > 0) && usecs <= 0)
			poll(&pfd, 1, 100);
	}
	{
		struct xdp_statistics st = { 0 };
		socklen_t len = sizeof(st);

		getsockopt(fd, SOL_XDP, XDP_STATISTICS, &st, &len);
		printf("{\"rx\": %llu, \"tx\": %llu, \"rx_dropped\": %llu, "
		       "\"rx_invalid_descs\": %llu, \"tx_invalid_descs\": %llu, "
		       "\"rx_ring_full\": %llu, "
		       "\"rx_fill_ring_empty_descs\": %llu, "
		       "\"tx_ring_empty_descs\": %llu}\n", p.rx_pkts, p.tx_pkts,
		       (unsigned long long)st.rx_dropped,
		       (unsigned long long)st.rx_invalid_descs,
		       (unsigned long long)st.tx_invalid_descs,
		       (unsigned long long)st.rx_ring_full,
		       (unsigned long long)st.rx_fill_ring_empty_descs,
		       (unsigned long long)st.tx_ring_empty_descs);
	}
	xsk_socket__delete(p.xsk);
	xsk_umem__delete(p.umem);
	close(link);
	return 0;
}
