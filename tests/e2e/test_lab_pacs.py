"""The PACS workload end to end: Orthanc on two real servers, a study stored
with dcmtk's storescu through the DICOM VIP and fetched back with WADO-RS
through the web VIP, in DR and in NAT.  Root; needs Orthanc, its DICOMweb
plugin and dcmtk (tools/run installs them): missing, the tests fail.

Each mode runs once (the `ran` fixture); the tests read its Result."""

import secrets

import pytest

from pyfwd.lab import modes as labmodes
from pyfwd.lab import pacs
from pyfwd.lab.topology import Lab

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def lab_name():
    return "pfp" + secrets.token_hex(3)


@pytest.fixture(scope="module", params=pacs.MODES)
def ran(request, tmp_path_factory):
    """The Result of store_and_fetch in one mode, in a lab of its own."""
    mode = request.param
    assert pacs.missing() == []
    with Lab(lab_name(), labmodes.TOPOLOGY[mode], reals=2) as lab:
        return pacs.store_and_fetch(lab, mode,
                                    tmp_path_factory.mktemp(f"pacs-{mode}"))


def test_everything_the_workload_needs_is_installed():
    assert pacs.missing() == []


def test_study_stored_through_the_dicom_vip_comes_back_through_the_web_vip(
        ran):
    res = ran
    lesson = "\n".join(pacs.explain(res))
    assert res.error == "", lesson
    assert len(res.stored) == pacs.INSTANCES == len(set(res.stored))
    assert sorted(res.retrieved) == sorted(res.stored), lesson
    assert res.fetch_status == 200
    # one node took the whole study, the other none of it, so the fetch
    # that found it all reached the node that stored it
    where = res.stored_on
    assert where in res.reals, res.holders
    assert res.holders == {r: (pacs.INSTANCES if r == where else 0)
                           for r in res.reals}
    assert res.flows == {"dicom": {r: int(r == where) for r in res.reals},
                         "web": {r: int(r == where) for r in res.reals}}
    # DR and NAT leave the source alone: Orthanc saw the client itself
    assert res.recorded["RemoteIP"] == res.client
    assert res.recorded["RemoteAET"] == pacs.CLIENT_AET
    assert res.ok and "they match" in lesson
    assert 0 < res.store_s < 10 and 0 < res.fetch_s < 10


def test_both_vips_sent_the_client_to_the_same_real(ran):
    # what the engine that ran showed: the VIPs, their schedulers and the
    # new flows each real server got (one association, one GET)
    res = ran
    vip = labmodes.VIP
    web_port = {"dr": pacs.WEB_PORT, "nat": 80}[res.mode]
    shown = {v["vip"]: v for v in res.shown}
    dicom, web = f"{vip}:{pacs.DICOM_PORT}/tcp", f"{vip}:{web_port}/tcp"
    assert sorted(shown) == sorted([dicom, web])
    assert [shown[v]["scheduler"] for v in (dicom, web)] == ["sh", "sh"]
    assert [r["real"] for r in shown[web]["reals"]] == [
        f"{a}:{pacs.WEB_PORT}" for a in res.reals.values()]
    sent = {v: [r["real"].split(":")[0] for r in shown[v]["reals"]
                if r["flows_new"]] for v in (dicom, web)}
    assert sent[dicom] == sent[web] == [res.reals[res.stored_on]], sent
    if res.mode == "nat":
        assert "the VIP's port 80 to Orthanc's 8042" in "\n".join(
            pacs.explain(res))
