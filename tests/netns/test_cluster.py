"""Overlay networks and services across hosts (issue 5), end to end: three hosts in their own
namespaces on one underlay bridge, a real etcd, a real `netdns daemon` per host
(bench/labs/cluster.py), real glibc getent, dig and ping inside the containers.

Every wait is a bounded poll that fails with the last value it saw.
`NETDNS_CLUSTER_ATTACHES` sets the containers per host of the concurrent-attach test (default
60; the issue's run is 300).
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.labs.cluster import ClusterHost, ClusterLab, cluster_lab, wait_for
from bench.labs.etcd import etcd_available
from netdns.client import ClientError

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates namespaces and daemons"),
    pytest.mark.skipif(
        not etcd_available(), reason="needs etcd (/usr/bin/etcd, Debian's etcd-server)"
    ),
    pytest.mark.skipif(shutil.which("nsenter") is None, reason="needs nsenter (util-linux)"),
    pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils)"),
]

ATTACHES = int(os.environ.get("NETDNS_CLUSTER_ATTACHES", "60"))


# -- helpers ---------------------------------------------------------------------------------


def random_subnet(prefix: int = 24) -> ipaddress.IPv4Network:
    """A 10.X.Y.0/PREFIX; it lives only inside the lab's host namespaces."""
    base = ipaddress.IPv4Address(f"10.{random.randint(1, 254)}.{random.randint(0, 255)}.0")
    return ipaddress.IPv4Network(f"{base}/{prefix}", strict=False)


def overlay(lab: ClusterLab, name: str = "ov", prefix: int = 24) -> ipaddress.IPv4Network:
    """An attachable overlay network made on host1 only; returns once every host has it."""
    subnet = random_subnet(prefix)
    lab.host(1).daemon.network(name, "--driver", "overlay", "--attachable", "--subnet", str(subnet))
    for host in lab.hosts[1:]:
        wait_for(
            f"{host.name} learns overlay network {name}",
            lambda h=host: h.daemon.cli("network", "inspect", name, check=False).returncode,
            lambda rc: rc == 0,
        )
    return subnet


def container(lab: ClusterLab, host: ClusterHost, network: str = "ov", prefix: str = "a") -> str:
    name = lab.name(prefix)
    host.daemon.container(name, "--network", network)
    return name


def address(host: ClusterHost, name: str, network: str = "ov") -> str:
    (found,) = host.daemon.json("container", "inspect", name)  # type: ignore[misc]
    return str(found["NetworkSettings"]["Networks"][network]["IPAddress"])


def getent(host: ClusterHost, container: str, name: str) -> str | None:
    return host.daemon.getent(container, name)


def short(host: ClusterHost, container: str, name: str) -> list[str]:
    """`dig +short NAME` from CONTAINER: the A records, sorted; [] on any failure."""
    done = host.daemon.dig(container, "+short", name)
    if done.returncode != 0:
        return []
    lines = done.stdout.split()
    return sorted(line for line in lines if line[:1].isdigit() and line.count(".") == 3)


def vip_of(host: ClusterHost, service: str) -> str:
    (found,) = host.daemon.json("service", "inspect", service)  # type: ignore[misc]
    (vip,) = found["Endpoint"]["VirtualIPs"]
    return str(vip["Addr"]).split("/")[0]


def local_tasks(host: ClusterHost, service: str) -> dict[str, str]:
    """Task name -> address of the tasks of SERVICE that run on HOST."""
    (found,) = host.daemon.json("service", "inspect", service)  # type: ignore[misc]
    return {
        t["Name"]: t["NetworksAttachments"][0]["Addresses"][0].split("/")[0] for t in found["Tasks"]
    }


def network_view(host: ClusterHost, network: str = "ov") -> dict[str, str]:
    """Container name -> IPv4 address, as HOST's `network inspect` lists them."""
    (found,) = host.daemon.json("network", "inspect", network)  # type: ignore[misc]
    return {c["Name"]: c["IPv4Address"].split("/")[0] for c in found["Containers"].values()}


# -- 1. names and traffic across hosts ---------------------------------------------------------


