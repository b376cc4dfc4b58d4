"""A tiny, forgiving reader for the first event of an iCalendar (RFC 5545) invitation."""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

# Outlook names zones the Windows way; the common ones mapped to IANA (CLDR windowsZones).
_WINDOWS_ZONES = {
    "UTC": "UTC", "Coordinated Universal Time": "UTC",
    "GMT Standard Time": "Europe/London", "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin", "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "E. Europe Standard Time": "Europe/Chisinau", "FLE Standard Time": "Europe/Kiev",
    "GTB Standard Time": "Europe/Bucharest", "Russian Standard Time": "Europe/Moscow",
    "Turkey Standard Time": "Europe/Istanbul", "Israel Standard Time": "Asia/Jerusalem",
    "South Africa Standard Time": "Africa/Johannesburg", "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Kolkata", "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore", "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul", "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Eastern Standard Time": "America/New_York", "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver", "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles", "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu", "Atlantic Standard Time": "America/Halifax",
    "E. South America Standard Time": "America/Sao_Paulo",
}
_FIELDS = ("SUMMARY", "DTSTART", "DTEND", "LOCATION", "ORGANIZER")
_TEXT_ESCAPE = re.compile(r"\\(.)")


def _split_line(line: str) -> tuple[str, dict[str, str], str] | None:
    """`NAME;P=V;Q="a:b":value` -> (NAME, {P: V, Q: a:b}, value); None without a colon."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == ":" and not quoted:
            head, value = line[:i], line[i + 1 :]
            break
    else:
        return None
    name, *raw_params = head.split(";")
    params: dict[str, str] = {}
    for item in raw_params:
        key, _, val = item.partition("=")
        params[key.strip().upper()] = val.strip().strip('"')
    return name.strip().upper(), params, value


def _unescape(value: str) -> str:
    """RFC 5545 §3.3.11 TEXT: backslash escapes for newline, comma, semicolon, backslash."""
    return _TEXT_ESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value).strip()


def _zone(tzid: str) -> tzinfo | None:
    name = _WINDOWS_ZONES.get(tzid, tzid).strip().lstrip("/")
    try:
        return ZoneInfo(name)
    except Exception:  # unknown or malformed key
        return None


def _when(value: str, params: dict[str, str]) -> str:
    """DATE or DATE-TIME as ISO 8601 (with offset when the zone is known), else as given."""
    value = value.strip()
    try:
        if re.fullmatch(r"\d{8}", value):
            return datetime.strptime(value, "%Y%m%d").date().isoformat()
        if re.fullmatch(r"\d{8}T\d{6}Z", value):
            return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat()
        if re.fullmatch(r"\d{8}T\d{6}", value):
            moment = datetime.strptime(value, "%Y%m%dT%H%M%S")
            zone = _zone(params["TZID"]) if "TZID" in params else None
            return (moment.replace(tzinfo=zone) if zone else moment).isoformat()
    except ValueError:  # e.g. month 13
        pass
    return value


def _organizer(value: str, params: dict[str, str]) -> dict[str, str]:
    address = re.sub(r"(?i)^mailto:", "", value.strip())
    return {"name": params.get("CN", ""), "address": address}


def parse_calendar(text: str) -> dict[str, Any]:
    """`method, summary, start, end, location, organizer` of the first VEVENT (None if absent)."""
    lines = re.sub(r"\r?\n[ \t]", "", text).splitlines()  # RFC 5545 §3.1 unfolding
    method: str | None = None
    found: dict[str, tuple[dict[str, str], str]] = {}
    stack: list[str] = []
    events = 0
    for line in lines:
        parsed = _split_line(line)
        if parsed is None:
            continue
        name, params, value = parsed
        if name == "BEGIN":
            stack.append(value.strip().upper())
            events += stack[-1] == "VEVENT"
        elif name == "END":
            if stack:
                stack.pop()
        elif name == "METHOD" and method is None and "VEVENT" not in stack:
            method = value.strip().upper()
        elif events == 1 and stack[-1:] == ["VEVENT"] and name in _FIELDS:
            found.setdefault(name, (params, value))

    start, end, organizer = found.get("DTSTART"), found.get("DTEND"), found.get("ORGANIZER")
    return {
        "method": method,
        "summary": _unescape(found["SUMMARY"][1]) if "SUMMARY" in found else None,
        "start": _when(start[1], start[0]) if start else None,
        "end": _when(end[1], end[0]) if end else None,
        "location": _unescape(found["LOCATION"][1]) if "LOCATION" in found else None,
        "organizer": _organizer(organizer[1], organizer[0]) if organizer else None,
    }
