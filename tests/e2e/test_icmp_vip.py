"""`ping VIP` from the client of a DR lab is answered by the balancer.

The data plane punts ICMP to a VIP; pyfwd.icmp.EchoResponder answers the
echo requests among the punted frames.  Two tests:

- test_ping_vip_responder_wired_here: the responder wired by this test
  itself, beside the engine's ARP responder (the engine object is reached
  from outside, nothing in engine.py changes): checks the responder on the
  real data path (AF_XDP steering, the punt ring, the packet socket).  Once
  the engine has its own (``eng.echo``) the test checks that one instead of
  adding a second (two would answer each ping twice); it is then redundant
  with test_ping_vip and may go;
- test_ping_vip: the engine as shipped: ping gets 3 replies and stats()
  shows the ICMP counters under "icmp".  It needs the engine's own hook
  (an EchoResponder created beside the ArpResponder, fed by
  _answer_punts); without it ping gets no answer (3 sent, 0 received) and
  this test fails, as it should.

Root; the lab ("pfi" + random hex) is removed whatever happens.
"""

import re
import secrets
import subprocess

import pytest

from pyfwd import icmp, labmodes
from pyfwd.lab import Lab

pytestmark = pytest.mark.root

VIP4 = labmodes.VIP
PING = ["ping", "-n", "-c3", "-W1", VIP4]
PING_TIMEOUT = 15


@pytest.fixture(scope="module")
def lab():
    if __import__("os").geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    with Lab("pfi" + secrets.token_hex(3), topology="one-arm",
             reals=1) as lab:
        yield lab


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


def ping_replies_from(lab, out: str) -> None:
    """Every reply came from the VIP (not a real server, not the lb's own
    address)."""
    froms = set(re.findall(r"bytes from ([\d.]+):", out))
    assert froms == {VIP4}, out


class _ArpAndEcho:
    """The engine's ARP responder with an EchoResponder beside it: what the
    engine's hook does, done from outside for test_ping_vip_responder_
    wired_here.  Everything but handle_batch and update_vips is the ARP
    responder's."""

    def __init__(self, arp_responder, echo):
        self.arp, self.echo = arp_responder, echo

    def handle_batch(self, frames):
        return self.arp.handle_batch(frames) + self.echo.handle_batch(frames)

    def update_vips(self, vips):
        vips = list(vips)
        self.arp.update_vips(vips)
        self.echo.update_vips(vips)

    def __getattr__(self, name):
        return getattr(self.arp, name)


def test_ping_vip_responder_wired_here(lab):
    with labmodes.balancer(lab, "dr") as eng:
        echo = getattr(eng, "echo", None)
        if echo is None:                # until engine.py has the hook
            echo = icmp.EchoResponder(eng.mac, eng.responder.vips)
            eng.responder = _ArpAndEcho(eng.responder, echo)
        received, out = ping(lab)
        assert received == 3, out
        ping_replies_from(lab, out)
        # the client's ARP for the VIP is punted too: not_ipv4
        counted = {k: v for k, v in echo.counters.items() if v}
        assert counted.pop("answered", 0) == 3, echo.counters
        assert set(counted) <= {"not_ipv4"}, echo.counters


def test_ping_vip(lab):
    with labmodes.balancer(lab, "dr") as eng:
        received, out = ping(lab)
        counters = eng.stats().get("icmp")
    assert received == 3, (
        f"ping {VIP4} got no answer from the engine (its hook for "
        f"pyfwd.icmp.EchoResponder missing?):\n{out}")
    ping_replies_from(lab, out)
    assert counters is not None, "stats() has no 'icmp' counters"
    assert set(counters) >= set(icmp.COUNTERS), counters
    assert counters["answered"] == 3, counters
    assert counters["not_echo"] == counters["malformed"] == 0, counters