@pytest.mark.timeout(120)
def test_overlay_containers_on_three_hosts_resolve_each_other_and_ping(tmp_path: Path) -> None:
    with cluster_lab(tmp_path, hosts=3) as lab:
        overlay(lab)
        names = [container(lab, host) for host in lab.hosts]
        addresses = {n: address(h, n) for h, n in zip(lab.hosts, names, strict=True)}
        assert len(set(addresses.values())) == 3, addresses
        for host, own in zip(lab.hosts, names, strict=True):
            for other in names:
                wait_for(
                    f"getent hosts {other} in {own} on {host.name}",
                    lambda h=host, c=own, n=other: getent(h, c, n),
                    lambda got, n=other: got == addresses[n],
                )
        # Over VXLAN, both ways, between every pair of hosts.
        for (host, own), other in zip(
            zip(lab.hosts, names, strict=True), [names[2], names[0], names[1]], strict=True
        ):
            wait_for(
                f"ping from {own} on {host.name} to {other} ({addresses[other]})",
                lambda h=host, c=own, a=addresses[other]: _ping(h, c, a),
                lambda out: out == "",
            )


def _ping(host: ClusterHost, container: str, target: str) -> str:
    """'' when one ping from CONTAINER reaches TARGET, else what ping said."""
    done = host.daemon.netns_exec(container, "ping", "-c1", "-W2", target)
    return "" if done.returncode == 0 else (done.stdout + done.stderr).strip()[-300:]


# -- 2. services placed over hosts -------------------------------------------------------------


