"""The HTTP rows' balancers (pyfwd.bench.http): how each kind is started
in its lab, pinned to CPU 1 (pyfwd with its NAPI kthreads threaded there,
the kernel's nftables NAT, HAProxy), each registering its own undo on an
ExitStack; and Running, a started balancer whose measure(size) runs wrk
through the VIP.  Which balancer is which kind: pyfwd.bench.rows.BALANCERS.
"""

import os
import subprocess
import time

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .configs import haproxy_conf, nft_ruleset
from .observe import Probe, kernel_threads, summary
from .rows import BALANCERS, CONNECTIONS, HTTP_SIZES
from .system import (LB_CPU, LOAD_CPU, BenchError, link_rx, napi_threads,
                     pin_self, sysfs_write, thread_napi)
from ..control.server import Client
from ..dataplane import xdppass
from ..errors import PyfwdError
from ..lab import modes as labmodes
from ..lab.programs import PYFWD, stop

__all__ = ["START", "Running", "check_size", "tail"]

NAPI_RT_PRIORITY = 50       # SCHED_FIFO, as the kernel's threaded IRQs
VIP = labmodes.VIP             # the lab plan's VIP
PORT = 80
START_TIMEOUT = 15.0
STOP_GRACE = 5.0


def check_size(size: str) -> None:
    if size not in HTTP_SIZES:
        raise BenchError(f"unknown HTTP bench size {size!r}: expected one of "
                         f"{', '.join(HTTP_SIZES)}")


def tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip()
    except OSError:
        return ""


def pyfwd(bench, stack, lab, mode) -> "Running":
    spec = BALANCERS[mode]
    sock = os.path.join(bench.tmp, f"{mode}.sock")
    logf = os.path.join(bench.tmp, f"{mode}.log")
    two_arm = spec.lab == "two-arm"
    ifaces = ["eth0", "eth1"] if two_arm else ["eth0"]
    argv = PYFWD + ["start", "--iface", "eth0", "--mode", spec.mode,
                    "--vip", f"{VIP}:{PORT}/tcp", "--backend", "xdp",
                    "--busy-poll", "0", "--flows", "65536",
                    "--control-socket", sock, "--log-level", "info"]
    argv += [a for r in lab.reals for a in ("--real", lab.ip(r))]
    if two_arm:
        argv += ["--inside-iface", "eth1"]
    argv += list(spec.extra)
    if "--fastpath" in spec.extra:
        _peers_xdp(stack, lab, ifaces)
    before = napi_threads()
    with open(logf, "w") as out:
        proc = lab.popen("lb", argv, stdin=subprocess.DEVNULL,
                         stdout=out, stderr=out,
                         preexec_fn=pin_self(LB_CPU),
                         start_new_session=True)
    stack.callback(_unthread, lab, ifaces)
    stack.callback(stop, proc, STOP_GRACE)
    row = Running(bench, lab, mode, proc.pid, sock=sock, log=logf)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise BenchError(f"pyfwd {mode} exited ({proc.returncode})"
                             f"{row.why()}")
        try:
            with Client(sock, timeout=1.0) as c:
                c.call("stats")
            break
        except (PyfwdError, OSError):
            if time.monotonic() > deadline:
                raise BenchError(f"pyfwd {mode}: no control socket "
                                 f"after {START_TIMEOUT:g}s{row.why()}")
            time.sleep(0.1)
    # the XDP program is on: the interfaces have NAPI, thread it on CPU 1
    # Receive work preempts the balancer's process, as softirq does in
    # the modes without XDP (and as threaded IRQ handlers run): at
    # SCHED_OTHER the kthread waits for its CFS turn while veth's
    # 256-frame ring overflows, and retransmissions inflate every
    # figure.
    for iface in ifaces:
        pinned = thread_napi(lab, "lb", iface, LB_CPU, before=before,
                             priority=NAPI_RT_PRIORITY)
        row.napi += sorted(pinned.values())
        row.napi_pids.update({name: pid for pid, name in pinned.items()})
    if len(row.napi) < len(ifaces):
        raise BenchError(f"pyfwd {mode}: expected a NAPI thread per "
                         f"interface of {ifaces}, got {row.napi}")
    return row

