"""--json on every command that prints: under it, an error (usage, bad
input, no engine) is a JSON object {"ok": false, "error"} on stdout, with
the exit status the error has without --json.  Every command of the tree
has --json or a line in EXEMPT saying why not.  And `ctl add-vip`'s
ipvsadm-like form."""

import json

import click
import pytest
from click.testing import CliRunner

from pyfwd.cli.addvip import vip_table
from pyfwd.cli.main import cli
from pyfwd.control.config import parse_vip
from pyfwd.errors import ConfigError
from pyfwd.ops import realserver_changes as change

NO_SOCKET = "/nonexistent/pyfwd-test.sock"


def json_commands(group=cli, path=()):
    """The command paths (("ctl", "show"), ...) that have --json."""
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from json_commands(cmd, path + (name,))
        elif any("--json" in p.opts for p in cmd.params
                 if isinstance(p, click.Option)):
            yield path + (name,)


COMMANDS = list(json_commands())

# The commands without --json, and why JSON makes no sense for them.  (A
# group is no command: alone it prints its help; ctl's takes --json for
# its commands.)
EXEMPT = {
    ("start",): "a foreground daemon: what it prints is its log; `pyfwd "
                "ctl show|status --json` asks the running engine",
    ("bench",): "writes its results as DIR/results.json (--out); stdout "
                "is the table for reading",
    ("ha", "keepalived-conf"): "prints a file for keepalived "
                               "(keepalived.conf), not a result",
    ("lab", "demo"): "a lesson: a narrative of each mode, measured for "
                     "reading (it writes no results; `pyfwd bench` does)",
    ("lab", "trace"): "a lesson: a narrative and a diagram; its results "
                      "are the files it writes to --out (pcaps, trace.svg)",
    ("lab", "arp-problem"): "a lesson: a narrative, shown, found, fixed",
    ("lab", "exec"): "runs the user's command: the output and the exit "
                     "status are that command's",
}


def leaves(group=cli, path=()):
    """Every command path of the tree (groups walked, not listed)."""
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from leaves(cmd, path + (name,))
        else:
            yield path + (name,)


def filled(path):
    """The command's required arguments, filled with well-formed values."""
    cmd = cli
    for name in path:
        cmd = cmd.commands[name]
    out = []
    for p in cmd.params:
        if isinstance(p, click.Argument) and p.required:
            out.append('{"address": "10.0.0.100"}' if path == ("ctl",
                                                              "add-vip")
                       else "10.0.0.100:80/tcp" if p.name == "vip" else
                       "1" if p.type is click.INT else
                       p.type.choices[0] if isinstance(p.type, click.Choice)
                       else "x")
    return out


# Bad input per command (beside an unknown option, which every one has).
BAD = {("check-config",): ["/nonexistent/pyfwd.toml"],
       ("doctor",): ["--vip", "10.0.0.1"],              # --vip needs --iface
       ("realserver", "status"): ["--vip", "not-an-address"],
       ("lab", "show"): ["-n", "no/such lab"],
       ("ctl", "add-vip"): ["[1, 2]", "--mode", "dr"],
       # refused before anything is touched (and without root: need_root)
       ("realserver", "setup"): ["--vip", "10.0.0.1", "--decap", "xdp"],
       ("realserver", "teardown"): ["--vip", "10.0.0.1", "--iface", "x"],
       ("cleanup",): ["--iface", "no/such/if"],
       ("lab", "up"): ["--reals", "many"],
       ("lab", "down"): ["-n", "no/such lab"],
       ("ctl", "flows"): ["--limit", "many"]}


def run(args):
    return CliRunner().invoke(cli, args)


def test_the_commands_that_print_have_json():
    for must in [("check-config",), ("doctor",), ("realserver", "status"),
                 ("arp-check",), ("lab", "list"), ("ctl", "show"),
                 ("ctl", "flows"), ("ctl", "rate"), ("ctl", "zero"),
                 ("realserver", "setup"), ("realserver", "teardown"),
                 ("cleanup",), ("lab", "up"), ("lab", "down")]:
        assert must in COMMANDS


