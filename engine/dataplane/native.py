"""The cffi boundary (csrc/pyfwd.h) as Python sees it: the extension
pyfwd._fastpath, loaded once here.

It turns negative C returns into DataplaneError, reads the facts the header
defines (verdicts, reasons, the counters' names) so that Python never
retypes them, turns Python values into the boundary's structs, and finds
the compiled XDP objects.  core.py and io.py call the C functions through
``lib``; nothing outside this package does.

What the rest of pyfwd may import from here: VERDICTS, REASONS,
TABLE_COUNTERS, FLOW_COUNTERS, CSUM_COUNTERS, FAST_COUNTERS, IO_COUNTERS,
QUEUE_COUNTERS,
REAL_COUNTERS
(the keys of Core.stats(), of one queue's and of Core.real_stats()'s
entries), SOCK_COUNTERS (of a backend's sockets: io.Xsk.sock_stats()),
bpf_object_path, bpf_object_check.
"""

import importlib.resources
import os
import socket

import numpy as np

from ..errors import BuildError, DataplaneError

try:
    from .._fastpath import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise BuildError(
        "pyfwd's C extension pyfwd._fastpath is not built "
        f"({exc}); install the package with `pip install -e .` "
        "(see the README for the Debian packages it needs)") from exc



def constants(prefix):
    """{suffix in lower case: value} of the header's PREFIX* constants
    (but PREFIX_MAX), in the order of their values."""
    found = {name[len(prefix):].lower(): getattr(lib, name)
             for name in dir(lib)
             if name.startswith(prefix) and name != prefix + "MAX"}
    return dict(sorted(found.items(), key=lambda kv: kv[1]))


def _fields(struct):
    """The field names of a struct of the header, in order."""
    return tuple(name for name, _ in ffi.typeof(f"struct {struct}").fields)


# Verdict i's name is VERDICTS[i] (PYFWD_VERDICT_*), reason i's REASONS[i].
VERDICTS = tuple(constants("PYFWD_VERDICT_"))
REASONS = tuple(ffi.string(lib.pyfwd_reason_name(i)).decode()
                for i in range(lib.PYFWD_R_MAX))

# The counters of struct pyfwd_stats, by group, as Core.stats() names them.
TABLE_COUNTERS = _fields("pyfwd_table_stats")   # vip_generation, vip_count
FLOW_COUNTERS = _fields("pyfwd_flow_stats")     # flows_new, flow_hits, ...
CSUM_COUNTERS = _fields("pyfwd_csum_stats")     # csum_completed, csum_bad
FAST_COUNTERS = _fields("pyfwd_fast_stats")     # fast_frames, ... (XDP)
IO_COUNTERS = _fields("pyfwd_io_stats")         # rx, tx, ... of the loops
# What is reported per queue (= worker): the loop's own counters (the punt
# ring, drained for all workers at once, is reported for the engine only)
# and the worker's share of the SNAT ports.
QUEUE_COUNTERS = tuple(k for k in IO_COUNTERS if k != "punt_overflow") + (
    "snat_ports_pool",)
# Per real server id (struct pyfwd_real_stats): frames, bytes, flows_new,
# active, inactive.
REAL_COUNTERS = _fields("pyfwd_real_stats")
# What the kernel counted at a backend's sockets (struct pyfwd_sock_stats,
# one group per backend): AF_XDP's XDP_STATISTICS (rx_dropped, ...,
# rx_ring_full, ...), AF_PACKET's PACKET_STATISTICS (packets, drops,
# freeze_q_cnt).  By backend, as XskInfo.backend names it; SOCK_GROUPS:
# the backend's group (struct pyfwd_<group>_sock_stats).
XSK_SOCK_COUNTERS = _fields("pyfwd_xsk_sock_stats")
AFP_SOCK_COUNTERS = _fields("pyfwd_afp_sock_stats")
SOCK_COUNTERS = {"xdp": XSK_SOCK_COUNTERS, "afpacket": AFP_SOCK_COUNTERS}
SOCK_GROUPS = {"xdp": "xsk", "afpacket": "afp"}

PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
FAMILIES = {4: lib.PYFWD_AF_INET, 6: lib.PYFWD_AF_INET6}


def check(ret, what):
    """Return ret, or raise DataplaneError if it is a negative errno."""
    if ret < 0:
        code = -ret
        raise DataplaneError(code, f"{what}: {os.strerror(code)}")
    return ret


def fill_addr(c, address):
    """Write an ipaddress address into a struct's addr and family."""
    packed = address.packed
    ffi.memmove(c.addr, packed, len(packed))
    c.family = FAMILIES[address.version]


def endpoint_array(endpoints):
    """A struct pyfwd_endpoint[] of values with .address, .port and
    .protocol ("tcp" | "udp"): model.Vip, io.Endpoint."""
    arr = ffi.new("struct pyfwd_endpoint[]", max(len(endpoints), 1))
    for c, e in zip(arr, endpoints):
        fill_addr(c, e.address)
        c.proto = PROTOCOLS[e.protocol]
        c.port = e.port
    return arr


def snat_struct(address, lo, hi):
    """A struct pyfwd_snat: SNAT's address and source ports lo..hi."""
    snat = ffi.new("struct pyfwd_snat *")
    fill_addr(snat, address)
    snat.port_lo, snat.port_hi = lo, hi
    return snat


def maglev_fill(size, offsets, skips, turns):
    """Fill a Maglev table in C (scheduler.maglev_table gives the inputs).

    @param size the table size, a prime
    @param offsets, skips each real's permutation: offset + j * skip
    @param turns the real index of each turn, at most `size` of them
    @return numpy.uint16 array of `size` entries; each turn's real claims
        the next free entry of its permutation, NO_REAL where none did

    Raises DataplaneError (EINVAL) for values out of range or a size that
    is not prime.
    """
    table = np.empty(size, dtype=np.uint16)
    cursors = np.array(offsets, dtype=np.uint32)     # written by C
    skips = np.ascontiguousarray(skips, dtype=np.uint32)
    turns = np.ascontiguousarray(turns, dtype=np.uint32)
    if skips.size != cursors.size:
        raise ValueError(f"{cursors.size} offsets and {skips.size} skips")
    check(lib.pyfwd_maglev_fill(
        ffi.from_buffer("uint16_t[]", table), size,
        ffi.from_buffer("uint32_t[]", cursors),
        ffi.from_buffer("uint32_t[]", skips), cursors.size,
        ffi.from_buffer("uint32_t[]", turns), turns.size),
        f"filling a Maglev table of {size} entries")
    return table


def bpf_object_path(name="steer"):
    """Path of an installed XDP object, e.g. bpf_object_path("steer")."""
    res = importlib.resources.files("pyfwd").joinpath(f"bpf/{name}.bpf.o")
    if not res.is_file():
        raise BuildError(f"XDP object {name}.bpf.o is not installed with "
                         "pyfwd; rebuild with `pip install -e .` (needs "
                         "clang)")
    return os.fspath(res)


def bpf_object_check(path):
    """Load an XDP object through the verifier and unload it.

    Needs CAP_BPF (root).  Raises DataplaneError with libbpf's message.
    """
    errbuf = ffi.new("char[]", 512)
    ret = lib.pyfwd_bpf_object_check(os.fsencode(path), errbuf, len(errbuf))
    if ret < 0:
        detail = ffi.string(errbuf).decode(errors="replace")
        raise DataplaneError(-ret, f"loading {path}: {os.strerror(-ret)}"
                             + (f" ({detail})" if detail else ""))


__all__ = ["ffi", "lib", "check", "VERDICTS", "REASONS", "TABLE_COUNTERS",
           "FLOW_COUNTERS", "CSUM_COUNTERS", "FAST_COUNTERS", "IO_COUNTERS", "QUEUE_COUNTERS",
           "REAL_COUNTERS", "XSK_SOCK_COUNTERS", "AFP_SOCK_COUNTERS",
           "SOCK_COUNTERS", "SOCK_GROUPS", "PROTOCOLS", "constants", "fill_addr",
           "endpoint_array", "snat_struct", "maglev_fill", "bpf_object_path",
           "bpf_object_check"]
