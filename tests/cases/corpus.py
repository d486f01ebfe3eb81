"""The fuzzer's and the sanitizer replay's set-ups and corpus, written from
the packet cases (csrc/tools/harness.h says the format).

Set-ups are what the packet-case tests publish (defs: DR, IPv4 and IPv6;
nat_defs: two-arm NAT and SNAT, its port pool of two; csum_defs: IPv6
NAT; tun_defs: TUN, IPv4 and IPv6), captured from Core itself, plus
"mixed": every scheduler, persistence, DR, NAT and SNAT side by side, and
"icmp" (icmp_defs' DR).
Inputs are every case of defs (its truncations included), every sequence
of nat_defs, csum_defs and icmp_defs as one input (the return path, ICMP
errors and SNAT ports need the flow the first frames make), with the
interface slot and the checksum flags of each step.

    python -m tests.cases.corpus DIR    writes DIR/setups/, DIR/seeds/
"""

import contextlib
import dataclasses
import sys
from pathlib import Path

from pyfwd.dataplane import core as core_mod
from pyfwd.dataplane.core import Core
from pyfwd.dataplane.native import ffi, lib
from pyfwd.frames import mac_to_bytes
from pyfwd.model import Real, Service, Vip

from . import csum_defs as cd
from . import defs
from . import icmp_defs as idefs
from . import nat_defs as nd
from . import tun_defs as td

FLOWS = 256             # small: a sequence may fill the table
# TUN's ends on each slot, as csrc/tools/harness.c sets them.
TUN_SOURCES = (("10.0.0.2", "fd00::2", 1500), ("10.0.0.2", None, 1500))
MAGLEV = 251            # a prime: small rings, a fresh context per input
REC_IN_IF1, REC_CSUM_PARTIAL, REC_GSO, REC_CLOCK = 1, 2, 4, 8
CLOCK_START, CLOCK_STEP = 1000, 64     # seconds, as harness.c


def _small(services):
    return [dataclasses.replace(s, maglev_size=MAGLEV) for s in services]


def _mixed():
    """Every scheduler and mode, persistence, IPv6 NAT: two reals each."""
    v4, v6 = "10.0.0.100", "fd00::100"
    r4 = [Real.parse(f"10.0.0.{i}:8080") for i in (11, 12)]
    r6 = [Real.parse(f"[fd00::{i}]") for i in (11, 12)]
    services = [
        Service(Vip.parse(f"{v4}:80/tcp"), [Real(r.address) for r in r4],
                "lc", "dr"),
        Service(Vip.parse(f"{v4}:53/udp"), r4, "sh", "nat", persistence=60),
        Service(Vip.parse(f"{v4}:443/tcp"), r4, "wlc", "nat"),
        Service(Vip.parse(f"{v4}:8443/tcp"), r4, "rr", "snat"),
        Service(Vip.parse(f"{v4}:123/udp"), r4, "maglev", "snat",
                persistence=30),
        Service(Vip.parse(f"[{v6}]:80/tcp"), r6, "rr", "nat"),
        Service(Vip.parse(f"[{v6}]:104/tcp"), r6, "wrr", "dr"),
    ]
    macs = {r.address: mac_to_bytes(f"02:00:00:00:02:{i:02x}")
            for i, r in enumerate(r4 + r6)}
    out_ifs = {r.address: i % 2 for i, r in enumerate(r4 + r6)}
    return services, macs, out_ifs


