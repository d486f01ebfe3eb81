"""The cffi boundary, the core's tables and the XDP object."""

import ipaddress
import os
import re
from pathlib import Path

import pytest

from pyfwd.dataplane import native as _native
from pyfwd.dataplane import tables
from pyfwd.dataplane.core import Core
from pyfwd.dataplane.io import Endpoint
from pyfwd.errors import ConfigError, DataplaneError
from pyfwd.model import MODES, SCHEDULERS, Vip

from ..cases import defs

ROOT = Path(__file__).resolve().parents[2]


def test_boundary_header_is_the_cdef():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "build_ffi", ROOT / "csrc" / "build_ffi.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cdef = mod.boundary_cdef()
    assert "pyfwd_core_burst" in cdef and "#include" not in cdef
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


def test_verdict_names_are_the_header_codes():
    for code, name in enumerate(_native.VERDICTS):
        assert getattr(_native.lib, f"PYFWD_VERDICT_{name.upper()}") == code
    assert len(_native.VERDICTS) == _native.lib.PYFWD_VERDICT_MAX


def test_mode_and_scheduler_codes_are_the_header_codes():
    lib = _native.lib
    assert tables.MODE_CODE == {"dr": lib.PYFWD_MODE_DR,
                                "nat": lib.PYFWD_MODE_NAT,
                                "snat": lib.PYFWD_MODE_SNAT,
                                "tun": lib.PYFWD_MODE_TUN}
    assert set(tables.MODE_CODE) == set(MODES) - {"l7"}   # l7: HAProxy
    assert set(tables.RING_INDEX) == set(SCHEDULERS)
    assert set(tables.RING_INDEX.values()) == {
        lib.PYFWD_SCHED_HASH, lib.PYFWD_SCHED_SEQ, lib.PYFWD_SCHED_SRC_HASH,
        lib.PYFWD_SCHED_LEAST}


def test_counter_names_are_the_header_fields():
    counters = (_native.TABLE_COUNTERS + _native.FLOW_COUNTERS
                + _native.CSUM_COUNTERS + _native.FAST_COUNTERS
                + _native.IO_COUNTERS)
    stats = Core(flows=64).stats()
    assert list(stats) == ["frames", "bytes", "verdict", "reason",
                           *counters]
    assert list(stats["verdict"]) == list(_native.VERDICTS)
    assert list(stats["reason"]) == list(_native.REASONS)
    # Every field is a uint64_t counter the C side sums as an array.
    assert _native.ffi.sizeof("struct pyfwd_stats") == 8 * (
        2 + len(_native.VERDICTS) + len(_native.REASONS) + len(counters))
    # the loop's counters, and each worker's share of the SNAT ports
    assert set(_native.QUEUE_COUNTERS) - {"snat_ports_pool"} < \
        set(_native.IO_COUNTERS)
    assert "snat_ports_pool" in _native.FLOW_COUNTERS
    assert _native.CSUM_COUNTERS == ("csum_completed", "csum_bad")
    assert _native.REAL_COUNTERS == ("frames", "bytes", "flows_new",
                                     "active", "inactive")


def test_endpoints_cross_as_pyfwd_endpoint():
    ffi = _native.ffi
    assert ffi.sizeof("struct pyfwd_endpoint") == 20
    arr = _native.endpoint_array([
        Endpoint(ipaddress.ip_address("192.168.50.11"), 8080, "tcp"),
        Vip.parse("[fd00::100]:53/udp")])
    assert bytes(arr[0].addr)[:4] == bytes([192, 168, 50, 11])
    assert (arr[0].family, arr[0].proto, arr[0].port) == (
        _native.lib.PYFWD_AF_INET, 6, 8080)
    assert (arr[1].family, arr[1].proto, arr[1].port) == (
        _native.lib.PYFWD_AF_INET6, 17, 53)


def test_protocol_numbers_are_written_once():
    """classify.c and the steering programs read frames with proto.h's
    names: neither retypes an ICMP or NDP type, an extension header or a
    kernel protocol constant."""
    for path in (ROOT / "csrc" / "classify.c",
                 ROOT / "csrc" / "bpf" / "steer.bpf.c"):
        code = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
        for pattern in (r"\b13[56]\b", r"[=!]= ?(3|11|43|44|60)\b",
                        r"\bETH_P_", r"\bIPPROTO_", r"0x0800|0x86dd"):
            assert not re.search(pattern, code), (path.name, pattern)


def test_no_backend_checks_no_slot_for_unfinished_checksums():
    # pyfwd_io_csum_slots: decided when a backend opens (tests/e2e/test_dr
    # sees the lab's veth slot), none before
    assert _native.lib.pyfwd_io_csum_slots(Core(flows=64).ctx) == 0
