"""The null driver (docker's driver of the `none` network): a sandbox with loopback only.

Linux objects: none. Joining makes sure the sandbox's loopback is up (127.0.0.11 lives there)
and adds nothing else; leaving changes nothing. The `none` network takes no -o options.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.base import NoPlumbing
from drivers.model import Driver, Endpoint, Network, Sandbox
from drivers.namespaces import bring_up_loopback


class NullDriver(NoPlumbing):
    """It makes nothing, as the host driver; unlike it, the sandbox keeps its own namespace."""

    kind: ClassVar[Driver] = Driver.NULL

    def join(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> Endpoint:
        if sandbox.netns:
            bring_up_loopback(sandbox.netns)
        return endpoint
