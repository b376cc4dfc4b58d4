"""The process's open-files limit, raised to what the configured accounts need.

systemd starts services with a soft limit of 1024 and a far higher hard limit, expecting
a program that needs more to raise its own soft limit (and to wait with poll(), not
select()). Each watched folder holds an IMAP socket and a wake-up socket pair; each
account may open a command connection.
"""

from __future__ import annotations

import logging
import resource

_LOGGER = logging.getLogger(__name__)

PER_FOLDER = 3  # IMAP socket, wake-up socket pair
PER_ACCOUNT = 2  # command connection, SMTP submission
BASE = 256  # MQTT, logs, state files, TLS and the identity platform's HTTPS


def open_files_needed(folders: int, accounts: int) -> int:
    return BASE + PER_FOLDER * folders + PER_ACCOUNT * accounts


def raise_open_files_limit(needed: int) -> int:
    """Raise the soft limit to `needed` (up to the hard limit); return the soft limit now.
    Logs an error when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < needed:
        _LOGGER.error("the open-files limit is %d, and these accounts need about %d: raise "
                      "it (systemd: LimitNOFILE=) or split the accounts over instances",
                      soft, needed)
    return soft
