"""The soak run's lab: a one-arm lab whose real servers answer HTTP, UDP
and DICOM, each with a health agent the faults can stop, and the
configuration of the engine in front of them.

Each real server runs:

- whoami on TCP 8080 and UDP 9000 (the service), and on TCP 8081 (the
  L7 VIP's service: an L7 VIP and an L4 SNAT VIP may not share a real
  server's address and port, control.l7.conflicts);
- a second whoami on TCP 8090: the health agent every VIP's check reaches
  (``port = 8090``), so that a real can fail its checks while its service
  goes on (a flap), as an agent check does;
- dcmtk's storescp on 11112 (receives, stores nothing).

The VIPs (``vips``): ``web`` (SNAT, 10.0.0.100:80 to 8080), ``web-dr``
(DR, 10.0.0.100:8080, Maglev), ``dicom`` (SNAT, 10.0.0.100:104 to 11112),
``udp`` (SNAT, 10.0.0.100:9000/udp), ``l7`` (HAProxy, 10.0.0.101:80 to
8081).
The last real of the lab is left out of the file: the faults add it to
``web`` and remove it again.
"""

import json
import os
import select
import subprocess
from dataclasses import dataclass

from ..errors import LabError
from . import whoami
from .modes import VIP, setup_reals, stop_all

__all__ = ["SERVICE_PORT", "L7_PORT", "AGENT_PORT", "UDP_PORT", "DICOM_PORT", "L7_VIP",
           "VipSpec", "vips", "config_text", "Servers"]

SERVICE_PORT = 8080
L7_PORT = 8081
AGENT_PORT = 8090
UDP_PORT = 9000
DICOM_PORT = 11112
L7_VIP = "10.0.0.101"
STORESCP = "/usr/bin/storescp"
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class VipSpec:
    """One VIP of the soak: name, address, port, protocol, mode,
    scheduler, the reals' port, the health check's type."""

    name: str
    address: str
    port: int
    protocol: str
    mode: str
    scheduler: str
    real_port: int
    check: str = "tcp"


def vips():
    """The soak's VIPs (see the module)."""
    return [VipSpec("web", VIP, 80, "tcp", "snat", "rr", SERVICE_PORT,
                    "http"),
            VipSpec("web-dr", VIP, SERVICE_PORT, "tcp", "dr", "maglev",
                    SERVICE_PORT),
            VipSpec("dicom", VIP, 104, "tcp", "snat", "lc", DICOM_PORT),
            VipSpec("udp", VIP, UDP_PORT, "udp", "snat", "maglev",
                    UDP_PORT),
            VipSpec("l7", L7_VIP, 80, "tcp", "l7", "rr", L7_PORT, "http")]


def config_text(lab, socket_path, roles):
    """The engine's TOML: every VIP over the real servers ``roles``, each
    checked on its health agent every 0.5 s (rise 2, fall 2)."""
    lines = ["[engine]", 'iface = "eth0"',
             f"control_socket = {json.dumps(str(socket_path))}", ""]
    for v in vips():
        health = (f'{{ type = "{v.check}", port = {AGENT_PORT}, '
                  'interval = 0.5, timeout = 0.5, rise = 2, fall = 2'
                  + (', path = "/", expect = 200' if v.check == "http"
                     else "") + " }")
        lines += ["[[vip]]", f'name = "{v.name}"',
                  f'address = "{v.address}"', f"port = {v.port}",
                  f'protocol = "{v.protocol}"', f'mode = "{v.mode}"',
                  f'scheduler = "{v.scheduler}"', f"health = {health}", ""]
        for role in roles:
            lines += ["[[vip.real]]", f'address = "{lab.ip(role)}"',
                      f"port = {v.real_port}", ""]
    return "\n".join(lines)


def _wait_line(proc, needle, what):
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if needle not in line:
        stop_all([proc])
        raise LabError(f"{what} did not start: {line.strip()!r}")


class Servers:
    """The real servers' programs (see the module): started by start(),
    a health agent stopped and started again by agent_down() and
    agent_up(), all stopped by close()."""

    def __init__(self, lab):
        self.lab = lab
        self.procs = []
        self.agents = {}

    def start(self):
        setup_reals(self.lab, [VIP])        # the DR VIP on lo, ARP off
        for role in self.lab.reals:
            p = self.lab.popen(role, whoami.command(
                SERVICE_PORT, role, udp=UDP_PORT), stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True)
            self.procs.append(p)
            _wait_line(p, "listening", f"whoami on {role}")
            p = self.lab.popen(role, whoami.command(L7_PORT, role),
                               stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
            self.procs.append(p)
            _wait_line(p, "listening", f"whoami (L7) on {role}")
            self.agent_up(role)
            env = dict(os.environ, TCP_NODELAY="1")
            self.procs.append(self.lab.popen(
                role, [STORESCP, "--ignore", "-aet", "SOAK",
                       str(DICOM_PORT)], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self

    def agent_up(self, role):
        """Start role's health agent (whoami on AGENT_PORT)."""
        p = self.lab.popen(role, whoami.command(AGENT_PORT, f"{role}-agent"),
                           stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        _wait_line(p, "listening", f"the health agent on {role}")
        self.agents[role] = p

    def agent_down(self, role):
        """Stop role's health agent: its checks fail, its service goes on."""
        stop_all([self.agents.pop(role)])

    def close(self):
        stop_all(self.procs + list(self.agents.values()))
        self.procs.clear()
        self.agents.clear()
