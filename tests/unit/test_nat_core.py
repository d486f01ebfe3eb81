"""NAT/SNAT connection tracking in the C core (no root): expiry, TCP
states, a full table, a full SNAT port range, many flows across reals."""

import collections

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pyfwd.dataplane.core import Core
from pyfwd.model import Real, Service

from ..cases import nat_defs as nd

WEB, DNS = nd.WEB, nd.DNS
REALS, MACS, OUT_IFS = nd.POOL, nd.POOL_MACS, nd.POOL_OUT_IFS


def core_with(mode="nat", flows=1 << 12, **kw):
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=flows, **kw)
    core.set_snat(Real(nd.SNAT).address, (61000, 61999))
    core.publish_services([Service(WEB, list(REALS), "maglev", mode),
                           Service(DNS, [Real.parse("192.168.50.11")],
                                   "wrr", mode)], MACS, OUT_IFS)
    return core


def syn(sport, flags="S"):
    return bytes(Ether(dst=nd.OUT_MAC, src=nd.CLIENT_MAC)
                 / IP(src=nd.CLIENT, dst=nd.VIP)
                 / TCP(sport=sport, dport=80, flags=flags))


def query(sport):
    return bytes(Ether(dst=nd.OUT_MAC, src=nd.CLIENT_MAC)
                 / IP(src=nd.CLIENT, dst=nd.VIP) / UDP(sport=sport, dport=53))


def answer(frame_out, flags="SA"):
    """The real server's answer to a frame the core sent it."""
    p = Ether(frame_out)
    l4 = (TCP(sport=p[TCP].dport, dport=p[TCP].sport, flags=flags)
          if p.haslayer(TCP) else UDP(sport=p[UDP].dport,
                                      dport=p[UDP].sport))
    return bytes(Ether(dst=p.src, src=p.dst)
                 / IP(src=p[IP].dst, dst=p[IP].src) / l4)


def flows_alive(core):
    core.expire()
    return sum(core.flows().values())


def test_many_connections_spread_and_translate_both_ways():
    core = core_with()
    outs, results = core.process([syn(p) for p in range(20000, 21000)])
    assert all(r.reason == "forward" for r in results)
    dests = collections.Counter(Ether(o)[IP].dst for o in outs)
    assert len(dests) == 3 and min(dests.values()) > 200
    assert {Ether(o)[TCP].dport for o in outs} == {8080}
    back, rres = core.process([answer(o) for o in outs], in_if=1)
    assert all(r.reason == "forward_reply" for r in rres)
    assert {(Ether(b)[IP].src, Ether(b)[TCP].sport) for b in back} == {
        (nd.VIP, 80)}
    assert [Ether(b)[TCP].dport for b in back] == list(range(20000, 21000))
    assert flows_alive(core) == 1000


def test_idle_udp_flow_expires():
    core = core_with(udp_timeout=30)
    core.set_clock(100)
    core.process([query(5000)])
    assert flows_alive(core) == 1
    core.set_clock(129)
    assert flows_alive(core) == 1
    core.set_clock(131)
    assert flows_alive(core) == 0
    # Its answer now belongs to no flow.
    _, [r] = core.process([bytes(Ether(dst=nd.IN_MAC, src="02:00:00:00:02:11")
                                 / IP(src="192.168.50.11", dst=nd.CLIENT)
                                 / UDP(sport=53, dport=5000))], in_if=1)
    assert r.reason == "drop_no_flow"     # steered to us: not the kernel's


def test_tcp_states_set_the_timeouts():
    core = core_with(tcp_syn_timeout=5, tcp_timeout=900, tcp_fin_timeout=10)
    core.set_clock(100)
    [out], _ = core.process([syn(1111)])
    core.set_clock(106)                 # SYN never answered: gone after 5 s
    assert flows_alive(core) == 0
    [out], _ = core.process([syn(2222)])
    core.process([answer(out)], in_if=1)  # answered,
    core.process([syn(2222, "A")])      # and the client's ACK: established
    core.set_clock(800)
    assert flows_alive(core) == 1
    core.process([syn(2222, "FA")])     # closing
    core.set_clock(809)
    assert flows_alive(core) == 1
    core.set_clock(811)
    assert flows_alive(core) == 0


def test_expired_snat_flows_give_their_ports_back():
    core = core_with("snat", udp_timeout=10)
    core.set_clock(100)
    core.process([query(p) for p in range(3000, 3100)])
    assert core.stats()["snat_ports_used"] == 100
    core.set_clock(200)
    # Each burst sweeps 64 slots: 70 bursts go round the 4096-slot table.
    for p in range(4000, 4070):
        core.process([query(p)])
    s = core.stats()
    assert s["flows_new"] == 170
    assert s["flows_expired"] == 100
    assert s["snat_ports_used"] == 70


