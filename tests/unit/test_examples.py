"""examples/: every configuration passes `pyfwd check-config` (with HAProxy
checking the L7 VIPs and BIRD the [bgp] table: both installed by
tools/run), every keepalived.conf is what `pyfwd ha keepalived-conf` makes
from the command written at its top and keepalived's own check accepts it,
the HA pair's two files run the same services, the addresses are
documentation ones, and examples/README.md names every file.  No root, no
network: nothing is started."""

import ipaddress
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyfwd.cli.main import cli
from pyfwd.control import config

from ..certs import self_signed

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TOMLS = sorted(EXAMPLES.rglob("*.toml"))
KEEPALIVED = sorted(EXAMPLES.rglob("keepalived*.conf"))
# The certificate an L7 example names; the test puts a real one there
TLS_CERT = "/etc/pyfwd/viewer.pem"
DOCUMENTATION = [ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
# What keepalived may say: there is no VIP, on purpose (tests/unit/test_ha.py)
NO_VIP = "No VIP specified; at least one is sensible"


def rel(path):
    return str(path.relative_to(EXAMPLES))


def with_cert(path, tmp_path):
    """The example, or a copy of it whose tls_cert is a real PEM file."""
    text = path.read_text()
    if TLS_CERT not in text:
        return path
    _, _, both = self_signed(tmp_path)
    copy = tmp_path / path.name
    copy.write_text(text.replace(TLS_CERT, both))
    return copy


def check_config(path):
    return CliRunner().invoke(cli, ["check-config", str(path)])


def test_the_examples_are_there():
    assert {rel(p) for p in TOMLS} >= {
        "pacs-dr.toml", "pacs-nat.toml", "pacs-l7-tls.toml",
        "bgp-ecmp.toml", "ha/lb1.toml", "ha/lb2.toml"}
    assert {rel(p) for p in KEEPALIVED} == {"ha/keepalived-lb1.conf",
                                            "ha/keepalived-lb2.conf"}


@pytest.mark.parametrize("path", TOMLS, ids=rel)
def test_check_config_accepts_it(path, tmp_path):
    r = check_config(with_cert(path, tmp_path))
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert re.fullmatch(r".*: ok: \d+ VIP\(s\), \d+ real server\(s\)",
                        lines[0]), r.output
    cfg = config.load(with_cert(path, tmp_path))
    if any(s.mode == "l7" for s in cfg.services):
        assert any("checked with HAProxy" in line for line in lines), \
            r.output
    if cfg.bgp.enabled:
        assert any("BIRD accepts its configuration" in line
                   for line in lines), r.output


def test_check_config_would_tell_a_broken_example(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text((EXAMPLES / "pacs-dr.toml").read_text().replace(
        'scheduler = "sh"', 'scheduler = "shh"', 1))
    r = check_config(broken)
    assert r.exit_code == 1
    assert "shh" in r.output and "Traceback" not in r.output


def test_the_pacs_dr_example_is_what_the_brief_asked():
    cfg = config.load(EXAMPLES / "pacs-dr.toml")
    ports = {s.vip.port for s in cfg.services}
    assert ports == {104, 11112, 80, 443}
    assert {s.mode for s in cfg.services} == {"dr"}
    assert {s.scheduler for s in cfg.services} == {"sh"}
    assert len({tuple(sorted(r.address for r in s.reals))
                for s in cfg.services}) == 1     # sh across the VIPs
    dicom = [s for s in cfg.services if s.vip.port in (104, 11112)]
    assert {s.health.type for s in dicom} == {"dicom"}


def test_the_ha_pair_runs_the_same_services():
    """Maglev gives both nodes the same tables only from the same inputs."""
    a, b = (config.load(EXAMPLES / "ha" / f"lb{n}.toml") for n in (1, 2))
    assert a.services == b.services
    assert {s.scheduler for s in a.services} == {"maglev"}
    assert a.role == b.role == "standby"


@pytest.mark.parametrize("path", KEEPALIVED, ids=rel)
def test_keepalived_conf_is_the_generators(path):
    first, rest = path.read_text().split("\n", 1)
    assert first.startswith("# made by: pyfwd ha keepalived-conf ")
    argv = shlex.split(first[len("# made by: pyfwd "):])
    r = CliRunner().invoke(cli, argv)
    assert r.exit_code == 0, r.output
    assert r.stdout == rest


@pytest.mark.parametrize("path", KEEPALIVED, ids=rel)
def test_keepalived_accepts_it(path, tmp_path):
    exe = "/usr/sbin/keepalived"
    if not Path(exe).exists():
        pytest.fail("keepalived is not installed (tools/run installs it)")
    program = Path(sys.executable).parent / "pyfwd"
    text = path.read_text()
    assert "/opt/pyfwd/bin/pyfwd" in text
    conf = tmp_path / "keepalived.conf"
    # script security looks at the program: this venv's, which exists
    conf.write_text(text.replace("/opt/pyfwd/bin/pyfwd", str(program)))
    r = subprocess.run([exe, "-t", "-f", str(conf)], capture_output=True,
                       text=True, timeout=30)
    said = [line for line in (r.stdout + r.stderr).splitlines()
            if line.strip()]
    assert r.returncode in (0, 5), (r.returncode, said)
    assert all(line.endswith(NO_VIP) for line in said), said


@pytest.mark.parametrize("path", sorted(p for p in EXAMPLES.rglob("*")
                                        if p.is_file()), ids=rel)
def test_only_documentation_addresses(path):
    """Config files, never sent to: addresses nobody owns (RFC 5737), and
    loopback for what listens on the balancer itself (metrics)."""
    found = re.findall(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])",
                       path.read_text())
    bad = [a for a in found if not ipaddress.ip_address(a).is_loopback
           and not any(ipaddress.ip_address(a) in n for n in DOCUMENTATION)]
    assert bad == []


def test_the_readme_names_every_file():
    readme = (EXAMPLES / "README.md").read_text()
    files = [rel(p) for p in EXAMPLES.rglob("*") if p.is_file()
             and p.name != "README.md"]
    assert files
    assert [f for f in files if f"`{f}`" not in readme] == []
