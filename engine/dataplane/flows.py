"""The live flows of the data plane's tables (`pyfwd ctl flows`, as
`ipvsadm -L -c`), read through pyfwd_flow_list (csrc/pyfwd_flows.h).

    rows, total = list_flows(core, vip=Vip.parse("10.0.0.100:80/tcp"),
                             limit=100, io=engine.xsk)

A worker whose loop runs copies its own table between bursts (never a torn
entry); one without a running loop (tests, a stopped engine, a loop that
ended) is read here, under the core's lock and the I/O's (no close).
The XDP fast path's flows are in the core's tables too (it keeps
connection tracking): they are listed, marked `fast`, their expiry pushed
on by what the program saw.
"""

import contextlib
import ipaddress

from . import native as _native
from .native import PROTOCOLS, ffi, fill_addr, lib
from .tables import MODE_CODE
from ..model import hostport

WAIT_MS = 2000          # how long a running loop may take to copy

_MODES = {code: name for name, code in MODE_CODE.items()}
_PROTOS = {n: name for name, n in PROTOCOLS.items()}
_TCP_STATES = {lib.PYFWD_FLOW_OPEN: "established",
               lib.PYFWD_FLOW_CLOSING: "closing",
               lib.PYFWD_FLOW_SYN: "syn",
               lib.PYFWD_FLOW_SYN_ACK: "syn-ack"}


def endpoint(family, packed, port):
    """`10.0.0.1:80`, `[2001:db8::1]:80` from a C address (16 bytes)."""
    if family == lib.PYFWD_AF_INET6:
        return hostport(ipaddress.IPv6Address(bytes(packed)), port)
    return hostport(ipaddress.IPv4Address(bytes(packed[0:4])), port)


def _filter(vip):
    f = ffi.new("struct pyfwd_flow_filter *")
    if vip is not None:
        fill_addr(f, vip.address)
        f.port = vip.port
        f.proto = PROTOCOLS[vip.protocol]
    return f


def list_flows(core, vip=None, limit=0, io=None,
               wait_ms=WAIT_MS):
    """The live flows of every worker of `core` (a dataplane.core.Core),
    those to `vip` (a model.Vip) only when given: (rows, total).

    rows: at most `limit` (0: all of them) dicts {"proto", "state"
    (established, syn, syn-ack, closing; udp), "expires" (seconds, float),
    "client", "vip", "real" (ADDR:PORT), "snat_port" (SNAT, else None),
    "mode", "worker", "fast"}, soonest to expire last (`ctl flows` asks
    for control.protocol.FLOWS_LIMIT_DEFAULT unless told); total: how many
    flows match in all.  io: the I/O backend whose loops run the workers
    (a dataplane.io.Xsk or Afp; None: no loop runs, as in tests or a
    stopped engine).  Raises DataplaneError (a loop that did not answer
    within wait_ms: ETIMEDOUT).
    """
    flt = _filter(vip)
    owners = {i: k for k, i in core.ids.mapping().items()}
    rows, total = [], 0
    for w in range(core.workers):
        slots = _slots(core, w)     # at least its flows: one pass
        room = min(max(limit - len(rows), 0), slots) if limit else slots
        out = ffi.new("struct pyfwd_flow_info[]", max(room, 1))
        n, found = _worker(core, io, w, flt, out, room, wait_ms)
        total += found
        rows.extend(_row(out[i], owners) for i in range(n))
    rows.sort(key=lambda r: -r["expires"])
    return rows, total


def _slots(core, w):
    """Worker w's flow table slots (a flow takes one or two)."""
    room = ffi.new("struct pyfwd_worker_room *")
    _native.check(lib.pyfwd_worker_room_read(core.ctx, w, room),
                  f"reading the room of worker {w}")
    return room.flow_slots


def _worker(core, io, w, flt, out, room, wait_ms):
    """(copied, total) of worker w into out: its loop copies them when one
    runs, else they are read here, in place."""
    total = ffi.new("uint64_t *")
    # io's close() frees what the table read in place refers to (the
    # fast path's maps) under its _io_lock; a loop that ended never
    # runs again.  Held, no close can run, and a loop seen ended is.
    with (io._io_lock if io is not None else contextlib.nullcontext()):
        loop = _loop_runs(io, w)
        if not loop:
            with core._lock:        # no process() beside the copy
                ret = lib.pyfwd_flow_list(core.ctx, w, flt, out, room,
                                          total,
                                          lib.PYFWD_FLOW_LIST_INPLACE)
    if loop:
        ret = lib.pyfwd_flow_list(core.ctx, w, flt, out, room, total,
                                  wait_ms)
    _native.check(ret, f"listing the flows of queue {w}")
    return ret, total[0]


def _loop_runs(io, w):
    loops = io.loops() if io is not None else ()
    return w < len(loops) and loops[w]["running"]


def _row(f, owners):
    proto = _PROTOS.get(f.proto, str(f.proto))
    mode = _MODES.get(f.mode, str(f.mode))
    if f.real_port:
        real = endpoint(f.family, f.real, f.real_port)
    else:       # DR, TUN: the real's address from its id, the VIP's port
        owner = owners.get(f.real_id)
        real = (_with_port(owner[1], f.vip_port) if owner
                else f"#{f.real_id}")
    return {"proto": proto,
            "state": _TCP_STATES.get(f.state, str(f.state))
            if proto == "tcp" else proto,
            "expires": round(f.expires_ms / 1000, 1),
            "client": endpoint(f.family, f.client, f.client_port),
            "vip": endpoint(f.family, f.vip, f.vip_port),
            "real": real,
            "snat_port": f.snat_port or None,
            "mode": mode, "worker": f.worker, "fast": bool(f.fast)}


def _with_port(key, port):
    """A real's key (`ADDR`, `ADDR:PORT`, `[V6]`, `[V6]:PORT`) with a port."""
    if key.endswith("]") or ":" not in key:
        return f"{key}:{port}"
    return key


__all__ = ["list_flows", "endpoint", "WAIT_MS"]
