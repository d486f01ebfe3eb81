"""The engine's BGP speaker: which VIPs to announce, and BIRD doing it.

    bgp = BgpSpeaker(options, "eth0")
    bgp.start()                           # BIRD up, nothing announced
    bgp.sync(["10.0.0.100"])              # announce exactly these
    bgp.status()                          # sessions and prefixes
    bgp.stop()                            # BIRD ends: Cease to its peers

`announceable` is the rule, pure: a VIP address is announced while the
node is active (HA), the engine alive (every data-plane loop and thread
beating: control.liveness) and one of the VIP's services can take a new
flow (a real or the fallback scheduled).  `follow(engine)` applies it
every PERIOD from a thread of its own (`pyfwd start` runs it beside the
control socket and the metrics server): the engine knows nothing of BGP
but `engine.bgp`, which its reports read.  stop() ends the thread first,
then BIRD.
"""

import ipaddress
import logging
import os
import tempfile
import threading
import time

from .bird import Bird
from .birdsock import BirdError, parse_protocols, parse_routes
from .render import peer_name, prefixes, render
from ..l7.sync import RUN_DIR, paths
from ...errors import ConfigError, PyfwdError
from ...model import Vip
from ...neighbours.kernel import primary_ipv4

log = logging.getLogger("pyfwd.bgp")

PERIOD = 0.25           # s between two looks at the engine
WATCHDOG = 1.0          # s between two checks that BIRD runs


def announceable(vips, *, active=True, alive=True, l7_up=False):
    """The VIP addresses to announce, sorted text.

    @param vips the engine's show(): a VIP counts when one of its rows (a
        real, or the fallback when it is in) is scheduled (takes new
        flows: not halted, drained, down or without a MAC) with a weight;
        an L7 VIP only while HAProxy runs (l7_up)
    @param active the node's HA role is active
    @param alive the engine's liveness found nothing wrong
    """
    if not (active and alive):
        return []
    out = set()
    for v in vips:
        if v.get("mode") == "l7" and not l7_up:
            continue
        if any(r.get("scheduled") and r.get("weight")
               for r in v.get("reals") or ()):
            out.add(ipaddress.ip_address(Vip.parse(v["vip"]).address))
    return [str(a) for a in sorted(out, key=lambda a: (a.version, a))]


def engine_wants(engine):
    """announceable() of a running control.engine.Engine."""
    return announceable(engine.show(), active=engine.role == "active",
                        alive=not engine.liveness(),
                        l7_up=engine.haproxy is not None)


def check_config(options, addresses):
    """`pyfwd check-config`'s word on [bgp]: the bird.conf that announces
    every VIP address, checked by `bird -p` when BIRD is installed; a note
    (str).  ConfigError with BIRD's message when it refuses the text."""
    if not options.enabled:
        return None
    with tempfile.TemporaryDirectory(prefix="pyfwd-bird-") as d:
        bird = Bird(os.path.join(d, "bird.conf"), os.path.join(d, "ctl"))
        try:
            bird.check_binary()
        except ConfigError as exc:
            return f"bgp: {exc}: not checked by BIRD"
        bird.validate(render(options, options.router_id or "192.0.2.1",
                             addresses))
    return (f"bgp: AS {options.local_as}, {len(options.peers)} peer(s); "
            "BIRD accepts its configuration")


