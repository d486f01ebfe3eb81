"""The engine's Python threads stay off the forwarding core when there is
nothing to do (issue 18): a punt drain allocates nothing, the punt thread
slows down while nothing is punted, the control thread wakes every
control.engine.TICK (or when a refresh is asked), not every 10 ms."""

import threading
import time

from scapy.layers.l2 import ARP, Ether

from pyfwd.control import engine as engine_mod
from pyfwd.control.nexthops import Refresh
from pyfwd.control.puntthread import IDLE_TICK, TICK, PuntThread
from pyfwd.dataplane.core import Core
from pyfwd.model import Service, Vip

from ..cases import defs


def who_has():
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=defs.CLIENT_MAC)
                 / ARP(op=1, psrc=defs.CLIENT4, pdst="10.0.0.100"))


def test_a_punt_drain_reuses_its_buffers():
    core = Core(mac=defs.LB_MAC, flows=1 << 10)
    core.drain_punts()
    bufs = dict(core._punt_bufs)
    for _ in range(3):
        assert core.drain_punts() == []
    assert core._punt_bufs == bufs          # the same C buffers, no new
    assert len(bufs) == 1 and all(b[0] is bufs[256][0] for b in
                                  core._punt_bufs.values())


def test_a_reused_buffer_still_hands_each_frame_whole():
    core = Core(mac=defs.LB_MAC, flows=1 << 10)
    core.publish_services([Service(Vip.parse("10.0.0.100:80/tcp"), [])],
                          {})
    frame = who_has()
    core.process([frame])
    assert core.drain_punts() == [frame]
    core.process([frame, frame])
    assert core.drain_punts() == [frame, frame]
    assert core.drain_punts() == []


def test_the_punt_thread_slows_down_while_nothing_comes_and_not_after():
    t = PuntThread(punts=None)
    pause = t.tick
    seen = []
    for _ in range(10):
        pause = t.pause_after(pause, 0)
        seen.append(pause)
    assert seen == sorted(seen) and seen[-1] == IDLE_TICK
    assert t.pause_after(IDLE_TICK, 1) == TICK
    assert TICK < IDLE_TICK <= 0.05         # ARP answered within 50 ms


def test_an_idle_punt_thread_wakes_at_most_every_idle_tick():
    class Empty:
        def answer_punts(self):
            return 0
    t = PuntThread(Empty()).start()
    try:
        time.sleep(0.5)
    finally:
        t.stop()
    # 0.5 s at TICK would be 100 rounds; at IDLE_TICK about 25
    assert 5 <= t.beats <= 40


def test_the_control_thread_ticks_every_100_ms():
    assert engine_mod.TICK >= 0.1


def test_a_refresh_asked_wakes_the_control_thread_at_once():
    lock = threading.RLock()
    refresh = Refresh(lock, period=60)
    stop = threading.Event()
    woke = []

    def control():
        t0 = time.monotonic()
        refresh.sleep(5, stop)
        woke.append(time.monotonic() - t0)
        if refresh.due():
            with lock:
                refresh.done()

    th = threading.Thread(target=control)
    th.start()
    time.sleep(0.05)
    with lock:
        assert refresh.wait(timeout=2)
    th.join(2)
    assert woke and woke[0] < 1.0


def test_sleep_says_stop():
    refresh = Refresh(threading.RLock(), period=60)
    stop = threading.Event()
    assert refresh.sleep(0.001, stop) is False
    stop.set()
    assert refresh.sleep(0.001, stop) is True
