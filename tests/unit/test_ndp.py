"""pyfwd.neighbours.ndp: neighbour advertisements and echo replies for IPv6 VIPs,
checked against scapy (checksums, flags, options, addresses); DAD probes;
conflicts; every frame counted by reason; VLAN tags kept; malformed input
never raises.  No root, no sockets."""

import ipaddress
import random

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import (ICMPv6EchoReply, ICMPv6EchoRequest,
                                ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RS,
                                ICMPv6NDOptDstLLAddr, ICMPv6NDOptMTU,
                                ICMPv6NDOptSrcLLAddr, IPv6,
                                IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, in6_chksum)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from pyfwd.neighbours import ndp
from pyfwd.frames import mac_to_bytes
from pyfwd.errors import ConfigError

from .responders import Clock, only_counter

LB_MAC = "02:00:00:00:01:02"
CLIENT_MAC = "02:00:00:00:01:01"
REAL_MAC = "02:00:00:00:01:11"
CLIENT6, VIP6, VIP6B, OTHER6 = ("fd00:0:0:1::1", "fd00:0:0:1::100",
                                "fd00:0:0:1::101", "fd00:0:0:1::7")
SNMC = "ff02::1:ff00:100"           # VIP6's solicited-node group
SNMC_MAC = "33:33:ff:00:01:00"


def responder(**kw):
    return ndp.NdpResponder(LB_MAC, [VIP6, VIP6B], **kw)


only = only_counter(ndp.COUNTERS)


def ns(target=VIP6, src=CLIENT6, dst=None, eth_src=CLIENT_MAC, eth_dst=None,
       hlim=255, sll=CLIENT_MAC, tag=None, code=0, extra=()):
    """A neighbour solicitation as Linux sends it (scapy sums)."""
    if dst is None:
        dst = str(ndp.solicited_node(target))
    if eth_dst is None:
        eth_dst = ndp.multicast_mac(dst) if ipaddress.IPv6Address(
            dst).is_multicast else LB_MAC
    frame = Ether(dst=eth_dst, src=eth_src)
    if tag is not None:
        frame = frame / tag
    pkt = frame / IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NS(
        tgt=target, code=code)
    if sll:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=sll)
    for opt in extra:
        pkt = pkt / opt
    return bytes(pkt)


def na(target=VIP6, tll=REAL_MAC, eth_src=REAL_MAC, dst="ff02::1", S=0,
       O=1, hlim=255):
    pkt = (Ether(dst=ndp.multicast_mac(dst) if dst.startswith("ff")
                 else LB_MAC, src=eth_src)
           / IPv6(src=CLIENT6 if eth_src != REAL_MAC else "fd00:0:0:1::11",
                  dst=dst, hlim=hlim)
           / ICMPv6ND_NA(tgt=target, S=S, O=O, R=0))
    if tll:
        pkt = pkt / ICMPv6NDOptDstLLAddr(lladdr=tll)
    return bytes(pkt)


def echo(dst=VIP6, src=CLIENT6, tag=None, payload=bytes(range(56)),
         tc=0, **kw):
    frame = Ether(dst=LB_MAC, src=CLIENT_MAC)
    if tag is not None:
        frame = frame / tag
    return bytes(frame / IPv6(src=src, dst=dst, hlim=64, tc=tc)
                 / ICMPv6EchoRequest(id=0x1234, seq=7, **kw)
                 / Raw(payload))


def sum_ok(pkt):
    """scapy's own ICMPv6 checksum agrees with the one in pkt."""
    ip = pkt[IPv6]
    raw = bytes(ip.payload)
    assert in6_chksum(58, ip, raw) == 0, pkt.command()
    return True


def check_na(out, *, target, dst, eth_dst, solicited, tag=None):
    assert out is not None
    pkt = Ether(out)
    desc = "\n got: " + pkt.command()
    assert pkt.src == LB_MAC and pkt.dst == eth_dst, desc
    if tag is not None:
        assert pkt.type == tag[0], desc
        assert bytes(out)[14:16] == tag[1].to_bytes(2, "big"), desc
    ip = pkt[IPv6]
    assert (ip.version, ip.hlim, ip.nh, ip.plen) == (6, 255, 58, 32), desc
    assert (ip.src, ip.dst) == (target, dst), desc
    a = pkt[ICMPv6ND_NA]
    assert (a.type, a.code, a.R, a.S, a.O, a.tgt) == \
        (136, 0, 0, int(solicited), 1, target), desc
    opt = pkt[ICMPv6NDOptDstLLAddr]
    assert (opt.type, opt.len, opt.lladdr) == (2, 1, LB_MAC), desc
    assert sum_ok(pkt)
    again = Ether(out)
    del again[ICMPv6ND_NA].cksum
    assert Ether(bytes(again))[ICMPv6ND_NA].cksum == a.cksum, desc


