"""The interface checks of `pyfwd doctor --iface` and of `pyfwd start`: pure
functions over what was read (ifread.py reads it), each returning one
Finding that says what breaks and the fix.

Nothing here touches the machine, so every case is tested without root
(tests/unit/test_doctor_checks.py).
"""

from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..model import served_queues
from .findings import Finding, ok

# The kernel reserves this much at the head of every XDP buffer, an AF_XDP
# frame included (XDP_PACKET_HEADROOM, linux/bpf.h).
XDP_PACKET_HEADROOM = 256
# Ethernet header and one VLAN tag (the core takes one) around the MTU.
L2_OVERHEAD = 14 + 4

# ethtool features that hand TCP/UDP checksums to the device (a veth
# leaves them unfinished for its peer).
TX_CSUM = ("tx-checksum-ipv4", "tx-checksum-ipv6", "tx-checksum-ip-generic")
# ethtool features that merge frames before XDP sees them, with the name
# `ethtool -K` takes.
MERGING = {"rx-lro": "lro", "rx-gro-hw": "rx-gro-hw"}
# Modes whose replies come back through the balancer.
TRACKED = frozenset({"nat", "snat"})
RP_STRICT = 1


@dataclass(frozen=True)
class Peer:
    """A veth's other end: its ifindex, where it is ("this namespace",
    "netns NAME", "the initial netns", "the netns of pid N (comm)", "netns
    id N" when not found), and when we could look at it, its name, ethtool
    features and XDP program (dataplane.vethpeer.xdp_mode: "native",
    "generic", ... or None); else why not (unseen)."""

    index: int
    where: str
    name: Optional[str] = None
    features: Optional[Mapping[str, bool]] = None
    unseen: str = ""
    xdp: Optional[str] = None


@dataclass(frozen=True)
class Link:
    """One interface as read: name, link kind (IFLA_INFO_KIND: "veth", or
    None for a NIC), MTU, RX queues in use, ethtool features (name: on),
    net.ipv4.conf.NAME.rp_filter (None: unreadable), and a veth's peer."""

    name: str
    kind: Optional[str]
    mtu: int
    rx_queues: int
    features: Mapping[str, bool] = field(default_factory=dict)
    rp_filter: Optional[int] = None
    peer: Optional[Peer] = None


@dataclass(frozen=True)
class Host:
    """The host's facts the checks need: net.ipv4.conf.all.rp_filter,
    bpffs mounted, tcx known to the kernel and how that was found, AF_XDP
    sockets made and if not, why (None: could not tell)."""

    rp_filter_all: Optional[int] = None
    bpffs: bool = True
    tcx: Optional[bool] = True
    tcx_how: str = ""
    af_xdp: Optional[bool] = True
    af_xdp_error: str = ""


@dataclass(frozen=True)
class Plan:
    """What the engine will run, as far as it is known: the modes (empty:
    not known, any), the backend, the RX queues asked for (None: the
    engine's default), the inside interface of two-arm NAT, the AF_XDP
    frame size (dataplane.io.FRAME_SIZE; None: the C extension is not
    there to say), whether the XDP fast path is asked for (None: not
    known)."""

    modes: frozenset = frozenset()
    backend: str = "auto"
    queues: Optional[int] = None
    inside: Optional[str] = None
    frame_size: Optional[int] = None
    fastpath: Optional[bool] = None

    def may(self, modes):
        """True if any of `modes` may run (all may when none is known)."""
        return not self.modes or bool(self.modes & set(modes))

    def replies_on(self, link):
        """True if NAT/SNAT replies may come in on `link` (the inside
        interface, or the only one)."""
        return self.may(TRACKED) and (self.inside is None or
                                      link.name == self.inside)


def _on(where):
    return "on this host" if where == "this namespace" else f"in {where}"


