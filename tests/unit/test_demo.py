"""The demo's counting of a capture (pure: synthetic frames)."""

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from pyfwd.lab.capture import Frame
from pyfwd.lab.demo import Wire

CLIENT, LB, REAL = "02:00:00:00:01:01", "02:00:00:00:01:02", "02:00:00:00:01:11"
OWNERS = {CLIENT: "client", LB: "lb", REAL: "real1"}
PORTS = {8080}


def frame(role, sent, src, dst, sport, dport, payload=b""):
    data = bytes(Ether(src=src, dst=dst) / IP(src="10.0.0.1",
                                              dst="10.0.0.100")
                 / TCP(sport=sport, dport=dport) / payload)
    return Frame(0.0, role, "eth0", sent, data, len(data))


def test_dr_request_crosses_reply_bypasses():
    req = dict(src=CLIENT, dst=LB, sport=40000, dport=8080)
    frames = [
        frame("client", True, **req),
        frame("lb", False, **req),                       # into the lb
        frame("lb", True, LB, REAL, 40000, 8080),        # out to real1
        frame("real1", False, LB, REAL, 40000, 8080),
        frame("real1", True, REAL, CLIENT, 8080, 40000, b"x" * 100),
        frame("client", False, REAL, CLIENT, 8080, 40000, b"x" * 100),
    ]
    w = Wire.count(frames, PORTS, OWNERS)
    assert w.at_lb("request", False).frames == 1
    assert w.at_lb("request", True).frames == 1
    assert w.at_lb("reply", False).frames == 0
    assert w.real_replies.frames == 1 and w.client_replies.frames == 1
    assert w.real_replies.octets == len(frames[4].data)
    assert dict(w.client_reply_from) == {"real1": 1}
    assert w.into_lb().frames == 1


def test_other_traffic_and_malformed_frames_are_not_counted():
    arp = bytes(Ether(src=CLIENT, dst="ff:ff:ff:ff:ff:ff") / ARP())
    good = frame("lb", False, CLIENT, LB, 40000, 8080)
    frames = [
        Frame(0.0, "lb", "eth0", False, arp, len(arp)),
        frame("lb", False, CLIENT, LB, 40000, 22),        # not the service
        Frame(0.0, "lb", "eth0", False, good.data[:30], 60),   # truncated
        Frame(0.0, "lb", "eth0", False, b"", 0),
    ]
    w = Wire.count(frames, PORTS, OWNERS)
    assert w.into_lb().frames == 0 and w.client_replies.frames == 0


def test_an_unknown_mac_is_named_as_it_is():
    f = frame("client", False, "02:00:00:00:09:09", CLIENT, 8080, 40000)
    w = Wire.count([f], PORTS, OWNERS)
    assert dict(w.client_reply_from) == {"02:00:00:00:09:09": 1}
