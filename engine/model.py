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
MODES = ("dr", "nat", "snat", "l7")   # l7: HAProxy, not the C core
PERSIST_MAX = 65535
SNAT_PORTS = (61000, 65535)     # above Linux's ephemeral 32768-60999
MAGLEV_SIZE_DEFAULT = 65537     # a prime: the Maglev table's size per VIP

_VIP_RE = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[^:/\[\]]+)):(?P<port>[^/]+)"
                     r"/(?P<proto>[A-Za-z]+)$")



def served_queues(asked, tracked, rxq):
    """The RX queues an engine serves: `asked` (--queues), else queue 0
    alone when a VIP is NAT or SNAT (`tracked`: their flow table is per
    queue), else all `rxq`.  The engine checks the result; doctor reports
    the queues it leaves to the kernel."""
    return asked or (1 if tracked else rxq)

def _unicast(obj, what):
    """obj.address as an ipaddress object (set back on the frozen obj);
    ConfigError unless it is a unicast IPv4 or IPv6 address."""
    addr = obj.address
    if not isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        try:
            addr = ipaddress.ip_address(addr)
        except ValueError:
            raise ConfigError(f"{what} address {obj.address!r}: expected an "
                              "IPv4 or IPv6 address") from None
        object.__setattr__(obj, "address", addr)
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        raise ConfigError(f"{what} address {addr}: expected a unicast "
                          "address (not multicast, broadcast, loopback or "
                          "unspecified)")
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
        addr = _unicast(self, "vip")
        if addr.version == 4 and addr == ipaddress.IPv4Address(
                "255.255.255.255"):
            raise ConfigError(f"vip address {addr}: expected a unicast "
                              "address (not multicast, broadcast, loopback "
                              "or unspecified)")
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
        host = (f"[{self.address}]" if self.address.version == 6
                else str(self.address))
        return f"{host}:{self.port}/{self.protocol}"


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
        _unicast(self, "real")
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
        host = (f"[{self.address}]" if self.address.version == 6
                else str(self.address))
        return f"{host}:{self.port}" if self.port else host

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
        for r in self.reals:
            if self.mode != "dr" and r.address.version != \
                    self.vip.address.version:
                raise ConfigError(f"vip {self.vip}: real {r.key} is IPv"
                                  f"{r.address.version}; {self.mode} needs "
                                  "the VIP's family")
        keys = [r.key for r in self.reals]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ConfigError(f"vip {self.vip}: real {dup} listed twice")

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
