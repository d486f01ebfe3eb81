"""The engine's services as its parts see them: pure functions, no state.

services: a list of model.Service; state: {(vip, real key): "drain" |
"halt"} (the admin state; online reals have no entry); health: {(vip,
real key): (up, detail)} (a real without an entry is up).

    effective(services, state, health)  # -> (what the tables get, VIPs
                                        #     whose fallback is in)
    steering(services)                  # -> what the XDP program steers
    find_service(services, "web")       # by name, ADDR:PORT/PROTO or Vip
"""

import dataclasses

from ..dataplane.io import Endpoint
from ..dataplane.tables import Limits, check_limits
from ..errors import ConfigError
from ..model import Real, Vip


def l4(services):
    """The VIPs of the C core (DR, NAT, SNAT)."""
    return [s for s in services if s.mode != "l7"]


def l7(services):
    """The VIPs that HAProxy serves."""
    return [s for s in services if s.mode == "l7"]


def vip_addresses(services):
    """The addresses of the L4 VIPs: ([IPv4], [IPv6]), those the engine
    answers ARP and neighbour discovery for."""
    vips = [s.vip.address for s in l4(services)]
    return ([a for a in vips if a.version == 4],
            [a for a in vips if a.version == 6])


def real_addresses(services):
    """Every address the data plane may send to: the L4 VIPs' real
    servers and fallbacks, sorted."""
    return sorted({r.address for s in l4(services)
                   for r in s.reals + ([s.fallback] if s.fallback else [])},
                  key=str)


def find_service(services, vip):
    """The Service of vip: its name, its `ADDR:PORT/PROTO` text or a Vip.
    ConfigError if none."""
    for s in services:
        if vip in (s.name, s.vip) or vip == str(s.vip):
            return s
    if isinstance(vip, str) and vip.count("/") == 1:
        v = Vip.parse(vip)
        for s in services:
            if s.vip == v:
                return s
    raise ConfigError(f"vip {vip}: not configured (by name or "
                      "ADDR:PORT/PROTO)")


def find_real(services, vip, key):
    """(Service, Real) of the real `key` (its key or address) of vip.
    ConfigError if either is not there."""
    s = find_service(services, vip)
    key = str(key)
    for r in s.reals:
        if r.key == key or str(r.address) == key:
            return s, r
    raise ConfigError(f"vip {s.label}: no real server {key}")


def add_real(services, vip, real, limits=Limits()):
    """Add real (a Real) to vip; its Service.  ConfigError if vip is not
    there, has that real already, cannot take it (Service.check_real), or
    the services would not fit `limits` (dataplane.tables.Limits; the
    default: those of the Engine's core) with it."""
    s = find_service(services, vip)
    if any(r.key == real.key for r in s.reals):
        raise ConfigError(f"vip {s.label}: real {real.key} is there already")
    s.check_real(real)
    _check_fits(services, s, s.reals + [real], limits)
    s.reals.append(real)
    return s


def del_real(services, vip, key):
    """Remove the real `key` from vip; (Service, the Real removed)."""
    s, r = find_real(services, vip, key)
    s.reals.remove(r)
    return s, r


def set_weight(services, vip, key, weight, limits=Limits()):
    """Give the real `key` of vip a new weight; (Service, the old Real).
    ConfigError, and nothing changed, for a bad weight or one that takes
    the services over `limits` (a wrr VIP's ring grows with its weights)."""
    s, old = find_real(services, vip, key)
    new = Real(old.address, old.port, weight)
    i = s.reals.index(old)
    _check_fits(services, s, s.reals[:i] + [new] + s.reals[i + 1:], limits)
    s.reals[i] = new
    return s, old


def _check_fits(services, service, reals, limits):
    """ConfigError unless services, with service's reals replaced by reals,
    fit limits."""
    new = dataclasses.replace(service, reals=reals)
    check_limits([new if s is service else s for s in services], limits,
                 changed=new)


def set_state(services, state, vip, key, value):
    """Set the admin state of the real `key` of vip in `state`: "drain",
    "halt" or "online" (no entry); (Service, Real)."""
    s, r = find_real(services, vip, key)
    if value == "online":
        state.pop((s.vip, r.key), None)
    else:
        state[(s.vip, r.key)] = value
    return s, r


