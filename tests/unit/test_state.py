"""control.state and the engine's operator changes without root: the
state file is written atomically and read back, every ctl change is kept
and replayed over the config file (reload, restart), an edit of the same
thing in the file meanwhile is a reported conflict (the file's word
stands), show marks what ctl changed, and forget drops a change."""

import json
import os

import pytest

from pyfwd.control import config as config_mod
from pyfwd.control import ctl as fmt
from pyfwd.control.engine import Engine
from pyfwd.control.state import OperatorState, atomic_write
from pyfwd.errors import ConfigError
from pyfwd.model import Real, Service, Vip

WEB = Vip.parse("10.0.0.100:80/tcp")

CONFIG = """[[vip]]
name = "web"
address = "10.0.0.100"
port = 80

[[vip.real]]
address = "10.0.0.11"

[[vip.real]]
address = "10.0.0.12"
weight = 2
"""


class Clock:
    def __init__(self):
        self.now = 1_764_780_000.0

    def __call__(self):
        return self.now


# --- the file ----------------------------------------------------------------

def test_atomic_write_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "s.state"
    atomic_write(str(path), "one\n")
    assert path.read_text() == "one\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError):
        atomic_write(str(path), "two\n")
    assert path.read_text() == "one\n"          # the old one, whole
    assert os.listdir(tmp_path) == ["s.state"]  # no temporary left


def test_round_trip(tmp_path):
    clock = Clock()
    base = config_mod.parse(CONFIG).services
    ops = OperatorState(str(tmp_path / "s.state"), clock=clock)
    ops.admin(WEB, "10.0.0.11", "drain")
    ops.weight(WEB, "10.0.0.12", 7, base)
    ops.add_real(WEB, Real.parse("10.0.0.13@4"), base)
    ops.add_vip(Vip.parse("10.0.0.100:104/tcp"),
                {"address": "10.0.0.100", "port": 104}, base)
    ops.save("abc")
    doc = json.loads((tmp_path / "s.state").read_text())
    assert doc["version"] == 1 and doc["config_sha256"] == "abc"
    again = OperatorState.load(str(tmp_path / "s.state"))
    assert again.entries == ops.entries and again.config_sha256 == "abc"
    drain = again.entries[("10.0.0.100:80/tcp", "10.0.0.11", "admin")]
    assert (drain.what, drain.by, drain.since) == ("drain", "ctl",
                                                   clock.now)


@pytest.mark.parametrize("text,match", [
    ("{", "not JSON"),
    ('{"version": 2}', 'expected an object with "version": 1'),
    ('{"version": 1, "changes": [{"vip": "10.0.0.100:80/tcp", '
     '"real": "10.0.0.11", "what": "drian"}]}', r"changes\[0\].what"),
    ('{"version": 1, "changes": [{"vip": "nope", "real": null, '
     '"what": "del-vip"}]}', "vip 'nope'"),
    ('{"version": 1, "changes": [{"vip": "10.0.0.100:80/tcp", '
     '"what": "drain"}]}', r"changes\[0\].real"),
])
def test_a_bad_state_file_is_named(tmp_path, text, match):
    path = tmp_path / "s.state"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"state file {path}.*{match}"):
        OperatorState.load(str(path))
    assert OperatorState.load(str(tmp_path / "none")).entries == {}


# --- replaying over the file -------------------------------------------------

def replay(ops, config):
    return ops.apply(config_mod.parse(config).services, config_mod.parse_vip)


def test_replay_and_conflicts():
    base = config_mod.parse(CONFIG).services
    ops = OperatorState()
    ops.admin(WEB, "10.0.0.11", "drain")
    ops.weight(WEB, "10.0.0.12", 7, base)
    ops.del_real(WEB, Real.parse("10.0.0.11"), base)   # drops the drain
    ops.admin(WEB, "10.0.0.12", "halt")
    services, state, notes = replay(ops, CONFIG)
    assert [str(r) for r in services[0].reals] == ["10.0.0.12@7"]
    assert state == {(WEB, "10.0.0.12"): "halt"}
    assert notes["conflicts"] == [] and len(notes["kept"]) == 3
    assert [str(r) for r in base[0].reals] == ["10.0.0.11@1", "10.0.0.12@2"]
    # someone edits the file: 10.0.0.12's weight (the same thing) and
    # 10.0.0.11's weight (what ctl removed)
    edited = CONFIG.replace("weight = 2", "weight = 3").replace(
        '"10.0.0.11"\n', '"10.0.0.11"\nweight = 5\n')
    services, state, notes = replay(ops, edited)
    assert [str(r) for r in services[0].reals] == ["10.0.0.11@5",
                                                   "10.0.0.12@3"]
    assert state == {(WEB, "10.0.0.12"): "halt"}    # no conflict there
    assert len(notes["conflicts"]) == 2
    assert any("weight 7: not applied, the file now says 10.0.0.12@3, it "
               "said 10.0.0.12@2 then" in c for c in notes["conflicts"])
    assert any("del-real: not applied" in c for c in notes["conflicts"])
    assert ops.marks(WEB, "10.0.0.12")[0]["conflict"].startswith(
        "the file now says")
    # the real leaves the file: the halt no longer applies, is kept
    gone = CONFIG[:CONFIG.index("[[vip.real]]\naddress = \"10.0.0.12\"")]
    services, state, notes = replay(ops, gone)
    assert state == {}
    assert any("halt: not applied, no longer applies: VIP web has no real "
               "10.0.0.12" in c for c in notes["conflicts"])
    assert notes["kept"] == ["10.0.0.100:80/tcp 10.0.0.11: del-real"]
    assert ("10.0.0.100:80/tcp", "10.0.0.12", "admin") in ops.entries


