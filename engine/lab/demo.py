"""The lab demo: `pyfwd lab demo [--mode dr|nat|snat|l7|all]`.

It is the README's main job (`./tools/run demo`).

For each mode it builds the mode's lab (labmodes.TOPOLOGY), starts a whoami
HTTP server on every real server, starts the balancer in the lb namespace,
then sends requests and a download through the VIP while a capture at the
switch ports (capture.Capture: what each host's NIC sent and received)
counts what crossed the balancer in each direction.  It explains what
happened in plain words, every figure taken from that run: which real
server answered, which client address it saw, which way the reply went, and
the packets and bytes on each side of the balancer.  With more than one mode
it ends with a table of the modes side by side.
"""

import collections
import time
from dataclasses import dataclass, field
from typing import Optional

from . import topology as labmod
from . import modes as labmodes
from .capture import parse_tcp4

DOWNLOAD = 20_000_000
SNAPLEN = 96            # Ethernet + IPv4 + TCP headers with options

# What each mode does, in two sentences: the figures follow.
_WHAT = {
    "dr": "DR (direct routing) rewrites only the destination MAC address of "
          "each request:\nthe real server holds the VIP on lo and answers "
          "the client itself.",
    "nat": "NAT rewrites the destination address:port of each request to "
           "the real server's,\nand the source of each reply back to the "
           "VIP: the real servers route through the balancer.",
    "snat": "SNAT (full NAT) rewrites the destination to the real server "
            "and the source to the\nbalancer's own address and a port it "
            "picks: the replies come back to the balancer.",
    "tun": "TUN wraps each request, unchanged, in an outer IPv4 header "
           "(IPIP) to the real\nserver, which is on another subnet behind a "
           "router: it unwraps it, holds the VIP\nand answers the client "
           "itself.",
    "l7": "L7 runs HAProxy: it ends the client's TCP connection and opens "
          "its own to a real\nserver (X-Forwarded-For carries the client's "
          "address).",
}


# ---------------------------------------------------------------------------
# Counting the capture


@dataclass
class Count:
    frames: int = 0
    octets: int = 0             # on the wire: Ethernet header and all
    # TCP payload bytes: the same however the data was cut into frames (a
    # sender's TSO hands a switch port 64 KiB frames that reach a balancer
    # with XDP segmented, each with its own headers)
    payload: int = 0

    def add(self, wirelen, payload=0):
        self.frames += 1
        self.octets += wirelen
        self.payload += payload


@dataclass
class Wire:
    """The demo's traffic as the switch ports saw it.  `lb` is keyed by
    (direction, sent): direction "request" (to the service's port) or
    "reply" (from it); sent: the balancer sent it (else received it)."""

    lb: dict = field(default_factory=lambda: collections.defaultdict(Count))
    real_replies: Count = field(default_factory=Count)
    client_replies: Count = field(default_factory=Count)
    client_reply_from: collections.Counter = field(
        default_factory=collections.Counter)   # MAC owner -> frames

    def at_lb(self, direction, sent):
        return self.lb[direction, sent]

    def into_lb(self):
        """Everything the balancer received, both directions."""
        return Count(sum(c.frames for (_, sent), c in self.lb.items()
                         if not sent),
                     sum(c.octets for (_, sent), c in self.lb.items()
                         if not sent))

    @classmethod
    def count(cls, frames, ports, owners):
        """Sum `frames` (capture.Frame) of TCP to or from the service
        `ports`; `owners` maps a MAC to the role that has it."""
        w = cls()
        for f in frames:
            seg = parse_tcp4(f.data, f.wirelen)
            if seg is None:
                continue
            direction = ("reply" if seg.sport in ports else
                         "request" if seg.dport in ports else None)
            if direction is None:
                continue
            if f.role == "lb":
                w.lb[direction, f.sent].add(f.wirelen, seg.payload_len)
            elif direction == "reply" and f.role.startswith("real") \
                    and f.sent:
                w.real_replies.add(f.wirelen, seg.payload_len)
            elif direction == "reply" and f.role == "client" \
                    and not f.sent:
                w.client_replies.add(f.wirelen)
                w.client_reply_from[owners.get(seg.src_mac,
                                               seg.src_mac)] += 1
        return w


# ---------------------------------------------------------------------------
# One mode


