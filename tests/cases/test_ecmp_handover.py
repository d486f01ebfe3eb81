"""Behind ECMP, a connection's packets may reach another balancer mid-way
(one leaves, one joins, the router rehashes).  That balancer never saw the
SYN: it has no flow entry.  For a DR VIP with Maglev or sh it must send the
segment where the first balancer sent the connection (the same table from
the same inputs, the same hash of the 5-tuple), not drop or reset it; a
mid-connection segment makes a flow that the next segment establishes
(csrc/forward.c: flow_first_state)."""

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pyfwd.dataplane.core import Core
from pyfwd.model import Real, Service
from pyfwd.frames import mac_to_bytes

from . import defs
from .harness import Case, check_case

REALS = ("10.0.0.11", "10.0.0.12", "10.0.0.13")
JOINS = "10.0.0.14"                  # the real added at the same moment
MACS = {Real(a).address: mac_to_bytes(f"02:00:00:00:01:{i + 11:02x}")
        for i, a in enumerate(REALS + (JOINS,))}
PORTS = range(30000, 30200)          # 200 connections


def node(scheduler, reals=REALS):
    """One balancer of the ECMP group: the same config as the others."""
    core = Core(mac=defs.LB_MAC, flows=4096)
    core.publish_services([Service(defs.VIPS[0], [Real(a) for a in reals],
                                   scheduler)], MACS)
    core.set_clock(1000)
    return core


def seg(sport, flags, seq=1000):
    """A segment of client 10.1.X.Y:sport (sh hashes the source address:
    clients differ) to VIP4:80."""
    src = f"10.1.{sport >> 8 & 255}.{sport & 255}"
    return bytes(defs.eth() / IP(src=src, dst=defs.VIP4)
                 / TCP(sport=sport, dport=80, flags=flags, seq=seq,
                       ack=0 if flags == "S" else 5000))


@pytest.mark.parametrize("scheduler", ["maglev", "sh"])
def test_mid_connection_segments_follow_the_table_on_another_node(scheduler):
    a, b = node(scheduler), node(scheduler)
    outs, res = a.process([seg(p, "S") for p in PORTS])
    assert {r.reason for r in res} == {"forward"}
    first = [Ether(o).dst for o in outs]
    assert len(set(first)) == len(REALS)        # spread over every real
    # node b sees the same connections from their 10th segment on
    mid = [seg(p, "PA", 5000) for p in PORTS]
    outs_b, res_b = b.process(mid)
    assert {r.reason for r in res_b} == {"forward"}
    assert [Ether(o).dst for o in outs_b] == first
    s = b.stats()
    assert s["flows_new"] == len(PORTS)         # a flow each, made mid-way
    # the golden frame of one of them: DR, only the MACs change
    p = PORTS[-1]
    [out], [r] = node(scheduler).process([seg(p, "A", 5000)])
    check_case(Case("dr-ecmp-midway", "an ACK of a flow this node never "
                    "saw: by the table, to the connection's real",
                    seg(p, "A", 5000), "forward", vip=0,
                    out=defs.dr(seg(p, "A", 5000), first[-1])), out, r)


def test_maglev_moves_about_one_nth_when_a_real_joins():
    """With a 4th real, Maglev moves ~1/4 of the flows (all to the new
    real); the others keep theirs: what the ECMP lab prints next to the
    measured share."""
    before = [Ether(o).dst for o in node("maglev").process(
        [seg(p, "S") for p in range(20000, 24000)])[0]]
    reals4 = REALS + (JOINS,)
    after = [Ether(o).dst for o in node("maglev", reals4).process(
        [seg(p, "S") for p in range(20000, 24000)])[0]]
    moved = [(x, y) for x, y in zip(before, after) if x != y]
    to_new = [y for _, y in moved if y == "02:00:00:00:01:0e"]
    assert len(to_new) >= 0.99 * len(moved)     # Maglev: near minimal
    assert 0.20 < len(moved) / len(before) < 0.30


def test_nat_mid_connection_segments_follow_the_table_too():
    """NAT: the same choice (a flow pair made from the segment, DNAT to
    the connection's real), and the real's answers through that node go
    back from the VIP.  Behind ECMP a NAT real must send its answers to
    the node that has the pair (its gateway): DR is the mode for N active
    balancers; this only shows the scheduling holds."""
    from . import nat_defs as nd
    inside = ("192.168.50.11", "192.168.50.12", "192.168.50.13")
    macs = {Real(a).address: mac_to_bytes(f"02:00:00:00:02:{i + 0x11:02x}")
            for i, a in enumerate(inside)}
    ifs = {Real(a).address: 1 for a in inside}

    def nat_node():
        core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=4096)
        core.publish_services([Service(nd.WEB, [Real.parse(f"{a}:8080")
                                                for a in inside],
                                       "maglev", "nat")], macs, ifs)
        core.set_clock(1000)
        return core

    def from_client(port, flags):
        return nd.tcp(f"10.1.0.{port % 200 + 1}", port, nd.VIP, 80, flags,
                      nd.OUT_MAC, nd.CLIENT_MAC)

    a, b = nat_node(), nat_node()
    ports = range(40000, 40100)
    first = [Ether(o)[IP].dst for o in
             a.process([from_client(p, "S") for p in ports])[0]]
    assert len(set(first)) == len(inside)
    outs, res = b.process([from_client(p, "PA") for p in ports])
    assert {r.reason for r in res} == {"forward"}
    assert [Ether(o)[IP].dst for o in outs] == first
    assert {Ether(o)[TCP].dport for o in outs} == {8080}
    # the real's answer through b leaves from the VIP:80
    p = ports[0]
    reply = nd.tcp(first[0], 8080, f"10.1.0.{p % 200 + 1}", p, "A",
                   nd.IN_MAC, "02:00:00:00:02:11")
    [out], [r] = b.process([reply], in_if=1)
    assert r.reason == "forward_reply"
    assert (Ether(out)[IP].src, Ether(out)[TCP].sport) == (nd.VIP, 80)
