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
the punted frames (ARP for the VIPs), keeps the real servers' MACs fresh
and announces the VIPs with gratuitous ARP.
"""

import array
import errno
import fcntl
import json
import logging
import os
import socket
import struct
import threading
import time

from pyroute2 import IPRoute

from . import arp
from .dataplane import Core, Xsk
from .errors import ConfigError, PyfwdError
from .service import Real, Vip
from .tables import Service

log = logging.getLogger("pyfwd")

TICK = 0.01             # control thread: punt drain period (s)
ARP_REFRESH = 5.0       # real servers' MACs (s)
GARP_REPEAT = (0.0, 1.0, 3.0)   # gratuitous ARP after start (s)


def interface(ifname):
    """(ifindex, mac bytes, rx queues) of an interface in this netns.

    Raises ConfigError naming the interface when it does not exist.
    """
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise ConfigError(f"interface {ifname!r}: no such interface "
                              "in this network namespace")
        link = ipr.get_links(idx[0])[0]
    mac = arp.mac_to_bytes(link.get_attr("IFLA_ADDRESS"))
    return idx[0], mac, rx_queues(ifname)


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


class Engine:
    """A running balancer on `iface` (see the module's docstring).

    Options: xdp_mode ("auto" | "native" | "generic"), copy_mode ("auto" |
    "copy" | "zerocopy"), busy_poll (µs of SO_BUSY_POLL, 0 = sleep in
    poll()), queues (default: every RX queue), flows (flow slots per
    queue), stats_file (JSON written every second and at stop).
    """

    def __init__(self, iface, services, *, xdp_mode="auto", copy_mode="auto",
                 busy_poll=0, queues=None, flows=1 << 20, stats_file=None,
                 arp_refresh=ARP_REFRESH):
        self.iface = iface
        vips = [s.vip for s in services]
        if len(set(vips)) != len(vips):
            dup = next(v for v in vips if vips.count(v) > 1)
            raise ConfigError(f"vip {dup}: configured twice")
        self.services = list(services)
        self.options = dict(xdp_mode=xdp_mode, copy_mode=copy_mode,
                            busy_poll=busy_poll, queues=queues, flows=flows)
        self.stats_file = stats_file
        self.arp_refresh = arp_refresh
        self.core = self.xsk = self.info = None
        self.macs = {}
        self.tables = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None
        self._sock = None
        self.responder = None
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
        queues = self.options["queues"] or rxq
        if not 1 <= queues <= rxq:
            raise ConfigError(f"queues {queues}: {self.iface} has {rxq} RX "
                              "queue(s)")
        self.mac = mac
        self.core = Core(mac=mac, workers=queues, flows=self.options["flows"])
        self.responder = arp.ArpResponder(mac, self._ipv4_vips())
        self._refresh_macs()
        self._publish()
        self.xsk = Xsk(self.core)
        try:
            self.info = self.xsk.open(
                ifindex, queues=queues, xdp_mode=self.options["xdp_mode"],
                copy_mode=self.options["copy_mode"],
                busy_poll_usecs=self.options["busy_poll"])
            self.xsk.steer([s.vip for s in self.services])
            self._sock = arp.ArpSocket(self.iface)
        except BaseException:
            self.xsk.close()
            raise
        log.info("%s: XDP program %d attached in %s mode, %d AF_XDP "
                 "socket(s) in %s mode, busy polling %s", self.iface,
                 self.info.prog_id, self.info.xdp_mode, self.info.queues,
                 self.info.copy_mode,
                 f"on ({self.options['busy_poll']} µs)" if
                 self.info.busy_poll else "off")
        for s in self.services:
            log.info("vip %s (%s, %s): %s", s.vip, s.mode, s.scheduler,
                     ", ".join(str(r) for r in s.reals) or "no real server")
        self.xsk.start()
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._control,
                                        name="pyfwd-control", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop forwarding and detach from the interface (idempotent)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None
        if self.stats_file and self.core:
            self._write_stats()
        if self.xsk:
            self.xsk.close()
            self.xsk = None
            log.info("%s: XDP program detached", self.iface)
        if self._sock:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # --- changes --------------------------------------------------------

    def service(self, vip):
        """The Service of vip (a Vip or its text); ConfigError if none."""
        if not isinstance(vip, Vip):
            vip = Vip.parse(vip)
        for s in self.services:
            if s.vip == vip:
                return s
        raise ConfigError(f"vip {vip}: not configured")

    def add_real(self, vip, real):
        """Add real (a Real or `ADDR[:PORT][@W]`) to vip; new flows may go
        to it at once.  ConfigError if it is there already."""
        if not isinstance(real, Real):
            real = Real.parse(real)
        with self._lock:
            s = self.service(vip)
            if any(r.key == real.key for r in s.reals):
                raise ConfigError(f"vip {s.vip}: real {real.key} is "
                                  "there already")
            s.reals.append(real)
            self._publish()
            wanted = self._refresh_count + 1
            self._refresh_wanted.set()
            # The control thread resolves its MAC and publishes again.
            self._refreshed.wait_for(lambda: self._refresh_count >= wanted,
                                     timeout=5)
        log.info("vip %s: added real %s", s.vip, real)

    def remove_real(self, vip, key):
        """Halt: remove the real server now; its flows are rescheduled."""
        with self._lock:
            s = self.service(vip)
            s.reals.remove(s.real(str(key)))
            self._publish()
        log.info("vip %s: removed real %s", s.vip, key)

    def set_weight(self, vip, key, weight):
        """Set a real's weight; 0 drains it (flows go on, no new ones)."""
        with self._lock:
            s = self.service(vip)
            old = s.real(str(key))
            new = Real(old.address, old.port, weight)
            s.reals[s.reals.index(old)] = new
            self._publish()
        log.info("vip %s: real %s weight %d -> %d", s.vip, key, old.weight,
                 weight)

    # --- inside ---------------------------------------------------------

    def _ipv4_vips(self):
        return [s.vip.address for s in self.services
                if s.vip.address.version == 4]

    def _refresh_macs(self):
        """Ask the kernel / the wire for every real's MAC (start only)."""
        addrs = {r.address for s in self.services for r in s.reals}
        v4 = [a for a in addrs if a.version == 4]
        self._apply_macs(arp.refresh(self.iface, v4) if v4 else {})

    def _apply_macs(self, found):
        """Take the MACs found; log what changed; True if any did."""
        addrs = {r.address for s in self.services for r in s.reals}
        macs = {a: found.get(a, self.macs.get(a)) for a in addrs}
        for a in addrs:
            old, new = self.macs.get(a), macs[a]
            if new is None and (old is not None or a not in self.macs):
                log.warning("real %s: MAC unknown (no ARP answer on %s): "
                            "not scheduled", a, self.iface)
            elif new is not None and new != old:
                log.info("real %s: MAC %s", a, arp.mac_to_str(new))
        changed = macs != self.macs
        self.macs = macs
        return changed

    def _publish(self):
        self.tables = self.core.publish_services(self.services, self.macs)
        if self.responder:
            self.responder.update_vips(self._ipv4_vips())

    def _control(self):
        """Punted frames, MAC refresh, gratuitous ARP, stats file."""
        garps = list(GARP_REPEAT)
        last_refresh = last_stats = time.monotonic()
        while not self._stop.wait(TICK):
            now = time.monotonic()
            try:
                self._answer_punts()
                if garps and now - self.started >= garps[0]:
                    garps.pop(0)
                    self._announce()
                if (self._refresh_wanted.is_set()
                        or now - last_refresh >= self.arp_refresh):
                    self._refresh_wanted.clear()
                    last_refresh = now
                    self._refresh_and_publish()
                if self.stats_file and now - last_stats >= 1.0:
                    last_stats = now
                    self._write_stats()
                for err in self.xsk.errors if self.xsk else ():
                    log.error("%s", err)
                if self.xsk:
                    self.xsk.errors.clear()
            except PyfwdError as exc:       # logged, counted, carried on
                log.error("control: %s", exc)
            except OSError as exc:
                log.error("control: %s", exc)

    def _refresh_and_publish(self):
        addrs = {r.address for s in self.services for r in s.reals}
        v4 = [a for a in addrs if a.version == 4]
        found = arp.refresh(self.iface, v4) if v4 else {}  # unlocked: slow
        with self._lock:
            if self._apply_macs(found):
                self._publish()
            self._refresh_count += 1
            self._refreshed.notify_all()

    def _answer_punts(self):
        frames = self.core.drain_punts()
        if not frames:
            return
        for reply in self.responder.handle_batch(frames):
            self._sock.send(reply)
        for vip, macs in self.responder.conflicts.items():
            for mac in macs:
                if (vip, mac) not in self._conflicts_logged:
                    self._conflicts_logged.add((vip, mac))
                    log.warning("ARP problem: %s answers ARP for VIP %s: "
                                "run `pyfwd realserver setup --vip %s` on "
                                "that real server", mac, vip, vip)

    def _announce(self):
        for addr in self._ipv4_vips():
            self._sock.send(arp.gratuitous(self.mac, addr))

    # --- counters -------------------------------------------------------

    def stats(self):
        """A JSON-ready snapshot: the data plane's counters, per VIP and
        real server (frames, bytes, flows), ARP, the XDP/AF_XDP modes."""
        with self._lock:
            core = self.core.stats()
            per_real = self.core.real_stats()
            flows = self.core.flows()
            vips = []
            for s in self.services:
                reals = []
                for r in s.reals:
                    rid = self.core.ids.get(s.vip, r.key)
                    mac = self.macs.get(r.address)
                    why = self.tables.unscheduled.get((s.vip, r.key))
                    reals.append({
                        "real": r.key, "weight": r.weight,
                        "mac": arp.mac_to_str(mac) if mac else None,
                        "scheduled": why is None, "why": why,
                        "flows": flows.get(rid, 0), **per_real.get(rid, {})})
                vips.append({"vip": str(s.vip), "mode": s.mode,
                             "scheduler": s.scheduler, "reals": reals})
        info = self.info.__dict__ if self.info else None
        return {"iface": self.iface, "pid": os.getpid(),
                "uptime": time.monotonic() - self.started
                if self.started else 0.0,
                "xsk": info, "core": core, "vips": vips,
                "queues": [{k: q[k] for k in ("rx", "tx", "tx_ring_full",
                                              "wakeups", "polls")}
                           for q in (self.core.stats(worker=i) for i in
                                     range(self.core.workers))],
                "arp": dict(self.responder.counters) if self.responder
                else {},
                "arp_conflicts": {str(v): sorted(m) for v, m in
                                  self.responder.conflicts.items()}
                if self.responder else {}}

    def _write_stats(self):
        tmp = f"{self.stats_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.stats(), f, indent=1)
        os.replace(tmp, self.stats_file)


def parse_services(vip_texts, real_texts, scheduler="maglev"):
    """Services from the command line: every --real serves every --vip
    (one VIP is the usual case)."""
    if not vip_texts:
        raise ConfigError("no --vip given (or use --config FILE)")
    reals = [Real.parse(t) for t in real_texts]
    return [Service(Vip.parse(v), list(reals), scheduler)
            for v in vip_texts]


__all__ = ["Engine", "interface", "parse_services"]
