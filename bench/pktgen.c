// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * pktgen - 64-byte UDP frames as fast as one core can send them, for the
 * packet-rate benchmark.  AF_PACKET with PACKET_QDISC_BYPASS and
 * sendmmsg() of BURST frames; the source port cycles over FLOWS values so
 * a balancer sees that many flows.  Every frame is built up front (full
 * IPv4 and UDP checksums); the send loop allocates nothing.
 *
 *   pktgen -i IF -s SRCMAC -d DSTMAC -S SRCIP -D DSTIP [-p DPORT]
 *          [-f FLOWS] [-c CPU] [-t SECONDS] [-r PPS]
 *
 * -r caps the rate (bursts paced on the clock): what a forwarder delivers
 * below its overload point, where no NAPI work is wasted on frames its
 * rings then drop.
 *
 * Prints one JSON line at the end: what it sent, over how long.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <linux/if_packet.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef BURST
#define BURST 64	/* frames per sendmmsg() */
#endif
#define FRAME_LEN 60	/* 64 bytes on the wire with the FCS */
#define SPORT_BASE 10000

struct frame {
	unsigned char b[FRAME_LEN];
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned int csum_add(unsigned int sum, const void *p, size_t len)
{
	const unsigned char *b = p;

	for (; len > 1; len -= 2, b += 2)
		sum += b[0] << 8 | b[1];
	if (len)
		sum += b[0] << 8;
	return sum;
}

static unsigned short csum_fold(unsigned int sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons(~sum & 0xffff);
}

static void build(struct frame *f, const unsigned char *smac,
		  const unsigned char *dmac, struct in_addr src,
		  struct in_addr dst, unsigned short sport, unsigned short dport)
{
	struct ether_header *eth = (void *)f->b;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	unsigned short ulen = FRAME_LEN - sizeof(*eth) - sizeof(*ip);
	unsigned int sum;

	memset(f, 0, sizeof(*f));
	memcpy(eth->ether_dhost, dmac, ETH_ALEN);
	memcpy(eth->ether_shost, smac, ETH_ALEN);
	eth->ether_type = htons(ETHERTYPE_IP);
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = htons(FRAME_LEN - sizeof(*eth));
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->saddr = src.s_addr;
	ip->daddr = dst.s_addr;
	ip->check = csum_fold(csum_add(0, ip, sizeof(*ip)));
	udp->source = htons(sport);
	udp->dest = htons(dport);
	udp->len = htons(ulen);
	memcpy(udp + 1, "pyfwd-pps", 9);
	sum = csum_add(0, &ip->saddr, 8) + IPPROTO_UDP + ulen;
	udp->check = csum_fold(csum_add(sum, udp, ulen));
	if (!udp->check)
		udp->check = 0xffff;
}

static int parse_mac(const char *s, unsigned char *mac)
{
	return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1],
		      &mac[2], &mac[3], &mac[4], &mac[5]) == 6 ? 0 : -1;
}

static int usage(void)
{
	fprintf(stderr, "usage: pktgen -i IF -s SRCMAC -d DSTMAC -S SRCIP "
		"-D DSTIP [-p DPORT] [-f FLOWS] [-c CPU] [-t SECONDS] "
		"[-r PPS]\n");
	return 2;
}

int main(int argc, char **argv)
{
	unsigned char smac[ETH_ALEN], dmac[ETH_ALEN];
	struct in_addr src = { 0 }, dst = { 0 };
	unsigned int dport = 9, flows = 1024, i, off = 0;
	unsigned long long sent = 0, errors = 0;
	double seconds = 5, rate = 0, t0, t1, end;
	const char *ifname = NULL;
	int cpu = -1, opt, fd, one = 1, have = 0;
	struct sockaddr_ll sll = { 0 };
	struct mmsghdr *msgs;
	struct frame *frames;
	struct iovec *iov;

	while ((opt = getopt(argc, argv, "i:s:d:S:D:p:f:c:t:r:")) != -1) {
		switch (opt) {
		case 'i': ifname = optarg; break;
		case 's': have |= !parse_mac(optarg, smac); break;
		case 'd': have |= !parse_mac(optarg, dmac) << 1; break;
		case 'S': have |= inet_pton(AF_INET, optarg, &src) << 2; break;
		case 'D': have |= inet_pton(AF_INET, optarg, &dst) << 3; break;
		case 'p': dport = atoi(optarg); break;
		case 'f': flows = atoi(optarg); break;
		case 'c': cpu = atoi(optarg); break;
		case 't': seconds = atof(optarg); break;
		case 'r': rate = atof(optarg); break;
		default: return usage();
		}
	}
	if (!ifname || have != 15 || flows < 1 || flows > 50000)
		return usage();
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set)) {
			perror("pktgen: sched_setaffinity");
			return 1;
		}
	}

	/* flows frames, then BURST more repeating the first: a burst never
	 * wraps, so the loop is one sendmmsg() and an index */
	frames = calloc(flows + BURST, sizeof(*frames));
	iov = calloc(flows + BURST, sizeof(*iov));
	msgs = calloc(flows + BURST, sizeof(*msgs));
	if (!frames || !iov || !msgs) {
		fprintf(stderr, "pktgen: out of memory\n");
		return 1;
	}
	for (i = 0; i < flows + BURST; i++) {
		build(&frames[i], smac, dmac, src, dst,
		      SPORT_BASE + i % flows, dport);
		iov[i].iov_base = frames[i].b;
		iov[i].iov_len = FRAME_LEN;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	fd = socket(AF_PACKET, SOCK_RAW, 0);	/* protocol 0: send only */
	if (fd < 0) {
		perror("pktgen: socket(AF_PACKET)");
		return 1;
	}
	sll.sll_family = AF_PACKET;
	sll.sll_ifindex = if_nametoindex(ifname);
	if (!sll.sll_ifindex || bind(fd, (void *)&sll, sizeof(sll))) {
		fprintf(stderr, "pktgen: %s: %s\n", ifname, strerror(errno));
		return 1;
	}
	if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)))
		perror("pktgen: PACKET_QDISC_BYPASS");
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	t0 = now();
	end = t0 + seconds;
	for (t1 = t0; !stop && t1 < end; t1 = now()) {
		int n;

		if (rate > 0 && sent > (t1 - t0) * rate)
			continue;	/* ahead of the rate: spin */
		n = sendmmsg(fd, &msgs[off], BURST, 0);

		if (n < 0) {
			errors++;
			continue;
		}
		sent += n;
		off += n;
		if (off >= flows)
			off -= flows;
	}
	printf("{\"sent\": %llu, \"seconds\": %.6f, \"pps\": %.0f, "
	       "\"errors\": %llu, \"kind\": \"af_packet\", \"burst\": %d, "
	       "\"flows\": %u, \"cpu\": %d, \"rate\": %.0f}\n", sent,
	       t1 - t0, sent / (t1 - t0), errors, BURST, flows, cpu, rate);
	return 0;
}
