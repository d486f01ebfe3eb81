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

The analysis is pure and lives apart: pyfwd.lab.segments turns the frames
into segments and journeys, pyfwd.lab.diagram draws them, ``summary`` here
says them in words; only ``trace_request`` needs root and a lab.

L7 is refused: HAProxy ends the client's connection and opens another to
the real server, with other sequence numbers, so there is no segment to
follow across the balancer.
"""

import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import ConfigError
from . import modes as labmodes
from .diagram import render_svg, render_text
from .segments import CLIENT, LB, journeys, rewritten

__all__ = ["MODES", "summary", "check_mode", "Traced", "trace_request",
           "report", "run"]

FIELD_WORDS = {"eth.src": "source MAC", "eth.dst": "destination MAC",
               "ip.src": "source IP", "ip.dst": "destination IP",
               "ip.ttl": "TTL", "tcp.sport": "source port",
               "tcp.dport": "destination port", "tcp.seq": "TCP seq",
               "tcp.ack": "TCP ack"}
DIRECTIONS = {"c2s": "client to server", "s2c": "server to client"}

# l7 is refused: see the module's docstring
MODES = tuple(m for m in labmodes.MODES if m != "l7")


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
    from .capture import Capture
    from .topology import Lab

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
