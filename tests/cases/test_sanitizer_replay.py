"""The core built standalone with ASan and UBSan, outside Python, on the
corpus tests/cases/corpus.py writes from the packet cases (csrc/tools/
harness.h: set-ups and inputs): DR, two-arm NAT and SNAT, IPv4 and IPv6,
the return path, ICMP errors and SNAT's ports, frames on slots 0 and 1.

- the replayer runs every input: no sanitizer report, no broken promise
  (the harness aborts), and the same reasons as the cffi build's cases;
- a short libFuzzer run with a fixed seed, seeded with the same corpus,
  finds no crash.

(make -C csrc replay | fuzz; needs cc with libasan/libubsan, clang with
libclang-rt-dev: tools/run installs them.  docs/reliability/fuzz.md: the
long run and the coverage.)"""

import os
import subprocess
from pathlib import Path

import pytest

from pyfwd.dataplane.native import REASONS

from . import corpus as corpus_mod

CSRC = Path(__file__).resolve().parents[2] / "csrc"
FUZZ_RUNS = 20000
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
    """(directory, [set-up paths], {input path: [allowed reasons]})."""
    d = tmp_path_factory.mktemp("corpus")
    setups, allowed = corpus_mod.write(d)
    return d, setups, allowed


def sanitizer_clean(run):
    assert run.returncode == 0, run.stderr[-4000:]
    assert "runtime error" not in run.stderr, run.stderr[-4000:]
    assert "Sanitizer" not in run.stderr, run.stderr[-4000:]


def test_sanitizer_build_replays_corpus(tmp_path, corpus):
    _, setups, allowed = corpus
    files = sorted(allowed)
    argv = [str(make("replay", tmp_path))]
    for s in setups:
        argv += ["-s", str(s)]
    run = subprocess.run(argv + files, capture_output=True, text=True,
                         timeout=120, env=SAN_ENV)
    sanitizer_clean(run)
    got = {f: r.split() for f, r in (line.split("\t")
                                     for line in run.stdout.splitlines())}
    assert set(got) == set(files)
    wrong = []
    for f in files:
        want = allowed[f]
        if len(got[f]) != len(want):
            wrong.append(f"{Path(f).name}: {len(got[f])} frames run, "
                         f"want {len(want)}")
        wrong += [f"{Path(f).name} frame {i}: {g}, want {sorted(w)}"
                  for i, (g, w) in enumerate(zip(got[f], want))
                  if g not in w]
    assert not wrong, "\n".join(wrong[:40])
    assert len(files) > 500
    # What the corpus reaches: every reason but the full flow table
    # (test_nat_core fills one) and a full hand-over ring (one worker
    # here; test_handoff fills one), every kind of forward on both slots.
    reached = {r for rs in got.values() for r in rs}
    assert set(REASONS) - reached == {"drop_table_full", "drop_handoff_full"}


def test_sanitizer_build_replays_corpus_on_two_workers(tmp_path, corpus):
    """Each frame on the two workers in turn, NAT/SNAT frames handed to
    their flow's owner (csrc/handoff.c): no sanitizer report, no broken
    promise, and the reasons of one worker but where they cannot be:
    SNAT's canned answers name the ports one worker gives (two workers
    give each its own share: drop_no_flow, drop_ports_full move), and a
    DR flow stays on the worker that made it (an ICMP error about it on
    the other one finds it by hash only for Maglev and sh)."""
    _, setups, allowed = corpus
    files = sorted(allowed)
    argv = [str(make("replay", tmp_path))]
    for s in setups:
        argv += ["-s", str(s)]
    got = {}
    for workers in ("1", "2"):
        run = subprocess.run(argv[:1] + ["-w", workers] + argv[1:] + files,
                             capture_output=True, text=True, timeout=120,
                             env=SAN_ENV)
        sanitizer_clean(run)
        got[workers] = {f: r.split() for f, r in (
            line.split("\t") for line in run.stdout.splitlines())}
    assert set(got["2"]) == set(files)
    names = list(corpus_mod.setups())
    moved = {"nat": {"drop_no_flow", "drop_ports_full"},   # SNAT's ports
             "mixed": {"drop_no_flow", "drop_ports_full"},
             "icmp": {"drop_icmp_no_flow"}}                 # DR's ICMP
    differ = [f for f in files if got["1"][f] != got["2"][f]]
    assert len(differ) < len(files) // 50, differ
    for f in differ:
        setup = names[Path(f).read_bytes()[0] % len(names)]
        assert moved.get(setup, set()) & {*got["1"][f], *got["2"][f]}, (
            f, setup, got["1"][f], got["2"][f])


def test_corpus_covers_nat_snat_ipv6_and_both_slots():
    ins = corpus_mod.inputs()
    names = list(corpus_mod.setups())
    used = {names[data[0]] for _, data, _ in ins}
    assert used == {"dr", "nat", "nat6", "mixed", "icmp", "tun"}
    slot1 = [n for n, data, _ in ins
             if any(ctrl & corpus_mod.REC_IN_IF1
                    for ctrl, _ in corpus_mod.read_input(data)[1])]
    assert any(n.startswith("nat-") for n in slot1)
    assert any(n == "csum-nat6" for n in slot1)


def test_fuzzer_finds_no_crash(tmp_path, corpus):
    d, setups, _ = corpus
    work = tmp_path / "work"
    work.mkdir()
    fuzzer = make("fuzz", tmp_path)
    env = dict(SAN_ENV, PYFWD_FUZZ_SETUPS=":".join(map(str, setups)))
    run = subprocess.run([str(fuzzer), "-seed=1", f"-runs={FUZZ_RUNS}",
                          "-max_len=4096", "-print_final_stats=1",
                          f"-artifact_prefix={tmp_path}/", str(work),
                          str(d / "seeds")], capture_output=True,
                         text=True, timeout=300, env=env)
    sanitizer_clean(run)
    runs = [line for line in run.stderr.splitlines()
            if line.startswith("stat::number_of_executed_units")]
    assert runs and int(runs[0].split(":")[-1]) >= FUZZ_RUNS, \
        run.stderr[-2000:]
