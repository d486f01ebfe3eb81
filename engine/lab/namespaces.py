"""The lab's network namespaces in the kernel: entered, created and marked,
found again, and removed with whatever runs in them.

What is ours is written in the kernel, not only in a file: every namespace
is marked, before it even becomes visible in /run/netns, with an ifalias on
its ``lo`` (``pyfwd-lab:<lab>:<role>:<topology>:<reals>``, see
pyfwd.lab.plan.Marker).  ``scan()``, ``list_labs()`` and ``down_all()``
read those markers, so they work from a fresh process with no state file,
and they never touch a namespace without the marker.

Everything here that enters a namespace does it in a short-lived helper
thread (``in_netns``, a wrapper of pyfwd._netns.in_netns that speaks in
LabErrors): setns(2) with CLONE_NEWNET changes only the calling thread.
Sockets keep the namespace in which they were created, so a netlink or TCP
socket made in such a thread works from any thread afterwards.
"""

import logging
import os
import select
import signal
import socket
import time
from typing import Callable, Optional, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .. import _netns
from ..errors import LabError
from .plan import Marker

log = logging.getLogger(__name__)

__all__ = ["NETNS_DIR", "open_netns", "enter", "in_netns", "iproute",
           "write_sysctls", "sysctl", "create_netns", "scan", "list_labs",
           "remove_netns", "down_all"]

NETNS_DIR = "/run/netns"
NETNS_TIMEOUT = 5.0      # one netlink / sysctl job inside a namespace
KILL_GRACE = 2.0         # SIGTERM -> SIGKILL for processes left in a lab

MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

T = TypeVar("T")

_libc = _netns.libc
_check = _netns.check


def netns_path(namespace: str) -> str:
    """Where ``namespace`` is bind-mounted: /run/netns/<namespace>."""
    return os.path.join(NETNS_DIR, namespace)


def open_netns(namespace: str) -> int:
    """An O_CLOEXEC fd of the namespace; LabError if it does not exist."""
    try:
        return os.open(netns_path(namespace), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LabError(f"network namespace {namespace!r} does not exist") \
            from None


def _cannot_enter(namespace: str, exc: OSError) -> LabError:
    return LabError(f"cannot enter network namespace {namespace!r}: "
                    f"{exc.strerror}")


def enter(fd: int, namespace: str) -> None:
    """setns(2) the calling thread (or forked child) into the namespace of
    ``fd`` (named ``namespace`` in the error); LabError if it cannot."""
    try:
        _check(_libc.setns(fd, _netns.CLONE_NEWNET), "setns")
    except OSError as exc:
        raise _cannot_enter(namespace, exc) from None


def in_netns(namespace: str, fn: Callable[[], T], *, create: bool = False,
             timeout: float = NETNS_TIMEOUT) -> T:
    """Run ``fn()`` in a short-lived thread inside ``namespace`` and return
    its result (or raise its exception).

    With ``create=True`` the thread unshares a brand-new namespace instead
    (``fn`` then publishes it).  Raises LabError if the namespace cannot be
    entered or ``fn`` does not finish within ``timeout`` seconds.
    """
    fd = None if create else open_netns(namespace)
    try:
        return _netns.in_netns(fd, fn, timeout=timeout,
                               name=f"pyfwd-lab:{namespace}")
    except TimeoutError:
        raise LabError(f"namespace {namespace!r}: no answer within "
                       f"{timeout:g}s") from None
    except _netns.EnterError as exc:
        if create:
            raise
        raise _cannot_enter(namespace, exc) from None
    finally:
        if fd is not None:
            os.close(fd)


def _rtnl_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                         socket.NETLINK_ROUTE)


def iproute(namespace: str) -> IPRoute:
    """An IPRoute whose netlink socket lives in ``namespace``.

    Unlike ``IPRoute(netns=...)`` this never creates a missing namespace and
    does not fork.
    """
    return IPRoute(use_socket=in_netns(namespace, _rtnl_socket))


def _sysctl_path(key: str) -> str:
    # "net.ipv4.ip_forward" or "net/ipv4/conf/eth0.100/rp_filter"
    rel = key if "/" in key else key.replace(".", "/")
    path = os.path.normpath(os.path.join("/proc/sys", rel))
    if not path.startswith("/proc/sys/"):
        raise LabError(f"invalid sysctl key {key!r}")
    return path


def write_sysctls(settings: dict, if_present: bool = False) -> None:
    """Write sysctls in the calling thread's namespace: /proc/sys/net
    resolves against the calling thread, not the process.  With
    ``if_present``, keys the kernel does not have are skipped."""
    for key, value in settings.items():
        path = _sysctl_path(key)
        if if_present and not os.path.exists(path):
            continue
        with open(path, "w") as f:
            f.write(f"{value}\n")


def sysctl(namespace: str, key: str, value=None) -> str:
    """Read (and first write, if ``value`` is given) the sysctl ``key``
    (``"net.ipv4.ip_forward"``, or a path under /proc/sys for keys whose
    parts contain dots) inside ``namespace``.

    Returns the value read, stripped.  Raises LabError if the namespace or
    the key does not exist or the write is refused.
    """
    path = _sysctl_path(key)

    def job():
        if value is not None:
            with open(path, "w") as f:
                f.write(f"{value}\n")
        with open(path) as f:
            return f.read().strip()

    try:
        return in_netns(namespace, job)
    except OSError as exc:
        raise LabError(f"sysctl {key} in {namespace!r}: "
                       f"{exc.strerror or exc}") from None


