"""The config file: the documented shape loads; every error names the key,
the value and what was expected."""

import textwrap

import pytest

from pyfwd.control import config, server
from pyfwd.errors import ConfigError
from pyfwd.model import Service, Vip

GOOD = textwrap.dedent("""
    [engine]
    iface = "eth0"
    control_socket = "/run/pyfwd/pyfwd.sock"
    metrics = "127.0.0.1:10104"

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
    assert cfg.iface == "eth0" and cfg.metrics == "127.0.0.1:10104"
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
    ('metrics = "127.0.0.1:10104"', 'metrics = "here"', ["here"]),
    ('iface = "eth0"', 'iface = "eth0"\n    colour = "red"', ["engine.colour",
                                                            "unknown key"]),
    ('name = "pacs-dicom"', 'name = "pacs-web"', ["pacs-web", "twice"]),
    ("port = 11112", "port = 80", ["10.0.0.100:80/tcp", "also"]),
    # what cannot work, refused with the reason (issue 15)
    # DR cannot translate ports
    ('address = "10.0.0.11"\nport = 80', 'address = "10.0.0.11"\nport = 8080',
     ["vip 'pacs-web'", "real 10.0.0.11:8080", "DR", "VIP's port 80",
      "nat or snat"]),
    ('fallback = "10.0.0.50:80"', 'fallback = "10.0.0.50:8081"',
     ["fallback 10.0.0.50:8081", "DR"]),
    # a real server or fallback at the VIP's own address
    ('address = "192.168.50.11"', 'address = "10.0.0.100"',
     ["vip 'pacs-dicom'", "real 10.0.0.100:4242", "VIP's own address"]),
    ('fallback = "10.0.0.50:80"', 'fallback = "10.0.0.100:80"',
     ["fallback 10.0.0.100:80", "VIP's own address"]),
    ('health = { type = "dicom"', 'fallback = "10.0.0.100:8080"\n'
     'health = { type = "dicom"', ["vip 'pacs-dicom'",
                                   "fallback 10.0.0.100:8080",
                                   "VIP's own address"]),
    ('address = "192.168.50.11"', 'address = "127.0.0.1"',
     ["real 127.0.0.1:4242", "loopback", "L7"]),
    ('address = "10.0.0.100"\nport = 80', 'address = "169.254.0.100"\n'
     "port = 80", ["vip address 169.254.0.100", "link-local"]),
    ('address = "10.0.0.11"', 'address = "240.0.0.11"',
     ["real address 240.0.0.11", "reserved"]),
    ('iface = "eth0"', 'iface = "eth0"\ninside_iface = "eth0"',
     ["engine.inside_iface = 'eth0'", "the same as engine.iface"]),
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
    metrics = "127.0.0.1:10104"
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
        "127.0.0.1:10104", "standby")


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
    # standby with L7 VIPs is a role like any (their addresses follow it)
    assert cfg.with_flags(role="standby").role == "standby"


# --- edge cases found by review (issue 15) -----------------------------------

UNNAMED = textwrap.dedent("""
    [[vip]]
    address = "10.0.0.100"
    port = 80
    real = [{ address = "10.0.0.11" }]

    [[vip]]
    address = "10.0.0.100"
    port = 443
    real = [{ address = "10.0.0.11" }]
    """)


def test_vips_without_a_name_are_not_a_name_used_twice():
    a, b = config.parse(UNNAMED).services
    assert (a.name, b.name, b.label) == (None, None, "10.0.0.100:443/tcp")
    named = UNNAMED.replace("port = 443", 'port = 443\nname = "tls"')
    assert [s.name for s in config.parse(named).services] == [None, "tls"]


def test_a_file_that_is_not_utf8_is_an_error_naming_file_and_place(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[[vip]]\nname = "r\xe9seau"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        config.load(str(path))
    assert str(exc.value) == (f"config {path}: not UTF-8 at line 2, column "
                              "10 (byte 0xe9); TOML is UTF-8")


@pytest.mark.parametrize("name", [
    "pacs\nweb", "\x1b[31mred\x1b[0m", "", "-web", "pacs.web", "pacs web",
    "x" * 65, "web/1", "r\xe9seau", "a:b",
])
def test_names_outside_the_sane_set_are_refused_saying_which(name):
    text = GOOD.replace('name = "pacs-web"', f"name = {json_str(name)}")
    with pytest.raises(ConfigError) as exc:
        config.parse(text)
    msg = str(exc.value)
    assert msg == (f"vip[0].name = {name!r}: expected 1 to 64 letters, "
                   "digits, '-' or '_', starting with a letter or digit")
    assert "\n" not in msg and "\x1b" not in msg      # escaped: repr
    with pytest.raises(ConfigError, match="expected 1 to 64 letters"):
        Service(Vip.parse("10.0.0.100:80/tcp"), name=name)


@pytest.mark.parametrize("name", ["web", "PACS_dicom-2", "7", "x" * 64])
def test_sane_names_pass(name):
    text = GOOD.replace('name = "pacs-web"', f'name = "{name}"')
    assert config.parse(text).services[0].name == name


def json_str(text):
    import json
    return json.dumps(text)         # a TOML basic string, escapes and all


def test_l7_reals_may_be_on_this_host_but_not_the_vip_itself():
    l7 = textwrap.dedent("""
        [[vip]]
        address = "10.0.0.100"
        port = 443
        mode = "l7"
        real = [{ address = "127.0.0.1", port = 8443 },
                { address = "10.0.0.100", port = 8080 }]
        """)
    reals = config.parse(l7).services[0].reals
    assert [r.key for r in reals] == ["127.0.0.1:8443", "10.0.0.100:8080"]
    with pytest.raises(ConfigError, match="real 10.0.0.100:443: the VIP "
                       "itself"):
        config.parse(l7.replace("port = 8080", "port = 443"))
