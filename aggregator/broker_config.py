"""`sitewatt-aggregator broker-config`: mosquitto config, password file, ACL and lab TLS files.

What it writes into the output directory:

    mosquitto.conf        listeners (TLS; optional plain one on loopback), auth, persistence,
                          queue limits raised for offline persistent sessions
    passwd                one line per user in mosquitto's PBKDF2-SHA512 (`$7$`) format
    acl                   per-site rights via patterns on the username (= the site id)
    credentials/USER      each user's password in clear (mode 0600), to hand to the site's
                          agent or to the aggregator's `broker.password_file`; kept on re-runs,
                          so adding sites never changes existing passwords
    tls/                  with `tls_generate`: a lab CA and a server certificate for it

The ACL: a site may publish only `{p}/{site}/telemetry|state|ack` and read only
`{p}/{site}/cmd|receipt` and `{p}/aggregator/state`; the aggregator user may do anything under
the prefix. Signatures already make the broker untrusted; the ACL keeps a stolen site password
from even reaching another site's topics.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aggregator.errors import BrokerConfigError
from protocols.topics import site_id_problem

AGGREGATOR_USER = "sitewatt-aggregator"
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for $7$
SALT_LEN = 12


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where everything went."""

    out: Path
    conf: Path
    passwd: Path
    acl: Path
    credentials: dict[str, Path]
    ca_file: Path | None
    tls_port: int | None
    plain_port: int | None


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A password in mosquitto's `$7$` format (PBKDF2-SHA512, 101 iterations, 12-byte salt)."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_LEN)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def acl_text(prefix: str, aggregator_user: str = AGGREGATOR_USER) -> str:
    """The ACL file: patterns bind each site user to its own topics."""
    p = prefix
    return (
        "# sitewatt broker ACL (written by `sitewatt-aggregator broker-config`).\n"
        "# Site users are named after their site id; %u is the connecting username.\n"
        "# `pattern` lines apply to every user (`topic` lines before any `user` line would\n"
        "# apply to anonymous clients only).\n"
        f"pattern read {p}/aggregator/state\n"
        f"pattern write {p}/%u/telemetry\n"
        f"pattern write {p}/%u/state\n"
        f"pattern write {p}/%u/ack\n"
        f"pattern read {p}/%u/cmd\n"
        f"pattern read {p}/%u/receipt\n"
        "\n"
        "# The aggregator reads and writes everything under the prefix.\n"
        f"user {aggregator_user}\n"
        f"topic readwrite {p}/#\n"
    )


