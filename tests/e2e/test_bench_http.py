"""The HTTP rows of `pyfwd bench` (pyfwd.bench.http), short: wrk through
DR, NAT and HAProxy (TCP) to nginx in namespace labs.  Checks the figures
are figures, that the accounting sees what crosses the balancer (DR's
responses bypass it, NAT's do not; XDP-redirected frames are counted), and
that everything is removed, also when the run is interrupted; and what each
run saw of the balancer (its threads by name, its AF_XDP sockets'
XDP_STATISTICS as pyfwd's own `ctl stats` reports them, busy polling off in
the wake-up mode), and that the -close- rows open a connection per
request.  Root; needs wrk, nginx, haproxy and nft."""

import os

import pytest
from pyroute2 import netns

from pyfwd.bench.http import HttpBench
from pyfwd.bench.observe import XSK_FIELDS, xsk_sockets
from pyfwd.bench.system import BenchError, napi_threads
from pyfwd.control.server import Client

from .procs import alive

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def _sane(row):
    assert set(row) >= {"rps", "p50_ms", "p99_ms", "cpu_s_per_1k",
                        "lb_pkts_per_req", "busy_poll"}, row
    assert all(isinstance(v, float) for v in row.values()), row
    assert row["rps"] > 0, row
    assert row["p99_ms"] >= row["p50_ms"] > 0, row
    assert row["cpu_s_per_1k"] >= 0, row


def _pinned_napi(row):
    """The balancer's NAPI kthreads exist and run on CPU 1 only."""
    assert row.napi, "no threaded NAPI for the XDP interfaces"
    pids = [pid for pid, name in napi_threads().items() if name in row.napi]
    assert pids, row.napi
    for pid in pids:
        assert os.sched_getaffinity(pid) == {1}, pid
        assert os.sched_getscheduler(pid) == os.SCHED_FIFO, pid


def _xdp_counted(hb, row):
    """rtnetlink's rx_packets on the lb counts what XDP redirected to the
    engine: not fewer than pyfwd's own count (FINs after the run's last
    read aside), and not many more (ARP; frames an AF_XDP ring had no room
    for when the engine's core was busy)."""
    d = hb.details[-1]
    through = sum(d["lb_rx"].values())
    assert d["engine_rx"] * 0.99 - 50 <= through, d
    assert through <= d["engine_rx"] * 1.1 + 50, d


def _pyfwd_observed(hb, row):
    """pyfwd in its wake-up mode: its C loop by name, Python threads apart,
    its AF_XDP sockets read, busy polling off."""
    seen = hb.details[-1]["observed"]
    kinds = {t["name"]: t["kind"] for t in seen["threads"]}
    assert kinds.get("pyfwd-xsk-q0") == "loop", kinds
    assert "python" in kinds.values() and "napi" in kinds.values(), kinds
    assert seen["cpu"]["loop"] > 0, seen["cpu"]
    assert seen["xsk"]["sockets"] >= 1, seen["xsk"]
    assert seen["busy_poll"]["so_busy_poll_us"] == 0, seen["busy_poll"]
    assert seen["busy_poll"]["engaged"] is False
    assert row["busy_poll"] == 0.0 and "cpu_loop" in row, row
    assert {f"xsk_{f}_ps" for f in XSK_FIELDS} <= set(row), row


def _same_as_ctl_stats(b):
    """The sockets' counters read from outside are the ones the engine
    reports itself (`ctl stats`), read just before and just after."""
    def ctl():
        with Client(b.sock, timeout=5.0) as c:
            socks = c.call("stats")["sockets"]["xdp"]
        return {f: sum(s[f] for s in socks) for f in XSK_FIELDS}, len(socks)
    (before, n), outside = ctl(), xsk_sockets(b.pid)
    after, _ = ctl()
    assert len(outside) == n, (outside, n)
    for f in XSK_FIELDS:
        assert before[f] <= sum(s[f] for s in outside) <= after[f], f


def test_http_rows_and_cleanup(new_name):
    prefix = new_name()
    hb = HttpBench(seconds=1.0, connections=8, log=lambda *a: None,
                   prefix=prefix)
    with pytest.raises(BenchError, match="outside"):
        with hb.balancer("dr"):
            pass
    engine_pid = None
    with pytest.raises(KeyboardInterrupt):
        with hb:
            facts = hb.setup()
            assert "need_wakeup" in facts["engine"]["mode"]
            # nothing on the balancer's path: no packets through it
            assert facts["calibration"]["lb_pkts_per_req"] < 0.01, facts
            with pytest.raises(BenchError, match="unknown HTTP bench mode"):
                with hb.balancer("ipvs"):
                    pass
            with hb.balancer("dr") as b:
                _pinned_napi(b)
                dr = {s: b.measure(s) for s in ("1k", "100k")}
                _xdp_counted(hb, b)
                _pyfwd_observed(hb, dr["100k"])
                _same_as_ctl_stats(b)
                with pytest.raises(BenchError, match="unknown HTTP bench "
                                                     "size"):
                    b.measure("10m")
            with hb.balancer("haproxy-tcp") as b:
                tcp = b.measure("1k")
                seen = hb.details[-1]["observed"]
                # HAProxy's own threads are the reference's; no AF_XDP
                assert seen["cpu"].get("ref", 0) > 0, seen["cpu"]
                assert seen["xsk"]["sockets"] == 0
                assert not [k for k in tcp if k.startswith("xsk_")]
            nginx = [p.pid for p in hb.servers]
            with hb.balancer("nat") as b:
                _pinned_napi(b)
                nat = {s: b.measure(s) for s in ("1k", "100k")}
                _xdp_counted(hb, b)
                _pyfwd_observed(hb, nat["1k"])
                close = b.measure("1k", "close")
                assert hb.details[-1]["row"] == "http-nat-close-1k"
                with pytest.raises(BenchError, match="connection kind"):
                    b.measure("1k", "pipelined")
                engine_pid = b.pid
                raise KeyboardInterrupt     # Ctrl-C in the middle of a run
    for row in (*dr.values(), *nat.values(), tcp, close):
        _sane(row)
    # a connection per request: its handshake and close cross the
    # balancer too (keep-alive: one request, one response)
    assert nat["1k"]["lb_pkts_per_req"] < 2.5, nat
    assert close["lb_pkts_per_req"] > 5, close
    # every request crosses the balancer at least once
    assert dr["1k"]["lb_pkts_per_req"] >= 1, dr
    # a 100 KB response is ~70 segments: NAT carries them, DR does not
    assert nat["100k"]["lb_pkts_per_req"] > 50, nat
    assert dr["100k"]["lb_pkts_per_req"] * 5 < \
        nat["100k"]["lb_pkts_per_req"], (dr, nat)
    # the interrupt removed everything
    assert not [n for n in netns.listnetns() if n.startswith(prefix)]
    assert not alive(engine_pid)
    assert not [p for p in nginx if alive(p)]
    assert hb.tmp is None