def test_changes_undone_by_ctl_leave_no_entry():
    base = config_mod.parse(CONFIG).services
    ops = OperatorState()
    ops.admin(WEB, "10.0.0.11", "drain")
    ops.admin(WEB, "10.0.0.11", "online")
    ops.weight(WEB, "10.0.0.12", 9, base)
    ops.weight(WEB, "10.0.0.12", 2, base)           # the file's again
    ops.add_real(WEB, Real.parse("10.0.0.13"), base)
    ops.weight(WEB, "10.0.0.13", 4, base)           # still an add-real
    assert [c.what for c in ops.entries.values()] == ["add-real"]
    ops.del_real(WEB, Real.parse("10.0.0.13@4"), base)
    ops.del_real(WEB, Real.parse("10.0.0.11"), base)
    ops.add_real(WEB, Real.parse("10.0.0.11@1"), base)
    assert ops.entries == {}


def test_added_and_removed_vips_replay():
    base = config_mod.parse(CONFIG).services
    ops = OperatorState()
    dicom = Vip.parse("10.0.0.100:104/tcp")
    spec = {"name": "dicom", "address": "10.0.0.100", "port": 104,
            "real": [{"address": "10.0.0.13"}]}
    ops.add_vip(dicom, spec, base)
    ops.admin(dicom, "10.0.0.13", "drain")
    services, state, notes = replay(ops, CONFIG)
    assert [s.label for s in services] == ["web", "dicom"]
    assert state == {(dicom, "10.0.0.13"): "drain"}
    ops.del_vip(WEB, base)
    services, state, _ = replay(ops, CONFIG)
    assert [s.label for s in services] == ["dicom"]
    # the file now defines dicom otherwise: a conflict, the file's stands
    other = CONFIG + ('\n[[vip]]\nname = "dicom"\naddress = "10.0.0.100"\n'
                      'port = 104\n')
    services, state, notes = replay(ops, other)
    assert [len(s.reals) for s in services if s.label == "dicom"] == [0]
    assert any("add-vip: not applied, the file now has this VIP" in c
               for c in notes["conflicts"])


# --- the engine: reload, restart, show, forget -------------------------------

def engine_with(tmp_path, config=CONFIG):
    path = tmp_path / "pyfwd.toml"
    path.write_text(config)
    return Engine("eth0", config_mod.load(str(path)).services,
                  config_path=str(path)), path


def test_a_drain_survives_reload_and_restart(tmp_path):
    eng, path = engine_with(tmp_path)
    eng.drain("web", "10.0.0.11")
    eng.set_weight("web", "10.0.0.12", 5)
    eng.add_real("web", "10.0.0.13@3")
    saved = json.loads((tmp_path / "pyfwd.toml.state").read_text())
    assert [c["what"] for c in saved["changes"]] == ["add-real", "weight",
                                                    "drain"]
    summary = eng.reload()
    assert eng.state == {(WEB, "10.0.0.11"): "drain"}
    assert [str(r) for r in eng.service("web").reals] == [
        "10.0.0.11@1", "10.0.0.12@5", "10.0.0.13@3"]
    assert summary["changed"] == [] and len(summary["operator_changes"]) == 3
    assert path.read_text() == CONFIG              # the operator's own
    again, _ = engine_with(tmp_path)                # a restart
    assert again.state == {(WEB, "10.0.0.11"): "drain"}
    assert [str(r) for r in again.service("web").reals] == [
        "10.0.0.11@1", "10.0.0.12@5", "10.0.0.13@3"]


