"""The PACS workload of the lab: a DICOM study stored and fetched back
through the balancer (`pyfwd lab demo --pacs`).

Each real server runs Orthanc, a DICOM archive: DICOM on port 104 and
DICOMweb over HTTP on port 8042.  The balancer (labmodes.balancer) has two
VIPs over them: the DICOM VIP 10.0.0.100:104 to the nodes' port 104, and the
web VIP, 10.0.0.100:80 to their port 8042 in NAT, 10.0.0.100:8042 in DR
(DR does not translate ports).  The client makes a small study with dcmtk's
dump2dcm (one Study Instance UID, a few images with SOP Instance UIDs of
their own), stores it with dcmtk's storescu through the DICOM VIP, then
fetches the whole study back with WADO-RS through the web VIP, and the SOP
Instance UIDs fetched are compared with those stored.

Each Orthanc keeps its own database here (a real PACS cluster shares one),
so the fetch must reach the node that took the store.  Both VIPs use the
`sh` scheduler, which hashes the client's address over the archive nodes'
addresses (their ports aside), so a client reaches the same node through
either VIP.

`store_and_fetch` measures one mode in a lab that is up and returns a
`Result`, with what the engine showed of each VIP; `run` builds the labs,
`parse_sop_uid` are pure: they read what they can of a malformed answer and
say what they could not.

The tools live apart: pyfwd.lab.dicom makes and reads the DICOM files and
the WADO-RS answer (dcmtk), pyfwd.lab.orthanc runs the archives.
"""

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, LabError, PyfwdError
from . import dicom, orthanc
from . import modes as labmodes
from .dicom import INSTANCES, make_study, read_parts
from .orthanc import DICOM_PORT, WEB_PORT, aet, archives, rest

__all__ = ["MODES", "DICOM_PORT", "WEB_PORT", "Result", "missing", "run",
           "store_and_fetch", "explain", "listeners"]

MODES = ("dr", "nat")
CLIENT_AET = "PYFWD"
VIP_AET = "PACS"                # the AE title the client calls at the VIP
HTTP_TIMEOUT = orthanc.HTTP_TIMEOUT
DICOM_TIMEOUT = 10              # storescu's connect, ACSE and DIMSE timeouts
DICOM_ACCEPT = 'multipart/related; type="application/dicom"'

# What each mode does to the packets; the lines after it say what was
# measured (the address Orthanc recorded, the fetch through the web VIP).
_WHAT = {
    "dr": "DR changes only the destination MAC of the client's packets, so "
          "the archive\nnode should see the client's own address; its "
          "answers go to the client\ndirectly, not through the balancer.",
    "nat": "NAT rewrites the destination to the archive node's address, "
           "and the web VIP's\nport 80 to Orthanc's 8042; it leaves the "
           "source alone, so the node should see\nthe client's own address; "
           "its answers go back through the balancer.",
}

# Why the fetch finds the study: said once, before the first mode.
_WHY = [
    "Both VIPs use the sh scheduler (source hashing): the client's address is",
    "hashed over the archive nodes' addresses, whatever the VIP's port, so",
    "the same client reaches the same node through the DICOM VIP and the web",
    "VIP.  It matters here because each Orthanc keeps its own database; a",
    "real PACS cluster shares one.",
]


