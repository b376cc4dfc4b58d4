"""Times in UTC: stamps as the bridge publishes them (ISO 8601, whole seconds), and aware
UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_now() -> str:
    """Current time as ISO 8601 UTC with offset, seconds precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def as_utc(moment: datetime | None) -> datetime:
    """`moment` as an aware UTC time (naive ones are taken as UTC); None is now."""
    if moment is None:
        return datetime.now(UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def iso_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).replace(microsecond=0).isoformat()
