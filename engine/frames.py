"""What the frames the balancer parses and builds are made of: MAC
addresses, ethertypes, Ethernet headers with at most one VLAN tag, and IP
addresses of one family.

THE MAC helpers of pyfwd live here (``mac_to_bytes``, ``mac_to_str``,
``Mac``): the data plane's configuration, the responders, the kernel
look-ups, the lab and the bench all go through them.  MACs are ``bytes``
(6) on the data path and text (``"02:00:00:00:01:02"``, lower case) in
logs and reports.

Pure: no sockets, ``struct`` only (scapy is for the tests).  It stands on
the ground floor beside model.py and imports nothing from pyfwd but the
errors: the data plane, the neighbours, the lab and the bench all use it.
"""

import ipaddress
import struct
from typing import NamedTuple, Optional, Tuple, Union

from .errors import ConfigError

__all__ = ["ETH_P_IP", "ETH_P_ARP", "ETH_P_IPV6", "ETH_P_8021Q",
           "ETH_P_8021AD", "VLAN_TPIDS", "ETH_HEADER", "VLAN_TAG",
           "BROADCAST", "ZERO_MAC", "Mac", "Tag", "L2", "mac_to_bytes",
           "mac_to_str", "is_unicast", "unwrap_eth", "unwrap_payload",
           "eth_header", "check_tci", "ip_of"]

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86dd
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88a8
VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD)    # the tags the data plane parses

ETH_HEADER = struct.Struct("!6s6sH")        # dst, src, ethertype
VLAN_TAG = struct.Struct("!HH")             # TCI, inner ethertype

BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

Mac = Union[str, bytes]
Tag = Optional[Tuple[int, int]]             # (TPID, TCI), None: untagged


# ---------------------------------------------------------------------------
# MAC addresses

def mac_to_bytes(mac: Mac) -> bytes:
    """A MAC as 6 bytes, from 6 bytes or from text: ``"02:00:00:00:01:02"``
    (or ``-`` between the bytes, one or two digits each, any case) or
    ``"020000000102"``.  Raises ConfigError naming the value otherwise."""
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) == 6:
            return bytes(mac)
    elif isinstance(mac, str):
        text = mac.strip()
        parts = text.replace("-", ":").split(":")
        if len(text) == 12 and len(parts) == 1:
            parts = [text[i:i + 2] for i in range(0, 12, 2)]
        if len(parts) == 6 and all(1 <= len(p) <= 2 for p in parts):
            try:
                return bytes(int(p, 16) for p in parts)
            except ValueError:
                pass
    raise ConfigError(f"mac {mac!r}: expected six bytes, e.g. "
                      "02:00:00:00:01:02")


def mac_to_str(mac: Mac) -> str:
    """A MAC (6 bytes or text) as ``"02:00:00:00:01:02"``.  Raises
    ConfigError like mac_to_bytes()."""
    return mac_to_bytes(mac).hex(":")


def is_unicast(mac: bytes) -> bool:
    """A MAC a reply may be sent to: not zero, group bit clear."""
    return mac != ZERO_MAC and not mac[0] & 1


# ---------------------------------------------------------------------------
# Ethernet and VLAN headers


class L2(NamedTuple):
    """A frame's Ethernet header and tag, unwrapped: ``view`` is the frame
    as a byte memoryview, ``ethertype`` the inner one, ``tag`` (TPID, TCI)
    or None, ``offset`` where the payload starts."""

    view: memoryview
    dst: bytes
    src: bytes
    ethertype: int
    tag: Tag
    offset: int


def unwrap_eth(frame, tpids=VLAN_TPIDS) -> Optional[L2]:
    """The Ethernet header of ``frame`` and at most one VLAN tag whose TPID
    is one of ``tpids``.  None when ``frame`` is not a buffer or is shorter
    than the header or the tag.  Never raises for bad bytes."""
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
    return L2(view, dst, src, ethertype, tag, offset)


def unwrap_payload(frame, ethertype: int, size: int, other: str,
                   tpids=VLAN_TPIDS) -> Tuple[Optional[L2], Optional[str]]:
    """``frame`` unwrapped (see unwrap_eth()) when it carries ``ethertype``
    and at least ``size`` bytes of payload: ``(L2, None)``; else ``(None,
    why)``, why being ``"malformed"`` (truncated) or ``other`` (another
    ethertype).  A responder counts ``why``."""
    l2 = unwrap_eth(frame, tpids)
    if l2 is None:
        return None, "malformed"
    if l2.ethertype != ethertype:
        return None, other
    if len(l2.view) < l2.offset + size:
        return None, "malformed"
    return l2, None


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
# IP addresses of one family


def ip_of(version: int, value, what: str, why: str):
    """``value`` (text or an address) as an IPv4Address (``version`` 4) or
    IPv6Address (6).  Raises ConfigError naming ``what`` and the value
    otherwise, with ``why`` as the reason for an address of the other
    family."""
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)) \
            and value.version == version:
        return value
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{what} {value!r}: expected an IPv{version} "
                          "address") from None
    if addr.version != version:
        raise ConfigError(f"{what} {addr}: {why}")
    return addr
