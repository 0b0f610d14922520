"""Timestamps, one way: local time with its UTC offset, so a run folder read on another host or in another
season still says when things happened."""

from __future__ import annotations

from datetime import datetime


def now_iso() -> str:
    """This moment as ISO 8601 with the local UTC offset, to the second: ``2026-12-05T23:21:30+00:00``."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def compact_stamp() -> str:
    """This moment in local time for names (run ids, version files): ``20261205-232130``."""
    return datetime.now().astimezone().strftime("%Y%m%d-%H%M%S")
