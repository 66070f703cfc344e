"""Services end to end (R5, R8, R18): a real daemon driven through the `netdns` CLI, task
namespaces running a tiny TCP responder each, and dig from a client container.

The VIP must route: connections from the client to VIP:80 are spread over the tasks by the
nftables DNAT table inside the client's namespace (drivers/vip.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.labs.daemon import DaemonProcess, running_daemon, suffix
from tests.netns.conftest import Lab

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates namespaces and bridges"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (nftables)"),
    pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils)"),
]

PORT = 80
TRIES = 60
# Answers every TCP connection on port 80 with the task name given as argv[1].
RESPONDER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    f"s.bind(('0.0.0.0',{PORT})); s.listen(64); print('ready',flush=True)\n"
    "while True:\n"
    "    c,_=s.accept(); c.sendall(sys.argv[1].encode()); c.close()\n"
)
# Connects to argv[1]:80 up to TRIES times (a new connection, so a new DNAT pick, each time)
# and prints the set of task names that answered, as JSON.
CLIENT = (
    "import json,socket,sys\n"
    "seen=set()\n"
    f"for _ in range({TRIES}):\n"
    f"    with socket.create_connection((sys.argv[1],{PORT}),timeout=2) as c:\n"
    "        seen.add(c.recv(256).decode())\n"
    "    if len(seen)==int(sys.argv[2]): break\n"
    "print(json.dumps(sorted(seen)))\n"
)


@dataclass
class Setup:
    daemon: DaemonProcess
    net: str
    client: str
    responders: list[subprocess.Popen] = field(default_factory=list)

    def inspect(self, service: str) -> dict:
        return self.daemon.json("service", "inspect", service)[0]

    def tasks(self, service: str) -> dict[str, str]:
        """Task name -> IPv4 address, from `service inspect`."""
        return {
            t["Name"]: t["NetworksAttachments"][0]["Addresses"][0].split("/")[0]
            for t in self.inspect(service)["Tasks"]
        }

    def vip(self, service: str) -> str:
        (vip,) = self.inspect(service)["Endpoint"]["VirtualIPs"]
        return vip["Addr"].split("/")[0]

    def short(self, *args: str) -> list[str]:
        done = self.daemon.dig(self.client, "+short", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip().splitlines()

    def respond(self, task: str) -> None:
        """Start the responder inside the task's namespace; returns once it listens."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", task, sys.executable, "-c", RESPONDER, task],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.responders.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"

    def reached(self, address: str, want: int) -> set[str]:
        done = self.daemon.netns_exec(
            self.client, sys.executable, "-c", CLIENT, address, str(want), timeout=60
        )
        assert done.returncode == 0, done.stderr
        return set(json.loads(done.stdout))

    def vip_table(self, container: str) -> str:
        done = self.daemon.netns_exec(container, "nft", "list", "table", "ip", "netdns_vip")
        return done.stdout if done.returncode == 0 else ""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with running_daemon(tmp_path_factory.mktemp("services")) as daemon:
        s = suffix()
        subnet = Lab(tag=s).ipv4_subnet()
        made = Setup(daemon, f"svcnet-{s}", f"svcli-{s}")
        try:
            daemon.network(made.net, "--subnet", str(subnet))
            daemon.container(made.client, "--network", made.net)
            yield made
        finally:
            for process in made.responders:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def web(setup: Setup) -> Iterator[str]:
    """A vip service with 3 tasks, each answering on port 80 with its name; removed after."""
    name = f"web{suffix()}"
    setup.daemon.made.append(("service", name))
    setup.daemon.cli(
        "service", "create", "--name", name, "--network", setup.net, "--replicas", "3",
        "--publish", f"{PORT}/tcp", "--port-name", "http",
    )  # fmt: skip
    for task in setup.tasks(name):
        setup.respond(task)
    yield name
    setup.daemon.cli("service", "rm", name, check=False)


def test_r5_service_name_answers_the_vip_and_tasks_every_task(setup: Setup, web: str) -> None:
    tasks = setup.tasks(web)
    assert len(tasks) == 3
    assert setup.short(web) == [setup.vip(web)]
    assert sorted(setup.short(f"tasks.{web}")) == sorted(tasks.values())


