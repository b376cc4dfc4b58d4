"""The account's sign-in keys: secrets (inline, from a file, or a systemd credential),
the client certificate and its key, CA bundles, and the token scope. Like
`bridge.config.fields`, every check records a problem naming its key and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.config.fields import Problems, Table, check, read_file

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


@dataclass(frozen=True)
class Secret:
    """A secret value and where it came from (for messages; the value itself is never shown)."""

    value: str = field(repr=False)
    origin: str


def read_secret_file(path: Path, key: str, problems: Problems) -> str | None:
    """A secret kept in a file, stripped of surrounding whitespace."""
    data = read_file(path, key, problems)
    if data is None:
        return None
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        problems.add(key, f"{path} is not UTF-8 text")
        return None
    if not text:
        problems.add(key, f"{path} is empty; put the secret in it")
        return None
    return text


def credential_file(environ: Mapping[str, str], names: Sequence[str]) -> Path | None:
    """The first of `names` present in $CREDENTIALS_DIRECTORY (systemd LoadCredential=)."""
    directory = environ.get(CREDENTIALS_ENV)
    if not directory:
        return None
    for name in names:
        candidate = Path(directory) / name
        if candidate.exists():
            return candidate
    return None


def secret(
    table: Table,
    name: str,
    *,
    credentials: Sequence[str],
    environ: Mapping[str, str],
    blank_is_unset: bool = False,
) -> Secret | None:
    """`name` inline, or from `<name>_file`, or from the first of `credentials` in
    $CREDENTIALS_DIRECTORY (only consulted when neither key is given; pass () to skip it)."""
    file_key = f"{name}_file"
    inline = table.opt_string(name)
    if blank_is_unset and inline == "":
        inline = None
    file_path = table.path(file_key)
    if table.has(name) and table.has(file_key):
        table.problem(name, f"give either {name} or {file_key}, not both")
        return None
    if inline is not None:
        if not inline.strip():
            table.problem(name, f"must not be empty; set it or use {file_key}")
            return None
        return Secret(inline, "given inline")
    if file_path is not None:
        value = read_secret_file(file_path, table.key(file_key), table.problems)
        return None if value is None else Secret(value, f"from {file_path}")
    found = credential_file(environ, credentials)
    if found is None:
        return None
    value = read_secret_file(found, table.key(name), table.problems)
    return None if value is None else Secret(value, f"from ${CREDENTIALS_ENV}/{found.name}")


def check_key_pair(
    problems: Problems,
    cert: tuple[str, Path],
    key: tuple[str, Path],
    passphrase: tuple[str, Secret | None] | None = None,
    *,
    rsa_only: bool = False,
) -> None:
    """The certificate must be PEM X.509, the key a PEM private key that belongs to it.

    Each pair is (dotted key, value); without a `passphrase` pair the key must not be
    encrypted. `rsa_only`: Entra ID accepts only RSA keys for certificate credentials.
    """
    (cert_key, cert_path), (key_key, key_path) = cert, key
    certificate = _read_certificate(problems, cert_key, cert_path)
    private_key = _read_private_key(problems, key, passphrase)
    if private_key is None:
        return
    if rsa_only and not isinstance(private_key, rsa.RSAPrivateKey):
        problems.add(key_key, f"{key_path} is not an RSA key; Entra ID certificate "
                              "credentials need RSA (outlook2mqtt cert new makes one)")
    elif certificate is not None and (
        _spki(certificate.public_key()) != _spki(private_key.public_key())
    ):
        problems.add(key_key, f"{key_path} does not belong to the certificate {cert_path}; "
                              "use the key that was generated with it")


def certificate_problem(data: bytes, path: Path) -> str | None:
    """What is wrong with `data` (read from `path`) as a PEM X.509 certificate."""
    try:
        x509.load_pem_x509_certificate(data)
    except ValueError:
        der = "" if data.lstrip().startswith(b"-----") else (
            " (it looks like DER, e.g. a .cer file; use the PEM .crt)")
        return f"{path} is not a PEM X.509 certificate{der}"
    return None


def _read_certificate(problems: Problems, key: str, path: Path) -> x509.Certificate | None:
    data = read_file(path, key, problems)
    if data is None:
        return None
    problem = certificate_problem(data, path)
    if problem is not None:
        problems.add(key, problem)
        return None
    return x509.load_pem_x509_certificate(data)


def _read_private_key(
    problems: Problems, key: tuple[str, Path], passphrase: tuple[str, Secret | None] | None
) -> Any:
    """The private key, or None after reporting why it cannot be used (see check_key_pair)."""
    key_key, key_path = key
    pass_key, pass_secret = passphrase or (key_key, None)
    key_data = read_file(key_path, key_key, problems)
    if key_data is None:
        return None
    try:
        return serialization.load_pem_private_key(
            key_data, pass_secret.value.encode() if pass_secret else None
        )
    except TypeError:
        # cryptography's TypeError: a passphrase is missing, or given for a plain key
        if pass_secret is None:
            fix = "decrypt it (openssl pkey)" if passphrase is None else (
                "set private_key_passphrase or private_key_passphrase_file")
            problems.add(pass_key, f"the private key {key_path} is encrypted; {fix}")
        else:
            problems.add(pass_key, f"the private key {key_path} is not encrypted; remove the "
                                   f"passphrase ({pass_secret.origin})")
    except (ValueError, UnsupportedAlgorithm):
        if pass_secret is not None and b"ENCRYPTED" in key_data:
            problems.add(pass_key, f"wrong passphrase ({pass_secret.origin}): {key_path} "
                                   "could not be decrypted")
        else:
            problems.add(key_key, f"{key_path} is not a PEM private key (expected "
                                  "'-----BEGIN ... PRIVATE KEY-----')")
    return None


def _spki(public_key: Any) -> bytes:
    data: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def check_ca_file(table: Table, name: str) -> Path | None:
    """A CA bundle: a readable file holding at least one PEM certificate."""
    path = table.path(name)
    if path is None:
        return None
    data = read_file(path, table.key(name), table.problems)
    if data is not None:
        check(table, name, ca_bundle_problem(data, path))
    return path


def ca_bundle_problem(data: bytes, path: Path) -> str | None:
    """What is wrong with `data` (read from `path`) as a bundle of PEM CA certificates."""
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        return f"{path} holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----')"
    return None


# the delegated IMAP permission; MSAL adds offline_access (for the refresh token) itself
DELEGATED_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
CERTIFICATE_KEYS = (
    "certificate_file", "private_key_file", "private_key_passphrase", "private_key_passphrase_file",
)


def scope(t: Table, auth: str, imap_host: str, global_imap_host: str) -> str:
    """`scope`, by default the cloud's IMAP resource's '/.default' (app-only) or
    IMAP.AccessAsUser.All. `imap_host` is the cloud preset's host: overriding `imap_host`
    alone (a TLS proxy, a test server) keeps the token audience of the cloud."""
    if auth != "device_code":
        default = f"https://{imap_host}/.default"
    elif imap_host == global_imap_host:
        default = DELEGATED_SCOPE
    else:
        default = f"https://{imap_host}/IMAP.AccessAsUser.All"
    value = t.string("scope", default)
    if not t.has("scope"):
        return value
    if "graph.microsoft" in value:
        t.problem("scope", f"IMAP needs an Outlook token, not Microsoft Graph; use {default!r}")
    elif re.search(r"\s", value):
        t.problem("scope", f"give a single scope, e.g. {default!r} (MSAL adds offline_access)")
    elif auth != "device_code" and not value.endswith("/.default"):
        t.problem("scope", f"app-only tokens need a '/.default' scope, e.g. {default!r}")
    return value


def account_credentials(
    t: Table, auth: str | None, account: str | None, environ: Mapping[str, str]
) -> tuple[str | None, Path | None, Path | None, str | None]:
    """client_secret, certificate_file, private_key_file and private_key_passphrase as `auth`
    needs them; `auth` None (itself invalid) skips the checks, `account` None (an invalid
    name) skips the per-account credential names."""

    def names(key: str) -> tuple[str, ...]:
        return ((f"{account}.{key}",) if account else ()) + (key,)

    if auth is None:
        return None, None, None, None
    unused = [k for k in CERTIFICATE_KEYS if auth != "client_certificate"]
    unused += [k for k in ("client_secret", "client_secret_file") if auth != "client_secret"]
    for key in unused:
        if t.has(key):
            t.problem(key, f'not used with auth = "{auth}"; remove it or change auth')
    if auth == "client_secret":
        found = secret(t, "client_secret", credentials=names("client_secret"), environ=environ)
        if found is None and not (t.has("client_secret") or t.has("client_secret_file")):
            t.problem("client_secret", 'required with auth = "client_secret"; set client_secret '
                      "or client_secret_file, or provide the credential "
                      f"{names('client_secret')[0]!r} in ${CREDENTIALS_ENV}")
        return (found.value if found else None), None, None, None
    if auth == "device_code":
        return None, None, None, None
    certificate = t.path("certificate_file")
    if not t.has("certificate_file"):
        t.problem("certificate_file", 'required with auth = "client_certificate"; give the PEM '
                                      "certificate (outlook2mqtt cert new makes one)")
    private_key = t.path("private_key_file")
    if not t.has("private_key_file"):
        private_key = credential_file(environ, names("private_key"))
        if private_key is None:
            t.problem("private_key_file", 'required with auth = "client_certificate"; give the '
                      f"PEM private key or the credential {names('private_key')[0]!r} "
                      f"in ${CREDENTIALS_ENV}")
    passphrase = secret(t, "private_key_passphrase",
                        credentials=names("private_key_passphrase"), environ=environ)
    if certificate and private_key:
        check_key_pair(t.problems, (t.key("certificate_file"), certificate),
                       (t.key("private_key_file"), private_key),
                       (t.key("private_key_passphrase"), passphrase), rsa_only=True)
    elif certificate:
        read_file(certificate, t.key("certificate_file"), t.problems)
    return None, certificate, private_key, passphrase.value if passphrase else None
