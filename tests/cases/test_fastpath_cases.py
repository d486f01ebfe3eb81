"""One behaviour, two paths: every packet case and sequence of the corpus
(tests/cases/corpus.py: defs, nat_defs, csum_defs, icmp_defs, on each
set-up) through the core and through the XDP fast path (root).

Per set-up, in a namespace of its own, two cores: `plain` (no backend)
and `fast`, with an AF_XDP backend open on a veth pair (pffp0, pffp1: the
interface slots), its steering maps filled as the engine fills them and
the fast path on.  Each frame of an input, in order:

1. the XDP program runs on it (BPF_PROG_TEST_RUN) with the maps as the
   fast core left them;
2. both cores process it: the fast path's hooks must not change what the
   core does (same reason, same bytes);
3. if the program sent it (XDP_TX), its bytes must be the core's, the
   core's verdict forward and the way out the way in; if not, it must be
   steered to the engine (XDP_REDIRECT) or, where the core passes it,
   left to the kernel: never dropped, aborted, or passed when the core
   would forward it;
4. a frame the core forwarded and the program did not carry runs through
   the program again, and through both cores: the second packet of a flow
   the first installed; a SYN forwarded is followed by its ACK (the same
   frame, flags ACK, its sum kept right), which makes its flow
   established, and that ACK again.

The cores keep their flows from one input to the next (inputs share
tuples): the comparison is between paths, not against the cases' reasons
(test_core_cases and the others check those).
"""

import socket
import subprocess

import pytest

from pyfwd._netns import in_netns
from pyfwd.dataplane import fastpath
from pyfwd.dataplane.io import Xsk
from pyfwd.control import services as svcs

from . import corpus
from .harness import frame_diff

pytestmark = pytest.mark.root

MAX_RUN = 3000      # as test_steer_crosscheck: a page less XDP's room
IFACES = ("pffp0", "pffp1")


class Tally:
    def __init__(self):
        self.run = self.carried = self.steered = self.passed = 0
        self.skipped = 0
        self.bad = []


def _same_core(name, a, b, ra, rb, tally):
    if ra.reason != rb.reason or a != b:
        tally.bad.append(f"{name}: the fast path's hooks changed the core: "
                         f"{ra.reason} -> {rb.reason}\n{frame_diff(b, a)}")


def _compare(name, frame, in_if, action, out, core_out, r, tally):
    """What the program did against what the fast core did."""
    if action == fastpath.XDP_TX:
        tally.carried += 1
        if r.verdict != "forward" or r.out_if != in_if or out != core_out:
            tally.bad.append(
                f"{name}: XDP_TX, the core says {r.reason} out_if "
                f"{r.out_if}:\n{frame_diff(out, core_out)}\n"
                f"  in: {frame.hex()}")
    elif action == fastpath.XDP_REDIRECT:
        tally.steered += 1
    elif action == fastpath.XDP_PASS and r.verdict != "forward":
        tally.passed += 1
    else:
        tally.bad.append(f"{name}: XDP action "
                         f"{fastpath.ACTIONS.get(action, action)}, the core "
                         f"says {r.reason}: {frame.hex()}")


def _ack_of(frame, r, partial):
    """The TCP SYN frame (core result r) as its ACK: flags ACK only, the
    checksum updated as RFC 1624 (an unfinished one covers no flags)."""
    l4 = r.l4_off
    if r.l4proto != 6 or len(frame) < l4 + 18 or \
            (frame[l4 + 13] & 0x12) != 0x02:
        return None
    out = bytearray(frame)
    old = int.from_bytes(frame[l4 + 12:l4 + 14], "big")
    out[l4 + 13] = 0x10
    new = int.from_bytes(out[l4 + 12:l4 + 14], "big")
    if not partial:
        s = (~int.from_bytes(frame[l4 + 16:l4 + 18], "big") & 0xFFFF) + \
            (~old & 0xFFFF) + new
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        out[l4 + 16:l4 + 18] = (~s & 0xFFFF).to_bytes(2, "big")
    return bytes(out)


def _step(name, plain, fast, ctrl, frame, tally):
    in_if = ctrl & corpus.REC_IN_IF1
    kw = dict(in_if=in_if, csum_partial=bool(ctrl & corpus.REC_CSUM_PARTIAL),
              gso=bool(ctrl & corpus.REC_GSO))
    runnable = 14 <= len(frame) <= MAX_RUN
    if runnable:
        action, out = fastpath.test_run(fast, frame, in_if)
    [a], [ra] = plain.process([frame], **kw)
    [b], [rb] = fast.process([frame], **kw)
    _same_core(name, a, b, ra, rb, tally)
    if not runnable:
        tally.skipped += 1
        return
    tally.run += 1
    _compare(name, frame, in_if, action, out, b, rb, tally)
    if rb.verdict == "forward" and action != fastpath.XDP_TX:
        # the next packet of the flow this one made or touched
        action, out = fastpath.test_run(fast, frame, in_if)
        [a], [ra] = plain.process([frame], **kw)
        [b], [rb] = fast.process([frame], **kw)
        _same_core(name + " again", a, b, ra, rb, tally)
        tally.run += 1
        _compare(name + " again", frame, in_if, action, out, b, rb, tally)
    ack = _ack_of(frame, rb, kw["csum_partial"]) \
        if rb.verdict == "forward" else None
    if ack:
        _step(name + " ack", plain, fast, ctrl, ack, tally)


