"""The expiry keeps up with a big table (issue 17, point 2): besides a few
slots per burst, the sweep looks at the whole flow table about once a
second, so a flood's expired half-open flows leave the gauges about
tcp_syn after the flood, even when few bursts come (without it: 64 slots a
burst, 1,024 bursts for a 65,536-slot table)."""

from pyfwd.dataplane.core import Core
from pyfwd.model import Real, Service

from . import defs
from .test_tcp_states import dr_seg

SLOTS = 1 << 16
T0 = 1000


def test_expired_half_open_flows_are_swept_within_a_second_of_clock():
    core = Core(mac=defs.LB_MAC, flows=SLOTS)
    core.publish_services([Service(defs.VIPS[0], [Real("10.0.0.11"),
                                                  Real("10.0.0.12")],
                                   "maglev")], defs.MACS)
    core.set_clock(T0)
    syns = [dr_seg("S", p).frame for p in range(1024, 1024 + 5000)]
    for i in range(0, len(syns), 64):
        core.process(syns[i:i + 64])
    assert core.stats()["flows_half_open"] == 5000
    expired = T0 + core.timeouts()["tcp_syn"] + 1
    # four bursts of one frame, a quarter of a second apart
    for k in range(4):
        core.set_clock(expired + k / 4)
        core.process([dr_seg("S", 60000 + k).frame])
    assert core.stats()["flows_half_open"] == 4
    assert sum(core.flows().values()) == 4
