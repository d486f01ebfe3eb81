"""The CLI's promises that need no lab: help, and clean one-line errors."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

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
    for word in ("--mode", "dr|nat|snat|l7|all", "--pacs"):
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
    assert r.exit_code == 0 and "pyfwd, version" in r.output


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
