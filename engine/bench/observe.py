"""What the forwarder's side did during one measured window, beside the
row's figures: CPU time per thread, the kernel's counters of the
forwarder's AF_XDP sockets (XDP_STATISTICS) and whether busy polling
engaged.

- Threads: every thread of the forwarder's processes (/proc/PID/task) and
  the kernel threads doing its receive work (the NAPI kthreads of its
  interfaces, ksoftirqd of its CPU), each one's time on a CPU from
  /proc/.../schedstat (ns; /proc/.../stat's ticks where schedstat is
  missing).  A thread's kind comes from its name: ``napi`` (napi/IF-ID),
  ``ksoftirqd``, ``loop`` (pyfwd's C loops name themselves pyfwd-xsk-qN
  and pyfwd-afp-qN), ``python`` (the engine's other threads: the control,
  punt, health, server threads and the main one), ``ref`` (a reference
  forwarder's or HAProxy's threads).
- AF_XDP sockets: read from the outside, the same way for pyfwd and for
  the references: each socket of the forwarder's processes is duplicated
  with pidfd_getfd(2) (root), and the AF_XDP ones (SO_DOMAIN 44) are asked
  getsockopt(SOL_XDP, XDP_STATISTICS), SO_BUSY_POLL, SO_PREFER_BUSY_POLL
  and SO_INCOMING_NAPI_ID.  The same counters as `pyfwd ctl stats`'s
  AF_XDP table (docs/reliability/sockdrops.md), as deltas over the window.
- Busy polling: judged engaged when a socket has SO_BUSY_POLL > 0, it has
  a NAPI id (the kernel marks it on the first frame it receives: without
  one, busy polling has nothing to poll) and the namespace's
  TcpExt BusyPollRxPackets (/proc/net/netstat: frames the NAPI poll handled
  inside a busy-poll loop, any socket family) grew during the window.
  ``share`` is that growth over the frames the forwarder's interfaces
  received: the part of the receive work busy polling did (the rest ran in
  the NAPI kthread).

    p = Probe({pid: "engine"}, napi={tid: "napi/L0-8193"}, cpu=1,
              netstat=read_in_lb_namespace, rx=lb_rx_frames)
    p.start(); ...; detail = p.stop()
"""

import ctypes
import os
import socket
import struct
import time

__all__ = ["Probe", "XSK_FIELDS", "xsk_sockets", "kind_of", "summary",
           "kernel_threads", "SUMMARY_NAMES"]

AF_XDP = 44
SOL_XDP = 283
XDP_STATISTICS = 7
SO_DOMAIN = 39
SO_BUSY_POLL = 46
SO_INCOMING_NAPI_ID = 56
SO_PREFER_BUSY_POLL = 69
_SYS_PIDFD_GETFD = 438          # the same number on every architecture
# struct xdp_statistics (linux/if_xdp.h), in order
XSK_FIELDS = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs",
              "rx_ring_full", "rx_fill_ring_empty_descs",
              "tx_ring_empty_descs")
KINDS = ("napi", "ksoftirqd", "loop", "python", "ref")
# the names summary() gives its figures (with or without "full_")
SUMMARY_NAMES = tuple(f"cpu_{k}" for k in KINDS) + ("xsk_", "busy_poll")

_libc = ctypes.CDLL(None, use_errno=True)


def kind_of(name: str, role: str) -> str:
    """A thread's kind from its name and its process's role ("engine",
    "ref" or "kernel")."""
    if name.startswith("napi/"):
        return "napi"
    if name.startswith("ksoftirqd/"):
        return "ksoftirqd"
    if role == "engine":
        return "loop" if name.startswith(("pyfwd-xsk-", "pyfwd-afp-")) \
            else "python"
    return "ref" if role == "ref" else role


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _thread_ns(task: str) -> int:
    """Time on a CPU of the thread at /proc path ``task``, in ns."""
    try:
        return int(_read(f"{task}/schedstat").split()[0])
    except (OSError, ValueError, IndexError):
        pass
    fields = _read(f"{task}/stat").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 10**9 // \
        os.sysconf("SC_CLK_TCK")


