"""The soak run's verdicts from fake events (pyfwd.lab.soakjudge), its fault
schedule and windows (pyfwd.lab.soakfaults), its report (soakreport): no
lab, no root."""

from types import SimpleNamespace

from pyfwd.lab import soakfaults, soakjudge, soakreport
from pyfwd.lab.soakjudge import Window


def fail(t, vip="web", real="real1", conn_t=None, dt=0.1, stream="s"):
    return {"t": t, "t_end": t + dt, "stream": stream, "vip": vip,
            "real": real, "conn_t": t if conn_t is None else conn_t,
            "error": "ConnectionResetError"}


HALT = Window(10.0, 15.0, "halted", "web", "real2", cuts=True)
RESTART = Window(30.0, 32.0, "engine restart (SIGKILL)", "web", cuts=True)


def judged(*failures, windows=(HALT, RESTART)):
    out, counts = soakjudge.judge_failures(list(failures), list(windows))
    return [f["excused"] for f in out], counts


def test_a_failure_on_a_healthy_real_is_unexcused():
    why, counts = judged(fail(12.0, real="real1"))
    assert why == [None]
    assert counts["unexcused"] == 1 and counts["excused"] == 0


def test_a_failure_on_the_halted_real_during_its_halt_is_excused():
    why, counts = judged(fail(12.0, real="real2"))
    assert why == ["halted"] and counts["unexcused"] == 0


def test_the_halt_excuses_a_request_that_began_before_it():
    # started at 9.5, failed at 10.5: the request overlaps the halt
    assert judged(fail(9.5, real="real2", dt=1.0))[0] == ["halted"]


def test_after_the_window_only_connections_it_cut_are_excused():
    # a keep-alive connection opened before the halt ended fails later
    why, _ = judged(fail(20.0, real="real2", conn_t=5.0))
    assert why == ["halted (a connection opened before it ended)"]
    # a connection opened after the halt ended: the halt excuses nothing
    assert judged(fail(20.0, real="real2", conn_t=16.0))[0] == [None]


def test_a_window_that_does_not_cut_excuses_only_what_overlaps_it():
    quiet = Window(10.0, 15.0, "health check down", "web", "real2")
    why, _ = judged(fail(20.0, real="real2", conn_t=5.0), windows=[quiet])
    assert why == [None]


def test_a_window_of_another_vip_excuses_nothing():
    assert judged(fail(12.0, vip="dicom", real="real2"))[0] == [None]


def test_an_unknown_real_is_matched_by_any_real_of_its_vip_and_says_so():
    why, _ = judged(fail(12.0, real=None))
    assert why == ["real unknown: halted"]
    assert judged(fail(20.0, real=None, conn_t=20.0))[0] == [None]


def test_the_restart_excuses_every_real_and_counts_by_reason():
    why, counts = judged(fail(31.0, real="real1"), fail(31.0, real=None),
                         fail(40.0, real="real3", conn_t=29.0),
                         fail(50.0, real="real3", conn_t=45.0))
    assert why[:2] == ["engine restart (SIGKILL)"] * 2
    assert why[2].startswith("engine restart (SIGKILL) (a connection")
    assert why[3] is None
    assert counts == {"failures": 4, "excused": 3, "unexcused": 1,
                      "by_reason": {
                          "engine restart (SIGKILL)": 2,
                          "engine restart (SIGKILL) (a connection opened "
                          "before it ended)": 1,
                          "unexcused": 1}}


def samples(pid, seconds, rss, fds=20, t0=0.0):
    return [{"t": t0 + t, "pid": pid, "rss_kb": rss(t), "fds": fds
             if not callable(fds) else fds(t)} for t in range(seconds)]


def test_flat_memory_passes_and_a_leak_fails():
    flat = soakjudge.judge_flat(samples(1, 120, lambda t: 100_000))
    assert flat["ok"] and flat["processes"][0]["judged"]
    # 400 KiB a second: 48 MB over the run, far above 10% of 100 MB
    leak = soakjudge.judge_flat(samples(1, 120, lambda t: 100_000
                                        + 400 * t))
    assert not leak["ok"] and leak["processes"][0]["note"] == "grew"


