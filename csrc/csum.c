/* SPDX-License-Identifier: MIT */
/*
 * csum.c - TCP and UDP checksums that a sender left unfinished, completed
 * before the frame leaves.
 *
 * A sender with tx checksum offload (a veth's default) hands over
 * CHECKSUM_PARTIAL packets: the stack writes only the pseudo-header's sum
 * into the checksum field and leaves the rest to a device which, on a
 * veth, never comes.  Measured on Linux 6.18 (a veth pair, tx offload on,
 * TCP and UDP over IPv4 and IPv6, read with AF_PACKET on the peer): the
 * field holds the pseudo-header sum (addresses, protocol, L4 length)
 * folded to 16 bits and NOT complemented (the kernel's ~csum_tcpudp_magic
 * (..., 0)), and AF_PACKET says TP_STATUS_CSUMNOTREADY.  XDP and AF_XDP
 * copy mode pass the bytes on as they are: what we send would reach the
 * real server with that field and be dropped (TcpInCsumErrors).
 *
 * Only frames flagged PYFWD_FRAME_CSUM_PARTIAL are looked at: the backends
 * flag every frame of an interface whose driver is one that hands such
 * frames over (veth: io.c decides at open) and the frames AF_PACKET marks
 * TP_STATUS_CSUMNOTREADY.  A NIC's frames are never read here.
 *
 * The rule, for a flagged TCP or UDP packet about to be forwarded (before
 * NAT's incremental update, which then starts from a finished sum):
 *
 *   - field == the folded pseudo-header sum: unfinished.  The sum of the
 *     L4 bytes as they are (that field included) is the pseudo-header's
 *     plus the segment's: its complement is the checksum; counted
 *     csum_completed.  A finished checksum that happens to equal the
 *     pseudo-header sum (1 in 65536) comes out of this unchanged: it is
 *     that same complement.
 *   - otherwise it should be finished: verified with the same one sum,
 *     and if wrong, counted csum_bad and left wrong.  The balancer never
 *     repairs corruption: DR does not touch the sum, NAT's incremental
 *     update keeps a wrong sum wrong, and completion writes only over the
 *     one value a sender leaves unfinished.
 *   - IPv4 UDP with checksum 0 (none) stays 0; a completed UDP checksum
 *     that comes out 0 is sent as 0xffff (RFC 768).
 *
 * Why verify only there: verifying costs a pass over the payload, the
 * very cost DR exists to avoid, and on a NIC's frames it would tell
 * nothing the NIC and the receiver do not check themselves.  On a
 * flagged interface the pass is paid by every unfinished frame anyway;
 * paying it for the finished ones too is what makes csum_bad mean
 * something: a sum that is neither unfinished nor right there is a
 * sender's bug or a form of unfinished sum this rule does not know, and
 * the count says so instead of the receiver's silent drop.
 *
 * ICMP needs nothing: Linux computes ICMP checksums in software (no
 * offload covers them), and the packet an ICMP error quotes is one we
 * sent, already complete.  A GSO frame (PYFWD_FRAME_GSO) is not completed
 * either: the kernel cuts it on the way out and finishes each segment's
 * sum from the unfinished one (forward.c keeps it so).
 */
#include "core.h"

uint16_t csum_pseudo(const uint8_t *l3, uint8_t family, uint8_t proto,
		     uint32_t l4_len)
{
	uint64_t s = (uint64_t)proto + l4_len;
	int k;

	if (family == PYFWD_AF_INET)
		return csum_fold(s + ld_be32(l3 + IP4_SADDR_OFF) +
				 ld_be32(l3 + IP4_DADDR_OFF));
	for (k = 0; k < 32; k += 4)	/* source and destination: adjacent */
		s += ld_be32(l3 + IP6_SADDR_OFF + k);
	return csum_fold(s);
}

void csum_finish(struct worker *w, const struct parse *ps, uint8_t *frame)
{
	const struct pyfwd_result *r = ps->r;
	uint8_t *l4 = frame + r->l4_off, *field;
	uint32_t len = ps->l3_end - r->l4_off;
	uint16_t pseudo, seg, sum;

	if (r->l4proto == PROTO_UDP) {
		field = l4 + UDP_CSUM_OFF;
		len = ld_be16(l4 + 4);	/* the datagram's (classify checked) */
		if (r->family == PYFWD_AF_INET && !ld_be16(field))
			return;
	} else {
		field = l4 + TCP_CSUM_OFF;
	}
	pseudo = csum_pseudo(frame + r->l3_off, r->family, r->l4proto, len);
	seg = csum_be16(csum_add(0, l4, len));
	if (ld_be16(field) == pseudo) {
		sum = (uint16_t)~seg;
		if (!sum && r->l4proto == PROTO_UDP)
			sum = 0xffff;
		st_be16(field, sum);
		w->stats.csum.csum_completed++;
	} else if (csum_fold((uint64_t)seg + pseudo) != 0xffff) {
		w->stats.csum.csum_bad++;
	}
}
