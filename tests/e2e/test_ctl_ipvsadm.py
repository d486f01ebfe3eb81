"""ipvsadm's habits in `pyfwd ctl`, end to end in a one-arm DR lab with
three whoami real servers, on each backend (AF_XDP and raw sockets):
`ctl flows` lists the connections held open through the VIP with their
client and real server (each loop copying its own table; SNAT: the
real's port and the source port given), `ctl rate`
shows packets and new flows per second during a transfer, `ctl zero`
zeroes ctl's counters while the engine's snapshot (what /metrics renders)
keeps counting.  Root; the lab (namespaces pfcq*) is removed whatever
happens; the control socket lives in the test's temp dir."""

import json
import subprocess
import sys
import textwrap
import time

import pytest

from pyfwd.lab.programs import PYFWD
from pyfwd.model import Real, Service, Vip

from . import labs
from .procs import wait_line
from .test_fastpath import xdp_on_the_lbs_peers

pytestmark = pytest.mark.root

VIP4 = "10.0.0.100"
WEB = Vip.parse(f"{VIP4}:80/tcp")
HELD = 4        # connections held open through the VIP

# Opens HELD keep-alive connections, one request each, says for each its
# local address:port and the real server that answered, then holds them.
HOLDER = textwrap.dedent(f"""
    import socket, sys, time
    socks = []
    for i in range({HELD}):
        s = socket.create_connection(("{VIP4}", 80), timeout=10)
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: vip\\r\\n\\r\\n")
        data = b""
        while b"node=" not in data or not data.endswith(b"\\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        node = data.split(b"node=")[1].split()[0].decode()
        host, port = s.getsockname()
        print(f"{{host}}:{{port}} {{node}}", flush=True)
        socks.append(s)
    print("holding", flush=True)
    time.sleep(120)
""")


@pytest.fixture(scope="module")
def lab():
    lab = labs.build("pfcq", "one-arm", dr_vip=VIP4)
    yield lab
    lab.down()


@pytest.fixture(scope="module")
def snat_lab():
    # whoami on 8080; two queues: two workers' tables to list
    lab = labs.build("pfcq", "one-arm", queues=2)
    yield lab
    lab.down()


@pytest.fixture(params=["xdp", "afpacket"])
def backend(request):
    return request.param


@pytest.fixture
def engine(lab, backend, tmp_path):
    yield from labs.serve_engine(
        lab, [Service(WEB, [Real(lab.ip(r)) for r in lab.reals], "rr",
                      name="pacs-web")], backend, tmp_path / "ctl.sock")


def ctl(eng, *args):
    """`pyfwd ctl ARGS --json` against eng: its JSON."""
    r = subprocess.run(PYFWD + ["ctl", *args, "--socket", eng.sock,
                                "--json"], capture_output=True, text=True,
                       timeout=30)
    out = json.loads(r.stdout)
    assert r.returncode == 0, out
    return out


def wait_for(check, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.25)
    return check()


def hold(lab):
    """HOLDER in the client: (its process, {client ADDR:PORT: node})."""
    holder = lab.popen("client", [sys.executable, "-c", HOLDER],
                       stdout=subprocess.PIPE, text=True)
    held = {}
    for _ in range(HELD):
        line = holder.stdout.readline().split()
        assert len(line) == 2, line
        held[line[0]] = line[1]
    wait_line(holder, "holding")
    return holder, held


def test_flows_list_the_connections_held_with_their_real(lab, engine):
    holder, held = hold(lab)
    try:
        reals = {role: f"{lab.ip(role)}:80" for role in lab.reals}
        out = ctl(engine, "flows", "--vip", "pacs-web")
        by_client = {f["client"]: f for f in out["flows"]}
        for client, node in held.items():
            f = by_client[client]
            assert (f["vip"], f["real"], f["proto"], f["mode"]) == \
                (f"{VIP4}:80", reals[node], "tcp", "dr"), f
            assert f["state"] == "established" and f["expires"] > 60, f
        assert out["total"] >= HELD
        # the limit, and what it says past it
        out = ctl(engine, "flows", "--limit", "1")
        assert len(out["flows"]) == 1 and out["total"] >= HELD
        text = subprocess.run(PYFWD + ["ctl", "flows", "--limit", "1",
                                       "--socket", engine.sock],
                              capture_output=True, text=True, timeout=30)
        assert text.returncode == 0, text.stderr
        assert "more not shown" in text.stdout
        assert "PRO" in text.stdout.splitlines()[0]
    finally:
        holder.kill()
        holder.wait(timeout=5)


