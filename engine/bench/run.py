"""The harness behind `pyfwd bench`: picks the rows, runs each part's
rows in one run (microbenchmarks in process, then packet rates, then
HTTP), repeats them, and writes the results.

Repeats go round the rows (row A, B, C, then C, B, A: serpentine)
rather than row A three times: a slow minute on a shared machine then
spreads over all rows instead of sinking one, and a row and the reference
beside it (pyfwd.bench.rows interleaves them) share it.
"""

import fnmatch
import os
import platform
import shutil
import signal
import tempfile
import time
from datetime import datetime, timezone

from . import micro
from . import results as results_mod
from .micro import ROWS as MICRO_ROWS
from .http import HttpBench
from .observe import SUMMARY_NAMES
from .pps import PpsBench
from .results import Results
from .rows import (BALANCERS, HTTP, HTTP_ROWS, PPS, PPS_ROWS,
                   balancer_order, http_row)
from .system import BenchError, cpus
from .text import num

GROUPS = {"micro": MICRO_ROWS, "pps": PPS_ROWS, "http": HTTP_ROWS}
ALL_ROWS = MICRO_ROWS + PPS_ROWS + HTTP_ROWS

# (pps window s, wrk duration s, repeats) for a full and a quick run
FULL = (5.0, 5.0, 3)
QUICK = (3.0, 3.0, 1)


def select(only: str = None) -> list:
    """The rows ``only`` names, in run order: comma-separated row names,
    group names (micro, pps, http) or shell patterns (http-*-1m).
    Raises BenchError naming what matched nothing."""
    if not only:
        return list(ALL_ROWS)
    chosen = set()
    for word in (w.strip() for w in only.split(",")):
        if not word:
            continue
        hit = set(GROUPS.get(word, ())) or set(fnmatch.filter(ALL_ROWS,
                                                              word))
        if not hit:
            raise BenchError(f"--only: no row is named {word!r}; rows: "
                             f"{', '.join(ALL_ROWS)} (groups: micro, pps, "
                             "http; patterns like http-*-1m)")
        chosen |= hit
    return [r for r in ALL_ROWS if r in chosen]


def preflight(rows: list) -> None:
    """What the chosen rows need, checked before anything is built."""
    if os.geteuid() != 0 and any(r not in MICRO_ROWS for r in rows):
        raise BenchError("pyfwd bench builds namespaces and attaches XDP "
                         "programs: run it as root (or --only micro)")
    if any(r not in MICRO_ROWS for r in rows) and len(cpus()) < 2:
        raise BenchError("pyfwd bench pins the load to one core and the "
                         "balancer to another: it needs 2 CPUs, this "
                         f"process may use {len(cpus())}")
    need = {}
    kinds = {BALANCERS[r.balancer].kind for r in HTTP if r.name in rows}
    kinds |= {r.kind for r in PPS if r.name in rows}
    if any(r in HTTP_ROWS for r in rows):
        need.update(wrk="wrk", nginx="nginx")
    if "haproxy" in kinds:
        need["haproxy"] = "haproxy"
    if "kernel-nat" in kinds:
        need["nft"] = "nftables"
    missing = [f"{tool} (apt-get install {pkg})"
               for tool, pkg in need.items()
               if not shutil.which(tool, path=os.environ.get("PATH", "") +
                                   ":/usr/sbin:/sbin")]
    if missing:
        raise BenchError("missing: " + ", ".join(missing))


