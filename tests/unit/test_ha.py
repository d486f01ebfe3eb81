"""High availability, the pure parts: the role in the config file, the
control command's validation, the keepalived.conf text, how ctl prints the
role, the one-arm-ha lab plan.  No root, no network."""

import json
import subprocess
import textwrap

import pytest
from click.testing import CliRunner

from pyfwd.control import config
from pyfwd.control import ctl
from pyfwd.control import ha
from pyfwd.lab import topology as lab
from pyfwd.cli.main import cli
from pyfwd.control.protocol import COMMANDS, BadRequest, parse_request
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


def test_standby_with_l7_vips_is_taken():
    """L7 VIP addresses follow the role (control.l7.sync): a standby node
    with L7 VIPs is no longer refused."""
    text = DR.format(role='role = "standby"') + L7
    assert config.parse(text).role == "standby"
    assert config.parse(DR.format(role="") + L7).role == "active"


def test_the_command_line_role_replaces_the_files_before_the_l7_check(
        tmp_path):
    text = DR.format(role='role = "standby"') + L7
    assert config.parse(text, role="active").role == "active"
    assert config.parse(DR.format(role="") + L7, role="standby").role == \
        "standby"
    path = tmp_path / "pyfwd.toml"
    path.write_text(text)
    assert config.load(path, role="active").role == "active"
    assert config.parse(DR.format(role=""), role="standby").role == \
        "standby"
    with pytest.raises(ConfigError, match="expected \"active\" or"):
        config.parse(DR.format(role=""), role="master")


def test_start_takes_one_role(tmp_path):
    """--role, or --standby (its alias); both, disagreeing, refused
    before anything starts (no root needed to get there)."""
    r = CliRunner().invoke(cli, ["start", "--iface", "eth0", "--vip",
                                 "10.0.0.100:80/tcp", "--real", "10.0.0.11",
                                 "--standby", "--role", "active"])
    assert r.exit_code == 2 and "--standby and --role active" in r.output
    r = CliRunner().invoke(cli, ["start", "--role", "master"])
    assert r.exit_code == 2 and "'master' is not one of" in r.output
    # A file saying standby with L7 VIPs passes its check with --role
    # active: what stops start then is the missing interface (on purpose:
    # nothing may start here), not the role.
    path = tmp_path / "pyfwd.toml"
    path.write_text(DR.format(role='role = "standby"').replace(
        'iface = "eth0"', "") + L7)
    r = CliRunner().invoke(cli, ["start", "--config", str(path), "--role",
                                 "active"])
    assert r.exit_code == 2 and "no --iface given" in r.output, r.output
    r = CliRunner().invoke(cli, ["start", "--config", str(path)])
    assert r.exit_code == 2 and "no --iface given" in r.output, r.output


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
    ctl = "/usr/local/bin/pyfwd ctl -s /run/pyfwd/pyfwd.sock"
    for line in ("script_user root", "enable_script_security",
                 "vrrp_instance pyfwd {", "state BACKUP", "interface eth0",
                 "virtual_router_id 51", "priority 150", "advert_int 1",
                 f'notify_master "{ctl} ha active"',
                 f'notify_backup "{ctl} ha standby"',
                 f'notify_fault "{ctl} ha standby"',
                 f'notify_stop "{ctl} ha standby"'):
        assert f"\n    {line}\n" in text or f"\n{line}\n" in text, line
    assert text.count("{") == text.count("}")
    assert "unicast_peer" not in text and "version" not in text
    assert "nopreempt" not in text


def test_keepalived_conf_tracks_the_engine():
    """A vrrp_script checks the engine and renews its lease every second
    (ha-renew); the instance tracks it with no weight, so a dead engine
    means FAULT."""
    text = ha.keepalived_conf(SPEC)
    script = text[text.index("vrrp_script chk_pyfwd {"):]
    script = script[:script.index("}") + 1]
    assert script.splitlines() == [
        "vrrp_script chk_pyfwd {",
        '    script "/usr/local/bin/pyfwd ctl -s /run/pyfwd/pyfwd.sock '
        'ha-renew"',
        "    interval 1", "    timeout 2", "    fall 2", "    rise 1",
        "    init_fail", "}"]
    instance = text[text.index("vrrp_instance pyfwd {"):]
    assert "    track_script {\n        chk_pyfwd\n    }\n" in instance
    assert "weight" not in text
    assert text.index("vrrp_script") < text.index("vrrp_instance")


