"""Prometheus metrics: the engine's families, from its stats() snapshot.

`EngineCollector` is a prometheus_client collector: every collect() reads
one Engine.stats() snapshot and yields its families.  The metrics
listener (control.metrics_http) serves it beside the process's and the
platform's collectors, in the text format or OpenMetrics.  render(stats)
gives the text format of one snapshot (tests, tools):

    text = render(engine.stats())

Names: every family starts with `pyfwd_`; counters end in `_total`;
times are wall-clock timestamps (`..._timestamp_seconds`, like
process_start_time_seconds), never ages; capacity gauges come in pairs,
`..._used` and `..._capacity`.  Per VIP and real server series carry the
labels vip (the VIP's name), vip_address (ADDR:PORT/PROTO) and real
(ADDR:PORT).

Counters never go down while their series exists: a real's count
survives its halts and health flips, and a VIP's totals keep what its
departed real servers counted, and an L7 VIP's (HAProxy's) are carried
over HAProxy's reloads (control.ledger).  A VIP deleted and added again,
and a restarted engine, start from 0: a counter reset, which
Prometheus's rate() handles.
"""

import importlib.metadata
import platform

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from .bgp.text import render_metrics as render_bgp
from .text import is_number
from .. import __version__

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
    "snat_ports_pool": ("pyfwd_snat_ports_capacity", "gauge",
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
    "snat_ports_pool": ("pyfwd_queue_snat_ports_capacity", "gauge",
                        "SNAT source ports a queue's worker may give (its "
                        "share of the range)."),
}

