"""Issue 20: the guide's rules for L7 VIPs, without HAProxy running.

The shared-RIP:PORT rule (an L7 VIP and an L4 SNAT VIP), per-VIP
timeouts, source persistence, rewrites and redirects, l7_source."""

import pytest

from pyfwd.control import config
from pyfwd.control.engine import Engine
from pyfwd.control.l7.conflicts import check_shared_reals
from pyfwd.control.startup import check_options
from pyfwd.errors import ConfigError

L7_WEB = """
[[vip]]
name = "web"
address = "10.0.0.100"
port = 80
mode = "l7"
[[vip.real]]
address = "10.0.0.11"
port = 8080
"""
SNAT = """
[[vip]]
name = "pacs"
address = "10.0.0.101"
port = 8080
mode = "snat"
scheduler = "rr"
[[vip.real]]
address = "10.0.0.{last}"
"""


def test_check_config_refuses_l7_and_snat_sharing_a_real():
    with pytest.raises(ConfigError) as e:
        config.parse(L7_WEB + SNAT.format(last=11))
    msg = str(e.value)
    assert "vip web (L7)" in msg and "vip pacs (L4 snat)" in msg
    assert "10.0.0.11:8080" in msg


def test_other_port_or_other_mode_is_fine():
    config.parse(L7_WEB + SNAT.format(last=12))
    cfg = config.parse(L7_WEB + SNAT.format(last=11).replace(
        '"snat"', '"nat"'))
    check_shared_reals(cfg.services)        # NAT: not the guide's rule


def test_start_refuses_it():
    cfg = config.parse(L7_WEB + SNAT.format(last=12))
    web, pacs = cfg.services
    pacs.reals[0] = web.reals[0].__class__.parse("10.0.0.11:8080")
    with pytest.raises(ConfigError, match="share the real server"):
        check_options("eth0", None, "xdp", [web, pacs])


def test_add_real_refuses_it_and_changes_nothing():
    cfg = config.parse(L7_WEB + SNAT.format(last=12))
    eng = Engine("eth0", cfg.services)
    with pytest.raises(ConfigError, match="vip web .L7. and vip pacs"):
        eng.add_real("pacs", "10.0.0.11:8080")
    assert [r.key for r in eng.services[1].reals] == ["10.0.0.12"]


# --- point 4: timeouts and source persistence; point 2: rewrites --------

from pyfwd.control.l7.options import L7Options  # noqa: E402
from pyfwd.control.l7.render import l7_vips, render  # noqa: E402


def section(text, name):
    lines = text.splitlines()
    out = []
    for line in lines[lines.index(f"listen {name}") + 1:]:
        if not line.startswith("    "):
            break
        out.append(line.strip())
    return out


def rendered(extra, mode="l7"):
    cfg = config.parse(L7_WEB.replace('mode = "l7"', f'mode = "{mode}"\n'
                                      + extra))
    return section(render(l7_vips(cfg.services), "/tmp/s",
                          user=("haproxy", "haproxy")), "web")


def test_timeouts_in_seconds_rendered_per_vip():
    lines = rendered("l7_mode = \"tcp\"\nforwardfor = false\n"
                     "timeout_client = 3600\ntimeout_server = 3600\n"
                     "timeout_tunnel = 7200")
    assert {"timeout client 3600s", "timeout server 3600s",
            "timeout tunnel 7200s"} <= set(lines)
    for bad in ("0", "-5", "true", '"1h"', "2000001"):
        with pytest.raises(ConfigError, match="timeout_client"):
            rendered(f"timeout_client = {bad}")


def test_persistence_source_is_a_stick_table_on_src():
    lines = rendered('persistence = "source"')
    assert "stick-table type ip size 100k expire 1800s" in lines
    assert "stick on src" in lines
    assert "stick-table type ip size 100k expire 600s" in \
        rendered("persistence = 600\ncookie = \"SRV\"")
    with pytest.raises(ConfigError, match='"source" with mode = "l7"'):
        config.parse(SNAT.format(last=11).replace(
            'scheduler = "rr"', 'persistence = "source"'))


def test_rewrites_and_redirects_in_order():
    lines = rendered(r'''replace_path = { "^/viewer/(.*)" = "/ohif/\\1" }
replace_host = { "^pacs\\.old$" = "pacs.new" }
set_host = "pacs.internal"
redirect_scheme = "https"
redirect_location = { "/" = "/viewer/" }
redirect_code = 301''')
    rules = [line for line in lines if line.startswith("http-request")]
    assert rules == [
        "http-request redirect scheme https code 301 unless { ssl_fc }",
        'http-request redirect location "/viewer/" code 301 if '
        '{ path "/" }',
        r'http-request replace-path "^/viewer/(.*)" "/ohif/\\1"',
        r'http-request replace-header Host "^pacs\\.old\$" "pacs.new"',
        'http-request set-header Host "pacs.internal"']


