"""The DICOM health check's PDU parsers, fuzzed with hypothesis: whatever a
peer sends gives a value or a ProbeError, never another exception; and
check_dicom against a peer (on loopback) that answers arbitrary bytes
returns (False, reason), or (True, ...) for a proper C-ECHO-RSP, within its
timeout, never raising."""

import socket
import struct
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyfwd.control.health import dicom
from pyfwd.control.health.connection import ProbeError
from pyfwd.control.health.spec import HealthSpec

from .fuzzing import bounded, mutations


def _item(t, v):
    return struct.pack(">BBH", t, 0, len(v)) + v


def _ac_body(max_pdu=32768):
    pc = bytes([1, 0, 0, 0]) + _item(0x40, dicom.IMPLICIT_VR_LE.encode())
    return (struct.pack(">HH", 1, 0) + b"ANY-SCP".ljust(16)
            + b"PYFWD".ljust(16) + bytes(32)
            + _item(0x10, dicom.APPLICATION_CONTEXT.encode())
            + _item(0x21, pc)
            + _item(0x50, _item(0x51, struct.pack(">I", max_pdu))))


def _pdu(t, body):
    return struct.pack(">BBI", t, 0, len(body)) + body


ECHO_RSP = dicom.build_command_set({
    0x0002: b"1.2.840.10008.1.1\0", 0x0100: struct.pack("<H", 0x8030),
    0x0120: struct.pack("<H", 1), 0x0800: struct.pack("<H", 0x0101),
    0x0900: struct.pack("<H", 0)})
P_DATA_BODY = struct.pack(">IBB", 2 + len(ECHO_RSP), 1, 0x03) + ECHO_RSP
AC = _pdu(2, _ac_body())
GOOD_PEER = AC + _pdu(4, P_DATA_BODY) + _pdu(6, bytes(4))


@bounded(500)
@given(mutations([GOOD_PEER[:6], AC[:6]], max_tail=4))
def test_pdu_header(data):
    try:
        pdu_type, length = dicom.parse_pdu_header(data)
    except ProbeError:
        return
    assert 1 <= pdu_type <= 7 and 0 <= length <= dicom.DICOM_PDU_LIMIT


@bounded(500)
@given(st.sampled_from([2, 3, 7, 6]), mutations([_ac_body(), bytes(4)]))
def test_associate_response(pdu_type, body):
    try:
        max_pdu = dicom.parse_associate_response(pdu_type, body)
    except ProbeError:
        return
    assert pdu_type == 2 and isinstance(max_pdu, int) and max_pdu >= 0


@bounded(500)
@given(mutations([P_DATA_BODY, ECHO_RSP]))
def test_p_data_and_command_set(body):
    try:
        pdvs = dicom.parse_p_data(body)
    except ProbeError:
        pdvs = [(1, 3, body)]
    for _, _, data in pdvs:
        try:
            dicom.parse_echo_rsp(data)
        except ProbeError:
            pass
    for text in (dicom.describe_reject(body), dicom.describe_abort(body)):
        assert isinstance(text, str)


@pytest.fixture(scope="module")
def peer():
    """A DICOM 'peer' on loopback: each connection gets the next answer
    (bytes) after the client's first bytes, then the peer closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.1)     # accept() wakes to see stop
    answers = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.recv(65536)
                    conn.sendall(answers.pop(0) if answers else b"")
                    conn.shutdown(socket.SHUT_WR)
                    conn.recv(65536)    # the client's abort or release
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], answers
    stop.set()
    srv.close()
    t.join(timeout=2)


SPEC = HealthSpec(type="dicom", timeout=0.5)


@bounded(60)
@given(mutations([GOOD_PEER, AC], max_tail=32))
def test_check_dicom_against_any_peer(peer, answer):
    import ipaddress
    port, answers = peer
    answers.append(answer)
    t0 = time.monotonic()
    ok, detail = dicom.check_dicom(SPEC, ipaddress.ip_address("127.0.0.1"),
                                   port)
    assert time.monotonic() - t0 < SPEC.timeout + 1.0
    assert isinstance(ok, bool) and isinstance(detail, str) and detail
    if ok:      # a C-ECHO-RSP with status success came before anything odd
        assert answer[:1] == b"\x02"


def test_check_dicom_the_good_peer(peer):
    import ipaddress
    port, answers = peer
    answers.append(GOOD_PEER)
    ok, detail = dicom.check_dicom(SPEC, ipaddress.ip_address("127.0.0.1"),
                                   port)
    assert ok, detail
