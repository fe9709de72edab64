"""The offline comparison is a package of small modules named for what they hold, and its
public API (what `sitewatt-sim compare` and the tests use) is importable from the package."""

from __future__ import annotations

from pathlib import Path

import simulators.offline as offline

PACKAGE = Path(offline.__file__).resolve().parent
MAX_LINES = 300


def test_offline_is_a_package_of_small_modules() -> None:
    assert PACKAGE.name == "offline" and (PACKAGE / "__init__.py").is_file()
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 5
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in modules}
    assert all(n <= MAX_LINES for n in sizes.values()), sizes


def test_public_api_is_reexported() -> None:
    for name in offline.__all__:
        assert getattr(offline, name) is not None, name
    for name in ("load_compare_policy", "default_start", "run_compare", "policy_table",
                 "summary_table", "write_outputs", "compare_sites", "build_site"):  # fmt: skip
        assert name in offline.__all__, name
