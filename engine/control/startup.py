"""What Engine.start() opens, and the checks before it: the interfaces,
the data-plane backend (AF_XDP, else raw sockets), the punt answering's
sockets, SNAT's source address and how many queues to serve.

    ifindexes, mac, mac2, rxq = interfaces("eth0", None)
    xsk, info = open_backend("auto", core, ifindex, 0, queues, options)
"""

import dataclasses
import errno
import ipaddress
import logging

from . import services as svcs
from .config import check_ifaces
from .l7.conflicts import check_shared_reals
from .punts import Groups, Punts
from ..dataplane.core import Core
from ..dataplane import fastpath, vethpeer
from ..dataplane.io import Afp, Xsk
from ..dataplane.tables import check_limits
from ..errors import ConfigError, DataplaneError
from ..model import served_queues
from ..neighbours.framesocket import FrameSocket
from ..neighbours.kernel import interface, multicast_socket, primary_ipv4

log = logging.getLogger("pyfwd")

BACKENDS = ("auto", "xdp", "afpacket")
# Flow slots.  A table turns new flows away from about 85% full (two
# windows of 16 slots): 2M slots hold ~1.8M DR flows (144 MiB), 4M slots
# ~1.7M NAT/SNAT flows (288 MiB).  DR: FLOWS_DR per queue.  NAT/SNAT:
# FLOWS_TRACKED in all, split between the queues (a flow lives in its
# owner's table only), FLOWS_TRACKED_MIN per queue at least.
FLOWS_DR = 1 << 21
FLOWS_TRACKED = 1 << 22
FLOWS_TRACKED_MIN = 1 << 20


def interfaces(iface, inside_iface):
    """([ifindex, inside ifindex], MAC, inside MAC or None, the RX queues
    both have) of the engine's interfaces."""
    ifindex, mac, rxq = interface(iface)
    if not inside_iface:
        return [ifindex], mac, None, rxq
    ifindex2, mac2, rxq2 = interface(inside_iface)
    return [ifindex, ifindex2], mac, mac2, min(rxq, rxq2)


