"""TCP states as a balancer needs them, packet in / packet out on the
core's fixed clock (no root).

A flow made by a SYN is half-open, kept tcp_syn seconds, until the
client's ACK completes the handshake: in DR the client's ACK after its SYN
(DR sees no answer), in NAT/SNAT the client's ACK after the real's
SYN-ACK.  Established, it is kept tcp_established seconds.  A spoofed SYN,
even one the real answers, thus holds its slots and its SNAT port for
tcp_syn, not tcp_established.  flows_half_open counts the half-open flows.
"""

from scapy.layers.inet import IP, TCP

from pyfwd.dataplane.core import Core
from pyfwd.model import Real

from . import defs
from . import nat_defs as nd
from .harness import Case, check_case

SYN_S, EST_S, FIN_S = 30, 900, 10
TIMEOUTS = {"tcp_syn": SYN_S, "tcp_established": EST_S, "tcp_fin": FIN_S}
T0 = 1000


def dr_core():
    core = Core(mac=defs.LB_MAC, flows=4096, timeouts=TIMEOUTS)
    core.publish_services([defs.SERVICES[0]], defs.MACS)   # VIP4:80 -> real1
    return core


def nat_core():
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=4096,
                timeouts=TIMEOUTS)
    core.set_snat(Real(nd.SNAT).address, nd.SNAT_PORTS)    # two ports
    core.publish_services(nd.SERVICES, nd.MACS, nd.OUT_IFS)
    return core


def at(core, seconds, case):
    """case through the core at T0 + seconds; its result checked."""
    core.set_clock(T0 + seconds)
    [out], [result] = core.process([case.frame], in_if=case.in_if)
    check_case(case, out, result)


def alive(core, seconds):
    """(flows alive, half-open ones) at T0 + seconds, the expired swept."""
    core.set_clock(T0 + seconds)
    core.expire()
    return sum(core.flows().values()), core.stats()["flows_half_open"]


# --- DR: only the client's side -------------------------------------------

def dr_seg(flags, sport=40000):
    frame = bytes(defs.eth() / IP(src=defs.CLIENT4, dst=defs.VIP4)
                  / TCP(sport=sport, dport=80, flags=flags, seq=1000,
                        ack=0 if flags == "S" else 5000))
    return Case(f"dr-{flags}", f"client {flags} to VIP4:80 -> real1", frame,
                "forward", vip=0, out=defs.dr(frame, defs.REAL1_MAC))


def test_dr_syn_only_flow_is_half_open_and_expires_after_tcp_syn():
    core = dr_core()
    at(core, 0, dr_seg("S"))
    assert alive(core, 0) == (1, 1)
    at(core, 20, dr_seg("S"))               # a retransmitted SYN: still
    assert alive(core, 20 + SYN_S - 1) == (1, 1)    # half-open, refreshed
    assert alive(core, 20 + SYN_S + 1) == (0, 0)
    s = core.stats()
    assert (s["flows_new"], s["flow_hits"]) == (1, 1)


def test_dr_client_ack_makes_the_flow_established():
    core = dr_core()
    at(core, 0, dr_seg("S"))
    at(core, 1, dr_seg("A"))                # handshake done (DR: no answer)
    assert alive(core, 1) == (1, 0)
    assert alive(core, 1 + SYN_S + 1) == (1, 0)
    assert alive(core, 1 + EST_S - 1) == (1, 0)
    assert alive(core, 1 + EST_S + 1) == (0, 0)


def test_dr_flow_picked_up_under_way_is_established_by_the_next_segment():
    """A first segment without SYN (a restart, a flow another node had) may
    be a connection under way: half-open until the client's next segment,
    then established."""
    core = dr_core()
    at(core, 0, dr_seg("PA"))
    assert alive(core, 0) == (1, 1)
    at(core, 5, dr_seg("A"))
    assert alive(core, 5) == (1, 0)
    assert alive(core, 5 + SYN_S + 1) == (1, 0)
    assert alive(core, 5 + EST_S + 1) == (0, 0)


def test_dr_flow_of_a_lone_late_segment_lives_tcp_syn_not_established():
    """The soak's stragglers: a lone ACK of a connection already gone (cut
    by a fault, its flow expired) made a flow kept tcp_established (900 s);
    now tcp_syn, as a half-open one."""
    core = dr_core()
    at(core, 0, dr_seg("A"))
    assert alive(core, SYN_S - 1) == (1, 1)
    assert alive(core, SYN_S + 1) == (0, 0)
    s = core.stats()
    assert (s["flows_new"], s["flow_hits"]) == (1, 0)


def test_dr_flow_made_by_a_fin_is_closing_at_once():
    core = dr_core()
    at(core, 0, dr_seg("FA"))
    assert alive(core, 0) == (1, 0)
    assert alive(core, FIN_S + 1) == (0, 0)


