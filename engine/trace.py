"""`pyfwd lab trace`: one HTTP request followed on every hop of a lab.

It builds the lab of a mode with one real server, runs the balancer, makes
one request with curl from the client while capturing on the client, every
interface of the balancer and the real server (pyfwd.capture), and writes:

- DIR/client.pcap, DIR/lb.pcap, DIR/real.pcap: the per-hop captures;
- DIR/trace.svg: the connection as a sequence diagram, one arrow per hop a
  segment takes, the fields the balancer rewrote in a distinct colour
  (``<tspan class="rewritten" data-field="ip.dst" data-dir="c2s">``);

and draws the same diagram in the terminal, then says in plain words which
way the replies went and what the balancer rewrote.

A segment is recognised on each hop by its direction and its TCP
(seq, ack, flags, payload length): the balancer rewrites addresses and
ports, never sequence numbers.  The analysis (``parse``, ``journeys``,
``rewritten``, ``render_text``, ``render_svg``) is pure: it takes
capture.Frame values, so it is tested with frames built by hand.

L7 is refused: HAProxy ends the client's connection and opens another to
the real server, with other sequence numbers, so there is no segment to
follow across the balancer.
"""

import os
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional
from xml.sax.saxutils import escape

from .errors import ConfigError

__all__ = ["FIELDS", "Seg", "Journey", "parse", "journeys", "rewritten",
           "collapse", "render_text", "render_svg", "summary", "run"]

# the fields compared between the balancer's in and out copies
FIELDS = ("eth.src", "eth.dst", "ip.src", "ip.dst", "ip.ttl", "tcp.sport",
          "tcp.dport", "tcp.seq", "tcp.ack")
FIELD_WORDS = {"eth.src": "source MAC", "eth.dst": "destination MAC",
               "ip.src": "source IP", "ip.dst": "destination IP",
               "ip.ttl": "TTL", "tcp.sport": "source port",
               "tcp.dport": "destination port", "tcp.seq": "TCP seq",
               "tcp.ack": "TCP ack"}
DIRECTIONS = {"c2s": "client to server", "s2c": "server to client"}
LB = "lb"
CLIENT = "client"

_FLAG_NAMES = ((0x02, "SYN"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"),
               (0x10, "ACK"))
_SYN, _FIN, _RST = 0x02, 0x01, 0x04


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


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse(frame) -> Optional[Seg]:
    """The Seg of a capture.Frame holding Ethernet/IPv4/TCP, else None."""
    d = frame.data
    if len(d) < 34 or d[12:14] != b"\x08\x00" or d[14] >> 4 != 4 \
            or d[23] != socket.IPPROTO_TCP:
        return None
    ihl = (d[14] & 0x0f) * 4
    total, = struct.unpack_from("!H", d, 16)
    t = 14 + ihl
    if len(d) < t + 14:
        return None
    sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", d, t)
    return Seg(frame, _mac(d[6:12]), _mac(d[0:6]),
               socket.inet_ntoa(d[26:30]), socket.inet_ntoa(d[30:34]),
               d[22], sport, dport, seq, ack, flags,
               total - ihl - (off >> 4) * 4)


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
                and s.flags & (_SYN | 0x10) == _SYN), None)
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


# ---------------------------------------------------------------------------
# Drawing


def _label_parts(seg: Seg, changed: set) -> list:
    """The two label lines of an arrow as [(text, field or None)] lists."""
    def part(f):
        return (seg.value(f), f if f in changed else None)

    return [[part("ip.src"), (":", None), part("tcp.sport"), (" > ", None),
             part("ip.dst"), (":", None), part("tcp.dport")]
            + ([(" ttl ", None), part("ip.ttl")] if "ip.ttl" in changed
               else []),
            [part("eth.src"), (" > ", None), part("eth.dst")]]


def _arrow_changes(sent: Seg, j: Journey) -> set:
    """Fields to highlight on the arrow leaving ``sent``: those the
    balancer rewrote, on the arrow it sends."""
    return set(j.changes()) if sent.frame.role == LB else set()


_BOLD_RED = "\x1b[1;31m"
_RESET = "\x1b[0m"


