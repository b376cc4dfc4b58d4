"""`cert new` / `cert show`: files, modes and thumbprints, checked against independent tools."""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import random
import shutil
import stat
import subprocess
import tempfile
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.auth.certificates import (
    CLOCK_SKEW,
    CertificateError,
    CertInfo,
    NewCertificate,
    describe_certificate,
    new_certificate,
)
from bridge.cli.cert import add_cert_parser, format_info

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
OPENSSL = shutil.which("openssl")
# scripts/setup.sh installs openssl: a missing one is a broken set-up, not a skip.
SUFFIXES = (".key", ".crt", ".cer", ".pub.pem")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> NewCertificate:
    """One certificate shared by the read-only tests (key generation is the slow part)."""
    return new_certificate(tmp_path_factory.mktemp("certs"), now=NOW)


def independent(der: bytes) -> dict[str, str]:
    """Azure's and RFC 7515's values computed from the DER bytes with hashlib alone."""
    sha1 = hashlib.sha1(der).digest()  # noqa: S324 - SHA-1 is what Azure's thumbprint is
    sha256 = hashlib.sha256(der).digest()
    return {
        "sha1": sha1.hex().upper(),
        "x5t": base64.urlsafe_b64encode(sha1).rstrip(b"=").decode(),
        "sha256": sha256.hex().upper(),
        "x5t_s256": base64.urlsafe_b64encode(sha256).rstrip(b"=").decode(),
    }


def openssl(*args: str) -> str:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout


def openssl_fingerprint(path: Path, digest: str, *, der: bool = False) -> str:
    """`openssl x509 -fingerprint` as Azure shows it: upper-case hex without colons."""
    inform = ["-inform", "DER"] if der else []
    out = openssl("x509", *inform, "-in", str(path), "-noout", "-fingerprint", f"-{digest}")
    return out.strip().split("=", 1)[1].replace(":", "").upper()


def cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outlook2mqtt")
    add_cert_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def run_cli(*argv: str) -> int:
    args = cli().parse_args(list(argv))
    result: int = args.func(args)
    return result


def printed(output: str, label: str) -> str:
    """The value on the `label:` line of format_info's output."""
    for line in output.splitlines():
        if line.startswith(f"{label}:"):
            return line.split(":", 1)[1].split()[0]
    raise AssertionError(f"no {label!r} line in:\n{output}")


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- thumbprints -------------------------------------------------------------------------


def test_thumbprints_match_the_der_file_hashed_independently(made: NewCertificate) -> None:
    expected = independent(made.der_file.read_bytes())

    assert made.info.sha1_thumbprint == expected["sha1"]
    assert made.info.x5t == expected["x5t"]
    assert made.info.sha256_thumbprint == expected["sha256"]
    assert made.info.x5t_s256 == expected["x5t_s256"]


def test_thumbprints_have_the_shape_azure_and_jwt_headers_use(made: NewCertificate) -> None:
    assert len(made.info.sha1_thumbprint) == 40
    assert made.info.sha1_thumbprint == made.info.sha1_thumbprint.upper()
    assert ":" not in made.info.sha1_thumbprint
    assert len(made.info.sha256_thumbprint) == 64
    for value in (made.info.x5t, made.info.x5t_s256):
        assert "=" not in value
        assert not set(value) & set("+/")


def test_thumbprints_match_openssl_fingerprints(made: NewCertificate) -> None:
    assert openssl_fingerprint(made.cert_file, "sha1") == made.info.sha1_thumbprint
    assert openssl_fingerprint(made.der_file, "sha1", der=True) == made.info.sha1_thumbprint
    assert openssl_fingerprint(made.cert_file, "sha256") == made.info.sha256_thumbprint


def test_describe_reads_a_certificate_openssl_made(tmp_path: Path) -> None:
    cert = tmp_path / "other.crt"
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "other.key"),
        "-out", str(cert), "-days", "2", "-subj", "/CN=made-by-openssl",
    )

    info = describe_certificate(cert)

    assert info.sha1_thumbprint == openssl_fingerprint(cert, "sha1")
    assert info.sha256_thumbprint == openssl_fingerprint(cert, "sha256")
    assert info.subject == "CN=made-by-openssl"


