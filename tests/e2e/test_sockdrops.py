"""Socket-level drops, end to end (root, a one-arm DR lab): the queue's loop
paused (the test hook of issue 16) while a client sends a burst of UDP to
the VIP, the kernel drops at the socket what its ring cannot hold, and
`pyfwd ctl stats` (table and --json) and /metrics say so: AF_XDP's
XDP_STATISTICS (rx_ring_full, fill ring empty, ...) and the raw-socket
backend's PACKET_STATISTICS (drops, added up across reads, which reset the
kernel's)."""

import json
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyfwd.control.engine import Engine
from pyfwd.control.metrics import SOCK_METRICS
from pyfwd.control.metrics_http import MetricsServer
from pyfwd.control.server import ControlServer
from pyfwd.dataplane.native import SOCK_COUNTERS
from pyfwd.lab.programs import PYFWD
from pyfwd.model import Real, Service, Vip

from . import labs

pytestmark = pytest.mark.root

VIP = "10.0.0.100"
PORT = labs.UDP_PORT
# More than either ring holds: AF_XDP's RX ring has 2048 slots; the raw
# socket's 4 MiB of blocks hold about 2,600 frames of this size.
BURST, PAYLOAD = 8000, 1200
# What counts a frame dropped at the socket, by backend, each frame once
# (AF_XDP's rx_fill_ring_empty_descs says why, beside rx_dropped).
DROPS = {"xdp": ("rx_dropped", "rx_ring_full", "rx_invalid_descs"),
         "afpacket": ("drops",)}


def built(topology, **kw):
    """A lab of one real server for a module's tests, removed after."""
    lab = labs.build("pfsd", topology, reals=1, **kw)
    yield lab
    lab.down()


@pytest.fixture(scope="module")
def lab():
    yield from built("one-arm", dr_vip=VIP)


@pytest.fixture(scope="module")
def nat_lab():
    yield from built("two-arm")


def udp_request(lab):
    """One request to the VIP's UDP service: the real's answer, or None."""
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.settimeout(1)\n"
            f"s.sendto(b'hello', ({VIP!r}, {PORT}))\n"
            "print(s.recv(2048).decode(errors='replace'))\n")
    r = lab.run("client", ["python3", "-c", code], capture_output=True,
                text=True, timeout=10)
    return r.stdout.strip() if r.returncode == 0 else None


def burst(lab, n=BURST):
    """n datagrams to the VIP, as fast as the client sends."""
    code = ("import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({n}):\n"
            f"    s.sendto(b'x' * {PAYLOAD}, ({VIP!r}, {PORT}))\n")
    r = lab.run("client", ["python3", "-c", code], capture_output=True,
                text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def ctl(lab, sock, *args):
    r = lab.run("lb", PYFWD + ["ctl", "--socket", str(sock), *args],
                capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout


def scrape(url):
    """{(metric, queue, iface): value} of the socket metrics at url."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    names = {name for table in SOCK_METRICS.values()
             for name, _ in table.values()}
    return {(s.name, s.labels["queue"], s.labels["iface"]): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name in names}


@pytest.mark.parametrize("backend", ["xdp", "afpacket"])
def test_a_stalled_loop_makes_the_kernel_drop_and_it_is_seen(
        lab, tmp_path, backend):
    eng = Engine("eth0", [Service(Vip.parse(f"{VIP}:{PORT}/udp"),
                                  [Real.parse("10.0.0.11")], name="udp")],
                 busy_poll=0, flows=1 << 12, backend=backend)
    sock = tmp_path / "sd.sock"
    lab.call("lb", eng.start)
    server = ControlServer(eng, str(sock)).start()
    metrics = MetricsServer(eng.stats, ("127.0.0.1", 0)).start()
    try:
        assert eng.info.backend == backend
        assert udp_request(lab)             # works; the client has ARP
        before = json.loads(ctl(lab, sock, "--json", "stats"))["sockets"]
        [row] = before[backend]
        assert (row["queue"], row["iface"]) == (0, "eth0")
        assert set(row) == {"queue", "iface", *SOCK_COUNTERS[backend]}
        assert sum(row[k] for k in DROPS[backend]) == 0, row

        eng.xsk.pause(0)                    # the loop stalls
        t0 = time.monotonic()
        burst(lab)
        sent_in = time.monotonic() - t0
        eng.xsk.pause(0, "run")
        assert udp_request(lab)             # and works again

        after = json.loads(ctl(lab, sock, "--json", "stats"))["sockets"]
        [row] = after[backend]
        dropped = sum(row[k] for k in DROPS[backend])
        print(f"{backend}: {BURST} frames in {sent_in:.2f}s with the loop "
              f"paused: {row}")
        # the ring held what it could, the rest was dropped at the socket
        assert 0 < dropped < BURST, row
        if backend == "xdp":
            # the fill ring (4096 frames, twice the RX ring: XskRings)
            # stays stocked while the RX ring (2048 slots) fills: the
            # kernel drops at the full RX ring, never for want of a frame
            assert row["rx_ring_full"] > 0, row
            assert row["rx_fill_ring_empty_descs"] == 0, row
        else:
            assert row["freeze_q_cnt"] >= 1, row
            # tp_packets counts the dropped frames too
            assert row["packets"] >= BURST, row
            # reads reset the kernel's counters: the engine adds them up
            again = json.loads(ctl(lab, sock, "--json", "stats"))
            assert again["sockets"][backend][0]["drops"] == row["drops"]

        text = ctl(lab, sock, "stats")
        title = {"xdp": "AF_XDP sockets (XDP_STATISTICS)",
                 "afpacket": "raw sockets (PACKET_STATISTICS)"}[backend]
        assert title in text, text

        seen = scrape(metrics.url)
        for key, (name, _) in SOCK_METRICS[backend].items():
            assert seen[(name, "0", "eth0")] >= row[key], (name, seen)
        assert sum(seen[(SOCK_METRICS[backend][k][0], "0", "eth0")]
                   for k in DROPS[backend]) >= dropped
    finally:
        metrics.stop()
        server.stop()
        eng.stop()


@pytest.mark.parametrize("backend", ["xdp", "afpacket"])
def test_two_arm_nat_has_a_socket_per_interface(nat_lab, tmp_path, backend):
    lab = nat_lab
    [real] = lab.reals
    eng = Engine("eth0", [Service(Vip.parse(f"{VIP}:{PORT}/udp"),
                                  [Real.parse(lab.ip(real))], "wrr", "nat",
                                  name="udp")],
                 busy_poll=0, flows=1 << 12, backend=backend,
                 inside_iface="eth1")
    lab.call("lb", eng.start)
    try:
        n = 5
        for _ in range(n):
            assert udp_request(lab)
        sockets = eng.stats()["sockets"][backend]
        assert [(r["queue"], r["iface"]) for r in sockets] == \
            [(q, iface) for q in range(eng.info.queues)
             for iface in ("eth0", "eth1")]
        for row in sockets:
            assert sum(row[k] for k in DROPS[backend]) == 0, row
        if backend == "afpacket":
            # the requests came in outside, the real's answers inside
            out, inside = sockets
            assert out["packets"] >= n and inside["packets"] >= n, sockets
    finally:
        eng.stop()
