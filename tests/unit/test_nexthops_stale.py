"""One failed neighbour refresh never drops a real's flows (issue 16): a
known MAC is kept, and logged once, until its next hop has been unanswered
for `stale` seconds, then dropped and logged.  Fake routes, look-ups and
clock; the [engine] neighbour_stale key and start's --neighbour-stale."""

import ipaddress
import logging

import pytest

from pyfwd.control import config
from pyfwd.control.nexthops import NEIGHBOUR_STALE, NextHops, check_stale
from pyfwd.errors import ConfigError

A = ipaddress.ip_address
R1, R2 = A("10.0.0.11"), A("10.1.0.11")
MAC1, MAC2 = b"\x02\x00\x00\x00\x01\x11", b"\x02\x00\x00\x00\x01\x12"


class World:
    """Fake kernel: routes {addr: (oif, hop)}, answers {hop: MAC | None},
    a clock."""

    def __init__(self, stale=60):
        self.now = 1000.0
        self.routes = {R1: ("eth0", R1), R2: ("eth0", R2)}
        self.answers = {R1: MAC1, R2: MAC2}
        self.hops = NextHops(["eth0", "eth1"], stale=stale,
                             route=lambda a: self.routes[a],
                             arp_lookup=self.lookup, ndp_lookup=self.lookup,
                             clock=lambda: self.now)

    def lookup(self, ifname, ips):
        return {ip: self.answers.get(ip) for ip in ips}

    def refresh(self, after=5.0):
        """The engine's periodic refresh, `after` seconds on."""
        self.now += after
        return self.hops.apply(self.hops.find([R1, R2]))


def said(caplog):
    return [r.getMessage() for r in caplog.records]


def test_a_silent_neighbour_keeps_its_mac_until_stale(caplog):
    w = World(stale=60)
    assert w.refresh()
    w.answers[R1] = None
    with caplog.at_level(logging.INFO, logger="pyfwd"):
        for _ in range(12):     # 0 to 55 s unanswered: kept, no change
            assert not w.refresh()
            assert w.hops.macs[R1] == MAC1 and w.hops.why[R1] is None
        assert w.hops.note(R1) == "MAC kept (unanswered for 55 s)"
        assert w.hops.note(R2) is None
        assert said(caplog) == [
            "real 10.0.0.11: MAC unknown: no ARP answer on eth0: MAC "
            "02:00:00:00:01:11 kept for up to 60 s"]        # once
        caplog.clear()
        assert w.refresh()      # 60 s: dropped
    assert w.hops.macs[R1] is None and w.hops.note(R1) is None
    assert w.hops.why[R1] == "MAC unknown: no ARP answer on eth0"
    assert said(caplog) == [
        "real 10.0.0.11: MAC 02:00:00:00:01:11 unanswered for 60 s "
        "(neighbour_stale 60 s): dropped",
        "real 10.0.0.11: MAC unknown: no ARP answer on eth0: not scheduled"]
    assert w.hops.macs[R2] == MAC2      # the other one never moved


def test_an_answer_within_the_grace_ends_it(caplog):
    w = World(stale=60)
    w.refresh()
    w.answers[R1] = None
    w.refresh()
    w.refresh()
    w.answers[R1] = MAC1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pyfwd"):
        assert not w.refresh()          # the same MAC: nothing to publish
    assert said(caplog) == ["real 10.0.0.11: next hop answers again (after "
                            "10 s unanswered)"]
    assert w.hops.note(R1) is None
    # a later silence starts a new grace, from its own first refresh
    w.answers[R1] = None
    for _ in range(11):
        assert not w.refresh()
    assert w.hops.macs[R1] == MAC1


def test_a_new_mac_while_kept_replaces_it():
    w = World()
    w.refresh()
    w.answers[R1] = None
    w.refresh()
    w.answers[R1] = MAC2
    assert w.refresh() and w.hops.macs[R1] == MAC2
    assert w.hops.note(R1) is None


def test_a_route_elsewhere_drops_the_mac_at_once():
    w = World()
    w.refresh()
    w.routes[R1] = ("wlan0", R1)        # no lost answer: a new path
    assert w.refresh()
    assert w.hops.macs[R1] is None
    assert w.hops.why[R1] == "route via wlan0, not eth0 or eth1"
    w.refresh()
    w.routes[R2] = ("eth1", R2)         # another of our interfaces, silent
    w.answers[R2] = None
    assert w.refresh() and w.hops.macs[R2] is None


def test_stale_zero_drops_at_the_first_silence():
    w = World(stale=0)
    w.refresh()
    w.answers[R1] = None
    assert w.refresh() and w.hops.macs[R1] is None


def test_a_neighbour_never_seen_is_not_scheduled_at_once():
    w = World()
    w.answers[R1] = None
    w.refresh()
    assert w.hops.macs[R1] is None and w.hops.note(R1) is None


@pytest.mark.parametrize("value", [-1, True, "60", 86401, float("nan")])
def test_check_stale_refuses(value):
    with pytest.raises(ConfigError, match="neighbour_stale"):
        check_stale(value)


CONFIG = """
[engine]
{extra}

[[vip]]
address = "10.0.0.100"
port = 80
real = [{{ address = "10.0.0.11" }}]
"""


def test_neighbour_stale_in_the_file_and_the_flag():
    assert config.parse(CONFIG.format(extra="")).neighbour_stale == \
        NEIGHBOUR_STALE == 60
    cfg = config.parse(CONFIG.format(extra="neighbour_stale = 12.5"))
    assert cfg.neighbour_stale == 12.5
    assert cfg.with_flags().neighbour_stale == 12.5
    assert cfg.with_flags(neighbour_stale=0).neighbour_stale == 0
    with pytest.raises(ConfigError) as e:
        config.parse(CONFIG.format(extra="neighbour_stale = -3"))
    assert str(e.value).startswith("engine.neighbour_stale = -3: expected "
                                   "seconds from 0")
    with pytest.raises(ConfigError, match=r"engine.neighbour_stale = '60': "
                       "expected a number"):
        config.parse(CONFIG.format(extra='neighbour_stale = "60"'))
    with pytest.raises(ConfigError, match="engine.neighbour_stale = True: "
                       "expected a number"):
        config.parse(CONFIG.format(extra="neighbour_stale = true"))
    with pytest.raises(ConfigError, match="--neighbour-stale = -1"):
        cfg.with_flags(neighbour_stale=-1)


def test_start_refuses_a_bad_neighbour_stale_before_root(tmp_path):
    from click.testing import CliRunner
    from pyfwd.cli.main import cli
    path = tmp_path / "pyfwd.toml"
    path.write_text(CONFIG.format(extra='iface = "eth9"'))
    r = CliRunner().invoke(cli, ["start", "--config", str(path),
                                 "--neighbour-stale", "-5"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert r.output.startswith("Error: --neighbour-stale = -5.0: expected "
                               "seconds from 0"), r.output
