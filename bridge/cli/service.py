"""`outlook2mqtt service install|uninstall`: the systemd unit, its directories, credentials.

A system install (root) writes the hardened unit and a drop-in that names every credential,
moves secrets and private keys out of the config into the credential store, writes the
config the service reads (state in $STATE_DIRECTORY, every path absolute and readable by the
service's dynamic user), runs `check` as an unprivileged user with the credentials the
service will get, then enables and starts the unit. `--instance NAME` does the same for one
instance of the template unit `outlook2mqtt@.service`: config `NAME.toml`, its files in
`NAME/`, credentials `outlook2mqtt@NAME.*`, state in `outlook2mqtt/NAME`. `--user` does it
for `systemctl --user`, without root: the config, the user's own and 0600, keeps its secrets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from bridge import log
from bridge.cli import service_config
from bridge.config import fields
from bridge.config.load import config_search_path, load_config
from bridge.errors import ConfigError

UNIT = "outlook2mqtt.service"
TEMPLATE = "outlook2mqtt@.service"
SHIPPED_BIN = "/opt/outlook2mqtt/bin/outlook2mqtt"  # ExecStart in the shipped units
# the sandbox hides these from the system service (ProtectHome=, PrivateTmp=)
HIDDEN = tuple(Path(p) for p in ("/home", "/root", "/run/user", "/tmp", "/var/tmp"))  # noqa: S108
EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


@dataclass(frozen=True)
class Layout:
    """Where an install puts things; `credstore` is None for a user install, `instance`
    names an instance of the template unit."""

    unit_dir: Path
    config_dir: Path
    credstore: Path | None
    state_dirs: tuple[Path, ...]
    instance: str | None = None

    @property
    def user(self) -> bool:
        return self.credstore is None

    @property
    def unit_name(self) -> str:
        """What systemctl is told: `outlook2mqtt.service` or `outlook2mqtt@NAME.service`."""
        return TEMPLATE.replace("@", f"@{self.instance}") if self.instance else UNIT

    @property
    def unit(self) -> Path:
        return self.unit_dir / (TEMPLATE if self.instance else UNIT)

    @property
    def dropin_dir(self) -> Path:
        return self.unit_dir / f"{self.unit_name}.d"

    @property
    def config(self) -> Path:
        return self.config_dir / (f"{self.instance}.toml" if self.instance else "config.toml")

    @property
    def files_dir(self) -> Path:
        """Where the certificates and CA files the service reads are copied."""
        return self.config_dir / self.instance if self.instance else self.config_dir

    @property
    def cred_prefix(self) -> str:
        """The credential store's file names: `<prefix><credential name>`."""
        return f"outlook2mqtt@{self.instance}." if self.instance else service_config.PREFIX


def layout(args: argparse.Namespace) -> Layout:
    """The standard places, or the ones given by --unit-dir, --config-dir ... ."""
    instance = args.instance
    if args.user:
        home = Path.home()
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
        state_home = Path(os.environ.get("XDG_STATE_HOME") or home / ".local" / "state")
        std = Layout(config_home / "systemd" / "user", config_home / "outlook2mqtt", None,
                     (state_home / "outlook2mqtt",))
    else:
        state = Path("outlook2mqtt", instance) if instance else Path("outlook2mqtt")
        std = Layout(Path("/etc/systemd/system"), Path("/etc/outlook2mqtt"),
                     Path("/etc/credstore"),
                     (Path("/var/lib") / state, Path("/var/lib/private") / state))
    return Layout(
        Path(args.unit_dir) if args.unit_dir else std.unit_dir,
        Path(args.config_dir) if args.config_dir else std.config_dir,
        None if args.user else Path(args.credstore) if args.credstore else std.credstore,
        (Path(args.state_dir),) if args.state_dir else std.state_dirs,
        instance,
    )


def installed_program() -> Path:
    """This installation's `outlook2mqtt` script, which the unit will run."""
    script = Path(sys.executable).parent / "outlook2mqtt"
    return script if script.exists() else Path(sys.argv[0]).absolute()


