"""Microbenchmarks: the C core per packet, Maglev table builds, flow memory.

Plain functions for `pyfwd bench` (no pytest, no scapy: the frames are
pyfwd.bench.frames', built with struct); bench/test_micro_bench.py runs the
same measurements on the packet cases of tests/cases under
pytest-benchmark.

    core_ns(kind)      ns per packet through pyfwd_core_burst, batch of 64:
                       "dr" (DR rewrite of an established flow), "nat-hit"
                       (NAT, a client's packet of an established flow),
                       "nat-new" (NAT, every packet opens a flow), "drop"
                       (malformed frames)
    csum_ns(size, way) ns per DR packet of `size` bytes of frame, its
                       checksum "finished" (a NIC's frame: never read),
                       "checked" (a veth's, finished: verified) or
                       "completed" (a veth's, unfinished: completed)
    maglev_ms(reals)   building one Maglev table of 65537 entries
    flow_bytes(mode)   bytes of flow table per tracked flow
    table_mib(flows)   memory of a flow table holding that many flows
    run_all()          all of them, as rows for the results (ROWS)

Every core figure is checked, not assumed: each round's counters must say
that every frame got the verdict the kind is about, that the flows were
hits (dr, nat-hit) or new (nat-new), and that every checksum was completed
("completed") or none (the others), none bad; a mismatch raises
BenchError.  The
figure includes the crossing from Python (one cffi call and the core's
per-burst work, amortised over the batch): that is what a burst costs the
I/O loops too, less the Python part.
"""

import ctypes
import gc
import time
from dataclasses import dataclass, field
from typing import Optional

from .frames import (BATCH, CALLS, CLIENT, CLIENT_MAC, DR_REALS,
                     LB_MAC, IN_MAC, NAT_PORT, NAT_REALS, OUT_MAC,
                     TCP, TCP_SYN, VIP, answer, dr_frames,
                     drop_frames, ipv4_frame, ipv4_parts,
                     nat_frames, nat_new_frames, unfinished,
                     vary)
from .system import BenchError
from ..dataplane.core import Core
from ..dataplane.scheduler import maglev_table
from ..model import MAGLEV_SIZE_DEFAULT, Real, Service, Vip
from ..frames import mac_to_bytes

KINDS = ("dr", "nat-hit", "nat-new", "drop")
# Checksums of DR frames of these sizes (bytes of frame), three ways: a
# NIC's frame (never read), a veth's finished one (verified), a veth's
# unfinished one (completed); see csrc/csum.c.
CSUM_SIZES = (64, 1500)
CSUM_WAYS = ("finished", "checked", "completed")
MAGLEV_REALS = (10, 1000)
FLOW_TABLES = (("flow-table", "dr"), ("flow-table-nat", "nat"))
# the result rows of run_all, in order
ROWS = (tuple(f"core-{kind}" for kind in KINDS)
        + tuple(f"csum-{size}" for size in CSUM_SIZES)
        + tuple(f"maglev-{n}" for n in MAGLEV_REALS)
        + tuple(name for name, _ in FLOW_TABLES))
TARGET_CORE_NS = 50.0       # dr and nat-hit
TARGET_MAGLEV_MS = 50.0     # 1000 reals, M = 65537
# The flow table of the core benchmarks: 65536 slots (4.5 MiB), of which
# the 64 to 2048 flows a round touches stay in cache: the figures are the
# core's work, not DRAM misses (the engine's tables are 2M-4M slots).
BENCH_FLOWS = 1 << 16
# The engine's tables turn new flows away from about 85% full.
TABLE_FILL_MAX = 0.85

# --- set-ups ----------------------------------------------------------------

@dataclass
class Setup:
    """What a core is given before frames go through it: services, the
    real servers' MACs and interface slots, its own MACs, SNAT."""

    services: list
    macs: dict
    out_ifs: dict = field(default_factory=dict)
    mac: object = None
    mac2: object = None
    snat: Optional[tuple] = None    # (address, (lo, hi))

    def core(self, flows=BENCH_FLOWS, **limits):
        core = Core(mac=self.mac, mac2=self.mac2, flows=flows, **limits)
        if self.snat:
            core.set_snat(*self.snat)
        core.publish_services(self.services, self.macs, self.out_ifs)
        return core


def _macs(reals, macs):
    """{real's address: its MAC as bytes} from {address text: MAC}."""
    return {r.address: mac_to_bytes(macs[str(r.address)]) for r in reals}


