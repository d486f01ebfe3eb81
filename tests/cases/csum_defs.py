"""Packet cases of unfinished checksums (csrc/csum.c): frames as a veth
hands them over when their sender keeps tx checksum offload on, the TCP/UDP
checksum field holding only the pseudo-header sum.  Flagged frames
(csum_partial) come out with the checksum scapy computes, counted
csum_completed, in DR, NAT and SNAT, IPv4 and IPv6, both directions; a
finished one comes out as it came; a wrong one stays wrong (by as much as
it was) and is counted csum_bad; a UDP checksum of 0 (none) stays 0.  GSO
frames (AF_PACKET's view of a sender's TSO: up to 64 KiB, flagged gso) keep
their unfinished sum, NAT's translation included, for the kernel that cuts
them on the way out.

sequences() gives (name, setup, steps): setup is "dr" (defs' services),
"nat" (nat_defs') or "nat6" (NAT6_SERVICES); steps run in order on a fresh
core, frame by frame.
"""

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from pyfwd.frames import mac_to_bytes
from pyfwd.model import Real, Service, Vip

from . import defs
from . import nat_defs as nd
from .harness import Case, l4_sum_plus, unfinished

# IPv6 NAT: [VIP6]:80/tcp -> [REAL6_1]:8080, [VIP6]:53/udp -> [REAL6_2]:53,
# both inside (slot 1).
VIP6, CLIENT6 = "fd00::100", "fd00::1"
REAL6_1, REAL6_2 = "fd50::11", "fd50::12"
NAT6_SERVICES = [
    Service(Vip.parse(f"[{VIP6}]:80/tcp"), [Real.parse(f"[{REAL6_1}]:8080")],
            "wrr", "nat"),
    Service(Vip.parse(f"[{VIP6}]:53/udp"), [Real.parse(f"[{REAL6_2}]")], "wrr",
            "nat")]
NAT6_MACS = {Real(REAL6_1).address: mac_to_bytes(nd.REAL1_MAC),
             Real(REAL6_2).address: mac_to_bytes(nd.REAL2_MAC)}
NAT6_OUT_IFS = {Real(REAL6_1).address: 1, Real(REAL6_2).address: 1}


def step(name, description, frame, reason, out=None, *, vip=None,
         partial=True, csum=None, in_if=0, out_if=None, wrong=False,
         gso=False):
    """A step whose frame is flagged (partial) as a veth's are; gso: as
    AF_PACKET's TSO frames (their sums unfinished in and out)."""
    return Case(name, description, bytes(frame), reason, vip=vip,
                out=None if out is None else bytes(out), in_if=in_if,
                out_if=out_if, csum_partial=partial, csum=csum,
                l4_sum_wrong=wrong or gso, gso=gso)


def inward(name, description, frame, out, vip, **kw):
    """Two-arm NAT: a client's frame to VIP number vip, out inside."""
    return step(name, description, frame, "forward", nd.routed(out), vip=vip,
                out_if=1, **kw)


def outward(name, description, frame, out, **kw):
    """Two-arm NAT: a real server's answer (inside), back to the client."""
    return step(name, description, frame, "forward_reply", nd.routed(out),
                in_if=1,
                out_if=0, **kw)


GSO_PAYLOAD = bytes(range(256)) * 12        # 3072 bytes: two segments+


def udp_sum_zero_payload(pkt):
    """pkt (Ether/IP/UDP/Raw, an even number of payload bytes) with two
    bytes added to its payload so that its UDP checksum computes to 0,
    which is sent as 0xffff (RFC 768)."""
    probe = Ether(bytes(pkt / Raw(b"\0\0")))
    c = probe[UDP].chksum               # the complement of the sum so far
    return Ether(bytes(pkt / Raw(c.to_bytes(2, "big"))))


