"""The packet-rate rows of `pyfwd bench` (pyfwd.bench.pps), run briefly:
the generator's ceiling, the in-kernel XDP MAC swap and pyfwd DR on AF_XDP
deliver packets, never more than were sent, the forwarder's work lands on
CPU 1, a bad row is refused, and nothing is left behind.  Root."""

import os

import pytest
from pyroute2 import netns

from pyfwd.bench.pps import ROWS, PpsBench
from pyfwd.bench.system import BenchError, cpus

from .procs import alive

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def test_unknown_row_is_refused():
    with pytest.raises(BenchError, match="unknown packet-rate row"):
        PpsBench().measure("dr-dpdk")


@pytest.mark.skipif(len(cpus()) < 2, reason="needs CPUs 0 and 1")
def test_rows_deliver_and_clean_up():
    lines = []
    with PpsBench(seconds=1.0, warmup=0.5, log=lines.append) as bench:
        name = bench.name
        got = {}
        for row in ("generator", "xdp-kernel", "dr-xdp"):
            got[row] = bench.measure(row)
            # between rows only the two sinks run: the row's forwarder
            # and generator are gone
            assert sum(p.poll() is None for p in bench.hosts.procs) == 2, row
        with pytest.raises(BenchError, match="unknown packet-rate row"):
            bench.measure("nat-dpdk")
        # the topology is still usable after a refused row
        again = bench.measure("generator")
        setup = bench.setup()
        pids = [p.pid for p in bench.hosts.procs]
    for row, m in {**got, "generator again": again}.items():
        assert m["pps"] > 1000, (row, m)
        assert 0 < m["delivered"] <= m["sent"], (row, m)
    # busy polling on CPU 1: the engine's loop is there, not on CPU 0
    assert got["dr-xdp"]["cpu1_busy"] > 0.5, got["dr-xdp"]
    assert set(setup["rows"]) == set(ROWS)
    assert setup["generator"]["cpu"] == 0 and setup["forwarder_cpu"] == 1
    assert not [n for n in netns.listnetns() if n.startswith(name)]
    assert not [p for p in pids if alive(p)]
    assert not os.path.exists(f"/run/netns/{name}-lb")
