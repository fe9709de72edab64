"""The shared "key.path: problem" rendering of pydantic errors."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocols.validation import key_path, validation_problems


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    speed: float = Field(1.0, gt=0)


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: _Inner = Field(default_factory=_Inner)
    items: list[int] = Field(default_factory=list)
    low: int = 0
    high: int = 1

    @model_validator(mode="after")
    def _ordered(self) -> _Outer:
        if self.low > self.high:
            raise ValueError("low above high")
        return self


def _problems(data: dict[str, object], **kw: str) -> list[str]:
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate(data)
    return validation_problems(info.value, **kw)


@pytest.mark.parametrize(
    ("loc", "kw", "expected"),
    [
        (("a", "b"), {}, "a.b"),
        (("items", 2), {}, "items.2"),
        ((), {}, ""),
        ((), {"within": "control"}, "control"),
        (("x",), {"within": "run"}, "run.x"),
        (("events", 0, "RandomOutagesCfg", "share"), {"drop_suffix": "Cfg"}, "events.0.share"),
    ],
)
def test_key_path(loc: tuple[int | str, ...], kw: dict[str, str], expected: str) -> None:
    assert key_path(loc, **kw) == expected


def test_problems_name_the_key_and_the_top_level() -> None:
    assert _problems({"inner": {"speed": 0}, "items": [1, "x"]}) == [
        "inner.speed: Input should be greater than 0",
        "items.1: Input should be a valid integer, unable to parse string as an integer",
    ]
    assert _problems({"low": 2, "high": 1}) == ["<root>: Value error, low above high"]
    assert _problems({"low": 2, "high": 1}, root="(top level)") == [
        "(top level): Value error, low above high"
    ]
    assert _problems({"low": 2, "high": 1}, within="control") == [
        "control: Value error, low above high"
    ]
    assert _problems({"nope": 1}, within="control") == [
        "control.nope: Extra inputs are not permitted"
    ]
