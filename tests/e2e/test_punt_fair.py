"""Fair punting in a one-arm DR lab (issue 17, point 3): the balancer
answers the client's ARP requests for the VIP promptly while something
holds the engine's lock for seconds, and while the client floods the VIP
with pings (`ping -f`).  ARP answer latency is measured with iputils
arping from the client (broadcast requests, so every one goes to the
balancer's punt path); the figures are printed (docs/reliability/
fairpunt.md has them).  Root; the lab ("pffp" + random hex) is removed
whatever happens.
"""

import re
import secrets
import statistics
import subprocess
import threading
import time

import pytest

from pyfwd.frames import ZERO_MAC
from pyfwd.lab import modes as labmodes
from pyfwd.lab.topology import Lab
from pyfwd.neighbours.arp import ARPOP_REQUEST, build_arp, parse_arp
from pyfwd.neighbours.framesocket import FrameSocket
from pyfwd.neighbours.kernel import interface

pytestmark = pytest.mark.root

VIP = labmodes.VIP
HOLD = 5.0                  # s the engine's lock is held
FLOOD = 8                   # s of ping flood
PROMPT_MS = 200.0           # an ARP answer slower than this is not prompt
_REPLY = re.compile(r"reply from \S+ \[[0-9A-Fa-f:]+\]\s+([\d.]+)ms")


def arping(lab, count):
    """Latencies (ms) of the answers to `count` broadcast ARP requests for
    the VIP sent a second apart from the client (iputils arping -b; its
    -i takes whole seconds)."""
    r = lab.run("client", ["arping", "-b", "-I", "eth0", "-c", str(count),
                           "-w", str(count + 2), VIP], capture_output=True,
                text=True, timeout=count + 15)
    return [float(ms) for ms in _REPLY.findall(r.stdout)], \
        r.stdout + r.stderr


def probe(lab, count, interval=0.06, timeout=0.5):
    """Latencies (ms) of the answers to `count` broadcast ARP requests for
    the VIP, `interval` s apart, each waited for up to `timeout` s: arping
    at a finer grain, from a packet socket in the client's namespace.  The
    default interval keeps under the per-source limit ([engine]
    arp_source_rate, 20/s)."""
    sock = lab.call("client", lambda: FrameSocket("eth0"))
    own = lab.call("client", lambda: interface("eth0"))[1]
    src = lab.ip("client")
    out = []
    try:
        for _ in range(count):
            t0 = time.monotonic()
            sock.send(build_arp(ARPOP_REQUEST, own, src, ZERO_MAC, VIP))
            for frame in sock.recv_until(t0 + timeout):
                pkt = parse_arp(frame)
                if pkt and pkt.is_reply and str(pkt.spa) == VIP:
                    out.append((time.monotonic() - t0) * 1000)
                    break
            time.sleep(max(0.0, t0 + interval - time.monotonic()))
    finally:
        sock.close()
    return out


def flush(lab):
    lab.run("client", ["ip", "neigh", "flush", "dev", "eth0"], check=True)


def figures(what, lat, sent):
    lat = sorted(lat)
    line = (f"{what}: {len(lat)}/{sent} answered" + (
        f", median {statistics.median(lat):.2f} ms, max {lat[-1]:.2f} ms"
        if lat else ""))
    print(line)
    return line


def curl(lab):
    r = lab.run("client", ["curl", "-s", "-o", "/dev/null", "-w",
                           "%{http_code} %{time_total}", "--max-time", "3",
                           f"http://{VIP}:{labmodes.WHOAMI_PORT}/"],
                capture_output=True, text=True, timeout=10)
    code, took = (r.stdout.split() + ["000", "0"])[:2]
    return code, float(took)


def test_arp_is_answered_while_the_lock_is_held_and_under_a_ping_flood():
    with Lab("pffp" + secrets.token_hex(3), topology="one-arm",
             reals=1) as lab, labmodes.whoami_servers(lab), \
            labmodes.balancer(lab, "dr") as eng:
        lat, out = arping(lab, 2)
        assert len(lat) == 2, out
        lat = probe(lab, 50)
        base = figures("idle (50 requests, 60 ms apart)", lat, 50)
        assert len(lat) == 50

        # Something holds the engine's lock (a reload, an HAProxy runtime
        # call, a neighbour solicitation do in real life) for HOLD s.
        holding, done = threading.Event(), threading.Event()

        def hold():
            with eng._lock:
                holding.set()
                time.sleep(HOLD)
            done.set()
        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        assert holding.wait(5)
        flush(lab)
        code, took = curl(lab)          # needs ARP for the VIP first
        lat, out = arping(lab, 2)
        plat = probe(lab, 40)
        still_held = not done.is_set()
        holder.join(HOLD + 5)
        print(f"arping while the lock was held: {lat} ms")
        locked = figures(f"engine lock held {HOLD:g} s (40 requests)", plat,
                         40)
        print(f"curl while the lock was held: HTTP {code} in {took:.3f} s")
        assert still_held, "the lock was released before the probes ended"
        assert code == "200" and took < 1.0, (code, took)
        assert len(lat) == 2 and max(lat) < PROMPT_MS, out
        assert len(plat) == 40 and max(plat) < PROMPT_MS, plat

        # A ping flood at the VIP from the same client.
        before = eng.stats()["icmp"]
        flood = lab.popen("client", ["ping", "-f", "-q", "-l", "16", "-w",
                                     str(FLOOD), VIP],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
        try:
            time.sleep(0.5)
            flush(lab)
            lat, out = arping(lab, 3)
            plat = probe(lab, 80)
            code, took = curl(lab)
        finally:
            summary, _ = flood.communicate(timeout=FLOOD + 10)
        after = eng.stats()["icmp"]
        m = re.search(r"(\d+) packets transmitted", summary)
        sent = int(m.group(1)) if m else 0
        print(f"arping during the flood: {lat} ms")
        flooded = figures(f"ping flood ({sent} pings in {FLOOD} s, "
                          f"{sent / FLOOD:.0f}/s; 80 requests)", plat, 80)
        limited = after["rate_limited"] - before["rate_limited"]
        print(f"echo replies: {after['answered'] - before['answered']}, "
              f"rate-limited: {limited}; curl: HTTP {code} in {took:.3f} s")
        print("\n".join(["", base, locked, flooded]))
        assert limited > 0, "the flood never reached the echo rate limit"
        assert len(lat) == 3 and max(lat) < PROMPT_MS, out
        assert len(plat) >= 79 and max(plat) < PROMPT_MS, plat
        assert code == "200", code
        punt = eng.stats()["punt"]
        assert punt["frames"] >= sent // 2, punt
