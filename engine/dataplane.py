"""The data plane as Python sees it: owns the native context.

`Core` wraps the C core (csrc/classify.c) that every I/O backend feeds:
publish a VIP table, run frames through `process`, read counters.  Tests and
fuzzers call `process` directly with frames built by scapy; the AF_XDP and
AF_PACKET loops call the same C function without crossing into Python.
"""

import errno
import socket
import threading
from dataclasses import dataclass
from typing import Optional

from . import _native
from ._native import REASONS, VERDICTS, ffi, lib
from .errors import ConfigError

_PROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
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


def _mac_bytes(mac):
    if mac is None:
        return bytes(6)
    if isinstance(mac, (bytes, bytearray)) and len(mac) == 6:
        return bytes(mac)
    try:
        raw = bytes.fromhex(str(mac).replace(":", "").replace("-", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise ConfigError(f"mac {mac!r}: expected six bytes, e.g. "
                          "02:00:00:00:00:01")
    return raw


class Core:
    """One instance of the C core.

    Core(mac=None, max_frame=0, max_vips=0): mac is the balancer's own MAC
    (unicast frames to other MACs pass to the kernel); None accepts any.
    0 takes the C defaults (9216-byte frames, 1024 VIPs).  Raises ConfigError
    for a bad value, DataplaneError if the context cannot be created.
    """

    def __init__(self, mac=None, max_frame=0, max_vips=0):
        cfg = ffi.new("struct pyfwd_config *")
        cfg.mac = list(_mac_bytes(mac))
        if not isinstance(max_frame, int) or not 0 <= max_frame <= 65535:
            raise ConfigError(f"max_frame {max_frame!r}: expected 0 to 65535")
        if not isinstance(max_vips, int) or not 0 <= max_vips <= 1 << 20:
            raise ConfigError(f"max_vips {max_vips!r}: expected 0 to 1048576")
        cfg.max_frame = max_frame
        cfg.max_vips = max_vips
        out = ffi.new("struct pyfwd_ctx **")
        _native.check(lib.pyfwd_ctx_create(cfg, out), "creating the core")
        self._ctx = ffi.gc(out[0], lib.pyfwd_ctx_destroy)
        # The C side lets one thread at a time publish or process.
        self._lock = threading.Lock()
        self.vips = ()

    def publish_vips(self, vips):
        """Make `vips` (Vip values) the VIP table, atomically.

        Raises ConfigError for a duplicate or too many VIPs.
        """
        vips = tuple(vips)
        if len(set(vips)) != len(vips):
            dup = next(v for v in vips if vips.count(v) > 1)
            raise ConfigError(f"vip {dup}: listed twice")
        arr = ffi.new("struct pyfwd_vip[]", max(len(vips), 1))
        for c, v in zip(arr, vips):
            packed = v.address.packed
            ffi.memmove(c.addr, packed, len(packed))
            c.family = (lib.PYFWD_AF_INET if v.address.version == 4
                        else lib.PYFWD_AF_INET6)
            c.proto = _PROTO[v.protocol]
            c.port = v.port
        with self._lock:
            ret = lib.pyfwd_vip_publish(self._ctx, arr, len(vips))
        if ret == -errno.E2BIG:
            raise ConfigError(f"{len(vips)} VIPs: more than this core's "
                              "max_vips")
        _native.check(ret, "publishing the VIP table")
        self.vips = vips

    def process(self, frames):
        """Run frames (bytes) through the core as one batch.

        Returns (out_frames, results): the frames as the core left them
        (rewritten in place for FORWARD) and one Result each.
        """
        batch = _Batch(frames)
        self.run(batch)
        return batch.frames(), batch.results_list()

    def prepare(self, frames):
        """Copy frames into C buffers once, for `run` (benchmarks, fuzzing).

        Returns an opaque batch; `run(batch)` processes it in place.
        """
        return _Batch(frames)

    def run(self, batch):
        """Process a prepared batch in place; returns how many to forward."""
        with self._lock:
            return lib.pyfwd_process_batch(self._ctx, batch.descs, batch.n,
                                           batch.results)

    def classify(self, frame):
        """The Result for a single frame."""
        return self.process([frame])[1][0]

    def stats(self):
        """Counters: frames, bytes, per verdict and per reason, VIP table."""
        s = ffi.new("struct pyfwd_stats *")
        lib.pyfwd_stats_read(self._ctx, s)
        return {
            "frames": s.frames,
            "bytes": s.bytes,
            "verdict": dict(zip(VERDICTS, s.verdict)),
            "reason": dict(zip(REASONS, s.reason)),
            "vip_generation": s.vip_generation,
            "vip_count": s.vip_count,
        }


class _Batch:
    """Frames in C buffers with their descriptors and result slots."""

    def __init__(self, frames):
        frames = [bytes(f) for f in frames]
        self.n = len(frames)
        self.descs = ffi.new("struct pyfwd_frame[]", max(self.n, 1))
        self.results = ffi.new("struct pyfwd_result[]", max(self.n, 1))
        self._bufs = [ffi.new("uint8_t[]", f) if f else ffi.NULL
                      for f in frames]
        for d, f, b in zip(self.descs, frames, self._bufs):
            d.data, d.len, d.cap = b, len(f), len(f)

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
    )


__all__ = ["Core", "Result"]
