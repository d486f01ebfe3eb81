"""Prometheus metrics: the engine's counters in the text exposition format.

render() turns an Engine.stats() snapshot into the text format (version
0.0.4), written by hand: no client library.  MetricsServer serves it over
HTTP at /metrics (loopback by default):

    server = MetricsServer(engine.stats, ("127.0.0.1", 9108)).start()
    ...
    server.stop()

Names: every metric starts with `pyfwd_`; counters end in `_total`.  Per
VIP and real server series carry the labels vip (the VIP's name),
vip_address (ADDR:PORT/PROTO) and real (ADDR:PORT).  A VIP's counters are
the sums of its real servers' and restart from a lower value when a real
server is removed (Prometheus treats that as a counter reset).
"""

import http.server
import ipaddress
import logging
import math
import re
import socket
import threading
from urllib.parse import urlsplit

from .bgp.text import render_metrics as render_bgp
from .text import is_number
from ..errors import ConfigError

log = logging.getLogger("pyfwd.control.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_ADDRESS = ("127.0.0.1", 9108)

# Engine.stats()["core"] keys (struct pyfwd_stats) other than
# frames/bytes/verdict/reason: key -> (metric name, type, help).  Unknown
# keys are left out; tests/unit/test_counters.py pins these tables to the
# header.
CORE_METRICS = {
    "vip_count": ("pyfwd_vips", "gauge", "VIPs in the data plane's tables."),
    "vip_generation": ("pyfwd_table_generation", "gauge",
                       "Tables published to the data plane so far."),
    "flows_new": ("pyfwd_flows_new_total", "counter",
                  "New flows scheduled to a real server."),
    "flow_hits": ("pyfwd_flow_hits_total", "counter",
                  "Frames that matched an established flow."),
    "flows_rescheduled": ("pyfwd_flows_rescheduled_total", "counter",
                          "Flows moved to another real server (theirs left "
                          "or was halted)."),
    "flows_evicted": ("pyfwd_flows_evicted_total", "counter",
                      "Flows evicted from a full flow table."),
    "flows_expired": ("pyfwd_flows_expired_total", "counter",
                      "Flows expired after being idle."),
    "snat_ports_used": ("pyfwd_snat_ports_used", "gauge",
                        "SNAT source ports in use."),
    "flows_half_open": ("pyfwd_flows_half_open", "gauge",
                        "TCP flows whose handshake is not done (held for "
                        "the tcp_syn timeout)."),
    "flows_bypassed": ("pyfwd_flows_bypassed_total", "counter",
                       "Frames of new flows beyond new_flows_per_second "
                       "that DR forwarded by the Maglev table, untracked."),
    "snat_ports_pool": ("pyfwd_snat_ports_pool", "gauge",
                        "SNAT source ports the workers may give (each "
                        "worker its share of the range)."),
    "csum_completed": ("pyfwd_csum_completed_total", "counter",
                       "TCP/UDP checksums a sender left unfinished (a veth's "
                       "tx checksum offload), completed before forwarding."),
    "csum_bad": ("pyfwd_csum_bad_total", "counter",
                 "TCP/UDP checksums neither unfinished nor right, on an "
                 "interface whose checksums are checked (veth): forwarded "
                 "as they came."),
    "fast_frames": ("pyfwd_fast_frames_total", "counter",
                    "Frames the XDP fast path carried (counted in the "
                    "frames and forward totals as well)."),
    "fast_bytes": ("pyfwd_fast_bytes_total", "counter",
                   "Bytes the XDP fast path carried."),
    "fast_stale": ("pyfwd_fast_stale_total", "counter",
                   "Fast path entries found stale (their real changed): "
                   "the frame went to the core."),
    "fast_installed": ("pyfwd_fast_installed_total", "counter",
                       "Established flows handed to the XDP fast path."),
    "fast_removed": ("pyfwd_fast_removed_total", "counter",
                     "Flows taken back from the XDP fast path (closed, "
                     "expired, rescheduled)."),
    "fast_install_failed": ("pyfwd_fast_install_failed_total", "counter",
                            "Flows the XDP fast path had no room for (they "
                            "stay on AF_XDP)."),
    "rx": ("pyfwd_rx_frames_total", "counter",
           "Frames received from the AF_XDP sockets."),
    "tx": ("pyfwd_tx_frames_total", "counter",
           "Frames sent on the AF_XDP sockets."),
    "tx_ring_full": ("pyfwd_tx_ring_full_total", "counter",
                     "Times a TX ring was full."),
    "punt_overflow": ("pyfwd_punt_overflow_total", "counter",
                      "Frames for the control plane lost to a full punt "
                      "ring."),
    "wakeups": ("pyfwd_wakeups_total", "counter",
                "Kernel wake-ups the I/O loops asked for."),
    "polls": ("pyfwd_polls_total", "counter",
              "poll() calls of the I/O loops."),
    "handoff_out": ("pyfwd_handoff_out_total", "counter",
                    "NAT/SNAT frames a queue's worker handed to the "
                    "worker that owns their flow."),
    "handoff_in": ("pyfwd_handoff_in_total", "counter",
                   "NAT/SNAT frames workers took from the others."),
    "tun_gso_cut": ("pyfwd_tun_gso_cut_total", "counter",
                    "TUN: GSO frames the raw-socket backend cut into their "
                    "TCP segments to tunnel each."),
}

# The control plane's responders: Engine.stats() key -> what they handle.
_RESPONDERS = {"arp": "ARP", "icmp": "ICMP to a VIP (ping)",
               "ndp": "IPv6 neighbour discovery for a VIP"}

# Engine.stats()["ha"] counters -> (metric, help).
_HA = {
    "transitions": ("pyfwd_ha_transitions_total",
                    "Role changes (active <-> standby)."),
    "arp_withheld": ("pyfwd_ha_arp_withheld_total",
                     "ARP answers a standby node left to the active one."),
    "ndp_withheld": ("pyfwd_ha_ndp_withheld_total",
                     "IPv6 neighbour advertisements a standby node left to "
                     "the active one."),
    "split_brain": ("pyfwd_ha_split_brain_total",
                    "VIPs another node still claimed after this one became "
                    "active (two active nodes?), once per VIP and MAC."),
    "garp_bursts": ("pyfwd_ha_garp_bursts_total",
                    "Gratuitous ARP bursts sent (at start and on becoming "
                    "active)."),
    "lease_expired": ("pyfwd_ha_lease_expired_total",
                      "Times this node stood down because keepalived's "
                      "check stopped renewing its lease."),
    "peers_evicted": ("pyfwd_ha_peers_evicted_total",
                      "MACs seen holding a VIP while standby that were "
                      "pushed out of the bounded peer table."),
}

# Per queue (RX queue = worker) keys: the I/O loop's counters of struct
# pyfwd_stats -> (metric, type, help).
QUEUE_METRICS = {
    "rx": ("pyfwd_queue_rx_frames_total", "counter",
           "Frames received on an RX queue."),
    "tx": ("pyfwd_queue_tx_frames_total", "counter",
           "Frames sent by a queue's worker."),
    "tx_ring_full": ("pyfwd_queue_tx_ring_full_total", "counter",
                     "Times a queue's TX ring was full."),
    "wakeups": ("pyfwd_queue_wakeups_total", "counter",
                "Kernel wake-ups a queue's worker asked for."),
    "polls": ("pyfwd_queue_polls_total", "counter",
              "poll() calls of a queue's worker."),
    "handoff_out": ("pyfwd_queue_handoff_out_total", "counter",
                    "NAT/SNAT frames a queue's worker handed to the "
                    "owner of their flow (another queue's)."),
    "handoff_in": ("pyfwd_queue_handoff_in_total", "counter",
                   "NAT/SNAT frames a queue's worker took from the "
                   "others (flows it owns)."),
    "tun_gso_cut": ("pyfwd_queue_tun_gso_cut_total", "counter",
                    "TUN: GSO frames a queue's worker cut into segments."),
    "snat_ports_pool": ("pyfwd_queue_snat_ports_pool", "gauge",
                        "SNAT source ports a queue's worker may give (its "
                        "share of the range)."),
}

# Per real server keys (struct pyfwd_real_stats) -> (metric suffix, type,
# help); pyfwd_real_SUFFIX, and pyfwd_vip_SUFFIX sums them.
REAL_METRICS = {
    "frames": ("frames_total", "counter", "Frames forwarded"),
    "bytes": ("bytes_total", "counter", "Bytes forwarded"),
    "flows_new": ("flows_new_total", "counter", "New flows scheduled"),
    "active": ("flows_active", "gauge", "Flows alive"),
}

REAL_STATES = ("online", "drain", "halt")

# What the kernel counted at the data plane's sockets (Engine.stats()
# ["sockets"]: struct pyfwd_sock_stats), by backend: key -> (metric, help);
# all counters, labelled queue and iface.  tests/unit/test_sockdrops.py
# pins these tables to the header.
XSK_SOCK_METRICS = {
    "rx_dropped": ("pyfwd_xsk_rx_dropped_total",
                   "Frames an AF_XDP socket dropped for other reasons than "
                   "the ones counted apart (too big for a UMEM frame, no "
                   "free frame to copy into)."),
    "rx_invalid_descs": ("pyfwd_xsk_rx_invalid_descs_total",
                         "Frames an AF_XDP socket dropped: an invalid RX "
                         "descriptor."),
    "tx_invalid_descs": ("pyfwd_xsk_tx_invalid_descs_total",
                         "Frames an AF_XDP socket did not send: an invalid "
                         "TX descriptor."),
    "rx_ring_full": ("pyfwd_xsk_rx_ring_full_total",
                     "Frames an AF_XDP socket dropped because its RX ring "
                     "was full (the queue's loop fell behind or stalled)."),
    "rx_fill_ring_empty_descs": ("pyfwd_xsk_rx_fill_ring_empty_descs_total",
                                 "Times an AF_XDP socket found its fill "
                                 "ring empty (no frame to receive into)."),
    "tx_ring_empty_descs": ("pyfwd_xsk_tx_ring_empty_descs_total",
                            "Times the kernel found an AF_XDP socket's TX "
                            "ring empty when kicked (not a drop)."),
}
AFP_SOCK_METRICS = {
    "packets": ("pyfwd_afp_packets_total",
                "Frames a raw socket's filter kept for the engine, dropped "
                "ones included."),
    "drops": ("pyfwd_afp_drops_total",
              "Frames a raw socket dropped: its ring had no room (the loop "
              "fell behind or stalled)."),
    "freeze_q_cnt": ("pyfwd_afp_freeze_q_cnt_total",
                     "Times a raw socket's ring filled up (froze)."),
}
SOCK_METRICS = {"xdp": XSK_SOCK_METRICS, "afpacket": AFP_SOCK_METRICS}


def escape_label(value):
    """A label value as the text format wants it: \\ " and newline
    escaped."""
    return (str(value).replace("\\", "\\\\").replace("\"", "\\\"")
            .replace("\n", "\\n"))


def _escape_help(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value):
    """A sample value: integers exactly, floats in repr, NaN and +-Inf as
    the format spells them; booleans as 1/0."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class _Families:
    """Metric families in the order they were first declared."""

    def __init__(self):
        self._order = []
        self._families = {}

    def declare(self, name, kind, help_):
        if name not in self._families:
            self._order.append(name)
            self._families[name] = (kind, help_, [])

    def add(self, name, value, labels=None, kind="gauge", help_=""):
        """One sample; None values are left out (not known)."""
        if value is None:
            return
        if isinstance(value, str) or not isinstance(value, (int, float)):
            return              # not a number: not a sample
        self.declare(name, kind, help_)
        self._families[name][2].append((labels or {}, value))

    def text(self):
        out = []
        for name in self._order:
            kind, help_, samples = self._families[name]
            if not samples:
                continue
            out.append(f"# HELP {name} {_escape_help(help_)}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                if labels:
                    inner = ",".join(f"{k}=\"{escape_label(v)}\""
                                     for k, v in labels.items())
                    out.append(f"{name}{{{inner}}} {format_value(value)}")
                else:
                    out.append(f"{name} {format_value(value)}")
        return "\n".join(out) + "\n" if out else ""


def render(stats):
    """The text exposition (format 0.0.4) of an Engine.stats() snapshot.

    Keys missing from `stats` leave their metrics out; a malformed value
    (not a number) is skipped rather than rendered.
    """
    f = _Families()
    counter, gauge = "counter", "gauge"
    uptime = stats.get("uptime")
    f.add("pyfwd_uptime_seconds", uptime, kind=gauge,
          help_="Seconds since the engine started.")

    xsk = stats.get("xsk")
    if isinstance(xsk, dict):
        busy = xsk.get("busy_poll")
        f.add("pyfwd_dataplane_info", 1, {
            "xdp_mode": xsk.get("xdp_mode", ""),
            "copy_mode": xsk.get("copy_mode", ""),
            "busy_poll": ("true" if busy else "false")
            if isinstance(busy, bool) else str(busy or ""),
            "queues": str(xsk.get("queues", "")),
            "fastpath": str(xsk.get("fastpath", "")),
        }, gauge, "The data plane's set-up (XDP mode, AF_XDP copy mode, "
                  "busy polling, queues, the XDP fast path: on, off or "
                  "refused); always 1.")

    core = stats.get("core") or {}
    f.add("pyfwd_frames_total", core.get("frames"), kind=counter,
          help_="Frames the data plane processed.")
    f.add("pyfwd_bytes_total", core.get("bytes"), kind=counter,
          help_="Bytes the data plane processed.")
    for verdict, n in (core.get("verdict") or {}).items():
        f.add("pyfwd_frames_by_verdict_total", n, {"verdict": verdict},
              counter, "Frames by verdict (pass: to the kernel, punt: to "
              "the control plane, forward, drop).")
    for reason, n in (core.get("reason") or {}).items():
        f.add("pyfwd_frames_by_reason_total", n, {"reason": reason},
              counter, "Frames by the reason of their verdict (drop_*: why "
              "a frame was dropped).")
    for key, (name, kind, help_) in CORE_METRICS.items():
        f.add(name, core.get(key), kind=kind, help_=help_)

    for i, q in enumerate(stats.get("queues") or ()):
        for key, (name, kind, help_) in QUEUE_METRICS.items():
            f.add(name, q.get(key), {"queue": str(i)}, kind, help_)

    _render_sockets(f, stats.get("sockets"))

    for key, what in _RESPONDERS.items():
        for event, n in (stats.get(key) or {}).items():
            f.add(f"pyfwd_{key}_events_total", n, {"event": event}, counter,
                  f"{what} handled by the control plane, by outcome.")
    _render_ha(f, stats.get("ha"))
    _render_punt(f, stats.get("punt"))
    render_bgp(f, stats.get("bgp"))

    _render_vips(f, stats.get("vips") or ())
    return f.text()


def _render_sockets(f, sockets):
    """The kernel's counters of each socket (SOCK_METRICS), labelled queue
    and iface; a backend or counter this pyfwd does not know is left
    out."""
    if not isinstance(sockets, dict):
        return
    for backend, rows in sockets.items():
        table = SOCK_METRICS.get(backend, {})
        for row in rows if isinstance(rows, list) else ():
            labels = {"queue": str(row.get("queue", "")),
                      "iface": str(row.get("iface", ""))}
            for key, (name, help_) in table.items():
                f.add(name, row.get(key), labels, "counter", help_)


def _render_ha(f, ha):
    """The node's high-availability role: pyfwd_ha_role{role} is 1 for the
    role it has, 0 for the other (alert on two nodes with role="active")."""
    if not isinstance(ha, dict):
        return
    for role in ("active", "standby"):
        f.add("pyfwd_ha_role", int(ha.get("role") == role), {"role": role},
              "gauge", "This node's high-availability role (1: the one it "
              "has).")
    f.add("pyfwd_ha_role_since_seconds", ha.get("since"), kind="gauge",
          help_="When the role last changed (or the engine started), in "
          "seconds since the epoch.")
    for key, (name, help_) in _HA.items():
        f.add(name, ha.get(key), kind="counter", help_=help_)


def _render_punt(f, punt):
    """The punt thread (control.punts.Punts.fairness()): its work, the
    rate limits of ARP/NDP answers and the bounded conflict tables."""
    if not isinstance(punt, dict):
        return
    f.add("pyfwd_punt_frames_total", punt.get("frames"), kind="counter",
          help_="Punted frames the punt thread answered or judged.")
    f.add("pyfwd_punt_batches_total", punt.get("batches"), kind="counter",
          help_="Batches the punt thread drained from the punt ring.")
    for kind in ("arp", "ndp"):
        limits = punt.get(kind) or {}
        for by in ("source", "total"):
            f.add("pyfwd_punt_rate_limited_total",
                  limits.get(f"limited_{by}"), {"kind": kind, "by": by},
                  "counter", "ARP/NDP answers refused by a rate limit "
                  "(by: the asking MAC's own bucket, or the total one).")
        f.add("pyfwd_punt_sources_evicted_total",
              limits.get("sources_evicted"), {"kind": kind}, "counter",
              "Asking MACs pushed out of the rate limiter's bounded table.")
        f.add("pyfwd_punt_conflicts_evicted_total",
              punt.get(f"{kind}_conflicts_evicted"), {"kind": kind},
              "counter", "(VIP, MAC) claims pushed out of the bounded "
              "conflict table.")


def _render_vips(f, vips):
    gauge = "gauge"
    # declare in a stable order: VIP families first, then the reals'
    for key, (suffix, kind, help_) in REAL_METRICS.items():
        f.declare(f"pyfwd_vip_{suffix}", kind, f"{help_} for a VIP (sum of "
                  "its real servers).")
    for key, (suffix, kind, help_) in REAL_METRICS.items():
        f.declare(f"pyfwd_real_{suffix}", kind, f"{help_} to a real server.")
    for v in vips:
        address = v.get("vip", "")
        vl = {"vip": v.get("name") or address, "vip_address": address}
        reals = v.get("reals") or ()
        f.add("pyfwd_vip_info", 1, {**vl, "mode": v.get("mode") or "",
                                    "scheduler": v.get("scheduler") or ""},
              gauge, "A VIP's mode and scheduler; always 1.")
        f.add("pyfwd_vip_fallback_active", v.get("fallback_active"), vl,
              gauge, "1 when a VIP sends its flows to its fallback server "
              "(no real server is up).")
        for key, (suffix, kind, help_) in REAL_METRICS.items():
            values = [r.get(key) for r in reals]
            values = [x for x in values if is_number(x)]
            f.add(f"pyfwd_vip_{suffix}", sum(values) if values else
                  (0 if not reals else None), vl, kind)
        for r in reals:
            rl = {**vl, "real": r.get("real", "")}
            for key, (suffix, kind, help_) in REAL_METRICS.items():
                f.add(f"pyfwd_real_{suffix}", r.get(key), rl, kind)
            f.add("pyfwd_real_weight", r.get("weight"), rl, gauge,
                  "A real server's weight.")
            health = r.get("health")
            if health in ("up", "down"):
                f.add("pyfwd_real_health_up", 1 if health == "up" else 0,
                      rl, gauge, "A real server's health check: 1 up, 0 "
                      "down (absent without a health check).")
            state = r.get("state")
            if state is not None:
                for s in REAL_STATES + (() if state in REAL_STATES
                                        else (str(state),)):
                    f.add("pyfwd_real_state", 1 if s == state else 0,
                          {**rl, "state": s}, gauge,
                          "A real server's administrative state: 1 for the "
                          "current one (online, drain, halt).")
            f.add("pyfwd_real_scheduled", r.get("scheduled"), rl, gauge,
                  "1 when new flows may go to a real server.")
            hs = r.get("haproxy_state")
            if hs is not None:      # an L7 VIP's server, as HAProxy has it
                f.add("pyfwd_haproxy_server_state", 1,
                      {**rl, "state": str(hs),
                       "status": str(r.get("haproxy_status") or "")}, gauge,
                      "An L7 real server's state in HAProxy (ready, drain, "
                      "maint) and its operational status.")


# --- HTTP ----------------------------------------------------------------

def parse_address(text, default_host=DEFAULT_ADDRESS[0]):
    """`ADDR:PORT` -> (host, port): 127.0.0.1:9108, [::1]:9108, :9108 or
    9108 (on `default_host`, loopback).  Port 0 picks a free port.

    Raises ConfigError naming the text and the expected form.
    """
    form = ("expected ADDR:PORT, e.g. 127.0.0.1:9108, [::1]:9108 or :9108")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"metrics address {text!r}: {form}")
    s = text.strip()
    if s.isdigit():
        host, port = default_host, s
    elif s.startswith("["):
        m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", s)
        if not m:
            raise ConfigError(f"metrics address {text!r}: {form}")
        host, port = m.group(1), m.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"metrics address {text!r}: {host!r} is not "
                              "an IPv6 address") from None
    else:
        host, sep, port = s.rpartition(":")
        if not sep:
            raise ConfigError(f"metrics address {text!r}: {form}")
        if ":" in host:
            raise ConfigError(f"metrics address {text!r}: write an IPv6 "
                              "address in brackets, e.g. [::1]:9108")
        host = host or default_host
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?",
                                host):
                raise ConfigError(f"metrics address {text!r}: {host!r} is "
                                  "not an address or host name") from None
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"metrics address {text!r}: port {port!r}: "
                          "expected 0 to 65535")
    return host, int(port)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "pyfwd"
    timeout = 10                # a slow client does not hold a thread

    def do_GET(self):
        self._respond(body=True)
    do_POST = do_GET            # the dashboard's actions (web)

    def do_HEAD(self):
        self._respond(body=False)

    def _respond(self, body):
        if self.server.web and self.server.web.handle(self, body):
            return              # the dashboard's (control.web)
        if urlsplit(self.path).path != "/metrics":
            self._send(404, b"not found: try /metrics\n", "text/plain; "
                       "charset=utf-8", body)
            return
        try:
            text = render(self.server.get_stats())
        except Exception as exc:    # the scrape fails, the server stays
            log.exception("metrics: rendering failed")
            self._send(500, f"error: {exc}\n".encode(),
                       "text/plain; charset=utf-8", body)
            return
        self._send(200, text.encode(), CONTENT_TYPE, body)

    def _send(self, code, data, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format, *args):    # noqa: A002 (http.server's)
        log.debug("metrics: %s %s", self.address_string(), format % args)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_port = False    # a second engine on the port must fail

    def __init__(self, address, get_stats, web=None):
        self.get_stats, self.web = get_stats, web
        self.address_family = (socket.AF_INET6 if ":" in address[0]
                               else socket.AF_INET)
        super().__init__(address, _Handler)


class MetricsServer:
    """Serves render(get_stats()) at http://ADDRESS/metrics, web (the
    dashboard, control.web.Dashboard) at /, /static/, /api/; 404 elsewhere.
    get_stats: a callable returning an Engine.stats() snapshot; an
    exception from it answers that scrape with 500 (logged).  address:
    (host, port), port 0 picks a free port (see .port once started).
    """

    def __init__(self, get_stats, address=DEFAULT_ADDRESS, web=None):
        self.get_stats, self.web = get_stats, web
        self.address = tuple(address)
        self._httpd = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def port(self):
        """The bound port (useful with port 0); None before start()."""
        return self._httpd.server_address[1] if self._httpd else None

    @property
    def url(self):
        """http://HOST:PORT/metrics of the running server."""
        host = self._httpd.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/metrics"

    def start(self):
        """Bind and serve in a background thread; returns self.  Raises
        ConfigError when the address cannot be bound."""
        if self._httpd is not None:
            return self
        try:
            self._httpd = _HTTPServer(self.address, self.get_stats, self.web)
        except OSError as exc:
            host, port = self.address[0], self.address[1]
            host = f"[{host}]" if ":" in host else host
            raise ConfigError(f"metrics address {host}:{port}: "
                              f"{exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="pyfwd-metrics", daemon=True)
        self._thread.start()
        log.info("metrics at %s", self.url)
        return self

    def stop(self):
        """Stop serving and close the socket.  Idempotent."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)
        self._httpd = None
