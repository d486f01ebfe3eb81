"""pyfwd.neighbours.arp: frames against scapy, and the responder's
decisions.  No root, no sockets."""

import ipaddress
import random

import pytest
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Padding, Raw

from pyfwd.errors import ConfigError
from pyfwd.neighbours import arp
from pyfwd.frames import BROADCAST, ZERO_MAC, mac_to_bytes

LB_MAC = "02:00:00:00:01:02"
CLIENT_MAC = "02:00:00:00:01:01"
REAL_MAC = "02:00:00:00:01:11"
BCAST = "ff:ff:ff:ff:ff:ff"
ZERO = "00:00:00:00:00:00"
CLIENT4, LB4, REAL4, VIP4, VIP4B, OTHER4 = (
    "10.0.0.1", "10.0.0.2", "10.0.0.11", "10.0.0.100", "10.0.0.101",
    "10.0.0.7")
VIP = ipaddress.IPv4Address(VIP4)


def who_has(pdst, psrc=CLIENT4, hwsrc=CLIENT_MAC, vlan=None, prio=0):
    """A broadcast ARP request as a host's kernel sends it, built by scapy."""
    frame = Ether(dst=BCAST, src=hwsrc)
    if vlan is not None:
        frame = frame / Dot1Q(vlan=vlan, prio=prio)
    return bytes(frame / ARP(op=1, hwsrc=hwsrc, psrc=psrc, hwdst=ZERO,
                             pdst=pdst))


def is_at(psrc, hwsrc, pdst=CLIENT4, hwdst=CLIENT_MAC):
    return bytes(Ether(dst=hwdst, src=hwsrc) /
                 ARP(op=2, hwsrc=hwsrc, psrc=psrc, hwdst=hwdst, pdst=pdst))


def same(got: bytes, want: bytes) -> None:
    assert got == want, (f"\n got: {Ether(got).command()}"
                         f"\nwant: {Ether(want).command()}")


# -- building frames: scapy builds the expected ones


def test_build_request_matches_scapy():
    got = arp.build_arp(arp.ARPOP_REQUEST, LB_MAC, LB4, ZERO, REAL4)
    same(got, bytes(Ether(dst=BCAST, src=LB_MAC) /
                    ARP(op=1, hwsrc=LB_MAC, psrc=LB4, hwdst=ZERO,
                        pdst=REAL4)))


def test_build_reply_matches_scapy():
    got = arp.build_arp(2, LB_MAC, ipaddress.ip_address(VIP4),
                        mac_to_bytes(CLIENT_MAC), CLIENT4)
    same(got, is_at(VIP4, LB_MAC))


def test_build_with_vlan_and_explicit_eth_dst():
    tci = (5 << 13) | 42                 # priority 5, VLAN 42
    got = arp.build_arp(1, LB_MAC, LB4, CLIENT_MAC, CLIENT4,
                        eth_dst=BCAST, vlan=tci)
    same(got, bytes(Ether(dst=BCAST, src=LB_MAC) / Dot1Q(prio=5, vlan=42) /
                    ARP(op=1, hwsrc=LB_MAC, psrc=LB4, hwdst=CLIENT_MAC,
                        pdst=CLIENT4)))


def test_gratuitous_is_a_broadcast_request_for_itself():
    got = arp.gratuitous(LB_MAC, VIP4)
    same(got, bytes(Ether(dst=BCAST, src=LB_MAC) /
                    ARP(op=1, hwsrc=LB_MAC, psrc=VIP4, hwdst=ZERO,
                        pdst=VIP4)))
    pkt = arp.parse_arp(arp.gratuitous(LB_MAC, VIP4, vlan=7))
    assert pkt.is_gratuitous and pkt.is_request and pkt.vlan == 7


