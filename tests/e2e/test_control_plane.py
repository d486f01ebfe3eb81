"""The control plane end to end in a one-arm lab (DR, three whoami real
servers): health checks take a dead server out and bring it back, drain,
halt, online and reload through the control socket, each scheduler's
spread over 3000 new connections, the metrics page.  Root; the lab is
removed whatever happens."""

import json
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from pyroute2 import IPRoute

from pyfwd.control import server as control
from pyfwd.control.engine import Engine
from pyfwd.control.health.spec import HealthSpec
from pyfwd.lab import whoami
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab
from pyfwd.model import Real, Service, Vip

from .procs import wait_line

pytestmark = pytest.mark.root

VIP4 = "10.0.0.100"
WEB = Vip.parse(f"{VIP4}:80/tcp")
INTERVAL, RISE, FALL = 0.5, 2, 2
SOURCES = [f"10.0.0.{i}" for i in range(150, 182)]   # extra client addresses


class Reals:
    """whoami on port 80 of each real server, stoppable one by one."""

    def __init__(self, lab):
        self.lab, self.procs = lab, {}

    def start(self, role):
        p = self.lab.popen(role, whoami.command(80, role),
                           stdout=subprocess.PIPE, text=True)
        wait_line(p, "listening")
        self.procs[role] = p

    def stop(self, role):
        p = self.procs.pop(role)
        p.kill()
        p.wait(timeout=5)

    def stop_all(self):
        for role in list(self.procs):
            self.stop(role)


@pytest.fixture(scope="module")
def lab():
    name = "pfc" + secrets.token_hex(3)
    with Lab(name, topology="one-arm", reals=3) as lab:
        for role in lab.reals:
            r = lab.run(role, PYFWD + ["realserver", "setup", "--vip", VIP4],
                        capture_output=True, text=True)
            assert r.returncode == 0, r.stderr

        def add_sources():
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname="eth0")[0]
                for a in SOURCES:
                    ipr.addr("add", index=idx, address=a, prefixlen=24)
        lab.call("client", add_sources)
        lab.servers = Reals(lab)
        for role in lab.reals:
            lab.servers.start(role)
        yield lab
        lab.servers.stop_all()


def web(scheduler="wrr", weights=(1, 1, 1), health=None, persistence=0):
    reals = [Real(f"10.0.0.{11 + i}", weight=w) for i, w in
             enumerate(weights)]
    return Service(WEB, reals, scheduler, persistence=persistence,
                   name="pacs-web", health=health)


@pytest.fixture
def engine(lab, tmp_path):
    """An engine factory: started in the lb namespace with a control
    socket; all stopped at the end."""
    made = []

    def make(*services, config_path=None):
        if made:                    # one engine on an interface at a time
            time.sleep(1.0)
        for eng, srv in made:
            srv.stop()
            eng.stop()
        eng = Engine("eth0", list(services), busy_poll=0, flows=1 << 16,
                     config_path=config_path)
        lab.call("lb", eng.start)
        sock = str(tmp_path / f"ctl{len(made)}.sock")
        srv = control.ControlServer(eng, sock).start()
        eng.sock = sock
        made.append((eng, srv))
        return eng

    yield make
    # Let the last connections finish their FIN handshakes through the
    # engine: cut off, they retransmit for seconds, and the next test's
    # engine would schedule those packets as new flows (DR does that for
    # any packet of no flow).
    time.sleep(1.0)
    for eng, srv in made:
        srv.stop()
        eng.stop()


def ctl(eng, cmd, **args):
    return control.request(eng.sock, cmd, **args)


def real_row(eng, real):
    for r in eng.show()[0]["reals"]:
        if r["real"] == real:
            return r
    raise KeyError(real)


def curl(lab, *args, timeout=30):
    return lab.run("client", ["curl", "-sS", "--max-time", str(timeout),
                              *args], capture_output=True, text=True,
                   timeout=timeout + 10)


def requests(lab, n):
    """n new connections with curl: the real server of each (or a failure
    line)."""
    r = curl(lab, "-H", "Connection: close", *[f"http://{VIP4}/"] * n,
             timeout=60)
    return r.returncode, re.findall(r"node=(\w+)", r.stdout)


