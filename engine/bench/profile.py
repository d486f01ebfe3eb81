"""Where the forwarding core's time goes, by function (`pyfwd bench
--perf`): perf(1) samples the balancer's CPU through each measured window
(`perf record -C CPU`, the CPU's whole time: the engine's threads, NAPI
kthreads, softirq, the BPF programs, idle as "swapper"), and the top
functions go in the window's detail beside observe.Probe's thread times.

    p = Perf(cpu=1, workdir="/tmp/x")       # BenchError if perf is missing
    p.start(); ...; top = p.stop()          # {"top": [...]} or {"error": ...}

perf runs on the load's CPU, not the one it watches; its sampling costs
the watched CPU about 1% at the default rate.
"""

import os
import re
import shutil
import signal
import subprocess

from .system import LOAD_CPU, BenchError, pin_self

__all__ = ["Perf", "parse_report", "HZ", "TOP"]

HZ = 999            # samples per second (odd: not in step with timers)
TOP = 12            # functions kept per window
STOP_TIMEOUT = 10.0
REPORT_TIMEOUT = 60.0

# "    13.42%  napi/eth0-8193   [k] veth_xdp_rcv"
_LINE = re.compile(r"^\s*(\d+\.\d+)%\s+(\S+(?: \S+)*?)\s+\[(.)\]\s+(.+?)\s*$")


def parse_report(text: str, top: int = TOP) -> list:
    """The rows of `perf report --stdio --sort comm,sym`: [{"share"
    (of the CPU's samples, 0-1), "comm", "where" ("kernel" | "user"),
    "sym"}], the largest first, at most ``top``.  Lines of any other shape
    (headers, comments) are skipped."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        share, comm, where, sym = m.groups()
        out.append({"share": round(float(share) / 100, 4), "comm": comm,
                    "where": "kernel" if where == "k" else "user",
                    "sym": sym})
    out.sort(key=lambda r: -r["share"])
    return out[:top]


class Perf:
    """perf record on ``cpu`` between start() and stop()."""

    def __init__(self, cpu: int, workdir: str, hz: int = HZ,
                 top: int = TOP):
        self.perf = shutil.which("perf")
        if self.perf is None:
            raise BenchError("--perf needs perf(1): apt-get install "
                             "linux-perf")
        self.cpu, self.hz, self.top = cpu, hz, top
        self.data = os.path.join(workdir, f"perf-cpu{cpu}.data")
        self._proc = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [self.perf, "record", "-q", "-C", str(self.cpu), "-F",
             str(self.hz), "-o", self.data],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=pin_self(LOAD_CPU))

    def stop(self) -> dict:
        """{"top": parse_report()'s rows, "hz"} of the window, or
        {"error": why} (the window's other figures still count)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return {"error": "perf was not started"}
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"error": "perf record did not stop"}
        if proc.returncode not in (0, -signal.SIGINT):
            return {"error": f"perf record: {err.decode(errors='replace')}"
                             .strip()[:300]}
        try:
            r = subprocess.run(
                [self.perf, "report", "-i", self.data, "--stdio",
                 "--no-children", "--sort", "comm,sym",
                 "--percent-limit", "0.5"],
                capture_output=True, text=True, timeout=REPORT_TIMEOUT,
                preexec_fn=pin_self(LOAD_CPU))
        except subprocess.TimeoutExpired:
            return {"error": "perf report took too long"}
        finally:
            try:
                os.unlink(self.data)
            except OSError:
                pass
        if r.returncode:
            return {"error": f"perf report: {r.stderr.strip()[:300]}"}
        return {"top": parse_report(r.stdout, self.top), "hz": self.hz}
