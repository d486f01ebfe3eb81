"""The config file: the documented shape loads; every error names the key,
the value and what was expected."""

import textwrap

import pytest

from pyfwd.control import config, server
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


# --- the command line over the file (`pyfwd start`) -------------------------

FILE = textwrap.dedent("""
    [engine]
    iface = "eth0"
    inside_iface = "eth1"
    snat_address = "10.0.0.2"
    snat_ports = "40000-40999"
    control_socket = "/run/file.sock"
    metrics = "127.0.0.1:9108"
    role = "standby"

    [[vip]]
    address = "10.0.0.100"
    port = 80
    real = [{ address = "10.0.0.11" }]
    """)


def test_flags_not_given_leave_the_files_keys():
    cfg = config.parse(FILE).with_flags()
    assert (cfg.iface, cfg.inside_iface, cfg.snat_address, cfg.snat_ports,
            cfg.control_socket, cfg.metrics, cfg.role) == (
        "eth0", "eth1", "10.0.0.2", "40000-40999", "/run/file.sock",
        "127.0.0.1:9108", "standby")


def test_flags_given_override_the_files_keys():
    cfg = config.parse(FILE).with_flags(
        iface="eth2", inside_iface="eth3", snat_address="10.0.0.3",
        snat_ports="50000-50999", control_socket="/tmp/flag.sock",
        metrics=":9200", role="active")
    assert (cfg.iface, cfg.inside_iface, cfg.snat_address,
            cfg.control_socket, cfg.metrics, cfg.role) == (
        "eth2", "eth3", "10.0.0.3", "/tmp/flag.sock", ":9200", "active")
    # --snat-ports given replaces the file's (it once could not: the flag
    # always had a value, so the file's won)
    assert cfg.snat_ports == "50000-50999" and cfg.ports() == (50000, 50999)
    assert config.parse(FILE).with_flags().ports() == (40000, 40999)


def test_without_a_file_the_flags_over_the_defaults():
    services = config.parse_services(["10.0.0.100:80/tcp"], ["10.0.0.11"])
    cfg = config.Config(None, services=services)
    assert cfg.with_flags() == config.Config(None, services=services)
    assert cfg.ports() == config.SNAT_PORTS == (61000, 65535)
    assert (cfg.control_socket, cfg.role) == (server.DEFAULT_PATH, "active")
    cfg = cfg.with_flags(iface="eth0", control_socket="/tmp/s.sock",
                         role="standby")
    assert (cfg.iface, cfg.control_socket, cfg.role) == (
        "eth0", "/tmp/s.sock", "standby")


def test_a_role_flag_is_checked_as_the_files():
    with pytest.raises(ConfigError, match="role = 'master'"):
        config.parse(FILE).with_flags(role="master")
    l7 = FILE.replace('role = "standby"', "").replace(
        "port = 80\n", "port = 80\nmode = \"l7\"\n")
    cfg = config.parse(l7)
    with pytest.raises(ConfigError, match="L7 VIP"):
        cfg.with_flags(role="standby")
