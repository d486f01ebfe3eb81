"""The operator's state end to end, in a one-arm DR lab with three whoami
real servers: a drain made with `pyfwd ctl` survives `pyfwd ctl reload`
and a restart of `pyfwd start` (kept in the state file beside the config,
marked by `ctl show`); a change that fails while applied (the core's
real-server limit hit, with the real XDP data plane; an L7 VIP that a
real HAProxy cannot bind) leaves the engine as it was, traffic flowing,
and the next command works.  Root; the lab is
removed whatever happens."""

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pyfwd.control import engine as engine_mod
from pyfwd.control import startup
from pyfwd.control import server as control
from pyfwd.dataplane.core import Core
from pyfwd.errors import PyfwdError
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab

from .procs import wait_line
from .test_control_plane import VIP4, Reals, requests, wait_for, web

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab():
    with Lab("pfat" + secrets.token_hex(3), topology="one-arm",
             reals=3) as lab:
        for role in lab.reals:
            r = lab.run(role, PYFWD + ["realserver", "setup", "--vip", VIP4],
                        capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        lab.servers = Reals(lab)
        for role in lab.reals:
            lab.servers.start(role)
        yield lab
        lab.servers.stop_all()


def nodes(lab, n=30):
    code, got = requests(lab, n)
    assert code == 0 and len(got) == n, got
    return set(got)


class Balancer:
    """`pyfwd start --config` in the lb namespace, its log in a file."""

    def __init__(self, lab, cfg, sock, log):
        self.lab, self.cfg, self.sock, self.log = lab, cfg, sock, log
        self.proc = None

    def start(self):
        with open(self.log, "a") as out:
            self.proc = self.lab.popen(
                "lb", PYFWD + ["start", "--config", str(self.cfg),
                               "--busy-poll", "0", "--flows", "65536"],
                stdout=out, stderr=subprocess.STDOUT)
        assert wait_for(lambda: self._answers(), 20), self.log.read_text()

    def _answers(self):
        try:
            control.request(str(self.sock), "status")
            return True
        except Exception:       # noqa: BLE001 - not up yet
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
        time.sleep(1.0)         # FINs of the last connections

    def ctl(self, *args):
        r = self.lab.run("lb", PYFWD + ["ctl", "--socket", str(self.sock),
                                        *args],
                         capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout


def test_a_drain_survives_reload_and_restart(lab, tmp_path):
    cfg = tmp_path / "pyfwd.toml"
    sock = tmp_path / "pyfwd.sock"
    text = textwrap.dedent(f"""
        [engine]
        iface = "eth0"
        control_socket = "{sock}"

        [[vip]]
        name = "pacs-web"
        address = "{VIP4}"
        port = 80
        scheduler = "rr"
        """) + "".join(f'\n[[vip.real]]\naddress = "10.0.0.{11 + i}"\n'
                       for i in range(3))
    cfg.write_text(text)
    lb = Balancer(lab, cfg, sock, tmp_path / "pyfwd.log")
    lb.start()
    try:
        assert nodes(lab) == {"real1", "real2", "real3"}
        lb.ctl("drain", "pacs-web", "10.0.0.11")
        assert nodes(lab) == {"real2", "real3"}
        state = json.loads((tmp_path / "pyfwd.toml.state").read_text())
        assert [(c["what"], c["real"]) for c in state["changes"]] == [
            ("drain", "10.0.0.11")]
        out = lb.ctl("reload")
        assert "operator changes: 10.0.0.100:80/tcp 10.0.0.11: drain" in out
        assert nodes(lab) == {"real2", "real3"}
        lb.stop()
        lb.start()                              # a restart
        assert nodes(lab) == {"real2", "real3"}
        show = lb.ctl("show")
        assert "drain*" in show and \
            "* 10.0.0.11: drain by ctl since " in show, show
        row = json.loads(lb.ctl("--json", "show"))[0]["reals"][0]
        assert row["state"] == "drain" and \
            row["changed"][0]["what"] == "drain"
        assert cfg.read_text() == text          # the operator's own file
        lb.ctl("online", "pacs-web", "10.0.0.11")
        assert nodes(lab) == {"real1", "real2", "real3"}
        assert "no changes made by ctl" in lb.ctl("changes")
    finally:
        lb.stop()


def test_a_limit_hit_leaves_the_engine_and_its_traffic_as_they_were(
        lab, tmp_path, monkeypatch):
    # the core holds 3 real ids: a 4th real fails while its tables are
    # built, after the request was checked
    monkeypatch.setattr(startup, "Core",
                        lambda **kw: Core(max_reals=3, **kw))
    eng = engine_mod.Engine("eth0", [web("rr")], busy_poll=0, flows=1 << 16)
    lab.call("lb", eng.start)
    try:
        srv = control.ControlServer(eng, str(tmp_path / "c.sock")).start()
        try:
            assert nodes(lab) == {"real1", "real2", "real3"}
            before = [{k: r[k] for k in ("real", "weight", "state",
                                         "scheduled")}
                      for r in eng.show()[0]["reals"]]
            tables = eng.core.tables
            with pytest.raises(PyfwdError, match="add-real: not applied, "
                               "the engine is as it was: more than 3 real "
                               "servers"):
                control.request(srv.path, "add-real", vip="pacs-web",
                                real="10.0.0.14")
            assert [{k: r[k] for k in ("real", "weight", "state",
                                       "scheduled")}
                    for r in eng.show()[0]["reals"]] == before
            assert eng.core.tables is not tables    # re-published, same
            assert eng.core.tables.ring.tobytes() == tables.ring.tobytes()
            assert nodes(lab) == {"real1", "real2", "real3"}
            control.request(srv.path, "drain", vip="pacs-web",
                            real="10.0.0.13")       # the next one works
            assert nodes(lab) == {"real1", "real2"}
        finally:
            srv.stop()
    finally:
        time.sleep(1.0)
        eng.stop()
    assert os.listdir(tmp_path) == []       # no config: no state file


def test_an_l7_vip_haproxy_cannot_bind_is_rolled_back(lab, tmp_path):
    """HAProxy checks the new configuration (`haproxy -c`) fine, but its
    new worker cannot bind the new VIP (a listener holds it): the reload
    fails, the engine reloads HAProxy with the configuration it had, and
    the running L7 VIP serves on."""
    from pyfwd.control.config import parse_vip
    l7 = {"name": "web7", "address": "10.0.0.102", "port": 80, "mode": "l7",
          "scheduler": "rr", "real": [{"address": f"10.0.0.{11 + i}",
                                       "port": 80} for i in range(3)]}
    taken = "10.0.0.103"
    lab.run("lb", ["ip", "addr", "add", f"{taken}/24", "dev", "eth0"],
            check=True)
    holder = lab.popen("lb", [sys.executable, "-c", textwrap.dedent(f"""
        import socket, time
        s = socket.socket()
        s.bind(("{taken}", 80))
        s.listen()
        print("listening", flush=True)
        time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    eng = engine_mod.Engine("eth0", [parse_vip(l7, "test")], busy_poll=0,
                            flows=1 << 12)
    try:
        wait_line(holder, "listening")
        lab.call("lb", eng.start)
        srv = control.ControlServer(eng, str(tmp_path / "c.sock")).start()
        try:
            url = "http://10.0.0.102/"
            assert {"real1", "real2", "real3"} <= l7_nodes(lab, url)
            cfg = eng.haproxy.config_path
            with open(cfg) as f:
                text = f.read()
            before = [{k: r[k] for k in ("real", "weight", "state")}
                      for r in eng.show()[0]["reals"]]
            with pytest.raises(PyfwdError, match="add-vip: not applied, "
                               "the engine is as it was: HAProxy"):
                control.request(srv.path, "add-vip", timeout=60, vip={
                    **l7, "name": "web8", "address": taken})
            assert [s.label for s in eng.services] == ["web7"]
            assert [{k: r[k] for k in ("real", "weight", "state")}
                    for r in eng.show()[0]["reals"]] == before
            with open(cfg) as f:
                assert f.read() == text
            assert {"real1", "real2", "real3"} <= l7_nodes(lab, url)
            control.request(srv.path, "drain", vip="web7",
                            real="10.0.0.13:80", timeout=30)
            assert wait_for(lambda: "real3" not in l7_nodes(lab, url), 5)
        finally:
            srv.stop()
    finally:
        eng.stop()
        holder.kill()
        holder.wait(timeout=5)
        lab.run("lb", ["ip", "addr", "del", f"{taken}/24", "dev", "eth0"])


def l7_nodes(lab, url, n=12):
    r = lab.run("client", ["curl", "-sS", "--max-time", "10",
                           "-H", "Connection: close", *[url] * n],
                capture_output=True, text=True, timeout=60)
    return set(re.findall(r"node=(\w+)", r.stdout))
