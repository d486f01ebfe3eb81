"""The data plane's I/O: the backends that feed a Core's bursts from an
interface, and what they steer to it.

`Xsk` (AF_XDP: the XDP program pyfwd_xdp_steer, one socket and one loop
thread per RX queue) and `Afp` (raw AF_PACKET sockets, for where AF_XDP
does not work) share one life cycle: open, steer, start, close.  The loops
run in C with the GIL released; Python only says what to steer (VIPs, NAT
real servers as `Endpoint`s, SNAT's ports) and reads what the kernel
counted at the sockets (`sock_stats`: frames dropped before a loop saw
them).  `xdp_cleanup` removes an XDP program left on an interface by
another attach mode (`pyfwd cleanup`).
"""

import errno
import logging
import os
import socket
import threading
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Union

from . import native as _native
from .napi import NapiTuning, busy_poll_state
from .native import endpoint_array, ffi, lib, snat_struct
from ..errors import ConfigError, DataplaneError

log = logging.getLogger("pyfwd")


@dataclass(frozen=True)
class Endpoint:
    """An address, port and protocol ("tcp" | "udp") the steering programs
    match: NAT's real servers, whose answers come from theirs."""

    address: Union[IPv4Address, IPv6Address]
    port: int
    protocol: str


XDP_MODES = {"auto": lib.PYFWD_XDP_MODE_AUTO,
             "native": lib.PYFWD_XDP_MODE_NATIVE,
             "generic": lib.PYFWD_XDP_MODE_GENERIC}
COPY_MODES = {"auto": lib.PYFWD_XSK_COPY_AUTO, "copy": lib.PYFWD_XSK_COPY,
              "zerocopy": lib.PYFWD_XSK_ZEROCOPY}
LOOP_HOLDS = {"run": lib.PYFWD_LOOP_RUN, "pause": lib.PYFWD_LOOP_PAUSE,
              "exit": lib.PYFWD_LOOP_EXIT}
_XDP_MODE_NAMES = {v: k for k, v in XDP_MODES.items()}
_COPY_MODE_NAMES = {v: k for k, v in COPY_MODES.items()}
# Bytes per UMEM frame: a received frame and the kernel's XDP headroom
# share it (pyfwd doctor checks the MTU against it).
FRAME_SIZE = 4096
# How a loop waits for frames when busy polling (`--poll`): "busy" spins
# (SO_PREFER_BUSY_POLL) all the time, "adaptive" spins while frames come
# and sleeps in poll() once idle.  Without busy polling it always sleeps.
POLL_MODES = {"busy": lib.PYFWD_POLL_BUSY,
              "adaptive": lib.PYFWD_POLL_ADAPTIVE}
# The default ([engine] poll, --poll): the NAT HTTP rows' CPU per request
# measured both (docs/bench.md, "Waiting for frames"); where busy polling
# engages a busy loop burns its core at any load, an adaptive one only under
# load.
POLL_DEFAULT = "adaptive"
RING_MIN, RING_MAX = 64, 65536      # what the kernel takes (xsk.c)
FRAMES_MAX = 1 << 20


