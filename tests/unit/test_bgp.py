"""BGP without a network: the [bgp] table, bird.conf (checked by BIRD's
own parser when it is installed), BIRD's control-socket replies, what is
announced when, and how the status reads."""

import io
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyfwd.control import config
from pyfwd.control.bgp import BgpOptions, announceable
from pyfwd.control.bgp.birdsock import (parse_protocols, parse_routes,
                                        read_reply)
from pyfwd.control.bgp.render import render
from pyfwd.control.bgp.text import status_rows
from pyfwd.control import metrics
from pyfwd.errors import ConfigError

BGP = {"local_as": 65001, "peer": [{"address": "10.9.0.1", "as": 65000}]}
BASE = """
[engine]
iface = "eth0"
[[vip]]
address = "10.0.0.100"
port = 80
[[vip.real]]
address = "10.0.0.11"
"""


def test_the_issues_table_is_accepted_with_its_defaults():
    cfg = config.parse(BASE + """
[bgp]
local_as = 65001
router_id = "10.0.0.2"
[[bgp.peer]]
address = "10.0.0.1"
as = 65000
""")
    b = cfg.bgp
    assert (b.enabled, b.local_as, b.router_id, b.hold_time) == \
        (True, 65001, "10.0.0.2", 9)
    assert [(p.address, p.asn) for p in b.peers] == [("10.0.0.1", 65000)]
    assert not config.parse(BASE).bgp.enabled


@pytest.mark.parametrize("table, says", [
    ({"peer": BGP["peer"]}, "bgp.local_as: missing"),
    ({"local_as": 0, "peer": BGP["peer"]}, "bgp.local_as = 0"),
    ({"local_as": 65001}, "bgp.peer: missing"),
    ({**BGP, "router_id": "me"}, "bgp.router_id = 'me'"),
    ({**BGP, "hold_time": 2}, "bgp.hold_time = 2"),
    ({**BGP, "hold": 9}, "bgp.hold: unknown key"),
    ({**BGP, "local_as": "65001"}, "bgp.local_as = '65001': expected an "
     "integer"),
    ({"local_as": 1, "peer": [{"address": "x", "as": 1}]},
     "bgp.peer[0].address = 'x'"),
    ({"local_as": 1, "peer": [{"address": "10.0.0.1"}]},
     "bgp.peer[0].as: missing"),
    ({"local_as": 1, "peer": [{"address": "10.0.0.1", "as": 2}] * 2},
     "bgp.peer[1].address = '10.0.0.1': given twice"),
])
def test_bad_tables_are_refused_naming_the_key(table, says):
    with pytest.raises(ConfigError, match=None) as e:
        BgpOptions.from_dict(table)
    assert says in str(e.value)