def dr_cases():
    eth, syn, syn6 = defs.eth, defs.syn, defs.syn6
    c4, v4 = defs.CLIENT4, defs.VIP4

    def dr(frame, vip):
        return defs.dr(bytes(frame), defs.REAL_OF[vip])

    tcp4 = eth() / syn() / Raw(b"GET /")          # odd length
    udp4 = eth() / IP(src=c4, dst=v4) / UDP(sport=5353, dport=53) \
        / Raw(b"q" * 21)
    tcp6 = eth() / syn6() / Raw(b"GET /")
    udp6 = eth() / IPv6(src=defs.CLIENT6, dst=defs.VIP6) \
        / UDP(sport=5353, dport=53) / Raw(b"q" * 21)
    vlan = eth() / Dot1Q(vlan=42) / syn()
    ext6 = eth() / IPv6(src=defs.CLIENT6, dst=defs.VIP6) \
        / IPv6ExtHdrDestOpt() / TCP(sport=40001, dport=80, flags="S")
    padded = bytes(eth() / IP(src=c4, dst=v4) / UDP(sport=5354, dport=53)
                   / Raw(b"a")) + b"\0" * 17     # Ethernet padding
    to_ffff = udp_sum_zero_payload(eth() / IP(src=c4, dst=v4)
                                   / UDP(sport=5355, dport=53) / Raw(b"zz"))
    zero = eth() / IP(src=c4, dst=v4) / UDP(sport=5356, dport=53, chksum=0) \
        / Raw(b"q")
    wrong = l4_sum_plus(bytes(eth() / syn(dport=11112)), 1)
    # TSO's frame, bigger than max_frame (9216): whole through AF_PACKET
    tso = eth() / IP(src=c4, dst=v4) / TCP(sport=40002, dport=80,
                                           flags="PA") / Raw(GSO_PAYLOAD * 4)
    completed = [   # (name, description, the frame finished, its VIP)
        ("dr-tcp4-unfinished", "TCP/IPv4", tcp4, 0),
        ("dr-udp4-unfinished", "UDP/IPv4", udp4, 1),
        ("dr-tcp6-unfinished", "TCP/IPv6", tcp6, 3),
        ("dr-udp6-unfinished", "UDP/IPv6", udp6, 4),
        ("dr-vlan-unfinished", "802.1Q-tagged", vlan, 0),
        ("dr-ip6-exthdr-unfinished", "behind a destination options header",
         ext6, 3),
        ("dr-udp-padded-unfinished", "a short UDP datagram and Ethernet "
         "padding: the sum covers the datagram only", padded, 1),
        ("dr-udp-completes-to-ffff", "a UDP sum that computes to 0 is sent "
         "as 0xffff, not 0 (none)", to_ffff, 1),
    ]
    return [step(name, f"{what}, unfinished: completed", unfinished(pkt),
                 "forward", dr(pkt, vip), vip=vip, csum="completed")
            for name, what, pkt, vip in completed] + [
        step("dr-tcp4-finished", "a finished sum on a veth comes out as it "
             "came", tcp4, "forward", vip=0, out=dr(tcp4, 0)),
        step("dr-udp4-sum-zero", "UDP/IPv4 with checksum 0 (none) stays 0",
             zero, "forward", dr(zero, 1), vip=1),
        step("dr-tcp4-wrong", "a wrong sum is counted and left wrong",
             wrong, "forward", dr(wrong, 2), vip=2, csum="bad",
             wrong=True),
        step("dr-not-flagged", "a NIC's frame (not flagged) is never "
             "looked at: unfinished, it leaves unfinished",
             unfinished(tcp4), "forward", dr(unfinished(tcp4), 0), vip=0,
             partial=False, wrong=True),
        step("dr-gso", "a 12 KiB TSO frame (GSO): forwarded whole, its sum "
             "left unfinished for the kernel", unfinished(tso), "forward",
             dr(unfinished(tso), 0), vip=0, gso=True),
        step("dr-big-not-gso", "the same frame not marked GSO: longer "
             "than max_frame", unfinished(tso), "drop_oversize"),
    ]


