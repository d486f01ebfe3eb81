"""dataplane.napi: busy polling's interface settings, set and put back,
and never written into a sysfs that shows another namespace's device (an
engine whose thread entered a namespace by setns sees the sysfs of the
one it came from).  A directory stands for /sys/class/net."""

import logging

import pytest

from pyfwd.dataplane.napi import (BUSY_POLL_STATES, DEFER_HARD_IRQS,
                                  GRO_FLUSH_TIMEOUT_NS, NapiTuning,
                                  busy_poll_state)

MAC = "02:00:00:00:00:01"


@pytest.fixture
def sysfs(tmp_path):
    d = tmp_path / "eth9"
    d.mkdir()
    for name, value in (("ifindex", "7"), ("address", MAC),
                        ("napi_defer_hard_irqs", "0"),
                        ("gro_flush_timeout", "0")):
        (d / name).write_text(value + "\n")
    return tmp_path


def read(sysfs, name):
    return (sysfs / "eth9" / name).read_text().strip()


def tuning(sysfs, ifindex=7, mac=MAC):
    return NapiTuning(str(sysfs), mac=lambda _: mac,
                      ifindex=lambda _: ifindex)


def test_set_while_busy_polling_and_put_back_at_stop(sysfs):
    t = tuning(sysfs)
    assert t.apply("eth9")
    assert read(sysfs, "napi_defer_hard_irqs") == str(DEFER_HARD_IRQS)
    assert read(sysfs, "gro_flush_timeout") == str(GRO_FLUSH_TIMEOUT_NS)
    t.restore()
    assert read(sysfs, "napi_defer_hard_irqs") == "0"
    assert read(sysfs, "gro_flush_timeout") == "0"
    t.restore()                         # idempotent
    assert read(sysfs, "gro_flush_timeout") == "0"


@pytest.mark.parametrize("ifindex, mac", [(8, MAC),
                                          (7, "02:00:00:00:00:02")])
def test_another_namespaces_device_is_left_alone(sysfs, caplog, ifindex,
                                                 mac):
    t = tuning(sysfs, ifindex, mac)
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        assert not t.apply("eth9")
    assert read(sysfs, "napi_defer_hard_irqs") == "0"
    assert "another network namespace's eth9" in caplog.text
    assert "echo 2 >" in caplog.text     # how to set them by hand
    assert t.saved == {}


def test_no_such_device_is_a_warning_not_an_error(sysfs, caplog):
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        assert not tuning(sysfs).apply("eth8")
    assert "not set" in caplog.text


# --- whether busy polling engages (the sockets' NAPI ids) --------------

@pytest.mark.parametrize("asked, ids, state", [
    (False, [7, 7], "off"),                 # not asked: ids do not matter
    (True, [], "waiting"),                  # no socket read yet
    (True, [None, None], "waiting"),        # no frame yet
    (True, [0, None], "waiting"),           # one side not known yet
    (True, [0, 0], "not engaged"),          # veth, copy mode
    (True, [0], "not engaged"),
    (True, [8193, 0], "engaged"),           # one NAPI to drive is enough
    (True, [None, 8193], "engaged"),
])
def test_busy_poll_state(asked, ids, state):
    assert busy_poll_state(asked, ids) == state
    assert state in BUSY_POLL_STATES


def test_busy_poll_state_takes_any_iterable():
    assert busy_poll_state(True, iter([0, 0])) == "not engaged"
    assert busy_poll_state(True, {(0, "eth0"): 0}.values()) == "not engaged"


class _Restores:
    def __init__(self):
        self.n = 0

    def restore(self):
        self.n += 1


def test_poll_check_says_once_and_keeps_the_settings(caplog):
    """A loop whose busy polls reach no NAPI: Xsk.poll_check (the control
    thread's, every tick) warns once, and the NAPI settings stay (they
    batch the receive work; close() puts them back)."""
    from pyfwd.dataplane.io import Xsk
    xsk = Xsk(core=None)
    xsk._ifaces = ("eth0", "eth1")
    xsk._napi = _Restores()
    states = iter(["waiting", "engaged", "not engaged", "not engaged",
                   "not engaged"])
    xsk.busy_poll_state = lambda: next(states)
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        got = [xsk.poll_check() for _ in range(5)]
    assert got == ["waiting", "engaged"] + ["not engaged"] * 3
    said = [r.getMessage() for r in caplog.records
            if "cannot engage" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("eth0+eth1:")
    assert xsk._napi.n == 0


def test_xsk_status_adds_the_busy_poll_state_only_when_asked():
    from pyfwd.control.report import xsk_status
    from pyfwd.dataplane.io import XskInfo

    class E:
        xsk = type("X", (), {"busy_poll_state": lambda self: "not engaged"})()

    e = E()
    e.info = XskInfo("native", "copy", True, 1, 42)
    assert xsk_status(e)["busy_polling"] == "not engaged"
    e.info = XskInfo("native", "copy", False, 1, 42)
    assert "busy_polling" not in xsk_status(e)
    e.info = None
    assert xsk_status(e) is None
