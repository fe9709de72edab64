"""`sitewatt-aggregator tokens create|list|revoke` against a real database file."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from aggregator.auth import authenticate, hash_token
from aggregator.cli_tokens import tokens_app
from aggregator.storage import open_storage


def test_create_prints_once_stores_hash_list_and_revoke(tmp_path: Path) -> None:
    db = tmp_path / "agg.db"
    runner = CliRunner()
    res = runner.invoke(
        tokens_app, ["create", "--role", "operator", "--name", "noc", "--db", str(db)]
    )
    assert res.exit_code == 0, res.output
    token = res.stdout.strip()
    assert token.startswith("swt_") and "\n" not in token
    assert "shown only now" in res.stderr
    storage = open_storage(db)
    try:
        (record,) = storage.list_tokens()
        assert record.token_hash == hash_token(token) and token not in record.token_hash
        principal = authenticate(token, storage)
        assert principal is not None and principal.role.value == "operator"
    finally:
        storage.close()
    listed = runner.invoke(tokens_app, ["list", "--db", str(db)])
    assert listed.exit_code == 0 and "noc" in listed.stdout and token not in listed.stdout
    assert runner.invoke(tokens_app, ["revoke", str(record.id), "--db", str(db)]).exit_code == 0
    again = runner.invoke(tokens_app, ["revoke", str(record.id), "--db", str(db)])
    assert again.exit_code == 1 and "no active token" in again.stderr
    storage = open_storage(db)
    try:
        assert authenticate(token, storage) is None
    finally:
        storage.close()


def test_bad_role_and_bad_config_are_clear_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(tokens_app, ["create", "--role", "root", "--db", str(tmp_path / "a.db")])
    assert res.exit_code == 2 and "unknown role 'root'" in res.stderr
    res = runner.invoke(tokens_app, ["list", "--config", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "missing.toml" in res.stderr


def test_database_path_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "aggregator.toml"
    cfg.write_text(f'[database]\npath = "{tmp_path / "from-config.db"}"\n')
    res = CliRunner().invoke(tokens_app, ["create", "--role", "admin", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "from-config.db").exists()
