"""The PACS workload's readers of a WADO-RS answer and of dcmdump
(pyfwd.lab.dicom), its lesson text and what it does without Orthanc (pure:
no root, no dcmtk; the tools are stand-in scripts)."""

import pytest

from pyfwd.lab import dicom, orthanc, pacs
from pyfwd.errors import LabError

CT = 'multipart/related; type="application/dicom"; boundary={}'
DICOM = b"\0" * 128 + b"DICM" + b"\2\0\x10\0UI" + b"x" * 40


def body(boundary, *parts, close=True):
    out = b""
    for headers, content in parts:
        out += b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + content \
            + b"\r\n"
    return out + (b"--" + boundary + b"--\r\n" if close else b"")


def test_split_multipart_reads_every_part():
    b = body(b"XyZ", (b"Content-Type: application/dicom", DICOM),
             (b"Content-Type: application/dicom", DICOM + b"\r\n--"))
    parts, problems = dicom.split_multipart(CT.format("XyZ"),
                                             b"preamble\r\n" + b)
    assert problems == []
    assert [p.content for p in parts] == [DICOM, DICOM + b"\r\n--"]
    assert parts[0].headers == {"content-type": "application/dicom"}


def test_split_multipart_quoted_boundary_with_separators():
    b = body(b"a b;c=d", (b"Content-Type: application/dicom", DICOM))
    parts, problems = dicom.split_multipart(
        'multipart/related; Boundary="a b;c=d"; type="application/dicom"', b)
    assert problems == [] and [p.content for p in parts] == [DICOM]


def test_split_multipart_content_length_cuts_and_says_short():
    b = body(b"B", (b"Content-Length: 4", b"abcdef"),
             (b"Content-Length: 99", b"xyz"))
    parts, problems = dicom.split_multipart(CT.format("B"), b)
    assert [p.content for p in parts] == [b"abcd", b"xyz"]
    assert problems == ["part 2: 3 bytes of the 99 its Content-Length says"]


@pytest.mark.parametrize("content_type", [
    None, "", "application/dicom", "multipart/related",
    "multipart/related; boundary=", 'multipart/related; boundary="é"'])
def test_split_multipart_without_a_usable_boundary(content_type):
    parts, problems = dicom.split_multipart(content_type,
                                           body(b"B", (b"", b"x")))
    assert parts == [] and len(problems) == 1


def test_split_multipart_boundary_not_in_body():
    parts, problems = dicom.split_multipart(CT.format("B"), b"<html>oops")
    assert parts == []
    assert problems == ["the boundary does not occur in the body (10 bytes)"]


@pytest.mark.parametrize("raw", [b"", None, b"--B--\r\n"])
def test_split_multipart_no_parts(raw):
    parts, problems = dicom.split_multipart(CT.format("B"), raw)
    assert parts == [] and problems      # said, never raised


def test_split_multipart_cut_short_keeps_what_came():
    b = body(b"B", (b"Content-Type: application/dicom", DICOM),
             close=False) + b"--B\r\nContent-Type: appli"
    parts, problems = dicom.split_multipart(CT.format("B"), b)
    assert [p.content for p in parts] == [DICOM]
    assert problems == ["part 2: no blank line after its headers",
                        "no closing boundary: the body may be cut short"]


def test_split_multipart_headerless_part_and_junk_after_boundary():
    b = b"--B\r\n\r\nplain\r\n--Bxx\r\n\r\nno\r\n--B--"
    parts, problems = dicom.split_multipart(CT.format("B"), b)
    assert parts == [dicom.Part({}, b"plain")]
    assert problems == ["part 2: text after its boundary on the same line"]


def test_is_dicom():
    assert dicom.is_dicom(DICOM)
    assert not dicom.is_dicom(b"")
    assert not dicom.is_dicom(b"<html>" + b" " * 200)


def test_parse_sop_uid():
    assert dicom.parse_sop_uid(
        "(0008,0018) UI [2.25.123.4]                #  12, 1 SOPInstanceUID"
    ) == "2.25.123.4"
    for text in ("", None, "E: no data dictionary", "(0008,0018) UI []"):
        assert dicom.parse_sop_uid(text) == ""


def script(tmp_path, name, text):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + text + "\n")
    path.chmod(0o755)
    return str(path)


