"""`pyfwd lab trace`'s pure parts (pyfwd.lab.trace, segments, diagram):
segments matched across hops, what the balancer rewrote, the text and SVG
diagrams; fed with frames built with scapy, as the capture would see a DR
and a NAT connection."""

import re
import xml.etree.ElementTree as ET

import pytest
from scapy.all import IP, TCP, Ether, Raw

from pyfwd.lab import modes as labmodes
from pyfwd.lab import diagram, segments, trace
from pyfwd.lab.capture import Frame, read_pcap, write_pcap
from pyfwd.errors import ConfigError

CLIENT, LB_OUT, LB_IN, REAL = ("02:00:00:00:01:01", "02:00:00:00:01:02",
                               "02:00:00:00:02:01", "02:00:00:00:02:11")
DR_REAL = "02:00:00:00:01:11"
VIP = "10.0.0.100"


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        self.t += 0.0001
        return self.t


def frame(clock, role, ifname, sent, esrc, edst, src, dst, sport, dport,
          seq, ack, flags, payload=b""):
    data = bytes(Ether(src=esrc, dst=edst) / IP(src=src, dst=dst)
                 / TCP(sport=sport, dport=dport, seq=seq, ack=ack,
                       flags=flags) / Raw(payload))
    return Frame(clock(), role, ifname, sent, data, len(data))


def nat_frames(extra_data=0):
    """A NAT connection: handshake, request, response (+ extra_data more
    response segments, each ACKed), FIN exchange; every hop."""
    clock, out = Clock(), []

    def c2s(seq, ack, flags, payload=b""):
        out.append(frame(clock, "client", "eth0", True, CLIENT, LB_OUT,
                         "10.0.0.1", VIP, 40000, 80, seq, ack, flags,
                         payload))
        out.append(frame(clock, "lb", "eth0", False, CLIENT, LB_OUT,
                         "10.0.0.1", VIP, 40000, 80, seq, ack, flags,
                         payload))
        for role, sent in (("lb", True), ("real1", False)):
            out.append(frame(clock, role, "eth1" if role == "lb" else "eth0",
                             sent, LB_IN, REAL, "10.0.0.1",
                             "192.168.50.11", 40000, 8080, seq, ack, flags,
                             payload))

    def s2c(seq, ack, flags, payload=b""):
        for role, sent in (("real1", True), ("lb", False)):
            out.append(frame(clock, role, "eth0" if role == "real1" else
                             "eth1", sent, REAL, LB_IN, "192.168.50.11",
                             "10.0.0.1", 8080, 40000, seq, ack, flags,
                             payload))
        for role, sent in (("lb", True), ("client", False)):
            out.append(frame(clock, role, "eth0", sent, LB_OUT, CLIENT, VIP,
                             "10.0.0.1", 80, 40000, seq, ack, flags,
                             payload))

    c2s(100, 0, "S")
    s2c(500, 101, "SA")
    c2s(101, 501, "A")
    c2s(101, 501, "PA", b"GET / HTTP/1.1\r\n\r\n")
    s2c(501, 119, "PA", b"x" * 100)
    seq = 601
    for _ in range(extra_data):
        s2c(seq, 119, "A", b"y" * 1000)
        c2s(119, seq + 1000, "A")
        seq += 1000
    c2s(119, seq, "FA")
    s2c(seq, 120, "FA")
    c2s(120, seq + 1, "A")
    return out


def dr_frames():
    clock, out = Clock(), []
    for seq, ack, flags, payload, back in (
            (100, 0, "S", b"", False), (500, 101, "SA", b"", True),
            (101, 501, "A", b"", False), (101, 501, "PA", b"GET", False),
            (501, 104, "PA", b"hello", True)):
        if back:        # the real answers the client directly
            for role, sent in (("real1", True), ("client", False)):
                out.append(frame(clock, role, "eth0", sent, DR_REAL, CLIENT,
                                 VIP, "10.0.0.1", 8080, 40000, seq, ack,
                                 flags, payload))
            continue
        for role, sent, esrc, edst in (
                ("client", True, CLIENT, LB_OUT),
                ("lb", False, CLIENT, LB_OUT), ("lb", True, LB_OUT, DR_REAL),
                ("real1", False, LB_OUT, DR_REAL)):
            out.append(frame(clock, role, "eth0", sent, esrc, edst,
                             "10.0.0.1", VIP, 40000, 8080, seq, ack, flags,
                             payload))
    return out


LANES = [("client", "10.0.0.1"), ("lb", "eth0 | eth1"),
         ("real1", "192.168.50.11")]


def test_parse_reads_addresses_ports_and_payload_length():
    f = nat_frames()[12]        # the request, client side
    s = segments.parse(f)
    assert (s.ip_src, s.sport, s.ip_dst, s.dport) == ("10.0.0.1", 40000,
                                                      VIP, 80)
    assert (s.eth_src, s.eth_dst, s.length, s.flag_text) == (
        CLIENT, LB_OUT, 18, "PSH+ACK")
    arp = Frame(0.0, "client", "eth0", True, b"\xff" * 12 + b"\x08\x06"
                + b"\x00" * 28, 42)
    assert segments.parse(arp) is None


