"""TCP states end to end (SNAT, one-arm lab, AF_XDP): a SYN the real
servers never answer (nftables drops it there) holds a half-open flow and
an SNAT port for [engine.timeouts] tcp_syn seconds only; a real request
completes; the engine reports its timeouts.  Root; the lab is removed
whatever happens."""

import sys
import time

import pytest

from pyfwd.control.engine import Engine
from pyfwd.model import Real, Service, Vip

from . import labs

pytestmark = pytest.mark.root

VIP4 = "10.0.0.100"
WEB = Vip.parse(f"{VIP4}:80/tcp")
DEAF = Vip.parse(f"{VIP4}:81/tcp")      # -> reals' 8081: SYNs dropped
TIMEOUTS = {"tcp_syn": 2, "tcp_fin": 1}
NFT = """table inet pfts {
    chain in {
        type filter hook input priority 0;
        tcp dport 8081 drop
    }
}
"""


@pytest.fixture(scope="module")
def lab():
    lab = labs.build("pfts", "one-arm")
    try:
        for role in lab.reals:
            r = lab.run(role, ["nft", "-f", "-"], input=NFT, text=True,
                        capture_output=True)
            assert r.returncode == 0, r.stderr
        yield lab
    finally:
        lab.down()


def core_stats(eng):
    return eng.stats()["core"]


def wait_for(pred, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_unanswered_syn_is_half_open_for_tcp_syn_only(lab):
    reals = [Real(lab.ip(r), 8080) for r in lab.reals]
    deaf = [Real(lab.ip(r), 8081) for r in lab.reals]
    eng = Engine("eth0", [Service(WEB, reals, "maglev", "snat"),
                          Service(DEAF, deaf, "maglev", "snat")],
                 busy_poll=0, flows=4096, timeouts=TIMEOUTS)
    lab.call("lb", eng.start)
    try:
        assert eng.status()["timeouts"]["tcp_syn"] == 2
        # one SYN (the connect gives up before the first retransmission)
        lab.run("client", [sys.executable, "-c",
                           "import socket; s = socket.socket(); "
                           "s.settimeout(0.3)\ntry: s.connect(('"
                           f"{VIP4}', 81))\nexcept OSError: pass"],
                timeout=10)
        s = core_stats(eng)
        assert (s["flows_half_open"], s["snat_ports_used"]) == (1, 1), s
        r = lab.run("client", ["curl", "-sS", "--max-time", "10", "-o",
                               "/dev/null", "-w", "%{http_code}",
                               f"http://{VIP4}/"], capture_output=True,
                    text=True, timeout=20)
        assert r.stdout == "200", r.stderr
        # gone after tcp_syn (the idle loop sweeps), its port free again
        assert wait_for(lambda: core_stats(eng)["flows_half_open"] == 0
                        and core_stats(eng)["snat_ports_used"] == 0, 6), \
            core_stats(eng)
        s = core_stats(eng)
        assert s["flows_expired"] >= 2 and s["flows_new"] == 2
    finally:
        time.sleep(0.3)
        eng.stop()
