"""What a benchmark does to the machine, and what it reads back: which
core runs what (process affinity, veth receive work steered by threaded
NAPI or RPS), busy-poll tuning on an interface, and CPU time per core.

Facts behind it (shared/FACTS.md): veth does its receive work on the
sender's CPU unless steered, so without this the "balancer" silently runs
on the load generator's core.  Writes to /sys/class/net go through a
process started in the namespace (Lab.run mounts a fresh sysfs there).
"""

import os
import sys
import time
from dataclasses import dataclass

from pyfwd.errors import PyfwdError


class BenchError(PyfwdError):
    """The benchmark cannot run as asked (missing tool, too few cores,
    a row that failed); the message says what and why."""


_WRITE = """\
import sys
bad = []
for path, value in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        bad.append(f"cannot write {value!r} to {path}: {exc.strerror}")
if bad:
    sys.exit("; ".join(bad))
"""
_READ = "import sys; print(open(sys.argv[1]).read().strip())"


def sysfs_write(lab, role: str, values: dict) -> None:
    """Write each {path: value} under /sys as seen from ``role``'s
    namespace, with one process.  Raises BenchError naming the files that
    failed."""
    argv = [sys.executable, "-c", _WRITE]
    for path, value in values.items():
        argv += [path, str(value)]
    r = lab.run(role, argv, capture_output=True, text=True)
    if r.returncode:
        raise BenchError(f"{role}: {r.stderr.strip()}")


def sysfs_read(lab, role: str, path: str) -> str:
    r = lab.run(role, [sys.executable, "-c", _READ, path],
                capture_output=True, text=True)
    if r.returncode:
        raise BenchError(f"{role}: cannot read {path}")
    return r.stdout.strip()


def cpus() -> list:
    return sorted(os.sched_getaffinity(0))


def napi_threads() -> dict:
    """{pid: name} of the kernel's threaded-NAPI workers (napi/IF-ID)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name.startswith("napi/"):
            out[int(pid)] = name
    return out


def thread_napi(lab, role: str, iface: str, cpu: int,
                before: dict = None, settle: float = 0.2,
                priority: int = 0) -> dict:
    """Turn on threaded NAPI for ``iface`` in ``role`` and pin its NAPI
    kthreads to ``cpu`` (and run them SCHED_FIFO at ``priority`` if not
    0); the pinned kthreads, {pid: name}.

    veth only has NAPI while an XDP program is attached (or GRO is on), so
    call this after the program is.  Kthreads are named napi/IF-ID with no
    namespace in the name; the ones this call pins are those that appear
    when it turns threading on (``before``: a napi_threads() snapshot taken
    earlier, if the interface was switched on already by someone else)."""
    before = napi_threads() if before is None else before
    sysfs_write(lab, role, {f"/sys/class/net/{iface}/threaded": 1})
    deadline = time.monotonic() + 2.0
    new = {}
    while time.monotonic() < deadline:
        new = {pid: name for pid, name in napi_threads().items()
               if pid not in before and name.startswith(f"napi/{iface}-")}
        if new:
            break
        time.sleep(0.05)
    time.sleep(settle)
    for pid, name in new.items():
        try:
            os.sched_setaffinity(pid, {cpu})
            if priority:
                os.sched_setscheduler(pid, os.SCHED_FIFO,
                                      os.sched_param(priority))
        except OSError as exc:
            raise BenchError(f"cannot pin {name} to CPU {cpu}"
                             + (f" at SCHED_FIFO {priority}" if priority
                                else "") + f": {exc.strerror}") from None
    return new


def rps_mask(cpu: int) -> str:
    """rps_cpus for one CPU."""
    return format(1 << cpu, "x")


def rps(lab, role: str, iface: str, cpu: int) -> None:
    """Receive Packet Steering: ``iface``'s receive work (on the kernel's
    own paths: no XDP) runs on ``cpu``."""
    sysfs_write(lab, role, {
        f"/sys/class/net/{iface}/queues/rx-0/rps_cpus": rps_mask(cpu)})


def busy_poll_tuning(lab, role: str, iface: str, defer: int = 2,
                     flush_ns: int = 200_000) -> dict:
    """What preferred busy polling wants of the interface: hard IRQs
    deferred (napi_defer_hard_irqs) and a gro_flush_timeout to re-arm
    them, so the application's busy poll does the NAPI work.  Returns
    what was set."""
    sysfs_write(lab, role, {
        f"/sys/class/net/{iface}/napi_defer_hard_irqs": defer,
        f"/sys/class/net/{iface}/gro_flush_timeout": flush_ns})
    return {"napi_defer_hard_irqs": defer, "gro_flush_timeout": flush_ns}


@dataclass(frozen=True)
class CpuTimes:
    """Seconds per CPU since boot from /proc/stat: busy (user, nice,
    system, irq, softirq, steal) and the softirq part of it."""
    busy: dict
    softirq: dict
    at: float

    @classmethod
    def now(cls) -> "CpuTimes":
        tick = os.sysconf("SC_CLK_TCK")
        busy, soft = {}, {}
        with open("/proc/stat") as f:
            for line in f:
                name, *vals = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    continue
                v = [int(x) / tick for x in vals]
                cpu = int(name[3:])
                # user nice system idle iowait irq softirq steal
                busy[cpu] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                soft[cpu] = v[6]
        return cls(busy, soft, time.monotonic())

    def since(self, earlier: "CpuTimes", cpu: int) -> float:
        """Busy CPU seconds of ``cpu`` between ``earlier`` and this."""
        return self.busy[cpu] - earlier.busy[cpu]


def pin_self(cpu: int):
    """A preexec_fn that pins the child process to ``cpu``."""
    def preexec():
        os.sched_setaffinity(0, {cpu})
    return preexec
