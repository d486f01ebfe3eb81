"""This host and its neighbours, as the kernel sees them: an interface's
index, MAC, RX queues and addresses, the route toward an address, and the
MACs of the neighbours (real servers, next hops) from the kernel's
neighbour table, asked on the wire for the ones it does not know.

Everything here runs in the calling thread's network namespace (pyroute2
opens its netlink socket in the calling thread) and changes nothing on the
host but the neighbour entries the kernel learns from the solicitations.
"""

import array
import errno
import fcntl
import ipaddress
import logging
import socket
import struct
import time
from typing import Iterable, NamedTuple, Optional, Union

from pyroute2 import IPRoute

from ..errors import ConfigError, PyfwdError
from .arp import ARPOP_REQUEST, build_arp, parse_arp
from .framesocket import FrameSocket
from ..frames import ZERO_MAC, is_unicast, mac_to_bytes
from .ndp import ECHO_REQUEST

__all__ = ["interface", "rx_queues", "route_to", "multicast_socket",
           "primary_ipv4", "ifindex", "Address", "addresses",
           "source_ipv4", "neighbour_table", "neighbour_macs",
           "neighbour_mac", "check_wait"]

log = logging.getLogger("pyfwd")

IP = Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]


# ---------------------------------------------------------------------------
# Interfaces, addresses, routes


def ifindex(ipr: IPRoute, ifname: str, what: str = "interface") -> int:
    """The index of ``ifname``.  Raises ConfigError naming ``what`` and the
    interface when it does not exist."""
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise ConfigError(f"{what} {ifname!r}: no such interface in this "
                          "network namespace")
    return found[0]


def interface(ifname):
    """(ifindex, mac bytes, rx queues) of an interface in this netns.

    Raises ConfigError naming the interface when it does not exist.
    """
    with IPRoute() as ipr:
        index = ifindex(ipr, ifname)
        link = ipr.get_links(index)[0]
    mac = mac_to_bytes(link.get_attr("IFLA_ADDRESS"))
    return index, mac, rx_queues(ifname)


ETHTOOL_GCHANNELS = 0x3c
SIOCETHTOOL = 0x8946


def rx_queues(ifname):
    """RX queues in use (ethtool channels: rx or combined); 1 when the
    driver does not say.  Netlink's IFLA_NUM_RX_QUEUES counts the queues
    allocated (veth: one per CPU), not those in use."""
    buf = array.array("I", [ETHTOOL_GCHANNELS] + [0] * 8)
    ifr = struct.pack("16sP", ifname.encode(), buf.buffer_info()[0])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return 1
        raise
    # cmd, max_rx, max_tx, max_other, max_combined, rx, tx, other, combined
    return max(buf[5], buf[8], 1)


class Address(NamedTuple):
    """An address of an interface: its index, the address with its prefix
    (IPv4Interface or IPv6Interface), and whether it is a secondary one."""

    index: int
    interface: Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
    secondary: bool


_IFA_F_SECONDARY = 0x01


def addresses(ipr: IPRoute, family: int = socket.AF_INET,
              index: Optional[int] = None) -> list:
    """[Address] of ``family`` in the namespace, or of interface ``index``
    alone, in the kernel's order."""
    found = []
    only = {} if index is None else {"index": index}
    for msg in ipr.addr("dump", family=family, **only):
        local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
        if local is None or (index is not None and msg["index"] != index):
            continue
        found.append(Address(
            msg["index"], ipaddress.ip_interface(f"{local}/"
                                                 f"{msg['prefixlen']}"),
            bool(msg["flags"] & _IFA_F_SECONDARY)))
    return found


def primary_ipv4(ifname):
    """The first IPv4 address of ifname (an IPv4Address) or None."""
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        found = addresses(ipr, socket.AF_INET, idx[0]) if idx else []
    return found[0].interface.ip if found else None


