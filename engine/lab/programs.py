"""Programs, sockets and calls inside network namespaces that exist.

``Namespaces`` runs things in namespaces named by role: ``run()`` and
``popen()`` start a program in the forked child before exec (joining the
namespace like `ip netns exec`, with a /sys of its own), ``socket()`` makes
a socket there, ``call()`` runs a function in a thread there, ``sysctl()``
reads and writes one, ``address()`` adds or removes an address; ``close()``
stops what it started.  A ``Lab``
(pyfwd.lab.topology) is one, over the namespaces of its plan; the
packet-rate bench uses one over two namespaces of its own.

``PYFWD`` is the pyfwd command as the programs started here run it: this
interpreter's, so a virtualenv's pyfwd runs inside a namespace too.
"""

import logging
import os
import socket as _socket
import subprocess
import sys
import weakref
from typing import Callable, Optional, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from .. import _netns
from ..errors import LabError
from .namespaces import (KILL_GRACE, MS_BIND, MS_REC, MS_SLAVE,
                         enter, in_netns, iproute, open_netns,
                         sysctl)

log = logging.getLogger(__name__)

__all__ = ["PYFWD", "RUN_TIMEOUT", "Namespaces", "spawn", "stop"]

PYFWD = [sys.executable, "-m", "pyfwd.cli"]
RUN_TIMEOUT = 30.0       # default timeout of Namespaces.run()

T = TypeVar("T")

_libc = _netns.libc
_check = _netns.check


def _sys_submounts() -> list:
    """The outermost mounts below /sys (cgroup, bpffs, tracefs, ...); a
    recursive bind of each brings the ones nested in it."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point.startswith("/sys/") and "\\" not in point \
                    and point not in points:
                points.append(point)
    return [p for p in points
            if not any(p.startswith(q + "/") for q in points)]


def _enter_for_exec(nsfd: int, namespace: str, submounts: list) -> None:
    """In a forked child: join the namespace like `ip netns exec`, in a
    private mount namespace where /sys is a fresh sysfs (so /sys/class/net
    shows this namespace) -- and unlike `ip netns exec`, the host's mounts
    below /sys (bpffs, cgroup, tracefs) stay visible.  / is made a slave
    first, so nothing propagates back to the host."""
    enter(nsfd, namespace)
    _check(_libc.unshare(_netns.CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, MS_SLAVE | MS_REC, None),
           "mount --make-rslave /")
    # O_PATH handles on the submounts, taken before the new sysfs hides them
    kept = []
    for point in submounts:
        try:
            kept.append((os.open(point, os.O_PATH | os.O_CLOEXEC), point))
        except OSError:
            pass
    _check(_libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None), "mount /sys")
    for fd, point in kept:
        _check(_libc.mount(f"/proc/self/fd/{fd}".encode(), point.encode(),
                           None, MS_BIND | MS_REC, None),
               f"mount --rbind {point}")
        os.close(fd)


def spawn(namespace: str, start: Callable, argv, kwargs: dict):
    """``start(argv, **kwargs)`` (subprocess.run or Popen) with the child
    inside ``namespace`` (see _enter_for_exec) before it runs its own
    ``preexec_fn``, if any.  LabError if the namespace does not exist or
    the child cannot enter it; what ``start`` raises otherwise."""
    user_preexec = kwargs.pop("preexec_fn", None)
    submounts = _sys_submounts()
    nsfd = open_netns(namespace)

    def preexec():
        _enter_for_exec(nsfd, namespace, submounts)
        if user_preexec is not None:
            user_preexec()

    try:
        return start(argv, preexec_fn=preexec, **kwargs)
    except subprocess.SubprocessError as exc:
        if type(exc) is not subprocess.SubprocessError:
            raise                       # TimeoutExpired, CalledProcessError
        # the child could not enter the namespace (preexec_fn failed)
        raise LabError(f"cannot start {argv[0]!r} in namespace "
                       f"{namespace!r}: {exc}") from None
    finally:
        os.close(nsfd)




def stop(proc: Optional[subprocess.Popen], grace: float = KILL_GRACE) -> None:
    """Stop a program we started: SIGTERM, then SIGKILL if it is still
    there after ``grace`` seconds; reaped either way.  A process that
    outlives SIGKILL by ``grace`` (stuck in the kernel) is logged and left.
    None or a process already ended: nothing to do."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("pid %d outlived SIGKILL by %g s", proc.pid, grace)