def render_text(js, lanes, color: bool = False, limit: int = 14) -> list:
    """The sequence diagram as text lines (about 90 columns).

    ``lanes``: [(role, caption)] left to right.  Rewritten values are bold
    red with ``color``, else followed by ``*``.
    """
    gap = 42
    xs = {role: 4 + gap * i for i, (role, _) in enumerate(lanes)}
    width = 4 + gap * (len(lanes) - 1) + 1

    def blank():
        row = [" "] * width
        for x in xs.values():
            row[x] = "|"
        return row

    head = [" "] * width
    for role, caption in lanes:
        text = f"{role} {caption}".strip()
        start = max(0, min(xs[role] - len(text) // 2, width - len(text)))
        if role == lanes[0][0]:
            start = 0
        head[start:start + len(text)] = text
    lines = ["".join(head).rstrip(), "".join(blank()).rstrip()]

    def place(row, start, parts):
        # parts: [(text, field)]; returns the line, coloured
        plain = "".join(t + ("*" if f and not color else "") for t, f in parts)
        row[start:start + len(plain)] = list(plain)
        line = "".join(row).rstrip()
        if not color:
            return line
        coloured = "".join(f"{_BOLD_RED}{t}{_RESET}" if f else t
                           for t, f in parts)
        return line[:start] + coloured + line[start + len(plain):]

    number = 0
    for item in collapse(js, limit):
        if isinstance(item, int):
            row = blank()
            text = f" ... {item} more segment{'s' * (item != 1)} like " \
                   "these ... "
            row[xs[lanes[0][0]] + 2:xs[lanes[0][0]] + 2 + len(text)] = text
            lines += ["".join(row).rstrip(), "".join(blank()).rstrip()]
            number += item
            continue
        number += 1
        for sent, recv in item.arrows():
            a, b = xs[sent.frame.role], xs[recv.frame.role]
            lo, hi = min(a, b), max(a, b)
            row = blank()
            for x in range(lo + 1, hi):
                if row[x] != "|":
                    row[x] = "-"
            if b > a:
                row[hi - 1] = ">"
            else:
                row[lo + 1] = "<"
            # the label sits between the sender and the next lane
            step = gap if b > a else -gap
            seg_lo = min(a, a + step)
            text = f" #{number} {sent.flag_text} {sent.length} B "
            if hi - lo > gap:
                text += "(bypasses lb) "
            mid = seg_lo + (gap - len(text)) // 2 + 1
            row[mid:mid + len(text)] = text
            lines.append("".join(row).rstrip())
            changed = _arrow_changes(sent, item)
            for parts in _label_parts(sent, changed):
                lines.append(place(blank(), seg_lo + 3, parts))
        lines.append("".join(blank()).rstrip())
    return lines


def render_svg(js, lanes, title: str, limit: int = 60) -> str:
    """The sequence diagram as an SVG document (a string).

    Rewritten values are ``<tspan class="rewritten" data-field=F
    data-dir=D>`` in red; the lanes are ``<g class="lane" data-role=R>``.
    """
    gap, top, left = 330, 80, 90
    xs = {role: left + gap * i for i, (role, _) in enumerate(lanes)}
    width = left * 2 + gap * (len(lanes) - 1)
    body, y, number = [], top + 20, 0

    def text(x, y, parts, anchor="start", cls="label", d=""):
        spans = "".join(
            f'<tspan class="rewritten" data-field="{f}" data-dir="{d}">'
            f"{escape(t)}</tspan>" if f else escape(t) for t, f in parts)
        return (f'<text x="{x}" y="{y}" class="{cls}" '
                f'text-anchor="{anchor}">{spans}</text>')

    for item in collapse(js, limit):
        if isinstance(item, int):
            body.append(text(width // 2, y + 10, [(
                f"... {item} more segments like these ...", None)],
                "middle", "note"))
            number += item
            y += 30
            continue
        number += 1
        for sent, recv in item.arrows():
            a, b = xs[sent.frame.role], xs[recv.frame.role]
            bypass = abs(b - a) > gap
            label = f"#{number} {sent.flag_text} {sent.length} B" + \
                (" (bypasses lb)" if bypass else "")
            cls = f"arrow {item.direction}" + (" bypass" if bypass else "")
            body.append(f'<line x1="{a}" y1="{y + 16}" x2="{b}" '
                        f'y2="{y + 16}" class="{cls}" '
                        f'marker-end="url(#head)"/>')
            step = gap if b > a else -gap
            if bypass:      # beside the sender, clear of the lane it skips
                body.append(text(a - 12 if b < a else a + 12, y + 10,
                                 [(label, None)],
                                 "end" if b < a else "start", "flags"))
            else:
                body.append(text(a + step // 2, y + 10, [(label, None)],
                                 "middle", "flags"))
            changed = _arrow_changes(sent, item)
            for k, parts in enumerate(_label_parts(sent, changed)):
                body.append(text(min(a, a + step) + 12, y + 32 + 13 * k,
                                 parts, d=item.direction))
            y += 62
        y += 8
    height = y + 20
    lanes_svg = []
    for role, caption in lanes:
        x = xs[role]
        lanes_svg.append(
            f'<g class="lane" data-role="{escape(role)}">'
            f'<text x="{x}" y="{top - 22}" text-anchor="middle" '
            f'class="role">{escape(role)}</text>'
            f'<text x="{x}" y="{top - 8}" text-anchor="middle" '
            f'class="caption">{escape(caption)}</text>'
            f'<line x1="{x}" y1="{top}" x2="{x}" y2="{height - 10}" '
            f'class="lifeline"/></g>')
    style = (
        "text{font-family:monospace;font-size:11px;fill:#222}"
        ".role{font-size:15px;font-weight:bold}"
        ".caption{fill:#555}.flags{font-weight:bold}.note{fill:#555}"
        ".rewritten{fill:#d00000;font-weight:bold}"
        ".lifeline{stroke:#888;stroke-dasharray:4 3}"
        ".arrow{stroke-width:1.6}.c2s{stroke:#1f4e9c}.s2c{stroke:#2e7d32}"
        ".bypass{stroke-dasharray:7 3}"
        ".title{font-size:14px;font-weight:bold}")
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f"<style>{style}</style>",
        '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" class="title">{escape(title)}</text>',
        '<text x="10" y="36" class="caption">red: fields the balancer '
        'rewrote; blue: client to server; green: server to client</text>',
        *lanes_svg, *body, "</svg>", ""])


