"""Microbenchmarks (issue 8): the core per packet on the packet cases,
Maglev table builds, flow memory.

    .venv/bin/python -m pytest bench/ --benchmark-only

The core's benchmarks time one round of 32 batches of 64 frames (each
round's batches copied into C buffers afresh, untimed: NAT rewrites frames
in place); ns per packet = the round's time / 2048, in extra_info and on
the terminal.  Targets (shown, not asserted): <= 50 ns per packet for a DR
rewrite and a NAT hit, <= 50 ms for a Maglev table of 1000 reals.  The
same measurements without pytest or scapy: pyfwd.bench.micro (`pyfwd
bench`).
"""

import pytest

from pyfwd.bench import frames as bench_frames
from pyfwd.bench import micro
from pyfwd.dataplane.scheduler import maglev_table
from pyfwd.model import MAGLEV_SIZE_DEFAULT, Real
from tests.cases import defs
from tests.cases import nat_defs as nd

DR = micro.Setup(defs.SERVICES, defs.MACS, mac=defs.LB_MAC)
NAT = micro.Setup(nd.SERVICES, nd.MACS, nd.OUT_IFS, mac=nd.OUT_MAC,
                  mac2=nd.IN_MAC,
                  snat=(Real(nd.SNAT).address, nd.SNAT_PORTS))
NAT_VIPS = (0, 1)       # nd.SERVICES in NAT mode (2, 3 are SNAT)
_NAT_STEPS = nd.nat_tcp() + nd.nat_udp()

# kind: (set-up, frames): the packet cases where they exist.
CASES = {
    # DR rewrites of every forwarded case: IPv4, IPv6, VLAN, options
    "dr": (DR, [c.frame for c in defs.wellformed()
                if c.reason == "forward"]),
    # The clients' packets of NAT flows (TCP and UDP), answered first
    "nat-hit": (NAT, [c.frame for c in _NAT_STEPS
                      if c.reason == "forward" and c.vip in NAT_VIPS]),
    # The case's SYN from 2048 client address:ports: a new flow each
    "nat-new": (NAT, bench_frames.nat_new_frames(
        template=next(c.frame for c in _NAT_STEPS if c.name == "nat-syn"))),
    # Every malformed case but the 9 KiB one
    "drop": (DR, [c.frame for c in defs.malformed() if len(c.frame) < 2048]),
}
TARGET = {"dr": micro.TARGET_CORE_NS, "nat-hit": micro.TARGET_CORE_NS}


def _say(capsys, line):
    with capsys.disabled():
        print(f"\n  {line}", end="")


@pytest.mark.parametrize("kind", micro.KINDS)
def test_core_batch64(benchmark, capsys, kind):
    setup, frames = CASES[kind]
    bench = micro.CoreBench(kind, frames, 64, setup=setup)
    before = bench.counters()
    benchmark.pedantic(bench.run, setup=lambda: ((bench.rounds(),), {}),
                       rounds=200 if kind == "nat-new" else 400,
                       warmup_rounds=1)
    n = benchmark.stats.stats.rounds + 1
    if kind == "nat-new":   # one round's flows are all new (checked here)
        before = bench.counters()
        bench.run(bench.rounds())
        bench.check(before)
    else:
        bench.check(before, n * bench.packets)
    ns = benchmark.stats.stats.min * 1e9 / bench.packets
    benchmark.extra_info.update(ns_per_pkt=round(ns, 1), batch=64,
                                frames_per_round=bench.packets,
                                distinct_frames=len(frames))
    target = TARGET.get(kind)
    _say(capsys, f"core {kind}: {ns:.1f} ns/packet (best round)"
         + (f", target <= {target:.0f}: "
            f"{'met' if ns <= target else 'MISSED'}" if target else ""))


@pytest.mark.parametrize("reals", [10, 1000])
def test_maglev_build(benchmark, capsys, reals):
    keys = micro.real_keys(reals)
    table = benchmark.pedantic(maglev_table,
                               (keys, [1] * reals, MAGLEV_SIZE_DEFAULT),
                               rounds=5, warmup_rounds=1)
    assert len(table) == MAGLEV_SIZE_DEFAULT
    ms = benchmark.stats.stats.min * 1e3
    benchmark.extra_info.update(build_ms=round(ms, 1),
                                table_size=MAGLEV_SIZE_DEFAULT)
    _say(capsys, f"maglev {reals} reals: {ms:.1f} ms"
         + (f", target <= {micro.TARGET_MAGLEV_MS:.0f}: "
            f"{'met' if ms <= micro.TARGET_MAGLEV_MS else 'MISSED'}"
            if reals == 1000 else ""))


@pytest.mark.parametrize("mode", ["dr", "nat"])
def test_flow_memory(benchmark, capsys, mode):
    """Times opening a million flows; records the memory they take."""
    per = micro.flow_bytes(mode)
    mib = benchmark.pedantic(micro.table_mib, (1_000_000, mode), rounds=1)
    benchmark.extra_info.update(bytes_per_flow=per, mib_per_1m_flows=round(
        mib, 1), slots=micro.table_slots(1_000_000, mode))
    _say(capsys, f"flows {mode}: {per} B per flow; 1M flows in "
         f"{micro.table_slots(1_000_000, mode)} slots: {mib:.0f} MiB")
