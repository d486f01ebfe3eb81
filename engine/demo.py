"""The lab demo: `pyfwd lab demo [--mode dr|nat|snat|l7|all]`, the main job.

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
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field

from . import lab as labmod
from . import labmodes
from .errors import LabError

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
    "l7": "L7 runs HAProxy: it ends the client's TCP connection and opens "
          "its own to a real\nserver (X-Forwarded-For carries the client's "
          "address).",
}


def curl(lab, role, url, timeout=5, *args):
    """GET url with curl from role's namespace; (ok, body or error)."""
    r = lab.run(role, ["curl", "-sS", "--max-time", str(timeout), *args,
                       url], capture_output=True, text=True,
                timeout=timeout + 5)
    return r.returncode == 0, (r.stdout if r.returncode == 0
                               else r.stderr).strip()


# ---------------------------------------------------------------------------
# Counting the capture


@dataclass
class Count:
    frames: int = 0
    bytes: int = 0

    def add(self, wirelen):
        self.frames += 1
        self.bytes += wirelen


def tcp_ports(data):
    """(source port, destination port) of an Ethernet/IPv4/TCP frame, else
    None (ARP, IPv6, fragments, short captures)."""
    if len(data) < 34 or data[12:14] != b"\x08\x00":
        return None
    ihl = (data[14] & 0x0F) * 4
    if data[23] != 6 or ihl < 20 or len(data) < 14 + ihl + 4:
        return None
    if struct.unpack_from("!H", data, 20)[0] & 0x1FFF:
        return None                     # a fragment other than the first
    return struct.unpack_from("!HH", data, 14 + ihl)


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

    @classmethod
    def count(cls, frames, ports, owners):
        """Sum `frames` (capture.Frame) of TCP to or from the service
        `ports`; `owners` maps a MAC to the role that has it."""
        w = cls()
        for f in frames:
            tp = tcp_ports(f.data)
            if tp is None:
                continue
            direction = ("reply" if tp[0] in ports else
                         "request" if tp[1] in ports else None)
            if direction is None:
                continue
            if f.role == "lb":
                w.lb[direction, f.sent].add(f.wirelen)
            elif direction == "reply" and f.role.startswith("real") \
                    and f.sent:
                w.real_replies.add(f.wirelen)
            elif direction == "reply" and f.role == "client" \
                    and not f.sent:
                w.client_replies.add(f.wirelen)
                src = ":".join(f"{b:02x}" for b in f.data[6:12])
                w.client_reply_from[owners.get(src, src)] += 1
        return w


# ---------------------------------------------------------------------------
# One mode


@dataclass
class Result:
    mode: str
    topology: str
    answers: list = field(default_factory=list)   # (ok, node, client, xff)
    download_ok: bool = False
    download_bytes: int = 0
    download_seconds: float = 0.0
    wire: Wire = None
    engine: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.download_ok and self.answers and \
            all(a[0] for a in self.answers)

    @property
    def saw(self):
        """The client addresses the real servers saw (sorted)."""
        return sorted({a[2] for a in self.answers if a[0]})

    @property
    def nodes(self):
        return collections.Counter(a[1] for a in self.answers if a[0])


def _parse_whoami(text):
    """node, client address, xff from a whoami answer."""
    kv = dict(p.split("=", 1) for p in text.split() if "=" in p)
    return (kv.get("node", "?"), kv.get("client", "?").rsplit(":", 1)[0],
            kv.get("xff"))


def _owners(lab):
    return {i.mac: (n.role if len(n.interfaces) == 1
                    else f"{n.role} {i.name}")
            for n in lab.plan().hosts for i in n.interfaces if i.mac}


def measure(lab, mode, requests=None, download=DOWNLOAD):
    """Run `mode` in `lab` (its whoami servers already up): requests, then
    one download through the VIP, captured at every switch port.
    Returns a Result."""
    from .capture import Capture

    listener = labmodes.web_listener(mode)
    url = f"http://{listener.vip}:{listener.port}/"
    res = Result(mode, lab.topology)
    with labmodes.balancer(lab, mode) as eng:
        # ARP and HAProxy's first connections before the counted traffic
        curl(lab, "client", url)
        with Capture(lab, ["client", "lb", *lab.reals],
                     snaplen=SNAPLEN) as cap:
            for _ in range(requests or 2 * len(lab.reals)):
                ok, text = curl(lab, "client", url)
                res.answers.append((ok, *_parse_whoami(text)) if ok
                                   else (False, text, "", None))
            t0 = time.monotonic()
            r = lab.run("client", ["curl", "-sS", "--max-time", "60", "-o",
                                   "/dev/null", "-w", "%{size_download}",
                                   f"{url}bytes/{download}"],
                        capture_output=True, text=True, timeout=70)
            res.download_seconds = time.monotonic() - t0
            res.download_ok = r.returncode == 0
            res.download_bytes = int(r.stdout or 0) \
                if r.stdout.strip().isdigit() else 0
            time.sleep(0.2)             # the last ACKs and FINs
        core = eng.stats()["core"]
        res.engine = {k: core[k] for k in ("frames", "bytes", "flows_new")}
    res.wire = Wire.count(cap.frames(),
                          {listener.port, listener.real_port}, _owners(lab))
    return res


