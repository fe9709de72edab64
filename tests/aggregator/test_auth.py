"""Tokens and role decisions (the HTTP side is in test_api_auth.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aggregator.auth import (
    TOKEN_PREFIX,
    Decision,
    Principal,
    Role,
    authenticate,
    decide,
    generate_token,
    hash_token,
    parse_role,
    principal_of,
    token_matches,
)


@dataclass(frozen=True)
class Row:
    id: int
    name: str
    role: str
    revoked_ms: int | None = None


class Store:
    def __init__(self, rows: dict[str, Row]) -> None:
        self.rows = rows
        self.asked: list[str] = []

    def token_by_hash(self, token_hash: str) -> Row | None:
        self.asked.append(token_hash)
        return self.rows.get(token_hash)


def test_tokens_are_random_prefixed_and_hashed() -> None:
    tokens = {generate_token() for _ in range(100)}
    assert len(tokens) == 100
    t = next(iter(tokens))
    assert t.startswith(TOKEN_PREFIX) and len(t) >= 40
    h = hash_token(t)
    assert len(h) == 64 and t not in h
    assert token_matches(t, h) and not token_matches(t + "x", h)


@pytest.mark.parametrize(
    ("have", "need", "decision"),
    [
        (None, Role.VIEWER, Decision.UNAUTHENTICATED),
        (None, Role.ADMIN, Decision.UNAUTHENTICATED),
        (Role.VIEWER, Role.VIEWER, Decision.ALLOWED),
        (Role.VIEWER, Role.OPERATOR, Decision.FORBIDDEN),
        (Role.VIEWER, Role.ADMIN, Decision.FORBIDDEN),
        (Role.OPERATOR, Role.VIEWER, Decision.ALLOWED),
        (Role.OPERATOR, Role.OPERATOR, Decision.ALLOWED),
        (Role.OPERATOR, Role.ADMIN, Decision.FORBIDDEN),
        (Role.ADMIN, Role.VIEWER, Decision.ALLOWED),
        (Role.ADMIN, Role.OPERATOR, Decision.ALLOWED),
        (Role.ADMIN, Role.ADMIN, Decision.ALLOWED),
    ],
)
def test_decision_matrix(have: Role | None, need: Role, decision: Decision) -> None:
    principal = None if have is None else Principal(1, "t", have)
    assert decide(principal, need) is decision


def test_authenticate_looks_up_by_hash_and_refuses_revoked_or_unknown() -> None:
    good, revoked, odd = generate_token(), generate_token(), generate_token()
    store = Store(
        {
            hash_token(good): Row(1, "ops", "operator"),
            hash_token(revoked): Row(2, "old", "admin", revoked_ms=5),
            hash_token(odd): Row(3, "odd", "superuser"),
        }
    )
    assert authenticate(good, store) == Principal(1, "ops", Role.OPERATOR)
    assert store.asked == [hash_token(good)]  # the raw token never reaches storage
    assert authenticate(revoked, store) is None
    assert authenticate(odd, store) is None
    assert authenticate(generate_token(), store) is None
    assert authenticate(None, store) is None
    assert authenticate("", store) is None
    assert authenticate("Bearer nonsense", store) is None


def test_principal_of_none() -> None:
    assert principal_of(None) is None


@pytest.mark.parametrize(
    ("text", "role"),
    [("viewer", Role.VIEWER), (" Operator ", Role.OPERATOR), ("ADMIN", Role.ADMIN)],
)
def test_parse_role(text: str, role: Role) -> None:
    assert parse_role(text) is role


def test_parse_role_names_valid_roles() -> None:
    with pytest.raises(ValueError, match="viewer, operator, admin"):
        parse_role("root")
