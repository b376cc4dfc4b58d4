"""`[accounts.send]` read into a `SendConfig` (docs/sending.md): the SMTP host of the cloud,
the recipient allow-list and the limits. Problems are recorded, never raised.

Imports only the config's model and field readers.
"""

from __future__ import annotations

import re

from bridge.config import fields as v
from bridge.config.model import CONSUMER_SMTP_HOST, SMTP_HOSTS, SendConfig

SEND_KEYS = (
    "enabled", "smtp_host", "smtp_port", "allowed_recipients", "max_per_minute", "max_bytes",
    "default_to", "default_subject",
)
# One address glob: a local part and a domain, each of printable characters without
# spaces, quotes or brackets; '*' and '?' as in fnmatch.
_ADDRESS_GLOB = re.compile(r"[^@\s\"<>(),;:\[\]\\]+@[^@\s\"<>(),;:\[\]\\]+")
# An addr-spec as mail is actually addressed (RFC 5322 §3.4.1 dot-atoms, ASCII only: the
# bridge does not ask for SMTPUTF8); quoted local parts and address literals are refused.
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3 path limit, less the angle brackets


def is_address(text: str) -> bool:
    """Whether `text` is one plain e-mail address the bridge will send to."""
    return len(text) <= MAX_ADDRESS and _ADDRESS.fullmatch(text) is not None


def parse_send(t: v.Table, *, auth: str, cloud: str) -> SendConfig | None:
    """The account's `[accounts.send]`, or None when the table is absent."""
    if not t.has("send"):
        return None
    table = t.table("send")
    table.check_keys(SEND_KEYS, {})
    default_host = CONSUMER_SMTP_HOST if auth == "device_code" else SMTP_HOSTS[cloud]
    smtp_host = table.string("smtp_host", default_host)
    v.check(table, "smtp_host", v.host_problem(smtp_host, default_host))
    enabled = table.boolean("enabled", True)
    allowed = _allowed_recipients(table, enabled)
    default_to = tuple(a.lower() for a in table.strings("default_to", ()))
    for i, address in enumerate(default_to):
        key = f"{table.key('default_to')}[{i}]"
        if not is_address(address):
            table.problems.add(key, f"{address!r} is not an e-mail address")
        elif not SendConfig(smtp_host, allowed).allows(address):
            table.problems.add(key, f"{address!r} matches no allowed_recipients glob, so "
                                    "every notification would be refused; add it there")
    subject = table.string("default_subject", "Home Assistant")
    if re.search(r"[\x00-\x1f\x7f]", subject):
        table.problem("default_subject", "must be one line without control characters")
    return SendConfig(
        smtp_host=smtp_host,
        allowed_recipients=allowed,
        enabled=enabled,
        smtp_port=table.integer("smtp_port", 587, 1, 65535),
        max_per_minute=table.integer("max_per_minute", 30, 1, 10_000),
        max_bytes=table.integer("max_bytes", 25_000_000, 1_000, 150_000_000),
        default_to=default_to,
        default_subject=subject,
    )


def _allowed_recipients(table: v.Table, enabled: bool) -> tuple[str, ...]:
    if not table.has("allowed_recipients"):
        if enabled:
            table.problem("allowed_recipients", "required when sending is enabled: list the "
                          'addresses the bridge may mail, e.g. ["*@contoso.com"] (an empty '
                          "list refuses every recipient)")
        return ()
    globs = tuple(g.strip().lower() for g in table.strings("allowed_recipients", ()))
    for i, glob in enumerate(globs):
        if not _ADDRESS_GLOB.fullmatch(glob):
            table.problems.add(f"{table.key('allowed_recipients')}[{i}]",
                               f"{glob!r} is not an address glob such as '*@contoso.com' or "
                               "'me@example.com'")
    return globs
