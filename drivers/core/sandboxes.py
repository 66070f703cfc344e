"""Sandboxes: a container's namespace (made by netdns, adopted, or the host's) and its first
endpoint; removal leaves every network and removes what netdns made."""

from __future__ import annotations

import logging
from dataclasses import replace

from drivers import validation
from drivers.core.core_base import best_effort, unused_id
from drivers.core.endpoints import Endpoints
from drivers.core.specs import Attachment, SandboxSpec
from drivers.errors import Conflict, Invalid, NotFound
from drivers.local_store import Intent, State
from drivers.model import (
    Driver,
    Endpoint,
    EndpointAttached,
    EndpointDetached,
    Event,
    Sandbox,
    SandboxCreated,
    SandboxRemoved,
)

log = logging.getLogger(__name__)


class Sandboxes(Endpoints):
    def create_sandbox(self, spec: SandboxSpec) -> Sandbox:
        """Make (or adopt) the sandbox's namespace and connect it to spec.network ("none": no
        endpoint; "host": the host's namespace, no namespace of its own)."""
        with self._lock:
            validation.check_container_name(spec.name)
            for other in self._state.sandboxes.values():
                if other.name == spec.name:
                    raise Conflict(
                        f"container name {spec.name!r} is already in use by container "
                        f"{other.id[:12]}: remove it or pick another name"
                    )
            hostname = validation.check_hostname(spec.hostname) if spec.hostname else spec.name
            sandbox = Sandbox(
                id=unused_id(self._state.sandboxes),
                name=spec.name,
                hostname=hostname,
                dns_servers=validation.check_dns_servers(spec.dns),
                dns_search=validation.check_dns_search(spec.dns_search),
                dns_options=validation.check_dns_options(spec.dns_options),
            )
            network = self.network(spec.network)
            on_host = network.driver is Driver.HOST
            on_none = network.driver is Driver.NULL
            if spec.netns:
                self._check_netns(spec.netns, on_host=on_host)
            if on_host or on_none:
                if spec.aliases or spec.ip or spec.ip6:
                    raise Invalid(
                        f"--network-alias, --ip and --ip6 need a user-defined network, not "
                        f"{network.name!r}"
                    )
                # host: an endpoint without addresses (`network inspect host` lists it);
                # none: no endpoint at all.
                attachment = Attachment(network) if on_host else None
            else:
                attachment = self._check_attach(network, sandbox, spec.aliases, spec.ip, spec.ip6)

            with self._transaction() as txn:
                # Addresses first: they can still be refused (in use, pool full) and are the
                # cheapest to give back.
                endpoint = None
                if attachment is not None:
                    endpoint = self._allocate(attachment, sandbox, txn)
                txn.begin(
                    Intent(
                        "container create",
                        sandboxes=(replace(sandbox, netns=spec.netns),),
                        endpoints=(endpoint,) if endpoint is not None else (),
                        netns=() if spec.netns or on_host else ((sandbox.id, spec.name),),
                    )
                )
                made = None
                if spec.netns:
                    sandbox = replace(sandbox, netns=spec.netns)
                elif not on_host:
                    path = self._namespaces.create(spec.name)
                    made, sandbox = spec.name, replace(sandbox, netns=path)
                    txn.on_undo(
                        f"remove namespace {path}", lambda: self._namespaces.remove(spec.name)
                    )
                if endpoint is not None:
                    endpoint = self._join(network, endpoint, sandbox, txn)
                state = self._state.copy()
                state.sandboxes[sandbox.id] = sandbox
                if made is not None:
                    state.made_netns[sandbox.id] = made
                if endpoint is not None:
                    state.endpoints[endpoint.id] = endpoint
                txn.save(state)
                self._state = state
                log.info(
                    "container %s (%s) created in %s", sandbox.name, sandbox.id[:12], network.name
                )
                events: list[Event] = [SandboxCreated(sandbox)]
                if endpoint is not None:
                    events.append(EndpointAttached(endpoint))
                self._emit(events)
            if endpoint is not None:
                self._publish([endpoint])
            if self._routes_vips(network.id):
                self._route_vips_in(sandbox)
            return sandbox

    def _check_netns(self, netns: str, *, on_host: bool) -> None:
        if on_host:
            raise Invalid(
                "--netns and --network host exclude each other: a host container uses "
                "the host's namespace"
            )
        if not netns.startswith("/"):
            raise Invalid(
                f"--netns {netns!r} is not an absolute path: pass /proc/PID/ns/net "
                "or a bind-mounted namespace"
            )
        if not self._namespaces.exists(netns):
            raise NotFound(
                f"--netns {netns} is not a network namespace (missing, or its process has exited)"
            )

    def remove_sandbox(self, ref: str) -> Sandbox:
        """Disconnect everything (newest first) and remove the namespace netdns made.

        Removal goes on past plumbing errors (logged): the namespace's end takes its
        interfaces with it, and a container that cannot be removed helps no one. Only a
        failed save leaves it in the state (the next start forgets it if its namespace is gone).
        """
        with self._lock:
            sandbox = self.sandbox(ref)
            self._refuse_task(sandbox, "removed")
            state = self._state.copy()
            adopted = sandbox.id not in state.made_netns
            made = state.made_netns.get(sandbox.id)
            intent = Intent(
                "container rm",
                removing=True,
                sandboxes=(sandbox,),
                endpoints=tuple(self.endpoints(sandbox_id=sandbox.id)),
                netns=((sandbox.id, made),) if made is not None else (),
            )
            # The intent ends only after the events: a kill before the listeners heard of the
            # removal leaves it, so the next start tells them (and they remove the
            # namespace's resolv.conf).
            with self._transaction(intent) as txn:
                detached = self._dismantle(state, sandbox)
                txn.save(state)
                self._release(detached)
                self._state = state
                log.info("container %s (%s) removed", sandbox.name, sandbox.id[:12])
                self._emit([*(EndpointDetached(e) for e in detached), SandboxRemoved(sandbox)])
                if adopted and any(self._routes_vips(e.network_id) for e in detached):
                    # The namespace lives on with its runtime: take our VIP table out of it.
                    best_effort(
                        f"remove VIP routes of {sandbox.name}",
                        self._vip_routes.apply, sandbox.netns, (),
                    )  # fmt: skip
            return sandbox

    def _dismantle(self, state: State, sandbox: Sandbox) -> list[Endpoint]:
        """Take the sandbox out of `state`: leave every network (newest first) and remove the
        namespace netdns made, going on past plumbing errors (logged). Returns the endpoints
        it had; their addresses are still held (see _release)."""
        detached = [e for e in state.endpoints.values() if e.sandbox_id == sandbox.id]
        detached.reverse()
        for endpoint in detached:
            network = state.networks[endpoint.network_id]
            driver = self._driver(network.driver)
            if driver is not None:
                best_effort(
                    f"leave {network.name} for {sandbox.name}",
                    driver.leave, network, endpoint, sandbox,
                )  # fmt: skip
            del state.endpoints[endpoint.id]
        made = state.made_netns.pop(sandbox.id, None)
        if made is not None:
            best_effort(f"remove namespace {made}", self._namespaces.remove, made)
        del state.sandboxes[sandbox.id]
        return detached
