"""One SMTP submission session: connect, STARTTLS, EHLO, AUTH XOAUTH2, MAIL/RCPT/DATA, QUIT.

smtplib's exceptions are translated into `SmtpError` here, with Exchange's hints and whether
the server may already have the message (a failure once DATA began). Nothing is retried.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import smtplib
import socket
import ssl
from collections.abc import Iterator, Sequence

from bridge.auth.tokens import Token
from bridge.config.model import AccountConfig, SendConfig
from bridge.errors import SmtpError
from bridge.imap.connection import ssl_context
from bridge.log import register_secret
from bridge.smtp.hints import describe

_LOGGER = logging.getLogger(__name__)

SMTP_TIMEOUT = 60.0  # seconds per SMTP exchange; Exchange answers DATA within seconds
MAYBE_SENT = (
    "the connection broke after the message was handed to the server, so it may have been "
    "sent; it was not retried (no duplicate mail): look in Sent Items before sending again"
)


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def _refused(what: str, code: int | None, reply: bytes | str) -> SmtpError:
    return SmtpError(f"{what}: {describe(code, _text(reply))}; nothing was sent", code=code)


@contextlib.contextmanager
def session(
    account: AccountConfig, send: SendConfig, token: Token, *, timeout: float = SMTP_TIMEOUT
) -> Iterator[smtplib.SMTP]:
    """A logged-in SMTP connection to the account's submission host; QUIT at the end."""
    where = f"{send.smtp_host}:{send.smtp_port}"
    try:
        smtp = smtplib.SMTP(send.smtp_host, send.smtp_port, timeout=timeout)
    except socket.gaierror as exc:
        raise SmtpError(f"cannot resolve {send.smtp_host}: {exc.strerror}; nothing was sent"
                        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise SmtpError(f"cannot connect to {where}: {exc}; nothing was sent") from None
    try:
        _start(smtp, account, token, where)
        yield smtp
    finally:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            smtp.quit()
        smtp.close()


def _start(smtp: smtplib.SMTP, account: AccountConfig, token: Token, where: str) -> None:
    """EHLO, STARTTLS (RFC 3207: EHLO again after it), AUTH XOAUTH2."""
    try:
        smtp.ehlo()
        if not smtp.has_extn("starttls"):
            raise SmtpError(f"{where} does not offer STARTTLS; the bridge never sends a token "
                            "in the clear: check smtp_host and smtp_port (587)")
        smtp.starttls(context=ssl_context(account))
        smtp.ehlo()
    except ssl.SSLCertVerificationError as exc:
        raise SmtpError(f"TLS certificate of {where} not trusted: {exc.verify_message}"
                        ) from None
    except smtplib.SMTPResponseException as exc:
        raise _refused(f"{where} refused STARTTLS", exc.smtp_code, exc.smtp_error) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise SmtpError(f"SMTP session with {where} failed: {exc}; nothing was sent") from None
    _authenticate(smtp, account, token, where)


def _authenticate(smtp: smtplib.SMTP, account: AccountConfig, token: Token, where: str) -> None:
    sasl = f"user={account.mailbox}\1auth=Bearer {token.access_token}\1\1"
    register_secret(base64.b64encode(sasl.encode()).decode())

    def xoauth2(challenge: bytes | None = None) -> str:
        # A non-empty challenge is the server's JSON error: an empty answer ends the
        # exchange with the final 5xx (RFC 7628 §3.2.3 does the same for OAUTHBEARER).
        return "" if challenge else sasl

    try:
        # AUTH first, the response after the 334: Dovecot refuses a JWT-long initial
        # response line, and Exchange accepts both forms.
        smtp.auth("XOAUTH2", xoauth2, initial_response_ok=False)
    except smtplib.SMTPAuthenticationError as exc:
        raise _refused(f"SMTP login as {account.mailbox} refused", exc.smtp_code,
                       exc.smtp_error) from None
    except smtplib.SMTPNotSupportedError:
        raise SmtpError(f"{where} does not offer AUTH XOAUTH2: check smtp_host (Exchange "
                        "Online: smtp.office365.com)") from None
    except smtplib.SMTPResponseException as exc:
        raise _refused(f"SMTP login as {account.mailbox} failed", exc.smtp_code,
                       exc.smtp_error) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise SmtpError(f"SMTP login to {where} failed: {exc}; nothing was sent") from None


def deliver(smtp: smtplib.SMTP, sender: str, recipients: Sequence[str], message: bytes) -> None:
    """MAIL FROM, RCPT TO each recipient, DATA; raise SmtpError naming what happened."""
    options = ["BODY=8BITMIME"] if smtp.has_extn("8bitmime") else []
    try:
        code, reply = smtp.mail(sender, options)
        if code != 250:
            raise _refused(f"the server refused the sender {sender}", code, reply)
        for rcpt in recipients:
            code, reply = smtp.rcpt(rcpt)
            if code not in (250, 251):
                raise _refused(f"the server refused the recipient {rcpt}", code, reply)
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise SmtpError(f"the SMTP connection broke before the message was sent ({exc}); "
                        "nothing was sent: send it again") from None
    try:
        code, reply = smtp.data(message)
    except smtplib.SMTPDataError as exc:
        # A definite refusal of the message: the server does not deliver it.
        raise _refused("the server refused the message", exc.smtp_code, exc.smtp_error
                       ) from None
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        _LOGGER.warning("SMTP connection broke during DATA (%s: %s)", type(exc).__name__, exc)
        raise SmtpError(MAYBE_SENT, maybe_sent=True) from None
    if code != 250:  # smtplib raises only for the answer to DATA itself, not to the message
        raise _refused("the server refused the message", code, reply)
    _LOGGER.debug("SMTP accepted the message: %d %s", code, _text(reply))
