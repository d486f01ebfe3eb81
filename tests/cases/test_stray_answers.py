"""Stray answers: a TCP/UDP frame from a NAT real's addr:port, or to
SNAT's address and port range, that no flow claims (a real answering a
flow it does not hold, a flow long gone), and an ICMP error quoting what
we would have sent as one.  The steering program sends the engine all of
those (it cannot see flows), so the kernel never has them: the core says
drop_no_flow, from a look-up in the published tables (tables.c
bank_nat_reals), not a scan.  Anything else still passes.  No root."""

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pyfwd.model import Real, Service

from . import nat_defs as nd
from .test_nat_cases import make_core


def reason(core, frame, in_if=0):
    [out], [r] = core.process([frame], in_if=in_if)
    if r.verdict != "forward":
        assert out == frame             # nothing rewritten
    return r.reason


def from_real(src, sport, dst, dport, udp=False):
    l4 = (UDP(sport=sport, dport=dport) if udp
          else TCP(sport=sport, dport=dport, flags="SA"))
    # the SNAT real is outside (slot 0), the NAT reals inside (slot 1)
    lb, mac = ((nd.OUT_MAC, nd.SREAL_MAC) if src == nd.SREAL
               else (nd.IN_MAC, nd.REAL1_MAC))
    return bytes(Ether(dst=lb, src=mac) / IP(src=src, dst=dst) / l4)


def test_nat_real_answer_of_no_flow_is_dropped():
    core = make_core()
    assert reason(core, from_real(nd.REAL1, 8080, nd.CLIENT, 40001),
                  1) == "drop_no_flow"
    # the NAT DNS real answers from 53 (no port translation): its VIP's
    assert reason(core, from_real(nd.REAL2, 53, nd.CLIENT, 5353, udp=True),
                  1) == "drop_no_flow"


def test_other_ports_and_protocols_of_a_real_pass():
    core = make_core()
    # the real's own traffic: not from the served port, or not its proto
    assert reason(core, from_real(nd.REAL1, 22, nd.CLIENT, 40001),
                  1) == "pass_not_vip"
    assert reason(core, from_real(nd.REAL1, 8080, nd.CLIENT, 40001,
                                  udp=True), 1) == "pass_not_vip"
    assert reason(core, from_real(nd.REAL2, 53, nd.CLIENT, 5353),
                  1) == "pass_not_vip"


def test_snat_range_answer_of_no_flow_is_dropped_others_pass():
    core = make_core()
    lo, hi = nd.SNAT_PORTS
    for port in (lo, hi):
        assert reason(core, from_real(nd.SREAL, 8080, nd.SNAT, port)) == \
            "drop_no_flow"
    # the balancer's own connections (below the range) are the kernel's
    assert reason(core, from_real(nd.SREAL, 8080, nd.SNAT, lo - 1)) == \
        "pass_not_vip"
    assert reason(core, from_real(nd.SREAL, 8080, nd.SNAT, hi + 1)) == \
        "pass_not_vip"


def test_icmp_error_quoting_a_stray_is_dropped():
    core = make_core()
    # what we would send a NAT real (client -> real:8080): no flow has it
    sent = bytes(IP(src=nd.CLIENT, dst=nd.REAL1) /
                 TCP(sport=40005, dport=8080, flags="S"))
    err = nd.icmp_err("192.168.50.254", nd.CLIENT, sent, nd.IN_MAC,
                      nd.REAL1_MAC)
    assert reason(core, err, 1) == "drop_no_flow"
    # quoting a packet to some other host: not ours
    other = bytes(IP(src=nd.CLIENT, dst="192.168.50.99") /
                  TCP(sport=40005, dport=8080, flags="S"))
    err = nd.icmp_err("192.168.50.254", nd.CLIENT, other, nd.IN_MAC,
                      nd.REAL1_MAC)
    assert reason(core, err, 1) == "pass_not_vip"


def test_the_look_up_follows_the_published_services():
    core = make_core()
    frame = from_real(nd.REAL1, 8080, nd.CLIENT, 40001)
    assert reason(core, frame, 1) == "drop_no_flow"
    # the NAT web VIP's real now listens on 9090: 8080 is no longer ours
    moved = [Service(nd.WEB, [Real.parse(f"{nd.REAL1}:9090")], "wrr",
                     "nat")] + nd.SERVICES[1:]
    core.publish_services(moved, nd.MACS, nd.OUT_IFS)
    assert reason(core, frame, 1) == "pass_not_vip"
    assert reason(core, from_real(nd.REAL1, 9090, nd.CLIENT, 40001),
                  1) == "drop_no_flow"


def test_counted_as_drops():
    core = make_core()
    reason(core, from_real(nd.REAL1, 8080, nd.CLIENT, 40001), 1)
    s = core.stats()
    assert s["reason"]["drop_no_flow"] == 1
    assert s["reason"]["pass_not_vip"] == 0
