"""pyfwd.lab.capture without root: pcap files written, then read back with
scapy and with read_pcap(); parse_tcp4() on good and malformed frames; the
Capture's reader and stop() over fake packet sockets (a flood, a failing
socket, an interrupted stop)."""

import errno
import random
import socket
import struct
import threading
import time
from types import SimpleNamespace

import pytest
from scapy.all import IP, TCP, Dot1Q, Ether, Raw, rdpcap

from pyfwd.lab import capture
from pyfwd.lab.capture import (Capture, Frame, parse_tcp4,
                           read_pcap, write_pcap)

SRC, DST = "02:00:00:00:01:01", "02:00:00:00:01:02"


def packet(payload=b"", **ip):
    return (Ether(src=SRC, dst=DST)
            / IP(src="10.0.0.1", dst="10.0.0.100", **ip)
            / TCP(sport=40000, dport=80, seq=7, ack=9, flags="PA")
            / Raw(payload))


def frame(ts, payload=b"", snap=None):
    data = bytes(packet(payload))
    wirelen = len(data)
    return Frame(ts, "client", "eth0", True, data[:snap], wirelen)


# ---------------------------------------------------------------------------
# pcap files


def test_written_frames_read_back_with_scapy(tmp_path):
    frames = [frame(1700000000.000001, b"a"), frame(1700000000.5, b"bb"),
              frame(1700000001.999999, b"x" * 1000)]
    path = str(tmp_path / "t.pcap")
    assert write_pcap(path, frames) == 3
    packets = rdpcap(path)
    assert [bytes(p) for p in packets] == [f.data for f in frames]
    assert [float(p.time) for p in packets] == pytest.approx(
        [f.ts for f in frames], abs=1e-6)
    assert packets[2][TCP].dport == 80
    assert packets[1][Raw].load == b"bb"


def test_truncated_frames_keep_their_wire_length(tmp_path):
    path = str(tmp_path / "t.pcap")
    f = frame(5.25, b"y" * 500, snap=64)
    write_pcap(path, [f], snaplen=64)
    (ts, data, wirelen), = read_pcap(path)
    assert (ts, data, wirelen) == (5.25, f.data, f.wirelen)
    assert len(data) == 64 and wirelen == 54 + 500
    assert rdpcap(path)[0].wirelen == wirelen


def test_header_is_classic_ethernet(tmp_path):
    path = str(tmp_path / "t.pcap")
    assert write_pcap(path, []) == 0
    with open(path, "rb") as f:
        magic, major, minor, _, _, _, linktype = struct.unpack(
            "<IHHiIII", f.read())
    assert (magic, major, minor, linktype) == (0xa1b2c3d4, 2, 4, 1)
    assert read_pcap(path) == []


@pytest.mark.parametrize("order,magic,frac,ts", [
    ("<", 0xa1b2c3d4, 250_000, 10.25), (">", 0xa1b2c3d4, 250_000, 10.25),
    ("<", 0xa1b23c4d, 500_000_000, 10.5),
    (">", 0xa1b23c4d, 500_000_000, 10.5)])
def test_read_pcap_reads_both_byte_orders_in_us_and_ns(tmp_path, order,
                                                        magic, frac, ts):
    path = tmp_path / "x.pcap"
    data = b"\x01" * 60
    path.write_bytes(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535,
                                 1)
                     + struct.pack(order + "IIII", 10, frac, 60, 70) + data)
    assert read_pcap(str(path)) == [(ts, data, 70)]


@pytest.mark.parametrize("blob,message", [
    (b"not a pcap file at all, no", "not a classic pcap"),
    # pcapng's section header block
    (b"\x0a\x0d\x0d\x0a" + b"\x00" * 28, "not a classic pcap"),
    (struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 101),
     r"link type 101, expected 1 \(Ethernet\)"),
    (struct.pack(">IHHiIII", 0xa1b23c4d, 2, 4, 0, 0, 65535, 113),
     "link type 113"),
    (struct.pack("<IHHiIII", 0xa1b2c3d4, 1, 0, 0, 0, 65535, 1),
     "pcap version 1"),
    (struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1) + b"\x00" * 9,
     "truncated record header"),
    (struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1)
     + struct.pack("<IIII", 1, 0, 60, 60) + b"\x00" * 59, "truncated record"),
    (b"\xd4\xc3", "too short")])
