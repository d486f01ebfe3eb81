"""The engine's role changes without root: standing down never fails, the
first gratuitous ARP leaves at once on becoming active, and a VIP removed
while punted frames are answered breaks nothing.  The fake core and socket
of test_engine_ndp stand in for the data plane; the Engine is not started
(its set_role and reload work on the services alone)."""

import logging

from scapy.layers.l2 import ARP, Ether

from pyfwd.control.engine import Engine
from pyfwd.control.ha import HaState
from pyfwd.control.l7.options import L7Options
from pyfwd.model import Real, Service, Vip

from .test_engine_ndp import (CLIENT_MAC, LB_MAC, VIP4, VIPS6, announce,
                              make_punts, services)


def garps(sent):
    return [Ether(f) for f in sent if ARP in Ether(f)
            and Ether(f)[ARP].psrc == Ether(f)[ARP].pdst]


def test_becoming_active_announces_at_once():
    eng = Engine("eth0", services(), role="standby")
    out = eng.set_role("active")
    assert out["changed"] and VIP4 in out["announce"]
    assert eng.ha.pending and all(t > 0 for t in eng.ha.pending)   # the rest
    # the burst leaves from set_role's thread, not at a control tick
    ha = HaState("standby")
    punts = make_punts(ha=ha)
    ha.set_role("active", services(), lambda: announce(punts))
    sent = garps(punts.sock.sent)
    assert [g[ARP].psrc for g in sent] == [VIP4]      # now, not at a tick
    assert sent[0].src == LB_MAC
    assert ha.pending and all(t > 0 for t in ha.pending)   # the rest


def test_standing_down_never_fails(caplog):
    eng = Engine("eth0", services())
    eng.services.append(Service(Vip.parse("10.0.0.101:80/tcp"),
                                [Real.parse("10.0.0.11:8080")], "rr", "l7",
                                l7=L7Options()))
    with caplog.at_level(logging.ERROR, logger="pyfwd"):
        out = eng.set_role("standby")
    assert out["role"] == "standby" and eng.role == "standby"
    assert caplog.text == ""        # L7 VIPs: their addresses follow
    assert eng.l7.active is False
    punts = make_punts(ha=eng.ha)       # the engine's HA state
    punts.core.punts = [bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_MAC)
                              / ARP(hwsrc=CLIENT_MAC, psrc="10.0.0.1",
                                    pdst=VIP4))]
    punts.answer_punts()
    assert punts.sock.sent == []                # standby: no ARP answer


def test_a_claim_for_a_vip_that_left_is_harmless():
    punts = make_punts()
    other = "02:00:00:00:01:11"
    claim = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=other)
                  / ARP(op=2, hwsrc=other, psrc=VIP4, pdst=VIP4))
    punts.core.punts = [claim]
    punts.answer_punts()
    assert (VIP4, other) in {(str(v), m) for v, m in punts.conflicts_logged}
    punts.update_vips([], VIPS6)                # the VIP is gone
    punts.core.punts = [claim]
    punts.answer_punts()                        # must not raise


def test_reload_keeps_the_running_role_over_the_files(tmp_path):
    # started --role active with a file that says standby and has an L7
    # VIP: the file's role must not make every reload fail
    from pyfwd.control import config as config_mod
    path = tmp_path / "pyfwd.toml"
    path.write_text('[engine]\niface = "eth0"\nrole = "standby"\n\n'
                    '[[vip]]\nname = "web"\naddress = "10.0.0.101"\n'
                    'port = 80\nmode = "l7"\n\n[[vip.real]]\n'
                    'address = "10.0.0.11"\nport = 8080\n')
    assert config_mod.load(str(path), role="active").services
    eng = Engine("eth0", services(), config_path=str(path))
    try:
        eng.reload()
    except Exception as exc:        # noqa: BLE001 - the engine is not
        assert "standby" not in str(exc), exc   # started: not at the role


def test_a_peer_still_claiming_a_vip_after_takeover_is_counted():
    punts = make_punts("standby")
    peer = "02:00:00:00:01:03"
    claim = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=peer)
                  / ARP(op=2, hwsrc=peer, psrc=VIP4, pdst=VIP4))
    punts.core.punts = [claim]
    punts.answer_punts()                # standby: the active node, noted
    assert punts.ha.counters["split_brain"] == 0 and peer in punts.ha.peers
    punts.ha.set_role("active", services(), lambda: announce(punts))
    for _ in range(2):                  # counted once per VIP and MAC
        punts.core.punts = [claim]
        punts.answer_punts()
    assert punts.ha.counters["split_brain"] == 1
