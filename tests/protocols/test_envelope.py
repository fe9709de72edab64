"""The COSE_Sign1 envelope: the IETF vector, the sitewatt profile, and every way to break it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.envelope import (
    ALG_EDDSA,
    Keyring,
    Signer,
    seal,
    sign1,
    unseal,
    verify1,
)
from protocols.errors import (
    BadSignatureError,
    EnvelopeError,
    MalformedError,
    UnknownKeyError,
    WrongAlgorithmError,
    WrongTagError,
)
from protocols.keys import kid
from protocols.messages import TelemetryBatch, encode
from protocols.topics import DEFAULT_TOPICS
from protocols.types import Quality, Reading

REPO = Path(__file__).resolve().parents[2]
VECTOR = REPO.parent / "shared" / "vectors" / "cose" / "eddsa-sig-01.json"
TOPIC = "sitewatt/v1/site-001/telemetry"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # throwaway test key
SIGNER = Signer(KEY)
KEYRING = Keyring([KEY.public_key()])


def _vector() -> dict[str, Any]:
    if not VECTOR.exists():
        pytest.fail(f"COSE vector missing at {VECTOR} (shared/ must be a sibling of the repo)")
    data: dict[str, Any] = json.loads(VECTOR.read_text())
    return data


def test_reproduces_ietf_eddsa_vector_byte_for_byte() -> None:
    v = _vector()
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["input"]["sign0"]["key"]["d_hex"]))
    assert key.public_key().public_bytes_raw().hex() == v["input"]["sign0"]["key"]["x_hex"]
    out = sign1(
        v["input"]["plaintext"].encode(),
        key,
        protected={1: ALG_EDDSA, 3: 0},
        unprotected={4: b"11"},
    )
    assert out == bytes.fromhex(v["output"]["cbor"])


def test_verifies_ietf_vector() -> None:
    v = _vector()
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["input"]["sign0"]["key"]["d_hex"]))
    parts = verify1(bytes.fromhex(v["output"]["cbor"]), key.public_key())
    assert parts.payload == v["input"]["plaintext"].encode()
    assert parts.protected == {1: -8, 3: 0}
    assert parts.unprotected == {4: b"11"}


def test_seal_structure_matches_profile() -> None:
    data = SIGNER.seal({"type": "x", "n": 1}, TOPIC)
    tag = cbor2.loads(data)
    assert tag.tag == 18
    prot, unprot, payload, sig = tag.value
    assert cbor2.loads(prot) == {1: -8, 4: kid(KEY.public_key())}
    assert len(unprot) == 0
    assert cbor2.loads(payload) == {"type": "x", "n": 1}
    to_be_signed = cbor2.dumps(["Signature1", prot, TOPIC.encode(), payload])
    KEY.public_key().verify(sig, to_be_signed)  # raises if our Sig_structure differs from RFC's


def test_round_trip_returns_payload_and_kid() -> None:
    payload = {"type": "telemetry", "values": [1.5, True, None], "site": "s"}
    opened = unseal(seal(payload, SIGNER, TOPIC), TOPIC, KEYRING)
    assert opened.payload == payload
    assert opened.kid == SIGNER.kid
    assert cbor2.loads(opened.raw) == payload


def test_seal_bytes_equals_seal_of_map() -> None:
    payload = {"type": "x", "k": [1, 2]}
    assert SIGNER.seal_bytes(cbor2.dumps(payload), TOPIC) == SIGNER.seal(payload, TOPIC)


def test_message_moved_to_another_topic_fails() -> None:
    data = SIGNER.seal({"type": "x"}, TOPIC)
    with pytest.raises(BadSignatureError):
        unseal(data, "sitewatt/v1/site-002/telemetry", KEYRING)
    with pytest.raises(BadSignatureError):
        unseal(data, "sitewatt/v1/site-001/ack", KEYRING)


def test_every_flipped_bit_fails() -> None:
    data = SIGNER.seal({"type": "x", "v": 1}, TOPIC)
    assert len(data) < 120
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(EnvelopeError):
            unseal(bytes(flipped), TOPIC, KEYRING)


def test_unknown_kid() -> None:
    other = Signer(Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
    with pytest.raises(UnknownKeyError):
        unseal(other.seal({"type": "x"}, TOPIC), TOPIC, KEYRING)


def test_keyring_holds_two_keys_during_rotation() -> None:
    old, new = SIGNER, Signer(Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
    ring = Keyring([old.public_key, new.public_key])
    assert unseal(old.seal({"type": "x"}, TOPIC), TOPIC, ring).kid == old.kid
    assert unseal(new.seal({"type": "x"}, TOPIC), TOPIC, ring).kid == new.kid
    ring.remove(old.kid)
    assert old.kid not in ring and len(ring) == 1
    with pytest.raises(UnknownKeyError):
        unseal(old.seal({"type": "x"}, TOPIC), TOPIC, ring)


def test_wrong_algorithm() -> None:
    data = sign1(
        cbor2.dumps({"type": "x"}),
        KEY,
        protected={1: -7, 4: SIGNER.kid},  # ES256 claimed
        unprotected={},
        external_aad=TOPIC.encode(),
    )
    with pytest.raises(WrongAlgorithmError):
        unseal(data, TOPIC, KEYRING)


def test_wrong_tag() -> None:
    data = SIGNER.seal({"type": "x"}, TOPIC)
    as_sign = b"\xd8\x62" + data[1:]  # tag 98 (COSE_Sign) around the same array
    with pytest.raises(WrongTagError):
        unseal(as_sign, TOPIC, KEYRING)
    with pytest.raises(WrongTagError):
        unseal(data[1:], TOPIC, KEYRING)  # untagged


def test_unprotected_header_must_be_empty() -> None:
    data = sign1(
        cbor2.dumps({"type": "x"}),
        KEY,
        protected={1: -8, 4: SIGNER.kid},
        unprotected={4: SIGNER.kid},
        external_aad=TOPIC.encode(),
    )
    with pytest.raises(MalformedError):
        unseal(data, TOPIC, KEYRING)


def test_kid_only_in_unprotected_is_refused() -> None:
    data = sign1(cbor2.dumps({"type": "x"}), KEY, protected={1: -8}, unprotected={})
    with pytest.raises(MalformedError):
        unseal(data, "", KEYRING)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        cbor2.dumps({"a": 1}),
        cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""])),  # short signature
        cbor2.dumps(cbor2.CBORTag(18, [b"", {}, None, b"\x00" * 64])),  # detached payload
        cbor2.dumps(cbor2.CBORTag(18, [b"\x01", {}, b"", b"\x00" * 64])),  # protected not a map
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedError):
        unseal(data, TOPIC, KEYRING)


def test_trailing_bytes_refused() -> None:
    data = SIGNER.seal({"type": "x"}, TOPIC)
    with pytest.raises(MalformedError):
        unseal(data + b"\x00", TOPIC, KEYRING)


def test_payload_must_be_a_map() -> None:
    data = SIGNER.seal_bytes(cbor2.dumps([1, 2]), TOPIC)
    with pytest.raises(MalformedError):
        unseal(data, TOPIC, KEYRING)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_envelope_errors(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        unseal(data, TOPIC, KEYRING)


_cbor_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.binary(max_size=70)
    | st.text(max_size=10)
)
_cbor = st.recursive(
    _cbor_leaf,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.integers(-10, 10) | st.text(max_size=3), inner, max_size=4)
        | st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 4, 18, 24, 258, 1000]), inner)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_cbor, st.sampled_from([None, 18]))
def test_arbitrary_cbor_raises_only_envelope_errors(obj: Any, tag: int | None) -> None:
    try:
        data = cbor2.dumps(cbor2.CBORTag(tag, obj) if tag else obj)
    except Exception:
        return  # hypothesis built something cbor2 itself cannot encode
    with pytest.raises(EnvelopeError):
        unseal(data, TOPIC, KEYRING)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=64), _cbor)
def test_sign1_shaped_garbage_raises_only_envelope_errors(
    prot: bytes, sig: bytes, unprot: Any
) -> None:
    try:
        data = cbor2.dumps(cbor2.CBORTag(18, [prot, unprot, b"\xa0", sig]))
    except Exception:
        return
    with pytest.raises(EnvelopeError):
        unseal(data, TOPIC, KEYRING)


def test_protocol_doc_example_is_what_the_code_produces() -> None:
    """docs/protocol.md shows a real signed message; regenerate it and find it there."""
    seed = hashlib.sha256(b"sitewatt throwaway test key").digest()
    signer = Signer(Ed25519PrivateKey.from_private_bytes(seed))
    t = 1767225600000
    readings = (
        Reading(t, "rect1", "dc_voltage", 53.5),
        Reading(t, "rect1", "load_current", 41.25),
        Reading(t, "batt1", "soc", 87),
        Reading(t + 40, "ac1", "room_temp", None, Quality.COMM_ERROR),
    )
    batch = TelemetryBatch("site-001", "7f3a9c", 1042, t + 1200, readings, False)
    data = signer.seal_bytes(encode(batch), DEFAULT_TOPICS.telemetry("site-001"))
    doc = (REPO / "docs" / "protocol.md").read_text()
    assert data.hex() in "".join(doc.split()), "regenerate the example in docs/protocol.md"
    assert signer.kid.hex() in doc


def test_seal_accepts_a_bare_private_key() -> None:
    assert seal({"type": "x"}, KEY, TOPIC) == seal({"type": "x"}, SIGNER, TOPIC)
