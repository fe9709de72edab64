"""`sitewatt-aggregator` commands: keys, sites, broker-config, and `serve` end to end."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

from typer.testing import CliRunner

from aggregator.cli import app
from aggregator.identity import load_signer
from aggregator.storage import open_storage
from protocols.envelope import Signer
from protocols.keys import generate_key, public_key_hex
from simulators.broker import Broker, free_port, wait_port
from tests.support.site_publisher import SitePublisher

runner = CliRunner()


def _get_json(url: str, token: str) -> dict[str, object]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        body: dict[str, object] = json.loads(resp.read())
        return body


def _conf(tmp: Path, **extra: str) -> Path:
    conf = tmp / "agg.toml"
    body = f'[database]\npath = "{tmp / "agg.db"}"\n[keys]\nkey_file = "{tmp / "agg.key"}"\n'
    for section, text in extra.items():
        body += f"[{section}]\n{text}\n"
    conf.write_text(body)
    return conf


def test_keys_init_and_show(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    r = runner.invoke(app, ["keys", "init", "--config", str(conf)])
    assert r.exit_code == 0, r.output
    key = tmp_path / "agg.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = public_key_hex(load_signer(key).key)
    assert pub in r.output
    assert Signer(load_signer(key).key).kid.hex() in r.output
    again = runner.invoke(app, ["keys", "init", "--config", str(conf)])
    assert again.exit_code == 2 and "refusing to overwrite" in again.output
    shown = runner.invoke(app, ["keys", "show", "--config", str(conf)])
    assert shown.exit_code == 0 and pub in shown.output
    missing = runner.invoke(app, ["keys", "show", "--key-file", str(tmp_path / "nope.key")])
    assert missing.exit_code == 2 and "keys init" in missing.output


def test_sites_add_list_rotate_revoke(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    k1, k2 = generate_key(), generate_key()
    kid1, kid2 = Signer(k1).kid.hex(), Signer(k2).kid.hex()
    base = ["--config", str(conf)]
    r = runner.invoke(
        app,
        ["sites", "add", "CQ-001", "--public-key", public_key_hex(k1), "--name", "Hill",
         "--region", "Southwest", "--tz", "Asia/Chongqing", "--tariff", "cq", *base],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert kid1 in r.output
    dup = runner.invoke(app, ["sites", "add", "CQ-001", "--public-key", public_key_hex(k2), *base])
    assert dup.exit_code == 1 and "already" in dup.output
    bad = runner.invoke(app, ["sites", "add", "CQ-002", "--public-key", "zz", *base])
    assert bad.exit_code == 1 and "not hex" in bad.output
    badid = runner.invoke(app, ["sites", "add", "a/b", "--public-key", public_key_hex(k2), *base])
    assert badid.exit_code == 1 and "site id" in badid.output
    rot = runner.invoke(
        app, ["sites", "rotate", "CQ-001", "--public-key", public_key_hex(k2), *base]
    )
    assert rot.exit_code == 0 and kid2 in rot.output
    listed = runner.invoke(app, ["sites", "list", *base])
    assert listed.exit_code == 0 and "CQ-001" in listed.output and "Hill" in listed.output
    rev = runner.invoke(app, ["sites", "revoke", "CQ-001", "--kid", kid1, *base])
    assert rev.exit_code == 0 and kid1 in rev.output
    wrong = runner.invoke(app, ["sites", "revoke", "CQ-001", "--kid", "00" * 8, *base])
    assert wrong.exit_code == 1
    neither = runner.invoke(app, ["sites", "revoke", "CQ-001", *base])
    assert neither.exit_code == 2
    storage = open_storage(tmp_path / "agg.db")
    try:
        keys = {k.kid: k for k in storage.site_keys("CQ-001")}
        assert not keys[kid1].active and keys[kid2].active
        info = storage.get_site("CQ-001")
        assert (info.name, info.region, info.tz, info.tariff) == (
            "Hill",
            "Southwest",
            "Asia/Chongqing",
            "cq",
        )
    finally:
        storage.close()


def test_broker_config_from_db(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    base = ["--config", str(conf)]
    key = public_key_hex(generate_key())
    assert runner.invoke(app, ["sites", "add", "S1", "--public-key", key, *base]).exit_code == 0
    out = tmp_path / "broker"
    r = runner.invoke(
        app,
        ["broker-config", "--out", str(out), "--sites-from-db", "--tls-generate",
         "--plain-loopback-port", "18830", *base],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (out / "credentials" / "S1").exists() and (out / "tls" / "ca.crt").exists()
    assert "listener 18830 127.0.0.1" in (out / "mosquitto.conf").read_text()
    assert "pattern write sitewatt/v1/%u/telemetry" in (out / "acl").read_text()
    bad = runner.invoke(app, ["serve", "--config", str(tmp_path / "missing.toml")])
    assert bad.exit_code == 2 and "cannot read" in bad.output


def test_serve_runs_ingest_and_http_until_sigterm(tmp_path: Path, mosquitto: Broker) -> None:
    port = free_port()
    conf = _conf(
        tmp_path,
        broker=f'host = "{mosquitto.host}"\nport = {mosquitto.port}\nclient_id = "serve-test"',
        http=f'host = "127.0.0.1"\nport = {port}',
        control="enabled = true\ninterval_s = 1\nlease_s = 30",
    )
    assert runner.invoke(app, ["keys", "init", "--config", str(conf)]).exit_code == 0
    made = runner.invoke(app, ["tokens", "create", "--role", "viewer", "--config", str(conf)])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1].strip()
    agg_key = load_signer(tmp_path / "agg.key").public_key
    pub = SitePublisher("S1", host=mosquitto.host, port=mosquitto.port, aggregator_key=agg_key)
    r = runner.invoke(
        app, ["sites", "add", "S1", "--public-key", pub.public_key_hex, "--config", str(conf)]
    )
    assert r.exit_code == 0
    pub.connect()
    exe = Path(sys.executable).parent / "sitewatt-aggregator"
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(exe), "serve", "--config", str(conf)], stdout=log, stderr=log)
    try:
        wait_port("127.0.0.1", port, 20, proc=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.status == 200
        assert pub.wait_for(lambda: any(s.online for s in pub.aggregator_states), 10)
        pub.publish_message(pub.batch(1, []))
        assert pub.wait_receipts([1], 10)
        # the control loop runs inside serve and the API sees its rounds
        status_url = f"http://127.0.0.1:{port}/api/control/status"
        assert pub.wait_for(lambda: _get_json(status_url, token).get("running") is True, 15)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        # a clean shutdown says so: the retained state is offline
        assert pub.wait_for(lambda: not pub.aggregator_states[-1].online, 10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        pub.close()