def unit_text(where: Layout, program: Path) -> str:
    """The shipped unit with this installation's program and config."""
    name = "outlook2mqtt-user.service" if where.user else where.unit.name
    text = resources.files("bridge").joinpath("systemd", name).read_text()
    text = text.replace(SHIPPED_BIN, str(program))
    if where.user:
        return text.replace("%E/outlook2mqtt/config.toml", str(where.config))
    shipped = "/etc/outlook2mqtt/%i.toml" if where.instance else "/etc/outlook2mqtt/config.toml"
    configs = where.config_dir / "%i.toml" if where.instance else where.config
    return text.replace(f"config.toml:{shipped}", f"config.toml:{configs}")


def dropin_text(where: Layout, credstore: Path, credentials: Sequence[str]) -> str:
    """LoadCredential= for exactly the credentials written; the empty one first resets the
    unit's list (a drop-in cannot remove single lines)."""
    lines = ["# written by `outlook2mqtt service install`: the credentials it stored",
             "[Service]", "LoadCredential=",
             f"LoadCredential=config.toml:{where.config}"]
    lines += [f"LoadCredential={name}:{credstore / (where.cred_prefix + name)}"
              for name in credentials]
    return "\n".join(lines) + "\n"


def _say(text: str) -> None:
    print(text, flush=True)


def _systemctl(where: Layout, *argv: str) -> bool:
    command = ["systemctl", *(["--user"] if where.user else []), *argv]
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        _say(f"FAIL  {' '.join(command)} (exit {done.returncode})")
    return done.returncode == 0


def cmd_install(args: argparse.Namespace) -> int:
    """Install (or update) the service from the config the command line finds."""
    where = layout(args)
    if not where.user and os.geteuid() != 0:
        _say("outlook2mqtt: service install needs root; --user installs a user service")
        return EXIT_FAIL
    if (refused := _instance_problem(where)) is not None:
        _say(f"outlook2mqtt: {refused}")
        return EXIT_CONFIG
    program = installed_program()
    if not where.user and any(program.is_relative_to(hidden) for hidden in HIDDEN):
        level = "warning" if args.no_start else "FAIL "
        _say(f"{level} the service's sandbox hides {program}: install into /opt/outlook2mqtt "
             "(python3 -m venv /opt/outlook2mqtt; /opt/outlook2mqtt/bin/pip install .)")
        if not args.no_start:
            return EXIT_FAIL
    source = config_search_path(args.config, os.environ).absolute()
    try:
        plan = service_config.plan(source, where.files_dir, where.credstore, load_config,
                                   instance=where.instance, prefix=where.cred_prefix)
    except ConfigError as exc:
        print(f"outlook2mqtt: invalid configuration {source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {log.redact(problem)}", file=sys.stderr)
        return EXIT_CONFIG
    written = service_config.apply(plan, where.config, where.credstore, where.cred_prefix)
    for line in written:
        _say(f"ok    {line}")
    _write(where.unit, unit_text(where, program))
    if where.credstore is not None:
        _write(where.dropin_dir / "credentials.conf",
               dropin_text(where, where.credstore, sorted(plan.secrets)))
    _say(f"ok    unit {where.unit}")
    if not args.no_check and not service_config.check_as_service(
            program, where.config, plan.secrets, user=where.user):
        _say("FAIL  check (above): fix the config, then run `outlook2mqtt service install` "
             "again")
        return EXIT_FAIL
    return _start(where) if not args.no_start else EXIT_OK


def _instance_problem(where: Layout) -> str | None:
    """Why --instance cannot be used as given, if it cannot."""
    if where.instance is None:
        return None
    if where.user:
        return "--instance installs the system template unit; a user service runs one bridge"
    problem = fields.instance_problem(where.instance)
    return f"--instance: {problem}" if problem else None


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)


def _start(where: Layout) -> int:
    unit = where.unit_name
    if not (_systemctl(where, "daemon-reload") and _systemctl(where, "enable", unit)
            and _systemctl(where, "restart", unit)):
        return EXIT_FAIL
    scope = "--user " if where.user else ""
    _say(f"ok    started. Follow it: journalctl {scope}-u {unit.removesuffix('.service')} -f")
    if where.user:
        _say("      to keep it running while you are logged out: loginctl enable-linger")
    return EXIT_OK


