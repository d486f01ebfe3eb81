"""The engine's role changes without root: standing down never fails, the
first gratuitous ARP leaves at once on becoming active, and a VIP removed
while punted frames are answered breaks nothing.  The fake core and socket
of test_engine_ndp stand in for the data plane."""

import logging

from scapy.layers.l2 import ARP, Ether

from pyfwd.control.l7 import L7Options
from pyfwd.model import Real, Service, Vip

from .test_engine_ndp import CLIENT_MAC, LB_MAC, VIP4, make_engine


def garps(sent):
    return [Ether(f) for f in sent if ARP in Ether(f)
            and Ether(f)[ARP].psrc == Ether(f)[ARP].pdst]


def test_becoming_active_announces_at_once():
    eng = make_engine(role="standby")
    out = eng.set_role("active")
    assert out["changed"] and VIP4 in out["announce"]
    sent = garps(eng._sock.sent)
    assert [g[ARP].psrc for g in sent] == [VIP4]      # now, not at a tick
    assert sent[0].src == LB_MAC
    assert eng._garp_at and all(t > 0 for t in eng._garp_at)   # the rest


def test_standing_down_never_fails(caplog):
    eng = make_engine()
    eng.services.append(Service(Vip.parse("10.0.0.101:80/tcp"),
                                [Real.parse("10.0.0.11:8080")], "rr", "l7",
                                l7=L7Options()))
    with caplog.at_level(logging.ERROR, logger="pyfwd"):
        out = eng.set_role("standby")
    assert out["role"] == "standby" and eng.role == "standby"
    assert "standing down for the L4 VIPs anyway" in caplog.text
    eng._sock.sent.clear()
    eng.core.punts = [bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_MAC)
                            / ARP(hwsrc=CLIENT_MAC, psrc="10.0.0.1",
                                  pdst=VIP4))]
    eng._answer_punts()
    assert eng._sock.sent == []                 # standby: no ARP answer


def test_a_claim_for_a_vip_that_left_is_harmless():
    eng = make_engine()
    other = "02:00:00:00:01:11"
    claim = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=other)
                  / ARP(op=2, hwsrc=other, psrc=VIP4, pdst=VIP4))
    eng.core.punts = [claim]
    eng._answer_punts()
    assert (VIP4, other) in {(str(v), m) for v, m in eng._conflicts_logged}
    eng.responder.update_vips([])               # the VIP is gone
    eng.core.punts = [claim]
    eng._answer_punts()                         # must not raise


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
    eng = make_engine()
    eng.config_path = str(path)
    try:
        eng.reload()
    except Exception as exc:        # noqa: BLE001 - the fake engine may
        assert "standby" not in str(exc), exc   # stop later: not at the role


def test_a_peer_still_claiming_a_vip_after_takeover_is_counted():
    eng = make_engine(role="standby")
    peer = "02:00:00:00:01:03"
    claim = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=peer)
                  / ARP(op=2, hwsrc=peer, psrc=VIP4, pdst=VIP4))
    eng.core.punts = [claim]
    eng._answer_punts()                 # standby: the active node, noted
    assert eng.ha_counters["split_brain"] == 0 and peer in eng.ha_peers
    eng.set_role("active")
    for _ in range(2):                  # counted once per VIP and MAC
        eng.core.punts = [claim]
        eng._answer_punts()
    assert eng.ha_counters["split_brain"] == 1
