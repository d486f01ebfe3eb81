"""pyfwd.control.l7 without HAProxy: option parsing and the rendered config.

That HAProxy itself accepts what render() writes is checked in
tests/e2e/test_l7_haproxy.py (it needs the binary).
"""

import ipaddress

import pytest

from pyfwd.errors import ConfigError
from pyfwd.control.l7.haproxy import HAProxy
from pyfwd.control.l7.options import L7Options
from pyfwd.control.l7.render import (BALANCE, L7Vip, haproxy_weights,
                                     l7_server, l7_vips, render, sanitize)
from pyfwd.model import Real, Service, Vip

VIP = Vip.parse("10.0.0.100:80/tcp")
REALS = [("r_10_0_0_11_80", "10.0.0.11", 80, 1),
         ("r_10_0_0_12_8080", ipaddress.ip_address("10.0.0.12"), 8080, 3)]


def listen_section(text, name):
    """The lines of `listen name`, stripped."""
    lines = text.splitlines()
    start = lines.index(f"listen {name}")
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        out.append(line.strip())
    return out


# -- L7Options ----------------------------------------------------------------

def test_defaults_http():
    o = L7Options.from_dict({})
    assert o == L7Options()
    assert (o.l7_mode, o.forwardfor, o.cookie, o.tls_cert, o.send_proxy) == \
        ("http", True, None, None, False)


def test_defaults_tcp_have_no_forwardfor():
    o = L7Options.from_dict({"l7_mode": "tcp", "send_proxy": True})
    assert (o.l7_mode, o.forwardfor, o.send_proxy) == ("tcp", False, True)


def test_full_http(tmp_path):
    pem = tmp_path / "site.pem"
    pem.write_text("x")
    o = L7Options.from_dict({
        "l7_mode": "http", "forwardfor": False, "cookie": "SRV",
        "tls_cert": str(pem), "send_proxy": True,
        "set_headers": {"X-Pacs": "a b", "X-Client": "%[src]"},
        "del_headers": ["X-Debug"], "scheduler": "ignored, not ours"})
    assert o.cookie == "SRV" and o.tls_cert == str(pem) and o.send_proxy
    assert o.set_headers == (("X-Pacs", "a b"), ("X-Client", "%[src]"))
    assert o.del_headers == ("X-Debug",)


@pytest.mark.parametrize("d, key, value", [
    ({"l7_mode": "udp"}, "l7_mode", "'udp'"),
    ({"forwardfor": "yes"}, "forwardfor", "'yes'"),
    ({"l7_mode": "tcp", "forwardfor": True}, "forwardfor", "True"),
    ({"send_proxy": 1}, "send_proxy", "1"),
    ({"cookie": "a b"}, "cookie", "'a b'"),
    ({"cookie": 5}, "cookie", "5"),
    ({"l7_mode": "tcp", "cookie": "SRV"}, "cookie", "'SRV'"),
    ({"tls_cert": "/nonexistent/x.pem"}, "tls_cert", "'/nonexistent/x.pem'"),
    ({"tls_cert": ""}, "tls_cert", "''"),
    ({"set_headers": ["X-A"]}, "set_headers", "['X-A']"),
    ({"set_headers": {"X A": "v"}}, "set_headers", "'X A'"),
    ({"set_headers": {"X-A": "v\r\nX-B: w"}}, "set_headers.X-A", "'v\\r\\n"),
    ({"set_headers": {"X-A": 3}}, "set_headers.X-A", "3"),
    ({"del_headers": "X-A"}, "del_headers", "'X-A'"),
    ({"del_headers": ["ok", "not:ok"]}, "del_headers", "'not:ok'"),
    ({"l7_mode": "tcp", "del_headers": ["X-A"]}, "del_headers", "['X-A']"),
    ({"l7_mode": "tcp", "set_headers": {"X-A": "v"}}, "set_headers", "{"),
    ({"maxconn": 0}, "maxconn", "0"),
    ({"maxconn": True}, "maxconn", "True"),
    ({"maxconn": "100"}, "maxconn", "'100'"),
    ({"timeout_http_request": "soon"}, "timeout_http_request", "'soon'"),
    ({"l7_mode": "tcp", "timeout_http_request": "5s"},
     "timeout_http_request", "'5s'"),
    ({"xff_drop_client": "yes"}, "xff_drop_client", "'yes'"),
    ({"l7_mode": "tcp", "xff_drop_client": True}, "xff_drop_client", "True"),
])
def test_bad_option_named(d, key, value):
    with pytest.raises(ConfigError) as e:
        L7Options.from_dict(d, where="vip web")
    msg = str(e.value)
    assert msg.startswith(f"vip web: {key} ") and value in msg \
        and "expected" in msg, msg


def test_tls_in_tcp_refused(tmp_path):
    pem = tmp_path / "p.pem"
    pem.write_text("x")
    with pytest.raises(ConfigError, match="tls_cert .*expected no tls_cert"):
        L7Options.from_dict({"l7_mode": "tcp", "tls_cert": str(pem)})


# -- names and weights -------------------------------------------------------

