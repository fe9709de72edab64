"""Rows the aggregator's API, browser and report tests put in a real storage before they look:
an API token for every role, a past peak-shaving command the site applied; and a GET with a
role's token against a running server.
"""

from __future__ import annotations

from typing import Any

import httpx

from aggregator.auth import Role, generate_token, hash_token
from aggregator.storage import CommandRecord, CommandStatus, SqliteStorage

MIN = 60_000


def add_role_tokens(storage: SqliteStorage, created_ms: int, *, suffix: str = "") -> dict[str, str]:
    """A fresh token for every role, stored as `<role><suffix>`; the tokens by role name."""
    tokens: dict[str, str] = {}
    for role in Role:
        token = tokens[role.value] = generate_token()
        storage.add_token(f"{role.value}{suffix}", role.value, hash_token(token), created_ms)
    return tokens


def add_applied_peak_shave(
    storage: SqliteStorage,
    *,
    command_id: str,
    site: str,
    limit_w: float,
    issued_ms: int,
    lease_s: int,
    rtt_ms: int,
) -> CommandRecord:
    """A planner's battery.peak_shave, sent when issued and acked APPLIED `rtt_ms` later."""
    cmd = storage.new_command(
        command_id=command_id,
        site=site,
        action="battery.peak_shave",
        params={"discharge_limit_w": limit_w},
        issued_ms=issued_ms,
        expires_ms=issued_ms + MIN,
        lease_s=lease_s,
        issued_by="planner",
    )
    storage.mark_command_sent(cmd.id, issued_ms)
    storage.record_ack(
        cmd.id,
        status=CommandStatus.APPLIED.value,
        ack_ms=issued_ms + rtt_ms,
        readback={"bat.mode": 2, "bat.discharge_power_limit_w": limit_w},
        rtt_ms=float(rtt_ms),
    )
    return cmd


def api_get(url: str, token: str, path: str, **params: Any) -> Any:
    """GET `path` of a running API with a bearer token; the JSON (`from_` stands for `from`)."""
    if "from_" in params:
        params["from"] = params.pop("from_")
    r = httpx.get(
        f"{url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    r.raise_for_status()
    return r.json()


__all__ = ["add_applied_peak_shave", "add_role_tokens", "api_get"]
