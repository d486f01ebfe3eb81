"""The lab demo: `pyfwd lab demo`, the README's main job.

It builds each lab topology, starts a whoami HTTP server on every real
server, reaches each one from the client with curl and says what it saw.
The forwarding modes (DR, NAT, SNAT) plug into this as they land; today it
shows the network they run in and the path a connection takes.
"""

import select
import subprocess
import sys
import time

from . import lab as labmod
from .errors import LabError

WHOAMI_PORT = 8080
START_TIMEOUT = 10.0


def start_whoami(lab, role, port=WHOAMI_PORT):
    """Start pyfwd.whoami on role's eth0 address; returns the Popen.

    Raises LabError if it does not say it listens within START_TIMEOUT.
    """
    addr = lab.ip(role)
    proc = lab.popen(role, [sys.executable, "-m", "pyfwd.whoami", "--bind",
                            addr, "--port", str(port), "--name", role],
                     stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if "listening" not in line:
        proc.kill()
        proc.wait(timeout=5)
        raise LabError(f"whoami on {role} ({addr}:{port}) did not start")
    return proc


def curl(lab, role, url, timeout=5):
    """GET url with curl from role's namespace; (ok, body or error)."""
    r = lab.run(role, ["curl", "-sS", "--max-time", str(timeout), url],
                capture_output=True, text=True, timeout=timeout + 5)
    return r.returncode == 0, (r.stdout if r.returncode == 0
                               else r.stderr).strip()


def demo_topology(echo, name, topology, reals):
    """Build one topology, run the requests, tear it down.  True if all ok."""
    ok_all = True
    with labmod.Lab(name, topology=topology, reals=reals) as lab:
        echo(f"\n== {topology} lab '{name}' ==")
        echo(lab.format_plan())
        servers = [start_whoami(lab, r) for r in lab.reals]
        try:
            echo(f"\nclient -> each real server, TCP {WHOAMI_PORT} "
                 f"({'one L2 segment' if topology == 'one-arm' else 'routed by the lb kernel'}):")
            for role in lab.reals:
                url = f"http://{lab.ip(role)}:{WHOAMI_PORT}/"
                t0 = time.monotonic()
                ok, text = curl(lab, "client", url)
                ms = (time.monotonic() - t0) * 1000
                ok_all &= ok and f"node={role}" in text
                echo(f"  {url:<32} {'ok ' if ok else 'FAIL'} {ms:6.1f} ms  "
                     f"{text}")
        finally:
            for p in servers:
                p.terminate()
            for p in servers:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
    echo(f"lab '{name}' removed")
    return ok_all


def run(echo, topologies=("one-arm", "two-arm"), reals=3, name="demo"):
    """The whole demo; returns True when every request worked."""
    echo("pyfwd lab demo: the load balancer's network, built from network "
         "namespaces on this machine.\nEach real server runs a whoami HTTP "
         "server that reports the client address it saw.")
    ok = all([demo_topology(echo, name, t, reals) for t in topologies])
    echo("\nThe client's own address reaches the real servers in both "
         "topologies: this is\nthe path DR (one-arm) and NAT (two-arm) "
         "traffic takes once a VIP is served.")
    return ok
