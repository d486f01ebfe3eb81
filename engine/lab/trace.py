"""`pyfwd lab trace`: one HTTP request followed on every hop of a lab.

It builds the lab of a mode with one real server, runs the balancer, makes
one request with curl from the client while capturing on the client, every
interface of the balancer and the real server (pyfwd.lab.capture), and writes:

- DIR/client.pcap, DIR/lb.pcap, DIR/real.pcap: the per-hop captures;
- DIR/trace.svg: the connection as a sequence diagram, one arrow per hop a
  segment takes, the fields the balancer rewrote in a distinct colour
  (``<tspan class="rewritten" data-field="ip.dst" data-dir="c2s">``);

and draws the same diagram in the terminal, then says in plain words which
way the replies went and what the balancer rewrote, and, when the trace is
incomplete, why (the request failed, no connection seen, frames the
capture lost and where).

A segment is recognised on each hop by its direction and its TCP
(seq, ack, flags, payload length): the balancer rewrites addresses and
ports, never sequence numbers.  The analysis (``parse``, ``journeys``,
``rewritten``, ``rows`` and the two renderers drawing them, ``summary``,
``report``) is pure: it takes capture.Frame values, so it is tested with
frames built by hand; only ``trace_request`` needs root and a lab.

L7 is refused: HAProxy ends the client's connection and opens another to
the real server, with other sequence numbers, so there is no segment to
follow across the balancer.
"""

import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional
from xml.sax.saxutils import escape

from pyfwd.lab import modes as labmodes
from pyfwd.lab.capture import parse_tcp4
from pyfwd.errors import ConfigError

__all__ = ["FIELDS", "MODES", "Seg", "Journey", "Row", "parse", "journeys",
           "rewritten", "collapse", "rows", "render_text", "render_svg",
           "summary", "check_mode", "Traced", "trace_request", "report", "run"]

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

_SYN, _FIN, _RST, _PSH, _ACK = 0x02, 0x01, 0x04, 0x08, 0x10
_FLAG_NAMES = ((_SYN, "SYN"), (_FIN, "FIN"), (_RST, "RST"), (_PSH, "PSH"),
               (_ACK, "ACK"))

# l7 is refused: see the module's docstring
MODES = tuple(m for m in labmodes.MODES if m != "l7")


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


# ---------------------------------------------------------------------------
# Drawing


@dataclass(frozen=True)
class Row:
    """One step of the sequence diagram, the same for every renderer.

    ``kind`` "arrow": one hop of segment ``number``, from the lane of role
    ``sender`` to that of ``receiver``; ``head`` is "#3 PSH+ACK 18 B" (with
    "(bypasses lb)" when the arrow skips a lane), ``label`` its two lines
    of (text, field) parts, the field set (else None) where the balancer
    rewrote it on this hop.  "skip": ``number`` segments left out (see
    collapse).  "end": the last arrow of a segment has been drawn.
    """

    kind: str
    number: int = 0
    direction: str = ""
    sender: str = ""
    receiver: str = ""
    bypass: bool = False
    head: str = ""
    label: tuple = ()


def _label(seg: Seg, changed: set) -> tuple:
    """The two label lines of an arrow as ((text, field or None), ...)."""
    def part(f):
        return (seg.value(f), f if f in changed else None)

    return ((part("ip.src"), (":", None), part("tcp.sport"), (" > ", None),
             part("ip.dst"), (":", None), part("tcp.dport"))
            + (((" ttl ", None), part("ip.ttl")) if "ip.ttl" in changed
               else ()),
            (part("eth.src"), (" > ", None), part("eth.dst")))


def rows(js, lanes, limit: int = 14) -> Iterator[Row]:
    """The diagram of journeys ``js`` (collapsed to about ``limit``) over
    ``lanes`` ([(role, caption)], left to right) as Rows, top to bottom.
    The fields the balancer rewrote are marked on the arrows it sends."""
    lane = {role: i for i, (role, _) in enumerate(lanes)}
    number = 0
    for item in collapse(js, limit):
        if isinstance(item, int):
            number += item
            yield Row("skip", item)
            continue
        number += 1
        changed = set(item.changes())
        for sent, recv in item.arrows():
            a, b = sent.frame.role, recv.frame.role
            bypass = abs(lane[a] - lane[b]) > 1
            yield Row("arrow", number, item.direction, a, b, bypass,
                      f"#{number} {sent.flag_text} {sent.length} B"
                      + (f" (bypasses {LB})" if bypass else ""),
                      _label(sent, changed if a == LB else set()))
        yield Row("end")


