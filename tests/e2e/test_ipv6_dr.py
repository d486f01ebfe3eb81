"""IPv6 in direct routing, end to end: a one-arm lab, two real servers set
up with `pyfwd realserver setup --vip fd00:0:0:1::100` (the VIP/128 on lo,
nodad), whoami listening on ::, the DR engine in the lb namespace.

- curl -6 to [VIP]:8080 from the client reaches both reals, each sees the
  client's own IPv6 address and the VIP as its local address;
- the engine found the reals' MACs through the kernel's IPv6 neighbour
  table (no IPv4 involved), and holds the VIP's solicited-node group;
- the client's neighbour entry for the VIP is the lb's MAC, and an NS
  for the VIP sent from the client is answered by the lb only (the reals
  hold the VIP on lo and stay silent);
- ping -6 to the VIP is answered by the lb;
- becoming active announces the VIP with an unsolicited NA;
- a real server that advertises the VIP from eth0 is recorded as a
  conflict.

And NAT with an IPv6 VIP in the two-arm lab, which falls out.

Root; the labs ("pf6" + random hex) are removed whatever happens.
"""

import ipaddress
import os
import re
import secrets
import select
import socket
import subprocess
import time

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet6 import (ICMPv6ND_NA, ICMPv6ND_NS,
                                ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr,
                                IPv6)
from scapy.layers.l2 import Ether

from pyfwd.lab import modes as labmodes
from pyfwd.neighbours import ndp
from pyfwd.lab import whoami
from pyfwd.lab.topology import Lab

pytestmark = pytest.mark.root

VIP6 = "fd00:0:0:1::100"
PORT = 8080
LB_MAC = "02:00:00:00:01:02"
ETH_P_IPV6 = 0x86dd
REQUESTS = 8


