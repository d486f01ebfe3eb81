"""L7 SNAT end to end: HAProxy driven by pyfwd in a one-arm lab, three
nginx real servers on port 8080 (HTTP VIP on 80, HTTPS on 443) and three
storescp real servers (a DICOM VIP in L7 TCP mode).  Root; the lab and
every process are removed whatever happens."""

import collections
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time

import pytest

from pyfwd.control.config import parse_vip
from pyfwd.control.engine import Engine
from pyfwd.control.l7.render import l7_server
from pyfwd.lab.topology import Lab
from pyfwd.model import Real

from ..certs import self_signed
from .procs import start_nginx

pytestmark = pytest.mark.root

VIP4 = "10.0.0.100"
SERVERS = """
    server {{
        listen {ip}:8080;
        location / {{
            default_type text/plain;
            return 200 "node={role} client=$remote_addr xff=$http_x_forwarded_for\\n";
        }}
        location /blob {{ alias {d}/blob; }}
    }}
    server {{
        listen {ip}:8081 proxy_protocol;
        location / {{
            default_type text/plain;
            return 200 "node={role} proxied=$proxy_protocol_addr\n";
        }}
    }}"""
DATASET = """(0008,0016) UI =SecondaryCaptureImageStorage
(0008,0018) UI [1.2.826.0.1.3680043.8.498.{n}]
(0008,0060) CS [OT]
(0010,0010) PN [PYFWD^TEST]
(0020,000d) UI [1.2.826.0.1.3680043.8.498.2]
(0020,000e) UI [1.2.826.0.1.3680043.8.498.3]
"""