def checksums(link):
    """A veth whose peer keeps tx checksum offload on hands over TCP/UDP
    frames whose checksum holds only the pseudo-header sum: the data plane
    completes them (counted csum_completed), at a cost."""
    if link.kind != "veth":
        return ok("checksums", link.name,
                  "not a veth: frames arrive with finished checksums")
    peer = link.peer
    if peer is None or peer.features is None:
        where = "unknown" if peer is None else \
            f"{peer.name or 'ifindex ' + str(peer.index)} in {peer.where}"
        why = f" ({peer.unseen})" if peer and peer.unseen else ""
        return Finding(
            "checksums", link.name, "note",
            f"a veth whose peer ({where}) could not be looked at{why}: if "
            "it keeps tx checksum offload on (the default), frames from it "
            "arrive with unfinished checksums; pyfwd completes them "
            "(csum_completed)",
            "`ethtool -K <peer> tx off` on the peer's host avoids the cost")
    if not any(peer.features.get(k) for k in TX_CSUM):
        return ok("checksums", link.name,
                  f"veth peer {peer.name} ({peer.where}) finishes its "
                  "checksums (tx checksum offload off)")
    return Finding(
        "checksums", link.name, "note",
        f"frames from {peer.name} ({peer.where}) arrive with unfinished "
        "checksums; pyfwd completes them (csum_completed)",
        f"`ethtool -K {peer.name} tx off` {_on(peer.where)} avoids the "
        "cost")


def offloads(link):
    """LRO or hardware GRO merge frames before XDP: drivers refuse native
    XDP with them on."""
    on = [f for f in MERGING if link.features.get(f)]
    if not on:
        return ok("offloads", link.name, "LRO and hardware GRO off")
    names = " ".join(f"{MERGING[f]} off" for f in on)
    return Finding(
        "offloads", link.name, "degrades",
        f"{' and '.join(on)} on: the NIC merges frames before XDP sees "
        "them, and drivers refuse native XDP then: pyfwd falls back to "
        "generic XDP (slower), or the kernel turns them off when the "
        "program attaches",
        f"`ethtool -K {link.name} {names}`")


def fastpath(link, plan):
    """The XDP fast path sends on a veth only when the peer runs an XDP
    program in driver mode: a veth drops what XDP sends to a peer without
    one (dataplane.vethpeer), so the engine keeps the fast path off there.
    A warning when the fast path is asked for or may be (doctor), nothing
    to do when it is off."""
    if plan.fastpath is False or plan.backend == "afpacket":
        return ok("fastpath", link.name, "the XDP fast path is not asked "
                  "for: nothing needed")
    if link.kind != "veth":
        return ok("fastpath", link.name, "not a veth: the XDP fast path "
                  "needs nothing of the other end")
    peer = link.peer
    off = (f"`pyfwd start --fastpath xdp` keeps the XDP fast path off on "
           f"{link.name} (established flows stay on AF_XDP): a veth drops "
           "what XDP sends to a peer without an XDP program in driver mode")
    if peer is None or peer.name is None:
        where = "unknown" if peer is None else \
            f"ifindex {peer.index} in {peer.where}"
        why = f" ({peer.unseen})" if peer and peer.unseen else ""
        return Finding("fastpath", link.name, "degrades",
                       f"a veth whose peer ({where}) could not be looked "
                       f"at{why}: {off}",
                       "run `pyfwd doctor` as root, then attach an XDP "
                       "program in driver mode to the peer")
    if peer.xdp == "native":
        return ok("fastpath", link.name,
                  f"veth peer {peer.name} ({peer.where}) runs an XDP "
                  "program in driver mode: the XDP fast path can send on "
                  f"{link.name}")
    has = f"runs an XDP program in {peer.xdp} mode only" if peer.xdp \
        else "runs no XDP program"
    return Finding(
        "fastpath", link.name, "degrades",
        f"veth peer {peer.name} ({peer.where}) {has}: {off}",
        f"attach an XDP program in driver mode to {peer.name} "
        f"{_on(peer.where)} (one that passes everything will do: `ip link "
        f"set dev {peer.name} xdpdrv obj PROG.o sec xdp`), then start the "
        "engine; or run without the fast path")