@dataclass
class Answer:
    ok: bool
    node: str = "?"
    client: str = "?"           # the client address the real server saw
    xff: Optional[str] = None
    error: str = ""


@dataclass
class Result:
    mode: str
    topology: str
    listener: labmodes.Listener
    download: int                           # bytes asked for
    answers: list = field(default_factory=list)     # [Answer]
    download_ok: bool = False
    download_bytes: int = 0                 # bytes curl got
    download_seconds: float = 0.0
    wire: Wire = None
    engine: dict = field(default_factory=dict)      # counters' increase
    lost: list = field(default_factory=list)    # why the capture is short

    @property
    def ok(self):
        return bool(self.download_ok and self.answers
                    and all(a.ok for a in self.answers)
                    and self.captured)

    @property
    def captured(self):
        """The capture holds every frame: its figures are whole."""
        return not self.lost

    @property
    def saw(self):
        """The client addresses the real servers saw (sorted)."""
        return sorted({a.client for a in self.answers if a.ok})


ENGINE_COUNTERS = ("frames", "bytes", "flows_new")


def _engine_counters(eng):
    core = eng.stats()["core"]
    return {k: core[k] for k in ENGINE_COUNTERS}


def _ask(lab, url):
    ok, text = labmodes.curl(lab, "client", url)
    if not ok:
        return Answer(False, error=text)
    who = labmodes.parse_whoami(text)
    return Answer(True, who["node"], who["client"], who["xff"])


def _download(lab, url, size, res):
    t0 = time.monotonic()
    ok, text = labmodes.curl(lab, "client", f"{url}bytes/{size}", 60,
                             ("-o", "/dev/null", "-w", "%{size_download}"))
    res.download_seconds = time.monotonic() - t0
    res.download_ok = ok
    res.download_bytes = int(text) if ok and text.isdigit() else 0


def measure(lab, mode, requests=None, download=DOWNLOAD):
    """Run `mode` in `lab` (its whoami servers already up): requests, then
    one download through the VIP, captured at every switch port.
    Returns a Result."""
    from .capture import Capture

    listener = labmodes.web_listener(mode)
    url = f"http://{listener.vip}:{listener.port}/"
    res = Result(mode, lab.topology, listener, download)
    with labmodes.balancer(lab, mode) as eng:
        # ARP and HAProxy's first connections before the counted traffic
        labmodes.curl(lab, "client", url)
        before = _engine_counters(eng)
        cap = Capture(lab, ["client", "lb", *lab.reals], snaplen=SNAPLEN)
        with cap:
            for _ in range(requests or 2 * len(lab.reals)):
                res.answers.append(_ask(lab, url))
            _download(lab, url, download, res)
            time.sleep(0.2)             # the last ACKs and FINs
        after = _engine_counters(eng)
    res.engine = {k: after[k] - before[k] for k in ENGINE_COUNTERS}
    res.lost = cap.lost                 # [] when the capture is whole
    res.wire = Wire.count(cap.frames(),
                          {listener.port, listener.real_port},
                          labmodes.mac_owners(lab))
    return res


# ---------------------------------------------------------------------------
# Words


def _mb(n):
    return f"{n / 1e6:.1f} MB"


def explain(echo, res, lab):
    """What happened in one mode, in plain words, from res's figures."""
    li = res.listener
    echo(f"\n--- {res.mode.upper()}: VIP {li.vip}:{li.port}, real servers "
         f"on port {li.real_port}, {res.topology} lab ---")
    echo(_WHAT[res.mode])
    _explain_answers(echo, res, lab)
    echo(f"\nA {_mb(res.download)} download through the VIP: "
         + (f"ok, {_mb(res.download_bytes)} in {res.download_seconds:.2f} s."
            if res.download_ok else "FAIL."))
    if not res.captured:
        echo("WARNING: the capture is not whole, the figures below are short "
             "of the truth:\n  " + "\n  ".join(res.lost))
    _explain_wire(echo, res)
    e = res.engine
    echo(f"The engine counted {e['frames']} frames ({_mb(e['bytes'])}) and "
         f"{e['flows_new']} new flows meanwhile"
         + (": HAProxy's connections are its own, the engine's core only "
            "answers ARP for the VIP." if res.mode == "l7" else "."))


