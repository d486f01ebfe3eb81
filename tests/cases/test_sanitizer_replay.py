"""The core built standalone with ASan and UBSan, outside Python:

- the replayer runs every packet case, malformed and truncated ones
  included: no report, and the same reasons as the cffi build;
- a short libFuzzer run, seeded with the same corpus, finds no crash.

(make -C csrc replay | fuzz; needs cc with libasan/libubsan, clang with
libclang-rt-dev: tools/run installs them.)"""

import os
import subprocess
from pathlib import Path

import pytest

from pyfwd.dataplane.core import Core

from . import defs

CSRC = Path(__file__).resolve().parents[2] / "csrc"
FUZZ_SECONDS = 20
SAN_ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")


def make(target, out):
    build = subprocess.run(["make", "-s", "-C", str(CSRC), target,
                            f"O={out}"], capture_output=True, text=True,
                           timeout=180)
    assert build.returncode == 0, build.stdout + build.stderr
    return out / ("replay" if target == "replay" else "fuzz_classify")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """{path: allowed reasons} of every case, one frame per file."""
    core = Core(mac=defs.LB_MAC, flows=4096)
    core.publish_services(defs.SERVICES, defs.MACS)
    cases = [(c, {c.reason}) for c in defs.wellformed() + defs.malformed()]
    cases += defs.truncations(core.classify)
    d = tmp_path_factory.mktemp("corpus")
    allowed = {}
    for i, (case, ok) in enumerate(cases):
        path = d / f"{i:05d}-{case.name}.bin"
        path.write_bytes(case.frame)
        allowed[str(path)] = ok
    return d, allowed


def test_sanitizer_build_replays_corpus(tmp_path, corpus):
    _, allowed = corpus
    files = sorted(allowed)
    argv = [str(make("replay", tmp_path)), "-m", defs.LB_MAC]
    for v, mac in zip(defs.VIPS, defs.REAL_OF):
        argv += ["-v" if mac else "-V", str(v)]   # -V: no real to take it
    run = subprocess.run(argv + files, capture_output=True, text=True,
                         timeout=120, env=SAN_ENV)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "runtime error" not in run.stderr, run.stderr[-4000:]
    assert "Sanitizer" not in run.stderr, run.stderr[-4000:]
    got = dict(line.split("\t")[::-1] for line in run.stdout.splitlines())
    assert set(got) == set(files)
    wrong = [f"{Path(f).name}: {got[f]}, want {sorted(allowed[f])}"
             for f in files if got[f] not in allowed[f]]
    assert not wrong, "\n".join(wrong[:40])
    assert len(files) > 500


def test_fuzzer_finds_no_crash(tmp_path, corpus):
    seeds, _ = corpus
    work = tmp_path / "work"
    work.mkdir()
    fuzzer = make("fuzz", tmp_path)
    run = subprocess.run([str(fuzzer), f"-max_total_time={FUZZ_SECONDS}",
                          "-max_len=2048", "-print_final_stats=1",
                          f"-artifact_prefix={tmp_path}/", str(work),
                          str(seeds)], capture_output=True, text=True,
                         timeout=FUZZ_SECONDS + 120, env=SAN_ENV)
    assert run.returncode == 0, run.stderr[-4000:]
    runs = [line for line in run.stderr.splitlines()
            if line.startswith("stat::number_of_executed_units")]
    assert runs and int(runs[0].split(":")[-1]) > 10000, run.stderr[-2000:]
