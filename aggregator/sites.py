"""The site registry: enrol sites by public key, rotate (several keys valid at once), revoke,
and build the keyring ingest verifies against.

A key belongs to exactly one site for ever: its kid is the primary key of `site_keys`, so a key
cannot be moved to another site, and a revoked key stays on record (ingest then counts messages
signed with it as `revoked`, not `unknown_kid`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aggregator.errors import SiteError, SiteKeyError
from aggregator.storage import SiteInfo, SiteKey, SiteState, Storage
from protocols.clock import DEFAULT_TZ, Clock, now_ms, zone
from protocols.errors import ConfigError as ProtocolConfigError
from protocols.keys import kid_hex, load_public_key_hex, public_key_hex
from protocols.topics import site_id_problem


@dataclass(frozen=True, slots=True)
class SiteKeyring:
    """A snapshot of the keys ingest trusts: active keys by kid, the site each kid belongs to,
    and the kids revoked (so their messages are refused as `revoked`)."""

    active: Mapping[bytes, Ed25519PublicKey] = field(default_factory=dict)
    site_of: Mapping[bytes, str] = field(default_factory=dict)
    revoked: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class SiteView:
    """A site with its keys and presence, as `sites list` shows it."""

    info: SiteInfo
    keys: list[SiteKey]
    state: SiteState


def parse_public_key(text: str) -> tuple[str, str]:
    """(public key hex, kid hex) of a 64-hex-digit Ed25519 public key; SiteKeyError if not."""
    try:
        key = load_public_key_hex(text)
    except (ProtocolConfigError, ValueError) as exc:
        raise SiteKeyError(str(exc)) from exc
    return public_key_hex(key), kid_hex(key)


class SiteRegistry:
    """Enrolment, rotation and revocation over a `Storage`, with a version counter ingest
    watches to rebuild its keyring."""

    def __init__(self, storage: Storage, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock
        self.version = 0  # bumped on every change made through this registry

    def changed(self) -> None:
        """Note a change made elsewhere (the API, another process): ingest reloads keys."""
        self.version += 1

    def enrol(
        self,
        site: str,
        public_key: str,
        *,
        name: str = "",
        region: str = "",
        tz: str = DEFAULT_TZ,
        tariff: str = "",
    ) -> tuple[SiteInfo, SiteKey]:
        """Enrol a new site with its first public key (hex)."""
        problem = site_id_problem(site)
        if problem is not None:
            raise SiteError(problem)
        try:
            zone(tz)
        except (KeyError, ValueError) as exc:
            raise SiteError(f"unknown time zone {tz!r}") from exc
        pub, kid = parse_public_key(public_key)
        if self.storage.get_key(kid) is not None:
            raise SiteKeyError(f"key {kid} is already enrolled")
        t = now_ms(self.clock)
        info = self.storage.add_site(SiteInfo(site, name, region, tz, tariff, t, True))
        key = self.storage.add_key(site, pub, kid, t)
        self.changed()
        return info, key

    def add_key(self, site: str, public_key: str) -> SiteKey:
        """Add a key to an enrolled site (a rotation: old and new both valid until the old one
        is revoked)."""
        self.storage.get_site(site)
        pub, kid = parse_public_key(public_key)
        existing = self.storage.get_key(kid)
        if existing is not None:
            raise SiteKeyError(f"key {kid} is already enrolled (site {existing.site})")
        key = self.storage.add_key(site, pub, kid, now_ms(self.clock))
        self.changed()
        return key

    rotate = add_key

    def revoke(self, site: str, kid: str) -> SiteKey:
        """Revoke one key of `site` (kid as 16 hex digits)."""
        self.storage.get_site(site)
        key = self.storage.get_key(kid.lower())
        if key is None or key.site != site:
            raise SiteKeyError(f"site {site!r} has no key {kid}")
        revoked = self.storage.revoke_key(key.kid, now_ms(self.clock))
        self.changed()
        return revoked

    def revoke_all(self, site: str) -> list[SiteKey]:
        """Revoke every key of `site` (a stolen gateway): nothing it signs is accepted."""
        self.storage.get_site(site)
        t = now_ms(self.clock)
        out = [self.storage.revoke_key(k.kid, t) for k in self.storage.site_keys(site)]
        self.changed()
        return out

    def list(self) -> list[SiteView]:
        keys: dict[str, list[SiteKey]] = {}
        for k in self.storage.site_keys():
            keys.setdefault(k.site, []).append(k)
        states = {s.site: s for s in self.storage.site_states()}
        return [
            SiteView(info, keys.get(info.site, []), states.get(info.site, SiteState(info.site)))
            for info in self.storage.list_sites()
        ]

    def keyring(self) -> SiteKeyring:
        """The keys of enabled sites, for ingest."""
        enabled = {s.site for s in self.storage.list_sites() if s.enabled}
        active: dict[bytes, Ed25519PublicKey] = {}
        site_of: dict[bytes, str] = {}
        revoked: set[bytes] = set()
        for k in self.storage.site_keys():
            kid = bytes.fromhex(k.kid)
            site_of[kid] = k.site
            if k.revoked_ms is not None or k.site not in enabled:
                revoked.add(kid)
            else:
                active[kid] = load_public_key_hex(k.public_key)
        return SiteKeyring(active, site_of, frozenset(revoked))


__all__ = ["SiteKeyring", "SiteRegistry", "SiteView", "parse_public_key"]
