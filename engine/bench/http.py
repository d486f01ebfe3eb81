"""The HTTP rows of `pyfwd bench`: wrk through the VIP to nginx real
servers, for responses of 1 KB, 100 KB and 1 MB, with each balancer.

Two labs are built once: a one-arm lab (DR, SNAT, HAProxy) and a two-arm
lab (NAT, kernel nftables NAT: the balancer is the real servers'
gateway).  Every real server runs nginx (one worker) serving /1k, /100k and
/1m; DR's real servers hold the VIP on lo (`pyfwd realserver setup`).

Where the work runs, so that CPU 1 is the balancer and only the balancer:

- CPU 1: the balancer's process (pyfwd, HAProxy), and the receive work of
  the lb namespace's interfaces: threaded NAPI kthreads pinned to CPU 1
  (SCHED_FIFO, so receive work preempts the engine as softirq preempts
  HAProxy) while an XDP program is attached (veth has NAPI only then), RPS
  to CPU 1 otherwise (kernel NAT, HAProxy, frames XDP passes to the
  kernel);
- CPU 0: wrk, nginx, and the receive work of every other interface (client,
  real servers, every switch port: RPS to CPU 0), so the bridges' work and
  the work of whatever the balancer transmits land on CPU 0.

A row's balancer CPU is CPU 1's busy time (/proc/stat: user, system, irq,
softirq) during the wrk run, per 1000 requests; its packets are the frames
received on the lb namespace's interfaces (rtnetlink rx_packets; on veth
that includes the frames an XDP program redirects to AF_XDP), per request.
pyfwd runs in its wake-up mode (--busy-poll 0: poll() with need_wakeup),
since a busy-polling loop burns its core whether it works or not.  The wrk
run and its accounting are pyfwd.bench.wrk's, the programs' configurations
pyfwd.bench.configs'.

    with HttpBench(seconds=3) as hb:
        with hb.balancer("nat") as b:
            row = b.measure("100k")   # {"rps", "p50_ms", "p99_ms", ...}
"""

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from . import wrk
from .balancers import (NAPI_RT_PRIORITY, PORT, START, START_TIMEOUT, VIP,
                        check_size, tail)
from .configs import NGINX_SETTINGS, SIZE_BYTES, nginx_conf
from .profile import Perf
from .rows import BALANCERS
from .rows import HTTP_MODES as MODES
from .system import (LB_CPU, LOAD_CPU, BenchError, CpuTimes,
                     cpus, pin_self, rps_mask, sysfs_write)
from ..errors import LabError
from ..lab import modes as labmodes
from ..lab.programs import PYFWD
from ..lab.topology import Lab

__all__ = ["HttpBench", "check_mode", "check_size"]

REALS = 2
ENGINE_MODE = "wake-up (poll, need_wakeup), busy polling off"
TOOLS = {"wrk": "wrk", "nginx": "nginx", "haproxy": "haproxy",
         "nft": "nftables", "curl": "curl"}


# ---------------------------------------------------------------------------
# Checks


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise BenchError(f"unknown HTTP bench mode {mode!r}: expected one of "
                         f"{', '.join(MODES)}")


# ---------------------------------------------------------------------------
# The bench


