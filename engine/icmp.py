"""ICMP echo for the VIPs: answer `ping VIP`, as appliances do.

The data plane punts ICMP addressed to a VIP (reason PYFWD_R_PUNT_ICMP);
the engine's control thread drains the punted frames and hands them here
as well as to the ARP responder.  ``EchoResponder`` answers an IPv4 echo
request (type 8, code 0) for a VIP with an echo reply from the balancer's
MAC, and counts everything it does not answer by reason.

Pure, like arp.py's ``ArpResponder``: frame in, reply frame or None out, no
sockets, the clock injected; frames are parsed and built with ``struct``
only (scapy is for the tests).  A token bucket caps the replies (100/s,
bursts of 50 by default) so a flood of pings cannot keep the control
thread, which also answers ARP and checks health, from its other work.

IPv4 only: ping to an IPv6 VIP is answered by ndp.py's NdpResponder,
with neighbour discovery (it shares this module's TokenBucket).
"""

import ipaddress
import math
import struct
import time
from typing import Callable, Iterable, Optional, Union

from .arp import ETH_P_8021Q, ETH_P_IP, ArpResponder, Mac, mac_to_bytes
from .errors import ConfigError

__all__ = ["ICMP_ECHO_REPLY", "ICMP_ECHO_REQUEST", "RATE", "BURST",
           "COUNTERS", "checksum", "TokenBucket", "EchoResponder"]

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
IPPROTO_ICMP = 1
REPLY_TTL = 64
RATE = 100.0        # replies per second, sustained
BURST = 50          # replies at once, after a quiet spell

# Every frame handle() sees lands in exactly one of these.
COUNTERS = ("answered", "not_ipv4", "malformed", "bad_checksum",
            "fragments", "not_echo", "not_vip", "bad_source",
            "rate_limited")

_ETH = struct.Struct("!6s6sH")          # dst, src, ethertype
_TAG = struct.Struct("!HH")             # TCI, inner ethertype
# version/IHL, TOS, total length, id, flags/fragment offset, TTL,
# protocol, checksum, source, destination
_IP = struct.Struct("!BBHHHBBH4s4s")
_IP_MF, _IP_OFFSET = 0x2000, 0x1fff
_ICMP_HEAD = 8                          # type, code, checksum, id, sequence

IPv4 = Union[str, ipaddress.IPv4Address]