def check_out(out: str) -> None:
    """``out`` is a directory the results can be written to, made if
    missing: tried with a file, before anything is measured.  Raises
    BenchError naming the directory and what is wrong."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise BenchError(f"--out {out}: exists and is not a directory")
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".pyfwd-bench-"):
            pass
    except OSError as exc:
        raise BenchError(f"--out {out}: cannot write the results there: "
                         f"{exc.strerror or exc}") from None


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"Linux {platform.release()}, {os.cpu_count()} CPUs"
            + (f" ({model})" if model else ""))


class _Progress:
    """Counts the steps and says each one; also the place where a stop
    asked for by a signal is honoured if the signal's KeyboardInterrupt
    was swallowed (raised inside a fork handler or a finalizer, Python
    only prints it)."""

    def __init__(self, total: int, log):
        self.total, self.done, self.log = total, 0, log
        self.t0 = time.monotonic()
        self.stop = False

    def step(self, what: str, figures: dict = None, error: str = None):
        self.done += 1
        t = time.monotonic() - self.t0
        if error:
            text = f"FAILED: {error}"
        else:
            text = ", ".join(f"{k} {num(v)}"
                             for k, v in (figures or {}).items())
        self.log(f"[{self.done}/{self.total} {t:4.0f}s] {what}: {text}")
        if self.stop:
            raise KeyboardInterrupt

    def handle_signals(self) -> dict:
        """SIGINT and SIGTERM unwind like Ctrl-C, so every `with` cleans
        up; the handlers they replace, to give back."""
        def handler(signum, frame):
            self.stop = True
            raise KeyboardInterrupt
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, handler)
            except ValueError:      # not the main thread
                pass
        return old


def _micro(rows, runs, repeats, res, progress):
    """Microbenchmark runs ``runs`` (numbers out of ``repeats``)."""
    for run in runs:
        for fig in micro.run_all(log=lambda *_: None, only=rows):
            res.add(fig["name"], {fig["metric"]: fig["value"]})
        progress.step(f"microbenchmarks (run {run + 1}/{repeats})",
                      {r: res.get(r, m) for r, m in
                       (("core-dr", "ns_per_pkt"),
                        ("core-nat-hit", "ns_per_pkt"),
                        ("maglev-1000", "build_ms")) if r in rows})


# observe.summary()'s figures and the full-speed window's: in results.md's
# breakdown, not in the progress lines
_OBSERVED = SUMMARY_NAMES + ("full_cpu", "full_xsk_", "full_busy_poll",
                             "cpu0_softirq", "cpu1_softirq")


def _record(res, progress, name, what, measure) -> None:
    """One run of one row: its figures recorded, or its failure."""
    try:
        figs = measure()
    except BenchError as exc:
        res.fail(name, str(exc))
        progress.step(what, error=str(exc))
        return
    res.add(name, figs)
    progress.step(what, {k: v for k, v in figs.items()
                         if not k.startswith(_OBSERVED)})


def serpentine(items: list, run: int) -> list:
    """``items`` in order on even runs, reversed on odd ones."""
    return list(items) if run % 2 == 0 else list(reversed(items))


def _pps(rows, repeats, seconds, res, progress, log, perf=False):
    with PpsBench(seconds=seconds, log=log, perf=perf) as bench:
        res.info["pps_setup"] = bench.setup()
        for run in range(repeats):
            for row in serpentine(rows, run):
                _record(res, progress, row,
                        f"pps {row} (run {run + 1}/{repeats})",
                        lambda: bench.measure(row))


def _http(rows, repeats, seconds, connections, res, progress, log,
          perf=False):
    with HttpBench(seconds=seconds, connections=connections,
                   log=log, perf=perf) as bench:
        res.info["http_setup"] = bench.setup()
        for run in range(repeats):
            for mode in serpentine(balancer_order(rows), run):
                mine = [http_row(n) for n in rows
                        if http_row(n).balancer == mode]
                try:
                    with bench.balancer(mode) as lb:
                        for r in mine:
                            _record(res, progress, r.name,
                                    f"{r.name} (run {run + 1}/{repeats})",
                                    lambda: lb.measure(r.size, r.conn))
                except BenchError as exc:
                    for r in mine:
                        res.fail(r.name, str(exc))
                        progress.step(f"{r.name} (run {run + 1}/"
                                      f"{repeats})", error=str(exc))


NOTES = [
    "Cores: the load (generator or wrk, the real servers, the switches) "
    "runs on CPU 0, the balancer on CPU 1; veth receive work is steered "
    "with threaded NAPI or RPS so that it lands on the core of the side "
    "that receives (see pps_setup and http_setup in results.json).",
    "Packet rates count what arrives at the receiving end (an XDP "
    "count-and-drop program), not what was sent.",
    "Rows run interleaved (each pyfwd row beside the reference it is "
    "compared with), in one direction on odd runs and the other on even "
    "ones. Every packet-rate row climbs down the same ladder of offered "
    "loads (full speed, then fixed fractions of the generator's ceiling, "
    "measured once per run: pps_setup.ladder) to the first it keeps up "
    "with; results.md gives the full-speed figure and the best apart.",
    "Per window (pyfwd.bench.observe): CPU time of each thread of the "
    "forwarder's processes and of the kernel threads doing its receive "
    "work (schedstat); the kernel's XDP_STATISTICS of its AF_XDP sockets, "
    "read from outside through pidfd_getfd for pyfwd and the references "
    "alike; busy polling judged engaged when a socket has SO_BUSY_POLL, a "
    "NAPI id, and the namespace's BusyPollRxPackets grew. Since Linux "
    "6.13 an AF_XDP socket gets its NAPI id at bind, in zero-copy mode "
    "only (commit \"xsk: Bring back busy polling support\"): in copy mode, "
    "as on veth, it has none and busy polling never engages (measured "
    "here: NAPI id 0, BusyPollRxPackets unchanged); the NAPI kthread does "
    "the receive work.",
    "HTTP rows run the engine in its wake-up mode (poll(), need_wakeup; "
    "busy polling off), except nat-busy and nat-adaptive (--busy-poll 20 "
    "with --poll busy, adaptive): where busy polling engages a busy loop "
    "burns its core whether it works or not; where it cannot (no NAPI id, "
    "as on veth) the loop sleeps in poll() when idle all the same.",
    "Balancer CPU is CPU 1's busy time (user, system, irq, softirq) over "
    "the wrk run, from /proc/stat; balancer packets are those received "
    "on the balancer's interfaces.",
    "With an XDP program on a veth its receive work runs in a NAPI "
    "kthread (threaded NAPI, pinned to the balancer's core at "
    "SCHED_FIFO, as a NIC's softirq would preempt the engine); without "
    "one (kernel NAT, HAProxy) in softirq on that core through RPS.",
]


def run(out: str, quick: bool = False, only: str = None,
        repeats: int = None, seconds: float = None, connections: int = 32,
        log=print, argv: list = None, perf: bool = False) -> Results:
    """Measure the rows ``only`` selects (all by default) and write
    results.{json,md,png} in ``out``.  Returns the Results; failed rows
    are listed in them (and in results.md).  Raises BenchError before
    building anything when the run cannot work; KeyboardInterrupt (or
    SIGTERM) still writes what was measured, then re-raises.  ``perf``:
    sample the balancer's CPU with perf(1) in every window
    (bench.profile)."""
    rows = select(only)
    preflight(rows)
    check_out(out)
    if perf and shutil.which("perf") is None:
        raise BenchError("--perf needs perf(1): apt-get install linux-perf")
    pps_s, http_s, n = QUICK if quick else FULL
    repeats = repeats or n
    res = Results({
        "command": " ".join(argv or ["pyfwd", "bench"]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "repeats": repeats,
        "title": f"pyfwd bench — {machine().split(' (')[0]}",
        "notes": NOTES,
    })
    micro = [r for r in rows if r in MICRO_ROWS]
    pps = [r for r in rows if r in PPS_ROWS]
    http = [r for r in rows if r in HTTP_ROWS]
    steps = repeats * ((1 if micro else 0) + len(pps) + len(http))
    progress = _Progress(steps, log)
    log(f"pyfwd bench: {len(rows)} rows, {repeats} run(s) each; "
        f"results in {out}")
    old = progress.handle_signals()
    try:
        # The microbenchmarks' runs are spread over the whole run (start,
        # after the packet rates, at the end): this VM's own speed moves
        # by 1.5x for minutes at a time, and they are judged on the best.
        slots = [list(range(repeats))] if not (pps or http) else \
            [list(range(repeats))[i::3] for i in range(3)]
        if micro:
            _micro(micro, slots[0], repeats, res, progress)
        if pps:
            _pps(pps, repeats, seconds or pps_s, res, progress, log, perf)
        if micro and len(slots) > 1:
            _micro(micro, slots[1], repeats, res, progress)
        if http:
            _http(http, repeats, seconds or http_s, connections, res,
                  progress, log, perf)
        if micro and len(slots) > 2:
            _micro(micro, slots[2], repeats, res, progress)
    except KeyboardInterrupt:
        res.info["interrupted"] = True
        log("interrupted: writing what was measured")
        results_mod.write(res, out)
        raise
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    results_mod.write(res, out)
    return res


def main_table(res: Results) -> str:
    """The table printed at the end: results.md without its notes."""
    text = results_mod.markdown(res)
    return text.split("\n## How it was measured")[0].rstrip() + "\n"

