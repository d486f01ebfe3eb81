"""The address plan of a lab: topologies as data, and the plan computed
from (name, topology, reals) alone, with no root and no kernel.

A topology is a list of L2 segments (a switch namespace holding a bridge,
``br0``, and the hosts plugged into it), static routes and the roles that
route between their interfaces (``_TOPOLOGIES``).  ``make_plan()`` turns
one into a ``Plan``: every namespace, interface, MAC, IPv4 and IPv6 address
and route, the same for the same arguments, in any process.  The address
plan is documented in docs/lab-addresses.md.

A ``Marker`` is how a namespace says, in the kernel, which lab and role it
belongs to (see pyfwd.lab.namespaces); parsing one checks it against the
plan.  Building the plan is pyfwd.lab.topology's ``Lab``.
"""

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import Optional

from ..errors import LabError
from ..frames import mac_to_str

__all__ = ["DEFAULT_NAME", "TOPOLOGIES", "MAX_REALS", "BRIDGE", "Interface",
           "Route", "Node", "Plan", "Marker", "make_plan", "format_plan"]

DEFAULT_NAME = "pyfwd"
MAX_REALS = 16
MARKER_PREFIX = "pyfwd-lab"
BRIDGE = "br0"                  # the bridge of every switch namespace

_NAME_RE = re.compile(r"[a-z][a-z0-9]{0,11}")


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
    through the gateway ``via``'s address on segment ``on``; ``via`` a host
    number instead of a role: an address of segment ``on`` that no node
    owns (a floating gateway, held by whichever balancer is active)."""

    role: str
    to: Optional[str]
    via: "str | int"
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
    # two-arm with a second balancer (NAT HA): the reals' gateway,
    # 192.168.50.1, belongs to no node: the active balancer holds it
    "two-arm-ha": _TopologySpec(
        segments=(
            _SegmentSpec(1, "swout", "10.0.0.0/24", (
                ("client", "eth0", 1), ("lb", "eth0", 2),
                ("lb2", "eth0", 3))),
            _SegmentSpec(2, "swin", "192.168.50.0/24", (
                ("lb", "eth1", 2), ("lb2", "eth1", 3),
                ("real", "eth0", 10))),
        ),
        vip_segment="swout",
        routes=(_RouteSpec("real", to=None, via=1, on="swin"),),
        forwarding=("lb", "lb2"),
    ),
    # N active balancers behind ECMP (engine/lab/ecmp.py, tests/e2e/
    # test_ecmp.py): the router (BIRD) learns the VIP from lb, lb2 and lb3
    # by BGP and spreads the client's flows over them; DR, the reals
    # answer through the router.
    "ecmp": _TopologySpec(
        segments=(
            _SegmentSpec(3, "swc", "10.0.3.0/24", (
                ("client", "eth0", 1), ("router", "eth0", 2))),
            _SegmentSpec(1, "sw", "10.0.0.0/24", (
                ("router", "eth1", 1), ("lb", "eth0", 2),
                ("lb2", "eth0", 3), ("lb3", "eth0", 4),
                ("real", "eth0", 10))),
        ),
        vip_segment="sw",
        routes=(
            _RouteSpec("client", to=None, via="router", on="swc"),
            _RouteSpec("lb", to=None, via="router", on="sw"),
            _RouteSpec("lb2", to=None, via="router", on="sw"),
            _RouteSpec("lb3", to=None, via="router", on="sw"),
            _RouteSpec("real", to=None, via="router", on="sw"),
        ),
        forwarding=("router",),
    ),
    # DR behind a router (path MTU discovery, tests/e2e/test_pmtu_dr.py):
    # the client on its own segment; the router's address on sw is the
    # default gateway of the balancer and the reals, whose answers go back
    # through it; the router reaches the VIP, and sends its ICMP errors
    # about the reals' answers (from the VIP) to it, on sw.
    "dr-mtu": _TopologySpec(
        segments=(
            _SegmentSpec(3, "swc", "10.0.3.0/24", (
                ("client", "eth0", 1), ("router", "eth0", 2))),
            _SegmentSpec(1, "sw", "10.0.0.0/24", (
                ("router", "eth1", 1), ("lb", "eth0", 2),
                ("real", "eth0", 10))),
        ),
        vip_segment="sw",
        routes=(
            _RouteSpec("client", to=None, via="router", on="swc"),
            _RouteSpec("lb", to=None, via="router", on="sw"),
            _RouteSpec("real", to=None, via="router", on="sw"),
        ),
        forwarding=("router",),
    ),
    # L4 TUN (tests/e2e/test_tun.py): the real servers on a subnet of their
    # own, behind a router, not on the balancer's segment; the balancer
    # reaches them through the router, and they answer the client through
    # it, straight (no way back through the balancer).
    "tun": _TopologySpec(
        segments=(
            _SegmentSpec(3, "swc", "10.0.3.0/24", (
                ("client", "eth0", 1), ("router", "eth0", 2))),
            _SegmentSpec(1, "sw", "10.0.0.0/24", (
                ("router", "eth1", 1), ("lb", "eth0", 2))),
            _SegmentSpec(4, "swr", "10.0.4.0/24", (
                ("router", "eth2", 1), ("real", "eth0", 10))),
        ),
        vip_segment="sw",
        routes=(
            _RouteSpec("client", to=None, via="router", on="swc"),
            _RouteSpec("lb", to=None, via="router", on="sw"),
            _RouteSpec("real", to=None, via="router", on="swr"),
        ),
        forwarding=("router",),
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

    Returns a Plan whose nodes are the hosts (client, lb, lb2 in one-arm-ha
    and two-arm-ha, real1..N) then the switches.  Raises LabError, naming
    the value, on a bad name, an unknown topology or a number of reals
    outside 1..MAX_REALS.
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
        gw = address_of(r.via, r.on) if isinstance(r.via, str) else \
            Interface("", ipv4=_host_addrs(segments[r.on], r.via)[0],
                      ipv6=_host_addrs(segments[r.on], r.via)[1])
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
                   (Interface(BRIDGE),), ports=tuple(ports[seg.switch]))
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
                     f"{BRIDGE} ports: {' '.join(node.ports)}"))
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

