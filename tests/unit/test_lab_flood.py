"""pyfwd.lab.flood without root: the flood's frames (checksums kept right
by the incremental update, sources inside the range, ports and sequence
numbers varied), its refusals, and the client's summary."""

import ipaddress

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pyfwd.errors import LabError
from pyfwd.lab import flood as fl

LB = "02:00:00:00:01:02"
ME = "02:00:00:00:01:c8"


def frames(n, sources="10.99.0.0/16"):
    f = fl.SynFlood("eth0", "10.0.0.100", 80, LB, ME, sources, seed=1)
    return [bytes(f._next()) for _ in range(n)]


def test_each_syn_has_right_checksums_and_a_source_in_the_range():
    net = ipaddress.ip_network("10.99.0.0/16")
    seen = set()
    for raw in frames(500):
        pkt = Ether(raw)
        ip, tcp = pkt[IP], pkt[TCP]
        assert (pkt.dst, pkt.src) == (LB, ME)
        assert (ip.dst, tcp.dport, tcp.flags) == ("10.0.0.100", 80, "S")
        assert ipaddress.ip_address(ip.src) in net
        # scapy recomputes both checksums when they are deleted
        want = Ether(raw)
        del want[IP].chksum, want[TCP].chksum
        want = Ether(bytes(want))
        assert (ip.chksum, tcp.chksum) == (want[IP].chksum,
                                           want[TCP].chksum), pkt.command()
        seen.add((ip.src, tcp.sport))
    assert len(seen) == 500


def test_a_small_range_is_kept_to():
    srcs = {Ether(raw)[IP].src for raw in frames(200, "192.168.77.0/30")}
    assert srcs <= {"192.168.77.0", "192.168.77.1", "192.168.77.2",
                    "192.168.77.3"} and len(srcs) == 4


@pytest.mark.parametrize("sources", ["8.8.0.0/16", "fd00::/64",
                                     "10.0.0.1/32"])
def test_sources_outside_a_lab_range_are_refused(sources):
    with pytest.raises(LabError, match="private IPv4 range"):
        fl.SynFlood("eth0", "10.0.0.100", 80, LB, ME, sources)


def test_it_never_runs_in_the_machines_own_namespace():
    f = fl.SynFlood("eth0", "10.0.0.100", 80, LB, ME)
    with pytest.raises(LabError, match="never in the machine's own"):
        f.run(10, 0.1)
    assert f.sent == 0


def test_the_client_summary():
    results = [(0.0, True, 0.002, ""), (0.1, True, 1.02, ""),
               (0.2, False, 3.0, "TimeoutError timed out"),
               (5.0, True, 0.001, "")]
    s = fl.LegitClient.summary(results, 0.0, 1.0)
    assert s == {"requests": 3, "ok": 2, "rate": 66.67, "slow": 1,
                 "p50_ms": 1020.0, "max_ms": 1020.0,
                 "errors": {"TimeoutError timed out": 1}}
