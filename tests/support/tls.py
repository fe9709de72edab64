"""Throw-away PKI for TLS tests: a CA, a server certificate for 127.0.0.1 and localhost, and a
second CA that signed nothing (a client trusting only it must refuse the server); and a mosquitto
that serves it, with per-user passwords.

Kept apart from `aggregator.broker_config.generate_tls` so agent tests need not import the
aggregator; that one makes the lab CA an operator deploys, this one lives for a test.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulators.broker import Broker, free_port, wait_port


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA, the server's certificate and key, another CA's certificate."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(cn, _name(cn), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_pki(d: Path) -> Pki:
    """Write a fresh test PKI into `d` (created if need be)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca("sitewatt test CA")
    _, other = _ca("someone else's CA")
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        _builder("localhost", ca.subject, key.public_key())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pki = Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "other.pem")
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.other_ca.write_bytes(other.public_bytes(pem))
    pki.cert.write_bytes(cert.public_bytes(pem))
    pki.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


@dataclass
class TlsBroker(Broker):
    """mosquitto with a plain anonymous listener on `port` (for a test's own receiver) and a TLS
    listener on `tls_port` that serves `pki` and wants a username and password from `users`."""

    pki: Pki | None = None
    users: dict[str, str] = field(default_factory=dict)
    tls_port: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tls_port == 0:
            self.tls_port = free_port(self.host)

    @property
    def ca(self) -> Path:
        assert self.pki is not None
        return self.pki.ca

    def config_text(self) -> str:
        assert self.pki is not None and self.workdir is not None
        return (
            "per_listener_settings true\n"
            # Stay who we are when run as root: the files here are ours, 0600.
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "persistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            f"listener {self.tls_port} {self.host}\n"
            f"cafile {self.pki.ca}\ncertfile {self.pki.cert}\nkeyfile {self.pki.key}\n"
            "allow_anonymous false\n"
            f"password_file {self.workdir / 'passwd'}\n"
        )

    def start(self, timeout: float = 10.0) -> TlsBroker:
        assert self.workdir is not None
        passwd = self.workdir / "passwd"
        passwd.unlink(missing_ok=True)
        for user, password in self.users.items():
            create = [] if passwd.exists() else ["-c"]
            subprocess.run(
                ["mosquitto_passwd", *create, "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
            )
        passwd.chmod(0o600)
        super().start(timeout)
        wait_port(self.host, self.tls_port, timeout, proc=self.proc)
        return self


__all__ = ["Pki", "TlsBroker", "make_pki"]
