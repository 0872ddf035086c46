"""The one exception type the CLI turns into a clear message (never a traceback)."""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: what went wrong, and the remedy."""

    def __init__(self, message: str, remedy: str = "", exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.remedy = remedy
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message}\n  remedy: {self.remedy}" if self.remedy else self.message
