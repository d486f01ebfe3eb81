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
(vrrp_script running `pyfwd ctl -s SOCK status` every second): an engine
that does not answer twice in a row puts its node in FAULT, the peer takes
over, and when the engine answers again keepalived elects again and runs
the notify script of the state it lands in.  The engine is assumed down
until it first answers (init_fail), so a node whose engine is not up yet
never becomes master.

Both nodes run the whole engine (XDP, tables, health checks, control
socket).  Only the active one answers ARP for the VIPs; on becoming active
it sends the gratuitous ARP burst (engine.GARP_REPEAT), so clients and
switches move to its MAC at once.  A DR flow that lands on the new node
goes to the same real server because Maglev tables built from the same
inputs are identical on every node.  keepalived has no virtual_ipaddress
here: in DR the VIP must not be a kernel address of the balancer (pyfwd
owns ARP for it), keepalived only elects.  That also fixes the protocol:
VRRPv2, whole-second adverts (keepalived 2.2 refuses a VRRPv3 instance
without a virtual_ipaddress: "No VIP specified; at least one is
required").

Pure: role parsing and the keepalived.conf text; no sockets, no files.

    parse_role("standby")                       # -> "standby"
    keepalived_conf(KeepalivedSpec("eth0", 51, 150,
                                   "/run/pyfwd/pyfwd.sock",
                                   "/usr/local/bin/pyfwd"))
"""

import ipaddress
import re
from dataclasses import dataclass

from pyfwd.errors import ConfigError

__all__ = ["ROLES", "parse_role", "check_role", "KeepalivedSpec",
           "keepalived_conf"]

ROLES = ("active", "standby")

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


def check_role(role, services, where="role"):
    """ConfigError if `role` cannot serve `services` (Service objects): a
    standby engine with L7 VIPs.  HAProxy's VIP addresses are on the
    interface, so the kernel answers ARP for them whatever pyfwd's role,
    and both nodes would."""
    if role != "standby":
        return
    l7 = [s.label for s in services if s.mode == "l7"]
    if l7:
        raise ConfigError(f"{where} standby: L7 VIP(s) {', '.join(l7)} are "
                          "addresses on the interface and the kernel answers "
                          "ARP for them whatever the role, so both nodes "
                          "would; high availability covers L4 VIPs for now")


# The engine check keepalived runs (vrrp_script): every TRACK_INTERVAL s,
# TRACK_TIMEOUT s to answer, FAULT after TRACK_FALL failures in a row, back
# after TRACK_RISE successes.  A dead engine is noticed within about
# TRACK_FALL * TRACK_INTERVAL s; a hung one within TRACK_FALL *
# TRACK_TIMEOUT s.  `ctl status` does not wait behind reload or add-vip
# (control.py), so a long reload is not taken for a dead engine.
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
        "# first answer.",
        f"vrrp_script {check} {{",
        f"    script \"{ctl} status\"",
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
