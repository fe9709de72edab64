"""The aggregator's own Ed25519 signing key: it signs receipts, commands and its state, and
agents pin its public key (two during a rotation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aggregator.errors import ConfigError
from protocols.envelope import Signer
from protocols.errors import KeyFileError
from protocols.keys import generate_key, kid_hex, load_private_key, public_key_hex, save_private_key


@dataclass(frozen=True, slots=True)
class Identity:
    """What an operator pins in agents: the public key and its kid, both hex."""

    public_key: str
    kid: str
    path: Path


def init_key(path: Path, *, overwrite: bool = False) -> Identity:
    """Create the signing key at `path` (mode 0600, parent directories as needed)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = generate_key()
        save_private_key(key, path, overwrite=overwrite)
    except (OSError, KeyFileError) as exc:
        raise ConfigError(str(exc)) from exc
    return Identity(public_key_hex(key), kid_hex(key), path)


def load_signer(path: Path) -> Signer:
    """The signer for the key at `path`; ConfigError (with what to run) if it is unusable."""
    try:
        return Signer(load_private_key(Path(path)))
    except KeyFileError as exc:
        hint = "" if Path(path).exists() else " (run `sitewatt-aggregator keys init`)"
        raise ConfigError(f"{exc}{hint}") from exc


def show_key(path: Path) -> Identity:
    signer = load_signer(path)
    return Identity(public_key_hex(signer.public_key), kid_hex(signer.public_key), Path(path))


__all__ = ["Identity", "init_key", "load_signer", "show_key"]
