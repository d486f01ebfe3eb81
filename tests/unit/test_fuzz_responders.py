"""The responders to punted frames (ARP, NDP, ICMP echo), fuzzed with
hypothesis: any bytes give a reply or None and one counted reason, never
an exception; a reply is well-formed (scapy re-parses it: addresses,
checksums, the request's tag) and answers for a VIP with our MAC."""

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import (ICMPv6EchoReply, ICMPv6EchoRequest,
                                ICMPv6ND_NA, ICMPv6ND_NS,
                                ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr,
                                IPv6, IPv6ExtHdrDestOpt, in6_chksum)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from pyfwd.frames import mac_to_bytes
from pyfwd.neighbours import arp, icmp, ndp

from ..cases.harness import checksum_problems
from .fuzzing import bounded, mutations
from .responders import Clock

LB_MAC, CLIENT_MAC = "02:00:00:00:01:02", "02:00:00:00:01:01"
VIP4, CLIENT4 = "10.0.0.100", "10.0.0.1"
VIP6, CLIENT6 = "fd00::100", "fd00::1"
SNMC = "ff02::1:ff00:100"
HUGE = 1e9          # rate and burst: the bucket never says no here


def tags():
    return st.sampled_from([None, ("q", 5), ("ad", 7)])


def tagged(tag, payload, dst=LB_MAC, src=CLIENT_MAC):
    eth = Ether(dst=dst, src=src)
    if tag is None:
        return eth / payload
    return eth / (Dot1Q if tag[0] == "q" else Dot1AD)(vlan=tag[1]) / payload


ARP_SEEDS = [bytes(tagged(t, ARP(op=1, hwsrc=CLIENT_MAC, psrc=CLIENT4,
                                 pdst=VIP4), dst="ff:ff:ff:ff:ff:ff"))
             for t in (None, ("q", 5))] + [
    bytes(Ether(src="02:00:00:00:01:11") / ARP(op=2, psrc=VIP4,
                                               hwsrc="02:00:00:00:01:11"))]
ECHO_SEEDS = [bytes(tagged(t, IP(src=CLIENT4, dst=VIP4) / ICMP()
                           / Raw(b"ping" * 4))) for t in (None, ("ad", 7))]
