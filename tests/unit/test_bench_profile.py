"""pyfwd bench --perf: perf report's text read into rows, the rows into
results.md's section, and the window's figures kept when perf fails."""

import os
import time

import pytest

from pyfwd.bench import profile, results
from pyfwd.bench.breakdown import perf_lines
from pyfwd.bench.results import Results
from pyfwd.bench.system import BenchError

REPORT = """\
# Samples: 4K of event 'cpu-clock:pppH'
# Overhead  Command          Symbol
# ........  ...............  ......
#
    41.20%  napi/eth0-8193   [k] veth_xdp_rcv
    13.42%  pyfwd-xsk-q0     [.] pyfwd_core_burst
     9.00%  swapper          [k] pv_native_safe_halt
     0.61%  napi/eth1-8194   [k] bpf_prog_6deef7357e7b4530_steer
not a row at all
#
# (Tip: Skip collecting build-id when recording: perf record -B)
"""


def test_report_rows_largest_first_with_thread_and_side():
    top = profile.parse_report(REPORT, top=3)
    assert top == [
        {"share": 0.412, "comm": "napi/eth0-8193", "where": "kernel",
         "sym": "veth_xdp_rcv"},
        {"share": 0.1342, "comm": "pyfwd-xsk-q0", "where": "user",
         "sym": "pyfwd_core_burst"},
        {"share": 0.09, "comm": "swapper", "where": "kernel",
         "sym": "pv_native_safe_halt"}]
    assert len(profile.parse_report(REPORT)) == 4
    assert profile.parse_report("# only comments\n") == []


def _info(perf_http, perf_pps):
    return {"http_setup": {"runs": [
                {"row": "http-nat-fastpath-1k",
                 "observed": {"perf": perf_http}},
                {"row": "http-nat-fastpath-1k",       # a later run
                 "observed": {"perf": {"error": "not this one"}}}]},
            "pps_setup": {"runs": [
                {"row": "dr-xdp", "best": "full",
                 "full": {"perf": perf_pps}}]}}


def test_results_md_names_the_functions_of_each_rows_first_window():
    res = Results(_info({"top": profile.parse_report(REPORT), "hz": 999},
                        {"error": "perf record did not stop"}))
    md = "\n".join(perf_lines(res))
    assert "### Where CPU 1's time went, by function (perf)" in md
    assert ("| http-nat-fastpath-1k | 41% veth_xdp_rcv (napi/eth0-8193); "
            "13% pyfwd_core_burst (pyfwd-xsk-q0)") in md
    assert "not this one" not in md
    # a window perf failed in says so; the row is still named
    assert "| dr-xdp | perf: perf record did not stop |" in md
    assert "by function (perf)" in results.markdown(res)
    # no --perf: no section
    assert perf_lines(Results({})) == []


def test_perf_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(profile.shutil, "which", lambda name: None)
    with pytest.raises(BenchError, match="apt-get install linux-perf"):
        profile.Perf(1, str(tmp_path))


def test_stop_without_start_and_a_perf_that_fails(monkeypatch, tmp_path):
    monkeypatch.setattr(profile.shutil, "which", lambda name: "/bin/false")
    p = profile.Perf(1, str(tmp_path))
    assert p.stop() == {"error": "perf was not started"}
    # /bin/false exits 1 at once: the window gets an error, no exception
    monkeypatch.setattr(profile, "pin_self", lambda cpu: None)
    p.start()
    p._proc.wait(timeout=5)
    out = p.stop()
    assert out["error"].startswith("perf record")


def test_stop_returns_top_functions_with_a_real_perf(tmp_path):
    """perf(1) from linux-perf (tools/run installs it); perf record -C
    needs root (CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("perf record -C needs root")
    cpu = min(os.sched_getaffinity(0))
    p = profile.Perf(cpu, str(tmp_path), hz=499)
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        p.start()
        time.sleep(0.5)                         # perf opens its events
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:      # something to sample
            sum(i * i for i in range(10_000))
        out = p.stop()
    finally:
        os.sched_setaffinity(0, mask)
    assert "top" in out, out
    assert out["top"] and all(0 < t["share"] <= 1 for t in out["top"])
    assert any(t["comm"].startswith("python") for t in out["top"]), out


def test_cpu_time_is_wall_less_idle_and_unsampled_busy_is_softirq():
    """A tickless kernel without IRQ time accounting samples busy time on
    ticks only: softirq work on a mostly idle CPU is missed by the busy
    fields but not by the idle clock (bench.system.CpuTimes)."""
    from pyfwd.bench.system import CpuTimes
    t0 = CpuTimes({1: 100.0}, {1: 50.0}, {1: 10.0}, at=0.0)
    # mostly idle: 0.5 s not idle, ticks saw 0.1 s of which 0.05 softirq
    t1 = CpuTimes({1: 104.5}, {1: 50.1}, {1: 10.05}, at=5.0)
    assert abs(t1.since(t0, 1) - 0.5) < 1e-9
    assert abs(t1.softirq_since(t0, 1) - 0.45) < 1e-9
    # busy all the time in tasks: the ticks saw it all
    t2 = CpuTimes({1: 100.0}, {1: 55.0}, {1: 11.0}, at=5.0)
    assert abs(t2.since(t0, 1) - 5.0) < 1e-9
    assert abs(t2.softirq_since(t0, 1) - 1.0) < 1e-9
    # the machine's own: between 0 and the wall time
    a = CpuTimes.now()
    time.sleep(0.2)
    b = CpuTimes.now()
    for cpu in a.idle:
        assert 0 <= b.softirq_since(a, cpu) <= b.since(a, cpu) \
            <= b.at - a.at + 1e-9
