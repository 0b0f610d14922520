"""Timestamps: written with their UTC offset (clock.py); older naive or ``+0000`` ones in existing run folders and
audit logs still read, and runs list newest first whichever host or season wrote them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tl_core import clock
from tl_core.models.config import TrainConfig
from tl_core.runs.store import list_runs, new_run
from tl_core.workspace import runs_dir, write_json


@pytest.fixture
def berlin(monkeypatch):
    """This host's local time is Berlin's (UTC+1 in December), so naive stamps have an offset to be read in."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_now_iso_carries_the_local_offset_and_reads_back(berlin):
    stamp = clock.now_iso()
    moment = clock.parse_stamp(stamp)
    assert moment.tzinfo is not None and stamp[-6:] in ("+01:00", "+02:00")
    assert abs(moment - datetime.now(UTC)) < timedelta(seconds=5)


def test_every_stored_format_reads_as_the_same_moment(berlin):
    moment = datetime(2026, 12, 5, 22, 21, 30, tzinfo=UTC)
    assert clock.parse_stamp("2026-12-05T23:21:30+01:00") == moment  # now_iso
    assert clock.parse_stamp("2026-12-05T22:21:30+0000") == moment  # older audit lines and manifests
    assert clock.parse_stamp("2026-12-05T23:21:30") == moment  # older run folders: naive local time
    assert [clock.parse_stamp(v) for v in (None, "", "yesterday", 1733433690)] == [None] * 4


def test_runs_list_newest_first_across_offsets_and_old_naive_stamps(berlin):
    created = {
        "cairo": "2026-12-05T12:30:00+02:00",  # 10:30 UTC, written on a host two hours east
        "utc": "2026-12-05T10:45:00+00:00",  # 10:45 UTC
        "old": "2026-12-05T11:50:00",  # naive, from before offsets were written: 10:50 UTC here
        "none": None,  # a status without the field lists last
    }
    for queued_at, (name, stamp) in enumerate(created.items()):
        run = new_run(TrainConfig(data="colors").resolved(), runs_dir() / name)
        status = {"state": "queued", "queued_at": queued_at} | ({"created": stamp} if stamp else {})
        write_json(run.path("status.json"), status)
    assert [run.id for run in list_runs()] == ["old", "utc", "cairo", "none"]
