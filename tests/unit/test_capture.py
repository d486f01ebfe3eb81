"""pyfwd.capture's pcap files: written, then read back with scapy and with
read_pcap(); no root needed."""

import struct

import pytest
from scapy.all import IP, TCP, Ether, Raw, rdpcap

from pyfwd.capture import Frame, read_pcap, write_pcap


def frame(ts, payload=b"", snap=None):
    data = bytes(Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02")
                 / IP(src="10.0.0.1", dst="10.0.0.100")
                 / TCP(sport=40000, dport=80, flags="PA") / Raw(payload))
    wirelen = len(data)
    return Frame(ts, "client", "eth0", True, data[:snap], wirelen)


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


def test_read_pcap_reads_nanosecond_big_endian_files(tmp_path):
    path = tmp_path / "ns.pcap"
    data = b"\x01" * 60
    path.write_bytes(struct.pack(">IHHiIII", 0xa1b23c4d, 2, 4, 0, 0, 65535, 1)
                     + struct.pack(">IIII", 10, 500_000_000, 60, 70) + data)
    assert read_pcap(str(path)) == [(10.5, data, 70)]


def test_read_pcap_refuses_other_files(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"not a pcap file at all, no")
    with pytest.raises(ValueError, match="not a classic pcap"):
        read_pcap(str(path))
