"""Crash safety (issue 7): SIGKILL a real daemon during a burst of changes, restart it on the
same --root, and check that what it lists is whole and that nothing it made is left over.

A burst is a seeded random mix of container create/rm, network connect/disconnect and network
create/rm, run as parallel `netdns` CLI calls; the daemon is killed at a seeded moment inside
it. After each restart: every listed container has its namespace, each endpoint its veth in
the network's bridge and its address on the sandbox's interface, no address is held twice,
every name answers from the containers that share a network with it (dig at 127.0.0.11), and
no namespace, bridge, veth or resolv.conf of this test exists that the daemon does not list.
At the end the CLI removes what is listed and nothing of the test is left.

NETDNS_CRASH_SEED=N replays a run (the seed is printed and named in every failure).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import ip_interface
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from bench.labs.daemon import NETDNS, DaemonProcess, start_daemon
from bench.labs.upstreams import Dnsmasq, free_loopback_address
from drivers.local_store import INTENT_FILE, LOCK_FILE
from drivers.namespaces import NETNS_RUN_DIR, is_network_namespace
from tests.netns.conftest import Lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and links")

ETC_NETNS = Path("/etc/netns")
ROUNDS = 3
OPS_PER_ROUND = 11
PARALLEL = 4
CONTAINERS = 6  # names in the pool
NETWORKS = 3
BRIDGE_OPTION = "com.docker.network.bridge.name"


@dataclass
class Run:
    """One test's daemon, names and findings."""

    lab: Lab
    root: Path
    upstream: str
    seed: int
    rng: random.Random
    daemon: DaemonProcess | None = None
    subnets: dict[str, str] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    # every endpoint id any inspect showed: how a leftover veth is told to be ours
    seen_ids: set[str] = field(default_factory=set)

    @property
    def tag(self) -> str:
        return f"nd{self.lab.tag}"

    def container(self, i: int) -> str:
        return f"{self.tag}c{i}"

    def network(self, i: int) -> str:
        return f"{self.tag}n{i}"

    def bridge(self, network: str) -> str:
        return f"{self.tag}b{network[-1]}"  # network names end in their one-digit number

    def say(self, text: str) -> None:
        line = f"[seed {self.seed}] {text}"
        self.findings.append(line)
        print(line)

    def fail(self, text: str) -> None:
        raise AssertionError(
            f"seed {self.seed} (replay: NETDNS_CRASH_SEED={self.seed}): {text}\n"
            + "\n".join(self.findings[-30:])
        )

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        assert self.daemon is not None
        try:
            return self.daemon.cli(*args, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "timed out")

    def start(self) -> None:
        self.daemon = start_daemon(self.root, self.upstream, bridge=f"{self.tag}d")


# -- the burst ------------------------------------------------------------------------------


@dataclass
class Plan:
    """What the burst expects to exist, so most calls it picks can succeed (calls run in
    parallel and a kill cuts them, so some fail anyway; a failure is not what is tested)."""

    networks: set[str]
    attached: dict[str, set[str]]  # container -> networks


def pick_op(run: Run, plan: Plan) -> list[str]:
    rng = run.rng
    free_c = [run.container(i) for i in range(CONTAINERS) if run.container(i) not in plan.attached]
    free_n = [n for n in range_networks(run) if n not in plan.networks]
    nets = sorted(plan.networks)
    choices: list[tuple[int, str]] = []
    if free_c and nets:
        choices.append((30, "create"))
    if plan.attached:
        choices += [(18, "rm"), (22, "connect"), (15, "disconnect")]
    if free_n:
        choices.append((9, "net-create"))
    unused = [n for n in nets if not any(n in a for a in plan.attached.values())]
    if unused:
        choices.append((6, "net-rm"))
    kind = rng.choices([k for _, k in choices], weights=[w for w, _ in choices])[0]
    if kind == "create":
        c, n = rng.choice(free_c), rng.choice(nets)
        plan.attached[c] = {n}
        return ["container", "create", "--name", c, "--network", n]
    if kind == "net-create":
        n = rng.choice(free_n)
        plan.networks.add(n)
        return ["network", "create", *network_args(run, n), n]
    if kind == "net-rm":
        n = rng.choice(unused)
        plan.networks.discard(n)
        return ["network", "rm", n]
    c = rng.choice(sorted(plan.attached))
    if kind == "rm" or not plan.attached[c]:
        del plan.attached[c]
        return ["container", "rm", c]
    if kind == "connect" and set(nets) - plan.attached[c]:
        n = rng.choice(sorted(set(nets) - plan.attached[c]))
        plan.attached[c].add(n)
        return ["network", "connect", n, c]
    n = rng.choice(sorted(plan.attached[c]))
    plan.attached[c].discard(n)
    return ["network", "disconnect", n, c]


