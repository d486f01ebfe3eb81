"""L4 Direct Routing end to end: a one-arm lab, three real servers set up
with `pyfwd realserver setup`, whoami servers, the engine on AF_XDP in the
lb namespace, curl and UDP from the client.  Root; the lab is removed
whatever happens."""

import collections
import re
import secrets
import signal
import socket
import subprocess
import threading
import time

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet import UDP as UDPLayer
from scapy.layers.l2 import Ether

from pyfwd.control.engine import Engine
from pyfwd.lab import whoami
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab
from pyfwd.model import Real, Service, Vip
from pyfwd.frames import mac_to_bytes

from ..cases import defs

from .procs import wait_line

pytestmark = pytest.mark.root

VIP4 = "10.0.0.100"
WEB = Vip.parse(f"{VIP4}:80/tcp")
UDP = Vip.parse(f"{VIP4}:9000/udp")
LB_OWN = "10.0.0.2"     # the balancer's own address: SSH would be here


def pyfwd(lab, role, *args, timeout=60):
    return lab.run(role, PYFWD + list(args), capture_output=True, text=True,
                   timeout=timeout)



@pytest.fixture(scope="module")
def lab(request):
    if __import__("os").geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    name = "pfd" + secrets.token_hex(3)
    procs = []
    with Lab(name, topology="one-arm", reals=3) as lab:
        for role in lab.reals:
            r = pyfwd(lab, role, "realserver", "setup", "--vip", VIP4)
            assert r.returncode == 0, r.stderr
            p = lab.popen(role, whoami.command(80, role, udp=UDP.port,
                                               udp_bind=VIP4),
                          stdout=subprocess.PIPE, text=True)
            wait_line(p, "listening")
            procs.append(p)
        # The balancer's own service (think SSH): must work all along.
        own = lab.popen("lb", whoami.command(22, "lb", bind=LB_OWN),
                        stdout=subprocess.PIPE, text=True)
        wait_line(own, "listening")
        procs.append(own)
        lab.lb_mac = lab.node("lb").interfaces[0].mac
        yield lab
        for p in procs:
            p.kill()


def run_engine(lab, backend):
    """An in-process engine in the lb namespace (poll mode: no spinning)."""
    services = [Service(WEB, [Real.parse("10.0.0.11@1"),
                              Real.parse("10.0.0.12@1"),
                              Real.parse("10.0.0.13@2")]),
                Service(UDP, [Real.parse("10.0.0.11"),
                              Real.parse("10.0.0.12")])]
    eng = Engine("eth0", services, busy_poll=0, flows=1 << 16,
                 backend=backend)
    lab.call("lb", eng.start)
    assert eng.info.backend == backend
    yield eng
    time.sleep(0.5)         # the last FIN handshakes, through the engine
    eng.stop()
    assert xdp_prog(lab) == 0


@pytest.fixture(params=["xdp", "afpacket"])
def engine(lab, request):
    """The engine on each backend: every test that takes it runs twice."""
    yield from run_engine(lab, request.param)


@pytest.fixture
def xdp_engine(lab):
    yield from run_engine(lab, "xdp")


def xdp_prog(lab):
    """The XDP program id on lb's eth0, through netlink (0: none)."""
    def query():
        with IPRoute() as ipr:
            link = ipr.get_links(ipr.link_lookup(ifname="eth0")[0])[0]
        xdp = link.get_attr("IFLA_XDP")
        return (xdp.get_attr("IFLA_XDP_PROG_ID") or 0) if xdp else 0
    return lab.call("lb", query)


def own_socket(lab):
    """--control-socket of a CLI engine here: its own, not the default
    /run/pyfwd/pyfwd.sock, which another engine on the machine may hold
    (/run is not the lab's own)."""
    return ["--control-socket", f"/tmp/{lab.name}-ctl.sock"]


def curl(lab, *args, timeout=30):
    r = lab.run("client", ["curl", "-sS", "--max-time", str(timeout), *args],
                capture_output=True, text=True, timeout=timeout + 10)
    return r


def own_service_works(lab):
    r = curl(lab, f"http://{LB_OWN}:22/", timeout=5)
    return r.returncode == 0 and "node=lb" in r.stdout


def lb_rx_bytes(lab):
    def query():
        with IPRoute() as ipr:
            link = ipr.get_links(ipr.link_lookup(ifname="eth0")[0])[0]
        return link.get_attr("IFLA_STATS64")["rx_bytes"]
    return lab.call("lb", query)


