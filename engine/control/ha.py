"""High availability: an active/passive pair elected by keepalived (VRRP).

pyfwd does no election of its own.  keepalived runs beside the engine on
each node and elects one master per VRRP instance; its notify scripts tell
the engine what it is:

    notify_master  -> pyfwd ctl -s SOCK ha active
    notify_backup  -> pyfwd ctl -s SOCK ha standby
    notify_fault   -> pyfwd ctl -s SOCK ha standby
    notify_stop    -> pyfwd ctl -s SOCK ha standby

A notify script runs once, at the transition: an engine that is down or
restarting then misses it.  So keepalived also tracks the engine
(vrrp_script running `pyfwd ctl -s SOCK ha-renew` every second): an
engine that does not answer twice in a row puts its node in FAULT, the
peer takes over, and when the engine answers again keepalived elects
again and runs the notify script of the state it lands in.  The engine is
assumed down until it first answers (init_fail), so a node whose engine
is not up yet never becomes master.

The other way round, the engine watches its keepalived: each `ha-renew`
renews the active role's lease (control.lease, [ha] lease seconds), and
an active engine whose lease runs out (its keepalived was killed and ran
no notify script) stands down.  Its next TRACK_FALL checks then fail, so
a keepalived that was only late goes through FAULT and elects again
instead of staying master over a standby engine.

NAT: the real servers' default gateway is an address that follows the
role ([ha] gateway, control.gateway): added on the inside interface with
gratuitous ARP by the active node, removed by the standby one.

Both nodes run the whole engine (XDP, tables, health checks, control
socket).  Only the active one answers ARP for the VIPs; on becoming active
it sends the gratuitous ARP burst (GARP_REPEAT), so clients and
switches move to its MAC at once.  A DR flow that lands on the new node
goes to the same real server because Maglev tables built from the same
inputs are identical on every node.  keepalived has no virtual_ipaddress
here: in DR the VIP must not be a kernel address of the balancer (pyfwd
owns ARP for it), keepalived only elects.  That also fixes the protocol:
VRRPv2, whole-second adverts (keepalived 2.2 refuses a VRRPv3 instance
without a virtual_ipaddress: "No VIP specified; at least one is
required").

No sockets, no files: role parsing, the [ha] table (`HaOptions`), the
keepalived.conf text, and `HaState`, the engine's role with its counters,
its lease, the peers it saw and the schedule of its announcements (the
frames are sent by control.punts and control.gateway).

    parse_role("standby")                       # -> "standby"
    ha = HaState("standby", HaOptions.from_dict({"lease": 2.5}))
    ha.set_role("active", services, announce)   # announce() sends the burst
    ha.renew()                                  # `ctl ha-renew`
    ha.tick(engine.set_role)                    # stands down on a lapse
    keepalived_conf(KeepalivedSpec("eth0", 51, 150,
                                   "/run/pyfwd/pyfwd.sock",
                                   "/usr/local/bin/pyfwd"))
"""

import ipaddress
import logging
import re
import time
from dataclasses import dataclass

from .lease import LEASE, Lease, check_seconds
from ..errors import ConfigError, PyfwdError

__all__ = ["ROLES", "GARP_REPEAT", "parse_role", "HaOptions",
           "parse_gateways", "HaState", "KeepalivedSpec", "keepalived_conf"]

log = logging.getLogger("pyfwd")

ROLES = ("active", "standby")
GARP_REPEAT = (0.0, 1.0, 3.0)   # announcements after start/takeover (s)
MAX_PEERS = 64                  # MACs kept in HaState.peers (oldest out)

# keepalived splits a notify command at unquoted spaces; paths and names
# with spaces or quotes would need quoting rules we do not want to get
# wrong in a failover path.
_WORD = re.compile(r"[^\s'\"\\{}#!]+")
_IFNAME = re.compile(r"[^\s/]{1,15}")
_INSTANCE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_role(value, where="role"):
    """`value` if it is "active" or "standby"; ConfigError naming `where`
    and the value otherwise."""
    if not isinstance(value, str) or value not in ROLES:
        raise ConfigError(f"{where} = {value!r}: expected \"active\" or "
                          "\"standby\"")
    return value




