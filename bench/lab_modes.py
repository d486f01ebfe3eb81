"""DR against NAT against SNAT, on each backend, side by side in one run.

Builds a one-arm lab (DR, SNAT) and a two-arm lab (NAT) of namespaces,
runs whoami real servers, and for each mode and backend measures, through
the VIP: one download (MB/s) and a burst of new connections (connections
per second), best of --repeat.  Prints a table with each row's ratio to DR
on AF_XDP.  Root.  Figures from veth on a shared machine: compare them
within one run, not across runs.

    .venv/bin/python bench/lab_modes.py [--size MB] [--conns N] [--repeat R]
"""

import argparse
import contextlib
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pyfwd.lab import modes as labmodes  # noqa: E402
from pyfwd.lab.topology import Lab  # noqa: E402

VIP, PORT, REAL_PORT = labmodes.VIP, 80, 8080
CONNECT = f"""
import socket, sys, time
n = int(sys.argv[1]); t0 = time.perf_counter()
for i in range(n):
    s = socket.create_connection(("{VIP}", {PORT}), timeout=3)
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); s.recv(4096); s.close()
print(n / (time.perf_counter() - t0))
"""


def servers(stack, lab, port):
    """whoami on port of every real server for the rest of the run; on
    PORT, DR's, the reals first hold the VIP on lo with no ARP for it."""
    if port == PORT:
        labmodes.setup_reals(lab)
    stack.enter_context(labmodes.whoami_servers(lab, port))


def measure(lab, mode, backend, size, conns, repeat):
    listener = labmodes.Listener(PORT, PORT if mode == "dr" else REAL_PORT)
    with labmodes.balancer(lab, mode, [listener], "maglev",
                           realserver_setup=False, backend=backend,
                           flows=1 << 16) as eng:
        try:
            mbs = cps = 0.0
            for _ in range(repeat):
                r = lab.run("client", [
                    "curl", "-sS", "-o", "/dev/null", "-w",
                    "%{speed_download}",
                    f"http://{VIP}/bytes/{size * 1_000_000}"],
                    capture_output=True, text=True, timeout=300)
                mbs = max(mbs, float(r.stdout) / 1e6)
                r = lab.run("client", [sys.executable, "-c", CONNECT,
                                       str(conns)], capture_output=True,
                            text=True, timeout=300)
                cps = max(cps, float(r.stdout))
            core = eng.stats()["core"]
            return mbs, cps, core["bytes"]
        finally:
            time.sleep(0.5)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=200, help="MB per download")
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    tag = secrets.token_hex(2)
    rows = []
    with Lab("pfb1" + tag, "one-arm", 3) as one, \
            Lab("pfb2" + tag, "two-arm", 3) as two, \
            contextlib.ExitStack() as stack:
        servers(stack, one, PORT)
        servers(stack, one, REAL_PORT)
        servers(stack, two, REAL_PORT)
        for mode, lab in (("dr", one), ("nat", two), ("snat", one)):
            for backend in ("xdp", "afpacket"):
                mbs, cps, through = measure(lab, mode, backend, args.size,
                                            args.conns, args.repeat)
                rows.append((f"{mode}-{backend}", mbs, cps, through))
    base_mbs, base_cps = rows[0][1], rows[0][2]
    print(f"download {args.size} MB, {args.conns} new connections, best of "
          f"{args.repeat}; busy polling off; veth, copy mode")
    print(f"{'row':<14} {'MB/s':>8} {'x dr-xdp':>9} {'conn/s':>8} "
          f"{'x dr-xdp':>9} {'MB through lb':>14}")
    for name, mbs, cps, through in rows:
        print(f"{name:<14} {mbs:>8.0f} {mbs / base_mbs:>9.2f} {cps:>8.0f} "
              f"{cps / base_cps:>9.2f} {through / 1e6:>14.1f}")


if __name__ == "__main__":
    main()
