"""`netdns demo`: Docker's "networking with standalone containers" tutorial, played live.

It makes the tutorial's network and four containers through the admin API, then asks real
glibc (`getent hosts`, run with `ip netns exec` inside each container's namespace) which names
each container resolves: alpine1, alpine2 and alpine4 share alpine-net and see each other;
alpine3, on the default bridge only, is seen by no one (R1). It disconnects alpine2 live and
connects it back (R18). Each step prints the CLI command that does the same by hand. Whatever
happens (a failure, Ctrl-C), everything the demo made is removed before it returns.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TextIO

from netdns.client import Client, ClientError

NETWORK = "alpine-net"
CONTAINERS = ("alpine1", "alpine2", "alpine3", "alpine4")
GETENT_TIMEOUT = 4.0  # seconds; a name that is not local may wait on a slow upstream


# How the demo asks a container for a name: (container, name) -> first address or "".
Getent = Callable[[str, str], str]


@dataclass
class Demo:
    client: Client
    out: TextIO
    getent: Getent
    made: list[tuple[str, str]] = field(default_factory=list)  # ("network"|"container", name)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def step(self, title: str, command: str) -> None:
        self.say()
        self.say(f"# {title}")
        self.say(f"$ netdns {command}")

    # -- the tutorial's operations ------------------------------------------------------------

    def create_network(self, name: str) -> None:
        self.step(
            "a user-defined bridge network: containers on it resolve each other",
            f"network create {name}",
        )
        created = self.client.create_network(name=name)
        self.made.append(("network", name))
        self.say(created["Id"])

    def create_container(self, name: str, network: str) -> None:
        where = "the default bridge (no embedded DNS)" if network == "bridge" else network
        flags = "" if network == "bridge" else f" --network {network}"
        self.step(f"container {name} on {where}", f"container create --name {name}{flags}")
        created = self.client.create_container(name=name, network=network)
        self.made.append(("container", name))
        self.say(created["Id"])

    def connect(self, network: str, container: str, title: str = "") -> None:
        title = title or f"connect {container} to {network} as well"
        self.step(title, f"network connect {network} {container}")
        self.client.connect(network, container)

    def disconnect(self, network: str, container: str) -> None:
        self.step(
            f"disconnect {container} from {network}", f"network disconnect {network} {container}"
        )
        self.client.disconnect(network, container)

    def show_addresses(self) -> None:
        self.step("who is where", "container ls")
        rows = [["CONTAINER", "NETWORK", "IP ADDRESS"]]
        for name in CONTAINERS:
            settings = self.client.container(name)["NetworkSettings"]["Networks"]
            rows += [[name, net, s["IPAddress"]] for net, s in settings.items()]
        self._table(rows)

    def show_resolution(self, sources: tuple[str, ...], targets: tuple[str, ...]) -> None:
        """A table: for each source container, the address glibc gets for each target name."""
        self.say("  (`netdns exec SRC -- getent hosts NAME` in each container; - : not resolved)")
        pairs = [(src, name) for src in sources for name in targets]
        with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
            answers = dict(zip(pairs, pool.map(lambda p: self.getent(*p), pairs), strict=True))
        rows = [["FROM \\ NAME", *targets]]
        rows += [[src, *(answers[src, name] or "-" for name in targets)] for src in sources]
        self._table(rows)

    def cleanup(self) -> None:
        if not self.made:
            return
        self.say()
        self.say("# clean up: remove what the demo made")
        for kind, name in reversed(self.made):
            self.say(f"$ netdns {kind} rm {name}")
            try:
                if kind == "container":
                    self.client.remove_container(name)
                else:
                    self.client.remove_network(name)
            except ClientError as exc:
                self.say(f"  could not remove {kind} {name}: {exc.message}")
        self.made.clear()

    def _table(self, rows: list[list[str]]) -> None:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.say(
                "  " + "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )


def getent(container: str, name: str) -> str:
    """The first address `getent hosts NAME` prints inside CONTAINER's named namespace, or ""."""
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", container, "getent", "hosts", name],
            capture_output=True,
            text=True,
            timeout=GETENT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return ""
    fields = done.stdout.split()
    return fields[0] if done.returncode == 0 and fields else ""


def _exists(client: Client, fetch: str, name: str) -> bool:
    try:
        getattr(client, fetch)(name)
    except ClientError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def run_demo(client: Client, out: TextIO = sys.stdout, *, resolve_in: Getent | None = None) -> int:
    """Play the tutorial against the daemon behind `client`; 0 when it ran through.
    `resolve_in` replaces the real getent (tests without namespaces)."""
    demo = Demo(client, out, resolve_in or getent)
    try:
        if _exists(client, "network", NETWORK):
            demo.say(
                f"netdns demo: network {NETWORK!r} already exists (an earlier demo, or yours); "
                f"the demo makes its own: remove it first (netdns network rm {NETWORK}, after "
                "removing its containers) and run the demo again"
            )
            return 1
        taken = [name for name in CONTAINERS if _exists(client, "container", name)]
        if taken:
            demo.say(
                f"netdns demo: container(s) {', '.join(taken)} already exist; remove them "
                f"(netdns container rm {' '.join(taken)}) and run the demo again"
            )
            return 1
        return _play(demo)
    except ClientError as exc:
        demo.say(f"netdns demo: {exc.message}")
        return 1
    finally:
        demo.cleanup()


def _play(demo: Demo) -> int:
    demo.say("Docker's tutorial 'Networking with standalone containers', with netdns.")
    demo.create_network(NETWORK)
    demo.create_container("alpine1", NETWORK)
    demo.create_container("alpine2", NETWORK)
    demo.create_container("alpine3", "bridge")
    demo.create_container("alpine4", NETWORK)
    demo.connect("bridge", "alpine4")
    demo.show_addresses()

    demo.step(
        "which names each container resolves: on alpine-net by name; alpine3 (default bridge "
        "only) by no one, and it resolves no one",
        "exec alpine1 -- getent hosts alpine2   (and so on for each pair)",
    )
    demo.show_resolution(CONTAINERS, CONTAINERS)

    demo.step("why: the rule behind an answer", "resolve --from alpine1 alpine2")
    explained = demo.client.resolve("alpine2", source="alpine1")
    answers = ", ".join(" ".join(rr.split()) for rr in explained["answers"])
    demo.say(
        f"  {explained['rcode']} {answers or '(no records)'}; "
        f"rule {explained['rule']} on {explained.get('network') or '-'}, path {explained['path']}"
    )

    demo.disconnect(NETWORK, "alpine2")
    demo.say("  alpine2 left alpine-net: alpine1 no longer resolves it, at once (R18)")
    demo.show_resolution(("alpine1",), ("alpine2",))
    demo.connect(NETWORK, "alpine2", f"connect alpine2 back to {NETWORK}")
    demo.say("  alpine2 is back on alpine-net (a new address, maybe): alpine1 resolves it again")
    demo.show_resolution(("alpine1",), ("alpine2",))
    return 0