def parse_gateways(value, where="ha.gateway"):
    """The real servers' gateway: "ADDR[/PREFIX]" or a list of them (an
    IPv4 and an IPv6 one, say) -> a tuple of ip_interface (no prefix: a
    host address, /32 or /128).  ConfigError naming `where` and the value
    for anything but unicast host addresses, or one given twice."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or \
            not all(isinstance(t, str) for t in texts):
        raise ConfigError(f"{where} = {value!r}: expected \"ADDR/PREFIX\" "
                          "or a list of them")
    out = []
    for text in texts:
        try:
            iface = ipaddress.ip_interface(text)
        except ValueError:
            raise ConfigError(f"{where} = {text!r}: expected an address "
                              "with its prefix, e.g. \"192.168.50.1/24\"") \
                from None
        a, net = iface.ip, iface.network
        if a.is_multicast or a.is_loopback or a.is_unspecified or \
                a.is_link_local or (net.num_addresses > 2 and a in (
                    net.network_address, net.broadcast_address)):
            raise ConfigError(f"{where} = {text!r}: expected a unicast "
                              "host address of its subnet")
        if any(o.ip == a for o in out):
            raise ConfigError(f"{where}: {a} given twice")
        out.append(iface)
    return tuple(out)


@dataclass(frozen=True)
class HaOptions:
    """The [ha] table of the config file:

        [ha]
        lease = 2.5                     # s, 0: off (control.lease)
        gateway = "192.168.50.1/24"     # NAT: the real servers' gateway

    lease: seconds of the active role's lease that keepalived's check
    renews; gateway: tuple of ip_interface, the addresses the active node
    holds on the inside interface (inside_iface, or iface in one-arm) for
    the real servers to route their replies through (control.gateway)."""

    lease: float = LEASE
    gateway: tuple = ()

    KEYS = ("lease", "gateway")

    @classmethod
    def from_dict(cls, table, where="ha"):
        """HaOptions from the [ha] table; ConfigError naming the key."""
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table, got {table!r}")
        for key in table:
            if key not in cls.KEYS:
                raise ConfigError(f"{where}.{key}: unknown key (expected "
                                  f"one of {', '.join(cls.KEYS)})")
        lease = check_seconds(table.get("lease", LEASE), f"{where}.lease")
        gateway = parse_gateways(table["gateway"], f"{where}.gateway") \
            if "gateway" in table else ()
        return cls(lease, gateway)


class HaState:
    """This node's role and what came of it.

    role: "active" (answers ARP and NDP for the VIPs, announces them) or
    "standby"; since: wall-clock time of the last change (or of the
    start); counters: transitions, arp_withheld and ndp_withheld (requests
    for a VIP left unanswered while standby), garp_bursts (announcements
    sent), split_brain (a MAC seen holding a VIP while this node was
    standby still claims it after this node became active), lease_expired
    (stood down because keepalived's check stopped renewing the lease),
    peers_evicted (peers pushed out of the table);
    peers: {MAC text: VIP} seen holding a VIP while standby, the
    MAX_PEERS heard from most recently (forged claims cannot grow it); the
    announcement schedule (GARP_REPEAT after the start and after each
    takeover); options: the HaOptions ([ha]); lease: the role's
    control.lease.Lease (of options.lease seconds); gateway: the real
    servers' gateway that follows the role (a control.gateway.Gateway,
    which sets itself here when options.gateway has addresses), or None.

    clock: monotonic seconds (the schedule); wall: epoch seconds (since);
    events: where set_role() records a change (control.events), or None.
    Not thread-safe: the engine calls it under its lock, except
    announcement_due() and lease_lapsed(), which its control thread calls
    alone, renew(), which keepalived's check calls at once (see
    control.lease on why that is sound), and withheld(), peer_claims() and
    split_brain(), which the punt thread calls alone (control.punts; their
    counters and peers are its own, read by status() as copies).
    """

    COUNTERS = ("transitions", "arp_withheld", "ndp_withheld",
                "garp_bursts", "split_brain", "lease_expired",
                "peers_evicted")

    def __init__(self, role="active", options=None, *, clock=time.monotonic,
                 wall=time.time, events=None):
        self.role = parse_role(role)
        self.events = events    # a control.events.EventLog, or None
        self._clock, self._wall = clock, wall
        self.since = wall()
        self.counters = dict.fromkeys(self.COUNTERS, 0)
        self.peers = {}
        self._due = []          # clock times of the announcements due
        self.options = options or HaOptions()
        self.lease = Lease(self.options.lease, clock=clock)
        self.gateway = None
        self._refuse = 0        # renewals to refuse after a lapse

    @property
    def active(self):
        return self.role == "active"

    @property
    def pending(self):
        """The clock times of the announcements still due."""
        return tuple(self._due)

    def start(self):
        """The engine started: an active node announces GARP_REPEAT from
        now (the first at the next control tick); a standby one says so."""
        now = self._clock()
        self._due = [now + d for d in GARP_REPEAT] if self.active else []
        if not self.active:
            log.info("role standby: not answering ARP for the VIPs "
                     "(`pyfwd ctl ha active` or keepalived makes this "
                     "node active)")

    def announcement_due(self):
        """True (once per entry of the schedule) when an announcement is
        due now."""
        due = self._due         # set_role() may replace it meanwhile
        if due and self._clock() >= due[0]:
            due.pop(0)
            return True
        return False

    def renew(self, status=None):
        """keepalived's check (`ctl ha-renew`, once the engine's `status`
        answered): renew the lease; {"role", "lease": Lease.status()}.
        PyfwdError for the TRACK_FALL
        renewals after this node stood down on a lapsed lease: a
        keepalived that was only late (still master, so no notify script
        would come) then goes through FAULT and elects again."""
        if self._refuse:
            self._refuse -= 1
            raise PyfwdError(
                "ha-renew: this node stood down when its lease ran out; "
                f"failing keepalived's check {self._refuse + 1} more "
                "time(s) so that it elects again")
        self.lease.renew()
        return {"role": self.role, "lease": self.lease.status()}

    def tick(self, set_role):
        """From the control thread: stand down through set_role("standby",
        reason) when the lease lapsed (lease_lapsed()); renew the
        gateway's lifetime (Gateway.tick())."""
        why = self.lease_lapsed()
        if why:
            set_role("standby", why)
        if self.gateway is not None:
            self.gateway.tick()

    def lease_lapsed(self):
        """Why an active node must stand down now (its armed lease ran
        out: counted, and the next renewals refused, see renew()), or
        None.  A lapse while standby only disarms the lease."""
        if not self.lease.lapsed() or not self.active:
            return None
        self.counters["lease_expired"] += 1
        self._refuse = TRACK_FALL
        return (f"lease expired: keepalived's check renewed nothing for "
                f"{self.lease.seconds:g} s (keepalived killed?)")

    def set_role(self, role, services, announce, reason=None):
        """Become `role` ("active" or "standby") for `services`.

        Active answers ARP and NDP for the VIPs: it calls announce() at
        once (it sends the burst, gratuitous ARP and unsolicited neighbour
        advertisements, and returns the VIPs it covers, as text) and
        schedules the rest of GARP_REPEAT; asked again while active it
        announces again (not a transition).  Standby stops answering and
        announcing at once and clears the schedule: the engine calls this
        under its lock and replies leave under it, so none of the old
        role leaves after this returns.  Everything else runs on.  The
        gateway (if any) follows: held when active (announce() announces
        it), dropped when standby.  reason: why, when not asked through
        the control socket (logged).  Returns {"role", "previous",
        "changed", "announce": [VIPs]}.  ConfigError for a bad role.
        """
        role = parse_role(role, "ha: role")
        previous = self.role
        changed = role != previous
        if changed:
            self.role = role
            self.since = self._wall()
            self.counters["transitions"] += 1
        now = self._clock()
        # the first burst leaves now, from the caller's thread: the control
        # loop may be busy refreshing MACs for up to a second
        self._due = [now + d for d in GARP_REPEAT if d > 0] \
            if self.active else []
        if self.gateway is not None:
            self.gateway.sync()
        announced = announce() if self.active else []
        if changed:
            if self.events is not None:
                self.events.add("ha", text=f"{previous} -> {role}" +
                                (f" ({reason})" if reason else ""))
            log.warning("ha: %s -> %s%s%s", previous, role,
                        f" ({reason})" if reason else "",
                        f": announcing {', '.join(announced) or 'no VIP'}"
                        if self.active else
                        ": not answering ARP/NDP for the VIPs")
        elif announced:
            log.info("ha: active already: announcing %s again",
                     ", ".join(announced))
        return {"role": role, "previous": previous, "changed": changed,
                "announce": announced}

    def withheld(self, arp=0, ndp=0):
        """Count requests for a VIP left unanswered while standby."""
        self.counters["arp_withheld"] += arp
        self.counters["ndp_withheld"] += ndp

    def announced(self):
        """Count one announcement burst sent."""
        self.counters["garp_bursts"] += 1

    def peer_claims(self, mac, vip):
        """While standby: `mac` holds `vip`; it is the active node (logged
        the first time)."""
        if mac not in self.peers:
            if len(self.peers) >= MAX_PEERS:
                del self.peers[next(iter(self.peers))]
                self.counters["peers_evicted"] += 1
                if self.counters["peers_evicted"] == 1:
                    log.warning("ha: more than %d MACs claim the VIPs (a "
                                "flood of forged claims?): the oldest are "
                                "forgotten and no longer logged",
                                MAX_PEERS)
            else:
                log.info("ha: VIP %s is held by %s (the active node; this "
                         "one is standby)", vip, mac)
        else:
            del self.peers[mac]     # to the end: heard from most recently
        self.peers[mac] = str(vip)

    def split_brain(self, mac, vip):
        """While active, `mac` claims `vip`: True (logged and counted) if
        it was the active node while this one was standby (two active
        nodes?), False if it is no peer of ours."""
        if mac not in self.peers:
            return False
        self.counters["split_brain"] += 1
        log.warning("ha: %s, active while this node was standby, still "
                    "claims VIP %s: two active nodes? check keepalived on "
                    "both", mac, vip)
        return True

    def status(self):
        """{"role", "since" (epoch seconds of the last change, or of the
        start), "for" (seconds in this role), "transitions",
        "arp_withheld", "ndp_withheld", "garp_bursts", "split_brain",
        "lease_expired", "peers" ({MAC: VIP} seen holding a VIP while
        standby), "lease" (Lease.status()), and "gateway" when the engine
        has one (control.gateway.Gateway.status())}."""
        out = {"role": self.role, "since": round(self.since, 3),
               "for": round(self._wall() - self.since, 3),
               **self.counters, "peers": dict(self.peers),
               "lease": self.lease.status()}
        if self.gateway is not None:
            out["gateway"] = self.gateway.status()
        return out