def real_keys(services):
    """{(vip, real key)} of every configured real server."""
    return {(s.vip, r.key) for s in services for r in s.reals}


def prune(per_real, keys):
    """Forget, in a {(vip, real key): ...} dict, every key not in keys."""
    for k in [k for k in per_real if k not in keys]:
        del per_real[k]


def is_up(health, key):
    """Whether the health checks let the real `key` ((vip, real key)) take
    flows: yes until they say otherwise."""
    return health.get(key, (True, ""))[0]


def effective(services, state, health):
    """The L4 services as the tables see them: halted reals left out,
    drained ones at weight 0, unhealthy ones at weight 0 (the VIP's on_down
    "quiesce": no new flow, its established flows go on) or left out
    ("reset": its flows are rescheduled), the fallback when no real can
    take a new flow (in place of a quiesced real that is the fallback
    itself).  Returns (services, {VIPs whose fallback is in})."""
    out = []
    fallback_active = set()
    for s in l4(services):
        reals, quiesced = [], set()
        for r in s.reals:
            st = state.get((s.vip, r.key))
            down = not is_up(health, (s.vip, r.key))
            if st == "halt" or (down and s.on_down == "reset"):
                continue
            if down:
                quiesced.add(r.key)
            reals.append(Real(r.address, r.port, 0)
                         if st == "drain" or down else r)
        fb = s.fallback
        if fb and not any(r.weight for r in reals):
            same = [i for i, r in enumerate(reals) if r.key == fb.key]
            if not same:
                reals.append(Real(fb.address, fb.port, 1))
                fallback_active.add(s.vip)
            elif fb.key in quiesced:
                reals[same[0]] = Real(fb.address, fb.port, 1)
                fallback_active.add(s.vip)
        out.append(dataclasses.replace(s, reals=reals))
    return out, fallback_active


def steering(services):
    """What the XDP program sends the engine: (the L4 VIPs, {the NAT real
    servers' addr:port as Endpoints}: their answers come back through
    us)."""
    replies = {Endpoint(r.address, r.port or s.vip.port, s.vip.protocol)
               for s in services if s.mode == "nat"
               for r in s.reals + ([s.fallback] if s.fallback else [])}
    return [s.vip for s in l4(services)], replies


def health_targets(services):
    """{(vip, real key): (health spec, address, port, VIP text)} of every
    real whose VIP has health checks (HealthMonitor.set_targets)."""
    targets = {}
    for s in services:
        if s.health is None:
            continue
        for r in s.reals:
            port = s.health.port or r.port or s.vip.port
            targets[(s.vip, r.key)] = (s.health, r.address, port, str(s.vip))
    return targets


def reload_summary(old_services, new_services):
    """What a reload changes: {"added_vips", "removed_vips" (labels),
    "changed" (["LABEL: what", ...])}."""
    old = {s.vip: s for s in old_services}
    new = {s.vip: s for s in new_services}
    summary = {"added_vips": [new[v].label for v in new if v not in old],
               "removed_vips": [old[v].label for v in old if v not in new],
               "changed": []}
    for v in new.keys() & old.keys():
        a, b = old[v], new[v]
        ra = {r.key: r for r in a.reals}
        rb = {r.key: r for r in b.reals}
        for k in rb.keys() - ra.keys():
            summary["changed"].append(f"{b.label}: added {k}")
        for k in ra.keys() - rb.keys():
            summary["changed"].append(f"{b.label}: removed {k}")
        for k in ra.keys() & rb.keys():
            if ra[k].weight != rb[k].weight:
                summary["changed"].append(
                    f"{b.label}: {k} weight {ra[k].weight} -> "
                    f"{rb[k].weight}")
        for attr in ("mode", "scheduler", "persistence", "health",
                     "fallback", "name", "on_down"):
            if getattr(a, attr) != getattr(b, attr):
                summary["changed"].append(
                    f"{b.label}: {attr} {getattr(a, attr)} -> "
                    f"{getattr(b, attr)}")
    return summary


__all__ = ["l4", "l7", "vip_addresses", "real_addresses", "find_service",
           "find_real", "add_real", "del_real", "set_weight", "set_state",
           "real_keys", "prune", "is_up", "effective", "steering",
           "health_targets", "reload_summary"]
