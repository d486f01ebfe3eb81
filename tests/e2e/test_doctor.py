"""`pyfwd doctor --iface` and the warnings of `pyfwd start` on a veth pair
left with the kernel's default offloads: the balancer's end in one
namespace, its peer in another.  Root; the namespaces are removed whatever
happens."""

import json
import os
import signal
import subprocess

import pytest
from pyroute2.ethtool import Ethtool

from pyfwd.lab.namespaces import iproute
from pyfwd.lab.programs import PYFWD, Namespaces

from .procs import wait_line, xdp_pass_fd

pytestmark = pytest.mark.root

LB_ADDR, PEER_ADDR = "10.9.0.1", "10.9.0.2"
VIP = "10.9.0.100"


@pytest.fixture
def pair(foreign_netns):
    """Namespaces lb (eth0) and peer (eth1), one veth pair between them,
    offloads as the kernel makes them."""
    ns = {"lb": foreign_netns(), "peer": foreign_netns()}
    with iproute(ns["lb"]) as ipr:
        ipr.link("add", ifname="eth0", kind="veth", peer="eth1")
        ipr.link("set", index=ipr.link_lookup(ifname="eth1")[0],
                 net_ns_fd=ns["peer"])
    hosts = Namespaces(ns)
    for role, name, addr in (("lb", "eth0", LB_ADDR),
                             ("peer", "eth1", PEER_ADDR)):
        hosts.address(role, "add", name, addr, 24)
        with iproute(ns[role]) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0],
                     state="up")
    yield hosts
    hosts.close()


def doctor(pair, *args, iface="eth0"):
    return pair.run("lb", PYFWD + ["doctor", "--iface", iface, *args],
                    capture_output=True, text=True, timeout=60)


def flat(text):
    """The output with its wrapped lines joined again."""
    return text.replace("\n     ", " ")


def set_mtu(pair, mtu):
    with iproute(pair.ns("lb")) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="eth0")[0], mtu=mtu)


def test_doctor_finds_the_checksum_note_rp_filter_and_mtu(pair):
    r = doctor(pair)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (f"note eth0 checksums: frames from eth1 (netns "
            f"{pair.ns('peer')}) arrive with unfinished checksums; "
            "pyfwd completes them (csum_completed)") in flat(r.stdout)
    assert (f"fix: `ethtool -K eth1 tx off` in netns {pair.ns('peer')} "
            "avoids the cost") in flat(r.stdout)
    assert "ok   eth0 rp_filter" in flat(r.stdout)
    assert "ok   eth0 mtu: MTU 1500" in flat(r.stdout)

    pair.sysctl("lb", "net/ipv4/conf/eth0/rp_filter", 1)
    r = doctor(pair)
    assert r.returncode == 0, r.stdout + r.stderr      # degrades: not fatal
    assert "warn eth0 rp_filter: rp_filter 1" in flat(r.stdout)
    assert "fix: `sysctl -w net.ipv4.conf.eth0.rp_filter=2`" in \
        flat(r.stdout)

    set_mtu(pair, 9000)
    r = doctor(pair, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    found = {f["check"]: f for f in json.loads(r.stdout)["findings"]
             if f["subject"] == "eth0"}
    assert found["mtu"]["severity"] == "blocks"
    assert "MTU 9000" in found["mtu"]["what"]
    assert found["rp_filter"]["severity"] == "degrades"
    assert found["checksums"]["severity"] == "note"
    r = doctor(pair)
    assert r.returncode == 1
    assert "FAIL eth0 mtu: MTU 9000" in flat(r.stdout)
    assert "Error: 1 finding(s) block forwarding" in flat(r.stderr)


def test_a_peer_with_tx_checksum_offload_off_is_ok(pair):
    def tx_off():
        with Ethtool() as et:
            features = et.get_features("eth1")
            for name in ("tx-checksum-ip-generic", "tx-checksum-ipv4",
                         "tx-checksum-ipv6"):
                if name in features.features:
                    features.features[name].enable = False
            et.set_features("eth1", features)
    pair.call("peer", tx_off)
    r = doctor(pair)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok   eth0 checksums: veth peer eth1" in flat(r.stdout)
    assert "tx checksum offload off" in flat(r.stdout)


def test_a_peer_in_the_same_namespace_is_found_there(pair):
    with iproute(pair.ns("lb")) as ipr:
        ipr.link("add", ifname="veth0", kind="veth", peer="veth1")
    r = doctor(pair, iface="veth0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("note veth0 checksums: frames from veth1 (this namespace) "
            "arrive with unfinished checksums") in flat(r.stdout)
    assert "fix: `ethtool -K veth1 tx off` on this host" in flat(r.stdout)


def test_the_fast_path_check_wants_an_xdp_program_on_the_peer(pair):
    r = doctor(pair, "--fastpath", "xdp")
    assert r.returncode == 0, r.stdout + r.stderr      # degrades: not fatal
    out = flat(r.stdout)
    assert (f"warn eth0 fastpath: veth peer eth1 (netns {pair.ns('peer')}) "
            "runs no XDP program: `pyfwd start --fastpath xdp` keeps the "
            "XDP fast path off on eth0") in out
    assert ("fix: attach an XDP program in driver mode to eth1 in netns "
            f"{pair.ns('peer')}") in out
    assert ("ok   eth0 fastpath: the XDP fast path is not asked for" in
            flat(doctor(pair, "--fastpath", "off").stdout))

    fd = xdp_pass_fd()
    try:
        with iproute(pair.ns("peer")) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="eth1")[0],
                     xdp_fd=fd)
    finally:
        os.close(fd)
    r = doctor(pair, "--fastpath", "xdp")
    assert ("ok   eth0 fastpath: veth peer eth1 (netns "
            f"{pair.ns('peer')}) runs an XDP program in driver mode") in \
        flat(r.stdout), r.stdout


def test_doctor_vip_finds_a_host_answering_arp_for_it(pair):
    r = doctor(pair, "--vip", VIP)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ok   eth0 arp: no other host answers ARP for {VIP}" in \
        flat(r.stdout)
    pair.address("peer", "add", "eth1", VIP, 32)   # a real without arp_ignore
    r = doctor(pair, "--vip", VIP)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"answers ARP for {VIP}" in flat(r.stdout)
    assert f"fix: `pyfwd realserver setup --vip {VIP}`" in flat(r.stdout)


def test_start_logs_the_findings_and_carries_on(pair, tmp_path):
    pair.sysctl("lb", "net/ipv4/conf/eth0/rp_filter", 1)
    set_mtu(pair, 9000)
    proc = pair.popen("lb", PYFWD + [
        "start", "--iface", "eth0", "--mode", "nat",
        "--vip", f"{VIP}:80/tcp", "--real", f"{PEER_ADDR}:8080",
        "--control-socket", str(tmp_path / "ctl.sock"), "--busy-poll", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = wait_line(proc, "attached", timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    log = "".join(lines)
    assert "WARNING doctor: eth0 mtu (blocks): MTU 9000" in log
    assert "WARNING doctor: eth0 rp_filter (degrades)" in log
    assert "WARNING doctor: eth0 checksums (note): frames from eth1" in log
    assert "doctor: eth0 offloads" not in log        # ok: not logged
    # the warnings come before the engine attaches, and it attached anyway
    assert log.index("doctor: eth0 mtu") < log.index("attached")
    assert proc.returncode == 0
