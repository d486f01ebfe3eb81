"""Make this machine a direct-routing real server for a VIP ("solving the
ARP problem").

In DR the balancer hands a real server frames whose destination IP is the
VIP, so the real server must own the VIP, but without claiming it on the
wire, or the clients' ARP for the VIP would reach it instead of the
balancer.  The classic recipe (LVS-DR), which ``setup()`` applies to the
current network namespace:

- the VIP as a /32 on ``lo`` (or a dummy device), so the kernel accepts
  the frames and answers from the VIP;
- ``arp_ignore=1``: answer ARP only for addresses configured on the
  interface the request came in on (the VIP is on ``lo``, so never);
- ``arp_announce=2``: in the real server's own ARP requests, use the best
  local address for the target as sender IP, never the VIP.

The kernel applies max(conf.all, conf.<interface>) for both settings, so
``setup()`` writes ``conf.all`` and the same on every non-loopback
interface that is up (a higher per-interface value, such as arp_ignore=3,
would otherwise win over ``all``).  Addresses go through netlink
(pyroute2), settings through /proc/sys, both as seen by the calling thread.

An IPv6 VIP needs only the address: the VIP/128 on ``lo`` with
``IFA_F_NODAD``.  IPv6 has no arp_ignore because Linux needs none: it
answers a neighbour solicitation only for an address of the interface the
solicitation came in on (ndisc_recv_ns looks the target up strictly on
that device), so a VIP on ``lo`` is never claimed on ``eth0``; and its own
solicitations carry a source address of the outgoing interface, never the
VIP (ndisc_solicit uses the packet's source only if it is on that
interface).  Checked in a lab (see tests/e2e/test_ipv6_dr.py).  What
breaks it is the VIP on a real interface (that interface answers and
defends it with DAD): ``status()`` says so.
"""

import ipaddress
import os
import socket
from typing import Optional

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from . import realserver_boot as boot
from . import realserver_changes as change
from ..errors import ConfigError, PyfwdError
from ..neighbours.kernel import addresses, ifindex

__all__ = ["ARP_IGNORE", "ARP_ANNOUNCE", "setup", "status", "persist",
           "unpersist"]

ARP_IGNORE = 1          # what setup() writes
ARP_ANNOUNCE = 2
_IGNORE_OK = boot.ARP_GOOD["arp_ignore"]
_ANNOUNCE_OK = boot.ARP_GOOD["arp_announce"]

_IFF_UP = 0x1
_LOOPBACK4 = ipaddress.IPv4Network("127.0.0.0/8")


# ---------------------------------------------------------------------------
# helpers (current network namespace)


def _vip(vip):
    """An IPv4Address or IPv6Address; ConfigError unless unicast."""
    try:
        addr = ipaddress.ip_address(vip if not isinstance(vip, str)
                                    else vip.strip())
    except ValueError:
        raise ConfigError(f"vip {vip!r}: expected an IPv4 or IPv6 "
                          "address") from None
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback \
            or addr == ipaddress.IPv4Address("255.255.255.255") \
            or (addr.version == 6 and addr.is_link_local):
        raise ConfigError(f"vip {addr}: expected a unicast address (not "
                          "multicast, broadcast, loopback, link-local or "
                          "unspecified)")
    return addr


def _conf_path(ifname: str, key: str) -> str:
    # a path, not a dotted key: interface names may contain dots (eth0.100)
    return f"/proc/sys/net/ipv4/conf/{ifname}/{key}"


def _read_conf(ifname: str, key: str) -> Optional[int]:
    try:
        with open(_conf_path(ifname, key)) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        return None                     # the interface is gone (or no IPv4)


def _write_conf(ifname: str, key: str, value: int) -> None:
    try:
        with open(_conf_path(ifname, key), "w") as f:
            f.write(f"{value}\n")
    except OSError as exc:
        raise PyfwdError(f"cannot set net.ipv4.conf.{ifname}.{key}={value}: "
                         f"{exc.strerror or exc} (root is needed)") from exc


def _links(ipr: IPRoute) -> dict:
    """{index: (ifname, is_up, is_loopback)} of the namespace's links."""
    return {msg["index"]: (msg.get("IFLA_IFNAME"),
                           bool(msg["flags"] & _IFF_UP),
                           msg["ifi_type"] == 772)      # ARPHRD_LOOPBACK
            for msg in ipr.link("dump")}


def _arp_interfaces(links: dict) -> list:
    """Where the ARP settings matter: ``all`` and every non-loopback
    interface that is up."""
    return ["all"] + sorted(name for name, up, loopback in links.values()
                            if up and not loopback)


