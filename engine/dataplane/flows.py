"""The live flows of the data plane's tables (`pyfwd ctl flows`, as
`ipvsadm -L -c`), read through pyfwd_flow_list (csrc/pyfwd_flows.h).

    rows, total = list_flows(core, vip=Vip.parse("10.0.0.100:80/tcp"),
                             limit=100, running=[True])

A worker whose loop runs copies its own table between bursts (never a torn
entry); one without a running loop (tests, a stopped engine, a loop that
ended) is read here, under the core's lock.  The XDP fast path's flows
are in the core's tables too (it keeps connection tracking): they are
listed, marked `fast`, their expiry pushed on by what the program saw.
"""

import ipaddress

from . import native as _native
from .native import PROTOCOLS, ffi, fill_addr, lib
from .tables import MODE_CODE

LIMIT_DEFAULT = 100     # rows `ctl flows` prints unless told
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
        return f"[{ipaddress.IPv6Address(bytes(packed))}]:{port}"
    return f"{ipaddress.IPv4Address(bytes(packed[0:4]))}:{port}"


def _filter(vip):
    f = ffi.new("struct pyfwd_flow_filter *")
    if vip is not None:
        fill_addr(f, vip.address)
        f.port = vip.port
        f.proto = PROTOCOLS[vip.protocol]
    return f


def list_flows(core, vip=None, limit=LIMIT_DEFAULT, running=None,
               wait_ms=WAIT_MS):
    """The live flows of every worker of `core` (a dataplane.core.Core),
    those to `vip` (a model.Vip) only when given: (rows, total).

    rows: at most `limit` (0: all of them) dicts {"proto", "state"
    (established, syn, syn-ack, closing; udp), "expires" (seconds, float),
    "client", "vip", "real" (ADDR:PORT), "snat_port" (SNAT, else None),
    "mode", "worker", "fast"}, soonest to expire last; total: how many
    flows match in all.  running: per worker, whether a loop runs it
    (None: none does).  Raises DataplaneError (a loop that did not answer
    within wait_ms: ETIMEDOUT).
    """
    flt = _filter(vip)
    owners = {i: k for k, i in core.ids.mapping().items()}
    slots = _slots(core)        # what one worker's table can hold
    rows, total = [], 0
    for w in range(core.workers):
        room = 0 if limit and len(rows) >= limit else \
            (min(limit - len(rows), slots) if limit else None)
        loop = bool(running and w < len(running) and running[w])
        n, found, infos = _worker(core, w, flt, room, loop, wait_ms, slots)
        total += found
        rows.extend(_row(infos[i], owners) for i in range(n))
    rows.sort(key=lambda r: -r["expires"])
    return rows, total


def _slots(core):
    """Flow slots per worker (a power of two, as ctx.c makes them)."""
    cfg = ffi.new("struct pyfwd_config *")
    lib.pyfwd_ctx_config_read(core.ctx, cfg)
    return 1 << (max(cfg.flows or lib.PYFWD_FLOWS_DEFAULT, 64) - 1
                  ).bit_length()


def _worker(core, w, flt, room, loop, wait_ms, slots):
    """(copied, total, array) of worker w; room None: all of them (asked
    twice: the count, then that many, plus what came meanwhile, at most
    `slots`)."""
    total = ffi.new("uint64_t *")
    if room is None:
        n, _, _ = _call(core, w, flt, 0, total, loop, wait_ms)
        room = min(total[0] + 1024, slots)
    out = ffi.new("struct pyfwd_flow_info[]", max(room, 1))
    n, _, _ = _call(core, w, flt, room, total, loop, wait_ms, out)
    return n, total[0], out


def _call(core, w, flt, room, total, loop, wait_ms, out=ffi.NULL):
    if loop:
        ret = lib.pyfwd_flow_list(core.ctx, w, flt, out, room, total,
                                  wait_ms)
    else:
        with core._lock:        # no process() beside the copy
            ret = lib.pyfwd_flow_list(core.ctx, w, flt, out, room, total,
                                      0)
    _native.check(ret, f"listing the flows of queue {w}")
    return ret, total[0], out


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


__all__ = ["list_flows", "endpoint", "LIMIT_DEFAULT", "WAIT_MS"]
