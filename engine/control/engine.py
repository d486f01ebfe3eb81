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
step; established flows keep their real server.  A punt thread answers
the punted frames (ARP for the IPv4 VIPs, neighbour discovery for the IPv6
ones, pings) without the engine's lock; a control thread keeps the real
servers' MACs fresh and announces the VIPs (gratuitous ARP, unsolicited
neighbour advertisements).

The Engine keeps the life cycle, the admin API and reload, publishing
(effective services -> tables -> steering) and the control thread; its
parts, each testable alone with fakes, do the rest:
    hops    control.nexthops.NextHops: the real servers' next hops
    punts   control.punts.Punts: answering punted frames, announcements,
            the IPv6 VIPs' multicast groups
    ha      control.ha.HaState: the role, its counters and schedule
    l7      control.l7.L7Sync: HAProxy for the L7 VIPs
    report  control.report.Report: status(), show(), stats()
    views   control.ctlviews.CtlViews: ctl rate, zero, flows and the
            show and stats that ctl prints (the zeroed counters)
    changes control.changes.Changes: the commands as transactions (rolled
            back when a step fails), the operator's changes kept and
            replayed (control.state)
    events  control.events.EventLog: what happened (health, changes,
            reloads, roles), for the dashboard
"""

import logging
import threading
import time

from . import ha
from . import services as svcs
from . import tunnel
from .changes import Changes
from .ctlviews import CtlViews
from .events import EventLog
from .gateway import Gateway
from .health.monitor import HealthMonitor
from .health.vipprobe import checker
from .liveness import EngineLiveness
from .l7.sync import L7Sync
from .nexthops import NEIGHBOUR_STALE, NextHops, Refresh
from .puntthread import PuntThread
from .report import Report, write_stats
from .startup import (check_options, interfaces, log_attached, open_backend,
                      open_core, open_punts, queue_count, snat_setting)
from ..dataplane.io import POLL_DEFAULT
from ..errors import ConfigError, PyfwdError
from ..model import SNAT_PORTS
from ..neighbours.ratelimit import NeighbourLimits

log = logging.getLogger("pyfwd")

TICK = 0.1              # control thread period (s); a refresh asked wakes it
ARP_REFRESH = 5.0       # real servers' MACs (s)
# what the DOWN line adds, by the VIP's on_down
ON_DOWN_SAYS = {"quiesce": ": quiesced, no new flows, established ones go on",
                "reset": ": out of the tables, its flows leave it"}


class Engine:
    """A running balancer on `iface` (see the module's docstring).

    Options: inside_iface (two-arm NAT: the real servers' side),
    snat_address (default: iface's primary IPv4 address) and snat_ports
    (lo, hi) for SNAT VIPs, xdp_mode ("auto" | "native" | "generic"),
    copy_mode ("auto" | "copy" | "zerocopy"), busy_poll (µs of SO_BUSY_POLL,
    0 = sleep in poll()), queues (default: every RX queue), flows (flow
    slots per queue, 72 bytes each; a DR flow takes one, a NAT/SNAT flow
    two; default startup.flows_per_queue), stats_file (JSON written every
    second and at stop), role ("active": answer ARP for the VIPs and
    announce them; "standby": everything else but that, see set_role()),
    neighbour_stale (s a real's last MAC is kept unanswered: NextHops),
    ha_options (ha.HaOptions: [ha] lease and gateway), state_file (where
    the operator's changes are kept; default `<config_path>.state`, none
    without config_path: control.changes), neighbour_limits (the rate
    limits of ARP/NDP answers: neighbours.ratelimit.NeighbourLimits),
    timeouts ({[engine.timeouts] key: seconds} for the core:
    dataplane.core.TIMEOUTS), new_flows_per_second (per queue, 0: no
    cap: dataplane.core.Core), rings and poll (dataplane.io.Xsk.open),
    fastpath ("off" | "xdp": docs/fastpath.md), tun (control.tunnel).

    Locking: one re-entrant lock (taken by every change, by show() and
    stats(), and by the announcements of the control thread) guards the
    services, the admin state, the tables and the parts; the kernel
    look-ups of the next hops run outside it, and so does the punt thread
    (control.puntthread), which answers from snapshots (control.punts).
    """

    def __init__(self, iface, services, *, inside_iface=None,
                 snat_address=None, snat_ports=SNAT_PORTS, xdp_mode="auto",
                 copy_mode="auto", busy_poll=0, queues=None, flows=None,
                 stats_file=None, arp_refresh=ARP_REFRESH, config_path=None,
                 backend="auto", role="active", ha_options=None,
                 neighbour_stale=NEIGHBOUR_STALE, state_file=None,
                 neighbour_limits=None, timeouts=None,
                 new_flows_per_second=0, rings=None, poll=POLL_DEFAULT,
                 fastpath="off", tun=()):
        check_options(iface, inside_iface, backend, services)
        self.backend, self.iface = backend, iface
        self.config_path, self.inside_iface = config_path, inside_iface
        self.ifaces = [iface] + ([inside_iface] if inside_iface else [])
        self.snat_address, self.snat_ports = snat_address, snat_ports
        self.services = list(services)
        self.events = EventLog()    # the dashboard's (control.web)
        self.ha = ha.HaState(role, ha_options, events=self.events)
        self.options = dict(xdp_mode=xdp_mode, copy_mode=copy_mode,
                            busy_poll=busy_poll, queues=queues, flows=flows,
                            timeouts=dict(timeouts or {}),
                            new_flows_per_second=new_flows_per_second,
                            rings=rings, poll=poll, fastpath=fastpath, tun=tun)
        self.stats_file = stats_file
        self.core = self.xsk = self.info = self.snat = None
        self.hops = NextHops(self.ifaces, stale=neighbour_stale)
        self.punts = None           # from start(): it needs the sockets
        self.punt_limits = neighbour_limits or NeighbourLimits()
        self.punt_thread = None
        self.l7 = L7Sync(iface, active=self.ha.active)
        self.bgp = None     # a bgp.BgpSpeaker that `pyfwd start` runs
        self.report = Report(self)
        self.state = {}         # (vip, real key) -> "drain" | "halt"
        self.fallback_active = set()
        self.health = {}        # (vip, real key) -> (up, detail)
        self.tables = self.monitor = None
        self._lock = threading.RLock()
        self.views = CtlViews(self, self._lock)     # ctl rate, zero
        self.gateway = Gateway(inside_iface or iface, self.ha, self._lock)
        self._stop = threading.Event()
        self._thread = self.started = self.started_at = None
        self._refresh = Refresh(self._lock, arp_refresh)
        self.ticks, self.liveness = 0, EngineLiveness(self)  # liveness.py
        # The commands that change us, atomic; the operator's changes
        # replayed from the state file (over services).
        self.changes = Changes(self, state_file)

    @property
    def role(self):
        """"active" or "standby" (see set_role())."""
        return self.ha.role

    @property
    def haproxy(self):
        """The HAProxy serving the L7 VIPs (control.l7.HAProxy), or None."""
        return self.l7.haproxy

    # --- life cycle -----------------------------------------------------

    def start(self):
        """Attach to the interface and start forwarding.

        Raises ConfigError (bad interface or option) or DataplaneError (XDP
        or AF_XDP refused), after undoing what it did.
        """
        self.ifindexes, mac, mac2, rxq = interfaces(self.iface,
                                                    self.inside_iface)
        ifindex, ifindex2 = (self.ifindexes + [0])[:2]
        queues = queue_count(self.options["queues"], self.iface, rxq)
        self.mac = mac
        self.core = open_core(mac, mac2, queues, self.services, self.options)
        self.snat = snat_setting(self.services, self.iface,
                                 self.snat_address, self.snat_ports)
        if self.snat:
            self.core.set_snat(self.snat[0], self.snat[1:])
        self.tun_ends = tunnel.apply(self)
        self.hops.apply(self.hops.find(svcs.real_addresses(self.services)))
        self._publish()
        self.xsk, self.info = open_backend(self.backend, self.core, ifindex,
                                           ifindex2, queues, self.options)
        try:
            self._steer()
            with self._lock:
                self.punts = open_punts(self.iface, ifindex, self.core, mac,
                                        self.ha, self.services,
                                        self.punt_limits)
            self.gateway.open(mac2 or mac)
        except BaseException:
            self.xsk.close()
            raise
        log_attached(self.info, self.ifaces, self.services, self.snat,
                     self.options["busy_poll"])
        self.xsk.start()
        self.monitor = HealthMonitor(self._on_health, check=checker(
            lambda a: (self.hops.via(a), self.hops.macs.get(a))))
        self._health_targets()
        self.monitor.start()
        if self.l7_services:
            try:
                self.l7.start(self.l7_services, self.state, self.health)
            except BaseException:
                self.stop()
                raise
        else:
            self.l7.clean()         # what a dead engine's HAProxy left
        self.started, self.started_at = time.monotonic(), time.time()
        self.ha.start()
        self.punt_thread = PuntThread(self.punts).start()
        self._thread = threading.Thread(target=self._control,
                                        name="pyfwd-control", daemon=True)
        self._thread.start()
        self.events.add("start", text="started on " + ", ".join(self.ifaces))
        return self

    def stop(self):
        """Stop forwarding and detach from the interface (idempotent)."""
        self._stop.set()
        if self.monitor:
            self.monitor.stop()
            self.monitor = None
        self.l7.stop()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None
        if self.punt_thread:
            self.punt_thread.stop()
            self.punt_thread = None     # stopped: nothing to judge
        if self.stats_file and self.core:
            self._write_stats()
        if self.xsk:
            self.xsk.close()
            self.xsk = None
            log.info("%s: %s detached", self.iface,
                     "XDP program" if self.info.backend == "xdp" else
                     "raw-socket backend")
        if self.punts:
            self.punts.close()      # its counters stay for stats()
        self.gateway.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # --- changes (the control socket's commands) -----------------------
    # Each is a transaction (control.changes): ConfigError for a bad
    # request, ChangeError when applying failed; either way the engine is
    # as it was.  Each applies by publishing new tables (established flows
    # keep their real server unless it is halted or removed) and is kept
    # as an operator change (ctl reload and a restart replay it).

    def service(self, vip):
        """The Service of vip: its name, its `ADDR:PORT/PROTO` text or a
        Vip.  ConfigError if none."""
        return svcs.find_service(self.services, vip)

    def add_vip(self, spec):
        """Add a VIP from a [[vip]] table (a dict, reals included); its
        label."""
        return self.changes.add_vip(spec)

    def del_vip(self, vip):
        """Remove a VIP: its traffic goes to the kernel again."""
        self.changes.del_vip(vip)

    def add_real(self, vip, real):
        """Add real (a Real or `ADDR[:PORT][@W]`) to vip; new flows may go
        to it once ARP knows its MAC (waited for, up to 5 s)."""
        self.changes.add_real(vip, real)

    def del_real(self, vip, key):
        """Remove a real server now; its flows are rescheduled."""
        self.changes.del_real(vip, key)

    remove_real = del_real

    def set_weight(self, vip, key, weight):
        """Set a real's weight (0 to 65535); 0 takes no new flows."""
        self.changes.set_weight(vip, key, weight)

    def drain(self, vip, key):
        """No new flows to the real; its established flows go on."""
        self.changes.set_state(vip, key, "drain")

    def halt(self, vip, key):
        """Out of the tables now: new and established flows leave it."""
        self.changes.set_state(vip, key, "halt")

    def online(self, vip, key):
        """Undo drain or halt."""
        self.changes.set_state(vip, key, "online")

    def forget(self, vip, real):
        """Drop the operator's changes of vip's real (`all`: the VIP's
        every one) and apply what the config file says; their labels."""
        return self.changes.forget(vip, real)

    def operator_changes(self):
        """Every change made through ctl that is kept, with its conflict
        with the config file if any (control.state)."""
        with self._lock:
            return self.changes.rows()

    def set_role(self, role, why=None):
        """Become "active" or "standby": `ha` (keepalived's notify scripts)
        or a lapsed lease (`why`, logged); see ha.HaState.set_role()."""
        with self._lock:
            # L7: the VIP addresses follow the role, before announcing
            self.l7.set_active(ha.parse_role(role, "ha: role") == "active")
            out = self.ha.set_role(role, self.services, self._announce, why)
            if self.punts:      # no reply of the old role leaves after this
                self.punts.settle()
            return out

    def renew_lease(self):
        """`ctl ha-renew`: ha.HaState.renew() once status() answered."""
        return self.ha.renew(self.status())

    def _announce(self):
        """Announce the VIPs, L4 and the L7 ones held (once started, while
        active); the VIPs as text."""
        v4, v6 = (a + b for a, b in zip(svcs.vip_addresses(self.services),
                                        self.l7.held()))
        if self.punts:
            self.punts.announce(v4, v6)
        self.gateway.announce()
        return [str(a) for a in v4 + v6]

    def reload(self):
        """Read the config file again, replay the operator's changes over
        it and apply the difference; returns what changed.  ConfigError
        (and nothing applied) when it is bad."""
        return self.changes.reload()

    def _changed(self, resolve=False):
        """Publish, steer and check what the services now say."""
        svcs.prune(self.state, svcs.real_keys(self.services))
        self._publish()
        if self.l7_services and not self.l7.haproxy and self._thread:
            self.l7.start(self.l7_services, self.state, self.health)
        self._l7_sync()
        if self.monitor:
            self._health_targets()
        if resolve and self._thread:
            # The control thread resolves the MACs and publishes again.
            self._refresh.wait(timeout=5)

    # --- health ---------------------------------------------------------

    def _health_targets(self):
        targets = svcs.health_targets(self.services)
        svcs.prune(self.health, targets)
        self.monitor.set_targets(targets)

    def _on_health(self, key, up, detail):
        with self._lock:
            self.health[key] = (up, detail)
            vip, real = key
            try:
                s = self.service(vip)
            except ConfigError:
                return          # removed meanwhile
            said = f"{'up' if up else 'DOWN'} ({detail})"
            log.warning("vip %s: real %s is %s%s", s.label, real, said,
                        "" if up else ON_DOWN_SAYS[s.on_down])
            self.events.add("health", s.label, real, said)
            self._publish()
            self._l7_sync()

    # --- publishing -----------------------------------------------------

    @property
    def l7_services(self):
        """The VIPs that HAProxy serves."""
        return svcs.l7(self.services)

    def _publish(self):
        """Tables from the effective services, the responders' VIPs and
        the steering (nothing before start(): it publishes)."""
        if self.core is None:
            return
        effective, self.fallback_active = svcs.effective(
            self.services, self.state, self.health)
        self.tables = self.core.publish_services(
            effective, self.hops.macs, self.hops.out_ifs)
        self.hops.explain(self.tables.unscheduled)
        self.views.retain(self.report.published())  # ledger.py, ctl zero
        if self.punts:
            self.punts.update_vips(*svcs.vip_addresses(self.services))
        if self.xsk and self.info:
            self._steer()

    def _steer(self):
        """What the XDP program sends us: the VIPs; for NAT, the answers
        of the real servers (from their addr:port); for SNAT, our port
        range."""
        vips, replies = svcs.steering(self.services)
        self.xsk.steer(vips, replies, self.snat)

    def _l7_sync(self):
        self.l7.sync(self.l7_services, self.state, self.health)

    # --- the control thread ---------------------------------------------

    def _control(self):
        """MAC refresh, announcements, stats file, the HAProxy watchdog,
        the data plane's errors: every TICK (the punted frames: the punt
        thread).  An error is logged and the loop carries on (ARP too)."""
        last_stats = last_l7 = time.monotonic()
        while not self._refresh.sleep(control_pause(self.ha), self._stop):
            self.ticks += 1
            now = time.monotonic()
            try:
                self.ha.tick(self.set_role)     # the lease, the gateway
                self.views.tick(now)            # ctl rate's samples (2 s)
                if self.ha.announcement_due():
                    with self._lock:
                        self._announce()
                if self._refresh.due():
                    self._refresh_and_publish()
                if self.stats_file and now - last_stats >= 1.0:
                    last_stats = now
                    self._write_stats()
                if now - last_l7 >= 1.0:
                    last_l7 = now
                    if self.l7.watchdog():
                        with self._lock:
                            self._l7_sync()
                for err in self.xsk.errors if self.xsk else ():
                    log.error("%s", err)
                if self.xsk:
                    self.xsk.errors.clear()
                    self.xsk.poll_check()   # busy polling that cannot work
            except PyfwdError as exc:       # logged, counted, carried on
                log.error("control: %s", exc)
            except OSError as exc:
                log.error("control: %s", exc)
            except Exception:               # a bug: said, and carried on:
                log.exception("control: unexpected error")  # ARP must go on

    def _refresh_and_publish(self):
        with self._lock:
            addresses = svcs.real_addresses(self.services)
        hops = self.hops.find(addresses)    # unlocked: it waits for ARP
        with self._lock:
            if self.hops.apply(hops):
                self._publish()
            self._refresh.done()

    # --- reports (control.report) ----------------------------------------

    def status(self):
        """Engine-wide facts: interfaces, pid, uptime, counts, modes."""
        return self.report.status()

    def show(self):
        """Every VIP with its real servers: weight, admin state, health,
        whether new flows go to it (and why not), live and new flows,
        frames and bytes."""
        with self._lock:
            return self.report.show()

    def stats(self):
        """A JSON-ready snapshot: the data plane's counters, per VIP and
        real server (as show()), per queue, ARP, the XDP/AF_XDP modes."""
        core = self.core.stats()
        with self._lock:    # the responders' dicts change under _publish
            return self.report.stats(core)

    def _write_stats(self):
        write_stats(self.stats_file, self.stats())


def control_pause(ha):
    """Seconds to the control thread's next round: TICK, or less when an
    announcement of `ha` (a HaState) falls due sooner (one is at start)."""
    due = ha.pending
    return min(TICK, max(0.0, due[0] - time.monotonic())) if due else TICK


__all__ = ["Engine"]