def test_rate_during_a_transfer_then_zero_keeps_metrics(lab, engine):
    # ~25 s at 2 MB/s: several 2 s samples while it runs
    curl = lab.popen("client", ["curl", "-sS", "-o", "/dev/null",
                                "--limit-rate", "2M", "--max-time", "40",
                                f"http://{VIP4}/bytes/50000000"])
    try:
        def busy():
            for _ in range(3):      # new flows, for CPS
                lab.run("client", ["curl", "-sS", "-o", "/dev/null",
                                   "--max-time", "5", f"http://{VIP4}/"],
                        timeout=10)
            web = ctl(engine, "rate")["vips"][0]
            return web if web["in_pps"] > 0 and web["in_bps"] > 0 and \
                web["cps"] > 0 else None
        web = wait_for(busy, 15)
        assert web, ctl(engine, "rate")
        assert sum(r["in_pps"] for r in web["reals"]) == \
            pytest.approx(web["in_pps"], abs=0.2)
    finally:
        curl.kill()
        curl.wait(timeout=5)

    before = ctl(engine, "show")[0]["reals"]
    raw_before = engine.stats()
    assert sum(r["frames"] for r in before) > 0
    assert ctl(engine, "zero")["zeroed"] == "all"
    after = ctl(engine, "show")[0]["reals"]
    assert sum(r["frames"] for r in after) < sum(r["frames"]
                                                 for r in before)
    stats = ctl(engine, "stats")
    raw = engine.stats()        # the snapshot the metrics render
    assert stats["core"]["rx"] < raw["core"]["rx"]
    assert raw["core"]["rx"] >= raw_before["core"]["rx"]
    assert sum(r["frames"] for r in raw["vips"][0]["reals"]) >= \
        sum(r["frames"] for r in raw_before["vips"][0]["reals"])
    # zeroing one VIP by name; an unknown one is an error, as JSON
    assert ctl(engine, "zero", "--vip", "pacs-web")["zeroed"] == \
        f"{VIP4}:80/tcp"
    r = subprocess.run(PYFWD + ["ctl", "zero", "--vip", "nope", "--socket",
                                engine.sock, "--json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False


def test_flows_of_a_paused_or_ended_loop(lab, engine):
    """A paused loop copies its table at once (it still serves listings);
    a loop that ended is read in place: either way `ctl flows` answers."""
    r = lab.run("client", ["curl", "-sS", "-o", "/dev/null", "--max-time",
                           "5", f"http://{VIP4}/"], timeout=10)
    assert r.returncode == 0
    engine.xsk.pause(0, "pause")
    try:
        t0 = time.monotonic()
        assert ctl(engine, "flows")["total"] >= 1
        assert time.monotonic() - t0 < 10
    finally:
        engine.xsk.pause(0, "run")
    engine.xsk.pause(0, "exit")
    assert wait_for(lambda: not engine.xsk.loops()[0]["running"], 5)
    assert ctl(engine, "flows")["total"] >= 1


def test_snat_flows_say_the_real_port_and_the_snat_port(snat_lab, backend,
                                                         tmp_path):
    """SNAT: the real server's address and port (8080) come from the
    flow's answer entry, and the source port the balancer gave it; the
    flows of both queues' tables are listed."""
    web = Service(WEB, [Real(snat_lab.ip(r), 8080) for r in snat_lab.reals],
                  "rr", "snat", name="pacs-web")
    for eng in labs.serve_engine(snat_lab, [web], backend,
                                 tmp_path / "ctl.sock"):
        holder, held = hold(snat_lab)
        try:
            out = ctl(eng, "flows")
            by_client = {f["client"]: f for f in out["flows"]}
            lo, hi = eng.snat[1], eng.snat[2]
            for client, node in held.items():
                f = by_client[client]
                assert (f["real"], f["mode"]) == \
                    (f"{snat_lab.ip(node)}:8080", "snat"), f
                assert lo <= f["snat_port"] <= hi, f
            assert len({by_client[c]["snat_port"] for c in held}) == HELD
        finally:
            holder.kill()
            holder.wait(timeout=5)


def test_fast_path_flows_are_listed_and_marked(lab, tmp_path):
    """The XDP fast path carries established flows, the core keeps
    tracking them: `ctl flows` lists them, marked fast."""
    xdp_on_the_lbs_peers(lab, ["eth0"])
    try:
        web = Service(WEB, [Real(lab.ip(r)) for r in lab.reals], "rr",
                      name="pacs-web")
        for eng in labs.serve_engine(lab, [web], "xdp",
                                     tmp_path / "ctl.sock", fastpath="xdp"):
            assert eng.info.fastpath == "on", eng.info
            holder, held = hold(lab)
            try:
                def fast():
                    flows = {f["client"]: f for f in
                             ctl(eng, "flows")["flows"]}
                    return all(flows.get(c, {}).get("fast") for c in held)
                assert wait_for(fast, 5), ctl(eng, "flows")
            finally:
                holder.kill()
                holder.wait(timeout=5)
    finally:
        xdp_on_the_lbs_peers(lab, ["eth0"], on=False)
