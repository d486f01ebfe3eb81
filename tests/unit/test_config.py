"""The config file: the documented shape loads; every error names the key,
the value and what was expected."""

import textwrap

import pytest

from pyfwd.control import config
from pyfwd.errors import ConfigError

GOOD = textwrap.dedent("""
    [engine]
    iface = "eth0"
    control_socket = "/run/pyfwd/pyfwd.sock"
    metrics = "127.0.0.1:9108"

    [[vip]]
    name = "pacs-web"
    address = "10.0.0.100"
    port = 80
    protocol = "tcp"
    mode = "dr"
    scheduler = "wlc"
    persistence = 0
    health = { type = "http", path = "/", expect = 200, interval = 1.0, timeout = 1.0, rise = 2, fall = 2 }
    fallback = "10.0.0.50:80"

    [[vip.real]]
    address = "10.0.0.11"
    port = 80
    weight = 100

    [[vip]]
    name = "pacs-dicom"
    address = "10.0.0.100"
    port = 11112
    mode = "nat"
    scheduler = "sh"
    persistence = 300
    health = { type = "dicom", called_ae = "ORTHANC", interval = 2.0 }

    [[vip.real]]
    address = "192.168.50.11"
    port = 4242
    """)


def test_the_documented_shape_loads():
    cfg = config.parse(GOOD)
    assert cfg.iface == "eth0" and cfg.metrics == "127.0.0.1:9108"
    web, dicom = cfg.services
    assert (web.name, web.scheduler, web.health.type, str(web.fallback)) == (
        "pacs-web", "wlc", "http", "10.0.0.50:80@1")
    assert web.reals[0].weight == 100
    assert (dicom.mode, dicom.persistence, dicom.health.called_ae) == (
        "nat", 300, "ORTHANC")
    assert dicom.reals[0].port == 4242


@pytest.mark.parametrize("old,new,words", [
    ('scheduler = "wlc"', 'scheduler = "fastest"', ["scheduler", "fastest",
                                                     "rr, wrr"]),
    ('mode = "dr"', 'mode = "tunnel"', ["mode", "tunnel", "dr, nat, snat"]),
    ("port = 80\nprotocol", "port = 99999\nprotocol",
     ["99999", "1 to 65535"]),
    ('address = "10.0.0.11"', 'address = "10.0.0.311"', ["real[0]",
                                                          "10.0.0.311"]),
    ("weight = 100", "weight = -1", ["weight", "-1"]),
    ("weight = 100", 'weight = "heavy"', ["weight", "heavy", "integer"]),
    ("persistence = 0", "persistence = 99999999", ["persistence",
                                                   "99999999"]),
    ("expect = 200", "expect = 200, colour = 1", ["colour"]),
    ('fallback = "10.0.0.50:80"', 'fallback = "[fd00::50]"', ["fallback",
                                                               "IPv4"]),
    ('fallback = "10.0.0.50:80"', 'fallback = "fd00::50"', ["fallback",
                                                             "brackets"]),
    ('metrics = "127.0.0.1:9108"', 'metrics = "here"', ["here"]),
    ('iface = "eth0"', 'iface = "eth0"\n    colour = "red"', ["engine.colour",
                                                            "unknown key"]),
    ('name = "pacs-dicom"', 'name = "pacs-web"', ["pacs-web", "twice"]),
    ("port = 11112", "port = 80", ["10.0.0.100:80/tcp", "also"]),
])
def test_errors_name_key_value_and_expectation(old, new, words):
    assert old in GOOD
    with pytest.raises(ConfigError) as exc:
        config.parse(GOOD.replace(old, new, 1))
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))


def test_not_toml_and_no_vip():
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.parse("[[vip]\n")
    with pytest.raises(ConfigError, match="no \\[\\[vip\\]\\]"):
        config.parse('[engine]\niface = "eth0"\n')
    with pytest.raises(ConfigError, match="No such file"):
        config.load("/nonexistent/pyfwd.toml")
