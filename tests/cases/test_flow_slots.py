"""The flow slots an entry holds (pyfwd_worker_room.flow_slots_used, the
gauge pyfwd_flow_slots_used): each worker counts them where an entry takes
a free slot or frees one (csrc/flow.h flow_slot_*), never per packet; the
count is what a scan of the table finds (pyfwd_flow_slots_scan), through
new flows, persistence entries, evictions, expiry and removed reals.  No
root: frames through the core on its fixed clock."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.l2 import Ether

from pyfwd.control import metrics
from pyfwd.dataplane.core import Core
from pyfwd.dataplane.native import lib
from pyfwd.model import Real, Service, Vip

from . import nat_defs as nd
from .nat_defs import answer, seg

T0 = 1000
TIMEOUTS = {"tcp_syn": 30, "tcp_established": 900, "tcp_fin": 10,
            "udp": 300}
PERSIST = 60
DR = Vip.parse(f"{nd.VIP}:443/tcp")         # DR, persistent
DR_PLAIN = Vip.parse(f"{nd.VIP}:22/tcp")    # DR
DR_REALS = [Real(nd.REAL1), Real(nd.REAL2)]


def services(reals=nd.POOL, dr_reals=DR_REALS):
    return [Service(nd.WEB, list(reals), "maglev", "nat"),
            Service(nd.SWEB, list(reals), "maglev", "snat"),
            Service(DR, list(dr_reals), "wrr", "dr", persistence=PERSIST),
            Service(DR_PLAIN, list(dr_reals), "maglev", "dr")]


def new_core(flows=4096, workers=1):
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=flows,
                timeouts=TIMEOUTS, workers=workers)
    core.set_snat(Real(nd.SNAT).address, (61000, 61999))
    core.publish_services(services(), {**nd.POOL_MACS, **nd.MACS},
                          {**nd.POOL_OUT_IFS, **nd.OUT_IFS})
    core.set_clock(T0)
    return core


def used(core):
    return core.room()["flow_slots_used"]


def scanned(core):
    """The held slots of every worker's table, by reading each slot."""
    counts = [lib.pyfwd_flow_slots_scan(core.ctx, w)
              for w in range(core.workers)]
    assert min(counts) >= 0
    return sum(counts)


def forwarded(core, frames, **kw):
    outs, res = core.process(frames, **kw)
    assert {r.reason for r in res} <= {"forward", "forward_reply"}, res
    return outs


def test_a_dr_flow_holds_one_slot_its_packets_none():
    core = new_core()
    assert used(core) == 0
    forwarded(core, [seg(DR_PLAIN, 40000)])
    assert used(core) == scanned(core) == 1
    forwarded(core, [seg(DR_PLAIN, 40000, "A"), seg(DR_PLAIN, 40000, "PA")])
    assert used(core) == 1                      # a flow's packets: none
    forwarded(core, [seg(DR_PLAIN, 40001)])
    assert used(core) == scanned(core) == 2


def test_a_nat_or_snat_flow_holds_two():
    core = new_core()
    [out] = forwarded(core, [seg(nd.WEB, 40000)])
    assert used(core) == scanned(core) == 2     # ORIG and REPLY
    forwarded(core, [answer(out)], in_if=1)
    assert used(core) == 2
    [sout] = forwarded(core, [seg(nd.SWEB, 40000)])
    assert used(core) == scanned(core) == 4
    forwarded(core, [answer(sout)], in_if=1)
    assert used(core) == scanned(core) == 4


def test_a_persistent_vips_first_syn_holds_flow_and_persistence_entry():
    core = new_core()
    forwarded(core, [seg(DR, 40000)])
    assert used(core) == scanned(core) == 2     # the flow, the client's
    forwarded(core, [seg(DR, 40001)])
    assert used(core) == 3                      # same client: one entry
    forwarded(core, [seg(DR, 40000, client="10.0.0.9")])
    assert used(core) == scanned(core) == 5
    # the flows listed are 3: the estimate (live flows x slots) said 3
    assert sum(core.flows().values()) == 3


def test_expiry_brings_it_back_to_zero():
    core = new_core()
    [out] = forwarded(core, [seg(nd.WEB, 40000)])
    forwarded(core, [answer(out)], in_if=1)
    forwarded(core, [seg(nd.SWEB, 40001), seg(DR, 40002),
                     seg(DR_PLAIN, 40003)])
    assert used(core) == 2 + 2 + 2 + 1
    core.expire()
    assert used(core) == 7                      # nothing timed out yet
    core.set_clock(T0 + TIMEOUTS["tcp_syn"] + 1)     # the SYNs' flows
    core.expire()
    assert used(core) == scanned(core) == 1     # the persistence entry
    core.set_clock(T0 + PERSIST + 1)
    core.expire()
    assert used(core) == scanned(core) == 0


def test_the_loops_sweep_reaps_as_expire_does():
    core = new_core()
    forwarded(core, [seg(DR, 40000), seg(nd.WEB, 40001)])
    assert used(core) == 4
    core.set_clock(T0 + PERSIST + 1)
    # any burst sweeps the slice of the table its clock says is due: a
    # gap of a second or more, the whole table
    core.process([seg(DR_PLAIN, 50000, "R")])
    assert used(core) == scanned(core) == 1     # the RST's own flow


def test_a_table_filled_to_capacity_reads_capacity():
    core = new_core(flows=64)
    room = core.room()
    assert room["flow_slots"] == 64
    forwarded(core, [seg(DR_PLAIN, 20000 + i) for i in range(400)])
    assert core.stats()["flows_evicted"] > 0    # full: DR pushes out
    assert used(core) == scanned(core) == 64
    # NAT pushes out half-open DR flows for its two entries, or, finding
    # no room for the second, leaves the first slot free again
    core.process([seg(nd.WEB, 30000 + i) for i in range(50)])
    assert used(core) == scanned(core) <= 64
    core.set_clock(T0 + TIMEOUTS["tcp_syn"] + 1)
    core.expire()
    assert used(core) == 0