@dataclass(frozen=True)
class XskRings:
    """The UMEM and ring sizes of each queue (`pyfwd start --frames ...`,
    [engine] frames, rx_ring, tx_ring, fill_ring, comp_ring).

    frames: UMEM frames (FRAME_SIZE bytes each) shared by the queue's
    sockets, 0: twice the fill ring per interface (umem_frames()); the
    rings: descriptors, powers of two from RING_MIN to RING_MAX.  The
    defaults are the minimal forwarder's (bench/xsk_minimal.c): a fill
    ring twice the RX ring and half the UMEM on it, so the kernel does
    not find it empty while the TX ring is full.
    """

    frames: int = 0
    rx_ring: int = 2048
    tx_ring: int = 2048
    fill_ring: int = 4096
    comp_ring: int = 2048

    KEYS = ("frames", "rx_ring", "tx_ring", "fill_ring", "comp_ring")

    @classmethod
    def of(cls, values, where="", ifaces=1):
        """XskRings from {key: value} (missing or None: the default),
        checked.  where: the prefix of the names in errors ("engine." for
        the file's keys, "--" for the flags); ifaces: the interfaces
        sharing the UMEM (two-arm NAT: 2).  ConfigError naming the key,
        the value and what was expected."""
        rings = cls(**{k: v for k, v in values.items() if v is not None})
        rings.check(where, ifaces)
        return rings

    def check(self, where="", ifaces=1):
        """ConfigError for a size the kernel refuses, or a UMEM too small
        to keep the fill ring stocked."""
        def name(key):
            return where + key.replace("_", "-") if where == "--" \
                else where + key
        for key in self.KEYS:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{name(key)} {v!r}: expected an integer")
        for key in self.KEYS[1:]:
            v = getattr(self, key)
            if not RING_MIN <= v <= RING_MAX or v & (v - 1):
                raise ConfigError(f"{name(key)} {v}: expected a power of "
                                  f"two from {RING_MIN} to {RING_MAX}")
        need = ifaces * (self.fill_ring + self.tx_ring)
        if self.frames and not need <= self.frames <= FRAMES_MAX:
            raise ConfigError(
                f"{name('frames')} {self.frames}: expected {need} (fill "
                f"ring + TX ring{' per interface' if ifaces > 1 else ''}) "
                f"to {FRAMES_MAX}, so that the fill ring stays stocked "
                "while the TX ring is full")

    def umem_frames(self, ifaces=1):
        """The UMEM's frames for `ifaces` interfaces."""
        return self.frames or 2 * self.fill_ring * ifaces


@dataclass(frozen=True)
class XskInfo:
    """What the AF_XDP set-up got: xdp_mode "native" | "generic", copy_mode
    "copy" | "zerocopy", whether busy polling took, queues, program id;
    csum_slots: the interface slots (0 outside, 1 inside) whose driver
    (veth) hands over unfinished TCP/UDP checksums, which the core
    completes (csrc/csum.c); fastpath: the XDP fast path "off" (not asked
    for), "on", or "refused", and then why (fastpath_why: a veth whose
    peer runs no XDP program, dataplane.vethpeer)."""

    xdp_mode: str
    copy_mode: str
    busy_poll: bool
    queues: int
    prog_id: int
    backend: str = "xdp"    # or "afpacket"
    csum_slots: tuple = ()
    fastpath: str = "off"
    fastpath_why: str = ""


