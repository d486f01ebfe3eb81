"""What the responders to punted frames share: Ethernet and VLAN framing,
and ``VipResponder``, their common base.

The engine's control thread hands every frame drained from the punt ring
to three responders: arp.py's ``ArpResponder`` (ARP for the IPv4 VIPs),
icmp.py's ``EchoResponder`` (ping to an IPv4 VIP) and ndp.py's
``NdpResponder`` (neighbour discovery and ping for the IPv6 VIPs).  Each
answers for a set of VIPs, decides frame by frame, counts every frame
under one reason and records the other MACs claiming a VIP.  That much is
``VipResponder``; how a frame is decided stays in each module.

A module of its own rather than a part of arp.py: icmp.py and ndp.py
would otherwise get their base class and their IP framing from the ARP
module, and arp.py would hold code ARP never uses.  It imports nothing
from the three, so arp.py builds on it too.

Pure: no sockets, no clock but the one given.  Frames are ``struct``
only, as in the three modules.
"""

import ipaddress
import struct
import time
from typing import Callable, Iterable, Optional, Tuple

from pyfwd.errors import ConfigError

__all__ = ["ETH_P_8021Q", "ETH_P_8021AD", "VLAN_TPIDS", "ETH_HEADER",
           "VLAN_TAG", "Tag", "unwrap_eth", "eth_header", "check_tci",
           "VipResponder"]

ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88a8
VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD)    # the tags the data plane parses

ETH_HEADER = struct.Struct("!6s6sH")        # dst, src, ethertype
VLAN_TAG = struct.Struct("!HH")             # TCI, inner ethertype

Tag = Optional[Tuple[int, int]]             # (TPID, TCI), None: untagged


# ---------------------------------------------------------------------------
# Ethernet and VLAN framing (pure)


def unwrap_eth(frame, tpids):
    """The Ethernet header of ``frame`` and at most one VLAN tag whose TPID
    is one of ``tpids``: ``(view, dst, src, ethertype, tag, offset)``,
    where ``view`` is ``frame`` as a byte memoryview, ``ethertype`` the
    inner one, ``tag`` (TPID, TCI) or None, and ``offset`` where the
    payload starts.  None when ``frame`` is not a buffer or is shorter than
    the header or the tag.  Never raises for bad bytes."""
    try:
        view = memoryview(frame).cast("B")
    except (TypeError, ValueError):
        return None
    if len(view) < ETH_HEADER.size:
        return None
    dst, src, ethertype = ETH_HEADER.unpack_from(view)
    offset = ETH_HEADER.size
    tag = None
    if ethertype in tpids:
        if len(view) < offset + VLAN_TAG.size:
            return None
        tci, inner = VLAN_TAG.unpack_from(view, offset)
        tag = (ethertype, tci)
        ethertype = inner
        offset += VLAN_TAG.size
    return view, dst, src, ethertype, tag, offset


def eth_header(dst: bytes, src: bytes, ethertype: int, tag: Tag = None) \
        -> bytes:
    """An Ethernet header for ``ethertype``, with ``tag`` = (TPID, TCI)
    inserted if not None (unchecked: see check_tci())."""
    if tag is None:
        return ETH_HEADER.pack(dst, src, ethertype)
    tpid, tci = tag
    return ETH_HEADER.pack(dst, src, tpid) + VLAN_TAG.pack(tci, ethertype)


def check_tci(vlan) -> None:
    """Raises ConfigError unless ``vlan`` is a TCI (an integer 0..65535)."""
    if isinstance(vlan, bool) or not isinstance(vlan, int) \
            or not 0 <= vlan <= 0xffff:
        raise ConfigError(f"vlan {vlan!r}: expected an 802.1Q TCI 0..65535 "
                          "(the VLAN ID for priority 0)")


# ---------------------------------------------------------------------------
# The base of the responders (pure)


class VipResponder:
    """A responder for a set of VIPs of one address family.

    A subclass provides ``_parse_vip(value)`` (one VIP -> IPv4Address or
    IPv6Address, raising ConfigError) and ``_decide(frame)`` -> (reply
    frame or None, reason), where the reason is one of the counter names
    given to ``__init__``; it calls ``_conflict()`` when another MAC claims
    a VIP.  The subclass sets ``own_mac`` itself.

    ``counters`` counts every frame ``handle()`` sees under its reason.
    ``conflicts`` maps each VIP to ``{offending MAC text: last-seen time}``
    (a dict keyed by MAC, so ``mac in conflicts[vip]`` works like a set);
    the time comes from ``clock`` (time.time by default).  Not thread-safe:
    one thread drains the punted frames.
    """

    def __init__(self, vips: Iterable, counters: Iterable[str],
                 clock: Callable[[], float] = time.time):
        self._vips = self._vip_set(vips)
        self._clock = clock
        self.counters = dict.fromkeys(counters, 0)
        self.conflicts = {}

    @staticmethod
    def _parse_vip(value):
        raise NotImplementedError

    def _decide(self, frame):
        raise NotImplementedError

    def _vip_set(self, vips) -> frozenset:
        if isinstance(vips, (str, ipaddress.IPv4Address,
                             ipaddress.IPv6Address)):
            vips = [vips]
        return frozenset(self._parse_vip(v) for v in vips)

    @property
    def vips(self) -> frozenset:
        """The VIPs answered for, as IPv4Address (ARP, echo) or
        IPv6Address (NDP)."""
        return self._vips

    def update_vips(self, vips: Iterable) -> None:
        """Answer for ``vips`` from now on (a replacement, not an addition;
        one address alone is one VIP).  Conflicts recorded for VIPs no
        longer present are forgotten.  Raises ConfigError on a bad address
        or one of the other family (then nothing changes)."""
        self._vips = self._vip_set(vips)
        self.conflicts = {vip: macs for vip, macs in self.conflicts.items()
                          if vip in self._vips}

    def handle(self, frame) -> Optional[bytes]:
        """The reply frame to send for ``frame``, or None (see the
        subclass's docstring).  Never raises for bad bytes."""
        reply, why = self._decide(frame)
        self.counters[why] += 1
        return reply

    def handle_batch(self, frames: Iterable) -> list:
        """``handle()`` over a drained batch: the reply frames to send, in
        order (frames needing no reply are left out)."""
        replies = []
        for frame in frames:
            reply = self.handle(frame)
            if reply is not None:
                replies.append(reply)
        return replies

    def _conflict(self, vip, mac: bytes) -> None:
        """Record that ``mac`` (6 bytes) claims ``vip``, now."""
        macs = self.conflicts.setdefault(vip, {})
        macs[bytes(mac).hex(":")] = self._clock()    # as mac_to_str() writes
