"""The web dashboard without root: control.web's requests over a real HTTP
listener (MetricsServer with the dashboard), its refusals (no token, a
wrong one, another origin, another site, not JSON, a bad body, an unknown
action, a Host that is not this machine), the token file's checks, and the engine's event log with the
places that record in it (changes, health, HA role, reload)."""

import http.client
import io
import json
import os
import socket
from types import SimpleNamespace

import pytest

from pyfwd.control import metrics_http as metrics
from pyfwd.control.events import EventLog
from pyfwd.control.server import ControlServer
from pyfwd.control.web import Dashboard, load_token
from pyfwd.control.web.token import TokenFile
from pyfwd.control.web import token as token_mod
from pyfwd.control.web.app import (SECURITY_HEADERS, TOKEN_HEADER,
                                   foreign_host, parse_action, same_origin)
from pyfwd.errors import ConfigError, PyfwdError

from .test_changes import started

TOKEN = "s3cret-token-0123456789"
VIP = {"name": "pacs-web", "vip": "10.0.0.100:80/tcp", "mode": "dr",
       "scheduler": "maglev", "reals": [
           {"real": "10.0.0.11", "weight": 1, "state": "online",
            "health": "up", "active": 3, "frames": 10, "bytes": 1000,
            "flows_new": 4, "scheduled": True, "why": None}]}


class FakeEngine:
    def __init__(self):
        self.events = EventLog()
        self.alive = True

    def stats(self):
        if not self.alive:
            raise PyfwdError("data-plane loop q0: stalled")
        return {"iface": "eth0", "pid": 1, "uptime": 5.0, "config": None,
                "ha": {"role": "active", "since": 1.0, "transitions": 0},
                "core": {"frames": 10, "bytes": 1000, "flows_new": 4},
                "xsk": {"backend": "xdp"}, "vips": [VIP]}

    def show(self):
        return [VIP]


class FakeControl:
    """A control path that records the request lines and answers ok, or
    the error given."""

    def __init__(self):
        self.lines = []
        self.error = None

    def __call__(self, line):
        self.lines.append(json.loads(line))
        reply = {"ok": False, "error": self.error} if self.error else \
            {"ok": True, "result": None}
        return json.dumps(reply).encode() + b"\n"


def serve(app):
    return metrics.MetricsServer(lambda: {}, ("127.0.0.1", 0), web=app)


@pytest.fixture
def site():
    engine, control = FakeEngine(), FakeControl()
    app = Dashboard(engine, control, TOKEN)
    with serve(app) as srv:
        yield SimpleNamespace(engine=engine, control=control, app=app,
                              port=srv.port, host=f"127.0.0.1:{srv.port}")