def dr_setup():
    """VIP:80/tcp in DR mode over two real servers (Maglev)."""
    reals = [Real.parse(a) for a in DR_REALS]
    return Setup([Service(Vip.parse(f"{VIP}:80/tcp"), reals)],
                 _macs(reals, DR_REALS), mac=LB_MAC)


def nat_setup():
    """Two-arm NAT: VIP:80/tcp -> two reals' :8080 on the inside (slot 1)."""
    reals = [Real.parse(f"{a}:{NAT_PORT}") for a in NAT_REALS]
    return Setup([Service(Vip.parse(f"{VIP}:80/tcp"), reals, "maglev",
                          "nat")],
                 _macs(reals, NAT_REALS), {r.address: 1 for r in reals},
                 mac=OUT_MAC, mac2=IN_MAC)


def _default(kind):
    if kind == "dr":
        return dr_setup(), dr_frames()
    if kind == "nat-hit":
        return nat_setup(), nat_frames()
    if kind == "nat-new":
        return nat_setup(), nat_new_frames()
    return dr_setup(), drop_frames()


# --- the core ---------------------------------------------------------------

def _stats(core):
    s = core.stats()
    return {"frames": s["frames"], "forward": s["verdict"]["forward"],
            "drop": s["verdict"]["drop"], "new": s["flows_new"],
            "hits": s["flow_hits"], "evicted": s["flows_evicted"],
            "completed": s["csum_completed"], "bad": s["csum_bad"]}


def _check_round(kind, before, after, n, completed=0):
    d = {k: after[k] - before[k] for k in after}
    want = {"frames": n, "drop" if kind == "drop" else "forward": n,
            "evicted": 0,
            "new": n if kind == "nat-new" else 0,
            "hits": n if kind in ("dr", "nat-hit") else 0,
            "completed": completed, "bad": 0}
    wrong = {k: (d[k], v) for k, v in want.items() if d[k] != v}
    if wrong:
        raise BenchError(f"core {kind}: the counters of a round are not "
                         "what the benchmark measures (got, want): "
                         + ", ".join(f"{k} {g}/{w}"
                                     for k, (g, w) in wrong.items()))


def _warm(kind, core, setup, frames):
    """Run frames once (opening the flows of dr and nat-hit) and check
    every verdict; nat-hit's flows are answered, so established."""
    outs, res = core.process(frames)
    bad = [(i, r.reason) for i, r in enumerate(res)
           if r.verdict != ("drop" if kind == "drop" else "forward")]
    if bad:
        raise BenchError(f"core {kind}: frame {bad[0][0]} got "
                         f"{bad[0][1]!r} ({len(bad)} of {len(res)} wrong)")
    if kind == "dr":
        macs = set(setup.macs.values())
        for i, (o, f) in enumerate(zip(outs, frames)):
            if o[:6] not in macs or o[12:] != f[12:] or (
                    core.mac != bytes(6) and o[6:12] != core.mac):
                raise BenchError(f"core dr: frame {i} did not come out "
                                 "addressed to a real server from us")
    if kind == "nat-hit":
        back = [(answer(o), r.out_if) for o, r in zip(outs, res)
                if ipv4_parts(o)]
        for slot in {s for _, s in back}:
            _, rres = core.process([a for a, s in back if s == slot], slot)
            if any(r.reason != "forward_reply" for r in rres):
                raise BenchError("core nat-hit: a real server's answer was "
                                 "not translated back")


