"""Every balancer behind ECMP must schedule a VIP's new flows alike
(docs/scale.md): Maglev's table does not depend on the order the config
lists the reals in, nor on a node's own real ids, and `ctl show` names
each VIP's table by a fingerprint to compare across the nodes."""

import numpy as np

from pyfwd.control.ctl import format_show
from pyfwd.dataplane import tables
from pyfwd.model import Real, Service, Vip

WEB = Vip.parse("10.0.0.100:80/tcp")
KEYS = ["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"]
MAC = b"\x02\x00\x00\x00\x00\x01"


def build(reals, scheduler="maglev", macs=None, ids=None):
    """(tables of one VIP over reals, its ring as real keys)."""
    s = Service(WEB, reals, scheduler, "dr")
    macs = macs or {r.address: MAC for r in reals}
    t = tables.build([s], ids or tables.RealIds(64), macs)
    key = {r.address: r.key for r in reals}
    by_id = {i: key[e.address] for i, e in enumerate(t.reals) if e}
    return t, [by_id.get(int(i)) for i in t.ring]


def reals(keys, weights=None):
    return [Real(k, weight=(weights or {}).get(k, 1)) for k in keys]


def test_maglev_is_the_same_whatever_order_the_reals_are_listed_in():
    a, ring_a = build(reals(KEYS))
    b, ring_b = build(reals(KEYS[::-1]))
    assert ring_a == ring_b
    assert a.fingerprints[WEB] == b.fingerprints[WEB]
    assert len(a.fingerprints[WEB]) == 12


def test_a_nodes_own_real_ids_do_not_change_the_fingerprint():
    ids = tables.RealIds(64)
    ids.get(WEB, "10.0.0.99")           # this node saw another real first
    ids.get(WEB, "10.0.0.14")
    a, ring_a = build(reals(KEYS), ids=ids)
    b, ring_b = build(reals(KEYS))
    assert not np.array_equal(a.ring, b.ring)       # other ids...
    assert ring_a == ring_b                         # ...the same reals
    assert a.fingerprints[WEB] == b.fingerprints[WEB]


def test_what_changes_the_choice_changes_the_fingerprint():
    base = build(reals(KEYS))[0].fingerprints[WEB]
    # a weight, a real one node cannot reach (no MAC), another scheduler
    weighted = build(reals(KEYS, {"10.0.0.12": 2}))[0].fingerprints[WEB]
    macs = {Real(k).address: MAC for k in KEYS[1:]}
    macs[Real(KEYS[0]).address] = None
    blind = build(reals(KEYS), macs=macs)[0].fingerprints[WEB]
    sh = build(reals(KEYS), scheduler="sh")[0].fingerprints[WEB]
    assert len({base, weighted, blind, sh}) == 4


def test_ctl_show_names_the_table():
    text = format_show([{"name": "web", "vip": str(WEB), "mode": "dr",
                         "scheduler": "maglev", "table": "0123456789ab",
                         "reals": []}])
    assert "table 0123456789ab" in text.splitlines()[0]
