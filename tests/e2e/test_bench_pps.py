"""The packet-rate rows of `pyfwd bench` (pyfwd.bench.pps), run briefly:
the generator's ceiling, the in-kernel XDP MAC swap and pyfwd DR on AF_XDP
deliver packets, never more than were sent, the forwarder's work lands on
CPU 1, a bad row is refused, and nothing is left behind.  Every row climbs
down the same ladder of offered loads, and each window says where the
forwarder's time went (its threads by name, its AF_XDP sockets'
XDP_STATISTICS, busy polling).  Root."""

import os

import pytest
from pyroute2 import netns

from pyfwd.bench.observe import XSK_FIELDS
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
    with PpsBench(seconds=1.0, warmup=0.5, log=lines.append,
                  fractions=(0.6, 0.3)) as bench:
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
        details = {}
        for d in bench.details:         # the first run of each row
            details.setdefault(d["row"], d)
        loads = list(bench.loads)
        pids = [p.pid for p in bench.hosts.procs]
    for row, m in {**got, "generator again": again}.items():
        assert m["pps"] > 1000, (row, m)
        assert 0 < m["delivered"] <= m["sent"], (row, m)
    # busy polling on CPU 1: the engine's loop is there, not on CPU 0
    assert got["dr-xdp"]["cpu1_busy"] > 0.5, got["dr-xdp"]
    assert set(setup["rows"]) == set(ROWS)
    assert setup["generator"]["cpu"] == 0 and setup["forwarder_cpu"] == 1
    _same_ladder(loads, setup, got, details)
    _observed(got, details)
    assert not [n for n in netns.listnetns() if n.startswith(name)]
    assert not [p for p in pids if alive(p)]
    assert not os.path.exists(f"/run/netns/{name}-lb")


def _same_ladder(loads, setup, got, details):
    """Every row was offered the ladder's loads, top down, and stopped at
    the first it kept up with; full speed and best apart."""
    assert len(loads) == 3 and loads[0] == 0 and loads[1] > loads[2] > 0
    assert setup["ladder"]["loads_pps"] == loads
    for row, d in details.items():
        tried = [t["offered_pps"] for t in d["ladder"]]
        assert tried == loads[:len(tried)], (row, tried)
        assert [t["kept_up"] for t in d["ladder"]][:-1] == \
            [False] * (len(tried) - 1), (row, d["ladder"])
        m = got[row]
        assert m["rungs"] == len(tried)
        assert m["full_pps"] == d["ladder"][0]["pps"], row
        assert m["pps"] == max(t["pps"] for t in d["ladder"]), row
        assert m["saturated"] == (0 if d["ladder"][0]["kept_up"] else 1)


def _observed(got, details):
    """What each window saw of the forwarder."""
    dr, full = got["dr-xdp"], details["dr-xdp"]["full"]
    # the engine's C loop by its name, its Python threads apart, the NAPI
    # kthread of L0: all on CPU 1's account
    names = {t["name"]: t["kind"] for t in full["threads"]}
    assert names.get("pyfwd-xsk-q0") == "loop", names
    assert "napi" in names.values() and "python" in names.values(), names
    assert full["cpu"]["loop"] > 0.05 and full["cpu"]["napi"] > 0.01, full
    assert full["cpu"]["python"] < full["cpu"]["loop"], full
    assert dr["full_cpu_loop"] == full["cpu"]["loop"]
    # its AF_XDP socket, read from outside: frames came, counters moved
    # only forward, and what it dropped is at most what was not delivered
    assert full["xsk"]["sockets"] == 1, full["xsk"]
    assert all(full["xsk"][f] >= 0 for f in XSK_FIELDS), full["xsk"]
    lost = sum(full["xsk"][f] for f in ("rx_dropped", "rx_ring_full",
                                         "rx_invalid_descs"))
    sent = details["dr-xdp"]["ladder"][0]["sent_pps"] * full["seconds"]
    assert lost <= sent, (lost, sent)
    assert {f"xsk_{f}_ps" for f in XSK_FIELDS} <= set(dr)
    # busy polling as set up (20 µs, preferred), and the judgement follows
    # from what was seen
    bp = full["busy_poll"]
    assert bp["so_busy_poll_us"] == 20 and bp["prefer"] == 1, bp
    assert bp["engaged"] == (any(bp["napi_ids"]) and
                             bp["rx_packets"] > 0), bp
    assert dr["full_busy_poll"] == (1.0 if bp["engaged"] else 0.0)
    # the in-kernel MAC swap has no socket and no loop: all NAPI
    xk = details["xdp-kernel"]["full"]
    assert xk["xsk"]["sockets"] == 0 and "loop" not in xk["cpu"], xk
    assert xk["cpu"]["napi"] > 0.05, xk
    assert not [k for k in got["xdp-kernel"] if k.startswith("xsk_")]
