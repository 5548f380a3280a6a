"""The one exception type for user errors.

A ``CnnctlError`` carries a message naming what is wrong and a hint naming the
fix. The CLI prints both and exits with status 2; no traceback is shown.
"""

from __future__ import annotations


class CnnctlError(Exception):
    """A user-facing error: bad input, bad configuration, unusable file."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  fix: {self.hint}"
