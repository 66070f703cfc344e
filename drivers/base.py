"""The driver interface: what every network driver (bridge, host, null, macvlan, ipvlan,
overlay) implements, after libnetwork's driver API.

Drivers make Linux objects and nothing else: they keep no state of their own beyond what they
can find again in the kernel, emit no events and allocate no addresses (the DriverCore does).
Calls are blocking (netlink); the daemon runs them off the event loop.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from drivers import links
from drivers.model import Driver, Endpoint, Network, Sandbox


class NetworkDriver(Protocol):
    kind: ClassVar[Driver]

    def check_supported(self) -> None:
        """Raise Unsupported, naming the missing link type, if this kernel cannot do it."""

    def validate(self, network: Network) -> None:
        """Raise Invalid for options this driver does not take or cannot use."""

    def create_network(self, network: Network) -> None:
        """Make the network's host-side objects (a bridge, a parent sub-interface, ...)."""

    def remove_network(self, network: Network) -> None:
        """Remove what create_network made; missing objects are not an error."""

    def join(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> Endpoint:
        """Give the sandbox its interface on the network, with the endpoint's addresses and,
        unless the network is internal, a default route via the gateway. Returns the endpoint
        with what the kernel chose filled in (the MAC address)."""
        ...

    def leave(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> None:
        """Remove the sandbox's interface on the network; missing objects are not an error."""


class NoPlumbing:
    """A driver that makes no Linux object (host, none, cni): it takes no -o options, and
    creating, removing, joining and leaving change nothing."""

    kind: ClassVar[Driver]

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
