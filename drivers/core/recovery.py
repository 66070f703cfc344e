"""Start-up: settling the change a crash cut short, forgetting what vanished with a reboot, and
the address pools rebuilt from the stored state. Functions of the state, the drivers and the
namespaces; DriverCore.start runs them in order."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from drivers.base import NetworkDriver
from drivers.core.core_base import best_effort
from drivers.core.specs import Namespaces
from drivers.errors import Conflict, Invalid
from drivers.ipam import Ipam
from drivers.local_store import Intent, State
from drivers.model import Driver, Sandbox

log = logging.getLogger(__name__)


def settle(
    state: State,
    intent: Intent,
    drivers: Mapping[Driver, NetworkDriver],
    namespaces: Namespaces,
) -> tuple[bool, list[Sandbox]]:
    """Settle the change a crash cut short (see local_store.Intent): finish a removal the
    state still holds, then take out of the kernel whatever of the intent the state does not
    hold. Returns whether `state` changed and the intent's sandboxes that are gone.

    Why an intent rather than a scan for our link and namespace names: namespaces are named
    after containers, and other daemons (other --root) and tools share the host's names, so
    only a record of what this daemon was doing tells its leftovers apart."""
    log.warning(
        "the daemon stopped during %r; %s it", intent.op,
        "finishing" if intent.removing else "rolling back what the state does not hold of",
    )  # fmt: skip
    changed = False
    if intent.removing:
        for endpoint in intent.endpoints:
            changed |= state.endpoints.pop(endpoint.id, None) is not None
        for sandbox in intent.sandboxes:
            changed |= state.sandboxes.pop(sandbox.id, None) is not None
            state.made_netns.pop(sandbox.id, None)
        for network in intent.networks:
            in_use = any(e.network_id == network.id for e in state.endpoints.values())
            if network.id in state.networks and not in_use:
                del state.networks[network.id]
                changed = True
    networks = {n.id: n for n in intent.networks} | state.networks
    sandboxes = {s.id: s for s in intent.sandboxes} | state.sandboxes
    for endpoint in intent.endpoints:
        network = networks.get(endpoint.network_id)
        sandbox = sandboxes.get(endpoint.sandbox_id)
        if endpoint.id in state.endpoints or network is None or sandbox is None:
            continue
        driver = drivers.get(network.driver)
        if driver is not None:
            best_effort(
                f"remove the interface of {endpoint.name} on {network.name}",
                driver.leave, network, endpoint, sandbox,
            )  # fmt: skip
    kept = set(state.made_netns.values())
    for sandbox_id, name in intent.netns:
        if sandbox_id not in state.sandboxes and name not in kept:
            best_effort(f"remove namespace {name}", namespaces.remove, name)
    for network in intent.networks:
        driver = drivers.get(network.driver)
        if network.id not in state.networks and driver is not None:
            best_effort(f"remove network {network.name}", driver.remove_network, network)
    gone = [s for s in intent.sandboxes if s.id not in state.sandboxes]
    return changed, gone


def prune_vanished(state: State, namespaces: Namespaces) -> bool:
    """Drop sandboxes whose namespace is gone (a reboot, or the adopted process exited):
    their interfaces went with it; and endpoints left without their sandbox or network.
    Returns whether anything was dropped."""
    gone = [s for s in state.sandboxes.values() if s.netns and not namespaces.exists(s.netns)]
    for sandbox in gone:
        log.warning(
            "container %s: namespace %s no longer exists; forgetting the container",
            sandbox.name,
            sandbox.netns,
        )
        del state.sandboxes[sandbox.id]
        state.made_netns.pop(sandbox.id, None)
    orphans = [
        e
        for e in state.endpoints.values()
        if e.sandbox_id not in state.sandboxes or e.network_id not in state.networks
    ]
    for endpoint in orphans:
        if endpoint.sandbox_id in state.sandboxes:  # the vanished ones were logged above
            log.error("stored endpoint %s has no network; dropping it", endpoint.id[:12])
        del state.endpoints[endpoint.id]
    return bool(gone or orphans)


def stored_pools(state: State) -> Ipam:
    """The address pools with every stored endpoint's and VIP's address taken."""
    ipam = Ipam()
    for network in state.networks.values():
        ipam.add_network(network)
    for endpoint in state.endpoints.values():
        network = state.networks[endpoint.network_id]
        for address in endpoint.addresses:
            try:
                ipam.reserve(network, address, endpoint.name)
            except (Conflict, Invalid) as exc:
                log.error("stored endpoint %s: %s", endpoint.id[:12], exc)
    for service in state.services.values():
        for vip in service.vips:
            try:
                ipam.reserve(state.networks[vip.network_id], vip.address, service.name)
            except (Conflict, Invalid, KeyError) as exc:
                log.error("stored service %s VIP %s: %s", service.name, vip.address, exc)
    return ipam