def nat_cases():
    """NAT and SNAT (nat_defs' set-up) with unfinished, finished and wrong
    sums, both directions."""
    tcp, udp, ip_of, icmp_err = nd.tcp, nd.udp, nd.ip_of, nd.icmp_err
    c, v, r1, r2 = nd.CLIENT, nd.VIP, nd.REAL1, nd.REAL2
    om, im, cm = nd.OUT_MAC, nd.IN_MAC, nd.CLIENT_MAC
    syn = tcp(c, 40000, v, 80, "S", om, cm)
    syn_out = tcp(c, 40000, r1, 8080, "S", nd.REAL1_MAC, im)
    sa = tcp(r1, 8080, c, 40000, "SA", im, nd.REAL1_MAC)
    sa_out = tcp(v, 80, c, 40000, "SA", cm, om)
    data = tcp(c, 40000, v, 80, "PA", om, cm, b"GET /")
    data_out = tcp(c, 40000, r1, 8080, "PA", nd.REAL1_MAC, im, b"GET /")
    data2 = tcp(c, 40000, v, 80, "PA", om, cm, b"GET /2")
    data2_out = tcp(c, 40000, r1, 8080, "PA", nd.REAL1_MAC, im, b"GET /2")
    q = udp(c, 5353, v, 53, om, cm, b"query")
    q_out = udp(c, 5353, r2, 53, nd.REAL2_MAC, im, b"query")
    a = udp(r2, 53, c, 5353, im, nd.REAL2_MAC, b"answer")
    a_out = udp(v, 53, c, 5353, cm, om, b"answer")
    z = udp(c, 5354, v, 53, om, cm, chksum=0)
    z_out = udp(c, 5354, r2, 53, nd.REAL2_MAC, im, chksum=0)
    big = tcp(c, 40000, v, 80, "PA", om, cm, GSO_PAYLOAD)
    big_out = tcp(c, 40000, r1, 8080, "PA", nd.REAL1_MAC, im, GSO_PAYLOAD)
    bigr = tcp(r1, 8080, c, 40000, "PA", im, nd.REAL1_MAC, GSO_PAYLOAD)
    bigr_out = tcp(v, 80, c, 40000, "PA", cm, om, GSO_PAYLOAD)
    p0, sr, sm = nd.SNAT_PORTS[0], nd.SREAL, nd.SREAL_MAC
    ssyn = tcp(c, 41000, nd.SVIP, 80, "S", om, cm)
    ssyn_out = tcp(nd.SNAT, p0, sr, 8080, "S", sm, om)
    ssa = tcp(sr, 8080, nd.SNAT, p0, "SA", om, sm)
    ssa_out = tcp(nd.SVIP, 80, c, 41000, "SA", cm, om)
    sbig = tcp(sr, 8080, nd.SNAT, p0, "PA", om, sm, GSO_PAYLOAD)
    sbig_out = tcp(nd.SVIP, 80, c, 41000, "PA", cm, om, GSO_PAYLOAD)
    done = {"csum": "completed"}
    return [
        inward("nat-syn-unfinished", "NAT: an unfinished SYN, completed "
               "before its translation", unfinished(syn), syn_out, 0,
               **done),
        outward("nat-synack-unfinished", "NAT: the real's unfinished "
                "SYN-ACK, completed and translated back", unfinished(sa),
                sa_out, **done),
        inward("nat-data-finished", "NAT: a finished sum, flagged: "
               "translated as ever", data, data_out, 0),
        inward("nat-data-wrong", "NAT: a wrong sum is counted, and the "
               "translation keeps it wrong by as much",
               l4_sum_plus(data2, 1), l4_sum_plus(data2_out, 1), 0,
               csum="bad", wrong=True),
        inward("nat-gso", "NAT: a GSO frame, translated, its sum the new "
               "pseudo-header's", unfinished(big), unfinished(big_out), 0,
               gso=True),
        outward("nat-gso-reply", "NAT: the real's GSO frame, translated "
                "back", unfinished(bigr), unfinished(bigr_out), gso=True),
        step("nat-icmp-flagged", "NAT: an ICMP error on a veth: nothing "
             "to complete",
             icmp_err(nd.ROUTER, v, ip_of(sa_out), om, nd.ROUTER_MAC),
             "forward_icmp",
             nd.routed(icmp_err(nd.ROUTER, r1, ip_of(sa), nd.REAL1_MAC,
                                im)), vip=0,
             out_if=1),
        inward("nat-udp-unfinished", "NAT: an unfinished UDP query",
               unfinished(q), q_out, 1, **done),
        outward("nat-udp-answer-unfinished", "NAT: the real's unfinished "
                "UDP answer", unfinished(a), a_out, **done),
        inward("nat-udp-sum-zero", "NAT: a UDP checksum of 0 stays 0", z,
               z_out, 1),
        step("snat-syn-unfinished", "SNAT: an unfinished SYN, from our "
             "address and port", unfinished(ssyn), "forward",
             nd.routed(ssyn_out),
             vip=2, out_if=0, csum="completed"),
        step("snat-synack-unfinished", "SNAT: the real's unfinished "
             "answer, back to the client", unfinished(ssa), "forward_reply",
             nd.routed(ssa_out), out_if=0, csum="completed"),
        step("snat-gso-reply", "SNAT: the real's GSO frame, back to the "
             "client", unfinished(sbig), "forward_reply",
             nd.routed(unfinished(sbig_out)), out_if=0, gso=True),
    ]


