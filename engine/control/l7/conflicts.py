"""The guide's rule: a real server's address and port serve L7 VIPs or L4
SNAT VIPs, not both.

"You should not use the same RIP:PORT combination for Layer 7 SNAT mode
VIPs and Layer 4 SNAT mode VIPs because the required firewall rules
conflict."  In pyfwd both connect to the real from the balancer's own
address: the L4 SNAT core takes the real's answers to its SNAT ports off
the wire (XDP) before the kernel, where HAProxy's connections live, so a
real server shared by both kinds has its answers to one of them in the
wrong hands as soon as the port ranges meet.

    check_shared_reals(services)    # ConfigError naming both VIPs
"""

from ...errors import ConfigError

L4_SNAT = ("snat",)         # the L4 modes that connect from our address


def _endpoints(service):
    return {(r.address, r.port or service.vip.port): r.key
            for r in service.reals}


def check_shared_reals(services):
    """ConfigError when an L7 VIP and an L4 SNAT VIP of `services` (a list
    of model.Service) share a real server's address and port; the message
    names both VIPs and the real.  Returns None."""
    l7 = [(s, _endpoints(s)) for s in services if s.mode == "l7"]
    if not l7:
        return
    for s4 in services:
        if s4.mode not in L4_SNAT:
            continue
        for ep in _endpoints(s4):
            for s7, eps in l7:
                if ep in eps:
                    addr, port = ep
                    raise ConfigError(
                        f"vip {s7.label} (L7) and vip {s4.label} (L4 "
                        f"{s4.mode}) share the real server {addr}:{port}: "
                        "use another port on the real server for one of "
                        "them (an L7 and an L4 SNAT VIP must not share a "
                        "RIP:PORT; their firewall rules conflict)")


__all__ = ["L4_SNAT", "check_shared_reals"]
