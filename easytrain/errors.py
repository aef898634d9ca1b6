"""The one exception type for a user's mistake.

Anything raised as UserError reaches the user as ``easytrain: <message>`` with
exit code 2 and no traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix: bad file, bad value, missing folder."""

    def __init__(self, message: str, *, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = list(problems or [])

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        lines = [self.message] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)
