"""The data plane's core as Python sees it: owns the native context.

`Core` wraps the C core (csrc/: classify, flows, schedule, rewrite,
verdict) that every I/O backend feeds: publish the tables, run frames
through `process` (one burst, pyfwd_core_burst), read the counters, drain
the punted frames.  Tests and fuzzers call `process` directly with frames
built by scapy; the AF_XDP and AF_PACKET loops (io.py) run the same C
burst without crossing into Python.
"""

import errno
import ipaddress
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import native as _native
from . import tables as tables_mod
from .native import (PROTOCOLS, REAL_COUNTERS, REASONS,
                     VERDICTS, ffi, fill_addr, lib,
                     snat_struct)
from ..errors import ConfigError
from ..model import Service
from ..frames import ZERO_MAC, mac_to_bytes

_core_burst = lib.pyfwd_core_burst
_worker_burst = lib.pyfwd_worker_burst
_FAMILY = {lib.PYFWD_AF_NONE: None, lib.PYFWD_AF_ARP: "arp",
           lib.PYFWD_AF_INET: "ipv4", lib.PYFWD_AF_INET6: "ipv6"}
_TIMEOUT_MAX = lib.PYFWD_TIMEOUT_LIMIT     # seconds
# The flow timeouts, by the names of the config file's [engine.timeouts]
# and `ctl status`: the pyfwd_config field of each (seconds idle; see
# PYFWD_*_TIMEOUT_DEFAULT in csrc/pyfwd.h for what a flow is in each).
TIMEOUTS = {"tcp_syn": "tcp_syn_timeout", "tcp_established": "tcp_timeout",
            "tcp_fin": "tcp_fin_timeout", "udp": "udp_timeout"}
TIMEOUT_MAX = _TIMEOUT_MAX
NEW_FLOWS_MAX = (1 << 32) - 1   # new_flows_per_second: a uint32_t


def _stats_plan():
    """How a struct pyfwd_stats becomes Core.stats()'s dict: frames, bytes,
    verdict and reason (by name), then each group's counters, flat."""
    arrays = {"verdict": VERDICTS, "reason": REASONS}
    plan = []
    for name, field in ffi.typeof("struct pyfwd_stats").fields:
        sub = None
        if field.type.kind == "struct":
            sub = tuple(k for k, _ in field.type.fields)
        plan.append((name, arrays.get(name), sub))
    return plan


_STATS_PLAN = _stats_plan()


@dataclass(frozen=True)
class Result:
    """What the core decided for one frame.

    verdict: "pass" | "punt" | "forward" | "drop", or "handoff" (handed to
    its flow's owner, another worker: reason is what it was classified);
    reason: one of REASONS;
    vip: index of the matched VIP in the published list, or None.
    """

    verdict: str
    reason: str
    vip: Optional[int]
    family: Optional[str]
    l4proto: int
    l3_off: int
    l4_off: int
    vlan_tci: Optional[int]
    flags: int
    out_if: int = 0


def _mac_bytes(mac):
    return ZERO_MAC if mac is None else mac_to_bytes(mac)


