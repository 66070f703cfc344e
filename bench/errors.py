"""The bench's own failures: each one stops a run with a message that says why and what to do.

The bench reports netdns's errors too (drivers/errors.py: a redirect that cannot be installed,
say) when the code it drives raises them; these are the ones of its own making.
"""

from __future__ import annotations


class BenchError(Exception):
    """A bench run cannot go on; `exit_code` is what `python -m bench` exits with."""

    exit_code = 1


class Invalid(BenchError):
    """A bad option, or a tool's output that does not add up."""

    exit_code = 2


class NotFound(BenchError):
    """A tool or a file the run needs is missing (the message names the package)."""

    exit_code = 3


class Conflict(BenchError):
    """Something the lab would make exists already (another lab holds the name)."""

    exit_code = 4
