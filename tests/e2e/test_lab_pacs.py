"""The PACS workload end to end: Orthanc on two real servers, a study stored
with dcmtk's storescu through the DICOM VIP and fetched back with WADO-RS
through the web VIP, in DR and in NAT.  Root; needs Orthanc, its DICOMweb
plugin and dcmtk (tools/run installs them): missing, the tests fail."""

import secrets

import pytest

from pyfwd import labmodes, pacs
from pyfwd.lab import Lab

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def lab_name():
    return "pfp" + secrets.token_hex(3)


def test_everything_the_workload_needs_is_installed():
    assert pacs.missing() == []


@pytest.mark.parametrize("mode", pacs.MODES)
def test_both_vips_send_a_client_to_the_same_real(mode):
    # pure: a Lab's plan gives the addresses, nothing is built
    lab = Lab(lab_name(), labmodes.TOPOLOGY[mode], reals=2)
    same = pacs.services(lab, mode)
    assert [s.scheduler for s in same] == ["sh", "sh"]
    assert pacs.table_agreement(same) == 1.0
    # the reason the reals are named by address alone
    assert pacs.table_agreement(pacs.services(lab, mode,
                                              with_ports=True)) < 0.9


@pytest.mark.parametrize("mode", pacs.MODES)
def test_study_stored_through_the_dicom_vip_comes_back_through_the_web_vip(
        mode, tmp_path):
    assert pacs.missing() == []
    with Lab(lab_name(), labmodes.TOPOLOGY[mode], reals=2) as lab:
        res = pacs.store_and_fetch(lab, mode, tmp_path)
        client = lab.ip("client")
        reals = {r: lab.ip(r) for r in lab.reals}
    lesson = "\n".join(pacs.explain(res))
    assert res.error == "", lesson
    assert len(res.stored) == pacs.INSTANCES == len(set(res.stored))
    assert sorted(res.retrieved) == sorted(res.stored), lesson
    assert res.fetch_status == 200
    # one node took the whole study, the other none of it, so the fetch
    # that found it all reached the node that stored it
    where = res.stored_on
    assert where in reals, res.holders
    assert res.holders == {r: (pacs.INSTANCES if r == where else 0)
                           for r in reals}
    assert res.flows == {"dicom": {r: int(r == where) for r in reals},
                         "web": {r: int(r == where) for r in reals}}
    # DR and NAT leave the source alone: Orthanc saw the client itself
    assert res.recorded["RemoteIP"] == client
    assert res.recorded["RemoteAET"] == pacs.CLIENT_AET
    assert res.ok and "they match" in lesson
    assert 0 < res.store_s < 10 and 0 < res.fetch_s < 10
