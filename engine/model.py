"""Services: what a VIP is, as the rest of pyfwd names it.

Pure values, no I/O: parsing and validation of `ADDR:PORT/PROTO` lives here
so that the CLI, the config file and the API say the same thing.
"""

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Optional

from .errors import ConfigError

PROTOCOLS = ("tcp", "udp")
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sh", "maglev")
MODES = ("dr", "nat", "snat", "tun", "l7")   # l7: HAProxy, not the C core
# Modes whose real servers answer the client themselves, from the VIP.
DIRECT_MODES = ("dr", "tun")
PERSIST_MAX = 65535
SNAT_PORTS = (61000, 65535)     # above Linux's ephemeral 32768-60999
MAGLEV_SIZE_DEFAULT = 65537     # a prime: the Maglev table's size per VIP
# What a real server that fails its health check loses: "quiesce" (the
# default, as IPVS with expire_nodest_conn=0 or ldirectord's quiescent
# mode): new flows only, its established flows go on; "reset": everything,
# its established flows are rescheduled (as halt).
ON_DOWN = ("quiesce", "reset")



def hostport(address, port=None):
    """`10.0.0.1:80`, `[2001:db8::1]:80`: an address (an ipaddress value,
    or its text, which is normalised) with a port; port None: the address
    as it stands before one (`10.0.0.1`, `[2001:db8::1]`).  Raises
    ValueError for text that is no address."""
    if not isinstance(address, (ipaddress.IPv4Address,
                                ipaddress.IPv6Address)):
        address = ipaddress.ip_address(address)
    host = f"[{address}]" if address.version == 6 else str(address)
    return host if port is None else f"{host}:{port}"


_VIP_RE = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[^:/\[\]]+)):(?P<port>[^/]+)"
                     r"/(?P<proto>[A-Za-z]+)$")


# Service names reach logs, terminals, `pyfwd ctl` arguments and HAProxy's
# configuration: letters, digits, '-' and '_' only (what HAProxy takes as it
# is, so two names never become one there), a letter or digit first (never
# an option's dash), at most NAME_MAX characters.
NAME_MAX = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,%d}" % (NAME_MAX - 1))
NAME_RULE = (f"1 to {NAME_MAX} letters, digits, '-' or '_', starting with a "
             "letter or digit")


