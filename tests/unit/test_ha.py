"""High availability, the pure parts: the role in the config file, the
control command's validation, the keepalived.conf text, how ctl prints the
role, the one-arm-ha lab plan.  No root, no network."""

import json
import subprocess
import textwrap

import pytest
from click.testing import CliRunner

from pyfwd import config, ctl, ha, lab
from pyfwd.cli import cli
from pyfwd.control import COMMANDS, BadRequest, parse_request
from pyfwd.errors import ConfigError

DR = textwrap.dedent("""
    [engine]
    iface = "eth0"
    {role}

    [[vip]]
    name = "web"
    address = "10.0.0.100"
    port = 80

    [[vip.real]]
    address = "10.0.0.11"
    """)

L7 = textwrap.dedent("""
    [[vip]]
    name = "viewer"
    address = "10.0.0.101"
    port = 443
    mode = "l7"

    [[vip.real]]
    address = "10.0.0.11"
    port = 8080
    """)


# --- the role --------------------------------------------------------------

def test_role_defaults_to_active_and_reads_standby():
    assert config.parse(DR.format(role="")).role == "active"
    assert config.parse(DR.format(role='role = "standby"')).role == "standby"
    assert config.parse(DR.format(role='role = "active"')).role == "active"


@pytest.mark.parametrize("line,words", [
    ('role = "master"', ["engine.role", "'master'", "active", "standby"]),
    ('role = "Standby"', ["engine.role", "'Standby'"]),
    ("role = 1", ["engine.role", "expected a string"]),
])
def test_bad_roles_are_named(line, words):
    with pytest.raises(ConfigError) as info:
        config.parse(DR.format(role=line))
    for w in words:
        assert w in str(info.value)


def test_standby_with_l7_vips_is_refused_with_the_reason():
    text = DR.format(role='role = "standby"') + L7
    with pytest.raises(ConfigError) as info:
        config.parse(text)
    msg = str(info.value)
    assert "engine.role" in msg and "viewer" in msg and "kernel answers ARP" \
        in msg
    assert config.parse(DR.format(role="") + L7).role == "active"


def test_parse_role():
    assert ha.parse_role("active") == "active"
    for bad in ("", "ACTIVE", None, 1, "backup"):
        with pytest.raises(ConfigError, match="expected \"active\" or"):
            ha.parse_role(bad)


# --- the control command ---------------------------------------------------

def req(obj):
    return parse_request(json.dumps(obj).encode())


def test_ha_command_parses_and_names_the_method():
    assert COMMANDS["ha"].method == "set_role"
    assert req({"cmd": "ha", "role": "standby"}) == ("ha", ["standby"])
    assert req({"cmd": "ha", "role": "active"}) == ("ha", ["active"])


@pytest.mark.parametrize("obj,words", [
    ({"cmd": "ha"}, ["ha: missing field 'role'", "expects: role"]),
    ({"cmd": "ha", "role": "master"},
     ["ha: field 'role' must be 'active' or 'standby'", "'master'"]),
    ({"cmd": "ha", "role": 1}, ["field 'role' must be a string", "number"]),
    ({"cmd": "ha", "role": "active", "vip": "x"}, ["unknown field 'vip'"]),
])
def test_ha_command_refuses_bad_input_clearly(obj, words):
    with pytest.raises(BadRequest) as info:
        req(obj)
    for w in words:
        assert w in str(info.value)


def test_ctl_ha_refuses_a_bad_role_before_connecting():
    r = CliRunner().invoke(cli, ["ctl", "-s", "/nonexistent/sock", "ha",
                                 "master"])
    assert r.exit_code == 2 and "'master' is not one of" in r.output


# --- keepalived.conf -------------------------------------------------------

SPEC = ha.KeepalivedSpec("eth0", 51, 150, "/run/pyfwd/pyfwd.sock",
                         "/usr/local/bin/pyfwd")


def test_keepalived_conf_elects_and_calls_ctl_ha():
    text = ha.keepalived_conf(SPEC)
    assert "virtual_ipaddress" not in text.replace(
        "No virtual_ipaddress", "")
    ctl_ha = "/usr/local/bin/pyfwd ctl -s /run/pyfwd/pyfwd.sock ha"
    for line in ("script_user root", "enable_script_security",
                 "vrrp_instance pyfwd {", "state BACKUP", "interface eth0",
                 "virtual_router_id 51", "priority 150", "advert_int 1",
                 f'notify_master "{ctl_ha} active"',
                 f'notify_backup "{ctl_ha} standby"',
                 f'notify_fault "{ctl_ha} standby"',
                 f'notify_stop "{ctl_ha} standby"'):
        assert f"\n    {line}\n" in text or f"\n{line}\n" in text, line
    assert text.count("{") == text.count("}")
    assert "unicast_peer" not in text and "version 3" not in text