def summary(js, mode: str, server: str = "real1") -> list:
    """Plain sentences: which way each direction went, what was rewritten."""
    lines = []
    for d in ("c2s", "s2c"):
        mine = [j for j in js if j.direction == d]
        crossed = sum(j.crossed_lb for j in mine)
        lines.append(f"{DIRECTIONS[d]}: {crossed} of {len(mine)} segments "
                     f"crossed the balancer")
    back = [j for j in js if j.direction == "s2c"]
    if back and not any(j.crossed_lb for j in back):
        lines.append(f"  the replies bypassed the balancer: {server} sent "
                     "them straight to the client (direct return)")
    elif back and all(j.crossed_lb for j in back):
        lines.append("  the replies came back through the balancer, which "
                     "translated them back")
    for d, changes in rewritten(js).items():
        lines.append(f"the balancer rewrote, {DIRECTIONS[d]}:")
        lines += [f"  {FIELD_WORDS[f]:<17} {a} -> {b}"
                  for f, (a, b) in changes.items()]
    if not rewritten(js):
        lines.append("the balancer rewrote nothing")
    return lines


# ---------------------------------------------------------------------------
# The command


def _lanes(lab, server: str) -> list:
    lb = lab.node(LB)
    return [(CLIENT, lab.ip(CLIENT)),
            (LB, " | ".join(f"{i.name} {i.addr4}" for i in lb.interfaces)),
            (server, lab.ip(server))]


def run(echo: Callable[[str], None], mode: str = "dr", out: str = "trace",
        name: str = "trace", color: Optional[bool] = None) -> bool:
    """Build the lab for ``mode``, trace one request, write the pcaps and
    trace.svg into ``out`` and tell the story with ``echo``.

    Returns True when the request worked and its every segment was
    captured (no frame dropped).  Raises ConfigError for an unknown mode or
    l7, LabError if the lab cannot be built or the lab name is taken.
    """
    from . import labmodes
    from .capture import Capture
    from .demo import curl
    from .lab import Lab

    if mode == "l7":
        raise ConfigError(
            "lab trace: l7 cannot be traced segment by segment: HAProxy "
            "ends the client's TCP connection and opens its own to the "
            "real server, so no segment crosses the balancer (use dr, "
            "nat or snat)")
    if mode not in labmodes.MODES:
        raise ConfigError(f"lab mode {mode!r}: expected one of dr, nat, "
                          "snat")
    if color is None:
        color = sys.stdout.isatty()
    os.makedirs(out, exist_ok=True)
    listener = labmodes.web_listener(mode)
    url = f"http://{listener.vip}:{listener.port}/"
    server = "real1"
    with Lab(name, topology=labmodes.TOPOLOGY[mode], reals=1) as lab, \
            labmodes.whoami_servers(lab), labmodes.balancer(lab, mode):
        echo(f"pyfwd lab trace: {mode.upper()} in a {lab.topology} lab "
             f"'{name}', one request to {url}")
        ok, text = curl(lab, CLIENT, url)      # warms ARP on every hop
        if not ok:
            echo(f"the warm-up request failed: {text}")
            return False
        with Capture(lab, [CLIENT, LB, server]) as cap:
            ok, text = curl(lab, CLIENT, url)
        echo(f"curl {url}: {'ok' if ok else 'FAIL'}  {text}")
        lanes = _lanes(lab, server)
    files = {"client.pcap": [CLIENT], "lb.pcap": [LB],
             "real.pcap": [server]}
    counts = {f: cap.write_pcap(os.path.join(out, f), roles)
              for f, roles in files.items()}
    js = journeys(cap.frames(), listener.vip, listener.port)
    title = (f"pyfwd lab trace: {mode.upper()}, one HTTP request to "
             f"{listener.vip}:{listener.port}")
    svg = os.path.join(out, "trace.svg")
    with open(svg, "w") as f:
        f.write(render_svg(js, lanes, title))
    echo("")
    for line in render_text(js, lanes, color):
        echo(line)
    if not color:
        echo("* rewritten by the balancer")
    echo("")
    for line in summary(js, mode, server):
        echo(line)
    echo("written: " + ", ".join(
        f"{os.path.join(out, f)} ({n} frames)" for f, n in counts.items())
        + f", {svg}")
    if cap.drops:
        echo(f"warning: the capture lost {cap.drops} frames")
    if not js:
        echo("no TCP connection of the client was captured")
    return ok and bool(js) and not cap.drops
