"""IPv6 neighbour discovery for the VIPs: what arp.py and icmp.py do for IPv4.

In DR the balancer owns each IPv6 VIP on its segment the way it owns an
IPv4 one: it answers the neighbour solicitations (NS) for the VIP with its
own MAC, and the real servers, which hold the VIP on ``lo``, stay silent
(Linux answers an NS only for an address of the interface it came in on:
see realserver.py).  The data plane punts the NDP frames that name a VIP
(an NS or NA to a multicast address whose target is a VIP: PUNT_NDP) and
ICMPv6 sent to a VIP (PUNT_ICMP: pings, and the unicast NS of neighbour
unreachability detection); this module decides what to do with them.

Pure, like arp.py: the builders (``build_na()``, ``unsolicited_na()``),
``solicited_node()``, ``icmp6_checksum()`` and ``NdpResponder`` (frame in,
reply frame or None out, every frame counted by reason, conflicts
recorded); no sockets, testable without root.  The MACs of IPv6 real
servers come from the kernel's neighbour table: kernel.py's
``neighbour_macs()``.

Frames are built and parsed with ``struct`` only; scapy is for the tests.
"""

import ipaddress
import struct
import time
from typing import Callable, Iterable, Optional, Union

from ..frames import (ETH_P_8021Q, ETH_P_IPV6, Mac,
                      check_tci, eth_header, ip_of,
                      is_unicast, mac_to_bytes,
                      unwrap_payload)
from .icmp import BURST, RATE, TokenBucket, checksum
from .responder import VipResponder

__all__ = ["ND_NS", "ND_NA", "ECHO_REQUEST", "ECHO_REPLY", "ALL_NODES",
           "COUNTERS", "ipv6", "solicited_node", "multicast_mac",
           "icmp6_checksum", "build_na", "unsolicited_na", "NdpResponder"]

IPPROTO_ICMPV6 = 58
ND_NS, ND_NA = 135, 136
ECHO_REQUEST, ECHO_REPLY = 128, 129
OPT_SOURCE_LL, OPT_TARGET_LL = 1, 2
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80, 0x40, 0x20
ND_HOP_LIMIT = 255          # RFC 4861: sent and required on receipt
ECHO_HOP_LIMIT = 64
EXTHDR_MAX = 8              # extension headers walked before giving up

ALL_NODES = ipaddress.IPv6Address("ff02::1")
_UNSPECIFIED = ipaddress.IPv6Address("::")
_SOLICITED_PREFIX = bytes.fromhex("ff0200000000000000000001ff")

# Every frame handle() sees lands in exactly one of these.
COUNTERS = ("answered", "dad_answered", "echo_answered", "conflicts",
            "not_ipv6", "malformed", "bad_checksum", "bad_hop_limit",
            "invalid", "fragments", "not_handled", "not_vip", "bad_source",
            "rate_limited")

_IP6 = struct.Struct("!IHBB16s16s")     # ver/tc/flow, plen, nh, hlim, s, d
_NA = struct.Struct("!BBHB3x16s")       # type, code, sum, flags, target
_LLA = struct.Struct("!BB6s")           # option type, length (8s), MAC

IPv6 = Union[str, ipaddress.IPv6Address]


# ---------------------------------------------------------------------------
# Addresses and checksums (pure)


def ipv6(value, what: str = "address") -> ipaddress.IPv6Address:
    """``value`` as an IPv6Address; raises ConfigError naming ``what``
    otherwise."""
    return ip_of(6, value, what, "neighbour discovery is IPv6 only (ARP "
                 "answers for IPv4)")


def solicited_node(addr: IPv6) -> ipaddress.IPv6Address:
    """The solicited-node multicast address of ``addr`` (ff02::1:ffXX:XXXX,
    RFC 4291 2.7.1), where neighbour solicitations for it are sent."""
    return ipaddress.IPv6Address(_SOLICITED_PREFIX
                                 + ipv6(addr).packed[13:])


def multicast_mac(addr: IPv6) -> bytes:
    """The Ethernet address of an IPv6 multicast address: 33:33 and its
    last four bytes (RFC 2464 7)."""
    return b"\x33\x33" + ipv6(addr).packed[12:]


