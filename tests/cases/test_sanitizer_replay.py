"""The core built standalone with ASan and UBSan replays every packet case,
malformed and truncated ones included: no report, same reasons as the cffi
build.  (make -C csrc replay; needs a C compiler with libasan/libubsan.)"""

import os
import subprocess
from pathlib import Path

from pyfwd.dataplane import Core

from . import defs

CSRC = Path(__file__).resolve().parents[2] / "csrc"


def corpus():
    core = Core(mac=defs.LB_MAC)
    core.publish_vips(defs.VIPS)
    cases = [(c, {c.reason}) for c in defs.wellformed() + defs.malformed()]
    return cases + defs.truncations(core.classify)


def test_sanitizer_build_replays_corpus(tmp_path):
    build = subprocess.run(["make", "-s", "-C", str(CSRC), "replay",
                            f"O={tmp_path}"], capture_output=True, text=True,
                           timeout=180)
    assert build.returncode == 0, build.stdout + build.stderr
    files, allowed = [], {}
    for i, (case, ok) in enumerate(corpus()):
        path = tmp_path / f"{i:05d}-{case.name}.bin"
        path.write_bytes(case.frame)
        files.append(str(path))
        allowed[str(path)] = ok
    argv = [str(tmp_path / "replay"), "-m", defs.LB_MAC]
    for v in defs.VIPS:
        argv += ["-v", str(v)]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    run = subprocess.run(argv + files, capture_output=True, text=True,
                         timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "runtime error" not in run.stderr, run.stderr[-4000:]
    assert "Sanitizer" not in run.stderr, run.stderr[-4000:]
    got = dict(line.split("\t")[::-1] for line in run.stdout.splitlines())
    assert set(got) == set(files)
    wrong = [f"{Path(f).name}: {got[f]}, want {sorted(allowed[f])}"
             for f in files if got[f] not in allowed[f]]
    assert not wrong, "\n".join(wrong[:40])
    assert len(files) > 500
