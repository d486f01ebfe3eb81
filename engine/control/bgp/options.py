"""The [bgp] table: who this node is and whom it tells its VIPs.

    [bgp]
    local_as = 65001
    router_id = "10.0.0.2"      # default: the interface's IPv4 address
    hold_time = 9               # seconds (3 to 65535; keepalives: a third)
    [[bgp.peer]]
    address = "10.0.0.1"
    as = 65000

Pure values: `BgpOptions.from_dict` validates the table up front, every
error naming the key and the value (control.config calls it).
"""

import ipaddress
from dataclasses import dataclass, field

from ...errors import ConfigError

BGP_KEYS = {"local_as": int, "router_id": str, "hold_time": int,
            "peer": list}
PEER_KEYS = {"address": str, "as": int}
HOLD_TIME = 9
AS_MAX = 4294967295             # 4-byte AS numbers (RFC 6793)
PEERS_MAX = 64


@dataclass(frozen=True)
class BgpPeer:
    address: str                # an IPv4 or IPv6 address, directly reached
    asn: int

    @property
    def family(self):
        return 4 if ipaddress.ip_address(self.address).version == 4 else 6


@dataclass(frozen=True)
class BgpOptions:
    """The [bgp] table as values; `enabled` is False when the file has
    none (no daemon runs)."""

    local_as: int = 0
    router_id: "str | None" = None
    hold_time: int = HOLD_TIME
    peers: tuple = field(default_factory=tuple)

    @property
    def enabled(self):
        return bool(self.local_as)

    @classmethod
    def from_dict(cls, table, where="bgp"):
        """BgpOptions from the [bgp] table (a dict; {}: BGP off).

        Raises ConfigError naming the key: an unknown key, a missing
        local_as or peer, an AS out of 1..4294967295, a router_id that is
        not an IPv4 address, a hold_time out of 3..65535, a peer address
        that is not an IP address or given twice.
        """
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table ([bgp])")
        if not table:
            return cls()
        _check_keys(where, table, BGP_KEYS)
        if "local_as" not in table:
            raise ConfigError(f"{where}.local_as: missing (this node's AS "
                              "number)")
        local_as = _asn(f"{where}.local_as", table["local_as"])
        router_id = table.get("router_id")
        if router_id is not None:
            try:
                ipaddress.IPv4Address(router_id)
            except ValueError:
                raise ConfigError(f"{where}.router_id = {router_id!r}: "
                                  "expected an IPv4 address (BGP "
                                  "identifier)") from None
        hold = table.get("hold_time", HOLD_TIME)
        if not 3 <= hold <= 65535:
            raise ConfigError(f"{where}.hold_time = {hold}: expected 3 to "
                              "65535 seconds (RFC 4271; 0 is not offered)")
        peers = table.get("peer", [])
        if not peers:
            raise ConfigError(f"{where}.peer: missing (at least one "
                              "[[bgp.peer]] with address and as)")
        if len(peers) > PEERS_MAX:
            raise ConfigError(f"{where}.peer: {len(peers)} peers, at most "
                              f"{PEERS_MAX}")
        out, seen = [], set()
        for i, p in enumerate(peers):
            w = f"{where}.peer[{i}]"
            if not isinstance(p, dict):
                raise ConfigError(f"{w}: expected a table ([[bgp.peer]])")
            _check_keys(w, p, PEER_KEYS)
            for key in PEER_KEYS:
                if key not in p:
                    raise ConfigError(f"{w}.{key}: missing")
            try:
                addr = str(ipaddress.ip_address(p["address"]))
            except ValueError:
                raise ConfigError(f"{w}.address = {p['address']!r}: "
                                  "expected an IP address") from None
            if addr in seen:
                raise ConfigError(f"{w}.address = {addr!r}: given twice")
            seen.add(addr)
            out.append(BgpPeer(addr, _asn(f"{w}.as", p["as"])))
        return cls(local_as, router_id, hold, tuple(out))


def _asn(where, value):
    if not 1 <= value <= AS_MAX:
        raise ConfigError(f"{where} = {value}: expected an AS number from "
                          f"1 to {AS_MAX}")
    return value


_KIND = {int: "an integer", str: "a string", list: "an array"}


def _check_keys(where, table, allowed):
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key (expected one of "
                              f"{', '.join(allowed)})")
        want = allowed[key]
        if not isinstance(value, want) or isinstance(value, bool):
            raise ConfigError(f"{where}.{key} = {value!r}: expected "
                              f"{_KIND[want]}")


__all__ = ["BgpOptions", "BgpPeer", "HOLD_TIME"]
