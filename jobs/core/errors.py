"""Exit codes and the one error type that means "the user's input is wrong"."""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1  # a bug or an outage we did not foresee: traceback
EXIT_BAD_INPUT = 2  # bad config, dataset, labels, names or an unreachable service: one line
EXIT_REFUSED = 3  # the gate refused and gate.fail_on_refuse=true


class UserError(Exception):
    """Bad input. The message is one actionable line: what, where, and how to fix it."""


class IncompleteResult(Exception):
    """Work came back incomplete after every retry (for example rows lost by the server)."""


def network_reason(e: BaseException) -> str:
    """'Connection refused' rather than '<urlopen error [Errno 111] Connection refused>'."""
    reason = getattr(e, "reason", e)
    return getattr(reason, "strerror", None) or str(reason)
