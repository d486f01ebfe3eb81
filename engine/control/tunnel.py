"""L4 TUN's tunnel ends on the balancer: per interface slot, the outer
source address of each family and the MTU (csrc/pyfwd_tun.h).

The outer source is the one given ([engine] tun_sources, one address per
family at most), else the interface's first address of that family that
is no VIP (IPv6: global scope, not link-local).  The MTU is the
interface's: a packet that no longer fits once wrapped gets an ICMP error
back to its client.

    ends = tun_ends("eth0", vips, given=["10.0.0.2"])   # TunEnds
    core.set_tun(0, ends.source4, ends.source6, ends.mtu)

The kernel look-ups are parameters, so tests give fakes: addresses(ifname)
-> [IPv4Address | IPv6Address], mtu(ifname) -> int.
"""

import ipaddress
import socket
from typing import NamedTuple, Optional

from pyroute2 import IPRoute

from ..errors import ConfigError
from ..neighbours.kernel import addresses as kernel_addresses
from ..neighbours.kernel import ifindex


class TunEnds(NamedTuple):
    source4: Optional[ipaddress.IPv4Address]
    source6: Optional[ipaddress.IPv6Address]
    mtu: int


def check_sources(values, where="engine.tun_sources"):
    """values (a list of address strings, at most one per family) as a
    {4: IPv4Address, 6: IPv6Address} dict; ConfigError naming `where`."""
    if not isinstance(values, (list, tuple)):
        raise ConfigError(f"{where} = {values!r}: expected an array of "
                          "addresses, one IPv4 and one IPv6 at most")
    found = {}
    for v in values:
        try:
            a = ipaddress.ip_address(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {v!r} is not an IP address") \
                from None
        if a.version in found:
            raise ConfigError(f"{where}: two IPv{a.version} addresses "
                              f"({found[a.version]}, {a}); one per family")
        if a.is_unspecified or a.is_multicast or a.is_loopback:
            raise ConfigError(f"{where}: {a} cannot be a tunnel's source")
        found[a.version] = a
    return found


def interface_addresses(ifname):
    """The addresses of ifname, IPv4 then IPv6, in the kernel's order."""
    with IPRoute() as ipr:
        index = ifindex(ipr, ifname)
        return [a.interface.ip
                for fam in (socket.AF_INET, socket.AF_INET6)
                for a in kernel_addresses(ipr, fam, index)]


def interface_mtu(ifname):
    with IPRoute() as ipr:
        index = ifindex(ipr, ifname)
        return ipr.get_links(index)[0].get_attr("IFLA_MTU")


def tun_ends(ifname, vips=(), given=(), *, addresses=interface_addresses,
             mtu=interface_mtu):
    """The TunEnds of interface ifname: the given sources
    (check_sources), else its own first address of each family that is no
    VIP (vips: addresses); None for a family it has none of."""
    chosen = check_sources(list(given))
    vips = set(vips)
    for a in addresses(ifname):
        if a in vips or a.version in chosen:
            continue
        if a.version == 6 and (a.is_link_local or a.is_loopback):
            continue
        chosen[a.version] = a
    # the core holds an MTU in 16 bits: more is as good as no limit here
    return TunEnds(chosen.get(4), chosen.get(6),
                   min(int(mtu(ifname)), 65535))


def missing(ends, services):
    """Why the TUN VIPs of services cannot send (one line), or None: a
    family with a TUN VIP and no source address."""
    for s in services:
        if s.mode != "tun":
            continue
        v = s.vip.address.version
        if (ends.source4 if v == 4 else ends.source6) is None:
            return (f"vip {s.vip}: mode tun needs an IPv{v} source address "
                    "for its tunnels: the interface has none; give "
                    "[engine] tun_sources")
    return None


def apply(engine):
    """Set the tunnel ends of each of engine's interface slots in its core
    (engine.ifaces: slot 0's name, then slot 1's; the sources given in
    engine.options["tun"]); slot 0's TunEnds.  ConfigError when a TUN
    VIP's family has no source on slot 0."""
    core, services = engine.core, engine.services
    given = engine.options["tun"]
    vips = [s.vip.address for s in services]
    first = None
    for slot, ifname in enumerate(engine.ifaces):
        ends = tun_ends(ifname, vips, given)
        why = missing(ends, services)
        if why and slot == 0:
            raise ConfigError(why)
        core.set_tun(slot, ends.source4, ends.source6, ends.mtu)
        first = first or ends
    return first


__all__ = ["TunEnds", "check_sources", "tun_ends", "missing", "apply"]
