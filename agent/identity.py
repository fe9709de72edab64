"""Who the agent is: its site id, its signing key, and the aggregator keys it trusts.

The site key is read with `protocols.keys.load_private_key`, which refuses a file that group or
others can read (a readable site key lets anyone sign for the site). The aggregator's public keys
are pinned in the config — two during a rotation — and nothing else is trusted for receipts,
commands or the aggregator's state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from protocols.envelope import Keyring, Signer
from protocols.keys import load_private_key, load_public_key_hex
from protocols.topics import check_site_id


@dataclass(frozen=True)
class SiteIdentity:
    """The site id, its signer (private key + kid), and the pinned aggregator keyring."""

    site: str
    signer: Signer
    aggregator_keys: Keyring

    @property
    def kid_hex(self) -> str:
        return self.signer.kid.hex()


def load_identity(site: str, key_file: Path, aggregator_keys_hex: Iterable[str]) -> SiteIdentity:
    """Load the site key (KeyFileError if missing or readable by others) and pin the
    aggregator keys (ConfigError if one is not a 64-hex-digit Ed25519 public key)."""
    ring = Keyring(load_public_key_hex(h) for h in aggregator_keys_hex)
    return SiteIdentity(check_site_id(site), Signer(load_private_key(key_file)), ring)


__all__ = ["SiteIdentity", "load_identity"]
