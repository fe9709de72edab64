"""A pydantic ValidationError as "key.path: problem" lines, the way every config error reads.

Each loader adds its own file name and joins the lines its own way ("; " or one per line);
what is shared is how a key's path is written and what stands when the top level is at fault.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def key_path(
    loc: Iterable[int | str], *, within: str | None = None, drop_suffix: str | None = None
) -> str:
    """A pydantic `loc` as a dotted path, under `within` if given.

    `drop_suffix` leaves out the parts that name a union member (e.g. "Cfg" for
    `RandomOutagesCfg`), which say nothing to whoever wrote the file.
    """
    parts = [str(x) for x in loc]
    if drop_suffix:
        parts = [p for p in parts if not p.endswith(drop_suffix)]
    if within:
        parts.insert(0, within)
    return ".".join(parts)


def validation_problems(
    exc: ValidationError,
    *,
    root: str = "<root>",
    within: str | None = None,
    drop_suffix: str | None = None,
) -> list[str]:
    """One "key.path: message" per error; `root` stands for an empty path (a whole-model check)."""
    return [
        f"{key_path(e['loc'], within=within, drop_suffix=drop_suffix) or root}: {e['msg']}"
        for e in exc.errors()
    ]


__all__ = [
    "key_path",
    "read_toml",
    "validation_problems",
]


def read_toml(path: str | Path, error: type[Exception]) -> dict[str, Any]:
    """A TOML file's table; `error("<path>: <why>")` if it cannot be read or parsed."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{p}: {exc}") from exc
