"""Readers for raw TOML tables, and the rule for each field's value.

A `Table` reader records a problem naming its key and returns a fallback; the rules
(`host_problem`, `tenant_problem`, `certificate_problem`, ...) take a value and say what is
wrong with it, so the `init` wizard asks with the same rules. Nothing here raises:
`bridge.config.load` collects every problem and raises one `ConfigError`. Secret values
never reach a problem message; only key names and file paths do.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.util import suggest

SEGMENT = re.compile(r"[a-z0-9_-]+")
# these tenants only work for delegated sign-in; app-only tokens need the tenant itself
MULTI_TENANTS = ("common", "organizations", "consumers")
# topics the bridge itself uses one level below <base_topic>/
RESERVED_ACCOUNT_NAMES = ("bridge",)
# the leaves of <base_topic>/bridge/... without an instance (bridge.mqtt.topics): an
# instance of that name would read as one of them
RESERVED_INSTANCE_NAMES = ("state", "info", "health", "check")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_guid(text: str) -> bool:
    """Whether `text` is a GUID, as Entra's IDs (tenant, client, a secret's ID) are."""
    return bool(_GUID.fullmatch(text))


class Problems:
    """The findings so far, each formatted as '<dotted key>: <message and the fix>'."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{key}: {message}")


# TOML's names for the types a value can have; bool before int, which it subclasses
_TYPE_NAMES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
    (list, "an array"), (Mapping, "a table"), ((dt.date, dt.time), "a date/time"),
)


def type_name(value: object) -> str:
    """The TOML name of a value's type, as a user would write it."""
    return next((name for kinds, name in _TYPE_NAMES if isinstance(value, kinds)),
                type(value).__name__)


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """'; did you mean 'X'?' for the closest choice, or '' when none is close."""
    suggestion = suggest.did_you_mean(word, choices)
    return f"; {suggestion}" if suggestion else ""