def _more(n: int) -> str:
    return f"... {n} more segment{'s' * (n != 1)} like these ..."


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

    def line(row):
        return "".join(row).rstrip()

    def place(row, start, parts):
        # parts: [(text, field)]; returns the line, coloured
        plain = "".join(t + ("*" if f and not color else "") for t, f in parts)
        row[start:start + len(plain)] = plain
        out = line(row)
        if not color:
            return out
        coloured = "".join(f"{_BOLD_RED}{t}{_RESET}" if f else t
                           for t, f in parts)
        return out[:start] + coloured + out[start + len(plain):]

    head = [" "] * width
    for role, caption in lanes:
        text = f"{role} {caption}".strip()
        start = 0 if role == lanes[0][0] else \
            max(0, min(xs[role] - len(text) // 2, width - len(text)))
        head[start:start + len(text)] = text
    lines = [line(head), line(blank())]
    for r in rows(js, lanes, limit):
        if r.kind == "skip":
            lines += [place(blank(), xs[lanes[0][0]] + 2,
                            [(f" {_more(r.number)} ", None)]), line(blank())]
        elif r.kind == "end":
            lines.append(line(blank()))
        else:
            a, b = xs[r.sender], xs[r.receiver]
            lo, hi = min(a, b), max(a, b)
            row = blank()
            for x in range(lo + 1, hi):
                if row[x] != "|":
                    row[x] = "-"
            row[hi - 1 if b > a else lo + 1] = ">" if b > a else "<"
            # the label sits between the sender and the next lane
            seg_lo = min(a, a + (gap if b > a else -gap))
            text = f" {r.head} "
            mid = seg_lo + (gap - len(text)) // 2 + 1
            row[mid:mid + len(text)] = text
            lines.append(line(row))
            lines += [place(blank(), seg_lo + 3, parts) for parts in r.label]
    return lines


_SVG_STYLE = (
    "text{font-family:monospace;font-size:11px;fill:#222}"
    ".role{font-size:15px;font-weight:bold}"
    ".caption{fill:#555}.flags{font-weight:bold}.note{fill:#555}"
    ".rewritten{fill:#d00000;font-weight:bold}"
    ".lifeline{stroke:#888;stroke-dasharray:4 3}"
    ".arrow{stroke-width:1.6}.c2s{stroke:#1f4e9c}.s2c{stroke:#2e7d32}"
    ".bypass{stroke-dasharray:7 3}"
    ".title{font-size:14px;font-weight:bold}")


def _svg_text(x, y, parts, anchor="start", cls="label", d="") -> str:
    spans = "".join(
        f'<tspan class="rewritten" data-field="{f}" data-dir="{d}">'
        f"{escape(t)}</tspan>" if f else escape(t) for t, f in parts)
    return (f'<text x="{x}" y="{y}" class="{cls}" '
            f'text-anchor="{anchor}">{spans}</text>')


def render_svg(js, lanes, title: str, limit: int = 60) -> str:
    """The sequence diagram as an SVG document (a string).

    Rewritten values are ``<tspan class="rewritten" data-field=F
    data-dir=D>`` in red; the lanes are ``<g class="lane" data-role=R>``.
    """
    gap, top, left = 330, 80, 90
    xs = {role: left + gap * i for i, (role, _) in enumerate(lanes)}
    width = left * 2 + gap * (len(lanes) - 1)
    body, y = [], top + 20
    for r in rows(js, lanes, limit):
        if r.kind == "skip":
            body.append(_svg_text(width // 2, y + 10, [(_more(r.number),
                                                         None)],
                                  "middle", "note"))
            y += 30
        elif r.kind == "end":
            y += 8
        else:
            a, b = xs[r.sender], xs[r.receiver]
            cls = f"arrow {r.direction}" + (" bypass" if r.bypass else "")
            body.append(f'<line x1="{a}" y1="{y + 16}" x2="{b}" '
                        f'y2="{y + 16}" class="{cls}" '
                        f'marker-end="url(#head)"/>')
            step = gap if b > a else -gap
            if r.bypass:    # beside the sender, clear of the lane it skips
                body.append(_svg_text(a + 12 if b > a else a - 12, y + 10,
                                      [(r.head, None)],
                                      "start" if b > a else "end", "flags"))
            else:
                body.append(_svg_text(a + step // 2, y + 10,
                                      [(r.head, None)], "middle", "flags"))
            body += [_svg_text(min(a, a + step) + 12, y + 32 + 13 * k, parts,
                               d=r.direction)
                     for k, parts in enumerate(r.label)]
            y += 62
    height = y + 20
    lanes_svg = [
        f'<g class="lane" data-role="{escape(role)}">'
        f'<text x="{xs[role]}" y="{top - 22}" text-anchor="middle" '
        f'class="role">{escape(role)}</text>'
        f'<text x="{xs[role]}" y="{top - 8}" text-anchor="middle" '
        f'class="caption">{escape(caption)}</text>'
        f'<line x1="{xs[role]}" y1="{top}" x2="{xs[role]}" '
        f'y2="{height - 10}" class="lifeline"/></g>'
        for role, caption in lanes]
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f"<style>{_SVG_STYLE}</style>",
        '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" class="title">{escape(title)}</text>',
        '<text x="10" y="36" class="caption">red: fields the balancer '
        'rewrote; blue: client to server; green: server to client</text>',
        *lanes_svg, *body, "</svg>", ""])


