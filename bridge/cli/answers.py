"""The `init` wizard's answers: each checked as given by the config's own field rules
(`bridge.config.fields`), and a terminal prompter that asks again until one is usable."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

from bridge.config import credentials, fields
from bridge.config.load import AUTHS
from bridge.config.model import CLOUDS

T = TypeVar("T")
AUTH_LABELS = {
    "client_secret": "client secret (app-only, work or school mailbox)",
    "client_certificate": "client certificate (app-only, recommended: no expiring secret)",
    "device_code": "device code (delegated sign-in, personal Outlook.com mailbox)",
}


class Invalid(ValueError):
    """An answer that cannot be used; the text says why and what would work."""


# -- answer checks: text in, value out (or Invalid) ------------------------------------------

def _checked(text: str, problem: str | None, why: str) -> str:
    """`text` if the config's rule found no `problem` with it, else Invalid(`why`): the
    wizard says what to enter where the config says which key to fix."""
    if problem is not None:
        raise Invalid(why)
    return text


def tenant_id(text: str, *, auth: str = "client_secret") -> str:
    text = text.strip()
    if text.lower() in fields.MULTI_TENANTS and auth == "device_code":
        return text.lower()
    if text.lower() in fields.MULTI_TENANTS:
        raise Invalid(f"{text!r} works only for delegated sign-in; give the Directory (tenant)"
                      " ID from the app's Overview page")
    return _checked(text, fields.tenant_problem(text, auth),
                    "give the Directory (tenant) ID (a GUID such as "
                    "'72f988bf-86f1-41af-91ab-2d7cd011db47') or a domain such as "
                    "'contoso.onmicrosoft.com'")


def client_id(text: str) -> str:
    text = text.strip()
    if not fields.is_guid(text):
        raise Invalid("give the Application (client) ID from the app's Overview page: a GUID "
                      "such as '00001111-aaaa-2222-bbbb-3333cccc4444'")
    return text


def mailbox(text: str) -> str:
    text = text.strip()
    return _checked(text, fields.mailbox_problem(text),
                    "give the mailbox's e-mail address, e.g. 'me@contoso.com' (a shared "
                    "mailbox's own address works too)")


def account_name(text: str) -> str:
    text = text.strip()
    return _checked(text, fields.account_name_problem(text),
                    "a topic segment: lower-case a-z, 0-9, '_' and '-' (not 'bridge'), "
                    f"e.g. {fields.slug(text) or 'home'!r}")


def client_secret(text: str) -> str:
    text = text.strip()
    if not text:
        raise Invalid("the secret must not be empty")
    if fields.is_guid(text):
        raise Invalid("that is the Secret ID; copy the secret's Value instead (shown once, "
                      "right after 'New client secret')")
    return text


def auth(text: str) -> str:
    choices = list(AUTH_LABELS)
    text = text.strip()
    if text.isdigit() and 1 <= int(text) <= len(choices):
        return choices[int(text) - 1]
    if text not in AUTHS:
        raise Invalid("choose " + ", ".join(f"{i} ({a})" for i, a in enumerate(choices, 1)))
    return text


# what Microsoft and admins call the clouds -> the value `cloud` takes
_CLOUD_NAMES = {"gcc": "global", "commercial": "global", "public": "global",
                "worldwide": "global", "gcc high": "usgov", "gcc-high": "usgov",
                "gcchigh": "usgov", "dod": "usgov-dod", "gcc-dod": "usgov-dod",
                "21vianet": "china"}


def cloud(text: str) -> str:
    text = text.strip()
    if text not in CLOUDS:
        known = _CLOUD_NAMES.get(text.lower())
        use = f"{text} is cloud '{known}'; " if known else ""
        raise Invalid(f"{use}one of " + ", ".join(CLOUDS)
                      + " (GCC: global, GCC High: usgov, DoD: usgov-dod, 21Vianet: china)")
    return text


def host(text: str) -> str:
    text = text.strip()
    return _checked(text, fields.host_problem(text, "mqtt.example.com"),
                    "a host name or address only, without scheme or port, e.g. "
                    "'mqtt.example.com' or '192.168.1.10'")


def port(text: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise Invalid("a port number, 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise Invalid("a port number, 1 to 65535")
    return value


def authority(text: str) -> str:
    text = text.strip().rstrip("/")
    return _checked(text, fields.authority_problem(text, "https://login.microsoftonline.com"),
                    "the https:// URL of the identity platform's host only, e.g. "
                    "'https://login.microsoftonline.com' (the tenant goes in tenant_id)")


def folders(text: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise Invalid("name at least one folder, e.g. 'INBOX' or 'INBOX, Inbox/Receipts'")
    return names


def existing_file(text: str) -> Path:
    path = Path(text.strip()).expanduser()
    if not path.is_file():
        raise Invalid(f"{path}: no such file")
    return path.absolute()


def certificate_file(text: str) -> Path:
    path = existing_file(text)
    _checked(text, credentials.certificate_problem(path.read_bytes(), path),
             f"{path} is not a PEM certificate (give the .crt; the .cer is the DER copy for the "
             "Azure upload)")
    return path


def ca_file(text: str) -> Path:
    path = existing_file(text)
    _checked(text, credentials.ca_bundle_problem(path.read_bytes(), path),
             f"{path} holds no PEM certificate")
    return path


def key_matches(cert: Path) -> Callable[[str], Path]:
    """A check that the private key file belongs to `cert`."""

    def check(text: str) -> Path:
        path = existing_file(text)
        problems = fields.Problems()
        credentials.check_key_pair(problems, ("certificate_file", cert),
                                   ("private_key_file", path), rsa_only=True)
        if problems.items:
            raise Invalid("; ".join(p.split(": ", 1)[-1] for p in problems.items))
        return path

    return check


# -- prompting --------------------------------------------------------------------------------

class Prompter:
    """Asks on a terminal; every answer is checked and asked again until it is usable."""

    def __init__(self, inp: TextIO | None = None, out: TextIO | None = None) -> None:
        self.inp = inp or sys.stdin
        self.out = out or sys.stdout

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _line(self, prompt: str, *, secret: bool = False) -> str:
        if secret and self.inp.isatty():
            return getpass.getpass(prompt, stream=self.out)
        self.out.write(prompt)
        self.out.flush()
        line = self.inp.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")

    def ask(self, question: str, check: Callable[[str], T], default: str | None = None,
            *, secret: bool = False, optional: bool = False) -> T | None:
        suffix = f" [{default}]" if default else (" (empty for none)" if optional else "")
        while True:
            text = self._line(f"{question}{suffix}: ", secret=secret).strip()
            if not text and default is not None:
                text = default
            if not text and optional:
                return None
            try:
                return check(text)
            except Invalid as exc:
                self.say(f"  ! {exc}")

    def confirm(self, question: str, default: bool) -> bool:
        while True:
            text = self._line(f"{question} [{'Y/n' if default else 'y/N'}]: ").strip().lower()
            if not text:
                return default
            if text in ("y", "yes", "n", "no"):
                return text.startswith("y")
            self.say("  ! answer y or n")