class Table:
    """One TOML table being read; `dotted` is its key path, e.g. ``accounts[0].folders[1]``,
    `base` the directory that relative paths start from."""

    def __init__(
        self, data: Mapping[str, Any], dotted: str, problems: Problems, base: Path
    ) -> None:
        self.data = data
        self.dotted = dotted
        self.problems = problems
        self.base = base

    def key(self, name: str) -> str:
        return f"{self.dotted}.{name}" if self.dotted else name

    def problem(self, name: str, message: str) -> None:
        self.problems.add(self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def check_keys(
        self, allowed: Collection[str], elsewhere: Mapping[str, Collection[str]]
    ) -> None:
        """Report keys not in `allowed`; `elsewhere` maps other tables' labels to their keys."""
        for name in self.data:
            if name in allowed:
                continue
            hint = did_you_mean(name, allowed)
            if not hint:
                homes = [label for label, keys in elsewhere.items() if name in keys]
                if homes:
                    hint = f"; it belongs in {homes[0]}"
            self.problem(name, f"unknown key{hint or '; remove it'}")

    def _typed(self, name: str, kinds: tuple[type, ...], expected: str) -> Any:
        """The value if present and of one of `kinds` (bool is never an int), else None."""
        if name not in self.data:
            return None
        value = self.data[name]
        if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
            return value
        hint = ""
        numeric = isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9._]+\s*", value)
        if numeric and expected.startswith(("an integer", "a number")):
            hint = "; write the number without quotes"
        elif isinstance(value, str) and expected.startswith("a boolean"):
            hint = "; write true or false without quotes"
        elif isinstance(value, int | float) and expected == "a string":
            hint = "; put the value in quotes"
        self.problem(name, f"expected {expected}, got {type_name(value)}{hint}")
        return None

    def opt_string(self, name: str) -> str | None:
        value: str | None = self._typed(name, (str,), "a string")
        return value

    def string(self, name: str, default: str) -> str:
        value = self.opt_string(name)
        if value is None:
            return default
        if not value.strip():
            self.problem(name, f"must not be empty; remove it to use the default {default!r}")
            return default
        return value

    def required_string(self, name: str, example: str) -> str:
        if name not in self.data:
            where = f" to [{self.dotted}]" if self.dotted and "[" not in self.dotted else ""
            self.problem(name, f'required key is missing; add {name} = "{example}"{where}')
            return ""
        value = self.opt_string(name)
        if value is not None and not value.strip():
            self.problem(name, f'must not be empty, e.g. {name} = "{example}"')
        return value or ""

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value = self.opt_string(name)
        if value is None:
            return default
        if value not in choices:
            options = ", ".join(repr(c) for c in choices)
            self.problem(name, f"{value!r} is not one of {options}{did_you_mean(value, choices)}")
            return default
        return value

    def integer(self, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        value: int | None = self._typed(name, (int,), "an integer")
        if value is None:
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            self.problem(name, f"must be {bound}, got {value}")
            return default
        return value

    def number(self, name: str, default: float, *, le: float | None = None, why: str = "") -> float:
        """A finite number (int or float) greater than 0 and, when `le` is given, at most `le`."""
        value: float | None = self._typed(name, (int, float), "a number (seconds)")
        if value is None:
            return default
        if not math.isfinite(value) or value <= 0 or (le is not None and value > le):
            bound = f"greater than 0 and at most {le:g}" if le is not None else "greater than 0"
            self.problem(name, f"must be {bound}, got {value}{why}")
            return default
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value: bool | None = self._typed(name, (bool,), "a boolean (true or false)")
        return default if value is None else value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value: list[Any] | None = self._typed(name, (list,), "an array of strings")
        if value is None:
            return default
        bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
        for i in bad:
            self.problems.add(f"{self.key(name)}[{i}]",
                              f"expected a string, got {type_name(value[i])}")
        return default if bad else tuple(value)

    def table(self, name: str) -> Table:
        """The sub-table `name` ([name]); a missing one reads as empty."""
        value: Mapping[str, Any] | None = self._typed(name, (Mapping,), f"a table ([{name}])")
        if value is None and name in self.data:
            # already reported; read an empty table into a scratch list so that its
            # "required key" findings do not repeat the same mistake
            return Table({}, self.key(name), Problems(), self.base)
        return Table(value or {}, self.key(name), self.problems, self.base)

    def tables(self, name: str, header: str) -> list[Table] | None:
        """The array of tables `name` ([[header]]); None when absent."""
        value: list[Any] | None = self._typed(name, (list,), f"an array of tables ([[{header}]])")
        if value is None:
            return None
        result = []
        for i, item in enumerate(value):
            key = f"{self.key(name)}[{i}]"
            if isinstance(item, Mapping):
                result.append(Table(item, key, self.problems, self.base))
            else:
                self.problems.add(key, f"expected a table ([[{header}]]), got {type_name(item)}")
        return result

    def resolve(self, value: str | os.PathLike[str]) -> Path:
        """A path from the config, relative ones taken from the config file's directory."""
        return self.base / Path(value).expanduser()

    def path(self, name: str) -> Path | None:
        value: str | os.PathLike[str] | None = self._typed(name, (str, os.PathLike), "a path")
        if value is None:
            return None
        if not str(value).strip():
            self.problem(name, "must not be empty; remove the key instead")
            return None
        return self.resolve(value)

    def existing_file(self, name: str) -> Path | None:
        """Like `path`, but the file must exist and be readable."""
        path = self.path(name)
        if path is not None and read_file(path, self.key(name), self.problems) is None:
            return None
        return path


def read_file(path: Path, key: str, problems: Problems) -> bytes | None:
    """The file's bytes, or None after reporting why it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        problems.add(key, f"file {path} does not exist; fix the path")
    except IsADirectoryError:
        problems.add(key, f"{path} is a directory; give the path of a file")
    except PermissionError:
        problems.add(key, f"cannot read {path}: permission denied; check its owner and mode")
    except OSError as exc:
        problems.add(key, f"cannot read {path}: {exc.strerror or exc}")
    return None


def slug(name: str) -> str:
    """Topic segment for a folder name: 'INBOX/Receipts' -> 'inbox_receipts'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def check_topic_prefix(table: Table, name: str, default: str) -> str:
    """An MQTT topic prefix: no wildcards, no leading, trailing or doubled '/'."""
    value = table.string(name, default)
    if "+" in value or "#" in value or "\0" in value:
        table.problem(name, f"{value!r} must not contain the MQTT wildcards '+' or '#'")
    elif value.startswith("/") or value.endswith("/") or "//" in value:
        fixed = "/".join(part for part in value.split("/") if part)
        table.problem(name, f"{value!r} must not start or end with '/' or have empty levels; "
                            f"use {fixed!r}")
    return value


def host_problem(host: str, example: str) -> str | None:
    """What is wrong with `host` as a bare host name or address (no scheme, path or port)."""
    if "://" in host:
        return f"give the host name only, without the scheme, e.g. {example!r}"
    if re.fullmatch(r"[^:/\s]+:\d+", host):
        return "give the host name only and put the port in the port key"
    if not host.strip() or re.search(r"[/\s]", host):
        return f"{host!r} is not a host name, e.g. {example!r}"
    return None


def authority_problem(url: str, example: str) -> str | None:
    """What is wrong with `url` as an identity authority: an https:// host URL only."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        return f"{url!r} must be an https:// URL, e.g. {example!r}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return (f"give the host URL only, e.g. {example!r}; the bridge appends /<tenant_id>, "
                "so put the tenant in tenant_id")
    return None


def mailbox_problem(mailbox: str) -> str | None:
    """What is wrong with `mailbox` as an e-mail address."""
    if re.fullmatch(r"[^@\s]+@[^@\s]+", mailbox):
        return None
    return f"{mailbox!r} is not an e-mail address, e.g. 'me@contoso.com'"


def tenant_problem(tenant: str, auth: str) -> str | None:
    """What is wrong with `tenant` as the tenant of an account signing in with `auth`:
    a directory ID or domain, and for app-only credentials not a multi-tenant alias."""
    if not re.fullmatch(r"[A-Za-z0-9.-]+", tenant):
        return ("must be the directory (tenant) ID or a domain such as "
                "'contoso.onmicrosoft.com'")
    if auth != "device_code" and tenant.lower() in MULTI_TENANTS:
        return (f"{tenant!r} works only for delegated sign-in; auth = \"{auth}\" needs your "
                "directory (tenant) ID")
    return None


def segment_problem(name: str, example: str) -> str | None:
    """What is wrong with `name` as a name that becomes one topic level."""
    if SEGMENT.fullmatch(name):
        return None
    return (f"{name!r} is used as a topic segment: use only a-z, 0-9, '_' and '-', "
            f"e.g. {slug(name) or example!r}")


def account_name_problem(name: str) -> str | None:
    """What is wrong with `name` as an account name: a topic segment, not a reserved one."""
    if problem := segment_problem(name, "home"):
        return problem
    if name in RESERVED_ACCOUNT_NAMES:
        return f"{name!r} is reserved for <base_topic>/{name}/...; choose another"
    return None


def instance_problem(name: str) -> str | None:
    """What is wrong with `name` as `bridge.instance`: a topic segment, not a reserved one."""
    if problem := segment_problem(name, "helpdesk-1"):
        return problem
    if name in RESERVED_INSTANCE_NAMES:
        return f"{name!r} would read as <base_topic>/bridge/{name}; choose another"
    return None


def check(table: Table, name: str, problem: str | None) -> None:
    """Record `problem` (a rule's finding about the value of `name`), if there is one."""
    if problem is not None:
        table.problem(name, problem)


