"""The exception tree. Each class carries the exit code of DESIGN.md's one table.

Library code raises these; only the CLI boundary (`coophost.cli.main`) turns them into a
message and an exit status. Nothing below the CLI calls `sys.exit`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PENDING = 1
EXIT_USAGE = 2
EXIT_BUSY = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130


class CoophostError(Exception):
    """Base of every error coophost reports to a person; `exit_code` is its exit status."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(CoophostError):
    """A command was called wrongly or its input is invalid (exit 2)."""


class ConfigError(UsageError):
    """A co-op file is malformed or refers to something that does not exist (exit 2)."""


class ValidationError(ConfigError):
    """Registry input failed validation; names the file, the field path and the value."""

    def __init__(self, file: str, field: str, value: object, problem: str,
                 *, hint: str | None = None) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{file}: {field}: {shown}: {problem}", hint=hint)
        self.file = file
        self.field = field
        self.value = value
        self.shown = shown  # the value as the message shows it (repr, cut at 80 characters)
        self.problem = problem

    @property
    def errors(self) -> list[ValidationError]:
        """Each problem this error reports: itself (ValidationErrors holds several)."""
        return [self]

    @staticmethod
    def combine(errors: list[ValidationError]) -> ValidationError:
        """One error reporting every problem of `errors` (flattened, duplicates dropped).

        One problem is raised as itself, so its wording stays that of a single error.
        """
        seen: dict[tuple[str, str, str, str], ValidationError] = {}
        for error in errors:
            for one in error.errors:
                seen.setdefault((one.file, one.field, one.shown, one.problem), one)
        found = list(seen.values())
        return found[0] if len(found) == 1 else ValidationErrors(found)


class ValidationErrors(ValidationError):
    """Several validation problems found in one run (of one file, or of a whole co-op).

    Its `file`, `field`, `value` and `problem` are the first problem's; `errors` holds each,
    in the order they were found. Its message is their messages, one a line.
    """

    def __init__(self, errors: list[ValidationError]) -> None:
        first = errors[0]
        super().__init__(first.file, first.field, first.value, first.problem)
        self.message = "\n".join(error.message for error in errors)
        self.args = (self.message,)
        self.shown = first.shown
        self.hint = None  # each problem keeps its own hint
        self._errors = list(errors)

    @property
    def errors(self) -> list[ValidationError]:
        """Each problem, in the order found."""
        return list(self._errors)


class EnvironmentProblem(UsageError):
    """Something this machine needs is missing (no Docker engine, no debootstrap) (exit 2)."""


class BusyError(CoophostError):
    """Another coophost process holds the co-op's lock (exit 3)."""

    exit_code = EXIT_BUSY


class ConflictError(CoophostError):
    """A file changed after coophost read it and before it wrote it; nothing written (exit 3)."""

    exit_code = EXIT_BUSY


class HostUnreachable(CoophostError):
    """A host did not answer over SSH (exit 4)."""

    exit_code = EXIT_UNREACHABLE


class HostKeyMismatch(HostUnreachable):
    """A host presented a key other than the one pinned in known_hosts (exit 4)."""


class ExternalCommandError(CoophostError):
    """A tool coophost drives (docker, debootstrap, ansible) failed (exit 1)."""

    exit_code = EXIT_PENDING


class Interrupted(CoophostError):
    """The run was interrupted (Ctrl-C); what was running is recorded as canceled (exit 130)."""

    exit_code = EXIT_INTERRUPTED
