"""The lab demo: `pyfwd lab demo`, the README's main job.

It builds each lab topology, starts a whoami HTTP server on every real
server, reaches each one from the client directly, then runs the balancer
in the lb namespace (DR in the one-arm lab, NAT in the two-arm one) and
sends requests and a download through the VIP, saying which real server
answered, which client address it saw, and how many bytes crossed the
balancer: DR's answers bypass it, NAT's come back through it.
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
    # All addresses: DR sends the VIP's packets here unchanged.
    proc = lab.popen(role, [sys.executable, "-m", "pyfwd.whoami", "--bind",
                            "0.0.0.0", "--port", str(port), "--name", role],
                     stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if "listening" not in line:
        proc.kill()
        proc.wait(timeout=5)
        raise LabError(f"whoami on {role} ({addr}:{port}) did not start")
    return proc


def curl(lab, role, url, timeout=5, *args):
    """GET url with curl from role's namespace; (ok, body or error)."""
    r = lab.run(role, ["curl", "-sS", "--max-time", str(timeout), *args,
                       url], capture_output=True, text=True,
                timeout=timeout + 5)
    return r.returncode == 0, (r.stdout if r.returncode == 0
                               else r.stderr).strip()


VIP = "10.0.0.100"
DOWNLOAD = 20_000_000


def through_vip(echo, lab, summary):
    """The balancer in the lb namespace, requests through the VIP."""
    from .engine import Engine
    from .service import Real, Vip
    from .tables import Service

    dr = lab.topology == "one-arm"
    mode, port = ("dr", WHOAMI_PORT) if dr else ("nat", 80)
    if dr:      # the ARP problem, solved on each real server
        for role in lab.reals:
            lab.run(role, [sys.executable, "-m", "pyfwd.cli", "realserver",
                           "setup", "--vip", VIP], capture_output=True,
                    check=True)
    vip = Vip.parse(f"{VIP}:{port}/tcp")
    reals = [Real(lab.ip(r), WHOAMI_PORT) for r in lab.reals]
    eng = Engine("eth0", [Service(vip, reals, "rr", mode)], busy_poll=0,
                 flows=1 << 14, inside_iface=None if dr else "eth1")
    lab.call("lb", eng.start)
    ok_all = True
    try:
        echo(f"\nthe balancer in {lab.ns('lb')}: VIP {vip}, {mode.upper()} "
             f"({eng.info.backend}), round robin over "
             f"{', '.join(str(r) for r in reals)}")
        url = f"http://{vip.address}:{port}/"
        for _ in range(len(lab.reals) * 2):
            ok, text = curl(lab, "client", url)
            ok_all &= ok and "client=10.0.0.1:" in text
            echo(f"  {url:<32} {'ok ' if ok else 'FAIL'}  {text}")
        before = eng.stats()["core"]["bytes"]
        ok, _ = curl(lab, "client", f"{url}bytes/{DOWNLOAD}", 60, "-o",
                     "/dev/null")
        crossed = eng.stats()["core"]["bytes"] - before
        ok_all &= ok
        echo(f"  a {DOWNLOAD // 1_000_000} MB download through the VIP: "
             f"{'ok' if ok else 'FAIL'}; {crossed / 1e6:.1f} MB crossed the "
             "balancer")
        summary.append((mode, lab.topology, crossed))
        if dr:
            echo("  DR rewrote only the destination MAC: each real server "
                 "holds the VIP on lo and\n  answers the client directly, "
                 "so the download itself never crossed the balancer.")
        else:
            echo("  NAT rewrote the destination to real:8080 and back: the "
                 "real servers route\n  their answers through the balancer "
                 "(their gateway), so the whole download crossed it.")
    finally:
        eng.stop()
    return ok_all


def demo_topology(echo, name, topology, reals, summary):
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
            ok_all &= through_vip(echo, lab, summary)
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
    summary = []
    ok = all([demo_topology(echo, name, t, reals, summary)
              for t in topologies])
    if summary:
        echo(f"\n{'mode':<6} {'lab':<9} {'MB through the balancer for a '}"
             f"{DOWNLOAD // 1_000_000} MB download")
        for mode, topology, crossed in summary:
            echo(f"{mode:<6} {topology:<9} {crossed / 1e6:.1f}")
        echo("In both, the real servers saw the client's own address.")
    return ok