def mtu_max(frame_size):
    """(the longest frame an AF_XDP frame of frame_size holds, the largest
    MTU whose frames fit, with Ethernet and a VLAN tag)."""
    room = frame_size - XDP_PACKET_HEADROOM
    return room, room - L2_OVERHEAD


def mtu(link, plan):
    """An AF_XDP frame holds the frame size less the XDP headroom: a longer
    frame is dropped before the engine sees it."""
    if plan.backend == "afpacket":
        return ok("mtu", link.name, f"MTU {link.mtu}: the raw-socket "
                  "backend has no AF_XDP frame limit")
    if plan.frame_size is None:
        return ok("mtu", link.name, f"MTU {link.mtu}: not checked (the C "
                  "extension that sets the AF_XDP frame size is missing)")
    room, most = mtu_max(plan.frame_size)
    if link.mtu <= most:
        return ok("mtu", link.name, f"MTU {link.mtu} fits an AF_XDP frame "
                  f"(MTU {most} at most)")
    return Finding(
        "mtu", link.name, "blocks",
        f"MTU {link.mtu}: an AF_XDP frame holds {room} bytes "
        f"({plan.frame_size} less {XDP_PACKET_HEADROOM} of XDP headroom), "
        f"enough for an MTU of {most} with Ethernet and a VLAN tag: longer "
        "frames are dropped (full-size TCP segments never get through); "
        "many drivers also refuse native XDP at this MTU",
        f"`ip link set dev {link.name} mtu {most}` (or less), on the "
        "segment's other hosts too")


def rp_filter(link, host, plan):
    """rp_filter 1 (strict) drops what comes in on an interface from a
    source the kernel would route out of another one.  The effective
    value is the larger of all's and the interface's."""
    values = [v for v in (host.rp_filter_all, link.rp_filter)
              if v is not None]
    if not values:
        return ok("rp_filter", link.name, "not readable: not checked")
    effective = max(values)
    said = (f"rp_filter {effective} (the larger of all's "
            f"{host.rp_filter_all} and {link.name}'s {link.rp_filter})")
    if effective != RP_STRICT:
        return ok("rp_filter", link.name, said)
    if not plan.replies_on(link) and not plan.may({"l7"}):
        return ok("rp_filter", link.name, said + ": strict, but no NAT "
                  f"reply comes in on {link.name}")
    sysctl = link.name.replace(".", "/")
    return Finding(
        "rp_filter", link.name, "degrades",
        f"{said}: strict, the kernel drops what comes in on {link.name} "
        "from a source it routes out of another interface. The data "
        "plane's own frames pass before that check; health checks' "
        "answers, L7 (HAProxy) traffic and frames on unserved RX queues do "
        "not. It matters on asymmetric paths: NAT replies or clients "
        f"coming in on {link.name} while the route back leaves by another "
        "interface",
        f"`sysctl -w net.ipv4.conf.{sysctl}.rp_filter=2` (loose; the "
        "larger value counts)")


def queues(link, plan):
    """RX queues the engine does not serve: frames the NIC hashes there
    go to the kernel, which does not forward them to a real server.
    Which queues are served: model.served_queues (all of them unless
    --queues says fewer; NAT and SNAT too: frames of a flow another
    queue's worker owns are handed to it)."""
    rxq = link.rx_queues
    served = served_queues(plan.queues, rxq)
    channels = (f"`ethtool -L {link.name} combined {served}` (or rx "
                f"{served}, as the driver counts them)")
    if served < rxq:
        return Finding(
            "queues", link.name, "blocks",
            f"{rxq} RX queues, the engine serves {served} (--queues): "
            f"frames the NIC hashes to the other {rxq - served} go to the "
            "kernel, and those flows are not forwarded", channels)
    if rxq > 1 and plan.may(TRACKED):
        return ok("queues", link.name,
                  f"{rxq} RX queues, all served; NAT and SNAT frames that "
                  "come in on another queue than their flow's are handed "
                  "to its worker (handoff_out, handoff_in)")
    return ok("queues", link.name,
              f"{rxq} RX queue{'s' if rxq > 1 else ''}, all served")


