"""DICOM files and answers for the PACS workload (pyfwd.lab.pacs), with
dcmtk and the standard library: a small study made with dump2dcm
(``make_study``), the SOP Instance UIDs of files read with dcmdump
(``sop_uids``), and a WADO-RS answer (multipart/related) taken apart
(``split_multipart``, ``is_dicom``, ``read_parts``).

The readers are tolerant: they read what they can of a malformed answer
and say what they could not, never raising on it.  dcmtk is called by full
path: pynetdicom installs tools of the same names.
"""

import email.message
import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..errors import LabError

__all__ = ["INSTANCES", "STORESCU", "DUMP2DCM", "DCMDUMP", "Study",
           "Part", "new_uid", "make_study", "parse_sop_uid", "sop_uids",
           "split_multipart", "is_dicom", "read_parts"]

INSTANCES = 3                   # images in a study made by make_study
STORESCU = "/usr/bin/storescu"
DUMP2DCM = "/usr/bin/dump2dcm"
DCMDUMP = "/usr/bin/dcmdump"
TOOL_TIMEOUT = 30               # dump2dcm, dcmdump: one small file each

# One instance of the study, as dump2dcm's text form of a dataset.
_DATASET = """(0008,0016) UI =SecondaryCaptureImageStorage
(0008,0018) UI [{sop}]
(0008,0020) DA [{date}]
(0008,0060) CS [OT]
(0010,0010) PN [PYFWD^LESSON]
(0010,0020) LO [PYFWD-{patient}]
(0020,000d) UI [{study}]
(0020,000e) UI [{series}]
(0020,0010) SH [1]
(0020,0011) IS [1]
(0020,0013) IS [{number}]
"""


@dataclass
class Study:
    """A study made by make_study: its UIDs and its DICOM files."""

    study_uid: str
    sop_uids: list              # SOP Instance UIDs, in file order
    files: list                 # paths of the DICOM files


# ---------------------------------------------------------------------------
# The study


def new_uid():
    """A fresh DICOM UID: 2.25 and a random UUID as an integer."""
    return f"2.25.{uuid.uuid4().int}"


def make_study(directory, instances=INSTANCES):
    """Write a study of `instances` small Secondary Capture images into
    directory with dcmtk's dump2dcm; returns the Study.  LabError if
    dump2dcm fails or its files do not carry the UIDs asked."""
    directory = Path(directory)
    study, series = new_uid(), new_uid()
    sops, files = [], []
    for n in range(1, instances + 1):
        sop = new_uid()
        txt, dcm = directory / f"study-{n}.txt", directory / f"study-{n}.dcm"
        txt.write_text(_DATASET.format(
            sop=sop, study=study, series=series, number=n,
            date=time.strftime("%Y%m%d"), patient=study[-6:]))
        ok, said = _tool([DUMP2DCM, "--write-xfer-little", str(txt),
                          str(dcm)])
        if not ok:
            raise LabError(f"dump2dcm: {said}")
        sops.append(sop)
        files.append(str(dcm))
    uids, unread = sop_uids(files)
    if uids != sops:
        raise LabError("dump2dcm wrote other SOP Instance UIDs than asked"
                       + "".join(f"; {u}" for u in unread))
    return Study(study, sops, files)


def _tool(argv):
    """Run a dcmtk tool: (True, stdout) or (False, why)."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True,
                           errors="replace", timeout=TOOL_TIMEOUT)
    except subprocess.TimeoutExpired:
        return False, f"no answer within {TOOL_TIMEOUT} s"
    except OSError as exc:
        return False, str(exc)
    if r.returncode != 0:
        return False, ((r.stderr or r.stdout).strip()
                       or f"exit status {r.returncode}")
    return True, r.stdout


def parse_sop_uid(dcmdump_text):
    """The SOP Instance UID (0008,0018) in dcmdump's text, "" if none."""
    m = re.search(r"\(0008,0018\) UI \[([0-9.]+)\]", dcmdump_text or "")
    return m.group(1) if m else ""


