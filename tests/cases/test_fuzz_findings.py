"""What the fuzzing found in the core, kept as cases (docs/reliability/
fuzz.md).  No root."""

from . import nat_defs as nd
from .test_nat_cases import make_core


def test_icmp_error_not_to_the_quoted_sender_is_not_forwarded():
    """An ICMP error goes to the sender of the packet it quotes.  One that
    quotes our answer (VIP:80 -> client) but is addressed elsewhere was
    forwarded to the real all the same (the steering program left it to
    the kernel: the two disagreed); now it is not the core's."""
    core = make_core()
    [syn, sa] = nd.nat_tcp()[:2]
    for case in (syn, sa):
        _, [r] = core.process([case.frame], in_if=case.in_if)
        assert r.reason == case.reason
    sa_out = sa.out
    for dst in ("10.0.0.0", "10.0.0.7"):
        err = nd.icmp_err(nd.ROUTER, dst, nd.ip_of(sa_out), nd.OUT_MAC,
                          nd.ROUTER_MAC)
        [out], [r] = core.process([err])
        assert r.reason == "pass_not_vip" and out == err, dst
    # addressed to the VIP, the quoted packet's sender: still forwarded
    good = nd.nat_tcp()[3]
    _, [r] = core.process([good.frame])
    assert r.reason == "forward_icmp"
