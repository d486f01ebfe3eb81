"""ARP for direct routing: answer for the VIPs, find real servers, audit.

In DR the balancer owns each VIP on its L2 segment: it answers "who-has VIP"
with its own MAC, while the real servers hold the VIP on ``lo`` and must stay
silent ("the ARP problem", see realserver.py).  The data plane punts the ARP
frames that name a VIP; this module decides what to do with them.

Two halves, like scapy's ARP answering machine (``is_request`` /
``make_reply``):

- pure logic, no sockets, testable without root: ``parse_arp()``,
  ``build_arp()``, ``gratuitous()``, the MAC helpers and ``ArpResponder``
  (frame in, reply frame or None out, counters and conflicts recorded);
- I/O in the current network namespace: ``ArpSocket`` (AF_PACKET), and the
  lookups built on it: ``resolve()`` / ``refresh()`` (a real server's MAC)
  and ``arp_check()`` (who answers ARP for a VIP, every one of them).

MACs are ``bytes`` (6) on the data path (frames, ``resolve()``,
``ArpSocket.mac``) and text (``"02:00:00:00:01:02"``) in reports
(``Responder``, ``ArpResponder.conflicts``).  Frames are built and parsed
with ``struct`` only; scapy is for the tests.
"""

import errno
import ipaddress
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Union

from pyroute2 import IPRoute

from pyfwd.errors import ConfigError, PyfwdError
from pyfwd.neighbours.responder import ETH_P_8021Q, VipResponder, check_tci, eth_header, \
    unwrap_eth

__all__ = [
    "ETH_P_ARP", "ETH_P_8021Q", "ARPOP_REQUEST", "ARPOP_REPLY",
    "BROADCAST", "ZERO_MAC", "ArpPacket", "parse_arp", "build_arp",
    "gratuitous", "mac_to_bytes", "mac_to_str", "ArpResponder", "ArpSocket",
    "Responder", "resolve", "refresh", "arp_check",
]

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2

BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
_ANY4 = ipaddress.IPv4Address(0)

_ARP = struct.Struct("!HHBBH6s4s6s4s")  # 28 bytes for Ethernet / IPv4
_ARP_HEAD = (ARPHRD_ETHER, ETH_P_IP, 6, 4)

IPv4 = Union[str, ipaddress.IPv4Address]
Mac = Union[str, bytes]


# ---------------------------------------------------------------------------
# MAC and address helpers


def mac_to_bytes(mac: Mac) -> bytes:
    """``"02:00:00:00:01:02"`` (or ``-`` separated, any case) or 6 bytes ->
    6 bytes.  Raises ConfigError naming the value otherwise."""
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) == 6:
            return bytes(mac)
    elif isinstance(mac, str):
        parts = mac.strip().replace("-", ":").split(":")
        if len(parts) == 6 and all(1 <= len(p) <= 2 for p in parts):
            try:
                return bytes(int(p, 16) for p in parts)
            except ValueError:
                pass
    raise ConfigError(f"mac {mac!r}: expected six hex bytes like "
                      "02:00:00:00:01:02")


def mac_to_str(mac: Mac) -> str:
    """6 bytes (or a MAC in text) -> ``"02:00:00:00:01:02"``."""
    return ":".join(f"{b:02x}" for b in mac_to_bytes(mac))


