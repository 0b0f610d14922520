"""The engine's two exceptions, owned here so every layer raises and catches the same ones."""

from __future__ import annotations


class TLError(Exception):
    """An error the user can fix; its message says what to fix."""


class Cancelled(TLError):
    """A run or job stopped because someone asked it to (a ``cancel`` file, the Cancel button, a signal)."""
