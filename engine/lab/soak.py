"""`pyfwd soak`: minutes of mixed load through the VIPs of a lab while its
real servers flap, the config reloads, reals are added, removed, drained
and halted, the engine is killed and restarted and HAProxy is killed;
then the verdicts and a report.

The parts, one concern each:

- pyfwd.lab.soaklab: the lab's servers (service, health agent, storescp)
  and the engine's config (five VIPs: SNAT, DR, DICOM, UDP, L7);
- pyfwd.lab.soakload: the load, a process in the client namespace;
- pyfwd.lab.soakfaults: the faults, when, and the windows they excuse;
- pyfwd.lab.soakjudge: the verdicts (failures, flat RSS and fds, flows);
- pyfwd.lab.soakreport: report.json, report.md, plot.svg;
- this module: ``run()``, which builds the lab, starts the engine with
  `pyfwd start` (a process of its own, so that it can be SIGKILLed), samples
  it every second (VmRSS and the count of /proc/PID/fd; `ctl show`'s
  flows and health), runs load and faults, and judges.

The engine runs with a flow table of FLOWS slots per queue (``--flows``):
a closed flow stays in the live count until the sweep passes its slot,
and with the default table (millions of slots) a pass takes minutes, so
the count after a load would come back only that much later.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from ..control.server import Client
from ..errors import LabError, PyfwdError
from . import soakfaults, soakjudge, soakreport
from .dicom import STORESCU, make_study
from .modes import VIP
from .programs import PYFWD, stop
from .soaklab import (L7_VIP, SERVICE_PORT, UDP_PORT, Servers, config_text,
                      vips)
from .topology import Lab

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_RATE", "SETTLE", "Options", "run"]

DEFAULT_RATE = 200          # requests per second, all streams together
SETTLE = 20.0               # s after the load for the flows to come back
READY_TIMEOUT = 30.0
# Flow slots per queue: small, so that the sweep (4,096 slots per idle
# 100 ms, 64 per burst) passes over the table in seconds, and closed
# flows leave the live count soon after their 10 s (see the module).
FLOWS = 1 << 16
UDP_SOCKETS = 1             # the load's UDP flows (they outlive the load)


@dataclass
class Options:
    seconds: float = 600.0
    rate: int = DEFAULT_RATE
    name: str = "soak"
    out: str = "soak-report"
    reals: int = 4
    flows: int = FLOWS
    extra: dict = field(default_factory=dict)


def streams(rate, study_files):
    """The load's streams (pyfwd.lab.soakload), ``rate`` requests per
    second in all, spread over the VIPs."""
    def http(name, vip, host, port, share, keep, conns=1):
        return {"name": name, "kind": "http", "vip": vip, "host": host,
                "port": port, "rate": max(1.0, rate * share),
                "keepalive": keep, "conns": conns, "reuse": 50}
    return [http("web-close", "web", VIP, 80, 0.2, False),
            http("web-keepalive", "web", VIP, 80, 0.2, True, 4),
            http("dr-close", "web-dr", VIP, SERVICE_PORT, 0.1, False),
            http("dr-keepalive", "web-dr", VIP, SERVICE_PORT, 0.15, True, 2),
            http("l7-close", "l7", L7_VIP, 80, 0.1, False),
            http("l7-keepalive", "l7", L7_VIP, 80, 0.15, True, 2),
            {"name": "udp", "kind": "udp", "vip": "udp", "host": VIP,
             "port": UDP_PORT, "rate": max(1.0, rate * 0.1)},
            {"name": "dicom-store", "kind": "dicom", "vip": "dicom",
             "host": VIP, "port": 104, "files": study_files,
             "storescu": STORESCU, "repeat": 40}]


class EngineProc:
    """`pyfwd start` in the lab's lb namespace, its log appended to a
    file; SIGKILLed and started again by restart()."""

    def __init__(self, lab, config, sock, logfile, flows):
        self.lab, self.config, self.sock = lab, config, sock
        self.flows = flows
        self.logfile = logfile
        self.proc = None

    def start(self):
        with open(self.logfile, "a") as out:
            self.proc = self.lab.popen(
                "lb", PYFWD + ["start", "--config", str(self.config),
                               "--busy-poll", "0", "--flows",
                               str(self.flows)],
                stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        return self.wait_ready()

    def call(self, cmd, timeout=3.0, **args):
        with Client(self.sock, timeout=timeout) as c:
            return c.call(cmd, **args)

    def wait_ready(self, timeout=READY_TIMEOUT):
        """When `ctl status` answers with HAProxy running; LabError if
        it does not within timeout, or the engine ends."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise LabError(f"pyfwd start ended (exit "
                               f"{self.proc.returncode}): see "
                               f"{self.logfile}")
            try:
                st = self.call("status")
                if (st.get("haproxy") or {}).get("pid"):
                    return time.monotonic()
            except PyfwdError:
                pass
            time.sleep(0.1)
        raise LabError(f"pyfwd start not ready in {timeout:g} s: see "
                       f"{self.logfile}")

    def ctl(self, *args):
        """`pyfwd ctl ARGS` as an operator runs it; PyfwdError if it
        fails."""
        r = self.lab.run("lb", PYFWD + ["ctl", "-s", str(self.sock),
                                        *args],
                         capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise PyfwdError(f"ctl {' '.join(args)}: "
                             f"{(r.stderr or r.stdout).strip()}")
        return {}

    def restart(self):
        """SIGKILL, then start again: {"killed_pid", "ready",
        "restart_s"}."""
        pid, t = self.proc.pid, time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        ready = self.start()
        return {"killed_pid": pid, "ready": round(ready, 3),
                "restart_s": round(ready - t, 3)}

    def kill_haproxy(self):
        """SIGKILL HAProxy; {"haproxy_pid", "recovered", "recover_s"}
        once the engine runs a new one."""
        pid, t = self.call("status")["haproxy"]["pid"], time.monotonic()
        os.kill(pid, signal.SIGKILL)
        end = t + READY_TIMEOUT
        while time.monotonic() < end:
            try:
                new = (self.call("status").get("haproxy") or {}).get("pid")
            except PyfwdError:
                new = None
            if new and new != pid:
                now = time.monotonic()
                return {"haproxy_pid": pid, "new_pid": new,
                        "recovered": round(now, 3),
                        "recover_s": round(now - t, 3)}
            time.sleep(0.1)
        raise LabError(f"HAProxy not back {READY_TIMEOUT:g} s after "
                       "SIGKILL")

    def stop(self):
        stop(self.proc, 20)


def _proc_figures(pid):
    """(VmRSS in KiB, open fds) of pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(ln.split()[1]) for ln in f
                       if ln.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration, ValueError):
        return None


class Sampler:
    """Every second: the engine's VmRSS and fd count, and from `ctl show`
    the live flows per VIP and each real's health."""

    def __init__(self, engine, node_of):
        self.engine, self.node_of = engine, node_of
        self.procs, self.shows = [], []
        self.last_show = None       # the last `ctl show`, whole
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name="soak-sampler")

    def _loop(self):
        while not self.stopped.wait(1.0 - time.monotonic() % 1.0):
            self.sample()

    def sample(self):
        t = round(time.monotonic(), 3)
        pid = self.engine.proc.pid
        fig = _proc_figures(pid)
        if fig:
            self.procs.append({"t": t, "pid": pid, "rss_kb": fig[0],
                               "fds": fig[1]})
        try:
            shown = self.engine.call("show", timeout=2.0)
        except PyfwdError:
            return
        self.last_show = shown
        self.shows.append({
            "t": t,
            # every live flow, closing ones too
            "flows": {v["name"]: sum(r["active"] + r.get("inactive", 0)
                                     for r in v["reals"])
                      for v in shown},
            "health": {(v["name"], self.node_of.get(r["real"], r["real"])):
                       r["health"] for v in shown for r in v["reals"]}})

    def flows_now(self):
        return self.shows[-1]["flows"] if self.shows else {}


