"""The XDP steering program (csrc/bpf/steer.bpf.c) against the core, frame
by frame, on the whole corpus (tests/cases/corpus.py: every packet case
and sequence, on each set-up), with BPF_PROG_TEST_RUN (root):

- a frame the program steers to the engine's socket (XDP_REDIRECT) never
  gets a PASS verdict from the core: the AF_XDP loop cannot hand a frame
  back to the kernel, so it would be lost;
- a frame the program leaves to the kernel (XDP_PASS) is never one the
  core would forward: the engine would never see it.

The program runs as the engine loads it: an AF_XDP backend opened on a
veth (pffz0, in a namespace of its own) for a Core of the set-up, its maps
filled as Engine._steer fills them (services.steering).  test_run returns
the program's action without carrying out the redirect; the socket in the
xsks map makes bpf_redirect_map answer XDP_REDIRECT rather than its
fallback XDP_PASS.  The kernel runs frames of 14 bytes up to about a page
(less XDP's headroom): longer ones are counted apart and must be few;
shorter ones never reach an XDP program.
"""

import os
import socket
import subprocess
from pathlib import Path

import pytest

from pyfwd._netns import in_netns
from pyfwd.dataplane.io import Xsk
from pyfwd.dataplane.native import REASONS, ffi, lib
from pyfwd.control import services as svcs

from . import corpus

pytestmark = pytest.mark.root

XDP_PASS, XDP_REDIRECT = 2, 4
MAX_RUN = 3000      # below a 4 KiB page less XDP's headroom and tailroom

# The core's PASS reasons that the program may steer all the same: the
# kernel would drop the frame too, so nothing is lost.
#   pass_other_mac: unicast to another host's MAC (the kernel drops
#   PACKET_OTHERHOST frames; the program does not read MACs).
KERNEL_DROPS_TOO = {"pass_other_mac"}


