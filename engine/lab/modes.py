"""The forwarding modes in a namespace lab, shared by every lab lesson.

`pyfwd lab demo`, `lab trace`, `lab arp-problem` and the PACS workload all
need the same three things: the lab topology a mode runs in, the real
servers prepared for it, and the balancer started in the lab's lb
namespace.  This module says them once:

=====  =========  ==========================================================
mode   lab        what the balancer does
=====  =========  ==========================================================
dr     one-arm    rewrites the destination MAC; each real holds the VIP on
                  lo (``pyfwd realserver setup``) and answers directly
nat    two-arm    rewrites the destination address:port and back; the
                  reals' default route is the balancer
snat   one-arm    also rewrites the source to the balancer's own address
tun    tun        wraps the packet in IPIP to the real, on another subnet
                  behind a router (``pyfwd realserver setup --tun``), which
                  answers directly
l7     one-arm    HAProxy, run by the engine, terminates the connection
=====  =========  ==========================================================

A `Listener` is one VIP port and the real servers' port behind it.  DR
and TUN cannot translate ports (the packet reaches the real unchanged),
so their listeners' real port is the VIP port.
"""

import contextlib
import select
import subprocess
from dataclasses import dataclass

from ..errors import ConfigError, LabError
from . import whoami
from .programs import PYFWD, stop
from ..model import DIRECT_MODES, MODES

__all__ = ["VIP", "MODES", "TOPOLOGY", "WHOAMI_PORT", "Listener",
           "web_listener", "setup_reals", "services", "balancer", "curl",
           "parse_whoami", "mac_owners", "start_whoami", "whoami_servers",
           "stop_all"]

VIP = "10.0.0.100"
TOPOLOGY = {"dr": "one-arm", "nat": "two-arm", "snat": "one-arm",
            "tun": "tun", "l7": "one-arm"}
# How the lab's TUN real servers take the outer header off: pyfwd's XDP
# decapsulation works on any kernel (the CI's has no ipip device).
TUN_SETUP = ["--tun", "--decap", "xdp", "--iface", "eth0"]
WHOAMI_PORT = 8080
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Listener:
    """A VIP port and the real servers' port behind it (TCP)."""

    port: int
    real_port: int
    vip: str = VIP
    l7_mode: str = "http"       # l7 only: "http" or "tcp"


def web_listener(mode: str, real_port: int = WHOAMI_PORT) -> Listener:
    """The demo's HTTP service: VIP:80 to real:8080, but VIP:8080 in DR
    and TUN (no port translation there)."""
    _check_mode(mode)
    return Listener(real_port if mode in DIRECT_MODES else 80, real_port)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"lab mode {mode!r}: expected one of "
                          f"{', '.join(MODES)}")


def setup_reals(lab, vips=(VIP,), roles=None, timeout=30.0,
                tun=False) -> dict:
    """`pyfwd realserver setup --vip V` on each real server (all of the lab's
    by default), as an operator runs it: the VIP on lo, ARP for it off
    (tun: `--tun`, TUN_SETUP).  Returns {role: what the command printed};
    LabError if it fails."""
    said = {}
    for role in lab.reals if roles is None else roles:
        for vip in vips:
            argv = PYFWD + ["realserver", "setup", "--vip", vip] + \
                (TUN_SETUP if tun else [])
            try:
                r = lab.run(role, argv, capture_output=True, text=True,
                            timeout=timeout)
            except subprocess.TimeoutExpired:
                raise LabError(f"realserver setup on {role}: no answer in "
                               f"{timeout:g} s") from None
            if r.returncode != 0:
                raise LabError(f"realserver setup on {role}: "
                               f"{(r.stderr or r.stdout).strip()}")
            said[role] = said.get(role, "") + r.stdout
    return said


