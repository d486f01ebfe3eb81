"""New-flow pressure in the core (no root): past new_flows_per_second on a
worker, a DR VIP with Maglev forwards new flows by its table without a flow
entry (Katran's LRU bypass: the same real a tracked flow gets), anything
else drops them as for a full table; established flows go on."""

import collections

from scapy.layers.l2 import Ether

from pyfwd.dataplane.core import Core
from pyfwd.model import Real, Service

from . import defs
from . import nat_defs as nd
from .harness import Case, check_case
from .test_tcp_states import dr_seg, nat_core, nat_steps

CAP = 10
T0 = 1000
DR_REALS = ("10.0.0.11", "10.0.0.12")


def dr_core(scheduler="maglev", **kw):
    core = Core(mac=defs.LB_MAC, flows=4096, **kw)
    core.publish_services([Service(defs.VIPS[0],
                                   [Real(a) for a in DR_REALS],
                                   scheduler)], defs.MACS)
    core.set_clock(T0)
    return core


def reals_of(outs):
    return [Ether(o).dst for o in outs]


def test_dr_maglev_beyond_the_cap_forwards_untracked_by_the_table():
    capped, free = dr_core(new_flows_per_second=CAP), dr_core()
    syns = [dr_seg("S", p).frame for p in range(20000, 20050)]
    outs, res = capped.process(syns)
    assert {r.reason for r in res} == {"forward"}
    # the same reals as with a flow each: Maglev by the 5-tuple
    assert reals_of(outs) == reals_of(free.process(syns)[0])
    s = capped.stats()
    assert (s["flows_new"], s["flows_bypassed"]) == (CAP, 40)
    assert sum(capped.flows().values()) == CAP
    # untracked ones stay on their real while the table stands
    outs2, _ = capped.process([dr_seg("A", p).frame
                               for p in range(20000, 20050)])
    assert reals_of(outs2) == reals_of(outs)
    # each case of the bypass is a golden DR frame: only the MACs change
    case = dr_seg("PA", 20049)
    want = reals_of(outs)[-1]
    [out], [r] = capped.process([case.frame])
    check_case(Case("dr-bypass", "untracked, by Maglev", case.frame,
                    "forward", vip=0, out=defs.dr(case.frame, want)), out, r)


def test_the_cap_is_per_second():
    core = dr_core(new_flows_per_second=CAP)
    core.process([dr_seg("S", p).frame for p in range(20000, 20030)])
    core.set_clock(T0 + 1)
    core.process([dr_seg("S", p).frame for p in range(21000, 21030)])
    s = core.stats()
    assert (s["flows_new"], s["flows_bypassed"]) == (2 * CAP, 40)


def test_established_flows_go_on_beyond_the_cap():
    core = dr_core(new_flows_per_second=CAP)
    core.process([dr_seg("S", p).frame for p in range(20000, 20000 + CAP)])
    hits = core.stats()["flow_hits"]
    core.process([dr_seg("S", p).frame for p in range(30000, 30100)])
    core.process([dr_seg("A", p).frame for p in range(20000, 20000 + CAP)])
    assert core.stats()["flow_hits"] == hits + CAP


def test_beyond_the_cap_nat_and_other_schedulers_drop_as_a_full_table():
    for core, frames in (
            (dr_core("wrr", new_flows_per_second=CAP),
             [dr_seg("S", p).frame for p in range(20000, 20030)]),
            (nat_core_capped(),
             [nat_steps("S", p).frame for p in range(20000, 20030)])):
        _, res = core.process(frames)
        got = collections.Counter(r.reason for r in res)
        assert got == {"forward": CAP, "drop_table_full": 30 - CAP}, got
        assert core.stats()["reason"]["drop_table_full"] == 30 - CAP
        assert core.stats()["flows_bypassed"] == 0


def nat_core_capped():
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=4096,
                new_flows_per_second=CAP)
    core.set_snat(Real(nd.SNAT).address, nd.SNAT_PORTS)
    core.publish_services(nd.SERVICES, nd.MACS, nd.OUT_IFS)
    core.set_clock(T0)
    return core


def test_no_cap_by_default():
    core = dr_core()
    core.process([dr_seg("S", p).frame for p in range(20000, 21000)])
    assert core.stats()["flows_new"] == 1000
    assert nat_core().stats()["flows_bypassed"] == 0