def test_keepalived_conf_options():
    import dataclasses
    text = ha.keepalived_conf(dataclasses.replace(
        SPEC, peers=("10.0.0.3",), advert_int=2, instance="pacs_1",
        script_security=False, nopreempt=True))
    assert "unicast_peer {\n        10.0.0.3\n    }" in text
    assert "\n    advert_int 2\n" in text and "version" not in text
    assert "vrrp_instance pacs_1 {" in text
    assert "vrrp_script chk_pacs_1 {" in text and \
        "track_script {\n        chk_pacs_1\n" in text
    assert "\n    nopreempt\n" in text and "state BACKUP" in text
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
    ({"advert_int": 0}, ["advert_int 0", "whole seconds, 1 to 255"]),
    ({"advert_int": 0.5}, ["advert_int 0.5", "whole seconds", "VRRPv2"]),
    ({"advert_int": 1.0}, ["advert_int 1.0", "whole seconds"]),
    ({"advert_int": 256}, ["advert_int 256"]),
    ({"advert_int": True}, ["advert_int True"]),
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


@pytest.mark.parametrize("change", [
    {}, {"peers": ("10.0.0.3",)}, {"advert_int": 2},
    {"advert_int": 2, "nopreempt": True, "peers": ("10.0.0.3",)},
], ids=["default", "peer", "advert-int-2", "all"])
def test_keepalived_accepts_the_conf(tmp_path, change):
    """keepalived's own check (`keepalived -t`; CI installs keepalived):
    it says nothing but its warning that there is no VIP (on purpose),
    which makes 2.2.7 exit 5 (a config test with warnings; 0 is clean, 4
    fatal, 6 a script security error).  Anything else it could say
    ("Unknown keyword", "Disabling track script ... insecure", "... at
    least one is required") fails.  The program is this venv's pyfwd, so
    script security checks a real path."""
    import dataclasses
    import os
    import sys
    exe = "/usr/sbin/keepalived"
    if not os.path.exists(exe):
        pytest.fail("keepalived is not installed (tools/run installs it)")
    program = os.path.join(os.path.dirname(sys.executable), "pyfwd")
    assert os.path.exists(program), program
    spec = dataclasses.replace(SPEC, pyfwd=program, **change)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(ha.keepalived_conf(spec))
    r = subprocess.run([exe, "-t", "-f", str(conf)], capture_output=True,
                       text=True, timeout=30)
    said = [line for line in (r.stdout + r.stderr).splitlines()
            if line.strip()]
    assert r.returncode in (0, 5), (r.returncode, said)
    assert all(line.endswith("No VIP specified; at least one is sensible")
               for line in said), said
    assert not any("required" in line for line in said), said


def test_cli_advert_int_takes_whole_seconds():
    base = ["ha", "keepalived-conf", "--iface", "eth0", "--priority",
            "100", "--pyfwd", "/x/pyfwd"]
    for good, line in (("2", "advert_int 2"), ("3.0", "advert_int 3"),
                       ("255", "advert_int 255")):
        r = CliRunner().invoke(cli, base + ["--advert-int", good])
        assert r.exit_code == 0 and f"\n    {line}\n" in r.output, r.output
    for bad in ("0.5", "0", "256", "1.5", "x"):
        r = CliRunner().invoke(cli, base + ["--advert-int", bad])
        assert r.exit_code == 2, (bad, r.output)
        assert "expected whole seconds, 1 to 255" in r.output, r.output
    r = CliRunner().invoke(cli, base + ["--nopreempt"])
    assert r.exit_code == 0 and "\n    nopreempt\n" in r.output


