"""The packet-rate rows of `pyfwd bench`: 64-byte UDP frames, delivered
packets per second counted at the receiving end (not sent).

A point-to-point topology of two namespaces, no bridge in the way::

    <ns>-gen                              <ns>-lb
    G0 10.77.0.1 (client), .3 (real) ---- L0 10.77.0.2   VIP 10.77.0.100
    G1 10.78.0.1 (NAT's real)        ---- L1 10.78.0.2   (NAT's inside)

The generator (bench/pktgen.c) sends from G0 to L0's MAC and the VIP, the
source port cycling over FLOWS values.  What comes back is counted by an XDP
count-and-drop sink (bench/bpf/sink.bpf.c): on G0 for the one-arm rows (DR:
the real server 10.77.0.3 is G0's second address; SNAT sends to it too;
the in-kernel and minimal AF_XDP MAC swaps send it back), on G1 for NAT's
two arms, and on L0 itself for the generator's own ceiling.

Where the work runs (shared/FACTS.md: veth does its receive work on the
sender's CPU unless steered):

- CPU 0: the generator, and the sinks' receive work (threaded NAPI on G0
  and G1, kthreads pinned to CPU 0 and real-time: the generator never
  sleeps, and a sink that ran late would let veth's 256-frame ring
  overflow, losing what the forwarder delivered);
- CPU 1: the forwarder's process, and L0/L1's receive work: threaded NAPI
  kthreads pinned to CPU 1 while an XDP program is attached (veth has NAPI
  only then), plus preferred busy polling for the AF_XDP rows
  (napi_defer_hard_irqs and gro_flush_timeout set on L0/L1); RPS to CPU 1
  for the kernel's own paths (kernel-nat, the raw-socket backend).
  Without threaded NAPI, busy polling alone left 10-30% of CPU 0 in
  L0's softirq (the sender's core); with it, none.  The kthread still
  does a good part of the NAPI work (20-50% of CPU 1 measured).

Each row reports CPU 0's and CPU 1's busy share over its window, which
shows where its work landed, and what pyfwd.bench.observe sees of the
forwarder (CPU per thread, its AF_XDP sockets' XDP_STATISTICS, busy
polling).  A forwarder slower than the generator at full speed wastes
NAPI work on frames its rings then drop and delivers far less than just
below its limit (livelock), so every row climbs down the same ladder of
offered loads (pyfwd.bench.ladder: full speed, then fractions of the
generator's ceiling measured once per run; ``rate`` caps the first) and
reports the full-speed figure and the best one apart.  The rows are
pyfwd.bench.rows' table.

    with PpsBench(seconds=3) as b:
        b.measure("dr-xdp")     # {"pps": ..., "sent_pps": ..., ...}
"""

import importlib.resources
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time

from pyroute2 import netns as _netns

from ..dataplane.io import XskRings
from ..lab.namespaces import iproute, open_netns
from ..lab import programs
from ..lab.programs import PYFWD, Namespaces
from . import ladder
from .configs import nft_ruleset
from .observe import Probe, kernel_threads, summary
from .profile import Perf
from .rows import PPS, PPS_ROWS as ROWS, pps_row
from .system import (LB_CPU, LOAD_CPU, BenchError, CpuTimes,
                     busy_poll_tuning, cpus, link_stats, napi_threads,
                     pin_self, rps, thread_napi)

GEN_CPU, FWD_CPU = LOAD_CPU, LB_CPU     # the generator is the load
FLOWS = 1024
PORT = 9
VIP = "10.77.0.100"
BUSY_POLL_US = 20
# (namespace role, name, peer name, address of ours, address of the peer)
LINKS = (("gen", "G0", "L0", "10.77.0.1/24", "10.77.0.2/24"),
         ("gen", "G1", "L1", "10.78.0.1/24", "10.78.0.2/24"))
MACS = {"G0": "02:70:00:00:00:01", "L0": "02:70:00:00:00:02",
        "G1": "02:70:00:00:01:01", "L1": "02:70:00:00:01:02"}