def test_read_pcap_refuses_other_files(tmp_path, blob, message):
    path = tmp_path / "x"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=message):
        read_pcap(str(path))


# ---------------------------------------------------------------------------
# MAC addresses, parse_tcp4


def test_parse_tcp4_reads_every_field():
    data = bytes(packet(b"x" * 18, ttl=61))
    h = parse_tcp4(data, len(data))
    assert h._asdict() == dict(
        src_mac=SRC, dst_mac=DST, vlan=None, src_ip="10.0.0.1",
        dst_ip="10.0.0.100", ttl=61, sport=40000, dport=80, seq=7, ack=9,
        flags=0x18, payload_len=18)


def test_parse_tcp4_payload_length_comes_from_the_ip_header():
    data = bytes(packet(b"y" * 500))[:54]     # cut after TCP
    assert parse_tcp4(data).payload_len == 500
    # TCP options are not payload; Ethernet padding is not either
    data = bytes(Ether(src=SRC, dst=DST) / IP(src="1.1.1.1", dst="2.2.2.2")
                 / TCP(options=[("MSS", 1460), ("NOP", None),
                                ("WScale", 7)], flags="S"))
    assert parse_tcp4(data + b"\x00" * 6, len(data) + 6).payload_len == 0


def test_parse_tcp4_accepts_one_vlan_tag():
    data = bytes(Ether(src=SRC, dst=DST) / Dot1Q(vlan=42)
                 / IP(src="10.0.0.1", dst="10.0.0.100")
                 / TCP(sport=1, dport=2) / Raw(b"abc"))
    h = parse_tcp4(data, len(data))
    assert (h.vlan, h.src_ip, h.sport, h.dport, h.payload_len) == (
        42, "10.0.0.1", 1, 2, 3)
    qinq = bytes(Ether(src=SRC, dst=DST) / Dot1Q(vlan=1) / Dot1Q(vlan=2)
                 / IP() / TCP())
    assert parse_tcp4(qinq) is None


def patched(data, offset, fmt, value):
    """``data`` with struct ``fmt`` at ``offset`` set to ``value``."""
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


GOOD = bytes(packet(b"z" * 40))
IP_AT, TCP_AT = 14, 34

MALFORMED = {
    "ARP": bytes(Ether(src=SRC, dst=DST, type=0x0806)) + b"\x00" * 28,
    "IPv6 ethertype": patched(GOOD, 12, "!H", 0x86dd),
    "IP version 6": patched(GOOD, IP_AT, "!B", 0x65),
    "IHL 0": patched(GOOD, IP_AT, "!B", 0x40),
    "IHL 3": patched(GOOD, IP_AT, "!B", 0x43),
    "IHL 4": patched(GOOD, IP_AT, "!B", 0x44),
    "IHL 15, capture too short": patched(GOOD, IP_AT, "!B", 0x4f),
    "non-first fragment": bytes(packet(b"z" * 40, frag=10)),
    "first fragment (MF)": bytes(packet(b"z" * 40, flags="MF")),
    "UDP": patched(GOOD, IP_AT + 9, "!B", 17),
    "TCP data offset 0": patched(GOOD, TCP_AT + 12, "!B", 0x00),
    "TCP data offset 4": patched(GOOD, TCP_AT + 12, "!B", 0x40),
    "total length < IP + TCP headers": patched(GOOD, IP_AT + 2, "!H", 30),
    "total length 0": patched(GOOD, IP_AT + 2, "!H", 0),
    "data offset beyond total length": patched(
        bytes(packet(b"z" * 10)), TCP_AT + 12, "!B", 0xf0),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_parse_tcp4_refuses_malformed_frames(name):
    data = MALFORMED[name]
    assert parse_tcp4(data, len(data)) is None, name


def test_parse_tcp4_refuses_a_total_length_beyond_the_frame():
    long = patched(GOOD, IP_AT + 2, "!H", 2000)
    assert parse_tcp4(long, len(long)) is None
    assert parse_tcp4(GOOD, len(GOOD)) is not None


def test_parse_tcp4_refuses_a_capture_cut_inside_the_headers():
    for n in range(len(GOOD)):
        got = parse_tcp4(GOOD[:n], len(GOOD))
        assert (got is None) == (n < TCP_AT + 20), n
    assert parse_tcp4(b"") is None


def test_parse_tcp4_never_raises_nor_returns_garbage():
    """Random bytes and random damage to a good frame: whatever
    parse_tcp4 accepts, scapy reads the same way."""
    rng = random.Random(7)
    inputs = [bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
              for _ in range(500)]
    for _ in range(3000):
        data = bytearray(GOOD)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(14, 60)] = rng.randrange(256)
        inputs.append(bytes(data[:rng.choice((len(data), 54, 60, 70))]))
    accepted = 0
    for data in inputs:
        h = parse_tcp4(data, len(GOOD))
        if h is None:
            continue
        accepted += 1
        p = Ether(data)
        ip, tcp = p[IP], p[TCP]
        assert ip.version == 4 and ip.ihl >= 5 and ip.proto == 6
        assert ip.frag == 0 and not ip.flags.MF and tcp.dataofs >= 5
        assert (h.src_ip, h.dst_ip, h.ttl) == (ip.src, ip.dst, ip.ttl)
        assert (h.sport, h.dport, h.seq, h.ack, h.flags) == (
            tcp.sport, tcp.dport, tcp.seq, tcp.ack, int(tcp.flags) & 0xff)
        assert h.payload_len == ip.len - ip.ihl * 4 - tcp.dataofs * 4 >= 0
    assert accepted > 100           # the damage is not all fatal