class Namespaces:
    """Programs, sockets and calls inside existing network namespaces, each
    named by a role: ``Namespaces({"gen": "x-gen", "lb": "x-lb"})``.

    What it starts and makes is its own: ``close()`` stops the programs
    still running (SIGTERM, then SIGKILL) and closes the sockets still
    open.  A subclass may name its namespaces otherwise by overriding
    ``ns()`` (Lab does, from its plan).
    """

    def __init__(self, namespaces: Optional[dict] = None):
        self._namespaces = dict(namespaces or {})
        self._procs = []
        self._sockets = weakref.WeakSet()

    def ns(self, role: str) -> str:
        """The namespace name of ``role``; LabError if no such role."""
        try:
            return self._namespaces[role]
        except KeyError:
            raise LabError(f"no namespace for role {role!r}: roles are "
                           f"{', '.join(self._namespaces)}") from None

    @property
    def procs(self) -> list:
        """The programs popen() started that close() would stop (those
        found ended at a later popen() are left out)."""
        return list(self._procs)

    def run(self, role: str, argv, timeout: Optional[float] = RUN_TIMEOUT,
            **kwargs) -> subprocess.CompletedProcess:
        """``subprocess.run(argv, timeout=timeout, **kwargs)`` inside the
        namespace of ``role`` (as `ip netns exec` would, /sys included).

        Returns the CompletedProcess.  Raises LabError if the role or its
        namespace does not exist, and what subprocess.run raises
        (TimeoutExpired, CalledProcessError with check=True, ...).
        """
        return spawn(self.ns(role), subprocess.run, argv,
                     dict(kwargs, timeout=timeout))

    def popen(self, role: str, argv, **kwargs) -> subprocess.Popen:
        """``subprocess.Popen(argv, **kwargs)`` inside the namespace of
        ``role``.  The process is stopped by close() if still running.
        Raises like run()."""
        proc = spawn(self.ns(role), subprocess.Popen, argv, kwargs)
        self._procs = [p for p in self._procs if p.poll() is None] + [proc]
        return proc

    def socket(self, role: str, family: int = _socket.AF_INET,
               type: int = _socket.SOCK_STREAM,
               proto: int = 0) -> _socket.socket:
        """A socket created inside the namespace of ``role``; it keeps that
        namespace for its life.  close() closes it if still open.  Raises
        LabError if the namespace does not exist, OSError from socket()."""
        sock = in_netns(self.ns(role),
                        lambda: _socket.socket(family, type, proto))
        self._sockets.add(sock)
        return sock

    def call(self, role: str, fn: Callable[[], T],
             timeout: float = 30.0) -> T:
        """``fn()`` run in a thread inside the namespace of ``role``; its
        result, or its exception.  Threads that fn starts stay in that
        namespace (an in-process engine for tests).  Raises LabError if the
        namespace does not exist or fn takes over ``timeout`` seconds."""
        return in_netns(self.ns(role), fn, timeout=timeout)

    def sysctl(self, role: str, key: str, value=None) -> str:
        """Read (after writing ``value`` if given) a sysctl in the namespace
        of ``role``; see pyfwd.lab.namespaces.sysctl()."""
        return sysctl(self.ns(role), key, value)

    def address(self, role: str, op: str, ifname: str, address: str,
                prefixlen: int) -> None:
        """`ip address add|del ADDRESS/PREFIXLEN dev IFNAME` (``op`` "add"
        or "del") in the namespace of ``role``.  LabError if the interface
        does not exist or netlink refuses."""
        try:
            with iproute(self.ns(role)) as ipr:
                index, = ipr.link_lookup(ifname=ifname) or [None]
                if index is None:
                    raise LabError(f"{role} has no interface {ifname!r}")
                ipr.addr(op, index=index, address=address,
                         prefixlen=prefixlen)
        except NetlinkError as exc:
            raise LabError(f"address {op} {address}/{prefixlen} on {role} "
                           f"{ifname}: {exc}") from None

    def close(self, grace: float = KILL_GRACE) -> None:
        """Close the sockets made and stop the programs started (see stop())
        that are still there.  Idempotent."""
        for sock in list(self._sockets):
            sock.close()
        for proc in self._procs:
            stop(proc, grace)
        self._procs.clear()
