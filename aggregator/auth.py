"""Bearer tokens and roles for the API.

A token is 32 random bytes shown once at creation (`sitewatt-aggregator tokens create`); the
database keeps only its SHA-256, so a leaked database does not leak working tokens. Roles are
ordered: viewer < operator < admin, and a role may do everything the ones below it may.

The decision is pure (`decide`): the token's stored record (or nothing) and the role an endpoint
needs give `ALLOWED`, `UNAUTHENTICATED` (401) or `FORBIDDEN` (403). `require(role)` wraps it as a
FastAPI dependency that looks the token up through `request.app.state.services.storage`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

TOKEN_PREFIX = "swt_"
"""Marks sitewatt tokens so secret scanners (and people) recognise one in a log or a paste."""


class Role(StrEnum):
    """What a token may do; each role includes the ones before it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """True if a holder of this role may do what `needed` may."""
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class TokenRecord(Protocol):
    """What auth needs from a stored token (the storage's token row satisfies it)."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def revoked_ms(self) -> int | None: ...


class TokenLookup(Protocol):
    """The one storage method auth uses."""

    def token_by_hash(self, token_hash: str) -> TokenRecord | None: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id, name and role."""

    token_id: int
    name: str
    role: Role


class Decision(Enum):
    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"


def generate_token() -> str:
    """A new random token (URL-safe, ~47 characters), to be shown once and stored hashed."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The hex SHA-256 under which a token is stored and looked up.

    A plain hash is enough: the token carries 256 random bits, so there is nothing to brute-force
    and no need for a slow password hash on every request.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    """Constant-time comparison of a presented token with a stored hash."""
    return hmac.compare_digest(hash_token(token), token_hash)


def parse_role(value: str) -> Role:
    """A role from its name; ValueError naming the valid ones otherwise."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        valid = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {value!r}: expected one of {valid}") from None


def principal_of(record: TokenRecord | None) -> Principal | None:
    """The principal a stored token stands for, or None if missing, revoked or of no known role."""
    if record is None or record.revoked_ms is not None:
        return None
    try:
        role = Role(record.role)
    except ValueError:
        return None
    return Principal(token_id=record.id, name=record.name, role=role)


def decide(principal: Principal | None, needed: Role) -> Decision:
    """Whether a caller (None: no valid token) may use an endpoint that needs `needed`."""
    if principal is None:
        return Decision.UNAUTHENTICATED
    return Decision.ALLOWED if principal.role.allows(needed) else Decision.FORBIDDEN


def authenticate(token: str | None, lookup: TokenLookup) -> Principal | None:
    """The principal for a presented token (None for no token, unknown or revoked)."""
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    return principal_of(lookup.token_by_hash(hash_token(token)))


# --- FastAPI glue -------------------------------------------------------------------------------

bearer_scheme = HTTPBearer(auto_error=False, description="A token from `tokens create`.")


def _lookup(request: Request) -> TokenLookup:
    lookup: TokenLookup = request.app.state.services.storage
    return lookup


def require(needed: Role) -> Callable[..., Principal]:
    """A FastAPI dependency: the caller's principal if it holds `needed`, else 401 / 403."""

    def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> Principal:
        token = credentials.credentials if credentials is not None else None
        principal = authenticate(token, _lookup(request))
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing, unknown or revoked bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if decide(principal, needed) is Decision.FORBIDDEN:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role {principal.role.value!r} may not do this: needs {needed.value!r}",
            )
        return principal

    dependency.__name__ = f"require_{needed.value}"
    return dependency


__all__ = [
    "TOKEN_PREFIX",
    "Decision",
    "Principal",
    "Role",
    "TokenLookup",
    "TokenRecord",
    "authenticate",
    "bearer_scheme",
    "decide",
    "generate_token",
    "hash_token",
    "parse_role",
    "principal_of",
    "require",
    "token_matches",
]
