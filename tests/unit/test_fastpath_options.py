"""The fast path's options: `pyfwd start --fastpath`, [engine] fastpath,
and the backend it needs (docs/fastpath.md).  No root: the data path
itself is tests/cases/test_fastpath_cases.py's and tests/e2e's."""

import pytest
from click.testing import CliRunner

from pyfwd.cli.main import cli
from pyfwd.control import config as config_mod
from pyfwd.control.startup import open_backend
from pyfwd.dataplane import fastpath
from pyfwd.errors import ConfigError

VIP = """
[[vip]]
address = "10.0.0.100"
port = 80
real = [{ address = "10.0.0.11" }]
"""


def test_the_config_key_is_read_and_checked():
    assert config_mod.parse(VIP).fastpath == "off"
    assert config_mod.parse(f'[engine]\nfastpath = "xdp"\n{VIP}'
                            ).fastpath == "xdp"
    with pytest.raises(ConfigError) as exc:
        config_mod.parse(f'[engine]\nfastpath = "tc"\n{VIP}')
    assert "engine.fastpath = 'tc': expected one of off, xdp" in \
        str(exc.value)
    assert fastpath.MODES == ("off", "xdp")


def test_start_offers_the_option():
    out = CliRunner().invoke(cli, ["start", "--help"]).output
    assert "--fastpath [off|xdp]" in out


def test_the_raw_socket_backend_is_refused_before_anything_opens():
    with pytest.raises(ConfigError) as exc:
        open_backend("afpacket", core=None, ifindex=1, ifindex2=0, queues=1,
                     options={"fastpath": "xdp"})
    assert "fastpath xdp: needs the AF_XDP backend" in str(exc.value)
