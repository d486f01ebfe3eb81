"""L4 TUN through the C core, packet in / packet out (no root): IPIP and
IP6IP6 encapsulation, the ICMP errors of packets too big for the tunnel,
frames without headroom, ICMP errors about a flow through its tunnel."""

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyfwd.dataplane.core import Core
from pyfwd.dataplane.native import DataplaneError

from . import tun_defs as td
from .harness import Case, check_case


def make_core(mtu=td.MTU, **kw):
    core = Core(mac=td.LB_MAC, flows=4096, **kw)
    core.set_tun(0, td.LB4, td.LB6, mtu)
    core.set_tun(1, td.LB4, None, mtu)
    core.publish_services(td.SERVICES, td.MACS, td.OUT_IFS)
    return core


@pytest.mark.parametrize("case", td.cases(), ids=lambda c: c.name)
def test_case(case):
    core = make_core()
    [out], [result] = core.process([case.frame], in_if=case.in_if,
                                   gso=case.gso,
                                   csum_partial=case.csum_partial)
    check_case(case, out, result)
    if result.verdict == "forward":
        assert core.stats()["reason"][case.reason] == 1


def test_flow_keeps_its_real_and_counts():
    """Every segment of a connection goes through the same tunnel; the
    real's counters see the inner frames (the outer header counted)."""
    core = make_core()
    frames = [td.from_client(td.inner4(flags=f)) for f in ("S", "A", "PA")]
    outs, results = core.process(frames)
    assert [r.reason for r in results] == ["forward"] * 3
    assert all(Ether(o)[IP].dst == td.REAL4 for o in outs)
    stats = core.stats()
    assert stats["flows_new"] == 1
    assert stats["flow_hits"] == 2


def test_ipv6_ip6ip6():
    """IPv6 VIP: IP6IP6 to the real; the flow label is set, the same for
    a flow's packets, and differs between two flows (ECMP entropy)."""
    core = make_core()
    a, b = td.inner6(), td.inner6(sport=40100)
    (oa, oa2, ob), results = core.process(
        [td.from_client(a), td.from_client(a), td.from_client(b)])
    assert [r.reason for r in results] == ["forward"] * 3
    label = Ether(oa)[IPv6].fl
    check_case(Case("tun6-syn", "IP6IP6", td.from_client(a), "forward",
                    vip=2, out=td.encap6(a, label)), oa, results[0])
    assert label and Ether(oa2)[IPv6].fl == label
    assert Ether(ob)[IPv6].fl != label


def test_ipv6_too_big():
    """An IPv6 packet too big for the tunnel: ICMPv6 packet too big back
    to the client, MTU 1460, checksum right (scapy recomputes it)."""
    core = make_core()
    inner = td.inner6(td.MTU - 40 - 20 - 40 + 1, flags="PA")
    [out], [result] = core.process([td.from_client(inner)])
    check_case(Case("tun6-too-big", "ICMPv6 too big", td.from_client(inner),
                    "forward_too_big", vip=2, out=td.too_big6(inner)),
               out, result)
    pkt = Ether(out)
    fresh = pkt.copy()
    fresh[pkt[IPv6].payload.__class__].cksum = None
    assert Ether(bytes(fresh)) == pkt or bytes(Ether(bytes(fresh))) == out
    assert core.stats()["reason"]["forward_too_big"] == 1


def test_smaller_mtu():
    """The slot's MTU is the limit: 1400 answers a 1381-byte packet."""
    core = make_core(mtu=1400)
    inner = td.inner4(1400 - 20 - 40 + 1, flags="PA")
    [out], [result] = core.process([td.from_client(inner)])
    assert result.reason == "forward_too_big"
    assert Ether(out)[ICMP].nexthopmtu == 1380


def test_no_headroom_is_a_counted_drop():
    """A backend that lends no room in front: never written out of
    bounds, dropped and counted."""
    core = make_core()
    [out], [result] = core.process([td.from_client(td.inner4())],
                                   headroom=False)
    assert result.reason == "drop_tun_no_room"
    assert out == td.from_client(td.inner4())
    assert core.stats()["reason"]["drop_tun_no_room"] == 1


def test_gso_frame_is_dropped():
    """A GSO frame cannot be tunnelled here (one frame in, one out):
    counted drop."""
    core = make_core()
    [_], [result] = core.process([td.from_client(td.inner4())], gso=True)
    assert result.reason == "drop_tun_gso"


def test_no_source_address():
    """No outer source of the VIP's family: dropped, counted."""
    core = Core(mac=td.LB_MAC, flows=4096)
    core.set_tun(0, td.LB4, None, 0)
    core.publish_services(td.SERVICES, td.MACS)
    [_], [result] = core.process([td.from_client(td.inner6())])
    assert result.reason == "drop_tun_no_room"


def test_unfinished_checksum_is_completed_inside():
    """A veth's unfinished TCP checksum is completed before the packet
    goes into the tunnel (the real cannot finish it)."""
    from .harness import unfinished
    core = make_core()
    frame = unfinished(td.from_client(td.inner4(flags="PA")))
    [out], [result] = core.process([frame], csum_partial=True)
    assert result.reason == "forward"
    assert out == td.encap4(td.inner4(flags="PA"))
    assert core.stats()["csum_completed"] == 1


def test_icmp_error_about_a_flow_goes_through_its_tunnel():
    """A router's frag-needed about the real's answer (from the VIP to the
    client) reaches the real inside the tunnel, as DR sends it to its
    real: path MTU discovery works for the real's replies."""
    core = make_core()
    core.process([td.from_client(td.inner4())])
    reply = (IP(src=td.VIP4, dst=td.CLIENT4) /
             td.TCP(sport=80, dport=40000, flags="SA"))
    err = (IP(src="10.0.0.254", dst=td.VIP4) /
           ICMP(type=3, code=4, nexthopmtu=1400) / Raw(bytes(reply)[:28]))
    frame = bytes(Ether(dst=td.LB_MAC, src=td.ROUTER_MAC) / err)
    [out], [result] = core.process([frame])
    assert result.reason == "forward_icmp"
    assert out == td.encap4(IP(bytes(err)))


def test_set_tun_refuses_bad_values():
    core = Core(mac=td.LB_MAC)
    with pytest.raises(DataplaneError):
        core.set_tun(5, td.LB4, None, 0)
    with pytest.raises(Exception):
        core.set_tun(0, "not an address", None, 0)
    with pytest.raises(Exception):
        core.set_tun(0, td.LB4, None, 100)
