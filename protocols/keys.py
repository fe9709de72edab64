"""Ed25519 keys: generate, save and load private keys safely, name public keys by their kid.

A private key file is PEM (unencrypted PKCS#8, `-----BEGIN PRIVATE KEY-----`), so `openssl pkey
-in site.key -pubout` reads it. It is written with mode 0600 and refused on load when its mode
grants any access to group or others: a site key readable by another user can sign for the site.

The kid (key id) is the first 8 bytes of SHA-256 over the raw 32-byte public key; it is what the
envelope carries and what the aggregator enrols.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.errors import ConfigError, KeyFileError

KID_LEN = 8
PRIVATE_KEY_MODE = 0o600


def generate_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key from the OS's random source."""
    return Ed25519PrivateKey.generate()


def public_key_bytes(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key (of a private key, its public half)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes_raw()


def public_key_hex(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The raw public key as 64 lowercase hex digits: the form enrolled at the aggregator."""
    return public_key_bytes(key).hex()


def kid(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The 8-byte key id: SHA-256 of the raw public key, truncated."""
    return hashlib.sha256(public_key_bytes(key)).digest()[:KID_LEN]


def kid_hex(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The kid as 16 lowercase hex digits, for logs, config and the API."""
    return kid(key).hex()


def load_public_key_hex(text: str) -> Ed25519PublicKey:
    """A public key from its 64-hex-digit raw form; ConfigError if it is not one."""
    stripped = text.strip()
    try:
        raw = bytes.fromhex(stripped)
    except ValueError as exc:
        raise ConfigError(f"public key {stripped[:80]!r} is not hex") from exc
    if len(raw) != 32:
        raise ConfigError(f"public key must be 32 bytes (64 hex digits), got {len(raw)} bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def save_private_key(key: Ed25519PrivateKey, path: Path, *, overwrite: bool = False) -> None:
    """Write `key` as PEM to `path` with mode 0600, atomically.

    Refuses to replace an existing file unless `overwrite`: a site's key is enrolled at the
    aggregator, and silently replacing it would cut the site off.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_KEY_MODE)
        try:
            os.fchmod(fd, PRIVATE_KEY_MODE)  # O_CREAT's mode does not apply to an existing tmp
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(f"{path}: cannot write key: {exc.strerror or exc}") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key, refusing a file that group or others may access."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open key: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)  # the file we read, not whatever the path points to a moment later
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"{path}: mode {mode:04o} gives group/others access to a private key; "
                f"run `chmod 600 {path}`"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(64 * 1024)
    finally:
        os.close(fd)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


__all__ = [
    "KID_LEN",
    "PRIVATE_KEY_MODE",
    "generate_key",
    "kid",
    "kid_hex",
    "load_private_key",
    "load_public_key_hex",
    "public_key_bytes",
    "public_key_hex",
    "save_private_key",
]
