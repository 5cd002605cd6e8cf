"""Exit codes and the typed errors that carry them. Stages and library code raise; only
``stage_main`` and the pipeline driver turn an error into an exit code (``exit_code``)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1  # a bug or an outage we did not foresee: traceback
EXIT_BAD_INPUT = 2  # bad config, dataset, labels, names or an unreachable service: one line
EXIT_REFUSED = 3  # the gate refused with gate.fail_on_refuse=true, or the monitor saw a drift


class UserError(Exception):
    """Bad input. The message is one actionable line: what, where, and how to fix it."""


class IncompleteResult(Exception):
    """Work came back incomplete after every retry (for example rows lost by the server)."""


class NothingMeasured(IncompleteResult):
    """A stage's figure would rest on zero judged rows (every agent or judge call failed). The
    stage's run ends FAILED with the reason on it (``TAG_FAILURE``), records no result, so a
    rerun runs again and later stages name this reason instead of "run X first"."""


class Refused(Exception):
    """A decision that a scheduler must see as a failure: the gate refused (with
    ``gate.fail_on_refuse``) or the monitor flagged a drift. The result is recorded first."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def exit_code(e: BaseException) -> int:
    """The exit code an error ends a command with."""
    if isinstance(e, UserError):
        return EXIT_BAD_INPUT
    if isinstance(e, Refused):
        return e.code
    return EXIT_UNEXPECTED


def one_line(msg: object) -> str:
    return " ".join(str(msg).split())


def network_reason(e: BaseException) -> str:
    """'Connection refused' rather than '<urlopen error [Errno 111] Connection refused>'."""
    reason = getattr(e, "reason", e)
    return getattr(reason, "strerror", None) or str(reason)
