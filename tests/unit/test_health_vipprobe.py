"""The via_vip health check without root: the option's validation (the
health table, and DR/TCP/IPv4 in the config), the frames it sends and the
answers it takes (built and re-parsed with scapy, checksums verified), its
classic BPF filter run by a small interpreter here, and how the check
composes with the configured one.  The packet sockets themselves:
tests/e2e/test_health_via_vip.py."""

import ipaddress
import struct

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Dot1Q, Ether

from pyfwd.control import config
from pyfwd.control.health import vipprobe
from pyfwd.control.health.spec import HealthSpec
from pyfwd.errors import ConfigError
from pyfwd.frames import mac_to_bytes

REAL_MAC = mac_to_bytes("02:00:00:00:00:11")
LB_MAC = mac_to_bytes("02:00:00:00:00:02")
OTHER_MAC = mac_to_bytes("02:00:00:00:00:12")
SRC = ipaddress.IPv4Address("10.0.0.2")
VIP = ipaddress.IPv4Address("10.0.0.100")
SPORT, PORT, SEQ = 40000, 80, 0xfffffffe


# -- the option ----------------------------------------------------------

def test_via_vip_is_a_key_of_every_check_type():
    assert HealthSpec.from_dict({"type": "tcp"}).via_vip is False
    for kind in ("tcp", "http", "dicom"):
        assert HealthSpec.from_dict({"type": kind, "via_vip": True}).via_vip


def test_via_vip_takes_a_boolean():
    with pytest.raises(ConfigError, match=r"health\.via_vip = 'yes': "
                                          r"expected true or false"):
        HealthSpec.from_dict({"type": "tcp", "via_vip": "yes"}, "health")


def _vip(mode="dr", address="10.0.0.100", protocol="tcp"):
    return config.parse(f"""
[[vip]]
name = "web"
address = "{address}"
port = 80
protocol = "{protocol}"
mode = "{mode}"
health = {{ type = "tcp", via_vip = true }}
real = [{{ address = "{'fd00::11' if ':' in address else '10.0.0.11'}" }}]
""")


@pytest.mark.parametrize("address", ["10.0.0.100", "fd00::100"])
def test_via_vip_is_taken_by_a_dr_tcp_vip(address):
    (svc,) = _vip(address=address).services
    assert svc.health.via_vip


@pytest.mark.parametrize("kw, words", [
    ({"mode": "nat"}, ['only for mode = "dr"', "mode is 'nat'"]),
    ({"mode": "snat"}, ["mode is 'snat'"]),
    ({"protocol": "udp"}, ["TCP VIPs only", "this one is udp"]),
])
def test_via_vip_elsewhere_is_a_config_error(kw, words):
    with pytest.raises(ConfigError) as exc:
        _vip(**kw)
    msg = str(exc.value)
    assert msg.startswith("vip 'web'.health.via_vip = true"), msg
    for w in words:
        assert w in msg, (w, msg)


# -- frames ----------------------------------------------------------------

def test_syn_frame():
    f = Ether(vipprobe.syn_frame(REAL_MAC, LB_MAC, SRC, VIP, SPORT, PORT,
                                 SEQ))
    assert (f.dst, f.src) == ("02:00:00:00:00:11", "02:00:00:00:00:02")
    assert (f[IP].src, f[IP].dst, f[IP].ttl, f[IP].flags) == (
        "10.0.0.2", "10.0.0.100", 64, "DF")
    assert (f[TCP].sport, f[TCP].dport, f[TCP].seq, f[TCP].flags) == (
        SPORT, PORT, SEQ, "S")
    again = Ether(bytes(f))             # scapy recomputes what we zero
    del again[IP].chksum, again[TCP].chksum
    assert Ether(bytes(again))[IP].chksum == f[IP].chksum
    assert Ether(bytes(again))[TCP].chksum == f[TCP].chksum


def test_rst_frame_ends_the_half_open_connection():
    f = Ether(vipprobe.rst_frame(REAL_MAC, LB_MAC, SRC, VIP, SPORT, PORT,
                                 (SEQ + 1) & 0xffffffff))
    assert (f[TCP].flags, f[TCP].seq, f[TCP].ack) == ("R", SEQ + 1, 0)
    del f[TCP].chksum
    assert Ether(bytes(f))[TCP].chksum == Ether(vipprobe.rst_frame(
        REAL_MAC, LB_MAC, SRC, VIP, SPORT, PORT, SEQ + 1))[TCP].chksum