def test_server_name_stable_from_key():
    assert l7_server(Real.parse("10.0.0.11:80")) == "r_10_0_0_11_80"
    assert l7_server(Real.parse("10.0.0.11:80@7")) == "r_10_0_0_11_80"
    assert l7_server(Real.parse("10.0.0.11")) == "r_10_0_0_11"
    assert l7_server(Real.parse("[fd00::11]:8080")) == "r__fd00__11__8080"
    assert sanitize("web/vip 1.2") == "web_vip_1_2"


def test_haproxy_weights_scale():
    assert haproxy_weights([1, 3, 0]) == [1, 3, 0]
    assert haproxy_weights([512, 256, 1, 0]) == [256, 128, 1, 0]
    assert haproxy_weights([]) == []


# -- render ------------------------------------------------------------------

def test_render_global_and_defaults():
    text = render([], "/run/pyfwd/haproxy.sock")
    assert "    master-worker\n" in text
    assert ('    stats socket "/run/pyfwd/haproxy.sock" mode 600 level admin '
            'expose-fd listeners\n') in text
    assert "daemon" not in text
    for t in ("timeout connect 5s", "timeout client 60s",
              "timeout server 60s", "timeout tunnel 1h"):
        assert t in text


def test_render_http_everything(tmp_path):
    pem = tmp_path / "site.pem"
    pem.write_text("x")
    o = L7Options.from_dict({
        "cookie": "SRV", "tls_cert": str(pem), "send_proxy": True,
        "set_headers": {"X-Pacs": 'say "hi" $HOME'},
        "del_headers": ["X-Debug"]})
    text = render([L7Vip("web", VIP, REALS, "wrr", o)], "/tmp/s.sock")
    sec = listen_section(text, "web")
    assert sec[:6] == ["mode http",
                       f'bind 10.0.0.100:80 transparent ssl crt "{pem}"',
                       "maxconn 2000", "balance roundrobin",
                       "timeout http-request 10s", "option forwardfor"]
    assert "http-request set-header X-Forwarded-Proto https" in sec
    assert "http-request del-header X-Debug" in sec
    assert r'http-request set-header X-Pacs "say \"hi\" \$HOME"' in sec
    assert "cookie SRV insert indirect nocache" in sec
    assert ("server r_10_0_0_11_80 10.0.0.11:80 weight 1 "
            "cookie r_10_0_0_11_80 send-proxy-v2") in sec
    assert ("server r_10_0_0_12_8080 10.0.0.12:8080 weight 3 "
            "cookie r_10_0_0_12_8080 send-proxy-v2") in sec
    assert "hash-type" not in text


def test_render_http_plain():
    text = render([L7Vip("web", VIP, REALS[:1], "rr",
                         L7Options.from_dict({"forwardfor": False}))], "/s")
    sec = listen_section(text, "web")
    assert sec == ["mode http", "bind 10.0.0.100:80 transparent",
                   "maxconn 2000", "balance roundrobin",
                   "timeout http-request 10s",
                   "server r_10_0_0_11_80 10.0.0.11:80 weight 1"]


def test_render_tcp():
    o = L7Options.from_dict({"l7_mode": "tcp", "send_proxy": True})
    v = L7Vip("pacs dicom", Vip.parse("[fd00::100]:104/tcp"),
              [("r1", "fd00::11", 104, 1)], "lc", o, {"tunnel": "2h"})
    sec = listen_section(render([v], "/s"), "pacs_dicom")
    assert sec == ["mode tcp", "bind [fd00::100]:104 transparent",
                   "maxconn 2000", "balance leastconn", "timeout tunnel 2h",
                   "server r1 [fd00::11]:104 weight 1 send-proxy-v2"]


@pytest.mark.parametrize("sched, lines", [
    ("rr", ["balance roundrobin"]), ("wrr", ["balance roundrobin"]),
    ("lc", ["balance leastconn"]), ("wlc", ["balance leastconn"]),
    ("sh", ["balance source"]),
    ("maglev", ["balance source", "hash-type consistent"]),
])
def test_scheduler_mapping(sched, lines):
    sec = listen_section(render([L7Vip("v", VIP, REALS, sched)], "/s"), "v")
    assert sec[3:3 + len(lines)] == lines
    assert set(BALANCE) == {"rr", "wrr", "lc", "wlc", "sh", "maglev"}


def test_render_scales_big_weights():
    reals = [("a", "10.0.0.11", 80, 1000), ("b", "10.0.0.12", 80, 500),
             ("c", "10.0.0.13", 80, 0)]
    sec = listen_section(render([L7Vip("v", VIP, reals)], "/s"), "v")
    assert [ln.split("weight ")[1] for ln in sec if ln.startswith("server")] \
        == ["256", "128", "0"]


