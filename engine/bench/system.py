"""What a benchmark does to the machine, and what it reads back: which
core runs what (process affinity, veth receive work steered by threaded
NAPI or RPS), busy-poll tuning on an interface, CPU time per core and per
process, and the counters of interfaces and of the kernel's receive path.

The benchmarks use two cores: LOAD_CPU for the load (the packet generator
or wrk, the real servers, the switches) and LB_CPU for the balancer or
forwarder measured, and only for it.

Facts behind it (shared/FACTS.md): veth does its receive work on the
sender's CPU unless steered, so without this the "balancer" silently runs
on the load generator's core.  Writes to /sys/class/net go through a
process started in the namespace (Lab.run mounts a fresh sysfs there).
"""

import os
import sys
import time
from dataclasses import dataclass

from pyroute2 import IPRoute

from ..errors import PyfwdError

LOAD_CPU, LB_CPU = 0, 1


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
    """Per CPU since boot, from /proc/stat: idle (idle + iowait), which a
    tickless kernel measures exactly (its idle clock stops on every
    interrupt), and the tick-sampled busy fields (user, nice, system, irq,
    softirq, steal) with their softirq part.

    Busy time is wall time less idle time, not the sum of the busy fields:
    with NO_HZ_IDLE and tick-based accounting (CONFIG_IRQ_TIME_ACCOUNTING
    unset, as on this machine kind) a CPU that wakes from idle for an
    interrupt and its softirq, and sleeps again before the next tick, is
    never sampled: the kernel's own forwarding, done in softirq on a
    mostly idle CPU, would count for almost nothing (kernel-nat read 6%
    busy forwarding 740k packets/s).  Busy time no tick saw can only be
    interrupt work (a running task keeps the tick on), so it is counted
    as softirq."""
    idle: dict
    tick_busy: dict
    tick_softirq: dict
    at: float

    @classmethod
    def now(cls) -> "CpuTimes":
        tick = os.sysconf("SC_CLK_TCK")
        idle, busy, soft = {}, {}, {}
        with open("/proc/stat") as f:
            at = time.monotonic()
            for line in f:
                name, *vals = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    continue
                v = [int(x) / tick for x in vals]
                cpu = int(name[3:])
                # user nice system idle iowait irq softirq steal
                idle[cpu] = v[3] + v[4]
                busy[cpu] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                soft[cpu] = v[6]
        return cls(idle, busy, soft, at)

    def since(self, earlier: "CpuTimes", cpu: int) -> float:
        """Busy CPU seconds of ``cpu`` between ``earlier`` and this: the
        wall time it was not idle."""
        wall = self.at - earlier.at
        return min(wall, max(0.0, wall - (self.idle[cpu] -
                                          earlier.idle[cpu])))

    def softirq_since(self, earlier: "CpuTimes", cpu: int) -> float:
        """The softirq part of since(): what the ticks saw in softirq,
        and the busy time no tick saw at all."""
        tick_soft = self.tick_softirq[cpu] - earlier.tick_softirq[cpu]
        tick_rest = (self.tick_busy[cpu] - earlier.tick_busy[cpu]
                     - tick_soft)
        return min(self.since(earlier, cpu),
                   max(tick_soft, self.since(earlier, cpu) - tick_rest))


def pin_self(cpu: int):
    """A preexec_fn that pins the child process to ``cpu``."""
    def preexec():
        os.sched_setaffinity(0, {cpu})
    return preexec


def link_stats(lab, role: str, key: str, only=None) -> dict:
    """{ifname: counter ``key``} of ``role``'s interfaces (``only`` those
    names if given, lo left out), from rtnetlink's 64-bit counters."""
    def read():
        with IPRoute() as ipr:
            out = {}
            for link in ipr.get_links():
                name = link.get_attr("IFLA_IFNAME")
                if name == "lo" or (only and name not in only):
                    continue
                stats = link.get_attr("IFLA_STATS64") or \
                    link.get_attr("IFLA_STATS")
                out[name] = stats[key]
            return out
    return lab.call(role, read)


def link_rx(lab, role: str = "lb") -> dict:
    """{ifname: rx_packets} of ``role``'s interfaces (lo left out)."""
    return link_stats(lab, role, "rx_packets")


def lb_drops(lab) -> dict:
    """Frames lost on their way into the balancer, per counter: the lb's
    rx_dropped and the tx_dropped of the switch ports facing it.  With XDP
    on veth these are distinct (the port's: the lb's NAPI ring was full;
    the lb's: XDP could not redirect, an AF_XDP ring was full); without,
    one drop (the lb's CPU backlog full) shows in both, and in
    /proc/net/softnet_stat.  So the largest is a lower bound of the loss."""
    out = {f"lb {i} rx_dropped": n
           for i, n in link_stats(lab, "lb", "rx_dropped").items()}
    for node in lab.plan().switches:
        if "lb" in node.ports:
            n = link_stats(lab, node.role, "tx_dropped", only=("lb",))["lb"]
            out[f"{node.role} port lb tx_dropped"] = n
    return out


def net_rx_softirqs() -> list:
    """NET_RX softirqs run so far, per CPU (/proc/softirqs)."""
    with open("/proc/softirqs") as f:
        for line in f:
            if line.strip().startswith("NET_RX:"):
                return [int(x) for x in line.split()[1:]]
    return []


def backlog_drops() -> list:
    """Frames dropped because a CPU's input backlog was full
    (netdev_max_backlog), per CPU (/proc/net/softnet_stat, 2nd column)."""
    with open("/proc/net/softnet_stat") as f:
        return [int(line.split()[1], 16) for line in f]


def proc_cpu(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads) in seconds; 0.0
    when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