class Core:
    """One instance of the C core.

    Core(mac=None, workers=1, timeouts=None, **limits): mac is the
    balancer's own MAC (unicast frames to other MACs pass to the kernel,
    and DR writes it as the source); None accepts any.  timeouts: {name
    of TIMEOUTS: seconds}, those not given take the C default.  limits
    are pyfwd_config's fields (max_frame, max_vips, max_reals, max_ring,
    flows, the timeouts by their field names: tcp_timeout, ...; and
    new_flows_per_second, per worker: beyond it a DR VIP with Maglev
    forwards new flows untracked, others drop them); 0 takes the C
    default (new_flows_per_second: no cap).  Raises ConfigError for a bad value,
    DataplaneError if the context cannot be created.
    """

    LIMITS = {"max_frame": lib.PYFWD_FRAME_LIMIT,
              "max_vips": lib.PYFWD_VIPS_LIMIT,
              "max_reals": lib.PYFWD_REALS_LIMIT,
              "max_ring": lib.PYFWD_RING_LIMIT,
              "flows": lib.PYFWD_FLOWS_LIMIT,
              "tcp_timeout": _TIMEOUT_MAX, "tcp_fin_timeout": _TIMEOUT_MAX,
              "udp_timeout": _TIMEOUT_MAX, "tcp_syn_timeout": _TIMEOUT_MAX,
              "new_flows_per_second": NEW_FLOWS_MAX,
              "workers": lib.PYFWD_WORKERS_MAX}

    def __init__(self, mac=None, mac2=None, timeouts=None, **limits):
        for name, seconds in (timeouts or {}).items():
            if name not in TIMEOUTS:
                raise ConfigError(f"timeout {name!r}: expected one of "
                                  f"{', '.join(TIMEOUTS)}")
            limits[TIMEOUTS[name]] = seconds
        cfg = ffi.new("struct pyfwd_config *")
        self.mac = _mac_bytes(mac)
        cfg.mac = list(self.mac)
        cfg.mac2 = list(_mac_bytes(mac2))
        for name, value in limits.items():
            top = self.LIMITS.get(name)
            if top is None:
                raise ConfigError(f"core setting {name!r}: expected one of "
                                  f"{', '.join(sorted(self.LIMITS))}")
            if (isinstance(value, bool) or not isinstance(value, int)
                    or not 0 <= value <= top):
                raise ConfigError(f"{name} {value!r}: expected 0 to {top}")
            setattr(cfg, name, value)
        out = ffi.new("struct pyfwd_ctx **")
        _native.check(lib.pyfwd_ctx_create(cfg, out), "creating the core")
        # The native context: io.py's backends attach to it.
        self.ctx = ffi.gc(out[0], lib.pyfwd_ctx_destroy)
        self._punt_bufs = {}    # drain_punts' C buffers, by batch size
        self._punt_lock = threading.Lock()
        self.workers = cfg.workers or 1
        # What the tables may hold (0 took the header's default).
        dflt = tables_mod.Limits()
        self.limits = tables_mod.Limits(
            cfg.max_vips or dflt.max_vips, cfg.max_reals or dflt.max_reals,
            cfg.max_ring or dflt.max_ring)
        self.ids = tables_mod.RealIds(self.limits.max_reals)
        # Python side: one publisher at a time, and process() (tests) does
        # not run beside a loop thread on worker 0.
        self._lock = threading.Lock()
        self.tables = None

    def publish(self, tables):
        """Make `tables` (a tables.Tables) the data plane's, atomically.

        Raises ConfigError when they exceed the core's limits, and
        DataplaneError if the C side refuses them.
        """
        nv, nr = len(tables.vips), len(tables.reals)
        vips = ffi.new("struct pyfwd_vip[]", max(nv, 1))
        for c, e in zip(vips, tables.vips):
            fill_addr(c, e.vip.address)
            c.proto = PROTOCOLS[e.vip.protocol]
            c.port = e.vip.port
            c.mode = tables_mod.MODE_CODE[e.mode]
            c.sched = e.sched
            c.persist = e.persist
            c.ring_off = e.ring_off
            c.ring_len = e.ring_len
        reals = ffi.new("struct pyfwd_real[]", max(nr, 1))
        for c, e in zip(reals, tables.reals):
            if e is None or e.mac is None:
                continue        # unused id, or MAC unknown: not usable
            c.mac = list(e.mac)
            c.flags = lib.PYFWD_REAL_F_USED
            fill_addr(c, e.address)
            c.port = e.port
            c.out_if = e.out_if
            c.weight = e.weight
        ring = np.ascontiguousarray(tables.ring, dtype=np.uint16)
        with self._lock:
            ret = lib.pyfwd_tables_publish(
                self.ctx, vips, nv, reals, nr,
                ffi.cast("uint16_t *", ffi.from_buffer(ring)), len(ring))
        if ret == -errno.E2BIG:
            raise ConfigError(f"{nv} VIPs, {nr} real ids, {len(ring)} ring "
                              "entries: over this core's limits (max_vips, "
                              "max_reals, max_ring)")
        _native.check(ret, "publishing the tables")
        self.tables = tables

    def publish_services(self, services, macs, out_ifs=None):
        """Build tables from services (model.Service) and the next hop's
        MAC toward each real ({address: bytes | None}; out_ifs: {address:
        interface slot}), publish them and return them."""
        built = tables_mod.build(services, self.ids, macs, out_ifs)
        self.publish(built)
        return built

    def set_snat(self, address, ports):
        """SNAT's source address and port range (lo, hi), for every
        worker.  ConfigError for a bad value; DataplaneError (EBUSY) once
        flows hold ports."""
        lo, hi = ports
        if not (isinstance(lo, int) and isinstance(hi, int)
                and 1 <= lo <= hi <= 65535):
            raise ConfigError(f"snat ports {lo}-{hi}: expected LOW-HIGH "
                              "within 1-65535")
        snat = snat_struct(address, lo, hi)
        _native.check(lib.pyfwd_snat_set(self.ctx, snat),
                      "setting the SNAT address and ports")
        self.snat = (address, lo, hi)

    def set_tun(self, slot=0, source4=None, source6=None, mtu=0):
        """TUN's outer source addresses (IPv4, IPv6: None for none: that
        family's TUN VIPs drop as drop_tun_no_room) and the MTU (IP bytes,
        0: 1500) of interface slot `slot`: a packet that no longer fits
        once encapsulated is answered by an ICMP error (pyfwd_tun.h).
        ConfigError for a bad value."""
        tun = ffi.new("struct pyfwd_tun *")
        try:
            if source4 is not None:
                tun.src4 = ipaddress.IPv4Address(source4).packed
            if source6 is not None:
                tun.src6 = ipaddress.IPv6Address(source6).packed
        except ValueError as e:
            raise ConfigError(f"tun source: {e}") from None
        if not (isinstance(mtu, int) and (mtu == 0 or 616 <= mtu <= 65535)):
            raise ConfigError(f"tun mtu {mtu!r}: expected 616-65535")
        tun.mtu = mtu
        _native.check(lib.pyfwd_tun_set(self.ctx, slot, tun),
                      "setting the TUN sources")
        self.tun = (slot, source4, source6, mtu)

    def publish_vips(self, vips):
        """Publish VIPs with no real servers (classification only)."""
        vips = tuple(vips)
        if len(set(vips)) != len(vips):
            dup = next(v for v in vips if vips.count(v) > 1)
            raise ConfigError(f"vip {dup}: listed twice")
        return self.publish_services([Service(v) for v in vips],
                                     {})

    def process(self, frames, in_if=0, csum_partial=False, gso=False,
                worker=0, headroom=True):
        """Run frames (bytes) through the core as one batch (as `worker`,
        0 by default), as if they came in on interface slot in_if;
        csum_partial: as a veth hands them over, their TCP/UDP checksums
        maybe unfinished (the core completes them: csrc/csum.c); gso: as
        AF_PACKET hands over a veth's TSO frames (checksums unfinished,
        kept so, for the kernel); headroom: the buffers lend the core
        PYFWD_HEADROOM bytes in front (PYFWD_FRAME_HEADROOM), as the
        backends' do.

        Returns (out_frames, results): the frames as the core left them
        (rewritten in place for FORWARD) and one Result each; with several
        workers a NAT/SNAT frame another worker owns has the verdict
        "handoff" (process_handoffs(owner) takes it).
        """
        batch = _Batch(frames, in_if, csum_partial, gso, headroom)
        self.run(batch, worker)
        return batch.frames(), batch.results_list()

    def process_handoffs(self, worker, max_frames=256):
        """Take the frames other workers handed to `worker` and run them
        through the core as it (what its loop does every round).

        Returns (out_frames, results) as process(), [] and [] if none.
        """
        batch = _Batch([bytes(lib.PYFWD_HANDOFF_SNAP)] * max_frames)
        with self._lock:
            n = lib.pyfwd_handoff_take(self.ctx, worker, batch.descs,
                                       max_frames)
        batch.n = n
        if n:
            self.run(batch, worker)
        return batch.frames(), batch.results_list()

    def prepare(self, frames, csum_partial=False):
        """Copy frames into C buffers once, for `run` (benchmarks, fuzzing).

        Returns an opaque batch; `run(batch)` processes it in place.
        """
        return _Batch(frames, csum_partial=csum_partial)

    def run(self, batch, worker=0):
        """Process a prepared batch in place (as `worker`); returns how
        many to forward."""
        # acquire/release, not `with`: a few hundred ns less per call
        # here, which is several ns per packet of a batch of 64.
        lock = self._lock
        lock.acquire()
        try:
            if worker:
                return _native.check(_worker_burst(
                    self.ctx, worker, batch.descs, batch.n, batch.results),
                    f"a burst as worker {worker}")
            return _core_burst(self.ctx, batch.descs, batch.n,
                               batch.results)
        finally:
            lock.release()

    def flow_owner(self, address, port):
        """The worker that owns a NAT/SNAT flow whose client side (the
        client, or SNAT's address) is address:port (csrc/pyfwd_mq.h):
        0 with one worker."""
        addr = ffi.new("uint8_t[16]", address.packed)
        return lib.pyfwd_flow_owner(self.ctx, addr,
                                    _native.FAMILIES[address.version], port)

    def classify(self, frame):
        """The Result for a single frame."""
        return self.process([frame])[1][0]

    def set_clock(self, seconds):
        """Tests: freeze the core's clock at `seconds` (None: real clock)."""
        lib.pyfwd_clock_set(self.ctx, 0 if seconds is None
                            else max(1, int(seconds * 1e9)))

    def stats(self, worker=None):
        """Counters summed over the workers (or of one worker = RX queue):
        frames, bytes, per verdict and per reason, flows, the I/O loop's."""
        s = ffi.new("struct pyfwd_stats *")
        if worker is None:
            lib.pyfwd_stats_read(self.ctx, s)
        else:
            _native.check(lib.pyfwd_worker_stats_read(self.ctx, worker, s),
                          f"reading the counters of worker {worker}")
        out = {}
        for name, names, sub in _STATS_PLAN:
            value = getattr(s, name)
            if sub is not None:             # a group: its counters, flat
                for k in sub:
                    out[k] = getattr(value, k)
            elif names is not None:         # verdict, reason: by name
                out[name] = dict(zip(names, value))
            else:
                out[name] = value
        return out

    def room(self):
        """What the workers have room for and hold now, summed: flow_slots
        (flow table slots) and flow_slots_used (those an entry holds,
        exact: a DR or TUN flow one, a NAT/SNAT flow two, a persistent
        VIP's client one more; an expired entry until the sweep reaps it,
        within about a second), punt_slots and punt_queued (punted frames
        Python has not drained yet)."""
        out = dict.fromkeys(("flow_slots", "flow_slots_used", "punt_slots",
                             "punt_queued"), 0)
        r = ffi.new("struct pyfwd_worker_room *")
        for i in range(self.workers):
            _native.check(lib.pyfwd_worker_room_read(self.ctx, i, r),
                          f"reading the room of worker {i}")
            for k in out:
                out[k] += getattr(r, k)
        return out

    def real_stats(self):
        """{real id: {"frames", "bytes", "flows_new", "active",
        "inactive"}} (the REAL_COUNTERS) for ids in use; active = flows
        alive, established or half-open, inactive = flows alive and closing
        (a FIN or RST seen); expired ones leave within a sweep."""
        n = self.ids.high_water
        arr = ffi.new("struct pyfwd_real_stats[]", max(n, 1))
        _native.check(lib.pyfwd_real_stats_read(self.ctx, arr, n),
                      "reading real server counters")
        return {i: {k: getattr(arr[i], k) for k in REAL_COUNTERS}
                for i in range(n)}

    def _config(self):
        cfg = ffi.new("struct pyfwd_config *")
        lib.pyfwd_ctx_config_read(self.ctx, cfg)
        return cfg

    def timeouts(self):
        """{name of TIMEOUTS: seconds} the core runs with, defaults
        included."""
        cfg = self._config()
        return {name: getattr(cfg, field) for name, field in TIMEOUTS.items()}

    def new_flows_per_second(self):
        """The cap on new flows per second per worker; 0: none."""
        return self._config().new_flows_per_second

    def expire(self):
        """Expire every timed-out flow now (tests; the loops do it a few
        slots at a time).  Not while the I/O loops run."""
        with self._lock:
            lib.pyfwd_flows_expire(self.ctx)

    def flows(self):
        """{real id: flows alive now, closing ones too} (the data plane's
        live counts: what LC and WLC weigh)."""
        return {i: v["active"] + v["inactive"]
                for i, v in self.real_stats().items()}

    def drain_punts(self, max_frames=256):
        """Frames the workers punted (ARP, ICMP, NDP for a VIP), oldest
        first; never blocks.  The C buffers are made once per size and
        reused."""
        with self._punt_lock:
            if max_frames not in self._punt_bufs:
                self._punt_bufs[max_frames] = (
                    ffi.new("uint8_t[]", max_frames * 2048),
                    ffi.new("uint32_t[]", max_frames))
            buf, lens = self._punt_bufs[max_frames]
            n = lib.pyfwd_punt_drain(self.ctx, buf, len(buf), lens,
                                     max_frames)
            out, off = [], 0
            for i in range(n):
                out.append(bytes(ffi.buffer(buf + off, lens[i])))
                off += lens[i]
            return out


