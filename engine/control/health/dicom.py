"""The DICOM health check: a C-ECHO (Verification) to a real server's AE.

A-ASSOCIATE-RQ, C-ECHO-RQ, C-ECHO-RSP with status Success, A-RELEASE,
built and parsed here with ``struct``: PS3.8 section 9.3 (upper layer
PDUs, all integers big-endian) and PS3.7 section 9.3.5 / annex E (the
C-ECHO command set, Implicit VR Little Endian).  The builders and parsers
are pure (bytes in, bytes or values out; ProbeError for what a peer got
wrong); ``check_dicom`` talks to a peer.
"""

import struct
import time
import uuid

from .connection import (ProbeError, converse,
                         oserror_reason)

# The largest PDU we accept from a DICOM peer while echoing (an A-ASSOCIATE-AC
# is a few hundred bytes; anything near this is not a PACS talking to us).
DICOM_PDU_LIMIT = 1 << 20

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
# A UID under 2.25 (PS3.5 B.2: derived from a UUID), fixed for pyfwd.
IMPLEMENTATION_CLASS_UID = "2.25." + str(
    uuid.uuid5(uuid.NAMESPACE_URL, "https://pyfwd/health/dicom").int)
IMPLEMENTATION_VERSION = "PYFWD_HEALTH"
MAX_PDU_RECEIVE = 16384

PDU_ASSOCIATE_RQ = 0x01
PDU_ASSOCIATE_AC = 0x02
PDU_ASSOCIATE_RJ = 0x03
PDU_P_DATA_TF = 0x04
PDU_RELEASE_RQ = 0x05
PDU_RELEASE_RP = 0x06
PDU_ABORT = 0x07

C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
NO_DATA_SET = 0x0101

# (result, source, reason) texts of an A-ASSOCIATE-RJ (PS3.8 table 9-21).
_RJ_SOURCE = {1: "service user", 2: "service provider (ACSE)",
              3: "service provider (presentation)"}
_RJ_REASON = {
    (1, 1): "no reason given", (1, 2): "application context not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 1): "no reason given", (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion", (3, 2): "local limit exceeded",
}
_PC_RESULT = {1: "user rejection", 2: "no reason (provider rejection)",
              3: "abstract syntax not supported",
              4: "transfer syntaxes not supported"}
_ABORT_REASON = {0: "not specified", 1: "unrecognized PDU",
                 2: "unexpected PDU", 4: "unrecognized PDU parameter",
                 5: "unexpected PDU parameter", 6: "invalid PDU parameter"}


def _item(item_type, value):
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _pdu(pdu_type, body):
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def _ae16(title):
    return title.encode("ascii").ljust(16, b" ")


def build_associate_rq(called_ae, calling_ae, context_id=1,
                       max_pdu=MAX_PDU_RECEIVE):
    """A-ASSOCIATE-RQ proposing one presentation context: Verification with
    Implicit VR Little Endian.  Returns the whole PDU (bytes).

    Layout: type 0x01, reserved, length (u32); protocol version 1 (u16),
    reserved (u16); called AE, calling AE (16 bytes each, space padded);
    32 reserved bytes; items 0x10 (application context), 0x20 (presentation
    context: id, 3 reserved, sub-items 0x30 abstract and 0x40 transfer
    syntax), 0x50 (user information: 0x51 max length, 0x52 implementation
    class UID, 0x55 implementation version).  UIDs in items are not padded.
    """
    pc = (struct.pack(">BBBB", context_id, 0, 0, 0)
          + _item(0x30, VERIFICATION_SOP_CLASS.encode())
          + _item(0x40, IMPLICIT_VR_LE.encode()))
    user = (_item(0x51, struct.pack(">I", max_pdu))
            + _item(0x52, IMPLEMENTATION_CLASS_UID.encode())
            + _item(0x55, IMPLEMENTATION_VERSION.encode()))
    body = (struct.pack(">HH", 1, 0) + _ae16(called_ae) + _ae16(calling_ae)
            + bytes(32) + _item(0x10, APPLICATION_CONTEXT.encode())
            + _item(0x20, pc) + _item(0x50, user))
    return _pdu(PDU_ASSOCIATE_RQ, body)