def _dr_vips(addrs: list, index: int, vip) -> list:
    """The DR VIPs on device ``index`` other than ``vip``: its IPv4
    addresses (of ``addrs``, [kernel.Address]) outside 127.0.0.0/8."""
    return [a.interface.ip for a in addrs
            if a.index == index and a.interface.ip != vip
            and a.interface.ip not in _LOOPBACK4]


def _on(addrs: list, index: int, vip) -> list:
    """The IPv4Interface/IPv6Interface of ``vip`` on device ``index``."""
    return [a.interface for a in addrs
            if a.index == index and a.interface.ip == vip]


# ---------------------------------------------------------------------------
# the API


def setup(vip, undo: bool = False, dev: str = "lo") -> list:
    """Configure the current network namespace as a DR real server for
    ``vip`` (IPv4 or IPv6), or undo it.  Returns what was changed, one line
    each, for the CLI to print (realserver_changes.Change: the line, with
    its fields for --json); ``[]`` means nothing needed changing (it is
    idempotent).

    Setup, in this order (the VIP never sits on ``dev`` while ARP would
    still be answered for it): arp_ignore=1 unless already 1, 2 or 8, and
    arp_announce=2, on conf.all and every non-loopback interface that is
    up; ``dev`` set up if it is down; ``vip``/32 added to ``dev`` unless
    ``vip`` is already there.

    Undo: ``vip`` removed from ``dev`` (whatever its prefix length), then,
    only if no other DR VIP remains on ``dev`` (an IPv4 address outside
    127.0.0.0/8), arp_ignore and arp_announce put back to 0, the kernel's
    default, on conf.all and the interfaces that are up.  The values from
    before setup() are not remembered: an administrator's own non-zero
    setting is reset too.

    An IPv6 ``vip``: ``dev`` set up if down and ``vip``/128 added with
    nodad (no duplicate address detection: nothing on the wire), no
    setting touched (see the module's docstring); undo removes it.

    Raises ConfigError for a bad ``vip`` or a missing ``dev``; PyfwdError
    if the kernel refuses a change (e.g. not root, IPv6 disabled).
    """
    addr = _vip(vip)
    if addr.version == 6:
        return _setup6(addr, undo, dev)
    changes = []
    with IPRoute() as ipr:
        links = _links(ipr)
        index = ifindex(ipr, dev, "dev")
        addrs = addresses(ipr, socket.AF_INET)
        present = _on(addrs, index, addr)
        if not undo:
            changes += _set_arp(links, ARP_IGNORE, ARP_ANNOUNCE)
            if not links[index][1]:
                _netlink(ipr.link, "set", index=index, state="up")
                changes.append(change.link(dev, "up"))
            if not present:
                _netlink(ipr.addr, "add", index=index, address=str(addr),
                         prefixlen=32)
                changes.append(change.address("added", f"{addr}/32", dev))
        else:
            for a in present:
                _netlink(ipr.addr, "del", index=index, address=str(a.ip),
                         prefixlen=a.network.prefixlen)
                changes.append(change.address("removed", a, dev))
            if not _dr_vips(addrs, index, addr):
                changes += _set_arp(links, 0, 0)
    return changes


def _setup6(addr, undo: bool, dev: str) -> list:
    changes = []
    with IPRoute() as ipr:
        links = _links(ipr)
        index = ifindex(ipr, dev, "dev")
        present = _on(addresses(ipr, socket.AF_INET6), index, addr)
        if undo:
            for a in present:
                _netlink(ipr.addr, "del", index=index, address=str(a.ip),
                         prefixlen=a.network.prefixlen)
                changes.append(change.address("removed", a, dev))
            return changes
        if not links[index][1]:
            _netlink(ipr.link, "set", index=index, state="up")
            changes.append(change.link(dev, "up"))
        if not present:
            _netlink(ipr.addr, "add", index=index, address=str(addr),
                     prefixlen=128, flags=IFA_F_NODAD)
            changes.append(change.address("added", f"{addr}/128", dev,
                                          nodad=True))
    return changes


def _netlink(method, *args, **kwargs):
    try:
        return method(*args, **kwargs)
    except NetlinkError as exc:
        raise PyfwdError(f"netlink {args[0]} {kwargs}: "
                         f"{os.strerror(exc.code)}") from exc


def _set_arp(links: dict, ignore: int, announce: int) -> list:
    """Write arp_ignore/arp_announce where they matter; the lines changed.
    Setting (non-zero values): leave arp_ignore alone if already good.
    Resetting (0): reset whatever is non-zero."""
    changes = []
    for ifname in _arp_interfaces(links):
        for key, value, good in (("arp_ignore", ignore, _IGNORE_OK),
                                 ("arp_announce", announce, _ANNOUNCE_OK)):
            old = _read_conf(ifname, key)
            if old is None or old == value or (value and old in good):
                continue
            _write_conf(ifname, key, value)
            changes.append(change.sysctl(f"net.ipv4.conf.{ifname}.{key}",
                                         old, value))
    return changes