def test_keepalived_conf_options():
    import dataclasses
    text = ha.keepalived_conf(dataclasses.replace(
        SPEC, peers=("10.0.0.3",), advert_int=0.5, instance="pacs_1",
        script_security=False))
    assert "unicast_peer {\n        10.0.0.3\n    }" in text
    assert "advert_int 0.5" in text and "version 3" in text
    assert "vrrp_instance pacs_1 {" in text
    assert "enable_script_security" not in text and "script_user root" \
        in text


@pytest.mark.parametrize("change,words", [
    ({"vrid": 0}, ["vrid 0", "1 to 255"]),
    ({"vrid": 256}, ["vrid 256"]),
    ({"priority": 255}, ["priority 255", "1 to 254"]),
    ({"priority": True}, ["priority True"]),
    ({"iface": "eth 0"}, ["iface 'eth 0'"]),
    ({"socket": "run/pyfwd.sock"}, ["socket 'run/pyfwd.sock'", "absolute"]),
    ({"socket": "/run/my sock"}, ["socket '/run/my sock'", "spaces"]),
    ({"pyfwd": '/bin/py"fwd'}, ["pyfwd '/bin/py\"fwd'"]),
    ({"peers": ("10.0.0.300",)}, ["peer '10.0.0.300'", "IPv4"]),
    ({"advert_int": 0}, ["advert_int 0"]),
    ({"instance": "a b"}, ["instance 'a b'"]),
])
def test_keepalived_conf_refuses_bad_values(change, words):
    import dataclasses
    with pytest.raises(ConfigError) as info:
        ha.keepalived_conf(dataclasses.replace(SPEC, **change))
    for w in words:
        assert w in str(info.value)


def test_cli_prints_the_conf():
    r = CliRunner().invoke(cli, [
        "ha", "keepalived-conf", "--iface", "eth1", "--priority", "100",
        "--vrid", "7", "--socket", "/run/pyfwd/b.sock", "--pyfwd",
        "/opt/pyfwd/bin/pyfwd", "--peer", "10.0.0.2"])
    assert r.exit_code == 0, r.output
    assert "interface eth1" in r.output and "virtual_router_id 7" in r.output
    assert '"/opt/pyfwd/bin/pyfwd ctl -s /run/pyfwd/b.sock ha active"' \
        in r.output
    r = CliRunner().invoke(cli, ["ha", "keepalived-conf", "--iface", "eth0",
                                 "--priority", "0", "--pyfwd", "/x/pyfwd"])
    assert r.exit_code == 1 and "priority 0: expected 1 to 254" in r.output


def test_keepalived_accepts_the_conf(tmp_path):
    """keepalived's own check, where it is installed: nothing but its
    warning that there is no VIP (on purpose)."""
    import shutil
    exe = shutil.which("keepalived") or "/usr/sbin/keepalived"
    if not shutil.os.path.exists(exe):
        pytest.skip("keepalived is not installed")
    conf = tmp_path / "keepalived.conf"
    conf.write_text(ha.keepalived_conf(SPEC))
    r = subprocess.run([exe, "-t", "-f", str(conf)], capture_output=True,
                       text=True, timeout=30)
    said = [line for line in (r.stdout + r.stderr).splitlines()
            if line.strip()]
    assert said and all("No VIP specified" in line for line in said), said


# --- what ctl prints ---------------------------------------------------------

def test_status_shows_the_role_and_when_it_changed():
    since = 1_700_000_000.0
    text = ctl.format_status({"pid": 1, "iface": "eth0", "ha": {
        "role": "standby", "since": since, "for": 187.0, "transitions": 2,
        "arp_withheld": 5, "garp_bursts": 3,
        "peers": {"02:00:00:00:01:02": "10.0.0.100"}}})
    line = next(x for x in text.splitlines() if x.startswith("role"))
    assert "standby since " in line and "(3m07s)" in line
    assert "2 transitions" in line and "5 ARP requests left" in line
    assert "02:00:00:00:01:02" in line


def test_ha_result_lines():
    assert ctl.format_result("ha", {
        "role": "active", "previous": "standby", "changed": True,
        "announce": ["10.0.0.100"]}) == \
        "active (was standby): gratuitous ARP for 10.0.0.100"
    assert ctl.format_result("ha", {
        "role": "standby", "previous": "standby", "changed": False,
        "announce": []}) == "standby (already): not answering ARP for the " \
        "VIPs"


# --- the lab ---------------------------------------------------------------

def test_one_arm_ha_plan_has_two_balancers_on_one_segment():
    plan = lab.make_plan("doc", "one-arm-ha", 2)
    assert [n.role for n in plan.hosts] == ["client", "lb", "lb2", "real1",
                                           "real2"]
    lb2 = plan.node("lb2").interface("eth0")
    assert (lb2.mac, lb2.ipv4, lb2.switch) == ("02:00:00:00:01:03",
                                               "10.0.0.3/24", "sw")
    assert plan.node("sw").ports == ("client", "lb", "lb2", "real1", "real2")
    assert lab.Marker.parse("pyfwd-lab:doc:lb2:one-arm-ha:2") == \
        lab.Marker("doc", "lb2", "one-arm-ha", 2)
    assert lab.Marker.parse("pyfwd-lab:doc:lb2:one-arm:2") is None
