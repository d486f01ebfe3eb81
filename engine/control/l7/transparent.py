"""l7_source = "client": HAProxy connects to the real servers from the
client's address (`source 0.0.0.0 usesrc clientip`, render.py), and the
kernel must hand the real servers' answers, addressed to the client, to
HAProxy's socket instead of forwarding them.

That is the TPROXY recipe, installed here through netlink (pyroute2:
rtnetlink and nf_tables) and removed at stop:

    table inet pyfwd_l7 {                       # NFT_TABLE
        chain prerouting {
            type filter hook prerouting priority mangle; policy accept;
            meta l4proto tcp socket transparent 1 meta mark set 0x7077 accept
        }
    }
    ip rule add fwmark 0x7077 lookup 207 pref 207 proto 0x70   # per family
    ip route add local default dev lo table 207 proto 0x70

A packet that belongs to one of HAProxy's transparent sockets gets the
mark, the rule sends it to table 207, whose route delivers it locally, so
HAProxy's connection gets it; nothing else is touched (a client talking
to a real server directly through the balancer is routed as before).
Rules and routes carry RT_PROTO as their origin, so those a killed pyfwd
left are recognised and removed (the table by its name).

The real servers must send those answers to the balancer: two-arm (the
balancer their gateway), or one-arm with the balancer as their gateway.
`one_arm_reals` names the reals reached through the interface the
clients come in on, for the engine to say so.

    routing = TransparentRouting()
    routing.open()                      # in the engine's namespace
    routing.apply({4})                  # the families of client VIPs
    routing.close()                     # removes all of it
"""

import errno
import ipaddress
import logging
import os
import struct

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.nftables.expressions import genex, verdict
from pyroute2.nftables.main import NFTables

from ..._netns import in_netns
from ...errors import ConfigError, PyfwdError

log = logging.getLogger("pyfwd")

ROUTE_TABLE = 207           # the local-delivery table of l7_source client
RULE_PRIORITY = 207         # before main (32766)
RT_PROTO = 0x70             # the origin pyfwd gives its rules and routes
FWMARK = 0x7077             # the mark of HAProxy's transparent sockets'
NFT_TABLE = "pyfwd_l7"      # packets (nftables `socket transparent`)
SCOPE_HOST = 254
FAMILIES = {4: (2, "0.0.0.0/0"), 6: (10, "::/0")}
NFPROTO_INET = 1


class TransparentRouting:
    """The rules and routes of the module's docstring, in the network
    namespace of the thread that called open().  Not thread-safe (L7Sync
    calls it under the engine's lock)."""

    def __init__(self):
        self._netns_fd = None
        self.installed = set()      # the IP versions routed: {4, 6}

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

    def apply(self, versions):
        """The nftables rule, and the policy rule and local route of each
        IP version in `versions` (those of the client-source VIPs); what
        is no longer wanted goes.  PyfwdError when the kernel refuses."""
        want = set(versions)
        if not want and self._netns_fd is None:
            return              # never used: nothing of ours to remove
        self._run("policy routing", lambda ipr: _sync(ipr, want))
        self.installed = want
        if want:
            log.info("l7_source client: answers to HAProxy's transparent "
                     "sockets marked %#x (nftables table inet %s), routed "
                     "by table %d", FWMARK, NFT_TABLE, ROUTE_TABLE)

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
    return [r for r in ipr.get_rules(family=family)
            if r.get_attr("FRA_PROTOCOL") == RT_PROTO and
            r.get_attr("FRA_TABLE", r["table"]) == ROUTE_TABLE]


def _nft_rule():
    """meta l4proto tcp socket transparent 1 meta mark set FWMARK accept"""
    def cmp_eq(value):
        return genex("cmp", {"sreg": 1, "op": 0, "data": {
            "attrs": [("NFTA_DATA_VALUE", value)]}})
    return [genex("meta", {"dreg": 1, "key": 16}),      # NFT_META_L4PROTO
            cmp_eq(b"\x06"),                            # tcp
            genex("socket", {"key": 0, "dreg": 1}),     # ..._TRANSPARENT
            cmp_eq(b"\x01"),
            genex("immediate", {"dreg": 1, "data": {"attrs": [
                ("NFTA_DATA_VALUE", struct.pack("=I", FWMARK))]}}),
            genex("meta", {"key": 3, "sreg": 1}),       # NFT_META_MARK
            *verdict(1)]                                # accept


def _sync_nft(want):
    with NFTables(nfgen_family=NFPROTO_INET) as nft:
        try:
            nft.table("del", name=NFT_TABLE)    # ours, or a dead pyfwd's
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:
                raise
        if not want:
            return
        nft.table("add", name=NFT_TABLE)
        nft.chain("add", table=NFT_TABLE, name="prerouting",
                  hook="prerouting", type="filter", priority=-150)
        nft.rule("add", table=NFT_TABLE, chain="prerouting",
                 expressions=[[e] for e in _nft_rule()])


def _sync(ipr, want):
    _sync_nft(want)
    for version, (family, default) in FAMILIES.items():
        on = version in want
        rules = _ours_rules(ipr, family)
        if on and not rules:
            ipr.rule("add", family=family, table=ROUTE_TABLE,
                     priority=RULE_PRIORITY, fwmark=FWMARK,
                     fwmask=0xFFFFFFFF, protocol=RT_PROTO)
        elif rules and not on:
            for r in rules:
                ipr.rule("del", family=family, table=ROUTE_TABLE,
                         priority=r.get_attr("FRA_PRIORITY"),
                         fwmark=r.get_attr("FRA_FWMARK"),
                         fwmask=r.get_attr("FRA_FWMASK"), protocol=RT_PROTO)
        routes = [r for r in ipr.get_routes(family=family,
                                            table=ROUTE_TABLE)
                  if r["proto"] == RT_PROTO]
        if on and not routes:
            ipr.route("add", dst=default, type="local", table=ROUTE_TABLE,
                      oif=ipr.link_lookup(ifname="lo")[0], scope=SCOPE_HOST,
                      proto=RT_PROTO, family=family)
        elif routes and not on:
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


def client_versions(services):
    """{4, 6}: the IP versions of the l7_source client VIPs of services."""
    return {s.vip.address.version for s in services
            if s.l7.l7_source == "client"}


def client_endpoints(services):
    """{(address, port)} of the real servers of the l7_source client
    VIPs among `services`."""
    return {(r.address, r.port or s.vip.port) for s in services
            if s.l7.l7_source == "client" for r in s.reals}


__all__ = ["ROUTE_TABLE", "RULE_PRIORITY", "RT_PROTO", "FWMARK", "NFT_TABLE",
           "TransparentRouting", "check_sources", "client_versions",
           "client_endpoints"]