class CoreBench:
    """One kind of core benchmark, set up and checked: a core with the
    services published, its flows opened (dr, nat-hit) and every verdict
    of a first run checked.

    rounds(): the batches of one round, copied into C buffers afresh (NAT
    rewrites frames in place); run(batches): process them back to back;
    counters() before and check(before, packets) after a round raise
    BenchError unless every frame got the kind's verdict and every flow
    was a hit (dr, nat-hit) or new (nat-new).  "nat-new" takes each batch
    of a round from frames in turn (len(frames) // batch batches) with the
    core's clock stopped, and rounds() expires the last round's flows, so
    that each packet opens a flow every round.  csum: None (frames as a
    NIC's), "checked" or "completed" (flagged as a veth's; "completed":
    every frame's checksum unfinished, and completed every round).
    """

    def __init__(self, kind, frames=None, batch=BATCH, *, setup=None,
                 flows=BENCH_FLOWS, calls=CALLS, csum=None):
        if kind not in KINDS:
            raise BenchError(f"core kind {kind!r}: expected one of "
                             f"{', '.join(KINDS)}")
        if csum not in (None, "checked", "completed"):
            raise BenchError(f"core csum {csum!r}: expected None, "
                             "'checked' or 'completed'")
        self.csum = csum
        if frames is None:
            dsetup, frames = _default(kind)
            setup = setup or dsetup
        self.kind = kind
        self.setup = setup or (nat_setup() if kind.startswith("nat")
                               else dr_setup())
        frames = [bytes(f) for f in frames]
        if not frames:
            raise BenchError(f"core {kind}: no frames")
        self.core = self.setup.core(flows)
        if kind == "nat-new":
            calls = len(frames) // batch
            if not calls:
                raise BenchError(f"core nat-new: {len(frames)} frames, "
                                 f"fewer than one batch of {batch}")
            self.sets = [frames[c * batch:(c + 1) * batch]
                         for c in range(calls)]
            if 2 * calls * batch > TABLE_FILL_MAX * flows:
                raise BenchError(f"core nat-new: {calls * batch} flows "
                                 f"would fill a table of {flows} slots")
        else:
            self.sets = [[frames[i % len(frames)] for i in range(batch)]]
        self.calls = calls
        self.packets = calls * batch        # per round
        self.clock = 1000
        if kind == "nat-new":
            self.core.set_clock(self.clock)
        for s in self.sets:
            _warm(kind, self.core, self.setup, s)

    def rounds(self):
        if self.kind == "nat-new":
            self.clock += 1000      # past every timeout: all flows go
            self.core.set_clock(self.clock)
            self.core.expire()
        return [self.core.prepare(self.sets[c % len(self.sets)],
                                  csum_partial=self.csum is not None)
                for c in range(self.calls)]

    def run(self, batches):
        run = self.core.run
        for b in batches:
            run(b)

    def counters(self):
        return _stats(self.core)

    def check(self, before, packets=None):
        n = self.packets if packets is None else packets
        _check_round(self.kind, before, _stats(self.core), n,
                     n if self.csum == "completed" else 0)


def core_ns(kind: str, frames: Optional[list] = None, batch: int = BATCH,
            repeat: int = 7, *, setup: Optional[Setup] = None,
            flows: int = BENCH_FLOWS, calls: int = CALLS) -> float:
    """ns per packet of the core through pyfwd_core_burst, best of repeat.

    kind: "dr", "nat-hit", "nat-new" or "drop".  frames: the packets (bytes)
    to use, cycled to fill each batch; None builds them (with the matching
    set-up).  setup: the services the frames are for (default: this
    module's DR or NAT set-up).  flows: the flow table's slots.  A round is
    `calls` batches run back to back (see CoreBench); the figure is the
    best round's time over its packets.  Raises BenchError when the
    verdicts or counters say the frames are not what kind is about.
    """
    return _best_ns(CoreBench(kind, frames, batch, setup=setup,
                              flows=flows, calls=calls), repeat)


def _best_ns(bench, repeat):
    """ns per packet of bench's best round of repeat, each checked."""
    best = float("inf")
    for _ in range(repeat):
        batches = bench.rounds()
        before = bench.counters()
        t0 = time.perf_counter_ns()
        bench.run(batches)
        total = time.perf_counter_ns() - t0
        bench.check(before)
        best = min(best, total / bench.packets)
    return best


def csum_ns(size: int, way: str, repeat: int = 7, *,
            calls: int = CALLS) -> float:
    """ns per packet of established DR flows' frames of `size` bytes (64
    distinct flows) whose TCP checksum is: "finished" and not flagged (a
    NIC's frame: the core never reads it), "checked" (flagged as a veth's,
    finished: verified, a pass over the segment) or "completed" (flagged,
    unfinished: completed, the same pass and a store).  Best of repeat
    rounds; BenchError unless every frame was forwarded and, for
    "completed", completed (none bad)."""
    if way not in CSUM_WAYS:
        raise BenchError(f"checksum way {way!r}: expected one of "
                         f"{', '.join(CSUM_WAYS)}")
    frames = dr_frames(BATCH, size)
    if way == "completed":
        frames = [unfinished(f) for f in frames]
    bench = CoreBench("dr", frames, setup=dr_setup(), calls=calls,
                      csum=None if way == "finished" else way)
    return _best_ns(bench, repeat)


def call_ns(repeat: int = 7, calls: int = 2000) -> float:
    """ns of one pyfwd_core_burst call of no frames (the crossing from Python
    and the core's per-burst work), best of repeat."""
    core = dr_setup().core()
    empty = core.prepare([])
    best = float("inf")
    for _ in range(repeat):
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            core.run(empty)
            best = min(best, time.perf_counter_ns() - t0)
    return best


# --- Maglev ---------------------------------------------------------------

