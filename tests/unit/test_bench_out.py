"""pyfwd bench's --out is checked before anything is measured, and
matplotlib is needed only for results.png: without it the .json and .md
are written, and one line says how to get the PNG.  No root, no network."""

import json
import sys

import pytest
from click.testing import CliRunner

from pyfwd.bench import results, run
from pyfwd.bench.results import Results
from pyfwd.bench.system import BenchError
from pyfwd.cli.main import cli


def sample() -> Results:
    res = Results({"command": "pyfwd bench --only micro", "repeats": 1})
    res.add("core-dr", {"ns_per_pkt": 40.0})
    res.add("dr-xdp", {"pps": 610_000})
    return res


@pytest.fixture
def no_measuring(monkeypatch):
    """Any row measured fails the test: the check must come first."""
    def measured(*args, **kwargs):
        pytest.fail("measured before --out was checked")

    for part in ("_micro", "_pps", "_http"):
        monkeypatch.setattr(run, part, measured)


@pytest.fixture
def no_matplotlib(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails


def test_out_is_made_when_missing(tmp_path):
    out = tmp_path / "a" / "b"
    run.check_out(str(out))
    assert out.is_dir() and list(out.iterdir()) == []


@pytest.mark.parametrize("where,words", [
    ("file", "exists and is not a directory"),
    ("file/below", "cannot write the results there: Not a directory"),
])
def test_a_bad_out_is_refused_before_any_row(tmp_path, no_measuring,
                                             where, words):
    (tmp_path / "file").write_text("not a directory\n")
    out = str(tmp_path / where)
    with pytest.raises(BenchError, match=f"--out {out}: {words}"):
        run.run(out, only="micro", log=lambda m: None)


def test_the_cli_says_it_in_one_line(tmp_path, no_measuring):
    (tmp_path / "file").write_text("x\n")
    r = CliRunner().invoke(cli, ["bench", "--only", "micro", "--out",
                                 str(tmp_path / "file")])
    assert r.exit_code == 1
    assert r.output.strip() == (f"Error: --out {tmp_path / 'file'}: exists "
                                "and is not a directory")


def test_without_matplotlib_the_json_and_md_are_written(tmp_path,
                                                        no_matplotlib):
    res = sample()
    paths = results.write(res, str(tmp_path))
    assert paths == res.files == [str(tmp_path / "results.json"),
                                  str(tmp_path / "results.md")]
    assert json.loads((tmp_path / "results.json").read_text())["results"]
    assert "dr-xdp" in (tmp_path / "results.md").read_text()
    assert not (tmp_path / "results.png").exists()


def test_the_cli_says_the_png_was_skipped_and_how_to_get_it(
        tmp_path, monkeypatch, no_matplotlib):
    def fake_run(out, **kwargs):
        res = sample()
        results.write(res, out)
        return res

    monkeypatch.setattr(run, "run", fake_run)
    r = CliRunner().invoke(cli, ["bench", "--only", "micro", "--out",
                                 str(tmp_path)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert f"written: {tmp_path}/results.json, {tmp_path}/results.md" in lines
    assert ("results.png skipped: matplotlib is not installed; pip install "
            "matplotlib (or 'pyfwd[bench]'), then draw it from results.json "
            f"with: pyfwd bench --replot --out {tmp_path}") in lines


def test_replot_draws_the_png_from_the_json(tmp_path):
    pytest.importorskip("matplotlib", reason="pip install 'pyfwd[bench]'")
    results.write(sample(), str(tmp_path))
    (tmp_path / "results.png").unlink()
    r = CliRunner().invoke(cli, ["bench", "--replot", "--out",
                                 str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_replot_without_matplotlib_or_json_says_what_is_missing(
        tmp_path, monkeypatch):
    r = CliRunner().invoke(cli, ["bench", "--replot", "--out",
                                 str(tmp_path)])
    assert r.exit_code == 1
    assert "--replot: cannot read" in r.output and "results.json" in \
        r.output
    results.write(sample(), str(tmp_path))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = CliRunner().invoke(cli, ["bench", "--replot", "--out",
                                 str(tmp_path)])
    assert r.exit_code == 1
    assert r.output.strip() == ("Error: --replot needs matplotlib: pip "
                                "install matplotlib (or 'pyfwd[bench]')")