# The engine check keepalived runs (vrrp_script): every TRACK_INTERVAL s,
# TRACK_TIMEOUT s to answer, FAULT after TRACK_FALL failures in a row, back
# after TRACK_RISE successes.  A dead engine is noticed within about
# TRACK_FALL * TRACK_INTERVAL s; a hung one within TRACK_FALL *
# TRACK_TIMEOUT s.  `ctl ha-renew` (the engine's status, then the lease
# renewed) does not wait behind reload or add-vip (control.server), so a
# long reload is not taken for a dead engine.
TRACK_INTERVAL = 1
TRACK_TIMEOUT = 2
TRACK_FALL = 2
TRACK_RISE = 1


@dataclass(frozen=True)
class KeepalivedSpec:
    """What keepalived_conf() needs.

    iface: the interface VRRP runs on (the engine's); vrid: the virtual
    router id, 1..255, the same on both nodes and unique on the segment;
    priority: 1..254, higher wins (give the preferred node the higher one);
    socket: the engine's control socket; pyfwd: the absolute path of the
    pyfwd program keepalived runs; peers: the other node's address(es) for
    unicast VRRP (empty: multicast 224.0.0.18); advert_int: whole seconds
    between adverts, 1..255 (VRRPv2; a dead master is noticed after about 3
    of them); instance: the vrrp_instance name; script_security: emit
    enable_script_security (keepalived then refuses a notify program that a
    non-root user could replace: keep it on in production); nopreempt: a
    recovered higher-priority node stays backup instead of taking the
    master role back (no second switch-over, see keepalived_conf()).
    """

    iface: str
    vrid: int
    priority: int
    socket: str
    pyfwd: str
    peers: tuple = ()
    advert_int: int = 1
    instance: str = "pyfwd"
    script_security: bool = True
    nopreempt: bool = False

    def check(self):
        """ConfigError naming the first bad field."""
        if not isinstance(self.iface, str) or \
                not _IFNAME.fullmatch(self.iface):
            raise ConfigError(f"iface {self.iface!r}: expected an interface "
                              "name (1-15 characters, no spaces or /)")
        if not _int_in(self.vrid, 1, 255):
            raise ConfigError(f"vrid {self.vrid!r}: expected 1 to 255 (the "
                              "same on both nodes, unique on the segment)")
        if not _int_in(self.priority, 1, 254):
            raise ConfigError(f"priority {self.priority!r}: expected 1 to "
                              "254 (higher wins; 255 is for an address "
                              "owner, which pyfwd never is)")
        for what, path in (("socket", self.socket), ("pyfwd", self.pyfwd)):
            if not isinstance(path, str) or not path.startswith("/") or \
                    not _WORD.fullmatch(path):
                raise ConfigError(f"{what} {path!r}: expected an absolute "
                                  "path without spaces or quotes (keepalived "
                                  "splits notify commands at spaces)")
        for p in self.peers:
            try:
                ipaddress.IPv4Address(p)
            except ValueError:
                raise ConfigError(f"peer {p!r}: expected the other node's "
                                  "IPv4 address") from None
        if not _int_in(self.advert_int, 1, 255):
            raise ConfigError(f"advert_int {self.advert_int!r}: expected "
                              "whole seconds, 1 to 255 (VRRPv2; keepalived "
                              "runs sub-second VRRPv3 adverts only with a "
                              "virtual_ipaddress, which pyfwd cannot have)")
        if not isinstance(self.instance, str) or \
                not _INSTANCE.fullmatch(self.instance):
            raise ConfigError(f"instance {self.instance!r}: expected letters, "
                              "digits, '_', '.' or '-'")