def af_xdp(host):
    """AF_XDP sockets, or the raw-socket backend (slower) in their place."""
    if host.af_xdp:
        return ok("AF_XDP sockets", "host", "the kernel creates them")
    if host.af_xdp is None:
        return Finding("AF_XDP sockets", "host", "note",
                       f"not checked ({host.af_xdp_error})",
                       "run `pyfwd doctor` as root")
    return Finding(
        "AF_XDP sockets", "host", "degrades",
        f"the kernel makes none ({host.af_xdp_error}): pyfwd runs on raw "
        "sockets instead (--backend auto), slower",
        "a kernel with CONFIG_XDP_SOCKETS")


def bpffs(host):
    """libxdp pins its dispatcher in bpffs."""
    if host.bpffs:
        return ok("bpffs", "host", "mounted at /sys/fs/bpf")
    return Finding(
        "bpffs", "host", "note",
        "not mounted: libxdp cannot pin its dispatcher, so pyfwd's XDP "
        "program runs alone on the interface (no other XDP program can "
        "share it) and libxdp prints 'No bpffs found'",
        "`mount -t bpf bpf /sys/fs/bpf`")


def tcx(host, plan):
    """The raw-socket backend attaches its tc program with tcx (Linux
    6.6): without it that backend does not start."""
    how = f" ({host.tcx_how})" if host.tcx_how else ""
    if host.tcx:
        return ok("tcx", "host", f"the kernel has tcx{how}")
    if plan.backend == "xdp":
        return ok("tcx", "host", "AF_XDP asked for: tcx not needed")
    if host.tcx is None:
        return Finding(
            "tcx", "host", "note",
            f"could not tell whether the kernel has tcx{how}: the "
            "raw-socket backend needs it",
            "run `pyfwd doctor` as root to probe it")
    afp_only = plan.backend == "afpacket" or host.af_xdp is False
    return Finding(
        "tcx", "host", "blocks" if afp_only else "note",
        f"the kernel has no tcx{how}: the raw-socket backend, "
        + ("the only one here, " if afp_only else
           "pyfwd's fallback where AF_XDP fails, ")
        + "cannot attach its tc program and does not start",
        "Linux 6.6 or newer" + ("" if afp_only else
                                ", or keep to AF_XDP (--backend xdp)"))


def arp(subject, vip, answers):
    """Any host but the balancer that answers ARP for the VIP takes its
    traffic away (the ARP problem).  answers: neighbours.check.ArpAnswer
    values."""
    others = [a.mac for a in answers if not a.is_balancer]
    if not others:
        return ok("arp", subject, f"no other host answers ARP for {vip}")
    return Finding(
        "arp", subject, "blocks",
        f"{', '.join(others)} answer{'s' if len(others) == 1 else ''} ARP "
        f"for {vip}: that host takes the VIP's traffic away from the "
        "balancer (the ARP problem)",
        f"`pyfwd realserver setup --vip {vip}` on it (the VIP on lo, "
        "arp_ignore=1, arp_announce=2)")


def link_checks(link, host, plan):
    """Every check of one interface, in order."""
    return [checksums(link), offloads(link), mtu(link, plan),
            rp_filter(link, host, plan), queues(link, plan),
            fastpath(link, plan)]


def host_checks(host, plan):
    """The host's checks that `pyfwd start` runs too."""
    return [af_xdp(host), bpffs(host), tcx(host, plan)]
