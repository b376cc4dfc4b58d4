"""A real Dovecot IMAP server with SASL XOAUTH2, checked by the identity-platform stand-in."""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from rig.pki import TestPKI
from rig.procs import (
    ChildService,
    free_port,
    read_greeting,
    spawn,
    terminate,
    wait_until_ready,
)

_LOGGER = logging.getLogger(__name__)

MAIL_UID = 65534  # nobody: Dovecot refuses uid 0 for mail users

# What Exchange Online advertises after login (no CONDSTORE, QRESYNC, SPECIAL-USE).
EXCHANGE_CAPABILITIES = (
    "IMAP4rev1 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"
)

# Exchange's well-known folders and their RFC 6154 attributes, as Exchange lists them.
SPECIAL_FOLDERS = {
    "Archive": "\\Archive",
    "Deleted Items": "\\Trash",
    "Drafts": "\\Drafts",
    "Junk Email": "\\Junk",
    "Sent Items": "\\Sent",
}

_CONF = """\
base_dir = {runtime}/run
state_dir = {runtime}/state
log_path = {log}
protocols = imap
listen = {host}
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
auth_mechanisms = xoauth2 oauthbearer
auth_failure_delay = 0
auth_verbose = yes
first_valid_uid = 1
mail_location = maildir:~/Maildir
# Each TLS session is one imap-login and one imap process: room for 1000 sessions.
default_process_limit = 5000
default_client_limit = 20000
# Every Dovecot on this machine shares uid 65534's 128 inotify instances; past them IDLE
# falls back to checking every mailbox_idle_check_interval (30 s by default).
mailbox_idle_check_interval = 1 secs
{capability}
protocol imap {{
  # Dovecot allows 10 per user and IP; Exchange about 20 per mailbox.
  mail_max_userip_connections = 20
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {runtime}/oauth2.conf.ext
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={runtime}/mail/%u allow_all_users=yes
}}
namespace inbox {{
  inbox = yes
  separator = /
{special}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {starttls_port}
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service imap {{
  process_limit = 5000
}}
service anvil {{
  chroot =
  # Without this, failed logins make later ones from 127.0.0.1 wait up to 15 s.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service ipc {{
  chroot =
}}
service old-stats {{
  chroot =
}}
service aggregator {{
  chroot =
}}
"""

# Dovecot's introspection request never names the login user (and 2.3.19 does not
# %-expand introspection_url), but its password-grant request does: with
# use_grant_password it posts grant_type=password&username=<login>&password=<token>, so
# the stand-in can check the mailbox grant. The reply carries username and active, so no
# second introspection request follows. See IdentityPlatform._introspect.
_OAUTH2_CONF = """\
use_grant_password = yes
grant_url = {url}
introspection_mode = post
introspection_url = {url}
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
"""


