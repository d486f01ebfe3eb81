"""control.liveness without root: heartbeats judged with a fake clock, the
engine's parts gathered, `status` failing with what is not alive."""

import threading

import pytest

from pyfwd.control.engine import Engine
from pyfwd.control.liveness import (CONTROL_STALL, LOOP_STALL,
                                    EngineLiveness, Liveness, engine_parts)
from pyfwd.control.report import Report
from pyfwd.errors import PyfwdError
from pyfwd.model import Real, Service, Vip


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def loop(name="pyfwd-xsk-q0", beats=0, running=True, ended=None):
    return {"name": name, "running": running, "beats": beats, "ended": ended}


def control(beats=0, running=True):
    return {"name": "pyfwd-control", "running": running, "beats": beats}


def test_moving_heartbeats_are_alive_a_still_one_is_stalled():
    clock = Clock()
    live = Liveness(clock=clock)
    assert live.problems([loop(beats=1)], control(1)) == []
    clock.now += 5
    # both moved since the last look, however long ago it was
    assert live.problems([loop(beats=9)], control(7)) == []
    clock.now += LOOP_STALL - 0.1
    assert live.problems([loop(beats=9)], control(7)) == []
    clock.now += 0.5
    [p] = live.problems([loop(beats=9)], control(7))
    assert p == ("data-plane loop pyfwd-xsk-q0: stalled, no heartbeat for "
                 "2.4 s (more than 2 s)")
    clock.now += 1
    assert live.problems([loop(beats=10)], control(7)) == []


def test_the_control_thread_has_its_own_threshold():
    clock = Clock()
    live = Liveness(clock=clock)
    live.problems([], control(3))
    clock.now += CONTROL_STALL - 1
    assert live.problems([loop(beats=1)], control(3)) == []
    clock.now += 2
    assert live.problems([loop(beats=2)], control(3)) == [
        f"control thread pyfwd-control: stalled, no heartbeat for "
        f"{CONTROL_STALL + 1:.1f} s (more than {CONTROL_STALL:g} s)"]


def test_an_ended_part_is_named_with_why():
    live = Liveness(clock=Clock())
    assert live.problems([loop(beats=5, running=False,
                               ended="Operation canceled"),
                          loop("pyfwd-xsk-q1", 5)],
                         control(running=False)) == [
        "data-plane loop pyfwd-xsk-q0: has ended (Operation canceled)",
        "control thread pyfwd-control: has ended"]


def test_nothing_started_nothing_to_judge_and_gone_parts_are_forgotten():
    clock = Clock()
    live = Liveness(clock=clock)
    assert live.problems([], None) == []
    live.problems([loop(beats=1)], None)
    live.problems([], None)                 # stopped: forgotten
    clock.now += 60
    assert live.problems([loop(beats=1)], None) == []     # a new start


class FakeXsk:
    def __init__(self, loops):
        self._loops = loops

    def loops(self):
        return self._loops


def test_engine_parts():
    t = threading.Thread(name="pyfwd-control")
    assert engine_parts(None, None, 0) == ([], None, None)
    loops, ctl, punts = engine_parts(FakeXsk([loop()]), t, 42)
    assert loops == [loop()] and punts is None
    assert ctl == {"name": "pyfwd-control", "running": False, "beats": 42}


def test_a_stuck_punt_thread_is_not_alive():
    """ARP for the VIPs is answered there: a punt thread that stopped
    beating fails status (and keepalived's check) as a loop does."""
    from pyfwd.control.puntthread import PuntThread
    clock = Clock()
    live = Liveness(clock=clock)
    pt = PuntThread(punts=None)             # never started: not running
    pt.beats = 5
    *_, punts = engine_parts(None, None, 0, pt)
    assert punts == {"name": "pyfwd-punts", "running": False, "beats": 5}
    punts["running"] = True
    assert live.problems([], None, punts) == []
    clock.now += LOOP_STALL + 0.5
    assert live.problems([], None, punts) == [
        f"punt thread pyfwd-punts: stalled, no heartbeat for "
        f"{LOOP_STALL + 0.5:.1f} s (more than {LOOP_STALL:g} s)"]
    punts["beats"] = 6
    assert live.problems([], None, punts) == []
    punts["running"] = False
    assert live.problems([], None, punts) == [
        "punt thread pyfwd-punts: has ended"]


def test_status_fails_naming_what_is_not_alive():
    eng = Engine("eth0", [Service(Vip.parse("10.0.0.100:80/tcp"),
                                  [Real.parse("10.0.0.11")])])
    assert eng.liveness() == [] and eng.status()["vips"] == 1
    clock = Clock()
    eng.liveness = EngineLiveness(eng, Liveness(clock=clock))
    eng.xsk = FakeXsk([loop(beats=3)])
    eng._thread = threading.Thread(name="pyfwd-control")   # not running
    with pytest.raises(PyfwdError) as exc:
        Report(eng).status()
    assert str(exc.value) == ("engine not alive: control thread "
                              "pyfwd-control: has ended")
    eng._thread = None
    assert eng.status()["vips"] == 1
    clock.now += 3
    with pytest.raises(PyfwdError, match="engine not alive: data-plane "
                       "loop pyfwd-xsk-q0: stalled, no heartbeat for 3.0 s"):
        eng.status()
    eng.xsk = None