def icmp6_checksum(src, dst, message) -> int:
    """The ICMPv6 checksum of ``message`` from ``src`` to ``dst`` (16-byte
    addresses or IPv6Address): over the pseudo-header (RFC 8200 8.1) and
    the message.  0 when ``message`` already holds a correct one."""
    src = src.packed if isinstance(src, ipaddress.IPv6Address) else src
    dst = dst.packed if isinstance(dst, ipaddress.IPv6Address) else dst
    message = bytes(message)
    pseudo = bytes(src) + bytes(dst) + struct.pack("!I3xB", len(message),
                                                   IPPROTO_ICMPV6)
    return checksum(pseudo + message)


# ---------------------------------------------------------------------------
# Frames (pure)


def _ip6(src: bytes, dst: bytes, hlim: int, message: bytes,
         tclass: int = 0) -> bytes:
    return _IP6.pack(6 << 28 | (tclass & 0xff) << 20, len(message),
                     IPPROTO_ICMPV6, hlim, src, dst) + message


def _with_checksum(src: bytes, dst: bytes, message: bytearray) -> bytes:
    message[2:4] = b"\0\0"
    message[2:4] = icmp6_checksum(src, dst, message).to_bytes(2, "big")
    return bytes(message)


def build_na(own_mac: Mac, target: IPv6, dst_ip: IPv6, dst_mac: Mac,
             solicited: bool, override: bool = True,
             vlan: Optional[int] = None, tpid: int = ETH_P_8021Q) -> bytes:
    """A Neighbor Advertisement frame: ``target`` is at ``own_mac``.

    From ``own_mac`` and from ``target`` itself (RFC 4861 7.2.4), to
    ``dst_ip`` at ``dst_mac``, hop limit 255, flags Solicited (as given),
    Override (as given), Router clear, a target link-layer address option
    with ``own_mac``, the ICMPv6 checksum over the pseudo-header.  ``vlan``
    (a TCI) adds a tag with ``tpid``.  Not padded to 60 bytes.  Raises
    ConfigError on a bad MAC, address or tag.
    """
    own = mac_to_bytes(own_mac)
    src = ipv6(target, "target").packed
    dst = ipv6(dst_ip, "destination").packed
    flags = (NA_SOLICITED if solicited else 0) | \
        (NA_OVERRIDE if override else 0)
    message = bytearray(_NA.pack(ND_NA, 0, 0, flags, src)
                        + _LLA.pack(OPT_TARGET_LL, 1, own))
    message = _with_checksum(src, dst, message)
    tag = None
    if vlan is not None:
        check_tci(vlan)
        tag = (tpid, vlan)
    return eth_header(mac_to_bytes(dst_mac), own, ETH_P_IPV6, tag) + \
        _ip6(src, dst, ND_HOP_LIMIT, message)


def unsolicited_na(mac: Mac, vip: IPv6, vlan: Optional[int] = None) -> bytes:
    """An unsolicited Neighbor Advertisement announcing that ``vip`` is at
    ``mac``: IPv6's gratuitous ARP (RFC 4861 7.2.6).  To all nodes
    (ff02::1, 33:33:00:00:00:01), Override set so that caches holding
    another MAC for the VIP take this one (Linux moves such an entry to
    STALE with the new MAC; it creates none for an address it does not
    know, unless accept_untracked_na), Solicited clear.  Switches learn
    the MAC's port from it."""
    return build_na(mac, vip, ALL_NODES, multicast_mac(ALL_NODES),
                    solicited=False, override=True, vlan=vlan)


def _options(data) -> Optional[dict]:
    """NDP options ({type: body of its first occurrence}), or None if one
    has length 0 or runs past the end (RFC 4861 7.1.1/7.1.2)."""
    opts = {}
    i = 0
    while i < len(data):
        if i + 2 > len(data) or data[i + 1] == 0:
            return None
        n = data[i + 1] * 8
        if i + n > len(data):
            return None
        opts.setdefault(data[i], bytes(data[i + 2:i + n]))
        i += n
    return opts


def _lladdr(opts: dict, kind: int):
    """The MAC of a link-layer address option: bytes, None if absent, or
    False if present but not an Ethernet address (length 1: 6 bytes and
    padding, RFC 2464 6)."""
    body = opts.get(kind)
    if body is None:
        return None
    return body[:6] if len(body) == 6 else False


# ---------------------------------------------------------------------------
# The responder (pure)


def _bad_source(src: ipaddress.IPv6Address) -> bool:
    """A source no echo reply may go to."""
    return src.is_multicast or src.is_unspecified or src.is_loopback