def _element(tag_elem, value):
    # Implicit VR Little Endian, group 0000: tag (2 x u16), length (u32).
    return struct.pack("<HHI", 0x0000, tag_elem, len(value)) + value


def build_command_set(elements):
    """Encode a group 0000 command set: {element number: value bytes} (sorted,
    with CommandGroupLength (0000,0000) first).  Returns bytes."""
    rest = b"".join(_element(e, v) for e, v in sorted(elements.items())
                    if e != 0x0000)
    return _element(0x0000, struct.pack("<I", len(rest))) + rest


def _ui(uid):
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def build_echo_rq(message_id=1, context_id=1):
    """P-DATA-TF carrying a C-ECHO-RQ command set in one PDV (message control
    header 0x03: command, last fragment).  Returns the whole PDU."""
    cmd = build_command_set({
        0x0002: _ui(VERIFICATION_SOP_CLASS),          # AffectedSOPClassUID
        0x0100: struct.pack("<H", C_ECHO_RQ),         # CommandField
        0x0110: struct.pack("<H", message_id),        # MessageID
        0x0800: struct.pack("<H", NO_DATA_SET),       # CommandDataSetType
    })
    pdv = struct.pack(">IBB", 2 + len(cmd), context_id, 0x03) + cmd
    return _pdu(PDU_P_DATA_TF, pdv)


def build_release_rq():
    """A-RELEASE-RQ: type 0x05, length 4, four reserved bytes."""
    return _pdu(PDU_RELEASE_RQ, bytes(4))


def build_abort():
    """A-ABORT from the service user (source 0, reason 0)."""
    return _pdu(PDU_ABORT, bytes(4))


def parse_pdu_header(header):
    """Split a 6-byte PDU header.  Returns (pdu_type, length).  Raises
    ProbeError for a type that is not a DICOM PDU or an absurd length (a
    peer that is not speaking DICOM)."""
    if len(header) != 6:
        raise ProbeError(f"short PDU header ({len(header)} bytes)")
    pdu_type, _, length = struct.unpack(">BBI", header)
    if not PDU_ASSOCIATE_RQ <= pdu_type <= PDU_ABORT:
        raise ProbeError(f"not DICOM: PDU type 0x{pdu_type:02x} "
                         f"({header!r})")
    if length > DICOM_PDU_LIMIT:
        raise ProbeError(f"not DICOM: PDU length {length}")
    return pdu_type, length


def _items(data, where):
    """Yield (item_type, value) of a run of PS3.8 items."""
    off = 0
    while off < len(data):
        if off + 4 > len(data):
            raise ProbeError(f"truncated item in {where}")
        item_type, _, length = struct.unpack_from(">BBH", data, off)
        value = data[off + 4:off + 4 + length]
        if len(value) != length:
            raise ProbeError(f"truncated item 0x{item_type:02x} in {where}")
        yield item_type, value
        off += 4 + length


def describe_reject(body):
    """A short text of an A-ASSOCIATE-RJ body (4 bytes)."""
    if len(body) < 4:
        return "A-ASSOCIATE-RJ (truncated)"
    _, result, source, reason = struct.unpack_from(">BBBB", body)
    why = _RJ_REASON.get((source, reason), f"reason {reason}")
    kind = {1: "permanent", 2: "transient"}.get(result, f"result {result}")
    return (f"A-ASSOCIATE-RJ: {why} ({kind}, by "
            f"{_RJ_SOURCE.get(source, f'source {source}')})")


