"""API tokens (admin): list, create (shown once), revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from aggregator.api.convert import token_out
from aggregator.api.deps import ApiServices, not_found, services
from aggregator.api.models import Me, TokenCreated, TokenIn, TokenOut
from aggregator.auth import Principal, Role, generate_token, hash_token, require
from protocols.clock import now_ms

router = APIRouter(tags=["tokens"])

Svc = Annotated[ApiServices, Depends(services)]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]


@router.get("/me", response_model=Me, summary="The caller's token name and role")
def me(who: Viewer) -> Me:
    """Who the presented token belongs to, so a client can hide what its role may not do."""
    return Me(token_id=who.token_id, name=who.name, role=who.role.value)


@router.get("/tokens", response_model=list[TokenOut], summary="API tokens (admin)")
def list_tokens(svc: Svc, _: Admin) -> list[TokenOut]:
    return [token_out(t) for t in svc.storage.list_tokens()]


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create a token (admin)",
)
def create_token(body: TokenIn, svc: Svc, _: Admin) -> TokenCreated:
    """A new token with a role; the token itself is in this answer only."""
    token = generate_token()
    record = svc.storage.add_token(body.name, body.role.value, hash_token(token), now_ms(svc.clock))
    return TokenCreated(**token_out(record).model_dump(), token=token)


@router.delete(
    "/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke a token (admin)"
)
def revoke_token(token_id: int, svc: Svc, _: Admin) -> Response:
    if not svc.storage.revoke_token(token_id, now_ms(svc.clock)):
        raise not_found(f"no active token {token_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
