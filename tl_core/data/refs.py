"""Dataset references, one way: ``name`` (the latest version) or ``name@vN`` (version N, from 1).

Configs, run folders, the command line and the pages name a dataset this way; ``parse_ref`` is the one
place that reads such a string and ``str(DatasetRef)`` the one place that writes it. Dataset names
cannot contain ``@`` (``workspace.safe_name`` replaces it), so the first ``@`` starts the version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from tl_core.errors import TLError

_VERSION_RE = re.compile(r"v([0-9]+)")  # ASCII digits only: str.isdigit() also accepts '²'
_FORM = "write NAME or NAME@vN with N a whole number from 1, as in 'flowers' or 'flowers@v2'"


@dataclass(frozen=True)
class DatasetRef:
    """A dataset by name, at ``version`` when one is pinned, else at its latest version."""

    name: str
    version: Optional[int] = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@v{self.version}"


def parse_ref(text: str | DatasetRef) -> DatasetRef:
    """``'flowers'`` -> ``DatasetRef('flowers')``, ``'flowers@v2'`` -> ``DatasetRef('flowers', 2)``.

    Raises TLError quoting ``text`` when the name is empty or the part after ``@`` is not ``v`` and a
    whole number from 1."""
    text = str(text)
    name, at, version = text.partition("@")
    if not name:
        raise TLError(f"Dataset reference {text!r} has no dataset name before '@'; {_FORM}.")
    if not at:
        return DatasetRef(name)
    match = _VERSION_RE.fullmatch(version)
    if not match:
        raise TLError(f"Dataset reference {text!r}: {version!r} after '@' is not a version; {_FORM}.")
    number = int(match.group(1))
    if number < 1:
        raise TLError(f"Dataset reference {text!r}: versions start at v1; {_FORM}.")
    return DatasetRef(name, number)