def real_keys(n):
    return [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}:80" for i in range(n)]


def maglev_ms(reals: int, repeat: int = 5) -> float:
    """ms to build one Maglev table (M = 65537) for `reals` real servers of
    weight 1, best of repeat."""
    keys, weights = real_keys(reals), [1] * reals
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        maglev_table(keys, weights, MAGLEV_SIZE_DEFAULT)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


# --- flow memory ----------------------------------------------------------

def _malloc_in_use():
    """Bytes malloc has handed out now, on its heaps and in mapped blocks
    (glibc's mallinfo2), or None where there is no mallinfo2."""
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return None
    fn.restype = MallInfo2
    info = fn()
    return info.uordblks + info.hblkhd


def _rss_anon():
    """Bytes of anonymous memory resident in this process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise BenchError("no RssAnon in /proc/self/status")


def slot_bytes() -> int:
    """Bytes of one flow table slot (one direction of a flow), measured as
    what the core allocates per slot: the difference between the memory
    malloc hands a core of 2**20 slots and one of 2**19 (glibc), else the
    memory a table of 2**19 slots holds resident once every page of it
    holds a flow."""
    small, big = 1 << 19, 1 << 20
    sizes = []
    for slots in (small, big):
        gc.collect()
        before = _malloc_in_use()
        if before is None:
            break
        core = Core(flows=slots)
        sizes.append(_malloc_in_use() - before)
        del core
        gc.collect()
    if len(sizes) == 2:
        return round((sizes[1] - sizes[0]) / (big - small))
    slots = 1 << 19
    mib = _table_rss(dr_setup(), slots, slots // 2)[0]
    return round(mib * 2**20 / slots)


def flow_bytes(mode: str = "dr") -> int:
    """Bytes of flow table per tracked flow: a DR flow takes one slot, a
    NAT or SNAT flow two (the client's direction and the real server's,
    each found by its own tuple).  The slot is measured (slot_bytes); the
    slots per flow are the core's design (csrc/core.h)."""
    if mode not in ("dr", "nat", "snat"):
        raise BenchError(f"flow mode {mode!r}: expected dr, nat or snat")
    return slot_bytes() * (1 if mode == "dr" else 2)


def _fill(core, template, n, chunk=4096):
    """Open n flows in core (frames varied from template); returns the
    counters' flows_new."""
    for start in range(0, n, chunk):
        frames = [vary(template, i, checksums=False)
                  for i in range(start, min(n, start + chunk))]
        core.run(core.prepare(frames))
    return core.stats()


def _table_rss(setup, slots, flows):
    """(MiB the flows made resident in a core of `slots` slots, MiB the
    core allocates in all, counters).  Resident: after the flows are in,
    less before (the core made, its table calloc'd but untouched).  A
    table of 32 MiB or more is always mapped afresh by glibc; a smaller
    one may reuse heap memory already resident, which this cannot see."""
    nat = setup.services[0].mode != "dr"
    template = ipv4_frame(setup.mac, CLIENT_MAC, CLIENT, VIP, TCP, 1, 80,
                          TCP_SYN)
    warm = setup.core(1 << 12)  # Python's own memory for a chunk, first
    _fill(warm, template, 4096)
    del warm
    gc.collect()
    mm0 = _malloc_in_use()
    core = setup.core(slots)
    core.set_clock(1000)        # nothing expires while it fills
    mm1 = _malloc_in_use()
    gc.collect()
    rss0 = _rss_anon()
    s = _fill(core, template, flows)
    gc.collect()
    rss1 = _rss_anon()
    if s["flows_new"] != flows or s["flows_evicted"] or \
            s["reason"]["drop_table_full"]:
        raise BenchError(f"flow table of {slots} slots: {s['flows_new']} "
                         f"of {flows} {'NAT' if nat else 'DR'} flows in, "
                         f"{s['flows_evicted']} evicted, "
                         f"{s['reason']['drop_table_full']} refused")
    alloc = (mm1 - mm0) / 2**20 if mm0 is not None else float("nan")
    del core
    gc.collect()
    return (rss1 - rss0) / 2**20, alloc, s


def table_slots(flows, mode="dr"):
    """The power-of-two table (slots) that holds `flows` flows of mode
    without turning new ones away (at most TABLE_FILL_MAX full)."""
    need = flows * (1 if mode == "dr" else 2) / TABLE_FILL_MAX
    slots = 64
    while slots < need:
        slots <<= 1
    return slots