def persist(vip, dev: str = "lo", *, root: str = "/", command) -> list:
    """Write under ``root`` what a reboot needs to set this host up again
    for ``vip`` on ``dev`` as setup() did (realserver_boot.py: a sysctl.d
    file with this namespace's good ARP values, or setup()'s, on all and
    default; an enabled oneshot unit running ``command`` realserver
    setup).  Call it after setup().
    Returns the lines of what it wrote; raises like setup() and PyfwdError
    when a file cannot be written."""
    addr = _vip(vip)
    arp = {"arp_ignore": ARP_IGNORE, "arp_announce": ARP_ANNOUNCE}
    if addr.version == 4 and _read_conf("all", "arp_ignore") in _IGNORE_OK:
        arp["arp_ignore"] = _read_conf("all", "arp_ignore")
    return boot.persist(addr, dev, root=root, command=command, arp=arp)


def unpersist(vip, root: str = "/") -> list:
    """Remove what persist() wrote for ``vip`` (the sysctl file only with
    the last VIP's unit); the lines of what it removed."""
    return boot.unpersist(_vip(vip), root=root)


def status(vip, dev: str = "lo", root: "str | None" = None) -> dict:
    """Is the current network namespace a correct DR real server for
    ``vip``?  For diagnostics, JSON-ready:

    ``{"vip", "dev", "vip_on_dev": bool, "vip_elsewhere": [ifname, ...]
    (a VIP on a non-loopback interface answers ARP whatever the settings),
    "arp": {ifname: {"arp_ignore": n, "arp_announce": n}} for "all" and the
    non-loopback interfaces that are up, "effective": the same with
    max(all, ifname) as the kernel applies, "ok": bool, "problems": [text],
    "persisted": [text] (what a reboot would lack, see
    realserver_boot.persisted_problems; only with ``root``, else [])}``:
    "ok" is False when either list has a problem.

    An IPv6 ``vip`` has no ARP settings: "arp" and "effective" are empty,
    and only where the VIP is matters (on a non-loopback interface the
    kernel answers neighbour solicitations for it).

    Raises ConfigError like setup().
    """
    addr = _vip(vip)
    with IPRoute() as ipr:
        links = _links(ipr)
        index = ifindex(ipr, dev, "dev")
        addrs = addresses(ipr, socket.AF_INET if addr.version == 4
                          else socket.AF_INET6)
    on_dev = bool(_on(addrs, index, addr))
    elsewhere = sorted({links[a.index][0] for a in addrs
                        if a.interface.ip == addr and a.index != index
                        and not links[a.index][2]})
    arp = {ifname: {key: _read_conf(ifname, key)
                    for key in ("arp_ignore", "arp_announce")}
           for ifname in _arp_interfaces(links)}
    effective = {ifname: {key: max(value or 0, arp["all"][key] or 0)
                          for key, value in keys.items()}
                 for ifname, keys in arp.items() if ifname != "all"}
    problems = []
    if not on_dev:
        problems.append(f"{addr} is not on {dev}")
    for ifname in elsewhere:
        problems.append(f"{addr} is also on {ifname}: that interface "
                        f"answers {'ARP' if addr.version == 4 else 'NDP'} "
                        "for it")
    persisted = [] if root is None else \
        boot.persisted_problems(addr, dev, root=root)
    if addr.version == 6:
        return {"vip": str(addr), "dev": dev, "vip_on_dev": on_dev,
                "vip_elsewhere": elsewhere, "arp": {}, "effective": {},
                "ok": not problems and not persisted, "problems": problems,
                "persisted": persisted}
    # with no interface up, judge conf.all: it applies to every one later
    for ifname, keys in (effective or {"all": arp["all"]}).items():
        if keys["arp_ignore"] not in _IGNORE_OK:
            problems.append(f"{ifname}: arp_ignore is {keys['arp_ignore']} "
                            f"(want {ARP_IGNORE}): it answers ARP for the "
                            "VIP")
        if keys["arp_announce"] not in _ANNOUNCE_OK:
            problems.append(f"{ifname}: arp_announce is "
                            f"{keys['arp_announce']} (want {ARP_ANNOUNCE}): "
                            "its ARP requests may carry the VIP")
    return {"vip": str(addr), "dev": dev, "vip_on_dev": on_dev,
            "vip_elsewhere": elsewhere, "arp": arp, "effective": effective,
            "ok": not problems and not persisted, "problems": problems,
            "persisted": persisted}