# ---------------------------------------------------------------------------
# Words


def _mb(n):
    return f"{n / 1e6:.1f} MB"


def explain(echo, res, lab):
    """What happened in one mode, in plain words, from res's figures."""
    listener = labmodes.web_listener(res.mode)
    vip = f"{listener.vip}:{listener.port}"
    echo(f"\n--- {res.mode.upper()}: VIP {vip}, real servers on port "
         f"{listener.real_port}, {res.topology} lab ---")
    echo(_WHAT[res.mode])
    echo(f"\n{len(res.answers)} requests to http://{vip}/, round robin:")
    for ok, node, client, xff in res.answers:
        echo(f"  {'ok  ' if ok else 'FAIL'} answered by {node:<6} which saw "
             f"the client as {client}" + (f" (X-Forwarded-For: {xff})"
                                          if xff else "") if ok
             else f"  FAIL {node}")
    saw = ", ".join(res.saw) or "nothing"
    client = lab.ip("client")
    if res.saw == [client]:
        echo(f"The real servers saw the client's own address ({client}).")
    else:
        echo(f"The real servers saw {saw}, not the client's {client}: "
             "that is the balancer" + (" (the client's is in "
                                       "X-Forwarded-For)."
                                       if res.mode == "l7" else "."))
    w = res.wire
    echo(f"\nA {_mb(DOWNLOAD)} download through the VIP: "
         f"{'ok' if res.download_ok else 'FAIL'}, {_mb(res.download_bytes)}"
         f" in {res.download_seconds:.2f} s.")
    echo("On the wire (captured at the switch ports), all of the above: "
         "requests and the\nclient's ACKs go client -> server, answers and "
         "the download server -> client.")
    rows = [("client -> server", "request"), ("server -> client", "reply")]
    echo(f"  {'frames / bytes':<22}{'into the balancer':>22}"
         f"{'out of the balancer':>22}")
    for label, d in rows:
        i, o = w.at_lb(d, False), w.at_lb(d, True)
        echo(f"  {label:<22}{i.frames:>10} / {_mb(i.bytes):>9}"
             f"{o.frames:>10} / {_mb(o.bytes):>9}")
    echo(f"  the real servers sent {w.real_replies.frames} reply frames "
         f"({_mb(w.real_replies.bytes)}); the client received "
         f"{w.client_replies.frames} ({_mb(w.client_replies.bytes)}), from "
         + ", ".join(f"{who} ({n})" for who, n in
                     w.client_reply_from.most_common()) + ".")
    rep_in = w.at_lb("reply", False)
    if rep_in.frames == 0:
        echo("No reply crossed the balancer: the replies went from the real "
             "servers straight to the client.")
    else:
        share = rep_in.bytes / max(1, w.real_replies.bytes)
        echo(f"The replies came back through the balancer ({share:.0%} of "
             "the bytes the real servers sent), which passed them on to the "
             "client.")
    echo(f"The engine counted {res.engine['frames']} frames, "
         f"{_mb(res.engine['bytes'])}, {res.engine['flows_new']} new flows"
         + (" (HAProxy's connections are its own: the engine's core only "
            "answers ARP)." if res.mode == "l7" else "."))


def table(echo, results):
    """The modes side by side."""
    echo("\n=== the modes side by side (measured in this run) ===")
    head = (f"{'mode':<5} {'lab':<8} {'real saw':<9} {'reply path':<17} "
            f"{'frames via lb':>13} {'MB via lb':>9} {'reply MB via lb':>15}")
    echo(head)
    echo("-" * len(head))
    for r in results:
        w = r.wire
        into = sum(c.frames for (d, sent), c in w.lb.items() if not sent)
        mb = sum(c.bytes for (d, sent), c in w.lb.items() if not sent)
        rep = w.at_lb("reply", False)
        path = ("via balancer" if rep.frames else "direct to client")
        saw = ",".join(r.saw) or "-"
        echo(f"{r.mode:<5} {r.topology:<8} {saw:<9} {path:<17} "
             f"{into:>13} {mb / 1e6:>9.1f} {rep.bytes / 1e6:>15.1f}")
    echo("frames and MB via lb: what the balancer received of the requests "
         "and replies above,\nthe download included; reply MB: the reply "
         "bytes that crossed it.")


def run(echo, modes=labmodes.MODES, reals=3, name="demo"):
    """The demo; returns True when every request and download worked."""
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