# ---------------------------------------------------------------------------
# In words

_ADDRESS_FIELDS = ("ip.src", "ip.dst", "tcp.sport", "tcp.dport")


def _replies(js, changes: dict, server: str) -> list:
    """The sentence on the way the replies took."""
    back = [j for j in js if j.direction == "s2c"]
    crossed = [j for j in back if j.crossed_lb]
    if not back:
        return []
    if not crossed:
        return [f"  the replies bypassed the balancer: {server} sent them "
                "straight to the client (direct return)"]
    s2c = changes.get("s2c", {})
    if any(f in s2c for f in _ADDRESS_FIELDS):
        how = "which translated them back"
    elif s2c:
        how = ("which forwarded them with new MACs, no address or port "
               "translated")
    elif any(j.lb_pair() for j in crossed):
        how = "which passed them on unchanged"
    else:
        how = "but none was seen leaving it"
    if len(crossed) == len(back):
        return [f"  the replies came back through the balancer, {how}"]
    return [f"  {len(crossed)} of the {len(back)} replies came back "
            f"through the balancer, {how}; the other "
            f"{len(back) - len(crossed)} bypassed it"]


def summary(js, server: str = "real1") -> list:
    """Plain sentences: which way each direction went, what was rewritten."""
    lines = []
    for d in ("c2s", "s2c"):
        mine = [j for j in js if j.direction == d]
        crossed = sum(j.crossed_lb for j in mine)
        lines.append(f"{DIRECTIONS[d]}: {crossed} of {len(mine)} segments "
                     f"crossed the balancer")
    changes = rewritten(js)
    lines += _replies(js, changes, server)
    for d, fields in changes.items():
        lines.append(f"the balancer rewrote, {DIRECTIONS[d]}:")
        lines += [f"  {FIELD_WORDS[f]:<17} {a} -> {b}"
                  for f, (a, b) in fields.items()]
    if not changes:
        lines.append("the balancer rewrote nothing")
    return lines


# ---------------------------------------------------------------------------
# The command


def check_mode(mode: str) -> None:
    """ConfigError unless ``mode`` can be traced (one of MODES)."""
    if mode == "l7":
        raise ConfigError(
            "lab trace: l7 cannot be traced segment by segment: HAProxy "
            "ends the client's TCP connection and opens its own to the "
            "real server, so no segment crosses the balancer (use "
            f"{', '.join(MODES)})")
    if mode not in MODES:
        raise ConfigError(f"lab trace: mode {mode!r}: expected one of "
                          f"{', '.join(MODES)}")


@dataclass
class Traced:
    """One request as trace_request() captured it."""

    mode: str
    listener: labmodes.Listener
    url: str
    ok: bool            # the request worked
    answer: str         # its answer, or why it failed
    cap: object         # the stopped capture.Capture
    lanes: list         # [(role, caption)] of the diagram
    server: str = "real1"


