"""Namespace labs: named topologies of network namespaces, built with pyroute2.

A lab is a small network made only of namespaces, so that it never touches the
root namespace and two labs never collide:

- one host namespace per role: ``<lab>-client``, ``<lab>-lb`` (and
  ``<lab>-lb2`` in one-arm-ha, the HA pair), ``<lab>-real1`` ..
  ``<lab>-realN``;
- one switch namespace per L2 segment (``<lab>-sw`` for one-arm,
  ``<lab>-swout`` and ``<lab>-swin`` for two-arm) holding a bridge ``br0``;
- one veth pair per host interface, created directly with one end (``eth0``,
  ``eth1``) in the host namespace and the other (named after the host role)
  in the switch namespace, enslaved to ``br0``.

Host interfaces have tx checksum offload off, so the frames that an XDP or
AF_XDP balancer sees carry complete checksums (see ``_tx_checksum_off``).

Topologies are data (``_TOPOLOGIES``); ``make_plan()`` turns one into a
``Plan`` (pure, no root needed) and ``Lab.up()`` builds that plan.  The address
plan is documented in docs/lab-addresses.md.

What is ours is written in the kernel, not only in a file: every namespace is
marked, before it even becomes visible in /run/netns, with an ifalias on its
``lo`` (``pyfwd-lab:<lab>:<role>:<topology>:<reals>``, see ``Marker``).
``scan()``, ``list_labs()``, ``Lab.load()`` and ``down_all()`` read those
markers, so they work from a fresh process with no state file, and they never
touch a namespace without the marker.

Everything here that enters a namespace does it in a short-lived helper thread
(setns(2) with CLONE_NEWNET changes only the calling thread), or, for
programs, in the forked child before exec.  Sockets keep the namespace in
which they were created, so a netlink or TCP socket made in such a thread works
from any thread afterwards.
"""

import dataclasses
import ipaddress
import logging
import os
import re
import select
import signal
import socket as _socket
import subprocess
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

from pyroute2 import IPRoute
from pyroute2.ethtool.ioctl import IoctlEthtool
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from pyfwd import _netns
from pyfwd.errors import LabError
from pyfwd.neighbours.frames import mac_to_str

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_NAME", "TOPOLOGIES", "MAX_REALS", "NETNS_DIR",
    "Interface", "Route", "Node", "Plan", "Marker", "Lab",
    "make_plan", "format_plan", "scan", "list_labs", "down_all", "sysctl",
]

DEFAULT_NAME = "pyfwd"
MAX_REALS = 16
NETNS_DIR = "/run/netns"
MARKER_PREFIX = "pyfwd-lab"

_NAME_RE = re.compile(r"[a-z][a-z0-9]{0,11}")
_BRIDGE = "br0"

NETNS_TIMEOUT = 5.0      # one netlink / sysctl job inside a namespace
KILL_GRACE = 2.0         # SIGTERM -> SIGKILL for processes left in a lab
RUN_TIMEOUT = 30.0       # default timeout of Lab.run()

T = TypeVar("T")


# ---------------------------------------------------------------------------
# Topologies, as data


@dataclass(frozen=True)
class _SegmentSpec:
    """One L2 segment: a switch namespace with a bridge and its members.

    ``number`` gives the IPv6 subnet (fd00:0:0:<number>::/64) and the fifth
    MAC byte.  A member is ``(role, ifname, host)``; the role ``"real"`` stands
    for every real server, real i getting host number ``host + i``.
    """

    number: int
    switch: str
    ipv4: str
    members: tuple


@dataclass(frozen=True)
class _RouteSpec:
    """A static route: ``role`` reaches segment ``to`` (None: default route)
    through the gateway ``via``'s address on segment ``on``."""

    role: str
    to: Optional[str]
    via: str
    on: str


@dataclass(frozen=True)
class _TopologySpec:
    segments: tuple
    vip_segment: str
    routes: tuple = ()
    forwarding: tuple = ()     # roles that route between their interfaces