def cmd_uninstall(args: argparse.Namespace) -> int:
    """Stop and remove the service; --purge also its config, credentials and state."""
    where = layout(args)
    if not where.user and os.geteuid() != 0:
        _say("outlook2mqtt: service uninstall needs root (--user for a user service)")
        return EXIT_FAIL
    if (refused := _instance_problem(where)) is not None:
        _say(f"outlook2mqtt: {refused}")
        return EXIT_CONFIG
    if not args.no_start and where.unit.exists():
        _systemctl(where, "disable", "--now", where.unit_name)
    removed = [p for p in (where.dropin_dir, *_unit_unless_shared(where)) if p.exists()]
    kept: list[Path] = []
    stored = sorted(where.credstore.glob(where.cred_prefix + "*")) if where.credstore else []
    configs = (where.config, where.files_dir) if where.instance else (where.config_dir,)
    for path in (*configs, *stored, *where.state_dirs):
        if path.exists() or path.is_symlink():
            (removed if args.purge else kept).append(path)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        _say(f"ok    removed {path}")
    if not args.no_start and removed:
        _systemctl(where, "daemon-reload")
    for path in kept:
        _say(f"      kept {path} (--purge removes it)")
    return EXIT_OK


def _unit_unless_shared(where: Layout) -> list[Path]:
    """The unit file, unless other instances of the template are installed."""
    if not where.instance:
        return [where.unit]
    others = [d for d in where.unit_dir.glob(TEMPLATE.replace("@", "@*") + ".d")
              if d != where.dropin_dir]
    return [] if others else [where.unit]


def add_service_parser(subparsers: Any, *, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add `service install` and `service uninstall`."""
    p = subparsers.add_parser(
        "service", help="install or remove the systemd service",
        description="Install the bridge as a systemd service (root), or with --user as a "
        "user service, from the config the command line finds; or remove it.")
    sub = p.add_subparsers(dest="service_command", required=True)
    install = sub.add_parser(
        "install", parents=list(parents), help="write the unit and config, move secrets "
        "into the credential store, check, enable and start",
        description="Write the hardened unit, the config (state in $STATE_DIRECTORY) and "
        "the credentials (secrets and private keys moved out of the config), run `check` "
        "as the service would, then enable and start it. Run it again after changing the "
        "config.")
    install.add_argument("--no-check", action="store_true", help="do not run check")
    install.set_defaults(func=cmd_install, default_log_level="warning")
    uninstall = sub.add_parser(
        "uninstall", parents=list(parents), help="stop and remove the unit",
        description="Stop, disable and remove the unit; --purge also deletes the config, "
        "the stored credentials and the state.")
    uninstall.add_argument("--purge", action="store_true",
                           help="also delete config, credentials and state")
    uninstall.set_defaults(func=cmd_uninstall, default_log_level="warning")
    for q in (install, uninstall):
        q.add_argument("--user", action="store_true",
                       help="a user service (systemctl --user), no root needed")
        q.add_argument("--instance", metavar="NAME",
                       help="one of several bridges on this machine: the template unit "
                       "outlook2mqtt@.service as outlook2mqtt@NAME, config NAME.toml in the "
                       "config dir, state in outlook2mqtt/NAME (docs/scaling.md)")
        q.add_argument("--no-start", action="store_true",
                       help="leave systemctl alone (no enable/start/stop): for images and "
                       "machines where systemd is not running")
        g = q.add_argument_group("locations (defaults: the standard ones)")
        g.add_argument("--unit-dir", help="default /etc/systemd/system, --user "
                       "~/.config/systemd/user")
        g.add_argument("--config-dir", help="default /etc/outlook2mqtt, --user "
                       "~/.config/outlook2mqtt")
        g.add_argument("--credstore", help="default /etc/credstore (system only)")
        g.add_argument("--state-dir", help="what --purge deletes; default "
                       "/var/lib/[private/]outlook2mqtt[/NAME], --user "
                       "~/.local/state/outlook2mqtt")