# --- neighbour solicitations ------------------------------------------------

def test_ns_for_a_vip_is_answered_to_the_solicitor():
    r = responder()
    out = r.handle(ns())
    check_na(out, target=VIP6, dst=CLIENT6, eth_dst=CLIENT_MAC,
             solicited=True)
    only(r.counters, "answered")
    assert r.conflicts == {}


def test_reply_goes_to_the_source_link_layer_option():
    other = "02:00:00:00:01:99"
    out = responder().handle(ns(sll=other))
    check_na(out, target=VIP6, dst=CLIENT6, eth_dst=other, solicited=True)


def test_unicast_ns_without_option_goes_to_the_frame_source():
    # neighbour unreachability detection: unicast to the VIP, no option
    r = responder()
    out = r.handle(ns(dst=VIP6, eth_dst=LB_MAC, sll=None))
    check_na(out, target=VIP6, dst=CLIENT6, eth_dst=CLIENT_MAC,
             solicited=True)
    only(r.counters, "answered")


def test_second_vip_answered():
    out = responder().handle(ns(target=VIP6B))
    check_na(out, target=VIP6B, dst=CLIENT6, eth_dst=CLIENT_MAC,
             solicited=True)


def test_dad_probe_answered_to_all_nodes_with_s_clear():
    r = responder(clock=Clock(5.0))
    out = r.handle(ns(src="::", sll=None, eth_src=REAL_MAC))
    check_na(out, target=VIP6, dst="ff02::1", eth_dst="33:33:00:00:00:01",
             solicited=False)
    only(r.counters, "dad_answered")
    # someone tried to configure the VIP: recorded
    assert r.conflicts == {ipaddress.IPv6Address(VIP6): {REAL_MAC: 5.0}}


@pytest.mark.parametrize("tag,tpid", [
    (Dot1Q(vlan=42, prio=5), 0x8100), (Dot1AD(vlan=7), 0x88a8)])
def test_vlan_tag_kept(tag, tpid):
    tci = bytes(tag)[:2]
    out = responder().handle(ns(tag=tag))
    check_na(out, target=VIP6, dst=CLIENT6, eth_dst=CLIENT_MAC,
             solicited=True, tag=(tpid, int.from_bytes(tci, "big")))


def test_other_options_are_skipped():
    out = responder().handle(ns(extra=[ICMPv6NDOptMTU(mtu=1500)]))
    assert out is not None


@pytest.mark.parametrize("frame,why", [
    (ns(target=OTHER6), "not_vip"),
    (ns(hlim=64), "bad_hop_limit"),
    (ns(hlim=254), "bad_hop_limit"),
    (ns(code=1), "invalid"),
    (ns(target="ff02::1", dst="ff02::1:ff00:1"), "invalid"),
    (ns(src="::"), "invalid"),                      # DAD with an option
    (ns(src="::", sll=None, dst=VIP6, eth_dst=LB_MAC), "invalid"),
    (ns(dst="ff02::1"), "invalid"),                 # not the target's group
    (ns(dst="ff02::1:ff00:101"), "invalid"),        # another's group
    (ns(dst=OTHER6, eth_dst=LB_MAC), "invalid"),
    (ns(eth_src=LB_MAC, sll=LB_MAC), "bad_source"),  # our own, looped
    (ns(sll="01:00:5e:00:00:01"), "bad_source"),
    (ns(sll="00:00:00:00:00:00"), "bad_source"),
])
def test_ns_not_answered(frame, why):
    r = responder()
    assert r.handle(frame) is None
    only(r.counters, why)


def test_zero_length_option_is_invalid():
    f = bytearray(ns(sll=None, extra=[Raw(b"\x01\x00" + b"\0" * 6)]))
    # fix the checksum scapy computed over the bad option: it is right
    r = responder()
    assert r.handle(bytes(f)) is None
    only(r.counters, "invalid")