class _Batch:
    """Frames in C buffers with their descriptors and result slots."""

    def __init__(self, frames, in_if=0, csum_partial=False, gso=False,
                 headroom=True):
        frames = [bytes(f) for f in frames]
        flags = ((lib.PYFWD_FRAME_CSUM_PARTIAL if csum_partial else 0)
                 | (lib.PYFWD_FRAME_GSO if gso else 0)
                 | (lib.PYFWD_FRAME_HEADROOM if headroom else 0))
        room = lib.PYFWD_HEADROOM if headroom else 0
        self.n = len(frames)
        self.descs = ffi.new("struct pyfwd_frame[]", max(self.n, 1))
        self.results = ffi.new("struct pyfwd_result[]", max(self.n, 1))
        # As the backends' buffers: room in front (TUN grows into it).
        self._bufs = [ffi.new("uint8_t[]", bytes(room) + f) if f
                      else ffi.NULL for f in frames]
        for d, f, b in zip(self.descs, frames, self._bufs):
            d.data = b + room if f else b
            d.len, d.cap = len(f), min(len(f), 65535)
            d.in_if = in_if
            d.flags = flags

    def frames(self):
        return [bytes(ffi.buffer(d.data, d.len)) if d.len else b""
                for d in self.descs[0:self.n]]

    def results_list(self):
        return [_result(r) for r in self.results[0:self.n]]


def _result(r):
    return Result(
        verdict="handoff" if r.verdict == lib.PYFWD_HANDOFF
        else VERDICTS[r.verdict],
        reason=REASONS[r.reason],
        vip=None if r.vip < 0 else r.vip,
        family=_FAMILY.get(r.family),
        l4proto=r.l4proto,
        l3_off=r.l3_off,
        l4_off=r.l4_off,
        vlan_tci=r.vlan_tci if r.flags & lib.PYFWD_F_VLAN else None,
        flags=r.flags,
        out_if=r.out_if,
    )


__all__ = ["Core", "Result", "TIMEOUTS", "TIMEOUT_MAX", "NEW_FLOWS_MAX"]