class Xsk:
    """The AF_XDP I/O of a Core: XDP program, sockets, loop threads.

    open() attaches the steering program with an unpinned bpf_link (gone
    with the process, whatever the way it ends) and makes one socket per
    RX queue (busy polling: with the interfaces' NAPI settings for it,
    dataplane.napi); start() runs one loop thread per queue (the GIL is
    released inside); steer() says which VIPs the program sends to the
    sockets; close() stops, detaches and puts the settings back.  Raises DataplaneError with the reason.
    """

    def __init__(self, core):
        self.core = core
        self.info = None
        self._threads = []
        self._ended = {}        # queue -> why its loop ended
        self.errors = []
        self._ifaces = ()       # the interfaces' names, by slot
        self._io_lock = threading.Lock()    # sock_stats against close
        self._napi = NapiTuning()   # busy polling's interface settings
        self._poll_said = None      # the busy-poll state poll_check logged

    def open(self, ifindex, queues=1, xdp_mode="auto", copy_mode="auto",
             busy_poll_usecs=0, busy_poll_budget=64, batch=64, frames=0,
             frame_size=FRAME_SIZE, ring_size=0, ifindex2=0, rings=None,
             poll=POLL_DEFAULT):
        """Attach and open the sockets; the XskInfo.  rings: an XskRings
        (None: frames and ring_size, 0 taking the C defaults, which are
        XskRings'); poll: a POLL_MODES key."""
        if xdp_mode not in XDP_MODES:
            raise ConfigError(f"xdp mode {xdp_mode!r}: expected one of "
                              f"{', '.join(XDP_MODES)}")
        if copy_mode not in COPY_MODES:
            raise ConfigError(f"copy mode {copy_mode!r}: expected one of "
                              f"{', '.join(COPY_MODES)}")
        if poll not in POLL_MODES:
            raise ConfigError(f"poll {poll!r}: expected one of "
                              f"{', '.join(POLL_MODES)}")
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
        cfg.poll_mode = POLL_MODES[poll]
        if rings is not None:
            rings.check(ifaces=2 if ifindex2 else 1)
            cfg.frames = rings.umem_frames(2 if ifindex2 else 1)
            cfg.rx_ring, cfg.tx_ring = rings.rx_ring, rings.tx_ring
            cfg.fill_ring, cfg.comp_ring = rings.fill_ring, rings.comp_ring
        info = ffi.new("struct pyfwd_xsk_info *")
        _open(lib.pyfwd_xsk_open, "AF_XDP", self.core.ctx,
              os.fsencode(_native.bpf_object_path()), cfg, info)
        self.info = XskInfo(_XDP_MODE_NAMES[info.xdp_mode],
                            _COPY_MODE_NAMES[info.copy_mode],
                            bool(info.busy_poll), info.queues, info.prog_id,
                            csum_slots=_csum_slots(self.core.ctx))
        self._ifaces = _names(ifindex, ifindex2)
        if self.info.busy_poll:     # put back by close()
            for iface in self._ifaces:
                self._napi.apply(iface)
        return self.info

    def steer(self, vips, replies=(), snat=None):
        """Steer to the engine (the whole set; the rest passes): frames to
        these VIPs (model.Vip values), the answers of these real servers
        (NAT: Endpoint values, the real's address, port and protocol) and
        frames to SNAT's (address, lo, hi).  DataplaneError if the maps
        refuse it (E2BIG: too many)."""
        vips, replies = list(vips), list(replies)
        sn = snat_struct(*snat) if snat else ffi.NULL
        _native.check(lib.pyfwd_steer_set(
            self.core.ctx, endpoint_array(vips), len(vips),
            endpoint_array(replies), len(replies), sn),
            "updating the steering maps")

    def start(self):
        """One loop thread per queue."""
        for q in range(self.info.queues):
            t = threading.Thread(target=self._loop, args=(q,),
                                 name=f"pyfwd-xsk-q{q}", daemon=True)
            t.start()
            self._threads.append(t)

    # The backend's loop in C (Afp has its own).
    _run = lib.pyfwd_xsk_run

    def _loop(self, queue):
        ret = self._run(self.core.ctx, queue)
        self._ended[queue] = os.strerror(-ret) if ret < 0 else "returned"
        if ret < 0:
            self.errors.append(DataplaneError(-ret, f"loop of queue {queue}"
                                              f": {os.strerror(-ret)}"))

    def alive(self):
        return any(t.is_alive() for t in self._threads)

    def loops(self):
        """The loops started, for liveness (control.liveness): one
        {"name", "running", "beats", "ended"} per queue: its thread's name,
        whether it runs, its heartbeat (loop iterations: an idle loop still
        counts about ten a second) and why it ended (None while running)."""
        return [{"name": t.name, "running": t.is_alive(),
                 "beats": lib.pyfwd_io_worker_beats(self.core.ctx, q),
                 "ended": self._ended.get(q)}
                for q, t in enumerate(self._threads)]

    def pause(self, queue, how="pause"):
        """Test hook, for rehearsing a failure: "pause" stalls the loop of
        queue (no frame handled, no heartbeat), "exit" ends it as if it had
        died, "run" resumes a paused one.  ConfigError for another how;
        DataplaneError (EINVAL) for no such queue."""
        if how not in LOOP_HOLDS:
            raise ConfigError(f"loop hold {how!r}: expected one of "
                              f"{', '.join(LOOP_HOLDS)}")
        _native.check(lib.pyfwd_io_worker_pause(self.core.ctx, queue,
                                                LOOP_HOLDS[how]),
                      f"holding the loop of queue {queue}")

    def sock_stats(self):
        """What the kernel counted at each socket (struct pyfwd_sock_stats,
        the backend's group: native.SOCK_COUNTERS[info.backend]): one
        {"queue", "iface", counter: value...} per RX queue and interface
        (AF_PACKET: one socket per interface, queue 0); [] when not open.
        Any thread may call it, beside the loops and close().  Raises
        DataplaneError if the kernel refuses a read."""
        with self._io_lock:
            if not self._ifaces:
                return []
            counters = _native.SOCK_COUNTERS[self.info.backend]
            group = _native.SOCK_GROUPS[self.info.backend]
            out = ffi.new("struct pyfwd_sock_stats *")
            rows = []
            for q in range(self.info.queues):
                for slot, iface in enumerate(self._ifaces):
                    _native.check(lib.pyfwd_io_sock_stats_read(
                        self.core.ctx, q, slot, out),
                        f"reading the counters of {iface}'s socket on "
                        f"queue {q}")
                    g = getattr(out, group)
                    rows.append({"queue": q, "iface": iface,
                                 **{k: getattr(g, k) for k in counters}})
            return rows

    def napi_ids(self):
        """The NAPI id each loop found for its sockets (pyfwd_io_napi_id):
        {(queue, iface): id, or None while not known (no frame yet)}; {}
        when not open or not AF_XDP.  Any thread, beside close()."""
        with self._io_lock:
            if not self._ifaces or self.info.backend != "xdp":
                return {}
            out = {}
            for q in range(self.info.queues):
                for slot, iface in enumerate(self._ifaces):
                    ret = lib.pyfwd_io_napi_id(self.core.ctx, q, slot)
                    out[(q, iface)] = ret if ret >= 0 else None
            return out

    def busy_poll_state(self):
        """napi.busy_poll_state of the open sockets: "off", "waiting",
        "engaged" or "not engaged"."""
        if not self.info or self.info.backend != "xdp":
            return "off"
        return busy_poll_state(self.info.busy_poll, self.napi_ids().values())

    def poll_check(self):
        """The control thread's: once busy polling proves unable to engage
        (every socket's NAPI id 0), say so once.  The interfaces' NAPI
        settings stay: without a busy poller they batch the NAPI thread's
        work (docs/bench.md, "Waiting for frames").  The state."""
        state = self.busy_poll_state()
        if state == "not engaged" and self._poll_said != state:
            log.warning("%s: busy polling cannot engage (the AF_XDP "
                        "sockets have no NAPI id: copy mode, as on veth); "
                        "the loops sleep in poll() when idle instead of "
                        "spinning; napi_defer_hard_irqs and "
                        "gro_flush_timeout stay set (they batch the "
                        "receive work)", "+".join(self._ifaces))
        self._poll_said = state
        return state

    def close(self):
        """Stop the loops, then detach the program and free the sockets."""
        lib.pyfwd_io_stop(self.core.ctx)
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        self._ended = {}
        with self._io_lock:
            lib.pyfwd_io_close(self.core.ctx)
            self._ifaces = ()
        self._napi.restore()