class BgpSpeaker:
    """BIRD for one engine (see the module's docstring).  bird: a Bird
    (tests give a fake)."""

    def __init__(self, options, iface, bird=None):
        self.options = options
        self.iface = iface
        # HAProxy's naming (per interface and namespace), "bird-" for it
        base = paths(iface, RUN_DIR).replace("/haproxy-", "/bird-")
        self.bird = bird or Bird(f"{base}.conf", f"{base}.ctl")
        self.router_id = options.router_id
        self.announced = None       # what BIRD was last told (list)
        self.changes = 0            # announcements changed (a counter)
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        """Start BIRD announcing nothing.  ConfigError when the router id
        cannot be found or BIRD is missing or refuses the config."""
        if self.router_id is None:
            addr = primary_ipv4(self.iface)
            if addr is None:
                raise ConfigError(f"bgp.router_id: {self.iface} has no IPv4 "
                                  "address to take it from; give one")
            self.router_id = str(addr)
        os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
        self.bird.start(self._text([]))
        self.announced = []

    def _text(self, announce):
        return render(self.options, self.router_id, announce)

    def sync(self, announce):
        """Announce exactly `announce` (VIP addresses); True when that
        changed what BIRD announces.  A refusal is logged, not raised (the
        control thread must go on)."""
        if self.announced is None:
            return False
        announce = list(announce)
        if announce == self.announced:
            return False
        try:
            self.bird.configure(self._text(announce))
        except PyfwdError as exc:
            log.error("bgp: %s", exc)
            return False
        gone = sorted(set(self.announced) - set(announce))
        new = sorted(set(announce) - set(self.announced))
        if new:
            log.warning("bgp: announcing %s", ", ".join(new))
        if gone:
            log.warning("bgp: withdrawing %s", ", ".join(gone))
        self.announced = announce
        self.changes += 1
        return True

    def watchdog(self):
        """Start BIRD again if it died (True then): it announces what it
        was last told."""
        if self.announced is None:
            return False
        try:
            return self.bird.ensure_running()
        except PyfwdError as exc:
            log.error("bgp: %s", exc)
            return False

    def follow(self, engine, wants=engine_wants):
        """Announce what wants(engine) says, every PERIOD, from a thread
        (a look that fails is logged; the next one tries again)."""
        def run():
            last = 0.0
            while not self._stop.wait(PERIOD):
                try:
                    if time.monotonic() - last >= WATCHDOG:
                        last = time.monotonic()
                        self.watchdog()
                    self.sync(wants(engine))
                except Exception:       # a bug: said, and carried on
                    log.exception("bgp: unexpected error")
        self._thread = threading.Thread(target=run, name="pyfwd-bgp",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """End BIRD: its peers get a Cease and withdraw every VIP."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None
        if self.announced is not None:
            log.info("bgp: stopping BIRD (withdraws %s)",
                     ", ".join(self.announced) or "nothing")
        self.bird.stop()
        self.announced = None

    def status(self):
        """{"local_as", "router_id", "hold_time", "daemon" ("running" |
        "down"), "announced": [prefix...] (what pyfwd asks),
        "sessions": [{"peer", "as", "state", "info", "exported"}]}: state
        is BGP's ("Established", "Active", "Idle" ...; "down" when BIRD
        does not answer), exported the prefixes BIRD sent that peer."""
        o = self.options
        running = self.announced is not None and self.bird.running()
        protos = {}
        if running:
            try:
                protos = parse_protocols(
                    self.bird.sock.call("show protocols")[1])
            except BirdError as exc:
                log.warning("bgp: %s", exc)
                running = False
        sessions = []
        for i, p in enumerate(o.peers):
            row = protos.get(peer_name(i))
            info = (row or {}).get("info", "")
            state = info.split()[0] if info else \
                (row["state"] if row else "down")
            exported = []
            if state == "Established":
                try:
                    exported = parse_routes(self.bird.sock.call(
                        f"show route export {peer_name(i)}")[1])
                except BirdError:
                    exported = []
            sessions.append({"peer": p.address, "as": p.asn,
                             "state": state,
                             "info": " ".join(info.split()[1:]),
                             "exported": exported})
        announced = prefixes(self.announced or [])
        return {"local_as": o.local_as, "router_id": self.router_id,
                "hold_time": o.hold_time,
                "daemon": "running" if running else "down",
                "restarts": self.bird.restarts,
                "announced": announced[4] + announced[6],
                "sessions": sessions}


__all__ = ["BgpSpeaker", "announceable", "engine_wants", "check_config"]
