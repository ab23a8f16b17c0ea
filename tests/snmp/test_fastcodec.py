"""The lean codec and pysnmp decode the same bytes to the same values; garbage is an error."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers.snmpd import SnmpPeer
from pyasn1.codec.ber import decoder, encoder
from pyasn1.type import univ
from pysnmp.proto import api, rfc1902, rfc1905

from agents.snmp.client import to_varbind
from agents.snmp.errors import SnmpDecodeError
from agents.snmp.fastcodec import (
    GET,
    GETBULK,
    RESPONSE,
    decode_scoped_pdu,
    decode_v2c,
    decode_v3,
    enc_oid,
    enc_pdu,
    encode_scoped_pdu,
    encode_v2c,
    encode_v3,
)
from agents.snmp.values import (
    COUNTER32,
    COUNTER64,
    END_OF_MIB_VIEW,
    GAUGE32,
    INTEGER,
    IP_ADDRESS,
    NO_SUCH_INSTANCE,
    NO_SUCH_OBJECT,
    NULL,
    OBJECT_ID,
    OCTET_STRING,
    OPAQUE,
    TIMETICKS,
)

P = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]

oids = st.builds(
    lambda a, b, rest: (a, b, *rest),
    st.integers(0, 1), st.integers(0, 39), st.lists(st.integers(0, 2**32 - 1), max_size=14),
) | st.builds(lambda b, rest: (2, b, *rest), st.integers(0, 2**20),
              st.lists(st.integers(0, 2**32 - 1), max_size=6))

u32 = st.integers(0, 2**32 - 1)
values = st.one_of(
    st.tuples(st.just(INTEGER), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just(OCTET_STRING), st.binary(max_size=300)),
    st.tuples(st.just(OBJECT_ID), oids),
    st.tuples(st.just(IP_ADDRESS), st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(COUNTER32), u32),
    st.tuples(st.just(GAUGE32), u32),
    st.tuples(st.just(TIMETICKS), u32),
    st.tuples(st.just(OPAQUE), st.binary(max_size=20)),
    st.tuples(st.just(COUNTER64), st.integers(0, 2**64 - 1)),
    st.tuples(st.sampled_from([NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW]),
              st.none()),
)

_CLS = {INTEGER: rfc1902.Integer32, OCTET_STRING: rfc1902.OctetString,
        OBJECT_ID: rfc1902.ObjectName, IP_ADDRESS: rfc1902.IpAddress,
        COUNTER32: rfc1902.Counter32, GAUGE32: rfc1902.Gauge32, TIMETICKS: rfc1902.TimeTicks,
        OPAQUE: rfc1902.Opaque, COUNTER64: rfc1902.Counter64}
_EXC = {NULL: univ.Null(""), NO_SUCH_OBJECT: rfc1905.noSuchObject,
        NO_SUCH_INSTANCE: rfc1905.noSuchInstance, END_OF_MIB_VIEW: rfc1905.endOfMibView}


def pysnmp_encode(community: bytes, rid: int, est: int, eix: int, vbs) -> bytes:
    """The reference encoder: pysnmp's own message objects."""
    pdu = P.ResponsePDU()
    P.apiPDU.set_defaults(pdu)
    P.apiPDU.set_request_id(pdu, rid)
    P.apiPDU.set_error_status(pdu, est)
    P.apiPDU.set_error_index(pdu, eix)
    P.apiPDU.set_varbinds(pdu, [
        (o, _EXC[t] if t in _EXC else _CLS[t](v)) for o, (t, v) in vbs])
    msg = P.Message()
    P.apiMessage.set_defaults(msg)
    P.apiMessage.set_community(msg, community)
    P.apiMessage.set_pdu(msg, pdu)
    return encoder.encode(msg)


def pysnmp_decode(data: bytes):
    msg, rest = decoder.decode(data, asn1Spec=P.Message())
    assert not rest
    pdu = P.apiMessage.get_pdu(msg)
    vbs = [to_varbind(o, v) for o, v in P.apiPDU.get_varbinds(pdu)]
    return (bytes(P.apiMessage.get_community(msg)), int(P.apiPDU.get_request_id(pdu)),
            int(pdu.getComponentByPosition(1)), int(pdu.getComponentByPosition(2)), vbs)


def fast_decode(data: bytes):
    m = decode_v2c(data)
    return (m.community, m.pdu.request_id, m.pdu.error_status, m.pdu.error_index,
            m.pdu.varbinds)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(community=st.binary(min_size=1, max_size=40), rid=st.integers(0, 2**31 - 1),
       est=st.integers(0, 18), eix=st.integers(0, 50),
       vbs=st.lists(st.tuples(oids, values), max_size=30))
def test_same_values_as_pysnmp(community, rid, est, eix, vbs) -> None:
    data = pysnmp_encode(community, rid, est, eix, vbs)
    assert fast_decode(data) == pysnmp_decode(data)