class NdpResponder(VipResponder):
    """Answers neighbour discovery and ping for the IPv6 VIPs with
    ``own_mac``, and spots other owners.

    ``handle(frame)`` takes a whole Ethernet frame (untagged, or with one
    802.1Q or 802.1ad tag, kept in the reply with its TPID and TCI as
    received) and returns the frame to send, or None:

    - a Neighbor Solicitation whose target is a VIP, valid by RFC 4861
      7.1.1 (hop limit 255, checksum, code 0, 24 bytes or more, target not
      multicast, options of non-zero length, from :: only to the target's
      solicited-node address and without a source link-layer option; and,
      stricter than the RFC, sent to the target or its solicited-node
      address) -> a Neighbor Advertisement (see build_na()): to the
      solicitor's address and MAC (its source link-layer option, else the
      frame's source) with Solicited and Override set; a duplicate address
      detection probe (from ::) -> to ff02::1 with Solicited clear (RFC
      4861 7.2.4), which makes the prober's DAD fail: the VIP is taken;
    - an ICMPv6 echo request to a VIP -> the echo reply from the VIP (hop
      limit 64, the request's traffic class with ECN cleared, identifier,
      sequence and data unchanged; extension headers not echoed),
      rate-limited by a token bucket (``rate``/s, ``burst``) as in icmp.py;
    - another MAC claiming a VIP: a valid Neighbor Advertisement for a VIP
      whose target link-layer address (else frame source) is not
      ``own_mac``, an NS sent from a VIP address by another MAC (its
      source link-layer option would point the target's cache at it), or
      a DAD probe for a VIP (answered as well) -> recorded in
      ``conflicts``, like ArpResponder: ``{vip: {MAC text: last seen}}``.

    Every frame is counted once in ``counters`` (keys: COUNTERS) under the
    first reason that applies: ``not_ipv6``, ``malformed`` (truncated,
    version not 6, payload length past the frame, broken extension
    headers, ICMPv6 shorter than its header), ``fragments``,
    ``not_handled`` (not ICMPv6, or a type other than NS, NA and echo
    request), ``bad_checksum``, ``bad_hop_limit`` (NS/NA not 255),
    ``invalid`` (the rest of RFC 4861 7.1), ``conflicts``, ``not_vip``,
    ``bad_source`` (our own frames, a multicast Ethernet source, an echo
    from a multicast, unspecified or loopback address), ``rate_limited``,
    then ``answered``, ``dad_answered`` or ``echo_answered``; the rest
    (an NA from us, an echo to a multicast address) is ``not_handled``.
    With a ``limiter`` (ratelimit.SourceLimiter, keyed by the soliciting
    MAC), solicitations it refuses count as ``ns_rate_limited`` (after
    ``bad_source``; a refused DAD probe is still recorded as a conflict).

    ``vips``, ``update_vips()``, ``handle()`` and ``handle_batch()`` are
    VipResponder's (responder.py).  Pure: no sockets; ``clock`` (wall
    time) stamps conflicts and
    ``monotonic`` feeds the bucket.  Not thread-safe: one thread drains
    the punted frames.  Raises ConfigError on a bad MAC, VIP, rate or
    burst.
    """

    def __init__(self, own_mac: Mac, vips: Iterable[IPv6] = (),
                 rate: float = RATE, burst: float = BURST,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 limiter=None):
        super().__init__(own_mac, vips, COUNTERS
                         + (("ns_rate_limited",) if limiter is not None
                            else ()), clock,
                         limiter)
        self._bucket = TokenBucket(rate, burst, monotonic)

    @staticmethod
    def _parse_vip(value) -> ipaddress.IPv6Address:
        return ipv6(value, "vip")

    def _decide(self, frame):
        l2, why = unwrap_payload(frame, ETH_P_IPV6, _IP6.size, "not_ipv6")
        if l2 is None:
            return None, why
        frame, eth_src, tag, off = l2.view, l2.src, l2.tag, l2.offset
        vtf, plen, nh, hlim, src, dst = _IP6.unpack_from(frame, off)
        end = off + _IP6.size + plen
        if vtf >> 28 != 6 or end > len(frame):
            return None, "malformed"
        l4 = off + _IP6.size
        for _ in range(EXTHDR_MAX):
            if nh == 44:
                return None, "fragments"
            if nh not in (0, 43, 60):       # hop-by-hop, routing, dest
                break
            if l4 + 8 > end:
                return None, "malformed"
            nh, size = frame[l4], (frame[l4 + 1] + 1) * 8
            if l4 + size > end:
                return None, "malformed"
            l4 += size
        else:
            return None, "malformed"
        if nh != IPPROTO_ICMPV6:
            return None, "not_handled"
        msg = frame[l4:end]
        if len(msg) < 4:
            return None, "malformed"
        if msg[0] not in (ND_NS, ND_NA, ECHO_REQUEST):
            return None, "not_handled"
        if icmp6_checksum(src, dst, msg):
            return None, "bad_checksum"
        src_ip = ipaddress.IPv6Address(bytes(src))
        dst_ip = ipaddress.IPv6Address(bytes(dst))
        if msg[0] == ECHO_REQUEST:
            return self._echo(eth_src, tag, vtf, src, dst, src_ip, dst_ip,
                              msg)
        if hlim != ND_HOP_LIMIT:
            return None, "bad_hop_limit"
        if msg[1] != 0 or len(msg) < 24:
            return None, "invalid"
        target = ipaddress.IPv6Address(bytes(msg[8:24]))
        opts = _options(msg[24:])
        if target.is_multicast or opts is None:
            return None, "invalid"
        if msg[0] == ND_NA:
            return self._na(eth_src, dst_ip, msg[4], target, opts)
        return self._ns(eth_src, tag, src_ip, dst_ip, target, opts)

    def _ns(self, eth_src, tag, src_ip, dst_ip, target, opts):
        sll = _lladdr(opts, OPT_SOURCE_LL)
        dad = src_ip == _UNSPECIFIED
        if sll is False or (dad and (sll is not None or
                                     dst_ip != solicited_node(target))) \
                or dst_ip not in (target, solicited_node(target)):
            return None, "invalid"
        sender = sll or eth_src
        if src_ip in self._vips and sender != self.own_mac:
            # soliciting from a VIP: it would teach the target its MAC
            self._conflict(src_ip, sender)
            return None, "conflicts"
        if target not in self._vips:
            return None, "not_vip"
        if eth_src == self.own_mac or eth_src[0] & 1 \
                or not is_unicast(sender):
            return None, "bad_source"
        if not self._allow(sender):
            return None, "ns_rate_limited"
        tpid, vlan = (ETH_P_8021Q, None) if tag is None else tag
        if dad:
            # Someone tries to configure the VIP: defend it, say who.
            self._conflict(target, sender)
            return build_na(self.own_mac, target, ALL_NODES,
                            multicast_mac(ALL_NODES), solicited=False,
                            vlan=vlan, tpid=tpid), "dad_answered"
        return build_na(self.own_mac, target, src_ip, sender, solicited=True,
                        vlan=vlan, tpid=tpid), "answered"

    def _na(self, eth_src, dst_ip, flags, target, opts):
        tll = _lladdr(opts, OPT_TARGET_LL)
        if tll is False or (dst_ip.is_multicast and flags & NA_SOLICITED):
            return None, "invalid"
        if target not in self._vips:
            return None, "not_vip"
        owner = tll or eth_src
        if owner == self.own_mac:
            return None, "not_handled"      # ours, looped back
        self._conflict(target, owner)
        return None, "conflicts"

    def _echo(self, eth_src, tag, vtf, src, dst, src_ip, dst_ip, msg):
        if msg[1] != 0:
            return None, "not_handled"
        if len(msg) < 8:
            return None, "malformed"
        if dst_ip.is_multicast:
            return None, "not_handled"
        if dst_ip not in self._vips:
            return None, "not_vip"
        if eth_src[0] & 1 or eth_src == self.own_mac \
                or _bad_source(src_ip):
            return None, "bad_source"
        if not self._bucket.take():
            return None, "rate_limited"
        body = bytearray(msg)
        body[0] = ECHO_REPLY
        body = _with_checksum(bytes(dst), bytes(src), body)
        tclass = (vtf >> 20) & 0xfc         # DSCP kept, ECN cleared
        return (eth_header(eth_src, self.own_mac, ETH_P_IPV6, tag)
                + _ip6(bytes(dst), bytes(src), ECHO_HOP_LIMIT, body, tclass),
                "echo_answered")
