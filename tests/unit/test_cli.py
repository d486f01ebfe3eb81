"""The CLI's promises that need no lab: help, and clean one-line errors."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

import pyfwd
from pyfwd.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_lists_the_commands():
    r = run("--help")
    assert r.exit_code == 0
    for word in ("lab", "doctor", "demo"):
        assert word in r.output
    r = run("lab", "--help")
    for word in ("up", "down", "show", "exec", "demo", "trace", "arp-problem",
                 "one-arm", "two-arm"):
        assert word in r.output
    r = run("lab", "demo", "--help")
    for word in ("--mode", "dr|nat|snat|tun|l7|all", "--pacs"):
        assert word in r.output
    r = run("lab", "trace", "--help")
    for word in ("--mode", "dr|nat|snat", "--out"):
        assert word in r.output


def test_lab_modes_refuse_bad_values():
    assert run("lab", "demo", "--mode", "ipvs").exit_code == 2
    assert run("lab", "trace", "--mode", "l7").exit_code == 2
    assert run("lab", "demo", "--reals", "0").exit_code == 2


def test_console_script_help():
    exe = [sys.executable, "-m", "pyfwd.cli", "--help"]
    r = subprocess.run(exe, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Usage: pyfwd" in r.stdout


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and r.output.startswith(
        f"pyfwd {pyfwd.__version__} from ")


@pytest.mark.root
@pytest.mark.parametrize("args,words", [
    (["lab", "up", "--reals", "0"], "0"),
    (["lab", "up", "--reals", "99"], "99"),
    (["lab", "up", "--name", "Bad_Name"], "Bad_Name"),
    (["lab", "show", "--name", "nosuchlab9"], "nosuchlab9"),
    (["lab", "down", "--name", "nosuchlab9"], "nosuchlab9"),
    (["lab", "exec", "--name", "nosuchlab9", "client", "--", "true"],
     "nosuchlab9"),
])
def test_errors_are_one_line_and_name_the_value(need_root, args, words):
    r = run(*args)
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: "), r.output
    assert words in r.output
    assert "Traceback" not in r.output


def test_bad_choice_is_a_usage_error():
    r = run("lab", "up", "--topology", "three-arm")
    assert r.exit_code == 2 and "three-arm" in r.output


def test_doctor_reports_each_check():
    r = run("doctor")
    for name in ("C extension", "XDP program", "AF_XDP sockets", "bpffs"):
        assert name in r.output


# --- start's flags under --config, and check-config (issue 15) --------------
# `start` is refused before it touches anything; should it not be (a
# regression, run as root), the interface does not exist: it stops there,
# never attached to the machine's own interfaces.
NO_IFACE = "pfnosuch0"
CONFIG = """
[engine]
iface = "NO_IFACE"

[[vip]]
address = "10.0.0.100"
port = 80
real = [{ address = "10.0.0.11" }]
""".replace("NO_IFACE", NO_IFACE)


@pytest.mark.parametrize("flags", [["--mode", "nat"], ["--mode", "dr"],
                                   ["--scheduler", "rr"],
                                   ["--mode", "snat", "--scheduler", "sh"]])
def test_start_refuses_vip_flags_under_config(tmp_path, flags):
    path = tmp_path / "pyfwd.toml"
    path.write_text(CONFIG)
    r = run("start", "--config", str(path), *flags)
    assert r.exit_code == 2, r.output           # a usage error, before root
    given = " and ".join(f for f in flags if f.startswith("--"))
    assert f"{given} with --config: each [[vip]] sets its own" in r.output
    assert "reload" in r.output and "Traceback" not in r.output


def test_check_config_refuses_what_start_would(tmp_path):
    path = tmp_path / "pyfwd.toml"
    path.write_text(CONFIG)
    r = run("check-config", str(path))
    assert r.exit_code == 0 and "ok: 1 VIP(s), 1 real server(s)" in r.output
    # the 17th Maglev VIP: its table does not fit the core's ring
    path.write_text(CONFIG + "".join(
        f'[[vip]]\nname = "v{i}"\naddress = "10.0.0.100"\nport = {1000 + i}'
        '\nreal = [{ address = "10.0.0.11" }]\n' for i in range(16)))
    r = run("check-config", str(path))
    assert r.exit_code == 1 and r.output.startswith("Error: vip v15: its "
                                                    "maglev table"), r.output
    assert "max_ring" in r.output and "Traceback" not in r.output
    # the interfaces [engine] names, which the engine would refuse
    path.write_text(CONFIG.replace("[[vip]]", f'inside_iface = "{NO_IFACE}"'
                                   "\n\n[[vip]]"))
    r = run("check-config", str(path))
    assert r.exit_code == 1, r.output
    assert f"engine.inside_iface = '{NO_IFACE}'" in r.output


def test_check_config_of_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "pyfwd.toml"
    path.write_bytes(CONFIG.encode() + b'# caf\xe9\n')
    r = run("check-config", str(path))
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output == (f"Error: config {path}: not UTF-8 at line 9, column "
                        "6 (byte 0xe9); TOML is UTF-8\n")


def test_start_refuses_a_dr_real_on_another_port_before_root():
    r = run("start", "--iface", NO_IFACE, "--vip", "10.0.0.100:80/tcp",
            "--real", "10.0.0.11:8080")
    # 2: a configuration error (pyfwd start's exit statuses)
    assert r.exit_code == 2 and "in DR, which rewrites MAC addresses only" \
        in r.output, r.output