@pytest.mark.parametrize("path", list(leaves()), ids=" ".join)
def test_every_command_has_json_or_an_exemption(path):
    """A new command needs --json or a line in EXEMPT saying why not;
    an exempt command that gains --json leaves EXEMPT."""
    assert (path in COMMANDS) != (path in EXEMPT), (
        f"pyfwd {' '.join(path)}: " + ("has --json and an exemption"
                                       if path in COMMANDS else
                                       "no --json and no exemption"))


def test_the_exemptions_are_commands():
    assert set(EXEMPT) <= set(leaves())
    assert all(why for why in EXEMPT.values())
    assert ("realserver", "status") in set(leaves())       # the walk works


def check_json_error(args):
    plain = run(args)
    as_json = run(args + ["--json"])
    assert plain.exit_code not in (0, None), plain.output
    assert as_json.exit_code == plain.exit_code, as_json.output
    reply = json.loads(as_json.stdout)
    assert reply["ok"] is False and reply["error"], reply
    return reply


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_unknown_option_is_a_json_error(path):
    reply = check_json_error(list(path) + filled(path) + ["--no-such-opt"])
    assert "--no-such-opt" in reply["error"]


@pytest.mark.parametrize("path", [p for p in COMMANDS if p[0] == "ctl"],
                         ids=" ".join)
def test_no_engine_is_a_json_error(path):
    reply = check_json_error(list(path) + filled(path)
                             + ["--socket", NO_SOCKET])
    assert "no pyfwd engine" in reply["error"]


@pytest.mark.parametrize("path", sorted(BAD), ids=" ".join)
def test_bad_input_is_a_json_error(path):
    check_json_error(list(path) + BAD[path] + ["--socket", NO_SOCKET]
                     if path[0] == "ctl" else list(path) + BAD[path])


