"""The HTTP session MSAL reaches the identity platform through. May import nothing of the
bridge."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import requests
import requests.adapters

# What MSAL assumes when a 429 names no time (its own default).
DEFAULT_RETRY_AFTER = 5.0


class _PlainText429(logging.Filter):
    """MSAL logs Entra's plain-text 429 body as an error with a traceback; the provider
    reports the throttling itself, once, in words."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Token response is not in json format")
                    and "too many requests" in text.lower())


logging.getLogger("msal.oauth2cli.oauth2").addFilter(_PlainText429())


class PlatformSession(requests.Session):
    """A requests session that remembers the identity platform's HTTP 429 `Retry-After`:
    MSAL hands back the error's body (and replays it while throttled) but not the header."""

    def __init__(self, ca_file: Path | None) -> None:
        super().__init__()
        if ca_file is not None:
            # REQUESTS_CA_BUNDLE would override verify= on a session that trusts the
            # environment.
            self.trust_env = False
            self.verify = str(ca_file)
        else:
            # As MSAL mounts on the session it makes when given none.
            adapter = requests.adapters.HTTPAdapter(max_retries=1)
            self.mount("http://", adapter)
            self.mount("https://", adapter)
        self._throttled_until = 0.0

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        response = super().request(method, url, *args, **kwargs)
        if response.status_code == 429:
            wait = retry_after(response.headers.get("Retry-After"))
            self._throttled_until = time.monotonic() + wait
        return response

    def throttled_for(self) -> float | None:
        """Seconds the platform asked to be left alone for, if that time is not over."""
        left = self._throttled_until - time.monotonic()
        return left if left > 0 else None


def retry_after(value: str | None) -> float:
    """A `Retry-After` in seconds (Entra sends whole seconds, never a date)."""
    try:
        return max(0.0, float(value)) if value is not None else DEFAULT_RETRY_AFTER
    except ValueError:
        return DEFAULT_RETRY_AFTER