def request(site, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one request to the site."""
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def post(site, obj, token=TOKEN, **extra):
    """POST /api/action as the page sends it, with `extra` headers over
    (a value None leaves the header out)."""
    headers = {"Content-Type": "application/json", TOKEN_HEADER: token,
               "Origin": f"http://{site.host}",
               "Sec-Fetch-Site": "same-origin", **extra}
    headers = {k: v for k, v in headers.items() if v is not None}
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    status, _, data = request(site, "POST", "/api/action", body, headers)
    return status, json.loads(data)


DRAIN = {"action": "drain", "vip": "pacs-web", "real": "10.0.0.11"}


# --- pages and assets ---------------------------------------------------------

def test_page_and_assets_carry_the_security_headers(site):
    status, headers, body = request(site, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/static/app.js" in body and b"http" not in body.replace(
        b"http-equiv", b"")         # nothing from elsewhere
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    for name, ctype in (("app.js", "text/javascript"),
                        ("style.css", "text/css")):
        status, headers, body = request(site, "GET", f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(ctype)
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_the_script_puts_no_html_in_the_page(site):
    js = request(site, "GET", "/static/app.js")[2].decode()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js
    assert "eval(" not in js and "document.write" not in js


def test_unknown_files_and_paths_are_404(site):
    for path in ("/static/../app.py", "/static/nope.js", "/static/",
                 "/api/nope", "/static/%2e%2e/app.py"):
        status, headers, body = request(site, "GET", path)
        assert status == 404, path
        assert json.loads(body)["ok"] is False
    assert request(site, "GET", "/metrics")[0] == 200   # metrics' still
    assert request(site, "HEAD", "/")[2] == b""


def test_state_says_what_the_page_shows(site):
    site.engine.events.add("state", "pacs-web", "10.0.0.11", "drain")
    status, headers, body = request(site, "GET", "/api/state")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    s = json.loads(body)
    assert s["actions"] is True and s["problem"] is None
    assert s["ha"]["role"] == "active" and s["backend"] == "xdp"
    assert s["vips"][0]["reals"][0]["real"] == "10.0.0.11"
    assert s["totals"] == {"frames": 10, "bytes": 1000, "flows_new": 4}
    assert [e["text"] for e in s["events"]] == ["drain"]
    assert isinstance(s["time"], float)


def test_state_of_an_engine_not_alive_still_shows_the_vips(site):
    site.engine.alive = False
    s = json.loads(request(site, "GET", "/api/state")[2])
    assert "stalled" in s["problem"] and s["vips"] == [VIP]


def test_events_since(site):
    for i in range(3):
        site.engine.events.add("weight", "pacs-web", "10.0.0.11", f"w{i}")
    events = json.loads(request(site, "GET", "/api/events")[2])["events"]
    assert [e["text"] for e in events] == ["w0", "w1", "w2"]
    later = json.loads(request(site, "GET", "/api/events?since="
                               f"{events[0]['seq']}")[2])["events"]
    assert [e["text"] for e in later] == ["w1", "w2"]
    assert request(site, "GET", "/api/events?since=x")[0] == 400


# --- actions --------------------------------------------------------------------

def test_an_action_goes_to_the_control_path(site):
    assert post(site, DRAIN) == (200, {"ok": True, "result": None})
    assert site.control.lines == [{"cmd": "drain", "vip": "pacs-web",
                                   "real": "10.0.0.11"}]
    assert post(site, {**DRAIN, "action": "weight", "weight": 5})[0] == 200
    assert site.control.lines[-1] == {"cmd": "weight", "vip": "pacs-web",
                                      "real": "10.0.0.11", "weight": 5}
    # without Origin and Sec-Fetch-Site (not every client sends them)
    assert post(site, DRAIN, Origin=None,
                **{"Sec-Fetch-Site": None})[0] == 200


@pytest.mark.parametrize("headers, says", [
    ({TOKEN_HEADER: None}, "token"),
    ({TOKEN_HEADER: "s3cret-token-012345678X"}, "token"),
    ({TOKEN_HEADER: ""}, "token"),
    ({"Origin": "http://evil.example"}, "Origin"),
    ({"Origin": "null"}, "Origin"),
    ({"Origin": "http://127.0.0.1:1"}, "Origin"),
    ({"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site"),
    ({"Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site"),
    ({"Content-Type": "text/plain"}, "Content-Type"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, "Content-Type"),
    ({"Content-Type": None}, "Content-Type"),
])
def test_refusals_are_403_and_reach_nothing(site, headers, says):
    status, reply = post(site, DRAIN, **headers)
    assert status == 403 and reply["ok"] is False and says in reply["error"]
    assert site.control.lines == []


def test_a_read_only_dashboard_refuses_every_action():
    engine, control = FakeEngine(), FakeControl()
    with serve(Dashboard(engine, control, token=None)) as srv:
        s = SimpleNamespace(port=srv.port, host=f"127.0.0.1:{srv.port}")
        assert json.loads(request(s, "GET", "/api/state")[2])["actions"] \
            is False
        status, reply = post(s, DRAIN)
        assert status == 403 and "read-only" in reply["error"]
    assert control.lines == []


@pytest.mark.parametrize("body, says", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "JSON object"),
    ({"action": "reload"}, "action 'reload'"),
    ({"action": "del-vip", "vip": "pacs-web"}, "action 'del-vip'"),
    ({**DRAIN, "extra": 1}, "unknown field 'extra'"),
    ({"action": "weight", "vip": "pacs-web", "real": "10.0.0.11"},
     "missing field 'weight'"),
    (b"[" * 100000, "body of"),
])
def test_bad_bodies_are_400(site, body, says):
    status, reply = post(site, body)
    assert status == 400 and says in reply["error"]
    assert site.control.lines == []


def test_the_engines_refusal_is_400_with_its_words(site):
    site.control.error = "drain: vip 'nosuch': not configured"
    status, reply = post(site, {**DRAIN, "vip": "nosuch"})
    assert status == 400 and reply["error"] == site.control.error
    site.control.error = "internal error: KeyError: 'x'"
    assert post(site, DRAIN)[0] == 500


def test_other_methods_and_posts_elsewhere_are_405(site):
    assert request(site, "POST", "/", b"{}", {
        "Content-Length": "2"})[0] == 405
    assert request(site, "POST", "/metrics", b"{}")[0] == 405
    assert request(site, "GET", "/api/action")[0] == 405
    with socket.create_connection(("127.0.0.1", site.port), 5) as sock:
        sock.sendall(b"POST /api/action HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.0 400") and b"Content-Length" in reply


def test_an_action_says_when_its_body_is_read(site):
    # from then on the listener cuts it only at its deadline, never to
    # make room for another client (metrics_http._make_room)
    said = []
    body = json.dumps(DRAIN).encode()
    handler = SimpleNamespace(
        command="POST", path="/api/action", client_address=("127.0.0.1", 1),
        headers={"Content-Length": str(len(body)), "Host": site.host,
                 "Content-Type": "application/json", TOKEN_HEADER: TOKEN},
        rfile=io.BytesIO(body), read_done=lambda: said.append("read"),
        reply=lambda code, *args: said.append(code))
    assert site.app.handle(handler)
    assert said == ["read", 200] and site.control.lines


def test_a_bug_in_the_app_is_a_500_not_a_dead_server(site):
    site.engine.stats = lambda: 1 / 0
    status, _, body = request(site, "GET", "/api/state")
    assert status == 500 and b"internal error" in body
    assert request(site, "GET", "/")[0] == 200


def test_same_origin_and_parse_action_alone():
    assert same_origin({}) is None
    assert same_origin({"Origin": "http://h:1", "Host": "h:1"}) is None
    assert same_origin({"Origin": "https://h:1", "Host": "h:1"}) is None
    assert "Host" in same_origin({"Origin": "http://h:1"})
    assert parse_action(b'{"action": "online", "vip": "v", "real": "r"}') \
        == {"cmd": "online", "vip": "v", "real": "r"}


# --- the Host header: DNS rebinding ------------------------------------------

def test_a_foreign_host_is_421_everywhere_but_metrics(site):
    # evil.example pointed at 127.0.0.1 once its page was loaded: the
    # browser sends its own name as Host, and Origin to match
    evil = f"evil.example:{site.port}"
    for path in ("/", "/static/app.js", "/api/state", "/api/events"):
        status, headers, body = request(site, "GET", path,
                                        headers={"Host": evil})
        assert status == 421, path
        reply = json.loads(body)
        assert reply["ok"] is False and "evil.example" in reply["error"]
        assert headers["X-Frame-Options"] == "DENY"
    assert post(site, DRAIN, Host=evil, Origin=f"http://{evil}")[0] == 421
    assert site.control.lines == []
    status, _, body = request(site, "GET", "/metrics", headers={"Host": evil})
    assert status == 200 and b"python_info" in body     # any Host: scrapes


def test_this_machines_names_and_addresses_are_answered(site):
    for host in (f"127.0.0.1:{site.port}", f"[::1]:{site.port}",
                 f"localhost:{site.port}", "LocalHost",
                 f"{socket.gethostname()}:{site.port}",
                 f"{socket.getfqdn()}.:{site.port}", "10.1.2.3"):
        assert request(site, "GET", "/api/state",
                       headers={"Host": host})[0] == 200, host
    assert post(site, DRAIN, Host=f"localhost:{site.port}",
                Origin=f"http://localhost:{site.port}")[0] == 200


@pytest.mark.parametrize("host,foreign", [
    (None, False), ("127.0.0.1", False), ("[::1]", False),
    ("[fe80::1%eth0]:1", False), ("localhost.:80", False),
    ("evil.example", True), ("evil.example:10104", True), ("", True),
    ("127.0.0.1.evil.example", True), ("[::1]x", True), ("[nope]:1", True),
    ("localhost.evil.example:1", True), ("::1", True),
])
def test_foreign_host_alone(host, foreign):
    assert bool(foreign_host(host)) is foreign


# --- through the real control path ------------------------------------------------

def test_actions_through_the_control_server_change_the_engine(tmp_path):
    eng = started(tmp_path)[0]
    eng.liveness, eng.info = (lambda: []), None   # no data plane here
    control = ControlServer(eng, str(tmp_path / "sock"))  # handle_line only
    with serve(Dashboard(eng, control.handle_line, TOKEN)) as srv:
        s = SimpleNamespace(port=srv.port, host=f"127.0.0.1:{srv.port}")
        vip = eng.services[0]
        real = vip.reals[0].key
        status, _ = post(s, {"action": "drain", "vip": vip.label,
                             "real": real})
        assert status == 200
        assert eng.state[(vip.vip, real)] == "drain"
        assert eng.events.list()[-1] == {**eng.events.list()[-1],
                                         "kind": "state", "vip": vip.label,
                                         "real": real, "text": "drain"}
        # the same words as `pyfwd ctl weight nosuch ...`
        ctl = json.loads(control.handle_line(json.dumps({
            "cmd": "weight", "vip": "nosuch", "real": real,
            "weight": 1}).encode()))
        status, reply = post(s, {"action": "weight", "vip": "nosuch",
                                 "real": real, "weight": 1})
        assert status == 400 and reply == ctl
        status, reply = post(s, {"action": "weight", "vip": vip.label,
                                 "real": real, "weight": "heavy"})
        assert status == 400 and "must be an integer" in reply["error"]
        status, _ = post(s, {"action": "drain", "vip": vip.label,
                             "real": real}, token="wrong-token-0123456789")
        assert status == 403
        state = json.loads(request(s, "GET", "/api/state")[2])
        row = state["vips"][0]["reals"][0]
        assert row["real"] == real and row["state"] == "drain"


# --- the token file ----------------------------------------------------------------

def token_file(tmp_path, text=TOKEN, mode=0o600):
    path = tmp_path / "token"
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return str(path)


def test_a_good_token_file(tmp_path):
    assert load_token(token_file(tmp_path)) == TOKEN
    assert load_token(token_file(tmp_path, mode=0o400)) == TOKEN


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606])
def test_a_token_file_others_can_read_is_refused(tmp_path, mode):
    with pytest.raises(ConfigError, match="chmod 600"):
        load_token(token_file(tmp_path, mode=mode))


def test_token_file_problems_are_said(tmp_path):
    good = token_file(tmp_path)
    with pytest.raises(ConfigError, match="not by the engine's user"):
        load_token(good, euid=os.geteuid() + 1)
    with pytest.raises(ConfigError, match="No such file"):
        load_token(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="not a regular file"):
        load_token(str(tmp_path))
    with pytest.raises(ConfigError, match="at least 16"):
        load_token(token_file(tmp_path, "short"))
    with pytest.raises(ConfigError, match="one line"):
        load_token(token_file(tmp_path, "a" * 20 + "\n" + "b" * 20))
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(ConfigError, match="is a symbolic link: give the "
                       "file itself"):
        load_token(str(link))


@pytest.mark.parametrize("call", ["fstat", "read"])
def test_a_token_file_that_cannot_be_read_is_a_config_error(tmp_path,
                                                            monkeypatch,
                                                            call):
    good = token_file(tmp_path)

    def fail(*args):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(token_mod, "os", SimpleNamespace(**{
        **vars(os), call: fail}))           # token.py's os only
    with pytest.raises(ConfigError, match=f"dashboard token {good}: .*"
                       "Input/output error"):
        load_token(good)


# --- the event log and where the engine records -----------------------------------

def test_the_event_log_is_bounded_and_ordered():
    log = EventLog(size=3, clock=lambda: 100.0)
    for i in range(5):
        log.add("weight", "v", "r", i)
    assert [e["text"] for e in log.list()] == ["2", "3", "4"]
    assert [e["seq"] for e in log.list()] == [3, 4, 5]
    assert [e["text"] for e in log.list(limit=1)] == ["4"]
    assert log.list(since=5) == [] and len(log) == 3
    assert log.list()[0]["time"] == 100.0 and log.list()[0]["vip"] == "v"


def test_the_engine_records_changes_health_roles_and_reloads(tmp_path):
    eng = started(tmp_path)[0]
    vip = eng.services[0]
    real = vip.reals[0].key
    eng.drain(vip.label, real)
    eng.online(vip.label, real)
    eng.set_weight(vip.label, real, 7)
    eng.add_real(vip.label, "10.0.0.19")
    eng.del_real(vip.label, "10.0.0.19")
    eng._on_health((vip.vip, real), False, "connection refused")
    eng.set_role("standby")
    eng.set_role("standby")             # no change: no event
    eng.reload()
    with open(eng.config_path, "a") as f:
        f.write("\nnonsense\n")
    with pytest.raises(ConfigError):
        eng.reload()
    kinds = [(e["kind"], e["real"], e["text"]) for e in eng.events.list()]
    assert kinds[:6] == [
        ("state", real, "drain"), ("state", real, "online"),
        ("weight", real, f"weight {vip.reals[0].weight} -> 7"),
        ("real", "10.0.0.19", "added (weight 1)"),
        ("real", "10.0.0.19", "removed"),
        ("health", real, "DOWN (connection refused)")]
    assert kinds[6] == ("ha", None, "active -> standby")
    assert kinds[7][0] == "reload" and kinds[7][2].startswith("reloaded")
    assert kinds[8][0] == "reload" and "failed" in kinds[8][2]
    assert len(kinds) == 9


# --- pyfwd start and the config file ----------------------------------------------

def start(*args):
    from click.testing import CliRunner

    from pyfwd.cli.main import cli
    return CliRunner().invoke(cli, ["start", "--iface", "lo", "--vip",
                                    "10.0.0.100:80/tcp", "--real",
                                    "10.0.0.11", *args])


@pytest.mark.skipif(os.geteuid() != 0, reason="start checks root first")
def test_start_refuses_a_token_it_cannot_trust(tmp_path):
    bad = token_file(tmp_path, mode=0o644)
    r = start("--metrics", "127.0.0.1:0", "--dashboard-token", bad)
    assert r.exit_code == 2 and "chmod 600" in r.output
    assert "Traceback" not in r.output
    r = start("--dashboard-token", token_file(tmp_path))    # no --metrics
    assert r.exit_code == 2 and "needs --metrics" in r.output


def test_start_help_explains_the_dashboard():
    r = start("--help")
    assert "--dashboard-token FILE" in r.output and "dashboard" in r.output


def test_the_config_key_is_a_path_beside_the_file(tmp_path):
    from pyfwd.control import config as config_mod
    path = tmp_path / "pyfwd.toml"
    text = ('[engine]\ndashboard_token = "{}"\n[[vip]]\naddress = '
            '"10.0.0.100"\nport = 80\n')
    path.write_text(text.format("dash.token"))
    assert config_mod.load(str(path)).dashboard_token == str(
        tmp_path / "dash.token")
    path.write_text(text.format("/etc/pyfwd/t"))
    cfg = config_mod.load(str(path))
    assert cfg.dashboard_token == "/etc/pyfwd/t"
    assert cfg.with_flags(dashboard_token="/x").dashboard_token == "/x"
    path.write_text(text.format(" "))
    with pytest.raises(ConfigError, match="dashboard_token"):
        config_mod.load(str(path))
    path.write_text(text.replace('"{}"', "1"))
    with pytest.raises(ConfigError, match="dashboard_token = 1"):
        config_mod.load(str(path))


def test_a_new_token_needs_no_restart_and_a_bad_file_no_old_token(tmp_path,
                                                                     caplog):
    """The engine's TokenFile: a rewritten file's token is taken at the
    next action and the old one refused; a file made unsafe refuses every
    action (not the old token: it may be the leaked one) until mended."""
    path = token_file(tmp_path)
    engine, control = FakeEngine(), FakeControl()
    with serve(Dashboard(engine, control, TokenFile(path))) as srv:
        site = SimpleNamespace(port=srv.port, host=f"127.0.0.1:{srv.port}")
        assert post(site, DRAIN)[0] == 200
        new = "n" * 24
        token_file(tmp_path, new)
        os.utime(path, ns=(1, 1))       # a rewrite within the clock's tick
        assert post(site, DRAIN)[0] == 403
        assert post(site, DRAIN, token=new)[0] == 200
        os.chmod(path, 0o644)
        status, reply = post(site, DRAIN, token=new)
        assert status == 403 and "log says why" in reply["error"], reply
        assert "chmod 600" in caplog.text
        os.chmod(path, 0o600)
        assert post(site, DRAIN, token=new)[0] == 200
        assert post(site, DRAIN)[0] == 403
    assert len(control.lines) == 3