def table_mib(flows: int = 1_000_000, mode: str = "dr") -> float:
    """MiB of memory a flow table holding `flows` flows takes, measured: the
    anonymous memory resident in this process after `flows` flows were
    opened through the core, less before (see _table_rss: measure tables
    of 32 MiB and more, ~250000 flows or more).  The table is
    the smallest power of two that holds them (table_slots: DR one slot a
    flow, NAT two, at most 85% full); raises BenchError if a flow was
    turned away or evicted."""
    setup = dr_setup() if mode == "dr" else nat_setup()
    return _table_rss(setup, table_slots(flows, mode), flows)[0]


# --- everything -------------------------------------------------------------

def run_all(log=print, *, flows: int = 1_000_000, repeat: int = 7,
            only=None) -> list:
    """Every microbenchmark, as result rows {"name", "metric", "unit",
    "value", ...}; log(line) says what each found and whether the targets
    are met.  flows: the flows the table memory is measured with (metric
    "mib_per_1m_flows" for a million); repeat: rounds of each core and
    Maglev figure (best taken); only: the row names to measure (default
    all: core-KIND, csum-SIZE (metrics ns_per_pkt_WAY), maglev-N,
    flow-table, flow-table-nat)."""
    rows = []

    def wanted(name):
        return only is None or name in only
    mib_metric = ("mib_per_1m_flows" if flows == 1_000_000
                  else f"mib_per_{flows}_flows")

    def row(name, metric, unit, value, **extra):
        rows.append({"name": name, "metric": metric, "unit": unit,
                     "value": value, **extra})
        return value

    call = call_ns(repeat)
    log(f"core: a call of no frames costs {call:.0f} ns "
        f"({call / BATCH:.1f} ns per packet of a {BATCH}-frame batch)")
    for kind in KINDS:
        if not wanted(f"core-{kind}"):
            continue
        ns = row(f"core-{kind}", "ns_per_pkt", "ns",
                 core_ns(kind, repeat=repeat), batch=BATCH,
                 flows=BENCH_FLOWS)
        target = TARGET_CORE_NS if kind in ("dr", "nat-hit") else None
        log(f"core {kind:8s} {ns:7.1f} ns/packet"
            + (f"  (target <= {target:.0f}: "
               f"{'met' if ns <= target else 'MISSED'})" if target else ""))
    for size in CSUM_SIZES:
        if not wanted(f"csum-{size}"):
            continue
        ns = {way: row(f"csum-{size}", f"ns_per_pkt_{way}", "ns",
                       csum_ns(size, way, repeat), frame_bytes=size,
                       batch=BATCH)
              for way in CSUM_WAYS}
        log(f"checksums, {size:4d}-byte DR frames: "
            + "  ".join(f"{way} {ns[way]:.1f}" for way in CSUM_WAYS)
            + f" ns/packet (completing costs "
            f"{ns['completed'] - ns['finished']:+.1f})")
    for n in MAGLEV_REALS:
        if not wanted(f"maglev-{n}"):
            continue
        ms = row(f"maglev-{n}", "build_ms", "ms",
                 maglev_ms(n, max(1, min(repeat, 5))),
                 table_size=MAGLEV_SIZE_DEFAULT)
        log(f"maglev {n:5d} reals, M={MAGLEV_SIZE_DEFAULT}: {ms:7.1f} ms"
            + (f"  (target <= {TARGET_MAGLEV_MS:.0f}: "
               f"{'met' if ms <= TARGET_MAGLEV_MS else 'MISSED'})"
               if n == 1000 else ""))
    slot = slot_bytes()
    for name, mode in FLOW_TABLES:
        if not wanted(name):
            continue
        per = slot * (1 if mode == "dr" else 2)
        row(name, "bytes_per_flow", "B", per, mode=mode, slot_bytes=slot)
        slots = table_slots(flows, mode)
        mib, alloc, _ = _table_rss(
            dr_setup() if mode == "dr" else nat_setup(), slots, flows)
        row(name, mib_metric, "MiB", mib, mode=mode, slots=slots,
            flows=flows, allocated_mib=alloc)
        log(f"flows {mode:3s}: {per} B per flow ({slot} B a slot); "
            f"{flows} flows: {slots} slots, {mib:.1f} MiB resident "
            f"({alloc:.1f} MiB allocated)")
    return rows


__all__ = ["KINDS", "CSUM_SIZES", "CSUM_WAYS", "ROWS", "Setup", "dr_setup",
           "nat_setup", "CoreBench", "core_ns", "csum_ns", "call_ns",
           "maglev_ms", "slot_bytes", "flow_bytes", "table_slots",
           "table_mib", "run_all"]