def test_bird_conf_announces_exactly_the_vips_to_every_peer():
    o = BgpOptions.from_dict({**BGP, "hold_time": 6, "peer": [
        *BGP["peer"], {"address": "fd00::1", "as": 65000}]})
    text = render(o, "10.9.0.2", ["10.0.0.100", "fd00::100"])
    assert "router id 10.9.0.2;" in text
    assert "route 10.0.0.100/32 blackhole;" in text
    assert "route fd00::100/128 blackhole;" in text
    assert "neighbor 10.9.0.1 as 65000;" in text
    assert "hold time 6;" in text and "keepalive time 2;" in text
    assert 'export where proto = "pyfwd_vips6";' in text
    assert "protocol kernel" not in text    # the node's routes untouched
    if shutil.which("bird"):
        path = "/tmp/pyfwd-test-bird.conf"
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run(["bird", "-p", "-c", path], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr


def test_birds_replies_are_read_as_birdc_reads_them():
    raw = (b"2002-Name       Proto      Table      State  Since  Info\n"
           b"1002-device1    Device     ---        up     14:21:11.447  \n"
           b" pyfwd_vips4 Static     master4    up     14:21:11.447  \n"
           b" peer1      BGP        ---        up     14:21:12  Established\n"
           b" peer2      BGP        ---        start  14:21:11.447  Active"
           b"        Socket: Connection refused\n"
           b"0000 \n")
    code, lines = read_reply(io.BytesIO(raw))
    assert code == 0
    p = parse_protocols(lines)
    assert p["peer1"]["info"] == "Established"
    assert p["peer2"]["info"].split()[0] == "Active"
    assert p["pyfwd_vips4"]["state"] == "up"
    code, lines = read_reply(io.BytesIO(
        b"1007-Table master4:\n 10.0.0.100/32  blackhole [pyfwd_vips4 "
        b"14:21:11.447] * (200)\n0000 \n"))
    assert parse_routes(lines) == ["10.0.0.100/32"]
    assert read_reply(io.BytesIO(b"9001 No valid tables\n"))[0] == 9001


def vip(address, mode, *reals):
    return {"vip": address, "mode": mode, "reals": [
        {"real": k, "weight": w, "scheduled": ok} for k, w, ok in reals]}


def test_a_vip_is_announced_only_with_a_real_to_take_new_flows():
    show = [vip("10.0.0.100:80/tcp", "dr", ("10.0.0.11", 1, True)),
            vip("10.0.0.100:443/tcp", "dr", ("10.0.0.11", 1, True)),
            # drained, or its MAC unknown, or down: no new flows
            vip("10.0.0.53:53/udp", "dr", ("10.0.0.12", 0, True),
                ("10.0.0.13", 1, False)),
            vip("[fd00::100]:80/tcp", "nat", ("fd00::11", 1, True)),
            vip("10.0.0.80:80/tcp", "l7", ("10.0.0.11", 1, True))]
    assert announceable(show) == ["10.0.0.100", "fd00::100"]
    assert announceable(show, l7_up=True) == ["10.0.0.80", "10.0.0.100",
                                              "fd00::100"]
    assert announceable(show, active=False) == []       # standby
    assert announceable(show, alive=False) == []        # a loop died
    # the fallback's row, when it is in, counts as a real
    fb = vip("10.0.0.90:80/tcp", "dr", ("10.0.0.11", 1, False),
             ("10.0.0.50:80", 1, True))
    assert announceable([fb]) == ["10.0.0.90"]


def test_status_reads_in_ctl_and_in_metrics():
    b = {"local_as": 65001, "router_id": "10.9.0.2", "hold_time": 9,
         "daemon": "running", "restarts": 0, "announced": ["10.0.0.100/32"],
         "sessions": [{"peer": "10.9.0.1", "as": 65000, "state":
                       "Established", "info": "",
                       "exported": ["10.0.0.100/32"]},
                      {"peer": "10.9.0.3", "as": 65000, "state": "Active",
                       "info": "Socket: Connection refused",
                       "exported": []}]}
    rows = dict(status_rows(b)[:2])
    assert "announcing 10.0.0.100/32" in rows["bgp"]
    assert rows["bgp peer"] == ("10.9.0.1 AS 65000 Established, 1 prefix "
                                "exported")
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(
               metrics.render({"bgp": b}))
           for s in fam.samples}
    peer1 = (("peer", "10.9.0.1"), ("peer_as", "65000"))
    peer3 = (("peer", "10.9.0.3"), ("peer_as", "65000"))
    assert got[("pyfwd_bgp_session_up", peer1)] == 1
    assert got[("pyfwd_bgp_session_up", peer3)] == 0
    assert got[("pyfwd_bgp_session_state", peer3)] == 3
    assert got[("pyfwd_bgp_announced", (("prefix", "10.0.0.100/32"),))] == 1
    assert got[("pyfwd_bgp_daemon_restarts_total", ())] == 0


def test_check_config_has_bird_parse_what_pyfwd_renders():
    from pyfwd.control.bgp.speaker import check_config
    o = BgpOptions.from_dict({**BGP, "peer": [
        *BGP["peer"], {"address": "fd00::1", "as": 4200000000}]})
    note = check_config(o, {"10.0.0.100", "fd00::100"})
    if shutil.which("bird"):
        assert note == "bgp: AS 65001, 2 peer(s); BIRD accepts its " \
            "configuration"
    else:
        assert "not checked by BIRD" in note
    assert check_config(BgpOptions(), {"10.0.0.100"}) is None


class FakeSock:
    def __init__(self):
        self.replies = {}

    def call(self, command):
        return 0, self.replies.get(command, [])


class FakeBird:
    def __init__(self):
        self.texts, self.sock, self.restarts = [], FakeSock(), 0

    def start(self, text):
        self.texts.append(text)

    def configure(self, text):
        self.texts.append(text)

    def running(self):
        return True

    def stop(self):
        self.texts.append(None)


def test_the_speaker_tells_bird_only_changes_and_reads_its_sessions():
    from pyfwd.control.bgp import BgpSpeaker
    bird = FakeBird()
    sp = BgpSpeaker(BgpOptions.from_dict({**BGP, "router_id": "10.9.0.2"}),
                    "eth0", bird=bird)
    sp.start()
    assert "route" not in bird.texts[0].split("protocol bgp")[0].split(
        "protocol static pyfwd_vips4")[1]           # nothing at start
    assert sp.sync(["10.0.0.100"]) and not sp.sync(["10.0.0.100"])
    assert "route 10.0.0.100/32 blackhole;" in bird.texts[-1]
    assert len(bird.texts) == 2
    bird.sock.replies = {
        "show protocols": ["Name Proto Table State Since Info",
                           "peer1 BGP --- up 14:21:12 Established"],
        "show route export peer1": ["Table master4:",
                                    "10.0.0.100/32 unicast [pyfwd_vips4]"]}
    st = sp.status()
    assert st["announced"] == ["10.0.0.100/32"]
    assert st["sessions"] == [{"peer": "10.9.0.1", "as": 65000,
                               "state": "Established", "info": "",
                               "exported": ["10.0.0.100/32"]}]
    assert sp.sync([]) and "route" not in bird.texts[-1].split(
        "protocol bgp")[0].split("protocol static pyfwd_vips4")[1]
    sp.stop()
    assert bird.texts[-1] is None and sp.status()["daemon"] == "down"
