"""Which driver serves which kind of network: the drivers a daemon starts with."""

from __future__ import annotations

from drivers.base import NetworkDriver
from drivers.bridge import BridgeDriver
from drivers.host import HostDriver
from drivers.ipvlan import IpvlanDriver
from drivers.macvlan import MacvlanDriver
from drivers.model import Driver
from drivers.null import NullDriver


def default_drivers() -> dict[Driver, NetworkDriver]:
    """The local drivers, keyed by kind. Whether the kernel supports each is asked per call
    (check_supported), so an ipvlan-less kernel still lists ipvlan and says why it cannot."""
    drivers: tuple[NetworkDriver, ...] = (
        BridgeDriver(),
        HostDriver(),
        NullDriver(),
        MacvlanDriver(),
        IpvlanDriver(),
    )
    return {driver.kind: driver for driver in drivers}