def source_ipv4(ipr: IPRoute, index: int, target: ipaddress.IPv4Address,
                exclude=()) -> ipaddress.IPv4Address:
    """Interface ``index``'s IPv4 address on ``target``'s subnet (a primary
    one first), never one of ``exclude``; 0.0.0.0 if it has none."""
    candidates = [(a.secondary, a.interface.ip)
                  for a in addresses(ipr, socket.AF_INET, index)
                  if a.interface.ip not in exclude
                  and a.interface.ip != target
                  and target in a.interface.network]
    return min(candidates)[1] if candidates else ipaddress.IPv4Address(0)


def route_to(address):
    """(output interface name, next hop address) of the kernel's route to
    address in this network namespace; (None, address) when none."""
    with IPRoute() as ipr:
        try:
            route = ipr.route("get", dst=str(address))[0]
        except Exception:       # pyroute2 raises NetlinkError: no route
            return None, address
        oif = route.get_attr("RTA_OIF")
        gw = route.get_attr("RTA_GATEWAY")
        links = ipr.get_links(oif) if oif else []
    name = links[0].get_attr("IFLA_IFNAME") if links else None
    return name, ipaddress.ip_address(gw) if gw else address


def multicast_socket(ifname):
    """An IPv6 UDP socket (in this network namespace) to hold multicast
    groups with; None, said in the log, where IPv6 is off."""
    try:
        return socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError as exc:
        log.info("%s: no IPv6 socket (%s): IPv6 VIPs' solicited-node "
                 "groups not joined", ifname, exc.strerror or exc)
        return None


# ---------------------------------------------------------------------------
# Neighbours' MACs

# neighbour states whose MAC is worth using (NUD_* in linux/neighbour.h)
_NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80   # REACHABLE STALE DELAY
#                                                  PROBE PERMANENT
_POLL = 0.02            # s between reads of the neighbour table


def neighbour_table(ipr: IPRoute, index: int,
                    family: int = socket.AF_INET) -> dict:
    """{address: mac bytes} of the usable entries (REACHABLE, STALE, DELAY,
    PROBE, PERMANENT) of interface ``index`` in the kernel's neighbour
    table of ``family`` (AF_INET: ARP, AF_INET6: neighbour discovery)."""
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


