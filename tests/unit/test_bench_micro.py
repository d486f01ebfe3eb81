"""pyfwd.bench.micro measures what it says it measures (no root, fast)."""

import pytest

from pyfwd.bench import frames as bench_frames
from pyfwd.bench import micro
from pyfwd.bench.system import BenchError
from pyfwd.frames import mac_to_bytes

from ..cases.harness import checksum_problems, unfinished

REAL_MACS = {mac_to_bytes(m) for m in bench_frames.DR_REALS.values()}


def test_dr_frames_come_out_to_a_real_from_us():
    frames = bench_frames.dr_frames(16)
    core = micro.dr_setup().core()
    outs, res = core.process(frames)
    assert [r.reason for r in res] == ["forward"] * 16
    for f, o in zip(frames, outs):
        assert o[:6] in REAL_MACS
        assert o[6:12] == mac_to_bytes(bench_frames.LB_MAC)
        assert o[12:] == f[12:]


def test_built_frames_have_right_checksums():
    b = bench_frames
    syn = b.nat_new_frames(3)
    frames = (b.dr_frames(2) + b.nat_frames(2) + syn
              + [b.answer(syn[0]), b.ipv4_frame(
                  b.LB_MAC, b.CLIENT_MAC, b.CLIENT, b.VIP,
                  b.UDP, 5353, 53, payload=b"q")])
    for f in frames:
        assert not checksum_problems(f)
    assert len({f[26:30] + f[34:36] for f in b.nat_new_frames(60000)}) \
        == 60000


def test_nat_new_opens_one_flow_per_packet_every_round():
    bench = micro.CoreBench("nat-new", bench_frames.nat_new_frames(256))
    for _ in range(2):      # the first round's flows expire before the next
        before = bench.counters()
        bench.run(bench.rounds())
        bench.check(before)
        assert bench.counters()["new"] - before["new"] == 256


def test_nat_hit_and_dr_are_hits_of_established_flows():
    for kind in ("nat-hit", "dr"):
        bench = micro.CoreBench(kind, calls=4)
        before = bench.counters()
        bench.run(bench.rounds())
        after = bench.counters()
        assert after["hits"] - before["hits"] == 4 * 64
        assert after["new"] == before["new"]
        assert after["forward"] - before["forward"] == 4 * 64


def test_drop_frames_are_all_dropped_for_different_reasons():
    core = micro.dr_setup().core()
    _, res = core.process(bench_frames.drop_frames())
    assert {r.verdict for r in res} == {"drop"}
    assert len({r.reason for r in res}) == len(res)


def test_frames_that_are_not_the_kind_are_refused():
    with pytest.raises(BenchError, match="frame 0"):
        micro.core_ns("dr", bench_frames.drop_frames(), repeat=1)
    with pytest.raises(BenchError, match="new"):    # 64 packets, 1 flow
        micro.core_ns("nat-new", bench_frames.nat_new_frames(1) * 64, repeat=1)


def test_dr_frames_of_a_size_and_unfinished_as_a_veth_hands_them():
    for size in micro.CSUM_SIZES:
        frames = bench_frames.dr_frames(4, size)
        assert {len(f) for f in frames} == {size}
        for f in frames:
            assert not checksum_problems(f)
            # the same bytes as the packet cases' (scapy's) unfinished frame
            assert bench_frames.unfinished(f) == unfinished(f)
            assert checksum_problems(bench_frames.unfinished(f))
    with pytest.raises(BenchError, match="53 bytes"):
        bench_frames.dr_frames(1, 53)


def test_csum_rounds_complete_every_checksum_or_none():
    for way, completed in (("finished", 0), ("checked", 0),
                           ("completed", 4 * 64)):
        frames = bench_frames.dr_frames(64, 1500)
        if way == "completed":
            frames = [bench_frames.unfinished(f) for f in frames]
        bench = micro.CoreBench("dr", frames, calls=4,
                                csum=None if way == "finished" else way)
        before = bench.counters()
        bench.run(bench.rounds())
        bench.check(before)
        assert bench.counters()["completed"] - before["completed"] \
            == completed
    assert micro.csum_ns(64, "completed", repeat=1, calls=2) > 0
    with pytest.raises(BenchError, match="checksum way"):
        micro.csum_ns(64, "repaired", repeat=1)


def test_a_round_whose_checksums_were_not_completed_is_refused():
    # "completed" on finished frames: no checksum completed, so the
    # figure would not be what it says
    bench = micro.CoreBench("dr", bench_frames.dr_frames(64, 64), calls=2,
                            csum="completed")
    before = bench.counters()
    bench.run(bench.rounds())
    with pytest.raises(BenchError, match="completed 0/128"):
        bench.check(before)


def test_flow_bytes():
    assert micro.flow_bytes("dr") == 72         # csrc/core.h's struct flow
    assert micro.flow_bytes("nat") == 144
    assert micro.table_slots(1_000_000, "dr") == 1 << 21
    assert micro.table_slots(1_000_000, "nat") == 1 << 22


def test_run_all_reports_every_figure():
    # 250000 flows: tables of 36 and 72 MiB, mapped afresh (see micro)
    lines = []
    rows = micro.run_all(lines.append, flows=250_000, repeat=1)
    got = {(r["name"], r["metric"]): r for r in rows}
    mib = "mib_per_250000_flows"
    assert set(got) == {
        ("core-dr", "ns_per_pkt"), ("core-nat-hit", "ns_per_pkt"),
        ("core-nat-new", "ns_per_pkt"), ("core-drop", "ns_per_pkt"),
        *((f"csum-{size}", f"ns_per_pkt_{way}")
          for size in (64, 1500)
          for way in ("finished", "checked", "completed")),
        ("maglev-10", "build_ms"), ("maglev-1000", "build_ms"),
        ("flow-table", "bytes_per_flow"), ("flow-table", mib),
        ("flow-table-nat", "bytes_per_flow"), ("flow-table-nat", mib)}
    assert all(r["value"] > 0 for r in rows)
    for name, slots in (("flow-table", 1 << 19), ("flow-table-nat", 1 << 20)):
        table = slots * 72 / 2**20     # every page of it holds a flow
        assert got[name, mib]["slots"] == slots
        assert table - 0.1 < got[name, mib]["value"] < table + 2
    assert sum("target" in line for line in lines) == 3
