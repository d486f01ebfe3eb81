"""Path MTU discovery through DR (issue 17): a download through a hop with
a lower MTU completes, because the router's frag-needed (to the VIP: the
real's answers come from it) reaches the balancer, which sends it on to
the real server that holds the flow.

The dr-mtu lab: client -- router -- (balancer, real servers); the
router's link toward the client is narrowed to MTU 1400 (the client's own
is 1500, so its SYN offers MSS 1460 and the reals send 1500-byte packets
that the router cannot pass), default sysctls everywhere.  nginx on the
real servers serves a file; the engine balances with Maglev, on AF_XDP
and on the raw-socket backend.

- control: with the router's frag-needed dropped (an nft rule in its
  namespace), the download stalls: the topology needs the errors;
- the same download with them completes, the engine counts the errors as
  forward_icmp, and the real server that served it has learnt the path's
  MTU (its route cache toward the client says mtu 1400).

Root; the lab is removed whatever happens."""

import os
import re
import time

import pytest

from pyfwd.control.engine import Engine
from pyfwd.model import Real, Service, Vip

from .procs import realserver_setup, web_lab

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

VIP4, VIP6 = "10.0.0.100", "fd00:0:0:1::100"
MTU = 1400
SIZE = 4_000_000
SERVER = """
    server {{
        listen 80;
        listen [::]:80;
        location = /name {{ default_type text/plain; return 200 "{role}\\n"; }}
        location = /big {{ alias {d}/big; }}
    }}"""
# In the router's namespace: the errors path MTU discovery needs, dropped.
NO_FRAG_NEEDED = """table inet pficblock {
    chain output {
        type filter hook output priority 0;
        icmp type destination-unreachable drop
        icmpv6 type packet-too-big drop
    }
}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")

    def owns_both(lab, role):
        for vip in (VIP4, VIP6):
            realserver_setup(lab, role, vip)
    yield from web_lab(
        "pfic", "dr", tmp_path_factory.mktemp("pmtu"), None,
        lambda role, d: SERVER.format(d=d, role=role), SIZE,
        lambda lab: run(lab, "router", "ip", "link", "set", "eth0", "mtu",
                        str(MTU)),
        topology="dr-mtu", setup=owns_both)


@pytest.fixture(scope="module", params=["xdp", "afpacket"])
def engine(lab, request):
    """The engine on each backend (Maglev, the default scheduler)."""
    reals = [Real(lab.ip(role)) for role in lab.reals]
    eng = Engine("eth0", [Service(Vip.parse(f"{VIP4}:80/tcp"), reals),
                          Service(Vip.parse(f"[{VIP6}]:80/tcp"), reals)],
                 busy_poll=0, flows=1 << 14, backend=request.param)
    lab.call("lb", eng.start)
    yield eng
    eng.stop()


def run(lab, role, *argv, timeout=30):
    r = lab.run(role, list(argv), capture_output=True, text=True,
                timeout=timeout)
    assert r.returncode == 0, f"{argv}: {r.stderr}"
    return r.stdout


def download(lab, url, seconds):
    """(curl's exit status, bytes received) of url from the client."""
    r = lab.run("client", ["curl", "-sS", "-o", "/dev/null", "-w",
                           "%{size_download}", "--max-time", str(seconds),
                           url], capture_output=True, text=True,
                timeout=seconds + 10)
    return r.returncode, int(r.stdout or 0)


def learnt_mtu(lab, vip, client):
    """{real: the MTU its route cache has toward client from vip}."""
    found = {}
    for role in lab.reals:
        out = run(lab, role, "ip", "route", "get", client, "from", vip)
        m = re.search(r"\bmtu (\d+)", out)
        found[role] = int(m.group(1)) if m else None
    return found


def flush_learnt(lab):
    for role in lab.reals:
        run(lab, role, "ip", "route", "flush", "cache")
        run(lab, role, "ip", "-6", "route", "flush", "cache")


@pytest.mark.parametrize("family", [4, 6])
def test_download_through_lower_mtu_completes(lab, engine, family):
    vip = VIP4 if family == 4 else VIP6
    client = lab.node("client").interfaces[0]
    client = client.addr4 if family == 4 else client.addr6
    url = f"http://{vip}/big" if family == 4 else f"http://[{vip}]/big"
    flush_learnt(lab)

    # Control: without the router's errors, the download stalls.
    lab.run("router", ["nft", "-f", "-"], input=NO_FRAG_NEEDED, text=True,
            check=True)
    try:
        status, got = download(lab, url, 3)
        time.sleep(0.5)     # the client's RST ends the real's resends
        learnt = learnt_mtu(lab, vip, client)
    finally:
        run(lab, "router", "nft", "delete", "table", "inet", "pficblock")
    assert status == 28 and got < SIZE, (status, got)   # 28: timed out
    assert set(learnt.values()) == {None}, learnt
    flush_learnt(lab)

    before = engine.stats()["core"]["reason"]
    t0 = time.monotonic()
    status, got = download(lab, url, 20)
    took = time.monotonic() - t0
    after = engine.stats()["core"]["reason"]
    assert (status, got) == (0, SIZE), (status, got, took)
    print(f"{engine.info.backend} IPv{family}: {SIZE} bytes in "
          f"{took:.2f} s")
    assert after["forward_icmp"] > before["forward_icmp"]
    assert after["drop_icmp_no_flow"] == before["drop_icmp_no_flow"]
    assert MTU in learnt_mtu(lab, vip, client).values()