def test_parse_leaves_out_what_is_not_one_whole_tcp_segment():
    def made(**ip):
        data = bytes(Ether(src=CLIENT, dst=LB_OUT)
                     / IP(src="10.0.0.1", dst=VIP, **ip)
                     / TCP(sport=40000, dport=80) / Raw(b"x" * 40))
        return Frame(1.0, "client", "eth0", True, data, len(data))

    assert segments.parse(made()) is not None
    assert segments.parse(made(frag=3)) is None        # no TCP header there
    assert segments.parse(made(flags="MF")) is None
    bad_ihl = made()
    bad_ihl = Frame(1.0, "client", "eth0", True,
                    bad_ihl.data[:14] + b"\x40" + bad_ihl.data[15:],
                    bad_ihl.wirelen)
    assert segments.parse(bad_ihl) is None


def test_nat_segments_cross_the_balancer_both_ways():
    frames = nat_frames()
    js = segments.journeys(reversed(frames), VIP, 80)  # order comes from ts
    assert [j.direction for j in js] == ["c2s", "s2c", "c2s", "c2s", "s2c",
                                         "c2s", "s2c", "c2s"]
    assert all(len(j.copies) == 4 and j.crossed_lb for j in js)
    roles = [(a.frame.role, b.frame.role) for a, b in js[1].arrows()]
    assert roles == [("real1", "lb"), ("lb", "client")]
    assert segments.rewritten(js) == {
        "c2s": {"eth.src": (CLIENT, LB_IN), "eth.dst": (LB_OUT, REAL),
                "ip.dst": (VIP, "192.168.50.11"),
                "tcp.dport": ("80", "8080")},
        "s2c": {"eth.src": (REAL, LB_OUT), "eth.dst": (LB_IN, CLIENT),
                "ip.src": ("192.168.50.11", VIP),
                "tcp.sport": ("8080", "80")}}


def test_dr_replies_bypass_the_balancer():
    js = segments.journeys(dr_frames(), VIP, 8080)
    back = [j for j in js if j.direction == "s2c"]
    assert len(back) == 2 and not any(j.crossed_lb for j in back)
    assert [(a.frame.role, b.frame.role) for a, b in back[0].arrows()] == [
        ("real1", "client")]
    assert segments.rewritten(js) == {"c2s": {
        "eth.src": (CLIENT, LB_OUT), "eth.dst": (LB_OUT, DR_REAL)}}
    text = "\n".join(trace.summary(js))
    assert "server to client: 0 of 2 segments" in text
    assert "bypassed the balancer" in text


def test_a_retransmitted_segment_is_two_journeys():
    frames = dr_frames()
    syn = frames[:4]
    again = [Frame(f.ts + 1, f.role, f.ifname, f.sent, f.data, f.wirelen)
             for f in syn]
    js = segments.journeys(frames + again, VIP, 8080)
    syns = [j for j in js if j.first.flag_text == "SYN"]
    assert len(syns) == 2 and all(len(j.copies) == 4 for j in syns)


def test_other_connections_are_left_out():
    clock = Clock()
    other = [frame(clock, "client", "eth0", True, CLIENT, LB_OUT,
                   "10.0.0.1", "10.0.0.9", 40001, 80, 7, 0, "S")]
    assert segments.journeys(other, VIP, 80) == []
    assert len(segments.journeys(other + nat_frames(), VIP, 80)) == 8


def test_long_transfers_are_collapsed():
    js = segments.journeys(nat_frames(extra_data=20), VIP, 80)
    assert len(js) == 48
    shown = segments.collapse(js)
    assert 40 in shown
    assert sum(x if isinstance(x, int) else 1 for x in shown) == len(js)
    lines = diagram.render_text(js, LANES)
    assert "... 40 more segments like these ..." in "\n".join(lines)


def test_text_highlights_rewritten_fields_and_fits_100_columns():
    js = segments.journeys(nat_frames(), VIP, 80)
    plain = diagram.render_text(js, LANES)
    assert max(map(len, plain)) <= 100
    assert any("192.168.50.11*:8080*" in line for line in plain)
    assert not any("\x1b[" in line for line in plain)
    colored = diagram.render_text(js, LANES, color=True)
    assert any("\x1b[1;31m192.168.50.11\x1b[0m" in line for line in colored)
    strip = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in colored]
    assert max(map(len, strip)) <= 100


def test_svg_is_xml_and_marks_the_rewritten_fields():
    js = segments.journeys(nat_frames(), VIP, 80)
    root = ET.fromstring(diagram.render_svg(js, LANES, "nat <test>"))
    spans = [t for t in root.iter("{http://www.w3.org/2000/svg}tspan")
             if t.get("class") == "rewritten"]
    marked = {(t.get("data-dir"), t.get("data-field")) for t in spans}
    assert marked == {(d, f) for d, fields in segments.rewritten(js).items()
                      for f in fields}
    assert {t.text for t in spans if t.get("data-field") == "ip.dst"} == {
        "192.168.50.11"}