NDP_SEEDS = [
    bytes(Ether(dst="33:33:ff:00:01:00", src=CLIENT_MAC)
          / IPv6(src=CLIENT6, dst=SNMC, hlim=255) / ICMPv6ND_NS(tgt=VIP6)
          / ICMPv6NDOptSrcLLAddr(lladdr=CLIENT_MAC)),
    bytes(Ether(dst="33:33:ff:00:01:00", src=CLIENT_MAC)
          / IPv6(src="::", dst=SNMC, hlim=255) / ICMPv6ND_NS(tgt=VIP6)),
    bytes(Ether(dst="33:33:00:00:00:01", src="02:00:00:00:01:11")
          / IPv6(src="fd00::11", dst="ff02::1", hlim=255)
          / ICMPv6ND_NA(tgt=VIP6, O=1)
          / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:01:11")),
    bytes(tagged(("q", 9), IPv6(src=CLIENT6, dst=VIP6) / IPv6ExtHdrDestOpt()
                 / ICMPv6EchoRequest(data=b"x" * 8))),
]


def vlan_of(frame):
    """The 802.1Q/802.1ad tag of a frame: (TPID, TCI), or None."""
    tpid = int.from_bytes(frame[12:14], "big")
    if tpid in (0x8100, 0x88a8) and len(frame) >= 16:
        return tpid, int.from_bytes(frame[14:16], "big")
    return None


def same_tag(reply, request):
    assert vlan_of(reply) == vlan_of(request)


@bounded(400)
@given(mutations(ARP_SEEDS))
def test_arp_responder(frame):
    r = arp.ArpResponder(LB_MAC, [VIP4], clock=Clock())
    reply = r.handle(frame)
    assert sum(r.counters.values()) == 1
    if reply is None:
        return
    pkt = Ether(reply)
    req = arp.parse_arp(frame)
    assert pkt[ARP].op == 2 and pkt[ARP].psrc == VIP4
    assert mac_to_bytes(pkt[ARP].hwsrc) == mac_to_bytes(LB_MAC)
    assert mac_to_bytes(pkt.src) == mac_to_bytes(LB_MAC)
    assert mac_to_bytes(pkt.dst) == req.sha == mac_to_bytes(pkt[ARP].hwdst)
    assert not req.sha[0] & 1           # never to a multicast sender
    same_tag(reply, frame)


@bounded(400)
@given(mutations(ECHO_SEEDS))
def test_echo_responder(frame):
    r = icmp.EchoResponder(LB_MAC, [VIP4], rate=HUGE, burst=HUGE,
                           clock=Clock())
    reply = r.handle(frame)
    assert sum(r.counters.values()) == 1
    if reply is None:
        return
    pkt = Ether(reply)
    assert pkt[IP].src == VIP4 and pkt[ICMP].type == 0
    assert pkt[IP].len == len(bytes(pkt[IP]))
    assert not checksum_problems(reply)
    assert mac_to_bytes(pkt.src) == mac_to_bytes(LB_MAC)
    assert mac_to_bytes(pkt.dst) == bytes(frame[6:12])
    same_tag(reply, frame)


def _icmp6_sum_ok(pkt, layer):
    msg = bytes(pkt[layer])
    zeroed = msg[:2] + b"\0\0" + msg[4:]
    return in6_chksum(58, pkt[IPv6], zeroed) == pkt[layer].cksum


@bounded(400)
@given(mutations(NDP_SEEDS))
def test_ndp_responder(frame):
    r = ndp.NdpResponder(LB_MAC, [VIP6], rate=HUGE, burst=HUGE,
                         clock=Clock(), monotonic=Clock())
    reply = r.handle(frame)
    assert sum(r.counters.values()) == 1
    if reply is None:
        return
    check_ndp_reply(frame, reply)


def check_ndp_reply(frame, reply):
    pkt = Ether(reply)
    assert mac_to_bytes(pkt.src) == mac_to_bytes(LB_MAC)
    assert pkt[IPv6].plen == len(bytes(pkt[IPv6].payload))
    if pkt.haslayer(ICMPv6ND_NA):
        assert pkt[ICMPv6ND_NA].tgt == VIP6 and pkt[IPv6].hlim == 255
        assert pkt[IPv6].src == VIP6
        assert _icmp6_sum_ok(pkt, ICMPv6ND_NA)
    else:
        assert pkt[IPv6].src == VIP6
        assert _icmp6_sum_ok(pkt, ICMPv6EchoReply)
    same_tag(reply, frame)


# Neighbour solicitations built field by field: the checksum right, so
# that the fuzz reaches the RFC 4861 checks behind it.
@bounded(300)
@given(st.sampled_from([CLIENT6, "::", VIP6, "ff02::1", "::1"]),
       st.sampled_from([SNMC, VIP6, "ff02::1", CLIENT6]),
       st.sampled_from([VIP6, CLIENT6, "ff02::1"]),
       st.sampled_from([255, 254, 0]), st.integers(0, 3),
       st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=14)),
                max_size=3),
       st.sampled_from([CLIENT_MAC, LB_MAC, "33:33:00:00:00:01"]), tags())
def test_ndp_solicitations(src, dst, target, hlim, code, options, eth_src,
                           tag):
    opts = b"".join(bytes([t, (len(d) + 2 + 7) // 8])
                    + d.ljust((len(d) + 2 + 7) // 8 * 8 - 2, b"\0")
                    for t, d in options)
    frame = bytes(tagged(tag, IPv6(src=src, dst=dst, hlim=hlim)
                         / ICMPv6ND_NS(tgt=target, code=code) / Raw(opts),
                         dst="33:33:ff:00:01:00", src=eth_src))
    r = ndp.NdpResponder(LB_MAC, [VIP6], rate=HUGE, burst=HUGE,
                         clock=Clock(), monotonic=Clock())
    reply = r.handle(frame)
    assert sum(r.counters.values()) == 1
    if reply is not None:
        check_ndp_reply(frame, reply)
        assert target == VIP6 and hlim == 255 and code == 0


def test_the_seeds_are_answered():
    """The fuzz starts from frames that get an answer (the checks of the
    answer above do run), and from claims that are conflicts."""
    a = arp.ArpResponder(LB_MAC, [VIP4], clock=Clock())
    assert [a.handle(f) is not None for f in ARP_SEEDS] == [True, True,
                                                             False]
    assert a.counters["conflicts"] == 1
    e = icmp.EchoResponder(LB_MAC, [VIP4], clock=Clock())
    assert all(e.handle(f) is not None for f in ECHO_SEEDS)
    n = ndp.NdpResponder(LB_MAC, [VIP6], clock=Clock(), monotonic=Clock())
    assert [n.handle(f) is not None for f in NDP_SEEDS] == [True, True,
                                                             False, True]