@settings(max_examples=120, deadline=None)
@given(oid_list=st.lists(oids, min_size=1, max_size=10), rid=st.integers(0, 2**31 - 1),
       rep=st.integers(0, 200))
def test_our_requests_decode_in_pysnmp(oid_list, rid, rep) -> None:
    data = encode_v2c(b"public", enc_pdu(GETBULK, rid, oid_list, max_repetitions=rep))
    msg, rest = decoder.decode(data, asn1Spec=P.Message())
    pdu = P.apiMessage.get_pdu(msg)
    assert not rest and int(P.apiPDU.get_request_id(pdu)) == rid
    assert int(pdu["max-repetitions"]) == rep
    assert [tuple(o) for o, _ in P.apiPDU.get_varbinds(pdu)] == oid_list


@settings(max_examples=250, deadline=None)
@given(vbs=st.lists(st.tuples(oids, values), min_size=1, max_size=8), data=st.data())
def test_malformed_input_is_a_decode_error(vbs, data) -> None:
    good = pysnmp_encode(b"public", 7, 0, 0, vbs)
    how = data.draw(st.sampled_from(["truncate", "flip", "insert", "random"]))
    if how == "truncate":
        bad = good[: data.draw(st.integers(0, len(good) - 1))]
    elif how == "flip":
        i = data.draw(st.integers(0, len(good) - 1))
        bad = good[:i] + bytes([good[i] ^ data.draw(st.integers(1, 255))]) + good[i + 1:]
    elif how == "insert":
        i = data.draw(st.integers(0, len(good)))
        bad = good[:i] + data.draw(st.binary(min_size=1, max_size=4)) + good[i:]
    else:
        bad = data.draw(st.binary(max_size=200))
    try:
        ours = fast_decode(bad)
    except SnmpDecodeError:
        return
    # it decoded: then it is well-formed enough that pysnmp must agree on every value
    assert ours == pysnmp_decode(bad)


@pytest.mark.parametrize("bad", [b"", b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x03\x02\x01",
                                 bytes.fromhex("3006020101040140"),
                                 bytes.fromhex("3081"), bytes.fromhex("302902010304067075")])
def test_short_garbage(bad: bytes) -> None:
    with pytest.raises(SnmpDecodeError):
        decode_v2c(bad)


def test_v3_message_is_refused_by_the_v2c_decoder() -> None:
    msg = bytes.fromhex("3011020103") + b"\x30\x00" * 6
    with pytest.raises(SnmpDecodeError):
        decode_v2c(msg)


def test_oid_encoding_matches_pysnmp() -> None:
    for o in [(1, 3, 6, 1, 4, 1, 2**32 - 1), (2, 999, 3), (0, 0), (1, 39, 127, 128, 16383)]:
        assert enc_oid(o) == encoder.encode(univ.ObjectIdentifier(o))


def test_captured_snmpd_responses_agree(snmpd: SnmpPeer) -> None:
    """Bytes a real snmpd sent: both decoders read them the same."""
    captured = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        reqs = [enc_pdu(GET, 1, [(1, 3, 6, 1, 2, 1, 1, 1, 0), (1, 3, 6, 1, 2, 1, 1, 3, 0),
                                 (1, 3, 6, 1, 2, 1, 1, 9, 9, 9)]),
                enc_pdu(GETBULK, 2, [(1, 3, 6, 1, 2, 1, 2, 2, 1, 9)], max_repetitions=60),
                enc_pdu(GETBULK, 3, [(1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6)], max_repetitions=40),
                enc_pdu(GETBULK, 4, [(1, 3, 6, 1, 2, 1, 25)], max_repetitions=50),
                enc_pdu(GETBULK, 5, [(1, 3, 6, 1, 6, 3, 99)], max_repetitions=5)]
        for r in reqs:
            s.sendto(encode_v2c(b"public", r), (snmpd.host, snmpd.port))
            captured.append(s.recv(65535))
    tags = set()
    for data in captured:
        ours = fast_decode(data)
        assert ours == pysnmp_decode(data)
        assert decode_v2c(data).pdu.type == RESPONSE
        tags |= {t for _, t, _ in ours[4]}
    # the capture exercised the interesting types, including noSuchObject and endOfMibView
    assert {OCTET_STRING, TIMETICKS, COUNTER32, COUNTER64, GAUGE32, INTEGER,
            END_OF_MIB_VIEW} <= tags


# -- v3 ---------------------------------------------------------------------

