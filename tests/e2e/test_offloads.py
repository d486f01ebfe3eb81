"""Checksums end to end, with the kernel's default offloads and without.

The labs keep a user's defaults: the client and the real servers send with
tx checksum offload on, so what reaches the balancer on its veth carries
unfinished TCP/UDP checksums, which the data plane completes (csrc/csum.c);
the real servers and the client must count no checksum error.  Then the
client turns its offload off, on purpose: its frames arrive finished and
must pass untouched.  DR (one-arm) and NAT (two-arm), on both backends.
Root; the labs are removed whatever happens."""

import re
import time

import pytest
from pyroute2.ethtool.ioctl import IoctlEthtool

from pyfwd.control.engine import Engine
from pyfwd.model import Real, Service, Vip

from . import labs

pytestmark = pytest.mark.root

VIP4 = "10.0.0.100"
WEB = Vip.parse(f"{VIP4}:80/tcp")
UDP = Vip.parse(f"{VIP4}:{labs.UDP_PORT}/udp")


@pytest.fixture(scope="module")
def dr_lab():
    lab = labs.build("pfo", "one-arm", reals=2, dr_vip=VIP4)
    yield lab
    lab.down()


@pytest.fixture(scope="module")
def nat_lab():
    lab = labs.build("pfo", "two-arm", reals=2)
    yield lab
    lab.down()


def tx_checksum(lab, role, on):
    """`ethtool -K eth0 tx on|off` in role's namespace."""
    def apply():
        ethtool = IoctlEthtool("eth0")
        try:
            ethtool.set_offload_flag("tx-checksumming", int(on))
        finally:
            ethtool.close()
    lab.call(role, apply)


def csum_errors(lab, role):
    """TCP and UDP InCsumErrors of role's kernel (/proc/net/snmp)."""
    text = lab.run(role, ["cat", "/proc/net/snmp"], capture_output=True,
                   text=True, check=True).stdout
    out = {}
    for proto in ("Tcp", "Udp"):
        names, values = re.findall(rf"^{proto}: (.*)$", text, re.M)
        out[proto] = dict(zip(names.split(), map(int, values.split())))[
            "InCsumErrors"]
    return out


def errors(lab):
    return {role: csum_errors(lab, role) for role in ["client", *lab.reals]}


def requests(lab):
    """Ten HTTP requests (new connections) and a UDP exchange from the
    client through the VIP; asserts every answer came."""
    r = lab.run("client", ["curl", "-sS", "--max-time", "3", "-H",
                           "Connection: close", *[f"http://{VIP4}/"] * 10],
                capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("node=real") == 10, r.stdout
    udp = lab.run("client", ["python3", "-c", (
        "import socket; s = socket.socket(socket.AF_INET, "
        "socket.SOCK_DGRAM); s.settimeout(3); "
        f"s.connect(('{VIP4}', {UDP.port})); s.send(b'x' * 700); "
        "print(s.recv(2048).decode())")], capture_output=True, text=True,
        timeout=10)
    assert udp.returncode == 0 and "len=700" in udp.stdout, udp.stderr


def sums(eng):
    core = eng.stats()["core"]
    return core["csum_completed"], core["csum_bad"]


@pytest.fixture(params=["xdp", "afpacket"])
def backend(request):
    return request.param


def run(lab, mode, backend, reals):
    eng = Engine("eth0", [Service(WEB, reals[0], "maglev", mode),
                          Service(UDP, reals[1], "wrr", mode)],
                 busy_poll=0, flows=1 << 12, backend=backend,
                 inside_iface="eth1" if mode == "nat" else None)
    lab.call("lb", eng.start)
    return eng


def both_ways(lab, eng, mode):
    """Default offloads, then the client's tx checksum offload off."""
    slots = (0,) if mode == "dr" else (0, 1)
    assert eng.info.csum_slots == slots      # veth: decided at open
    before = errors(lab)
    requests(lab)
    completed, bad = sums(eng)
    # Every SYN, request and datagram arrived unfinished (NAT: the
    # answers too) and was completed; nobody counted a checksum error.
    assert completed >= 10 * 3 + 1 and bad == 0, (completed, bad)
    assert errors(lab) == before
    tx_checksum(lab, "client", False)
    try:
        requests(lab)
        more, bad = sums(eng)
        assert bad == 0
        if mode == "dr":
            # DR: only the client's frames cross us, finished now
            assert more == completed
        else:
            # NAT: the answers are still the reals' (offload on)
            assert more >= completed + 10 * 2 + 1
        assert errors(lab) == before
    finally:
        tx_checksum(lab, "client", True)


def test_dr_with_default_offloads_and_the_clients_off(dr_lab, backend):
    reals = [Real.parse(dr_lab.ip(r)) for r in dr_lab.reals]
    eng = run(dr_lab, "dr", backend, (reals, reals))
    try:
        both_ways(dr_lab, eng, "dr")
    finally:
        time.sleep(0.3)
        eng.stop()


def test_nat_with_default_offloads_and_the_clients_off(nat_lab, backend):
    lab = nat_lab
    eng = run(lab, "nat", backend,
              ([Real(lab.ip(r), 8080) for r in lab.reals],
               [Real(lab.ip(r)) for r in lab.reals]))
    try:
        both_ways(lab, eng, "nat")
    finally:
        time.sleep(0.3)
        eng.stop()