def _mixed_steps():
    """A first frame to each of mixed's VIPs, and answers from both its
    reals (one has the flow)."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from .harness import Case
    services, _, out_ifs = _mixed()
    client = {4: "10.0.0.1", 6: "fd00::1"}
    steps = []
    for i, s in enumerate(services):
        v = s.vip
        ip = IP if v.address.version == 4 else IPv6
        l4 = TCP if v.protocol == "tcp" else UDP
        kw = {"flags": "S"} if l4 is TCP else {}
        c = str(client[v.address.version])
        first = bytes(Ether(dst=nd.OUT_MAC) / ip(src=c, dst=str(v.address))
                      / l4(sport=40000 + i, dport=v.port, **kw))
        steps.append((Case(f"mixed-{i}", str(v), first, "forward"),
                      {"forward"}))
        if s.mode == "dr":
            continue
        for real in s.reals:        # one of them has the flow
            src, dst, dport = str(real.address), c, [40000 + i]
            if s.mode == "snat":
                dst, dport = "10.0.0.2", range(20000, 20004)
            slot = out_ifs[real.address]
            for port in dport:
                answer = bytes(Ether(dst=(nd.OUT_MAC, nd.IN_MAC)[slot])
                               / ip(src=src, dst=dst)
                               / l4(sport=real.port or v.port, dport=port))
                steps.append((Case(f"mixed-{i}-answer", str(v), answer,
                                   "forward_reply", in_if=slot),
                              {"forward_reply", "drop_no_flow"}))
    return steps


def setups():
    """{name: (Core kwargs, (snat address, ports) or None, services, macs,
    out_ifs)}, in the order of the set-up byte."""
    mixed, mixed_macs, mixed_ifs = _mixed()
    return {
        "dr": (dict(mac=defs.LB_MAC), None, defs.SERVICES, defs.MACS, None),
        "nat": (dict(mac=nd.OUT_MAC, mac2=nd.IN_MAC),
                (Real(nd.SNAT).address, nd.SNAT_PORTS), nd.SERVICES,
                nd.MACS, nd.OUT_IFS),
        "nat6": (dict(mac=nd.OUT_MAC, mac2=nd.IN_MAC), None,
                 cd.NAT6_SERVICES, cd.NAT6_MACS, cd.NAT6_OUT_IFS),
        "mixed": (dict(mac=nd.OUT_MAC, mac2=nd.IN_MAC),
                  (Real("10.0.0.2").address, (20000, 20003)), mixed,
                  mixed_macs, mixed_ifs),
        "icmp": (dict(mac=idefs.LB_MAC), None, idefs.DR_SERVICES,
                 idefs.DR_MACS, None),
        "tun": (dict(mac=td.LB_MAC), None, td.SERVICES, td.MACS,
                td.OUT_IFS),
    }


class _Capture:
    """native.lib, keeping the tables Core publishes."""

    def __init__(self):
        self.tables = None

    def __getattr__(self, name):
        return getattr(lib, name)

    def pyfwd_tables_publish(self, ctx, vips, nv, reals, nr, ring, nring):
        self.tables = (nv, nr, nring, bytes(ffi.buffer(vips, nv * 32)),
                       bytes(ffi.buffer(reals, nr * 32)),
                       bytes(ffi.buffer(ring, nring * 2)))
        return lib.pyfwd_tables_publish(ctx, vips, nv, reals, nr, ring,
                                        nring)


@contextlib.contextmanager
def _capturing():
    cap, real = _Capture(), core_mod.lib
    core_mod.lib = cap
    try:
        yield cap
    finally:
        core_mod.lib = real


def make_core(kwargs, snat, services, macs, out_ifs):
    """A Core of a set-up (setups()'s values), its tables published, the
    clock where harness.c starts it."""
    core = Core(flows=FLOWS, **kwargs)
    for slot, ends in enumerate(TUN_SOURCES):
        core.set_tun(slot, *ends)
    if snat:
        core.set_snat(*snat)
    core.publish_services(_small(services), macs, out_ifs)
    core.set_clock(CLOCK_START)
    return core


def setup_blob(kwargs, snat, services, macs, out_ifs):
    """A set-up file's bytes (harness.h): what Core publishes for them."""
    cfg = ffi.new("struct pyfwd_config *")
    with _capturing() as cap:
        core = make_core(kwargs, snat, services, macs, out_ifs)
    cfg.mac = list(core.mac)
    if kwargs.get("mac2"):
        cfg.mac2 = list(mac_to_bytes(kwargs["mac2"]))
    cfg.flows = FLOWS
    cfg.max_vips, cfg.max_reals = core.limits.max_vips, 64
    snat_c = ffi.new("struct pyfwd_snat *")
    if snat:
        snat_c = core_mod.snat_struct(snat[0], *snat[1])
    nv, nr, nring, vips, reals, ring = cap.tables
    cfg.max_ring = max(nring, 1)
    return (b"PFZ1" + bytes(ffi.buffer(cfg)) + bytes(ffi.buffer(snat_c))
            + b"".join(n.to_bytes(4, sys.byteorder) for n in (nv, nr, nring))
            + vips + reals + ring)


def run_core(core, records):
    """The core's reason for each (ctrl, frame) of an input, in order, as
    harness.c runs them."""
    now, reasons = CLOCK_START, []
    for ctrl, frame in records:
        if ctrl & REC_CLOCK:
            now += ((ctrl >> 4) + 1) * CLOCK_STEP
            core.set_clock(now)
            core.expire()
        _, [r] = core.process([frame], in_if=ctrl & REC_IN_IF1,
                              csum_partial=bool(ctrl & REC_CSUM_PARTIAL),
                              gso=bool(ctrl & REC_GSO))
        reasons.append(r.reason)
    return reasons


def record(frame, in_if=0, csum_partial=False, gso=False):
    """One record of an input (harness.h): its ctrl byte, length, frame."""
    ctrl = (in_if and REC_IN_IF1) | (csum_partial and REC_CSUM_PARTIAL) \
        | (gso and REC_GSO)
    assert len(frame) < 1 << 16
    return bytes([ctrl]) + len(frame).to_bytes(2, "big") + frame


def read_input(data):
    """An input's (set-up index, [(ctrl, frame)]), as harness.c reads it
    (the set-up index still to be taken modulo their number)."""
    recs, off = [], 1
    while off + 3 <= len(data):
        ctrl, n = data[off], int.from_bytes(data[off + 1:off + 3], "big")
        recs.append((ctrl, data[off + 3:off + 3 + n]))
        off += 3 + n
    return (data[0] if data else 0), recs


def _case_record(c):
    return record(c.frame, c.in_if, c.csum_partial, c.gso)


def inputs():
    """[(name, input bytes, [allowed reasons of each frame])]."""
    names = list(setups())
    out = []

    def add(name, setup, steps):
        out.append((name, bytes([names.index(setup)])
                    + b"".join(_case_record(c) for c, _ in steps),
                    [ok for _, ok in steps]))

    dr = Core(mac=defs.LB_MAC, flows=FLOWS)
    dr.publish_services(defs.SERVICES, defs.MACS)
    single = [(c, {c.reason}) for c in defs.wellformed() + defs.malformed()]
    for c, ok in single + defs.truncations(dr.classify):
        add(c.name, "dr", [(c, ok)])
    for name, steps in nd.sequences():
        add(name, "nat", [(c, {c.reason}) for c in steps])
    for name, setup, steps in cd.sequences():
        add(f"csum-{name}", setup, [(c, {c.reason}) for c in steps])
    add("mixed", "mixed", _mixed_steps())
    icmp_setup = {idefs.dr_core: "icmp", idefs.nat_core: "nat",
                  idefs.nat6_core: "nat6"}
    for name, make, steps in idefs.sequences():
        add(f"icmp-{name}", icmp_setup[make], [(c, {c.reason})
                                               for c in steps])
    for c in td.cases():
        add(c.name, "tun", [(c, {c.reason})])
    return out


def write(directory):
    """Write directory/setups/NAME and directory/seeds/NNNNN-NAME; returns
    ([setup paths], {seed path: [allowed reasons of each frame]})."""
    d = Path(directory)
    (d / "setups").mkdir(parents=True, exist_ok=True)
    (d / "seeds").mkdir(exist_ok=True)
    paths = []
    for name, s in setups().items():
        p = d / "setups" / name
        p.write_bytes(setup_blob(*s))
        paths.append(p)
    allowed = {}
    for i, (name, data, ok) in enumerate(inputs()):
        p = d / "seeds" / f"{i:05d}-{name}"
        p.write_bytes(data)
        allowed[str(p)] = ok
    return paths, allowed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.cases.corpus DIR")
    paths, allowed = write(sys.argv[1])
    print(f"{len(paths)} set-ups, {len(allowed)} inputs in {sys.argv[1]}")
