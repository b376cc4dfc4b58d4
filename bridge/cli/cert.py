"""`cert new` / `cert show`: the subcommand that makes or shows the client certificate."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.auth.certificates import (
    DEFAULT_NAME,
    KEY_SIZES,
    MAX_DAYS,
    CertificateError,
    CertInfo,
    NewCertificate,
    describe_certificate,
    new_certificate,
)
from bridge.cli.exits import EXIT_FAIL, EXIT_OK
from bridge.util.times import as_utc


def format_info(info: CertInfo, *, now: datetime | None = None) -> str:
    """The lines `cert new` and `cert show` print about a certificate."""
    now = as_utc(now)
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
        return EXIT_FAIL
    return EXIT_OK


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