def wait_for(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def test_health_check_takes_a_dead_server_out_and_back(lab, engine):
    spec = HealthSpec.from_dict({"type": "http", "path": "/", "expect": 200,
                                 "interval": INTERVAL, "timeout": 0.4,
                                 "rise": RISE, "fall": FALL})
    eng = engine(web(health=spec))
    assert wait_for(lambda: all(r["health"] == "up" for r in
                                eng.show()[0]["reals"]), 5)
    lab.servers.stop("real2")
    t0 = time.monotonic()
    assert wait_for(lambda: real_row(eng, "10.0.0.12")["health"] == "down",
                    FALL * INTERVAL + INTERVAL + 0.5)
    took = time.monotonic() - t0
    assert took <= FALL * INTERVAL + INTERVAL + 0.3, took
    assert not real_row(eng, "10.0.0.12")["scheduled"]
    rc, nodes = requests(lab, 60)         # after that no request fails
    assert rc == 0 and len(nodes) == 60 and "real2" not in nodes
    lab.servers.start("real2")
    t0 = time.monotonic()
    assert wait_for(lambda: real_row(eng, "10.0.0.12")["health"] == "up",
                    RISE * INTERVAL + INTERVAL + 0.5)
    took = time.monotonic() - t0
    assert took <= RISE * INTERVAL + INTERVAL + 0.3, took
    rc, nodes = requests(lab, 30)
    assert rc == 0 and "real2" in nodes


def test_fallback_takes_over_when_every_real_is_down(lab, engine):
    spec = HealthSpec.from_dict({"type": "tcp", "interval": INTERVAL,
                                 "timeout": 0.3, "rise": 1, "fall": 1})
    svc = Service(WEB, [Real("10.0.0.11"), Real("10.0.0.12")], "wrr",
                  name="pacs-web", health=spec, fallback=Real("10.0.0.13"))
    eng = engine(svc)
    lab.servers.stop("real1")
    lab.servers.stop("real2")
    try:
        assert wait_for(lambda: eng.show()[0]["fallback_active"], 3)
        rc, nodes = requests(lab, 10)
        assert rc == 0 and set(nodes) == {"real3"}
    finally:
        lab.servers.start("real1")
        lab.servers.start("real2")
    assert wait_for(lambda: not eng.show()[0]["fallback_active"], 3)


def download(lab, size, out):
    out["r"] = curl(lab, "-o", "/dev/null", "-D", "-", "--limit-rate", "10M",
                    "-w", "%{size_download}", f"http://{VIP4}/bytes/{size}",
                    timeout=60)


def download_in_flight(lab, eng, size):
    """(thread, out, real): a download started, and the real server it
    went to (the one with a live flow)."""
    out = {}
    t = threading.Thread(target=download, args=(lab, size, out))
    t.start()
    assert wait_for(lambda: any(r["active"] for r in
                                eng.show()[0]["reals"]), 3)
    rows = [r for r in eng.show()[0]["reals"] if r["active"] > 0]
    assert len(rows) == 1, rows
    return t, out, rows[0]["real"]


def test_drain_keeps_a_download_and_avoids_the_server(lab, engine):
    eng = engine(web())
    size = 30_000_000
    t, out, real = download_in_flight(lab, eng, size)
    ctl(eng, "drain", vip="pacs-web", real=real)
    assert real_row(eng, real)["state"] == "drain"
    rc, nodes = requests(lab, 30)
    role = f"real{int(real.rsplit('.', 1)[1]) - 10}"
    assert rc == 0 and len(nodes) == 30 and role not in nodes
    t.join(60)
    assert out["r"].returncode == 0, out["r"].stderr
    assert out["r"].stdout.strip().endswith(str(size))
    ctl(eng, "online", vip="pacs-web", real=real)
    rc, nodes = requests(lab, 30)
    assert role in nodes


def test_halt_ends_new_and_existing_use(lab, engine):
    eng = engine(web())
    t, out, real = download_in_flight(lab, eng, 30_000_000)
    ctl(eng, "halt", vip=str(WEB), real=real)
    t.join(60)
    # The download's flow left its real server: the one it moved to knows
    # no such connection and resets it.
    assert out["r"].returncode != 0
    role = f"real{int(real.rsplit('.', 1)[1]) - 10}"
    rc, nodes = requests(lab, 30)
    assert rc == 0 and len(nodes) == 30 and role not in nodes
    assert real_row(eng, real)["why"] == "halted"
    ctl(eng, "online", vip="pacs-web", real=real)
    rc, nodes = requests(lab, 30)
    assert role in nodes


def test_reload_applies_without_breaking_a_download(lab, engine, tmp_path):
    cfg = tmp_path / "pyfwd.toml"

    def write(weights, reals):
        body = "".join(f"""
[[vip.real]]
address = "10.0.0.{11 + i}"
weight = {weights[i]}
""" for i in range(reals))
        cfg.write_text(textwrap.dedent(f"""
            [[vip]]
            name = "pacs-web"
            address = "{VIP4}"
            port = 80
            scheduler = "wrr"
            """) + body)

    from pyfwd.control import config as config_mod
    write([1, 1], 2)
    eng = engine(*config_mod.load(str(cfg)).services, config_path=str(cfg))
    out, size = {}, 30_000_000
    t = threading.Thread(target=download, args=(lab, size, out))
    t.start()
    time.sleep(0.5)
    write([1, 4, 2], 3)
    summary = ctl(eng, "reload")
    assert "pacs-web: added 10.0.0.13" in summary["changed"]
    assert "pacs-web: 10.0.0.12 weight 1 -> 4" in summary["changed"]
    t.join(60)
    assert out["r"].returncode == 0, out["r"].stderr
    assert out["r"].stdout.strip().endswith(str(size))
    weights = {r["real"]: r["weight"] for r in eng.show()[0]["reals"]}
    assert weights == {"10.0.0.11": 1, "10.0.0.12": 4, "10.0.0.13": 2}
    cfg.write_text("[[vip]]\nname = 'x'\n")       # broken: nothing applied
    with pytest.raises(Exception, match="address"):
        ctl(eng, "reload")
    assert len(eng.show()[0]["reals"]) == 3


CONNECT = """
import socket, sys
n, sources = int(sys.argv[1]), sys.argv[2:]
for i in range(n):
    src = sources[i % len(sources)]
    s = socket.create_connection(("VIP", 80), timeout=3,
                                 source_address=(src, 0))
    s.close()
""".replace("VIP", VIP4)


def spread(lab, eng, n=3000, sources=("10.0.0.1",)):
    # The last packets of an earlier test's connections (a new engine
    # schedules them as new flows, as DR does for a packet of no flow)
    # must not count here.
    time.sleep(1.0)
    before = {r["real"]: r["flows_new"] for r in eng.show()[0]["reals"]}
    r = lab.run("client", [sys.executable, "-c", CONNECT, str(n),
                           *sources], capture_output=True, text=True,
                timeout=120)
    assert r.returncode == 0, r.stderr
    time.sleep(0.5)             # the last FIN handshakes
    got = {r["real"]: r["flows_new"] - before.get(r["real"], 0)
           for r in eng.show()[0]["reals"]}
    # A late packet of an earlier test's connection makes a flow too (DR
    # schedules any packet of no flow): allow a few.
    assert n <= sum(got.values()) <= n + STRAYS, got
    return [got[f"10.0.0.{11 + i}"] for i in range(3)]


STRAYS = 3


# Expected new flows per real server for 3000 connections; the tolerance
# covers STRAYS (and for the hash, its spread: 120 is ~4 sigma).
@pytest.mark.parametrize("scheduler,weights,expect,tolerance", [
    ("rr", (1, 1, 1), (1000, 1000, 1000), STRAYS),     # in turn
    ("wrr", (1, 2, 3), (500, 1000, 1500), STRAYS),     # in turn, by weight
    ("lc", (1, 2, 3), (1000, 1000, 1000), 3 + STRAYS),  # fewest live flows
    ("wlc", (1, 2, 3), (500, 1000, 1500), 6 + STRAYS),  # per weight
    ("maglev", (1, 1, 2), (750, 750, 1500), 120),      # hash of the 5-tuple
])
def test_scheduler_spread_over_3000_connections(lab, engine, scheduler,
                                                weights, expect, tolerance):
    eng = engine(web(scheduler, weights))
    got = spread(lab, eng)
    for g, e in zip(got, expect):
        assert abs(g - e) <= tolerance, (scheduler, got, expect)


def test_source_hash_and_persistence_keep_a_client_on_one_server(lab,
                                                                 engine):
    for svc in (web("sh"), web("maglev", persistence=60)):
        eng = engine(svc)
        one = spread(lab, eng, n=600)
        assert sorted(one)[:2] == [0, 0], (svc.scheduler, one)
        many = spread(lab, eng, n=1200, sources=SOURCES)
        # 32 clients: every server gets some, as the hash spreads them
        assert min(many) > 0, (svc.scheduler, many)


def scrape(lab):
    """{(sample name, sorted labels): value} of the lab balancer's
    /metrics."""
    from prometheus_client.parser import text_string_to_metric_families
    page = lab.run("lb", ["curl", "-sS", "http://127.0.0.1:10104/metrics"],
                   capture_output=True, text=True, timeout=10).stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(page) for s in f.samples}