def _actions(engine, servers, addr_of):
    def ctl(*args):
        return lambda f: engine.ctl(*args, f.vip, addr_of[f.real])
    return {
        "reload": lambda f: engine.ctl("reload"),
        "flap": lambda f: servers.agent_down(f.real),
        "flap-end": lambda f: servers.agent_up(f.real),
        "drain": ctl("drain"), "halt": ctl("halt"),
        "online": ctl("online"),
        "add-real": ctl("add-real"), "del-real": ctl("del-real"),
        "restart": lambda f: engine.restart(),
        "haproxy": lambda f: engine.kill_haproxy()}


def still_open(ss_lines):
    """{VIP name: the client's TCP connections to it that are not closed
    (`ss -tanH` lines; TIME-WAIT sends nothing)}: flows that may rightly
    live on after the load."""
    where = {f"{v.address}:{v.port}": v.name for v in vips()}
    out = {}
    for line in ss_lines:
        cols = line.split()
        if len(cols) >= 5 and cols[0] != "TIME-WAIT" and cols[4] in where:
            out[where[cols[4]]] = out.get(where[cols[4]], 0) + 1
    return out


def _wait_healthy(engine, timeout=READY_TIMEOUT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        shown = engine.call("show")
        if all(r["health"] == "up" for v in shown for r in v["reals"]):
            return
        time.sleep(0.2)
    raise LabError("the real servers' health checks did not all pass "
                   f"within {timeout:g} s")


def run(opts, say=print):
    """The whole soak run (see the module) in a lab named opts.name;
    writes the report into opts.out and returns it (a dict whose "ok" is
    the verdict).  LabError when the lab or the engine cannot start."""
    os.makedirs(opts.out, exist_ok=True)
    out = os.path.abspath(opts.out)
    with Lab(opts.name, topology="one-arm", reals=opts.reals) as lab:
        in_file = lab.reals[:-1]
        extra = lab.reals[-1]
        addr_of = {r: f"{lab.ip(r)}:{SERVICE_PORT}" for r in lab.reals}
        node_of = {}
        for v in vips():
            for r in lab.reals:
                node_of[f"{lab.ip(r)}:{v.real_port}"] = r
        config = os.path.join(out, "pyfwd.toml")
        sock = os.path.join(out, "pyfwd.sock")
        with open(config, "w") as f:
            f.write(config_text(lab, sock, in_file))
        for stale in [config + ".state"] + [
                os.path.join(out, f) for f in ("engine.log", "load.json",
                                               "report.json")]:
            if os.path.exists(stale):
                os.remove(stale)
        servers = Servers(lab)
        engine = EngineProc(lab, config, sock,
                            os.path.join(out, "engine.log"), opts.flows)
        try:
            servers.start()
            say(f"lab {opts.name}: {len(lab.reals)} reals up; starting the "
                "engine")
            engine.start()
            _wait_healthy(engine)
            return _soak(opts, lab, engine, servers, out, in_file, extra,
                         addr_of, node_of, say)
        finally:
            engine.stop()
            servers.close()


def _soak(opts, lab, engine, servers, out, in_file, extra, addr_of,
          node_of, say):
    studydir = os.path.join(out, "study")
    os.makedirs(studydir, exist_ok=True)
    study = make_study(studydir, instances=10)
    spec = {"seconds": opts.seconds,
            "streams": streams(opts.rate, study.files)}
    spec_path, load_out = (os.path.join(out, "load-spec.json"),
                           os.path.join(out, "load.json"))
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=1)
    sampler = Sampler(engine, node_of)
    sampler.sample()
    baseline = sampler.flows_now()
    sampler.thread.start()
    with open(os.path.join(out, "load.log"), "w") as errors:
        load = lab.popen("client", [sys.executable, "-m",
                                    "pyfwd.lab.soakload", spec_path,
                                    load_out],
                         stdout=errors, stderr=subprocess.STDOUT,
                         env=dict(os.environ, TCP_NODELAY="1"))
    t0 = time.monotonic()
    faults = soakfaults.schedule(opts.seconds, in_file, extra=extra)
    runner = soakfaults.FaultRunner(faults, _actions(engine, servers,
                                                     addr_of), t0)
    fthread = threading.Thread(target=runner.run, daemon=True,
                               name="soak-faults")
    fthread.start()
    say(f"load for {opts.seconds:g} s at about {opts.rate} requests/s, "
        f"{len(faults)} faults")
    try:
        load.wait(opts.seconds + 60)
    except subprocess.TimeoutExpired:
        load.terminate()
        load.wait(30)
    load_end = time.monotonic()
    runner.stop.set()
    fthread.join(60)
    if not os.path.exists(load_out):
        raise LabError("the load ended without results: see "
                       f"{out}/load.log")
    say("load done; waiting for the flows to come back")
    allowance = {"udp": UDP_SOCKETS}
    end = load_end + SETTLE
    while time.monotonic() < end:
        flows = sampler.flows_now()
        if flows and all(n <= baseline.get(v, 0) + allowance.get(v, 0)
                         for v, n in flows.items()):
            time.sleep(1.5)
            break
        time.sleep(1.0)
    sockets = lab.run("client", ["ss", "-tanH"], capture_output=True,
                      text=True).stdout.splitlines()
    for vip, n in still_open(sockets).items():
        allowance[vip] = allowance.get(vip, 0) + n
    sampler.stopped.set()
    sampler.thread.join(5)
    with open(load_out) as f:
        results = json.load(f)
    vip_modes = {v.name: v.mode for v in vips()}
    windows = (soakfaults.windows(runner.log, load_end, vip_modes, "l7")
               + soakfaults.health_windows(sampler.shows))
    failures, counts = soakjudge.judge_failures(results["failures"],
                                                windows)
    report = soakreport.build(
        opts=opts, t0=t0, load_end=load_end, results=results,
        failures=failures, counts=counts, windows=windows,
        faults=runner.log, procs=sampler.procs, shows=sampler.shows,
        flat=soakjudge.judge_flat(sampler.procs),
        flows=soakjudge.judge_flows(sampler.shows, baseline, load_end,
                                    SETTLE, allowance))
    report["last_show"] = [
        {"name": v["name"], "reals": {r["real"]: {
            k: r.get(k) for k in ("state", "health", "active", "inactive",
                                  "flows_new")}
            for r in v["reals"]}} for v in sampler.last_show or []]
    report["client_open_after"] = [      # what may still send
        ln for ln in sockets if not ln.startswith("TIME-WAIT")]
    soakreport.write(report, out)
    return report