_VIP_HOST = 100

_TOPOLOGIES = {
    "one-arm": _TopologySpec(
        segments=(
            _SegmentSpec(1, "sw", "10.0.0.0/24", (
                ("client", "eth0", 1), ("lb", "eth0", 2),
                ("real", "eth0", 10))),
        ),
        vip_segment="sw",
    ),
    # one-arm with a second balancer: an active/passive pair (pyfwd ha)
    "one-arm-ha": _TopologySpec(
        segments=(
            _SegmentSpec(1, "sw", "10.0.0.0/24", (
                ("client", "eth0", 1), ("lb", "eth0", 2),
                ("lb2", "eth0", 3), ("real", "eth0", 10))),
        ),
        vip_segment="sw",
    ),
    "two-arm": _TopologySpec(
        segments=(
            _SegmentSpec(1, "swout", "10.0.0.0/24", (
                ("client", "eth0", 1), ("lb", "eth0", 2))),
            _SegmentSpec(2, "swin", "192.168.50.0/24", (
                ("lb", "eth1", 1), ("real", "eth0", 10))),
        ),
        vip_segment="swout",
        routes=(
            _RouteSpec("real", to=None, via="lb", on="swin"),
            _RouteSpec("client", to="swin", via="lb", on="swout"),
        ),
        forwarding=("lb",),
    ),
}

TOPOLOGIES = tuple(_TOPOLOGIES)


# ---------------------------------------------------------------------------
# The plan: plain data, JSON-serialisable through to_dict()


@dataclass(frozen=True)
class Interface:
    """An interface of a node.

    Host interfaces carry ``mac``, ``ipv4``/``ipv6`` as ``address/prefixlen``
    and where they are plugged: ``switch`` (the switch role) and ``port`` (the
    name of the veth peer inside that switch namespace).  A switch's ``br0``
    has only a name.
    """

    name: str
    mac: Optional[str] = None
    ipv4: Optional[str] = None
    ipv6: Optional[str] = None
    switch: Optional[str] = None
    port: Optional[str] = None

    @property
    def addr4(self) -> Optional[str]:
        """The IPv4 address without its prefix length, or None."""
        return self.ipv4.split("/")[0] if self.ipv4 else None

    @property
    def addr6(self) -> Optional[str]:
        """The IPv6 address without its prefix length, or None."""
        return self.ipv6.split("/")[0] if self.ipv6 else None


@dataclass(frozen=True)
class Route:
    """A static route: ``dst`` is a prefix or ``"default"``."""

    dst: str
    via: str


@dataclass(frozen=True)
class Node:
    """One namespace of a lab.

    ``kind`` is ``"host"`` or ``"switch"``.  A switch's ``ports`` lists the
    veth ends enslaved to its ``br0``.  ``forwarding`` is the namespace's
    ip_forward / IPv6 forwarding setting.
    """

    role: str
    namespace: str
    kind: str
    interfaces: tuple
    routes: tuple = ()
    ports: tuple = ()
    forwarding: bool = False

    def interface(self, name: str) -> Interface:
        """The interface called ``name``; raises LabError if there is none."""
        for iface in self.interfaces:
            if iface.name == name:
                return iface
        raise LabError(f"{self.role} has no interface {name!r}: "
                       f"it has {', '.join(i.name for i in self.interfaces)}")

    def _gateway(self, version: int) -> Optional[str]:
        for route in self.routes:
            if route.dst == "default" and \
                    ipaddress.ip_address(route.via).version == version:
                return route.via
        return None

    @property
    def gateway4(self) -> Optional[str]:
        """The IPv4 default gateway, or None."""
        return self._gateway(4)

    @property
    def gateway6(self) -> Optional[str]:
        """The IPv6 default gateway, or None."""
        return self._gateway(6)


