"""`ping VIP` from a lab's client is answered by the balancer.

The data plane punts ICMP to a VIP; the engine's pyfwd.neighbours.icmp.EchoResponder
answers the echo requests among the punted frames, from the VIP, once each.
Root; the labs ("pfi" + random hex) are removed whatever happens.
"""

import os
import re
import secrets
import subprocess

import pytest

from pyfwd.neighbours import icmp
from pyfwd.lab import modes as labmodes
from pyfwd.lab.topology import Lab

pytestmark = pytest.mark.root

VIP4 = labmodes.VIP
PING = ["ping", "-n", "-c3", "-W1", VIP4]
PING_TIMEOUT = 15


def ping(lab) -> tuple:
    """(received, ping's output) for PING from the client."""
    try:
        r = lab.run("client", PING, capture_output=True, text=True,
                    timeout=PING_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ping did not finish in {PING_TIMEOUT} s")
    out = r.stdout + r.stderr
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, f"no ping summary:\n{out}"
    assert m.group(1) == "3", out
    assert "duplicates" not in out, f"answered more than once:\n{out}"
    return int(m.group(2)), out


@pytest.mark.parametrize("mode", ["dr", "nat"])
def test_ping_vip(mode):
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    with Lab("pfi" + secrets.token_hex(3), topology=labmodes.TOPOLOGY[mode],
             reals=1) as lab, labmodes.balancer(lab, mode) as eng:
        received, out = ping(lab)
        counters = eng.stats()["icmp"]
    assert received == 3, f"ping {VIP4} got no answer:\n{out}"
    # every reply came from the VIP (not a real server, not the lb itself)
    assert set(re.findall(r"bytes from ([\d.]+):", out)) == {VIP4}, out
    assert set(counters) >= set(icmp.COUNTERS), counters
    assert counters["answered"] == 3, counters
    assert counters["not_echo"] == counters["malformed"] == 0, counters