def test_pem_and_der_files_describe_the_same_certificate(made: NewCertificate) -> None:
    from_pem = describe_certificate(made.cert_file)
    from_der = describe_certificate(made.der_file)

    assert from_pem.path == made.cert_file
    assert from_der.path == made.der_file
    assert from_pem == made.info
    assert CertInfo(**{**vars(from_der), "path": made.cert_file}) == from_pem


def test_describe_reads_pem_with_text_around_it(made: NewCertificate, tmp_path: Path) -> None:
    # `openssl pkcs12 -nokeys` and some portals put attribute lines before the PEM block.
    noisy = tmp_path / "bundle.pem"
    noisy.write_bytes(b"Bag Attributes\n    friendlyName: x\n" + made.cert_file.read_bytes())

    assert describe_certificate(noisy).sha1_thumbprint == made.info.sha1_thumbprint


# --- the key and certificate belong together (what MSAL needs) ----------------------------


def test_cryptography_loads_key_and_certificate_and_their_public_keys_match(
    made: NewCertificate,
) -> None:
    key = serialization.load_pem_private_key(made.key_file.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(made.cert_file.read_bytes())
    public = serialization.load_pem_public_key(made.public_key_file.read_bytes())
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)
    assert public.public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def test_msal_signs_a_client_assertion_the_certificate_verifies(made: NewCertificate) -> None:
    from msal.oauth2cli import assertion as assertion_module
    key_pem = made.key_file.read_text()
    cert = x509.load_pem_x509_certificate(made.cert_file.read_bytes())
    # MSAL >= 1.35 with `public_certificate` signs PS256 with x5t#S256; older or ADFS: RS256 + x5t.
    for algorithm, kwargs, header, ours in (
        ("PS256", {"sha256_thumbprint": made.info.sha256_thumbprint}, "x5t#S256",
         made.info.x5t_s256),
        ("RS256", {"sha1_thumbprint": made.info.sha1_thumbprint}, "x5t", made.info.x5t),
    ):
        creator = assertion_module.JwtAssertionCreator(key_pem, algorithm, **kwargs)
        token = creator.create_normal_assertion(audience="aud", issuer="client")
        token = token.decode() if isinstance(token, bytes) else token

        assert jwt.get_unverified_header(token)[header].rstrip("=") == ours
        claims = jwt.decode(token, cert.public_key(), algorithms=[algorithm], audience="aud")
        assert claims["iss"] == "client"


def test_openssl_derives_the_written_public_key_from_the_private_key(made: NewCertificate) -> None:
    derived = openssl("pkey", "-in", str(made.key_file), "-pubout")

    assert derived == made.public_key_file.read_text()


def test_key_is_an_unencrypted_pkcs8_pem(made: NewCertificate) -> None:
    text = made.key_file.read_text()

    assert text.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert made.public_key_file.read_text().startswith("-----BEGIN PUBLIC KEY-----\n")
    assert made.cert_file.read_text().startswith("-----BEGIN CERTIFICATE-----\n")
    assert made.der_file.read_bytes()[:1] == b"\x30"  # a DER SEQUENCE, not text


def test_certificate_is_self_signed_sha256_for_client_auth(made: NewCertificate) -> None:
    cert = x509.load_der_x509_certificate(made.der_file.read_bytes())

    cert.verify_directly_issued_by(cert)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.subject == cert.issuer
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert made.info.subject == "CN=outlook2mqtt"
    assert made.info.key_size == 2048


def test_validity_runs_days_from_now_backdated_for_clock_skew(made: NewCertificate) -> None:
    assert made.info.not_before == NOW - CLOCK_SKEW
    assert made.info.not_after == NOW + timedelta(days=730)


def test_now_without_timezone_is_taken_as_utc(tmp_path: Path) -> None:
    made = new_certificate(tmp_path, days=1, now=datetime(2026, 3, 1, 12, 0, 0, 999))

    assert made.info.not_after == NOW + timedelta(days=1)


# --- files and modes ---------------------------------------------------------------------