@dataclass(frozen=True)
class Plan:
    """Everything a lab consists of: computed from (name, topology, reals)
    alone, so the same arguments always give an equal plan."""

    name: str
    topology: str
    reals: int
    vip4: str
    vip6: str
    nodes: tuple

    def node(self, role: str) -> Node:
        """The node of ``role``; raises LabError naming the role if unknown."""
        for node in self.nodes:
            if node.role == role:
                return node
        raise LabError(f"lab {self.name!r} has no role {role!r}: roles are "
                       f"{', '.join(n.role for n in self.nodes)}")

    @property
    def hosts(self) -> tuple:
        return tuple(n for n in self.nodes if n.kind == "host")

    @property
    def switches(self) -> tuple:
        return tuple(n for n in self.nodes if n.kind == "switch")

    @property
    def real_roles(self) -> list:
        return [f"real{i}" for i in range(1, self.reals + 1)]

    def to_dict(self) -> dict:
        """The plan as JSON-ready dicts and lists."""
        return _listify(dataclasses.asdict(self))


def _listify(value):
    if isinstance(value, dict):
        return {k: _listify(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_listify(v) for v in value]
    return value


def _validate(name, topology, reals) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise LabError(f"invalid lab name {name!r}: expected a lowercase "
                       f"letter then up to 11 lowercase letters or digits")
    if not isinstance(topology, str) or topology not in _TOPOLOGIES:
        raise LabError(f"unknown lab topology {topology!r}: expected one of "
                       f"{', '.join(TOPOLOGIES)}")
    if not isinstance(reals, int) or isinstance(reals, bool) \
            or not 1 <= reals <= MAX_REALS:
        raise LabError(f"invalid number of reals {reals!r}: expected an "
                       f"integer from 1 to {MAX_REALS}")


def _same_digits(host: int) -> int:
    """Host 11 -> 0x11: MACs and IPv6 addresses read like the IPv4 octet."""
    return int(str(host), 16)


def _host_addrs(seg: _SegmentSpec, host: int) -> tuple:
    net4 = ipaddress.ip_network(seg.ipv4)
    net6 = ipaddress.ip_network(f"fd00:0:0:{seg.number:x}::/64")
    return (f"{net4.network_address + host}/{net4.prefixlen}",
            f"{net6.network_address + _same_digits(host)}/{net6.prefixlen}")


def _expand(role: str, reals: int) -> list:
    """``"real"`` -> [("real1", 1), ...]; any other role -> [(role, 0)]."""
    if role == "real":
        return [(f"real{i}", i) for i in range(1, reals + 1)]
    return [(role, 0)]


def make_plan(name: str = DEFAULT_NAME, topology: str = "one-arm",
              reals: int = 3) -> Plan:
    """Compute the plan of a lab without touching the kernel.

    Returns a Plan whose nodes are the hosts (client, lb, lb2 in one-arm-ha,
    real1..N) then the switches.  Raises LabError, naming the value, on a bad name, an unknown
    topology or a number of reals outside 1..MAX_REALS.
    """
    _validate(name, topology, reals)
    spec = _TOPOLOGIES[topology]
    segments = {seg.switch: seg for seg in spec.segments}
    ifaces = {}         # host role -> [Interface]
    ports = {}          # switch role -> [port name]
    for seg in spec.segments:
        for member, ifname, base in seg.members:
            for role, i in _expand(member, reals):
                ipv4, ipv6 = _host_addrs(seg, base + i)
                mac = mac_to_str(bytes((2, 0, 0, 0, seg.number,
                                        _same_digits(base + i))))
                ifaces.setdefault(role, []).append(Interface(
                    ifname, mac, ipv4, ipv6, switch=seg.switch, port=role))
                ports.setdefault(seg.switch, []).append(role)

    def address_of(role, switch):
        for iface in ifaces[role]:
            if iface.switch == switch:
                return iface
        raise AssertionError(f"{role} is not on {switch}")  # bad spec

    routes = {}
    for r in spec.routes:
        gw = address_of(r.via, r.on)
        if r.to is None:
            new = (Route("default", gw.addr4), Route("default", gw.addr6))
        else:
            dst4, dst6 = _host_addrs(segments[r.to], 0)
            new = (Route(dst4, gw.addr4), Route(dst6, gw.addr6))
        for role, _ in _expand(r.role, reals):
            routes.setdefault(role, []).extend(new)

    host_roles = list(ifaces)   # client, lb(, lb2), real1..N: spec order
    nodes = [Node(role, f"{name}-{role}", "host", tuple(ifaces[role]),
                  routes=tuple(routes.get(role, ())),
                  forwarding=role in spec.forwarding)
             for role in host_roles]
    nodes += [Node(seg.switch, f"{name}-{seg.switch}", "switch",
                   (Interface(_BRIDGE),), ports=tuple(ports[seg.switch]))
              for seg in spec.segments]
    vip4, vip6 = _host_addrs(segments[spec.vip_segment], _VIP_HOST)
    return Plan(name, topology, reals, vip4.split("/")[0],
                vip6.split("/")[0], tuple(nodes))


def format_plan(plan: Plan) -> str:
    """A text table of the plan for humans (``pyfwd lab show``)."""
    rows = [("ROLE", "NAMESPACE", "IF", "MAC", "IPV4", "IPV6", "SWITCH")]
    for node in plan.hosts:
        for k, iface in enumerate(node.interfaces):
            lead = (node.role, node.namespace) if k == 0 else ("", "")
            rows.append(lead + (iface.name, iface.mac, iface.ipv4,
                                iface.ipv6, iface.switch))
        notes = [f"route {r.dst} via {r.via}" for r in node.routes]
        notes += ["ip forwarding on"] if node.forwarding else []
        rows += [("", "", note) for note in notes]
    for node in plan.switches:
        rows.append((node.role, node.namespace,
                     f"{_BRIDGE} ports: {' '.join(node.ports)}"))
    # short rows end with a free-text cell that runs over the columns
    full = [row for row in rows if len(row) == len(rows[0])]
    widths = [max(len(row[i]) for row in full) for i in range(len(rows[0]))]
    lines = [f"lab {plan.name}: {plan.topology}, {plan.reals} real(s), "
             f"suggested VIP {plan.vip4} {plan.vip6}"]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        if len(row) < len(widths):
            cells[-1] = row[-1]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Markers: what is ours, written in the kernel


@dataclass(frozen=True)
class Marker:
    """The ifalias on ``lo`` that marks a namespace as part of a lab:
    ``pyfwd-lab:<lab>:<role>:<topology>:<reals>``."""

    lab: str
    role: str
    topology: str
    reals: int

    def __str__(self) -> str:
        return (f"{MARKER_PREFIX}:{self.lab}:{self.role}:{self.topology}:"
                f"{self.reals}")

    @classmethod
    def parse(cls, text: Optional[str]) -> Optional["Marker"]:
        """The Marker in ``text``, or None if it is not a valid one."""
        parts = (text or "").split(":")
        if len(parts) != 5 or parts[0] != MARKER_PREFIX:
            return None
        _, lab, role, topology, reals = parts
        if not reals.isdigit():
            return None
        try:
            plan = make_plan(lab, topology, int(reals))
            plan.node(role)
        except (LabError, ValueError):
            return None
        return cls(lab, role, topology, int(reals))


# ---------------------------------------------------------------------------
# Kernel helpers: namespaces, threads, sysctls

MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = _netns.libc
_check = _netns.check


def _netns_path(namespace: str) -> str:
    return os.path.join(NETNS_DIR, namespace)


def _open_netns(namespace: str) -> int:
    """An O_CLOEXEC fd of the namespace; LabError if it does not exist."""
    try:
        return os.open(_netns_path(namespace), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LabError(f"network namespace {namespace!r} does not exist") \
            from None


def _setns_fd(fd: int, namespace: str) -> None:
    try:
        _check(_libc.setns(fd, _netns.CLONE_NEWNET), "setns")
    except OSError as exc:
        raise LabError(f"cannot enter network namespace {namespace!r}: "
                       f"{exc.strerror}") from None


def _in_netns(namespace: str, fn: Callable[[], T], *, create: bool = False,
              timeout: float = NETNS_TIMEOUT) -> T:
    """Run ``fn()`` in a short-lived thread inside ``namespace`` and return
    its result (or raise its exception).

    With ``create=True`` the thread unshares a brand-new namespace instead
    (``fn`` then publishes it).  Raises LabError if the namespace cannot be
    entered or ``fn`` does not finish within ``timeout`` seconds.
    """
    fd = None if create else _open_netns(namespace)
    try:
        return _netns.in_netns(fd, fn, timeout=timeout,
                               name=f"pyfwd-lab:{namespace}")
    except TimeoutError:
        raise LabError(f"namespace {namespace!r}: no answer within "
                       f"{timeout:g}s") from None
    except _netns.EnterError as exc:
        if create:
            raise
        raise LabError(f"cannot enter network namespace {namespace!r}: "
                       f"{exc.strerror}") from None
    finally:
        if fd is not None:
            os.close(fd)


def _rtnl_socket() -> _socket.socket:
    return _socket.socket(_socket.AF_NETLINK, _socket.SOCK_DGRAM,
                          _socket.NETLINK_ROUTE)


def _iproute(namespace: str) -> IPRoute:
    """An IPRoute whose netlink socket lives in ``namespace``.

    Unlike ``IPRoute(netns=...)`` this never creates a missing namespace and
    does not fork.
    """
    return IPRoute(use_socket=_in_netns(namespace, _rtnl_socket))


def _sysctl_path(key: str) -> str:
    # "net.ipv4.ip_forward" or "net/ipv4/conf/eth0.100/rp_filter"
    rel = key if "/" in key else key.replace(".", "/")
    path = os.path.normpath(os.path.join("/proc/sys", rel))
    if not path.startswith("/proc/sys/"):
        raise LabError(f"invalid sysctl key {key!r}")
    return path


def _write_sysctls(settings: dict, if_present: bool = False) -> None:
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
        return _in_netns(namespace, job)
    except OSError as exc:
        raise LabError(f"sysctl {key} in {namespace!r}: "
                       f"{exc.strerror or exc}") from None


def _create_netns(namespace: str, marker: Marker, sysctls: dict) -> None:
    """Create a namespace: sysctls written, lo up and marked, then bind-
    mounted at /run/netns/<namespace>.  It is marked before it is visible,
    so no one can ever see it unmarked.  Raises LabError if the name is
    taken (ours or not)."""

    def publish():
        _write_sysctls(sysctls)
        with IPRoute(use_socket=_rtnl_socket()) as ipr:
            ipr.link("set", index=1, state="up", ifalias=str(marker))
        _bind_netns(namespace, marker)

    _in_netns(namespace, publish, create=True)


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
    path = _netns_path(namespace)
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
        with _iproute(namespace) as ipr:
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
            st = os.stat(_netns_path(name))
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


def _remove_netns(namespaces: list) -> list:
    """Kill what runs in them, then unmount and unlink each namespace (the
    kernel frees it, with its veths, when the last reference goes).
    Returns the names removed."""
    _kill_processes(namespaces)
    removed = []
    for name in namespaces:
        path = _netns_path(name)
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
    return sorted(_remove_netns(marked))


# ---------------------------------------------------------------------------
# Programs inside a namespace


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
    _setns_fd(nsfd, namespace)
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


def _spawn(namespace: str, start: Callable, argv, kwargs: dict):
    user_preexec = kwargs.pop("preexec_fn", None)
    submounts = _sys_submounts()
    nsfd = _open_netns(namespace)

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


# ---------------------------------------------------------------------------
# The lab


def _host_sysctls(forwarding: bool) -> dict:
    # New namespaces copy some defaults from the root namespace: say them.
    flag = int(forwarding)
    settings = {"net.ipv4.ip_forward": flag,
                "net.ipv6.conf.all.forwarding": flag}
    for conf in ("all", "default"):
        settings.update({
            f"net.ipv4.conf.{conf}.arp_ignore": 0,
            f"net.ipv4.conf.{conf}.arp_announce": 0,
            f"net.ipv4.conf.{conf}.rp_filter": 0,
            f"net.ipv6.conf.{conf}.accept_dad": 0,
        })
    return settings


def _tx_checksum_off(ifname: str) -> None:
    """`ethtool -K <ifname> tx off` in the calling thread's namespace.

    With tx checksum offload a veth hands its peer TCP/UDP packets whose
    checksum is only the pseudo-header sum (CHECKSUM_PARTIAL).  The kernel
    copes, but XDP and AF_XDP see those bytes, and a frame forwarded from
    userspace arrives with a bad checksum and is dropped.  So hosts send
    complete checksums."""
    ethtool = IoctlEthtool(ifname)
    try:
        ethtool.set_offload_flag("tx-checksumming", 0)
    finally:
        ethtool.close()


# A switch is a bridge and nothing else: no IPv6 (no link-local chatter).
_SWITCH_SYSCTLS = {"net.ipv6.conf.all.disable_ipv6": 1,
                   "net.ipv6.conf.default.disable_ipv6": 1}

# A switch forwards frames, it does not judge them: with br_netfilter
# loaded (Docker loads it), bridged IPv4 goes through iptables' sanity
# checks, which drop malformed headers before the balancer can see (and
# count) them.  These exist only when br_netfilter is loaded.
_SWITCH_SYSCTLS_IF_PRESENT = {
    "net.bridge.bridge-nf-call-iptables": 0,
    "net.bridge.bridge-nf-call-ip6tables": 0,
    "net.bridge.bridge-nf-call-arptables": 0,
}


class Lab:
    """A named lab of namespaces (see the module docstring).

    ``Lab(name, topology, reals)`` only computes the plan; ``up()`` builds it,
    ``down()`` removes it.  As a context manager it builds on enter and always
    removes on exit.  Raises LabError, naming the value, on a bad name,
    topology or number of reals.
    """

    def __init__(self, name: str = DEFAULT_NAME, topology: str = "one-arm",
                 reals: int = 3):
        self._plan = make_plan(name, topology, reals)
        self._procs = []
        self._sockets = weakref.WeakSet()

    def __repr__(self) -> str:
        return (f"Lab(name={self.name!r}, topology={self.topology!r}, "
                f"reals={self._plan.reals})")

    # -- what it is

    @property
    def name(self) -> str:
        return self._plan.name

    @property
    def topology(self) -> str:
        return self._plan.topology

    @property
    def reals(self) -> list:
        """The real server roles: ``["real1", ..., "realN"]``."""
        return self._plan.real_roles

    def plan(self) -> Plan:
        """The plan (equal for equal (name, topology, reals))."""
        return self._plan

    def format_plan(self) -> str:
        """The plan as a text table (see format_plan())."""
        return format_plan(self._plan)

    def node(self, role: str) -> Node:
        """The plan's Node of ``role`` ("client", "lb", "real1", "sw", ...);
        LabError if the lab has no such role."""
        return self._plan.node(role)

    def ns(self, role: str) -> str:
        """The namespace name of ``role``; LabError if no such role."""
        return self.node(role).namespace

    def ip(self, role: str, ifname: str = "eth0", version: int = 4) -> str:
        """The bare IPv4 (or IPv6 with ``version=6``) address of ``role`` on
        ``ifname``; LabError if no such role or interface."""
        iface = self.node(role).interface(ifname)
        address = iface.addr4 if version == 4 else iface.addr6
        if address is None:
            raise LabError(f"{role} {ifname} has no IPv{version} address")
        return address

    # -- life cycle

    @classmethod
    def load(cls, name: str = DEFAULT_NAME) -> "Lab":
        """The Lab of an existing lab, recovered from the kernel markers (in
        any process).  Raises LabError if no namespace of that lab exists or
        its markers disagree."""
        make_plan(name)                 # validates the name
        kinds = {(m.topology, m.reals) for m in scan(name).values()}
        if not kinds:
            raise LabError(f"no lab named {name!r} exists")
        if len(kinds) > 1:
            raise LabError(f"lab {name!r} has inconsistent markers "
                           f"{sorted(kinds)}: remove it with down")
        (topology, reals), = kinds
        return cls(name, topology, reals)

    def exists(self) -> bool:
        """True if at least one namespace marked as this lab's exists."""
        return bool(scan(self.name))

    def missing(self) -> list:
        """The planned namespaces that are absent or not marked as ours
        (empty for a lab in good shape)."""
        present = scan(self.name)
        return [n.namespace for n in self._plan.nodes
                if n.namespace not in present]

    def up(self) -> "Lab":
        """Build the lab; returns self.

        Raises LabError if the lab already exists, if one of its namespace
        names is taken by someone else, or if any step fails; whatever it had
        built is removed before raising.
        """
        if self.exists():
            raise LabError(f"lab {self.name!r} already exists "
                           f"(remove it with down first)")
        try:
            self._build()
        except BaseException as exc:
            try:
                self.down()
            except Exception as cleanup:        # keep the first error
                log.error("lab %s: cleanup after a failed up() failed: %s",
                          self.name, cleanup)
            if isinstance(exc, LabError) or not isinstance(exc, Exception):
                raise
            raise LabError(f"building lab {self.name!r} failed: "
                           f"{exc}") from exc
        return self

    def down(self) -> list:
        """Remove every namespace marked as this lab's, after stopping the
        programs started in it and closing the sockets made by this object.

        Idempotent.  Returns the sorted list of namespaces removed.  Raises
        LabError if a namespace cannot be removed.
        """
        for sock in list(self._sockets):
            sock.close()
        for proc in self._procs:
            _stop(proc)
        self._procs.clear()
        return sorted(_remove_netns(list(scan(self.name))))

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc_info) -> None:
        self.down()

    def _build(self) -> None:
        def marker(node):
            return Marker(self.name, node.role, self.topology,
                          self._plan.reals)

        for node in self._plan.switches:
            _create_netns(node.namespace, marker(node), _SWITCH_SYSCTLS)
            with _iproute(node.namespace) as ipr:
                ipr.link("add", ifname=_BRIDGE, kind="bridge",
                         br_mcast_snooping=0)
                ipr.link("set", ifname=_BRIDGE, state="up")
            _in_netns(node.namespace, lambda: _write_sysctls(
                _SWITCH_SYSCTLS_IF_PRESENT, if_present=True))
        for node in self._plan.hosts:
            _create_netns(node.namespace, marker(node),
                          _host_sysctls(node.forwarding))
        for node in self._plan.hosts:
            self._wire(node)

    def _wire(self, node: Node) -> None:
        """Plug each interface of a host into its switch, address it and
        add the routes."""
        with _iproute(node.namespace) as ipr:
            for iface in node.interfaces:
                switch_ns = self.ns(iface.switch)
                fd = _open_netns(switch_ns)
                try:
                    ipr.link("add", ifname=iface.name, kind="veth",
                             address=iface.mac,
                             peer={"ifname": iface.port, "net_ns_fd": fd})
                finally:
                    os.close(fd)
                with _iproute(switch_ns) as sw:
                    bridge, = sw.link_lookup(ifname=_BRIDGE)
                    sw.link("set", ifname=iface.port, master=bridge,
                            state="up")
                _in_netns(node.namespace,
                          lambda: _tx_checksum_off(iface.name))
                index, = ipr.link_lookup(ifname=iface.name)
                ipr.addr("add", index=index, address=iface.ipv4)
                ipr.addr("add", index=index, address=iface.ipv6,
                         flags=IFA_F_NODAD)
                ipr.link("set", index=index, state="up")
            for route in node.routes:
                family = ipaddress.ip_address(route.via).version
                dst = route.dst
                if dst == "default":
                    dst = "0.0.0.0/0" if family == 4 else "::/0"
                ipr.route("add", dst=dst, gateway=route.via)

    # -- using it

    def run(self, role: str, argv, timeout: Optional[float] = RUN_TIMEOUT,
            **kwargs) -> subprocess.CompletedProcess:
        """``subprocess.run(argv, timeout=timeout, **kwargs)`` inside the
        namespace of ``role`` (as `ip netns exec` would, /sys included).

        Returns the CompletedProcess.  Raises LabError if the role or its
        namespace does not exist, and what subprocess.run raises
        (TimeoutExpired, CalledProcessError with check=True, ...).
        """
        return _spawn(self.ns(role), subprocess.run, argv,
                      dict(kwargs, timeout=timeout))

    def popen(self, role: str, argv, **kwargs) -> subprocess.Popen:
        """``subprocess.Popen(argv, **kwargs)`` inside the namespace of
        ``role``.  The process is stopped by down() if still running.
        Raises like run()."""
        proc = _spawn(self.ns(role), subprocess.Popen, argv, kwargs)
        self._procs = [p for p in self._procs if p.poll() is None] + [proc]
        return proc

    def socket(self, role: str, family: int = _socket.AF_INET,
               type: int = _socket.SOCK_STREAM,
               proto: int = 0) -> _socket.socket:
        """A socket created inside the namespace of ``role``; it keeps that
        namespace for its life.  down() closes it if still open.  Raises
        LabError if the namespace does not exist, OSError from socket()."""
        sock = _in_netns(self.ns(role),
                         lambda: _socket.socket(family, type, proto))
        self._sockets.add(sock)
        return sock

    def call(self, role: str, fn: Callable[[], T],
             timeout: float = 30.0) -> T:
        """``fn()`` run in a thread inside the namespace of ``role``; its
        result, or its exception.  Threads that fn starts stay in that
        namespace (an in-process engine for tests).  Raises LabError if the
        namespace does not exist or fn takes over ``timeout`` seconds."""
        return _in_netns(self.ns(role), fn, timeout=timeout)

    def sysctl(self, role: str, key: str, value=None) -> str:
        """Read (after writing ``value`` if given) a sysctl in the namespace
        of ``role``; see the module function sysctl()."""
        return sysctl(self.ns(role), key, value)

    def addresses(self, role: str) -> dict:
        """What the kernel has: ``{ifname: {"mac": ..., "ipv4": [...],
        "ipv6": [...]}}`` for the non-loopback interfaces of ``role``
        (addresses as ``addr/prefixlen``, IPv6 link-local left out)."""
        with _iproute(self.ns(role)) as ipr:
            links = {link["index"]: link for link in ipr.link("dump")}
            out = {link.get("IFLA_IFNAME"): {
                        "mac": link.get("IFLA_ADDRESS"), "ipv4": [],
                        "ipv6": []}
                   for link in links.values()
                   if link.get("IFLA_IFNAME") != "lo"}
            for addr in ipr.addr("dump"):
                ifname = links[addr["index"]].get("IFLA_IFNAME")
                text = f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}"
                if ifname not in out or text.startswith("fe80:"):
                    continue
                key = "ipv4" if addr["family"] == _socket.AF_INET else "ipv6"
                out[ifname][key].append(text)
        return out


def _stop(proc: subprocess.Popen, grace: float = KILL_GRACE) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)
