"""The AF_XDP sizes and poll mode as the operator gives them (issue 18,
point 2b, e): [engine] frames, rx_ring, tx_ring, fill_ring, comp_ring,
poll in the file, `pyfwd start --frames --rx-ring ... --poll` over it;
a bad value is a configuration error (exit 2) naming the key, the value
and what was expected, before root is checked."""

import pytest
from click.testing import CliRunner

from pyfwd.cli.main import cli
from pyfwd.control import config
from pyfwd.dataplane.io import XskRings
from pyfwd.errors import ConfigError

VIP = """
[[vip]]
address = "10.0.0.100"
port = 80
real = [{ address = "10.0.0.11" }]
"""


def parse(engine):
    return config.parse(f"[engine]\niface = \"eth0\"\n{engine}\n{VIP}")


def test_the_defaults_keep_the_fill_ring_stocked():
    cfg = parse("")
    assert cfg.rings == XskRings() and cfg.poll == "adaptive"
    r = cfg.rings
    assert r.fill_ring == 2 * r.rx_ring
    assert r.umem_frames(1) >= r.fill_ring + r.tx_ring + r.rx_ring
    assert r.umem_frames(2) == 2 * r.umem_frames(1)


def test_the_file_sets_them():
    cfg = parse("frames = 16384\nrx_ring = 4096\ntx_ring = 1024\n"
                "fill_ring = 8192\ncomp_ring = 1024\npoll = \"adaptive\"")
    assert cfg.rings == XskRings(16384, 4096, 1024, 8192, 1024)
    assert cfg.poll == "adaptive"


@pytest.mark.parametrize("line, says", [
    ("rx_ring = 1000", "engine.rx_ring 1000: expected a power of two"),
    ("comp_ring = 32", "engine.comp_ring 32: expected a power of two from "
     "64"),
    ("frames = 1024", "engine.frames 1024: expected 6144"),
    ("tx_ring = \"big\"", "engine.tx_ring"),
    ("poll = \"spin\"", "engine.poll = 'spin': expected one of busy, "
     "adaptive"),
])
def test_a_bad_value_names_the_key(line, says):
    with pytest.raises(ConfigError, match=says):
        parse(line)


def test_flags_go_over_the_file():
    cfg = parse("fill_ring = 8192\npoll = \"adaptive\"")
    out = cfg.with_flags(rings={"rx_ring": 1024, "frames": None},
                         poll="busy")
    assert out.rings == XskRings(0, 1024, 2048, 8192, 2048)
    assert out.poll == "busy"
    assert cfg.with_flags().rings is cfg.rings
    with pytest.raises(ConfigError, match="--tx-ring 3: expected a power"):
        cfg.with_flags(rings={"tx_ring": 3})


@pytest.mark.parametrize("flags, says", [
    (("--rx-ring", "100"), "--rx-ring 100: expected a power of two from "
     "64 to 65536"),
    (("--frames", "100"), "--frames 100: expected 6144"),
    (("--poll", "spin"), "Invalid value for '--poll'"),
])
def test_start_refuses_bad_sizes_before_root(flags, says):
    r = CliRunner().invoke(cli, ["start", "--iface", "pfxk-none", "--vip",
                                 "10.0.0.100:80/tcp", "--real", "10.0.0.11",
                                 *flags], catch_exceptions=False)
    assert r.exit_code == 2 and says in r.output, r.output
    assert "Traceback" not in r.output


def test_start_says_the_new_options():
    r = CliRunner().invoke(cli, ["start", "--help"])
    for opt in ("--frames", "--rx-ring", "--tx-ring", "--fill-ring",
                "--comp-ring", "--poll"):
        assert opt in r.output
