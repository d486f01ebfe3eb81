"""Can the XDP fast path send on these interfaces?  A veth hands what XDP
sends (XDP_TX, or a redirect to it) to its peer's NAPI, which the peer
has only while it runs an XDP program in driver mode (Linux 6.18
veth_xdp_xmit): without one those frames are dropped, or with GRO on at
the peer held until other traffic wakes it.  The fast path would then
blackhole the established flows it takes, so on such a veth it stays off
(dataplane.fastpath's caller, control/startup.py, says why).  A NIC needs
nothing.

    why = refusal([ifindex, ifindex2])    # None: the fast path may run

The peer is found by netlink, in this network namespace or, through its
nsid (IFLA_LINK_NETNSID), in another one (RTM_GETLINK with
IFLA_TARGET_NETNSID, which needs no entering); one that cannot be looked
at counts as one without XDP.  Reads only.
"""

import os
from dataclasses import dataclass
from typing import Optional

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

# IFLA_XDP_ATTACHED as pyroute2 names it -> ours; a driver-mode program
# is what veth needs (a generic one does not give the peer its NAPI).
_MODES = {"xdp": "native", "xdpgeneric": "generic", "xdpoffload": "offload",
          "xdpmulti": "multi"}
NETNS_DIR = "/run/netns"     # where `ip netns` names namespaces


def xdp_mode(msg):
    """The XDP program an RTM_NEWLINK message says its link runs: "native"
    (driver mode, alone or beside others), "generic", "offload", or None
    (none)."""
    xdp = msg.get_attr("IFLA_XDP")
    if xdp is None:
        return None
    if xdp.get_attr("IFLA_XDP_DRV_PROG_ID"):
        return "native"
    return _MODES.get(xdp.get_attr("IFLA_XDP_ATTACHED"))


@dataclass(frozen=True)
class VethPeer:
    """A veth's other end as seen from the balancer's side: our interface,
    the peer's ifindex and nsid (None: this namespace), its name and XDP
    mode (xdp_mode()) when it could be looked at, else why not (unseen)."""

    iface: str
    index: int
    nsid: Optional[int] = None
    name: Optional[str] = None
    xdp: Optional[str] = None
    unseen: str = ""
    netns: Optional[str] = None     # the peer's namespace's name, if named

    @property
    def where(self):
        if self.nsid is None:
            return "this namespace"
        return f"netns {self.netns}" if self.netns else \
            f"netns id {self.nsid}"

    @property
    def ready(self):
        """True if what XDP sends on iface reaches the peer at once."""
        return not self.unseen and self.xdp == "native"

    def why_not(self):
        """Why the fast path cannot send on iface ('' when it can)."""
        if self.ready:
            return ""
        peer = f"{self.name or 'ifindex ' + str(self.index)} ({self.where})"
        if self.unseen:
            has = f"could not be looked at ({self.unseen})"
        elif self.xdp:
            has = f"runs an XDP program in {self.xdp} mode only"
        else:
            has = "runs no XDP program"
        return (f"{self.iface}: its veth peer {peer} {has}; a veth drops "
                "what XDP sends to a peer without one in driver mode")


def nsid_of(ipr, fd):
    """The nsid this namespace gives the one of the open namespace file
    `fd` (RTM_GETNSID, which assigns none), or None."""
    try:
        return (ipr.get_netnsid(fd=fd) or {}).get("nsid")
    except (OSError, NetlinkError):
        return None


def netns_name(ipr, nsid):
    """The `ip netns` name of the namespace this one calls nsid, or None
    (RTM_GETNSID of each named one: reads, assigns nothing)."""
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except OSError:
        return None
    for name in names:
        try:
            fd = os.open(os.path.join(NETNS_DIR, name),
                         os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if nsid_of(ipr, fd) == nsid:
                return name
        finally:
            os.close(fd)
    return None


def _link(ipr, index, nsid=None):
    kw = {} if nsid is None else {"IFLA_IF_NETNSID": nsid}
    return ipr.link("get", index=index, **kw)[0]


def peer_of(ipr, ifindex):
    """VethPeer of ifindex (through the IPRoute ipr), or None when it is
    not a veth."""
    msg = _link(ipr, ifindex)
    info = msg.get_attr("IFLA_LINKINFO")
    if not info or info.get_attr("IFLA_INFO_KIND") != "veth":
        return None
    name = msg.get_attr("IFLA_IFNAME")
    index, nsid = msg.get_attr("IFLA_LINK"), msg.get_attr("IFLA_LINK_NETNSID")
    if not index:
        return VethPeer(name, 0, nsid, unseen="its peer is gone")
    netns = None if nsid is None else netns_name(ipr, nsid)
    try:
        peer = _link(ipr, index, nsid)
    except (OSError, NetlinkError) as exc:
        return VethPeer(name, index, nsid, unseen=str(exc), netns=netns)
    return VethPeer(name, index, nsid, peer.get_attr("IFLA_IFNAME"),
                    xdp_mode(peer), netns=netns)


def refusal(ifindexes):
    """Why the fast path must stay off on these interfaces (the engine's,
    0s ignored), naming each veth whose peer runs no driver-mode XDP
    program; None when it may run."""
    why = []
    with IPRoute() as ipr:
        for ifindex in filter(None, ifindexes):
            try:
                peer = peer_of(ipr, ifindex)
            except (OSError, NetlinkError) as exc:
                why.append(f"ifindex {ifindex}: cannot be looked at ({exc})")
                continue
            if peer is not None and not peer.ready:
                why.append(peer.why_not())
    return "; ".join(why) or None


__all__ = ["VethPeer", "netns_name", "nsid_of", "peer_of", "refusal",
           "xdp_mode"]