def wait_port(lab, role, ip, port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = lab.run(role, [sys.executable, "-c",
                           f"import socket; socket.create_connection("
                           f"('{ip}', {port}), 1)"], capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{role}: nothing listens on {ip}:{port}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    name = "pfl" + secrets.token_hex(3)
    base = tmp_path_factory.mktemp("l7")
    procs = []
    with Lab(name, topology="one-arm", reals=3) as lab:
        try:
            for role in lab.reals:
                d = base / role
                d.mkdir()
                with open(d / "blob", "wb") as f:
                    f.truncate(60_000_000)
                procs.append(start_nginx(lab, role, d, SERVERS.format(
                    d=d, ip=lab.ip(role), role=role)))
                (d / "scp").mkdir()
                procs.append(lab.popen(
                    role, ["/usr/bin/storescp", "-aet", "ANY-SCP", "-od",
                           str(d / "scp"), "11112"],
                    env=dict(os.environ, TCP_NODELAY="1"),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for role in lab.reals:
                wait_port(lab, "client", lab.ip(role), 8080)
                wait_port(lab, "client", lab.ip(role), 11112)
            self_signed(base)
            lab.base = base
            yield lab
        finally:
            for p in procs:
                p.kill()
                p.wait(timeout=5)


def web_spec(lab, **extra):
    return {"name": "pacs-web", "address": VIP4, "port": 80, "mode": "l7",
            "l7_mode": "http", "scheduler": "rr", "cookie": "SERVERID",
            "real": [{"address": lab.ip(r), "port": 8080}
                     for r in lab.reals], **extra}


@pytest.fixture
def engine(lab):
    made = []

    def make(*specs):
        services = [parse_vip(s, "test") for s in specs]
        eng = Engine("eth0", services, busy_poll=0, flows=1 << 12)
        lab.call("lb", eng.start)
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.stop()
    # HAProxy and the VIP address are gone with the engine
    r = lab.run("lb", ["ip", "-4", "addr", "show", "dev", "eth0"],
                capture_output=True, text=True)
    assert VIP4 not in r.stdout


def curl(lab, *args, timeout=30):
    return lab.run("client", ["curl", "-sS", "--max-time", str(timeout),
                              *args], capture_output=True, text=True,
                   timeout=timeout + 10)


def test_http_forwardfor_cookie_and_spread(lab, engine):
    engine(web_spec(lab))
    r = curl(lab, f"http://{VIP4}/")
    assert r.returncode == 0, r.stderr
    assert "xff=10.0.0.1" in r.stdout                # the client's address
    assert "client=10.0.0.2" in r.stdout             # the proxy's (SNAT)
    jar = lab.base / "jar.txt"
    nodes = []
    for _ in range(50):
        r = curl(lab, "-c", str(jar), "-b", str(jar), f"http://{VIP4}/")
        nodes.append(re.search(r"node=(\w+)", r.stdout).group(1))
    assert len(set(nodes)) == 1, collections.Counter(nodes)
    r = curl(lab, *[f"http://{VIP4}/"] * 300)       # new clients, no cookie
    spread = collections.Counter(re.findall(r"node=(\w+)", r.stdout))
    assert sum(spread.values()) == 300
    assert set(spread) == {"real1", "real2", "real3"}, spread
    assert min(spread.values()) >= 90, spread        # round robin: ~100 each


def test_proxy_protocol_v2_to_the_real_servers(lab, engine):
    engine({"name": "pacs-pp", "address": VIP4, "port": 8000, "mode": "l7",
            "l7_mode": "tcp", "send_proxy": True, "scheduler": "rr",
            "real": [{"address": lab.ip(r), "port": 8081}
                     for r in lab.reals]})
    r = curl(lab, f"http://{VIP4}:8000/")
    assert r.returncode == 0, r.stderr
    assert "proxied=10.0.0.1" in r.stdout       # the client, through PROXY


def test_https_terminated_at_the_vip(lab, engine):
    engine(web_spec(lab, port=443, name="pacs-tls",
                    tls_cert=str(lab.base / "both.pem")))
    r = curl(lab, "--cacert", str(lab.base / "cert.pem"), "--resolve",
             f"pacs.test:443:{VIP4}", "https://pacs.test/")
    assert r.returncode == 0, r.stderr
    assert "node=real" in r.stdout and "xff=10.0.0.1" in r.stdout


def test_dicom_vip_in_tcp_mode(lab, engine):
    engine({"name": "pacs-dicom", "address": VIP4, "port": 104,
            "mode": "l7", "l7_mode": "tcp", "scheduler": "rr",
            "real": [{"address": lab.ip(r), "port": 11112}
                     for r in lab.reals]})
    r = lab.run("client", ["/usr/bin/echoscu", "-aec", "ANY-SCP", VIP4,
                           "104"], capture_output=True, text=True,
                timeout=30)
    assert r.returncode == 0, r.stderr
    files = []
    for n in range(10, 16):
        txt = lab.base / f"ds{n}.txt"
        txt.write_text(DATASET.format(n=n))
        subprocess.run(["dump2dcm", str(txt), str(lab.base / f"ds{n}.dcm")],
                       check=True, capture_output=True)
        files.append(str(lab.base / f"ds{n}.dcm"))
    for f in files:             # one association each: they spread
        r = lab.run("client", ["/usr/bin/storescu", "-aec", "ANY-SCP", VIP4,
                               "104", f], capture_output=True, text=True,
                    env=dict(os.environ, TCP_NODELAY="1"), timeout=30)
        assert r.returncode == 0, r.stderr
    stored = {role: len(os.listdir(lab.base / role / "scp"))
              for role in lab.reals}
    assert sum(stored.values()) >= 6 and min(stored.values()) > 0, stored


def test_drain_shows_in_haproxy_and_reload_keeps_a_download(lab, engine):
    eng = engine(web_spec(lab, real=[{"address": lab.ip("real1"),
                                      "port": 8080}]))
    eng.drain("pacs-web", lab.ip("real1"))
    state = eng.haproxy.runtime("show servers state")
    line = next(x for x in state.splitlines()
                if l7_server(Real(lab.ip("real1"), 8080)) in x)
    # srv_admin_state bit 0x8 (IDRAIN: drained through the runtime API)
    fields = line.split()
    assert int(fields[6]) & 0x8, line
    rows = eng.show()[0]["reals"]
    assert rows[0]["state"] == "drain"
    eng.online("pacs-web", lab.ip("real1"))
    out = {}

    def download():
        out["r"] = curl(lab, "-o", "/dev/null", "--limit-rate", "20M", "-w",
                        "%{size_download}", f"http://{VIP4}/blob",
                        timeout=60)

    t = threading.Thread(target=download)
    t.start()
    time.sleep(0.8)
    eng.add_real("pacs-web", f"{lab.ip('real2')}:8080")     # a reload
    t.join(60)
    assert out["r"].returncode == 0, out["r"].stderr
    assert out["r"].stdout.strip() == "60000000"
    r = curl(lab, *[f"http://{VIP4}/"] * 10)
    assert "node=real2" in r.stdout


def test_haproxy_worker_killed_is_recovered(lab, engine):
    eng = engine(web_spec(lab))
    assert "node=real" in curl(lab, f"http://{VIP4}/").stdout
    pid = eng.haproxy.worker_pid()
    os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 15
    ok = False
    while time.monotonic() < end and not ok:
        time.sleep(0.5)
        ok = "node=real" in curl(lab, f"http://{VIP4}/", timeout=2).stdout
    assert ok, "HAProxy did not come back"
    assert eng.haproxy.worker_pid() != pid
    assert eng.status()["haproxy"]["pid"] is not None


def test_health_checks_and_weights_drive_haproxy(lab, engine):
    """pyfwd's own health checks set HAProxy's server states (here a
    command check that fails for real2: DOWN, not MAINT), and pyfwd's
    weights (0..65535) reach HAProxy scaled to its 0..256."""
    check = {"type": "command", "interval": 0.3, "timeout": 0.3, "rise": 1,
             "fall": 1, "command": ["sh", "-c",
                                    'test "$PYFWD_REAL_ADDRESS" != 10.0.0.12']}
    eng = engine(web_spec(lab, health=check))
    end = time.monotonic() + 5
    while time.monotonic() < end:
        rows = {r["real"]: r for r in eng.show()[0]["reals"]}
        if rows["10.0.0.12:8080"]["haproxy_status"] == "stopped":
            break
        time.sleep(0.1)
    assert rows["10.0.0.12:8080"]["health"] == "down"
    assert rows["10.0.0.12:8080"]["haproxy_state"] == "ready", rows
    assert rows["10.0.0.12:8080"]["haproxy_status"] == "stopped", rows
    status = {row["svname"]: row["status"] for row in eng.haproxy.stats()
              if row.get("pxname") == "pacs-web"}
    assert status[l7_server(Real("10.0.0.12", 8080))] == "DOWN", status
    from prometheus_client.parser import text_string_to_metric_families
    from pyfwd.control.metrics import render
    states = {s.labels["real"]: s.labels["state"]
              for fam in text_string_to_metric_families(render(eng.stats()))
              if fam.name == "pyfwd_haproxy_server_state"
              for s in fam.samples}
    assert states == {"10.0.0.11:8080": "ready", "10.0.0.12:8080": "ready",
                      "10.0.0.13:8080": "ready"}, states
    r = curl(lab, *[f"http://{VIP4}/"] * 30)
    nodes = collections.Counter(re.findall(r"node=(\w+)", r.stdout))
    assert sum(nodes.values()) == 30 and "real2" not in nodes, nodes
    eng.set_weight("pacs-web", "10.0.0.11:8080", 1000)
    eng.set_weight("pacs-web", "10.0.0.13:8080", 500)
    weights = {row["svname"]: row["weight"] for row in eng.haproxy.stats()
               if row.get("pxname") == "pacs-web"}
    w1 = weights[l7_server(Real("10.0.0.11", 8080))]
    w3 = weights[l7_server(Real("10.0.0.13", 8080))]
    assert w1 <= 256 and abs(w1 - 2 * w3) <= 1, weights