def nat6_cases():
    """NAT over IPv6, both directions, TCP and UDP, unfinished."""
    om, im, cm = nd.OUT_MAC, nd.IN_MAC, nd.CLIENT_MAC
    rm1, rm2 = nd.REAL1_MAC, nd.REAL2_MAC

    def f6(dst_mac, src_mac, src, dst, l4):
        return bytes(Ether(dst=dst_mac, src=src_mac)
                     / IPv6(src=src, dst=dst) / l4)

    syn = f6(om, cm, CLIENT6, VIP6, TCP(sport=40000, dport=80, flags="S"))
    syn_out = f6(rm1, im, CLIENT6, REAL6_1,
                 TCP(sport=40000, dport=8080, flags="S"))
    sa = f6(im, rm1, REAL6_1, CLIENT6,
            TCP(sport=8080, dport=40000, flags="SA") / Raw(b"x"))
    sa_out = f6(cm, om, VIP6, CLIENT6,
                TCP(sport=80, dport=40000, flags="SA") / Raw(b"x"))
    q = f6(om, cm, CLIENT6, VIP6, UDP(sport=5353, dport=53) / Raw(b"q6"))
    q_out = f6(rm2, im, CLIENT6, REAL6_2,
               UDP(sport=5353, dport=53) / Raw(b"q6"))
    a = f6(im, rm2, REAL6_2, CLIENT6, UDP(sport=53, dport=5353)
           / Raw(b"answer6"))
    a_out = f6(cm, om, VIP6, CLIENT6, UDP(sport=53, dport=5353)
               / Raw(b"answer6"))
    big = f6(im, rm1, REAL6_1, CLIENT6,
             TCP(sport=8080, dport=40000, flags="PA") / Raw(GSO_PAYLOAD))
    big_out = f6(cm, om, VIP6, CLIENT6,
                 TCP(sport=80, dport=40000, flags="PA") / Raw(GSO_PAYLOAD))
    done = {"csum": "completed"}
    return [
        inward("nat6-syn-unfinished", "NAT/IPv6: an unfinished SYN",
               unfinished(syn), syn_out, 0, **done),
        outward("nat6-synack-unfinished", "NAT/IPv6: the real's "
                "unfinished SYN-ACK", unfinished(sa), sa_out, **done),
        inward("nat6-udp-unfinished", "NAT/IPv6: an unfinished UDP query",
               unfinished(q), q_out, 1, **done),
        outward("nat6-udp-answer-unfinished", "NAT/IPv6: the unfinished "
                "answer", unfinished(a), a_out, **done),
        outward("nat6-gso-reply", "NAT/IPv6: the real's GSO frame",
                unfinished(big), unfinished(big_out), gso=True),
    ]


def sequences():
    """(name, setup, steps)."""
    return [("dr", "dr", dr_cases()), ("nat", "nat", nat_cases()),
            ("nat6", "nat6", nat6_cases())]


__all__ = ["sequences", "NAT6_SERVICES", "NAT6_MACS", "NAT6_OUT_IFS"]
