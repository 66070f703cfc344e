"""The null driver (docker's driver of the `none` network): a sandbox with loopback only.

Linux objects: none. Joining makes sure the sandbox's loopback is up (127.0.0.11 lives there)
and adds nothing else; leaving changes nothing. The `none` network takes no -o options.
"""

from __future__ import annotations

from typing import ClassVar

from drivers import links
from drivers.model import Driver, Endpoint, Network, Sandbox
from drivers.namespaces import bring_up_loopback


class NullDriver:
    kind: ClassVar[Driver] = Driver.NULL

    def check_supported(self) -> None:
        return None

    def validate(self, network: Network) -> None:
        links.check_option_keys(network, ())

    def create_network(self, network: Network) -> None:
        self.validate(network)

    def remove_network(self, network: Network) -> None:
        return None

    def join(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> Endpoint:
        if sandbox.netns:
            bring_up_loopback(sandbox.netns)
        return endpoint

    def leave(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> None:
        return None
