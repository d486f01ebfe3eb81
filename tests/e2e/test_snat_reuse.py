"""SNAT's source ports against a real server's TIME-WAIT (the soak's
finding, docs/reliability/soak.md).  Root; the lab is removed whatever
happens.

The real closes first (`Connection: close`), so it holds each connection
from (SNAT address, port) in TIME-WAIT for 60 s, and drops a new SYN from
that port whose TCP timestamp is older (PAWS: TcpExtPAWSTimewait).  Linux
offsets a connection's timestamps by a hash of its addresses and ports, so
a new connection's, from one client address or two, is older than the
last one's half the time.  A port must therefore come back as late as the
pool allows.  Flows are closed after 1 s here (tcp_fin), so that ports go
back to the pool during the run: a stack handed them out again at once
(tens of PAWS drops in a run), the FIFO pool does not.  Each run has its
own port range: a new engine starts its pool afresh, and the real still
holds the last run's ports in TIME-WAIT (see soak.md: a restart)."""

import time

import pytest

from pyfwd.control.engine import Engine
from pyfwd.model import Real, Service, Vip

from . import labs

pytestmark = pytest.mark.root

VIP4 = "10.0.0.100"
WEB = Vip.parse(f"{VIP4}:80/tcp")
CLIENT2 = "10.0.0.5"            # a second client address (docs/lab-addresses)


@pytest.fixture(scope="module")
def lab():
    lab = labs.build("pfsn", "one-arm", reals=1)
    try:
        r = lab.run("client", ["ip", "addr", "add", f"{CLIENT2}/24", "dev",
                               "eth0"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    except BaseException:
        lab.down()
        raise
    yield lab
    lab.down()


def nstat(lab, role, *names):
    """The namespace's TCP counters of these names, since its start."""
    r = lab.run(role, ["nstat", "-az", *names], capture_output=True,
                text=True)
    assert r.returncode == 0, r.stderr
    got = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in names:
            got[parts[0]] = int(parts[1])
    return got


@pytest.mark.parametrize("clients, ports", [
    (["10.0.0.1"], (61000, 62999)),
    (["10.0.0.1", CLIENT2], (63000, 64999))], ids=["one-client", "two"])
def test_snat_ports_wait_out_the_reals_time_wait(lab, clients, ports):
    """Rounds of close-by-server connections for ~5 s, from one client
    address or two, through one SNAT VIP to one real: no SYN dropped by
    the real's TIME-WAIT, none retransmitted by the client."""
    eng = Engine("eth0", [Service(WEB, [Real(lab.ip("real1"), 8080)],
                                  "wrr", "snat")],
                 busy_poll=0, backend="xdp", flows=1 << 12,
                 snat_ports=ports, timeouts={"tcp_fin": 1})
    lab.call("lb", eng.start)
    real_before = nstat(lab, "real1", "TcpExtPAWSTimewait")
    client_before = nstat(lab, "client", "TcpExtTCPSynRetrans")
    try:
        answered = 0
        for _ in range(10):
            for address in clients:
                r = lab.run("client", [
                    "curl", "-sS", "--max-time", "20", "--interface",
                    address, "-H", "Connection: close", "-o", "/dev/null",
                    "-w", "%{http_code}\n", *[f"http://{VIP4}/"] * 20],
                    capture_output=True, text=True, timeout=60)
                assert r.returncode == 0, r.stderr
                answered += r.stdout.split().count("200")
            time.sleep(0.5)
        core = eng.stats()["core"]
    finally:
        time.sleep(0.5)
        eng.stop()
    assert answered == 200 * len(clients)
    # ports did go back to the pool during the run (the closed flows
    # expired), so a stack would have handed them out again
    assert core["flows_expired"] > 20, core
    paws = (nstat(lab, "real1", "TcpExtPAWSTimewait")["TcpExtPAWSTimewait"]
            - real_before["TcpExtPAWSTimewait"])
    retrans = (nstat(lab, "client", "TcpExtTCPSynRetrans")
               ["TcpExtTCPSynRetrans"] - client_before["TcpExtTCPSynRetrans"])
    assert (paws, retrans) == (0, 0)
