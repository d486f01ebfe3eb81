"""From services to the data plane's tables: pure values, no I/O.

The C core takes three arrays (csrc/pyfwd.h): VIPs, real servers indexed by
a stable id, and one ring of real ids per VIP that new flows are scheduled
from.  `build` makes them from the services and what ARP knows of each real
server's MAC; `RealIds` keeps a real's id stable while it exists, so a flow
keeps its real server across every table swap.
"""

import collections
import hashlib
import math
import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import scheduler as sched_mod
from .native import constants, lib
from ..errors import ConfigError
from ..model import Vip

# How each scheduler's ring is indexed by the C core (PYFWD_SCHED_*).
RING_INDEX = {"maglev": lib.PYFWD_SCHED_HASH, "wrr": lib.PYFWD_SCHED_SEQ,
              "rr": lib.PYFWD_SCHED_SEQ, "sh": lib.PYFWD_SCHED_SRC_HASH,
              "lc": lib.PYFWD_SCHED_LEAST, "wlc": lib.PYFWD_SCHED_LEAST}
# The modes of the C core and their codes: {"dr": PYFWD_MODE_DR, ...}.
MODE_CODE = constants("PYFWD_MODE_")


@dataclass(frozen=True)
class Limits:
    """What a core's tables hold (struct pyfwd_config's fields of the same
    names).  The defaults are the header's PYFWD_*_MAX_DEFAULT: what a Core
    made without them holds, as the Engine's is."""

    max_vips: int = lib.PYFWD_VIPS_MAX_DEFAULT      # L4 VIPs
    max_reals: int = lib.PYFWD_REALS_MAX_DEFAULT    # (VIP, real) ids
    max_ring: int = lib.PYFWD_RING_MAX_DEFAULT      # ring entries in all