def _ipv4(value, what: str = "address",
          only: str = "ARP is IPv4 only (IPv6 uses neighbour discovery: "
          "pyfwd.neighbours.ndp)") -> ipaddress.IPv4Address:
    """``value`` as an IPv4Address; raises ConfigError naming ``what``
    otherwise, with ``only`` as the reason for an IPv6 address."""
    if isinstance(value, ipaddress.IPv4Address):
        return value
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{what} {value!r}: expected an IPv4 address") \
            from None
    if addr.version != 4:
        raise ConfigError(f"{what} {addr}: {only}")
    return addr


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
    l2 = unwrap_eth(frame, (ETH_P_8021Q,))
    if l2 is None:
        return None
    frame, dst, src, ethertype, tag, offset = l2
    if ethertype != ETH_P_ARP or len(frame) < offset + _ARP.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = \
        _ARP.unpack_from(frame, offset)
    if (htype, ptype, hlen, plen) != _ARP_HEAD:
        return None
    return ArpPacket(op, sha, ipaddress.IPv4Address(spa), tha,
                     ipaddress.IPv4Address(tpa), src, dst,
                     None if tag is None else tag[1])


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
                            _ipv4(src_ip, "sender ip").packed, tha,
                            _ipv4(dst_ip, "target ip").packed)


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
    ``ignored``.  ``conflicts`` maps each VIP to ``{offending MAC text:
    last-seen time}`` (a dict keyed by MAC, so ``mac in conflicts[vip]``
    works like a set); the time comes from ``clock`` (time.time by default).
    ``vips``, ``update_vips()``, ``handle()`` and ``handle_batch()`` are
    VipResponder's (responder.py).  Pure: no sockets, no clock but the one
    given.  Not thread-safe: one thread drains the punted frames.
    """

    def __init__(self, own_mac: Mac, vips: Iterable[IPv4] = (),
                 clock: Callable[[], float] = time.time):
        self.own_mac = mac_to_bytes(own_mac)
        super().__init__(vips, ("requests_answered", "conflicts",
                                "ignored"), clock)

    @staticmethod
    def _parse_vip(value) -> ipaddress.IPv4Address:
        return _ipv4(value, "vip")

    def _decide(self, frame):
        pkt = parse_arp(frame)
        if pkt is None:
            return None, "ignored"
        if pkt.spa in self._vips and pkt.sha != self.own_mac:
            self._conflict(pkt.spa, pkt.sha)
            return None, "conflicts"
        if (pkt.op != ARPOP_REQUEST or pkt.tpa not in self._vips
                or pkt.is_gratuitous or pkt.sha == self.own_mac
                or pkt.sha == ZERO_MAC or pkt.sha[0] & 1):
            return None, "ignored"
        return build_arp(ARPOP_REPLY, self.own_mac, pkt.tpa, pkt.sha, pkt.spa,
                         eth_dst=pkt.sha, vlan=pkt.vlan), "requests_answered"


# ---------------------------------------------------------------------------
# I/O: a packet socket on one interface, in the current network namespace

_PACKET_OUTGOING = 4
_RECV_SIZE = 4096


class ArpSocket:
    """An AF_PACKET SOCK_RAW socket bound to ``ifname`` for ETH_P_ARP, in
    the calling thread's network namespace (it keeps that namespace for its
    life, whichever thread uses it later).

    Frames are whole Ethernet frames, sent as given.  Raises PyfwdError if
    the interface does not exist or the socket cannot be opened (e.g. not
    root).  A context manager; ``fileno()`` allows select/poll.
    """

    def __init__(self, ifname: str):
        self.ifname = ifname
        # protocol 0 receives nothing until bind(): no frame from another
        # interface can slip in between socket() and bind()
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            hint = " (CAP_NET_RAW is needed)" if exc.errno in (
                errno.EPERM, errno.EACCES) else ""
            raise PyfwdError(f"cannot open a packet socket for {ifname!r}: "
                             f"{exc.strerror or exc}{hint}") from exc
        try:
            self._sock.bind((ifname, ETH_P_ARP))
        except OSError as exc:
            self._sock.close()
            raise PyfwdError(f"interface {ifname!r}: "
                             f"{_ifname_error(exc)}") from exc
        # (ifname, proto, pkttype, hatype, hwaddr): the bound device's MAC
        self._mac = bytes(self._sock.getsockname()[4][:6])

    @property
    def mac(self) -> bytes:
        """The interface's MAC (6 bytes), as the kernel told the socket."""
        return self._mac

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, frame) -> int:
        """Send one Ethernet frame; returns the bytes sent.  Raises
        PyfwdError (with the OSError as cause) if the kernel refuses it,
        e.g. the link is down."""
        try:
            return self._sock.send(frame)
        except OSError as exc:
            raise PyfwdError(f"sending an ARP frame on {self.ifname}: "
                             f"{exc.strerror or exc}") from exc

    def recv(self, timeout: Optional[float] = None) -> Optional[bytes]:
        """The next ARP frame received on the interface (outgoing copies are
        skipped), waiting up to ``timeout`` seconds (None: forever, 0: just
        poll).  Returns None on timeout.  Raises PyfwdError (with the
        OSError as cause) if the kernel reports an error, e.g. the interface
        went away."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else \
                max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([self._sock], [], [], wait)
                if not ready:
                    return None
                frame, addr = self._sock.recvfrom(_RECV_SIZE)
            except OSError as exc:
                raise PyfwdError(f"receiving ARP on {self.ifname}: "
                                 f"{exc.strerror or exc}") from exc
            # a socket bound to one protocol gets no outgoing copies today;
            # the check keeps that true if it is ever bound to ETH_P_ALL
            if addr[2] != _PACKET_OUTGOING:
                return frame

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "ArpSocket":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ArpSocket({self.ifname!r}, mac={mac_to_str(self._mac)})"


def _ifname_error(exc: OSError) -> str:
    if exc.errno == errno.ENODEV:
        return "no such interface in this network namespace"
    return exc.strerror or str(exc)


# ---------------------------------------------------------------------------
# Netlink look-ups (pyroute2), in the current network namespace

# neighbour states whose MAC is worth using (NUD_* in linux/neighbour.h)
_NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80   # REACHABLE STALE DELAY
#                                                  PROBE PERMANENT
_IFA_F_SECONDARY = 0x01


def _iproute() -> IPRoute:
    # IPRoute() opens its netlink socket in the calling thread, hence in
    # the calling thread's network namespace
    return IPRoute()


def _ifindex(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise PyfwdError(f"interface {ifname!r}: no such interface in this "
                         "network namespace")
    return found[0]


def _source_ip(ipr: IPRoute, index: int, target: ipaddress.IPv4Address,
               exclude=()) -> ipaddress.IPv4Address:
    """The interface's IPv4 address on ``target``'s subnet (a primary one
    first), never one of ``exclude``; 0.0.0.0 if it has none."""
    candidates = []
    for msg in ipr.addr("dump", family=socket.AF_INET, index=index):
        local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
        if local is None:
            continue
        iface = ipaddress.IPv4Interface(f"{local}/{msg['prefixlen']}")
        if iface.ip in exclude or iface.ip == target \
                or target not in iface.network:
            continue
        candidates.append((bool(msg["flags"] & _IFA_F_SECONDARY), iface.ip))
    return min(candidates)[1] if candidates else _ANY4


def _kernel_neighbours(ipr: IPRoute, index: int,
                       family: int = socket.AF_INET) -> dict:
    """{address: mac bytes} of the usable neighbour entries of the
    interface: IPv4 (IPv4Address), or IPv6 with ``family`` AF_INET6."""
    found = {}
    for msg in ipr.neigh("dump", family=family, ifindex=index):
        dst, lladdr = msg.get("NDA_DST"), msg.get("NDA_LLADDR")
        if msg["ifindex"] != index or not msg["state"] & _NUD_USABLE \
                or dst is None or lladdr is None:
            continue
        try:
            mac = mac_to_bytes(lladdr)
        except ConfigError:
            continue
        if mac != ZERO_MAC:
            found[ipaddress.ip_address(dst)] = mac
    return found


def _check_wait(timeout, retries=1) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not timeout > 0:
        raise ConfigError(f"timeout {timeout!r}: expected a positive number "
                          "of seconds")
    if isinstance(retries, bool) or not isinstance(retries, int) \
            or retries < 1:
        raise ConfigError(f"retries {retries!r}: expected an integer >= 1")


# ---------------------------------------------------------------------------
# Real servers' MACs


def _solicit(ifname: str, senders: dict, timeout: float,
             retries: int) -> dict:
    """Ask who-has for each target of ``senders`` ({target: sender IP}),
    ``retries`` times spread over ``timeout`` seconds, re-asking only the
    silent ones.  Returns {target: mac bytes} for those that answered (the
    first answer wins, as in the kernel)."""
    found = {}
    pending = dict(senders)
    start = time.monotonic()
    with ArpSocket(ifname) as sock:
        for attempt in range(1, retries + 1):
            for target, sender in pending.items():
                sock.send(build_arp(ARPOP_REQUEST, sock.mac, sender,
                                    ZERO_MAC, target))
            until = start + timeout * attempt / retries
            while pending:
                left = until - time.monotonic()
                frame = sock.recv(left) if left > 0 else None
                if frame is None:
                    break
                pkt = parse_arp(frame)
                if pkt is not None and pkt.op == ARPOP_REPLY \
                        and pkt.spa in pending and pkt.sha != ZERO_MAC \
                        and not pkt.sha[0] & 1:
                    found[pkt.spa] = pkt.sha
                    del pending[pkt.spa]
            if not pending:
                break
    return found


def refresh(ifname: str, ips: Iterable[IPv4], timeout: float = 1.0,
            retries: int = 3, kernel: bool = True) -> dict:
    """The current MACs of real servers on ``ifname``: ``{ip: mac bytes or
    None}``, keyed by the items of ``ips`` as given.

    The engine calls it periodically (and when a real server is added).
    With ``kernel`` (the default), entries of the kernel's neighbour table
    on that interface in state REACHABLE, STALE, DELAY, PROBE or PERMANENT
    are used as they are; the others are asked on the wire, all at once:
    who-has from the interface's MAC and its own IPv4 address on the
    target's subnet (0.0.0.0, an ARP probe, if it has none), resent to the
    silent ones ``retries`` times within ``timeout`` seconds in all.  None
    means nobody answered: the caller does not schedule that real server
    and logs why.  Raises PyfwdError if the interface does not exist,
    ConfigError on a bad address, timeout or retries.
    """
    _check_wait(timeout, retries)
    wanted = {ip: _ipv4(ip, "real server address") for ip in ips}
    with _iproute() as ipr:
        index = _ifindex(ipr, ifname)
        known = _kernel_neighbours(ipr, index) if kernel else {}
        senders = {addr: _source_ip(ipr, index, addr)
                   for addr in set(wanted.values()) if addr not in known}
    if senders:
        known.update(_solicit(ifname, senders, timeout, retries))
    return {ip: known.get(addr) for ip, addr in wanted.items()}


def resolve(ifname: str, ip: IPv4, timeout: float = 1.0,
            retries: int = 3, kernel: bool = True) -> Optional[bytes]:
    """The MAC (6 bytes) of the real server ``ip`` on ``ifname``, or None if
    nobody answers within ``timeout`` seconds: the kernel's neighbour table
    first, then ARP requests (see refresh()).  Raises like refresh()."""
    return refresh(ifname, [ip], timeout, retries, kernel)[ip]


# ---------------------------------------------------------------------------
# Who answers ARP for a VIP?


@dataclass(frozen=True)
class Responder:
    """A host that answered who-has VIP: its MAC (text), the address it
    answered for, and whether it is the balancer (MAC == the own_mac given
    to arp_check())."""

    mac: str
    ip: ipaddress.IPv4Address
    is_balancer: bool


def arp_check(ifname: str, vip: IPv4, timeout: float = 1.0,
              own_mac: Optional[Mac] = None) -> list:
    """Every host that answers ARP for ``vip`` on ``ifname``'s segment, in
    the order their first reply came: a list of Responder (one per MAC).

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
    Raises PyfwdError if the interface does not exist, ConfigError on a bad
    address or timeout.
    """
    _check_wait(timeout)
    vip = _ipv4(vip, "vip")
    own = None if own_mac is None else mac_to_bytes(own_mac)
    with _iproute() as ipr:
        sender = _source_ip(ipr, _ifindex(ipr, ifname), vip, exclude={vip})
    seen = {}
    with ArpSocket(ifname) as sock:
        sock.send(build_arp(ARPOP_REQUEST, sock.mac, sender, ZERO_MAC, vip))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            frame = sock.recv(left) if left > 0 else None
            if frame is None:
                break
            pkt = parse_arp(frame)
            if pkt is not None and pkt.op == ARPOP_REPLY and pkt.spa == vip \
                    and pkt.sha not in seen:
                seen[pkt.sha] = Responder(mac_to_str(pkt.sha), vip,
                                          own is not None and pkt.sha == own)
    return list(seen.values())