@pytest.mark.parametrize("kwargs,words", [
    (dict(op=-1), "arp op"),
    (dict(op=True), "arp op"),
    (dict(src_ip="10.0.0.300"), "10.0.0.300"),
    (dict(dst_ip="fd00::1"), "IPv4 only"),
    (dict(src_mac="nope"), "'nope'"),
    (dict(vlan=0x10000), "vlan"),
])
def test_build_errors(kwargs, words):
    args = dict(op=1, src_mac=LB_MAC, src_ip=LB4, dst_mac=ZERO,
                dst_ip=REAL4)
    args.update(kwargs)
    with pytest.raises(ConfigError) as exc:
        arp.build_arp(**args)
    assert words in str(exc.value)


# -- parsing: scapy frames in


def test_parse_request():
    pkt = arp.parse_arp(who_has(VIP4))
    assert pkt == arp.ArpPacket(
        op=1, sha=mac_to_bytes(CLIENT_MAC),
        spa=ipaddress.IPv4Address(CLIENT4), tha=ZERO_MAC, tpa=VIP,
        eth_src=mac_to_bytes(CLIENT_MAC), eth_dst=BROADCAST,
        vlan=None)
    assert pkt.is_request and not pkt.is_reply
    assert not pkt.is_gratuitous and not pkt.is_probe


def test_parse_padded_reply_and_vlan():
    # a NIC pads the 42-byte frame to 60: trailing bytes are fine
    frame = bytes(Ether(is_at(VIP4, REAL_MAC)) / Padding(b"\x00" * 18))
    assert len(frame) == 60
    pkt = arp.parse_arp(frame)
    assert pkt.is_reply and pkt.spa == VIP
    assert pkt.sha == mac_to_bytes(REAL_MAC)
    tagged = arp.parse_arp(who_has(VIP4, vlan=42, prio=3))
    assert tagged.vlan == (3 << 13) | 42 and tagged.tpa == VIP


@pytest.mark.parametrize("op", [1, 2, 3, 4])
@pytest.mark.parametrize("vlan", [None, 100])
def test_round_trip(op, vlan):
    frame = arp.build_arp(op, REAL_MAC, REAL4, CLIENT_MAC, CLIENT4,
                          vlan=vlan)
    pkt = arp.parse_arp(frame)
    again = arp.build_arp(pkt.op, pkt.sha, pkt.spa, pkt.tha, pkt.tpa,
                          eth_dst=pkt.eth_dst, vlan=pkt.vlan)
    assert again == frame
    parsed = Ether(frame)                 # and scapy reads the same thing
    assert parsed[ARP].op == op and parsed[ARP].psrc == REAL4
    assert parsed[ARP].hwdst == CLIENT_MAC
    assert (parsed[Dot1Q].vlan if vlan else None) == vlan


def _eth():
    return Ether(dst=BCAST, src=CLIENT_MAC)


def _arp(**kw):
    fields = dict(op=1, hwsrc=CLIENT_MAC, psrc=CLIENT4, hwdst=ZERO,
                  pdst=VIP4)
    fields.update(kw)
    return ARP(**fields)


def _patched(offset, data):
    """A good who-has VIP with ``data`` written at ``offset``."""
    frame = bytearray(bytes(_eth() / _arp()))
    frame[offset:offset + len(data)] = data
    return bytes(frame)


# explicit fields everywhere: scapy would otherwise look at the host's routes
NOT_ARP = {
    "empty": b"",
    "ipv4": bytes(Ether(dst=BCAST, src=CLIENT_MAC, type=0x0800) /
                  Raw(b"\x45" + b"\x00" * 40)),
    "arp for ipv6 ptype": bytes(_eth() / _arp(ptype=0x86DD, plen=16,
                                              psrc="::1", pdst="::2")),
    "hlen 8": bytes(_eth() / _arp(hwlen=8, hwsrc=b"\x02" * 8,
                                  hwdst=b"\x00" * 8)),
    "htype 6": _patched(14, b"\x00\x06"),
    "plen 16": _patched(19, b"\x10"),
    "qinq": bytes(_eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / _arp()),
    "two 802.1q tags": bytes(_eth() / Dot1Q(vlan=1) / Dot1Q(vlan=2) /
                             _arp()),
    "tag, then ipv4": bytes(_eth() / Dot1Q(vlan=1, type=0x0800) /
                            Raw(b"\x00" * 40)),
}