def curl(lab, role, url, timeout=5.0, args=()):
    """GET url with curl from role's namespace: (True, body) or (False,
    why).  `args` go before the URL (e.g. ("-o", "/dev/null"))."""
    argv = ["curl", "-sS", "--max-time", f"{timeout:g}", *args, url]
    try:
        r = lab.run(role, argv, capture_output=True, text=True,
                    timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return False, f"curl did not finish in {timeout + 5:g} s"
    return r.returncode == 0, (r.stdout if r.returncode == 0
                               else r.stderr).strip()


def parse_whoami(text) -> dict:
    """A whoami answer as {"node", "client" (address, no port), "local",
    "xff" (None when absent)}; missing keys are "?"."""
    kv = dict(p.split("=", 1) for p in text.split() if "=" in p)
    return {"node": kv.get("node", "?"),
            "client": kv.get("client", "?").rsplit(":", 1)[0],
            "local": kv.get("local", "?"), "xff": kv.get("xff")}


def mac_owners(lab) -> dict:
    """{MAC: who has it} for every host interface of the lab: the role, or
    "role ifname" for a host with more than one interface."""
    return {i.mac: (n.role if len(n.interfaces) == 1
                    else f"{n.role} {i.name}")
            for n in lab.plan().hosts for i in n.interfaces if i.mac}


def services(lab, mode: str, listeners, scheduler: str = "rr",
             reals=None) -> list:
    """The engine's Service objects for `listeners` in `mode`, over the
    lab's real servers (or the roles in `reals`)."""
    from ..control.l7.options import L7Options
    from ..model import Real, Service, Vip

    _check_mode(mode)
    roles = lab.reals if reals is None else reals
    out = []
    for li in listeners:
        if mode in DIRECT_MODES and li.port != li.real_port:
            raise ConfigError(f"{mode.upper()} listener {li.vip}:{li.port}: "
                              f"real port {li.real_port} differs ("
                              f"{mode.upper()} does not translate ports)")
        host = f"[{li.vip}]" if ":" in li.vip else li.vip   # IPv6
        vip = Vip.parse(f"{host}:{li.port}/tcp")
        out.append(Service(
            vip, [Real(lab.ip(r, version=vip.address.version),
                       li.real_port) for r in roles], scheduler,
            mode, l7=L7Options.from_dict({"l7_mode": li.l7_mode})
            if mode == "l7" else None))
    return out


@contextlib.contextmanager
def balancer(lab, mode: str, listeners=None, scheduler: str = "rr",
             reals=None, realserver_setup: bool = True, **engine_kw):
    """Run the balancer for `mode` in the lab's lb namespace; yields the
    started `pyfwd.control.engine.Engine` and stops it on the way out.

    In DR the real servers are set up first (unless `realserver_setup` is
    False: the ARP problem lesson leaves that to itself).  `engine_kw` goes
    to Engine (busy_poll, flows, control via ``eng.stats()``...).
    """
    from ..control.engine import Engine

    _check_mode(mode)
    if TOPOLOGY[mode] != lab.topology:
        raise LabError(f"mode {mode} runs in a {TOPOLOGY[mode]} lab, "
                       f"'{lab.name}' is {lab.topology}")
    listeners = list(listeners or [web_listener(mode)])
    if mode in DIRECT_MODES and realserver_setup:
        setup_reals(lab, sorted({li.vip for li in listeners}), roles=reals,
                    tun=mode == "tun")
    kw = dict(busy_poll=0, flows=1 << 14)
    kw.update(engine_kw)
    eng = Engine("eth0", services(lab, mode, listeners, scheduler, reals),
                 inside_iface="eth1" if mode == "nat" else None, **kw)
    try:
        lab.call("lb", eng.start)      # in the try: a start cut short by a
        yield eng                       # timeout or Ctrl-C is undone too
    finally:
        eng.stop()


def start_whoami(lab, role: str, port: int = WHOAMI_PORT):
    """Start pyfwd.lab.whoami on every address of role (DR sends it packets
    for the VIP); returns the Popen once it listens.  LabError if it does
    not within START_TIMEOUT."""
    proc = lab.popen(role, whoami.command(port, role),
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                     text=True)
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if "listening" not in line:
        stop_all([proc])
        raise LabError(f"whoami on {role} (port {port}) did not start")
    return proc


def stop_all(procs, grace: float = 5.0) -> None:
    """SIGTERM every process, then SIGKILL those still there after grace
    (all at once, see pyfwd.lab.programs.stop); their pipes are closed."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        stop(p, grace)
        for pipe in (p.stdin, p.stdout, p.stderr):
            if pipe:
                pipe.close()


@contextlib.contextmanager
def whoami_servers(lab, port: int = WHOAMI_PORT, roles=None):
    """whoami on each real server (all by default) for the with block."""
    procs = []
    try:
        for role in lab.reals if roles is None else roles:
            procs.append(start_whoami(lab, role, port))
        yield procs
    finally:
        stop_all(procs)
