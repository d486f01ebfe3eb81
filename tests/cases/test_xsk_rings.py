"""The AF_XDP backend's sizes and its TX kicks (issue 18, point 2b), on a
veth pair in a namespace of its own (root; the namespace goes with its
thread):

- ring sizes that are not powers of two, or a UMEM too small to keep the
  fill ring stocked, are refused with the key, the value and what was
  expected (Python: ConfigError; C, behind it: EINVAL naming the field);
- copy mode sends at most 32 frames per sendto(): a 64-frame TX ring
  behind a loop that receives 64-frame bursts back to back (frames
  queued on the RX ring while the loop was paused) must still send every
  forwarded frame (the loop kicks until the ring is drained; one kick a
  burst left 32 behind and the next burst found the ring full), busy
  polling or adaptive.
"""

import errno
import socket
import subprocess
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pyfwd._netns import in_netns
from pyfwd.dataplane.core import Core
from pyfwd.dataplane.io import Xsk, XskRings
from pyfwd.errors import ConfigError, DataplaneError
from pyfwd.model import Real, Service, Vip

pytestmark = pytest.mark.root

VIP = Vip.parse("10.9.0.100:9/udp")
REAL = Real("10.9.0.2")
REAL_MAC = bytes.fromhex("020000000902")


def veth():
    """pfxr0 (the engine's) and pfxr1 (client and real), both up."""
    subprocess.run(["ip", "link", "add", "pfxr0", "type", "veth", "peer",
                    "name", "pfxr1"], check=True)
    for dev in ("lo", "pfxr0", "pfxr1"):
        subprocess.run(["ip", "link", "set", dev, "up"], check=True)
    return socket.if_nametoindex("pfxr0")


def mac_of(dev):
    out = subprocess.run(["ip", "-o", "link", "show", dev], check=True,
                         capture_output=True, text=True).stdout
    return out.split("link/ether ")[1].split()[0]


def rx_packets(dev):
    out = subprocess.run(["ip", "-s", "-j", "link", "show", dev],
                         check=True, capture_output=True, text=True).stdout
    import json
    return json.loads(out)[0]["stats64"]["rx"]["packets"]


def test_ring_sizes_are_checked_before_anything_is_opened():
    with pytest.raises(ConfigError, match="rx_ring 100: expected a power "
                       "of two from 64 to 65536"):
        XskRings.of({"rx_ring": 100})
    with pytest.raises(ConfigError, match="--fill-ring 32: expected a "
                       "power of two"):
        XskRings.of({"fill_ring": 32}, "--")
    with pytest.raises(ConfigError, match=r"engine.frames 4096: expected "
                       r"6144 \(fill ring \+ TX ring\)"):
        XskRings.of({"frames": 4096}, "engine.")
    with pytest.raises(ConfigError, match="per interface"):
        XskRings.of({"frames": 6144}, ifaces=2)
    with pytest.raises(ConfigError, match="tx_ring True: expected an "
                       "integer"):
        XskRings.of({"tx_ring": True})
    r = XskRings.of({"rx_ring": None, "fill_ring": 8192})
    assert (r.rx_ring, r.fill_ring, r.umem_frames(1),
            r.umem_frames(2)) == (2048, 8192, 16384, 32768)


def test_the_c_side_refuses_a_bad_ring_and_names_it():
    def run():
        ifindex = veth()
        core = Core(mac=mac_of("pfxr0"), flows=1 << 10)
        xsk = Xsk(core)
        with pytest.raises(DataplaneError, match="ring sizes"):
            xsk.open(ifindex, frames=256, ring_size=96)
        with pytest.raises(ConfigError, match="poll 'spin'"):
            xsk.open(ifindex, poll="spin")
        info = xsk.open(ifindex, rings=XskRings(frames=512, rx_ring=64,
                                                 tx_ring=64, fill_ring=128,
                                                 comp_ring=64))
        xsk.close()
        return info

    info = in_netns(None, run, timeout=60, name="pfxr-rings")
    assert info.queues == 1 and info.copy_mode == "copy"


def send(sock, frame, timeout=5.0):
    """sock.send(frame), again while veth's 256-frame ring is full
    (ENOBUFS: its NAPI thread, starved on a busy machine, has not emptied
    it yet): the test counts frames the engine sent, not frames the
    sender's veth dropped."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return sock.send(frame)
        except OSError as exc:
            if exc.errno != errno.ENOBUFS or time.monotonic() > deadline:
                raise
            time.sleep(0.001)


@pytest.mark.parametrize("busy_poll, poll", [(0, "busy"), (20, "busy"),
                                              (20, "adaptive")])
def test_copy_mode_sends_every_frame_through_a_small_tx_ring(busy_poll,
                                                             poll):
    frames = 3000

    def run():
        ifindex = veth()
        core = Core(mac=mac_of("pfxr0"), flows=1 << 12)
        core.publish_services([Service(VIP, [REAL])], {REAL.address:
                                                      REAL_MAC})
        xsk = Xsk(core)
        xsk.open(ifindex, copy_mode="copy", busy_poll_usecs=busy_poll,
                 poll=poll, rings=XskRings(frames=8192, rx_ring=4096,
                                           tx_ring=64, fill_ring=4096,
                                           comp_ring=64))
        xsk.steer([VIP])
        xsk.start()
        try:
            lb = mac_of("pfxr0")
            burst = [bytes(Ether(dst=lb, src="02:00:00:00:09:01")
                           / IP(src=f"10.9.{1 + i // 250}.{i % 250}",
                                dst=str(VIP.address))
                           / UDP(sport=1024 + i, dport=9))
                     for i in range(frames)]
            before = rx_packets("pfxr1")
            out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            out.bind(("pfxr1", 0))
            xsk.pause(0)        # the frames wait on the RX ring
            time.sleep(0.2)
            for f in burst:
                send(out, f)
            time.sleep(0.3)
            xsk.pause(0, "run")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                s = core.stats()
                if s["tx"] >= frames:
                    break
                time.sleep(0.05)
            time.sleep(0.2)
            got = rx_packets("pfxr1") - before
            return core.stats(), got
        finally:
            xsk.close()

    stats, got = in_netns(None, run, timeout=60, name="pfxr-kick")
    assert stats["rx"] == frames, stats
    assert stats["tx_ring_full"] == 0, stats
    assert stats["tx"] == frames
    assert got >= frames        # every forwarded frame left pfxr0
