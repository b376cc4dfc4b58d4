"""A real Mosquitto broker on loopback, optionally with passwords and a TLS listener."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from rig.pki import TestPKI
from rig.procs import (
    ChildService,
    can_connect,
    free_port,
    spawn,
    terminate,
    wait_until_ready,
)

_LOGGER = logging.getLogger(__name__)


class Mosquitto(ChildService):
    """A `mosquitto -c CONF` child process on 127.0.0.1 (plain, plus TLS when pki given)."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str] | None = None,
        persistence: bool = False,
        pki: TestPKI | None = None,
        host: str = "127.0.0.1",
        extra: Sequence[str] = (),
        acl: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.extra = list(extra)  # further global config lines, e.g. "max_packet_size 65536"
        self.acl = list(acl)  # acl_file lines, e.g. "user bridge", "topic read #"
        self.users = dict(users or {})
        self.persistence = persistence
        self.pki = pki
        self.host = host
        self.port = free_port(host)
        self.tls_port: int | None = free_port(host) if pki is not None else None
        self.conf_path = workdir / "mosquitto.conf"
        self.log_file = workdir / "mosquitto.log"
        self._proc = None

    def start(self) -> None:
        """Write the config and start the broker; ready when the port accepts connections."""
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._proc = spawn(["mosquitto", "-c", str(self.conf_path)], self.log_file)
        wait_until_ready(
            self._proc,
            lambda: can_connect(self.host, self.port)
            and (self.tls_port is None or can_connect(self.host, self.tls_port)),
            what="mosquitto",
            log_file=self.log_file,
        )
        _LOGGER.debug("mosquitto on %s:%d", self.host, self.port)

    def stop(self) -> None:
        """Stop the broker (SIGTERM; it saves its persistence file on the way out)."""
        terminate(self._proc)
        self._proc = None

    def _write_config(self) -> None:
        # As root Mosquitto switches to user "mosquitto" before reading the password file.
        lines = ["user root", "per_listener_settings true", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice", "log_type information",
                 "connection_messages true", "log_timestamp_format %H:%M:%S"]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/",
                      "autosave_interval 1"]
        else:
            lines.append("persistence false")
        lines += self.extra
        auth = self._auth_lines()
        lines += [f"listener {self.port} {self.host}", *auth]
        if self.pki is not None:
            lines += [f"listener {self.tls_port} {self.host}", *auth,
                      f"certfile {self.pki.server_cert_file}",
                      f"keyfile {self.pki.server_key_file}"]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _auth_lines(self) -> list[str]:
        if not self.users:
            return ["allow_anonymous true"]
        passwords = self.workdir / "passwd"
        passwords.write_text("")
        for user, password in self.users.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password],
                           check=True, capture_output=True)
        lines = ["allow_anonymous false", f"password_file {passwords}"]
        if self.acl:
            acl_file = self.workdir / "acl"
            acl_file.write_text("\n".join(self.acl) + "\n")
            lines.append(f"acl_file {acl_file}")
        return lines
