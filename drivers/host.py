"""The host driver: sandboxes share the host's network namespace.

Linux objects: none. Joining gives the sandbox no interface of its own (it sees the host's), so
join and leave change nothing. The `host` network takes no -o options.
"""

from __future__ import annotations

from typing import ClassVar

from drivers import links
from drivers.model import Driver, Endpoint, Network, Sandbox


class HostDriver:
    kind: ClassVar[Driver] = Driver.HOST

    def check_supported(self) -> None:
        return None

    def validate(self, network: Network) -> None:
        links.check_option_keys(network, ())

    def create_network(self, network: Network) -> None:
        self.validate(network)

    def remove_network(self, network: Network) -> None:
        return None

    def join(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> Endpoint:
        return endpoint

    def leave(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> None:
        return None