def _peers_xdp(stack, lab, ifaces) -> None:
    """A pass-all XDP program on the switch ports facing the lb's
    ``ifaces`` for the with-block: veth hands the fast path's frames only
    to a peer that runs one (dataplane.vethpeer; a NIC needs nothing).
    The port's NAPI, which XDP_TX and redirects wake on the sending CPU,
    is threaded on the load's CPU: it stands for the wire and the next
    switch, whose work is not the balancer's (as the packet-rate rows'
    sinks)."""
    for ifname in ifaces:
        iface = lab.node("lb").interface(ifname)

        def attach(port=iface.port, on=True):
            with IPRoute() as ipr:
                xdppass.on_peer(ipr, port, on)
        before = napi_threads()
        try:
            lab.call(iface.switch, attach)
        except (OSError, NetlinkError) as exc:
            raise BenchError(f"XDP on {iface.port} (the switch port facing "
                             f"the lb's {ifname}): {exc}") from None
        stack.callback(lambda a=attach, s=iface.switch: _quiet(
            lambda: lab.call(s, lambda: a(on=False))))
        stack.callback(_unthread, lab, [iface.port], iface.switch)
        thread_napi(lab, iface.switch, iface.port, LOAD_CPU, before=before,
                    priority=NAPI_RT_PRIORITY)


def _unthread(lab, ifaces, role="lb") -> None:
    """Threaded NAPI off again, so the next XDP program's NAPI threads
    are new (and pinned) ones."""
    try:
        sysfs_write(lab, role, {f"/sys/class/net/{i}/threaded": 0
                                     for i in ifaces})
    except (BenchError, PyfwdError, OSError):
        pass            # the lab is going anyway

def _vip_address(stack, lab) -> None:
    """The VIP on the lb's eth0, so the client's ARP for it is
    answered (pyfwd answers ARP itself)."""
    lab.address("lb", "add", "eth0", VIP, 32)
    stack.callback(lambda: _quiet(
        lambda: lab.address("lb", "del", "eth0", VIP, 32)))

def kernel_nat(bench, stack, lab, mode) -> "Running":
    table = bench.prefix
    reals = [lab.ip(r) for r in lab.reals]
    r = lab.run("lb", [bench.bin["nft"], "-f", "-"], capture_output=True,
                text=True, input=nft_ruleset(table, VIP, reals, PORT))
    if r.returncode:
        raise BenchError(f"kernel-nat: nft: {r.stderr.strip()}")
    stack.callback(lambda: _quiet(lambda: lab.run(
        "lb", [bench.bin["nft"], "delete", "table", "ip", table],
        capture_output=True)))
    _vip_address(stack, lab)
    row = Running(bench, lab, mode, None)
    if "wire" in BALANCERS[mode].extra:
        _wire(stack, lab, row)
    return row


def _wire(stack, lab, row) -> None:
    """The lb's veths as a NIC's ports: a pass-all XDP program on each
    (veth then turns GSO off on its peer, so frames arrive at most an MTU
    long, as off a wire, and merges them by GRO in its NAPI, as a NIC's
    driver does), their NAPI threaded on CPU 1 as in the pyfwd rows.
    Without it a veth hands the balancer whole 64 KB TSO segments, which
    no NIC receives and no XDP program can see."""
    ifaces = ["eth0", "eth1"]

    def attach(on=True):
        with IPRoute() as ipr:
            for ifname in ifaces:
                xdppass.on_peer(ipr, ifname, on)
    before = napi_threads()
    try:
        lab.call("lb", attach)
    except (OSError, NetlinkError) as exc:
        raise BenchError(f"XDP on the lb's {ifaces}: {exc}") from None
    stack.callback(lambda: _quiet(lambda: lab.call(
        "lb", lambda: attach(on=False))))
    stack.callback(_unthread, lab, ifaces)
    for ifname in ifaces:
        pinned = thread_napi(lab, "lb", ifname, LB_CPU, before=before,
                             priority=NAPI_RT_PRIORITY)
        row.napi += sorted(pinned.values())
        row.napi_pids.update({name: pid for pid, name in pinned.items()})

