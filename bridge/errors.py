"""Domain errors: library failures are translated into these at the edge."""

from __future__ import annotations


class BridgeError(Exception):
    """Base class of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is invalid; `problems` lists every finding as 'key: message'."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class InstanceConflict(BridgeError):
    """Another running bridge on the base topic serves some of this bridge's accounts."""


class AuthError(BridgeError):
    """The identity platform refused or could not issue a token.

    `code` is the AADSTS number when Entra gave one (e.g. 7000215), `error` the OAuth2
    error string (e.g. ``invalid_client``). `transient` marks outages worth retrying soon;
    `retry_after` is how long the platform asked to be left alone (HTTP 429), if it did.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        error: str | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.error = error
        self.transient = transient or retry_after is not None
        self.retry_after = retry_after
        super().__init__(message)


class LoginRequired(AuthError):
    """A delegated account has no usable sign-in: a person must run `outlook2mqtt login`.

    `stamp` identifies the token cache file as it was when this was decided (None: no
    file), so a waiting worker can tell when a new sign-in has been saved.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        error: str | None = None,
        stamp: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(message, code=code, error=error)
        self.stamp = stamp


class ImapError(BridgeError):
    """The IMAP server could not be reached or refused an operation."""


class ImapAuthError(ImapError):
    """The IMAP server refused the XOAUTH2 login (token, permission or mailbox problem)."""


class ImapThrottled(ImapError):
    """The server sheds load (Exchange's `NO [THROTTLED]`, `BYE ... Server Unavailable`):
    keep away from this mailbox for `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class FolderNotFound(ImapError):
    """A configured folder does not exist on the server."""

    def __init__(self, folder: str, existing: list[str] | None = None) -> None:
        self.folder = folder
        self.existing = existing or []
        super().__init__(f"folder {folder!r} does not exist")


class CommandError(BridgeError):
    """A command is malformed, not enabled, or cannot be carried out; the text is the reply."""


class SmtpError(CommandError):
    """The SMTP server refused or lost a submission; the text is the reply (code and hint).

    `maybe_sent`: the connection broke after the message was handed over, so the server
    may have accepted it (it is never retried: a retry could send it twice).
    """

    def __init__(self, message: str, *, code: int | None = None, maybe_sent: bool = False):
        super().__init__(message)
        self.code = code
        self.maybe_sent = maybe_sent