def test_option_longer_than_message_is_invalid():
    r = responder()
    assert r.handle(ns(sll=None, extra=[Raw(b"\x01\x02" + b"\0" * 6)])) \
        is None
    only(r.counters, "invalid")


def test_bad_lladdr_length_is_invalid():
    r = responder()
    assert r.handle(ns(sll=None, extra=[Raw(b"\x01\x02" + b"\0" * 14)])) \
        is None
    only(r.counters, "invalid")


def test_bad_checksum():
    f = bytearray(ns())
    f[14 + 40 + 2] ^= 0xff
    r = responder()
    assert r.handle(bytes(f)) is None
    only(r.counters, "bad_checksum")


def test_ns_from_a_vip_by_another_mac_is_a_conflict():
    # a real server soliciting from the VIP would teach the client its MAC
    r = responder(clock=Clock(7.0))
    assert r.handle(ns(target=CLIENT6, src=VIP6, eth_src=REAL_MAC,
                       sll=REAL_MAC)) is None
    only(r.counters, "conflicts")
    assert r.conflicts == {ipaddress.IPv6Address(VIP6): {REAL_MAC: 7.0}}


# --- neighbour advertisements: conflicts ------------------------------------

def test_na_for_a_vip_from_another_mac_is_a_conflict():
    r = responder(clock=Clock(9.0))
    assert r.handle(na()) is None
    only(r.counters, "conflicts")
    assert r.conflicts == {ipaddress.IPv6Address(VIP6): {REAL_MAC: 9.0}}
    r.update_vips([VIP6B])
    assert r.conflicts == {}


def test_our_own_na_is_no_conflict():
    r = responder()
    assert r.handle(ndp.unsolicited_na(LB_MAC, VIP6)) is None
    only(r.counters, "not_handled")
    assert r.conflicts == {}


@pytest.mark.parametrize("frame,why", [
    (na(target=OTHER6), "not_vip"),
    (na(hlim=1), "bad_hop_limit"),
    (na(S=1), "invalid"),           # solicited, to a multicast address
])
def test_na_not_a_conflict(frame, why):
    r = responder()
    assert r.handle(frame) is None
    only(r.counters, why)
    assert r.conflicts == {}


# --- the announcement --------------------------------------------------------

def test_unsolicited_na():
    out = ndp.unsolicited_na(LB_MAC, VIP6)
    check_na(out, target=VIP6, dst="ff02::1", eth_dst="33:33:00:00:00:01",
             solicited=False)
    tagged = ndp.unsolicited_na(LB_MAC, VIP6, vlan=12)
    check_na(tagged, target=VIP6, dst="ff02::1",
             eth_dst="33:33:00:00:00:01", solicited=False, tag=(0x8100, 12))


def test_builders_refuse_bad_values():
    with pytest.raises(ConfigError):
        ndp.unsolicited_na(LB_MAC, "10.0.0.100")
    with pytest.raises(ConfigError):
        ndp.unsolicited_na("nope", VIP6)
    with pytest.raises(ConfigError):
        ndp.unsolicited_na(LB_MAC, VIP6, vlan=70000)


def test_solicited_node_and_multicast_mac():
    assert str(ndp.solicited_node(VIP6)) == SNMC
    assert str(ndp.solicited_node("fd00::12:3456:789a")) == "ff02::1:ff56:789a"
    assert ndp.multicast_mac(SNMC) == mac_to_bytes("33:33:ff:00:01:00")


# --- echo -------------------------------------------------------------------

def test_echo_request_to_a_vip_answered():
    r = responder()
    req = echo(tc=0xb9)
    out = r.handle(req)
    pkt, rq = Ether(out), Ether(req)
    desc = pkt.command()
    assert pkt.src == LB_MAC and pkt.dst == CLIENT_MAC, desc
    ip = pkt[IPv6]
    assert (ip.src, ip.dst, ip.hlim, ip.nh, ip.tc, ip.fl) == \
        (VIP6, CLIENT6, 64, 58, 0xb8, 0), desc
    rep = pkt[ICMPv6EchoReply]
    assert (rep.type, rep.code, rep.id, rep.seq) == (129, 0, 0x1234, 7), desc
    assert bytes(rep)[8:] == bytes(rq[ICMPv6EchoRequest])[8:], desc
    assert sum_ok(pkt)
    only(r.counters, "echo_answered")