REAL_DR = "10.77.0.3"           # G0's second address: DR and SNAT's real
REAL_NAT = "10.78.0.1"          # G1: NAT's real, behind the inside arm
SNAT_ADDR = "10.77.0.2"
STOP_GRACE = 3.0
SINK_PRIO = 10                  # SCHED_FIFO priority of the sinks' NAPI


def _bin(name: str) -> str:
    res = importlib.resources.files("pyfwd.bench").joinpath(f"bin/{name}")
    if not res.is_file():
        raise BenchError(f"{name} is not built: reinstall pyfwd with "
                         "`pip install -e .` (needs cc, clang, libxdp-dev, "
                         "libbpf-dev)")
    return os.fspath(res)


class _Proc:
    """A program of ours in a namespace: its JSON lines on stdout read
    on request, stderr kept for error messages."""

    def __init__(self, topo, role, argv, cpu=None, stdin=False):
        self.argv = argv
        self.p = topo.popen(role, argv, stdin=subprocess.PIPE if stdin
                            else subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1,
                            preexec_fn=None if cpu is None
                            else pin_self(cpu))
        self.err = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.p.stderr:
            self.err = (self.err + [line.rstrip()])[-20:]
            self._said(line)

    def _said(self, line):
        """Each line of stderr, as it comes (a hook)."""

    def why(self) -> str:
        return "; ".join(self.err[-3:]) or f"exit status {self.p.poll()}"

    def line(self, timeout=10.0) -> dict:
        """The next JSON line on stdout; BenchError if the program says
        nothing in time or ends."""
        box = []
        t = threading.Thread(target=lambda: box.append(
            self.p.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        if not box or not box[0]:
            time.sleep(0.1)
            raise BenchError(f"{os.path.basename(self.argv[0])}: "
                             f"{'ended' if box else 'no answer'}: "
                             f"{self.why()}")
        try:
            return json.loads(box[0])
        except ValueError:
            raise BenchError(f"{os.path.basename(self.argv[0])}: "
                             f"unexpected output {box[0]!r}") from None

    def ask(self) -> dict:
        self.p.stdin.write("\n")
        self.p.stdin.flush()
        return self.line()

    def stop(self):
        programs.stop(self.p, STOP_GRACE)


class _Engine(_Proc):
    """`pyfwd start` in the lb namespace on CPU 1; ready once it logs
    that it attached."""

    def __init__(self, topo, args, sockdir):
        argv = PYFWD + ["start", "--control-socket",
                        os.path.join(sockdir, "ctl.sock"), "--flows",
                        str(1 << 16), "--log-level", "info", *args]
        self.ready = threading.Event()
        super().__init__(topo, "lb", argv, cpu=FWD_CPU)

    def _said(self, line):
        if "attached" in line:
            self.ready.set()

    def wait_ready(self, timeout=15.0):
        end = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.p.poll() is not None or time.monotonic() > end:
                time.sleep(0.2)
                args = self.argv[len(PYFWD) + 3:]     # after the socket
                raise BenchError(f"pyfwd start {' '.join(args)}: "
                                 f"not ready: {self.why()}")


class PpsBench:
    """The packet-rate rows (ROWS).  A context manager: builds its two
    namespaces on enter and always removes them, with every process it
    started, on exit.  measure(row) runs one row; setup() says how."""

    def __init__(self, seconds: float = 5.0, log=print, warmup: float = 1.0,
                 flows: int = FLOWS, busy_poll: int = BUSY_POLL_US,
                 rate: float = 0, fractions=ladder.FRACTIONS,
                 prefix: str = "pfpp", perf: bool = False):
        self.seconds, self.warmup, self.flows = seconds, warmup, flows
        self.rate = rate        # offered packets/s; 0: as fast as it can
        self.fractions = tuple(fractions)
        self.loads = []         # the ladder (ladder.rungs), once measured
        self.ceiling = {}       # the window that measured it
        self.details = []       # per measure(): the ladder, what was seen
        self._perf = perf
        self.perf = None        # profile.Perf on the forwarder's CPU
        # the forwarder CPU's softirq thread, watched in every window
        self._kernel = kernel_threads(f"ksoftirqd/{FWD_CPU}")
        self.busy_poll = busy_poll
        self.log = log
        self.name = prefix + secrets.token_hex(3)
        self.ns = {"gen": f"{self.name}-gen", "lb": f"{self.name}-lb"}
        # programs in them, for system.py's helpers as for a Lab
        self.hosts = Namespaces(self.ns)
        self._sinks = {}
        self._tmp = None
        self._xsk_info = {}
        self._gen_info = {}

    # -- life cycle

    def __enter__(self) -> "PpsBench":
        if not {GEN_CPU, FWD_CPU} <= set(cpus()):
            raise BenchError(f"the packet-rate rows need CPUs {GEN_CPU} and "
                             f"{FWD_CPU}; this process may use {cpus()}")
        for name in ("pktgen", "xdpprog", "xsk_minimal", "sink.bpf.o",
                     "macswap.bpf.o", "xskredir.bpf.o"):
            _bin(name)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop what we started, remove our namespaces (idempotent)."""
        for s in self._sinks.values():
            s.stop()
        self._sinks.clear()
        self.hosts.close(STOP_GRACE)
        for ns in self.ns.values():
            if ns in _netns.listnetns():
                _netns.remove(ns)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _build(self) -> None:
        self._tmp = tempfile.mkdtemp(prefix=self.name)
        if self._perf:
            self.perf = Perf(FWD_CPU, self._tmp)
        for ns in self.ns.values():
            _netns.create(ns)
        for role in self.ns:
            # ARP answered only for the interface's own addresses; no
            # routing (kernel-nat turns it on for its run)
            self._sysctls(role, {
                "net.ipv4.ip_forward": 0,
                "net.ipv4.conf.all.arp_ignore": 1,
                "net.ipv4.conf.all.rp_filter": 0,
                "net.ipv4.conf.default.rp_filter": 0,
                "net.ipv6.conf.all.disable_ipv6": 1,
                "net.ipv6.conf.default.disable_ipv6": 1})
        for role, mine, peer, addr, peer_addr in LINKS:
            with iproute(self.ns[role]) as ipr:
                fd = open_netns(self.ns["lb"])
                try:
                    ipr.link("add", ifname=mine, kind="veth",
                             address=MACS[mine],
                             peer={"ifname": peer, "net_ns_fd": fd,
                                   "address": MACS[peer]})
                finally:
                    os.close(fd)
                idx, = ipr.link_lookup(ifname=mine)
                ipr.addr("add", index=idx, address=addr.split("/")[0],
                         prefixlen=24)
                if mine == "G0":
                    ipr.addr("add", index=idx, address=REAL_DR,
                             prefixlen=24)
                ipr.link("set", index=idx, state="up")
                ipr.link("set", index=1, state="up")
            with iproute(self.ns["lb"]) as ipr:
                idx, = ipr.link_lookup(ifname=peer)
                ipr.addr("add", index=idx, address=peer_addr.split("/")[0],
                         prefixlen=24)
                ipr.link("set", index=idx, state="up")
                ipr.link("set", index=1, state="up")
            for r, ifname in ((role, mine), ("lb", peer)):
                self._sysctls(r, {f"net/ipv4/conf/{ifname}/rp_filter": 0})
            rps(self.hosts, "lb", peer, FWD_CPU)
            rps(self.hosts, role, mine, GEN_CPU)
            busy_poll_tuning(self.hosts, "lb", peer)
        # the sinks stay for the whole run; their receive work on CPU 0
        for ifname in ("G0", "G1"):
            self._sinks[ifname] = self._attach("gen", "sink.bpf.o", ifname,
                                               GEN_CPU)
        self.log(f"pps: namespaces {', '.join(self.ns.values())} up; "
                 f"sinks on G0, G1")

    def _sysctls(self, role, settings):
        for key, value in settings.items():
            self.hosts.sysctl(role, key, value)

    def _attach(self, role, obj, ifname, cpu) -> _Proc:
        """xdpprog with ``obj`` on ``ifname``, its NAPI kthread on ``cpu``."""
        before = napi_threads()
        p = _Proc(self.hosts, role, [_bin("xdpprog"), _bin(obj), ifname,
                                     "native"], stdin=True)
        try:
            p.line()
            # A sink beside the generator (CPU 0, which never sleeps)
            # runs real-time: as a fair-share thread it would run late,
            # veth's 256-frame ring would overflow and what the forwarder
            # delivered would not be counted.
            p.napi = thread_napi(self.hosts, role, ifname, cpu,
                                 before=before,
                                 priority=SINK_PRIO if role == "gen" else 0)
        except BaseException:
            p.stop()
            raise
        return p

    # -- the rows

    def measure(self, row: str) -> dict:
        """One run of ``row`` down the ladder (ladder.climb): {"pps": the
        best delivered packets/s, "sent_pps", "sent", "delivered" (frames
        over its window, warm-up included), "cpu0_busy", "cpu1_busy",
        "cpu0_softirq", "cpu1_softirq" of that window; "full_pps",
        "full_sent_pps" of the full-speed window; "offered_pps" (the
        sent rate of the best window), "saturated" (0: full speed kept
        up), "rungs" (windows run); observe.summary()'s figures of the
        best window and, "full_"-prefixed, of the full-speed one}.  What
        each window saw goes in ``details``.  Raises BenchError if the row
        cannot run (the topology stays usable)."""
        try:
            spec = pps_row(row)
        except KeyError:
            raise BenchError(f"unknown packet-rate row {row!r}: expected "
                             f"one of {', '.join(ROWS)}") from None
        loads = self.ladder()
        before = napi_threads()
        stops = []
        try:
            sink = self._sinks.get(spec.sink)
            if sink is None:        # the generator row: a sink on L0
                sink = self._attach("lb", "sink.bpf.o", spec.sink, FWD_CPU)
                stops.append(sink.stop)
                watch = ({}, sink.napi)
            else:
                watch = self._forwarder(spec, before, stops)
            return self._climb(row, sink, loads, *watch)
        finally:
            for stop in reversed(stops):
                stop()

    def ladder(self) -> list:
        """The offered loads of every row of this bench (ladder.rungs):
        measured once, from the generator's ceiling (a full-speed window,
        or ``rate``, into a sink on L0)."""
        if not self.loads:
            sink = self._attach("lb", "sink.bpf.o", "L0", FWD_CPU)
            try:
                top = self._window(sink, self.rate)
            finally:
                sink.stop()
            top.pop("observed")
            self.ceiling.update(top)
            self.loads[:] = ladder.rungs(top["sent_pps"], self.fractions)
            if self.rate:
                self.loads[0] = int(self.rate)
            self.log(f"pps: ladder {self.loads} packets/s (0: full speed)")
        return self.loads

    def _climb(self, row, sink, loads, procs, kthreads) -> dict:
        def window(rate, i):
            return self._window(sink, rate, None if i == 0 else
                                min(self.warmup, 0.5),
                                Probe(procs, {**kthreads, **self._kernel},
                                      self._netstat, self._lb_rx,
                                      self.perf))
        full, best, tried = ladder.climb(window, loads)
        full_seen = full.pop("observed")
        best_seen = best.pop("observed", full_seen)
        self.details.append({"row": row, "ladder": tried, "full": full_seen,
                             "best": "full" if best is full else best_seen})
        return dict(best, full_pps=full["pps"],
                    full_sent_pps=full["sent_pps"],
                    offered_pps=best["sent_pps"],
                    **{f"full_{k}": full[k] for k in full
                       if k.startswith("cpu")},
                    saturated=0 if tried[0]["kept_up"] else 1,
                    rungs=len(tried), **summary(best_seen),
                    **summary(full_seen, "full_"))

    def _netstat(self) -> str:
        def read():
            with open("/proc/thread-self/net/netstat") as f:
                return f.read()
        return self.hosts.call("lb", read)

    def _lb_rx(self) -> int:
        return sum(link_stats(self.hosts, "lb", "rx_packets",
                              only=("L0", "L1")).values())

    def _forwarder(self, spec, before, stops) -> tuple:
        """Start ``spec``'s forwarder on CPU 1, the calls that stop it
        added to ``stops``; what observe.Probe watches of it: ({pid:
        role}, {NAPI kthread pid: name})."""
        procs, napi = {}, {}
        if spec.kind == "xdp-kernel":
            p = _Proc(self.hosts, "lb", [_bin("xdpprog"),
                                         _bin("macswap.bpf.o"), "L0",
                                         "native"], stdin=True)
            stops.append(p.stop)
            p.line()
            procs[p.p.pid] = "ref"
        elif spec.kind == "xsk-minimal":
            p = _Proc(self.hosts, "lb", [
                _bin("xsk_minimal"), "-i", "L0", "-o",
                _bin("xskredir.bpf.o"), "-c", str(FWD_CPU), "-b",
                str(self.busy_poll)], cpu=FWD_CPU)
            stops.append(p.stop)
            self._xsk_info = p.line()
            procs[p.p.pid] = "ref"
        elif spec.kind == "kernel-nat":
            stops.append(self._kernel_nat())
        elif spec.kind == "pyfwd":
            procs[self._engine(spec, stops)] = "engine"
        else:
            raise BenchError(f"{spec.name}: unknown forwarder {spec.kind!r}")
        for ifname in spec.xdp:
            napi.update(thread_napi(self.hosts, "lb", ifname, FWD_CPU,
                                    before=before))
        return procs, napi

    def _engine(self, spec, stops) -> int:
        """`pyfwd start` for ``spec``; its pid."""
        mode = spec.mode
        args = ["-i", "L0", "--vip", f"{VIP}:{PORT}/udp", "--mode", mode,
                "--scheduler", "maglev"]
        if mode == "nat":
            args += ["--real", f"{REAL_NAT}:{PORT}", "--inside-iface", "L1"]
        elif mode == "snat":
            args += ["--real", f"{REAL_DR}:{PORT}", "--snat-address",
                     SNAT_ADDR]
        else:
            args += ["--real", REAL_DR]
        if spec.backend == "xdp":
            args += ["--backend", "xdp", "--xdp-mode", "native",
                     "--copy-mode", "copy", "--busy-poll", str(self.busy_poll)]
        else:
            args += ["--backend", spec.backend, "--busy-poll", "0"]
        e = _Engine(self.hosts, args + list(spec.extra), self._tmp)
        stops.append(e.stop)
        e.wait_ready()
        return e.p.pid

    def _kernel_nat(self):
        if not shutil.which("nft"):
            raise BenchError("kernel-nat needs nft: apt-get install nftables")
        rules = nft_ruleset(self.name, VIP, [REAL_NAT], PORT, "udp")
        r = self.hosts.run("lb", ["nft", "-f", "-"], input=rules,
                     capture_output=True, text=True)
        if r.returncode:
            raise BenchError(f"kernel-nat: nft: {r.stderr.strip()}")
        self._sysctls("lb", {"net.ipv4.ip_forward": 1})

        def stop():
            self._sysctls("lb", {"net.ipv4.ip_forward": 0})
            self.hosts.run("lb", ["nft", "delete", "table", "ip", self.name],
                     capture_output=True)
        return stop

    def _window(self, sink, rate=0, warmup=None, probe=None) -> dict:
        """Send for warmup + seconds at ``rate`` packets/s (0: as fast as
        the generator can); count at the sink over the last ``seconds``
        (pps), and over the whole run (delivered <= sent); "observed":
        what ``probe`` (an observe.Probe) saw over those seconds, or
        None."""
        warmup = self.warmup if warmup is None else warmup
        start = sink.ask()
        gen = _Proc(self.hosts, "gen", [
            _bin("pktgen"), "-i", "G0", "-s", MACS["G0"], "-d", MACS["L0"],
            "-S", LINKS[0][3].split("/")[0], "-D", VIP, "-p", str(PORT),
            "-f", str(self.flows), "-c", str(GEN_CPU), "-r", str(int(rate)),
            "-t", str(warmup + self.seconds + 0.3)], cpu=GEN_CPU)
        try:
            time.sleep(warmup)
            if probe:
                probe.start()
            c0, t0 = sink.ask(), CpuTimes.now()
            time.sleep(self.seconds)
            c1, t1 = sink.ask(), CpuTimes.now()
            seen = probe.stop() if probe else None
            sent = gen.line(timeout=self.seconds + 10)
        finally:
            gen.stop()
        time.sleep(0.05)            # the last frames through
        end = sink.ask()
        self._gen_info = {k: sent[k] for k in ("kind", "burst", "flows",
                                               "cpu", "rate")}
        span = t1.at - t0.at
        return {
            "pps": (c1["count"] - c0["count"]) / (c1["t"] - c0["t"]),
            "sent_pps": sent["pps"],
            "sent": sent["sent"],
            "delivered": end["count"] - start["count"],
            **{f"cpu{c}_busy": round(t1.since(t0, c) / span, 3)
               for c in (GEN_CPU, FWD_CPU)},
            **{f"cpu{c}_softirq": round(t1.softirq_since(t0, c) / span, 3)
               for c in (GEN_CPU, FWD_CPU)},
            "observed": seen,
        }

    def setup(self) -> dict:
        """JSON-able facts: who runs where, the generator, the rings,
        XDP modes, steering and busy polling, per row; the ladder and,
        as rows run, what each run saw ("runs": ``details``)."""
        rows = {}
        for spec in PPS:
            r = {"sink": spec.sink, "steering": spec.steering,
                 "compared_with": spec.ref}
            if spec.xdp:
                r["xdp"] = "native"
            if spec.af_xdp:
                r["af_xdp"] = "copy (veth has no zero-copy)"
                r["busy_poll"] = {"so_busy_poll_us": self.busy_poll,
                                  "so_prefer_busy_poll": 1,
                                  "so_busy_poll_budget": 64}
            if spec.kind == "xsk-minimal":
                r["rings"] = self._xsk_info or {"batch": 64, "ring": 2048,
                                                "fill": 4096}
            elif spec.kind == "pyfwd":
                r["pyfwd_start"] = (f"--mode {spec.mode} --backend "
                                    f"{spec.backend} "
                                    + " ".join(spec.extra)).strip()
                if spec.backend == "xdp":
                    rings = XskRings()      # the engine's defaults
                    r["rings"] = {"batch": 64, **vars(rings),
                                  "frames": rings.umem_frames(
                                      2 if spec.mode == "nat" else 1)}
                else:
                    r["backend"] = ("raw sockets (TPACKET_V3), poll() "
                                    "wake-ups")
            rows[spec.name] = r
        return {
            "generator": dict({"kind": "af_packet", "burst": 64,
                               "flows": self.flows, "cpu": GEN_CPU,
                               "frame": "60 B + FCS = 64 B, IPv4 UDP",
                               "qdisc_bypass": True, "send": "sendmmsg",
                               "why": "AF_XDP TX (copy mode on veth) was "
                                      "tried: no faster, and its completions "
                                      "count frames veth dropped"},
                              **self._gen_info),
            "forwarder_cpu": FWD_CPU,
            "sink": "XDP count-and-drop (per-CPU counter), native mode; "
                    f"threaded NAPI on CPU {GEN_CPU} at SCHED_FIFO "
                    f"{SINK_PRIO} (G0, G1: so the generator cannot starve "
                    f"it), or on CPU {FWD_CPU} (L0, the generator row)",
            "busy_poll_iface": {"napi_defer_hard_irqs": 2,
                                "gro_flush_timeout": 200_000},
            "window_s": self.seconds, "warmup_s": self.warmup,
            # filled in as the rows run (the same objects)
            "ladder": {"fractions": list(self.fractions),
                       "lossless": ladder.LOSSLESS,
                       "loads_pps": self.loads, "ceiling": self.ceiling},
            "rows": rows,
            "runs": self.details,
        }