def check_wait(timeout, retries=1) -> None:
    """Raises ConfigError unless ``timeout`` is a positive number of
    seconds and ``retries`` an integer >= 1."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not timeout > 0:
        raise ConfigError(f"timeout {timeout!r}: expected a positive number "
                          "of seconds")
    if isinstance(retries, bool) or not isinstance(retries, int) \
            or retries < 1:
        raise ConfigError(f"retries {retries!r}: expected an integer >= 1")


def _address(value) -> Union[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"real server address {value!r}: expected an "
                          "IPv4 or IPv6 address") from None


def neighbour_macs(ifname: str, ips: Iterable[IP], timeout: float = 1.0,
                   retries: int = 3, kernel: bool = True) -> dict:
    """The current MACs of neighbours (real servers, next hops) on
    ``ifname``: ``{ip: mac bytes or None}``, keyed by the items of ``ips``
    as given, IPv4 and IPv6 alike.

    The engine calls it periodically (and when a real server is added).
    Entries of the kernel's neighbour table on that interface in state
    REACHABLE, STALE, DELAY, PROBE or PERMANENT are used as they are (for
    IPv4 only with ``kernel``, the default); the others are asked, all at
    once, ``retries`` times within ``timeout`` seconds in all (twice that
    when both families are asked):

    - IPv4 on the wire: who-has from the interface's MAC and its own IPv4
      address on the target's subnet (0.0.0.0, an ARP probe, if it has
      none), resent to the silent ones;
    - IPv6 by the kernel: an ICMPv6 echo request to each makes it send the
      neighbour solicitation (see _poke()); its table is read again every
      20 ms.

    None means nobody answered: the caller does not schedule that real
    server and logs why.  Raises ConfigError if the interface does not
    exist or on a bad address, timeout or retries; PyfwdError if a socket
    cannot be opened (not root).
    """
    check_wait(timeout, retries)
    wanted = {ip: _address(ip) for ip in ips}
    v4 = {a for a in wanted.values() if a.version == 4}
    v6 = set(wanted.values()) - v4
    known = {}
    with IPRoute() as ipr:
        index = ifindex(ipr, ifname)
        if v4 and kernel:
            known.update(neighbour_table(ipr, index, socket.AF_INET))
        if v6:
            known.update(neighbour_table(ipr, index, socket.AF_INET6))
        senders = {a: source_ipv4(ipr, index, a) for a in v4
                   if a not in known}
    if senders:
        known.update(_ask_arp(ifname, senders, timeout, retries))
    if v6 - known.keys():
        known.update(_ask_kernel(ifname, index, v6 - known.keys(), timeout,
                                 retries))
    return {ip: known.get(addr) for ip, addr in wanted.items()}


def neighbour_mac(ifname: str, ip: IP, timeout: float = 1.0,
                  retries: int = 3, kernel: bool = True) -> Optional[bytes]:
    """The MAC (6 bytes) of the neighbour ``ip`` on ``ifname``, or None if
    nobody answers within ``timeout`` seconds; see neighbour_macs()."""
    return neighbour_macs(ifname, [ip], timeout, retries, kernel)[ip]


def _attempts(timeout: float, retries: int) -> list:
    """When each of ``retries`` attempts ends (time.monotonic()), spread
    evenly over ``timeout`` seconds from now."""
    start = time.monotonic()
    return [start + timeout * k / retries for k in range(1, retries + 1)]


def _ask_arp(ifname: str, senders: dict, timeout: float,
             retries: int) -> dict:
    """Ask who-has for each target of ``senders`` ({target: sender IP}),
    re-asking only the silent ones at each attempt.  Returns {target: mac
    bytes} for those that answered (the first answer wins, as in the
    kernel)."""
    found = {}
    pending = dict(senders)
    with FrameSocket(ifname) as sock:
        for until in _attempts(timeout, retries):
            for target, sender in pending.items():
                sock.send(build_arp(ARPOP_REQUEST, sock.mac, sender,
                                    ZERO_MAC, target))
            for frame in sock.recv_until(until):
                pkt = parse_arp(frame)
                if pkt is not None and pkt.is_reply \
                        and pkt.spa in pending and is_unicast(pkt.sha):
                    found[pkt.spa] = pkt.sha
                    del pending[pkt.spa]
                    if not pending:
                        return found
    return found


def _ask_kernel(ifname: str, index: int, addrs: set, timeout: float,
                retries: int) -> dict:
    """Make the kernel solicit the IPv6 ``addrs`` on ``ifname`` and read
    its neighbour table until they are all there or the attempts are over.
    Returns {address: mac bytes} for those found."""
    found = {}
    missing = set(addrs)
    for until in _attempts(timeout, retries):
        _poke(ifname, index, sorted(missing))
        while missing and time.monotonic() < until:
            time.sleep(_POLL)
            with IPRoute() as ipr:
                table = neighbour_table(ipr, index, socket.AF_INET6)
            found.update({a: m for a, m in table.items() if a in missing})
            missing -= table.keys()
        if not missing:
            break
    return found


def _poke(ifname: str, index: int, addrs) -> None:
    """Make the kernel resolve ``addrs`` on ``ifname``: an ICMPv6 echo
    request to each through a raw socket bound to the interface (the
    kernel sends the NS and fills its neighbour table; the echo reply, if
    any, is dropped with the socket).  Raises PyfwdError if the socket
    cannot be opened (not root)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW,
                             socket.IPPROTO_ICMPV6)
    except OSError as exc:
        raise PyfwdError(f"cannot open an ICMPv6 socket on {ifname}: "
                         f"{exc.strerror or exc} (CAP_NET_RAW is needed)") \
            from exc
    with sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                            ifname.encode())
        except OSError as exc:
            raise PyfwdError(f"interface {ifname!r}: "
                             f"{exc.strerror or exc}") from exc
        # type, code, checksum (the kernel fills it), identifier, sequence
        request = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, 0x7066, 1)
        for addr in addrs:
            try:
                sock.sendto(request, (str(addr), 0, 0, index))
            except OSError:
                pass        # no route, link down: it stays unresolved