def whoami6(lab, role):
    """pyfwd.lab.whoami on [::]:PORT in role's namespace, once it listens."""
    proc = lab.popen(role, whoami.command(PORT, role, bind="::"),
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                     text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    line = proc.stdout.readline() if ready else ""
    if "listening" not in line:
        labmodes.stop_all([proc])
        pytest.fail(f"whoami on {role} did not start")
    return proc


def neighbours(lab, role):
    """{address text: (MAC text or None, NUD state)} of role's IPv6
    neighbour table on eth0."""
    def dump():
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            return {m.get("NDA_DST"): (m.get("NDA_LLADDR"), m["state"])
                    for m in ipr.neigh("dump", family=socket.AF_INET6,
                                       ifindex=idx)}
    return lab.call(role, dump)


def packet_socket(lab, role):
    sock = lab.socket(role, socket.AF_PACKET, socket.SOCK_RAW,
                      socket.htons(ETH_P_IPV6))
    sock.bind(("eth0", ETH_P_IPV6))
    return sock


def collect(sock, seconds, keep):
    """Frames for which keep(Ether) is true, read for `seconds`."""
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        frame, addr = sock.recvfrom(4096)
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        pkt = Ether(frame)
        if keep(pkt):
            out.append(pkt)
    return out


def is_na_for_vip(pkt):
    return ICMPv6ND_NA in pkt and pkt[ICMPv6ND_NA].tgt == VIP6


@pytest.fixture(scope="module")
def dr6():
    """The lab with the engine running and whoami on both reals."""
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    procs = []
    with Lab("pf6" + secrets.token_hex(3), topology="one-arm",
             reals=2) as lab, labmodes.balancer(
                 lab, "dr", listeners=[labmodes.Listener(PORT, PORT,
                                                         vip=VIP6)]) as eng:
        try:
            for role in lab.reals:
                procs.append(whoami6(lab, role))
            yield lab, eng
        finally:
            labmodes.stop_all(procs)


def test_realserver_setup_puts_the_vip_on_lo(dr6):
    lab, _ = dr6
    def on_lo():
        with IPRoute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            return [(a.get("IFA_ADDRESS"), a["prefixlen"])
                    for a in ipr.get_addr(family=socket.AF_INET6, index=lo)]
    for role in lab.reals:
        assert (VIP6, 128) in lab.call(role, on_lo), role
    from pyfwd.ops import realserver
    st = lab.call("real1", lambda: realserver.status(VIP6))
    assert st["ok"] and st["vip_on_dev"] and not st["vip_elsewhere"], st
    # idempotent
    assert lab.call("real1", lambda: realserver.setup(VIP6)) == []


def test_reals_resolved_over_ipv6(dr6):
    lab, eng = dr6
    [vip] = eng.show()
    macs = {r["real"]: r["mac"] for r in vip["reals"]}
    assert macs == {"[fd00:0:0:1::11]:8080": "02:00:00:00:01:11",
                    "[fd00:0:0:1::12]:8080": "02:00:00:00:01:12"}, vip
    assert all(r["scheduled"] for r in vip["reals"]), vip
    # the lb holds the VIP's solicited-node group (for NICs that filter
    # multicast and MLD-snooping switches)
    groups = lab.run("lb", ["cat", "/proc/net/igmp6"], capture_output=True,
                     text=True, timeout=5).stdout
    assert re.search(r"\beth0\s+ff0200000000000000000001ff000100\b",
                     groups), groups


def test_curl_reaches_both_reals_with_the_client_address(dr6):
    lab, eng = dr6
    seen = {}
    for _ in range(REQUESTS):
        ok, body = labmodes.curl(lab, "client",
                                 f"http://[{VIP6}]:{PORT}/",
                                 args=("-g", "-6"))
        assert ok, body
        w = labmodes.parse_whoami(body)
        seen.setdefault(w["node"], set()).add((w["client"], w["local"]))
    assert set(seen) == {"real1", "real2"}, seen
    for node, pairs in seen.items():
        assert pairs == {("fd00:0:0:1::1", f"{VIP6}:{PORT}")}, (node, pairs)
    st = eng.stats()
    assert st["core"]["reason"]["forward"] >= REQUESTS, st["core"]
    assert st["ndp"]["answered"] >= 1, st["ndp"]
    assert st["ndp_conflicts"] == {}, st["ndp_conflicts"]
    # the client knows the VIP at the balancer's MAC
    mac, _ = neighbours(lab, "client")[VIP6]
    assert mac == LB_MAC


def test_only_the_balancer_answers_ns_for_the_vip(dr6):
    lab, eng = dr6
    client_mac = lab.node("client").interface("eth0").mac
    group = str(ndp.solicited_node(VIP6))
    ns = (Ether(dst=ndp.multicast_mac(group), src=client_mac)
          / IPv6(src="fd00:0:0:1::1", dst=group, hlim=255)
          / ICMPv6ND_NS(tgt=VIP6) / ICMPv6NDOptSrcLLAddr(lladdr=client_mac))
    sock = packet_socket(lab, "client")
    try:
        sock.send(bytes(ns))
        answers = collect(sock, 1.5, is_na_for_vip)
    finally:
        sock.close()
    macs = {a[ICMPv6NDOptDstLLAddr].lladdr for a in answers}
    assert macs == {LB_MAC}, [a.command() for a in answers]
    na = answers[0]
    assert na[IPv6].hlim == 255 and na[ICMPv6ND_NA].S == 1 \
        and na[ICMPv6ND_NA].O == 1 and na[IPv6].dst == "fd00:0:0:1::1"


def test_ping6_vip_answered(dr6):
    lab, eng = dr6
    before = eng.stats()["ndp"]["echo_answered"]
    r = lab.run("client", ["ping", "-6", "-n", "-c3", "-W1", VIP6],
                capture_output=True, text=True, timeout=15)
    out = r.stdout + r.stderr
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m and m.group(2) == "3", out
    assert "duplicates" not in out, out
    assert set(re.findall(r"bytes from ([0-9a-f:]+):", out)) == {VIP6}, out
    assert eng.stats()["ndp"]["echo_answered"] - before == 3


def test_becoming_active_announces_the_vip(dr6):
    lab, eng = dr6
    sock = packet_socket(lab, "client")
    try:
        lab.call("lb", lambda: eng.set_role("active"))
        answers = collect(sock, 1.5, is_na_for_vip)
    finally:
        sock.close()
    assert answers, "no unsolicited NA for the VIP"
    na = answers[0]
    assert na.src == LB_MAC and na[IPv6].dst == "ff02::1", na.command()
    assert (na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == (0, 1), na.command()
    assert na[ICMPv6NDOptDstLLAddr].lladdr == LB_MAC


def test_a_real_advertising_the_vip_is_recorded(dr6):
    """The IPv6 ARP problem: real1 sends an unsolicited NA for the VIP
    from eth0 (as a host with the VIP on eth0 and ndisc_notify does)."""
    lab, eng = dr6
    real_mac = lab.node("real1").interface("eth0").mac
    na = (Ether(dst="33:33:00:00:00:01", src=real_mac)
          / IPv6(src="fd00:0:0:1::11", dst="ff02::1", hlim=255)
          / ICMPv6ND_NA(tgt=VIP6, O=1)
          / ICMPv6NDOptDstLLAddr(lladdr=real_mac))
    sock = packet_socket(lab, "real1")
    try:
        sock.send(bytes(na))
    finally:
        sock.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        conflicts = eng.stats()["ndp_conflicts"]
        if conflicts:
            break
        time.sleep(0.05)
    assert conflicts == {str(ipaddress.IPv6Address(VIP6)): [real_mac]}


def test_nat_ipv6_two_arm():
    """NAT falls out: [VIP]:80 to the reals' [fd00:0:0:2::1x]:8080 in the
    two-arm lab, the client's address kept, answers translated back (the
    core's NAT is family-agnostic; NDP for the VIP and the reals' MACs are
    what was missing)."""
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    procs = []
    with Lab("pf6" + secrets.token_hex(3), topology="two-arm",
             reals=2) as lab, labmodes.balancer(
                 lab, "nat", listeners=[labmodes.Listener(80, PORT,
                                                          vip=VIP6)]) as eng:
        try:
            for role in lab.reals:
                procs.append(whoami6(lab, role))
            seen = {}
            for _ in range(4):
                ok, body = labmodes.curl(lab, "client", f"http://[{VIP6}]/",
                                         args=("-g", "-6"))
                assert ok, body
                w = labmodes.parse_whoami(body)
                seen.setdefault(w["node"], set()).add(w["client"])
        finally:
            labmodes.stop_all(procs)
        reasons = eng.stats()["core"]["reason"]
    assert seen == {"real1": {"fd00:0:0:1::1"}, "real2": {"fd00:0:0:1::1"}}
    assert reasons["forward_reply"] > 0, reasons