@dataclass
class Result:
    """What store_and_fetch measured in one mode.

    `holders` maps each real server role to the number of the study's
    instances its Orthanc holds (asked directly, not through a VIP);
    `recorded` is the metadata Orthanc kept of the store on the node that
    holds the study (RemoteIP: the address the association came from,
    RemoteAET, CalledAET); `shown` is the engine's show() after the fetch
    (each VIP with its scheduler and its reals' counters), and `flows` maps
    each VIP, "dicom" and "web", to {role: new flows the engine sent
    there}.  `unread` says what of the fetch's answer could not be read
    (a malformed multipart body, a part that is not DICOM).  `error` is
    empty when the store and the fetch both worked.
    """

    mode: str
    dicom_vip: str
    web_vip: str
    client: str
    study_uid: str
    stored: list                # SOP Instance UIDs sent with storescu
    retrieved: list = field(default_factory=list)  # fetched with WADO-RS
    unread: list = field(default_factory=list)     # what of the answer was
                                                   # not read, and why
    holders: dict = field(default_factory=dict)
    recorded: dict = field(default_factory=dict)
    shown: list = field(default_factory=list)
    flows: dict = field(default_factory=dict)
    reals: dict = field(default_factory=dict)      # role -> address
    fetch_status: int = 0
    fetch_bytes: int = 0
    start_s: float = 0.0        # the archives, from start to listening
    store_s: float = 0.0
    fetch_s: float = 0.0
    error: str = ""

    @property
    def stored_on(self):
        """The role holding the study, or None (none, or split)."""
        full = [r for r, n in self.holders.items() if n]
        return full[0] if len(full) == 1 else None

    @property
    def ok(self):
        """True when the whole study was stored on one node and the same
        SOP Instance UIDs came back through the web VIP."""
        return (not self.error and self.stored_on is not None
                and self.holders[self.stored_on] == len(self.stored)
                and sorted(self.retrieved) == sorted(self.stored))


def missing():
    """What the PACS workload needs and is not installed, as
    "what (how to install it)" strings; empty when ready."""
    out = []
    if not os.access(orthanc.ORTHANC, os.X_OK):
        out.append(f"orthanc ({orthanc.ORTHANC}: apt-get install orthanc)")
    if orthanc.dicomweb_plugin() is None:
        out.append("orthanc-dicomweb (apt-get install orthanc-dicomweb)")
    dcmtk = (dicom.STORESCU, dicom.DUMP2DCM, dicom.DCMDUMP)
    if not all(os.access(p, os.X_OK) for p in dcmtk):
        out.append("dcmtk (apt-get install dcmtk)")
    if shutil.which("curl") is None:
        out.append("curl (apt-get install curl)")
    return out


def _need():
    """LabError naming what is missing, if anything is."""
    need = missing()
    if need:
        raise LabError("the PACS workload needs " + ", ".join(need))


def _check_mode(mode):
    if mode not in MODES:
        raise ConfigError(f"PACS mode {mode!r}: expected one of "
                          f"{', '.join(MODES)}")


# ---------------------------------------------------------------------------
# The balancer


def listeners(mode):
    """(DICOM, web) labmodes.Listener of mode: the DICOM VIP :104 to the
    nodes' 104; the web VIP :80 to their 8042 in NAT, :8042 in DR (DR does
    not translate ports)."""
    _check_mode(mode)
    return (labmodes.Listener(DICOM_PORT, DICOM_PORT),
            labmodes.web_listener(mode, WEB_PORT))


def _flows(lab, shown, names):
    """{name: {role: new flows}} from the engine's show(); names maps a
    VIP's ADDR:PORT/tcp text to the name."""
    return {names[v["vip"]]: {
        role: r["flows_new"] for role in lab.reals for r in v["reals"]
        if r["real"].split(":")[0] == lab.ip(role)}
        for v in shown if v["vip"] in names}


# ---------------------------------------------------------------------------
# Measuring


def store_and_fetch(lab, mode, directory, instances=INSTANCES):
    """Store a fresh study through the DICOM VIP and fetch it back through
    the web VIP, in `mode`, in `lab` (up, of the mode's topology); every
    file goes under directory.  Starts Orthanc on every real server and the
    balancer, and stops them before returning the Result (on an exception
    or Ctrl-C too).

    A failed store, fetch or look-up of what each archive holds is
    reported in Result.error; raises ConfigError for a mode other than
    "dr" or "nat", LabError when something the workload needs is not
    installed (see missing()) or the study, the archives or the balancer
    cannot be set up.
    """
    _check_mode(mode)
    _need()
    directory = Path(directory)
    study = make_study(directory, instances)
    dicom, web = listeners(mode)
    res = Result(mode, f"{dicom.vip}:{dicom.port}", f"{web.vip}:{web.port}",
                 lab.ip("client"), study.study_uid, list(study.sop_uids),
                 reals={r: lab.ip(r) for r in lab.reals})
    t0 = time.monotonic()
    with archives(lab, directory / "archives"):
        res.start_s = time.monotonic() - t0
        with labmodes.balancer(lab, mode, listeners=[dicom, web],
                               scheduler="sh") as eng:
            res.error = (_store(lab, study, res, dicom)
                         or _fetch(lab, study, res, directory / "fetched"))
            res.shown = eng.show()
        res.flows = _flows(lab, res.shown, {
            f"{li.vip}:{li.port}/tcp": name
            for name, li in (("dicom", dicom), ("web", web))})
        try:
            _locate(lab, study, res)
        except LabError as exc:
            res.error = res.error or str(exc)
    if not res.error and not res.ok:
        res.error = "the study fetched back is not the study stored" + "".join(
            f"; {u}" for u in res.unread)
    return res


