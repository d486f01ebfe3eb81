"""``pyfwd arp-check``: who answers ARP for a VIP on this segment, every
one of them.

One answer, the balancer's, is right.  Any other is the ARP problem (a real
server holding the VIP without arp_ignore/arp_announce: see
pyfwd.ops.realserver) or a second balancer: that host takes traffic for
the VIP away from the balancer.
"""

import ipaddress
import time
from dataclasses import dataclass
from typing import Optional

from pyroute2 import IPRoute

from .arp import (ARPOP_REQUEST, IPv4, build_arp, ipv4,
                  parse_arp)
from .framesocket import FrameSocket
from ..frames import ZERO_MAC, Mac, mac_to_bytes, mac_to_str
from .kernel import check_wait, ifindex, source_ipv4

__all__ = ["ArpAnswer", "arp_check"]


@dataclass(frozen=True)
class ArpAnswer:
    """A host that answered who-has VIP: its MAC (text), the address it
    answered for, and whether it is the balancer (MAC == the own_mac given
    to arp_check())."""

    mac: str
    ip: ipaddress.IPv4Address
    is_balancer: bool


def arp_check(ifname: str, vip: IPv4, timeout: float = 1.0,
              own_mac: Optional[Mac] = None) -> list:
    """Every host that answers ARP for ``vip`` on ``ifname``'s segment, in
    the order their first reply came: a list of ArpAnswer (one per MAC).

    Sends one broadcast who-has ``vip`` from the interface's MAC and its own
    IPv4 address on the VIP's subnet (never the VIP itself; 0.0.0.0, an ARP
    probe, if it has none), then collects *every* reply for ``timeout``
    seconds (`arping` without -b stops listening to broadcasts after the
    first reply and hides a second responder).  ``is_balancer`` is true for
    the replies from ``own_mac`` (the balancer's MAC; None: no one is).

    Run it from another host of the segment to see the balancer: a host
    never receives its own request, so neither its kernel nor an engine on
    the same interface answers it.  More than one MAC means the ARP problem
    (a real server without arp_ignore/arp_announce) or two balancers.
    Raises ConfigError if the interface does not exist or on a bad address
    or timeout; PyfwdError if the packet socket cannot be opened (not
    root).
    """
    check_wait(timeout)
    vip = ipv4(vip, "vip")
    own = None if own_mac is None else mac_to_bytes(own_mac)
    with IPRoute() as ipr:
        sender = source_ipv4(ipr, ifindex(ipr, ifname), vip, exclude={vip})
    seen = {}
    with FrameSocket(ifname) as sock:
        sock.send(build_arp(ARPOP_REQUEST, sock.mac, sender, ZERO_MAC, vip))
        for frame in sock.recv_until(time.monotonic() + timeout):
            pkt = parse_arp(frame)
            if pkt is not None and pkt.is_reply and pkt.spa == vip \
                    and pkt.sha not in seen:
                seen[pkt.sha] = ArpAnswer(mac_to_str(pkt.sha), vip,
                                          own is not None and pkt.sha == own)
    return list(seen.values())