def run_setup(setup, inputs):
    """Every input of one set-up through both paths, in a namespace of
    its own; the Tally, and the fast core's counters."""
    kwargs, snat, services = setup[0], setup[1], setup[2]
    two_arm = bool(kwargs.get("mac2"))

    def run():
        subprocess.run(["ip", "link", "add", IFACES[0], "type", "veth",
                        "peer", "name", IFACES[1]], check=True)
        for dev in ("lo", *IFACES):
            subprocess.run(["ip", "link", "set", dev, "up"], check=True)
        plain = corpus.make_core(*setup)
        fast = corpus.make_core(*setup)
        xsk = Xsk(fast)
        xsk.open(socket.if_nametoindex(IFACES[0]), queues=1, frames=256,
                 ring_size=64,
                 ifindex2=socket.if_nametoindex(IFACES[1]) if two_arm else 0)
        tally = Tally()
        try:
            vips, replies = svcs.steering(corpus._small(services))
            xsk.steer(vips, replies, (snat[0], *snat[1]) if snat else None)
            fastpath.enable(xsk)
            now = corpus.CLOCK_START
            for name, records in inputs:
                for i, (ctrl, frame) in enumerate(records):
                    if ctrl & corpus.REC_CLOCK:
                        now += ((ctrl >> 4) + 1) * corpus.CLOCK_STEP
                        for c in (plain, fast):
                            c.set_clock(now)
                            c.expire()
                    if (ctrl & corpus.REC_IN_IF1) and not two_arm:
                        continue
                    _step(f"{name}[{i}]", plain, fast, ctrl, frame, tally)
            return tally, fast.stats()
        finally:
            xsk.close()

    return in_netns(None, run, timeout=300, name="pffp-cases")


def test_every_case_gives_the_same_bytes_on_both_paths(need_root):
    setups = corpus.setups()
    names = list(setups)
    by_setup = {n: [] for n in names}
    for name, data, _ in corpus.inputs():
        idx, records = corpus.read_input(data)
        by_setup[names[idx % len(names)]].append((name, records))
    total, per_setup = Tally(), {}
    for setup_name, inputs in by_setup.items():
        tally, stats = run_setup(setups[setup_name], inputs)
        per_setup[setup_name] = (tally.run, tally.carried, tally.steered,
                                 stats["fast_installed"])
        for k in ("run", "carried", "steered", "passed", "skipped"):
            setattr(total, k, getattr(total, k) + getattr(tally, k))
        total.bad += [f"({setup_name}) {b}" for b in tally.bad]
    assert not total.bad, f"{len(total.bad)} differences:\n" + \
        "\n".join(total.bad[:20])
    print(f"fast path cases: {total.run} frames run, {total.carried} "
          f"carried by XDP (byte-identical), {total.steered} steered, "
          f"{total.passed} passed as the core does, {total.skipped} too "
          f"long to run; by set-up (run, carried, steered, installed): "
          f"{per_setup}")
    assert total.run > 1000
    # DR: the next packets of each established flow go by XDP (most DR
    # inputs are truncations and malformed frames: the core's)
    assert per_setup["dr"][1] >= 8 and per_setup["icmp"][1] >= 5 and \
        per_setup["mixed"][1] >= 1, per_setup


def test_a_changed_real_sends_its_flows_back_to_the_core(need_root):
    """Established flows on two reals, installed; a publish without one of
    them (halted) makes the program steer that one's flows to the core
    (which reschedules them, as without the fast path) and keeps sending
    the other's: each real id's generation (fast_gens) is its own."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from pyfwd.dataplane.core import Core
    from pyfwd.frames import mac_to_bytes
    from pyfwd.model import Real, Service, Vip

    web = Vip.parse("10.0.0.100:80/tcp")
    reals = [Real.parse("10.0.0.11"), Real.parse("10.0.0.12")]
    macs = {r.address: mac_to_bytes(f"02:00:00:00:01:1{i + 1}")
            for i, r in enumerate(reals)}
    lb = "02:00:00:00:00:02"

    def run():
        subprocess.run(["ip", "link", "add", IFACES[0], "type", "veth",
                        "peer", "name", IFACES[1]], check=True)
        for dev in ("lo", *IFACES):
            subprocess.run(["ip", "link", "set", dev, "up"], check=True)
        out = {}
        for halted in (0, 1):
            core = Core(mac=lb, flows=4096)
            core.publish_services([Service(web, reals, "maglev", "dr")],
                                  macs)
            xsk = Xsk(core)
            xsk.open(socket.if_nametoindex(IFACES[0]), queues=1,
                     frames=256, ring_size=64)
            try:
                xsk.steer([web])
                fastpath.enable(xsk)
                flows = {}
                for sport in range(40000, 40016):
                    f = bytes(Ether(dst=lb, src="02:00:00:00:00:01")
                              / IP(src="10.0.0.1", dst=str(web.address))
                              / TCP(sport=sport, dport=80, flags="A"))
                    [o], _ = core.process([f])
                    flows[f] = o[:6]
                before = [fastpath.test_run(core, f)[0] for f in flows]
                core.publish_services([Service(
                    web, [r for i, r in enumerate(reals) if i != halted],
                    "maglev", "dr")], macs)
                gone = macs[reals[halted].address]
                out[halted] = (before, [
                    (fastpath.test_run(core, f)[0], mac == gone)
                    for f, mac in flows.items()])
            finally:
                xsk.close()
        return out

    for halted, (before, after) in in_netns(None, run, timeout=60,
                                            name="pffp-gens").items():
        assert set(before) == {fastpath.XDP_TX}, before
        assert {a for a, gone in after if gone} == {fastpath.XDP_REDIRECT}
        assert {a for a, gone in after if not gone} == {fastpath.XDP_TX}