def create_netns(namespace: str, marker: Marker, sysctls: dict) -> None:
    """Create a namespace: sysctls written, lo up and marked, then bind-
    mounted at /run/netns/<namespace>.  It is marked before it is visible,
    so no one can ever see it unmarked.  Raises LabError if the name is
    taken (ours or not)."""

    def publish():
        write_sysctls(sysctls)
        with IPRoute(use_socket=_rtnl_socket()) as ipr:
            ipr.link("set", index=1, state="up", ifalias=str(marker))
        _bind_netns(namespace, marker)

    in_netns(namespace, publish, create=True)


def _bind_netns(namespace: str, marker: Marker) -> None:
    """Give the calling thread's namespace its name, as `ip netns add`
    does after its unshare: /run/netns is made a shared mount (once), the
    name is claimed with O_EXCL, the namespace is bind-mounted on it."""
    os.makedirs(NETNS_DIR, exist_ok=True)
    rundir = NETNS_DIR.encode()
    if _libc.mount(b"", rundir, b"none", MS_SHARED | MS_REC, None) != 0:
        # not a mount point yet: make it one, then share it
        _check(_libc.mount(rundir, rundir, b"none", MS_BIND | MS_REC, None),
               f"mount --rbind {NETNS_DIR}")
        _check(_libc.mount(b"", rundir, b"none", MS_SHARED | MS_REC, None),
               f"mount --make-rshared {NETNS_DIR}")
    path = netns_path(namespace)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL
                         | os.O_CLOEXEC, 0))
    except FileExistsError:
        raise LabError(f"network namespace {namespace!r} already exists and "
                       f"is not part of lab {marker.lab!r}") from None
    try:
        _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(),
                           b"none", MS_BIND, None), f"mount {path}")
    except BaseException:
        os.unlink(path)
        raise


def _read_marker(namespace: str) -> Optional[Marker]:
    """The marker of a namespace, or None (unmarked, gone, or not a netns)."""
    try:
        with iproute(namespace) as ipr:
            alias = ipr.link("get", index=1)[0].get("IFLA_IFALIAS")
    except (LabError, OSError, NetlinkError) as exc:
        log.debug("netns %s: no marker read: %s", namespace, exc)
        return None
    return Marker.parse(alias)


def scan(lab: Optional[str] = None) -> dict:
    """Find the marked namespaces: ``{namespace: Marker}``.

    Looks inside every namespace of /run/netns (only those named
    ``<lab>-*`` if ``lab`` is given).  Unmarked namespaces are left out.
    Never raises for a namespace that vanishes or cannot be entered.
    """
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return {}
    if lab is not None:
        names = [n for n in names if n.startswith(f"{lab}-")]
    found = {}
    for name in names:
        marker = _read_marker(name)
        if marker is not None and (lab is None or marker.lab == lab):
            found[name] = marker
    return found


def list_labs() -> list:
    """Sorted names of the labs that have at least one namespace, read from
    the kernel markers."""
    return sorted({m.lab for m in scan().values()})


def _netns_processes(namespaces: list) -> dict:
    """{pid: namespace} of the processes living in one of ``namespaces``."""
    inodes = {}
    for name in namespaces:
        try:
            st = os.stat(netns_path(name))
        except OSError:
            continue
        inodes[(st.st_dev, st.st_ino)] = name
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue                    # gone, or a zombie
        name = inodes.get((st.st_dev, st.st_ino))
        if name is not None:
            found[int(entry)] = name
    return found


def _kill_processes(namespaces: list, grace: float = KILL_GRACE) -> None:
    """Stop every process inside ``namespaces``: SIGTERM, wait up to
    ``grace`` seconds, then SIGKILL whatever is there (including anything
    forked meanwhile) and wait again.  pidfds make a recycled pid harmless."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pidfds = []
        for pid, name in _netns_processes(namespaces).items():
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue                # already gone
            log.info("sending %s to pid %d in namespace %s", sig.name, pid,
                     name)
            try:
                signal.pidfd_send_signal(pidfd, sig)
                pidfds.append(pidfd)
            except OSError:
                os.close(pidfd)
        if not pidfds:
            return
        deadline = time.monotonic() + grace
        for pidfd in pidfds:
            # a pidfd becomes readable when its process exits
            left = max(0.0, deadline - time.monotonic())
            select.select([pidfd], [], [], left)
            os.close(pidfd)


def remove_netns(namespaces: list) -> list:
    """Kill what runs in them, then unmount and unlink each namespace (the
    kernel frees it, with its veths, when the last reference goes).
    Returns the names removed."""
    _kill_processes(namespaces)
    removed = []
    for name in namespaces:
        path = netns_path(name)
        _libc.umount2(path.encode(), MNT_DETACH)    # fails if not mounted
        try:
            os.unlink(path)
            removed.append(name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise LabError(f"cannot remove network namespace {name!r}: "
                           f"{exc.strerror}") from None
    return removed


def down_all(prefix: str = "") -> list:
    """Remove every marked lab namespace whose lab name starts with
    ``prefix`` (all of them by default), with the processes inside, and
    nothing else.

    Works with no state at all: it reads the markers in the kernel.
    Returns the sorted list of namespaces removed.  Raises LabError if a
    namespace cannot be removed.
    """
    marked = [ns for ns, m in scan().items() if m.lab.startswith(prefix)]
    return sorted(remove_netns(marked))


