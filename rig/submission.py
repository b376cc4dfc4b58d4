"""Dovecot with its SMTP submission service (Debian's dovecot-submissiond): XOAUTH2 after
STARTTLS, tokens checked by the identity stand-in like Exchange's SMTP AUTH (the token must
carry `SMTP.SendAsApp`), mail relayed to the rig's SMTP sink.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rig.dovecot import _OAUTH2_CONF, Dovecot
from rig.pki import TestPKI
from rig.procs import free_port, read_greeting, wait_until_ready

_LOGGER = logging.getLogger(__name__)

# Appended to the IMAP config: a later setting overrides an earlier one in dovecot.conf.
# The submission passdb asks its own introspection URL (which demands SMTP.SendAsApp);
# `result_failure = return-fail` keeps a refusal from falling through to the IMAP passdb.
_SUBMISSION_CONF = """
protocols = imap submission
hostname = submission.rig.test
submission_relay_host = 127.0.0.1
submission_relay_port = {relay_port}
submission_relay_trusted = yes
submission_max_mail_size = 0
service submission-login {{
  chroot =
  inet_listener submission {{
    port = {port}
  }}
}}
protocol submission {{
  passdb {{
    driver = oauth2
    mechanisms = xoauth2 oauthbearer
    args = {runtime}/oauth2-smtp.conf.ext
    result_failure = return-fail
  }}
}}
"""


class SubmissionDovecot(Dovecot):
    """A Dovecot serving IMAP (as `Dovecot`) and SMTP submission on `submission_port`."""

    def __init__(
        self,
        pki: TestPKI,
        introspection_url: str,
        workdir: Path,
        *,
        relay_port: int,
        submission_introspection_url: str,
    ) -> None:
        super().__init__(pki, introspection_url, workdir)
        self.relay_port = relay_port
        self.submission_introspection_url = submission_introspection_url
        self.submission_port = free_port(self.host)

    def start(self) -> None:
        """Start Dovecot and wait for the submission greeting as well."""
        if self.running:
            return
        super().start()
        assert self._proc is not None  # noqa: S101 - set by Dovecot.start
        wait_until_ready(
            self._proc,
            lambda: read_greeting(self.host, self.submission_port, b"220 "),
            what="dovecot submission",
            log_file=self.log_file,
        )
        _LOGGER.debug("dovecot submission on %s:%d", self.host, self.submission_port)

    def _write_config(self) -> None:
        super()._write_config()
        with self.conf_path.open("a") as conf:
            conf.write(_SUBMISSION_CONF.format(
                relay_port=self.relay_port, port=self.submission_port, runtime=self.runtime_dir,
            ))
        (self.runtime_dir / "oauth2-smtp.conf.ext").write_text(
            _OAUTH2_CONF.format(url=self.submission_introspection_url)
        )
