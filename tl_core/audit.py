"""The audit log: who deleted a dataset or cancelled a run, and when, in ``$TL_HOME/audit.jsonl``.

One JSON object per line, appended with a single write (``O_APPEND``), so lines from several
processes never interleave. Readers skip a line they cannot parse.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from tl_core.clock import now_iso
from tl_core.workspace import home

FILE = "audit.jsonl"


def record(action: str, target: str, user: Optional[str], **details) -> None:
    entry = {"time": now_iso(), "user": user or "anonymous", "action": action, "target": target, **details}
    line = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(home() / FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def recent(limit: int = 50) -> list[dict]:
    """The newest entries first."""
    try:
        lines = (home() / FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in reversed(lines):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
        if len(entries) >= limit:
            break
    return entries