def test_writes_the_four_files_named_after_name(tmp_path: Path) -> None:
    made = new_certificate(tmp_path, name="home-cert", now=NOW)

    assert files_in(tmp_path) == sorted(f"home-cert{s}" for s in SUFFIXES)
    assert (made.key_file, made.cert_file, made.der_file, made.public_key_file) == tuple(
        tmp_path / f"home-cert{s}" for s in SUFFIXES
    )
    assert made.info.path == made.cert_file


def test_key_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = new_certificate(tmp_path, now=NOW)
    finally:
        os.umask(old)

    assert stat.S_IMODE(made.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.cert_file.stat().st_mode) == 0o644


def test_key_file_is_created_private_never_chmod_ed_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: dict[str, tuple[int, int]] = {}
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        opened[Path(path).name] = (flags, mode)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    new_certificate(tmp_path, now=NOW)

    flags, mode = opened["outlook2mqtt.key"]
    assert flags & os.O_CREAT and flags & os.O_EXCL
    assert mode == 0o600


def test_creates_a_missing_out_dir_that_others_can_enter(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"

    new_certificate(out, now=NOW)

    # the service's dynamic user reads the certificate; the key alone is private
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert len(files_in(out)) == 4


@pytest.mark.root(why="switching to user nobody needs root and runuser", runuser=True)
def test_an_unprivileged_user_reads_the_certificate_but_not_the_key() -> None:
    base = Path(tempfile.mkdtemp(prefix="o2m-cert-"))
    try:
        base.chmod(0o755)  # stands in for /etc
        made = new_certificate(base / "outlook2mqtt", now=NOW)

        def as_nobody(path: Path) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(path)],
                                  capture_output=True, timeout=30, check=False)

        assert as_nobody(made.cert_file).stdout == made.cert_file.read_bytes()
        assert as_nobody(made.der_file).returncode == 0
        refused = as_nobody(made.key_file)
        assert refused.returncode != 0 and b"Permission denied" in refused.stderr
    finally:
        shutil.rmtree(base)


def test_leaves_an_existing_out_dir_mode_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)

    new_certificate(tmp_path, now=NOW)

    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


@pytest.mark.parametrize("existing", SUFFIXES)
def test_refuses_to_overwrite_any_of_the_four_and_writes_nothing(
    tmp_path: Path, existing: str
) -> None:
    (tmp_path / f"outlook2mqtt{existing}").write_text("mine")

    with pytest.raises(CertificateError, match="refusing to overwrite") as caught:
        new_certificate(tmp_path, now=NOW)

    assert str(tmp_path / f"outlook2mqtt{existing}") in str(caught.value)
    assert "--force" in str(caught.value)
    assert files_in(tmp_path) == [f"outlook2mqtt{existing}"]
    assert (tmp_path / f"outlook2mqtt{existing}").read_text() == "mine"


def test_refusal_lists_every_existing_file(made: NewCertificate) -> None:
    with pytest.raises(CertificateError) as caught:
        new_certificate(made.key_file.parent, now=NOW)

    for path in (made.key_file, made.cert_file, made.der_file, made.public_key_file):
        assert str(path) in str(caught.value)


def test_a_dangling_symlink_counts_as_existing(tmp_path: Path) -> None:
    (tmp_path / "outlook2mqtt.key").symlink_to(tmp_path / "nowhere")

    with pytest.raises(CertificateError, match=r"outlook2mqtt\.key"):
        new_certificate(tmp_path, now=NOW)

    assert not (tmp_path / "nowhere").exists()


def test_force_replaces_every_file_with_a_new_key(tmp_path: Path) -> None:
    first = new_certificate(tmp_path, now=NOW)
    first.key_file.chmod(0o644)
    old_key = first.key_file.read_bytes()

    second = new_certificate(tmp_path, force=True, now=NOW)

    assert second.info.sha1_thumbprint != first.info.sha1_thumbprint
    assert second.key_file.read_bytes() != old_key
    assert independent(second.der_file.read_bytes())["sha1"] == second.info.sha1_thumbprint
    assert describe_certificate(second.cert_file) == second.info
    assert stat.S_IMODE(second.key_file.stat().st_mode) == 0o600
    assert files_in(tmp_path) == sorted(f"outlook2mqtt{s}" for s in SUFFIXES)  # no temp files


