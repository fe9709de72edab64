"""Writing TOML: the fleet simulator hands agents and the aggregator ordinary config files.

Enough of TOML for configs: tables, arrays of tables, strings, numbers, booleans, arrays of
scalars. `tomllib` reads it back (the tests check the round trip).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"TOML cannot hold {v}")
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v), ensure_ascii=False)
    if isinstance(v, Sequence):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {_scalar(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v: Any) -> bool:
    return (
        isinstance(v, Sequence)
        and not isinstance(v, str)
        and bool(v)
        and all(isinstance(x, Mapping) for x in v)
    )


def _emit(data: Mapping[str, Any], path: list[str], out: list[str]) -> None:
    tables: list[tuple[str, Any]] = []
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, Mapping) or _is_table_array(v):
            tables.append((k, v))
        else:
            out.append(f"{_key(k)} = {_scalar(v)}")
    for k, v in tables:
        sub = [*path, _key(k)]
        if isinstance(v, Mapping):
            out.append("")
            out.append("[" + ".".join(sub) + "]")
            _emit(v, sub, out)
        else:
            for item in v:
                out.append("")
                out.append("[[" + ".".join(sub) + "]]")
                _emit(item, sub, out)


def dumps(data: Mapping[str, Any]) -> str:
    """`data` as a TOML document (None values are left out)."""
    out: list[str] = []
    _emit(data, [], out)
    return "\n".join(out).lstrip("\n") + "\n"


__all__ = ["dumps"]