@pytest.mark.parametrize("vips, match", [
    ([L7Vip("v", VIP, scheduler="random")], "scheduler 'random': expected"),
    ([L7Vip("a.b", VIP), L7Vip("a_b", VIP)], "name 'a_b' is taken"),
    ([L7Vip("v", VIP, REALS + REALS[:1])], "r_10_0_0_11_80 listed twice"),
    ([L7Vip("v", VIP, [("a", "10.0.0.1", 80, 70000)])], "weight 70000"),
    ([L7Vip("v", VIP, timeouts={"client": "soon"})], "timeout client"),
    ([L7Vip("v", VIP, timeouts={"idle": "5s"})], "timeout idle"),
])
def test_render_refuses(vips, match):
    with pytest.raises(ConfigError, match=match):
        render(vips, "/s")


def test_l7_vips_from_services():
    svc = Service(VIP, [Real.parse("10.0.0.11"),
                        Real.parse("10.0.0.12:8080@7")],
                  scheduler="maglev", mode="l7", name="web")
    v, = l7_vips([svc])
    assert v.name == "web" and v.scheduler == "maglev"
    assert v.reals == [("r_10_0_0_11", ipaddress.ip_address("10.0.0.11"),
                        80, 1),
                       ("r_10_0_0_12_8080",
                        ipaddress.ip_address("10.0.0.12"), 8080, 7)]
    unnamed, = l7_vips([Service(VIP, [])])
    assert unnamed.name == "vip_10_0_0_100_80"


# -- HAProxy: what needs no process ------------------------------------------

def test_missing_binary_named(tmp_path):
    h = HAProxy(tmp_path / "h.cfg", tmp_path / "h.sock",
                binary="no-such-haproxy-binary")
    with pytest.raises(ConfigError, match="HAProxy not found.*apt-get "
                       "install haproxy"):
        h.check_binary()


def test_old_binary_named(tmp_path):
    fake = tmp_path / "haproxy"
    fake.write_text("#!/bin/sh\necho 'HA-Proxy version 1.8.19 2019/02/11'\n")
    fake.chmod(0o755)
    h = HAProxy(tmp_path / "h.cfg", tmp_path / "h.sock", binary=str(fake))
    with pytest.raises(ConfigError, match=r"HAProxy 1\.8\.19: expected "
                       r"version 2\.0"):
        h.check_binary()


def test_bad_state_and_weight_refused_before_any_io(tmp_path):
    h = HAProxy(tmp_path / "h.cfg", tmp_path / "h.sock")
    with pytest.raises(ConfigError, match="state 'down': expected"):
        h.set_state("web", "r1", "down")
    with pytest.raises(ConfigError, match="weight 257: expected"):
        h.set_weight("web", "r1", 257)
    with pytest.raises(ConfigError, match="name 'web/x'"):
        h.set_state("web/x", "r1", "ready")
    assert h.ensure_running() is False      # never started: nothing to do
    h.stop()                                 # idempotent, nothing to stop


# -- issue 16: maxconn, timeout http-request, xff_drop_client, the user ------

def test_operating_options_default_and_given():
    o = L7Options.from_dict({})
    assert (o.maxconn, o.timeout_http_request, o.xff_drop_client) == \
        (2000, "10s", False)
    o = L7Options.from_dict({"maxconn": 10, "timeout_http_request": "2s",
                             "xff_drop_client": True})
    assert (o.maxconn, o.timeout_http_request, o.xff_drop_client) == \
        (10, "2s", True)


def test_render_user_maxconn_and_xff_drop():
    o = L7Options.from_dict({"xff_drop_client": True, "maxconn": 300,
                             "timeout_http_request": "3s"})
    vips = [L7Vip("web", VIP, REALS[:1], "rr", o),
            L7Vip("tcp", Vip.parse("10.0.0.100:104/tcp"), REALS[:1], "rr",
                  L7Options.from_dict({"l7_mode": "tcp"}))]
    text = render(vips, "/s", user=("haproxy", "haproxy"))
    glob = text.split("\ndefaults")[0].splitlines()
    assert '    user "haproxy"' in glob and '    group "haproxy"' in glob
    assert "    maxconn 2300" in glob           # the VIPs' sum
    sec = listen_section(text, "web")
    assert "maxconn 300" in sec and "timeout http-request 3s" in sec
    # the client's header goes before HAProxy adds its own
    assert sec.index("http-request del-header X-Forwarded-For") < \
        sec.index("option forwardfor")
    assert not any("http-request" in ln for ln in listen_section(text, "tcp"))
    root = render(vips, "/s", user=None)
    assert "user " not in root and "group " not in root


def test_haproxy_user_falls_back(monkeypatch, caplog):
    import pwd as pwd_mod
    from pyfwd.control.l7 import render as render_mod

    root = pwd_mod.getpwnam("root")

    def only(names):
        def getpwnam(name):
            if name not in names:
                raise KeyError(name)
            return root
        return getpwnam
    for names, want in ((("haproxy",), "haproxy"), (("nobody",), "nobody"),
                        ((), None)):
        render_mod.haproxy_user.cache_clear()
        monkeypatch.setattr(render_mod.pwd, "getpwnam", only(names))
        with caplog.at_level("WARNING", logger="pyfwd.haproxy"):
            got = render_mod.haproxy_user()
        assert (got[0] if got else None) == want
        if want != "haproxy":
            assert "haproxy" in caplog.text     # said, not silent
    render_mod.haproxy_user.cache_clear()
