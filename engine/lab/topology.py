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

Host interfaces keep the kernel's default offloads, as a user's own
namespaces and containers do: a sender's tx checksum offload is on, so the
TCP/UDP frames a balancer's XDP program sees carry unfinished checksums,
which the data plane completes (csrc/csum.c).

The lab is four modules, one concern each:

- pyfwd.lab.plan: the topologies as data and ``make_plan()``, the address
  plan (pure, no root; documented in docs/lab-addresses.md), and the
  ``Marker`` a namespace carries;
- pyfwd.lab.namespaces: the namespaces in the kernel: entered, created and
  marked, found again (``scan()``, ``list_labs()``), removed (``down_all()``);
- pyfwd.lab.programs: programs, sockets and calls inside them
  (``Namespaces``: run, popen, socket, call, sysctl);
- this module: ``Lab``, which builds a plan (``up()``), removes it
  (``down()``) and runs things in it (a ``Namespaces`` over its roles).

The plan's and the namespaces' public names are imported here too, so
``from pyfwd.lab import topology as lab`` reaches the whole lab API
(``lab.Lab``, ``lab.make_plan``, ``lab.scan``, ``lab.down_all`` ...).
"""

import ipaddress
import logging
import os
import socket

from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from ..errors import LabError
from .namespaces import (NETNS_DIR, create_netns, down_all,
                         in_netns, iproute, list_labs, open_netns,
                         remove_netns, scan, sysctl, write_sysctls)
from .plan import (BRIDGE, DEFAULT_NAME, MAX_REALS, TOPOLOGIES,
                   Interface, Marker, Node, Plan, Route,
                   format_plan, make_plan)
from .programs import Namespaces

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_NAME", "TOPOLOGIES", "MAX_REALS", "NETNS_DIR",
    "Interface", "Route", "Node", "Plan", "Marker", "Lab",
    "make_plan", "format_plan", "scan", "list_labs", "down_all", "sysctl",
]


# ---------------------------------------------------------------------------
# What a built namespace is given

# The roles whose veth pairs take Lab(queues=...).
_BALANCERS = ("lb", "lb2", "lb3")


def _queue_attrs(queues: int) -> dict:
    """A veth end's queue counts (none for one: the kernel's default)."""
    if queues == 1:
        return {}
    return {"num_rx_queues": queues, "num_tx_queues": queues}


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


# ---------------------------------------------------------------------------
# The lab


class Lab(Namespaces):
    """A named lab of namespaces (see the module docstring).

    ``Lab(name, topology, reals)`` only computes the plan; ``up()`` builds it,
    ``down()`` removes it.  As a context manager it builds on enter and always
    removes on exit.  ``queues``: RX and TX queues of each veth pair of the
    balancer roles (lb, lb2), both ends, so that a sender spreads flows over
    them by hash as a NIC's RSS does (up() only: ``load()`` does not know
    it).  Raises LabError, naming the value, on a bad name, topology,
    number of reals or queues.
    """

    def __init__(self, name: str = DEFAULT_NAME, topology: str = "one-arm",
                 reals: int = 3, queues: int = 1):
        super().__init__()
        self._plan = make_plan(name, topology, reals)
        if not isinstance(queues, int) or not 1 <= queues <= 64:
            raise LabError(f"queues {queues!r}: expected 1 to 64")
        self.queues = queues

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
        programs started in it and closing the sockets made by this object
        (close()).

        Idempotent.  Returns the sorted list of namespaces removed.  Raises
        LabError if a namespace cannot be removed.
        """
        self.close()
        return sorted(remove_netns(list(scan(self.name))))

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc_info) -> None:
        self.down()

    def _build(self) -> None:
        def marker(node):
            return Marker(self.name, node.role, self.topology,
                          self._plan.reals)

        for node in self._plan.switches:
            create_netns(node.namespace, marker(node), _SWITCH_SYSCTLS)
            with iproute(node.namespace) as ipr:
                ipr.link("add", ifname=BRIDGE, kind="bridge",
                         br_mcast_snooping=0)
                ipr.link("set", ifname=BRIDGE, state="up")
            in_netns(node.namespace, lambda: write_sysctls(
                _SWITCH_SYSCTLS_IF_PRESENT, if_present=True))
        for node in self._plan.hosts:
            create_netns(node.namespace, marker(node),
                         _host_sysctls(node.forwarding))
        for node in self._plan.hosts:
            self._wire(node)

    def _wire(self, node: Node) -> None:
        """Plug each interface of a host into its switch, address it and
        add the routes."""
        with iproute(node.namespace) as ipr:
            for iface in node.interfaces:
                switch_ns = self.ns(iface.switch)
                fd = open_netns(switch_ns)
                queues = _queue_attrs(self.queues if node.role in _BALANCERS
                                      else 1)
                try:
                    ipr.link("add", ifname=iface.name, kind="veth",
                             address=iface.mac, **queues,
                             peer={"ifname": iface.port, "net_ns_fd": fd,
                                   **queues})
                finally:
                    os.close(fd)
                with iproute(switch_ns) as sw:
                    bridge, = sw.link_lookup(ifname=BRIDGE)
                    sw.link("set", ifname=iface.port, master=bridge,
                            state="up")
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

    def addresses(self, role: str) -> dict:
        """What the kernel has: ``{ifname: {"mac": ..., "ipv4": [...],
        "ipv6": [...]}}`` for the non-loopback interfaces of ``role``
        (addresses as ``addr/prefixlen``, IPv6 link-local left out)."""
        with iproute(self.ns(role)) as ipr:
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
                key = "ipv4" if addr["family"] == socket.AF_INET else "ipv6"
                out[ifname][key].append(text)
        return out