class Afp(Xsk):
    """The raw-socket (AF_PACKET) I/O of a Core, for where AF_XDP is not
    available: the same core, steering maps and life cycle as Xsk (steer,
    start, close), one loop thread.  open() needs tcx (Linux 6.6+) for the
    tc program that keeps the engine's frames away from the kernel."""

    def open(self, ifindex, ifindex2=0, **_ignored):
        _open(lib.pyfwd_afp_open, "AF_PACKET", self.core.ctx,
              os.fsencode(_native.bpf_object_path()), ifindex, ifindex2)
        self.info = XskInfo(None, "copy", False, 1, 0, "afpacket",
                            _csum_slots(self.core.ctx))
        self._ifaces = _names(ifindex, ifindex2)
        return self.info

    _run = lib.pyfwd_afp_run


def _csum_slots(ctx):
    """The interface slots whose frames the open backend checks for
    unfinished checksums (pyfwd_io_csum_slots' mask, as a tuple)."""
    mask = lib.pyfwd_io_csum_slots(ctx)
    return tuple(s for s in range(lib.PYFWD_IFACES_MAX) if mask >> s & 1)


def _names(*ifindexes):
    """The names of the interfaces (0: none), read at open: in the
    namespace the backend opened in, which a reader's thread may not be
    in."""
    names = []
    for i in ifindexes:
        if i:
            try:
                names.append(socket.if_indextoname(i))
            except OSError:
                names.append(f"ifindex {i}")
    return tuple(names)


def _open(fn, what, *args):
    """A backend's C open(args..., errbuf, errlen); DataplaneError naming
    what failed (errbuf) when it returns -errno."""
    errbuf = ffi.new("char[]", 256)
    ret = fn(*args, errbuf, len(errbuf))
    if ret < 0:
        what = ffi.string(errbuf).decode(errors="replace") or what
        raise DataplaneError(-ret, f"{what}: {os.strerror(-ret)}")


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


__all__ = ["Endpoint", "Xsk", "Afp", "XskInfo", "XskRings", "XDP_MODES",
           "COPY_MODES", "POLL_MODES", "POLL_DEFAULT", "FRAME_SIZE",
           "xdp_cleanup"]