def test_force_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("do not touch")
    out = tmp_path / "out"
    out.mkdir()
    (out / "outlook2mqtt.key").symlink_to(victim)

    made = new_certificate(out, force=True, now=NOW)

    assert victim.read_text() == "do not touch"
    assert not made.key_file.is_symlink()
    assert made.key_file.read_text().startswith("-----BEGIN PRIVATE KEY-----")


# --- parameters --------------------------------------------------------------------------


@pytest.mark.parametrize("key_size", [2048, 3072])
def test_key_sizes(tmp_path: Path, key_size: int) -> None:
    made = new_certificate(tmp_path, key_size=key_size, now=NOW)

    assert made.info.key_size == key_size
    key = serialization.load_pem_private_key(made.key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == key_size


@pytest.mark.parametrize("key_size", [1024, 2047, 4096])
def test_other_key_sizes_are_refused_before_anything_is_written(
    tmp_path: Path, key_size: int
) -> None:
    with pytest.raises(CertificateError, match="2048 or 3072"):
        new_certificate(tmp_path / "out", key_size=key_size)

    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("days", [1, 3650])
def test_days_at_the_limits(tmp_path: Path, days: int) -> None:
    made = new_certificate(tmp_path, days=days, now=NOW)

    assert made.info.not_after == NOW + timedelta(days=days)


@pytest.mark.parametrize("days", [0, -1, 3651])
def test_days_out_of_range_are_refused(tmp_path: Path, days: int) -> None:
    with pytest.raises(CertificateError, match=r"between 1 and 3650"):
        new_certificate(tmp_path, days=days)

    assert files_in(tmp_path) == []


def test_subject_becomes_the_common_name(tmp_path: Path) -> None:
    made = new_certificate(tmp_path, subject="bridge.contoso.com", now=NOW)

    cert = x509.load_pem_x509_certificate(made.cert_file.read_bytes())
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "bridge.contoso.com"
    assert made.info.subject == "CN=bridge.contoso.com"


@pytest.mark.parametrize("subject", ["", "   ", "x" * 65])
def test_unusable_subjects_are_refused(tmp_path: Path, subject: str) -> None:
    with pytest.raises(CertificateError, match="subject"):
        new_certificate(tmp_path, subject=subject)

    assert files_in(tmp_path) == []


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "-rf", "sp ace"])
def test_names_that_are_not_plain_file_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(CertificateError, match="invalid name"):
        new_certificate(tmp_path, name=name)

    assert files_in(tmp_path) == []


def test_an_out_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")

    with pytest.raises(CertificateError, match="cannot write certificate files"):
        new_certificate(blocker)


# --- describe_certificate errors ---------------------------------------------------------


@pytest.mark.parametrize(
    # seeded bytes: the same test ids in every xdist worker
    "content", [b"", b"hello world\n", random.Random(64).randbytes(64),
                b"-----BEGIN CERTIFICATE-----\nAA==\n"]
)
def test_describe_garbage_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.crt"
    bad.write_bytes(content)

    with pytest.raises(CertificateError, match=r"not a PEM or DER X\.509 certificate"):
        describe_certificate(bad)


def test_describe_a_private_key_says_which_file_to_give(made: NewCertificate) -> None:
    with pytest.raises(CertificateError, match=r"this is a private key; give the \.crt or \.cer"):
        describe_certificate(made.key_file)


def test_describe_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="cannot read"):
        describe_certificate(tmp_path / "missing.crt")


# --- format_info -------------------------------------------------------------------------


def test_format_info_shows_every_value(made: NewCertificate) -> None:
    text = format_info(made.info, now=NOW)

    assert printed(text, "SHA-1 thumbprint") == made.info.sha1_thumbprint
    assert printed(text, "x5t") == made.info.x5t
    assert printed(text, "SHA-256 thumbprint") == made.info.sha256_thumbprint
    assert printed(text, "x5t#S256") == made.info.x5t_s256
    assert printed(text, "Subject") == "CN=outlook2mqtt"
    assert "Expires:            2028-02-29 12:00:00 UTC  (in 730 days)" in text
    assert "RSA 2048 bits" in text