def haproxy(bench, stack, lab, mode) -> "Running":
    conf = os.path.join(bench.tmp, f"{mode}.cfg")
    logf = os.path.join(bench.tmp, f"{mode}.log")
    with open(conf, "w") as f:
        f.write(haproxy_conf(BALANCERS[mode].mode, VIP,
                             [lab.ip(r) for r in lab.reals], PORT,
                             LB_CPU))
    _vip_address(stack, lab)
    r = lab.run("lb", [bench.bin["haproxy"], "-c", "-q", "-f", conf],
                capture_output=True, text=True)
    if r.returncode:
        raise BenchError(f"{mode}: haproxy -c: "
                         f"{(r.stdout + r.stderr).strip()}")
    with open(logf, "w") as out:
        proc = lab.popen("lb", [bench.bin["haproxy"], "-db", "-f", conf],
                         stdin=subprocess.DEVNULL, stdout=out,
                         stderr=out, preexec_fn=pin_self(LB_CPU),
                         start_new_session=True)
    stack.callback(stop, proc, STOP_GRACE)
    return Running(bench, lab, mode, proc.pid, log=logf, role="ref")


# how each kind of balancer (rows.Balancer.kind) is started
START = {"pyfwd": pyfwd, "kernel-nat": kernel_nat, "haproxy": haproxy}


class Running:
    """A running balancer: measure(size) runs wrk through the VIP."""

    def __init__(self, bench, lab, mode, pid, sock=None, log=None,
                 role="engine"):
        self.bench, self.lab, self.mode = bench, lab, mode
        self.pid, self.sock, self.logfile = pid, sock, log
        self.role = role            # the process, for observe.kind_of
        self.napi = []              # names of its pinned NAPI kthreads
        self.napi_pids = {}

    def why(self) -> str:
        said = tail(self.logfile) if self.logfile else ""
        return f":\n{said}" if said else ""

    def engine_rx(self):
        """pyfwd's own count of frames in (AF_XDP), or None."""
        if not self.sock:
            return None
        with Client(self.sock, timeout=5.0) as c:
            return c.call("stats")["core"]["rx"]

    def probe(self) -> Probe:
        """What observe.Probe watches of this balancer: its process, its
        NAPI kthreads and CPU 1's ksoftirqd, the lb namespace."""
        def netstat():
            with open("/proc/thread-self/net/netstat") as f:
                return f.read()
        return Probe({self.pid: self.role} if self.pid else {},
                     {**{pid: n for n, pid in self.napi_pids.items()},
                      **kernel_threads(f"ksoftirqd/{LB_CPU}")},
                     lambda: self.lab.call("lb", netstat),
                     lambda: sum(link_rx(self.lab).values()),
                     self.bench.perf)

    def measure(self, size: str, conn: str = "keep-alive") -> dict:
        """wrk through the VIP for /``size`` (``conn``: "keep-alive" or
        "close", rows.CONNECTIONS): {"rps", "p50_ms", "p99_ms",
        "cpu_s_per_1k", "lb_pkts_per_req"}, "cpu1_softirq" (CPU 1's
        softirq share of the run) and observe.summary()'s figures of the
        run."""
        check_size(size)
        if conn not in CONNECTIONS:
            raise BenchError(f"unknown HTTP connection kind {conn!r}: "
                             f"expected one of {', '.join(CONNECTIONS)}")
        url = f"http://{VIP}:{PORT}/{size}"
        procs = {self.mode: self.pid} if self.pid else {}
        procs.update(self.napi_pids)
        label = f"http-{self.mode}-" + ("close-" if conn == "close"
                                        else "") + size
        row = self.bench._measure(self.lab, url, self.bench.seconds, procs,
                                  self.sock and self.engine_rx,
                                  label=label, probe=self.probe(),
                                  close=conn == "close")
        detail = self.bench.details[-1]
        row.update(summary(detail["observed"]))
        row["cpu1_softirq"] = detail["cpu1_softirq_s"] / detail["wall_s"]
        if detail["errors"]:
            self.bench.log(f"http bench: {detail['row']}: "
                           f"{detail['errors']} wrk errors")
        return row


def _quiet(fn) -> None:
    try:
        fn()
    except Exception:       # undoing what a namespace removal undoes too
        pass
