"""N active balancers behind ECMP, in a lab (topology "ecmp").

The router runs BIRD 2: eBGP with each balancer, the VIP learnt from each,
and its kernel protocol installs one route with every next hop (`merge
paths`), hashed by L4 (net.ipv4.fib_multipath_hash_policy = 1).  Each
balancer is a `pyfwd start` process with a [bgp] table, so BIRD is its
child; the real servers hold the VIP (DR) and run an echo server
(ecmpload).  tests/e2e/test_ecmp.py and `pyfwd lab demo --mode ecmp` use
it:

    with Lab(name, "ecmp", reals=4) as lab:
        e = EcmpLab(lab, folder)
        e.up(reals=3)                 # BIRD, echo servers, three engines
        e.wait_nexthops(3)
        load = e.hold(200, 20)        # the client's connections
        e.stop_lb("lb2"); e.wait_nexthops(2)
        e.start_lb("lb2"); e.wait_nexthops(3)
        e.result(load)
"""

import ipaddress
import json
import os
import subprocess
import sys
import time

from ..control.metrics_http import DEFAULT_PORT
from ..errors import LabError
from .namespaces import iproute
from .programs import PYFWD

VIP = "10.0.0.100"
PORT = 7000
ROUTER_AS, LB_AS = 65000, 65001
HOLD_TIME = 9
METRICS_PORT = DEFAULT_PORT     # each balancer's, in its own namespace
BALANCERS = ("lb", "lb2", "lb3")
LOAD = [sys.executable, "-m", "pyfwd.lab.ecmpload"]

ROUTER_SYSCTLS = {"net.ipv4.fib_multipath_hash_policy": 1}   # L4 hash


def router_conf(lab):
    """BIRD's config on the router: a session per balancer, ECMP in the
    kernel, short timers (a lab, not the Internet)."""
    peers = "\n".join(
        f"protocol bgp {role} from balancers {{ neighbor "
        f"{lab.ip(role)} as {LB_AS}; }}" for role in BALANCERS)
    return f"""router id {lab.ip("router", "eth1")};
log stderr {{ info, remote, warning, error, auth, fatal, bug }};
protocol device {{ scan time 10; }}
protocol kernel {{
\tipv4 {{ import none; export all; }};
\tmerge paths on;
}}
template bgp balancers {{
\tlocal as {ROUTER_AS};
\thold time {HOLD_TIME};
\tkeepalive time {HOLD_TIME // 3};
\tconnect retry time 2;
\terror wait time 1, 8;
\tipv4 {{ import all; export none; }};
}}
{peers}
"""


def balancer_conf(lab, role, reals, sock):
    """The TOML of the engine on `role`: the VIP by Maglev over `reals`
    (roles), announced by BGP to the router."""
    real_tables = "".join(f'\n[[vip.real]]\naddress = "{lab.ip(r)}"\n'
                          for r in reals)
    return f"""[engine]
iface = "eth0"
control_socket = "{sock}"
state_file = "{sock}.state"
metrics = "127.0.0.1:{METRICS_PORT}"

[bgp]
local_as = {LB_AS}
hold_time = {HOLD_TIME}
[[bgp.peer]]
address = "{lab.ip("router", "eth1")}"
as = {ROUTER_AS}

[[vip]]
name = "echo"
address = "{VIP}"
port = {PORT}
protocol = "tcp"
mode = "dr"
scheduler = "maglev"
{real_tables}"""