def conf_text(
    out: Path,
    *,
    tls_port: int | None,
    tls_bind: str,
    plain_port: int | None,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    run_as: str | None = None,
) -> str:
    lines = [
        "# mosquitto config for sitewatt (written by `sitewatt-aggregator broker-config`).",
        "# The password file, server key and data directory must be readable by the user",
        "# mosquitto runs as (it drops root privileges to `mosquitto` unless `user` says else).",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {out / 'passwd'}",
        f"acl_file {out / 'acl'}",
        "persistence true",
        f"persistence_location {out / 'data'}/",
        "autosave_interval 60",
        "# Agents and the aggregator use persistent sessions: a site that is offline for hours,",
        "# or the aggregator during a restart, must find every QoS 1 message queued for it.",
        "max_queued_messages 1000000",
        "max_queued_bytes 0",
        "# Messages in flight to one client before acks: ingest acks after each commit.",
        "max_inflight_messages 1000",
        "max_packet_size 4194304",
        "# No Nagle delay: small acks/receipts/commands must not wait 40 ms for a delayed ACK.",
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if run_as is not None:
        lines.append(f"user {run_as}")
    if tls_port is not None:
        assert ca_file and cert_file and key_file
        lines += [
            "",
            f"listener {tls_port} {tls_bind}",
            f"cafile {ca_file}",
            f"certfile {cert_file}",
            f"keyfile {key_file}",
            "tls_version tlsv1.2",
        ]
    if plain_port is not None:
        lines += [
            "",
            "# Plain MQTT on loopback only (a local aggregator).",
            f"listener {plain_port} 127.0.0.1",
        ]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _credential(creds_dir: Path, user: str) -> tuple[str, Path]:
    """The user's password: the existing one if written before, else a new random one."""
    path = creds_dir / user
    if path.exists():
        return path.read_text().strip(), path
    password = secrets.token_urlsafe(24)
    _write_private(path, (password + "\n").encode())
    return password, path


def generate_tls(
    tls_dir: Path, hostnames: Sequence[str], *, days: int = 825
) -> tuple[Path, Path, Path]:
    """A lab CA and a server certificate for `hostnames` (DNS names or IP addresses).

    Returns (ca.crt, server.crt, server.key). The CA key stays in `tls_dir` (mode 0600) so more
    certificates can be signed later; keep it off the broker host in production.
    """
    tls_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sitewatt lab CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path, cert_path, key_path = (
        tls_dir / "ca.crt",
        tls_dir / "server.crt",
        tls_dir / "server.key",
    )
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    cert_path.write_bytes(cert.public_bytes(pem))
    private = serialization.PrivateFormat.TraditionalOpenSSL
    _write_private(key_path, key.private_bytes(pem, private, serialization.NoEncryption()))
    _write_private(
        tls_dir / "ca.key", ca_key.private_bytes(pem, private, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


def write_broker_config(
    out: Path,
    *,
    sites: Iterable[str],
    prefix: str,
    aggregator_user: str = AGGREGATOR_USER,
    tls_port: int | None = 8883,
    tls_bind: str = "0.0.0.0",
    tls_generate: bool = False,
    hostnames: Sequence[str] = ("localhost", "127.0.0.1"),
    plain_port: int | None = None,
    run_as: str | None = None,
) -> BrokerFiles:
    """Write the broker's files into `out` (see the module docstring)."""
    out = Path(out).resolve()
    site_list = sorted(set(sites))
    for site in site_list:
        problem = site_id_problem(site)
        if problem is not None:
            raise BrokerConfigError(problem)
        if site == aggregator_user:
            raise BrokerConfigError(f"site {site!r} has the aggregator's broker username")
    if tls_port is None and plain_port is None:
        raise BrokerConfigError("no listener: give a TLS port or a plain loopback port")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "data").mkdir(exist_ok=True)
        creds_dir = out / "credentials"
        creds_dir.mkdir(mode=0o700, exist_ok=True)
        ca_file = cert_file = key_file = None
        if tls_port is not None:
            tls_dir = out / "tls"
            if tls_generate:
                ca_file, cert_file, key_file = generate_tls(tls_dir, hostnames)
            else:
                ca_file, cert_file, key_file = (
                    tls_dir / "ca.crt",
                    tls_dir / "server.crt",
                    tls_dir / "server.key",
                )
                missing = [p for p in (ca_file, cert_file, key_file) if not p.exists()]
                if missing:
                    raise BrokerConfigError(
                        f"TLS files missing ({', '.join(str(p) for p in missing)}): put your "
                        "own there, or pass --tls-generate for a lab CA"
                    )
        credentials: dict[str, Path] = {}
        lines = []
        for user in [aggregator_user, *site_list]:
            password, path = _credential(creds_dir, user)
            credentials[user] = path
            lines.append(f"{user}:{hash_password(password)}")
        passwd = out / "passwd"
        _write_private(passwd, ("\n".join(lines) + "\n").encode())
        acl = out / "acl"
        acl.write_text(acl_text(prefix, aggregator_user))
        conf = out / "mosquitto.conf"
        conf.write_text(
            conf_text(
                out,
                tls_port=tls_port,
                tls_bind=tls_bind,
                plain_port=plain_port,
                ca_file=ca_file,
                cert_file=cert_file,
                key_file=key_file,
                run_as=run_as,
            )
        )
    except OSError as exc:
        raise BrokerConfigError(f"{out}: cannot write broker config: {exc}") from exc
    return BrokerFiles(out, conf, passwd, acl, credentials, ca_file, tls_port, plain_port)


__all__ = [
    "AGGREGATOR_USER",
    "BrokerFiles",
    "acl_text",
    "conf_text",
    "generate_tls",
    "hash_password",
    "write_broker_config",
]
