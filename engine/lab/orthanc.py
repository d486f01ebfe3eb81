"""The PACS workload's archives: Orthanc, a DICOM archive, on each real
server of a lab (``archives``), DICOM on port 104 and DICOMweb over HTTP on
port 8042, each with its own configuration and database; and Orthanc's
REST API asked from inside a real server's namespace (``rest``).
"""

import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

from ..errors import LabError
from .modes import stop_all

__all__ = ["ORTHANC", "DICOM_PORT", "WEB_PORT", "dicomweb_plugin",
           "orthanc_config", "aet", "http_request", "rest", "archives"]

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGINS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                    "/usr/lib/orthanc/libOrthancDicomWeb.so")
DICOM_PORT = 104
WEB_PORT = 8042
START_TIMEOUT = 20.0            # Orthanc up and listening on both ports
HTTP_TIMEOUT = 10.0


def dicomweb_plugin():
    """The path of Orthanc's DICOMweb plugin, or None if not installed."""
    return next((p for p in DICOMWEB_PLUGINS if os.path.exists(p)), None)


def orthanc_config(role, directory):
    """The Orthanc configuration of one real server's archive."""
    db = str(Path(directory) / "db")
    return {
        "Name": f"pyfwd-{role}", "DicomAet": aet(role),
        "DicomPort": DICOM_PORT, "HttpPort": WEB_PORT,
        "StorageDirectory": db, "IndexDirectory": db,
        "RemoteAccessAllowed": True, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,   # the client calls the VIP's AET
        "HttpCompressionEnabled": False, "SaveJobs": False,
        "Plugins": [dicomweb_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }


def aet(role):
    """The AE title of role's archive: "PACS1" for real1."""
    return "PACS" + re.sub(r"\D", "", role)


def http_request(host, port, method, path, body=None, timeout=HTTP_TIMEOUT):
    """(status, body bytes) of one request from the calling namespace."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def rest(lab, role, method, path, body=None):
    """Orthanc's REST API on role, from inside role's namespace; the JSON
    answer.  LabError on a status other than 200."""
    def ask():
        return http_request("127.0.0.1", WEB_PORT, method, path,
                     None if body is None else json.dumps(body))
    what = f"Orthanc on {role}: {method} {path}"
    try:
        status, data = lab.call(role, ask, timeout=HTTP_TIMEOUT + 5)
    except (OSError, http.client.HTTPException) as exc:
        raise LabError(f"{what}: {exc}") from exc
    if status != 200:
        raise LabError(f"{what}: HTTP {status}")
    try:
        return json.loads(data)
    except ValueError:
        raise LabError(f"{what}: not JSON: {data[:80]!r}") from None


@contextlib.contextmanager
def archives(lab, directory, roles=None):
    """Orthanc on each real server (all of the lab's by default), each with
    its own configuration and database under directory; yields {role:
    Popen} once every one answers on both ports.  Stopped on the way out.
    LabError (with the end of its log) if one does not start within
    START_TIMEOUT."""
    procs = {}
    try:
        for role in lab.reals if roles is None else roles:
            d = Path(directory) / role
            d.mkdir(parents=True, exist_ok=True)
            (d / "orthanc.json").write_text(json.dumps(
                orthanc_config(role, d), indent=1))
            with open(d / "orthanc.log", "wb") as log:
                procs[role] = lab.popen(
                    role, [ORTHANC, str(d / "orthanc.json")],
                    stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT,
                    # without it, delayed ACKs cost ~40 ms per image
                    env=dict(os.environ, TCP_NODELAY="1"))
        for role, proc in procs.items():
            _wait_orthanc(lab, role, proc, Path(directory) / role)
        yield procs
    finally:
        stop_all(list(procs.values()))


def _wait_orthanc(lab, role, proc, directory):
    """Return once Orthanc on role answers on both ports; LabError with the
    end of its log if it exits or does not within START_TIMEOUT."""
    def wait():
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end and proc.poll() is None:
            try:
                status, _ = http_request("127.0.0.1", WEB_PORT, "GET",
                                         "/system", timeout=1)
                socket.create_connection(("127.0.0.1", DICOM_PORT),
                                         1).close()
                if status == 200:
                    return True
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        return False

    if not lab.call(role, wait, timeout=START_TIMEOUT + 5):
        tail = (directory / "orthanc.log").read_text(errors="replace")
        tail = " | ".join(tail.strip().splitlines()[-3:])
        how = ("exited" if proc.poll() is not None
               else f"did not listen within {START_TIMEOUT:.0f} s")
        raise LabError(f"Orthanc on {role} {how}: {tail}")
