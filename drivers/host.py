"""The host driver: sandboxes share the host's network namespace.

Linux objects: none. Joining gives the sandbox no interface of its own (it sees the host's), so
join and leave change nothing. The `host` network takes no -o options.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.base import NoPlumbing
from drivers.model import Driver


class HostDriver(NoPlumbing):
    kind: ClassVar[Driver] = Driver.HOST