def passed_through_frames():
    """A connection whose replies cross the balancer unchanged."""
    clock, out = Clock(), []
    for seq, ack, flags, payload, back in (
            (100, 0, "S", b"", False), (500, 101, "SA", b"", True),
            (101, 501, "PA", b"GET", False), (501, 104, "PA", b"hi", True)):
        src, dst, sport, dport = (VIP, "10.0.0.1", 80, 40000) if back else \
            ("10.0.0.1", VIP, 40000, 80)
        path = (("real1", True), ("lb", False), ("lb", True),
                ("client", False)) if back else (
            ("client", True), ("lb", False), ("lb", True), ("real1", False))
        for role, sent in path:
            out.append(frame(clock, role, "eth0", sent, CLIENT, LB_OUT, src,
                             dst, sport, dport, seq, ack, flags, payload))
    return out


def test_summary_says_translated_back_only_when_it_was():
    nat = "\n".join(trace.summary(segments.journeys(nat_frames(), VIP, 80)))
    assert "came back through the balancer, which translated them back" \
        in nat
    js = segments.journeys(passed_through_frames(), VIP, 80)
    assert all(j.crossed_lb for j in js) and segments.rewritten(js) == {}
    text = "\n".join(trace.summary(js))
    assert "translated" not in text
    assert "came back through the balancer, which passed them on " \
        "unchanged" in text
    assert "the balancer rewrote nothing" in text


def test_both_pictures_are_drawn_from_the_same_rows():
    js = segments.journeys(dr_frames(), VIP, 8080)
    rows = list(diagram.rows(js, LANES))
    arrows = [r for r in rows if r.kind == "arrow"]
    assert len(arrows) == sum(len(j.arrows()) for j in js) == 3 * 2 + 2
    assert [r.head for r in arrows if r.bypass] == [
        "#2 SYN+ACK 0 B (bypasses lb)", "#5 PSH+ACK 5 B (bypasses lb)"]
    assert sum(r.kind == "end" for r in rows) == len(js)
    text = diagram.render_text(js, LANES)
    assert sum("->" in line or "<-" in line for line in text) == len(arrows)
    assert sum("(bypasses lb)" in line for line in text) == 2
    root = ET.fromstring(diagram.render_svg(js, LANES, "dr"))
    lines = [e for e in root.iter("{http://www.w3.org/2000/svg}line")
             if "arrow" in e.get("class", "")]
    assert len(lines) == len(arrows)
    assert sum("bypass" in e.get("class") for e in lines) == 2


@pytest.mark.parametrize("mode,message", [
    ("l7", "HAProxy ends the client's TCP connection"),
    ("bogus", "mode 'bogus': expected one of dr, nat, snat")])
def test_run_refuses_l7_and_unknown_modes_before_building_a_lab(
        tmp_path, mode, message):
    with pytest.raises(ConfigError, match=message):
        trace.run(print, mode, str(tmp_path / "out"), "pfrnolab")
    assert not (tmp_path / "out").exists()


class FakeCapture:
    """What report() reads of a stopped capture.Capture."""

    def __init__(self, frames, lost=()):
        self._frames, self.lost = frames, list(lost)
        self.complete = not lost

    def frames(self):
        return list(self._frames)

    def save_pcap(self, path, role):
        return write_pcap(path, [f for f in self._frames if f.role == role])


def traced(cap, ok=True):
    return trace.Traced("nat", labmodes.web_listener("nat"),
                        "http://10.0.0.100:80/", ok, "node=real1", cap,
                        LANES)


def test_report_writes_the_files_and_says_a_complete_trace(tmp_path):
    lines = []
    assert trace.report(traced(FakeCapture(nat_frames())), str(tmp_path),
                        lines.append)
    for name, role in (("client.pcap", "client"), ("lb.pcap", "lb"),
                       ("real.pcap", "real1")):
        assert len(read_pcap(str(tmp_path / name))) == sum(
            f.role == role for f in nat_frames())
    ET.parse(tmp_path / "trace.svg")
    assert not any("incomplete" in line for line in lines)


def test_report_says_why_a_trace_is_incomplete(tmp_path):
    lost = ["lb eth1: 12 frames dropped by the kernel (socket buffer full)"]
    lines = []
    assert not trace.report(traced(FakeCapture(nat_frames(), lost), ok=False),
                            str(tmp_path), lines.append)
    text = "\n".join(lines)
    assert "the trace is incomplete:\n  the request failed: node=real1" \
        in text
    assert "the capture missed frames" in text
    assert "    lb eth1: 12 frames dropped by the kernel" in text
    lines = []
    assert not trace.report(traced(FakeCapture([])), str(tmp_path),
                            lines.append)
    assert "  no TCP connection of the client to 10.0.0.100:80 was " \
        "captured" in lines
