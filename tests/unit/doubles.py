"""Stand-ins for the kernel in tests of the DriverCore's logic (no root, no netlink): a driver
that makes nothing and named namespaces kept as paths in a set. The tests in tests/netns run the
same core on the real drivers and namespaces."""

from __future__ import annotations

from dataclasses import replace

from drivers.model import Driver, Endpoint, Network, Sandbox


class QuietDriver:
    """A network driver that makes nothing; join picks a MAC as a real one would, leave
    remembers whose endpoint left."""

    def __init__(self, kind: Driver) -> None:
        self.kind = kind
        self.left: list[str] = []

    def check_supported(self) -> None:
        pass

    def validate(self, network: Network) -> None:
        pass

    def create_network(self, network: Network) -> None:
        pass

    def remove_network(self, network: Network) -> None:
        pass

    def join(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> Endpoint:
        return replace(endpoint, mac="02:42:0a:00:00:" + endpoint.id[:2])

    def leave(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> None:
        self.left.append(sandbox.name)


class NamespacesFailed(Exception):
    """What PathNamespaces.create raises when told to fail."""


class PathNamespaces:
    """Named namespaces as paths in a set; adopted ones are the paths in `adoptable`.
    `fail_after` makes the n-th create from now on fail (undo tests). One instance outlives a
    DriverCore, as the kernel's namespaces outlive the daemon."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.adoptable: set[str] = set()
        self.fail_after: int | None = None

    def create(self, name: str) -> str:
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise NamespacesFailed(f"create {name}")
            self.fail_after -= 1
        path = f"/run/netns/{name}"
        assert path not in self.live, f"namespace {name} exists"
        self.live.add(path)
        return path

    def remove(self, name: str) -> None:
        self.live.discard(f"/run/netns/{name}")

    def exists(self, path: str) -> bool:
        return path in self.live or path in self.adoptable
