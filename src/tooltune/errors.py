"""Errors a user can act on. The CLI prints them as one line and exits 2; never a traceback."""

from __future__ import annotations


class ToolTuneError(Exception):
    """Base of every error caused by input (files, arguments, configs) rather than by a bug."""


class InputError(ToolTuneError, ValueError):
    """Bad input, located: `where` names the file and line (or the request), `field` the offending key."""

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None):
        self.message, self.where, self.field = message, where, field
        super().__init__(str(self))

    def __str__(self) -> str:
        prefix = ": ".join(p for p in (self.where, self.field) if p)
        return f"{prefix}: {self.message}" if prefix else self.message

    def at(self, where: str) -> "InputError":
        """The same error located in `where` (a file:line), keeping an inner location as a suffix."""
        inner = f" ({self.where})" if self.where else ""
        return InputError(self.message + inner, where=where, field=self.field)
