"""Key files: mode 0600 on save, refusal on load when group or others can reach them."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.errors import ConfigError, KeyFileError
from protocols.keys import (
    generate_key,
    kid,
    kid_hex,
    load_private_key,
    load_public_key_hex,
    public_key_hex,
    save_private_key,
)


def test_save_writes_mode_0600_and_loads_back(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "site.key"
    old = os.umask(0)  # a permissive umask must not widen the file's mode
    try:
        save_private_key(key, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key(path)
    assert loaded.private_bytes_raw() == key.private_bytes_raw()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o602, 0o660, 0o666])
def test_load_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "site.key"
    save_private_key(generate_key(), path)
    path.chmod(mode)
    with pytest.raises(KeyFileError) as err:
        load_private_key(path)
    assert str(path) in str(err.value)
    assert f"{mode:04o}" in str(err.value)


def test_load_accepts_owner_read_only(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    save_private_key(generate_key(), path)
    path.chmod(0o400)
    load_private_key(path)


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    first, second = generate_key(), generate_key()
    save_private_key(first, path)
    with pytest.raises(KeyFileError):
        save_private_key(second, path)
    assert load_private_key(path).private_bytes_raw() == first.private_bytes_raw()
    save_private_key(second, path, overwrite=True)
    assert load_private_key(path).private_bytes_raw() == second.private_bytes_raw()


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot open"):
        load_private_key(tmp_path / "absent.key")
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(KeyFileError, match="PEM"):
        load_private_key(garbage)


def test_kid_is_truncated_sha256_of_raw_public_key() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    raw = key.public_key().public_bytes_raw()
    assert kid(key) == hashlib.sha256(raw).digest()[:8]
    assert kid(key.public_key()) == kid(key)
    assert kid_hex(key) == kid(key).hex() and len(kid_hex(key)) == 16


def test_public_key_hex_round_trip() -> None:
    key = generate_key()
    text = public_key_hex(key)
    assert len(text) == 64
    assert load_public_key_hex(text).public_bytes_raw() == key.public_key().public_bytes_raw()


@pytest.mark.parametrize("text", ["zz", "abcd", "00" * 33, ""])
def test_bad_public_key_hex(text: str) -> None:
    with pytest.raises(ConfigError):
        load_public_key_hex(text)
