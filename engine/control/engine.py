"""The balancer: one interface, its VIPs, the data plane and ARP.

`Engine` is the Python API that `pyfwd start` and the tests use:

    eng = Engine("eth0", [Service(Vip.parse("10.0.0.100:80/tcp"),
                                  [Real.parse("10.0.0.11@200")])])
    eng.start()                  # attach XDP, open the sockets, announce
    eng.add_real(vip, Real.parse("10.0.0.12"))
    eng.set_weight(vip, "10.0.0.11", 0)   # drain
    eng.stats()
    eng.stop()                   # detach; also done by the kernel on exit

Every change rebuilds the tables off to the side and publishes them in one
step; established flows keep their real server.  A control thread drains
the punted frames (ARP for the IPv4 VIPs, neighbour discovery for the IPv6
ones, pings), keeps the real servers' MACs fresh and announces the VIPs
(gratuitous ARP, unsolicited neighbour advertisements).
"""

import dataclasses
import errno
import ipaddress
import json
import logging
import os
import re
import socket
import struct
import threading
import time

from pyroute2 import IPRoute

from pyfwd._netns import in_netns
from pyfwd.control import ha
from pyfwd.control.health.monitor import HealthMonitor
from pyfwd.dataplane.core import Afp, Core, Xsk
from pyfwd.errors import ConfigError, DataplaneError, PyfwdError
from pyfwd.model import Real, Vip
from pyfwd.neighbours.arp import ArpResponder, gratuitous
from pyfwd.neighbours.framesocket import FrameSocket
from pyfwd.neighbours.frames import mac_to_str
from pyfwd.neighbours.icmp import EchoResponder
from pyfwd.neighbours.kernel import (interface, multicast_socket,
                                     neighbour_macs, primary_ipv4, route_to)
from pyfwd.neighbours.ndp import NdpResponder, solicited_node, unsolicited_na

log = logging.getLogger("pyfwd")

TICK = 0.01             # control thread: punt drain period (s)
BACKENDS = ("auto", "xdp", "afpacket")
SNAT_PORTS = (61000, 65535)     # above Linux's ephemeral 32768-60999
# Flow slots per queue.  A table turns new flows away from about 85% full
# (two windows of 16 slots): 2M slots hold ~1.8M DR flows (144 MiB), 4M
# slots ~1.7M NAT/SNAT flows (288 MiB).
FLOWS_DR = 1 << 21
FLOWS_TRACKED = 1 << 22
ARP_REFRESH = 5.0       # real servers' MACs (s)
GARP_REPEAT = (0.0, 1.0, 3.0)   # gratuitous ARP after start/takeover (s)