# ---------------------------------------------------------------------------
# The reader, over fake packet sockets


class FakeSock:
    """Stands for a packet socket: frames pushed by the test come out of
    recvmsg_into(); ``flood`` is a frame returned forever (until a filter
    is attached, then ``backlog`` more); ``fail`` is raised on the next
    read; ``kernel_drops`` is what PACKET_STATISTICS reports."""

    def __init__(self):
        self._r, self._w = socket.socketpair(socket.AF_UNIX,
                                             socket.SOCK_DGRAM)
        self._r.setblocking(False)
        self.port = None
        self.flood = None
        self.backlog = 0
        self.sealed = False
        self.fail = None
        self.kernel_drops = 0
        self.closed = False

    def push(self, data, outgoing=False):
        self._w.send(bytes([outgoing]) + data)

    def _next(self):
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if self.fail is not None:
            raise self.fail
        if self.flood is not None and (not self.sealed or self.backlog):
            self.backlog -= self.sealed
            return self.flood, True
        raw = self._r.recv(65536)           # BlockingIOError when empty
        return raw[1:], bool(raw[0])

    def recvmsg_into(self, bufs, ancbufsize, flags):
        data, outgoing = self._next()
        n = min(len(data), len(bufs[0]))
        bufs[0][:n] = data[:n]
        return len(data), [], 0, (self.port, 3, 4 if outgoing else 0, 1,
                                  b"")

    def recv_into(self, buf, n):
        return len(self._next()[0])

    def fileno(self):
        return -1 if self.closed else self._r.fileno()

    def setsockopt(self, level, opt, value):
        if opt == capture.SO_ATTACH_FILTER:
            self.sealed = True

    def getsockopt(self, level, opt, size):
        drops, self.kernel_drops = self.kernel_drops, 0
        return struct.pack("=II", 0, drops)

    def bind(self, addr):
        self.port = addr[0]

    def setblocking(self, flag):
        pass

    def close(self):
        if not self.closed:
            self.closed = True
            self._r.close()
            self._w.close()


HOSTS = {"client": [("eth0", "02:00:00:00:01:01")],
         "lb": [("eth0", "02:00:00:00:01:02"), ("eth1", "02:00:00:00:02:01")]}


class FakeLab:
    name = "pfrfake"

    def __init__(self):
        self.socks = []

    def node(self, role):
        return SimpleNamespace(kind="host", interfaces=[
            SimpleNamespace(name=n, mac=m, switch="sw1", port=f"{role}-{n}")
            for n, m in HOSTS[role]])

    def socket(self, role, family, type_, proto):
        self.socks.append(FakeSock())
        return self.socks[-1]

    def sock(self, port):
        return next(s for s in self.socks if s.port == port)