def threads(procs: dict, kthreads: dict) -> dict:
    """{tid: (name, kind, ns on CPU)} of every thread of ``procs`` ({pid:
    role}) and of ``kthreads`` ({pid: name}); gone ones left out."""
    out = {}
    for pid, role in procs.items():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            task = f"/proc/{pid}/task/{tid}"
            try:
                name = _read(f"{task}/comm").strip()
                out[int(tid)] = (name, kind_of(name, role), _thread_ns(task))
            except OSError:
                continue
    for pid, name in kthreads.items():
        try:
            out[pid] = (name, kind_of(name, "kernel"),
                        _thread_ns(f"/proc/{pid}"))
        except OSError:
            continue
    return out


def kernel_threads(*names: str) -> dict:
    """{pid: name} of the processes named one of ``names`` (comm), such as
    "ksoftirqd/1"."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            name = _read(f"/proc/{pid}/comm").strip()
        except OSError:
            continue
        if name in names:
            out[int(pid)] = name
    return out


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    got = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
    if got < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return got


def xsk_sockets(pid: int) -> list:
    """The AF_XDP sockets of process ``pid``: one {"fd", "ino", field of
    XSK_FIELDS..., "busy_poll_us", "prefer_busy_poll", "napi_id"} each, in
    fd order; [] when the process is gone or has none.  Raises OSError
    when a socket cannot be duplicated (not root, or a ptrace policy)."""
    out = []
    try:
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
        pidfd = os.pidfd_open(pid)
    except (OSError, ValueError):
        return []
    try:
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if not link.startswith("socket:["):
                continue
            try:
                dup = _pidfd_getfd(pidfd, fd)
            except OSError as exc:
                if exc.errno == 9:          # EBADF: closed meanwhile
                    continue
                raise
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 0,
                              fileno=dup)
            try:
                if s.getsockopt(socket.SOL_SOCKET, SO_DOMAIN) != AF_XDP:
                    continue
                stats = struct.unpack("6Q", s.getsockopt(SOL_XDP,
                                                         XDP_STATISTICS, 48))
                out.append({"fd": fd, "ino": int(link[8:-1]),
                            **dict(zip(XSK_FIELDS, stats)),
                            "busy_poll_us": s.getsockopt(socket.SOL_SOCKET,
                                                         SO_BUSY_POLL),
                            "prefer_busy_poll": s.getsockopt(
                                socket.SOL_SOCKET, SO_PREFER_BUSY_POLL),
                            "napi_id": s.getsockopt(socket.SOL_SOCKET,
                                                    SO_INCOMING_NAPI_ID)})
            finally:
                s.close()           # our duplicate only
    finally:
        os.close(pidfd)
    return out


def busy_poll_rx(netstat_text: str) -> int:
    """TcpExt BusyPollRxPackets from /proc/net/netstat's text (0 if the
    kernel has no such counter)."""
    lines = [ln.split() for ln in netstat_text.splitlines()]
    for head, vals in zip(lines, lines[1:]):
        if head and head[0] == "TcpExt:" and vals and vals[0] == "TcpExt:":
            row = dict(zip(head[1:], vals[1:]))
            return int(row.get("BusyPollRxPackets", 0))
    return 0


class Probe:
    """One window's observation (start(), then stop() -> detail).

    ``procs``: {pid: "engine" | "ref"}, the forwarder's processes (their
    threads timed, their AF_XDP sockets read); ``kthreads``: {pid: name}
    of the kernel threads doing its receive work; ``netstat``: returns the
    text of /proc/net/netstat as the forwarder's namespace sees it;
    ``rx``: returns the frames its interfaces received so far (for the
    busy-poll share); ``profile``: a profile.Perf sampling the
    forwarder's CPU through the window (`pyfwd bench --perf`).  Any may
    be None."""

    def __init__(self, procs: dict, kthreads: dict = None, netstat=None,
                 rx=None, profile=None):
        self.procs = dict(procs)
        self.kthreads = dict(kthreads or {})
        self.netstat, self.rx = netstat, rx
        self.profile = profile
        self.errors = []        # what could not be read, in words
        self._t0 = None

    def _snap(self) -> dict:
        socks = []
        for pid in self.procs:
            try:
                socks += [dict(s, pid=pid) for s in xsk_sockets(pid)]
            except OSError as exc:      # not root, a ptrace policy
                self.errors.append(f"AF_XDP sockets of {pid}: "
                                   f"{exc.strerror}")
        return {"at": time.monotonic(),
                "threads": threads(self.procs, self.kthreads),
                "sockets": socks,
                "bp": self._read("netstat", self.netstat, busy_poll_rx),
                "rx": self._read("rx", self.rx)}

    def _read(self, what, fn, then=None):
        """fn()'s value (through ``then``), or None if there is no fn or
        it failed (the failure kept in ``errors``)."""
        if fn is None:
            return None
        try:
            value = fn()
        except Exception as exc:        # the window still counts
            self.errors.append(f"{what}: {exc}")
            return None
        return then(value) if then else value

    def start(self) -> None:
        if self.profile:
            self.profile.start()
        self._t0 = self._snap()

    def stop(self) -> dict:
        """The window since start(): {"seconds", "threads": [{"tid",
        "name", "kind", "cpu_s", "share"}], "cpu": {kind: share of the
        window}, "xsk": {"sockets": n, field: delta...}, "busy_poll":
        {"so_busy_poll_us", "prefer", "napi_ids", "rx_packets", "share",
        "engaged"}, "rx_frames", and "errors" (what could not be read:
        the rest still counts)}.  Never raises for a counter it cannot
        read."""
        a, b = self._t0, self._snap()
        perf = self.profile.stop() if self.profile else None
        span = max(b["at"] - a["at"], 1e-9)
        rows = []
        for tid, (name, kind, ns) in sorted(b["threads"].items()):
            ns0 = a["threads"].get(tid, (name, kind, 0))[2]
            cpu = (ns - ns0) / 1e9
            rows.append({"tid": tid, "name": name, "kind": kind,
                         "cpu_s": round(cpu, 4),
                         "share": round(cpu / span, 4)})
        cpu = {k: round(sum(r["share"] for r in rows if r["kind"] == k), 4)
               for k in KINDS if any(r["kind"] == k for r in rows)}
        before = {(s["pid"], s["ino"]): s for s in a["sockets"]}
        xsk = {"sockets": len(b["sockets"])}
        for f in XSK_FIELDS:
            xsk[f] = sum(s[f] - before.get((s["pid"], s["ino"]), {}).get(f, 0)
                         for s in b["sockets"])
        socks = b["sockets"]
        bp = {"so_busy_poll_us": max((s["busy_poll_us"] for s in socks),
                                     default=0),
              "prefer": max((s["prefer_busy_poll"] for s in socks),
                            default=0),
              "napi_ids": sorted({s["napi_id"] for s in socks})}
        if a["bp"] is not None and b["bp"] is not None:
            bp["rx_packets"] = b["bp"] - a["bp"]
        rx = None if a["rx"] is None or b["rx"] is None else \
            b["rx"] - a["rx"]
        if rx and "rx_packets" in bp:
            bp["share"] = round(min(bp["rx_packets"] / rx, 1.0), 4)
        bp["engaged"] = bool(bp["so_busy_poll_us"] > 0
                             and any(bp["napi_ids"])
                             and bp.get("rx_packets", 0) > 0)
        return {"seconds": round(span, 3), "threads": rows, "cpu": cpu,
                "xsk": xsk, "busy_poll": bp,
                **({"rx_frames": rx} if rx is not None else {}),
                **({"perf": perf} if perf is not None else {}),
                **({"errors": self.errors} if self.errors else {})}


def summary(detail: dict, prefix: str = "") -> dict:
    """The numbers of a Probe detail that go in results.json as metrics
    (medians over repeats): cpu_KIND (share of the window), xsk_FIELD per
    second (drops and ring events), busy_poll (1 engaged, 0 not) and
    busy_poll_share; each name with ``prefix``."""
    out = {f"cpu_{k}": v for k, v in detail["cpu"].items()}
    if detail["xsk"]["sockets"]:
        for f in XSK_FIELDS:
            out[f"xsk_{f}_ps"] = detail["xsk"][f] / detail["seconds"]
    out["busy_poll"] = 1.0 if detail["busy_poll"]["engaged"] else 0.0
    if "share" in detail["busy_poll"]:
        out["busy_poll_share"] = detail["busy_poll"]["share"]
    return {prefix + k: v for k, v in out.items()}
