"""Logging set-up: readable on a terminal, journald-friendly under systemd, secrets redacted."""

from __future__ import annotations

import logging
import os
import sys
import threading

LEVELS = ("debug", "info", "warning", "error")
_secrets: set[str] = set()
_lock = threading.Lock()

# syslog priorities (sd-daemon(3)): journald reads "<N>" at the start of a line.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


def register_secret(value: str | None) -> None:
    """Never let `value` reach a log line (client secrets, tokens, passwords)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `***`."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFormatter(logging.Formatter):
    """Formats, then removes secrets from the whole line (message, args and traceback)."""

    def __init__(self, fmt: str, *, journald: bool) -> None:
        super().__init__(fmt)
        self._journald = journald

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        if self._journald:
            prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
            line = "\n".join(prefix + part for part in line.splitlines())
        return line


def under_journald() -> bool:
    """True when stderr goes to the journal (systemd sets JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup(level: str = "info") -> None:
    """Configure the root logger once for the command line."""
    journald = under_journald()
    # journald stamps every line itself: no duplicate timestamp there.
    fmt = "%(name)s: %(message)s"
    if not journald:
        fmt = "%(asctime)s %(levelname)-7s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt, journald=journald))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho / MSAL / urllib3 debug output includes request bodies: keep them quieter.
    for noisy in ("urllib3", "msal"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