def _reply(flags="SA", ack=(SEQ + 1) & 0xffffffff, src=str(VIP),
           sport=PORT, dport=SPORT, mac="02:00:00:00:00:11", frag=0,
           tag=False):
    l2 = Ether(src=mac, dst="02:00:00:00:00:02")
    if tag:
        l2 = l2 / Dot1Q(vlan=5)
    return bytes(l2 / IP(src=src, dst=str(SRC), frag=frag)
                 / TCP(sport=sport, dport=dport, flags=flags, seq=7,
                       ack=ack))


@pytest.mark.parametrize("frame, want", [
    (_reply(), ("synack", REAL_MAC)),
    (_reply(mac="02:00:00:00:00:12"), ("synack", OTHER_MAC)),
    (_reply(flags="RA", ack=SEQ + 1), ("rst", REAL_MAC)),
    (_reply(flags="SA", ack=SEQ), None),          # not our SYN's
    (_reply(flags="A"), None),
    (_reply(sport=81), None),
    (_reply(dport=SPORT + 1), None),
    (_reply(src="10.0.0.101"), None),
    (_reply(frag=1), None),
    (b"\x00" * 20, None),
    (b"", None),
])
def test_answer(frame, want):
    assert vipprobe.answer(frame, SRC, VIP, SPORT, PORT, SEQ) == want


# -- the BPF filter ---------------------------------------------------------

def _run_cbpf(program, pkt):
    """The classic BPF instructions answer_filter uses, interpreted: the
    bytes the socket would take (0: none)."""
    a = x = pc = 0

    def load(off, size):
        if off + size > len(pkt):
            raise IndexError
        return int.from_bytes(pkt[off:off + size], "big")
    try:
        while True:
            code, jt, jf, k = program[pc]
            pc += 1
            if code == 0x28:
                a = load(k, 2)
            elif code == 0x20:
                a = load(k, 4)
            elif code == 0x30:
                a = load(k, 1)
            elif code == 0x48:
                a = load(x + k, 2)
            elif code == 0xb1:
                x = (load(k, 1) & 0xf) * 4
            elif code == 0x15:
                pc += jt if a == k else jf
            elif code == 0x45:
                pc += jt if a & k else jf
            elif code == 0x06:
                return k
            else:
                raise AssertionError(f"opcode {code:#x} not interpreted")
    except IndexError:
        return 0                        # the kernel drops a short frame


@pytest.mark.parametrize("frame, taken", [
    (_reply(), True),
    (_reply(flags="R"), True),          # answer() decides, not the filter
    (_reply(sport=81), False),
    (_reply(dport=SPORT + 1), False),
    (_reply(src="10.0.0.101"), False),
    (_reply(frag=3), False),
    (_reply(tag=True), False),
    (bytes(Ether() / IP(src=str(VIP), dst=str(SRC), proto=17)
           / struct.pack("!HH", PORT, SPORT)), False),
    (b"\x00" * 10, False),
])
def test_answer_filter_takes_only_the_answers(frame, taken):
    program = vipprobe.answer_filter(VIP, PORT, SPORT)
    assert (_run_cbpf(program, frame) > 0) is taken
    # every jump lands inside the program
    for i, (code, jt, jf, _) in enumerate(program):
        if code in (0x15, 0x45):
            assert i + 1 + max(jt, jf) < len(program)


SRC6 = ipaddress.IPv6Address("fd00:0:0:1::2")
VIP6 = ipaddress.IPv6Address("fd00:0:0:1::100")


def test_syn_frame_ipv6():
    f = Ether(vipprobe.syn_frame(REAL_MAC, LB_MAC, SRC6, VIP6, SPORT, PORT,
                                 SEQ))
    assert (f[IPv6].src, f[IPv6].dst, f[IPv6].nh, f[IPv6].plen) == (
        str(SRC6), str(VIP6), 6, 20)
    assert (f[TCP].dport, f[TCP].seq, f[TCP].flags) == (PORT, SEQ, "S")
    chk = f[TCP].chksum
    del f[TCP].chksum
    assert Ether(bytes(f))[TCP].chksum == chk


def _reply6(flags="SA", ack=(SEQ + 1) & 0xffffffff, src=str(VIP6),
            sport=PORT, ext=False):
    ip = IPv6(src=src, dst=str(SRC6))
    if ext:
        ip = ip / IPv6ExtHdrDestOpt()
    return bytes(Ether(src="02:00:00:00:00:11") / ip
                 / TCP(sport=sport, dport=SPORT, flags=flags, ack=ack))


