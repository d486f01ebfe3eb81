"""l7_source = "client": HAProxy connects to the real servers from the
client's address (`source 0.0.0.0 usesrc clientip`, render.py), and the
kernel must hand the real servers' answers, addressed to the client, to
HAProxy's socket instead of forwarding them.

That takes policy routing, installed here through netlink (pyroute2) and
removed at stop: one routing table, ROUTE_TABLE, holding `local default
dev lo` (per family), and one rule per real server of such a VIP, `from
RIP ipproto tcp sport RPORT lookup ROUTE_TABLE`.  The rule selects what
an nftables `socket transparent` mark would, narrowed to the real
servers' own address and port, so no firewall rule is needed; the
kernel's socket lookup then finds HAProxy's transparent connection.
Rules and routes carry RT_PROTO (FRA_PROTOCOL / RTA_PROTOCOL) as their
origin, so those a killed pyfwd left are recognised and removed.

The real servers must send those answers to the balancer: two-arm (the
balancer their gateway), or one-arm with the balancer as their gateway.
`one_arm_reals` names the reals reached through the interface the
clients come in on, for the engine to say so.

    routing = TransparentRouting()
    routing.open()                      # in the engine's namespace
    routing.apply({(ip_address, port), ...})
    routing.close()                     # removes every rule and route
"""

import ipaddress
import logging
import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..._netns import in_netns
from ...errors import ConfigError, PyfwdError

log = logging.getLogger("pyfwd")

ROUTE_TABLE = 207           # the local-delivery table of l7_source client
RULE_PRIORITY = 207         # before main (32766)
RT_PROTO = 0x70             # the origin pyfwd gives its rules and routes
SCOPE_HOST = 254
FAMILIES = {4: (2, "0.0.0.0/0"), 6: (10, "::/0")}


class TransparentRouting:
    """The rules and routes of the module's docstring, in the network
    namespace of the thread that called open().  Not thread-safe (L7Sync
    calls it under the engine's lock)."""

    def __init__(self):
        self._netns_fd = None
        self.installed = set()      # {(ip_address, port)}

    def open(self):
        if self._netns_fd is None:
            self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)

    def _run(self, what, fn):
        self.open()
        try:
            return in_netns(self._netns_fd, lambda: _with_ipr(fn))
        except NetlinkError as exc:
            raise PyfwdError(f"l7_source client: {what}: "
                             f"{os.strerror(exc.code)}") from None
        except OSError as exc:
            raise PyfwdError(f"l7_source client: {what}: {exc}") from None

    def apply(self, endpoints):
        """Exactly one rule per (address, port) of `endpoints` (the real
        servers of the client-source VIPs), the local route of each family
        that has one; ours that are no longer wanted go.  PyfwdError when
        the kernel refuses."""
        want = {(ipaddress.ip_address(a), int(p)) for a, p in endpoints}
        if not want and self._netns_fd is None:
            return              # never used: nothing of ours to remove
        self._run("policy routing", lambda ipr: _sync(ipr, want))
        self.installed = want
        if want:
            log.info("l7_source client: answers from %s delivered to "
                     "HAProxy (rule table %d)", ", ".join(
                         f"{a}:{p}" for a, p in sorted(
                             want, key=lambda e: (e[0].version, e))),
                     ROUTE_TABLE)

    def local_addresses(self):
        """Every address on this namespace's interfaces (ip_address)."""
        return self._run("reading the addresses", lambda ipr: {
            ipaddress.ip_address(m.get_attr("IFA_ADDRESS"))
            for m in ipr.get_addr()})

    def one_arm_reals(self, iface, addresses):
        """Those of `addresses` whose route leaves through `iface` (the
        interface the clients come in on)."""
        def look(ipr):
            idx = ipr.link_lookup(ifname=iface)
            out = []
            for a in addresses:
                try:
                    r = ipr.route("get", dst=str(a))
                except NetlinkError:
                    continue
                if r and r[0].get_attr("RTA_OIF") in idx:
                    out.append(a)
            return out
        return self._run("reading the routes", look)

    def close(self):
        """Remove every rule and route of ours (those a dead pyfwd left
        too); logged, never raises."""
        if self._netns_fd is None:
            return
        try:
            self._run("removing the policy routing",
                      lambda ipr: _sync(ipr, set()))
        except PyfwdError as exc:
            log.warning("%s", exc)
        self.installed = set()
        os.close(self._netns_fd)
        self._netns_fd = None


def _with_ipr(fn):
    with IPRoute() as ipr:
        return fn(ipr)


def _ours_rules(ipr, family):
    out = {}
    for r in ipr.get_rules(family=family):
        if r.get_attr("FRA_PROTOCOL") == RT_PROTO and \
                r.get_attr("FRA_TABLE", r["table"]) == ROUTE_TABLE:
            port = int(str(r.get_attr("FRA_SPORT_RANGE")).split(":")[0])
            out[(ipaddress.ip_address(r.get_attr("FRA_SRC")), port)] = r
    return out


def _sync(ipr, want):
    for version, (family, default) in FAMILIES.items():
        mine = {e for e in want if e[0].version == version}
        have = _ours_rules(ipr, family)
        for (addr, port) in sorted(set(have) - mine):
            ipr.rule("del", family=family, table=ROUTE_TABLE,
                     priority=RULE_PRIORITY, src=str(addr),
                     src_len=addr.max_prefixlen, ip_proto=6,
                     sport_range=f"{port}:{port}", protocol=RT_PROTO)
        for (addr, port) in sorted(mine - set(have)):
            ipr.rule("add", family=family, table=ROUTE_TABLE,
                     priority=RULE_PRIORITY, src=str(addr),
                     src_len=addr.max_prefixlen, ip_proto=6,
                     sport_range=f"{port}:{port}", protocol=RT_PROTO)
        routes = [r for r in ipr.get_routes(family=family,
                                            table=ROUTE_TABLE)
                  if r["proto"] == RT_PROTO]
        if mine and not routes:
            ipr.route("add", dst=default, type="local", table=ROUTE_TABLE,
                      oif=ipr.link_lookup(ifname="lo")[0], scope=SCOPE_HOST,
                      proto=RT_PROTO, family=family)
        elif routes and not mine:
            for r in routes:
                ipr.route("del", dst=default, type="local",
                          table=ROUTE_TABLE, oif=r.get_attr("RTA_OIF"),
                          scope=SCOPE_HOST, proto=RT_PROTO, family=family)


def check_sources(services, local):
    """ConfigError unless the l7_source address of each of `services` (L7)
    is among `local` (this host's addresses)."""
    for s in services:
        src = s.l7.l7_source
        if src in ("balancer", "vip", "client"):
            continue
        if ipaddress.ip_address(src) not in local:
            raise ConfigError(f"vip {s.label}: l7_source {src}: not an "
                              "address of this host (HAProxy connects from "
                              "it: put it on an interface, or use "
                              "\"balancer\" or \"vip\")")


def client_endpoints(services):
    """{(address, port)} of the real servers of the l7_source client
    VIPs among `services`."""
    return {(r.address, r.port or s.vip.port) for s in services
            if s.l7.l7_source == "client" for r in s.reals}


__all__ = ["ROUTE_TABLE", "RULE_PRIORITY", "RT_PROTO", "TransparentRouting",
           "check_sources", "client_endpoints"]
