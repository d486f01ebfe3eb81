"""Issue 20 end to end: L7 VIPs as the appliance guide describes them.

A one-arm lab (rewrites, redirects, DICOM with per-VIP timeouts, the
l7_source values "balancer", "vip" and a local address) and a two-arm
lab (l7_source "client": transparent, a 100 MB download).  nginx on the
real servers logs the peer address and the request line it got; storescp
stores what storescu sends.  Namespaces start with pfl7g; the labs and
every process are removed whatever happens."""

import os
import secrets
import subprocess
import sys
import time

import pytest

from pyfwd.control.config import parse_vip
from pyfwd.control.engine import Engine
from pyfwd.errors import ConfigError
from pyfwd.lab.topology import Lab

from .procs import curl, start_nginx, wait_for

pytestmark = pytest.mark.root

VIP = "10.0.0.100"
SERVER = """
    server {{
        listen {ip}:8080;
        access_log {d}/access.log combined;
        location / {{
            default_type text/plain;
            return 200 "node={role} peer=$remote_addr host=$host uri=$uri\\n";
        }}
        location /big {{ alias {d}/big; }}
    }}"""
BIG = 100 * 1024 * 1024
DATASET = """(0008,0016) UI =SecondaryCaptureImageStorage
(0008,0018) UI [1.2.826.0.1.3680043.8.498.20{n}]
(0008,0060) CS [OT]
(0010,0010) PN [PYFWD^GUIDE]
(0020,000d) UI [1.2.826.0.1.3680043.8.498.2]
(0020,000e) UI [1.2.826.0.1.3680043.8.498.3]
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US 4096
(0028,0011) US 4096
(0028,0100) US 16
(0028,0101) US 16
(0028,0102) US 15
(0028,0103) US 0
(7fe0,0010) OW ={raw}
"""


