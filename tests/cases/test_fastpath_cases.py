"""One behaviour, two paths: every packet case and sequence of the corpus
(tests/cases/corpus.py: defs, nat_defs, csum_defs, icmp_defs, on each
set-up) through the core and through the XDP fast path (root).  The
interfaces are veths: the program completes an unfinished sum (csum_defs)
as csrc/csum.c does, and counts it in csum_completed.

Per set-up, in a namespace of its own, two cores: `plain` (no backend)
and `fast`, with an AF_XDP backend open on a veth pair (pffp0, pffp1: the
interface slots), its steering maps filled as the engine fills them and
the fast path on.  Each frame of an input, in order:

1. the XDP program runs on it (BPF_PROG_TEST_RUN) with the maps as the
   fast core left them;
2. both cores process it: the fast path's hooks must not change what the
   core does (same reason, same bytes);
3. if the fast path sent it (its counter moved), its bytes must be the
   core's, the core's verdict forward, and its action XDP_TX where the
   core sends it back out of the interface it came in on, else a
   redirect (two-arm NAT); if not, it must be steered to the engine
   (XDP_REDIRECT) or, where the core passes it, left to the kernel: never
   dropped, aborted, or passed when the core would forward it;
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
from .harness import frame_diff, unfinished

pytestmark = pytest.mark.root

MAX_RUN = 3000      # as test_steer_crosscheck: a page less XDP's room
IFACES = ("pffp0", "pffp1")


class Tally:
    def __init__(self):
        self.run = self.carried = self.steered = self.passed = 0
        self.skipped = 0
        self.unfinished = 0     # carried with an unfinished sum: completed
        self.bad = []


def _same_core(name, a, b, ra, rb, tally):
    if ra.reason != rb.reason or a != b:
        tally.bad.append(f"{name}: the fast path's hooks changed the core: "
                         f"{ra.reason} -> {rb.reason}\n{frame_diff(b, a)}")


def _carried(core):
    return core.stats()["fast_frames"]


def _compare(name, frame, in_if, action, out, carried, core_out, r, tally):
    """What the program did against what the fast core did.  carried: the
    fast path sent it (XDP_TX, or a redirect to the other interface: the
    test run reports that as XDP_REDIRECT too, so its counter tells)."""
    if carried:
        tally.carried += 1
        way = fastpath.XDP_TX if r.out_if == in_if else fastpath.XDP_REDIRECT
        if r.verdict != "forward" or action != way or out != core_out:
            tally.bad.append(
                f"{name}: {fastpath.ACTIONS.get(action, action)} by the "
                f"fast path, the core says {r.reason} out_if "
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


def _is_unfinished(frame):
    """True if frame is a TCP/UDP packet whose sum is the unfinished one
    (harness.unfinished's: the pseudo-header sum, as csum.c tells it)."""
    try:
        return unfinished(frame) == frame
    except Exception:   # not a TCP/UDP packet scapy reads: not one
        return False


def _run_both(plain, fast, frame, in_if, kw, runnable):
    """The program's (action, out, carried), then both cores' outputs."""
    got = None
    if runnable:
        before = _carried(fast)
        action, out = fastpath.test_run(fast, frame, in_if)
        got = (action, out, _carried(fast) - before)
    [a], [ra] = plain.process([frame], **kw)
    [b], [rb] = fast.process([frame], **kw)
    return got, (a, ra), (b, rb)


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
    got, (a, ra), (b, rb) = _run_both(plain, fast, frame, in_if, kw,
                                      runnable)
    _same_core(name, a, b, ra, rb, tally)
    if not runnable:
        tally.skipped += 1
        return
    tally.run += 1
    _compare(name, frame, in_if, *got, b, rb, tally)
    if rb.verdict == "forward" and not got[2]:
        # the next packet of the flow this one made or touched
        got, (a, ra), (b, rb) = _run_both(plain, fast, frame, in_if, kw,
                                          True)
        _same_core(name + " again", a, b, ra, rb, tally)
        tally.run += 1
        _compare(name + " again", frame, in_if, *got, b, rb, tally)
    if got[2] and kw["csum_partial"] and _is_unfinished(frame):
        tally.unfinished += 1   # XDP completed it: the core's bytes
    ack = _ack_of(frame, rb, kw["csum_partial"]) \
        if rb.verdict == "forward" else None
    if ack:
        _step(name + " ack", plain, fast, ctrl, ack, tally)
    return b, rb


def _open_fast(setup, two_arm):
    """In the calling thread's (new) namespace: the veth pair, a Core of
    setup with an AF_XDP backend, its maps filled, the fast path on;
    (plain core, fast core, xsk)."""
    kwargs, snat, services = setup[0], setup[1], setup[2]
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
    try:
        vips, replies = svcs.steering(corpus._small(services))
        xsk.steer(vips, replies, (snat[0], *snat[1]) if snat else None)
        fastpath.enable(xsk)
    except BaseException:
        xsk.close()
        raise
    return plain, fast, xsk


def run_setup(setup, inputs):
    """Every input of one set-up through both paths, in a namespace of
    its own; the Tally, and the fast and the plain core's counters."""
    two_arm = bool(setup[0].get("mac2"))

    def run():
        plain, fast, xsk = _open_fast(setup, two_arm)
        tally = Tally()
        try:
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
            return tally, fast.stats(), plain.stats()
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
        tally, stats, plain = run_setup(setups[setup_name], inputs)
        per_setup[setup_name] = (tally.run, tally.carried, tally.steered,
                                 stats["fast_installed"], tally.unfinished)
        for k in ("run", "carried", "steered", "passed", "skipped",
                  "unfinished"):
            setattr(total, k, getattr(total, k) + getattr(tally, k))
        total.bad += [f"({setup_name}) {b}" for b in tally.bad]
        # what XDP completed counts as the core's completions: the fast
        # core saw every frame too, so it has the plain one's and XDP's
        completed = stats["csum_completed"] - plain["csum_completed"]
        if completed != tally.unfinished:
            total.bad.append(f"({setup_name}) csum_completed: XDP counted "
                             f"{completed}, carried {tally.unfinished} "
                             "unfinished")
    assert not total.bad, f"{len(total.bad)} differences:\n" + \
        "\n".join(total.bad[:20])
    print(f"fast path cases: {total.run} frames run, {total.carried} "
          f"carried by XDP (byte-identical), {total.steered} steered, "
          f"{total.passed} passed as the core does, {total.skipped} too "
          f"long to run, {total.unfinished} carried with an unfinished sum "
          f"(completed by XDP); by set-up (run, carried, steered, "
          f"installed, unfinished): {per_setup}")
    assert total.run > 1000
    # the next packets of each established flow go by XDP (most DR
    # inputs are truncations and malformed frames: the core's)
    assert per_setup["dr"][1] >= 8 and per_setup["icmp"][1] >= 5, per_setup
    # NAT and SNAT, IPv4 and IPv6, both ways
    assert per_setup["nat"][1] >= 5 and per_setup["nat6"][1] >= 1 and \
        per_setup["mixed"][1] >= 2, per_setup
    # csum_defs' unfinished sums go by XDP once their flow is established,
    # completed to the core's bytes: DR's TCP and UDP over IPv4 and IPv6,
    # the padded datagram and the one completing to 0xffff (the tagged and
    # the extension header's are the core's); NAT's and NAT6's
    assert per_setup["dr"][4] >= 6 and per_setup["nat"][4] >= 3 and \
        per_setup["nat6"][4] >= 2, per_setup
    # TUN is never the fast path's (XDP_TX cannot grow a frame here): its
    # frames, the second packets and ACKs of its flows included, reach the
    # engine (steered), none carried or installed, none dropped or passed
    assert per_setup["tun"][1] == 0 and per_setup["tun"][3] == 0 and \
        per_setup["tun"][2] >= 10, per_setup


# Segment lengths around 4-byte words and at the test run's limit.
LENGTHS = (1, 2, 3, 4, 5, 6, 7, 255, 1024, 1471, 1472, 2901, 2902, 2903,
           MAX_RUN - 74)


def test_unfinished_sums_of_every_length_are_completed_as_the_core_does(
        need_root):
    """DR flows (TCP and UDP, IPv4 and IPv6) whose payloads take every
    length modulo 4, up to what a test run takes, their sums unfinished
    as a veth hands them over: once established each goes by XDP, and
    the sum XDP completes is the core's, byte for byte."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw
    from . import defs

    def frames(n, i):
        pay = Raw(bytes((i * 7 + k) & 0xFF for k in range(n)))
        return [defs.eth() / IP(src=defs.CLIENT4, dst=defs.VIP4)
                / UDP(sport=20000 + i, dport=53) / pay,
                defs.eth() / IPv6(src=defs.CLIENT6, dst=defs.VIP6)
                / UDP(sport=20000 + i, dport=53) / pay,
                defs.eth() / IP(src=defs.CLIENT4, dst=defs.VIP4)
                / TCP(sport=20000 + i, dport=80, flags="S") / pay,
                defs.eth() / IPv6(src=defs.CLIENT6, dst=defs.VIP6)
                / TCP(sport=20000 + i, dport=80, flags="S") / pay]

    def run():
        plain, fast, xsk = _open_fast(corpus.setups()["dr"], False)
        tally = Tally()
        try:
            for i, n in enumerate(LENGTHS):
                for k, f in enumerate(frames(n, i)):
                    _step(f"len {n} [{k}]", plain, fast,
                          corpus.REC_CSUM_PARTIAL, unfinished(f), tally)
            return tally, fast.stats(), plain.stats()
        finally:
            xsk.close()

    tally, stats, plain = in_netns(None, run, timeout=120,
                                   name="pffp-lengths")
    assert not tally.bad, "\n".join(tally.bad[:10])
    # each flow's next packet (UDP: the second; TCP: the ACK again)
    assert tally.unfinished == 4 * len(LENGTHS), (tally.unfinished,
                                                   tally.carried)
    assert stats["csum_completed"] - plain["csum_completed"] == \
        tally.unfinished


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
        core = Core(mac=lb, flows=4096)
        core.publish_services([Service(web, reals, "maglev", "dr")], macs)
        xsk = Xsk(core)
        xsk.open(socket.if_nametoindex(IFACES[0]), queues=1, frames=256,
                 ring_size=64)
        out = {}
        try:
            xsk.steer([web])
            fastpath.enable(xsk)
            flows = [bytes(Ether(dst=lb, src="02:00:00:00:00:01")
                           / IP(src="10.0.0.1", dst=str(web.address))
                           / TCP(sport=sport, dport=80, flags="A"))
                     for sport in range(40000, 40016)]
            for halted in (1, 0):
                core.publish_services([Service(web, reals, "maglev", "dr")],
                                      macs)
                macs_out = {}
                for f in flows:     # (re)installed at the publish's gens
                    core.process([f])   # made by an ACK: half-open (DR)
                    [o], _ = core.process([f])  # its next one: established
                    macs_out[f] = o[:6]
                before = [fastpath.test_run(core, f)[0] for f in flows]
                core.publish_services([Service(
                    web, [r for i, r in enumerate(reals) if i != halted],
                    "maglev", "dr")], macs)
                gone = macs[reals[halted].address]
                out[halted] = (before, [
                    (fastpath.test_run(core, f)[0], macs_out[f] == gone)
                    for f in flows])
        finally:
            xsk.close()
        return out

    for halted, (before, after) in in_netns(None, run, timeout=60,
                                            name="pffp-gens").items():
        assert set(before) == {fastpath.XDP_TX}, before
        assert {a for a, gone in after if gone} == {fastpath.XDP_REDIRECT}
        assert {a for a, gone in after if not gone} == {fastpath.XDP_TX}


def _conversation(plain, fast, tally, vip, proto, slot, lb_mac, real_mac,
                  name):
    """A client's flow to vip and its real's answers, both ways through
    both paths: the handshake (TCP), then three packets each way."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from . import nat_defs as nd

    def frame(src, sport, dst, dport, mac_dst, mac_src, flags):
        l4 = TCP(sport=sport, dport=dport, flags=flags, seq=1000,
                 ack=5000) if proto == "tcp" else UDP(sport=sport,
                                                      dport=dport)
        return bytes(Ether(dst=mac_dst, src=mac_src)
                     / IP(src=src, dst=dst) / l4 / b"data")

    first = "S" if proto == "tcp" else ""
    out, r = _step(f"{name}[0]", plain, fast, 0,
                   frame(nd.CLIENT, 40100, str(vip.address), vip.port,
                         nd.OUT_MAC, nd.CLIENT_MAC, first), tally)
    assert r.verdict == "forward", (name, r)
    p = Ether(out)
    l4 = p[TCP] if proto == "tcp" else p[UDP]
    # the real answers to whom the core made the packet come from
    back = (p[IP].dst, l4.dport, p[IP].src, l4.sport, lb_mac, real_mac)
    ctrl = corpus.REC_IN_IF1 if slot else 0
    steps = [(0, "SA" if proto == "tcp" else ""), (1, "A")] + \
        [(1, "PA"), (0, "PA")] * 3
    for i, (client, flags) in enumerate(steps, 1):
        if client:
            f = frame(nd.CLIENT, 40100, str(vip.address), vip.port,
                      nd.OUT_MAC, nd.CLIENT_MAC, flags)
            _step(f"{name}[{i}]", plain, fast, 0, f, tally)
        else:
            _step(f"{name}[{i}] answer", plain, fast, ctrl,
                  frame(*back, flags), tally)


def test_nat_and_snat_conversations_on_both_paths(need_root):
    """NAT (two-arm: a redirect to the other interface) and SNAT (XDP_TX),
    TCP and UDP, the client's packets and the real's answers: once
    established, both ways go by XDP, byte for byte as the core."""
    from . import nat_defs as nd
    setup = corpus.setups()["nat"]
    talks = [(nd.WEB, "tcp", 1, nd.IN_MAC, nd.REAL1_MAC),
             (nd.DNS, "udp", 1, nd.IN_MAC, nd.REAL2_MAC),
             (nd.SWEB, "tcp", 0, nd.OUT_MAC, nd.SREAL_MAC),
             (nd.SDNS, "udp", 0, nd.OUT_MAC, nd.SREAL_MAC)]

    def run():
        plain, fast, xsk = _open_fast(setup, True)
        try:
            out = {}
            for vip, proto, slot, lb_mac, real_mac in talks:
                tally = Tally()
                _conversation(plain, fast, tally, vip, proto, slot, lb_mac,
                              real_mac, str(vip))
                out[str(vip)] = tally
            return out, fast.stats()
        finally:
            xsk.close()

    out, stats = in_netns(None, run, timeout=60, name="pffp-nat")
    bad = [b for t in out.values() for b in t.bad]
    assert not bad, "\n".join(bad[:10])
    # the last packets each way went by XDP: 3 + 3 (TCP: the handshake's
    # last ACK installs the client's way, the real's first data its way)
    for vip, t in out.items():
        assert t.carried >= 4, (vip, t.carried, t.steered)
    assert stats["reason"]["forward_reply"] >= 8 and \
        stats["fast_frames"] >= 16, stats


def test_a_full_map_leaves_flows_on_the_core_counted_once(need_root):
    """More established flows than fast_flows holds: the ones beyond stay
    on AF_XDP (steered), counted once each in fast_install_failed however
    many of their packets come, and the others go by XDP."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from pyfwd.dataplane.core import Core
    from pyfwd.frames import mac_to_bytes
    from pyfwd.model import Real, Service, Vip

    web = Vip.parse("10.0.0.100:80/tcp")
    real = Real.parse("10.0.0.11")
    lb, extra = "02:00:00:00:00:02", 10
    template = bytes(Ether(dst=lb, src="02:00:00:00:00:01")
                     / IP(src="10.0.0.1", dst=str(web.address))
                     / TCP(sport=1, dport=80, flags="A"))
    n = fastpath.FLOWS_MAX + extra

    def flow(i):     # source address and port from i (DR: sums untouched)
        f = bytearray(template)
        f[28:30] = (i >> 16 | 0x0a00).to_bytes(2, "big")
        f[34:36] = (i & 0xFFFF).to_bytes(2, "big")
        return bytes(f)

    def run():
        subprocess.run(["ip", "link", "add", IFACES[0], "type", "veth",
                        "peer", "name", IFACES[1]], check=True)
        for dev in ("lo", *IFACES):
            subprocess.run(["ip", "link", "set", dev, "up"], check=True)
        core = Core(mac=lb, flows=1 << 18)
        macs = {real.address: mac_to_bytes("02:00:00:00:01:11")}
        core.publish_services([Service(web, [real], "maglev", "dr")], macs)
        xsk = Xsk(core)
        xsk.open(socket.if_nametoindex(IFACES[0]), queues=1, frames=256,
                 ring_size=64)
        try:
            xsk.steer([web])
            fastpath.enable(xsk)
            frames = [flow(i) for i in range(n)]
            for _ in range(2):
                for k in range(0, n, 4096):
                    core.process(frames[k:k + 4096])
            return (core.stats(), fastpath.flows(core),
                    fastpath.test_run(core, frames[0])[0],
                    fastpath.test_run(core, frames[-1])[0])
        finally:
            xsk.close()

    stats, flows, first, last = in_netns(None, run, timeout=120,
                                         name="pffp-full")
    assert flows == fastpath.FLOWS_MAX and stats["fast_installed"] == flows
    assert stats["fast_install_failed"] == extra, stats
    assert (first, last) == (fastpath.XDP_TX, fastpath.XDP_REDIRECT)