def test_r5_srv_gives_one_record_per_task_with_targets_that_resolve(setup: Setup, web: str) -> None:
    tasks = setup.tasks(web)
    records = [line.split() for line in setup.short("SRV", f"_http._tcp.{web}")]
    assert len(records) == 3
    for _priority, _weight, port, target in records:
        assert port == str(PORT)
        name = target.rstrip(".")
        assert setup.short(name) == [tasks[name]]


def test_r8_ptr_of_the_vip_is_the_service_on_its_network(setup: Setup, web: str) -> None:
    assert setup.short("-x", setup.vip(web)) == [f"{web}.{setup.net}."]


def test_connections_to_the_vip_reach_more_than_one_task(setup: Setup, web: str) -> None:
    reached = setup.reached(setup.vip(web), 3)
    assert reached <= set(setup.tasks(web)) and len(reached) > 1, reached


def test_r18_scale_down_and_up_shows_before_the_command_returns(setup: Setup, web: str) -> None:
    d = setup.daemon
    assert d.cli("service", "scale", f"{web}=1").stdout.strip() == f"{web} scaled to 1"
    (only,) = setup.tasks(web).items()
    assert setup.short(f"tasks.{web}") == [only[1]]
    assert setup.reached(setup.vip(web), 2) == {only[0]}  # the VIP goes to the one left
    d.cli("service", "scale", f"{web}=3")
    tasks = setup.tasks(web)
    assert sorted(setup.short(f"tasks.{web}")) == sorted(tasks.values())
    assert {t.split(".")[1] for t in tasks} == {"1", "2", "3"}
    table = setup.vip_table(setup.client)
    assert all(address in table for address in tasks.values()), table


def test_r5_dnsrr_service_answers_every_task(setup: Setup) -> None:
    name = f"db{suffix()}"
    setup.daemon.made.append(("service", name))
    setup.daemon.cli(
        "service", "create", "--name", name, "--network", setup.net, "--replicas", "2",
        "--endpoint-mode", "dnsrr",
    )  # fmt: skip
    try:
        inspect = setup.inspect(name)
        assert inspect["Endpoint"]["VirtualIPs"] == []
        assert inspect["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
        tasks = setup.tasks(name)
        assert len(tasks) == 2
        assert sorted(setup.short(name)) == sorted(tasks.values())
    finally:
        setup.daemon.cli("service", "rm", name, check=False)


def test_rm_removes_names_namespaces_and_routes(setup: Setup, web: str) -> None:
    tasks = setup.tasks(web)
    vip = setup.vip(web)
    assert vip in setup.vip_table(setup.client)
    assert setup.daemon.cli("service", "rm", web).stdout.strip() == web
    assert setup.short(web) == []
    assert setup.short(f"tasks.{web}") == []
    assert all(not Path(f"/run/netns/{task}").exists() for task in tasks)
    assert vip not in setup.vip_table(setup.client)


def test_service_ls_and_inspect_in_docker_shape(setup: Setup, web: str) -> None:
    (row,) = [r for r in setup.daemon.json("service", "ls") if r["Name"] == web]
    assert row["Replicas"] == "3/3" and row["Ports"] == ["80/tcp"]
    inspect = setup.inspect(web)
    assert inspect["Spec"]["Name"] == web
    assert inspect["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
    assert inspect["Endpoint"]["Ports"] == [{"Name": "http", "Protocol": "tcp", "TargetPort": 80}]
    network_id = setup.daemon.json("network", "inspect", setup.net)[0]["Id"]
    assert inspect["Endpoint"]["VirtualIPs"][0]["NetworkID"] == network_id


def test_cli_errors_are_one_line_with_the_error_class_exit_code(setup: Setup, web: str) -> None:
    d = setup.daemon
    cases = [
        (("service", "create", "--name", "x", "--network", "nope"), 3, "nope"),
        (("service", "create", "--name", web, "--network", setup.net), 4, "already in use"),
        (("service", "scale", f"{web}=many"), 2, "NAME=N"),
        (("service", "scale", "nope=2"), 3, "nope"),
        (("service", "rm", "nope"), 3, "nope"),
        (("container", "rm", next(iter(setup.tasks(web)))), 4, "service scale"),
    ]
    for args, code, words in cases:
        done = d.cli(*args, check=False)
        assert done.returncode == code, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr, done.stderr
    assert len(setup.tasks(web)) == 3
