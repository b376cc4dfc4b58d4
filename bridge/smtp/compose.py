"""Messages to send, built with the stdlib `email` package: a new mail, a threaded reply and a
forward. Pure: no I/O; the original of a reply or forward comes in as its raw bytes.

Headers are set through `EmailMessage`, which refuses CR and LF in a value and encodes
non-ASCII text (RFC 2047 / RFC 2231); the caller has validated every field already.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import html as html_lib
import re
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, make_msgid

from bridge.errors import CommandError
from bridge.mail.htmltext import html_to_text

# RFC 5322 output with CRLF line ends (RFC 5321 §2.3.8), and 7-bit bodies (quoted-printable
# or base64), so no server needs 8BITMIME and no line can exceed SMTP's 998 characters.
POLICY = email.policy.SMTP.clone(cte_type="7bit")
IMPORTANCE = {"low": ("low", "5"), "normal": ("normal", "3"), "high": ("high", "1")}
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|antw)\s*:", re.IGNORECASE)
_FORWARD_PREFIX = re.compile(r"^\s*(fwd?|wg)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str  # "type/subtype", validated
    data: bytes


@dataclass(frozen=True)
class Content:
    """What a message says: text and/or HTML, attachments, and optional headers."""

    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    importance: str | None = None  # a key of IMPORTANCE
    reply_to: tuple[Address, ...] = ()


@dataclass(frozen=True)
class Recipients:
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()  # only in the envelope, never in a header

    def addresses(self) -> tuple[str, ...]:
        """Every envelope recipient once (case-insensitive), in order."""
        seen: dict[str, str] = {}
        for a in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(a.addr_spec.lower(), a.addr_spec)
        return tuple(seen.values())


@dataclass(frozen=True)
class Outgoing:
    """A message ready for SMTP: its bytes, envelope recipients and Message-ID."""

    message: EmailMessage = field(repr=False)
    recipients: tuple[str, ...]
    message_id: str

    def as_bytes(self) -> bytes:
        return self.message.as_bytes(policy=POLICY)


def new_message(
    sender: str, recipients: Recipients, content: Content,
    *, now: dt.datetime | None = None, extra: dict[str, str] | None = None,
) -> Outgoing:
    """A new mail from `sender` (the account's mailbox)."""
    msg = EmailMessage(policy=POLICY)
    domain = sender.rpartition("@")[2]
    message_id = make_msgid(domain=domain)
    try:
        msg["From"] = Address(addr_spec=sender)
        if recipients.to:
            msg["To"] = recipients.to
        if recipients.cc:
            msg["Cc"] = recipients.cc
        if content.reply_to:
            msg["Reply-To"] = content.reply_to
        msg["Subject"] = content.subject
        msg["Date"] = format_datetime(now or dt.datetime.now(dt.UTC))
        msg["Message-ID"] = message_id
        for name, value in (extra or {}).items():
            msg[name] = value
        if content.importance is not None:
            msg["Importance"], msg["X-Priority"] = IMPORTANCE[content.importance]
        _body(msg, content)
    except (ValueError, TypeError) as exc:
        raise CommandError(f"cannot build the message: {exc}") from None
    return Outgoing(msg, recipients.addresses(), message_id)


def _body(msg: EmailMessage, content: Content) -> None:
    if content.html is not None and content.text is not None:
        msg.set_content(content.text)
        msg.add_alternative(content.html, subtype="html")
    elif content.html is not None:
        msg.set_content(content.html, subtype="html")
    else:
        msg.set_content(content.text or "")
    for a in content.attachments:
        maintype, _, subtype = a.content_type.partition("/")
        msg.add_attachment(a.data, maintype=maintype, subtype=subtype, filename=a.filename)


def parse_original(raw: bytes) -> EmailMessage:
    """The original of a reply or forward, parsed."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)  # noqa: S101 - policy.default makes EmailMessage
    return parsed


def _header(msg: EmailMessage, name: str) -> str:
    # One line: a folded or malformed header must not carry a line break into ours.
    return " ".join(str(msg.get(name, "") or "").split())


def _addresses(msg: EmailMessage, *names: str) -> list[Address]:
    found = getaddresses([_header(msg, n) for n in names if msg.get(n)])
    return [Address(display_name=" ".join(name.split()), addr_spec=addr)
            for name, addr in found if addr]


def reply_recipients(original: EmailMessage, sender: str, *, reply_all: bool) -> Recipients:
    """Reply-To (else From); with `reply_all` also To and Cc; never the sender itself."""
    to = _addresses(original, "Reply-To") or _addresses(original, "From")
    cc = _addresses(original, "To", "Cc") if reply_all else []
    mine = sender.lower()
    seen: set[str] = {mine}

    def fresh(addresses: list[Address]) -> tuple[Address, ...]:
        kept = []
        for a in addresses:
            if a.addr_spec.lower() not in seen:
                seen.add(a.addr_spec.lower())
                kept.append(a)
        return tuple(kept)

    return Recipients(to=fresh(to), cc=fresh(cc))


def original_text(original: EmailMessage) -> str:
    """The original's text: its text/plain part, else its HTML rendered to text."""
    part = original.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        text = part.get_content()
    except (LookupError, ValueError):
        return ""  # an unknown charset: quote nothing rather than mojibake
    if not isinstance(text, str):
        return ""
    return html_to_text(text) if part.get_content_subtype() == "html" else text


def reply_content(original: EmailMessage, text: str | None, html: str | None) -> Content:
    """The reply's subject (`Re:` once) and bodies, quoting the original's text."""
    subject = _header(original, "Subject")
    if not _REPLY_PREFIX.match(subject):
        subject = f"Re: {subject}"
    who = _header(original, "From") or "the sender"
    when = _header(original, "Date")
    intro = f"On {when}, {who} wrote:" if when else f"{who} wrote:"
    quoted = original_text(original).rstrip("\n")
    quote = "\n".join(f"> {line}" if line else ">" for line in quoted.splitlines())
    new_text = f"{text or ''}\n\n{intro}\n{quote}\n" if (text or html is None) else None
    new_html = None
    if html is not None:
        new_html = (f"{html}\n<p>{html_lib.escape(intro)}</p>\n<blockquote>"
                    f"<pre>{html_lib.escape(quoted)}</pre></blockquote>\n")
    return Content(subject=subject, text=new_text, html=new_html)


def thread_headers(original: EmailMessage) -> dict[str, str]:
    """In-Reply-To and References for a reply (RFC 5322 §3.6.4)."""
    message_id = _header(original, "Message-ID")
    if not message_id:
        return {}
    references = _header(original, "References") or _header(original, "In-Reply-To")
    return {"In-Reply-To": message_id,
            "References": f"{references} {message_id}".strip()}


def forward_content(original: EmailMessage, text: str | None) -> Content:
    """`Fwd:` subject and the note; the original goes along as a message/rfc822 part."""
    subject = _header(original, "Subject")
    if not _FORWARD_PREFIX.match(subject):
        subject = f"Fwd: {subject}"
    return Content(subject=subject, text=text or "")


def attach_original(outgoing: Outgoing, original: EmailMessage) -> None:
    """Add the original, whole and unchanged, as a message/rfc822 attachment."""
    outgoing.message.add_attachment(original)