def check_name(name):
    """ConfigError unless name (a VIP's) is in the set NAME_RULE says."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(f"name {name!r}: expected {NAME_RULE}")
    return name


# Addresses no VIP and no real server may have, and why.  For a real server
# as much as for a VIP: nobody has 0.0.0.0/8 or :: (a source before a host
# has an address, never a destination); a multicast group is no one host, and
# a flow stays on one; 240/4 (255.255.255.255 with it) is dropped by most
# hosts, routers and firewalls though Linux routes it; an IPv4-mapped IPv6
# address is an IPv4 host, written as one elsewhere; a link-local address is
# self-assigned (RFC 3927, RFC 4862), not routed and re-chosen after a
# conflict: a VIP there is out of reach of every client off the segment, a
# real server there may change address, and IPv6's needs an interface that a
# config cannot name.
_NOT_HOSTS = tuple((ipaddress.ip_network(net), why) for net, why in (
    ("0.0.0.0/8", "'this network' (RFC 1122): a source address before a "
     "host has one, never a destination"),
    ("::/128", "unspecified: never a destination"),
    ("169.254.0.0/16", "link-local (RFC 3927): self-assigned, not routed"),
    ("fe80::/10", "link-local: not routed, and it needs an interface"),
    ("224.0.0.0/4", "multicast: a group, not a host"),
    ("ff00::/8", "multicast: a group, not a host"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4 and broadcast): hosts and "
     "routers drop it"),
    ("::ffff:0:0/96", "IPv4-mapped: write the IPv4 address"),
))
# Loopback is never a VIP's (clients reach a VIP over the wire, where every
# host drops 127/8 as a martian) and a real server's only behind an L7 VIP:
# HAProxy on this host connects through the kernel to a server on this host,
# while the C core puts every frame on the wire (Service.check_real).
LOOPBACK = "loopback: never on the wire"


def served_queues(asked, rxq):
    """The RX queues an engine serves: `asked` (--queues), else all `rxq`
    (NAT and SNAT too: a frame that comes in on another queue than its
    flow's owner is handed to it, csrc/handoff.c).  The engine checks the
    result; doctor reports the queues it leaves to the kernel."""
    return asked or rxq


def _unicast(obj, what, loopback=False):
    """obj.address as an ipaddress object (set back on the frozen obj);
    ConfigError, saying why, unless a host may have it (_NOT_HOSTS) and,
    unless `loopback`, it is not a loopback address."""
    addr = obj.address
    if not isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        try:
            addr = ipaddress.ip_address(addr)
        except ValueError:
            raise ConfigError(f"{what} address {obj.address!r}: expected an "
                              "IPv4 or IPv6 address") from None
        object.__setattr__(obj, "address", addr)
    why = next((why for net, why in _NOT_HOSTS if addr in net), None)
    if why is None and addr.is_loopback and not loopback:
        why = LOOPBACK
    if why:
        raise ConfigError(f"{what} address {addr}: {why}; expected a unicast "
                          "address")
    return addr


@dataclass(frozen=True, order=True)
class Vip:
    """A virtual service: address, port and protocol.

    >>> Vip.parse("10.0.0.100:80/tcp")
    Vip(address=IPv4Address('10.0.0.100'), port=80, protocol='tcp')
    """

    address: "ipaddress.IPv4Address | ipaddress.IPv6Address"
    port: int
    protocol: str

    def __post_init__(self):
        _unicast(self, "vip")
        if (isinstance(self.port, bool) or not isinstance(self.port, int)
                or not 1 <= self.port <= 65535):
            raise ConfigError(f"vip port {self.port!r}: expected an integer "
                              "from 1 to 65535")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"vip protocol {self.protocol!r}: expected one "
                              f"of {', '.join(PROTOCOLS)}")

    @classmethod
    def parse(cls, text):
        """Parse `10.0.0.100:80/tcp` or `[fd00::100]:443/udp`.

        Raises ConfigError naming the text and the expected form.
        """
        m = _VIP_RE.match(text.strip()) if isinstance(text, str) else None
        if m and m.group("v4") and ":" in m.group("port"):
            raise ConfigError(f"vip {text!r}: an IPv6 address goes in "
                              "brackets, e.g. [fd00::100]:80/tcp")
        if not m:
            raise ConfigError(f"vip {text!r}: expected ADDR:PORT/PROTO, e.g. "
                              "10.0.0.100:80/tcp or [fd00::100]:80/tcp")
        addr = m.group("v6") or m.group("v4")
        try:
            port = int(m.group("port"), 10)
        except ValueError:
            raise ConfigError(f"vip {text!r}: port {m.group('port')!r} is "
                              "not a number") from None
        return cls(addr, port, m.group("proto").lower())

    def __str__(self):
        return f"{hostport(self.address, self.port)}/{self.protocol}"


_REAL_RE = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[^:@\[\]]+))"
                      r"(?::(?P<port>[^@]+))?(?:@(?P<weight>.+))?$")

WEIGHT_MAX = 65535


@dataclass(frozen=True, order=True)
class Real:
    """A real server of a VIP: address, port (None = the VIP's), weight.

    Weight 0 drains it: established flows continue, no new flow comes.

    >>> Real.parse("10.0.0.11:8080@200")
    Real(address=IPv4Address('10.0.0.11'), port=8080, weight=200)
    """

    address: "ipaddress.IPv4Address | ipaddress.IPv6Address"
    port: "int | None" = None
    weight: int = 1

    def __post_init__(self):
        _unicast(self, "real", loopback=True)  # L7 only: Service.check_real
        if self.port is not None and (
                isinstance(self.port, bool) or not isinstance(self.port, int)
                or not 1 <= self.port <= 65535):
            raise ConfigError(f"real port {self.port!r}: expected an integer "
                              "from 1 to 65535")
        if (isinstance(self.weight, bool) or not isinstance(self.weight, int)
                or not 0 <= self.weight <= WEIGHT_MAX):
            raise ConfigError(f"real weight {self.weight!r}: expected an "
                              f"integer from 0 to {WEIGHT_MAX}")

    @classmethod
    def parse(cls, text):
        """Parse `ADDR[:PORT][@WEIGHT]`, e.g. 10.0.0.11, 10.0.0.11@200,
        [fd00::11]:8080@5.  Raises ConfigError naming the text."""
        m = _REAL_RE.match(text.strip()) if isinstance(text, str) else None
        if m and m.group("v4") and m.group("port") and ":" in m.group("port"):
            raise ConfigError(f"real {text!r}: an IPv6 address goes in "
                              "brackets, e.g. [fd00::11]:8080")
        if not m:
            raise ConfigError(f"real {text!r}: expected ADDR[:PORT][@WEIGHT], "
                              "e.g. 10.0.0.11 or 10.0.0.11:8080@200")
        fields = {}
        for name in ("port", "weight"):
            if m.group(name) is not None:
                try:
                    fields[name] = int(m.group(name), 10)
                except ValueError:
                    raise ConfigError(f"real {text!r}: {name} "
                                      f"{m.group(name)!r} is not a "
                                      "number") from None
        return cls(m.group("v6") or m.group("v4"), **fields)

    @property
    def key(self):
        """The real's identity within a VIP (weight aside)."""
        return hostport(self.address, self.port)

    def __str__(self):
        return f"{self.key}@{self.weight}"


@dataclass
class Service:
    """A VIP and its real servers, as the engine holds them."""

    vip: Vip
    reals: list = field(default_factory=list)     # [Real]
    scheduler: str = "maglev"
    mode: str = "dr"
    maglev_size: int = MAGLEV_SIZE_DEFAULT
    persistence: int = 0        # seconds a client sticks to its real
    name: Optional[str] = None
    health: object = None       # control.health.HealthSpec, or None: no checks
    fallback: Optional[Real] = None     # takes the traffic when none is up
    l7: object = None           # control.l7.L7Options of a mode "l7" VIP
    on_down: str = "quiesce"    # a real failing its check: ON_DOWN

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler {self.scheduler!r}: expected one "
                              f"of {', '.join(SCHEDULERS)}")
        if (isinstance(self.persistence, bool)
                or not isinstance(self.persistence, int)
                or not 0 <= self.persistence <= PERSIST_MAX):
            raise ConfigError(f"persistence {self.persistence!r}: expected "
                              f"seconds from 0 (off) to {PERSIST_MAX}")
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r}: expected one of "
                              f"{', '.join(MODES)}")
        if self.name is not None:
            check_name(self.name)
        if self.on_down not in ON_DOWN:
            raise ConfigError(f"on_down {self.on_down!r}: expected one of "
                              f"{', '.join(ON_DOWN)}")
        if self.mode == "snat" and self.vip.address.version != 4:
            raise ConfigError(f"vip {self.vip}: snat takes IPv4 VIPs only "
                              "(its source address is IPv4); use nat")
        for r in self.reals:
            self.check_real(r)
        if self.fallback is not None:
            self.check_real(self.fallback, "fallback")
        keys = [r.key for r in self.reals]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ConfigError(f"vip {self.vip}: real {dup} listed twice")

    def check_real(self, real, what="real"):
        """ConfigError unless real (a Real) can serve this VIP in its mode.

        An L4 mode (the C core) puts frames on the wire: no loopback real,
        and no real at the VIP's own address, which the balancer owns (it
        answers ARP for it), so frames sent there would come back to it.
        DR rewrites MAC addresses only, TUN wraps the packet unchanged: the
        real server receives the VIP's port, so a real's port, if given, is
        the VIP's.  Other modes than DR need the real in the VIP's family
        (TUN: the outer header is of the VIP's family).  An L7 VIP's
        HAProxy connects through the kernel: a server on this host is
        fine, but not the VIP's own address and port (HAProxy itself).
        """
        vip = self.vip
        where = f"vip {vip}: {what} {real.key}"
        if self.mode != "dr" and real.address.version != vip.address.version:
            raise ConfigError(f"{where} is IPv{real.address.version}; "
                              f"{self.mode} needs the VIP's family")
        if self.mode == "l7":
            if (real.address, real.port or vip.port) == (vip.address,
                                                          vip.port):
                raise ConfigError(f"{where}: the VIP itself (HAProxy would "
                                  "connect to itself)")
            return
        if real.address.is_loopback:
            raise ConfigError(f"{where}: {LOOPBACK} (only an L7 VIP's "
                              "HAProxy reaches a server on this host)")
        if real.address == vip.address:
            raise ConfigError(f"{where}: the VIP's own address; the "
                              "balancer owns it (answers ARP for it), so "
                              "frames sent there would come back to it")
        if self.mode == "dr" and real.port not in (None, vip.port):
            raise ConfigError(f"{where}: port {real.port} in DR, which "
                              "rewrites MAC addresses only, so the real "
                              f"server receives the VIP's port {vip.port}; "
                              "leave the port out, or use nat or snat to "
                              "translate ports")
        if self.mode == "tun" and real.port not in (None, vip.port):
            raise ConfigError(f"{where}: port {real.port} in TUN, which "
                              "sends the client's packet unchanged inside "
                              "a tunnel, so the real server receives the "
                              f"VIP's port {vip.port}; leave the port out, "
                              "or use nat or snat to translate ports")

    @property
    def label(self):
        """The VIP's name, or its address:port/proto."""
        return self.name or str(self.vip)

    def real(self, key):
        """The Real with this key (`10.0.0.11` or `10.0.0.11:8080`)."""
        for r in self.reals:
            if r.key == key:
                return r
        raise ConfigError(f"vip {self.vip}: no real server {key}")
