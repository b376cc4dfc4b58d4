"""A folder's filters: its `search` criteria and its `[[accounts.folders.routes]]`.

Readers in the manner of `bridge.config.fields`: each problem names its key, nothing
raises. The routes are checked here by compiling them as `bridge.mail.routes` will.
May import: `bridge.config`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from bridge.config import fields
from bridge.config.model import RouteConfig
from bridge.config.search import SearchSyntaxError, parse_search

ROUTE_KEYS = ("name", "from", "subject")
ROUTE_HEADER = "accounts.folders.routes"


def search(t: fields.Table) -> str | None:
    """`search`: IMAP SEARCH criteria, checked by `bridge.config.search`."""
    value = t.opt_string("search")
    if value is None:
        return None
    if not value.strip():
        t.problem("search", "must not be empty; remove it to publish all new mail")
        return None
    try:
        parse_search(value)
    except SearchSyntaxError as exc:
        t.problem("search", str(exc))
    return value


def routes(t: fields.Table, elsewhere: Mapping[str, Collection[str]]) -> tuple[RouteConfig, ...]:
    """The folder's routes: unique names, each with address globs, a subject regex, or both."""
    tables = t.tables("routes", ROUTE_HEADER) or []
    found: list[RouteConfig] = []
    names: dict[str, str] = {}
    for rt in tables:
        route = _route(rt, elsewhere)
        if route.name in names:
            rt.problem("name", f"{route.name!r} is already the name of {names[route.name]}; "
                               "route names must be unique in a folder")
        names.setdefault(route.name, rt.dotted)
        found.append(route)
    return tuple(found)


def _route(t: fields.Table, elsewhere: Mapping[str, Collection[str]]) -> RouteConfig:
    t.check_keys(ROUTE_KEYS, elsewhere)
    name = t.required_string("name", "parcels")
    if name and not fields.SEGMENT.fullmatch(name):
        t.problem("name", f"{name!r} is used as a topic segment: use only a-z, 0-9, '_' and "
                          f"'-', e.g. {fields.slug(name) or 'parcels'!r}")
    senders = _senders(t)
    subject = t.opt_string("subject")
    if subject is not None:
        subject = _subject(t, subject)
    elif not t.has("from"):
        t.problems.add(t.dotted, 'a route needs from = ["*@example.com"], subject = "regex" '
                                 "or both; add one")
    return RouteConfig(name=name, senders=senders, subject=subject)


def _senders(t: fields.Table) -> tuple[str, ...]:
    """`from`: address globs; a single string is taken as a list of one."""
    if isinstance(t.data.get("from"), str):
        globs: tuple[str, ...] = (t.data["from"],)
    else:
        globs = t.strings("from", ())
        if t.has("from") and not globs and isinstance(t.data["from"], list):
            t.problem("from", 'list at least one address glob, e.g. ["*@example.com"]')
    for i, glob in enumerate(globs):
        key = f"{t.key('from')}[{i}]" if isinstance(t.data["from"], list) else t.key("from")
        if problem := glob_problem(glob):
            t.problems.add(key, problem)
    return tuple(g.lower() for g in globs)


def glob_problem(glob: str) -> str | None:
    """Why `glob` cannot match a sender address (fnmatch syntax), or None."""
    if not glob.strip() or re.search(r"\s", glob):
        return f"{glob!r} is not an address glob: no spaces, e.g. '*@example.com'"
    if re.search(r"\[[^\]]*$", glob):
        return f"{glob!r} has a '[' without its ']'; for a literal '[' write '[[]'"
    if "@" not in glob and "*" not in glob:
        return f"{glob!r} cannot match an address; did you mean '*@{glob}'?"
    return None


def _subject(t: fields.Table, subject: str) -> str | None:
    if not subject:
        t.problem("subject", "must not be empty; remove it to route by sender alone")
        return None
    try:
        re.compile(subject)
    except re.error as exc:
        t.problem("subject", f"not a valid regular expression: {exc.msg} at position "
                             f"{exc.pos}; e.g. '(?i)delivered'")
        return None
    return subject
