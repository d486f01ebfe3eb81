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
from typing import Callable, Iterable, Union

from ..errors import ConfigError
from ..frames import ETH_P_IP, Mac, eth_header, ip_of, \
    unwrap_payload
from .responder import VipResponder

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


def _bad_source(src: ipaddress.IPv4Address) -> bool:
    """A source no reply may go to (RFC 1122 3.2.2.6 and 3.2.1.3)."""
    return (src.is_multicast or src.is_loopback or src.is_unspecified
            or src == ipaddress.IPv4Address("255.255.255.255")
            or src.is_reserved)


class EchoResponder(VipResponder):
    """Answers ICMP echo requests to the VIPs with ``own_mac``.

    ``handle(frame)`` takes a whole Ethernet frame, untagged or with one
    802.1Q or 802.1ad tag (the data plane punts both), and returns the echo
    reply frame to send, or None.  The reply goes back the way the request
    came: Ethernet source and destination swapped (the source is
    ``own_mac``), the same tag (TPID and TCI as received, as NdpResponder
    does), IP source and destination
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

    ``vips``, ``update_vips()``, ``handle()`` and ``handle_batch()`` are
    VipResponder's (responder.py); ``conflicts`` stays empty (ARP and NDP
    say who owns an address, ping does not).  Pure: no sockets, no clock
    but the one given (``clock``, monotonic seconds, feeds the bucket).
    Not thread-safe: one thread drains the punted frames.  Raises
    ConfigError on a bad MAC, VIP, rate or burst.
    """

    def __init__(self, own_mac: Mac, vips: Iterable[IPv4] = (),
                 rate: float = RATE, burst: float = BURST,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(own_mac, vips, COUNTERS)
        self._bucket = TokenBucket(rate, burst, clock)
        self._ip_id = 0

    @staticmethod
    def _parse_vip(value) -> ipaddress.IPv4Address:
        return ip_of(4, value, "vip", "this responder answers IPv4 VIPs "
                     "only (IPv6: pyfwd.neighbours.ndp.NdpResponder)")

    def _decide(self, frame):
        l2, why = unwrap_payload(frame, ETH_P_IP, _IP.size, "not_ipv4")
        if l2 is None:
            return None, why
        frame, eth_src, tag, off = l2.view, l2.src, l2.tag, l2.offset
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
        return eth_header(eth_dst, self.own_mac, ETH_P_IP, tag) + bytes(ip) \
            + bytes(body)