def checksum(data) -> int:
    """The Internet checksum (RFC 1071) of ``data``: 0 when ``data``
    already holds a correct checksum field.

    2**16 is 1 modulo 0xffff, so the one's complement sum of the 16-bit
    words is the whole buffer as one big integer modulo 0xffff (0xffff, not
    0, for a non-zero buffer): one C-speed operation instead of a loop.
    """
    data = bytes(data)
    if len(data) & 1:
        data += b"\0"
    n = int.from_bytes(data, "big")
    total = n % 0xffff
    if total == 0 and n:
        total = 0xffff
    return ~total & 0xffff


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full.

    ``take()`` spends one token and returns True, or returns False when
    there is none.  ``clock`` is monotonic seconds (time.monotonic by
    default); a clock that steps back refills nothing.  Raises ConfigError
    on a rate that is not a positive number or a burst below 1.
    """

    def __init__(self, rate: float = RATE, burst: float = BURST,
                 clock: Callable[[], float] = time.monotonic):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) \
                or not math.isfinite(rate) or rate <= 0:
            raise ConfigError(f"icmp rate {rate!r}: expected a positive "
                              "number of replies per second")
        if isinstance(burst, bool) or not isinstance(burst, (int, float)) \
                or not math.isfinite(burst) or burst < 1:
            raise ConfigError(f"icmp burst {burst!r}: expected a number of "
                              "replies >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        if now > self._last:
            self._tokens = min(self.burst,
                               self._tokens + (now - self._last) * self.rate)
        self._last = max(self._last, now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def _vip_set(vips) -> frozenset:
    if isinstance(vips, (str, ipaddress.IPv4Address)):
        vips = [vips]
    out = set()
    for v in vips:
        try:
            addr = v if isinstance(v, ipaddress.IPv4Address) \
                else ipaddress.ip_address(v)
        except ValueError:
            raise ConfigError(f"vip {v!r}: expected an IPv4 address") \
                from None
        if addr.version != 4:
            raise ConfigError(f"vip {addr}: this responder answers IPv4 "
                              "VIPs only (IPv6: pyfwd.ndp.NdpResponder)")
        out.add(addr)
    return frozenset(out)


def _bad_source(src: ipaddress.IPv4Address) -> bool:
    """A source no reply may go to (RFC 1122 3.2.2.6 and 3.2.1.3)."""
    return (src.is_multicast or src.is_loopback or src.is_unspecified
            or src == ipaddress.IPv4Address("255.255.255.255")
            or src.is_reserved)


class EchoResponder:
    """Answers ICMP echo requests to the VIPs with ``own_mac``.

    ``handle(frame)`` takes a whole Ethernet frame, untagged or with one
    802.1Q tag, and returns the echo reply frame to send, or None.  The
    reply goes back the way the request came: Ethernet source and
    destination swapped (the source is ``own_mac``), the same 802.1Q tag
    (TCI as received, as ArpResponder does), IP source and destination
    swapped, a fresh 20-byte IP header (no options: they are accepted in
    the request, not echoed; TTL 64, the request's DSCP, ECN cleared, a new
    IP id, DF clear, checksum computed), and the ICMP message echoed with
    type 0 and its checksum recomputed over the whole message (identifier,
    sequence and data unchanged).  Ethernet padding after the IP total
    length is dropped.

    Frames are checked in this order; each one not answered is counted once
    in ``counters`` under the first reason that applies:

    - ``not_ipv4``: not IPv4 (ARP, IPv6, other ethertypes: the punt ring
      carries ARP too; the ARP responder sees those);
    - ``malformed``: truncated Ethernet, tag or IP header, version not 4,
      IHL < 5, total length shorter than the header or longer than the
      frame, an ICMP message shorter than 8 bytes;
    - ``fragments``: any fragment (MF set or an offset); the data plane
      drops fragments to a VIP before they get here, this is belt and
      braces: a reassembled ping is never answered;
    - ``not_echo``: not ICMP, or ICMP other than type 8 code 0;
    - ``not_vip``: the destination is not one of the VIPs;
    - ``bad_source``: an IP source no reply may go to (multicast,
      broadcast, 0.0.0.0, loopback, class E) or a multicast Ethernet
      source;
    - ``rate_limited``: the token bucket (``rate`` replies/s, ``burst``)
      is empty;
    - ``bad_checksum``: IP header or ICMP checksum wrong (Linux drops
      these too);
    - ``answered``: the reply was returned.

    The checksums come last, after the bucket: a flood costs a header
    parse and a bucket check per frame, never a checksum over its payload.
    So a frame with a bad checksum spends a token (``bad_checksum`` counts
    those the bucket let through), and a header damaged in transit is
    counted under whatever its damaged fields say (``not_echo``,
    ``not_vip``, ...) rather than ``bad_checksum``; either way it is not
    answered.

    Pure: no sockets, no clock but the one given (``clock``, monotonic
    seconds, feeds the bucket).  Not thread-safe: one thread drains the
    punted frames.  Raises ConfigError on a bad MAC, VIP, rate or burst.
    """

    def __init__(self, own_mac: Mac, vips: Iterable[IPv4] = (),
                 rate: float = RATE, burst: float = BURST,
                 clock: Callable[[], float] = time.monotonic):
        self.own_mac = mac_to_bytes(own_mac)
        self._vips = _vip_set(vips)
        self._bucket = TokenBucket(rate, burst, clock)
        self._ip_id = 0
        self.counters = dict.fromkeys(COUNTERS, 0)

    @property
    def vips(self) -> frozenset:
        """The VIPs answered for, as IPv4Address."""
        return self._vips

    def update_vips(self, vips: Iterable[IPv4]) -> None:
        """Answer for ``vips`` from now on (a replacement, not an addition).
        Raises ConfigError on a bad or IPv6 address (then nothing
        changes)."""
        self._vips = _vip_set(vips)

    def handle(self, frame) -> Optional[bytes]:
        """The reply frame to send for ``frame``, or None (see the class
        docstring).  Never raises for bad bytes."""
        reply, why = self._decide(frame)
        self.counters[why] += 1
        return reply

    # handle() over a drained batch: the replies, in order
    handle_batch = ArpResponder.handle_batch

    def _decide(self, frame):
        try:
            frame = memoryview(frame).cast("B")
        except (TypeError, ValueError):
            return None, "malformed"
        if len(frame) < _ETH.size:
            return None, "malformed"
        eth_dst, eth_src, ethertype = _ETH.unpack_from(frame)
        off = _ETH.size
        tag = b""
        if ethertype == ETH_P_8021Q:
            if len(frame) < off + _TAG.size:
                return None, "malformed"
            tci, ethertype = _TAG.unpack_from(frame, off)
            tag = _TAG.pack(tci, ETH_P_IP)
            off += _TAG.size
        if ethertype != ETH_P_IP:
            return None, "not_ipv4"
        if len(frame) < off + _IP.size:
            return None, "malformed"
        (vihl, tos, total, _id, frag, _ttl, proto, _sum, src,
         dst) = _IP.unpack_from(frame, off)
        ihl = (vihl & 0x0f) * 4
        if vihl >> 4 != 4 or ihl < _IP.size or total < ihl \
                or off + total > len(frame):
            return None, "malformed"
        if frag & (_IP_MF | _IP_OFFSET):
            return None, "fragments"
        if proto != IPPROTO_ICMP:
            return None, "not_echo"
        icmp = frame[off + ihl:off + total]
        if len(icmp) < _ICMP_HEAD:
            return None, "malformed"
        if icmp[0] != ICMP_ECHO_REQUEST or icmp[1] != 0:
            return None, "not_echo"
        if ipaddress.IPv4Address(dst) not in self._vips:
            return None, "not_vip"
        if eth_src[0] & 1 or _bad_source(ipaddress.IPv4Address(src)):
            return None, "bad_source"
        # The bucket before the checksums: they cost a pass over the
        # frame, the bucket a subtraction.
        if not self._bucket.take():
            return None, "rate_limited"
        if checksum(frame[off:off + ihl]) or checksum(icmp):
            return None, "bad_checksum"
        return self._reply(eth_src, tag, tos, src, dst, icmp), "answered"

    def _reply(self, eth_dst, tag, tos, src, dst, icmp) -> bytes:
        body = bytearray(icmp)
        body[0] = ICMP_ECHO_REPLY
        body[2:4] = b"\0\0"
        body[2:4] = checksum(body).to_bytes(2, "big")
        self._ip_id = (self._ip_id + 1) & 0xffff
        ip = bytearray(_IP.pack(0x45, tos & 0xfc, _IP.size + len(body),
                                self._ip_id, 0, REPLY_TTL, IPPROTO_ICMP, 0,
                                dst, src))
        ip[10:12] = checksum(ip).to_bytes(2, "big")
        eth = _ETH.pack(eth_dst, self.own_mac,
                        ETH_P_8021Q if tag else ETH_P_IP)
        return eth + tag + bytes(ip) + bytes(body)
