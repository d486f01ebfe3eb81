"""The cffi boundary, the core's tables and the XDP object."""

import os
import re
from pathlib import Path

import pytest

from pyfwd.dataplane import native as _native
from pyfwd.dataplane.core import Core
from pyfwd.errors import ConfigError, DataplaneError
from pyfwd.model import Vip

from ..cases import defs

ROOT = Path(__file__).resolve().parents[2]


def test_boundary_header_is_the_cdef():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "build_ffi", ROOT / "csrc" / "build_ffi.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cdef = mod.boundary_cdef()
    assert "pyfwd_process_batch" in cdef and "#include" not in cdef
    # Every PYFWD_R_* the header defines has a name in the C table.
    header = (ROOT / "csrc" / "pyfwd.h").read_text()
    reasons = re.findall(r"#define PYFWD_R_(\w+) (\d+)", header)
    assert len(reasons) == _native.lib.PYFWD_R_MAX + 1   # + R_MAX itself
    for name, value in reasons:
        if name != "MAX":
            assert _native.REASONS[int(value)] == name.lower()


def test_reason_names_are_unique():
    assert len(set(_native.REASONS)) == len(_native.REASONS)
    assert "unknown" not in _native.REASONS


@pytest.mark.parametrize("kw,words", [
    ({"mac": "02:00:00:00:00"}, "six bytes"),
    ({"mac": "zz:00:00:00:00:01"}, "six bytes"),
    ({"max_frame": 70000}, "max_frame"),
    ({"max_vips": -1}, "max_vips"),
    ({"flows": True}, "flows"),
    ({"nonsense": 1}, "nonsense"),
])
def test_core_config_errors(kw, words):
    with pytest.raises(ConfigError, match=words):
        Core(**kw)


def test_publish_errors_keep_the_active_table():
    core = Core(mac=defs.LB_MAC, max_vips=2, flows=64)
    core.publish_services(defs.SERVICES[:2], defs.MACS)
    frame = bytes(defs.eth() / defs.syn())
    assert core.classify(frame).reason == "forward"
    with pytest.raises(ConfigError, match="over this core's limits"):
        core.publish_services(defs.SERVICES[:3], defs.MACS)
    with pytest.raises(ConfigError, match="listed twice"):
        core.publish_vips([defs.VIPS[0], defs.VIPS[0]])
    assert core.classify(frame).reason == "forward"
    assert core.stats()["vip_count"] == 2
    assert core.stats()["vip_generation"] == 1


def test_table_swap_changes_classification():
    core = Core(mac=defs.LB_MAC, flows=64)
    frame = bytes(defs.eth() / defs.syn())
    assert core.classify(frame).reason == "pass_not_vip"
    core.publish_vips([Vip.parse("10.0.0.100:80/tcp")])
    assert core.classify(frame).vip == 0
    core.publish_vips([Vip.parse("10.0.0.100:443/tcp")])
    assert core.classify(frame).reason == "pass_vip_other"
    core.publish_vips([Vip.parse("10.0.0.9:443/tcp"),
                       Vip.parse("10.0.0.100:80/tcp")])
    assert core.classify(frame).vip == 1
    core.publish_vips([])
    assert core.classify(frame).reason == "pass_not_vip"
    assert core.stats()["vip_generation"] == 4


def test_many_vips_hash_table():
    core = Core(max_vips=4096, flows=64)
    vips = [Vip.parse(f"10.{i // 250}.{i % 250}.1:{1000 + i % 7}/tcp")
            for i in range(4096)]
    core.publish_vips(vips)
    for i in (0, 1, 777, 4095):
        v = vips[i]
        frame = bytes(defs.eth() / defs.syn(v.port, str(v.address)))
        assert core.classify(frame).vip == i


def test_max_frame_is_configurable():
    core = Core(max_frame=128)
    big = bytes(defs.eth() / defs.syn()) + b"\0" * 100
    assert core.classify(big).reason == "drop_oversize"
    assert core.classify(big[:128]).reason != "drop_oversize"


def test_xdp_object_is_installed():
    path = _native.bpf_object_path("steer")
    assert os.path.getsize(path) > 0
    with pytest.raises(Exception, match="not installed"):
        _native.bpf_object_path("nosuch")


@pytest.mark.root
def test_xdp_object_passes_the_verifier(need_root):
    _native.bpf_object_check(_native.bpf_object_path("steer"))


@pytest.mark.root
def test_bad_bpf_object_is_a_clear_error(need_root, tmp_path):
    junk = tmp_path / "junk.o"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(DataplaneError) as exc:
        _native.bpf_object_check(str(junk))
    assert str(junk) in str(exc.value)
    assert exc.value.errno > 0