def _explain_answers(echo, res, lab):
    li = res.listener
    echo(f"\n{len(res.answers)} requests to http://{li.vip}:{li.port}/, "
         "round robin:")
    for a in res.answers:
        echo(f"  ok   answered by {a.node:<6} which saw the client as "
             f"{a.client}" + (f" (X-Forwarded-For: {a.xff})" if a.xff else "")
             if a.ok else f"  FAIL {a.error}")
    client = lab.ip("client")
    lb = {i.addr4 for i in lab.node("lb").interfaces if i.addr4}
    if res.saw == [client]:
        echo(f"The real servers saw the client's own address ({client}).")
    elif res.saw and set(res.saw) <= lb:
        echo(f"The real servers saw {', '.join(res.saw)}, not the client's "
             f"{client}: that is the balancer's own address"
             + (" (the client's is in X-Forwarded-For)."
                if any(a.xff == client for a in res.answers) else "."))
    else:
        echo(f"The real servers saw {', '.join(res.saw) or 'nothing'}.")


def _explain_wire(echo, res):
    w = res.wire
    echo("On the wire (captured at the switch ports), all of the above: "
         "requests and the\nclient's ACKs go client -> server, answers and "
         "the download server -> client.")
    echo(f"  {'frames / bytes':<22}{'into the balancer':>22}"
         f"{'out of the balancer':>22}")
    for label, d in (("client -> server", "request"),
                     ("server -> client", "reply")):
        i, o = w.at_lb(d, False), w.at_lb(d, True)
        echo(f"  {label:<22}{i.frames:>10} / {_mb(i.octets):>9}"
             f"{o.frames:>10} / {_mb(o.octets):>9}")
    senders = ", ".join(f"{who} ({n})" for who, n in
                        w.client_reply_from.most_common()) or "nobody"
    echo(f"The real servers sent {w.real_replies.frames} reply frames "
         f"({_mb(w.real_replies.octets)}); the client received "
         f"{w.client_replies.frames} ({_mb(w.client_replies.octets)}),\n"
         f"from {senders}.")
    rep_in, rep_out = w.at_lb("reply", False), w.at_lb("reply", True)
    if rep_in.frames == 0:
        echo("No reply crossed the balancer: the replies went from the real "
             "servers straight to the client.")
        return
    share = rep_in.payload / max(1, w.real_replies.payload)
    echo(f"The replies came back through the balancer ({share:.0%} of the "
         f"bytes the real servers sent);\nit sent {rep_out.frames} frames "
         f"of them on to the client for the {rep_in.frames} it received.")


def table(echo, results):
    """The modes side by side."""
    echo("\n=== the modes side by side (measured in this run) ===")
    head = (f"{'mode':<5} {'lab':<8} {'real saw':<9} {'reply path':<17} "
            f"{'frames via lb':>13} {'MB via lb':>9} {'reply MB via lb':>15}")
    echo(head)
    echo("-" * len(head))
    for r in results:
        into, rep = r.wire.into_lb(), r.wire.at_lb("reply", False)
        path = "via balancer" if rep.frames else "direct to client"
        echo(f"{r.mode:<5} {r.topology:<8} {','.join(r.saw) or '-':<9} "
             f"{path:<17} {into.frames:>13} {into.octets / 1e6:>9.1f} "
             f"{rep.octets / 1e6:>15.1f}")
    echo("frames and MB via lb: what the balancer received of the requests "
         "and replies above,\nthe download included; reply MB: the reply "
         "bytes that crossed it.")


def run(echo, modes=labmodes.MODES, reals=3, name="demo"):
    """The demo; True when every request and download worked and the
    captures are whole."""
    echo("pyfwd lab demo: a client, a load balancer and real servers, each "
         "in its own network\nnamespace on this machine. Each real server "
         "runs a whoami HTTP server that tells\nwho answered and which "
         "client address it saw.")
    results = []
    shown = set()
    for mode in modes:
        topology = labmodes.TOPOLOGY[mode]
        with labmod.Lab(name, topology=topology, reals=reals) as lab:
            if topology not in shown:
                echo(f"\n== the {topology} lab ==")
                echo(lab.format_plan())
                shown.add(topology)
            with labmodes.whoami_servers(lab):
                res = measure(lab, mode)
            explain(echo, res, lab)
            results.append(res)
    if len(results) > 1:
        table(echo, results)
    return all(r.ok for r in results)
