"""TCP segments followed hop by hop through a lab: the analysis behind
`pyfwd lab trace` (pyfwd.lab.trace).

Each captured frame (pyfwd.lab.capture.Frame) of Ethernet/IPv4/TCP becomes a
``Seg``; the copies of one segment on every hop (the client, the balancer's
way in and out, the real server) make a ``Journey``.  A segment is
recognised on each hop by its direction and its TCP (seq, ack, flags,
payload length): the balancer rewrites addresses and ports, never sequence
numbers.  ``rewritten`` says what the balancer changed, ``collapse`` picks
the journeys worth drawing (pyfwd.lab.diagram draws them).

Pure: it takes Frame values, so it is tested with frames built by hand.
"""

from dataclasses import dataclass, field
from typing import Optional

from .capture import parse_tcp4

__all__ = ["FIELDS", "LB", "CLIENT", "Seg", "Journey", "parse", "journeys",
           "rewritten", "collapse"]

# the fields compared between the balancer's in and out copies
FIELDS = ("eth.src", "eth.dst", "ip.src", "ip.dst", "ip.ttl", "tcp.sport",
          "tcp.dport", "tcp.seq", "tcp.ack")
LB = "lb"
CLIENT = "client"

_SYN, _FIN, _RST, _PSH, _ACK = 0x02, 0x01, 0x04, 0x08, 0x10
_FLAG_NAMES = ((_SYN, "SYN"), (_FIN, "FIN"), (_RST, "RST"), (_PSH, "PSH"),
               (_ACK, "ACK"))


# ---------------------------------------------------------------------------
# Frames to TCP segments


@dataclass(frozen=True)
class Seg:
    """A captured TCP/IPv4 frame, decoded (``frame``: its capture.Frame)."""

    frame: object
    eth_src: str
    eth_dst: str
    ip_src: str
    ip_dst: str
    ttl: int
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    length: int             # TCP payload bytes

    @property
    def key(self) -> tuple:
        """What identifies one segment on every hop."""
        return (self.seq, self.ack, self.flags, self.length)

    @property
    def hop(self) -> tuple:
        return (self.frame.role, self.frame.ifname, self.frame.sent)

    def value(self, name: str) -> str:
        """The value of a field of FIELDS, as text."""
        return str({"eth.src": self.eth_src, "eth.dst": self.eth_dst,
                    "ip.src": self.ip_src, "ip.dst": self.ip_dst,
                    "ip.ttl": self.ttl, "tcp.sport": self.sport,
                    "tcp.dport": self.dport, "tcp.seq": self.seq,
                    "tcp.ack": self.ack}[name])

    @property
    def flag_text(self) -> str:
        return "+".join(n for bit, n in _FLAG_NAMES if self.flags & bit) \
            or "none"


def parse(frame) -> Optional[Seg]:
    """The Seg of a capture.Frame holding Ethernet/IPv4/TCP, else None
    (also for a malformed or fragmented one: see capture.parse_tcp4)."""
    h = parse_tcp4(frame.data, frame.wirelen)
    if h is None:
        return None
    return Seg(frame, h.src_mac, h.dst_mac, h.src_ip, h.dst_ip, h.ttl,
               h.sport, h.dport, h.seq, h.ack, h.flags, h.payload_len)


# ---------------------------------------------------------------------------
# Segments to journeys


