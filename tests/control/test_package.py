"""`protocols.control` exports its submodules' names lazily (PEP 562): the table must be right."""

from __future__ import annotations

import importlib

import pytest

import protocols.control as control


def test_every_exported_name_is_its_submodules_object() -> None:
    assert set(control._SUBMODULE) == set(control.__all__)
    for name in control.__all__:
        module = importlib.import_module(f"protocols.control.{control._SUBMODULE[name]}")
        assert getattr(control, name) is getattr(module, name), name
    assert set(control.__all__) <= set(dir(control))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_planner"):
        _ = control.no_such_planner
