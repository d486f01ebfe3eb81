"""ARP for direct routing: the frames, and the answers for the VIPs.

In DR the balancer owns each VIP on its L2 segment: it answers "who-has VIP"
with its own MAC, while the real servers hold the VIP on ``lo`` and must stay
silent ("the ARP problem", see pyfwd.ops.realserver).  The data plane punts
the ARP frames that name a VIP; ``ArpResponder`` decides what to do with
them.

Pure, like scapy's ARP answering machine (``is_request`` / ``make_reply``):
``parse_arp()``, ``build_arp()``, ``gratuitous()`` and ``ArpResponder``
(frame in, reply frame or None out, counters and conflicts recorded); no
sockets, testable without root.  What asks on the wire is elsewhere:
kernel.py's ``neighbour_macs()`` (a real server's MAC) and check.py's
``arp_check()`` (who answers ARP for a VIP).

MACs are ``bytes`` (6) in frames and text in reports (frames.py's helpers).
Frames are built and parsed with ``struct`` only; scapy is for the tests.
"""

import ipaddress
import struct
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Union

from ..errors import ConfigError
from ..frames import (BROADCAST, ETH_P_8021Q, ETH_P_ARP,
                      ETH_P_IP, ZERO_MAC, Mac, check_tci,
                      eth_header, ip_of, is_unicast,
                      mac_to_bytes, unwrap_payload)
from .responder import VipResponder

__all__ = ["ARPOP_REQUEST", "ARPOP_REPLY", "ArpPacket", "ipv4", "parse_arp",
           "build_arp", "gratuitous", "ArpResponder"]

ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2

_ANY4 = ipaddress.IPv4Address(0)

_ARP = struct.Struct("!HHBBH6s4s6s4s")  # 28 bytes for Ethernet / IPv4
_ARP_HEAD = (ARPHRD_ETHER, ETH_P_IP, 6, 4)

IPv4 = Union[str, ipaddress.IPv4Address]


def ipv4(value, what: str = "address") -> ipaddress.IPv4Address:
    """``value`` as an IPv4Address; raises ConfigError naming ``what``
    otherwise."""
    return ip_of(4, value, what, "ARP is IPv4 only (IPv6 uses neighbour "
                 "discovery: pyfwd.neighbours.ndp)")


# ---------------------------------------------------------------------------
# Frames (pure)


@dataclass(frozen=True)
class ArpPacket:
    """An Ethernet/IPv4 ARP frame, parsed.

    ``vlan`` is the 802.1Q TCI (priority, DEI and VLAN ID; with priority 0
    it is just the VLAN ID) or None for an untagged frame; a reply built from
    it carries the same tag.
    """

    op: int
    sha: bytes
    spa: ipaddress.IPv4Address
    tha: bytes
    tpa: ipaddress.IPv4Address
    eth_src: bytes
    eth_dst: bytes
    vlan: Optional[int] = None

    @property
    def is_request(self) -> bool:
        return self.op == ARPOP_REQUEST

    @property
    def is_reply(self) -> bool:
        return self.op == ARPOP_REPLY

    @property
    def is_gratuitous(self) -> bool:
        """An announcement (sender IP == target IP), not a question."""
        return self.spa == self.tpa

    @property
    def is_probe(self) -> bool:
        """An RFC 5227 probe: a request from 0.0.0.0."""
        return self.op == ARPOP_REQUEST and self.spa == _ANY4


def parse_arp(frame) -> Optional[ArpPacket]:
    """Parse an Ethernet frame (untagged or with one 802.1Q tag) carrying an
    Ethernet/IPv4 ARP packet (htype 1, ptype 0x0800, hlen 6, plen 4).

    Returns an ArpPacket, or None for anything else: other ethertypes, other
    ARP hardware/protocol types, truncated frames.  Trailing bytes (Ethernet
    padding) are allowed.  Never raises for bad bytes.
    """
    l2, _ = unwrap_payload(frame, ETH_P_ARP, _ARP.size, "other",
                           (ETH_P_8021Q,))
    if l2 is None:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = \
        _ARP.unpack_from(l2.view, l2.offset)
    if (htype, ptype, hlen, plen) != _ARP_HEAD:
        return None
    return ArpPacket(op, sha, ipaddress.IPv4Address(spa), tha,
                     ipaddress.IPv4Address(tpa), l2.src, l2.dst,
                     None if l2.tag is None else l2.tag[1])