def eth(dst, src="02:00:00:00:00:99"):
    return bytes(Ether(src=src, dst=dst) / IP() / TCP())


@pytest.fixture
def lab():
    lab = FakeLab()
    yield lab
    for s in lab.socks:
        s.close()


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_the_reader_keeps_what_the_host_sent_and_would_receive(lab):
    cap = Capture(lab, ["client"]).start()
    s = lab.sock("client-eth0")
    s.push(eth(SRC, DST))                           # the client sent it
    s.push(eth(SRC), outgoing=True)                 # to the client
    s.push(eth("ff:ff:ff:ff:ff:ff"), outgoing=True)  # broadcast
    s.push(eth("02:00:00:00:00:42"), outgoing=True)  # flooded, not its own
    cap.stop()
    assert [f.sent for f in cap.frames()] == [True, False, False]
    assert cap.complete and cap.lost == [] and cap.error is None
    assert s.closed


def test_kernel_drops_are_counted_and_said(lab):
    cap = Capture(lab, ["lb"]).start()
    lab.sock("lb-eth1").kernel_drops = 3
    cap.stop()
    assert cap.drops == 3 and not cap.complete
    assert cap.lost == ["lb eth1: 3 frames dropped by the kernel (socket "
                        "buffer full)"]


def test_a_failing_socket_stops_only_itself(lab):
    cap = Capture(lab, ["client", "lb"]).start()
    bad = lab.sock("lb-eth0")
    bad.fail = OSError(errno.ENETDOWN, "Network is down")
    bad.push(eth(SRC))
    wait_for(lambda: cap.error is not None)
    lab.sock("client-eth0").push(eth(DST, SRC))     # still captured
    lab.sock("lb-eth1").push(eth(DST, SRC))
    cap.stop()                                      # does not raise
    assert [f.role for f in cap.frames()] == ["client", "lb"]
    assert cap.error.errno == errno.ENETDOWN and cap.drops == 0
    assert not cap.complete
    assert len(cap.lost) == 1 and cap.lost[0].startswith(
        "lb eth0: nothing read after ")
    assert "Network is down" in cap.lost[0]


def test_stop_re_raises_a_bug_in_the_reader(lab):
    cap = Capture(lab, ["client"]).start()
    s = lab.sock("client-eth0")
    s.fail = RuntimeError("a bug")
    s.push(eth(SRC))
    wait_for(lambda: cap.error is not None)
    with pytest.raises(RuntimeError, match="a bug"):
        cap.stop()
    assert s.closed and not cap.complete
    assert "RuntimeError: a bug" in cap.lost[0]


def test_stop_ends_under_a_flood_and_counts_what_was_left(lab, monkeypatch):
    monkeypatch.setattr(capture, "SETTLE_MAX", 0.2)
    cap = Capture(lab, ["client"]).start()
    s = lab.sock("client-eth0")
    s.flood = eth("02:00:00:00:00:42")      # not the client's: not kept
    s.backlog = 10_000
    s.push(eth(SRC), outgoing=True)         # wakes the reader
    time.sleep(0.05)
    done = threading.Event()
    threading.Thread(target=lambda: (cap.stop(), done.set()),
                     daemon=True).start()
    assert done.wait(10), "stop() did not finish under a flood"
    assert s.sealed and s.closed
    # the backlog when the filter went on and the frame queued behind it,
    # less the last bounded drain
    assert cap.drops == 10_000 + 1 - capture.DRAIN_MAX
    assert not cap.complete
    assert cap.lost == [f"client eth0: {cap.drops} frames still queued "
                        "after 0.2 s of stopping, not read"]


def test_an_interrupted_stop_still_closes_the_sockets(lab):
    cap = Capture(lab, ["client", "lb"]).start()
    thread = cap._thread
    join = thread.join

    def interrupted(timeout=None):
        raise KeyboardInterrupt

    thread.join = interrupted
    with pytest.raises(KeyboardInterrupt):
        cap.stop()
    assert all(s.closed for s in lab.socks)
    assert cap._wake_r is None and cap._wake_w is None
    join(5)
    assert not thread.is_alive()
    cap.stop()                              # idempotent