def test_removed_reals_flows_stay_counted_until_they_go():
    core = new_core()
    outs = forwarded(core, [seg(DR_PLAIN, 40000 + i, "S") for i in range(8)]
                     + [seg(nd.WEB, 41000 + i) for i in range(8)])
    assert used(core) == 8 + 2 * 8
    # del-real: REAL2 and the pool's first real leave the VIPs
    core.publish_services(services(nd.POOL[1:], DR_REALS[:1]),
                          {**nd.POOL_MACS, **nd.MACS},
                          {**nd.POOL_OUT_IFS, **nd.OUT_IFS})
    assert used(core) == scanned(core) == 8 + 2 * 8
    gone = [o for o in outs if Ether(o).dst in
            (nd.REAL2_MAC, nd.POOL_MACS[nd.POOL[0].address].hex(":"))]
    assert gone                     # some flows were on the removed reals
    # their next packets reschedule them: a flow freed, one made
    forwarded(core, [seg(DR_PLAIN, 40000 + i, "A") for i in range(8)]
              + [seg(nd.WEB, 41000 + i, "A") for i in range(8)])
    assert core.stats()["flows_rescheduled"] > 0
    assert used(core) == scanned(core) == 8 + 2 * 8
    core.set_clock(T0 + TIMEOUTS["tcp_established"] + 1)
    core.expire()
    assert used(core) == 0


def test_the_gauge_is_the_cores_count():
    # a persistent DR flow and a NAT flow to a real then removed: 2 + 2
    # slots, where the estimate (live flows of the VIPs' reals x slots per
    # mode) read 1
    core = new_core()
    forwarded(core, [seg(DR, 40000)])
    [out] = forwarded(core, [seg(nd.WEB, 40001)])
    owner = next(r for r in nd.POOL
                 if nd.POOL_MACS[r.address] == bytes.fromhex(
                     Ether(out).dst.replace(":", "")))
    core.publish_services(services([r for r in nd.POOL if r != owner]),
                          {**nd.POOL_MACS, **nd.MACS},
                          {**nd.POOL_OUT_IFS, **nd.OUT_IFS})
    text = metrics.render({"room": core.room()})
    got = {s.name: s.value for f in text_string_to_metric_families(text)
           for s in f.samples}
    assert got["pyfwd_flow_slots_used"] == 4
    assert got["pyfwd_flow_slots_capacity"] == 4096


def test_room_sums_the_workers():
    core = new_core(workers=2)
    core.process([seg(DR_PLAIN, 40000)], worker=0)
    core.process([seg(DR_PLAIN, 40001), seg(DR_PLAIN, 40002)], worker=1)
    assert used(core) == scanned(core) == 3
    assert [lib.pyfwd_flow_slots_scan(core.ctx, w) for w in (0, 1)] == [1, 2]
    assert lib.pyfwd_flow_slots_scan(core.ctx, 2) < 0       # -EINVAL


# --- the invariant: the count is the scan, whatever happens ---------------

VIPS = (nd.WEB, nd.SWEB, DR, DR_PLAIN)
FLAGS = ("S", "A", "PA", "FA", "R")

op = st.one_of(
    st.tuples(st.just("seg"), st.sampled_from(VIPS), st.integers(0, 40),
              st.sampled_from(FLAGS), st.integers(0, 3)),
    st.tuples(st.just("flood"), st.sampled_from(VIPS), st.integers(1, 80),
              st.integers(0, 3), st.booleans()),
    st.tuples(st.just("answer"), st.integers(0, 40),
              st.sampled_from(("SA", "A", "FA", "R"))),
    st.tuples(st.just("clock"), st.integers(1, 400)),
    st.tuples(st.just("expire")),
    st.tuples(st.just("republish"), st.booleans()))


def apply(core, state, o):
    kind = o[0]
    if kind in ("seg", "flood"):
        if kind == "seg":
            _, vip, sport, flags, client = o
            frames = [seg(vip, 30000 + sport, flags, f"10.0.0.{30 + client}")]
        else:               # SYNs enough to fill the table, DR's
            _, vip, n, client, ack = o      # established (no evicting)
            frames = [seg(vip, 30000 + i, flags, f"10.0.0.{30 + client}")
                      for flags in ("S", "A")[:1 + ack] for i in range(n)]
        outs, res = core.process(frames)
        state["out"] += [x for x, r in zip(outs, res) if r.reason == "forward"
                         and vip in (nd.WEB, nd.SWEB)]
    elif kind == "answer" and state["out"]:
        frame = state["out"][o[1] % len(state["out"])]
        core.process([answer(frame, o[2])], in_if=1)
    elif kind == "clock":
        state["now"] += o[1]
        core.set_clock(state["now"])
    elif kind == "expire":
        core.expire()
    elif kind == "republish":
        reals, dr_reals = (nd.POOL[1:], DR_REALS[:1]) if o[1] else \
            (nd.POOL, DR_REALS)
        core.publish_services(services(reals, dr_reals),
                              {**nd.POOL_MACS, **nd.MACS},
                              {**nd.POOL_OUT_IFS, **nd.OUT_IFS})


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=60))
def test_the_count_is_a_scan_of_the_table(ops):
    core = new_core(flows=64)       # small: it fills, evicts, drops
    state = {"now": T0, "out": []}
    for o in ops:
        apply(core, state, o)
        n = used(core)
        assert n == scanned(core), o
        assert 0 <= n <= 64
    core.set_clock(state["now"] + 10 ** 6)
    core.expire()
    assert used(core) == scanned(core) == 0