def test_echo_behind_extension_headers_and_tagged():
    frame = bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / Dot1Q(vlan=3)
                  / IPv6(src=CLIENT6, dst=VIP6) / IPv6ExtHdrHopByHop()
                  / IPv6ExtHdrDestOpt() / ICMPv6EchoRequest(data=b"hi"))
    out = responder().handle(frame)
    pkt = Ether(out)
    assert pkt[Dot1Q].vlan == 3 and pkt[IPv6].nh == 58, pkt.command()
    assert pkt[ICMPv6EchoReply].data == b"hi"
    assert sum_ok(pkt)


def test_echo_rate_limited():
    t = Clock()
    r = responder(rate=1, burst=2, monotonic=t)
    assert [r.handle(echo()) is not None for _ in range(3)] == \
        [True, True, False]
    t.now += 1.0
    assert r.handle(echo()) is not None
    assert r.counters["echo_answered"] == 3
    assert r.counters["rate_limited"] == 1


@pytest.mark.parametrize("frame,why", [
    (echo(dst=OTHER6), "not_vip"),
    (echo(src="ff02::1"), "bad_source"),
    (echo(src="::1"), "bad_source"),
    (echo(code=1), "not_handled"),
    (bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / IPv6(src=CLIENT6, dst=VIP6)
           / ICMPv6EchoReply()), "not_handled"),
    (bytes(Ether(dst="33:33:00:00:00:02", src=CLIENT_MAC)
           / IPv6(src=CLIENT6, dst="ff02::2", hlim=255) / ICMPv6ND_RS()),
     "not_handled"),
    (bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / IPv6(src=CLIENT6, dst=VIP6)
           / UDP(dport=53)), "not_handled"),
    (bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / IPv6(src=CLIENT6, dst=VIP6)
           / IPv6ExtHdrFragment(m=1) / ICMPv6EchoRequest()), "fragments"),
    (bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_MAC)
           / ARP(pdst="10.0.0.100")), "not_ipv6"),
    (bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / IP(dst="10.0.0.100")
           / UDP()), "not_ipv6"),
])
def test_not_answered(frame, why):
    r = responder()
    assert r.handle(frame) is None
    only(r.counters, why)


# --- malformed input ---------------------------------------------------------

def test_truncated_frames_never_raise():
    r = responder()
    for base in (ns(), ns(tag=Dot1Q(vlan=1)), echo(), na()):
        for cut in range(len(base)):
            assert r.handle(base[:cut]) is None
    assert r.counters["malformed"] > 0
    assert sum(r.counters.values()) == r.counters["malformed"] + \
        r.counters["invalid"] + r.counters["bad_checksum"] + \
        r.counters["not_ipv6"]


def test_padding_after_the_payload_is_allowed():
    out = responder().handle(ns() + b"\0" * 20)
    assert out is not None


@pytest.mark.parametrize("frame", [
    b"", None, 42, "text", b"\x00" * 13,
    bytes(Ether(dst=LB_MAC, type=0x86dd) / Raw(b"\x40" + b"\0" * 39)),
    bytes(Ether(dst=LB_MAC, type=0x86dd) / IPv6(plen=500, nh=58)),
    bytes(Ether(dst=LB_MAC) / IPv6(src=CLIENT6, dst=VIP6)
          / IPv6ExtHdrDestOpt(len=30) / ICMPv6EchoRequest()),
])
def test_malformed(frame):
    r = responder()
    assert r.handle(frame) is None
    assert r.counters["malformed"] == 1


def test_random_bytes_never_raise():
    rnd = random.Random(6)
    base = ns()
    r = responder()
    for _ in range(3000):
        f = bytearray(base)
        for _ in range(rnd.randint(1, 4)):
            f[rnd.randrange(len(f))] = rnd.randrange(256)
        r.handle(bytes(f[:rnd.randint(0, len(f))]))
    assert sum(r.counters.values()) == 3000


def test_handle_batch_and_vips():
    r = responder()
    out = r.handle_batch([ns(), echo(dst=OTHER6), na(), echo()])
    assert len(out) == 2
    assert r.vips == {ipaddress.IPv6Address(VIP6),
                      ipaddress.IPv6Address(VIP6B)}
    with pytest.raises(ConfigError):
        r.update_vips(["10.0.0.100"])
    assert len(r.vips) == 2
    r.update_vips([])
    assert r.handle(ns()) is None
