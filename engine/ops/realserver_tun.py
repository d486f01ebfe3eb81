"""Make this machine an L4 TUN real server for a VIP (LVS-TUN, Katran).

In TUN the balancer sends the client's packet, unchanged, inside an outer
IPv4 (IPIP) or IPv6 (IP6IP6) header addressed to the real server, which
may sit on any routed subnet.  The real server takes the outer header off,
owns the VIP (so that its kernel accepts the inner packet and answers from
it, straight to the client), and must not claim the VIP on its own
segment.  Two ways to take the outer header off:

- decap "tunnel" (the classic recipe, the default): the kernel's fallback
  tunnel devices, ``tunl0`` (ipip: any IPv4-in-IPv4 to a local address)
  and ``ip6tnl0`` (ip6tnl: IPv6-in-IPv6), up, holding the VIP (/32,
  /128 nodad).  The inner packet arrives on the tunnel device while the
  route back to the client leaves by the real interface, so strict
  reverse path filtering (rp_filter=1) would drop it: ``tunl0`` gets 0
  and ``all`` at most 2 (loose; the kernel applies the larger of the
  two).  arp_ignore/arp_announce as for DR (realserver.py), as the VIP is
  a local address the real interface would otherwise answer ARP for.
- decap "xdp", for kernels without those devices (CONFIG_NET_IPIP,
  CONFIG_IPV6_TUNNEL unset, as on pyfwd's CI machines): pyfwd's XDP
  program (csrc/bpf/decap.bpf.c, as Katran's decap) on ``iface`` strips
  the outer header, and the VIP sits on ``lo`` exactly as for DR.

setup() is idempotent and returns the lines of what it changed;
teardown() undoes it; status() says what is wrong.  Netlink through
pyroute2, settings through /proc/sys, both in the calling thread's
network namespace.
"""

import errno
import os
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from . import realserver as rs
from . import realserver_changes as change
from ..errors import ConfigError, PyfwdError
from ..neighbours.kernel import addresses, ifindex

DEVICES = {4: ("tunl0", "ipip"), 6: ("ip6tnl0", "ip6tnl")}
DECAPS = ("tunnel", "xdp")
RP_LOOSE = 2


def _rp(ifname):
    return rs._read_conf(ifname, "rp_filter")


def _device(ipr, version):
    """The index of the fallback tunnel device of the family, made if the
    kernel's module has not made it yet; PyfwdError when the kernel has
    no such device."""
    name, kind = DEVICES[version]
    option = "CONFIG_NET_IPIP" if version == 4 else "CONFIG_IPV6_TUNNEL"
    found = ipr.link_lookup(ifname=name)
    if found:
        return found[0]
    try:
        ipr.link("add", ifname=name, kind=kind)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:    # loading the module made it
            raise PyfwdError(
                f"this kernel has no {kind} device for {name} "
                f"({os.strerror(exc.code)}: {option} unset?); use --decap "
                "xdp --iface IF (pyfwd's XDP "
                "decapsulation)") from exc
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise PyfwdError(f"{name} did not appear after adding a {kind} "
                         "device")
    return found[0]


def _tunnel_setup(addr):
    name, _ = DEVICES[addr.version]
    changes = []
    with IPRoute() as ipr:
        index = _device(ipr, addr.version)
        links = rs._links(ipr)
        if addr.version == 4:
            changes += rs._set_arp(links, rs.ARP_IGNORE, rs.ARP_ANNOUNCE)
        if not links[index][1]:
            rs._netlink(ipr.link, "set", index=index, state="up")
            changes.append(change.link(name, "up"))
        fam = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        if not rs._on(addresses(ipr, fam), index, addr):
            extra = {} if addr.version == 4 else {"flags": IFA_F_NODAD}
            rs._netlink(ipr.addr, "add", index=index, address=str(addr),
                        prefixlen=32 if addr.version == 4 else 128, **extra)
            changes.append(change.address(
                "added", f"{addr}/{32 if addr.version == 4 else 128}", name,
                nodad=addr.version == 6, say_nodad=False))
    if addr.version == 4:
        changes += _relax_rp(name)
    return changes


def _relax_rp(name):
    """rp_filter 0 on the tunnel device, at most loose (2) on all."""
    changes = []
    for ifname, want in ((name, 0), ("all", None)):
        old = _rp(ifname)
        new = want if want is not None else (RP_LOOSE if old == 1 else old)
        if old is not None and old != new:
            rs._write_conf(ifname, "rp_filter", new)
            changes.append(change.sysctl(f"net.ipv4.conf.{ifname}.rp_filter",
                                         old, new))
    return changes


