"""Where pyfwd start keeps ctl's changes when --state-file is not given:
[engine] state_file, else under systemd's StateDirectory=
($STATE_DIRECTORY, which the units set and no --state-file overrides)
<config file's stem>.state, else `<config>.state` beside the config file
(control.changes.state_path).  No root, no engine: `start` is run up to
the engine, which a fake takes the place of."""

import pytest
from click.testing import CliRunner

from pyfwd.cli import balancer
from pyfwd.control.changes import state_path

CONFIG = """[engine]
iface = "lo"
{engine}
[[vip]]
address = "10.0.0.100"
port = 80
[[vip.real]]
address = "10.0.0.11"
"""


def test_the_flag_wins():
    assert balancer.state_file_of("ops.state", "/etc/pyfwd/a.toml",
                                  "/srv/a.state",
                                  {"STATE_DIRECTORY": "/var/lib/pyfwd"}) \
        .endswith("/ops.state")


def test_engine_state_file_wins_over_the_state_directory():
    assert balancer.state_file_of(None, "/etc/pyfwd/a.toml", "ops.json",
                                  {"STATE_DIRECTORY": "/var/lib/pyfwd"}) \
        == "ops.json"


def test_under_systemd_the_state_directory_holds_it():
    env = {"STATE_DIRECTORY": "/var/lib/pyfwd"}
    assert balancer.state_file_of(None, "/etc/pyfwd/pacs.toml", None,
                                  env) == "/var/lib/pyfwd/pacs.state"
    env = {"STATE_DIRECTORY": "/var/lib/pyfwd:/var/lib/other"}
    assert balancer.state_file_of(None, "/etc/pyfwd/pacs.toml", None,
                                  env) == "/var/lib/pyfwd/pacs.state"


def test_otherwise_beside_the_config_file():
    assert balancer.state_file_of(None, "/etc/pyfwd/pacs.toml", None,
                                  {}) is None
    assert state_path("/etc/pyfwd/pacs.toml", None) == \
        "/etc/pyfwd/pacs.toml.state"
    # --vip/--real: no config file, nothing kept, StateDirectory or not
    assert balancer.state_file_of(None, None, None,
                                  {"STATE_DIRECTORY": "/var/lib/pyfwd"}) \
        is None


@pytest.mark.parametrize("engine,flag,env,where", [
    ("", [], {}, "{dir}/pacs.toml.state"),
    ("", [], {"STATE_DIRECTORY": "{dir}/lib"}, "{dir}/lib/pacs.state"),
    ('state_file = "ops.json"', [], {"STATE_DIRECTORY": "{dir}/lib"},
     "{dir}/ops.json"),
    ('state_file = "ops.json"', ["--state-file", "{dir}/f.state"],
     {"STATE_DIRECTORY": "{dir}/lib"}, "{dir}/f.state"),
])
def test_pyfwd_start_hands_the_engine_that_path(tmp_path, monkeypatch,
                                                engine, flag, env, where):
    config = tmp_path / "pacs.toml"
    config.write_text(CONFIG.format(engine=engine))
    ran = {}

    def run(cfg, ports, web, options):
        ran["path"] = state_path(options["config_path"],
                                 options["state_file"])

    monkeypatch.setattr(balancer, "_run", run)
    monkeypatch.setattr(balancer.os, "geteuid", lambda: 0)
    monkeypatch.setattr(balancer, "logging_setup", lambda level: None)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(dir=tmp_path))
    result = CliRunner().invoke(balancer.start, [
        "--config", str(config)] + [a.format(dir=tmp_path) for a in flag])
    assert result.exit_code == 0, result.output
    assert ran["path"] == where.format(dir=tmp_path)