def test_full_table_drops_new_flows_and_keeps_established_ones():
    core = core_with(flows=64)
    first, res = core.process([syn(p) for p in range(30000, 30010)])
    assert all(r.reason == "forward" for r in res)
    core.process([answer(o) for o in first], in_if=1)
    core.process([syn(p, "A") for p in range(30000, 30010)])  # established
    # New flows push half-open ones out (each other's) before any drop...
    _, res = core.process([syn(p) for p in range(31000, 31200)])
    assert all(r.reason == "forward" for r in res)
    assert core.stats()["flows_evicted"] > 100
    # ...and are dropped when the table holds established flows only.
    reasons = collections.Counter()
    for p in range(32000, 32200):
        [o], [r] = core.process([syn(p)])
        reasons[r.reason] += 1
        if r.reason == "forward":
            core.process([answer(o)], in_if=1)
            core.process([syn(p, "A")])
    assert reasons["drop_table_full"] > 100, reasons
    assert core.stats()["reason"]["drop_table_full"] == \
        reasons["drop_table_full"]
    # The established ten still go both ways.
    again, res = core.process([syn(p, "A") for p in range(30000, 30010)])
    assert all(r.reason == "forward" for r in res)
    _, res = core.process([answer(o, "A") for o in again], in_if=1)
    assert all(r.reason == "forward_reply" for r in res)


def test_snat_port_range_full():
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=1 << 12)
    core.set_snat(Real(nd.SNAT).address, (62000, 62009))
    core.publish_services([Service(WEB, list(REALS), "maglev", "snat")],
                          MACS, OUT_IFS)
    # established flows hold their ports (half-open ones give theirs up:
    # tests/cases/test_tcp_states.py)
    outs, res = core.process([syn(p) for p in range(100, 110)])
    core.process([answer(o) for o in outs], in_if=1)
    core.process([syn(p, "A") for p in range(100, 110)])
    _, res2 = core.process([syn(p) for p in range(110, 130)])
    reasons = collections.Counter(r.reason for r in res + res2)
    assert reasons == {"forward": 10, "drop_ports_full": 20}
    assert core.stats()["snat_ports_used"] == 10


def test_snat_settings_are_checked():
    import pytest
    from pyfwd.errors import ConfigError, DataplaneError
    core = core_with("snat")
    with pytest.raises(ConfigError, match="62000-61000"):
        core.set_snat(Real(nd.SNAT).address, (62000, 61000))
    core.process([syn(5)])
    with pytest.raises(DataplaneError):     # ports are in use
        core.set_snat(Real(nd.SNAT).address, (1000, 2000))


def _sums_ok(frame):
    """Whether the IP and TCP/UDP checksums of frame are right (scapy
    recomputes them; a UDP sum of 0 means none and stays 0)."""
    p = Ether(frame)
    fresh = p.copy()
    del fresh[IP].chksum
    l4 = TCP if p.haslayer(TCP) else UDP
    if l4 is TCP or p[UDP].chksum:
        del fresh[l4].chksum
    fresh = Ether(bytes(fresh))
    return (p[IP].chksum == fresh[IP].chksum
            and p[l4].chksum == fresh[l4].chksum)


def test_translated_checksums_random_tuples():
    # The incremental checksum update (RFC 1624) against scapy's, over
    # addresses and ports that make every carry happen, both ways.
    import random
    rng = random.Random(8)
    for mode in ("nat", "snat"):
        core = core_with(mode, flows=1 << 14)
        frames = []
        for _ in range(900):         # the SNAT range has 1000 ports
            src = ".".join(str(rng.randint(1, 254)) for _ in range(4))
            payload = bytes(rng.randrange(256)
                            for _ in range(rng.randint(0, 9)))
            ip = IP(src=src, dst=nd.VIP, ttl=rng.randint(2, 255),  # 1: expired
                    id=rng.randrange(65536))
            if rng.random() < 0.5:
                l4 = TCP(sport=rng.randint(1, 65535), dport=80,
                         seq=rng.randrange(1 << 32), flags="S")
            else:
                l4 = UDP(sport=rng.randint(1, 65535), dport=53)
            f = Ether(dst=nd.OUT_MAC, src=nd.CLIENT_MAC) / ip / l4 / payload
            if l4.name == "UDP" and rng.random() < 0.2:
                f[UDP].chksum = 0
            frames.append(bytes(f))
        outs, res = core.process(frames)
        assert {r.reason for r in res} == {"forward"}, mode
        assert all(_sums_ok(o) for o in outs)
        back, bres = core.process([answer(o) for o in outs], in_if=1)
        assert all(r.reason == "forward_reply" for r in bres)
        assert all(_sums_ok(b) for b in back)