@pytest.mark.parametrize("name", NOT_ARP)
def test_parse_rejects_what_is_not_ethernet_ipv4_arp(name):
    assert arp.parse_arp(NOT_ARP[name]) is None


@pytest.mark.parametrize("vlan", [None, 9])
def test_parse_rejects_every_truncation(vlan):
    frame = who_has(VIP4, vlan=vlan)
    for n in range(len(frame)):
        assert arp.parse_arp(frame[:n]) is None, n
    assert arp.parse_arp(frame) is not None


@pytest.mark.parametrize("junk", [None, 42, "a string", object()])
def test_parse_never_raises_for_non_bytes(junk):
    assert arp.parse_arp(junk) is None


# -- the responder


@pytest.fixture
def clock():
    now = [1000.0]
    return now


@pytest.fixture
def responder(clock):
    return arp.ArpResponder(LB_MAC, [VIP4, ipaddress.ip_address(VIP4B)],
                            clock=lambda: clock[0])


def check_reply(reply: bytes, vip=VIP4, dst_mac=CLIENT_MAC, dst_ip=CLIENT4,
                vlan=None, prio=0):
    out = Ether(reply)
    why = out.command()
    assert out.dst == dst_mac and out.src == LB_MAC, why
    assert out[ARP].op == 2, why
    assert (out[ARP].hwsrc, out[ARP].psrc) == (LB_MAC, vip), why
    assert (out[ARP].hwdst, out[ARP].pdst) == (dst_mac, dst_ip), why
    if vlan is None:
        assert Dot1Q not in out, why
    else:
        assert (out[Dot1Q].vlan, out[Dot1Q].prio) == (vlan, prio), why


def test_answers_who_has_vip(responder):
    check_reply(responder.handle(who_has(VIP4)))
    check_reply(responder.handle(who_has(VIP4B, psrc=REAL4,
                                         hwsrc=REAL_MAC)),
                vip=VIP4B, dst_mac=REAL_MAC, dst_ip=REAL4)
    assert responder.counters == {"requests_answered": 2, "conflicts": 0,
                                  "ignored": 0}


def test_reply_keeps_the_vlan_tag(responder):
    check_reply(responder.handle(who_has(VIP4, vlan=42, prio=6)),
                vlan=42, prio=6)


def test_answers_an_arp_probe(responder):
    # RFC 5227 probe: sender 0.0.0.0; the reply goes back to its MAC
    check_reply(responder.handle(who_has(VIP4, psrc="0.0.0.0")),
                dst_ip="0.0.0.0")


def test_accepts_memoryview_and_bytearray(responder):
    frame = who_has(VIP4)
    assert responder.handle(memoryview(frame)) is not None
    assert responder.handle(bytearray(frame)) is not None


@pytest.mark.parametrize("frame", [
    who_has(OTHER4),                                   # not a VIP
    who_has(VIP4, psrc=LB4, hwsrc=LB_MAC),             # our own request
    arp.gratuitous(LB_MAC, VIP4),                      # our own announcement
    is_at(VIP4, LB_MAC),                               # our own reply
    is_at(REAL4, REAL_MAC),                            # a reply, not a VIP
    who_has(VIP4, hwsrc="01:00:5e:00:00:01"),          # multicast sender
    who_has(VIP4, hwsrc=ZERO),                         # zero sender
], ids=["other ip", "own request", "own garp", "own reply", "other reply",
        "multicast sha", "zero sha"])