def test_dr_half_open_flow_closed_by_rst_leaves_the_count():
    core = dr_core()
    at(core, 0, dr_seg("S"))
    at(core, 1, dr_seg("R"))
    assert alive(core, 1) == (1, 0)
    assert alive(core, 1 + FIN_S + 1) == (0, 0)


# --- NAT and SNAT: the client's ACK after the real's SYN-ACK --------------

def nat_steps(flags_from_client, port=40000):
    """The NAT (VIP:80 -> real1:8080, inside) frames of one connection."""
    c = nd.tcp(nd.CLIENT, port, nd.VIP, 80, flags_from_client, nd.OUT_MAC,
               nd.CLIENT_MAC)
    out = nd.tcp(nd.CLIENT, port, nd.REAL1, 8080, flags_from_client,
                 nd.REAL1_MAC, nd.IN_MAC)
    return nd.step(f"nat-{flags_from_client}", "client -> real1:8080", c,
                "forward", vip=0, out=out, out_if=1)


def nat_synack(port=40000):
    sa = nd.tcp(nd.REAL1, 8080, nd.CLIENT, port, "SA", nd.IN_MAC,
                nd.REAL1_MAC)
    out = nd.tcp(nd.VIP, 80, nd.CLIENT, port, "SA", nd.CLIENT_MAC,
                 nd.OUT_MAC)
    return nd.step("nat-synack", "the real's SYN-ACK -> client", sa,
                "forward_reply", out=out, in_if=1, out_if=0)


def test_nat_synack_without_the_clients_ack_expires_after_tcp_syn():
    core = nat_core()
    at(core, 0, nat_steps("S"))
    at(core, 1, nat_synack())               # the real answered a spoofed
    assert alive(core, 1) == (1, 1)         # SYN: still half-open
    assert alive(core, 1 + SYN_S - 1) == (1, 1)
    assert alive(core, 1 + SYN_S + 1) == (0, 0)
    assert core.stats()["flows_expired"] == 1
    # the real's late retransmission belongs to no flow any more
    late = nat_synack()
    at(core, 1 + SYN_S + 2, nd.step("nat-late-synack", "no flow: dropped",
                                 late.frame, "drop_no_flow", in_if=1))


def test_nat_ack_before_the_reals_answer_does_not_establish():
    core = nat_core()
    at(core, 0, nat_steps("S"))
    at(core, 1, nat_steps("A"))             # a spoofer's blind ACK
    assert alive(core, 1) == (1, 1)
    assert alive(core, 1 + SYN_S + 1) == (0, 0)


def test_nat_full_handshake_makes_the_flow_established():
    core = nat_core()
    at(core, 0, nat_steps("S"))
    at(core, 1, nat_synack())
    at(core, 2, nat_steps("A"))             # the client's ACK
    assert alive(core, 2) == (1, 0)
    assert alive(core, 2 + EST_S - 1) == (1, 0)
    at(core, 2 + EST_S - 1, nat_steps("PA"))    # traffic refreshes it
    assert alive(core, 2 + 2 * EST_S - 3) == (1, 0)
    assert alive(core, 2 + 2 * EST_S) == (0, 0)


def snat_syn(port, snat_port):
    c = nd.tcp(nd.CLIENT, port, nd.SVIP, 80, "S", nd.OUT_MAC, nd.CLIENT_MAC)
    out = nd.tcp(nd.SNAT, snat_port, nd.SREAL, 8080, "S", nd.SREAL_MAC,
                 nd.OUT_MAC)
    return nd.step(f"snat-syn-{port}", f"SYN -> from our port {snat_port}", c,
                "forward", vip=2, out=out, out_if=0)


def snat_synack(port, snat_port):
    sa = nd.tcp(nd.SREAL, 8080, nd.SNAT, snat_port, "SA", nd.OUT_MAC,
                nd.SREAL_MAC)
    out = nd.tcp(nd.SVIP, 80, nd.CLIENT, port, "SA", nd.CLIENT_MAC,
                 nd.OUT_MAC)
    return nd.step(f"snat-synack-{snat_port}", "the real's SYN-ACK -> client",
                sa, "forward_reply", out=out, out_if=0)


def snat_ack(port, snat_port, flags="A"):
    c = nd.tcp(nd.CLIENT, port, nd.SVIP, 80, flags, nd.OUT_MAC,
               nd.CLIENT_MAC)
    out = nd.tcp(nd.SNAT, snat_port, nd.SREAL, 8080, flags, nd.SREAL_MAC,
                 nd.OUT_MAC)
    return nd.step(f"snat-{flags}-{port}", f"client {flags} from our port",
                c, "forward", vip=2, out=out, out_if=0)