def test_cli_control_socket_and_metrics_page(lab, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    cfg = tmp_path / "pyfwd.toml"
    sock = tmp_path / "pyfwd.sock"
    cfg.write_text(textwrap.dedent(f"""
        [engine]
        iface = "eth0"
        control_socket = "{sock}"
        metrics = "127.0.0.1:10104"

        [[vip]]
        name = "pacs-web"
        address = "{VIP4}"
        port = 80
        scheduler = "wlc"
        health = {{ type = "tcp", interval = 0.5, timeout = 0.3 }}

        [[vip.real]]
        address = "10.0.0.11"
        weight = 100
        """))
    r = lab.run("lb", PYFWD + ["check-config", str(cfg)], capture_output=True,
                text=True)
    assert r.returncode == 0 and "1 VIP(s)" in r.stdout, r.stderr
    proc = lab.popen("lb", PYFWD + ["start", "--config", str(cfg),
                                    "--busy-poll", "0"],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     text=True)
    try:
        wait_line(proc, "metrics at")
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert "node=real1" in curl(lab, f"http://{VIP4}/").stdout
        ctl_ = PYFWD + ["ctl", "--socket", str(sock)]
        r = lab.run("lb", ctl_ + ["show"], capture_output=True, text=True)
        assert r.returncode == 0 and "10.0.0.11" in r.stdout, r.stderr
        r = lab.run("lb", ctl_ + ["add-real", "pacs-web", "10.0.0.12@50"],
                    capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        r = lab.run("lb", ctl_ + ["--json", "show"], capture_output=True,
                    text=True)
        reals = json.loads(r.stdout)[0]["reals"]
        assert {x["real"]: x["weight"] for x in reals} == {
            "10.0.0.11": 100, "10.0.0.12": 50}
        r = lab.run("lb", ctl_ + ["weight", "nosuch", "10.0.0.11", "5"],
                    capture_output=True, text=True)
        assert r.returncode == 1 and "nosuch" in r.stderr
        page = lab.run("lb", ["curl", "-sS", "http://127.0.0.1:10104/metrics"],
                       capture_output=True, text=True).stdout
        names = {f.name for f in text_string_to_metric_families(page)}
        assert any("frames" in n for n in names), names
        assert 'real="10.0.0.12"' in page
        # the engine's, the process's; timestamps, capacity, build
        got = scrape(lab)
        for name in ("process_start_time_seconds", "pyfwd_build_info",
                     "pyfwd_flow_slots_capacity", "pyfwd_punt_ring_capacity"):
            assert any(n == name for n, _ in got), name
        assert abs(got[("pyfwd_start_time_seconds", ())] - time.time()) < 120
        assert got[("pyfwd_config_last_reload_successful", ())] == 1
        web = (("vip", "pacs-web"), ("vip_address", f"{VIP4}:80/tcp"))
        before = got[("pyfwd_vip_frames_total", web)]
        assert before > 0 and got[("pyfwd_flow_slots_used", ())] >= 0
        # a real server leaves: the VIP's counters do not go down
        r = lab.run("lb", ctl_ + ["del-real", "pacs-web", "10.0.0.11"],
                    capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        got = scrape(lab)
        assert got[("pyfwd_vip_frames_total", web)] >= before
        assert not any(dict(k).get("real") == "10.0.0.11" for _, k in got)
        # a refused reload says so
        cfg.write_text(cfg.read_text() + "\n[[vip]]\nbroken = =\n")
        r = lab.run("lb", ctl_ + ["reload"], capture_output=True, text=True,
                    timeout=30)
        assert r.returncode == 1
        assert scrape(lab)[("pyfwd_config_last_reload_successful", ())] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0
    assert not sock.exists()
