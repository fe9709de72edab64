"""Errors raised by the shared protocol layer.

    ProtocolError                   root: anything protocols refuses
    ├── ConfigError                 a file or value that does not validate (names where and why)
    │   └── ProfileError            a device profile: file, point, field, problem
    ├── CodecError                  registers that cannot be turned into a value, or back
    ├── EnvelopeError               a signed message that must be dropped
    │   ├── MalformedError          not CBOR, or not the COSE_Sign1 shape
    │   ├── WrongTagError           CBOR, but not tag 18
    │   ├── WrongAlgorithmError     not EdDSA (-8)
    │   ├── UnknownKeyError         kid not among the trusted keys
    │   └── BadSignatureError       the signature does not verify (tampered, moved topic)
    ├── KeyFileError                a key file missing, unreadable, or readable by others
    └── MessageError                a verified payload whose fields are wrong (type, bound, action)

Callers react by branch: an EnvelopeError is counted by `reason` and dropped; a ConfigError stops
start-up with its message; a CodecError marks one reading's quality and polling goes on.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error raised by `protocols`."""

    reason: str = "protocol"


class ConfigError(ProtocolError):
    reason = "config"


class ProfileError(ConfigError):
    reason = "profile"


class CodecError(ProtocolError):
    reason = "codec"


class EnvelopeError(ProtocolError):
    reason = "envelope"


class MalformedError(EnvelopeError):
    reason = "malformed"


class WrongTagError(MalformedError):
    reason = "wrong_tag"


class WrongAlgorithmError(EnvelopeError):
    reason = "wrong_algorithm"


class UnknownKeyError(EnvelopeError):
    reason = "unknown_kid"


class BadSignatureError(EnvelopeError):
    reason = "bad_signature"


class KeyFileError(ProtocolError):
    reason = "key_file"


class MessageError(ProtocolError):
    reason = "malformed"


__all__ = [
    "BadSignatureError",
    "CodecError",
    "ConfigError",
    "EnvelopeError",
    "KeyFileError",
    "MalformedError",
    "MessageError",
    "ProfileError",
    "ProtocolError",
    "UnknownKeyError",
    "WrongAlgorithmError",
    "WrongTagError",
]