def build_arp(op: int, src_mac: Mac, src_ip: IPv4, dst_mac: Mac,
              dst_ip: IPv4, eth_dst: Optional[Mac] = None,
              vlan: Optional[int] = None) -> bytes:
    """An Ethernet/IPv4 ARP frame: sha=src_mac, spa=src_ip, tha=dst_mac,
    tpa=dst_ip; the Ethernet source is src_mac.

    The Ethernet destination is ``eth_dst``, by default ``dst_mac``, or the
    broadcast address when ``dst_mac`` is all zeros (a request).  ``vlan``
    (an 802.1Q TCI, 0..0xffff) adds a tag.  The frame is not padded to 60
    bytes (the NIC pads; veths do not care).  Raises ConfigError on a bad
    MAC, address, op or tag.
    """
    if isinstance(op, bool) or not isinstance(op, int) \
            or not 0 <= op <= 0xffff:
        raise ConfigError(f"arp op {op!r}: expected an integer 0..65535")
    sha = mac_to_bytes(src_mac)
    tha = mac_to_bytes(dst_mac)
    if eth_dst is None:
        eth_dst = BROADCAST if tha == ZERO_MAC else tha
    eth_dst = mac_to_bytes(eth_dst)
    if vlan is not None:
        check_tci(vlan)
    head = eth_header(eth_dst, sha, ETH_P_ARP,
                      None if vlan is None else (ETH_P_8021Q, vlan))
    return head + _ARP.pack(*_ARP_HEAD, op, sha,
                            ipv4(src_ip, "sender ip").packed, tha,
                            ipv4(dst_ip, "target ip").packed)


def gratuitous(mac: Mac, ip: IPv4, vlan: Optional[int] = None) -> bytes:
    """A gratuitous ARP announcing ``ip`` is at ``mac``.

    The form is the RFC 5227 "ARP announcement": a broadcast *request* with
    sender IP == target IP == ``ip`` and a zero target MAC.  Why a request
    and not a reply: every stack processes broadcast requests, while some
    ignore replies they did not ask for; Linux treats sender == target as
    gratuitous (``arp_is_garp``) and overrides an existing neighbour entry
    at once, ignoring its locktime, whatever ``arp_accept`` says (only new
    entries need arp_accept).  It is what `arping -U` sends.
    """
    return build_arp(ARPOP_REQUEST, mac, ip, ZERO_MAC, ip, BROADCAST, vlan)


# ---------------------------------------------------------------------------
# The responder (pure)


class ArpResponder(VipResponder):
    """Answers ARP for the VIPs with ``own_mac`` and spots other owners.

    ``handle(frame)`` decides, in this order:

    - not an Ethernet/IPv4 ARP frame (garbage, truncated) -> ignored;
    - sender IP is a VIP and sender MAC is not ``own_mac`` -> a conflict:
      someone else claims the VIP (a real server without arp_ignore /
      arp_announce, another balancer); recorded, never answered.  The caller
      may re-announce with ``gratuitous()``;
    - a request for a VIP -> the reply frame (is-at ``own_mac``, unicast to
      the requester, same 802.1Q tag).  Probes (sender 0.0.0.0) are answered
      too, as Linux does.  Not answered: gratuitous requests (announcements,
      not questions), our own requests, requests from a multicast or zero
      sender MAC;
    - anything else -> ignored.

    ``counters`` counts ``requests_answered``, ``conflicts`` (frames) and
    ``ignored``; with a ``limiter`` (ratelimit.SourceLimiter, keyed by the
    asking MAC), also ``rate_limited``: requests it would have answered.
    ``conflicts`` maps each VIP to ``{offending MAC text: last-seen
    time}`` (a dict keyed by MAC, so ``mac in conflicts[vip]`` works like a
    set; bounded, see VipResponder); the time comes from ``clock``
    (time.time by default).
    ``vips``, ``update_vips()``, ``handle()`` and ``handle_batch()`` are
    VipResponder's (responder.py).  Pure: no sockets, no clock but the one
    given.  Not thread-safe: one thread drains the punted frames.
    """

    def __init__(self, own_mac: Mac, vips: Iterable[IPv4] = (),
                 clock: Callable[[], float] = time.time, limiter=None):
        super().__init__(own_mac, vips, ("requests_answered", "conflicts",
                                         "ignored")
                         + (("rate_limited",) if limiter is not None
                            else ()), clock,
                         limiter)

    @staticmethod
    def _parse_vip(value) -> ipaddress.IPv4Address:
        return ipv4(value, "vip")

    def _decide(self, frame):
        pkt = parse_arp(frame)
        if pkt is None:
            return None, "ignored"
        if pkt.spa in self._vips and pkt.sha != self.own_mac:
            self._conflict(pkt.spa, pkt.sha)
            return None, "conflicts"
        if (pkt.op != ARPOP_REQUEST or pkt.tpa not in self._vips
                or pkt.is_gratuitous or pkt.sha == self.own_mac
                or not is_unicast(pkt.sha)):
            return None, "ignored"
        if not self._allow(pkt.sha):
            return None, "rate_limited"
        return build_arp(ARPOP_REPLY, self.own_mac, pkt.tpa, pkt.sha, pkt.spa,
                         eth_dst=pkt.sha, vlan=pkt.vlan), "requests_answered"
