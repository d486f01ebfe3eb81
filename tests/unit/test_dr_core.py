"""The DR core's flow table and scheduling, through Core.process (no root):
flows keep their real server across table swaps, drain and halt, expiry,
a full table, punts."""

import collections

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from pyfwd.dataplane.core import Core
from pyfwd.model import Real, Service, Vip
from pyfwd.frames import mac_to_bytes

from ..cases import defs

VIP = Vip.parse("10.0.0.100:80/tcp")
UVIP = Vip.parse("10.0.0.100:53/udp")
MACS = {Real(f"10.0.0.{10 + i}").address: bytes([2, 0, 0, 0, 1, 0x10 + i])
        for i in range(1, 6)}
MAC_NAME = {mac: f"real{i}" for i, mac in
            enumerate(MACS.values(), start=1)}


def reals(*spec):
    """reals("1@1", "2@3") -> [Real 10.0.0.11 weight 1, 10.0.0.12 w 3]."""
    out = []
    for s in spec:
        n, w = s.split("@")
        out.append(Real(f"10.0.0.{10 + int(n)}", weight=int(w)))
    return out


def seg(sport, flags="A", vip=VIP):
    l4 = (TCP(sport=sport, dport=vip.port, flags=flags)
          if vip.protocol == "tcp" else UDP(sport=sport, dport=vip.port))
    return bytes(Ether(dst=defs.LB_MAC, src=defs.CLIENT_MAC)
                 / IP(src=defs.CLIENT4, dst=str(vip.address)) / l4)


def where(core, frames):
    """Which real each frame went to (None if not forwarded)."""
    outs, results = core.process(frames)
    return [MAC_NAME.get(o[:6]) if r.verdict == "forward" else None
            for o, r in zip(outs, results)]


def make(scheduler="maglev", spec=("1@1", "2@1", "3@1"), **kw):
    core = Core(mac=defs.LB_MAC, flows=1 << 14, **kw)
    core.publish_services([Service(VIP, reals(*spec), scheduler)], MACS)
    return core


def test_dr_rewrites_only_the_macs():
    core = make(spec=("1@1",))
    frame = seg(40000, "S")
    [out], [r] = core.process([frame])
    assert r.verdict == "forward"
    assert out[:6] == MACS[Real("10.0.0.11").address]
    assert out[6:12] == mac_to_bytes(defs.LB_MAC)
    assert out[12:] == frame[12:]


def test_established_flows_keep_their_real_across_table_swaps():
    core = make()
    ports = range(20000, 20600)
    first = where(core, [seg(p, "S") for p in ports])
    assert set(first) == {"real1", "real2", "real3"}
    # Add two reals and change every weight: the new table differs a lot.
    core.publish_services([Service(VIP, reals("1@5", "2@1", "3@2", "4@9",
                                              "5@9"))], MACS)
    assert where(core, [seg(p) for p in ports]) == first
    fresh = where(core, [seg(p, "S") for p in range(30000, 30600)])
    assert {"real4", "real5"} <= set(fresh)
    assert core.stats()["flow_hits"] == len(ports)


def test_drain_keeps_flows_and_takes_no_new_ones():
    core = make()
    ports = range(21000, 21300)
    first = where(core, [seg(p, "S") for p in ports])
    core.publish_services([Service(VIP, reals("1@0", "2@1", "3@1"))], MACS)
    assert where(core, [seg(p) for p in ports]) == first
    fresh = where(core, [seg(p, "S") for p in range(31000, 31300)])
    assert "real1" not in fresh and None not in fresh


def test_halt_reschedules_its_flows():
    core = make()
    ports = list(range(22000, 22300))
    first = where(core, [seg(p, "S") for p in ports])
    core.publish_services([Service(VIP, reals("2@1", "3@1"))], MACS)
    after = where(core, [seg(p) for p in ports])
    moved = [a for f, a in zip(first, after) if f == "real1"]
    assert moved and set(moved) <= {"real2", "real3"}
    kept = [(f, a) for f, a in zip(first, after) if f != "real1"]
    assert all(f == a for f, a in kept)
    assert core.stats()["flows_rescheduled"] == len(moved)


def test_wrr_spreads_new_flows_exactly_by_weight():
    core = make("wrr", ("1@1", "2@2", "3@3"))
    got = collections.Counter(where(core, [seg(p, "S")
                                           for p in range(23000, 23600)]))
    assert got == {"real1": 100, "real2": 200, "real3": 300}


def test_maglev_spreads_new_flows_by_weight():
    core = make("maglev", ("1@1", "2@1", "3@2"))
    n = 4000
    got = collections.Counter(where(core, [seg(p, "S")
                                           for p in range(10000, 10000 + n)]))
    for name, share in (("real1", .25), ("real2", .25), ("real3", .5)):
        assert abs(got[name] / n - share) < 0.05, got