def test_cli_warns_when_others_could_replace_the_program(tmp_path):
    """The program keepalived runs as root, or its #! interpreter, in a
    directory others can write: a warning on stderr, the conf still
    printed."""
    import os
    from click.testing import CliRunner as Runner
    from pyfwd.cli import ha as climod
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    program = shared / "pyfwd"
    program.write_text("#!/usr/bin/python3\n")
    base = ["ha", "keepalived-conf", "--iface", "eth0", "--priority",
            "100"]
    try:
        runner = Runner(mix_stderr=False)
    except TypeError:                   # click 8.2: stderr apart already
        runner = Runner()
    r = runner.invoke(cli, base + ["--pyfwd", str(program)])
    assert r.exit_code == 0 and "vrrp_instance" in r.stdout
    assert "warning:" not in r.stdout
    assert f"{shared} is writable by others" in r.stderr, r.stderr
    assert "enable_script_security" in r.stderr and "/opt/pyfwd" in \
        r.stderr
    # root-owned all the way (the program and /usr/bin): nothing to say
    r = runner.invoke(cli, base + ["--pyfwd", "/usr/bin/env"])
    assert r.exit_code == 0 and r.stderr == "", r.stderr
    # a safe program whose interpreter others could replace
    if os.geteuid() == 0:
        safe = tmp_path / "safe"
        safe.mkdir()
        os.chmod(safe, 0o755)
        script = safe / "pyfwd"
        script.write_text(f"#!{shared}/python3 -E\n")
        (shared / "python3").write_text("")
        assert climod._replaceable(str(script)) == [
            f"{shared} is writable by others"]
        assert climod._replaceable("/usr/bin/env") == []


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


# -- HaState: the role, its counters and the announcement schedule ----------

class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def test_ha_state_schedules_the_announcements_after_start():
    clock = Clock()
    state = ha.HaState("active", clock=clock)
    assert state.pending == ()
    state.start()
    assert state.pending == tuple(100.0 + d for d in ha.GARP_REPEAT)
    due = []
    for t in (100.0, 100.5, 101.0, 102.0, 103.0, 110.0):
        clock.t = t
        due.append(state.announcement_due())
    assert due == [True, False, True, False, True, False]
    standby = ha.HaState("standby", clock=clock)
    standby.start()
    assert standby.pending == () and not standby.announcement_due()


def test_ha_state_set_role_counts_transitions_not_repeats():
    clock, wall = Clock(50.0), Clock(1000.0)
    state = ha.HaState("standby", clock=clock, wall=wall)
    calls = []

    def announce():
        calls.append(clock.t)
        return ["10.0.0.100"]
    wall.t = 1010.0
    out = state.set_role("active", [], announce)
    assert out == {"role": "active", "previous": "standby", "changed": True,
                   "announce": ["10.0.0.100"]}
    assert calls == [50.0]                      # at once
    assert state.pending == tuple(50.0 + d for d in ha.GARP_REPEAT if d > 0)
    again = state.set_role("active", [], announce)
    assert not again["changed"] and len(calls) == 2
    assert state.counters["transitions"] == 1
    down = state.set_role("standby", [], announce)
    assert down["announce"] == [] and len(calls) == 2
    assert state.pending == () and state.counters["transitions"] == 2
    wall.t = 1012.5
    st = state.status()
    assert (st["role"], st["since"], st["for"]) == ("standby", 1010.0, 2.5)
    with pytest.raises(ConfigError, match="ha: role = 'master'"):
        state.set_role("master", [], announce)


def test_ha_state_peers_and_split_brain():
    state = ha.HaState("standby")
    state.peer_claims("02:00:00:00:01:03", "10.0.0.100")
    assert state.peers == {"02:00:00:00:01:03": "10.0.0.100"}
    state.set_role("active", [], lambda: [])
    assert not state.split_brain("02:00:00:00:01:99", "10.0.0.100")
    assert state.split_brain("02:00:00:00:01:03", "10.0.0.100")
    state.withheld(arp=2, ndp=1)
    state.announced()
    assert {k: state.counters[k] for k in ("split_brain", "arp_withheld",
                                           "ndp_withheld", "garp_bursts")} \
        == {"split_brain": 1, "arp_withheld": 2, "ndp_withheld": 1,
            "garp_bursts": 1}
