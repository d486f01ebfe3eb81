"""pyfwd.neighbours.icmp: echo replies for the VIPs, checked against scapy; every frame
not answered counted by reason; the rate limit on an injected clock.  No
root, no sockets."""

import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Padding, Raw

from pyfwd.neighbours import icmp
from pyfwd.errors import ConfigError

from .responders import Clock, only_counter

LB_MAC = "02:00:00:00:01:02"
CLIENT_MAC = "02:00:00:00:01:01"
CLIENT4, VIP4, VIP4B, OTHER4 = "10.0.0.1", "10.0.0.100", "10.0.0.101", \
    "10.0.0.7"
PAYLOAD = bytes(range(56))


def echo(dst=VIP4, src=CLIENT4, vlan=None, prio=0, payload=PAYLOAD,
         options=None, id=0x1234, seq=7, type=8, code=0, eth_src=CLIENT_MAC,
         **ip_kw):
    """An echo request as ping sends it, built by scapy (checksums right)."""
    frame = Ether(dst=LB_MAC, src=eth_src)
    if vlan is not None:
        frame = frame / Dot1Q(vlan=vlan, prio=prio)
    ip_kw.setdefault("flags", "DF")
    ip = IP(src=src, dst=dst, ttl=63, id=0x4242, **ip_kw)
    if options is not None:
        ip.options = options
    return bytes(frame / ip / ICMP(type=type, code=code, id=id, seq=seq) /
                 Raw(payload))


def responder(**kw):
    return icmp.EchoResponder(LB_MAC, [VIP4, VIP4B], **kw)


only = only_counter(icmp.COUNTERS)


def check_reply(out: bytes, request: bytes):
    """``out`` is the echo reply to ``request``: scapy parses it, its
    checksums are what scapy computes, addresses swapped, data echoed."""
    assert out is not None
    pkt, req = Ether(out), Ether(request)
    desc = f"\n got: {pkt.command()}\n req: {req.command()}"
    assert pkt.src == LB_MAC and pkt.dst == req.src, desc
    ip, rip = pkt[IP], req[IP]
    assert (ip.version, ip.ihl, ip.ttl, ip.proto, ip.frag, ip.flags) == \
        (4, 5, 64, 1, 0, 0), desc
    assert (ip.src, ip.dst) == (rip.dst, rip.src), desc
    assert ip.len == len(ip), desc
    again = IP(bytes(ip))
    del again.chksum
    assert ip.chksum == IP(bytes(again)).chksum, desc
    ic, ric = pkt[ICMP], req[ICMP]
    assert (ic.type, ic.code, ic.id, ic.seq) == (0, 0, ric.id, ric.seq), desc
    data = bytes(rip)[rip.ihl * 4 + 8:rip.len]     # no Ethernet padding
    assert bytes(ip)[28:] == data, desc
    again = ICMP(bytes(ic))
    del again.chksum
    assert ic.chksum == ICMP(bytes(again)).chksum, desc
    assert icmp.checksum(bytes(ic)) == 0 and icmp.checksum(bytes(ip)[:20]) \
        == 0, desc
    assert not pkt.haslayer(Padding), desc
    return pkt


# ---------------------------------------------------------------------------
# the checksum


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff\xff", b"\x01",
                                  bytes(range(255)), b"\xff" * 64,
                                  b"\x00\x00\xff\xff", bytes(1501)])
def test_checksum_matches_scapy(data):
    from scapy.utils import checksum as scapy_checksum
    assert icmp.checksum(data) == scapy_checksum(data)


# ---------------------------------------------------------------------------
# answered


def test_echo_reply():
    r = responder()
    req = echo()
    check_reply(r.handle(req), req)
    only(r.counters, "answered")


def test_reply_to_second_vip_keeps_dscp_clears_ecn():
    req = echo(dst=VIP4B, tos=0xb9)
    pkt = check_reply(responder().handle(req), req)
    assert pkt[IP].src == VIP4B and pkt[IP].tos == 0xb8


def test_vlan_tag_kept():
    req = echo(vlan=42, prio=5)
    pkt = check_reply(responder().handle(req), req)
    assert pkt[Dot1Q].vlan == 42 and pkt[Dot1Q].prio == 5
    assert pkt.type == 0x8100 and pkt[Dot1Q].type == 0x0800


def test_8021ad_tag_kept_one_tag_only():
    """The data plane punts IPv4 under an 802.1ad tag as under 802.1Q (and
    NdpResponder answers both): the reply keeps the TPID and TCI."""
    ip = Ether(echo())[IP]
    req = bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / Dot1AD(vlan=7, prio=3)
                / ip)
    r = responder()
    pkt = check_reply(r.handle(req), req)
    assert pkt.type == 0x88a8 and pkt[Dot1AD].type == 0x0800
    assert pkt[Dot1AD].vlan == 7 and pkt[Dot1AD].prio == 3
    only(r.counters, "answered")
    r = responder()
    assert r.handle(req[:16]) is None                   # tag cut short
    qinq = bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / Dot1AD(vlan=7)
                 / Dot1Q(vlan=42) / ip)
    assert r.handle(qinq) is None                       # one tag, as the
    assert r.counters["malformed"] == 1                 # data plane parses
    assert r.counters["not_ipv4"] == 1