class Engine:
    """A running balancer on `iface` (see the module's docstring).

    Options: inside_iface (two-arm NAT: the real servers' side),
    snat_address (default: iface's primary IPv4 address) and snat_ports
    (lo, hi) for SNAT VIPs, xdp_mode ("auto" | "native" | "generic"),
    copy_mode ("auto" | "copy" | "zerocopy"), busy_poll (µs of SO_BUSY_POLL,
    0 = sleep in poll()), queues (default: every RX queue), flows (flow
    slots per queue, 72 bytes each; a DR flow takes one, a NAT/SNAT flow
    two; default FLOWS_DR or FLOWS_TRACKED), stats_file (JSON written every
    second and at stop), role ("active": answer ARP for the VIPs and
    announce them; "standby": everything else but that, see set_role()).
    """

    def __init__(self, iface, services, *, inside_iface=None,
                 snat_address=None, snat_ports=SNAT_PORTS, xdp_mode="auto",
                 copy_mode="auto", busy_poll=0, queues=None, flows=None,
                 stats_file=None, arp_refresh=ARP_REFRESH, config_path=None,
                 backend="auto", role="active"):
        if backend not in BACKENDS:
            raise ConfigError(f"backend {backend!r}: expected one of "
                              f"{', '.join(BACKENDS)}")
        self.backend = backend
        self.iface = iface
        self.config_path = config_path
        self.inside_iface = inside_iface
        self.ifaces = [iface] + ([inside_iface] if inside_iface else [])
        if inside_iface == iface:
            raise ConfigError(f"inside iface {inside_iface!r}: the same as "
                              "iface; leave it out for one-arm")
        self.snat_address = snat_address
        self.snat_ports = snat_ports
        vips = [s.vip for s in services]
        if len(set(vips)) != len(vips):
            dup = next(v for v in vips if vips.count(v) > 1)
            raise ConfigError(f"vip {dup}: configured twice")
        self.services = list(services)
        self.role = ha.parse_role(role)
        ha.check_role(self.role, self.services)
        self.role_changed = time.time()     # wall clock, for people
        self.ha_counters = {"transitions": 0, "arp_withheld": 0,
                            "ndp_withheld": 0, "garp_bursts": 0,
                            "split_brain": 0}
        self.ha_peers = {}      # MAC text -> VIP it claimed while standby
        self._garp_at = []      # monotonic times of the announcements due
        self.options = dict(xdp_mode=xdp_mode, copy_mode=copy_mode,
                            busy_poll=busy_poll, queues=queues, flows=flows)
        self.stats_file = stats_file
        self.arp_refresh = arp_refresh
        self.core = self.xsk = self.info = None
        self.macs = {}          # real address -> next hop MAC or None
        self.out_ifs = {}       # real address -> interface slot
        self.why = {}           # real address -> why it has no next hop
        self.tables = None
        self.state = {}         # (vip, real key) -> "drain" | "halt"
        self.haproxy = None
        self._netns_fd = None
        self._l7_text = None
        self._l7_added = []     # VIP addresses we put on the interface
        self.fallback_active = set()
        self.health = {}        # (vip, real key) -> (up, detail)
        self.monitor = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None
        self._sock = None
        self.responder = None
        self.echo = None            # answers ping to the VIPs
        self.ndp = None             # NDP and ping for the IPv6 VIPs
        self._mc_sock = None        # holds the VIPs' solicited-node groups
        self._groups = set()
        self.started = None
        self._conflicts_logged = set()
        # MACs are asked from the control thread (it lives in the engine's
        # network namespace); changes wait for that with this handshake.
        self._refresh_wanted = threading.Event()
        self._refreshed = threading.Condition(self._lock)
        self._refresh_count = 0

    # --- life cycle -----------------------------------------------------

    def start(self):
        """Attach to the interface and start forwarding.

        Raises ConfigError (bad interface or option) or DataplaneError (XDP
        or AF_XDP refused), after undoing what it did.
        """
        ifindex, mac, rxq = interface(self.iface)
        ifindex2, mac2 = 0, None
        if self.inside_iface:
            ifindex2, mac2, rxq2 = interface(self.inside_iface)
            rxq = min(rxq, rxq2)
        self.ifindexes = [ifindex] + ([ifindex2] if ifindex2 else [])
        tracked = any(s.mode != "dr" for s in self.services)
        queues = self.options["queues"] or (1 if tracked else rxq)
        if not 1 <= queues <= rxq:
            raise ConfigError(f"queues {queues}: {self.iface} has {rxq} RX "
                              "queue(s)")
        if tracked and queues > 1:
            raise ConfigError(f"queues {queues}: NAT and SNAT run on one "
                              "queue for now (their flow table is per "
                              "queue and answers may come in on another)")
        if tracked and rxq > 1:
            log.warning("%s: NAT/SNAT serve RX queue 0 only; frames on the "
                        "other %d queue(s) go to the kernel", self.iface,
                        rxq - 1)
        self.mac = mac
        flows = self.options["flows"] or (FLOWS_TRACKED if tracked
                                          else FLOWS_DR)
        self.core = Core(mac=mac, mac2=mac2, workers=queues, flows=flows)
        self.snat = self._snat_setting()
        if self.snat:
            self.core.set_snat(self.snat[0], self.snat[1:])
        self.responder = ArpResponder(mac, self._ipv4_vips())
        self.echo = EchoResponder(mac, self._ipv4_vips())
        self.ndp = NdpResponder(mac, self._ipv6_vips())
        self._mc_sock = multicast_socket(self.iface)
        self._refresh_macs()
        self._publish()
        self.xsk = self._open_backend(ifindex, ifindex2, queues)
        try:
            self._steer()
            self._sock = FrameSocket(self.iface, ethertype=0)
        except BaseException:
            self.xsk.close()
            raise
        if self.info.backend == "afpacket":
            log.info("%s: raw-socket backend attached (AF_PACKET TPACKET_V3 "
                     "rings; a tc program keeps the engine's frames from "
                     "the kernel)", "+".join(self.ifaces))
        else:
            log.info("%s: XDP program %d attached in %s mode, %d AF_XDP "
                     "socket(s) in %s mode, busy polling %s",
                     "+".join(self.ifaces),
                     self.info.prog_id, self.info.xdp_mode, self.info.queues,
                     self.info.copy_mode,
                     f"on ({self.options['busy_poll']} µs)" if
                     self.info.busy_poll else "off")
        for s in self.services:
            log.info("vip %s (%s, %s): %s", s.vip, s.mode, s.scheduler,
                     ", ".join(str(r) for r in s.reals) or "no real server")
        if self.snat:
            log.info("snat: from %s, ports %d-%d", *self.snat)
        self.xsk.start()
        self.monitor = HealthMonitor(self._on_health)
        self._health_targets()
        self.monitor.start()
        if self.l7_services:
            try:
                self._l7_start()
            except BaseException:
                self.stop()
                raise
        self.started = time.monotonic()
        if self.role == "active":
            self._garp_at = [self.started + d for d in GARP_REPEAT]
        else:
            log.info("role standby: not answering ARP for the VIPs "
                     "(`pyfwd ctl ha active` or keepalived makes this "
                     "node active)")
        self._thread = threading.Thread(target=self._control,
                                        name="pyfwd-control", daemon=True)
        self._thread.start()
        return self

    def _open_backend(self, ifindex, ifindex2, queues):
        """AF_XDP, or the raw-socket backend where AF_XDP does not work
        (backend "auto"), or the one asked for.  Returns it, opened."""
        if self.backend in ("auto", "xdp"):
            xsk = Xsk(self.core)
            try:
                self.info = xsk.open(
                    ifindex, queues=queues,
                    xdp_mode=self.options["xdp_mode"],
                    copy_mode=self.options["copy_mode"],
                    busy_poll_usecs=self.options["busy_poll"],
                    ifindex2=ifindex2)
                return xsk
            except DataplaneError as exc:
                # Busy means someone's XDP program is there: raw sockets
                # beside it would not see what it steers away.
                if self.backend == "xdp" or exc.errno in (errno.EBUSY,
                                                          errno.EEXIST):
                    raise
                log.warning("AF_XDP does not work here (%s): using the "
                            "raw-socket backend", exc)
        afp = Afp(self.core)
        self.info = afp.open(ifindex, ifindex2)
        return afp

    def stop(self):
        """Stop forwarding and detach from the interface (idempotent)."""
        self._stop.set()
        if self.monitor:
            self.monitor.stop()
            self.monitor = None
        self._l7_stop()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None
        if self.stats_file and self.core:
            self._write_stats()
        if self.xsk:
            self.xsk.close()
            self.xsk = None
            log.info("%s: %s detached", self.iface,
                     "XDP program" if self.info.backend == "xdp" else
                     "raw-socket backend")
        if self._sock:
            self._sock.close()
            self._sock = None
        if self._mc_sock:
            self._mc_sock.close()       # leaves the groups
            self._mc_sock = None
            self._groups = set()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # --- changes (the control socket's commands) -----------------------
    # Each raises ConfigError for a bad request and leaves the engine as
    # it was; each applies by publishing new tables (established flows
    # keep their real server unless it is halted or removed).

    def service(self, vip):
        """The Service of vip: its name, its `ADDR:PORT/PROTO` text or a
        Vip.  ConfigError if none."""
        for s in self.services:
            if vip in (s.name, s.vip) or vip == str(s.vip):
                return s
        if isinstance(vip, str) and vip.count("/") == 1:
            v = Vip.parse(vip)
            for s in self.services:
                if s.vip == v:
                    return s
        raise ConfigError(f"vip {vip}: not configured (by name or "
                          "ADDR:PORT/PROTO)")

    def _real(self, vip, key):
        s = self.service(vip)
        key = str(key)
        for r in s.reals:
            if r.key == key or str(r.address) == key:
                return s, r
        raise ConfigError(f"vip {s.label}: no real server {key}")

    def add_vip(self, spec):
        """Add a VIP from a [[vip]] table (a dict, reals included)."""
        from pyfwd.control.config import parse_vip
        with self._lock:
            svc = parse_vip(spec, "add-vip", [s.name for s in self.services
                                              if s.name])
            if any(s.vip == svc.vip for s in self.services):
                raise ConfigError(f"vip {svc.vip}: configured already")
            ha.check_role(self.role, [svc])
            self.services.append(svc)
            self._changed(resolve=bool(svc.reals))
        log.info("vip %s (%s): added", svc.label, svc.vip)
        return svc.label

    def del_vip(self, vip):
        """Remove a VIP: its traffic goes to the kernel again."""
        with self._lock:
            s = self.service(vip)
            self.services.remove(s)
            self._changed()
        log.info("vip %s: removed", s.label)

    def add_real(self, vip, real):
        """Add real (a Real or `ADDR[:PORT][@W]`) to vip; new flows may go
        to it once ARP knows its MAC (waited for, up to 5 s)."""
        if not isinstance(real, Real):
            real = Real.parse(real)
        with self._lock:
            s = self.service(vip)
            if any(r.key == real.key for r in s.reals):
                raise ConfigError(f"vip {s.label}: real {real.key} is "
                                  "there already")
            s.reals.append(real)
            self._changed(resolve=True)
        log.info("vip %s: added real %s", s.label, real)

    def del_real(self, vip, key):
        """Remove a real server now; its flows are rescheduled."""
        with self._lock:
            s, r = self._real(vip, key)
            s.reals.remove(r)
            self._changed()
        log.info("vip %s: removed real %s", s.label, r.key)

    remove_real = del_real

    def set_weight(self, vip, key, weight):
        """Set a real's weight (0 to 65535); 0 takes no new flows."""
        with self._lock:
            s, old = self._real(vip, key)
            new = Real(old.address, old.port, weight)
            s.reals[s.reals.index(old)] = new
            self._changed()
        log.info("vip %s: real %s weight %d -> %d", s.label, old.key,
                 old.weight, weight)

    def drain(self, vip, key):
        """No new flows to the real; its established flows go on."""
        self._set_state(vip, key, "drain")

    def halt(self, vip, key):
        """Out of the tables now: new and established flows leave it."""
        self._set_state(vip, key, "halt")

    def online(self, vip, key):
        """Undo drain or halt."""
        self._set_state(vip, key, "online")

    def _set_state(self, vip, key, state):
        with self._lock:
            s, r = self._real(vip, key)
            if state == "online":
                self.state.pop((s.vip, r.key), None)
            else:
                self.state[(s.vip, r.key)] = state
            self._changed()
        log.info("vip %s: real %s %s", s.label, r.key, state)

    def set_role(self, role):
        """Become "active" or "standby" (the control command `ha`, which
        keepalived's notify scripts call).

        Active answers ARP and NDP for the VIPs and, from now, sends the
        announcement burst (GARP_REPEAT: gratuitous ARP for every IPv4 VIP,
        an unsolicited neighbour advertisement for every IPv6 one) so
        clients and switches move here at once; asked again while active, it announces again
        (not counted as a transition).  Standby stops answering and
        announcing at once; everything else runs on (tables, health,
        forwarding of whatever still arrives: with Maglev it goes to the
        same real server as on the active node).  Returns {"role",
        "previous", "changed", "announce": [VIPs]}.  ConfigError for a bad
        role.  Standby with L7 VIPs is logged as an error (the kernel still
        answers ARP for them, see ha.check_role) but not refused: standing
        down must not fail while the peer takes over.
        """
        role = ha.parse_role(role, "ha: role")
        with self._lock:
            try:
                ha.check_role(role, self.services)
            except ConfigError as exc:
                # Standing down must not fail: the peer is taking over, and
                # a refusal here would leave two active nodes.
                log.error("ha: %s; standing down for the L4 VIPs anyway",
                          exc)
            previous = self.role
            changed = role != previous
            if changed:
                self.role = role
                self.role_changed = time.time()
                self.ha_counters["transitions"] += 1
            now = time.monotonic()
            # the first burst leaves now, from this thread: the control
            # loop may be busy refreshing MACs for up to a second
            self._garp_at = [now + d for d in GARP_REPEAT if d > 0] \
                if role == "active" else []
            if role == "active":
                self._announce()
            announce = [str(a) for a in self._ipv4_vips()
                        + self._ipv6_vips()] if role == "active" else []
        if changed:
            log.warning("ha: %s -> %s%s", previous, role,
                        f": announcing {', '.join(announce) or 'no VIP'}"
                        if role == "active" else
                        ": not answering ARP/NDP for the VIPs")
        elif announce:
            log.info("ha: active already: announcing %s again",
                     ", ".join(announce))
        return {"role": role, "previous": previous, "changed": changed,
                "announce": announce}

    def reload(self):
        """Read the config file again and apply the difference; returns
        what changed.  ConfigError (and nothing applied) when it is bad."""
        from pyfwd.control import config as config_mod
        if not self.config_path:
            raise ConfigError("reload: the engine was not started with "
                              "--config")
        cfg = config_mod.load(self.config_path, role=self.role)
        if cfg.iface not in (None, self.iface) or \
                cfg.inside_iface != self.inside_iface:
            raise ConfigError("reload: the interfaces cannot change; "
                              "restart the engine for that")
        with self._lock:
            ha.check_role(self.role, cfg.services)
            old = {s.vip: s for s in self.services}
            new = {s.vip: s for s in cfg.services}
            summary = {"added_vips": [new[v].label for v in new
                                      if v not in old],
                       "removed_vips": [old[v].label for v in old
                                        if v not in new],
                       "changed": []}
            for v in new.keys() & old.keys():
                a, b = old[v], new[v]
                ra = {r.key: r for r in a.reals}
                rb = {r.key: r for r in b.reals}
                for k in rb.keys() - ra.keys():
                    summary["changed"].append(f"{b.label}: added {k}")
                for k in ra.keys() - rb.keys():
                    summary["changed"].append(f"{b.label}: removed {k}")
                for k in ra.keys() & rb.keys():
                    if ra[k].weight != rb[k].weight:
                        summary["changed"].append(
                            f"{b.label}: {k} weight {ra[k].weight} -> "
                            f"{rb[k].weight}")
                for attr in ("mode", "scheduler", "persistence", "health",
                             "fallback", "name"):
                    if getattr(a, attr) != getattr(b, attr):
                        summary["changed"].append(
                            f"{b.label}: {attr} {getattr(a, attr)} -> "
                            f"{getattr(b, attr)}")
            self.services = list(cfg.services)
            self._changed(resolve=True)
        log.info("reload: %s", summary)
        return summary

    def _changed(self, resolve=False):
        """Publish, steer and check what the services now say."""
        keys = {(s.vip, r.key) for s in self.services for r in s.reals}
        for k in [k for k in self.state if k not in keys]:
            del self.state[k]
        self._publish()
        if self.l7_services and not self.haproxy and self._thread:
            self._l7_start()
        self._l7_sync()
        if self.monitor:
            self._health_targets()
        if resolve and self._thread:
            wanted = self._refresh_count + 1
            self._refresh_wanted.set()
            # The control thread resolves the MACs and publishes again.
            self._refreshed.wait_for(lambda: self._refresh_count >= wanted,
                                     timeout=5)

    # --- health ---------------------------------------------------------

    def _health_targets(self):
        targets = {}
        for s in self.services:
            if s.health is None:
                continue
            for r in s.reals:
                port = s.health.port or r.port or s.vip.port
                targets[(s.vip, r.key)] = (s.health, r.address, port,
                                           str(s.vip))
        for k in [k for k in self.health if k not in targets]:
            del self.health[k]
        self.monitor.set_targets(targets)

    def _on_health(self, key, up, detail):
        with self._lock:
            self.health[key] = (up, detail)
            vip, real = key
            try:
                label = self.service(vip).label
            except ConfigError:
                return          # removed meanwhile
            log.warning("vip %s: real %s is %s (%s)", label, real,
                        "up" if up else "DOWN", detail)
            self._publish()
            self._l7_sync()

    @property
    def l4_services(self):
        """The VIPs of the C core (DR, NAT, SNAT)."""
        return [s for s in self.services if s.mode != "l7"]

    @property
    def l7_services(self):
        """The VIPs that HAProxy serves."""
        return [s for s in self.services if s.mode == "l7"]

    def _effective(self):
        """The L4 services as the tables see them: halted and unhealthy
        reals left out, drained ones at weight 0, the fallback when no real
        can take a new flow."""
        out = []
        self.fallback_active = set()
        for s in self.l4_services:
            reals = []
            for r in s.reals:
                st = self.state.get((s.vip, r.key))
                up = self.health.get((s.vip, r.key), (True, ""))[0]
                if st == "halt" or not up:
                    continue
                reals.append(Real(r.address, r.port, 0) if st == "drain"
                             else r)
            if s.fallback and not any(r.weight for r in reals) and \
                    all(r.key != s.fallback.key for r in reals):
                reals.append(Real(s.fallback.address, s.fallback.port, 1))
                self.fallback_active.add(s.vip)
            out.append(dataclasses.replace(s, reals=reals))
        return out

    # --- L7: HAProxy ------------------------------------------------------

    def _l7_vips(self):
        """What HAProxy's configuration says: every configured real server
        of every L7 VIP (their state is set live through its runtime API)."""
        from pyfwd.control.l7 import L7Vip
        return [L7Vip(l7_name(s), s.vip,
                      [(l7_server(r), r.address, r.port or s.vip.port,
                        r.weight) for r in s.reals],
                      s.scheduler, s.l7)
                for s in self.l7_services]

    def _l7_start(self):
        """HAProxy as our child, the L7 VIPs reachable on the interface."""
        from pyfwd.control.l7 import HAProxy, render
        base = f"/run/pyfwd/haproxy-{os.getpid()}-{self.iface}"
        os.makedirs("/run/pyfwd", mode=0o700, exist_ok=True)
        proxy = HAProxy(f"{base}.cfg", f"{base}.sock")
        proxy.check_binary()
        # The engine's network namespace, for address changes asked from
        # any thread later (a control request, a reload, stop).
        self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._l7_addresses()
        self._l7_text = render(self._l7_vips(), proxy.runtime_socket)
        proxy.start(self._l7_text)
        self.haproxy = proxy
        log.info("HAProxy serves %s", ", ".join(
            f"{l7_name(s)} ({s.vip}, {s.l7.l7_mode})"
            for s in self.l7_services))
        self._l7_sync()

    def _l7_addresses(self):
        """Put each L7 VIP address on the interface (once; we remove what
        we added when we stop)."""
        want = [s.vip.address for s in self.l7_services
                if str(s.vip.address) not in self._l7_added]
        if not want:
            return

        def add():
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=self.iface)[0]
                have = {a.get_attr("IFA_ADDRESS")
                        for a in ipr.get_addr(index=idx)}
                for a in want:
                    if str(a) in have:
                        continue
                    ipr.addr("add", index=idx, address=str(a),
                             prefixlen=32 if a.version == 4 else 128)
                    self._l7_added.append(str(a))
                    log.info("%s: added L7 VIP address %s", self.iface, a)
        in_netns(self._netns_fd, add)

    def _l7_sync(self):
        """HAProxy's configuration (reloaded seamlessly when it changes)
        and every server's state and weight as pyfwd sees them."""
        if not self.haproxy:
            return
        from pyfwd.control.l7 import haproxy_weights, render
        self._l7_addresses()
        text = render(self._l7_vips(), self.haproxy.runtime_socket)
        if text != self._l7_text:
            self.haproxy.reload(text)
            self._l7_text = text
        for s in self.l7_services:
            # HAProxy's weights are 0..256: the same ratios, scaled.
            weights = haproxy_weights([r.weight for r in s.reals])
            for r, hw in zip(s.reals, weights):
                k = (s.vip, r.key)
                up = self.health.get(k, (True, ""))[0]
                st = self.state.get(k)
                want = ("maint" if st == "halt" or not up else
                        "drain" if st == "drain" or not r.weight else
                        "ready")
                self.haproxy.set_state(l7_name(s), l7_server(r), want)
                if r.weight:
                    self.haproxy.set_weight(l7_name(s), l7_server(r), hw)

    def _l7_stop(self):
        if self.haproxy:
            self.haproxy.stop()
            self.haproxy = None
        if self._l7_added:
            def delete():
                with IPRoute() as ipr:
                    idx = ipr.link_lookup(ifname=self.iface)[0]
                    for a in self._l7_added:
                        ipr.addr("del", index=idx, address=a,
                                 prefixlen=32 if ":" not in a else 128)
            try:
                in_netns(self._netns_fd, delete)
            except Exception as exc:     # gone with its namespace
                log.warning("removing L7 VIP addresses: %s", exc)
            self._l7_added = []
        if self._netns_fd is not None:
            os.close(self._netns_fd)
            self._netns_fd = None

    def _l7_rows(self):
        """{(backend, server): HAProxy's state and counters}."""
        if not self.haproxy:
            return {}
        rows = {}
        try:
            for st in self.haproxy.servers_state():
                rows.setdefault((st["backend"], st["server"]), {}).update(
                    haproxy_state=st.get("admin_state"),
                    haproxy_status=st.get("oper_state"))
            for st in self.haproxy.stats():
                key = (st.get("pxname"), st.get("svname"))
                if key in rows:
                    rows[key].update(active=st.get("scur", 0),
                                     flows_new=st.get("stot", 0),
                                     bytes=(st.get("bin", 0) or 0) +
                                     (st.get("bout", 0) or 0))
        except PyfwdError as exc:
            log.warning("HAProxy runtime API: %s", exc)
        return rows

    # --- inside ---------------------------------------------------------

    def _ipv4_vips(self):
        return [s.vip.address for s in self.l4_services
                if s.vip.address.version == 4]

    def _ipv6_vips(self):
        return [s.vip.address for s in self.l4_services
                if s.vip.address.version == 6]

    def _addresses(self):
        """Every address we may send to: real servers and fallbacks."""
        return sorted({r.address for s in self.l4_services
                       for r in s.reals + ([s.fallback] if s.fallback
                                           else [])}, key=str)

    def _next_hops(self):
        """Ask the kernel's routes, then ARP (IPv4) or the kernel's
        neighbour discovery (IPv6), for the next hop toward every real
        server: {address: (mac | None, slot, why)}."""
        addrs = self._addresses()
        routes = {a: route_to(a) for a in addrs}
        by_iface = {}
        for a, (oif, hop) in routes.items():
            if oif in self.ifaces:
                by_iface.setdefault((oif, hop.version), set()).add(hop)
        found = {}
        for (ifname, version), hops in by_iface.items():
            for hop, mac in neighbour_macs(ifname,
                                           sorted(hops, key=str)).items():
                found[(ifname, hop)] = mac
        out = {}
        for a, (oif, hop) in routes.items():
            if oif not in self.ifaces:
                out[a] = (None, 0, f"route via {oif or 'nowhere'}, not "
                          f"{' or '.join(self.ifaces)}")
            else:
                mac = found.get((oif, hop))
                via = "" if hop == a else f" (via {hop})"
                how = "ARP" if hop.version == 4 else "neighbour discovery"
                out[a] = (mac, self.ifaces.index(oif),
                          None if mac else f"MAC unknown{via}: no {how} "
                          f"answer on {oif}")
        return out

    def _refresh_macs(self):
        """Next hops of every real server (start only)."""
        self._apply_hops(self._next_hops())

    def _apply_hops(self, hops):
        """Take the next hops found; log what changed; True if any did."""
        changed = False
        for a, (mac, slot, why) in hops.items():
            old = self.macs.get(a)
            if mac is None and (old is not None or a not in self.macs):
                log.warning("real %s: %s: not scheduled", a, why)
            elif mac is not None and mac != old:
                log.info("real %s: next hop MAC %s on %s", a,
                         mac_to_str(mac), self.ifaces[slot])
            changed |= (mac != old or slot != self.out_ifs.get(a))
            self.macs[a], self.out_ifs[a], self.why[a] = mac, slot, why
        return changed

    def _publish(self):
        self.tables = self.core.publish_services(self._effective(),
                                                 self.macs, self.out_ifs)
        for (vip, key), why in self.tables.unscheduled.items():
            addr = Real.parse(key).address
            if self.why.get(addr):
                self.tables.unscheduled[(vip, key)] = self.why[addr]
        v4, v6 = self._ipv4_vips(), self._ipv6_vips()
        if self.responder:
            self.responder.update_vips(v4)
        if self.echo:
            self.echo.update_vips(v4)
        if self.ndp:
            self.ndp.update_vips(v6)
        self._join_groups(v6)
        if self.xsk and self.info:
            self._steer()

    def _steer(self):
        """What the XDP program sends us: the VIPs; for NAT, the answers
        of the real servers (from their addr:port); for SNAT, our port
        range."""
        replies = [Vip(r.address, r.port or s.vip.port, s.vip.protocol)
                   for s in self.services if s.mode == "nat"
                   for r in s.reals + ([s.fallback] if s.fallback else [])]
        self.xsk.steer([s.vip for s in self.l4_services], set(replies),
                       self.snat)

    def _snat_setting(self):
        """(address, lo, hi) when a VIP is in SNAT mode, else None."""
        if not any(s.mode == "snat" for s in self.services):
            return None
        addr = self.snat_address
        if addr is None:
            addr = primary_ipv4(self.iface)
            if addr is None:
                raise ConfigError(f"snat: {self.iface} has no IPv4 address; "
                                  "give --snat-address")
        elif not isinstance(addr, ipaddress.IPv4Address):
            try:
                addr = ipaddress.IPv4Address(addr)
            except ValueError:
                raise ConfigError(f"snat address {addr!r}: expected an IPv4 "
                                  "address") from None
        lo, hi = self.snat_ports
        return (addr, lo, hi)

    def _control(self):
        """Punted frames, MAC refresh, gratuitous ARP, stats file."""
        last_refresh = last_stats = last_l7 = time.monotonic()
        while not self._stop.wait(TICK):
            now = time.monotonic()
            try:
                self._answer_punts()
                due = self._garp_at     # set_role() may replace it
                if due and now >= due[0]:
                    due.pop(0)
                    self._announce()
                if (self._refresh_wanted.is_set()
                        or now - last_refresh >= self.arp_refresh):
                    self._refresh_wanted.clear()
                    last_refresh = now
                    self._refresh_and_publish()
                if self.stats_file and now - last_stats >= 1.0:
                    last_stats = now
                    self._write_stats()
                if self.haproxy and now - last_l7 >= 1.0:
                    last_l7 = now
                    restarts = self.haproxy.restarts
                    self.haproxy.ensure_running()
                    if self.haproxy.restarts != restarts:
                        log.warning("HAProxy was down: restarted (%d "
                                    "times so far)", self.haproxy.restarts)
                        with self._lock:
                            self._l7_sync()
                for err in self.xsk.errors if self.xsk else ():
                    log.error("%s", err)
                if self.xsk:
                    self.xsk.errors.clear()
            except PyfwdError as exc:       # logged, counted, carried on
                log.error("control: %s", exc)
            except OSError as exc:
                log.error("control: %s", exc)
            except Exception:               # a bug: said, and carried on:
                log.exception("control: unexpected error")  # ARP must go on

    def _refresh_and_publish(self):
        hops = self._next_hops()        # unlocked: it waits for ARP
        with self._lock:
            if self._apply_hops(hops):
                self._publish()
            self._refresh_count += 1
            self._refreshed.notify_all()

    def _answer_punts(self):
        frames = self.core.drain_punts()
        if not frames:
            return
        # Under the lock: _publish swaps the responders' VIPs and conflicts,
        # and set_role must not return while replies of the old role leave.
        with self._lock:
            self._answer(frames)

    def _answer(self, frames):
        replies = self.responder.handle_batch(frames)
        pongs = self.echo.handle_batch(frames)      # ping to a VIP
        nd = self.ndp.counters
        before = nd["answered"] + nd["dad_answered"]
        nd_replies = self.ndp.handle_batch(frames)  # NDP, ping6
        if self.role == "active":
            for reply in replies + pongs + nd_replies:
                self._sock.send(reply)
        else:                           # the active node answers
            self.ha_counters["arp_withheld"] += len(replies)
            self.ha_counters["ndp_withheld"] += \
                nd["answered"] + nd["dad_answered"] - before
        self._check_conflicts(self.responder, "ARP problem: %s answers ARP "
                              "for VIP %s")
        self._check_conflicts(self.ndp, "NDP problem: %s claims IPv6 VIP "
                              "%s (advertises it, probes for it or "
                              "solicits from it)")

    def _check_conflicts(self, responder, problem):
        """Log (once) the other MACs that claimed a VIP; while standby
        they are the active node: noted in ha_peers, not a problem."""
        for vip, macs in list(responder.conflicts.items()):
            for mac in list(macs):
                if self.role == "standby":
                    # The active node claiming the VIPs is no ARP problem.
                    del macs[mac]
                    if mac not in self.ha_peers:
                        log.info("ha: VIP %s is held by %s (the active "
                                 "node; this one is standby)", vip, mac)
                    self.ha_peers[mac] = str(vip)
                elif (vip, mac) not in self._conflicts_logged:
                    self._conflicts_logged.add((vip, mac))
                    if mac in self.ha_peers:
                        self.ha_counters["split_brain"] += 1
                        log.warning("ha: %s, active while this node was "
                                    "standby, still claims VIP %s: two "
                                    "active nodes? check keepalived on "
                                    "both", mac, vip)
                    else:
                        log.warning(problem + ": run `pyfwd realserver "
                                    "setup --vip %s` on that real server",
                                    mac, vip, vip)
            if not macs:
                del responder.conflicts[vip]

    def _join_groups(self, vips):
        """Hold the solicited-node multicast group of every IPv6 VIP in
        `vips` (and only those) on the interface, so that a NIC filtering
        multicast MACs and switches snooping MLD deliver the VIPs' neighbour
        solicitations here (the kernel sends the MLD reports; the XDP
        program takes the NSes)."""
        if self._mc_sock is None:
            return
        want = {solicited_node(a) for a in vips}
        index = struct.pack("@I", self.ifindexes[0])
        for group in sorted(want - self._groups):
            try:
                self._mc_sock.setsockopt(socket.IPPROTO_IPV6,
                                         socket.IPV6_JOIN_GROUP,
                                         group.packed + index)
            except OSError as exc:
                log.warning("%s: cannot join %s (neighbour solicitations "
                            "for an IPv6 VIP may not reach us): %s",
                            self.iface, group, exc.strerror or exc)
                continue
            self._groups.add(group)
        for group in sorted(self._groups - want):
            try:
                self._mc_sock.setsockopt(socket.IPPROTO_IPV6,
                                         socket.IPV6_LEAVE_GROUP,
                                         group.packed + index)
            except OSError:
                pass
            self._groups.discard(group)

    def _announce(self):
        if self.role != "active":
            return
        self.ha_counters["garp_bursts"] += 1
        for addr in self._ipv4_vips():
            self._sock.send(gratuitous(self.mac, addr))
        for addr in self._ipv6_vips():
            self._sock.send(unsolicited_na(self.mac, addr))

    # --- counters -------------------------------------------------------

    def status(self):
        """Engine-wide facts: interfaces, pid, uptime, counts, modes."""
        return {"iface": self.iface, "inside_iface": self.inside_iface,
                "pid": os.getpid(),
                "uptime": round(time.monotonic() - self.started, 3)
                if self.started else 0.0,
                "vips": len(self.services),
                "reals": sum(len(s.reals) for s in self.services),
                "xsk": dataclasses.asdict(self.info) if self.info else None,
                "snat": [str(self.snat[0]), self.snat[1], self.snat[2]]
                if self.snat else None,
                "haproxy": {"pid": self.haproxy.proc.pid if self.haproxy.proc
                            else None,
                            "restarts": self.haproxy.restarts}
                if self.haproxy else None,
                "config": self.config_path,
                "ha": self.ha_status()}

    def ha_status(self):
        """{"role", "since" (epoch seconds of the last change, or of the
        start), "for" (seconds in this role), "transitions",
        "arp_withheld" (ARP requests for a VIP not answered while standby),
        "ndp_withheld" (neighbour solicitations for a VIP, the same),
        "garp_bursts" (announcements sent), "peers" ({MAC: VIP} seen
        holding a VIP while standby)}."""
        return {"role": self.role, "since": round(self.role_changed, 3),
                "for": round(time.time() - self.role_changed, 3),
                **self.ha_counters, "peers": dict(self.ha_peers)}

    def show(self):
        """Every VIP with its real servers: weight, admin state, health,
        whether new flows go to it (and why not), live and new flows,
        frames and bytes."""
        with self._lock:
            per_real = self.core.real_stats()
            l7rows = self._l7_rows()
            vips = []
            for s in self.services:
                reals = []
                for r in s.reals + ([s.fallback] if s.vip in
                                    self.fallback_active else []):
                    k = (s.vip, r.key)
                    is_fb = r not in s.reals
                    rid = self.core.ids.lookup(*k)
                    mac = self.macs.get(r.address)
                    st = "fallback" if is_fb else \
                        self.state.get(k, "online")
                    up, detail = self.health.get(k, (None, None))
                    checked = s.health is not None and not is_fb
                    if checked and up is None and self.monitor:
                        try:
                            mon = self.monitor.state(k)
                        except KeyError:    # not checked yet
                            mon = {"up": True, "last_detail": None}
                        up, detail = mon["up"], mon.get("last_detail")
                    why = self.tables.unscheduled.get(k)
                    if st == "halt":
                        why = "halted"
                    elif up is False:
                        why = f"health: {detail}"
                    counters = per_real.get(rid, {}) if rid is not None \
                        else {}
                    if s.mode == "l7":
                        counters = l7rows.get((l7_name(s), l7_server(r)),
                                              {})
                    reals.append({
                        "real": r.key, "weight": r.weight, "state": st,
                        "health": None if not checked else
                        ("up" if up else "down"),
                        "health_detail": detail,
                        "scheduled": why is None, "why": why,
                        "mac": mac_to_str(mac) if mac else None,
                        "via": self.ifaces[self.out_ifs.get(r.address, 0)],
                        "active": counters.get("active", 0),
                        "frames": counters.get("frames", 0),
                        "bytes": counters.get("bytes", 0),
                        "flows_new": counters.get("flows_new", 0),
                        **({"haproxy_state": counters.get("haproxy_state"),
                            "haproxy_status": counters.get("haproxy_status")}
                           if s.mode == "l7" else {})})
                vips.append({"name": s.label, "vip": str(s.vip),
                             "mode": s.mode, "scheduler": s.scheduler,
                             "persistence": s.persistence,
                             "fallback": s.fallback.key if s.fallback
                             else None,
                             "fallback_active": s.vip in
                             self.fallback_active,
                             "reals": reals})
        return vips

    def stats(self):
        """A JSON-ready snapshot: the data plane's counters, per VIP and
        real server (as show()), per queue, ARP, the XDP/AF_XDP modes."""
        core = self.core.stats()
        with self._lock:    # the responders' dicts change under _publish
            return self._stats(core)

    def _stats(self, core):
        return {**self.status(), "core": core, "vips": self.show(),
                "queues": [{k: q[k] for k in ("rx", "tx", "tx_ring_full",
                                              "wakeups", "polls")}
                           for q in (self.core.stats(worker=i) for i in
                                     range(self.core.workers))],
                "arp": dict(self.responder.counters) if self.responder
                else {},
                "icmp": dict(self.echo.counters) if self.echo else {},
                "ndp": dict(self.ndp.counters) if self.ndp else {},
                "arp_conflicts": {str(v): sorted(m) for v, m in
                                  self.responder.conflicts.items()}
                if self.responder else {},
                "ndp_conflicts": {str(v): sorted(m) for v, m in
                                  self.ndp.conflicts.items()}
                if self.ndp else {}}

    def _write_stats(self):
        tmp = f"{self.stats_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.stats(), f, indent=1)
        os.replace(tmp, self.stats_file)


def l7_name(service):
    """HAProxy's frontend/backend name of an L7 VIP."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", service.name or
                  f"vip_{service.vip.address}_{service.vip.port}")


def l7_server(real):
    """HAProxy's server name of a real server: stable, from its key."""
    return "r_" + re.sub(r"[^A-Za-z0-9]", "_", real.key)


__all__ = ["Engine"]