def test_sop_uids_says_which_files_it_could_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(dicom, "DCMDUMP", script(tmp_path, "dcmdump", """
case "$4" in
  *good*) echo '(0008,0018) UI [1.2.3]   #  6, 1 SOPInstanceUID' ;;
  *bad*) echo 'E: not DICOM' >&2; exit 1 ;;
  *) echo '(0010,0010) PN [X]' ;;
esac"""))
    uids, unread = dicom.sop_uids(["/d/good.dcm", "/d/bad.dcm", "/d/none.dcm"])
    assert uids == ["1.2.3", "", ""]
    assert unread == ["bad.dcm: dcmdump: E: not DICOM",
                      "none.dcm: no SOP Instance UID"]


def test_sop_uids_timeout_and_missing_tool_are_recorded(tmp_path,
                                                        monkeypatch):
    monkeypatch.setattr(dicom, "TOOL_TIMEOUT", 0.2)
    monkeypatch.setattr(dicom, "DCMDUMP", script(tmp_path, "slow", "sleep 5"))
    assert dicom.sop_uids(["a.dcm"]) == (
        [""], ["a.dcm: dcmdump: no answer within 0.2 s"])
    monkeypatch.setattr(dicom, "DCMDUMP", str(tmp_path / "absent"))
    uids, unread = dicom.sop_uids(["a.dcm"])
    assert uids == [""] and unread[0].startswith("a.dcm: dcmdump: ")


def test_read_parts_leaves_out_what_is_not_dicom(tmp_path, monkeypatch):
    monkeypatch.setattr(dicom, "DCMDUMP", script(
        tmp_path, "dcmdump", "echo '(0008,0018) UI [1.2.3]'"))
    b = body(b"B", (b"Content-Type: text/html", b"<html>"),
             (b"Content-Type: application/dicom", DICOM))
    uids, unread = dicom.read_parts(CT.format("B"), b, tmp_path)
    assert uids == ["1.2.3"]
    assert unread == ["part 1: not DICOM (text/html, 6 bytes)"]
    assert (tmp_path / "part-2.dcm").read_bytes() == DICOM


def result(mode="nat", **kw):
    res = pacs.Result(mode, "10.0.0.100:104",
                      "10.0.0.100:80" if mode == "nat" else
                      "10.0.0.100:8042", "10.0.0.1", "2.25.9",
                      ["1.1", "1.2"], reals={"real1": "10.0.1.11",
                                             "real2": "10.0.1.12"})
    for k, v in kw.items():
        setattr(res, k, v)
    return res


def test_explain_ok():
    res = result(retrieved=["1.2", "1.1"], holders={"real1": 2, "real2": 0},
                 recorded={"RemoteIP": "10.0.0.1", "RemoteAET": "PYFWD"},
                 fetch_status=200,
                 flows={"dicom": {"real1": 1, "real2": 0},
                        "web": {"real1": 1, "real2": 0}})
    text = "\n".join(pacs.explain(res))
    assert res.ok
    assert "real1 (10.0.1.11, Orthanc AE PACS1) took 2 of 2" in text
    assert "the client's own address" in text
    assert "the VIP's port 80 to Orthanc's 8042" in text
    assert "all 2 came back from real1, the node that stored them" in text


def test_explain_failed_fetch_claims_nothing_it_did_not_see():
    res = result(error="GET http://10.0.0.100:80/...: curl: (28) timeout",
                 holders={"real1": 2, "real2": 0})
    text = "\n".join(pacs.explain(res))
    assert "translated" not in text and "they match" not in text
    assert "FAILED: GET" in text and "1.1 MISSING" in text


def test_explain_says_what_was_not_read():
    res = result(retrieved=["1.1"], fetch_status=200,
                 holders={"real1": 2, "real2": 0},
                 unread=["part 2: not DICOM (text/html, 6 bytes)"],
                 error="the study fetched back is not the study stored")
    lines = pacs.explain(res)
    assert "           not read: part 2: not DICOM (text/html, 6 bytes)" \
        in lines
    assert "1 DICOM parts read" in "\n".join(lines)
    assert not any("unexpected" in line for line in lines)


def test_without_orthanc_run_says_so_and_builds_nothing(monkeypatch):
    monkeypatch.setattr(orthanc, "ORTHANC", "/nonexistent/Orthanc")
    assert any(m.startswith("orthanc (") for m in pacs.missing())
    said = []
    assert pacs.run(said.append, name="never") is False
    assert len(said) == 1 and said[0].startswith(
        "The PACS workload needs: orthanc (/nonexistent/Orthanc: apt-get")
    with pytest.raises(LabError, match="needs orthanc"):
        pacs.store_and_fetch(None, "dr", "/nonexistent")


def test_bad_mode_raises_before_anything():
    with pytest.raises(pacs.ConfigError):
        pacs.run(print, modes=("snat",))