def sop_uids(paths):
    """The SOP Instance UID of each DICOM file, read with dcmtk's dcmdump:
    (uids, unread), uids one per path ("" for a file whose UID could not
    be read), unread a "name: why" string for each of those files."""
    uids, unread = [], []
    for path in paths:
        ok, said = _tool([DCMDUMP, "-q", "+P", "0008,0018", str(path)])
        uid = parse_sop_uid(said) if ok else ""
        uids.append(uid)
        if not uid:
            unread.append(f"{Path(path).name}: "
                          + (f"dcmdump: {said}" if not ok
                             else "no SOP Instance UID"))
    return uids, unread


# ---------------------------------------------------------------------------
# A WADO-RS answer


class Part(NamedTuple):
    """One part of a multipart body."""

    headers: dict               # lower-case names
    content: bytes


def split_multipart(content_type, body):
    """The parts of a multipart body (WADO-RS answers with
    multipart/related): (parts, problems), parts the Part of each part
    that could be read, problems what could not be and why.  Never raises
    on malformed input: a missing boundary gives ([], [why])."""
    boundary, why = _boundary(content_type)
    if why:
        return [], [why]
    chunks = (b"\r\n" + (body or b"")).split(b"\r\n--" + boundary)
    if len(chunks) == 1:
        return [], [f"the boundary does not occur in the body "
                    f"({len(body or b'')} bytes)"]
    parts, problems, closed = [], [], False
    for n, chunk in enumerate(chunks[1:], 1):
        if chunk.startswith(b"--"):             # the closing delimiter
            closed = True
            break
        part = _part(chunk)
        if isinstance(part, str):
            problems.append(f"part {n}: {part}")
            continue
        length = part.headers.get("content-length", "")
        if length.isdigit() and int(length) > len(part.content):
            problems.append(f"part {n}: {len(part.content)} bytes of the "
                            f"{length} its Content-Length says")
        elif length.isdigit():
            part = part._replace(content=part.content[:int(length)])
        parts.append(part)
    if not closed:
        problems.append("no closing boundary: the body may be cut short")
    if not parts and not problems:
        problems.append("no parts")
    return parts, problems


def _boundary(content_type):
    """(boundary bytes, "") or (b"", why not)."""
    msg = email.message.Message()
    msg["content-type"] = content_type or ""
    boundary = msg.get_boundary()
    if msg.get_content_maintype() != "multipart" or not boundary:
        return b"", f"no multipart boundary in Content-Type {content_type!r}"
    try:
        return boundary.encode("ascii"), ""
    except UnicodeEncodeError:
        return b"", f"a boundary that is not ASCII: {boundary!r}"


def _part(chunk):
    """A Part from what follows a delimiter, or why it is not one."""
    padding, eol, rest = chunk.partition(b"\r\n")
    if not eol:
        return "cut short after its boundary"
    if padding.strip():
        return "text after its boundary on the same line"
    if rest.startswith(b"\r\n"):               # no header lines
        return Part({}, rest[2:])
    head, sep, content = rest.partition(b"\r\n\r\n")
    if not sep:
        return "no blank line after its headers"
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return Part(headers, content)


def is_dicom(content):
    """True for a DICOM file (Part 10): "DICM" after the 128-byte
    preamble, as WADO-RS sends application/dicom."""
    return len(content) >= 132 and content[128:132] == b"DICM"




def read_parts(content_type, body, directory):
    """(SOP Instance UIDs, what could not be read) of a WADO-RS answer;
    each DICOM part is written under directory for dcmdump."""
    parts, unread = split_multipart(content_type, body)
    files = []
    for n, part in enumerate(parts, 1):
        if not is_dicom(part.content):
            unread.append(f"part {n}: not DICOM ("
                          f"{part.headers.get('content-type', 'no type')}, "
                          f"{len(part.content)} bytes)")
            continue
        files.append(directory / f"part-{n}.dcm")
        files[-1].write_bytes(part.content)
    uids, not_read = sop_uids(files)
    return [u for u in uids if u], unread + not_read
