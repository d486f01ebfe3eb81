"""The flow expiry runs by the clock, not per burst (issue 18, point 2c):
at most once a ms, a slice of the table in proportion to the time since
the last run, a whole pass in about 1 s (csrc/burst.c, worker_sweep).  A
burst of one frame no longer looks at 64 slots.  Through the core's fixed
clock (no root): live counts (Core.flows) fall as the sweep lapses
timed-out flows."""

from scapy.layers.l2 import ARP, Ether

from pyfwd.dataplane.core import Core
from pyfwd.model import Real, Service

from . import defs
from .test_tcp_states import dr_seg

T0 = 1000
SYN_S = 2
SLOTS = 4096            # a slice of 64 slots per ms: about 1/64 of them
FLOWS = 512


def live(core):
    return sum(core.flows().values())


def other():
    """A frame that goes through a burst without touching a flow."""
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=defs.CLIENT_MAC)
                 / ARP(op=1, psrc=defs.CLIENT4, pdst="10.0.0.200"))


def at(core, seconds, frames):
    core.set_clock(T0 + seconds)
    core.process(frames)


def test_the_sweep_runs_by_the_clock_not_per_burst():
    core = Core(mac=defs.LB_MAC, flows=SLOTS, timeouts={"tcp_syn": SYN_S})
    core.publish_services([Service(defs.VIPS[0], [Real("10.0.0.11")])],
                          defs.MACS)
    at(core, 0, [dr_seg("S", 20000 + i).frame for i in range(FLOWS)])
    assert live(core) == FLOWS
    at(core, SYN_S - 0.0005, [other()])     # a sweep: nothing timed out yet
    assert live(core) == FLOWS
    # 0.6 ms later every flow has timed out; bursts within the ms do not
    # sweep (the old per-burst sweep looked at 64 slots each time)
    for _ in range(20):
        at(core, SYN_S + 0.0001, [other()])
    assert live(core) == FLOWS
    # the next ms: one slice (64 of 4096 slots), not the table
    at(core, SYN_S + 0.0011, [other()])
    after_slice = live(core)
    assert FLOWS - 40 < after_slice < FLOWS
    # a pass of the table within about a second, however few the bursts
    at(core, SYN_S + 9, [other()])
    assert live(core) == 0


def test_an_idle_table_is_swept_whole_after_a_long_gap():
    core = Core(mac=defs.LB_MAC, flows=1 << 16,
                timeouts={"tcp_syn": SYN_S})
    core.publish_services([Service(defs.VIPS[0], [Real("10.0.0.11")])],
                          defs.MACS)
    at(core, 0, [dr_seg("S", 20000 + i).frame for i in range(FLOWS)])
    at(core, 60, [other()])
    assert live(core) == 0
