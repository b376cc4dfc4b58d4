"""Client certificates for app-only sign-in: making a key and self-signed certificate,
reading one back, and the thumbprints Entra ID and MSAL identify it by."""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.errors import BridgeError
from bridge.util.times import as_utc

KEY_SIZES: tuple[int, ...] = (2048, 3072)
MAX_DAYS = 3650
DEFAULT_NAME = "outlook2mqtt"
# Backdated so a certificate made on a machine whose clock runs slightly ahead is not
# "not yet valid" when Entra checks the client assertion.
CLOCK_SKEW = timedelta(minutes=5)
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_PEM_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
_KEY_MODE = 0o600
_PUBLIC_MODE = 0o644
_DIR_MODE = 0o755


class CertificateError(BridgeError):
    """A certificate could not be made or read; the text is what the user sees."""


@dataclass(frozen=True)
class CertInfo:
    """What Azure and MSAL need to know about a certificate."""

    path: Path
    subject: str
    sha1_thumbprint: str  # upper-case hex, no colons (as the Azure portal shows it)
    x5t: str  # base64url(SHA-1 of DER), no padding (RFC 7515 section 4.1.7)
    sha256_thumbprint: str  # upper-case hex, no colons
    x5t_s256: str  # base64url(SHA-256 of DER), no padding (RFC 7515 section 4.1.8)
    not_before: datetime
    not_after: datetime
    key_size: int | None


@dataclass(frozen=True)
class NewCertificate:
    """The four files `cert new` wrote, and the certificate's details."""

    key_file: Path
    cert_file: Path
    der_file: Path
    public_key_file: Path
    info: CertInfo


def new_certificate(
    out_dir: Path,
    *,
    name: str = DEFAULT_NAME,
    days: int = 730,
    subject: str = DEFAULT_NAME,
    key_size: int = 2048,
    force: bool = False,
    now: datetime | None = None,
) -> NewCertificate:
    """Make an RSA key and a self-signed SHA-256 certificate; write NAME.key/.crt/.cer/.pub.pem."""
    _check_request(name, days, subject, key_size)
    key_file = out_dir / f"{name}.key"
    cert_file = out_dir / f"{name}.crt"
    der_file = out_dir / f"{name}.cer"
    public_key_file = out_dir / f"{name}.pub.pem"
    targets = (key_file, cert_file, der_file, public_key_file)
    # Check all four first so a refusal leaves nothing half-written.
    existing = [str(p) for p in targets if os.path.lexists(p)]
    if existing and not force:
        raise CertificateError(
            "refusing to overwrite existing files (use --force to replace them): "
            + ", ".join(existing)
        )
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    cert = _self_signed(key, subject, days, now)
    contents = zip(targets, _encodings(key, cert), (_KEY_MODE, *[_PUBLIC_MODE] * 3), strict=True)
    try:
        _ensure_dir(out_dir)
        _write_all(tuple(contents), force=force)
    except OSError as exc:
        raise CertificateError(f"cannot write certificate files in {out_dir}: {exc}") from exc
    return NewCertificate(key_file, cert_file, der_file, public_key_file,
                          _info(cert_file, cert))


def _check_request(name: str, days: int, subject: str, key_size: int) -> None:
    """Refuse a file name stem, validity, subject or key size `cert new` cannot use."""
    if not _NAME_RE.fullmatch(name):
        raise CertificateError(
            f"invalid name {name!r}: use letters, digits, '.', '_' and '-' (no path)"
        )
    if key_size not in KEY_SIZES:
        raise CertificateError(f"key size must be 2048 or 3072, not {key_size}")
    if not 1 <= days <= MAX_DAYS:
        raise CertificateError(f"days must be between 1 and {MAX_DAYS}, not {days}")
    if not subject.strip():
        raise CertificateError("subject must not be empty")


def _encodings(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> tuple[bytes, ...]:
    """The contents of NAME.key, .crt (PEM), .cer (DER) and .pub.pem, in that order."""
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return (unencrypted_pem(key), cert.public_bytes(serialization.Encoding.PEM),
            cert.public_bytes(serialization.Encoding.DER), public_pem)


def unencrypted_pem(key: PrivateKeyTypes) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def describe_certificate(path: Path) -> CertInfo:
    """Read a PEM or DER X.509 certificate (.crt/.pem/.cer) and compute its thumbprints."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        if _PEM_CERT_MARKER in data:
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        hint = ""
        if b"PRIVATE KEY-----" in data:
            hint = " (this is a private key; give the .crt or .cer file)"
        elif b"-----BEGIN PUBLIC KEY-----" in data:
            hint = " (this is a public key; give the .crt or .cer file)"
        raise CertificateError(f"{path}: not a PEM or DER X.509 certificate{hint}") from exc
    return _info(path, cert)


def _self_signed(
    key: rsa.RSAPrivateKey, subject: str, days: int, now: datetime | None
) -> x509.Certificate:
    # X.509 times have whole seconds; dropping microseconds keeps CertInfo equal to `now`.
    now = as_utc(now).replace(microsecond=0)
    try:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    except ValueError as exc:  # RFC 5280 caps a CN at 64 characters
        raise CertificateError(f"invalid subject {subject!r}: {exc}") from exc
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def _info(path: Path, cert: x509.Certificate) -> CertInfo:
    # A fingerprint is the hash of the DER encoding, i.e. of the .cer file uploaded to Azure.
    sha1 = cert.fingerprint(hashes.SHA1())  # noqa: S303 - Azure's thumbprint and x5t are SHA-1
    sha256 = cert.fingerprint(hashes.SHA256())
    public_key = cert.public_key()
    key_size = (
        public_key.key_size
        if isinstance(public_key, rsa.RSAPublicKey | dsa.DSAPublicKey | ec.EllipticCurvePublicKey)
        else None
    )
    return CertInfo(
        path=path,
        subject=cert.subject.rfc4514_string(),
        sha1_thumbprint=sha1.hex().upper(),
        x5t=_b64url(sha1),
        sha256_thumbprint=sha256.hex().upper(),
        x5t_s256=_b64url(sha256),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_size=key_size,
    )


def _ensure_dir(out_dir: Path) -> None:
    if out_dir.is_dir():
        return
    # 0755: the service's unprivileged (dynamic) user must reach the certificate; the key
    # itself is 0600, so the directory's mode protects nothing.
    out_dir.mkdir(mode=_DIR_MODE, parents=True)
    os.chmod(out_dir, _DIR_MODE)  # mkdir's mode is filtered by the umask


def _write_all(contents: Sequence[tuple[Path, bytes, int]], *, force: bool) -> None:
    """Write every file, or (without force) none: a failure removes what this call created."""
    if force:
        # Write beside the target and rename over it: the old file is replaced atomically and
        # a symlink planted at the target is replaced, not followed.
        for path, data, mode in contents:
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            try:
                _create(tmp, data, mode)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return
    created: list[Path] = []
    try:
        for path, data, mode in contents:
            _create(path, data, mode)
            created.append(path)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise


def _create(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never reuse an existing file (or follow a symlink), and the key is 0600 from
    # the first byte rather than chmod-ed after being written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, mode)  # the umask may have removed bits we want (it cannot add any)
        file.write(data)
        file.flush()
        os.fsync(fd)


def _b64url(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
