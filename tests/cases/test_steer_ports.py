"""The steering program's one look-up on the VIP path (issue 18, point
2d): steer_vips holds each VIP address with a bit per TCP and UDP port
served on it, so one hash look-up says both "a VIP" and "served".  The
bits must say exactly the services given, by protocol, at the edges of
the port range, per address, and follow a steer() that drops or adds a
service.  BPF_PROG_TEST_RUN in a namespace of its own (root)."""

import socket
import subprocess

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pyfwd._netns import in_netns
from pyfwd.dataplane.core import Core
from pyfwd.dataplane.io import Xsk
from pyfwd.dataplane.native import ffi, lib
from pyfwd.model import Vip

pytestmark = pytest.mark.root

XDP_PASS, XDP_REDIRECT = 2, 4
A, B = "10.8.0.100", "10.8.0.101"


def frame(dst, proto, port):
    l4 = TCP(sport=40000, dport=port) if proto == "tcp" else \
        UDP(sport=40000, dport=port)
    return bytes(Ether(dst="02:00:00:00:08:01", src="02:00:00:00:08:02")
                 / IP(src="10.8.0.1", dst=dst) / l4)


def actions(rounds):
    """[[action per probe] per round]: rounds = [(VIP texts, probes)]."""
    def run():
        subprocess.run(["ip", "link", "add", "pfxs0", "type", "veth", "peer",
                        "name", "pfxs1"], check=True)
        for dev in ("lo", "pfxs0", "pfxs1"):
            subprocess.run(["ip", "link", "set", dev, "up"], check=True)
        core = Core(mac="02:00:00:00:08:01", flows=1 << 10)
        xsk = Xsk(core)
        xsk.open(socket.if_nametoindex("pfxs0"), frames=256, ring_size=64)
        out = []
        try:
            action = ffi.new("uint32_t *")
            for vips, probes in rounds:
                xsk.steer([Vip.parse(v) for v in vips])
                got = []
                for p in probes:
                    f = frame(*p)
                    assert lib.pyfwd_steer_test_run(core.ctx, f, len(f),
                                                    action) == 0
                    got.append(action[0])
                out.append(got)
            return out
        finally:
            xsk.close()
    return in_netns(None, run, timeout=60, name="pfxs-steer")


def test_one_lookup_answers_vip_and_port_by_protocol():
    probes = [(A, "tcp", 80), (A, "tcp", 81), (A, "udp", 80),
              (A, "udp", 53), (A, "tcp", 53), (A, "tcp", 0),
              (A, "tcp", 65535), (A, "udp", 65535), (B, "tcp", 80),
              (B, "tcp", 443), ("10.8.0.102", "tcp", 80)]
    first = [f"{A}:80/tcp", f"{A}:53/udp", f"{A}:65535/tcp",
             f"{B}:443/tcp"]
    second = [f"{A}:53/udp", f"{B}:80/tcp"]      # 80/tcp on A dropped
    got = actions([(first, probes), (second, probes), ([], probes)])
    R, P = XDP_REDIRECT, XDP_PASS
    assert got[0] == [R, P, P, R, P, P, R, P, P, R, P]
    assert got[1] == [P, P, P, R, P, P, P, P, R, P, P]
    assert got[2] == [P] * len(probes)
