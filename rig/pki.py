"""Certificates for the rig: a test CA with a loopback server cert, and Azure-style client certs."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

_LOGGER = logging.getLogger(__name__)

SERVER_NAMES = ("127.0.0.1", "127.0.0.2", "localhost")


class TestPKI:
    """A trustme CA and one server certificate for the loopback names, written as PEM files."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca = trustme.CA(organization_name="outlook2mqtt test CA")
        server = self.ca.issue_cert(*SERVER_NAMES)
        self.ca_file = directory / "ca.pem"
        self.server_cert_file = directory / "server.crt"
        self.server_key_file = directory / "server.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server.cert_chain_pems[0].write_to_path(str(self.server_cert_file))
        server.private_key_pem.write_to_path(str(self.server_key_file))
        # Readable by daemons that drop privileges; the key is a throwaway test key.
        for path in (self.ca_file, self.server_cert_file, self.server_key_file):
            path.chmod(0o644)


@dataclass(frozen=True)
class ClientCert:
    """A self-signed client certificate as a user would upload it to an app registration."""

    cert_file: Path
    key_file: Path
    cert_pem: bytes
    sha1_thumbprint_hex: str
    x5t: str
    x5t_s256: str


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprints(cert_pem: bytes) -> tuple[str, str, str]:
    """Return (SHA-1 hex upper-case, x5t, x5t#S256) of a PEM certificate."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    sha1 = hashlib.sha1(der, usedforsecurity=False).digest()
    sha256 = hashlib.sha256(der).digest()
    return sha1.hex().upper(), b64url(sha1), b64url(sha256)


def make_client_certificate(
    directory: Path,
    name: str,
    *,
    days: int = 365,
    key_size: int = 2048,
    passphrase: str | None = None,
) -> ClientCert:
    """Write NAME.crt and NAME.key: a self-signed RSA cert valid from yesterday for days days."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase is not None
        else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file = directory / f"{name}.crt"
    key_file = directory / f"{name}.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    key_file.chmod(0o600)
    sha1_hex, x5t, x5t_s256 = thumbprints(cert_pem)
    return ClientCert(cert_file, key_file, cert_pem, sha1_hex, x5t, x5t_s256)