def pysnmp_v3_encode(msg_id, flags, engine_id, boots, etime, user, auth, priv, vbs) -> bytes:
    from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message
    from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters

    sp = UsmSecurityParameters()
    for k, v in (("msgAuthoritativeEngineId", engine_id), ("msgAuthoritativeEngineBoots", boots),
                 ("msgAuthoritativeEngineTime", etime), ("msgUserName", user),
                 ("msgAuthenticationParameters", auth), ("msgPrivacyParameters", priv)):
        sp[k] = v
    msg = SNMPv3Message()
    msg["msgVersion"] = 3
    hd = msg["msgGlobalData"]
    hd["msgID"], hd["msgMaxSize"], hd["msgFlags"], hd["msgSecurityModel"] = (
        msg_id, 65507, bytes([flags]), 3)
    msg["msgSecurityParameters"] = encoder.encode(sp)
    pdu = P.ResponsePDU()
    P.apiPDU.set_defaults(pdu)
    P.apiPDU.set_request_id(pdu, msg_id)
    P.apiPDU.set_varbinds(pdu, [(o, _EXC[t] if t in _EXC else _CLS[t](v)) for o, (t, v) in vbs])
    scoped = msg["msgData"]["plaintext"]
    scoped["contextEngineId"] = engine_id
    scoped["contextName"] = b"ctx"
    scoped["data"]["response"] = pdu
    return encoder.encode(msg)


def pysnmp_v3_decode(data: bytes):
    from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message
    from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters

    msg, rest = decoder.decode(data, asn1Spec=SNMPv3Message())
    assert not rest
    sp, rest = decoder.decode(bytes(msg["msgSecurityParameters"]),
                              asn1Spec=UsmSecurityParameters())
    assert not rest
    scoped = msg["msgData"]["plaintext"]
    pdu = scoped["data"].getComponent()
    return (int(msg["msgGlobalData"]["msgID"]), bytes(msg["msgGlobalData"]["msgFlags"])[0],
            bytes(sp["msgAuthoritativeEngineId"]), int(sp["msgAuthoritativeEngineBoots"]),
            int(sp["msgAuthoritativeEngineTime"]), bytes(sp["msgUserName"]),
            bytes(sp["msgAuthenticationParameters"]), bytes(sp["msgPrivacyParameters"]),
            bytes(scoped["contextEngineId"]), bytes(scoped["contextName"]),
            int(pdu.getComponentByPosition(0)),
            [to_varbind(o, v) for o, v in P.apiPDU.get_varbinds(pdu)])


def fast_v3_decode(data: bytes):
    m = decode_v3(data)
    ceid, cname, pdu = decode_scoped_pdu(m.data)
    assert data[m.auth_span[0]:m.auth_span[1]] == m.auth_params
    return (m.msg_id, m.flags, m.engine_id, m.boots, m.time, m.user, m.auth_params,
            m.priv_params, ceid, cname, pdu.request_id, pdu.varbinds)


v3_args = {
    "msg_id": st.integers(0, 2**31 - 1), "flags": st.sampled_from([0, 1, 3, 4, 5, 7]),
    "engine_id": st.binary(min_size=5, max_size=32), "boots": st.integers(0, 2**31 - 1),
    "etime": st.integers(0, 2**31 - 1), "user": st.binary(max_size=32),
    "auth": st.sampled_from([b"", b"\x00" * 12, b"\x11" * 24, b"\x22" * 48]),
    "priv": st.sampled_from([b"", b"saltsalt"]),
    "vbs": st.lists(st.tuples(oids, values), max_size=10),
}


@settings(max_examples=150, deadline=None)
@given(**v3_args)
def test_v3_same_values_as_pysnmp(msg_id, flags, engine_id, boots, etime, user, auth, priv,
                                  vbs) -> None:
    data = pysnmp_v3_encode(msg_id, flags, engine_id, boots, etime, user, auth, priv, vbs)
    assert fast_v3_decode(data) == pysnmp_v3_decode(data)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), **v3_args)
def test_v3_malformed_is_a_decode_error(data, msg_id, flags, engine_id, boots, etime, user,
                                        auth, priv, vbs) -> None:
    good = pysnmp_v3_encode(msg_id, flags, engine_id, boots, etime, user, auth, priv, vbs)
    if data.draw(st.booleans()):
        bad = good[: data.draw(st.integers(0, len(good) - 1))]
    else:
        i = data.draw(st.integers(0, len(good) - 1))
        bad = good[:i] + bytes([good[i] ^ data.draw(st.integers(1, 255))]) + good[i + 1:]
    try:
        fast_v3_decode(bad)
    except SnmpDecodeError:
        return


def test_v3_encoder_output_decodes_in_pysnmp() -> None:
    scoped = encode_scoped_pdu(b"\x80\x00\x1f\x88\x04", b"ctx", enc_pdu(GETBULK, 9, [(1, 3, 6)],
                                                                          max_repetitions=7))
    msg, off = encode_v3(9, 7, b"\x80\x00\x1f\x88\x04", 5, 600, b"noc", 24, b"", scoped, False)
    assert msg[off:off + 24] == b"\x00" * 24
    from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message
    m, rest = decoder.decode(msg, asn1Spec=SNMPv3Message())
    assert not rest and int(m["msgGlobalData"]["msgID"]) == 9
    pdu = m["msgData"]["plaintext"]["data"].getComponent()
    assert int(pdu["max-repetitions"]) == 7
