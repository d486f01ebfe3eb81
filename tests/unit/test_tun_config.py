"""L4 TUN in the control plane (no root): the model's refusals, the
config's tun_sources, the tunnel ends chosen from an interface's
addresses (control.tunnel with fakes), and what `ctl status` reports."""

import ipaddress
import textwrap
from types import SimpleNamespace

import pytest

from pyfwd.control import config, tunnel
from pyfwd.control.ctl import format_status
from pyfwd.control.report import tun_status
from pyfwd.errors import ConfigError
from pyfwd.model import Real, Service, Vip

A = ipaddress.ip_address


def test_tun_is_an_l4_mode_with_the_vips_port_and_family():
    vip = Vip.parse("10.0.0.100:80/tcp")
    Service(vip, [Real.parse("10.0.4.11")], "maglev", "tun")
    Service(vip, [Real.parse("10.0.4.11:80")], "maglev", "tun")
    with pytest.raises(ConfigError, match="port 8080 in TUN"):
        Service(vip, [Real.parse("10.0.4.11:8080")], "maglev", "tun")
    with pytest.raises(ConfigError, match="tun needs the VIP's family"):
        Service(vip, [Real.parse("[fd00:0:0:4::11]")], "maglev", "tun")


def _cfg(engine_lines):
    return textwrap.dedent(f"""
        [engine]
        iface = "eth0"
        {engine_lines}
        [[vip]]
        address = "10.0.0.100"
        port = 80
        mode = "tun"
        [[vip.real]]
        address = "10.0.4.11"
        """)


def test_config_takes_tun_and_its_sources():
    cfg = config.parse(_cfg('tun_sources = ["10.0.0.2", "fd00::2"]'))
    assert cfg.services[0].mode == "tun"
    assert cfg.tun_sources == ["10.0.0.2", "fd00::2"]
    assert config.parse(_cfg("")).tun_sources == []


@pytest.mark.parametrize("value,words", [
    ('["10.0.0.2", "10.0.0.3"]', "two IPv4 addresses"),
    ('["nope"]', "'nope' is not an IP address"),
    ('["0.0.0.0"]', "cannot be a tunnel's source"),
    ('["ff02::1"]', "cannot be a tunnel's source"),
    ('"10.0.0.2"', "expected an array"),
])
def test_bad_tun_sources_name_the_key(value, words):
    with pytest.raises(ConfigError, match="engine.tun_sources") as e:
        config.parse(_cfg(f"tun_sources = {value}"))
    assert words in str(e.value)


def _ends(addrs, given=(), vips=(), mtu=1500):
    return tunnel.tun_ends("eth0", [A(v) for v in vips], given,
                           addresses=lambda _: [A(a) for a in addrs],
                           mtu=lambda _: mtu)


def test_tunnel_ends_are_the_interfaces_first_addresses_but_vips():
    ends = _ends(["10.0.0.100", "10.0.0.2", "10.0.0.3", "fe80::1",
                  "fd00::100", "fd00::2"], vips=["10.0.0.100", "fd00::100"],
                 mtu=9000)
    assert ends == (A("10.0.0.2"), A("fd00::2"), 9000)


def test_given_sources_win_and_a_missing_family_is_said():
    ends = _ends(["10.0.0.2", "fe80::1"], given=["10.0.0.9"])
    assert ends == (A("10.0.0.9"), None, 1500)
    six = [Service(Vip.parse("[fd00::100]:80/tcp"),
                   [Real.parse("[fd00:0:0:4::11]")], "maglev", "tun")]
    assert "needs an IPv6 source" in tunnel.missing(ends, six)
    four = [Service(Vip.parse("10.0.0.100:80/tcp"),
                    [Real.parse("10.0.4.11")], "maglev", "tun")]
    assert tunnel.missing(ends, four) is None


def test_status_reports_the_tunnel_ends_of_tun_vips_only():
    tun = [Service(Vip.parse("10.0.0.100:80/tcp"), [Real.parse("10.0.4.11")],
                   "maglev", "tun")]
    ends = tunnel.TunEnds(A("10.0.0.2"), None, 1500)
    e = SimpleNamespace(services=tun, tun_ends=ends)
    assert tun_status(e) == {"source4": "10.0.0.2", "source6": None,
                             "mtu": 1500}
    e.services = [Service(Vip.parse("10.0.0.100:80/tcp"),
                          [Real.parse("10.0.0.11")])]
    assert tun_status(e) is None
    assert tun_status(SimpleNamespace(services=tun)) is None   # not started


def test_ctl_status_prints_the_tunnel_ends():
    text = format_status({"iface": "eth0", "tun": {
        "source4": "10.0.0.2", "source6": "fd00::2", "mtu": 1500}})
    assert "from 10.0.0.2, from fd00::2, mtu 1500" in text