def test_growing_descriptors_fail():
    fds = soakjudge.judge_flat(samples(1, 120, lambda t: 100_000,
                                       fds=lambda t: 20 + t // 10))
    assert not fds["ok"]


def test_warm_up_growth_is_not_a_leak():
    rss = soakjudge.judge_flat(samples(1, 120, lambda t: 50_000 if t < 5
                                       else 100_000))
    assert rss["ok"]


def test_the_longest_lived_process_is_judged_and_must_have_samples():
    # the first (killed by the restart) grew in its warm-up: not judged
    both = samples(1, 40, lambda t: 1000 * t) + samples(
        2, 60, lambda t: 100_000, t0=40)
    out = soakjudge.judge_flat(both)
    assert out["ok"]
    assert [p["judged"] for p in out["processes"]] == [False, True]
    assert "not the longest" in out["processes"][0]["note"]
    leak = samples(1, 40, lambda t: 1) + samples(2, 60, lambda t: 100_000
                                                  + 500 * t, t0=40)
    assert not soakjudge.judge_flat(leak)["ok"]
    assert not soakjudge.judge_flat(samples(1, 8, lambda t: 1))["ok"]


def test_flows_back_to_baseline_within_the_settle_time():
    shows = [{"t": t, "flows": {"web": max(0, 50 - 10 * (t - 100)),
                                "udp": 1}} for t in range(90, 130)]
    out = soakjudge.judge_flows(shows, {"web": 0, "udp": 0}, 100.0, 20.0,
                                {"udp": 1})
    assert out["ok"] and out["back_after_s"] == 5.0
    stuck = [dict(s, flows={"web": 2, "udp": 1}) for s in shows]
    out = soakjudge.judge_flows(stuck, {"web": 0, "udp": 0}, 100.0, 20.0,
                                {"udp": 1})
    assert not out["ok"] and out["back_after_s"] is None


def test_schedule_has_every_fault_once_and_reloads():
    faults = soakfaults.schedule(30, ["real1", "real2", "real3"])
    actions = [f.action for f in faults]
    for once in ("drain", "halt", "add-real", "restart", "haproxy"):
        assert actions.count(once) == 1, once
    assert actions.count("flap") >= 3
    assert actions.count("reload") == 6         # 2.5, 7.5 .. 27.5
    assert all(0 < f.at < 30 for f in faults)
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    long = soakfaults.schedule(600, ["real1", "real2", "real3"])
    assert [f.action for f in long].count("flap") == 10


def test_runner_applies_every_fault_and_its_end_and_logs_errors():
    calls = []

    def act(name):
        def do(f):
            calls.append((name, f.real))
            if name == "halt":
                raise RuntimeError("refused")
            return {"measured": 1}
        return do
    faults = [soakfaults.Fault(0.0, "halt", "web", "real2", 0.01),
              soakfaults.Fault(0.0, "reload")]
    runner = soakfaults.FaultRunner(
        faults, {n: act(n) for n in ("halt", "online", "reload")}, 0.0)
    runner.run()
    assert sorted(calls) == [("halt", "real2"), ("online", "real2"),
                             ("reload", None)]
    by = {e["action"]: e for e in runner.log}
    assert not by["halt"]["ok"] and "refused" in by["halt"]["detail"]
    assert by["online"]["ok"] and by["online"]["measured"] == 1


def test_windows_from_the_fault_log():
    log = [{"t": 10.0, "t_done": 10.1, "action": "halt", "vip": "web",
            "real": "real2"},
           {"t": 15.0, "t_done": 15.2, "action": "online", "vip": "web",
            "real": "real2"},
           {"t": 20.0, "t_done": 21.5, "action": "restart", "vip": None,
            "real": None, "ready": 21.4},
           {"t": 30.0, "t_done": 31.0, "action": "haproxy", "vip": None,
            "real": None, "recovered": 30.9},
           {"t": 40.0, "t_done": 40.1, "action": "del-real", "vip": "web",
            "real": "real4"}]
    ws = soakfaults.windows(log, 60.0, {"web": "snat", "web-dr": "dr",
                                        "l7": "l7"}, "l7")
    got = {(w.reason, w.vip, w.real): (w.start, w.end, w.cuts) for w in ws}
    g = soakfaults.GRACE
    assert got[("halted", "web", "real2")] == (10.0, 15.2 + g, True)
    assert got[("engine restart (SIGKILL)", "web", None)] == \
        (20.0, 21.4 + g, True)
    assert got[("engine restart (SIGKILL)", "web-dr", None)][2] is False
    assert got[("HAProxy killed", "l7", None)] == (30.0, 30.9 + g, True)
    assert got[("removed from the VIP", "web", "real4")] == \
        (40.0, 60.0, True)


def test_health_windows_span_the_down_samples():
    s = [{"t": t, "health": {("web", "real1"): "down" if 5 <= t <= 7
                             else "up"}} for t in range(12)]
    w, = soakfaults.health_windows(s)
    g = soakfaults.GRACE
    assert (w.vip, w.real, w.start, w.end) == ("web", "real1", 4 - g, 8 + g)


def test_report_markdown_and_svg_name_the_verdict_and_the_figures():
    failures, counts = soakjudge.judge_failures(
        [fail(12.0, real="real1", stream="web-close")], [HALT])
    flat = soakjudge.judge_flat(samples(7, 60, lambda t: 100_000))
    flows = soakjudge.judge_flows([{"t": 61, "flows": {"web": 0}}],
                                  {"web": 0}, 60.0, 10.0)
    r = soakreport.build(
        opts=SimpleNamespace(seconds=60, rate=100), t0=0.0, load_end=60.0,
        results={"ok": [[1, "web-close", "real1", 5]], "failures": []},
        failures=failures, counts=counts, windows=[HALT],
        faults=[{"t": 10.0, "t_done": 10.1, "action": "halt", "vip": "web",
                 "real": "real2", "ok": True}],
        procs=samples(7, 60, lambda t: 100_000), shows=[], flat=flat,
        flows=flows)
    assert r["ok"] is False
    assert r["verdicts"] == {"no_unexcused_failure": False, "flat": True,
                             "flows_back": True, "faults_applied": True}
    assert r["unexcused"][0]["real"] == "real1"
    md = soakreport.markdown(r)
    assert md.startswith("# pyfwd soak: FAIL")
    assert "| no unexcused failure | FAIL |" in md
    assert "web-close (web) real real1" in md
    pic = soakreport.svg(r)
    assert pic.startswith("<svg") and pic.count("<polyline") >= 4


def test_connections_the_client_still_holds_are_allowed_flows():
    from pyfwd.lab.soak import still_open
    lines = ["TIME-WAIT 0 0 10.0.0.1:51582 10.0.0.100:80",
             "FIN-WAIT-1 0 64 10.0.0.1:46494 10.0.0.100:80",
             "ESTAB 0 0 10.0.0.1:46500 10.0.0.101:80",
             "ESTAB 0 0 10.0.0.1:46502 10.0.0.9:80"]
    assert still_open(lines) == {"web": 1, "l7": 1}


def test_the_load_counts_answers_per_real_and_records_failures():
    """soakload's HTTP and UDP streams against a local whoami (no lab)."""
    import socket
    import threading

    from pyfwd.lab import soakload, whoami

    server = whoami.WhoamiServer(("127.0.0.1", 0), "realx")
    port = server.server_address[1]
    udp = whoami.serve_udp("127.0.0.1", 0, "realu")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))       # bound, never listening: refused
    try:
        spec = {"seconds": 1.0, "streams": [
            {"name": "ka", "kind": "http", "vip": "web", "host":
             "127.0.0.1", "port": port, "rate": 20, "keepalive": True,
             "conns": 2},
            {"name": "close", "kind": "http", "vip": "web", "host":
             "127.0.0.1", "port": port, "rate": 20},
            {"name": "udp", "kind": "udp", "vip": "udp", "host":
             "127.0.0.1", "port": udp.getsockname()[1], "rate": 20},
            {"name": "refused", "kind": "http", "vip": "dicom", "host":
             "127.0.0.1", "port": closed.getsockname()[1], "rate": 5}]}
        rec = soakload.run(spec, soakload.Recorder(), threading.Event())
    finally:
        server.shutdown()
        server.server_close()
        udp.close()
        closed.close()
    out = rec.to_dict()
    ok = {}
    for _sec, stream, node, n in out["ok"]:
        ok[stream, node] = ok.get((stream, node), 0) + n
    assert ok[("ka", "realx")] >= 10 and ok[("close", "realx")] >= 10
    assert ok[("udp", "realu")] >= 10
    assert out["failures"] and all(
        f["stream"] == "refused" and f["real"] is None
        and "ConnectionRefused" in f["error"] for f in out["failures"])
    assert soakload.parse_node("node=real2 client=x") == "real2"
    assert soakload.parse_node("nothing") is None
