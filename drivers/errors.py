"""The one exception hierarchy of netdns.

Mapped to HTTP status codes in the admin API and to exit codes in the CLI, each in one place.
Messages name the bad input and say what to do.
"""

from __future__ import annotations


class NetdnsError(Exception):
    """Base of every error netdns reports to a user."""

    http_status = 500
    exit_code = 1


class Invalid(NetdnsError):
    """Bad input: a malformed name, subnet, option or request."""

    http_status = 400
    exit_code = 2


class NotFound(NetdnsError):
    http_status = 404
    exit_code = 3


class Conflict(NetdnsError):
    """The request clashes with existing state: a duplicate name, an address in use, ..."""

    http_status = 409
    exit_code = 4


class Unsupported(NetdnsError):
    """Valid, but this host cannot do it (for example a link type the kernel lacks)."""

    http_status = 501
    exit_code = 5


class Unavailable(NetdnsError):
    """A service netdns depends on (the cluster store) cannot be reached right now; the same
    request may work later."""

    http_status = 503
    exit_code = 6