def network_args(run: Run, network: str) -> list[str]:
    return ["--subnet", run.subnets[network], "-o", f"{BRIDGE_OPTION}={run.bridge(network)}"]


def burst(run: Run, round_no: int) -> None:
    """OPS_PER_ROUND calls, PARALLEL at a time, and a SIGKILL at a seeded moment among them:
    a seeded delay after a seeded number of calls have come back (a CLI call spends most of
    its time starting Python, so a plain clock would mostly kill between changes)."""
    assert run.daemon is not None
    networks, _, attachments = listed(run)
    plan = Plan(set(networks), {})
    for a in attachments:
        plan.attached.setdefault(a.container, set()).add(a.network)
    ops = [pick_op(run, plan) for _ in range(OPS_PER_ROUND)]
    kill_after_calls = run.rng.randrange(OPS_PER_ROUND // 3, OPS_PER_ROUND - PARALLEL)
    kill_delay = run.rng.uniform(0.0, 0.4)
    process = run.daemon.process
    spans: list[tuple[float, float, list[str], int]] = []
    lock = threading.Lock()
    enough = threading.Event()
    killed_at: list[float] = []
    start = time.monotonic()

    def call(op: list[str]) -> None:
        began = time.monotonic() - start
        done = run.cli(*op)
        with lock:
            spans.append((began, time.monotonic() - start, op, done.returncode))
            if len(spans) >= kill_after_calls:
                enough.set()

    def kill() -> None:
        enough.wait(timeout=60)
        time.sleep(kill_delay)
        if process.poll() is None:
            killed_at.append(time.monotonic() - start)
            process.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(call, ops))
    killer.join(timeout=60)
    process.wait(timeout=10)
    at = killed_at[0] if killed_at else float("nan")
    cut = [" ".join(op[:4]) for began, ended, op, _ in spans if killed_at and began <= at <= ended]
    ok = sum(1 for *_, rc in spans if rc == 0)
    run.say(
        f"round {round_no}: {len(ops)} calls, {ok} succeeded; SIGKILL at {at:.2f} s (after "
        f"{kill_after_calls} calls + {kill_delay:.2f} s) with {len(cut)} in flight: {cut}"
    )


# -- what the kernel holds ------------------------------------------------------------------


def host_links() -> dict[str, dict]:
    """name -> {index, master (name), kind} for every link of the host's namespace."""
    with IPRoute() as ipr:
        raw = ipr.get_links()
    by_index = {link["index"]: link.get_attr("IFLA_IFNAME") for link in raw}
    links = {}
    for link in raw:
        info = link.get_attr("IFLA_LINKINFO")
        links[link.get_attr("IFLA_IFNAME")] = {
            "master": by_index.get(link.get_attr("IFLA_MASTER")),
            "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
        }
    return links