def stray_answer(frame, setup):
    """Is frame a TCP/UDP answer from a NAT real's addr:port, or to SNAT's
    address and ports, or an ICMP error quoting what we would send as one
    (reversed)?  The program steers those (it cannot see flows); when no
    flow claims one, the core says drop_no_flow (the kernel never sees it:
    AF_XDP took it, and AF_PACKET's tc program keeps it from the stack).
    It said pass_not_vip until the core could tell them (docs/reliability/
    fuzz.md): a drop counted as a pass."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, \
        UDPerror
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    import ipaddress
    _, snat, services, _, _ = setup
    _, replies = svcs.steering(services)
    pkt = Ether(frame)

    def answer(src, sport, dst, dport, proto):
        src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        return any(e.address == src and e.port == sport and
                   e.protocol == proto for e in replies) or (
            bool(snat) and dst == snat[0] and
            snat[1][0] <= dport <= snat[1][1])

    if pkt.haslayer(ICMP) and pkt.haslayer(IPerror):
        q = pkt[IPerror]
        ql4 = q.getlayer(TCPerror) or q.getlayer(UDPerror)
        return ql4 is not None and answer(
            q.dst, ql4.dport, q.src, ql4.sport,
            "tcp" if q.haslayer(TCPerror) else "udp")
    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
    if ip is None or l4 is None:
        return False
    return answer(ip.src, l4.sport, ip.dst, l4.dport,
                  "tcp" if pkt.haslayer(TCP) else "udp")


def xdp_actions(setup, frames):
    """The program's action on each frame (None: not runnable), run in a
    namespace of its own with a backend open for `setup`."""
    kwargs, snat, services, macs, out_ifs = setup

    def run():
        subprocess.run(["ip", "link", "add", "pffz0", "type", "veth",
                        "peer", "name", "pffz1"], check=True)
        for dev in ("lo", "pffz0", "pffz1"):
            subprocess.run(["ip", "link", "set", dev, "up"], check=True)
        core = corpus.make_core(kwargs, snat, services, macs, out_ifs)
        xsk = Xsk(core)
        xsk.open(socket.if_nametoindex("pffz0"), queues=1, frames=256,
                 ring_size=64)
        try:
            vips, replies = svcs.steering(corpus._small(services))
            xsk.steer(vips, replies, (snat[0], *snat[1]) if snat else None)
            action = ffi.new("uint32_t *")
            out = []
            for f in frames:
                if not 14 <= len(f) <= MAX_RUN:
                    out.append(None)
                    continue
                err = lib.pyfwd_steer_test_run(core.ctx, f, len(f), action)
                assert err == 0, f"test_run: {err}"
                out.append(action[0])
            return out
        finally:
            xsk.close()

    return in_netns(None, run, timeout=120, name="pffz-steer")


def disagreements(name, setup_name, reasons, actions, frames, setup,
                  known):
    bad = []
    for i, (reason, action, f) in enumerate(zip(reasons, actions, frames)):
        if action is None:
            continue
        verdict = reason.split("_")[0]
        if reason == "drop_no_flow":
            if not stray_answer(f, setup) or action == XDP_PASS:
                bad.append(f"{name}[{i}] ({setup_name}): drop_no_flow, "
                           f"not a stray answer the program steers "
                           f"(action {action}): {f.hex()}")
            known.append(f"{name}[{i}]")
        elif action == XDP_REDIRECT and verdict == "pass" \
                and reason not in KERNEL_DROPS_TOO:
            bad.append(f"{name}[{i}] ({setup_name}): steered, the core "
                       f"says {reason}: {f.hex()}")
        elif action == XDP_PASS and verdict == "forward":
            bad.append(f"{name}[{i}] ({setup_name}): left to the kernel, "
                       f"the core says {reason}: {f.hex()}")
        elif action not in (XDP_PASS, XDP_REDIRECT):
            bad.append(f"{name}[{i}]: XDP action {action}")
    return bad


def corpus_inputs():
    """The packet cases' inputs, and those of PYFWD_FUZZ_CORPUS (a folder
    of the fuzzer's, docs/reliability/fuzz.md) when set."""
    ins = [(name, data) for name, data, _ in corpus.inputs()]
    extra = os.environ.get("PYFWD_FUZZ_CORPUS")
    if extra:
        ins += [(p.name, p.read_bytes()) for p in sorted(Path(extra).iterdir())
                if p.is_file()]
    return ins


def test_steering_agrees_with_the_core(need_root):
    setups = corpus.setups()
    names = list(setups)
    by_setup = {n: [] for n in names}
    for name, data in corpus_inputs():
        idx, records = corpus.read_input(data)
        by_setup[names[idx % len(names)]].append((name, records))
    bad, known, ran, skipped, steered = [], [], 0, 0, 0
    for setup_name, inputs in by_setup.items():
        setup = setups[setup_name]
        frames = [f for _, recs in inputs for _, f in recs]
        actions = iter(xdp_actions(setup, frames))
        for name, records in inputs:
            core = corpus.make_core(*setup)
            reasons = corpus.run_core(core, records)
            acts = [next(actions) for _ in records]
            bad += disagreements(name, setup_name, reasons, acts,
                                 [f for _, f in records], setup, known)
            ran += sum(a is not None for a in acts)
            skipped += sum(a is None and len(f) > MAX_RUN
                           for a, (_, f) in zip(acts, records))
            steered += sum(a == XDP_REDIRECT for a in acts)
    assert not bad, f"{len(bad)} disagreements:\n" + "\n".join(bad[:30])
    assert ran > 900 and steered > 300, (ran, steered)
    assert skipped < ran // 50, (skipped, ran)    # runts never reach XDP
    # the stray answers of the corpus, dropped and steered: nat-stray-reply,
    # and mixed's answers from the real without the flow
    assert "nat-tcp[5]" in known, known
    print(f"steer crosscheck: {ran} frames run, {steered} steered, "
          f"{skipped} too long to run, {len(known)} stray answers")