def test_ip_options_accepted_not_echoed():
    from scapy.layers.inet import IPOption_RR
    req = echo(options=[IPOption_RR(routers=["1.2.3.4"])])
    assert Ether(req)[IP].ihl > 5
    check_reply(responder().handle(req), req)      # ihl 5 in the reply


@pytest.mark.parametrize("size", [0, 1, 57, 1472])
def test_payload_sizes(size):
    req = echo(payload=bytes((i * 7) & 0xff for i in range(size)))
    check_reply(responder().handle(req), req)


def test_ethernet_padding_left_out():
    req = bytes(Ether(echo(payload=b"")) / Padding(b"\0" * 18))
    pkt = check_reply(responder().handle(req), req)
    assert len(pkt) == 14 + 28


def test_ip_ids_change_and_input_types():
    r = responder()
    a, b = (Ether(r.handle(f)) for f in (echo(), bytearray(echo())))
    c = r.handle(memoryview(echo()))
    assert a[IP].id != b[IP].id and c is not None


def test_handle_batch_mirrors_arp_responder():
    r = responder()
    arp = bytes(Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") /
                ARP(op=1, psrc=CLIENT4, pdst=VIP4))
    replies = r.handle_batch([echo(seq=1), arp, echo(dst=OTHER4),
                              echo(seq=2)])
    assert [Ether(f)[ICMP].seq for f in replies] == [1, 2]
    assert r.counters["answered"] == 2 and r.counters["not_ipv4"] == 1 \
        and r.counters["not_vip"] == 1


# ---------------------------------------------------------------------------
# not answered, counted


def _set(frame: bytes, offset: int, value: bytes) -> bytes:
    return frame[:offset] + value + frame[offset + len(value):]


IP_AT = 14
ICMP_AT = 34

NOT_ANSWERED = [
    ("not a VIP", echo(dst=OTHER4), "not_vip"),
    ("echo reply", echo(type=0), "not_echo"),
    ("unreachable", echo(type=3, code=3), "not_echo"),
    ("echo with code 1", echo(code=1), "not_echo"),
    ("UDP to a VIP", bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) /
                           IP(src=CLIENT4, dst=VIP4, proto=17) /
                           Raw(bytes(8))), "not_echo"),
    ("ARP", bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / ARP(pdst=VIP4)),
     "not_ipv4"),
    ("ICMPv6 echo", bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) /
                          IPv6(dst="fd00::100") / ICMPv6EchoRequest()),
     "not_ipv4"),
    ("empty", b"", "malformed"),
    ("half an Ethernet header", echo()[:10], "malformed"),
    ("tag cut short", echo(vlan=3)[:16], "malformed"),
    ("IP header cut short", echo()[:IP_AT + 19], "malformed"),
    ("ICMP header cut short", bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) /
                                    IP(src=CLIENT4, dst=VIP4, proto=1) /
                                    Raw(b"\x08\0\xf7\xff")), "malformed"),
    ("frame shorter than total length", echo()[:-1], "malformed"),
    ("IHL 4", echo(ihl=4), "malformed"),
    ("IHL 0", echo(ihl=0), "malformed"),
    ("IHL past the total length", echo(ihl=15, len=40), "malformed"),
    ("total length < IHL", echo(len=19), "malformed"),
    ("version 6 in an IPv4 ethertype", echo(version=6), "malformed"),
    ("IP checksum wrong", echo(chksum=0x1234), "bad_checksum"),
    ("ICMP checksum wrong", _set(echo(), ICMP_AT + 2, b"\x12\x34"),
     "bad_checksum"),
    ("first fragment", echo(flags="MF"), "fragments"),
    ("later fragment", echo(frag=100), "fragments"),
    ("fragment, not ICMP", bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) /
                                 IP(src=CLIENT4, dst=VIP4, proto=17,
                                    frag=8) / Raw(bytes(8))), "fragments"),
    ("from 0.0.0.0", echo(src="0.0.0.0"), "bad_source"),
    ("from broadcast", echo(src="255.255.255.255"), "bad_source"),
    ("from multicast", echo(src="224.0.0.1"), "bad_source"),
    ("from loopback", echo(src="127.0.0.1"), "bad_source"),
    ("from a multicast MAC", echo(eth_src="01:00:5e:00:00:01"),
     "bad_source"),
]


@pytest.mark.parametrize("frame,why", [c[1:] for c in NOT_ANSWERED],
                         ids=[c[0] for c in NOT_ANSWERED])
def test_not_answered(frame, why):
    r = responder()
    assert r.handle(frame) is None
    only(r.counters, why)


@pytest.mark.parametrize("junk", [None, 42, "text", object(), [1, 2]])
def test_not_bytes_never_raises(junk):
    r = responder()
    assert r.handle(junk) is None
    only(r.counters, "malformed")


