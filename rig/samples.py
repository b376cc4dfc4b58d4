"""RFC 5322 test messages, built with the standard library's EmailMessage."""

from __future__ import annotations

import datetime as dt
import email.policy
import logging
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

_LOGGER = logging.getLogger(__name__)

# A tiny but well-formed PDF: one empty page.
TINY_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def make_message(
    *,
    subject: str = "Hello",
    sender: str = "Alice <alice@example.com>",
    to: str = "me@contoso.com",
    text: str = "Hi there",
    html: str | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    message_id: str | None = None,
    date: dt.datetime | None = None,
) -> bytes:
    """Build a message: text (and html alternative), attachments as (filename, type, data)."""
    msg = EmailMessage(policy=email.policy.SMTP)  # CRLF line ends, RFC 2047 for non-ASCII
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    msg["Message-ID"] = message_id or make_msgid(domain="example.com")
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream",
                           filename=filename)
    return msg.as_bytes()


_NEWSLETTER_HTML = """\
<html><body>
<h1>Contoso Weekly</h1>
<p>This week: <b>three</b> new features and a <a href="https://example.com/x">sale</a>.</p>
<ul><li>Faster sync</li><li>Dark mode</li><li>Fewer bugs</li></ul>
</body></html>
"""

PARCEL = make_message(
    subject="Your parcel 1Z999AA10123456784 is out for delivery",
    sender="Parcel Service <noreply@parcels.example>",
    text="Good news! Your parcel will arrive today between 10:00 and 14:00.",
    message_id="<parcel-1@parcels.example>",
)
INVOICE = make_message(
    subject="Invoice INV-2026-0042",
    sender="Contoso Billing <billing@contoso.example>",
    text="Please find attached invoice INV-2026-0042 for EUR 42.00, due in 14 days.",
    attachments=[("INV-2026-0042.pdf", "application/pdf", TINY_PDF)],
    message_id="<invoice-42@contoso.example>",
)
NEWSLETTER = make_message(
    subject="Contoso Weekly: three new features",
    sender="Contoso News <news@contoso.example>",
    text="Contoso Weekly\n\nThis week: three new features and a sale.",
    html=_NEWSLETTER_HTML,
    message_id="<weekly-7@contoso.example>",
)
UMLAUTS = make_message(  # non-ASCII subject and sender: RFC 2047 encoded words
    subject="Grüße aus München \u2013 Größenänderung übermorgen",
    sender="Jürgen Müller <juergen@beispiel.example>",
    text="Hallo! Die Bestellung für Björn ist übermorgen fällig. Schöne Grüße, Jürgen",
    message_id="<gruesse-1@beispiel.example>",
)

# The demo delivers these in this order.
DEMO_MESSAGES: tuple[bytes, ...] = (PARCEL, INVOICE, NEWSLETTER, UMLAUTS)
