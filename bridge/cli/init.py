"""`outlook2mqtt init`: the set-up wizard that writes a valid config.

Interactive by default: each answer is checked as it is given and asked again when wrong.
With `--non-interactive` every answer is a flag named after its config key. In both modes a
flag that is given is taken as the answer (the wizard does not ask it), so a script can
preset the overrides and leave the rest to a person. The file is validated with the same
`parse_config` that `run` uses before it is written (0600, atomically, never over an
existing file without confirmation or `--force`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from bridge import __version__
from bridge.auth import certificates
from bridge.cli import login
from bridge.cli.answers import (
    AUTH_LABELS,
    Invalid,
    Prompter,
    account_name,
    auth,
    authority,
    ca_file,
    certificate_file,
    client_id,
    client_secret,
    cloud,
    existing_file,
    folders,
    host,
    key_matches,
    mailbox,
    port,
    tenant_id,
)
from bridge.cli.cert import format_info
from bridge.cli.check import run_check
from bridge.cli.configuration import register_secrets
from bridge.cli.exits import EXIT_FAIL, EXIT_INVALID, EXIT_OK
from bridge.config.load import CONFIG_ENV, parse_config
from bridge.config.model import Config
from bridge.errors import ConfigError
from bridge.util.files import write_atomic

# -- the config ---------------------------------------------------------------------------------

def build_config(a: dict[str, Any]) -> dict[str, Any]:
    """The TOML document for the answers (only keys that differ from the defaults)."""
    mqtt: dict[str, Any] = {"host": a["mqtt_host"], "port": a["mqtt_port"]}
    if a.get("mqtt_username"):
        mqtt["username"] = a["mqtt_username"]
        if a.get("mqtt_password_file"):
            mqtt["password_file"] = str(a["mqtt_password_file"])
        elif a.get("mqtt_password"):
            mqtt["password"] = a["mqtt_password"]
    account: dict[str, Any] = {"name": a["account_name"], "mailbox": a["mailbox"],
                               "tenant_id": a["tenant_id"], "client_id": a["client_id"],
                               "auth": a["auth"]}
    if a["auth"] == "client_secret":
        if a.get("client_secret_file"):
            account["client_secret_file"] = str(a["client_secret_file"])
        else:
            account["client_secret"] = a["client_secret"]
    elif a["auth"] == "client_certificate":
        account["certificate_file"] = str(a["certificate_file"])
        account["private_key_file"] = str(a["private_key_file"])
    if a.get("cloud", "global") != "global":
        account["cloud"] = a["cloud"]
    for key in ("authority", "imap_host", "imap_port", "ca_file"):
        if a.get(key) is not None:
            account[key] = str(a[key]) if isinstance(a[key], Path) else a[key]
    account["folders"] = [{"name": name} for name in a["folders"]]
    data: dict[str, Any] = {"mqtt": mqtt}
    if a.get("state_dir") is not None:
        data["bridge"] = {"state_dir": str(a["state_dir"])}
    data["accounts"] = [account]
    return data


def render(data: dict[str, Any]) -> str:
    """The config as TOML, with a header saying where it came from."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    # tomli-w would inline the small folder tables; [[accounts.folders]] sections are what
    # the README shows and what a person adds more of by hand.
    (account,) = data["accounts"]
    head = dict(data, accounts=[{k: v for k, v in account.items() if k != "folders"}])
    text = tomli_w.dumps(head)
    for folder in account["folders"]:
        text += "\n[[accounts.folders]]\n" + tomli_w.dumps(folder)
    return (f"# outlook2mqtt {__version__} config, written by `outlook2mqtt init` on {stamp}.\n"
            "# Test it with `outlook2mqtt check -c <this file>`; every key is described in\n"
            "# the README (Configuration). Keep this file private: it may hold a secret.\n\n"
            + text)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, mode 0600 from the start, atomically replacing the file."""
    write_atomic(path, text.encode("utf-8"), mode=0o600)


def default_output(args: argparse.Namespace) -> Path:
    if args.output:
        return Path(args.output)
    if args.config:
        return Path(args.config)
    return Path(os.environ.get(CONFIG_ENV) or "config.toml")


# -- the two modes ------------------------------------------------------------------------------

_FLAG_CHECKS: dict[str, Callable[[str], Any]] = {
    "auth": auth, "tenant_id": tenant_id, "client_id": client_id, "mailbox": mailbox,
    "account_name": account_name, "cloud": cloud, "mqtt_host": host,
    "mqtt_port": port, "authority": authority, "imap_host": host, "imap_port": port,
    "ca_file": ca_file, "certificate_file": certificate_file,
    "client_secret_file": existing_file, "mqtt_password_file": existing_file,
}


def _from_flags(args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    """Every answer given as a flag, checked; a problem per bad flag."""
    answers: dict[str, Any] = {}
    for key, check in _FLAG_CHECKS.items():  # auth first: the tenant check depends on it
        text = getattr(args, key)
        if text is None:
            continue
        try:
            answers[key] = (tenant_id(str(text), auth=answers.get("auth", "client_secret"))
                            if key == "tenant_id" else check(str(text)))
        except Invalid as exc:
            problems.append(f"--{key.replace('_', '-')}: {exc}")
    if args.client_secret is not None:
        secret = _flag_secret(args.client_secret)
        try:
            answers["client_secret"] = client_secret(secret)
        except Invalid as exc:
            problems.append(f"--client-secret: {exc}")
    if args.private_key_file is not None and "certificate_file" in answers:
        try:
            answers["private_key_file"] = key_matches(answers["certificate_file"])(
                args.private_key_file)
        except Invalid as exc:
            problems.append(f"--private-key-file: {exc}")
    elif args.private_key_file is not None:
        answers["private_key_file"] = Path(args.private_key_file).absolute()
    if args.folder is not None:  # one name per flag: a name may contain a comma
        names = list(dict.fromkeys(f.strip() for f in args.folder if f.strip()))
        if names:
            answers["folders"] = names
        else:
            problems.append("--folder: name a folder, e.g. --folder INBOX")
    if args.state_dir is not None:
        answers["state_dir"] = Path(args.state_dir).expanduser().absolute()
    answers["mqtt_username"] = args.mqtt_username
    answers["mqtt_password"] = (None if args.mqtt_password is None
                                else _flag_secret(args.mqtt_password))
    return answers


def _flag_secret(value: str) -> str:
    """A secret flag's value; "-" reads a line of stdin, which keeps the secret out of the
    process list (the client secret's line comes first when both read it)."""
    return sys.stdin.readline().strip() if value == "-" else value


def non_interactive(args: argparse.Namespace) -> dict[str, Any] | list[str]:
    """The answers from the flags alone, or every problem with them."""
    problems: list[str] = []
    a = _from_flags(args, problems)
    a.setdefault("auth", "client_secret")
    a.setdefault("account_name", "home")
    a.setdefault("cloud", "global")
    a.setdefault("mqtt_host", "localhost")
    a.setdefault("mqtt_port", 1883)
    a.setdefault("folders", ["INBOX"])
    required = ["client_id", "mailbox"]
    if a["auth"] != "device_code":
        required.append("tenant_id")
    else:
        a.setdefault("tenant_id", "consumers")
    if a["auth"] == "client_secret" and "client_secret_file" not in a:
        required.append("client_secret")
    if a["auth"] == "client_certificate":
        required += ["certificate_file", "private_key_file"]
    for key in required:
        if key not in a and not any(p.startswith(f"--{key.replace('_', '-')}:")
                                    for p in problems):
            problems.append(f"--{key.replace('_', '-')} is required"
                            + (f" with --auth {a['auth']}" if "_file" in key
                               or key == "client_secret" else ""))
    for flag in ("mqtt_password", "mqtt_password_file"):
        if getattr(args, flag) and not args.mqtt_username:
            problems.append(f"--{flag.replace('_', '-')} needs --mqtt-username")
    if args.mqtt_password and args.mqtt_password_file:
        problems.append("--mqtt-password and --mqtt-password-file: give one of them")
    return problems or a


def _new_certificate(p: Prompter, directory: Path) -> tuple[Path, Path] | None:
    """Run `cert new` into `directory` (or reuse its files); (certificate, key)."""
    crt = directory / f"{certificates.DEFAULT_NAME}.crt"
    key = directory / f"{certificates.DEFAULT_NAME}.key"
    if crt.exists() and key.exists() and p.confirm(
            f"Use the existing {crt} and {key.name}?", True):
        p.say(format_info(certificates.describe_certificate(crt)))
        return crt.absolute(), key.absolute()
    try:
        made = certificates.new_certificate(directory, force=False)
    except certificates.CertificateError as exc:
        p.say(f"  ! {exc}")
        return None
    p.say(f"Wrote {made.key_file} (private, 0600), {made.cert_file}, {made.der_file} and "
          f"{made.public_key_file}.")
    p.say(format_info(made.info))
    p.say(f"\nUpload {made.der_file} now: App registrations -> your app -> Certificates & "
          "secrets -> Certificates -> Upload certificate.")
    p.say(f"The portal must then show the thumbprint {made.info.sha1_thumbprint}.\n")
    return made.cert_file.absolute(), made.key_file.absolute()


def interactive(args: argparse.Namespace, p: Prompter) -> dict[str, Any] | list[str]:
    """Ask for every answer not given as a flag."""
    problems: list[str] = []
    a = _from_flags(args, problems)
    if problems:
        return problems
    p.say("outlook2mqtt init: writes the config for one mailbox (Ctrl-C to stop).")
    p.say("The IDs are on the app's Overview page: Entra ID -> App registrations -> your app.\n")
    if "auth" not in a:
        p.say("How does the bridge sign in?")
        for i, label in enumerate(AUTH_LABELS.values(), 1):
            p.say(f"  {i}) {label}")
    method = _need(p, a, "auth", "Credential", auth, "1")
    if method != "device_code":
        _need(p, a, "tenant_id", "Directory (tenant) ID",
              lambda text: tenant_id(text, auth=method))
    else:
        a.setdefault("tenant_id", "consumers")
    _need(p, a, "client_id", "Application (client) ID", client_id)
    _need(p, a, "mailbox", "Mailbox address", mailbox)
    _need(p, a, "account_name", "Account name (used in MQTT topics)", account_name, "home")
    if "cloud" not in a and "authority" not in a:
        _need(p, a, "cloud", "Cloud: global (also GCC), usgov (GCC High), usgov-dod, china",
              cloud, "global")
    _ask_credential(p, a, method, default_output(args).absolute().parent)
    _need(p, a, "mqtt_host", "MQTT broker host", host, "localhost")
    _need(p, a, "mqtt_port", "MQTT broker port", port, "1883")
    if a.get("mqtt_username") is None:
        a["mqtt_username"] = p.ask("MQTT username", str, optional=True)
    if a["mqtt_username"] and a.get("mqtt_password") is None and not a.get("mqtt_password_file"):
        a["mqtt_password"] = p.ask("MQTT password (input hidden)", str, secret=True,
                                   optional=True)
    _need(p, a, "folders", "Folders to watch, comma-separated", folders, "INBOX")
    return a


def _need(p: Prompter, a: dict[str, Any], key: str, question: str,
          check: Callable[[str], Any], default: str | None = None, **kw: Any) -> Any:
    """The answer `key`: the flag's, or asked for now."""
    if key not in a:
        a[key] = p.ask(question, check, default, **kw)
    return a[key]


def _ask_credential(p: Prompter, a: dict[str, Any], method: str, directory: Path) -> None:
    """The client secret, or the certificate (made now in `directory`, or given) and key."""
    if method == "client_secret" and "client_secret" not in a and "client_secret_file" not in a:
        _need(p, a, "client_secret", "Client secret Value (input hidden)", client_secret,
              secret=True)
    elif method == "client_certificate" and "certificate_file" not in a:
        made = None
        if p.confirm("Make a new key and certificate now (outlook2mqtt cert new)?", True):
            made = _new_certificate(p, directory)
        if made is not None:
            a["certificate_file"], a["private_key_file"] = made
        else:
            _need(p, a, "certificate_file", "Certificate file (PEM .crt)", certificate_file)
    if method == "client_certificate" and "private_key_file" not in a:
        _need(p, a, "private_key_file", "Private key file (PEM)",
              key_matches(a["certificate_file"]))


def run_init(args: argparse.Namespace, p: Prompter | None = None) -> int:
    """`outlook2mqtt init`: ask (or read the flags), validate, write, optionally check."""
    p = p or Prompter()
    output = default_output(args)
    try:
        if output.exists() and not args.force and (args.non_interactive or not p.confirm(
                f"{output} exists. Replace it?", False)):
            print(f"outlook2mqtt: {output} exists; not replaced (use --force to replace it)",
                  file=sys.stderr)
            return EXIT_FAIL
        answers = non_interactive(args) if args.non_interactive else interactive(args, p)
    except (EOFError, KeyboardInterrupt):
        print("\noutlook2mqtt: init aborted; nothing written", file=sys.stderr)
        return EXIT_FAIL
    if isinstance(answers, list):
        return _refused("cannot write the config", answers)
    data = build_config(answers)
    try:
        config = parse_config(data, source=output.absolute())
    except ConfigError as exc:  # the checks above should have caught it: say what is wrong
        return _refused("the answers do not make a valid config", exc.problems)
    try:
        write_private(output, render(data))
    except OSError as exc:
        print(f"outlook2mqtt: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    p.say(f"Wrote {output} (mode 0600).")
    register_secrets(config)
    return _sign_in_and_check(args, p, config, output)


def _refused(why: str, problems: Sequence[str]) -> int:
    print(f"outlook2mqtt: {why}:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    return EXIT_INVALID


def _sign_in_and_check(args: argparse.Namespace, p: Prompter, config: Config,
                       output: Path) -> int:
    """After writing: sign a device_code account in, then run `check`, as asked."""
    delegated = [a for a in config.accounts if a.auth == "device_code"]
    if delegated:
        # Nothing works before the sign-in: offer it at once (non-interactive: with --check).
        sign_in = args.check if args.non_interactive else p.confirm(
            "Sign in now (outlook2mqtt login)?", True)
        if not sign_in:
            p.say(f"Next: outlook2mqtt login -c {output}, then outlook2mqtt check -c {output}")
            return EXIT_OK
        p.say("")
        if not login.login(config, delegated[0], p.out):
            p.say(f"\nThe config is saved; sign in later with: outlook2mqtt login -c {output}")
            return EXIT_FAIL
    run = args.check if args.non_interactive else (
        args.check or p.confirm("Test the connection now (outlook2mqtt check)?", True))
    if not run:
        p.say(f"Next: outlook2mqtt check -c {output}")
        return EXIT_OK
    p.say("")
    if run_check(config, p.out):
        p.say(f"\nAll good. Start the bridge with: outlook2mqtt run -c {output}")
        return EXIT_OK
    p.say(f"\nFix what FAILed (the config is saved), then: outlook2mqtt check -c {output}")
    return EXIT_FAIL


def add_init_parser(subparsers: Any, *, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the `init` subcommand."""
    p = subparsers.add_parser(
        "init", parents=list(parents), help="write a config: interactive wizard or flags",
        description="Write a config for one mailbox (mode 0600). Interactive unless "
        "--non-interactive; any answer given as a flag is not asked. Exit 0 written (and "
        "checked, when asked to), 1 refused/aborted or check failed, 2 invalid answers.")
    p.add_argument("--output", help="where to write (default: -c, $OUTLOOK2MQTT_CONFIG or "
                   "./config.toml)")
    p.add_argument("--non-interactive", action="store_true",
                   help="ask nothing: every answer from the flags")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--check", action="store_true", help="run `check` after writing")
    g = p.add_argument_group("answers (config keys)")
    g.add_argument("--tenant-id", help="Directory (tenant) ID or domain")
    g.add_argument("--client-id", help="Application (client) ID")
    g.add_argument("--mailbox", help="mailbox address (IMAP user)")
    g.add_argument("--account-name", help="account name, a topic segment (default: home)")
    g.add_argument("--auth", help="client_secret (default), client_certificate or device_code")
    g.add_argument("--client-secret", help="the secret's Value; '-' reads it from stdin")
    g.add_argument("--client-secret-file", help="file holding the secret (referenced)")
    g.add_argument("--certificate-file", help="PEM certificate (outlook2mqtt cert new)")
    g.add_argument("--private-key-file", help="its PEM private key")
    g.add_argument("--cloud", help="global (default), usgov, usgov-dod or china")
    g.add_argument("--mqtt-host", help="broker host (default: localhost)")
    g.add_argument("--mqtt-port", help="broker port (default: 1883)")
    g.add_argument("--mqtt-username", help="broker user name")
    g.add_argument("--mqtt-password", help="broker password; '-' reads it from stdin")
    g.add_argument("--mqtt-password-file", help="file holding the broker password "
                   "(referenced)")
    g.add_argument("--folder", action="append", help="folder to watch, repeatable "
                   "(default: INBOX)")
    g.add_argument("--authority", help="identity platform host URL (override)")
    g.add_argument("--imap-host", help="IMAP host (override)")
    g.add_argument("--imap-port", help="IMAP port (override)")
    g.add_argument("--ca-file", help="extra CA for IMAP and the identity platform")
    g.add_argument("--state-dir", help="[bridge] state_dir")
    p.set_defaults(func=run_init, default_log_level="warning")
