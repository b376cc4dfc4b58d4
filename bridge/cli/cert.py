"""`cert new` / `cert show`: the client certificate for app-only OAuth2, and its thumbprints."""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.errors import BridgeError

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
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    contents = (
        (key_file, key_pem, _KEY_MODE),
        (cert_file, cert.public_bytes(serialization.Encoding.PEM), _PUBLIC_MODE),
        (der_file, der, _PUBLIC_MODE),
        (public_key_file, public_pem, _PUBLIC_MODE),
    )
    try:
        _ensure_dir(out_dir)
        _write_all(contents, force=force)
    except OSError as exc:
        raise CertificateError(f"cannot write certificate files in {out_dir}: {exc}") from exc
    return NewCertificate(
        key_file=key_file,
        cert_file=cert_file,
        der_file=der_file,
        public_key_file=public_key_file,
        info=_info(cert_file, cert),
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


def format_info(info: CertInfo, *, now: datetime | None = None) -> str:
    """The lines `cert new` and `cert show` print about a certificate."""
    now = _utc(now)
    remaining = info.not_after - now
    if remaining.total_seconds() <= 0:
        validity = "EXPIRED"
    elif info.not_before > now:
        validity = f"not valid before {_iso(info.not_before)}"
    elif remaining < timedelta(days=1):
        validity = "in less than a day"
    else:
        # Rounded: a certificate made for 730 days should not read "729" a minute later.
        validity = f"in {round(remaining / timedelta(days=1))} days"
    key = f"RSA {info.key_size} bits" if info.key_size else "unknown"
    rows = (
        ("Certificate", str(info.path)),
        ("Subject", info.subject),
        ("SHA-1 thumbprint", f"{info.sha1_thumbprint}  (as the Azure portal shows it)"),
        ("x5t", info.x5t),
        ("SHA-256 thumbprint", info.sha256_thumbprint),
        ("x5t#S256", info.x5t_s256),
        ("Key", key),
        ("Valid from", _iso(info.not_before)),
        ("Expires", f"{_iso(info.not_after)}  ({validity})"),
    )
    return "\n".join(f"{label + ':':<20}{value}" for label, value in rows)


def format_next_steps(new: NewCertificate) -> str:
    """Where to upload the certificate and what to put in the config."""
    cert_path = json.dumps(str(new.cert_file.resolve()))  # a JSON string is a TOML basic string
    key_path = json.dumps(str(new.key_file.resolve()))
    return "\n".join(
        (
            "Next steps:",
            f"  1. Upload {new.der_file.name} in the Azure portal: App registrations -> your app"
            " -> Certificates & secrets -> Certificates -> Upload certificate.",
            f"     The portal then shows the thumbprint {new.info.sha1_thumbprint}.",
            "  2. In the account's section of config.toml:",
            '       auth = "client_certificate"',
            f"       certificate_file = {cert_path}",
            f"       private_key_file = {key_path}",
            f"  3. Keep {new.key_file.name} secret (mode 0600); the other files are public.",
            "     Then run `outlook2mqtt check`.",
        )
    )


def add_cert_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add `cert new` and `cert show FILE`; each sets `func(args) -> exit code`.

    `parents` (e.g. the shared `--log-level` parser) are added to `new` and `show` themselves,
    so options given after the subcommand name are not reset by argparse's sub-parser defaults.
    """
    cert = subparsers.add_parser(
        "cert",
        help="make or inspect the client certificate (needs no config)",
        description="Make or inspect the client certificate for auth = \"client_certificate\".",
    )
    actions = cert.add_subparsers(dest="cert_command", required=True, metavar="{new,show}")

    new = actions.add_parser(
        "new",
        parents=list(parents),
        help="write a new key and self-signed certificate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Write NAME.key (private, 0600), NAME.crt (PEM), NAME.cer (DER, for the"
        " Azure upload) and NAME.pub.pem, and print the thumbprints.",
    )
    new.add_argument("--out-dir", type=Path, default=Path("."), help="directory to write to")
    new.add_argument("--name", default=DEFAULT_NAME, help="file name stem")
    new.add_argument("--days", type=int, default=730, help=f"validity in days, 1..{MAX_DAYS}")
    new.add_argument("--subject", default=DEFAULT_NAME, help="subject common name (CN)")
    new.add_argument("--key-size", type=int, choices=KEY_SIZES, default=2048, help="RSA key size")
    new.add_argument("--force", action="store_true", help="replace existing files")
    new.set_defaults(func=_run_new)

    show = actions.add_parser(
        "show",
        parents=list(parents),
        help="print the thumbprints of an existing certificate",
        description="Print the thumbprints and expiry of a PEM or DER certificate.",
    )
    show.add_argument("file", type=Path, metavar="FILE", help="certificate (.crt, .pem or .cer)")
    show.set_defaults(func=_run_show)


def _run_new(args: argparse.Namespace) -> int:
    def run() -> None:
        made = new_certificate(
            args.out_dir,
            name=args.name,
            days=args.days,
            subject=args.subject,
            key_size=args.key_size,
            force=args.force,
        )
        written = (made.key_file, made.cert_file, made.der_file, made.public_key_file)
        print("Wrote:")
        for path in written:
            print(f"  {path}")
        print()
        print(format_info(made.info))
        print()
        print(format_next_steps(made))

    return _guarded(run)


def _run_show(args: argparse.Namespace) -> int:
    return _guarded(lambda: print(format_info(describe_certificate(args.file))))


def _guarded(run: Callable[[], None]) -> int:
    try:
        run()
    except CertificateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _self_signed(
    key: rsa.RSAPrivateKey, subject: str, days: int, now: datetime | None
) -> x509.Certificate:
    # X.509 times have whole seconds; dropping microseconds keeps CertInfo equal to `now`.
    now = _utc(now).replace(microsecond=0)
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


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