@pytest.mark.parametrize("extra,match", [
    ('redirect_scheme = "ftp"', "redirect_scheme"),
    ("redirect_code = 200", "redirect_code"),
    ('redirect_location = { "/" = "viewer" }', "redirect_location"),
    ('set_path = ""', "set_path"),
    ('replace_path = "x"', "replace_path"),
    ('l7_mode = "tcp"\nforwardfor = false\nset_host = "a"', "l7_mode tcp"),
])
def test_bad_rewrites_refused(extra, match):
    with pytest.raises(ConfigError, match=match):
        rendered(extra)


# --- point 1: l7_source -----------------------------------------------------

def test_l7_source_values():
    assert not [x for x in rendered("") if x.startswith("source")]
    assert "source 10.0.0.100" in rendered('l7_source = "vip"')
    assert "source 10.0.0.5" in rendered('l7_source = "10.0.0.5"')
    assert "source 0.0.0.0 usesrc clientip" in \
        rendered('l7_source = "client"')
    with pytest.raises(ConfigError, match="l7_source"):
        rendered('l7_source = "me"')
    with pytest.raises(ConfigError, match="family"):
        rendered('l7_source = "fd00::5"')


def test_client_source_keeps_the_workers_root():
    cfg = config.parse(L7_WEB.replace('mode = "l7"', 'mode = "l7"\n'
                                      'l7_source = "client"'))
    text = render(l7_vips(cfg.services), "/tmp/s",
                  user=("haproxy", "haproxy"))
    assert "user " not in text
    assert L7Options.from_dict({}).l7_source == "balancer"


def test_pyfwd_check_config_prints_the_conflict(tmp_path):
    from click.testing import CliRunner
    from pyfwd.cli.main import cli
    path = tmp_path / "pyfwd.toml"
    path.write_text(L7_WEB + SNAT.format(last=11))
    r = CliRunner().invoke(cli, ["check-config", str(path)])
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: vip web (L7) and vip pacs (L4 snat) "
                               "share the real server 10.0.0.11:8080")
    assert "Traceback" not in r.output


# --- L7Sync and the transparent routing (a fake kernel) ---------------------

from pyfwd.control.l7.options import L7Options as _O  # noqa: E402
from pyfwd.control.l7.sync import L7Sync  # noqa: E402
from pyfwd.control.l7.transparent import _nft_rule  # noqa: E402
from pyfwd.model import Real, Service, Vip  # noqa: E402


class FakeRouting:
    def __init__(self, local=(), one_arm=()):
        self.calls, self.local, self.one_arm = [], set(local), one_arm

    def open(self):
        self.calls.append("open")

    def apply(self, versions):
        self.calls.append(("apply", sorted(versions)))

    def local_addresses(self):
        import ipaddress
        return {ipaddress.ip_address(a) for a in self.local}

    def one_arm_reals(self, iface, reals):
        return [r for r in reals if str(r) in self.one_arm]

    def close(self):
        self.calls.append("close")


class FakeAddresses:
    def open(self):
        pass

    def add(self, addresses):
        pass

    def release(self, keep=()):
        pass

    def close(self):
        pass


class Proxy:
    runtime_socket = "/tmp/x.sock"

    def __init__(self):
        self.texts = []

    def check_binary(self):
        return "2.6"

    def start(self, text):
        self.texts.append(text)

    reload = start

    def validate(self, text):
        pass

    def __getattr__(self, name):        # set_state, set_health, ...
        return lambda *a, **k: None

    def stop(self):
        pass


def l7svc(port, **opts):
    return Service(Vip.parse(f"10.0.0.100:{port}/tcp"),
                   [Real.parse("10.0.0.11:8080")], "rr", "l7",
                   name=f"w{port}", l7=_O.from_dict(opts))


def test_sync_installs_and_removes_the_transparent_routing(caplog):
    routing, proxy = FakeRouting(one_arm={"10.0.0.11"}), Proxy()
    sync = L7Sync("eth0", new_proxy=lambda i: proxy,
                  addresses=FakeAddresses(), routing=routing)
    sync.start([l7svc(80, l7_source="client")], {}, {})
    assert routing.calls == [("apply", [4])]
    assert "usesrc clientip" in proxy.texts[-1]
    assert any("one-arm" in r.getMessage() and "10.0.0.11" in
               r.getMessage() for r in caplog.records)
    sync.sync([l7svc(80, l7_source="client"), l7svc(81)], {}, {})
    assert routing.calls == [("apply", [4])]        # no change: no call
    sync.sync([l7svc(81)], {}, {})
    assert routing.calls[-1] == ("apply", [])
    sync.stop()
    assert routing.calls[-1] == "close"


def test_a_source_address_must_be_local():
    routing = FakeRouting(local={"10.0.0.2", "10.0.0.50"})
    sync = L7Sync("eth0", new_proxy=lambda i: Proxy(),
                  addresses=FakeAddresses(), routing=routing)
    sync.start([l7svc(80, l7_source="10.0.0.50")], {}, {})
    with pytest.raises(ConfigError, match="l7_source 10.0.0.77: not an "
                       "address of this host"):
        sync.checked([l7svc(80, l7_source="10.0.0.77")])


def test_the_nftables_rule_is_the_tproxy_one():
    names = [e["attrs"][0][1] for e in _nft_rule()]
    assert names == ["meta", "cmp", "socket", "cmp", "immediate", "meta",
                     "immediate"]
