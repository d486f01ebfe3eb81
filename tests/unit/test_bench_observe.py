"""pyfwd bench's report shape (issue 18, point 1), the parts that need no
root: the row tables, the ladder of offered loads, the serpentine order,
what a window's observation reads and how results.md shows it."""

import os
import threading
import time

import pytest

from pyfwd.bench import ladder, observe, results, rows, run
from pyfwd.bench.results import Results

NETSTAT = """\
TcpExt: SyncookiesSent BusyPollRxPackets TCPAutoCorking
TcpExt: 0 1234 5
IpExt: InNoRoutes
IpExt: 0
"""


def test_rows_are_one_table_each_and_interleaved():
    assert len(set(rows.PPS_ROWS)) == len(rows.PPS_ROWS)
    assert len(set(rows.HTTP_ROWS)) == len(rows.HTTP_ROWS)
    for r in rows.PPS:
        # a pyfwd row is compared with a reference run just before it
        if r.ref:
            assert r.ref in rows.PPS_REFS, r
            assert rows.PPS_ROWS.index(r.ref) < rows.PPS_ROWS.index(r.name)
    # not all references first
    kinds = [r.kind == "pyfwd" for r in rows.PPS]
    assert kinds != sorted(kinds)
    for r in rows.HTTP:
        assert r.balancer in rows.BALANCERS and r.ref in rows.HTTP_ROWS, r
    assert rows.http_row("http-nat-close-1k").conn == "close"
    assert rows.http_row("http-nat-close-1k").ref == \
        "http-kernel-nat-close-1k"
    # each pyfwd balancer runs right after its reference
    order = rows.balancer_order(rows.HTTP_ROWS)
    assert order.index("nat") == order.index("kernel-nat") + 1
    # the NAT loop's ways of waiting (--poll), beside it, one row each
    assert order[order.index("nat"):][:3] == ["nat", "nat-busy",
                                              "nat-adaptive"]
    assert rows.http_row("http-nat-adaptive-1m").ref == "http-kernel-nat-1m"
    assert rows.BALANCERS["nat-busy"].extra[-2:] == ("--poll", "busy")
    assert order.index("dr") == order.index("haproxy-tcp") + 1
    assert rows.balancer_order(["http-snat-1k", "http-nat-1m"]) == \
        ["nat", "snat"]
    with pytest.raises(KeyError):
        rows.pps_row("dr-dpdk")


