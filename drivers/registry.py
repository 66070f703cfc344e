"""Which driver serves which kind of network: the drivers a daemon starts with."""

from __future__ import annotations

from ipaddress import IPv4Address

from drivers.base import NetworkDriver
from drivers.bridge import BridgeDriver
from drivers.cni import CniDriver
from drivers.host import HostDriver
from drivers.ipvlan import IpvlanDriver
from drivers.macvlan import MacvlanDriver
from drivers.model import Driver
from drivers.null import NullDriver
from drivers.overlay import OverlayDriver


def default_drivers(advertise: IPv4Address | None = None) -> dict[Driver, NetworkDriver]:
    """The drivers, keyed by kind. Whether the kernel supports each is asked per call
    (check_supported), so an ipvlan-less kernel still lists ipvlan and says why it cannot.
    `advertise` is this host's underlay address, the VTEP of its overlay networks."""
    drivers: tuple[NetworkDriver, ...] = (
        BridgeDriver(),
        HostDriver(),
        NullDriver(),
        MacvlanDriver(),
        IpvlanDriver(),
        OverlayDriver(advertise),
        CniDriver(),
    )
    return {driver.kind: driver for driver in drivers}