def make_lab(topology, base):
    """A lab with nginx (8080, /big: BIG bytes) and storescp (11112) on
    two reals; yields it, then kills them and removes the lab."""
    procs = []
    with Lab("pfl7g" + secrets.token_hex(3), topology=topology,
             reals=2) as lab:
        try:
            for role in lab.reals:
                d = base / role
                (d / "scp").mkdir(parents=True)
                with open(d / "big", "wb") as f:
                    f.truncate(BIG)
                procs.append(start_nginx(lab, role, d, SERVER.format(
                    d=d, ip=lab.ip(role), role=role)))
                procs.append(lab.popen(
                    role, ["/usr/bin/storescp", "-aet", "ANY-SCP", "-od",
                           str(d / "scp"), "11112"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for role in lab.reals:
                wait_for(lambda: curl(lab, f"http://{lab.ip(role)}:8080/",
                                      timeout=2, role="lb").returncode == 0,
                         10, f"nginx on {role}")
            lab.base = base
            yield lab
        finally:
            for p in procs:
                p.kill()
                p.wait(timeout=5)


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    made = {}

    def get(topology):
        if topology not in made:
            gen = make_lab(topology, tmp_path_factory.mktemp(topology))
            made[topology] = (gen, next(gen))
        return made[topology][1]
    try:
        yield get
    finally:
        for gen, _ in made.values():
            next(gen, None)


@pytest.fixture
def engine():
    made = []

    def make(lab, *specs):
        services = [parse_vip(s, "test") for s in specs]
        eng = Engine("eth0", services, busy_poll=0, flows=1 << 12)
        made.append((lab, eng))
        lab.call("lb", eng.start)
        return eng

    yield make
    for lab, eng in made:
        eng.stop()


def web(lab, port=80, **extra):
    return {"name": f"web{port}", "address": VIP, "port": port,
            "mode": "l7", "scheduler": "rr",
            "real": [{"address": lab.ip(r), "port": 8080}
                     for r in lab.reals], **extra}


def access_log(lab):
    return "".join((lab.base / r / "access.log").read_text()
                   for r in lab.reals
                   if (lab.base / r / "access.log").exists())


def test_rewrite_reaches_nginx_and_redirects_come_back(labs, engine):
    lab = labs("one-arm")
    engine(lab, web(lab, replace_path={"^/viewer/(.*)": "/ohif/\\1"},
                    set_host="pacs.internal",
                    redirect_location={"/": "/viewer/"}),
           web(lab, port=81, redirect_scheme="https", redirect_code=301),
           web(lab, port=82, redirect_prefix="https://pacs.example.org"))
    r = curl(lab, f"http://{VIP}/viewer/study/1.2.3?x=1")
    assert r.returncode == 0, r.stderr
    assert "uri=/ohif/study/1.2.3" in r.stdout and \
        "host=pacs.internal" in r.stdout, r.stdout
    assert '"GET /ohif/study/1.2.3?x=1 HTTP/1.1"' in access_log(lab)
    assert "/viewer/study" not in access_log(lab)

    def head(url):
        r = curl(lab, "-o", "/dev/null", "-w",
                 "%{http_code} %{redirect_url}", url)
        assert r.returncode == 0, r.stderr
        return r.stdout
    assert head(f"http://{VIP}/") == f"302 http://{VIP}/viewer/"
    # scheme: the same Host (its port too), path and query
    assert head(f"http://{VIP}:81/studies?id=7") == \
        f"301 https://{VIP}:81/studies?id=7"
    assert head(f"http://{VIP}:82/wado?id=7") == \
        "302 https://pacs.example.org/wado?id=7"


def test_bad_regex_is_refused_with_haproxys_message(labs, engine):
    lab = labs("one-arm")
    with pytest.raises(ConfigError,
                       match=r"'web80'.*regex '\^/\(unclosed' is invalid"):
        engine(lab, web(lab, replace_path={"^/(unclosed": "/x"}))


def test_dicom_store_through_a_tcp_vip_with_long_timeouts(labs, engine,
                                                          tmp_path):
    lab = labs("one-arm")
    reals = [{"address": lab.ip(r), "port": 11112} for r in lab.reals]
    engine(lab, {"name": "dicom", "address": VIP, "port": 104,
                 "mode": "l7", "l7_mode": "tcp", "forwardfor": False,
                 "persistence": "source", "timeout_client": 600,
                 "timeout_server": 600, "timeout_tunnel": 3600,
                 "real": reals},
           {"name": "dicom-short", "address": VIP, "port": 105,
            "mode": "l7", "l7_mode": "tcp", "forwardfor": False,
            "timeout_client": 2, "timeout_server": 2, "timeout_tunnel": 2,
            "real": reals})
    raw = tmp_path / "px.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(32 << 20))       # 32 MB of pixels
    files = []
    for n in range(3):
        (tmp_path / f"ds{n}.txt").write_text(DATASET.format(n=n, raw=raw))
        subprocess.run(["dump2dcm", "+E", str(tmp_path / f"ds{n}.txt"),
                        str(tmp_path / f"ds{n}.dcm")], check=True,
                       capture_output=True)
        files.append(str(tmp_path / f"ds{n}.dcm"))
    t0 = time.monotonic()
    r = lab.run("client", ["/usr/bin/storescu", "-aec", "ANY-SCP", VIP,
                           "104", *files], capture_output=True, text=True,
                timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    stored = [f for role in lab.reals
              for f in os.listdir(lab.base / role / "scp")]
    assert len(stored) >= 3, stored
    sizes = [os.path.getsize(lab.base / role / "scp" / f)
             for role in lab.reals
             for f in os.listdir(lab.base / role / "scp")]
    assert min(sizes) > 32 << 20
    print(f"3 x 32 MB C-STORE in one association: {took:.1f} s")
    # persistence = "source": more associations from this client go to
    # the same real server, round robin notwithstanding
    where = {role for role in lab.reals
             if os.listdir(lab.base / role / "scp")}
    assert len(where) == 1, where
    small = tmp_path / "small.dcm"
    (tmp_path / "small.txt").write_text(DATASET.format(n=9, raw=raw).split(
        "(0028,0002)")[0])
    subprocess.run(["dump2dcm", str(tmp_path / "small.txt"), str(small)],
                   check=True, capture_output=True)
    for _ in range(4):
        r = lab.run("client", ["/usr/bin/storescu", "-aec", "ANY-SCP", VIP,
                               "104", str(small)], capture_output=True,
                    text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    assert {role for role in lab.reals
            if os.listdir(lab.base / role / "scp")} == where
    # The per-VIP timeout is HAProxy's: an idle association on the
    # 2 s VIP is closed after about 2 s, not the default 60 s.
    idle = lab.run("client", [sys.executable, "-c", f"""
import socket, time
s = socket.create_connection(("{VIP}", 105), 5)
s.settimeout(30)
t = time.monotonic()
assert s.recv(100) == b""
print(round(time.monotonic() - t, 1))
"""], capture_output=True, text=True, timeout=60)
    assert idle.returncode == 0, idle.stderr
    assert 1.5 <= float(idle.stdout) <= 6, idle.stdout


def test_l7_source_balancer_vip_and_a_local_address(labs, engine):
    lab = labs("one-arm")
    lab.run("lb", ["ip", "addr", "add", "10.0.0.50/24", "dev", "eth0"],
            check=True)
    try:
        eng = engine(lab, web(lab), web(lab, port=81, l7_source="vip"),
                     web(lab, port=82, l7_source="10.0.0.50"))
        for port, peer in ((80, "10.0.0.2"), (81, VIP), (82, "10.0.0.50")):
            r = curl(lab, f"http://{VIP}:{port}/")
            assert r.returncode == 0, r.stderr
            assert f"peer={peer} " in r.stdout, (port, r.stdout)
            assert access_log(lab).splitlines()[-1].startswith(peer + " ") \
                or any(line.startswith(peer + " ") for line in
                       access_log(lab).splitlines()), port
        with pytest.raises(ConfigError, match="l7_source 10.0.0.77: not "
                           "an address of this host"):
            eng.add_vip(web(lab, port=83, l7_source="10.0.0.77"))
        assert len(eng.services) == 3
    finally:
        lab.run("lb", ["ip", "addr", "del", "10.0.0.50/24", "dev", "eth0"])


def _rules(lab):
    """The lb's policy rules and nftables ruleset."""
    return lab.run("lb", ["sh", "-c", "ip rule; nft list ruleset"],
                   capture_output=True, text=True).stdout


def test_l7_source_client_is_transparent_two_arm(labs, engine):
    lab = labs("two-arm")
    eng = engine(lab, web(lab, l7_source="client"))
    rules = _rules(lab)
    assert "fwmark 0x7077 lookup 207" in rules
    assert "socket transparent 1 meta mark set 0x00007077" in rules
    r = curl(lab, f"http://{VIP}/")
    assert r.returncode == 0, r.stderr
    assert "peer=10.0.0.1 " in r.stdout, r.stdout       # the client's
    assert any(line.startswith("10.0.0.1 ")
               for line in access_log(lab).splitlines())
    t0 = time.monotonic()
    r = curl(lab, "-o", "/dev/null", "-w", "%{size_download}",
             f"http://{VIP}/big", timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == BIG
    print(f"transparent 100 MB: {took:.2f} s, "
          f"{BIG * 8 / took / 1e6:.0f} Mbit/s")
    # only HAProxy's sockets are diverted: a client talking to a real
    # server directly, routed through the balancer, still gets answers
    real1 = lab.ip("real1")
    r = curl(lab, f"http://{real1}:8080/")
    assert r.returncode == 0 and "peer=10.0.0.1 " in r.stdout, r
    eng.stop()
    rules = _rules(lab)
    assert "lookup 207" not in rules and "pyfwd_l7" not in rules
    routes = lab.run("lb", ["ip", "route", "show", "table", "207"],
                     capture_output=True, text=True).stdout
    assert routes.strip() == ""


def test_l7_source_client_one_arm_is_called_out(labs, engine, caplog):
    lab = labs("one-arm")
    engine(lab, web(lab, port=84, l7_source="client"))
    assert any("one-arm" in rec.getMessage() and "gateway" in
               rec.getMessage() for rec in caplog.records), \
        [rec.getMessage() for rec in caplog.records]
