"""The signed envelope: COSE_Sign1 (RFC 9052, CBOR tag 18) with Ed25519, the MQTT topic as AAD.

sitewatt's profile of COSE_Sign1 (docs/protocol.md states it for other implementers):

    18([ protected = bstr .cbor {1: -8, 4: kid},   ; alg EdDSA, kid = SHA-256(raw pubkey)[:8]
         unprotected = {},                         ; always empty
         payload = bstr .cbor {"type": ..., ...},  ; one message map (protocols.messages)
         signature = bstr .size 64 ])              ; Ed25519 over the Sig_structure
    Sig_structure = ["Signature1", protected, external_aad = topic UTF-8, payload]

`sign1`/`verify1` are the general COSE primitives (any headers; used to prove the implementation
against the IETF vector). `seal`/`unseal` apply the profile and are what the agent and aggregator
call. `unseal` accepts only the exact deterministic encoding `seal` produces, so any change to the
bytes of a message — one flipped bit anywhere — is refused.

Hot path: the aggregator opens ~1000 batches/s. Public keys are loaded once into a `Keyring`;
`Signer` precomputes the protected header; the Sig_structure is assembled from byte slices.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.errors import (
    BadSignatureError,
    MalformedError,
    UnknownKeyError,
    WrongAlgorithmError,
    WrongTagError,
)
from protocols.keys import kid as key_id

COSE_SIGN1_TAG = 18
HEADER_ALG = 1
HEADER_KID = 4
ALG_EDDSA = -8
SIGNATURE_LEN = 64

_SIG1_CONTEXT = b"\x84\x6aSignature1"  # array(4), tstr "Signature1"
_EMPTY_MAP = b"\xa0"


def _head(major: int, n: int) -> bytes:
    """The shortest CBOR head for major type `major` and argument `n` (RFC 8949 §4.2.1)."""
    mt = major << 5
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((mt | 26,)) + n.to_bytes(4, "big")
    return bytes((mt | 27,)) + n.to_bytes(8, "big")


def _bstr(data: bytes) -> bytes:
    return _head(2, len(data)) + data


def _sig_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    return b"".join((_SIG1_CONTEXT, _bstr(protected), _bstr(external_aad), _bstr(payload)))


def _assemble(protected: bytes, unprotected: bytes, payload: bytes, signature: bytes) -> bytes:
    # d2 = tag 18, 84 = array of 4
    return b"".join((b"\xd2\x84", _bstr(protected), unprotected, _bstr(payload), _bstr(signature)))


def sign1(
    payload: bytes,
    key: Ed25519PrivateKey,
    *,
    protected: Mapping[int, Any],
    unprotected: Mapping[int, Any],
    external_aad: bytes = b"",
) -> bytes:
    """A tagged COSE_Sign1 message over `payload` with the given headers, Ed25519-signed.

    Headers are encoded by cbor2 in the order given (the IETF vectors use insertion order).
    """
    prot = cbor2.dumps(dict(protected)) if protected else b""
    unprot = cbor2.dumps(dict(unprotected))
    signature = key.sign(_sig_structure(prot, external_aad, payload))
    return _assemble(prot, unprot, payload, signature)


class Sign1(NamedTuple):
    """The parts of a verified COSE_Sign1 message."""

    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes


def _loads(data: bytes, what: str) -> Any:
    try:
        return cbor2.loads(data)
    # cbor2's semantic decoders (dates, decimals, bignums, sets…) raise a wide range of errors
    # on hostile input; all of it means "not our CBOR", and must not escape as anything else.
    except Exception as exc:
        raise MalformedError(f"{what} is not valid CBOR: {exc}") from exc


def _split(data: bytes) -> tuple[bytes, dict[Any, Any], bytes, dict[Any, Any], bytes, bytes]:
    """Parse a tagged COSE_Sign1 into (protected bytes, protected map, unprotected map, …).

    Returns (prot_bytes, prot_map, unprot_bytes, unprot_map, payload, signature).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    obj = _loads(data, "message")
    if not isinstance(obj, cbor2.CBORTag):
        raise WrongTagError("not a tagged COSE message")
    if obj.tag != COSE_SIGN1_TAG:
        raise WrongTagError(f"CBOR tag {obj.tag}, expected {COSE_SIGN1_TAG} (COSE_Sign1)")
    parts = obj.value
    if not isinstance(parts, list | tuple) or len(parts) != 4:
        raise MalformedError("COSE_Sign1 must be an array of 4")
    prot, unprot, payload, signature = parts
    if not isinstance(prot, bytes):
        raise MalformedError("protected header must be a byte string")
    if not isinstance(unprot, Mapping):
        raise MalformedError("unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise MalformedError("payload must be an attached byte string")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LEN:
        raise MalformedError("signature must be a 64-byte string")
    prot_map: Any = _loads(prot, "protected header") if prot else {}
    if not isinstance(prot_map, Mapping):
        raise MalformedError("protected header must encode a map")
    try:
        unprot_bytes = cbor2.dumps(unprot)
    except Exception as exc:  # a decoded value cbor2 cannot re-encode (exotic tags)
        raise MalformedError("unprotected header cannot be re-encoded") from exc
    # Only the one deterministic encoding is accepted: trailing bytes, non-shortest lengths or
    # other re-encodings of the same structure are refused, not silently normalised.
    if _assemble(prot, unprot_bytes, payload, signature) != data:
        raise MalformedError("not in deterministic encoding (or trailing bytes)")
    return prot, dict(prot_map), unprot_bytes, dict(unprot), payload, signature


def _check_alg(prot_map: Mapping[Any, Any]) -> None:
    alg = prot_map.get(HEADER_ALG)
    if type(alg) is not int or alg != ALG_EDDSA:
        raise WrongAlgorithmError(f"protected alg {alg!r}, expected EdDSA ({ALG_EDDSA})")


def _verify(public_key: Ed25519PublicKey, signature: bytes, to_be_signed: bytes) -> None:
    try:
        public_key.verify(signature, to_be_signed)
    except InvalidSignature as exc:
        raise BadSignatureError("signature does not verify (tampered, or another topic)") from exc


def verify1(data: bytes, public_key: Ed25519PublicKey, *, external_aad: bytes = b"") -> Sign1:
    """Verify a tagged COSE_Sign1 message (any headers, alg EdDSA) against one public key."""
    prot, prot_map, _, unprot_map, payload, signature = _split(data)
    _check_alg(prot_map)
    _verify(public_key, signature, _sig_structure(prot, external_aad, payload))
    return Sign1(prot_map, unprot_map, payload)


class Signer:
    """A private key with its kid and sitewatt protected header precomputed."""

    __slots__ = ("_protected", "key", "kid", "public_key")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.public_key = key.public_key()
        self.kid = key_id(self.public_key)
        self._protected = cbor2.dumps({HEADER_ALG: ALG_EDDSA, HEADER_KID: self.kid})

    def seal_bytes(self, payload: bytes, topic: str) -> bytes:
        """Sign an already CBOR-encoded payload map for publication on `topic`."""
        signature = self.key.sign(_sig_structure(self._protected, topic.encode(), payload))
        return _assemble(self._protected, _EMPTY_MAP, payload, signature)

    def seal(self, payload: Mapping[str, Any], topic: str) -> bytes:
        """Encode `payload` as a CBOR map and sign it for publication on `topic`."""
        return self.seal_bytes(cbor2.dumps(payload), topic)


def seal(payload: Mapping[str, Any], key: Signer | Ed25519PrivateKey, topic: str) -> bytes:
    """Sign the CBOR map `payload` for publication on `topic` (see `Signer.seal`).

    Pass a `Signer` on hot paths: a bare private key has its kid recomputed on every call.
    """
    signer = key if isinstance(key, Signer) else Signer(key)
    return signer.seal(payload, topic)


class Keyring(Mapping[bytes, Ed25519PublicKey]):
    """Trusted public keys by kid. Several at once: e.g. two aggregator keys during a rotation."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys: dict[bytes, Ed25519PublicKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: Ed25519PublicKey) -> bytes:
        """Trust `key`; returns its kid."""
        k = key_id(key)
        self._keys[k] = key
        return k

    def remove(self, kid: bytes) -> None:
        """Stop trusting the key with this kid (no error if it was not trusted)."""
        self._keys.pop(kid, None)

    def __getitem__(self, kid: bytes) -> Ed25519PublicKey:
        return self._keys[kid]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring({', '.join(k.hex() for k in self._keys)})"


class Opened(NamedTuple):
    """A verified sitewatt message: its payload map, the kid that signed it, the raw payload."""

    payload: dict[str, Any]
    kid: bytes
    raw: bytes


def unseal(data: bytes, topic: str, keyring: Mapping[bytes, Ed25519PublicKey]) -> Opened:
    """Verify a sitewatt message received on `topic` and decode its payload map.

    Raises (all EnvelopeError): MalformedError, WrongTagError, WrongAlgorithmError,
    UnknownKeyError, BadSignatureError. Nothing else, whatever the bytes. The caller still checks
    that the kid is the one allowed for the topic's site (the keyring may hold many sites' keys).
    """
    prot, prot_map, unprot_bytes, _, payload, signature = _split(data)
    if unprot_bytes != _EMPTY_MAP:
        raise MalformedError("unprotected header must be empty")
    _check_alg(prot_map)
    kid = prot_map.get(HEADER_KID)
    if not isinstance(kid, bytes):
        raise MalformedError("protected header has no kid byte string")
    public_key = keyring.get(kid)
    if public_key is None:
        raise UnknownKeyError(f"kid {kid.hex()} is not trusted")
    _verify(public_key, signature, _sig_structure(prot, topic.encode(), payload))
    obj = _loads(payload, "payload")
    if not isinstance(obj, dict):
        raise MalformedError("payload must be a CBOR map")
    return Opened(obj, kid, payload)


__all__ = [
    "ALG_EDDSA",
    "COSE_SIGN1_TAG",
    "HEADER_ALG",
    "HEADER_KID",
    "Keyring",
    "Opened",
    "Sign1",
    "Signer",
    "seal",
    "sign1",
    "unseal",
    "verify1",
]