def test_ignores(responder, frame):
    assert responder.handle(frame) is None
    assert responder.counters == {"requests_answered": 0, "conflicts": 0,
                                  "ignored": 1}
    assert responder.conflicts == {}


def test_records_a_conflict_for_another_mac_claiming_the_vip(responder,
                                                             clock):
    # the ARP problem: a real server answers for the VIP
    assert responder.handle(is_at(VIP4, REAL_MAC)) is None
    # ... and announces it (arp_announce=0: its own requests carry the VIP)
    clock[0] = 1005.0
    assert responder.handle(who_has(CLIENT4, psrc=VIP4,
                                    hwsrc=REAL_MAC)) is None
    # another one sends a gratuitous ARP for the other VIP
    other = "02:00:00:00:01:12"
    assert responder.handle(bytes(
        Ether(src=other, dst=BCAST) /
        ARP(op=1, hwsrc=other, psrc=VIP4B, hwdst=ZERO, pdst=VIP4B))) is None
    assert responder.counters == {"requests_answered": 0, "conflicts": 3,
                                  "ignored": 0}
    assert responder.conflicts == {
        VIP: {REAL_MAC: 1005.0},
        ipaddress.IPv4Address(VIP4B): {other: 1005.0}}
    assert REAL_MAC in responder.conflicts[VIP]


def test_a_request_from_a_vip_is_a_conflict_not_answered(responder):
    # who-has VIP asked *from* the other VIP by a foreign MAC: a conflict
    assert responder.handle(who_has(VIP4, psrc=VIP4B,
                                    hwsrc=REAL_MAC)) is None
    assert responder.counters["conflicts"] == 1


def test_update_vips(responder):
    responder.handle(is_at(VIP4B, REAL_MAC))
    assert set(responder.conflicts) == {ipaddress.IPv4Address(VIP4B)}
    responder.update_vips(["10.0.0.102", VIP4])
    assert responder.vips == {VIP, ipaddress.IPv4Address("10.0.0.102")}
    assert responder.conflicts == {}          # VIP4B is gone, so are its
    assert responder.handle(who_has(VIP4B)) is None
    check_reply(responder.handle(who_has("10.0.0.102")), vip="10.0.0.102")
    with pytest.raises(ConfigError):
        responder.update_vips([VIP4, "fd00::100"])
    assert VIP in responder.vips              # unchanged after the error


def test_a_single_vip_string_is_one_vip():
    responder = arp.ArpResponder(mac_to_bytes(LB_MAC), VIP4)
    assert responder.vips == {VIP}


@pytest.mark.parametrize("vips,words", [
    (["fd00::100"], "IPv4 only"), (["10.0.0.999"], "10.0.0.999")])
def test_responder_rejects_bad_vips(vips, words):
    with pytest.raises(ConfigError) as exc:
        arp.ArpResponder(LB_MAC, vips)
    assert words in str(exc.value)


def test_garbage_is_counted_never_raised(responder):
    rng = random.Random(1234)
    frames = [NOT_ARP[name] for name in NOT_ARP]
    good = who_has(VIP4, vlan=3)
    frames += [good[:n] for n in range(len(good))]
    frames += [bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
               for _ in range(500)]
    for _ in range(500):                      # flip bytes of a good frame
        mutated = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        frames.append(bytes(mutated))
    for frame in frames:
        reply = responder.handle(frame)
        if reply is not None:                 # only ever a sane reply
            assert arp.parse_arp(reply).op == 2
    total = sum(responder.counters.values())
    assert total == len(frames)
    assert responder.counters["ignored"] >= len(NOT_ARP) + len(good)


def test_handle_batch(responder):
    replies = responder.handle_batch([who_has(VIP4), b"junk",
                                      who_has(OTHER4), who_has(VIP4B)])
    assert len(replies) == 2
    check_reply(replies[0])
    check_reply(replies[1], vip=VIP4B)
    assert responder.counters["ignored"] == 2