def test_every_truncation_never_raises():
    r = responder()
    for frame in (echo(), echo(vlan=9), echo(options=[])):
        for n in range(len(frame)):
            assert r.handle(frame[:n]) is None
    assert r.counters["answered"] == 0
    assert sum(r.counters.values()) == r.counters["malformed"]


def test_random_bytes_never_raise():
    import random
    rnd = random.Random(7)
    r = responder()
    base = echo()
    for _ in range(2000):
        f = bytearray(base)
        for _ in range(rnd.randrange(1, 6)):
            f[rnd.randrange(len(f))] = rnd.randrange(256)
        r.handle(bytes(f[:rnd.randrange(len(f) + 1)]))
    assert sum(r.counters.values()) == 2000


# ---------------------------------------------------------------------------
# VIPs


def test_update_vips_replaces():
    r = responder()
    r.update_vips([OTHER4])
    assert r.vips == {ipaddress.IPv4Address(OTHER4)}
    assert r.handle(echo()) is None and r.handle(echo(dst=OTHER4))
    r.update_vips(ipaddress.IPv4Address(VIP4))
    assert r.handle(echo()) is not None


def test_bad_vips_refused_nothing_changes():
    r = responder()
    for bad in (["fd00::100"], ["nope"], [VIP4, "10.0.0.300"]):
        with pytest.raises(ConfigError):
            r.update_vips(bad)
    assert r.vips == {ipaddress.IPv4Address(VIP4),
                      ipaddress.IPv4Address(VIP4B)}
    with pytest.raises(ConfigError, match="IPv4"):
        icmp.EchoResponder(LB_MAC, ["fd00::100"])
    with pytest.raises(ConfigError):
        icmp.EchoResponder("nope", [VIP4])


# ---------------------------------------------------------------------------
# the rate limit


def test_rate_limit_holds():
    clock = Clock()
    r = responder(rate=10, burst=5, clock=clock)
    got = [r.handle(echo(seq=i)) is not None for i in range(8)]
    assert got == [True] * 5 + [False] * 3
    clock.now += 0.25                           # 2.5 tokens
    got = [r.handle(echo()) is not None for _ in range(4)]
    assert got == [True, True, False, False]
    clock.now += 100                            # refills to the burst only
    assert sum(r.handle(echo()) is not None for _ in range(10)) == 5
    assert r.counters["answered"] == 12 and r.counters["rate_limited"] == 10


def test_rate_limit_spends_nothing_on_frames_not_answered():
    clock = Clock()
    r = responder(rate=1, burst=1, clock=clock)
    for _ in range(5):
        r.handle(echo(dst=OTHER4))
        r.handle(echo(flags="MF"))
    assert r.handle(echo()) is not None
    assert r.handle(echo()) is None
    assert r.counters["rate_limited"] == 1


def test_rate_limited_frames_cost_no_checksum(monkeypatch):
    """The bucket comes before the checksums: a frame it refuses is never
    summed; one it lets through is (IP header and ICMP message), and a
    bad checksum found then has spent its token."""
    sums = []
    real = icmp.checksum

    def counted(data):
        sums.append(len(data))
        return real(data)

    monkeypatch.setattr(icmp, "checksum", counted)
    clock = Clock()
    r = responder(rate=1, burst=2, clock=clock)
    assert r.handle(echo()) is not None
    assert len(sums) == 4               # 2 checked, 2 for the reply
    del sums[:]
    bad = _set(echo(), ICMP_AT + 2, b"\x12\x34")
    assert r.handle(bad) is None and r.counters["bad_checksum"] == 1
    assert len(sums) == 2               # IP header, then ICMP message
    del sums[:]
    for frame in [echo(), bad, echo(chksum=0x1234)] * 100:
        assert r.handle(frame) is None
    assert sums == []
    assert r.counters == dict(dict.fromkeys(icmp.COUNTERS, 0), answered=1,
                              bad_checksum=1, rate_limited=300)
    clock.now += 1                      # one token: a good frame again
    assert r.handle(echo()) is not None


def test_rate_limit_sustained_and_clock_stepping_back():
    clock = Clock()
    r = responder(rate=128, burst=50, clock=clock)
    req, answered = echo(), 0
    for _ in range(1000):                       # a token every 1/128 s,
        for _ in range(20):                     # 20 requests meanwhile
            answered += r.handle(req) is not None
        clock.now += 1 / 128
    assert answered == 50 + 999
    clock.now -= 50                             # no refill backwards
    assert r.handle(req) is None
    clock.now += 50                             # 1/128 s since the last
    assert r.handle(req) is not None
    assert r.handle(req) is None


def test_defaults():
    b = icmp.TokenBucket()
    assert (b.rate, b.burst) == (icmp.RATE, icmp.BURST) == (100.0, 50)


@pytest.mark.parametrize("rate,burst", [(0, 5), (-1, 5), (float("nan"), 5),
                                        (float("inf"), 5), (True, 5),
                                        ("10", 5), (10, 0), (10, 0.5),
                                        (10, None)])
def test_bad_rate_or_burst(rate, burst):
    with pytest.raises(ConfigError):
        responder(rate=rate, burst=burst)