@pytest.mark.timeout(150)
def test_service_tasks_and_vip_resolve_on_every_host_through_scaling(tmp_path: Path) -> None:
    with cluster_lab(tmp_path, hosts=3) as lab:
        overlay(lab)
        clients = [container(lab, host) for host in lab.hosts]
        web = lab.name("web")
        lab.service(lab.host(1), web, "--network", "ov", "--replicas", "6")
        vip = vip_of(lab.host(1), web)

        def tasks_everywhere(count: int) -> None:
            # The union of what each host runs is what every host answers for tasks.web.
            running: dict[str, str] = {}
            per_host = {}
            for host in lab.hosts:
                here = wait_for(
                    f"{host.name} runs its share of {count} tasks of {web}",
                    lambda h=host: local_tasks(h, web),
                    lambda t: len(t) in (count // 3, -(-count // 3)),
                )
                per_host[host.name] = len(here)
                running |= here
            assert sum(per_host.values()) == count, per_host
            want = sorted(running.values())
            for host, client in zip(lab.hosts, clients, strict=True):
                wait_for(
                    f"tasks.{web} from {client} on {host.name} ({count} tasks)",
                    lambda h=host, c=client: short(h, c, f"tasks.{web}"),
                    lambda got: got == want,
                )
                wait_for(
                    f"{web} (the VIP) from {client} on {host.name}",
                    lambda h=host, c=client: short(h, c, web),
                    lambda got: got == [vip],
                )

        tasks_everywhere(6)
        lab.host(1).daemon.cli("service", "scale", f"{web}=2")
        tasks_everywhere(2)
        lab.host(1).daemon.cli("service", "scale", f"{web}=6")
        tasks_everywhere(6)
        # Each host reports the same VIP for the service.
        assert {vip_of(h, web) for h in lab.hosts} == {vip}


@pytest.mark.timeout(120)
def test_dnsrr_service_name_gives_every_task_address_on_every_host(tmp_path: Path) -> None:
    with cluster_lab(tmp_path, hosts=3) as lab:
        overlay(lab)
        clients = [container(lab, host) for host in lab.hosts]
        web2 = lab.name("web2")
        lab.service(
            lab.host(1), web2, "--network", "ov", "--replicas", "3", "--endpoint-mode", "dnsrr"
        )
        running: dict[str, str] = {}
        for host in lab.hosts:
            running |= wait_for(
                f"{host.name} runs one task of {web2}",
                lambda h=host: local_tasks(h, web2),
                lambda t: len(t) == 1,
            )
        want = sorted(running.values())
        for host, client in zip(lab.hosts, clients, strict=True):
            for name in (web2, f"tasks.{web2}"):
                wait_for(
                    f"{name} from {client} on {host.name}",
                    lambda h=host, c=client, n=name: short(h, c, n),
                    lambda got: got == want,
                )


# -- 3. a host's daemon dies: its lease runs out, and it comes back ------------------------------

LEASE_TTL = 4


@pytest.mark.timeout(150)
def test_killed_daemon_leaves_answers_within_lease_and_returns_with_same_addresses(
    tmp_path: Path,
) -> None:
    with cluster_lab(tmp_path, hosts=3, lease_ttl=LEASE_TTL) as lab:
        overlay(lab)
        names = [container(lab, host) for host in lab.hosts]
        addresses = {n: address(h, n) for h, n in zip(lab.hosts, names, strict=True)}
        svc = lab.name("svc")
        lab.service(lab.host(1), svc, "--network", "ov", "--replicas", "3")
        on3 = wait_for(
            f"host3 runs one task of {svc}",
            lambda: local_tasks(lab.host(3), svc),
            lambda t: len(t) == 1,
        )
        all_tasks: dict[str, str] = dict(on3)
        for host in lab.hosts[:2]:
            all_tasks |= local_tasks(host, svc)
        everyone = sorted(all_tasks.values())
        survivors = list(zip(lab.hosts[:2], names[:2], strict=True))
        for host, client in survivors:
            wait_for(
                f"{names[2]} from {client} on {host.name}",
                lambda h=host, c=client: getent(h, c, names[2]),
                lambda got: got == addresses[names[2]],
            )
            wait_for(
                f"tasks.{svc} from {client} on {host.name}",
                lambda h=host, c=client: short(h, c, f"tasks.{svc}"),
                lambda got: got == everyone,
            )

        lab.kill(lab.host(3))
        killed = time.monotonic()
        without = sorted(set(everyone) - set(on3.values()))
        for host, client in survivors:
            wait_for(
                f"{names[2]} (on the killed host3) gone from {client} on {host.name}",
                lambda h=host, c=client: getent(h, c, names[2]),
                lambda got: got is None,
                timeout=max(LEASE_TTL + 6 - (time.monotonic() - killed), 0.5),
            )
            wait_for(
                f"host3's task gone from tasks.{svc} in {client} on {host.name}",
                lambda h=host, c=client: short(h, c, f"tasks.{svc}"),
                lambda got: got == without,
                timeout=max(LEASE_TTL + 6 - (time.monotonic() - killed), 0.5),
            )
            # The survivors still answer for each other.
            assert getent(host, client, names[0]) == addresses[names[0]]
            assert getent(host, client, names[1]) == addresses[names[1]]

        lab.restart(lab.host(3))
        for host, client in survivors:
            wait_for(
                f"{names[2]} back in {client} on {host.name} with its address",
                lambda h=host, c=client: getent(h, c, names[2]),
                lambda got: got == addresses[names[2]],
            )
            wait_for(
                f"tasks.{svc} back to the same 3 addresses in {client} on {host.name}",
                lambda h=host, c=client: short(h, c, f"tasks.{svc}"),
                lambda got: got == everyone,
            )
        assert local_tasks(lab.host(3), svc) == on3
        # Traffic too: the survivors program host3's peers again, and host3 theirs.
        for host, own, target in (
            (lab.host(1), names[0], names[2]),
            (lab.host(3), names[2], names[1]),
        ):
            wait_for(
                f"ping from {own} on {host.name} to {target} after host3's restart",
                lambda h=host, c=own, a=addresses[target]: _ping(h, c, a),
                lambda out: out == "",
            )
        # And host3's own container answers again, for the others too.
        wait_for(
            f"{names[0]} from {names[2]} on the restarted host3",
            lambda: getent(lab.host(3), names[2], names[0]),
            lambda got: got == addresses[names[0]],
        )


@pytest.mark.timeout(120)
def test_daemon_stops_on_sigterm_while_starting_tasks_another_host_placed_on_it(
    tmp_path: Path,
) -> None:
    """SIGTERM lands while the daemon applies another host's change (a new service whose
    tasks it must start, then announce to its listeners): it must still exit, promptly."""
    with cluster_lab(tmp_path, hosts=2) as lab:
        one, two = lab.hosts
        overlay(lab)
        svc = lab.name("svc")
        # Slots alternate over the hosts by name: host2 runs the even ones.
        creator = threading.Thread(
            target=lab.service, args=(one, svc, "--network", "ov", "--replicas", "8")
        )
        creator.start()
        try:
            wait_for(
                f"host2 starts its first task of {svc}",
                lambda: sorted(p.name for p in Path("/run/netns").glob(f"{svc}.2.*")),
                lambda found: bool(found),
                interval=0.01,
            )
            two.daemon.process.send_signal(signal.SIGTERM)
        finally:
            creator.join()
        try:
            code: int | None = two.daemon.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        assert code is not None, (
            "host2's daemon still runs 10 s after SIGTERM, which it got while starting the "
            f"tasks of {svc} that host1 placed on it"
        )
        assert code == 0, f"host2's daemon exited {code}"
        # And it comes back running its share.
        lab.restart(two)
        wait_for(
            f"host2 runs its 4 tasks of {svc} after the restart",
            lambda: len(local_tasks(two, svc)),
            lambda count: count == 4,
        )


# -- 4. etcd goes away and comes back -----------------------------------------------------------


@pytest.mark.timeout(150)
def test_etcd_down_keeps_answers_refuses_cluster_writes_and_converges_after(
    tmp_path: Path,
) -> None:
    with cluster_lab(tmp_path, hosts=3, lease_ttl=LEASE_TTL) as lab:
        overlay(lab)
        # Two containers per host: one asks, the other is the name on the same host.
        pairs = [(container(lab, h), container(lab, h)) for h in lab.hosts]
        addresses = {
            n: address(h, n) for h, pair in zip(lab.hosts, pairs, strict=True) for n in pair
        }

        def answers_hold(what: str, timeout: float = 15) -> None:
            for i, (host, (asker, neighbour)) in enumerate(zip(lab.hosts, pairs, strict=True)):
                remote = pairs[(i + 1) % 3][1]
                for name in (neighbour, remote):
                    wait_for(
                        f"{what}: {name} from {asker} on {host.name}",
                        lambda h=host, c=asker, n=name: getent(h, c, n),
                        lambda got, n=name: got == addresses[n],
                        timeout=timeout,
                    )

        answers_hold("before etcd stops")
        lab.stop_etcd()
        # Longer than the lease: nothing this host knows may expire while etcd is away.
        time.sleep(LEASE_TTL + 2)
        answers_hold("etcd down", timeout=1)
        # The overlay keeps carrying traffic between hosts too.
        assert _ping(lab.host(1), pairs[0][0], addresses[pairs[2][1]]) == ""

        refused = lab.host(2).daemon.cli(
            "network", "create", "--driver", "overlay", "--subnet", str(random_subnet()),
            lab.name("ov"), check=False,
        )  # fmt: skip
        assert refused.returncode != 0, refused.stdout
        message = refused.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert "cluster store" in message.lower(), message

        late = lab.name("late")
        lab.host(3).daemon.made.append(("container", late))
        refused = lab.host(3).daemon.cli(
            "container", "create", "--name", late, "--network", "ov", check=False
        )
        assert refused.returncode != 0, refused.stdout
        message = refused.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert "cluster store" in message.lower(), message
        # Nothing half-made: no container, no namespace.
        gone = lab.host(3).daemon.cli("container", "inspect", late, check=False)
        assert gone.returncode != 0, gone.stdout
        assert not Path(f"/run/netns/{late}").exists()

        lab.start_etcd()
        # While the hosts reconnect and their leases are taken back, no remote name may blink
        # out of the answers (etcd kept the keys and the leases).
        asker, remote = pairs[0][0], pairs[2][1]
        blinks = []
        until = time.monotonic() + LEASE_TTL + 2
        while time.monotonic() < until:
            got = getent(lab.host(1), asker, remote)
            if got != addresses[remote]:
                blinks.append(f"{time.monotonic() - until + LEASE_TTL + 2:.1f} s: {got}")
            time.sleep(0.2)
        assert not blinks, (
            f"{remote} (host3) missing from {asker} on host1 after etcd returned: {blinks}"
        )
        newcomer = wait_for(
            "a container on the overlay on host2 after etcd is back",
            lambda: _try_create(lab, lab.host(2)),
            lambda got: got is not None,
        )
        assert newcomer is not None
        addresses[newcomer] = address(lab.host(2), newcomer)
        assert len(set(addresses.values())) == len(addresses), addresses
        for host, (asker, _) in zip(lab.hosts, pairs, strict=True):
            wait_for(
                f"{newcomer} (host2, made after etcd came back) from {asker} on {host.name}",
                lambda h=host, c=asker: getent(h, c, newcomer),
                lambda got: got == addresses[newcomer],
            )
        answers_hold("after etcd is back")
        wait_for(
            f"ping from {pairs[2][0]} on host3 to {newcomer} on host2",
            lambda: _ping(lab.host(3), pairs[2][0], addresses[newcomer]),
            lambda out: out == "",
        )


def _try_create(lab: ClusterLab, host: ClusterHost) -> str | None:
    """A new container on `ov` on HOST, or None while the daemon still refuses it."""
    name = lab.name("new")
    host.daemon.made.append(("container", name))
    done = host.daemon.cli("container", "create", "--name", name, "--network", "ov", check=False)
    return name if done.returncode == 0 else None


# -- 5. many attaches at once on every host ------------------------------------------------------


@pytest.mark.timeout(150 if ATTACHES <= 60 else 900)
def test_concurrent_attaches_on_three_hosts_give_unique_addresses_seen_everywhere(
    tmp_path: Path,
) -> None:
    with cluster_lab(tmp_path, hosts=3) as lab:
        overlay(lab, prefix=22)
        errors: list[str] = []
        made: dict[str, list[str]] = {h.name: [] for h in lab.hosts}

        def attach(host: ClusterHost) -> None:
            client = host.client
            for _ in range(ATTACHES):
                name = lab.name(f"p{host.index}")
                host.daemon.made.append(("container", name))
                try:
                    client.create_container(name=name, network="ov")
                except ClientError as exc:
                    errors.append(f"{host.name} {name}: {exc.message}")
                    continue
                made[host.name].append(name)

        threads = [threading.Thread(target=attach, args=(h,)) for h in lab.hosts]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.monotonic() - started
        print(f"3 x {ATTACHES} concurrent attaches took {took:.1f} s")
        assert not errors, errors[:10]

        # Each container's address as its own host has it: no address twice.
        owned: dict[str, str] = {}
        for host in lab.hosts:
            view = network_view(host)
            for name in made[host.name]:
                owned[name] = view[name]
        twice = {a: n for a, n in Counter(owned.values()).items() if n > 1}
        assert not twice, f"addresses given more than once: {twice}"
        assert len(owned) == 3 * ATTACHES

        # Each host applies the others' endpoints one at a time, each peer add costing a dump
        # of the VXLAN device's neighbours: big runs lag (3 x 300 took 29 s more on 2 cores).
        for host in lab.hosts:
            wait_for(
                f"{host.name}'s view of ov lists all {3 * ATTACHES} containers",
                lambda h=host: _missing_or_wrong(network_view(h), owned),
                lambda diff: diff == {},
                timeout=max(30.0, ATTACHES * 0.2),
            )
        print(f"every host's view complete {time.monotonic() - started - took:.1f} s later")


def _missing_or_wrong(view: dict[str, str], owned: dict[str, str]) -> dict[str, object]:
    """Where VIEW differs from OWNED (kept small for the failure message)."""
    diff: dict[str, object] = {}
    for name, want in owned.items():
        if view.get(name) != want:
            diff[name] = view.get(name)
    return dict(list(diff.items())[:10]) | ({"...": len(diff)} if len(diff) > 10 else {})
