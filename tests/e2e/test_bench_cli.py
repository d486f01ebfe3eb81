"""`pyfwd bench` as a user runs it, briefly: one row of each part in one
run, the three files written, the table printed, nothing left behind; and
SIGTERM in the middle still writes what was measured and cleans up.  Root.
"""

import json
import signal
import subprocess
import time

import pytest
from pyroute2 import netns

from pyfwd.lab.programs import PYFWD

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

BENCH = PYFWD + ["bench"]
PREFIXES = ("pfpp", "pfht")         # pyfwd.bench.pps and .http namespaces


def _ours() -> list:
    return [n for n in netns.listnetns() if n.startswith(PREFIXES)]


def test_one_run_of_each_part(tmp_path):
    before = _ours()
    out = tmp_path / "res"
    r = subprocess.run(BENCH + ["--only", "core-dr,maglev-10,generator,"
                                "dr-xdp,http-dr-1k,http-nat-1k,"
                                "http-nat-close-1k",
                                "--repeat", "1", "--seconds", "1",
                                "--out", str(out)],
                       capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    got = {(row["name"], row["metric"]): row for row in data["results"]}
    for key in [("core-dr", "ns_per_pkt"), ("maglev-10", "build_ms"),
                ("generator", "pps"), ("dr-xdp", "pps"),
                ("http-dr-1k", "rps"), ("http-nat-1k", "rps"),
                ("http-nat-1k", "lb_pkts_per_req"),
                ("http-nat-close-1k", "rps"), ("dr-xdp", "full_pps"),
                ("dr-xdp", "cpu_loop"), ("dr-xdp", "full_cpu_napi"),
                ("http-nat-1k", "cpu_loop")]:
        assert got[key]["median"] > 0, key
        assert got[key]["runs"] == [got[key]["median"]]
    assert data["failures"] == []
    assert data["info"]["pps_setup"] and data["info"]["http_setup"]
    # what each window saw, in the run's facts
    pps = data["info"]["pps_setup"]
    runs = {d["row"]: d for d in pps["runs"]}
    assert set(runs) == {"generator", "dr-xdp"}
    assert [t["offered_pps"] for t in runs["dr-xdp"]["ladder"]] == \
        pps["ladder"]["loads_pps"][:len(runs["dr-xdp"]["ladder"])]
    assert runs["dr-xdp"]["full"]["xsk"]["sockets"] == 1
    http = {d["row"]: d for d in data["info"]["http_setup"]["runs"]}
    assert "observed" in http["http-nat-close-1k"]
    md = (out / "results.md").read_text()
    assert "| 1k |" in md and "| 100k | — |" in md     # the headline row
    assert "packets/s at full speed" in md
    assert "### Where the forwarder's time went" in md
    assert "| dr-xdp | best |" in md
    assert "### Where the balancer's time went" in md
    assert "| http-nat-close-1k |" in md
    assert md.split("## How it was measured")[0].strip() in r.stdout
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    # progress on stderr, one line per measured row (micro counts as one)
    assert r.stderr.count("(run 1/1)") == 6
    assert _ours() == before


def test_sigterm_writes_partial_results_and_cleans_up(tmp_path):
    before = _ours()
    out = tmp_path / "res"
    proc = subprocess.Popen(BENCH + ["--only", "generator,xdp-kernel",
                                     "--repeat", "5", "--seconds", "2",
                                     "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "(run 1/5)" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "bench ended early"
        assert "(run 1/5)" in line
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    data = json.loads((out / "results.json").read_text())
    assert data["info"]["interrupted"] is True
    assert ("generator", "pps") in {(r["name"], r["metric"])
                                    for r in data["results"]}
    assert "Interrupted: partial results." in (out / "results.md").read_text()
    assert _ours() == before
