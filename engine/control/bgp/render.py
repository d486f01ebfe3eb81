"""The BIRD 2 configuration of one engine's BGP speaker (pure text).

Each VIP to announce is a blackhole route of a static protocol (one per
family); each [[bgp.peer]] is an eBGP session that exports those routes
and nothing else, imports nothing, and sets its own address as the next
hop.  No kernel protocol: the balancer's own routing table is never
touched (in DR the VIP must not be a kernel address of the balancer).
A change of the VIPs to announce changes only the static protocols, so
`configure` keeps the sessions up (BIRD restarts only the protocols whose
configuration changed).

Timers: hold_time as configured, keepalive a third of it (RFC 4271's
advice), and short start-delay, connect-retry and error-wait times so
that a session comes back within seconds of a restart of either side
(BIRD's defaults, 5 s, 120 s and 60-300 s, are for the Internet, not a
rack).
"""

import ipaddress

STATIC = {4: "pyfwd_vips4", 6: "pyfwd_vips6"}
CONNECT_RETRY = 2           # s between two connection attempts
START_DELAY = 1             # s from BIRD's start to its first attempt (5)
ERROR_WAIT = (1, 8)         # s: after an error, doubling up to the max


def peer_name(i):
    """The BIRD protocol name of the i-th [[bgp.peer]]."""
    return f"peer{i + 1}"


def prefixes(addresses):
    """The host prefixes (/32, /128) of VIP addresses, sorted, by family:
    {4: [...], 6: [...]}."""
    out = {4: set(), 6: set()}
    for a in addresses:
        ip = ipaddress.ip_address(a)
        out[ip.version].add(f"{ip}/{ip.max_prefixlen}")
    return {f: sorted(p, key=lambda s: ipaddress.ip_network(s))
            for f, p in out.items()}


def render(options, router_id, announce):
    """The bird.conf text.

    @param options a BgpOptions (enabled)
    @param router_id the BGP identifier (an IPv4 address as text)
    @param announce the VIP addresses to announce now (text or ipaddress)
    """
    routes = prefixes(announce)
    lines = ["# Written by pyfwd (control.bgp): rewritten on every change.",
             "log stderr { info, remote, warning, error, auth, fatal, bug };",
             f"router id {router_id};",
             "",
             "protocol device {",
             "\tscan time 10;",
             "}"]
    for family, name in STATIC.items():
        lines += ["", f"protocol static {name} {{",
                  f"\tipv{family};"]
        lines += [f"\troute {p} blackhole;" for p in routes[family]]
        lines.append("}")
    keepalive = max(1, options.hold_time // 3)
    for i, p in enumerate(options.peers):
        lines += ["", f"protocol bgp {peer_name(i)} {{",
                  f"\tlocal as {options.local_as};",
                  f"\tneighbor {p.address} as {p.asn};",
                  f"\thold time {options.hold_time};",
                  f"\tkeepalive time {keepalive};",
                  f"\tstart delay time {START_DELAY};",
                  f"\tconnect retry time {CONNECT_RETRY};",
                  f"\terror wait time {ERROR_WAIT[0]}, {ERROR_WAIT[1]};",
                  f"\tipv{p.family} {{",
                  "\t\timport none;",
                  f"\t\texport where proto = \"{STATIC[p.family]}\";",
                  "\t\tnext hop self;",
                  "\t};",
                  "}"]
    return "\n".join(lines) + "\n"


__all__ = ["render", "prefixes", "peer_name", "STATIC"]