def test_json_before_the_command_counts_too():
    result = run(["ctl", "--json", "--socket", NO_SOCKET, "rate"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["ok"] is False
    result = run(["ctl", "--json", "no-such-command"])
    assert result.exit_code == 2
    assert "no-such-command" in json.loads(result.stdout)["error"]


def test_without_json_errors_stay_text():
    result = run(["ctl", "rate", "--socket", NO_SOCKET])
    assert result.exit_code == 1
    assert result.stdout == "" and "no pyfwd engine" in result.stderr


# --- what realserver setup|teardown and cleanup print under --json ---------

def test_changes_are_the_lines_they_were_with_fields():
    """A Change prints as the line before --json did; its fields say the
    same as an object."""
    lines = {
        change.sysctl("net.ipv4.conf.all.arp_ignore", 0, 1):
            "net.ipv4.conf.all.arp_ignore: 0 -> 1",
        change.address("added", "10.0.0.100/32", "lo"):
            "added 10.0.0.100/32 to lo",
        change.address("removed", "10.0.0.100/32", "lo"):
            "removed 10.0.0.100/32 from lo",
        change.address("added", "fd00::100/128", "lo", nodad=True):
            "added fd00::100/128 to lo (nodad)",
        change.address("added", "fd00::100/128", "ip6tnl0", nodad=True,
                       say_nodad=False): "added fd00::100/128 to ip6tnl0",
        change.link("tunl0", "down"): "set tunl0 down",
        change.file("wrote", "/etc/x.conf"): "wrote /etc/x.conf",
        change.unit_enabled("u.service", "/w/u.service", "/l/u.service"):
            "enabled u.service: /w/u.service -> /l/u.service",
        change.xdp("attached", "decap", "eth0", 7):
            "attached XDP decap (id 7) to eth0",
        change.xdp("detached", "decap", "eth0"): "detached XDP decap from eth0",
    }
    for made, line in lines.items():
        assert made == line and str(made) == line
    sysctl, = [c for c in lines if c.fields["what"] == "sysctl"]
    assert json.loads(json.dumps(change.to_json([sysctl]))) == [{
        "what": "sysctl", "key": "net.ipv4.conf.all.arp_ignore", "from": 0,
        "to": 1, "text": "net.ipv4.conf.all.arp_ignore: 0 -> 1"}]
    v6 = change.address("added", "fd00::100/128", "ip6tnl0", nodad=True,
                        say_nodad=False)
    assert v6.to_dict() == {"what": "address", "action": "added",
                            "address": "fd00::100/128", "dev": "ip6tnl0",
                            "nodad": True, "text": str(v6)}


@pytest.fixture
def as_root(monkeypatch):
    for module in ("ops", "balancer", "lab"):
        monkeypatch.setattr(f"pyfwd.cli.{module}.need_root", lambda what: None)


SETUP = [change.sysctl("net.ipv4.conf.all.arp_ignore", 0, 1),
         change.address("added", "10.0.0.100/32", "lo")]


@pytest.mark.parametrize("command", ["setup", "teardown"])
def test_realserver_json_lists_the_changes(as_root, monkeypatch, command):
    calls = []

    def setup(vip, undo=False, dev="lo"):
        calls.append((vip, undo, dev))
        return list(SETUP)

    monkeypatch.setattr("pyfwd.ops.realserver.setup", setup)
    monkeypatch.setattr("pyfwd.ops.realserver.unpersist",
                        lambda vip, root: [change.file("removed", "/x")])
    args = ["realserver", command, "--vip", "10.0.0.100", "--persist",
            "--root", "/nonexistent"]
    if command == "setup":
        args.append("--undo")
    result = run(args + ["--json"])
    assert result.exit_code == 0, result.output
    assert calls == [("10.0.0.100", True, "lo")]
    reply = json.loads(result.stdout)
    assert reply["ok"] is True and reply["vip"] == "10.0.0.100"
    assert (reply["mode"], reply["undo"]) == ("dr", True)
    assert [c["what"] for c in reply["changes"]] == ["sysctl", "address",
                                                     "file"]
    assert reply["changes"][0]["from"] == 0 and reply["changes"][0]["to"] == 1
    assert reply["changes"][1]["address"] == "10.0.0.100/32"
    assert reply["changes"][2]["path"] == "/x"
    plain = run(args)                       # without --json: the lines
    assert plain.stdout.splitlines() == [*SETUP, "removed /x"]


def test_realserver_json_nothing_to_change(as_root, monkeypatch):
    monkeypatch.setattr("pyfwd.ops.realserver.setup", lambda *a, **k: [])
    result = run(["realserver", "setup", "--vip", "10.0.0.100", "--json"])
    assert json.loads(result.stdout)["changes"] == []
    assert run(["realserver", "setup", "--vip", "10.0.0.100"]
               ).stdout == "nothing to change\n"


@pytest.mark.parametrize("prog,removed", [(7, 7), (0, None)])
def test_cleanup_json(as_root, monkeypatch, prog, removed):
    monkeypatch.setattr("pyfwd.neighbours.kernel.interface",
                        lambda name: (3, "02:00:00:00:00:01"))
    monkeypatch.setattr("pyfwd.dataplane.io.xdp_cleanup",
                        lambda ifindex: prog)
    result = run(["cleanup", "--iface", "eth9", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"ok": True, "iface": "eth9",
                                         "removed": removed}


# --- ctl add-vip ADDR:PORT/PROTO [--scheduler S] [--mode M] ------------------

def test_add_vip_address_form_builds_the_vip_table():
    table = vip_table("[fd00::10]:104/tcp", {
        "scheduler": "wlc", "mode": "dr", "name": "dicom",
        "real": ("[fd00::11]", "[fd00::12]:11112@3"), "persistence": "300"})
    assert table == {"address": "fd00::10", "port": 104, "protocol": "tcp",
                     "scheduler": "wlc", "mode": "dr", "name": "dicom",
                     "persistence": 300,
                     "real": [{"address": "fd00::11", "weight": 1},
                              {"address": "fd00::12", "port": 11112,
                               "weight": 3}]}
    assert vip_table("10.0.0.10:80/tcp", {"scheduler": "rr", "mode": "l7",
                                          "persistence": "source"}
                     )["persistence"] == "source"


def test_add_vip_json_form_keeps_working(tmp_path):
    spec = {"address": "10.0.0.10", "port": 80, "mode": "nat"}
    assert vip_table(json.dumps(spec), {}) == spec
    path = tmp_path / "vip.json"
    path.write_text(json.dumps(spec))
    assert vip_table(f"@{path}", {"real": ()}) == spec


def test_add_vip_address_form_defaults_as_the_config_file():
    """--scheduler and --mode left out: what a [[vip]] table without them
    gets (config.parse_vip), as the JSON form and pyfwd start."""
    table = vip_table("10.0.0.10:104/tcp", {"real": ("10.0.0.11",)})
    bare = parse_vip({"address": "10.0.0.10", "port": 104}, "vip")
    assert (table["scheduler"], table["mode"]) == (bare.scheduler,
                                                   bare.mode)
    assert vip_table("10.0.0.10:104/tcp", {"mode": "nat"})["scheduler"] \
        == bare.scheduler
    assert vip_table("10.0.0.10:104/tcp", {"scheduler": "rr"})["mode"] \
        == bare.mode
    add_vip = run(["ctl", "add-vip", "--help"]).stdout
    assert f"[default: {bare.scheduler}," in add_vip
    assert f"[default: {bare.mode}," in add_vip


def test_add_vip_persistence_takes_only_decimal_digits():
    """'²' is a digit to str.isdigit() but no number to int(): it goes on
    as text, which the engine refuses as a [[vip]] table's (a
    ConfigError, not a traceback)."""
    assert vip_table("10.0.0.10:80/tcp", {"persistence": "²"}
                     )["persistence"] == "²"
    with pytest.raises(ConfigError, match="persistence = '²'"):
        parse_vip(vip_table("10.0.0.10:80/tcp", {"persistence": "²"}),
                  "add-vip")
    assert vip_table("10.0.0.10:80/tcp", {"persistence": "300"}
                     )["persistence"] == 300


def test_add_vip_file_not_utf8_is_named(tmp_path):
    path = tmp_path / "vip.json"
    path.write_bytes(b'{"address": "10.0.0.\xff"}')
    with pytest.raises(click.ClickException, match="not UTF-8") as err:
        vip_table(f"@{path}", {})
    assert str(path) in err.value.message
    result = run(["ctl", "add-vip", f"@{path}", "--socket", NO_SOCKET])
    assert result.exit_code == 1
    assert "not UTF-8" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("text,options,says", [
    ("[1, 2]", {}, "neither a JSON object nor ADDR:PORT/PROTO"),
    ("7", {"mode": "dr"}, "neither a JSON object nor ADDR:PORT/PROTO"),
    ("10.0.0.10:104", {"scheduler": "rr", "mode": "dr"}, "expected ADDR:"),
    ("10.0.0.10:104/tcp", {"scheduler": "rr", "mode": "dr",
                           "real": ("10.0.0.11@x",)}, "real '10.0.0.11@x'"),
    ('{"address": "10.0.0.10"}', {"mode": "dr"}, "--mode: only with"),
])
def test_add_vip_bad_input_is_a_usage_error(text, options, says):
    with pytest.raises(click.UsageError, match=says):
        vip_table(text, options)


def test_add_vip_cli_sends_the_table(monkeypatch):
    sent = {}

    def request(path, cmd, **args):
        sent.update(cmd=cmd, **args)
        return "dicom"

    monkeypatch.setattr("pyfwd.control.server.request", request)
    result = run(["ctl", "add-vip", "10.0.0.10:104/tcp", "--scheduler",
                  "wlc", "--mode", "dr", "--real", "10.0.0.11", "--name",
                  "dicom"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "dicom"
    assert sent == {"cmd": "add-vip", "vip": {
        "address": "10.0.0.10", "port": 104, "protocol": "tcp",
        "scheduler": "wlc", "mode": "dr", "name": "dicom",
        "real": [{"address": "10.0.0.11", "weight": 1}]}}
