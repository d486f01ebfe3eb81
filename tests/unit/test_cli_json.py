"""--json on every command that prints: under it, an error (usage, bad
input, no engine) is a JSON object {"ok": false, "error"} on stdout, with
the exit status the error has without --json.  And `ctl add-vip`'s
ipvsadm-like form."""

import json

import click
import pytest
from click.testing import CliRunner

from pyfwd.cli.addvip import vip_table
from pyfwd.cli.main import cli
from pyfwd.control.config import parse_vip
from pyfwd.errors import ConfigError

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
       ("ctl", "flows"): ["--limit", "many"]}


def run(args):
    return CliRunner().invoke(cli, args)


def test_the_commands_that_print_have_json():
    for must in [("check-config",), ("doctor",), ("realserver", "status"),
                 ("arp-check",), ("lab", "list"), ("ctl", "show"),
                 ("ctl", "flows"), ("ctl", "rate"), ("ctl", "zero")]:
        assert must in COMMANDS


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
