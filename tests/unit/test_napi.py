"""dataplane.napi: busy polling's interface settings, set and put back,
and never written into a sysfs that shows another namespace's device (an
engine whose thread entered a namespace by setns sees the sysfs of the
one it came from).  A directory stands for /sys/class/net."""

import logging

import pytest

from pyfwd.dataplane.napi import (DEFER_HARD_IRQS, GRO_FLUSH_TIMEOUT_NS,
                                  NapiTuning)

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