def _int_in(value, lo, hi):
    return isinstance(value, int) and not isinstance(value, bool) and \
        lo <= value <= hi


def keepalived_conf(spec):
    """keepalived.conf text (global_defs, the engine check and one
    vrrp_instance) that makes keepalived elect and tell the engine its
    role.  ConfigError on a bad spec (see KeepalivedSpec).

    Both nodes start as BACKUP, so priority decides and no node claims the
    master role before it has heard the other.  The instance tracks the
    engine check: weight 0, so a failing engine means FAULT (notify_fault
    asks the engine for standby, which fails harmlessly when it is dead),
    not a lower priority.  nopreempt (it needs state BACKUP, as here)
    leaves a recovered higher-priority node backup: without it that node
    takes the master role back as soon as it is up again, a second
    switch-over with its own outage of a few adverts.
    """
    spec.check()
    ctl = f"{spec.pyfwd} ctl -s {spec.socket}"
    check = f"chk_{spec.instance}"
    lines = [
        "# keepalived.conf for a pyfwd active/passive pair (pyfwd ha",
        "# keepalived-conf).  The same on both nodes but for priority.",
        "# No virtual_ipaddress: pyfwd answers ARP for the VIPs itself",
        "# when active; keepalived only elects.",
        "global_defs {",
        "    # scripts run as root (the control socket is 0600)",
        "    script_user root",
    ]
    if spec.script_security:
        lines.append("    # ... and only if no other user can replace them")
        lines.append("    enable_script_security")
    lines += [
        "}",
        "",
        "# The engine answers on its control socket, or this node is in",
        "# FAULT and the other one takes over.  Assumed down until the",
        "# first answer.  Each answer renews the engine's lease: an active",
        "# engine that hears nothing for [ha] lease seconds stands down.",
        f"vrrp_script {check} {{",
        f"    script \"{ctl} ha-renew\"",
        f"    interval {TRACK_INTERVAL}",
        f"    timeout {TRACK_TIMEOUT}",
        f"    fall {TRACK_FALL}",
        f"    rise {TRACK_RISE}",
        "    init_fail",
        "}",
        "",
        f"vrrp_instance {spec.instance} {{",
        "    state BACKUP",
        f"    interface {spec.iface}",
        f"    virtual_router_id {spec.vrid}",
        f"    priority {spec.priority}",
        f"    advert_int {spec.advert_int}",
    ]
    if spec.nopreempt:
        lines.append("    nopreempt")
    if spec.peers:
        lines.append("    unicast_peer {")
        lines += [f"        {p}" for p in spec.peers]
        lines.append("    }")
    lines += [
        "    track_script {",
        f"        {check}",
        "    }",
        f"    notify_master \"{ctl} ha active\"",
        f"    notify_backup \"{ctl} ha standby\"",
        f"    notify_fault \"{ctl} ha standby\"",
        f"    notify_stop \"{ctl} ha standby\"",
        "}",
    ]
    return "\n".join(lines) + "\n"