@dataclass
class Journey:
    """One TCP segment's way through the lab.

    ``copies``: its Seg on each hop, in path order (sender's copy first);
    ``direction``: "c2s" or "s2c".
    """

    direction: str
    copies: list = field(default_factory=list)

    @property
    def first(self) -> Seg:
        return self.copies[0]

    @property
    def crossed_lb(self) -> bool:
        return any(c.frame.role == LB for c in self.copies)

    def arrows(self) -> list:
        """(sent copy, received copy) for each hop it made."""
        out = []
        for i, c in enumerate(self.copies):
            if not c.frame.sent:
                continue
            for r in self.copies[i + 1:]:
                if not r.frame.sent and r.frame.role != c.frame.role:
                    out.append((c, r))
                    break
        return out

    def lb_pair(self) -> Optional[tuple]:
        """(in copy, out copy) at the balancer, or None."""
        got = [c for c in self.copies if c.frame.role == LB]
        ins = [c for c in got if not c.frame.sent]
        outs = [c for c in got if c.frame.sent]
        return (ins[0], outs[0]) if ins and outs else None

    def changes(self) -> dict:
        """{field: (before, after)} the balancer rewrote in this one."""
        pair = self.lb_pair()
        if pair is None:
            return {}
        a, b = pair
        return {f: (a.value(f), b.value(f)) for f in FIELDS
                if a.value(f) != b.value(f)}


def _rank(seg: Seg, direction: str) -> int:
    """Position of a copy on its path: the sender, the balancer in, out,
    the receiver."""
    role, _, sent = seg.hop
    if role == LB:
        return 2 if sent else 1
    origin = (role == CLIENT) == (direction == "c2s")
    return 0 if origin else 3


def journeys(frames, vip: str, port: int, client: str = CLIENT) -> list:
    """The journeys of the client's first TCP connection to vip:port among
    ``frames`` (capture.Frame of every hop), in the order the segments
    left their sender.  Empty if the client opened no such connection."""
    segs = [s for s in map(parse, sorted(frames, key=lambda f: f.ts)) if s]
    syn = next((s for s in segs if s.frame.role == client and s.frame.sent
                and s.ip_dst == vip and s.dport == port
                and s.flags & (_SYN | _ACK) == _SYN), None)
    if syn is None:
        return []
    cport = syn.sport
    direction = {}
    for s in segs:
        if s.frame.role != client:
            continue
        if s.frame.sent and s.sport == cport and s.ip_dst == vip:
            direction.setdefault(s.key, "c2s")
        elif not s.frame.sent and s.dport == cport and s.ip_src == vip:
            direction.setdefault(s.key, "s2c")
    out, open_ = [], {}         # key -> journeys of that key
    for s in segs:
        d = direction.get(s.key)
        if d is None:
            continue
        mine = open_.setdefault(s.key, [])
        starts = s.frame.sent and _rank(s, d) == 0
        home = None if starts else next(
            (j for j in reversed(mine)
             if s.hop not in {c.hop for c in j.copies}), None)
        if home is None:
            home = Journey(d)
            mine.append(home)
            out.append(home)
        home.copies.append(s)
    for j in out:
        j.copies.sort(key=lambda c: (_rank(c, j.direction), c.frame.ts))
    out.sort(key=lambda j: j.first.frame.ts)
    return out


def rewritten(js) -> dict:
    """{direction: {field: (before, after)}}: what the balancer rewrote,
    over every journey that crossed it (first values seen)."""
    out = {}
    for j in js:
        for f, change in j.changes().items():
            out.setdefault(j.direction, {}).setdefault(f, change)
    return out


def collapse(js, limit: int = 14) -> list:
    """The journeys to draw: all of them if at most ``limit``; otherwise
    the handshake, everything up to the first server data segment, every
    SYN/FIN/RST and what follows the first FIN, with each run of the rest
    replaced by an int (how many were left out)."""
    if len(js) <= limit:
        return list(js)
    first_data = next((i for i, j in enumerate(js)
                       if j.direction == "s2c" and j.first.length), 0)
    first_fin = next((i for i, j in enumerate(js)
                      if j.first.flags & (_FIN | _RST)), len(js))
    out = []
    for i, j in enumerate(js):
        if i <= first_data or i >= first_fin or \
                j.first.flags & (_SYN | _FIN | _RST):
            out.append(j)
        elif out and isinstance(out[-1], int):
            out[-1] += 1
        else:
            out.append(1)
    return out