def test_format_info_flags_an_expired_certificate(made: NewCertificate) -> None:
    later = made.info.not_after + timedelta(seconds=1)

    assert "(EXPIRED)" in format_info(made.info, now=later)
    assert "(in less than a day)" in format_info(made.info, now=later - timedelta(hours=2))


# --- the argparse hook, end to end -------------------------------------------------------


def test_cli_cert_new_prints_the_thumbprint_of_the_der_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"

    assert run_cli("cert", "new", "--out-dir", str(out)) == 0

    stdout = capsys.readouterr().out
    expected = independent((out / "outlook2mqtt.cer").read_bytes())
    assert printed(stdout, "SHA-1 thumbprint") == expected["sha1"]
    assert printed(stdout, "x5t") == expected["x5t"]
    assert printed(stdout, "SHA-256 thumbprint") == expected["sha256"]
    assert printed(stdout, "x5t#S256") == expected["x5t_s256"]
    for suffix in SUFFIXES:
        assert str(out / f"outlook2mqtt{suffix}") in stdout


def test_cli_cert_new_hints_the_upload_and_config_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("cert", "new", "--out-dir", str(tmp_path), "--name", "home") == 0

    stdout = capsys.readouterr().out
    assert "Upload home.cer" in stdout
    assert "Certificates & secrets -> Certificates" in stdout
    config_lines = [
        line.strip() for line in stdout.splitlines()
        if line.strip().startswith(("auth =", "certificate_file =", "private_key_file ="))
    ]
    config = tomllib.loads("\n".join(config_lines))
    assert config["auth"] == "client_certificate"
    assert Path(config["certificate_file"]) == (tmp_path / "home.crt").resolve()
    assert Path(config["private_key_file"]) == (tmp_path / "home.key").resolve()


def test_cli_cert_new_takes_every_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.key").write_text("old")
    argv = ["cert", "new", "--out-dir", str(tmp_path), "--name", "x", "--days", "10",
            "--subject", "my-app", "--key-size", "3072", "--force"]

    assert run_cli(*argv) == 0

    info = describe_certificate(tmp_path / "x.crt")
    assert (info.subject, info.key_size) == ("CN=my-app", 3072)
    assert info.not_after - info.not_before == timedelta(days=10) + CLOCK_SKEW
    assert "RSA 3072 bits" in capsys.readouterr().out


def test_cli_cert_show_prints_the_same_values_for_pem_and_der(
    made: NewCertificate, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (made.cert_file, made.der_file):
        assert run_cli("cert", "show", str(path)) == 0
        stdout = capsys.readouterr().out
        assert printed(stdout, "SHA-1 thumbprint") == made.info.sha1_thumbprint
        assert printed(stdout, "x5t") == made.info.x5t


def test_cli_cert_show_garbage_exits_1_with_the_error_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.cer"
    bad.write_bytes(b"not a certificate")

    assert run_cli("cert", "show", str(bad)) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert "not a PEM or DER X.509 certificate" in captured.err


def test_cli_cert_new_refusal_exits_1_and_names_the_files(
    made: NewCertificate, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("cert", "new", "--out-dir", str(made.key_file.parent)) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(made.cert_file) in captured.err
    assert "--force" in captured.err
    assert describe_certificate(made.cert_file) == made.info  # untouched


@pytest.mark.parametrize(
    "argv", [["cert"], ["cert", "new", "--key-size", "4096"], ["cert", "show"]]
)
def test_cli_usage_errors_are_argparse_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli().parse_args(argv)

    assert caught.value.code == 2


def test_cli_shared_options_from_parents_follow_the_subcommand(tmp_path: Path) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default="info")
    parser = argparse.ArgumentParser(prog="outlook2mqtt")
    add_cert_parser(parser.add_subparsers(dest="command", required=True), parents=[common])

    args = parser.parse_args(["cert", "show", "--log-level", "debug", str(tmp_path / "c.crt")])

    assert args.log_level == "debug"
    assert args.func.__name__ == "_run_show"