def test_snat_half_open_flows_give_their_ports_back_after_tcp_syn():
    p0, p1 = nd.SNAT_PORTS
    core = nat_core()
    # Two spoofed SYNs, both answered, take both source ports...
    at(core, 0, snat_syn(40000, p0))
    at(core, 0, snat_syn(40001, p1))
    at(core, 1, snat_synack(40000, p0))
    at(core, 1, snat_synack(40001, p1))
    assert core.stats()["snat_ports_used"] == 2
    assert alive(core, 1) == (2, 2)
    # ...for tcp_syn seconds, not tcp_established.
    assert alive(core, 1 + SYN_S - 1) == (2, 2)
    assert alive(core, 1 + SYN_S + 1) == (0, 0)
    assert core.stats()["snat_ports_used"] == 0
    # the pool's next port: the one freed first (a FIFO: csrc/core.h)
    at(core, 1 + SYN_S + 2, snat_syn(40002, p0))
    at(core, 1 + SYN_S + 3, snat_synack(40002, p0))
    at(core, 1 + SYN_S + 4, snat_ack(40002, p0))    # established
    assert alive(core, 1 + SYN_S + 4 + EST_S - 1) == (1, 0)
    assert core.stats()["snat_ports_used"] == 1


def test_snat_ports_of_half_open_flows_are_reclaimed_first():
    p0, p1 = nd.SNAT_PORTS
    core = nat_core()
    at(core, 0, snat_syn(40000, p0))        # a real client: established
    at(core, 0, snat_synack(40000, p0))
    at(core, 0, snat_ack(40000, p0))
    at(core, 1, snat_syn(40001, p1))        # a spoofed SYN, answered
    at(core, 1, snat_synack(40001, p1))
    # Every port is taken: the half-open flow gives its port up at once.
    at(core, 2, snat_syn(40002, p1))
    s = core.stats()
    assert (s["flows_evicted"], s["snat_ports_used"]) == (1, 2)
    assert alive(core, 2) == (2, 1)
    # the established client keeps its port; the spoofed flow is gone
    at(core, 3, snat_ack(40000, p0, "PA"))
    late = snat_synack(40001, p1).frame     # p1 is 40002's now: its SYN-ACK
    at(core, 3, Case("snat-late", "the evicted flow's answer, mapped to the "
                     "port's new flow", late, "forward_reply",
                     out=snat_synack(40002, p1).out, out_if=0))  # routed
    # Established flows only: a new client is turned away, counted.
    at(core, 4, snat_ack(40002, p1))
    at(core, 5, nd.step("snat-ports-full", "every port held by an established "
                     "flow", snat_syn(40003, p0).frame, "drop_ports_full",
                     vip=2))
    assert core.stats()["reason"]["drop_ports_full"] == 1


def test_half_open_count_follows_many_flows():
    core = nat_core()
    frames = [nat_steps("S", p).frame for p in range(20000, 20100)]
    outs, res = core.process(frames)
    assert {r.reason for r in res} == {"forward"}
    assert core.stats()["flows_half_open"] == 100
    answers = [nat_synack(p).frame for p in range(20000, 20050)]
    core.process(answers, in_if=1)
    assert core.stats()["flows_half_open"] == 100   # answered, not acked
    core.process([nat_steps("A", p).frame for p in range(20000, 20050)])
    assert core.stats()["flows_half_open"] == 50
    core.process([nat_steps("R", p).frame for p in range(20050, 20060)])
    assert core.stats()["flows_half_open"] == 40


def test_default_timeouts_are_the_headers():
    from pyfwd.dataplane.native import lib
    assert Core(flows=64).timeouts() == {
        "tcp_syn": lib.PYFWD_TCP_SYN_TIMEOUT_DEFAULT,
        "tcp_established": lib.PYFWD_TCP_TIMEOUT_DEFAULT,
        "tcp_fin": lib.PYFWD_TCP_FIN_TIMEOUT_DEFAULT,
        "udp": lib.PYFWD_UDP_TIMEOUT_DEFAULT}
    assert lib.PYFWD_TCP_SYN_TIMEOUT_DEFAULT <= 60
    assert nat_core().timeouts() == {**TIMEOUTS,
                                     "udp": lib.PYFWD_UDP_TIMEOUT_DEFAULT}



def test_full_dr_table_pushes_half_open_flows_out_first():
    """The oldest entries are established, yet a SYN flood pushes out its
    own half-open flows, never them (before: the oldest went first)."""
    core = Core(mac=defs.LB_MAC, flows=64, timeouts=TIMEOUTS)
    core.publish_services([defs.SERVICES[0]], defs.MACS)
    core.set_clock(T0)
    est = range(41000, 41030)
    core.process([dr_seg("S", p).frame for p in est])
    core.process([dr_seg("A", p).frame for p in est])
    assert core.stats()["flows_half_open"] == 0
    core.set_clock(T0 + 1)
    _, res = core.process([dr_seg("S", p).frame for p in range(20000, 21000)])
    assert {r.reason for r in res} == {"forward"}
    s = core.stats()
    assert s["flows_evicted"] > 900
    # every established flow is still known: its next segment is a hit
    core.process([dr_seg("PA", p).frame for p in est])
    assert core.stats()["flows_new"] == s["flows_new"]
