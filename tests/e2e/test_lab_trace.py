"""`pyfwd lab trace` end to end: one request traced in a DR and a NAT lab;
the pcaps it writes are read back with scapy and checked against what the
picture says.  Root; each lab is removed whatever happens."""

import collections
import secrets
import xml.etree.ElementTree as ET

import pytest
from scapy.all import IP, TCP, Ether, rdpcap

from pyfwd.lab import topology as labmod
from pyfwd.lab import trace

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

CLIENT_IP = "10.0.0.1"
SVG = "{http://www.w3.org/2000/svg}"
SERVICE_PORT = {"dr": 8080, "nat": 80}       # the port the client sees
REAL_PORT = 8080

# what each mode must rewrite, per direction
EXPECTED = {
    "dr": {("c2s", "eth.src"), ("c2s", "eth.dst")},
    # NAT routes: the TTL is one less each way (issue 17)
    "nat": {("c2s", "eth.src"), ("c2s", "eth.dst"), ("c2s", "ip.dst"),
            ("c2s", "ip.ttl"), ("c2s", "tcp.dport"), ("s2c", "eth.src"),
            ("s2c", "eth.dst"), ("s2c", "ip.src"), ("s2c", "ip.ttl"),
            ("s2c", "tcp.sport")},
}


@pytest.fixture(scope="module", params=["dr", "nat"])
def traced(request, tmp_path_factory):
    """(mode, out dir, lines said, run()'s result) of one trace."""
    mode = request.param
    name = "pfr" + secrets.token_hex(4)
    out = tmp_path_factory.mktemp(f"trace-{mode}")
    lines = []
    try:
        ok = trace.run(lines.append, mode, str(out), name, color=False)
    finally:
        labmod.down_all(prefix=name)
    return mode, out, lines, ok


def tcp(path):
    return [p for p in rdpcap(str(path)) if TCP in p and IP in p]


def key(p):
    return (p[TCP].seq, p[TCP].ack, int(p[TCP].flags),
            len(bytes(p[TCP].payload)))


def server_to_client(mode, p):
    """Sent by the server: from the service port (client side) or the
    real's port (inside, NAT)."""
    return p[TCP].sport in (SERVICE_PORT[mode], REAL_PORT) and \
        p[IP].src != CLIENT_IP


def test_writes_a_picture_and_one_pcap_per_hop(traced):
    mode, out, lines, ok = traced
    text = "\n".join(lines)
    assert ok, text
    for name in ("client.pcap", "lb.pcap", "real.pcap", "trace.svg"):
        assert (out / name).stat().st_size > 0, name
    for name in ("client.pcap", "lb.pcap", "real.pcap"):
        flags = {str(p[TCP].flags) for p in tcp(out / name)}
        # in DR the balancer sees only the client's half of the connection
        want = {"S", "PA"} if (mode, name) == ("dr", "lb.pcap") \
            else {"S", "SA", "PA"}
        assert want <= flags, (name, flags)
    ET.parse(out / "trace.svg")                 # well-formed XML
    assert "client to server: " in text and "segments crossed" in text


def test_replies_bypass_the_balancer_in_dr_and_cross_it_in_nat(traced):
    mode, out, lines, _ = traced
    received = [p for p in tcp(out / "client.pcap")
                if server_to_client(mode, p)]
    sent_by_real = [p for p in tcp(out / "real.pcap")
                    if server_to_client(mode, p)]
    lb = tcp(out / "lb.pcap")
    assert received and len(received) == len(sent_by_real)
    if mode == "dr":
        assert not [p.summary() for p in lb if server_to_client(mode, p)]
        assert "server to client: 0 of " in "\n".join(lines)
    else:
        seen = collections.Counter(key(p) for p in lb
                                   if server_to_client(mode, p))
        for p in received:      # in (from real:8080), out (from VIP:80)
            assert seen[key(p)] == 2, p.summary()
        n = len(received)
        assert f"server to client: {n} of {n} segments" in "\n".join(lines)


def rewritten_in_pcap(path):
    """{(direction, field)} that differ between the balancer's in and out
    copies of each segment in lb.pcap."""
    copies = collections.defaultdict(list)
    for p in tcp(path):
        copies[key(p)].append(p)
    out = set()
    for group in copies.values():
        for a, b in zip(group[::2], group[1::2]):       # in, out
            d = "c2s" if a[IP].src == CLIENT_IP else "s2c"
            values = {
                "eth.src": (a[Ether].src, b[Ether].src),
                "eth.dst": (a[Ether].dst, b[Ether].dst),
                "ip.src": (a[IP].src, b[IP].src),
                "ip.dst": (a[IP].dst, b[IP].dst),
                "ip.ttl": (a[IP].ttl, b[IP].ttl),
                "tcp.sport": (a[TCP].sport, b[TCP].sport),
                "tcp.dport": (a[TCP].dport, b[TCP].dport),
                "tcp.seq": (a[TCP].seq, b[TCP].seq),
                "tcp.ack": (a[TCP].ack, b[TCP].ack)}
            out |= {(d, f) for f, (x, y) in values.items() if x != y}
    return out


def test_the_picture_highlights_what_the_balancer_rewrote(traced):
    mode, out, _, _ = traced
    svg = ET.parse(out / "trace.svg").getroot()
    highlighted = {(t.get("data-dir"), t.get("data-field"))
                   for t in svg.iter(f"{SVG}tspan")
                   if t.get("class") == "rewritten"}
    assert highlighted == rewritten_in_pcap(out / "lb.pcap")
    assert highlighted == EXPECTED[mode]