@pytest.mark.parametrize("frame, want, taken", [
    (_reply6(), ("synack", REAL_MAC), True),
    (_reply6(flags="R", ack=0), ("rst", REAL_MAC), True),
    (_reply6(src="fd00:0:0:1::101"), None, False),
    (_reply6(src="fd00:0:0:2::100"), None, False),
    (_reply6(sport=81), None, False),
    (_reply6(ext=True), None, False),
    (_reply(), None, False),                    # IPv4
])
def test_answer_and_filter_ipv6(frame, want, taken):
    assert vipprobe.answer(frame, SRC6, VIP6, SPORT, PORT, SEQ) == want
    program = vipprobe.answer_filter(VIP6, PORT, SPORT)
    assert (_run_cbpf(program, frame) > 0) is taken


def test_answer_filter_and_answer_with_ip_options():
    f = bytes(Ether(src="02:00:00:00:00:11") / IP(
        src=str(VIP), dst=str(SRC), options=b"\x01\x01\x01\x00")
        / TCP(sport=PORT, dport=SPORT, flags="SA", ack=(SEQ + 1) & 0xffffffff))
    assert _run_cbpf(vipprobe.answer_filter(VIP, PORT, SPORT), f) > 0
    assert vipprobe.answer(f, SRC, VIP, SPORT, PORT, SEQ) == (
        "synack", REAL_MAC)


# -- composing the check ------------------------------------------------------

class Fakes:
    def __init__(self, base=(True, "HTTP 200"), mac=REAL_MAC,
                 via=(True, "SYN-ACK")):
        self.base, self.mac, self.via = base, mac, via
        self.probed = []

    def check(self, spec, address, port, vip):
        return self.base

    def hop(self, address):
        return "eth0", self.mac

    def probe(self, ifname, mac, real, vip, port, timeout):
        self.probed.append((ifname, mac, str(real), str(vip), port, timeout))
        return self.via


@pytest.fixture
def fakes(monkeypatch):
    made = []

    def make(**kw):
        f = Fakes(**kw)
        monkeypatch.setattr(vipprobe, "probe", f.probe)
        made.append(f)
        return vipprobe.checker(f.hop, check=f.check), f
    return make


SPEC = HealthSpec.from_dict({"type": "http", "via_vip": True,
                             "timeout": 0.5})


def test_checker_probes_the_vip_after_the_check(fakes):
    run, f = fakes()
    assert run(SPEC, "10.0.0.11", 80, "10.0.0.100:80/tcp") == (
        True, "HTTP 200; at the VIP: SYN-ACK")
    assert f.probed == [("eth0", REAL_MAC, "10.0.0.11", "10.0.0.100", 80,
                         0.5)]


def test_checker_down_when_the_vip_does_not_answer(fakes):
    run, _ = fakes(via=(False, "no answer"))
    assert run(SPEC, "10.0.0.11", 80, "10.0.0.100:80/tcp") == (
        False, "HTTP 200; at the VIP: no answer")


def test_checker_without_via_vip_or_after_a_failure_probes_nothing(fakes):
    run, f = fakes(base=(False, "HTTP 500"))
    assert run(SPEC, "10.0.0.11", 80, "10.0.0.100:80/tcp") == (
        False, "HTTP 500")
    run, g = fakes()
    plain = HealthSpec.from_dict({"type": "http"})
    assert run(plain, "10.0.0.11", 80, "10.0.0.100:80/tcp") == (
        True, "HTTP 200")
    assert f.probed == g.probed == []


def test_checker_down_without_a_mac_or_a_vip(fakes):
    run, f = fakes(mac=None)
    ok, detail = run(SPEC, "10.0.0.11", 80, "10.0.0.100:80/tcp")
    assert not ok and detail.endswith("no MAC known for 10.0.0.11")
    run, g = fakes()
    ok, detail = run(SPEC, "10.0.0.11", 80, None)
    assert not ok and detail.endswith("no VIP given")
    assert f.probed == g.probed == []


def test_checker_uses_the_health_port(monkeypatch):
    spec = HealthSpec.from_dict({"type": "tcp", "via_vip": True,
                                 "port": 8080})
    seen = []
    monkeypatch.setattr(vipprobe, "probe",
                        lambda *a: seen.append(a) or (True, "ok"))
    run = vipprobe.checker(lambda a: ("eth0", REAL_MAC),
                           check=lambda *a: (True, "connected"))
    assert run(spec, "10.0.0.11", 80, "10.0.0.100:80/tcp")[0]
    assert seen[0][4] == 8080