def test_300_connections_spread_by_weight_with_the_client_address(lab,
                                                                   engine):
    n = 300
    urls = [f"http://{VIP4}/"] * n
    r = curl(lab, "-H", "Connection: close", *urls, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == n
    seen = collections.Counter(re.search(r"node=(\w+)", x).group(1)
                               for x in lines)
    # maglev, weights 1:1:2 -> 25% 25% 50%; 300 flows: within 10 points
    for role, share in (("real1", .25), ("real2", .25), ("real3", .5)):
        assert abs(seen[role] / n - share) < 0.10, seen
    assert all("client=10.0.0.1:" in x for x in lines), lines[:3]
    assert all(f"local={VIP4}:80" in x for x in lines)
    s = engine.stats()
    assert s["core"]["flows_new"] >= n
    assert s["core"]["reason"]["forward"] == s["core"]["tx"]
    assert sum(r["flows_new"] for r in s["vips"][0]["reals"]) >= n


def test_100mb_download_replies_bypass_the_balancer(lab, engine):
    before_rx, size = lb_rx_bytes(lab), 100_000_000
    r = curl(lab, "-o", "/dev/null", "-w", "%{size_download} %{http_code}",
             f"http://{VIP4}/bytes/{size}", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(size), "200"]
    crossed = lb_rx_bytes(lab) - before_rx
    core = engine.stats()["core"]
    # Client -> server (ACKs) crosses the balancer; the 100 MB do not.
    assert crossed < size * 0.05, crossed
    assert core["bytes"] < size * 0.05, core["bytes"]
    # The ACKs did come through us: with the default offloads (TSO) one
    # covers up to 64 KiB, so a few hundred of them at least.
    assert core["rx"] > 300, core["rx"]


def test_udp_exchange(lab, engine):
    sock = lab.socket("client", socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3)
    sock.connect((VIP4, UDP.port))
    answers = set()
    for i in range(20):
        sock.send(b"x" * (i + 1))
        reply = sock.recv(2048).decode()
        assert f"len={i + 1}" in reply and "client=10.0.0.1:" in reply
        answers.add(re.search(r"node=(\w+)", reply).group(1))
    sock.close()
    assert len(answers) == 1        # one flow, one real server
    assert answers <= {"real1", "real2"}


def test_download_survives_adding_a_real_and_changing_weights(lab, engine):
    size = 60_000_000
    out = {}

    def download():
        out["r"] = curl(lab, "-o", "/dev/null", "-D", "-", "--limit-rate",
                        "20M", "-w", "%{size_download}",
                        f"http://{VIP4}/bytes/{size}", timeout=60)

    engine.remove_real(WEB, "10.0.0.13")      # halt, before the download
    t = threading.Thread(target=download)
    t.start()
    time.sleep(1.0)
    engine.add_real(WEB, Real.parse("10.0.0.13@5"))
    engine.set_weight(WEB, "10.0.0.11", 7)
    engine.set_weight(WEB, "10.0.0.12", 0)    # drain: flows go on
    engine.set_weight(WEB, "10.0.0.11", 0)
    time.sleep(0.5)
    engine.set_weight(WEB, "10.0.0.11", 7)
    engine.set_weight(WEB, "10.0.0.12", 3)
    t.join(60)
    r = out["r"]
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(str(size))
    assert re.search(r"X-Node: real[12]", r.stdout)
    stats = engine.stats()
    assert stats["core"]["vip_generation"] >= 7
    # The new weights rule new flows at once.
    assert {x["real"]: x["weight"] for x in stats["vips"][0]["reals"]} == {
        "10.0.0.11": 7, "10.0.0.12": 3, "10.0.0.13": 5}


def test_malformed_frames_at_the_vip_are_counted_not_disturbing(lab,
                                                                engine):
    size = 40_000_000
    out = {}

    def download():
        out["r"] = curl(lab, "-o", "/dev/null", "--limit-rate", "20M", "-w",
                        "%{size_download}", f"http://{VIP4}/bytes/{size}",
                        timeout=60)

    client_mac = lab.node("client").interfaces[0].mac
    bad = []
    for case in defs.malformed():
        if case.reason in ("drop_runt", "drop_oversize", "drop_vlan_trunc",
                           "drop_arp_trunc", "drop_ip6_version"):
            continue            # not addressed to the VIP: XDP passes them
        pkt = Ether(case.frame)
        if pkt.haslayer(UDPLayer):      # to the UDP VIP's port, as served
            pkt[UDPLayer].dport = UDP.port
        f = bytes(pkt)
        frame = mac_to_bytes(lab.lb_mac) + mac_to_bytes(client_mac) + f[12:]
        bad.append((case.reason, frame))
    before = engine.stats()["core"]["reason"]
    raw = lab.socket("client", socket.AF_PACKET, socket.SOCK_RAW)
    raw.bind(("eth0", 0))
    t = threading.Thread(target=download)
    t.start()
    time.sleep(0.5)
    for _ in range(5):
        for _, frame in bad:
            raw.send(frame)
        time.sleep(0.1)
    raw.close()
    t.join(60)
    assert out["r"].returncode == 0, out["r"].stderr
    assert out["r"].stdout.strip() == str(size)
    after = engine.stats()["core"]["reason"]
    grew = {k for k in after if after[k] > before[k] and k.startswith("drop")}
    assert {"drop_ip4_ihl", "drop_ip4_totlen", "drop_fragment",
            "drop_tcp_doff", "drop_udp_len", "drop_l4_trunc"} <= grew, grew


def test_cli_engine_killed_by_sigterm_and_sigkill_leaves_no_xdp(lab):
    assert xdp_prog(lab) == 0
    assert own_service_works(lab)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = lab.popen("lb", PYFWD + [
            "start", "--iface", "eth0", "--vip", f"{VIP4}:80/tcp",
            "--real", "10.0.0.11", "--real", "10.0.0.12", *own_socket(lab)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_line(proc, "attached")
            assert xdp_prog(lab) != 0
            r = curl(lab, f"http://{VIP4}/", timeout=5)
            assert r.returncode == 0 and "client=10.0.0.1:" in r.stdout
            assert own_service_works(lab)           # during
        finally:
            proc.send_signal(sig)
            proc.wait(timeout=10)
        assert xdp_prog(lab) == 0, f"XDP left after {sig.name}"
        assert own_service_works(lab)               # after
        if sig == signal.SIGTERM:
            assert proc.returncode == 0
            assert "XDP program detached" in proc.stdout.read()


def test_cli_config_file_and_bad_arguments(lab, tmp_path):
    bad = pyfwd(lab, "lb", "start", "--iface", "eth0", "--vip",
                "10.0.0.100:99999/tcp", "--real", "10.0.0.11")
    assert bad.returncode != 0 and "99999" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = pyfwd(lab, "lb", "start", "--iface", "nosuch0", "--vip",
                "10.0.0.100:80/tcp", "--real", "10.0.0.11")
    assert bad.returncode != 0 and "nosuch0" in bad.stderr
    assert xdp_prog(lab) == 0
    cfg = tmp_path / "pyfwd.toml"
    cfg.write_text(f"""
[engine]
iface = "eth0"

[[vip]]
name = "pacs-web"
address = "{VIP4}"
port = 80
protocol = "tcp"
scheduler = "wrr"

[[vip.real]]
address = "10.0.0.12"
weight = 1
""")
    proc = lab.popen("lb", PYFWD + ["start", "--config", str(cfg),
                                    "--busy-poll", "0", *own_socket(lab)],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     text=True)
    try:
        wait_line(proc, "attached")
        r = curl(lab, f"http://{VIP4}/", timeout=5)
        assert "node=real2" in r.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0
    assert xdp_prog(lab) == 0


def test_arp_check_names_a_real_server_that_answers_for_the_vip(lab,
                                                                 engine):
    check = ["arp-check", "--iface", "eth0", "--vip", VIP4,
             "--balancer-mac", lab.lb_mac]
    r = pyfwd(lab, "client", *check)
    assert r.returncode == 0, r.stdout + r.stderr
    assert lab.lb_mac in r.stdout and "PROBLEM" not in r.stdout
    # real3 "forgets" the DR set-up: it answers ARP for the VIP again.
    real3_mac = lab.node("real3").interfaces[0].mac
    for key in ("net.ipv4.conf.all.arp_ignore",
                "net.ipv4.conf.eth0.arp_ignore"):
        lab.sysctl("real3", key, 0)
    try:
        r = pyfwd(lab, "client", *check)
        assert r.returncode == 1, r.stdout
        assert f"{real3_mac}  ARP PROBLEM" in r.stdout
        assert f"{lab.lb_mac}  balancer" in r.stdout
    finally:
        fix = pyfwd(lab, "real3", "realserver", "setup", "--vip", VIP4)
    assert fix.returncode == 0 and "arp_ignore" in fix.stdout
    r = pyfwd(lab, "client", *check)
    assert r.returncode == 0 and real3_mac not in r.stdout
    lab.run("client", ["ip", "neigh", "flush", "all"])


def test_leftover_program_passes_traffic_and_cleanup_removes_it(lab):
    from pyfwd.dataplane.native import bpf_object_path
    # Another attach mode (netlink, as `ip` does it) outlives its loader.
    r = lab.run("lb", ["ip", "link", "set", "dev", "eth0", "xdpgeneric",
                       "obj", bpf_object_path(), "sec", "xdp"],
                capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    try:
        assert xdp_prog(lab) != 0
        # No socket behind the redirect: the kernel keeps the frames.
        assert own_service_works(lab)
        # The engine refuses to start over it, and says what to do.
        bad = pyfwd(lab, "lb", "start", "--iface", "eth0", "--vip",
                    f"{VIP4}:80/tcp", "--real", "10.0.0.11")
        assert bad.returncode != 0 and "pyfwd cleanup" in bad.stderr
        r = pyfwd(lab, "lb", "cleanup", "--iface", "eth0")
        assert r.returncode == 0 and "removed XDP program" in r.stdout
        assert xdp_prog(lab) == 0
        r = pyfwd(lab, "lb", "cleanup", "--iface", "eth0")
        assert "no XDP program" in r.stdout
    finally:
        lab.run("lb", ["ip", "link", "set", "dev", "eth0", "xdpgeneric",
                       "off"])


def test_cleanup_leaves_a_running_engine_alone(lab, xdp_engine):
    prog = xdp_prog(lab)
    r = pyfwd(lab, "lb", "cleanup", "--iface", "eth0")
    assert r.returncode == 1 and "engine is running" in r.stderr
    assert xdp_prog(lab) == prog
    assert "node=" in curl(lab, f"http://{VIP4}/", timeout=5).stdout


def test_generic_xdp_mode_forwards_too(lab):
    proc = lab.popen("lb", PYFWD + [
        "start", "--iface", "eth0", "--vip", f"{VIP4}:80/tcp", "--real",
        "10.0.0.13", "--xdp-mode", "generic", "--busy-poll", "0",
        *own_socket(lab)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = wait_line(proc, "attached")
        assert "in generic mode" in lines[-1]
        r = curl(lab, f"http://{VIP4}/", timeout=5)
        assert "node=real3" in r.stdout and "client=10.0.0.1:" in r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert xdp_prog(lab) == 0


def set_rx_queues(lab, role, ifname, n):
    """ethtool -L IF rx n tx n (veth supports it), through the ioctl."""
    import array
    import fcntl
    import struct

    def apply():
        buf = array.array("I", [0x3d, 0, 0, 0, 0, n, n, 0, 0])
        ifr = struct.pack("16sP", ifname.encode(), buf.buffer_info()[0])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), 0x8946, ifr)    # ETHTOOL_SCHANNELS
    lab.call(role, apply)


def test_one_loop_per_rx_queue(lab):
    set_rx_queues(lab, "lb", "eth0", 2)
    set_rx_queues(lab, "sw", "lb", 2)     # the peer sends on both queues
    eng = Engine("eth0", [Service(WEB, [Real.parse("10.0.0.11"),
                                        Real.parse("10.0.0.12")])],
                 busy_poll=0, flows=1 << 12)
    try:
        lab.call("lb", eng.start)
        assert eng.info.queues == 2
        r = curl(lab, "-H", "Connection: close", *[f"http://{VIP4}/"] * 100,
                 timeout=60)
        assert r.returncode == 0 and r.stdout.count("node=real") == 100
        queues = eng.stats()["queues"]
        assert all(q["rx"] > 0 for q in queues), queues
        assert sum(q["tx"] for q in queues) >= 100 * 3
    finally:
        eng.stop()
        set_rx_queues(lab, "lb", "eth0", 1)
        set_rx_queues(lab, "sw", "lb", 1)
    assert xdp_prog(lab) == 0


def test_auto_backend_falls_back_to_raw_sockets_and_says_why(lab, caplog):
    """Where AF_XDP does not work (here: native XDP forced on a bridge
    device, which has none), backend auto takes the raw sockets."""
    def add_dummy():
        with IPRoute() as ipr:
            ipr.link("add", ifname="pfdum0", kind="bridge")
            ipr.link("set", index=ipr.link_lookup(ifname="pfdum0")[0],
                     state="up")
    lab.call("lb", add_dummy)
    eng = Engine("pfdum0", [Service(WEB, [Real.parse("10.0.0.11")])],
                 busy_poll=0, flows=1 << 10, xdp_mode="native")
    try:
        with caplog.at_level("WARNING", logger="pyfwd"):
            lab.call("lb", eng.start)
        assert eng.info.backend == "afpacket"
        assert "AF_XDP does not work here" in caplog.text
        assert "raw-socket backend" in caplog.text
    finally:
        eng.stop()

        def del_dummy():
            with IPRoute() as ipr:
                ipr.link("del", index=ipr.link_lookup(ifname="pfdum0")[0])
        lab.call("lb", del_dummy)