def describe_abort(body):
    """A short text of an A-ABORT body (4 bytes)."""
    if len(body) < 4:
        return "A-ABORT"
    source, reason = body[2], body[3]
    if source == 2:
        return f"A-ABORT by provider: {_ABORT_REASON.get(reason, reason)}"
    return "A-ABORT by peer"


def parse_associate_response(pdu_type, body, context_id=1):
    """Judge the answer to our A-ASSOCIATE-RQ.

    Returns the peer's maximum PDU length (0 = unlimited) if it is an
    A-ASSOCIATE-AC accepting presentation context ``context_id`` with
    Implicit VR Little Endian.  Raises ProbeError with a short reason for an
    A-ASSOCIATE-RJ, an A-ABORT, a rejected context or anything malformed.
    """
    if pdu_type == PDU_ASSOCIATE_RJ:
        raise ProbeError(describe_reject(body))
    if pdu_type == PDU_ABORT:
        raise ProbeError(describe_abort(body))
    if pdu_type != PDU_ASSOCIATE_AC:
        raise ProbeError(f"expected A-ASSOCIATE-AC, got PDU type "
                         f"0x{pdu_type:02x}")
    if len(body) < 68:
        raise ProbeError(f"A-ASSOCIATE-AC too short ({len(body)} bytes)")
    max_pdu = 0
    result = None
    for item_type, value in _items(body[68:], "A-ASSOCIATE-AC"):
        if item_type == 0x21 and len(value) >= 4 and value[0] == context_id:
            result = value[2]
            if result == 0:
                ts = [v for t, v in _items(value[4:], "presentation context")
                      if t == 0x40]
                if ts and ts[0].rstrip(b"\0 ").decode("ascii", "replace") \
                        != IMPLICIT_VR_LE:
                    raise ProbeError(f"peer chose transfer syntax "
                                     f"{ts[0].decode('ascii', 'replace')}")
        elif item_type == 0x50:
            for sub, sval in _items(value, "user information"):
                if sub == 0x51 and len(sval) == 4:
                    (max_pdu,) = struct.unpack(">I", sval)
    if result is None:
        raise ProbeError("A-ASSOCIATE-AC without our presentation context")
    if result != 0:
        raise ProbeError(f"Verification rejected: "
                         f"{_PC_RESULT.get(result, f'result {result}')}")
    return max_pdu


def parse_p_data(body):
    """Split a P-DATA-TF body into PDVs.  Returns a list of (context_id,
    control, data); control bit 0 = command, bit 1 = last fragment.
    Raises ProbeError if the PDV lengths do not add up."""
    pdvs = []
    off = 0
    while off < len(body):
        if off + 6 > len(body):
            raise ProbeError("truncated PDV")
        (length,) = struct.unpack_from(">I", body, off)
        if length < 2 or off + 4 + length > len(body):
            raise ProbeError(f"bad PDV length {length}")
        pdvs.append((body[off + 4], body[off + 5],
                     body[off + 6:off + 4 + length]))
        off += 4 + length
    return pdvs


def parse_command_set(data):
    """Decode an Implicit VR Little Endian command set.  Returns {(group,
    element): value bytes}.  Raises ProbeError if malformed."""
    out = {}
    off = 0
    while off < len(data):
        if off + 8 > len(data):
            raise ProbeError("truncated command element")
        group, elem, length = struct.unpack_from("<HHI", data, off)
        if off + 8 + length > len(data):
            raise ProbeError(f"command element ({group:04x},{elem:04x}) "
                             "overruns")
        out[(group, elem)] = data[off + 8:off + 8 + length]
        off += 8 + length
    return out


def _us(cmd, elem):
    value = cmd.get((0x0000, elem))
    if value is None or len(value) != 2:
        return None
    return struct.unpack("<H", value)[0]