def test_maglev_pick_is_the_same_in_another_core():
    """Two nodes behind ECMP send a flow to the same real."""
    a, b = make(), make()
    frames = [seg(p, "S") for p in range(24000, 24400)]
    assert where(a, frames) == where(b, frames)


def test_real_with_unknown_mac_is_not_scheduled():
    core = Core(mac=defs.LB_MAC, flows=1024)
    macs = dict(MACS)
    macs[Real("10.0.0.11").address] = None
    built = core.publish_services([Service(VIP, reals("1@1", "2@1"))], macs)
    assert "MAC unknown" in built.unscheduled[(VIP, "10.0.0.11")]
    got = set(where(core, [seg(p, "S") for p in range(100, 400)]))
    assert got == {"real2"}


def test_udp_flow_expires_and_is_scheduled_again():
    core = Core(mac=defs.LB_MAC, flows=1024, udp_timeout=30)
    core.publish_services([Service(UVIP, reals("1@1", "2@1", "3@1"))], MACS)
    core.set_clock(1000)
    where(core, [seg(5353, vip=UVIP)])
    core.set_clock(1029)
    where(core, [seg(5353, vip=UVIP)])
    assert core.stats()["flows_new"] == 1
    core.set_clock(1060)
    where(core, [seg(5353, vip=UVIP)])
    assert core.stats()["flows_new"] == 2


def test_tcp_fin_shortens_the_flow_and_a_new_syn_reschedules():
    core = make("wrr", ("1@1", "2@1"), tcp_fin_timeout=10, tcp_timeout=900)
    core.set_clock(100)
    assert where(core, [seg(1234, "S")]) == ["real1"]
    where(core, [seg(1234, "FA")])
    # Port reuse within the FIN timeout: a new connection, a new turn.
    assert where(core, [seg(1234, "S")]) == ["real2"]
    where(core, [seg(1234, "A")])   # the client's ACK: handshake done
    core.set_clock(200)     # the new connection is open: 900 s
    assert where(core, [seg(1234, "A")]) == ["real2"]
    where(core, [seg(1234, "R")])
    core.set_clock(211)     # closed by RST 11 s ago: gone, next one is new
    assert where(core, [seg(1234, "A")]) == ["real1"]
    assert core.stats()["flows_new"] == 3


def test_full_flow_table_evicts_and_counts():
    core = Core(mac=defs.LB_MAC, flows=64)
    core.publish_services([Service(VIP, reals("1@1", "2@1"))], MACS)
    got = where(core, [seg(p, "S") for p in range(40000, 41000)])
    assert None not in got
    s = core.stats()
    assert s["flows_new"] == 1000 and s["flows_evicted"] > 900


def test_flow_counts_per_real():
    core = make("wrr", ("1@1", "2@1"))
    where(core, [seg(p, "S") for p in range(50000, 50010)])
    counts = core.flows()
    ids = {core.ids.get(VIP, f"10.0.0.{n}"): n for n in (11, 12)}
    assert {ids[i]: c for i, c in counts.items() if i in ids} == {11: 5,
                                                                 12: 5}
    rs = core.real_stats()
    assert sum(v["flows_new"] for v in rs.values()) == 10


def test_punted_frames_reach_python():
    core = make()
    who_has = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=defs.CLIENT_MAC)
                    / ARP(op=1, psrc=defs.CLIENT4, pdst="10.0.0.100"))
    core.process([who_has, seg(1, "S"), who_has])
    assert core.drain_punts() == [who_has, who_has]
    assert core.drain_punts() == []


def test_a_ping_flood_leaves_the_punt_ring_room_for_arp():
    """Pings fill the ring up to its last 64 slots (csrc/punt.c); ARP and
    NDP requests still get in, so the VIP's neighbours are answered."""
    from scapy.layers.inet import ICMP, IP
    core = make()
    ping = bytes(Ether(dst=defs.LB_MAC, src=defs.CLIENT_MAC)
                 / IP(src=defs.CLIENT4, dst="10.0.0.100") / ICMP())
    who_has = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=defs.CLIENT_MAC)
                    / ARP(op=1, psrc=defs.CLIENT4, pdst="10.0.0.100"))
    core.process([ping] * 300 + [who_has] * 10)
    got = core.drain_punts(max_frames=512)
    assert got.count(ping) == 192 and got.count(who_has) == 10
    assert core.stats()["punt_overflow"] == 108


def test_punt_ring_overflow_is_counted():
    core = make()
    who_has = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=defs.CLIENT_MAC)
                    / ARP(op=1, psrc=defs.CLIENT4, pdst="10.0.0.100"))
    core.process([who_has] * 300)
    assert len(core.drain_punts(max_frames=512)) == 256
    assert core.stats()["punt_overflow"] == 44