class EcmpLab:
    """The ECMP lab's programs over a built Lab (see the module's
    docstring); folder: where the configs, sockets and logs go."""

    def __init__(self, lab, folder):
        self.lab = lab
        self.folder = str(folder)
        self.engines = {}           # role -> Popen of `pyfwd start`
        self.reals = []             # the roles the engines balance over

    def path(self, name):
        return os.path.join(self.folder, name)

    # -- building --------------------------------------------------------

    def up(self, reals=3):
        """Router (sysctls, BIRD), every real server (VIP, echo server),
        and an engine on each balancer over the first `reals` reals."""
        lab = self.lab
        for key, value in ROUTER_SYSCTLS.items():
            lab.sysctl("router", key, value)
        with open(self.path("router.conf"), "w") as f:
            f.write(router_conf(lab))
        self.router = lab.popen("router", [
            "bird", "-f", "-c", self.path("router.conf"),
            "-s", self.path("router.ctl"), "-P", self.path("router.pid")],
            stdout=open(self.path("router.log"), "w"),
            stderr=subprocess.STDOUT)
        for role in lab.reals:
            r = lab.run(role, PYFWD + ["realserver", "setup", "--vip", VIP],
                        capture_output=True, text=True)
            if r.returncode != 0:
                raise LabError(f"realserver setup on {role}: {r.stderr}")
            p = lab.popen(role, LOAD + ["serve", role, str(PORT)],
                          stdout=subprocess.PIPE, text=True)
            if "listening" not in p.stdout.readline():
                raise LabError(f"echo server on {role} did not start")
        self.reals = list(lab.reals[:reals])
        for role in BALANCERS:
            self.start_lb(role)

    def start_lb(self, role, reals=None):
        """`pyfwd start` on role over `reals` (default: self.reals);
        returns once its control socket answers."""
        self.reals = list(reals or self.reals)
        sock = self.path(f"{role}.sock")
        conf = self.path(f"{role}.toml")
        with open(conf, "w") as f:
            f.write(balancer_conf(self.lab, role, self.reals, sock))
        for stale in (f"{sock}.state",):
            if os.path.exists(stale):
                os.unlink(stale)
        log = open(self.path(f"{role}.log"), "a")
        self.engines[role] = self.lab.popen(
            role, PYFWD + ["start", "--config", conf], stdout=log,
            stderr=subprocess.STDOUT)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if self.engines[role].poll() is not None:
                raise LabError(f"pyfwd on {role} exited: "
                               f"{self.tail(role)}")
            try:
                self.ctl(role, "status")
                return
            except LabError:
                time.sleep(0.1)
        raise LabError(f"pyfwd on {role}: no answer: {self.tail(role)}")

    def stop_lb(self, role, timeout=10):
        """SIGTERM to role's engine; waits for it to exit."""
        p = self.engines.pop(role)
        p.terminate()
        p.wait(timeout)

    def tail(self, role, lines=8):
        try:
            with open(self.path(f"{role}.log")) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # -- looking -----------------------------------------------------------

    def ctl(self, role, *argv):
        """`pyfwd ctl --json` on role's engine; the reply (JSON).
        LabError with its message when it fails."""
        r = self.lab.run(role, PYFWD + ["ctl", "-s",
                                        self.path(f"{role}.sock"),
                                        "--json", *argv],
                         capture_output=True, text=True)
        if r.returncode != 0:
            raise LabError(f"ctl {' '.join(argv)} on {role}: "
                           f"{(r.stderr or r.stdout).strip()}")
        return json.loads(r.stdout)

    def metrics(self, role):
        """The Prometheus text of role's engine."""
        r = self.lab.run(role, ["curl", "-sS", "--max-time", "5",
                                f"http://127.0.0.1:{METRICS_PORT}/metrics"],
                         capture_output=True, text=True)
        if r.returncode != 0:
            raise LabError(f"metrics of {role}: {r.stderr.strip()}")
        return r.stdout

    def nexthops(self):
        """The router's next hops toward the VIP (its kernel's route)."""
        with iproute(self.lab.ns("router")) as ipr:
            found = []
            for rt in ipr.route("dump", family=2):
                if rt.get("RTA_DST") != VIP or rt["dst_len"] != 32:
                    continue
                mp = rt.get("RTA_MULTIPATH")
                if mp:
                    found += [h.get("RTA_GATEWAY") for h in mp]
                elif rt.get("RTA_GATEWAY"):
                    found.append(rt.get("RTA_GATEWAY"))
        return sorted(found, key=lambda a: ipaddress.ip_address(a).packed)

    def wait_nexthops(self, n, timeout=30, since=None):
        """Wait until the router's route to the VIP has n next hops; the
        seconds it took (from `since`, a monotonic time, if given).
        LabError with what it has if not in time."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if len(self.nexthops()) == n:
                return time.monotonic() - (since or t0)
            time.sleep(0.05)
        raise LabError(f"the router's route to {VIP}: {self.nexthops()}, "
                       f"not {n} next hops within {timeout} s")

    def router_sessions(self):
        """{balancer role: BGP state} as the router's BIRD sees them."""
        r = self.lab.run("router", ["birdc", "-s", self.path("router.ctl"),
                                    "show", "protocols"],
                         capture_output=True, text=True)
        out = {}
        for ln in r.stdout.splitlines():
            parts = ln.split()
            if len(parts) >= 6 and parts[0] in BALANCERS:
                out[parts[0]] = parts[5]
        return out

    def flows_new(self):
        """{balancer role: its engine's flows_new counter} (running)."""
        return {role: self.ctl(role, "stats")["core"]["flows_new"]
                for role in self.engines}

    # -- the load ------------------------------------------------------------

    def hold(self, n, seconds):
        """Start the client's n connections for `seconds` (ecmpload hold);
        the Popen, for result()."""
        return self.lab.popen("client", LOAD + [
            "hold", VIP, str(PORT), str(n), str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def result(proc, timeout=60):
        """What hold() printed: {"t0", "end", "connections": [...]}."""
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise LabError(f"the client failed: {err.strip()[-400:]}")
        return json.loads(out)

    def close(self):
        for role in list(self.engines):
            try:
                self.stop_lb(role)
            except Exception:       # the lab's close() kills what is left
                pass


def summary(result, since=None):
    """{"connections", "alive", "errors": {error: n}, "changed_real",
    "talking_after"}: talking_after counts the alive connections whose
    last answer came after `since` (a monotonic time)."""
    conns = result["connections"]
    errors = {}
    for c in conns:
        if c["error"]:
            errors[c["error"]] = errors.get(c["error"], 0) + 1
    return {"connections": len(conns),
            "alive": sum(1 for c in conns if not c["error"]),
            "errors": errors,
            "changed_real": sum(1 for c in conns if len(c["reals"]) > 1),
            "talking_after": sum(1 for c in conns if not c["error"] and
                                 (since is None or c["last"] > since))}


__all__ = ["EcmpLab", "VIP", "PORT", "BALANCERS", "router_conf",
           "balancer_conf", "summary"]