def ring_need(service):
    """The most ring entries `build` gives service: its reals at their
    configured weights or less (drain, halt and health checks only lower
    them), or its fallback alone.  maglev and sh: the Maglev table's size;
    wrr: the weights' sum over their gcd, at most that size; rr, lc, wlc:
    one entry per real."""
    weights = [r.weight for r in service.reals if r.weight]
    if not weights:
        return 0 if service.fallback is None else (
            service.maglev_size if service.scheduler in ("maglev", "sh")
            else 1)
    if service.scheduler in ("maglev", "sh"):
        return service.maglev_size
    if service.scheduler == "wrr":
        return min(sum(weights) // math.gcd(*weights), service.maglev_size)
    return len(weights)


def check_limits(services, limits=Limits(), changed=None):
    """ConfigError unless the L4 services fit a core of these Limits
    whatever their state (drained, halted, down, on their fallback): their
    count, their (VIP, real) ids (a fallback takes one of its own), their
    rings (ring_need).  The error names the limit, what fits and a VIP:
    `changed` (one of services: what a change is about) if given, else the
    first that goes over."""
    services = [s for s in services if s.mode in MODE_CODE]
    if len(services) > limits.max_vips:
        raise ConfigError(f"{len(services)} L4 VIPs: over the data plane's "
                          f"max_vips of {limits.max_vips}")
    ids = [len({r.key for r in s.reals} | ({s.fallback.key} if s.fallback
                                             else set())) for s in services]
    over = _over(services, ids, limits.max_reals, changed)
    if over:
        raise ConfigError(
            f"vip {over[0].label}: its real servers would bring the (VIP, "
            f"real server) pairs to {over[2]}, over the data plane's "
            f"max_reals of {limits.max_reals} (a real server of two VIPs "
            "counts twice, a fallback once more)")
    over = _over(services, [ring_need(s) for s in services], limits.max_ring,
                 changed)
    if over:
        s, need, total = over
        raise ConfigError(
            f"vip {s.label}: its {s.scheduler} table of {need} entries "
            f"would bring the VIPs' tables to {total}, over the data "
            f"plane's max_ring of {limits.max_ring} entries "
            f"({limits.max_ring // s.maglev_size} maglev or sh VIPs of "
            f"{s.maglev_size}; rr, lc and wlc take one entry per real, "
            "wrr one per unit of weight over the weights' gcd)")


def _over(services, needs, limit, changed):
    """(service to name, its need, the total) when the needs go over limit:
    `changed` if it is one of services, else the first that goes over."""
    total = sum(needs)
    if total <= limit:
        return None
    named = any(s is changed for s in services)
    upto = 0
    for s, need in zip(services, needs):
        upto += need
        if s is changed if named else upto > limit:
            return s, need, total
    raise AssertionError("unreachable: the needs go over the limit")


class RealIds:
    """Stable ids for (vip, real key) pairs, 0..limit-1.

    A released id is reused as late as possible (FIFO), so that flows still
    pointing at a removed real are rescheduled, not sent to a newcomer.
    """

    def __init__(self, limit):
        self.limit = limit
        self._ids = {}
        self._free = collections.deque()
        self._next = 0

    def get(self, vip, key):
        """The id of (vip, key), allocated on first use.

        Raises ConfigError when all `limit` ids are taken.
        """
        k = (vip, key)
        if k not in self._ids:
            if self._free:
                self._ids[k] = self._free.popleft()
            elif self._next < self.limit:
                self._ids[k] = self._next
                self._next += 1
            else:
                raise ConfigError(f"more than {self.limit} real servers")
        return self._ids[k]

    def lookup(self, vip, key):
        """The id of (vip, key), or None if it has none."""
        return self._ids.get((vip, key))

    def mapping(self):
        """{(vip, key): id} of every pair that has an id (a copy)."""
        return dict(self._ids)

    def retain(self, pairs):
        """Release every id whose (vip, key) is not in pairs."""
        pairs = set(pairs)
        for k in [k for k in self._ids if k not in pairs]:
            self._free.append(self._ids.pop(k))

    @property
    def high_water(self):
        return self._next


@dataclass
class VipEntry:
    vip: Vip
    sched: int
    ring_off: int
    ring_len: int
    mode: str = "dr"
    persist: int = 0


@dataclass
class RealEntry:
    mac: Optional[bytes]     # next hop's MAC; None: unknown, cannot be used
    address: object
    port: int                # 0 = the VIP's port
    out_if: int = 0          # interface slot toward it
    weight: int = 1          # lc/wlc: flows per weight


@dataclass
class Tables:
    vips: list               # [VipEntry], in the order of the services
    reals: list              # [RealEntry | None] indexed by id
    ring: np.ndarray         # uint16 real ids, PYFWD_NO_REAL = 0xFFFF
    unscheduled: dict        # (vip, key) -> why it gets no new flows
    # vip -> fingerprint(): equal on every balancer whose VIP schedules
    # new flows the same way (ECMP: compare them across the nodes)
    fingerprints: dict = dataclasses.field(default_factory=dict)


def ring_for(service, weights):
    """The ring of local indices (into service.reals) for these weights."""
    keys = [r.key for r in service.reals]
    name = service.scheduler
    if name in ("lc", "wlc"):   # the candidates, once each
        return np.array([i for i, w in enumerate(weights) if w],
                        dtype=np.uint16)
    if name == "rr":            # plain round robin: weights only say "in"
        name, weights = "wrr", [1 if w else 0 for w in weights]
    if name == "sh":            # a Maglev table, indexed by the source
        name = "maglev"
        # Named by host alone, VIPs over the same real servers get the same
        # table whatever their ports, so one client reaches the same real
        # server on each (a PACS's DICOM and web VIPs).  A VIP that lists a
        # host twice (two ports) keeps the full names.
        hosts = [str(r.address) for r in service.reals]
        if len(set(hosts)) == len(hosts):
            keys = hosts
    if name != "maglev":
        return sched_mod.build_table(name, keys, weights,
                                     size=service.maglev_size)
    # Maglev fills its table taking the reals in turn, so their order
    # moves a few entries (15 of 65537 for 4 reals listed backwards): in
    # the keys' order, balancers whose configs list the same reals in
    # other orders build the same table (ECMP: a connection that changes
    # balancer keeps its real).
    order = sorted(range(len(keys)), key=keys.__getitem__)
    table = sched_mod.build_table(name, [keys[i] for i in order],
                                  [weights[i] for i in order],
                                  size=service.maglev_size)
    back = np.array(order + [sched_mod.NO_REAL], dtype=np.uint16)
    table = np.asarray(table)
    return back[np.where(table == sched_mod.NO_REAL, len(order), table)]


def fingerprint(service, local) -> str:
    """12 hex digits naming how ``service`` schedules new flows: its
    scheduler, mode, persistence and which real (by key, not by this
    node's ids) each entry of its ring ``local`` (indices into
    service.reals) names.  Two balancers with the same fingerprint for a
    VIP send a new flow's first packet to the same real."""
    keys = sorted({r.key for r in service.reals})
    rank = {k: i for i, k in enumerate(keys)}
    lut = np.array([rank[r.key] for r in service.reals]
                   + [sched_mod.NO_REAL], dtype=np.uint16)
    local = np.asarray(local, dtype=np.int64)
    named = lut[np.where(local == sched_mod.NO_REAL, len(service.reals),
                         local)]
    h = hashlib.blake2b(digest_size=6)
    h.update(f"{service.scheduler} {service.mode} {service.persistence}\n"
             .encode())
    h.update("\n".join(keys).encode())
    h.update(named.astype("<u2").tobytes())
    return h.hexdigest()


def build(services, ids, macs, out_ifs=None):
    """Tables for services.

    macs maps a real's address to the MAC of the next hop toward it (the
    real itself on its segment) or None when unknown; a real with no MAC is
    left out of the rings (and of the reals: its flows are rescheduled) and
    listed in `unscheduled` with the reason.  out_ifs maps an address to
    the interface slot toward it (default 0).
    """
    out_ifs = out_ifs or {}
    ids.retain((s.vip, r.key) for s in services for r in s.reals)
    for s in services:          # every id first: the reals list spans them
        for r in s.reals:
            ids.get(s.vip, r.key)
    reals = [None] * ids.high_water
    rings, vips, unscheduled, prints = [], [], {}, {}
    offset = 0
    for s in services:
        idv, weights = [], []
        for r in s.reals:
            rid = ids.get(s.vip, r.key)
            mac = macs.get(r.address)
            if mac is None:
                unscheduled[(s.vip, r.key)] = "MAC unknown (no ARP answer)"
            elif r.weight == 0:
                unscheduled[(s.vip, r.key)] = "draining (weight 0)"
            reals[rid] = RealEntry(mac, r.address, r.port or 0,
                                   out_ifs.get(r.address, 0),
                                   min(r.weight, 1) if s.scheduler == "lc"
                                   else r.weight)
            idv.append(rid)
            weights.append(r.weight if mac is not None else 0)
        if any(weights):
            local = ring_for(s, weights)
            lut = np.array(idv + [sched_mod.NO_REAL], dtype=np.uint16)
            ring = lut[np.where(local == sched_mod.NO_REAL, len(idv), local)]
        else:
            local = ring = np.zeros(0, dtype=np.uint16)
        prints[s.vip] = fingerprint(s, local)
        vips.append(VipEntry(s.vip, RING_INDEX[s.scheduler], offset,
                             len(ring), s.mode, s.persistence))
        rings.append(ring)
        offset += len(ring)
    ring = (np.concatenate(rings) if rings else np.zeros(0, np.uint16))
    return Tables(vips, reals, ring.astype(np.uint16, copy=False),
                  unscheduled, prints)