# Per real server keys (struct pyfwd_real_stats) -> (metric suffix, type,
# help); pyfwd_real_SUFFIX, and pyfwd_vip_SUFFIX sums them.
REAL_METRICS = {
    "frames": ("frames_total", "counter", "Frames forwarded"),
    "bytes": ("bytes_total", "counter", "Bytes forwarded"),
    "flows_new": ("flows_new_total", "counter", "New flows scheduled"),
    "active": ("flows_active", "gauge",
               "Flows alive, established or half-open (ipvsadm's "
               "ActiveConn)"),
    "inactive": ("flows_inactive", "gauge",
                 "Flows alive and closing: a FIN or RST seen, kept for "
                 "tcp_fin_timeout (ipvsadm's InActConn)"),
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

def build_info():
    """pyfwd_build_info's labels that do not depend on the engine: the
    installed version and the Python running it."""
    try:
        version = importlib.metadata.version("pyfwd")
    except importlib.metadata.PackageNotFoundError:
        version = __version__
    return {"version": version, "python": platform.python_version(),
            "implementation": platform.python_implementation()}


class _Families:
    """Metric families in the order they were first declared; add()
    takes the full sample name (`..._total` for a counter, `..._info` for
    an info)."""

    def __init__(self):
        self._order = []
        self._families = {}

    def declare(self, name, kind, help_):
        if name not in self._families:
            suffix = {"counter": "_total", "info": "_info"}.get(kind)
            family = name[:-len(suffix)] if suffix and \
                name.endswith(suffix) else name
            self._order.append(name)
            self._families[name] = Metric(family, help_, kind)

    def add(self, name, value, labels=None, kind="gauge", help_=""):
        """One sample; None and values that are not numbers are left out
        (not known)."""
        if value is None:
            return
        if isinstance(value, str) or not isinstance(value, (int, float)):
            return              # not a number: not a sample
        self.declare(name, kind, help_)
        self._families[name].add_sample(
            name, {k: str(v) for k, v in (labels or {}).items()}, value)

    def metrics(self):
        """The families that have samples."""
        return [self._families[n] for n in self._order
                if self._families[n].samples]


class EngineCollector(Collector):
    """The engine's families: collect() reads get_stats() (an
    Engine.stats() snapshot) once per scrape; an exception from it fails
    the scrape (the listener answers 500)."""

    def __init__(self, get_stats):
        self.get_stats = get_stats
        self.build = build_info()

    def describe(self):
        return []               # not known before a snapshot: none checked

    def collect(self):
        return families(self.get_stats(), self.build)


class _Snapshot(Collector):
    """One snapshot's families (render())."""

    def __init__(self, stats, build):
        self.stats, self.build = stats, build

    def collect(self):
        return families(self.stats, self.build)


def render(stats, build=None):
    """The text exposition (format 0.0.4) of an Engine.stats() snapshot;
    with pyfwd_build_info when build (build_info()'s labels) is given, as
    EngineCollector does.

    Keys missing from `stats` leave their metrics out; a malformed value
    (not a number) is skipped rather than rendered.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(stats, build))
    return generate_latest(registry).decode()


def families(stats, build=None):
    """The list of metric families (prometheus_client Metric) of an
    Engine.stats() snapshot; build: build_info()'s labels for
    pyfwd_build_info (None: left out)."""
    f = _Families()
    counter, gauge = "counter", "gauge"
    xsk = stats.get("xsk") if isinstance(stats.get("xsk"), dict) else {}
    if build is not None:
        f.add("pyfwd_build_info", 1, {
            **build, "backend": xsk.get("backend", ""),
            "fastpath": xsk.get("fastpath", "")}, "info",
            "pyfwd's version, the Python running it, the data plane's "
            "backend (xdp, afpacket) and XDP fast path (on, off, refused); "
            "always 1.")
    f.add("pyfwd_start_time_seconds", stats.get("started_at"), kind=gauge,
          help_="When the engine started, in seconds since the epoch.")
    _render_reload(f, stats.get("config_reload"))

    if xsk:
        busy = xsk.get("busy_poll")
        f.add("pyfwd_dataplane_info", 1, {
            "xdp_mode": xsk.get("xdp_mode", ""),
            "copy_mode": xsk.get("copy_mode", ""),
            "busy_poll": ("true" if busy else "false")
            if isinstance(busy, bool) else str(busy or ""),
            "queues": str(xsk.get("queues", "")),
            "fastpath": str(xsk.get("fastpath", "")),
        }, "info", "The data plane's set-up (XDP mode, AF_XDP copy mode, "
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
    _render_room(f, stats.get("room"))

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
    return f.metrics()


def _render_reload(f, loaded):
    """The config file's loads (Changes.reload_status()), as Prometheus
    tells its own: whether the last worked, when it was, when the last
    that worked was."""
    if not isinstance(loaded, dict) or loaded.get("last") is None:
        return                  # no config file
    f.add("pyfwd_config_last_reload_successful", int(bool(loaded.get("ok"))),
          kind="gauge", help_="1 if the config file's last load (at start "
          "or by reload) worked, 0 if it was refused.")
    f.add("pyfwd_config_last_reload_timestamp_seconds", loaded.get("last"),
          kind="gauge", help_="When the config file was last loaded (at "
          "start or by reload, refused or not), in seconds since the "
          "epoch.")
    f.add("pyfwd_config_last_reload_success_timestamp_seconds",
          loaded.get("last_ok"), kind="gauge",
          help_="When the config file was last loaded successfully, in "
          "seconds since the epoch.")


def _render_room(f, room):
    """The capacity gauges (Core.room()): flow table slots, the punt
    rings, the XDP fast path's flow map."""
    if not isinstance(room, dict):
        return
    f.add("pyfwd_flow_slots_used", room.get("flow_slots_used"),
          kind="gauge",
          help_="Flow table slots in use, exact, summed over the workers: "
          "a slot holds one direction of a flow (a DR or TUN flow takes "
          "one, a NAT or SNAT flow two) or a persistence entry (one per "
          "client of a persistent VIP), the flows of removed real servers "
          "too; an expired entry until the sweep frees it (within ~1 s).")
    f.add("pyfwd_flow_slots_capacity", room.get("flow_slots"), kind="gauge",
          help_="Flow table slots of all workers (--flows per queue).")
    f.add("pyfwd_punt_ring_used", room.get("punt_queued"), kind="gauge",
          help_="Punted frames (ARP, ICMP, NDP for a VIP) waiting for the "
          "control plane.")
    f.add("pyfwd_punt_ring_capacity", room.get("punt_slots"), kind="gauge",
          help_="Slots of the punt rings (one per worker).")
    f.add("pyfwd_fast_flows_used", room.get("fast_flows"), kind="gauge",
          help_="Entries of the XDP fast path's flow map in use.")
    f.add("pyfwd_fast_flows_capacity", room.get("fast_slots"), kind="gauge",
          help_="Entries of the XDP fast path's flow map.")


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
    f.add("pyfwd_ha_role_last_change_timestamp_seconds", ha.get("since"),
          kind="gauge", help_="When the role last changed (or the engine "
          "started), in seconds since the epoch.")
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
        f.declare(f"pyfwd_vip_{suffix}", kind, f"{help_} for a VIP (its "
                  "real servers', departed ones included)." if
                  kind == "counter" else f"{help_} for a VIP (sum of its "
                  "real servers).")
    for key, (suffix, kind, help_) in REAL_METRICS.items():
        f.declare(f"pyfwd_real_{suffix}", kind, f"{help_} to a real server.")
    for v in vips:
        address = v.get("vip", "")
        vl = {"vip": v.get("name") or address, "vip_address": address}
        reals = v.get("reals") or ()
        f.add("pyfwd_vip_info", 1, {**vl, "mode": v.get("mode") or "",
                                    "scheduler": v.get("scheduler") or ""},
              "info", "A VIP's mode and scheduler; always 1.")
        f.add("pyfwd_vip_fallback_active", v.get("fallback_active"), vl,
              gauge, "1 when a VIP sends its flows to its fallback server "
              "(no real server is up).")
        f.add("pyfwd_vip_reals_scheduled",
              sum(1 for r in reals if r.get("state") != "fallback"
                  and r.get("scheduled") is True), vl, gauge,
              "Real servers of a VIP that new flows may go to (the fallback "
              "server not counted).")
        totals = v.get("totals")
        totals = totals if isinstance(totals, dict) else {}
        for key, (suffix, kind, help_) in REAL_METRICS.items():
            if kind == "counter":       # the ledger's (Report._totals)
                f.add(f"pyfwd_vip_{suffix}", totals.get(key), vl, kind)
                continue
            values = [r.get(key) for r in reals]
            values = [x for x in values if is_number(x)]
            f.add(f"pyfwd_vip_{suffix}", sum(values) if values else
                  (0 if not reals else None), vl, kind)
        for r in reals:
            _render_real(f, {**vl, "real": r.get("real", "")}, r)


def _render_real(f, rl, r):
    gauge = "gauge"
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
    f.add("pyfwd_real_last_change_timestamp_seconds", r.get("last_change"),
          rl, gauge, "When a real server's administrative state, health or "
          "scheduling last changed (or it was added), in seconds since the "
          "epoch.")
    hs = r.get("haproxy_state")
    if hs is not None:      # an L7 VIP's server, as HAProxy has it
        f.add("pyfwd_haproxy_server_state", 1,
              {**rl, "state": str(hs),
               "status": str(r.get("haproxy_status") or "")}, gauge,
              "An L7 real server's state in HAProxy (ready, drain, "
              "maint) and its operational status.")


__all__ = ["EngineCollector", "render", "families", "build_info",
           "CORE_METRICS", "QUEUE_METRICS", "REAL_METRICS", "SOCK_METRICS"]
