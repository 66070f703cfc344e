"""Stand-ins for the kernel in tests of the DriverCore's logic (no root, no netlink): drivers
that make nothing (quiet, or recording every call and failing those asked to) and named
namespaces kept as paths in a set. The tests in tests/netns run the
same core on the real drivers and namespaces."""

from __future__ import annotations

from dataclasses import replace

from drivers.errors import Conflict, Invalid, Unsupported
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


class PlumbingFailed(Exception):
    pass


class RecordingDriver:
    """Records calls; fails the calls named in `fail` (for undo tests)."""

    def __init__(self, kind: Driver) -> None:
        self.kind = kind
        self.calls: list[tuple[str, str]] = []
        self.fail: set[str] = set()

    def _record(self, call: str, what: str) -> None:
        self.calls.append((call, what))
        if call in self.fail:
            raise PlumbingFailed(f"{call} {what}")

    def check_supported(self) -> None:
        if "check_supported" in self.fail:
            raise Unsupported(f"{self.kind} is not supported here")

    def validate(self, network: Network) -> None:
        if dict(network.options).get("bad"):
            raise Invalid(f"option bad is not taken by {self.kind}")

    def create_network(self, network: Network) -> None:
        self._record("create_network", network.name)

    def remove_network(self, network: Network) -> None:
        self._record("remove_network", network.name)

    def join(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> Endpoint:
        assert endpoint.sandbox_id == sandbox.id and endpoint.network_id == network.id
        self._record("join", f"{sandbox.name}@{network.name}:{sandbox.netns}")
        return replace(endpoint, mac="02:42:00:00:00:01")

    def leave(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> None:
        self._record("leave", f"{sandbox.name}@{network.name}")


class RecordingNamespaces:
    """Named namespaces as paths in a set; `adopted` holds paths made 'by another runtime'.
    One instance outlives a DriverCore, as the kernel's namespaces outlive the daemon."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.adopted: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.fail_create = False

    def create(self, name: str) -> str:
        self.calls.append(("create", name))
        if self.fail_create:
            raise PlumbingFailed(f"create {name}")
        path = f"/run/netns/{name}"
        if path in self.live:
            raise Conflict(f"namespace {name} exists")
        self.live.add(path)
        return path

    def remove(self, name: str) -> None:
        self.calls.append(("remove", name))
        self.live.discard(f"/run/netns/{name}")

    def exists(self, path: str) -> bool:
        return path in self.live or path in self.adopted
