"""wrk, the HTTP load of the bench's HTTP rows: its report read
(``parse_wrk``), and one run through a lab measured (``measure``): the
requests, their latency, and what the balancer's CPU and interfaces did
meanwhile.

The accounting: a row's balancer CPU is LB_CPU's busy time (/proc/stat:
user, system, irq, softirq) during the wrk run, per 1000 requests; its
packets are the frames received on the lb namespace's interfaces
(rtnetlink rx_packets; on veth that includes the frames an XDP program
redirects to AF_XDP), per request.  The rest (the processes' own CPU time,
NET_RX softirqs, drops) goes in a detail dict, to cross-check it.
"""

import os
import re

from .system import (LB_CPU, LOAD_CPU, BenchError, CpuTimes,
                     backlog_drops, lb_drops, link_rx,
                     net_rx_softirqs, pin_self, proc_cpu)

__all__ = ["parse_wrk", "measure"]

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"wrk: unreadable latency {text!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(out: str) -> dict:
    """wrk --latency's report: requests, rps, p50_ms, p99_ms, errors (socket
    errors and non-2xx/3xx responses).  BenchError if a figure is
    missing."""
    def need(pattern, what):
        m = re.search(pattern, out, re.M)
        if not m:
            raise BenchError(f"wrk printed no {what}:\n{out.strip()}")
        return m.group(1)

    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                  r"timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return {"requests": int(need(r"^\s*(\d+) requests in", "request count")),
            "rps": float(need(r"^Requests/sec:\s*([\d.]+)", "Requests/sec")),
            "p50_ms": _ms(need(r"^\s*50%\s+(\S+)", "50% latency")),
            "p99_ms": _ms(need(r"^\s*99%\s+(\S+)", "99% latency")),
            "errors": errors}


def measure(lab, url, seconds, wrk, connections, procs=None, engine_rx=None,
            label=None, log=print, probe=None, close=False) -> tuple:
    """One run of ``wrk`` (its path) from the lab's client to ``url`` for
    ``seconds`` with ``connections`` connections, one thread, on LOAD_CPU:
    (the row's figures, the detail of what was counted).

    ``procs``: {label: pid} of the balancer's processes and NAPI kthreads,
    whose own CPU time goes in the detail (a cross-check of LB_CPU's
    total); ``engine_rx``: reads pyfwd's own frame counter, to compare with
    the links'.  ``log`` says what looks wrong (other load on LB_CPU,
    frames lost).  ``probe``: a pyfwd.bench.observe.Probe watching the
    balancer over the same run (detail["observed"]).  ``close``: every
    request on a new connection (Connection: close) instead of wrk's
    keep-alive connections.  BenchError if wrk fails or completes no
    request."""
    label = label or url
    argv = [wrk, "--latency", "-t1", f"-c{connections}", f"-d{seconds:g}s",
            "--timeout", "5s"] + (["-H", "Connection: close"] if close
                                  else []) + [url]
    procs = procs or {}
    # This thread (and the helpers it starts: lab.run's fork, lab.call's
    # thread) stays off the balancer's CPU while it counts.
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {LOAD_CPU})
    try:
        e0 = engine_rx() if engine_rx else None
        p0 = {k: proc_cpu(pid) for k, pid in procs.items()}
        rx0, cpu0 = link_rx(lab), CpuTimes.now()
        sirq0, drop0 = net_rx_softirqs(), backlog_drops()
        lost0 = lb_drops(lab)
        if probe:
            probe.start()
        r = lab.run("client", argv, capture_output=True, text=True,
                    timeout=seconds + 60, preexec_fn=pin_self(LOAD_CPU))
        cpu1, sirq1 = CpuTimes.now(), net_rx_softirqs()
        seen = probe.stop() if probe else None
        drop1 = backlog_drops()
        rx1, lost1 = link_rx(lab), lb_drops(lab)
        p1 = {k: proc_cpu(pid) for k, pid in procs.items()}
        e1 = engine_rx() if engine_rx else None
    finally:
        os.sched_setaffinity(0, mask)
    if r.returncode:
        raise BenchError(f"wrk {url} failed: {r.stderr.strip()}")
    w = parse_wrk(r.stdout)
    if w["requests"] <= 0:
        raise BenchError(f"wrk {url}: no request completed:\n{r.stdout}")
    k = w["requests"] / 1000
    pkts = sum(rx1.get(i, 0) - rx0.get(i, 0) for i in rx1)
    detail = {
        "row": label, "url": url, "requests": w["requests"],
        "errors": w["errors"],
        "cpu1_s": cpu1.since(cpu0, LB_CPU),
        "cpu1_softirq_s": cpu1.softirq_since(cpu0, LB_CPU),
        "cpu0_s": cpu1.since(cpu0, LOAD_CPU),
        "procs_s": {k: p1[k] - p0[k] for k in procs},
        "net_rx_softirqs": {f"cpu{i}": b - a for i, (a, b) in
                            enumerate(zip(sirq0, sirq1))},
        "backlog_drops": {f"cpu{i}": b - a for i, (a, b) in
                          enumerate(zip(drop0, drop1))},
        "lb_drops": {k: lost1[k] - lost0.get(k, 0) for k in lost1},
        "lb_rx": {i: rx1[i] - rx0.get(i, 0) for i in rx1},
        "wall_s": cpu1.at - cpu0.at}
    # what is known to be the balancer's: its processes, its NAPI
    # kthreads, softirq on CPU 1.  On a quiet machine this is CPU 1's
    # busy time; much less means something else ran on CPU 1.
    detail["attributed_s"] = sum(detail["procs_s"].values()) + \
        detail["cpu1_softirq_s"]
    other = detail["cpu1_s"] - detail["attributed_s"]
    if procs and other > 0.1 + 0.2 * detail["cpu1_s"]:
        log(f"http bench: warning: {label}: CPU {LB_CPU} was busy "
            f"{detail['cpu1_s']:.2f} s, the balancer's processes and "
            f"softirq account for {detail['attributed_s']:.2f} s: other "
            f"load on CPU {LB_CPU}?")
    lost = {**detail["lb_drops"],
            **{f"{c} backlog full": n
               for c, n in detail["backlog_drops"].items()}}
    if max(lost.values(), default=0) > 0.001 * pkts:
        log(f"http bench: warning: {label}: frames lost (the balancer "
            f"received {pkts}; counters overlap): "
            f"{ {k: n for k, n in lost.items() if n} }")
    if engine_rx:
        detail["engine_rx"] = e1 - e0
    if seen:
        detail["observed"] = seen
    return {"rps": w["rps"], "p50_ms": w["p50_ms"], "p99_ms": w["p99_ms"],
            "cpu_s_per_1k": cpu1.since(cpu0, LB_CPU) / k,
            "lb_pkts_per_req": pkts / w["requests"]}, detail
