"""pyfwd doctor put together (pyfwd.ops.doctor, ops.ifread's pure parts,
the CLI) with the machine's reads replaced by fakes: no root, no network."""

import errno
import json
import logging

import pytest
from click.testing import CliRunner

from pyfwd.cli.main import cli
from pyfwd.errors import ConfigError
from pyfwd.ops import doctor, ifread
from pyfwd.ops.findings import ok
from pyfwd.ops.ifchecks import Host, Link, Peer

TX_ON = {"tx-checksum-ip-generic": True}


def link(name="va", mtu=1500, rp_filter=0, rx_queues=1):
    return Link(name, "veth", mtu=mtu, rx_queues=rx_queues,
                rp_filter=rp_filter, peer=Peer(2, "netns pfdo-b", "vb",
                                               TX_ON))


@pytest.fixture
def machine(monkeypatch):
    """The reads replaced: links by name from the dict returned, a host
    with tcx and bpffs, root and the XDP object ok."""
    links = {"va": link()}

    def read_link(name):
        if name not in links:
            raise ConfigError(f"interface {name!r}: no such interface")
        return links[name]

    monkeypatch.setattr(ifread, "read_link", read_link)
    monkeypatch.setattr(ifread, "read_host",
                        lambda index=1: Host(rp_filter_all=0))
    monkeypatch.setattr(doctor, "_root", lambda: ok("root", "host", "yes"))
    monkeypatch.setattr(doctor, "_xdp_object", lambda native: [])
    return links


def run(*args):
    return CliRunner().invoke(cli, ["doctor", *args],
                              catch_exceptions=False)


# --- ifread's pure parts ---------------------------------------------------

@pytest.mark.parametrize("release, newer", [
    ("6.6.0", True), ("6.18.44-fc-v1147", True), ("6.5.13-amd64", False),
    ("5.15.0-91-generic", False), ("7.0", True), ("weird", None)])
def test_kernel_release_against_tcx(release, newer):
    assert ifread.kernel_at_least(release, ifread.TCX_SINCE) is newer


def test_the_tcx_probe_wins_over_the_release():
    assert ifread.tcx_from(0, "5.10")[0] is True
    assert ifread.tcx_from(errno.ENODEV, "5.10")[0] is True
    has, how = ifread.tcx_from(errno.EINVAL, "6.18")
    assert has is False and "probed" in how
    has, how = ifread.tcx_from(None, "6.1.0-18-amd64")
    assert has is False and how == "kernel 6.1.0-18-amd64, tcx since 6.6"
    assert ifread.tcx_from(errno.EPERM, "6.8")[0] is True


def test_sysctl_reads_an_integer_or_says_none():
    assert ifread.sysctl("net/ipv4/conf/all/rp_filter") in (0, 1, 2)
    assert ifread.sysctl("net/ipv4/conf/nosuchif/rp_filter") is None


def test_read_link_of_lo_needs_no_root():
    lo = ifread.read_link("lo")
    assert lo.kind is None and lo.peer is None and lo.rx_queues == 1
    assert lo.mtu > 0 and isinstance(lo.features, dict)


def test_read_link_of_a_missing_interface_names_it():
    with pytest.raises(ConfigError, match="nosuch0"):
        ifread.read_link("nosuch0")


# --- run and start ------------------------------------------------------------

def test_run_checks_the_machine_then_each_interface(machine):
    machine["vi"] = link("vi", rp_filter=1)
    found = doctor.run("va", "vi", modes={"nat"})
    checks = [(f.subject, f.check) for f in found]
    assert checks[0] == ("host", "root")
    assert ("host", "tcx") in checks and ("host", "bpffs") in checks
    assert ("va", "checksums") in checks and ("vi", "queues") in checks
    # two-arm NAT: the replies come in on the inside interface only
    rp = {f.subject: f.severity for f in found if f.check == "rp_filter"}
    assert rp == {"va": "ok", "vi": "degrades"}


def test_run_without_an_interface_is_the_machine_only(machine):
    assert {f.subject for f in doctor.run()} == {"host"}


def test_run_refuses_a_vip_that_is_no_address(machine):
    with pytest.raises(ConfigError, match="vip 'ten'"):
        doctor.run("va", vip="ten")


def test_an_ipv6_vip_has_no_arp_to_check(machine):
    f = doctor.run("va", vip="2001:db8::1")[-1]
    assert f.check == "arp" and f.severity == "ok" and "IPv6" in f.what


def test_start_logs_each_problem_as_a_warning(machine, caplog):
    machine["va"] = link(mtu=9000, rp_filter=1)
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        found = doctor.warn_at_start("va", modes={"nat"})
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("doctor: va mtu (blocks): MTU 9000")
    assert any(x.startswith("doctor: va rp_filter (degrades)")
               for x in lines)
    assert any(x.startswith("doctor: va checksums (note): frames from vb")
               for x in lines)
    assert not any("(ok)" in x for x in lines)
    assert len(lines) == sum(f.severity != "ok" for f in found) == 3


def test_start_with_the_fast_path_warns_of_a_veth_peer_without_xdp(
        machine, caplog):
    machine["va"] = link()
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        doctor.warn_at_start("va", fastpath=True)
    assert any(r.getMessage().startswith(
        "doctor: va fastpath (degrades): veth peer vb (netns pfdo-b) runs "
        "no XDP program") for r in caplog.records)


def test_start_carries_on_when_the_checks_cannot_run(machine, caplog):
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        assert doctor.warn_at_start("nosuch0") == []
    assert "interface checks skipped" in caplog.text
    assert "nosuch0" in caplog.text


# --- the command ------------------------------------------------------------

def test_doctor_iface_exits_0_on_notes_and_warnings(machine):
    machine["va"] = link(rp_filter=1)
    r = run("--iface", "va")
    assert r.exit_code == 0, r.output
    assert "note va checksums: frames from vb" in r.output
    assert "warn va rp_filter:" in r.output
    assert "fix: `ethtool -K vb tx off` in netns pfdo-b" in r.output


def test_doctor_iface_exits_1_when_something_blocks(machine):
    machine["va"] = link(mtu=9000)
    r = run("--iface", "va")
    assert r.exit_code == 1
    assert "FAIL va mtu: MTU 9000" in r.output
    assert "1 finding(s) block forwarding" in r.output


def test_doctor_json(machine):
    machine["va"] = link(mtu=9000)
    r = run("--iface", "va", "--json")
    assert r.exit_code == 1
    doc = json.loads(r.output)
    assert doc["ok"] is False and doc["blocks"] == 1
    mtu = next(f for f in doc["findings"] if f["check"] == "mtu")
    assert mtu["severity"] == "blocks" and mtu["subject"] == "va"
    machine["va"] = link()
    r = run("--iface", "va", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True


def test_doctor_errors_are_one_line(machine):
    r = run("--vip", "10.0.0.100")
    assert r.exit_code == 2 and "--vip needs --iface" in r.output
    r = run("--iface", "nosuch0")
    assert r.exit_code == 1 and r.output.startswith("Error: ")
    assert "nosuch0" in r.output and "Traceback" not in r.output


def test_doctor_help_says_the_arp_check_needs_root_and_sends_arp():
    r = run("--help")
    for words in ("--iface", "--vip", "--json", "Needs", "root",
                  "broadcast ARP request"):
        assert words in r.output
