"""Timestamps, one way: local time with its UTC offset, so a run folder read on another host or in another
season still says when things happened."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Optional

_NEVER = datetime.min.replace(tzinfo=UTC)


def now_iso() -> str:
    """This moment as ISO 8601 with the local UTC offset, to the second: ``2026-12-05T23:21:30+00:00``."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def compact_stamp() -> str:
    """This moment in local time for names (run ids, version files): ``20261205-232130``."""
    return datetime.now().astimezone().strftime("%Y%m%d-%H%M%S")


def parse_stamp(text: object) -> Optional[datetime]:
    """A stored timestamp as an aware datetime, whichever version wrote it: ``now_iso``'s
    ``2026-12-05T23:21:30+00:00``, the older ``+0000`` offset, or an older naive ``2026-12-05T23:21:30``
    (written in local time, so read as this host's local time). None for a missing or unreadable value."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.astimezone()


def order_key(text: object) -> datetime:
    """Sort key for stored timestamps: chronological across offsets and formats, missing or unreadable first."""
    return parse_stamp(text) or _NEVER
