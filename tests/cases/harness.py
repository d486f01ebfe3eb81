"""The packet-case harness: frames built with scapy go in, verdicts and
frames come out and are compared field by field.

A Case says what goes in, what the core must decide and, for frames it
rewrites, what must come out.  Later modes (DR, NAT, SNAT) add their
rewrite cases with `out=` set; everything else must come out untouched.
"""

from dataclasses import dataclass
from typing import Optional

from scapy.layers.l2 import Ether


@dataclass
class Case:
    name: str
    description: str
    frame: bytes
    reason: str                 # one of pyfwd.dataplane.native.REASONS
    vip: Optional[int] = None   # index of the VIP the core must match
    out: Optional[bytes] = None  # expected frame after; None = unchanged
    flags: int = 0              # PYFWD_F_* bits the core must report
    vlan_tci: Optional[int] = None
    in_if: int = 0              # interface slot it comes in on
    out_if: Optional[int] = None  # FORWARD: the slot it must go out on
    # Flagged as a veth hands frames over: its TCP/UDP sum maybe unfinished;
    # gso: as AF_PACKET hands over a TSO frame (its sum stays unfinished).
    csum_partial: bool = False
    gso: bool = False
    # The checksum counter the frame moves: "completed", "bad" or None.
    csum: Optional[str] = None
    l4_sum_wrong: bool = False  # its TCP/UDP sum is wrong in and out

    @property
    def expected_out(self):
        return self.frame if self.out is None else self.out


def _fields(frame):
    """Flatten a frame into (layer, field) -> value, checksums included."""
    flat = {}
    pkt = Ether(bytes(frame))
    depth = 0
    while pkt is not None and pkt.__class__.__name__ != "NoPayload":
        name = f"{depth}:{pkt.__class__.__name__}"
        for f in pkt.fields_desc:
            flat[(name, f.name)] = pkt.getfieldval(f.name)
        if pkt.__class__.__name__ in ("Raw", "Padding"):
            flat[(name, "load")] = bytes(pkt)
        pkt = pkt.payload
        depth += 1
    return flat


def frame_diff(got, want):
    """Human-readable field-by-field differences; '' when equal."""
    if got == want:
        return ""
    g, w = _fields(got), _fields(want)
    lines = [f"  {layer}.{name}: got {g.get((layer, name))!r}, "
             f"want {w.get((layer, name))!r}"
             for layer, name in sorted(set(g) | set(w))
             if g.get((layer, name)) != w.get((layer, name))]
    if not lines:
        lines = [f"  bytes differ: got {got.hex()}, want {want.hex()}"]
    try:
        lines.append(f"  got:  {Ether(got).command()}")
    except Exception:  # a frame scapy cannot rebuild: the hex said it
        pass
    return "\n".join(lines)


def checksum_problems(frame, l4=True):
    """Every IPv4/TCP/UDP/ICMP checksum in frame that scapy, recomputing
    it, finds wrong (a UDP checksum of 0 means none and is left alone);
    l4=False leaves TCP and UDP out."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    problems = []
    pkt = Ether(bytes(frame))
    for layer in (IP, TCP, UDP, ICMP) if l4 else (IP, ICMP):
        if not pkt.haslayer(layer):
            continue
        got = pkt[layer].chksum
        if layer is UDP and got == 0:
            continue
        fresh = pkt.copy()
        fresh[layer].chksum = None
        want = Ether(bytes(fresh))[layer].chksum
        if got != want:
            problems.append(f"{layer.__name__} checksum {got:#06x}, "
                            f"scapy computes {want:#06x}")
    return problems


def check_case(case, out, result):
    """Assert that the core's (out, result) for case is what it says."""
    problems = []
    if result.reason != case.reason:
        problems.append(f"reason {result.reason!r}, want {case.reason!r}")
    if result.vip != case.vip:
        problems.append(f"vip {result.vip!r}, want {case.vip!r}")
    if case.flags and (result.flags & case.flags) != case.flags:
        problems.append(f"flags {result.flags:#x}, want bits {case.flags:#x}")
    if case.vlan_tci is not None and result.vlan_tci != case.vlan_tci:
        problems.append(f"vlan_tci {result.vlan_tci!r}, want {case.vlan_tci}")
    if case.out_if is not None and result.out_if != case.out_if:
        problems.append(f"out_if {result.out_if}, want {case.out_if}")
    diff = frame_diff(out, case.expected_out)
    if diff:
        problems.append("frame differs:\n" + diff)
    if result.verdict == "forward":
        problems += checksum_problems(out, not case.l4_sum_wrong)
    assert not problems, f"{case.name}: {case.description}\n" + "\n".join(
        problems)


def unfinished(frame):
    """frame (Ethernet, IPv4 or IPv6, TCP or UDP) as a sender with tx
    checksum offload hands it to a veth: the TCP/UDP checksum field holds
    only the pseudo-header sum, folded, not complemented (CHECKSUM_PARTIAL,
    measured: see csrc/csum.c)."""
    from scapy.layers.inet import IP, TCP, UDP, in4_pseudoheader
    from scapy.layers.inet6 import IPv6, in6_pseudoheader
    from scapy.utils import checksum
    pkt = Ether(bytes(frame))
    l4 = pkt[TCP] if pkt.haslayer(TCP) else pkt[UDP]
    proto = 6 if l4.__class__ is TCP else 17
    length = len(bytes(l4)) if proto == 6 else l4.len
    pseudo = (in4_pseudoheader(proto, pkt[IP], length) if pkt.haslayer(IP)
              else bytes(in6_pseudoheader(proto, pkt[IPv6], length)))
    l4.chksum = ~checksum(pseudo) & 0xFFFF     # scapy's is complemented
    return bytes(pkt)


def l4_sum_plus(frame, d):
    """frame with d added to its TCP/UDP checksum (ones' complement): a sum
    wrong by d, which an incremental update (RFC 1624) keeps wrong by d."""
    from scapy.layers.inet import TCP, UDP
    pkt = Ether(bytes(frame))
    l4 = pkt[TCP] if pkt.haslayer(TCP) else pkt[UDP]
    s = l4.chksum + d
    l4.chksum = (s & 0xFFFF) + (s >> 16)
    return bytes(pkt)