def _store(lab, study, res, listener):
    """storescu through the DICOM VIP (listener), one association; "" or
    the error."""
    t0 = time.monotonic()
    try:
        r = lab.run("client", [
            dicom.STORESCU, "-aet", CLIENT_AET, "-aec", VIP_AET,
            "-to", str(DICOM_TIMEOUT), "-ta", str(DICOM_TIMEOUT),
            "-td", str(DICOM_TIMEOUT), listener.vip, str(listener.port),
            *study.files], capture_output=True, text=True, errors="replace",
            env=dict(os.environ, TCP_NODELAY="1"),
            timeout=3 * DICOM_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"storescu: no answer within {3 * DICOM_TIMEOUT} s"
    finally:
        res.store_s = time.monotonic() - t0
    if r.returncode != 0:
        said = (r.stderr or r.stdout).strip()[-300:]
        return f"storescu: {said or f'exit status {r.returncode}'}"
    return ""


def _fetch(lab, study, res, directory):
    """WADO-RS GET of the study through the web VIP with curl from the
    client; "" or the error.  Fills res.fetch_* from curl's own figures
    and res.retrieved, res.unread from the parts of the answer."""
    url = f"http://{res.web_vip}/dicom-web/studies/{study.study_uid}"
    directory.mkdir(parents=True, exist_ok=True)
    answer = directory / "answer"
    ok, said = labmodes.curl(lab, "client", url, timeout=HTTP_TIMEOUT, args=(
        "-H", f"Accept: {DICOM_ACCEPT}", "-o", str(answer),
        "-w", "%{http_code} %{time_total} %{content_type}"))
    if not ok:
        return f"GET {url}: {said}"
    status, seconds, content_type = (said.split(" ", 2) + ["", "", ""])[:3]
    try:
        res.fetch_status, res.fetch_s = int(status), float(seconds)
    except ValueError:
        return f"GET {url}: curl said {said!r}"
    body = answer.read_bytes() if answer.exists() else b""
    res.fetch_bytes = len(body)
    if res.fetch_status != 200:
        return f"GET {url}: HTTP {res.fetch_status}"
    res.retrieved, res.unread = read_parts(content_type, body, directory)
    return ""


def _locate(lab, study, res):
    """Ask each Orthanc directly (in its namespace) what it holds of the
    study, and what it recorded of the store; LabError if one does not
    answer."""
    for role in lab.reals:
        ids = rest(lab, role, "POST", "/tools/find", {
            "Level": "Instance",
            "Query": {"StudyInstanceUID": study.study_uid}})
        res.holders[role] = len(ids)
        if ids and not res.recorded:
            res.recorded = rest(lab, role, "GET",
                                 f"/instances/{ids[0]}/metadata?expand")


# ---------------------------------------------------------------------------
# The lesson


def explain(res):
    """The lesson of one Result, as lines of plain text."""
    return ([_WHAT[res.mode], "",
             f"  study    {len(res.stored)} images of one study, made with "
             "dump2dcm:",
             f"           Study Instance UID {res.study_uid}",
             f"  store    storescu from the client ({res.client}) to the "
             f"DICOM VIP {res.dicom_vip}",
             f"           (AE {CLIENT_AET} calling AE {VIP_AET}), one "
             f"association: {_ms(res.store_s)}"]
            + _archive_lines(res) + _fetch_lines(res) + _result_lines(res))


def _archive_lines(res):
    """Where the study is, and what Orthanc recorded of the sender."""
    where = res.stored_on
    if where:
        lines = [f"  archive  {where} ({res.reals[where]}, Orthanc AE "
                 f"{aet(where)}) took {res.holders[where]} of "
                 f"{len(res.stored)}; " + ", ".join(
                     f"{r} holds {k}" for r, k in res.holders.items()
                     if r != where)]
    else:
        lines = ["  archive  held: " + (", ".join(
            f"{r} {k}" for r, k in res.holders.items()) or "not asked")]
    if res.recorded:
        ip = res.recorded.get("RemoteIP", "?")
        lines += [f"  recorded {where or 'Orthanc'} noted the sender as {ip} "
                  f"(AE {res.recorded.get('RemoteAET', '?')}):",
                  "           " + ("the client's own address"
                                   if ip == res.client
                                   else "not the client's address")]
    return lines


def _fetch_lines(res):
    """The fetch as curl measured it, and where the engine sent each VIP's
    flows."""
    lines = [f"  fetch    WADO-RS GET http://{res.web_vip}/dicom-web/"
             "studies/<Study UID>",
             f"           from the client: HTTP {res.fetch_status or '-'}, "
             f"{len(res.retrieved)} DICOM parts read, {res.fetch_bytes} "
             f"bytes in {_ms(res.fetch_s)}"]
    lines += [f"           not read: {u}" for u in res.unread]
    port = int(res.web_vip.rsplit(":", 1)[1])
    if port != WEB_PORT and res.fetch_status == 200:
        # Orthanc listens on WEB_PORT only: its answer through the VIP's
        # port is the translation, measured
        lines.append(f"           NAT translated the VIP's port {port} to "
                     f"Orthanc's {WEB_PORT}, and back")
    for name, per in res.flows.items():
        sent = [r for r, k in per.items() if k]
        lines.append(f"  balancer the {name} VIP sent the client to "
                     f"{', '.join(sent) or 'no real server'}")
    return lines


def _result_lines(res):
    """Each SOP Instance UID stored, whether it came back, and the
    verdict."""
    got = set(res.retrieved)
    lines = ["  SOP Instance UIDs, stored -> fetched back:"]
    lines += [f"           {uid} {'yes' if uid in got else 'MISSING'}"
              for uid in res.stored]
    if res.ok:
        lines.append(f"  result   all {len(res.stored)} came back from "
                     f"{res.stored_on}, the node that stored them: they "
                     "match")
    else:
        lines.append("  result   FAILED: "
                     + (res.error or "not the study stored"))
        unexpected = got - set(res.stored)
        if unexpected:
            lines.append(f"           {len(unexpected)} unexpected instances "
                         "fetched")
    return lines


def _ms(seconds):
    return f"{seconds * 1000:.0f} ms"


def run(echo, modes=MODES, name="pacs", reals=2):
    """The PACS lesson: for each mode, a lab named `name` with `reals`
    real servers, a study stored and fetched back, explained through echo
    (a print-like callable).  True when every mode stored and fetched back
    the whole study; what is not installed, or a lab that cannot be built,
    is said through echo and gives False.  Raises ConfigError, before
    building anything, for a mode other than "dr" or "nat"."""
    from .topology import Lab

    for mode in modes:
        _check_mode(mode)
    need = missing()
    if need:
        echo("The PACS workload needs: " + ", ".join(need)
             + " (./tools/run setup installs them)")
        return False
    ok = True
    for i, mode in enumerate(modes):
        if i:
            echo("")
        echo(f"== PACS over {mode.upper()}: "
             f"lab {name} ({labmodes.TOPOLOGY[mode]}, {reals} archive "
             "nodes running Orthanc) ==")
        if i == 0:
            for line in _WHY + [""]:
                echo(line)
        try:
            with Lab(name, topology=labmodes.TOPOLOGY[mode],
                     reals=reals) as lab, \
                    tempfile.TemporaryDirectory(prefix="pyfwd-pacs-") as d:
                res = store_and_fetch(lab, mode, d)
        except PyfwdError as exc:
            echo(f"  failed: {exc}")
            ok = False
            continue
        for line in explain(res):
            echo(line)
        echo(f"  timings  archives up in {_ms(res.start_s)}, store "
             f"{_ms(res.store_s)}, fetch {_ms(res.fetch_s)}")
        ok = ok and res.ok
    return ok