class Dovecot(ChildService):
    """A Dovecot child process on two loopback ports: implicit TLS and plain (STARTTLS)."""

    def __init__(
        self,
        pki: TestPKI,
        introspection_url: str,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        capabilities: str | None = None,
        special_folders: Mapping[str, str] = SPECIAL_FOLDERS,
    ) -> None:
        self.pki = pki
        self.special_folders = dict(special_folders)
        self.introspection_url = introspection_url
        self.workdir = workdir
        self.host = host
        self.capabilities = capabilities
        self.port = free_port(host)
        self.starttls_port = free_port(host)
        self.conf_path = workdir / "dovecot.conf"
        self.log_file = workdir / "dovecot.log"
        self._proc = None
        # What Dovecot's unprivileged processes use (sockets, mail, the oauth2 settings)
        # lives in a short /tmp directory of its own: socket paths must stay under 108
        # bytes, and any pytest session re-chmods /tmp/pytest-of-root to 0700, which
        # would lock out uid 65534 and dovenull mid-run. close() removes it.
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="rig-dovecot-"))
        self.runtime_dir.chmod(0o755)
        self.mail_dir = self.runtime_dir / "mail"

    def start(self) -> None:
        """Write the config, start `dovecot -F` and wait for its greeting on both ports."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._write_config()
        self._proc = spawn(["dovecot", "-F", "-c", str(self.conf_path)], self.log_file)
        tls = ssl.create_default_context(cafile=str(self.pki.ca_file))
        wait_until_ready(
            self._proc,
            lambda: read_greeting(self.host, self.starttls_port, b"* OK")
            and read_greeting(self.host, self.port, b"* OK", tls),
            what="dovecot",
            log_file=self.log_file,
        )
        _LOGGER.debug("dovecot on %s:%d (tls) and :%d", self.host, self.port,
                      self.starttls_port)

    def stop(self) -> None:
        """Stop Dovecot (SIGTERM, then wait)."""
        terminate(self._proc)
        self._proc = None

    def close(self) -> None:
        """Stop Dovecot and delete its sockets and mail."""
        self.stop()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _write_config(self) -> None:
        """Write dovecot.conf and the oauth2 passdb settings."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mail_dir.mkdir(exist_ok=True)
        os.chown(self.mail_dir, MAIL_UID, MAIL_UID)  # Dovecot refuses uid 0 for mail users
        (self.runtime_dir / "state").mkdir(exist_ok=True)
        special = "\n".join(
            f'  mailbox "{name}" {{\n    special_use = {use}\n  }}'
            for name, use in self.special_folders.items()
        )
        capability = f"imap_capability = {self.capabilities}" if self.capabilities else ""
        self.conf_path.write_text(_CONF.format(
            runtime=self.runtime_dir, log=self.log_file, host=self.host,
            cert=self.pki.server_cert_file, key=self.pki.server_key_file, uid=MAIL_UID,
            port=self.port, starttls_port=self.starttls_port, special=special,
            capability=capability,
        ))
        (self.runtime_dir / "oauth2.conf.ext").write_text(
            _OAUTH2_CONF.format(url=self.introspection_url)
        )

    # -- test helpers through doveadm (no OAuth needed) ------------------------------------

    def doveadm(self, *args: str, stdin: bytes | None = None) -> str:
        """Run `doveadm -c CONF ARGS` and return its output; raise with stderr on failure."""
        proc = subprocess.run(
            ["doveadm", "-c", str(self.conf_path), *args],
            input=stdin, capture_output=True, check=False, timeout=30,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"doveadm {' '.join(args)} failed ({proc.returncode}): "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout.decode(errors="replace")

    def deliver(
        self, user: str, raw: bytes, folder: str = "INBOX", flags: Sequence[str] = ()
    ) -> int:
        """Store a message in user's folder (created if missing) with flags; return its UID."""
        try:
            self.doveadm("save", "-u", user, "-m", folder, stdin=raw)
        except RuntimeError as exc:
            if "Mailbox doesn't exist" not in str(exc):
                raise
            self.create_folder(user, folder)
            self.doveadm("save", "-u", user, "-m", folder, stdin=raw)
        uid = max(self.uids(user, folder))  # the newest: tests deliver one at a time
        if flags:
            self.set_flags(user, uid, flags, folder)
        return uid

    def create_folder(self, user: str, name: str, special_use: str | None = None) -> None:
        """Create (and subscribe) a folder; special_use like "\\Trash" marks it in LIST."""
        # Dovecot 2.3 takes special-use only from its config (no CREATE-SPECIAL-USE, and
        # doveadm may not set /private/specialuse), so a new one is added there and
        # reloaded. It applies to that name for every user, which is what Exchange does.
        if special_use is not None and self.special_folders.get(name) != special_use:
            if name in self.special_folders:
                raise ValueError(f"{name!r} is already {self.special_folders[name]}")
            self.special_folders[name] = special_use
            self._write_config()
            self.doveadm("reload")
        self.doveadm("mailbox", "create", "-s", "-u", user, name)

    def folders(self, user: str) -> list[str]:
        """List user's folders as Dovecot names them (separator /)."""
        return self.doveadm("mailbox", "list", "-u", user).splitlines()

    def fetch(self, user: str, fields: str, folder: str = "INBOX") -> list[dict[str, str]]:
        """Return `doveadm fetch` fields (space separated names) for every message in folder."""
        out = self.doveadm("-f", "tab", "fetch", "-u", user, fields, "mailbox", folder, "all")
        return _table(out)

    def uids(self, user: str, folder: str = "INBOX") -> list[int]:
        """Return the UIDs in folder, ascending."""
        return sorted(int(row["uid"]) for row in self.fetch(user, "uid", folder))

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, set[str]]:
        """Map each UID in folder to its flags (without the session flag \\Recent)."""
        return {int(row["uid"]): set(row["flags"].split()) - {"\\Recent"}
                for row in self.fetch(user, "uid flags", folder)}

    def status(self, user: str, folder: str = "INBOX") -> dict[str, int]:
        """Return messages, unseen, uidvalidity and uidnext of folder."""
        out = self.doveadm("-f", "tab", "mailbox", "status", "-u", user,
                           "messages unseen uidvalidity uidnext", folder)
        return {key: int(value) for key, value in _table(out)[0].items() if key != "mailbox"}

    def set_flags(self, user: str, uid: int, flags: Sequence[str], folder: str = "INBOX",
                  *, add: bool = True) -> None:
        """Add (or remove) flags on one message."""
        self.doveadm("flags", "add" if add else "remove", "-u", user, " ".join(flags),
                     "mailbox", folder, "uid", str(uid))

    def set_uidvalidity(self, user: str, folder: str, uidvalidity: int) -> None:
        """Give folder a new UIDVALIDITY (as when Exchange rebuilds a folder)."""
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(uidvalidity),
                     folder)

    def delete_folder(self, user: str, name: str) -> None:
        """Delete a folder and its messages."""
        self.doveadm("mailbox", "delete", "-u", user, name)

    def expunge_all(self, user: str, folder: str = "INBOX") -> None:
        """Expunge every message in folder."""
        self.doveadm("expunge", "-u", user, "mailbox", folder, "all")

    def kick(self, user: str) -> None:
        """Disconnect user's IMAP sessions (as Exchange does when a token expires)."""
        self.doveadm("kick", user)


def _table(out: str) -> list[dict[str, str]]:
    """Parse doveadm's `-f tab` output into rows keyed by the header."""
    lines = out.splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]