class HttpBench:
    """Labs, nginx real servers and steering, built on enter and removed on
    exit (KeyboardInterrupt too).  ``balancer(mode)`` runs one balancer;
    its ``measure(size)`` runs wrk for ``seconds`` with ``connections``
    connections (one thread, CPU 0).  Raises BenchError when something
    cannot run."""

    def __init__(self, seconds: float = 5.0, connections: int = 32,
                 log=print, prefix: str = None, perf: bool = False):
        if seconds <= 0 or connections < 1:
            raise BenchError(f"bad wrk run: {seconds} s, {connections} "
                             "connections")
        self.seconds = float(seconds)
        self.connections = int(connections)
        self._perf = perf
        self.perf = None            # profile.Perf on CPU 1, with --perf
        self.log = log
        # lab names: prefix + "a" (one-arm) / "b" (two-arm); the nft table
        self.prefix = prefix or "pfht" + secrets.token_hex(2)
        try:
            self.labs = {"one-arm": Lab(self.prefix + "a", "one-arm", REALS),
                         "two-arm": Lab(self.prefix + "b", "two-arm", REALS)}
        except LabError as exc:
            raise BenchError(f"bad lab prefix {self.prefix!r}: {exc}") \
                from None
        self.tmp = None
        self._up = False
        self._built = []            # labs this object made (to remove)
        self.calibration = None
        self.details = []           # per measure(): what was counted
        self.servers = []           # the nginx Popens
        self.idle = {}              # mode: CPU 1 s/s, balancer up, no load
        self._haproxy_version = None
        self.bin = {}

    # -- life cycle

    def __enter__(self) -> "HttpBench":
        self._preflight()
        try:
            self.tmp = tempfile.mkdtemp(prefix="pfht")
            os.chmod(self.tmp, 0o755)
            if self._perf:
                self.perf = Perf(LB_CPU, self.tmp)
            self._files()
            for lab in self.labs.values():
                if lab.exists():        # not ours: never remove it
                    raise BenchError(f"a lab named {lab.name} exists "
                                     "already: pick another prefix")
                self.log(f"http bench: building lab {lab.name} "
                         f"({lab.topology}, {REALS} reals)")
                self._built.append(lab)
                lab.up()
            self._steer()
            one = self.labs["one-arm"]
            for role in one.reals:      # DR: VIP on lo, no ARP for it
                r = one.run(role, PYFWD + ["realserver", "setup", "--vip",
                                           VIP], capture_output=True,
                            text=True)
                if r.returncode:
                    raise BenchError(f"realserver setup on {role}: "
                                     f"{r.stderr.strip()}")
            for lab in self.labs.values():
                for role in lab.reals:
                    self._nginx(lab, role)
            self.calibration = self._calibrate()
        except BaseException:
            self._cleanup(quiet=True)
            raise
        self._up = True
        return self

    def __exit__(self, *exc_info) -> None:
        self._cleanup()

    def _cleanup(self, quiet: bool = False) -> None:
        self._up = False
        errors = []
        with _deferred_signals():       # a second Ctrl-C must not leak
            for lab in self._built:
                try:
                    lab.down()      # stops nginx (its Popen) and the rest
                except Exception as exc:
                    errors.append(f"{lab.name}: {exc}")
            self._built.clear()
            if self.tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None
        if errors and not quiet:
            raise BenchError("http bench cleanup: " + "; ".join(errors))

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise BenchError("the HTTP bench needs root (namespaces, XDP)")
        path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
        self.bin = {tool: shutil.which(tool, path=path) for tool in TOOLS}
        missing = [pkg for tool, pkg in TOOLS.items()
                   if self.bin[tool] is None]
        if missing:
            raise BenchError(f"missing {', '.join(missing)}: apt-get install "
                             f"{' '.join(missing)}")
        if not {LB_CPU, LOAD_CPU} <= set(cpus()):
            raise BenchError(f"needs CPUs {LOAD_CPU} and {LB_CPU}; this "
                             f"process may use {cpus()}")
        r = subprocess.run([self.bin["haproxy"], "-v"], capture_output=True,
                           text=True)
        m = re.search(r"version (\S+)", r.stdout)
        self._haproxy_version = m.group(1) if m else r.stdout.strip()

    def _files(self) -> None:
        www = os.path.join(self.tmp, "www")
        os.mkdir(www)
        for name, n in SIZE_BYTES.items():
            with open(os.path.join(www, name), "wb") as f:
                f.write(b"x" * n)
            os.chmod(os.path.join(www, name), 0o644)
        os.chmod(www, 0o755)

    def _steer(self) -> None:
        """RPS: the lb's interfaces to CPU 1, every other interface (hosts
        and switch ports) to CPU 0.  Threaded NAPI comes with an XDP
        program (balancer())."""
        for lab in self.labs.values():
            for node in lab.plan().nodes:
                if node.kind == "switch":
                    ifaces = node.ports
                else:
                    ifaces = [i.name for i in node.interfaces]
                cpu = LB_CPU if node.role == "lb" else LOAD_CPU
                sysfs_write(lab, node.role, {
                    f"/sys/class/net/{i}/queues/rx-0/rps_cpus":
                        rps_mask(cpu) for i in ifaces})

    def _nginx(self, lab, role) -> None:
        run = os.path.join(self.tmp, f"{lab.name}-{role}")
        os.mkdir(run)
        conf = os.path.join(run, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(run, os.path.join(self.tmp, "www"), PORT))
        # -e: nginx opens its error log before reading the config
        argv = [self.bin["nginx"], "-p", run, "-c", conf, "-e",
                os.path.join(run, "error.log")]
        self.servers.append(lab.popen(
            role, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=pin_self(LOAD_CPU),
            start_new_session=True))
        url = f"http://{lab.ip(role)}:{PORT}/1k"
        if not self._wait_http(lab, url):
            raise BenchError(f"nginx on {lab.name} {role} does not answer "
                             f"{url}: {tail(os.path.join(run, 'error.log'))}")

    def _wait_http(self, lab, url, timeout=START_TIMEOUT) -> bool:
        """True once ``url`` answers 200 to the client, False if not within
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok, status = labmodes.curl(lab, "client", url, 1, (
                "-o", "/dev/null", "-w", "%{http_code}"))
            if ok and status == "200":
                return True
            time.sleep(0.1)
        return False

    def _calibrate(self) -> dict:
        """wrk from the client straight to real1, nothing on the lb's path:
        the CPU-1 time and lb packets per request this shows are the
        accounting's floor (other load on the machine, stray frames)."""
        lab = self.labs["one-arm"]
        url = f"http://{lab.ip('real1')}:{PORT}/1k"
        seconds = min(self.seconds, 2.0)
        row = self._measure(lab, url, seconds, label="calibration")
        out = {"what": "wrk client -> real1 directly, 1k, "
                       f"{seconds:g} s (nothing on the balancer's path)",
               **{k: round(v, 4) for k, v in row.items()}}
        self.log(f"http bench: calibration {out}")
        if out["cpu_s_per_1k"] * out["rps"] / 1000 > 0.05:
            self.log(f"http bench: warning: CPU {LB_CPU} is busy "
                     f"{out['cpu_s_per_1k'] * out['rps'] / 1000:.2f} s/s "
                     "with nothing on the balancer's path: the "
                     "cpu_s_per_1k figures include other load")
        return out

    # -- measuring

    def _measure(self, lab, url, seconds, procs=None,
                 engine_rx=None, label=None, probe=None,
                 close=False) -> dict:
        """One wrk run (pyfwd.bench.wrk.measure); the row's figures, the
        detail kept in ``details``."""
        row, detail = wrk.measure(lab, url, seconds, self.bin["wrk"],
                                  self.connections, procs, engine_rx, label,
                                  self.log, probe, close)
        self.details.append(detail)
        return row

    @contextlib.contextmanager
    def balancer(self, mode: str):
        """Run ``mode``'s balancer (pinned to CPU 1) for the with-block;
        yields a balancers.Running whose measure(size) returns the row's
        figures."""
        check_mode(mode)
        if not self._up:
            raise BenchError("HttpBench.balancer() outside its with-block")
        spec = BALANCERS[mode]
        lab = self.labs[spec.lab]
        start = START[spec.kind]
        with contextlib.ExitStack() as stack:
            self.log(f"http bench: starting {mode} in {lab.ns('lb')}")
            row = start(self, stack, lab, mode)
            if not self._wait_http(lab, f"http://{VIP}:{PORT}/1k"):
                raise BenchError(f"{mode}: http://{VIP}:{PORT}/1k does not "
                                 f"answer through the balancer"
                                 f"{row.why()}")
            self.idle[mode] = round(self._idle(), 4)
            yield row

    def _idle(self, seconds: float = 0.5) -> float:
        """CPU 1's busy seconds per second with the balancer up and no
        traffic: ~0 in wake-up mode (a busy-polling loop would show 1)."""
        mask = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {LOAD_CPU})
        try:
            t0 = CpuTimes.now()
            time.sleep(seconds)
            t1 = CpuTimes.now()
        finally:
            os.sched_setaffinity(0, mask)
        return t1.since(t0, LB_CPU) / (t1.at - t0.at)

    # -- facts

    def setup(self) -> dict:
        """What the HTTP rows ran on, JSON-ready."""
        return {
            "labs": {"one-arm (dr, snat, haproxy-tcp, haproxy-http)":
                     self.labs["one-arm"].name,
                     "two-arm (nat, kernel-nat)": self.labs["two-arm"].name},
            "real_servers": REALS,
            "pinning": {
                f"cpu{LB_CPU}": "the balancer: pyfwd / HAProxy process, "
                                "the lb namespace's receive work",
                f"cpu{LOAD_CPU}": "wrk, nginx, every other interface's "
                                   "receive work (client, reals, switch "
                                   "ports: the bridges)"},
            "steering": {
                "lb interfaces": f"threaded NAPI kthreads pinned to CPU "
                                 f"{LB_CPU} at SCHED_FIFO "
                                 f"{NAPI_RT_PRIORITY} (receive work "
                                 "preempts the engine, as softirq preempts "
                                 "HAProxy) while pyfwd's XDP program is "
                                 f"attached (veth has NAPI only then); RPS "
                                 f"to CPU {LB_CPU} (kernel-nat, haproxy, "
                                 "frames passed to the kernel)",
                "other interfaces": f"RPS to CPU {LOAD_CPU}"},
            "wrk": {"threads": 1, "connections": self.connections,
                    "duration_s": self.seconds, "cpu": LOAD_CPU,
                    "keep-alive": "wrk keeps its connections open (nginx "
                                  "keepalive_requests 10M) except in the "
                                  "-close- rows: -H 'Connection: close', "
                                  "one connection per request",
                    "options": "--latency --timeout 5s"},
            "balancers": {b.name: {"lab": b.lab, "kind": b.kind,
                                   "mode": b.mode, "extra": list(b.extra)}
                          for b in BALANCERS.values()},
            "engine": {"mode": ENGINE_MODE, "backend": "xdp (AF_XDP, copy "
                       "mode on veth)", "cli": "pyfwd start --busy-poll 0 "
                       "--backend xdp", "cpu": LB_CPU,
                       "scheduler": "maglev"},
            "haproxy": {"version": self._haproxy_version, "nbthread": 1,
                        "cpu-map": LB_CPU, "modes": ["tcp", "http"],
                        "http": "keep-alive, http-reuse always",
                        "balance": "roundrobin"},
            "kernel_nat": "nftables prerouting DNAT, numgen inc mod "
                          f"{REALS} map over the reals, two-arm (reals' "
                          "gateway = lb), conntrack reverses it",
            "nginx": NGINX_SETTINGS | {"cpu": LOAD_CPU},
            "cpu_s_per_1k": f"busy seconds of CPU {LB_CPU} in /proc/stat "
                            "(user+nice+system+irq+softirq+steal) during "
                            "the wrk run / (requests / 1000): the "
                            "balancer's process time plus its interfaces' "
                            "NAPI/softirq work",
            "lb_pkts_per_req": "rx_packets (rtnetlink IFLA_STATS64) summed "
                               "over the lb namespace's interfaces during "
                               "the run / requests; on veth this counts the "
                               "frames XDP redirects to AF_XDP too (checked "
                               "against pyfwd's own rx count, runs[]."
                               "engine_rx); frames dropped before the lb "
                               "received them are not counted (runs[]."
                               "lb_drops, backlog_drops)",
            "runs[]": "per wrk run: cpu1_s (the metric), its softirq part, "
                      "procs_s (the balancer's processes and NAPI kthreads, "
                      "tick-sampled; softirq run in a process's context "
                      "counts in both, so attributed_s can exceed cpu1_s), "
                      "NET_RX softirqs per CPU, drops; observed: CPU "
                      "per thread, XDP_STATISTICS of the balancer's AF_XDP "
                      "sockets, busy polling (pyfwd.bench.observe)",
            "calibration": self.calibration,
            # filled in as the balancers run (the same objects)
            "idle_cpu1_s_per_s": self.idle,
            "runs": self.details,
        }


@contextlib.contextmanager
def _deferred_signals(signums=(signal.SIGINT, signal.SIGTERM)):
    """SIGINT and SIGTERM wait until the block is done, then are delivered
    again (main thread only; elsewhere the block runs as is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got, old = [], {}

    def hold(signum, frame):
        got.append(signum)

    for sig in signums:
        old[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(got):
            os.kill(os.getpid(), sig)