def test_an_edit_meanwhile_is_reported_not_overwritten(tmp_path, caplog):
    eng, path = engine_with(tmp_path)
    eng.set_weight("web", "10.0.0.12", 5)
    path.write_text(CONFIG.replace("weight = 2", "weight = 4"))
    summary = eng.reload()
    assert [str(r) for r in eng.service("web").reals] == ["10.0.0.11@1",
                                                         "10.0.0.12@4"]
    assert summary["changed"] == ["web: 10.0.0.12 weight 5 -> 4"]
    assert summary["conflicts"] == [
        "10.0.0.100:80/tcp 10.0.0.12: weight 5: not applied, the file now "
        "says 10.0.0.12@4, it said 10.0.0.12@2 then; `pyfwd ctl forget "
        "10.0.0.100:80/tcp 10.0.0.12` drops it"]
    assert "operator change" in caplog.text
    assert "conflicts: 10.0.0.100:80/tcp 10.0.0.12: weight 5" in \
        fmt.format_reload(summary)
    assert [c["conflict"] for c in eng.operator_changes()] == [
        "the file now says 10.0.0.12@4, it said 10.0.0.12@2 then"]
    assert eng.forget("web", "10.0.0.12") == [
        "10.0.0.100:80/tcp 10.0.0.12: weight 5"]
    assert eng.operator_changes() == []
    with pytest.raises(ConfigError, match="forget: no change of web"):
        eng.forget("web", "10.0.0.12")


def test_forget_puts_back_what_the_file_says(tmp_path):
    eng, _ = engine_with(tmp_path)
    eng.halt("web", "10.0.0.11")
    eng.del_real("web", "10.0.0.12")
    eng.forget("web", "all")
    assert eng.state == {}
    assert [str(r) for r in eng.service("web").reals] == ["10.0.0.11@1",
                                                         "10.0.0.12@2"]


def test_show_marks_what_ctl_changed(tmp_path):
    from pyfwd.control.report import Report
    from types import SimpleNamespace
    eng, _ = engine_with(tmp_path)
    eng.changes.operator._clock = lambda: 1_764_780_003.0
    eng.drain("web", "10.0.0.11")
    eng.core = SimpleNamespace(real_stats=dict, ids=SimpleNamespace(
        lookup=lambda vip, key: None))
    eng.tables = SimpleNamespace(unscheduled={})
    vips = Report(eng).show()
    marks = {r["real"]: r["changed"] for r in vips[0]["reals"]}
    assert marks == {"10.0.0.11": [{"by": "ctl", "what": "drain",
                                    "since": 1_764_780_003.0}],
                     "10.0.0.12": []}
    text = fmt.format_show(vips)
    assert "drain*" in text
    assert "  * 10.0.0.11: drain by ctl since 2025-12-03 16:40:03 UTC" in text
    assert fmt.format_changes(eng.operator_changes()) == (
        "10.0.0.100:80/tcp 10.0.0.11: drain by ctl since 2025-12-03 "
        "16:40:03 UTC")


def test_without_a_config_file_changes_stay_in_memory(tmp_path):
    eng = Engine("eth0", [Service(WEB, [Real.parse("10.0.0.11")])])
    eng.drain(str(WEB), "10.0.0.11")
    assert eng.changes.operator.path is None
    assert [c["what"] for c in eng.operator_changes()] == ["drain"]
    state = tmp_path / "cli.state"
    eng = Engine("eth0", [Service(WEB, [Real.parse("10.0.0.11")])],
                 state_file=str(state))
    eng.drain(str(WEB), "10.0.0.11")
    again = Engine("eth0", [Service(WEB, [Real.parse("10.0.0.11")])],
                   state_file=str(state))
    assert again.state == {(WEB, "10.0.0.11"): "drain"}


def test_a_change_the_file_now_makes_is_absorbed():
    base = config_mod.parse(CONFIG).services
    ops = OperatorState()
    ops.weight(WEB, "10.0.0.12", 7, base)
    services, _, notes = replay(ops, CONFIG.replace("weight = 2",
                                                    "weight = 7"))
    assert [str(r) for r in services[0].reals] == ["10.0.0.11@1",
                                                   "10.0.0.12@7"]
    assert notes["absorbed"] == ["10.0.0.100:80/tcp 10.0.0.12: weight 7 "
                                 "(the file now says the same (10.0.0.12@7))"]
    assert ops.entries == {}


def test_engine_state_file_key(tmp_path):
    path = tmp_path / "pyfwd.toml"
    path.write_text('[engine]\nstate_file = "ops.json"\n\n' + CONFIG)
    cfg = config_mod.load(str(path))
    assert cfg.state_file == "ops.json"
    eng = Engine("eth0", cfg.services, config_path=str(path),
                 state_file=cfg.state_file)
    eng.halt("web", "10.0.0.12")
    assert json.loads((tmp_path / "ops.json").read_text())["changes"][0][
        "what"] == "halt"
    with pytest.raises(ConfigError, match="engine.state_file = 1"):
        config_mod.parse("[engine]\nstate_file = 1\n" + CONFIG)