def parse_echo_rsp(data, message_id=1):
    """Judge a complete command set received after our C-ECHO-RQ.  Returns
    None if it is a C-ECHO-RSP with Status 0x0000; raises ProbeError with a
    short reason otherwise."""
    cmd = parse_command_set(data)
    field = _us(cmd, 0x0100)
    if field != C_ECHO_RSP:
        raise ProbeError("expected C-ECHO-RSP, got command field "
                         + ("none" if field is None else f"0x{field:04x}"))
    responding = _us(cmd, 0x0120)
    if responding is not None and responding != message_id:
        raise ProbeError(f"C-ECHO-RSP answers message {responding}, "
                         f"not {message_id}")
    status = _us(cmd, 0x0900)
    if status is None:
        raise ProbeError("C-ECHO-RSP without Status")
    if status != 0x0000:
        raise ProbeError(f"C-ECHO-RSP status 0x{status:04x}")


def _read_pdu(conv, what):
    pdu_type, length = parse_pdu_header(conv.recv_exact(6, what))
    return pdu_type, conv.recv_exact(length, what)


def check_dicom(spec, address, port):
    """C-ECHO the DICOM application entity at address:port (called AE
    spec.called_ae, calling AE spec.calling_ae), all within spec.timeout.

    Returns (True, detail) once a C-ECHO-RSP with status Success arrived; the
    A-RELEASE that follows is done in the time left, and its failure is only
    mentioned in the detail (the AE has already proved it works).  Returns
    (False, reason) for a refused connection, a timeout, an A-ASSOCIATE-RJ,
    an A-ABORT, a rejected presentation context, a failing status, or a peer
    that is not DICOM; never raises for a failing peer.
    """
    t0 = time.monotonic()
    return converse(address, port, spec.timeout,
                    lambda conv: _echo(conv, spec, t0))


def _echo(conv, spec, t0):
    """The association of check_dicom: an A-ABORT frees the peer's
    association when it ends early."""
    associated = False
    try:
        conv.phase = "associate"
        conv.send(build_associate_rq(spec.called_ae, spec.calling_ae))
        max_pdu = parse_associate_response(
            *_read_pdu(conv, "after A-ASSOCIATE-RQ"))
        associated = True
        conv.phase = "C-ECHO"
        echo = build_echo_rq(message_id=1)
        if max_pdu and len(echo) - 6 > max_pdu:
            raise ProbeError(f"peer's max PDU length {max_pdu} is too small")
        conv.send(echo)
        command = b""
        while True:
            pdu_type, body = _read_pdu(conv, "after C-ECHO-RQ")
            if pdu_type == PDU_ABORT:
                associated = False
                raise ProbeError(describe_abort(body))
            if pdu_type != PDU_P_DATA_TF:
                raise ProbeError(f"expected P-DATA-TF, got PDU type "
                                 f"0x{pdu_type:02x}")
            last = False
            for _, control, data in parse_p_data(body):
                if control & 0x01:
                    command += data
                    last = last or bool(control & 0x02)
            if last:
                break
            if len(command) > DICOM_PDU_LIMIT:
                raise ProbeError("C-ECHO-RSP too long")
        parse_echo_rsp(command, message_id=1)
        ms = (time.monotonic() - t0) * 1e3
        associated = False
        return True, f"C-ECHO ok in {ms:.1f} ms" + _release(conv)
    finally:
        if associated:                          # free the peer's association
            try:
                conv.sock.settimeout(0.1)
                conv.sock.sendall(build_abort())
            except OSError:
                pass


def _release(conv):
    """A-RELEASE in the time left: "" when answered as it should be, else
    what went wrong, in parentheses (the echo has succeeded already)."""
    try:
        conv.send(build_release_rq())
        pdu_type, _ = _read_pdu(conv, "after A-RELEASE-RQ")
    except (OSError, ProbeError) as exc:
        why = (oserror_reason(exc, conv.deadline)
               if isinstance(exc, OSError) else str(exc))
        return f" (release: {why})"
    if pdu_type != PDU_RELEASE_RP:
        return f" (release answered with PDU type 0x{pdu_type:02x})"
    return ""
