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


def spoofed_syns(template, n, rnd):
    """n SYNs like template from random sources of 10.1.0.0/16 (the core
    reads no TCP/IP checksum of these: left as the template's)."""
    out = []
    for _ in range(n):
        f = bytearray(template)
        f[26:30] = bytes([10, 1, rnd.randrange(256), rnd.randrange(1, 255)])
        f[34:36] = rnd.randrange(1024, 65535).to_bytes(2, "big")
        out.append(bytes(f))
    return out


def flood(core, mode, slots, seconds=15, burst=64, every=4):
    """20 times the table's slots of spoofed SYNs over `seconds`, and
    every `every` bursts a legitimate handshake: SYN, a burst, (NAT) the
    real's SYN-ACK, the ACK.  The share of handshakes that held their
    flow."""
    import random
    rnd = random.Random(7)
    tmpl = (dr_seg("S", 1).frame if mode == "dr"
            else nat_steps("S", 1).frame)
    nburst = 20 * slots // burst
    ok = 0
    for i in range(nburst):
        core.set_clock(T0 + seconds * i / nburst)
        if i % every:
            core.process(spoofed_syns(tmpl, burst, rnd))
            continue
        port = 30000 + i
        syn = dr_seg("S", port) if mode == "dr" else nat_steps("S", port)
        [o], [r] = core.process([syn.frame])
        core.process(spoofed_syns(tmpl, burst, rnd))
        good = r.reason == "forward"
        if mode != "dr":
            p = Ether(o)
            sa = nd.tcp(p["IP"].dst, p["TCP"].dport, p["IP"].src,
                        p["TCP"].sport, "SA", p.src, p.dst)
            good &= core.process([sa], in_if=1)[1][0].reason == \
                "forward_reply"
        hits = core.stats()["flow_hits"]
        ack = dr_seg("A", port) if mode == "dr" else nat_steps("A", port)
        good &= core.process([ack.frame])[1][0].reason == "forward"
        ok += good and core.stats()["flow_hits"] == hits + 1
    return ok / len(range(0, nburst, every))


def test_a_syn_flood_20_times_the_table_leaves_handshakes_working():
    slots = 256
    for mode, core in (("dr", Core(mac=defs.LB_MAC, flows=slots)),
                       ("nat", Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC,
                                    flows=slots))):
        if mode == "dr":
            core.publish_services([defs.SERVICES[0]], defs.MACS)
        else:
            core.publish_services(nd.SERVICES, nd.MACS, nd.OUT_IFS)
        assert flood(core, mode, slots) >= 0.99, mode
        s = core.stats()
        assert s["flows_evicted"] > 10 * slots
        assert s["flows_half_open"] > 0
        # back to the legitimate flows within the half-open timeout
        established = len(range(0, 20 * slots // 64, 4))
        core.set_clock(T0 + 15 + core.timeouts()["tcp_syn"] + 1)
        core.expire()
        assert core.stats()["flows_half_open"] == 0
        assert sum(core.flows().values()) == established, mode
