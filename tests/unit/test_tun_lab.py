"""The tun lab (no root): its plan keeps the real servers off the
balancer's segment, behind a router; the demo's capture reads the TCP
header inside an IPIP packet."""

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyfwd.lab import modes as labmodes
from pyfwd.lab.capture import parse_tcp4
from pyfwd.lab.plan import make_plan


def test_the_reals_are_behind_a_router_not_on_the_balancers_segment():
    plan = make_plan("t", "tun", 2)
    lb = plan.node("lb").interfaces[0]
    reals = [plan.node(r).interfaces[0] for r in plan.real_roles]
    assert all(r.switch != lb.switch for r in reals)
    assert plan.node("lb").gateway4 == plan.node("router").interface(
        "eth1").addr4
    assert {r.switch for r in reals} == {plan.node("router").interface(
        "eth2").switch}
    assert plan.node("router").forwarding
    assert labmodes.TOPOLOGY["tun"] == "tun"
    assert labmodes.web_listener("tun").port == labmodes.WHOAMI_PORT


def test_the_capture_reads_tcp_inside_ipip():
    inner = (IP(src="10.0.3.1", dst="10.0.0.100") /
             TCP(sport=40000, dport=8080, flags="PA") / Raw(b"GET /"))
    frame = bytes(Ether() / IP(src="10.0.0.2", dst="10.0.4.11", proto=4)
                  / inner)
    seg = parse_tcp4(frame, len(frame))
    assert (seg.src_ip, seg.dst_ip, seg.sport, seg.dport,
            seg.payload_len) == \
        ("10.0.3.1", "10.0.0.100", 40000, 8080, 5)
    assert parse_tcp4(frame[:14 + 20 + 10]) is None     # cut inside
    assert parse_tcp4(frame, len(frame) - 1) is None    # longer than wire