def test_serpentine_goes_back_on_odd_runs():
    assert run.serpentine(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert run.serpentine(["a", "b", "c"], 1) == ["c", "b", "a"]
    assert run.select("http-*-close-*") == [
        "http-nat-close-1k", "http-kernel-nat-close-1k",
        "http-nat-close-100k", "http-kernel-nat-close-100k",
        "http-nat-busy-close-1k", "http-nat-busy-close-100k",
        "http-nat-adaptive-close-1k", "http-nat-adaptive-close-100k",
        "http-nat-fastpath-close-1k", "http-nat-fastpath-close-100k",
        "http-kernel-nat-wire-close-1k", "http-kernel-nat-wire-close-100k"]


def test_ladder_rungs_are_the_same_for_every_row():
    assert ladder.rungs(1000, (0.8, 0.5)) == [0, 800, 500]
    with pytest.raises(ValueError, match="ceiling"):
        ladder.rungs(0)
    with pytest.raises(ValueError, match="falling"):
        ladder.rungs(1000, (0.5, 0.8))
    with pytest.raises(ValueError, match="falling"):
        ladder.rungs(1000, (1.2,))


def _fake(limit, livelock):
    """A forwarder that delivers min(offered, limit), less when
    overloaded at full speed (rate 0 = 1000 sent)."""
    def window(rate, i):
        sent = rate or 1000
        got = min(sent, limit) if sent <= limit else limit * livelock
        return {"pps": got, "sent_pps": sent}
    return window


def test_climb_stops_at_the_first_load_kept_up_and_keeps_both_figures():
    loads = ladder.rungs(1000, (0.8, 0.6, 0.4, 0.2))
    full, best, tried = ladder.climb(_fake(650, 0.5), loads)
    assert [t["offered_pps"] for t in tried] == [0, 800, 600]
    assert full["pps"] == 325 and best["pps"] == 600
    assert [t["kept_up"] for t in tried] == [False, False, True]
    # kept up at full speed: one window, full = best
    full, best, tried = ladder.climb(_fake(5000, 0.5), loads)
    assert len(tried) == 1 and full is best
    # never kept up: every rung tried, the best kept
    full, best, tried = ladder.climb(_fake(100, 0.9), loads)
    assert len(tried) == len(loads) and best["pps"] == 90


def test_thread_kinds_from_names():
    assert observe.kind_of("napi/L0-8193", "kernel") == "napi"
    assert observe.kind_of("ksoftirqd/1", "kernel") == "ksoftirqd"
    assert observe.kind_of("pyfwd-xsk-q0", "engine") == "loop"
    assert observe.kind_of("pyfwd-afp-q0", "engine") == "loop"
    assert observe.kind_of("python3", "engine") == "python"
    assert observe.kind_of("haproxy", "ref") == "ref"
    assert observe.busy_poll_rx(NETSTAT) == 1234
    assert observe.busy_poll_rx("IpExt: a\nIpExt: 1\n") == 0


def test_probe_times_each_thread_of_a_process():
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass
    t = threading.Thread(target=spin, daemon=True)
    t.start()
    counts = iter(range(0, 10**6, 100))
    p = observe.Probe({os.getpid(): "engine"}, netstat=lambda: NETSTAT,
                      rx=lambda: next(counts))
    try:
        p.start()
        time.sleep(0.3)
        seen = p.stop()
    finally:
        stop.set()
        t.join()
    assert 0.25 < seen["seconds"] < 2
    tids = {r["tid"] for r in seen["threads"]}
    assert t.native_id in tids and threading.get_native_id() in tids
    spun = [r for r in seen["threads"] if r["tid"] == t.native_id][0]
    assert spun["kind"] == "python" and spun["cpu_s"] > 0.05, spun
    assert seen["cpu"]["python"] >= spun["share"]
    # no AF_XDP socket here: none counted, busy polling not engaged
    assert seen["xsk"]["sockets"] == 0
    assert seen["busy_poll"] == {"so_busy_poll_us": 0, "prefer": 0,
                                 "napi_ids": [], "rx_packets": 0,
                                 "share": 0.0, "engaged": False}
    assert seen["rx_frames"] == 100
    figs = observe.summary(seen, "full_")
    assert figs["full_busy_poll"] == 0.0 and "full_cpu_python" in figs
    assert not [k for k in figs if k.startswith("full_xsk_")]


def _observed(res, name, prefix=""):
    res.add(name, {prefix + "cpu_napi": 0.25, prefix + "cpu_loop": 0.5,
                   prefix + "cpu_python": 0.01, prefix + "busy_poll": 0.0,
                   prefix + "busy_poll_share": 0.0,
                   **{f"{prefix}xsk_{f}_ps": 10.0
                      for f in observe.XSK_FIELDS}})


def test_markdown_gives_full_speed_and_best_apart_with_the_breakdown():
    res = Results({"repeats": 1})
    res.add("xsk-minimal", {"pps": 600_000, "full_pps": 200_000,
                            "offered_pps": 610_000, "saturated": 1,
                            "rungs": 3, "cpu1_busy": 1.0,
                            "full_cpu1_busy": 0.99})
    res.add("dr-xdp", {"pps": 500_000, "full_pps": 450_000,
                       "offered_pps": 520_000, "saturated": 1, "rungs": 4})
    _observed(res, "dr-xdp")
    _observed(res, "dr-xdp", "full_")
    res.add("xdp-kernel", {"pps": 1_000_000, "full_pps": 1_000_000,
                           "saturated": 0, "rungs": 1, "cpu_napi": 0.7})
    md = results.markdown(res)
    assert ("| dr-xdp | 500,000 | 0.83x | 0.50x | 450,000 | 520,000 | 4 |"
            in md)
    assert "| xdp-kernel (kept up) | 1,000,000 |" in md
    assert "### Where the forwarder's time went" in md
    # two windows for a saturated row, one for a row that kept up
    assert "| dr-xdp | best | 520,000 | 500,000 | — | — | 25% | 50% | 1% " \
           "| — | — | — | 30.0 | 10.0 | 10.0 | no (0%) |" in md
    assert "| dr-xdp | full speed |" in md
    assert "| xdp-kernel | full speed |" not in md
    assert "| xdp-kernel | best | — | 1,000,000 | — | — | 70% |" in md
    # CPU 1 busy, nothing watched: all of it is other load
    assert "| xsk-minimal | full speed | — | 200,000 | 99% | — | — | — | " \
           "— | — | — | 99% |" in md


def test_markdown_http_breakdown_and_close_rows_against_their_reference():
    res = Results({"repeats": 1})
    for name, cpu in (("http-kernel-nat-close-1k", 0.02),
                      ("http-nat-close-1k", 0.05), ("http-nat-1k", 0.01),
                      ("http-kernel-nat-1k", 0.02)):
        res.add(name, {"rps": 10_000, "p50_ms": 1.0, "p99_ms": 2.0,
                       "cpu_s_per_1k": cpu, "lb_pkts_per_req": 2.0,
                       "cpu1_softirq": 0.1})
    _observed(res, "http-nat-1k")
    md = results.markdown(res)
    # a close row is compared with the kernel's NAT, closing too
    assert "| http-nat-close-1k | 10,000 | 1.00 | 2.00 | 0.0500 | 2.50x |" \
        in md
    assert "### Where the balancer's time went" in md
    # 10% busy, 10% softirq and 76% in threads: no other load seen
    assert "| http-nat-1k | 10,000 | 10% | 10% | 25% | 50% | 1% | — | — " \
           "| 0% | 30.0 | 10.0 | 10.0 | no (0%) |" in md
    assert "| http-kernel-nat-1k | 10,000 | 20% | 10% | — |" in md
    tg = [t for t in results.targets(res) if "one connection per request"
          in t.what]
    # the fast path's close row not run: named, not judged
    assert [(t.met, t.measured[:5]) for t in tg] == [(None, "not m"),
                                                     (False, "2.50x")]


def test_probe_keeps_the_window_when_a_counter_cannot_be_read():
    def broken():
        raise OSError(2, "No such file or directory")
    p = observe.Probe({os.getpid(): "engine"}, netstat=broken, rx=broken)
    p.start()
    seen = p.stop()
    assert "rx_packets" not in seen["busy_poll"] and "rx_frames" not in seen
    assert seen["busy_poll"]["engaged"] is False
    assert len(seen["errors"]) == 4 and "netstat" in seen["errors"][0]
    assert seen["threads"]
