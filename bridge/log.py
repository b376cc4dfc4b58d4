"""Logging set-up: readable on a terminal, journald-friendly under systemd, secrets redacted.

Secrets are redacted twice over: every value the bridge knows to be secret (client secret,
MQTT password, passphrase, access tokens, the private key's PEM body) is registered with
`register_secret` where it is loaded, and `redact` also removes anything shaped like a JWT,
a PEM private key or a bearer credential, so a token nobody registered (a client assertion
MSAL signed) cannot slip through either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from pathlib import Path

LEVELS = ("debug", "info", "warning", "error")
_secrets: set[str] = set()
_lock = threading.Lock()

# syslog priorities (sd-daemon(3)): journald reads "<N>" at the start of a line.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}

# Shapes of credentials that must never be logged, registered or not.
_PATTERNS = (
    # JWS compact serialisation (RFC 7515 §7.1): access tokens, client assertions
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\Z)",
               re.DOTALL),
    # Authorization header values and the XOAUTH2 "auth=Bearer <token>" (RFC 6750 §2.1)
    re.compile(r"(?<=Bearer )[A-Za-z0-9._~+/-]{8,}=*", re.IGNORECASE),
)
_MIN_SECRET = 4
_MIN_KEY_LINE = 16  # base64 lines of a PEM body shorter than this are not worth matching


def register_secret(value: str | None) -> None:
    """Never let `value` reach a log line (client secrets, tokens, passwords)."""
    if value and len(value) >= _MIN_SECRET:
        with _lock:
            _secrets.add(value)


def register_private_key(pem: bytes | str) -> None:
    """Never log any part of a PEM private key: its whole body and each of its lines."""
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith("-----") and ":" not in line]
    register_secret("".join(lines))
    for line in lines:
        if len(line) >= _MIN_KEY_LINE:
            register_secret(line)


def register_private_key_file(path: Path | None) -> None:
    """`register_private_key` for a key file; unreadable files are left to the caller."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        register_private_key(path.read_bytes())


def redact(text: str) -> str:
    """`text` with every registered secret and every credential-shaped string as `***`."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    for pattern in _PATTERNS:
        text = pattern.sub("***", text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats, then removes secrets from the whole line (message, args and traceback).

    Under journald every line (a traceback too) starts with its syslog priority `<N>` and
    carries no timestamp, since the journal stamps each entry itself.
    """

    def __init__(self, fmt: str, *, journald: bool, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self._journald = journald

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        if self._journald:
            prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
            line = "\n".join(prefix + part for part in line.splitlines())
        return line


def under_journald() -> bool:
    """True when stderr goes to the journal (systemd sets JOURNAL_STREAM, systemd.exec(5))."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def formatter(*, journald: bool) -> RedactingFormatter:
    """The journald format (`<6>bridge.auth: ...`) or the terminal one (with a timestamp)."""
    if journald:
        return RedactingFormatter("%(name)s: %(message)s", journald=True)
    return RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                              journald=False, datefmt="%Y-%m-%d %H:%M:%S")


def setup(level: str = "info") -> None:
    """Configure the root logger once for the command line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(journald=under_journald()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    # MSAL and urllib3 log request and response bodies at debug level: the redaction
    # would catch the tokens, but the noise drowns the bridge's own lines.
    for noisy in ("urllib3", "msal"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    # urllib3 warns of every retried connection ("Retrying ... NameResolutionError"); the
    # failure that matters is reported once by the caller, with a hint. Kept at debug.
    if root.level > logging.DEBUG:
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
