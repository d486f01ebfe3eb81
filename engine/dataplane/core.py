"""The data plane as Python sees it: owns the native context.

`Core` wraps the C core (csrc/classify.c) that every I/O backend feeds:
publish a VIP table, run frames through `process`, read counters.  Tests and
fuzzers call `process` directly with frames built by scapy; the AF_XDP and
AF_PACKET loops call the same C function without crossing into Python.
"""

import errno
import os
import socket
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from pyfwd.dataplane import native as _native
from pyfwd.dataplane import tables as tables_mod
from pyfwd.dataplane.native import REASONS, VERDICTS, ffi, lib
from pyfwd.errors import ConfigError, DataplaneError
from pyfwd.model import Service
from pyfwd.frames import ZERO_MAC, mac_to_bytes

_PROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_process_batch = lib.pyfwd_process_batch
_FAMILY = {lib.PYFWD_AF_NONE: None, lib.PYFWD_AF_ARP: "arp",
           lib.PYFWD_AF_INET: "ipv4", lib.PYFWD_AF_INET6: "ipv6"}


@dataclass(frozen=True)
class Result:
    """What the core decided for one frame.

    verdict: "pass" | "punt" | "forward" | "drop"; reason: one of REASONS;
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

    Core(mac=None, workers=1, **limits): mac is the balancer's own MAC
    (unicast frames to other MACs pass to the kernel, and DR writes it as
    the source); None accepts any.  limits are pyfwd_config's fields
    (max_frame, max_vips, max_reals, max_ring, flows, tcp_timeout,
    tcp_fin_timeout, udp_timeout); 0 takes the C default.  Raises
    ConfigError for a bad value, DataplaneError if the context cannot be
    created.
    """

    LIMITS = {"max_frame": 65535, "max_vips": 1 << 20, "max_reals": 65535,
              "max_ring": 1 << 28, "flows": 1 << 26, "tcp_timeout": 1 << 31,
              "tcp_fin_timeout": 1 << 31, "udp_timeout": 1 << 31,
              "tcp_syn_timeout": 1 << 31,
              "workers": lib.PYFWD_WORKERS_MAX}

    def __init__(self, mac=None, mac2=None, **limits):
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
        self._ctx = ffi.gc(out[0], lib.pyfwd_ctx_destroy)
        self.workers = cfg.workers or 1
        self.max_reals = cfg.max_reals or lib.PYFWD_REALS_MAX_DEFAULT
        self.ids = tables_mod.RealIds(self.max_reals)
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
            _fill_addr(c, e.vip.address)
            c.proto = _PROTO[e.vip.protocol]
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
            _fill_addr(c, e.address)
            c.port = e.port
            c.out_if = e.out_if
            c.weight = e.weight
        ring = np.ascontiguousarray(tables.ring, dtype=np.uint16)
        with self._lock:
            ret = lib.pyfwd_tables_publish(
                self._ctx, vips, nv, reals, nr,
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
        snat = _snat_struct(address, lo, hi)
        _native.check(lib.pyfwd_snat_set(self._ctx, snat),
                      "setting the SNAT address and ports")
        self.snat = (address, lo, hi)

    def publish_vips(self, vips):
        """Publish VIPs with no real servers (classification only)."""
        vips = tuple(vips)
        if len(set(vips)) != len(vips):
            dup = next(v for v in vips if vips.count(v) > 1)
            raise ConfigError(f"vip {dup}: listed twice")
        return self.publish_services([Service(v) for v in vips],
                                     {})

    def process(self, frames, in_if=0):
        """Run frames (bytes) through the core as one batch (worker 0), as
        if they came in on interface slot in_if.

        Returns (out_frames, results): the frames as the core left them
        (rewritten in place for FORWARD) and one Result each.
        """
        batch = _Batch(frames, in_if)
        self.run(batch)
        return batch.frames(), batch.results_list()

    def prepare(self, frames):
        """Copy frames into C buffers once, for `run` (benchmarks, fuzzing).

        Returns an opaque batch; `run(batch)` processes it in place.
        """
        return _Batch(frames)

    def run(self, batch):
        """Process a prepared batch in place; returns how many to forward."""
        # acquire/release, not `with`: a few hundred ns less per call
        # here, which is several ns per packet of a batch of 64.
        lock = self._lock
        lock.acquire()
        try:
            return _process_batch(self._ctx, batch.descs, batch.n,
                                  batch.results)
        finally:
            lock.release()

    def classify(self, frame):
        """The Result for a single frame."""
        return self.process([frame])[1][0]

    def set_clock(self, seconds):
        """Tests: freeze the core's clock at `seconds` (None: real clock)."""
        lib.pyfwd_clock_set(self._ctx, 0 if seconds is None
                            else max(1, int(seconds * 1e9)))

    def stats(self, worker=None):
        """Counters summed over the workers (or of one worker = RX queue):
        frames, bytes, per verdict and per reason, flows, the I/O loop's."""
        s = ffi.new("struct pyfwd_stats *")
        if worker is None:
            lib.pyfwd_stats_read(self._ctx, s)
        else:
            _native.check(lib.pyfwd_worker_stats_read(self._ctx, worker, s),
                          f"reading the counters of worker {worker}")
        out = {"frames": s.frames, "bytes": s.bytes,
               "verdict": dict(zip(VERDICTS, s.verdict)),
               "reason": dict(zip(REASONS, s.reason))}
        for name in ("vip_generation", "vip_count", "flows_new",
                     "flow_hits", "flows_rescheduled", "flows_evicted",
                     "flows_expired", "snat_ports_used", "rx", "tx", "tx_ring_full", "punt_overflow", "wakeups",
                     "polls"):
            out[name] = getattr(s, name)
        return out

    def real_stats(self):
        """{real id: {"frames", "bytes", "flows_new", "active"}} for ids in
        use; active = flows alive (expired ones leave within a sweep)."""
        n = self.ids.high_water
        arr = ffi.new("struct pyfwd_real_stats[]", max(n, 1))
        _native.check(lib.pyfwd_real_stats_read(self._ctx, arr, n),
                      "reading real server counters")
        return {i: {"frames": arr[i].frames, "bytes": arr[i].bytes,
                    "flows_new": arr[i].flows_new, "active": arr[i].active}
                for i in range(n)}

    def expire(self):
        """Expire every timed-out flow now (tests; the loops do it a few
        slots at a time).  Not while the I/O loops run."""
        with self._lock:
            lib.pyfwd_expire(self._ctx)

    def flows(self):
        """{real id: flows alive now} (the data plane's live counts)."""
        return {i: v["active"] for i, v in self.real_stats().items()}

    def drain_punts(self, max_frames=256):
        """Frames the workers punted (ARP, ICMP, NDP for a VIP), oldest
        first; never blocks."""
        buf = ffi.new("uint8_t[]", max_frames * 2048)
        lens = ffi.new("uint32_t[]", max_frames)
        n = lib.pyfwd_punt_drain(self._ctx, buf, len(buf), lens, max_frames)
        out, off = [], 0
        for i in range(n):
            out.append(bytes(ffi.buffer(buf + off, lens[i])))
            off += lens[i]
        return out


def _snat_struct(address, lo, hi):
    snat = ffi.new("struct pyfwd_snat *")
    _fill_addr(snat, address)
    snat.port_lo, snat.port_hi = lo, hi
    return snat


def _fill_addr(c, address):
    packed = address.packed
    ffi.memmove(c.addr, packed, len(packed))
    c.family = lib.PYFWD_AF_INET if address.version == 4 else \
        lib.PYFWD_AF_INET6


XDP_MODES = {"auto": lib.PYFWD_XDP_MODE_AUTO,
             "native": lib.PYFWD_XDP_MODE_NATIVE,
             "generic": lib.PYFWD_XDP_MODE_GENERIC}
COPY_MODES = {"auto": lib.PYFWD_XSK_COPY_AUTO, "copy": lib.PYFWD_XSK_COPY,
              "zerocopy": lib.PYFWD_XSK_ZEROCOPY}
_XDP_MODE_NAMES = {v: k for k, v in XDP_MODES.items()}
_COPY_MODE_NAMES = {v: k for k, v in COPY_MODES.items()}


@dataclass(frozen=True)
class XskInfo:
    """What the AF_XDP set-up got: xdp_mode "native" | "generic", copy_mode
    "copy" | "zerocopy", whether busy polling took, queues, program id."""

    xdp_mode: str
    copy_mode: str
    busy_poll: bool
    queues: int
    prog_id: int
    backend: str = "xdp"    # or "afpacket"


class Xsk:
    """The AF_XDP I/O of a Core: XDP program, sockets, loop threads.

    open() attaches the steering program with an unpinned bpf_link (gone
    with the process, whatever the way it ends) and makes one socket per
    RX queue; start() runs one loop thread per queue (the GIL is released
    inside); steer() says which VIPs the program sends to the sockets;
    close() stops and detaches.  Raises DataplaneError with the reason.
    """

    def __init__(self, core):
        self.core = core
        self.info = None
        self._threads = []
        self.errors = []

    def open(self, ifindex, queues=1, xdp_mode="auto", copy_mode="auto",
             busy_poll_usecs=0, busy_poll_budget=64, batch=64, frames=4096,
             frame_size=4096, ring_size=2048, ifindex2=0):
        if xdp_mode not in XDP_MODES:
            raise ConfigError(f"xdp mode {xdp_mode!r}: expected one of "
                              f"{', '.join(XDP_MODES)}")
        if copy_mode not in COPY_MODES:
            raise ConfigError(f"copy mode {copy_mode!r}: expected one of "
                              f"{', '.join(COPY_MODES)}")
        cfg = ffi.new("struct pyfwd_xsk_config *")
        cfg.ifindex = ifindex
        cfg.ifindex2 = ifindex2
        cfg.queues = queues
        cfg.xdp_mode = XDP_MODES[xdp_mode]
        cfg.copy_mode = COPY_MODES[copy_mode]
        cfg.busy_poll_usecs = busy_poll_usecs
        cfg.busy_poll_budget = busy_poll_budget
        cfg.batch = batch
        cfg.frames = frames
        cfg.frame_size = frame_size
        cfg.ring_size = ring_size
        info = ffi.new("struct pyfwd_xsk_info *")
        _open(lib.pyfwd_xsk_open, "AF_XDP", self.core._ctx,
              os.fsencode(_native.bpf_object_path()), cfg, info)
        self.info = XskInfo(_XDP_MODE_NAMES[info.xdp_mode],
                            _COPY_MODE_NAMES[info.copy_mode],
                            bool(info.busy_poll), info.queues, info.prog_id)
        return self.info

    def steer(self, vips, replies=(), snat=None):
        """Steer to the sockets: frames to these VIPs (Vip values), the
        answers of these real servers (NAT: Vip values of real addr:port/
        proto) and frames to SNAT's (address, lo, hi); others pass."""
        vips, replies = list(vips), list(replies)
        arr = _vip_array(vips)
        rep = _vip_array(replies)
        sn = _snat_struct(*snat) if snat else ffi.NULL
        _native.check(lib.pyfwd_steer(self.core._ctx, arr, len(vips),
                                      rep, len(replies), sn),
                      "updating the steering maps")

    def start(self):
        """One loop thread per queue."""
        for q in range(self.info.queues):
            t = threading.Thread(target=self._loop, args=(q,),
                                 name=f"pyfwd-xsk-q{q}", daemon=True)
            t.start()
            self._threads.append(t)

    # The backend's loop and teardown in C (Afp has its own).
    _run = lib.pyfwd_xsk_run
    _close = lib.pyfwd_xsk_close

    def _loop(self, queue):
        ret = self._run(self.core._ctx, queue)
        if ret < 0:
            self.errors.append(DataplaneError(-ret, f"loop of queue {queue}"
                                              f": {os.strerror(-ret)}"))

    def alive(self):
        return any(t.is_alive() for t in self._threads)

    def close(self):
        """Stop the loops, then detach the program and free the sockets."""
        lib.pyfwd_xsk_stop(self.core._ctx)     # either backend's loops
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        self._close(self.core._ctx)


class Afp(Xsk):
    """The raw-socket (AF_PACKET) I/O of a Core, for where AF_XDP is not
    available: the same core, steering maps and life cycle as Xsk (steer,
    start, close), one loop thread.  open() needs tcx (Linux 6.6+) for the
    tc program that keeps the engine's frames away from the kernel."""

    def open(self, ifindex, ifindex2=0, **_ignored):
        _open(lib.pyfwd_afp_open, "AF_PACKET", self.core._ctx,
              os.fsencode(_native.bpf_object_path()), ifindex, ifindex2)
        self.info = XskInfo(None, "copy", False, 1, 0, "afpacket")
        return self.info

    _run = lib.pyfwd_afp_run
    _close = lib.pyfwd_afp_close


def _open(fn, what, *args):
    """A backend's C open(args..., errbuf, errlen); DataplaneError naming
    what failed (errbuf) when it returns -errno."""
    errbuf = ffi.new("char[]", 256)
    ret = fn(*args, errbuf, len(errbuf))
    if ret < 0:
        what = ffi.string(errbuf).decode(errors="replace") or what
        raise DataplaneError(-ret, f"{what}: {os.strerror(-ret)}")


def _vip_array(vips):
    arr = ffi.new("struct pyfwd_vip[]", max(len(vips), 1))
    for c, v in zip(arr, vips):
        _fill_addr(c, v.address)
        c.proto = _PROTO[v.protocol]
        c.port = v.port
    return arr


def xdp_cleanup(ifindex):
    """Detach an XDP program left on ifindex by a netlink attach.

    Returns the id of what was attached (0: nothing).  Raises
    DataplaneError (EBUSY) when a live engine's bpf_link holds it.
    """
    prog = ffi.new("uint32_t *")
    ret = lib.pyfwd_xdp_cleanup(ifindex, prog)
    if ret == -errno.EBUSY:
        raise DataplaneError(errno.EBUSY, f"XDP program {prog[0]} on "
                             f"ifindex {ifindex} is held by a bpf_link: an "
                             "engine is running there; stop it instead")
    _native.check(ret, f"detaching XDP from ifindex {ifindex}")
    return prog[0]


class _Batch:
    """Frames in C buffers with their descriptors and result slots."""

    def __init__(self, frames, in_if=0):
        frames = [bytes(f) for f in frames]
        self.n = len(frames)
        self.descs = ffi.new("struct pyfwd_frame[]", max(self.n, 1))
        self.results = ffi.new("struct pyfwd_result[]", max(self.n, 1))
        self._bufs = [ffi.new("uint8_t[]", f) if f else ffi.NULL
                      for f in frames]
        for d, f, b in zip(self.descs, frames, self._bufs):
            d.data, d.len, d.cap = b, len(f), min(len(f), 65535)
            d.in_if = in_if

    def frames(self):
        return [bytes(ffi.buffer(d.data, d.len)) if d.len else b""
                for d in self.descs[0:self.n]]

    def results_list(self):
        return [_result(r) for r in self.results[0:self.n]]


def _result(r):
    return Result(
        verdict=VERDICTS[r.verdict],
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


__all__ = ["Core", "Result", "Xsk", "Afp", "XskInfo", "xdp_cleanup"]