def _lanes(lab, server: str) -> list:
    lb = lab.node(LB)
    return [(CLIENT, lab.ip(CLIENT)),
            (LB, " | ".join(f"{i.name} {i.addr4}" for i in lb.interfaces)),
            (server, lab.ip(server))]


def trace_request(echo: Callable[[str], None], mode: str,
                  name: str) -> Optional[Traced]:
    """Build the lab for ``mode`` with one real server, make one warm-up
    request (ARP on every hop), then one request while capturing the
    client, the balancer and the real server.  Returns None (said with
    ``echo``) if the warm-up request fails.  LabError if the lab cannot be
    built or the lab name is taken."""
    from pyfwd.lab.capture import Capture
    from pyfwd.lab.topology import Lab

    check_mode(mode)
    listener = labmodes.web_listener(mode)
    url = f"http://{listener.vip}:{listener.port}/"
    server = "real1"
    with Lab(name, topology=labmodes.TOPOLOGY[mode], reals=1) as lab, \
            labmodes.whoami_servers(lab), labmodes.balancer(lab, mode):
        echo(f"pyfwd lab trace: {mode.upper()} in a {lab.topology} lab "
             f"'{name}', one request to {url}")
        ok, answer = labmodes.curl(lab, CLIENT, url)
        if not ok:
            echo(f"the warm-up request failed: {answer}")
            return None
        with Capture(lab, [CLIENT, LB, server]) as cap:
            ok, answer = labmodes.curl(lab, CLIENT, url)
        echo(f"curl {url}: {'ok' if ok else 'FAIL'}  {answer}")
        return Traced(mode, listener, url, ok, answer, cap,
                      _lanes(lab, server), server)


def report(t: Traced, out: str, echo: Callable[[str], None],
           color: bool = False) -> bool:
    """Write the pcaps and trace.svg of ``t`` into ``out``, draw the
    diagram and say what happened with ``echo``.  Returns True when the
    request worked and every one of its segments was captured; otherwise
    says why not."""
    files = {"client.pcap": CLIENT, "lb.pcap": LB, "real.pcap": t.server}
    counts = {f: t.cap.save_pcap(os.path.join(out, f), role)
              for f, role in files.items()}
    vip, port = t.listener.vip, t.listener.port
    js = journeys(t.cap.frames(), vip, port)
    svg = os.path.join(out, "trace.svg")
    with open(svg, "w") as f:
        f.write(render_svg(js, t.lanes, f"pyfwd lab trace: {t.mode.upper()}"
                           f", one HTTP request to {vip}:{port}"))
    echo("")
    for line in render_text(js, t.lanes, color):
        echo(line)
    if not color:
        echo("* rewritten by the balancer")
    echo("")
    for line in summary(js, t.server):
        echo(line)
    echo("written: " + ", ".join(
        f"{os.path.join(out, f)} ({n} frames)" for f, n in counts.items())
        + f", {svg}")
    why = []
    if not t.ok:
        why.append(f"the request failed: {t.answer}")
    if not js:
        why.append(f"no TCP connection of the client to {vip}:{port} was "
                   "captured")
    if not t.cap.complete:
        why.append("the capture missed frames, so segments may be missing "
                   "from the pcaps and the diagram:")
        why += [f"  {what}" for what in t.cap.lost]
    if why:
        echo("the trace is incomplete:")
        for line in why:
            echo(f"  {line}")
    return not why


def run(echo: Callable[[str], None], mode: str = "dr", out: str = "trace",
        name: str = "trace", color: Optional[bool] = None) -> bool:
    """Build the lab for ``mode``, trace one request, write the pcaps and
    trace.svg into ``out`` (created if missing) and tell the story with
    ``echo``.

    Returns True when the request worked and its every segment was
    captured; otherwise says why not.  Raises ConfigError for an unknown
    mode, l7 or an ``out`` that cannot be created; LabError if the lab
    cannot be built or the lab name is taken.
    """
    check_mode(mode)
    if color is None:
        color = sys.stdout.isatty()
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"lab trace --out {out}: {e.strerror}") from None
    t = trace_request(echo, mode, name)
    return t is not None and report(t, out, echo, color)