def check_options(iface, inside_iface, backend, services):
    """ConfigError for an engine that cannot be: an unknown backend, the
    inside interface the same as the outside one, a VIP given twice, more
    than its core's tables hold."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: expected one of "
                          f"{', '.join(BACKENDS)}")
    check_ifaces(iface, inside_iface)
    vips = [s.vip for s in services]
    if len(set(vips)) != len(vips):
        dup = next(v for v in vips if vips.count(v) > 1)
        raise ConfigError(f"vip {dup}: configured twice")
    check_limits(services)
    check_shared_reals(services)


def queue_count(asked, iface, rxq):
    """How many queues to serve: `asked` (None: every RX queue) checked
    against iface's `rxq` RX queues.  One worker each, whatever the modes:
    NAT/SNAT frames that come in on another queue than their flow's owner
    are handed to it.  ConfigError when it cannot be."""
    queues = served_queues(asked, rxq)
    if not 1 <= queues <= rxq:
        raise ConfigError(f"queues {queues}: {iface} has {rxq} RX queue(s)")
    return queues


def log_attached(info, ifaces, services, snat, busy_poll):
    """Say what start() attached and serves."""
    if info.backend == "afpacket":
        log.info("%s: raw-socket backend attached (AF_PACKET TPACKET_V3 "
                 "rings; a tc program keeps the engine's frames from the "
                 "kernel)", "+".join(ifaces))
    else:
        log.info("%s: XDP program %d attached in %s mode, %d AF_XDP "
                 "socket(s) in %s mode, busy polling %s", "+".join(ifaces),
                 info.prog_id, info.xdp_mode, info.queues, info.copy_mode,
                 f"on ({busy_poll} µs)" if info.busy_poll else "off")
    for s in services:
        log.info("vip %s (%s, %s): %s", s.vip, s.mode, s.scheduler,
                 ", ".join(str(r) for r in s.reals) or "no real server")
    if snat:
        log.info("snat: from %s, ports %d-%d", *snat)


def open_punts(iface, ifindex, core, mac, ha, services, limits):
    """Punts answering through a packet socket on iface, holding the IPv6
    VIPs' groups (when IPv6 is on), for the L4 VIPs of services, within
    limits (NeighbourLimits)."""
    sock = FrameSocket(iface, ethertype=0)     # sends only
    mc_sock = multicast_socket(iface)
    vips4, vips6 = svcs.vip_addresses(services)
    return Punts(core, sock, mac, ha, vips4=vips4, vips6=vips6,
                 limits=limits,
                 groups=Groups(mc_sock, ifindex, iface) if mc_sock else None)


def flows_per_queue(queues, tracked):
    """Flow slots per queue by default (see FLOWS_DR, FLOWS_TRACKED)."""
    if not tracked:
        return FLOWS_DR
    return max(FLOWS_TRACKED // queues, FLOWS_TRACKED_MIN)


def open_core(mac, mac2, queues, services, options):
    """The C core for `queues` workers; options: flows (slots per queue;
    None: flows_per_queue, tracked when some VIP of services is NAT or
    SNAT), timeouts, new_flows_per_second."""
    tracked = any(s.mode in ("nat", "snat") for s in services)
    flows = options["flows"] or flows_per_queue(queues, tracked)
    return Core(mac=mac, mac2=mac2, workers=queues, flows=flows,
                timeouts=options["timeouts"],
                new_flows_per_second=options["new_flows_per_second"])


def open_backend(backend, core, ifindex, ifindex2, queues, options):
    """AF_XDP, or the raw-socket backend where AF_XDP does not work
    (backend "auto"), or the one asked for: (backend, its XskInfo), opened.
    options: xdp_mode, copy_mode, busy_poll, rings (an XskRings or None),
    poll (dataplane.io.POLL_MODES), fastpath ("xdp": the XDP fast path on,
    which needs AF_XDP; kept off, said in the XskInfo and logged, on a veth
    whose peer runs no XDP program: dataplane.vethpeer)."""
    fast = options.get("fastpath", "off") == "xdp"
    if fast and backend == "afpacket":
        raise ConfigError("fastpath xdp: needs the AF_XDP backend (its XDP "
                          "program), not afpacket")
    if backend in ("auto", "xdp"):
        xsk = Xsk(core)
        try:
            info = xsk.open(ifindex, queues=queues,
                            xdp_mode=options["xdp_mode"],
                            copy_mode=options["copy_mode"],
                            busy_poll_usecs=options["busy_poll"],
                            ifindex2=ifindex2, rings=options["rings"],
                            poll=options["poll"])
            if fast:
                info = _enable_fastpath(xsk, info, (ifindex, ifindex2))
            return xsk, info
        except DataplaneError as exc:
            # Busy means someone's XDP program is there: raw sockets
            # beside it would not see what it steers away.
            if backend == "xdp" or fast or \
                    exc.errno in (errno.EBUSY, errno.EEXIST):
                raise
            log.warning("AF_XDP does not work here (%s): using the "
                        "raw-socket backend", exc)
    afp = Afp(core)
    return afp, afp.open(ifindex, ifindex2)


def _enable_fastpath(xsk, info, ifindexes):
    """The XDP fast path on for an open Xsk (closed again if it fails),
    unless an interface is a veth whose peer would drop what XDP sends
    (vethpeer.refusal): then off, with a warning.  The XskInfo saying
    which."""
    try:
        why = vethpeer.refusal(ifindexes)
    except OSError as exc:     # netlink itself: keep off, and say so
        why = f"the interfaces' veth peers cannot be looked at ({exc})"
    if why:
        log.warning("XDP fast path refused, established flows stay on "
                    "AF_XDP: %s. Attach an XDP program in driver mode to "
                    "the peer (one that passes everything will do), then "
                    "restart", why)
        return dataclasses.replace(info, fastpath="refused",
                                   fastpath_why=why)
    try:
        fastpath.enable(xsk)
    except DataplaneError:
        xsk.close()
        raise
    log.info("XDP fast path on: established flows are sent by XDP")
    return dataclasses.replace(info, fastpath="on")


def snat_setting(services, iface, address, ports):
    """(address, lo, hi) when a VIP is in SNAT mode, else None; address
    defaults to iface's primary IPv4 address."""
    if not any(s.mode == "snat" for s in services):
        return None
    if address is None:
        address = primary_ipv4(iface)
        if address is None:
            raise ConfigError(f"snat: {iface} has no IPv4 address; "
                              "give --snat-address")
    elif not isinstance(address, ipaddress.IPv4Address):
        try:
            address = ipaddress.IPv4Address(address)
        except ValueError:
            raise ConfigError(f"snat address {address!r}: expected an IPv4 "
                              "address") from None
    lo, hi = ports
    return (address, lo, hi)


__all__ = ["BACKENDS", "interfaces", "check_options", "queue_count",
           "log_attached", "open_punts", "open_core", "open_backend",
           "snat_setting", "flows_per_queue", "FLOWS_DR", "FLOWS_TRACKED"]