def setup(vip, decap="tunnel", iface=None, xdp_mode="auto"):
    """Prepare this network namespace as a TUN real server for vip (see
    the module's docstring).  Returns the lines of what changed ([]:
    nothing needed).  Raises ConfigError for a bad vip, decap or missing
    iface; PyfwdError (DataplaneError) when the kernel refuses."""
    addr = rs._vip(vip)
    if decap not in DECAPS:
        raise ConfigError(f"decap {decap!r}: expected one of "
                          f"{', '.join(DECAPS)}")
    if decap == "tunnel":
        return _tunnel_setup(addr)
    if not iface:
        raise ConfigError("--decap xdp needs --iface: the interface the "
                          "tunnelled packets come in on")
    from ..dataplane import decap as xdp
    changes = rs.setup(addr, dev="lo")
    with IPRoute() as ipr:
        index = ifindex(ipr, iface, "iface")
    prog, name = xdp.attached(index)
    if prog and name != xdp.PROGRAM:
        raise PyfwdError(f"{iface} has XDP program {prog} ({name}) "
                         "attached: pyfwd's decapsulation cannot go there")
    if not prog:
        prog = xdp.attach(index, xdp_mode)
        changes.append(change.xdp("attached", xdp.PROGRAM, iface, prog))
    return changes


def teardown(vip, decap="tunnel", iface=None):
    """Undo setup(): the VIP removed (tunnel: from the tunnel device, which
    stays, down if it holds no other address; xdp: from lo, and the XDP
    program detached from iface); the ARP settings as realserver.setup's
    undo.  The rp_filter values are left (the old ones are not kept)."""
    addr = rs._vip(vip)
    if decap == "xdp":
        changes = rs.setup(addr, undo=True, dev="lo")
        if iface:
            from ..dataplane import decap as xdp
            with IPRoute() as ipr:
                index = ifindex(ipr, iface, "iface")
            prog, name = xdp.attached(index)
            if prog and name == xdp.PROGRAM:
                xdp.detach(index)
                changes.append(change.xdp("detached", name, iface))
        return changes
    name, _ = DEVICES[addr.version]
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=name):
            return []
    changes = rs.setup(addr, undo=True, dev=name)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)[0]
        fam = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        if not [a for a in addresses(ipr, fam) if a.index == index]:
            rs._netlink(ipr.link, "set", index=index, state="down")
            changes.append(change.link(name, "down"))
    return changes


def status(vip, decap="tunnel", iface=None):
    """Is this namespace a working TUN real server for vip?  JSON-ready:
    {"vip", "decap", "dev", "ok", "problems": [text]}."""
    addr = rs._vip(vip)
    problems = []
    if decap == "xdp":
        dev = "lo"
        problems += rs.status(addr, dev="lo")["problems"]
        if not iface:
            problems.append("no --iface: cannot check the XDP "
                            "decapsulation")
        else:
            from ..dataplane import decap as xdp
            with IPRoute() as ipr:
                index = ifindex(ipr, iface, "iface")
            prog, name = xdp.attached(index)
            if name != xdp.PROGRAM:
                problems.append(f"{iface}: no {xdp.PROGRAM} attached "
                                f"({'nothing' if not prog else name})")
        return {"vip": str(addr), "decap": decap, "dev": dev,
                "ok": not problems, "problems": problems}
    dev, kind = DEVICES[addr.version]
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=dev)
        up = found and rs._links(ipr)[found[0]][1]
    if not found:
        problems.append(f"no {dev} ({kind}) device: the kernel cannot "
                        "take the outer header off")
    else:
        if not up:
            problems.append(f"{dev} is down")
        problems += rs.status(addr, dev=dev)["problems"]
        if addr.version == 4:
            rp = max(_rp(dev) or 0, _rp("all") or 0)
            if rp == 1:
                problems.append(f"{dev}: rp_filter is strict (1): the "
                                "client's packets, out of the tunnel, are "
                                "dropped (want 0 or 2)")
    return {"vip": str(addr), "decap": decap, "dev": dev,
            "ok": not problems, "problems": problems}


__all__ = ["DEVICES", "DECAPS", "setup", "teardown", "status"]