def sandbox_interfaces(path: str) -> dict[str, list[str]]:
    """ifalias (endpoint id) -> its addresses (ip/prefix) inside the namespace at PATH."""
    with IPRoute(netns=path, flags=0) as ipr:
        aliases = {
            link["index"]: link.get_attr("IFLA_IFALIAS")
            for link in ipr.get_links()
            if link.get_attr("IFLA_IFALIAS")
        }
        found: dict[str, list[str]] = {alias: [] for alias in aliases.values()}
        for addr in ipr.get_addr():
            alias = aliases.get(addr["index"])
            if alias:
                found[alias].append(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
    return found


def ours_in_run_netns(run: Run) -> set[str]:
    return {p.name for p in NETNS_RUN_DIR.iterdir() if p.name.startswith(f"{run.tag}c")}


def ours_in_etc_netns(run: Run) -> set[str]:
    if not ETC_NETNS.is_dir():
        return set()
    return {p.name for p in ETC_NETNS.iterdir() if p.name.startswith(f"{run.tag}c")}


# -- the checks after a restart -------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    container: str
    network: str
    endpoint: str
    address: str  # ip/prefix


def listed(run: Run) -> tuple[list[str], dict[str, dict], list[Attachment]]:
    """(our networks, our containers' inspect, their attachments) as the API tells them."""
    networks = [
        n["Name"] for n in run.daemon.json("network", "ls") if n["Name"].startswith(run.tag)
    ]  # type: ignore[union-attr]
    names = [c["Name"] for c in run.daemon.json("container", "ls")]  # type: ignore[union-attr]
    for name in names:
        if not name.startswith(run.tag):
            run.fail(f"container {name!r} listed that this test never made")
    inspected = run.daemon.json("container", "inspect", *names) if names else []  # type: ignore[union-attr]
    containers = {c["Name"].lstrip("/"): c for c in inspected}  # type: ignore[union-attr]
    attachments = []
    for name, c in containers.items():
        for network, ep in c["NetworkSettings"]["Networks"].items():
            run.seen_ids.add(ep["EndpointID"])
            address = f"{ep['IPAddress']}/{ep['IPPrefixLen']}" if ep["IPAddress"] else ""
            attachments.append(Attachment(name, network, ep["EndpointID"], address))
    return networks, containers, attachments


def check_whole(run: Run, round_no: int) -> None:
    networks, containers, attachments = listed(run)
    links = host_links()
    # each container: its namespace; each endpoint: veth in the right bridge, address inside
    for name, c in containers.items():
        path = c["NetworkSettings"]["SandboxKey"]
        if not is_network_namespace(path):
            run.fail(f"round {round_no}: container {name} is listed but {path} is gone")
        inside = sandbox_interfaces(path)
        for a in (a for a in attachments if a.container == name):
            host_end = f"vnd{a.endpoint[:10]}"
            bridge = run.bridge(a.network)
            if links.get(host_end, {}).get("master") != bridge:
                run.fail(
                    f"round {round_no}: half-attached endpoint: {name} on {a.network} has "
                    f"host end {host_end} in {links.get(host_end, {}).get('master')!r}, "
                    f"not in bridge {bridge}"
                )
            if a.address not in inside.get(a.endpoint, []):
                run.fail(
                    f"round {round_no}: half-attached endpoint: {name} on {a.network} should "
                    f"have {a.address} inside; the namespace has {inside}"
                )
        extra = set(inside) - {a.endpoint for a in attachments if a.container == name}
        if extra:
            run.fail(f"round {round_no}: {name} holds interfaces of unlisted endpoints {extra}")
    # no address twice
    held: dict[str, Attachment] = {}
    for a in attachments:
        key = str(ip_interface(a.address).ip)
        if key in held:
            run.fail(f"round {round_no}: address {key} given to {held[key]} and {a}")
        held[key] = a
    # nothing left over: namespaces, resolv.conf directories, bridges, veths
    if ours_in_run_netns(run) != set(containers):
        run.fail(
            f"round {round_no}: namespaces {sorted(ours_in_run_netns(run))} but containers "
            f"{sorted(containers)}"
        )
    stale_conf = ours_in_etc_netns(run) - set(containers)
    if stale_conf:
        run.fail(f"round {round_no}: /etc/netns holds {sorted(stale_conf)} of no container")
    bridges = {n for n in links if n.startswith(f"{run.tag}b")}
    if bridges != {run.bridge(n) for n in networks}:
        run.fail(f"round {round_no}: bridges {sorted(bridges)} but networks {sorted(networks)}")
    ours = {run.bridge(n) for n in range_networks(run)}
    wanted = {f"vnd{a.endpoint[:10]}" for a in attachments}
    seen = {f"{p}{i[:10]}" for i in run.seen_ids for p in ("vnd", "cnd")}
    stray = sorted(
        name
        for name, link in links.items()
        if name[:3] in ("vnd", "cnd")
        and name not in wanted
        and (link["master"] in ours or name in seen)
    )
    if stray:
        run.fail(f"round {round_no}: leftover veths {stray}")
    check_names(run, round_no, containers, attachments)
    run.say(
        f"round {round_no}: after restart {len(networks)} networks, {len(containers)} "
        f"containers, {len(attachments)} endpoints: whole, no leftovers, names answer"
    )


def range_networks(run: Run) -> list[str]:
    return [run.network(i) for i in range(NETWORKS)]


def check_names(
    run: Run, round_no: int, containers: dict[str, dict], attachments: list[Attachment]
) -> None:
    """Every container's name answers, from every container sharing a network with it, with
    its address on a shared network."""
    on: dict[str, dict[str, str]] = {}
    for a in attachments:
        on.setdefault(a.container, {})[a.network] = str(ip_interface(a.address).ip)
    for asker in containers:
        nets = set(on.get(asker, {}))
        peers = {
            c: {on[c][n] for n in nets & set(on.get(c, {}))}
            for c in containers
            if nets & set(on.get(c, {}))
        }
        if not peers:
            continue
        answers = dig_many(asker, sorted(peers))
        for peer, addresses in peers.items():
            got = answers.get(peer, set())
            if not got or not got <= addresses:
                run.fail(
                    f"round {round_no}: from {asker}, {peer} answers {sorted(got)}; expected "
                    f"some of {sorted(addresses)} ({'dig: ' + str(answers)})"
                )


def dig_many(container: str, names: list[str]) -> dict[str, set[str]]:
    answers: dict[str, set[str]] = {}
    for _ in range(3):  # a loaded machine: a retry rather than a false alarm
        done = subprocess.run(
            ["ip", "netns", "exec", container, "dig", "@127.0.0.11", "+tries=2", "+time=2",
             "+noall", "+answer", *names],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        answers = {}
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[3] == "A":
                answers.setdefault(parts[0].rstrip("."), set()).add(parts[4])
        if all(n in answers for n in names):
            break
        time.sleep(0.5)
    return answers


# -- the tests ------------------------------------------------------------------------------


@pytest.fixture
def upstream() -> str:
    with Dnsmasq(free_loopback_address()) as server:
        yield server.server


def test_sigkill_during_a_burst_leaves_whole_state_and_no_leftovers(lab, upstream, tmp_path):
    seed = int(os.environ.get("NETDNS_CRASH_SEED") or random.randrange(2**31))
    run = Run(lab, tmp_path, upstream, seed, random.Random(seed))
    run.say(f"crash test: {ROUNDS} rounds of {OPS_PER_ROUND} calls, {PARALLEL} at a time")
    for i in range(NETWORKS):
        run.subnets[run.network(i)] = str(lab.ipv4_subnet())
    lab.netns_names.extend(run.container(i) for i in range(CONTAINERS))
    try:
        run.start()
        for i in range(2):  # something to connect to from the first burst on
            n = run.network(i)
            run.daemon.network(n, *network_args(run, n))
        for round_no in range(1, ROUNDS + 1):
            burst(run, round_no)
            shutil.copy(run.daemon.log, tmp_path / f"daemon.{round_no}.log")
            intent = run.root / "state" / INTENT_FILE
            run.say(f"round {round_no}: intent of a cut change left: {intent.exists()}")
            began = time.monotonic()
            run.start()  # (a) comes up on what the kill left
            restart = time.monotonic() - began
            recovered = re.findall(r"the daemon stopped during '([^']+)'", run.daemon.logs())
            run.say(f"round {round_no}: restart ({restart:.1f} s) settled {recovered or 'nothing'}")
            began = time.monotonic()
            check_whole(run, round_no)
            run.say(f"round {round_no}: checks took {time.monotonic() - began:.1f} s")
        # (d) the CLI finishes the job: remove what is listed, then nothing of this test is left
        _, containers, _ = listed(run)
        if containers:
            done = run.cli("container", "rm", *containers)
            assert done.returncode == 0, done.stderr
        ours = [
            n
            for n in range_networks(run)
            if n in {x["Name"] for x in run.daemon.json("network", "ls")}
        ]
        if ours:
            done = run.cli("network", "rm", *ours)
            assert done.returncode == 0, done.stderr
        links = host_links()
        left = {
            "namespaces": sorted(ours_in_run_netns(run)),
            "resolv.conf": sorted(ours_in_etc_netns(run)),
            "bridges": sorted(n for n in links if n.startswith(f"{run.tag}b")),
            "veths": sorted(
                n
                for n in links
                if n[:3] in ("vnd", "cnd") and n[3:] in {i[:10] for i in run.seen_ids}
            ),
        }
        if any(left.values()):
            run.fail(f"after removing everything listed, left over: {left}")
        run.say("end: every listed container and network removed by the CLI; nothing left")
    finally:
        if run.daemon is not None and run.daemon.process.poll() is None:
            run.daemon.stop()
        for name in ours_in_etc_netns(run):
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)


def test_restart_removes_what_an_interrupted_create_left(lab, upstream, tmp_path):
    """Deterministic: the namespace and veth of a create the kill cut short (as its intent
    names them, the state never saved) are gone after the restart; the name is free again."""
    run = Run(lab, tmp_path, upstream, 0, random.Random(0))
    name, network = run.container(0), run.network(0)
    lab.netns_names.append(name)
    run.start()
    run.daemon.network(network, "--subnet", str(lab.ipv4_subnet()),
                       "-o", f"{BRIDGE_OPTION}={run.bridge(network)}")  # fmt: skip
    network_id = run.daemon.json("network", "inspect", network)[0]["Id"]  # type: ignore[index]
    run.daemon.process.send_signal(signal.SIGKILL)
    run.daemon.process.wait(timeout=10)
    # What a daemon killed inside join leaves: its namespace, and a veth pair whose sandbox
    # end has not moved in yet; the intent names them, the state never saw them.
    path = lab.namespaces.create(name)
    sandbox_id, endpoint_id = "a" * 64, "b" * 64
    host_end, peer = f"vnd{endpoint_id[:10]}", f"cnd{endpoint_id[:10]}"
    subprocess.run(
        ["ip", "link", "add", host_end, "type", "veth", "peer", "name", peer], check=True
    )
    subprocess.run(["ip", "link", "set", host_end, "master", run.bridge(network)], check=True)
    intent = {
        "op": "container create",
        "sandboxes": [{"id": sandbox_id, "name": name}],
        "endpoints": [
            {"id": endpoint_id, "network_id": network_id, "sandbox_id": sandbox_id,
             "name": name, "ipv4": "10.0.0.2"},
        ],
        "netns": [[sandbox_id, name]],
    }  # fmt: skip
    try:
        (run.root / "state" / INTENT_FILE).write_text(json.dumps(intent))
        run.start()
        assert not is_network_namespace(path), run.daemon.logs()
        links = host_links()
        assert host_end not in links and peer not in links, run.daemon.logs()
        assert not (run.root / "state" / INTENT_FILE).exists()
        done = run.cli("container", "create", "--name", name, "--network", network)
        assert done.returncode == 0, done.stderr
        assert run.cli("container", "rm", name).returncode == 0
        assert run.cli("network", "rm", network).returncode == 0
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        if run.daemon.process.poll() is None:
            run.daemon.stop()


def test_second_daemon_on_one_root_refuses_naming_root_and_pid(lab, upstream, tmp_path):
    run = Run(lab, tmp_path, upstream, 0, random.Random(0))
    run.start()
    try:
        other = tmp_path / "other.sock"
        done = subprocess.run(
            [*NETDNS, "daemon", "--root", str(tmp_path / "state"), "--admin", f"unix://{other}",
             "--dns", upstream, "--bridge", f"{run.tag}x"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0
        assert str(tmp_path / "state") in done.stderr, done.stderr
        assert f"pid {run.daemon.process.pid}" in done.stderr, done.stderr
        assert not other.exists()
        # the first daemon is untouched and still answers
        assert run.cli("network", "ls").returncode == 0
        assert (tmp_path / "state" / LOCK_FILE).read_text().strip() == str(run.daemon.process.pid)
    finally:
        run.daemon.stop()
