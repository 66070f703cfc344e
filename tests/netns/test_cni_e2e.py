"""netdns-cni chained after the reference CNI plugins, as a container runtime runs them.

For each container the test makes a namespace, runs /usr/lib/cni/bridge ADD (its own bridge,
host-local IPAM on a random 10.x.y.0/24 with its data under tmp), then netdns-cni ADD with the
bridge's result as prevResult, against a real netdns daemon. Names then resolve between
containers set up through CNI alone: dig at 127.0.0.11 and glibc's getent with the resolv.conf a
runtime writes from the result's dns. CHECK, DEL (twice), VERSION and the error objects are
checked on the real executable. Everything made is removed even when a test fails: the
namespaces and links (the lab fixture, plus the CNI bridge), host-local's data, /etc/netns dirs,
and net.ipv4.ip_forward, which the bridge plugin turns on for isGateway.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network, ip_interface
from pathlib import Path
from typing import Any

import pytest

from bench.labs.daemon import OUTSIDE_ADDRESS, OUTSIDE_NAME, DaemonProcess, running_daemon
from tests.netns.conftest import Lab

CNI_BIN = Path("/usr/lib/cni")
PLUGIN = [sys.executable, "-m", "netdns.cni_plugin"]
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
ETC_NETNS = Path("/etc/netns")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, bridges")
needs_cni = pytest.mark.skipif(
    not (CNI_BIN / "bridge").exists() or not (CNI_BIN / "host-local").exists(),
    reason="needs the reference CNI plugins in /usr/lib/cni (containernetworking-plugins)",
)
needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("ip", "dig", "getent", "nft")),
    reason="needs ip, dig, getent, nft",
)


@dataclass(frozen=True)
class Done:
    code: int
    output: dict[str, Any] | None
    stderr: str

    def error(self) -> str:
        return f"exit {self.code}: {self.output} {self.stderr}"


def run_plugin(
    command: list[str], cni_command: str, config: dict[str, Any] | None, **env: str
) -> Done:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    environ.update({"CNI_COMMAND": cni_command, "CNI_PATH": str(CNI_BIN), **env})
    done = subprocess.run(
        command,
        input=json.dumps(config) if config is not None else "",
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = json.loads(done.stdout) if done.stdout.strip() else None
    return Done(done.returncode, output, done.stderr)


@dataclass
class Container:
    id: str
    netns: str  # /run/netns/NAME
    name: str  # the name netdns gives it
    args: str  # CNI_ARGS
    bridge_result: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ns_name(self) -> str:
        return Path(self.netns).name

    @property
    def address(self) -> str:
        return str(ip_interface(self.bridge_result["ips"][0]["address"]).ip)

    def env(self) -> dict[str, str]:
        return {
            "CNI_CONTAINERID": self.id,
            "CNI_NETNS": self.netns,
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": self.args,
        }


@dataclass
class CniNetwork:
    """One CNI network (bridge + host-local) and netdns-cni chained after it."""

    daemon: DaemonProcess
    lab: Lab
    name: str
    bridge: str
    subnet: IPv4Network
    data_dir: Path
    search: tuple[str, ...] = ("cni.test",)

    def bridge_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": str(self.subnet)}]],
                "dataDir": str(self.data_dir),
            },
        }

    def netdns_config(self, container: Container, **extra: Any) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "netdns-cni",
            "search": list(self.search),
            "prevResult": container.bridge_result,
            **extra,
        }

    def netdns(self, cni_command: str, container: Container, **extra: Any) -> Done:
        return run_plugin(
            PLUGIN,
            cni_command,
            self.netdns_config(container, **extra),
            NETDNS_HOST=f"unix://{self.daemon.socket}",
            **container.env(),
        )

    def bridge_plugin(self, cni_command: str, container: Container) -> Done:
        config = self.bridge_config()
        if cni_command != "ADD":
            config["prevResult"] = container.bridge_result
        return run_plugin([str(CNI_BIN / "bridge")], cni_command, config, **container.env())

    def add(self, name: str, args: str, **extra: Any) -> Container:
        """What a runtime does for one container: namespace, bridge ADD, netdns-cni ADD."""
        container = Container(secrets.token_hex(32), self.lab.netns(), name, args)
        self.daemon.made.append(("container", name))
        done = self.bridge_plugin("ADD", container)
        assert done.code == 0 and done.output, f"bridge ADD: {done.error()}"
        container.bridge_result = done.output
        done = self.netdns("ADD", container, **extra)
        assert done.code == 0 and done.output, f"netdns-cni ADD: {done.error()}"
        container.result = done.output
        return container

    def write_resolv_conf(self, container: Container) -> None:
        """The resolv.conf a runtime writes from the result's dns (`ip netns exec` mounts it)."""
        dns = container.result["dns"]
        lines = [f"nameserver {s}" for s in dns["nameservers"]]
        if dns.get("search"):
            lines.append(f"search {' '.join(dns['search'])}")
        directory = ETC_NETNS / container.ns_name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "resolv.conf").write_text("\n".join(lines) + "\n")

    def dig(self, container: Container, name: str) -> list[str]:
        done = self.daemon.netns_exec(
            container.ns_name, "dig", "+short", "+tries=1", "+time=2", "@127.0.0.11", name
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()


@pytest.fixture
def cni(lab: Lab, tmp_path: Path) -> Iterator[CniNetwork]:
    if not (CNI_BIN / "bridge").exists():
        pytest.skip("needs /usr/lib/cni/bridge")
    forward = IP_FORWARD.read_text()
    bridge = f"ndc{lab.tag}"
    data_dir = tmp_path / "host-local"
    (tmp_path / "daemon").mkdir()
    try:
        with running_daemon(tmp_path / "daemon") as daemon:
            network = CniNetwork(
                daemon, lab, f"ndcni{lab.tag}", bridge, lab.ipv4_subnet(), data_dir
            )
            # Removed last (cleanup runs newest first), once its containers are gone.
            daemon.made.append(("network", network.name))
            yield network
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        for name in lab.netns_names:
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        IP_FORWARD.write_text(forward)


@needs_root
@needs_cni
@needs_tools
def test_cni_add_gives_names_between_containers_and_del_takes_them_away(cni: CniNetwork) -> None:
    web = cni.add(f"web-{cni.lab.tag}", f"IgnoreUnknown=1;NETDNS_NAME=web-{cni.lab.tag}")
    db = cni.add(
        f"db-{cni.lab.tag}",
        f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=db-{cni.lab.tag}",
        runtimeConfig={"aliases": {cni.name: [f"db-{cni.lab.tag}", "database"]}},
    )

    # The result: the bridge's, passed through, with the embedded resolver as nameserver.
    assert db.result["cniVersion"] == "1.0.0"
    assert db.result["ips"] == db.bridge_result["ips"]
    assert db.result["interfaces"] == db.bridge_result["interfaces"]
    assert db.result["dns"] == {"nameservers": ["127.0.0.11"], "search": ["cni.test"]}
    network = cni.daemon.json("network", "inspect", cni.name)[0]
    assert network["Driver"] == "cni"
    assert [c["Subnet"] for c in network["IPAM"]["Config"]] == [str(cni.subnet)]
    inspected = cni.daemon.json("container", "inspect", db.name)[0]
    assert inspected["NetworkSettings"]["SandboxKey"] == db.netns
    assert inspected["NetworkSettings"]["Networks"][cni.name]["IPAddress"] == db.address

    # Names resolve between the two, at 127.0.0.11 and through glibc with the result's dns.
    assert cni.dig(web, db.name) == [db.address]
    assert cni.dig(web, "database") == [db.address]
    assert cni.dig(db, web.name) == [web.address]
    assert cni.dig(web, OUTSIDE_NAME) == [OUTSIDE_ADDRESS]
    cni.write_resolv_conf(web)
    assert cni.daemon.getent(web.ns_name, db.name) == db.address
    ping = cni.daemon.netns_exec(web.ns_name, "ping", "-c1", "-W2", db.name)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    done = cni.netdns("CHECK", db)
    assert (done.code, done.output) == (0, None), done.error()

    # DEL in reverse order (netdns-cni, then bridge): the name stops resolving.
    for plugin in (cni.netdns, cni.bridge_plugin):
        done = plugin("DEL", db)
        assert (done.code, done.output) == (0, None), done.error()
    assert cni.dig(web, db.name) == []
    assert cni.dig(web, "database") == []
    assert cni.dig(web, web.name) == [web.address]
    # DEL again: missing is success, for both plugins.
    for plugin in (cni.netdns, cni.bridge_plugin):
        done = plugin("DEL", db)
        assert (done.code, done.output) == (0, None), done.error()
    # CHECK of what is gone says so.
    done = cni.netdns("CHECK", db)
    assert done.code != 0 and done.output is not None
    assert done.output["code"] == 101 and db.name in done.output["msg"]


@needs_root
@needs_cni
@needs_tools
def test_cni_check_and_add_errors_against_a_live_registration(cni: CniNetwork) -> None:
    web = cni.add(f"web-{cni.lab.tag}", f"IgnoreUnknown=1;NETDNS_NAME=web-{cni.lab.tag}")
    assert cni.netdns("CHECK", web).code == 0

    # Another subnet for the same CNI network: an error naming both.
    other = dict(web.bridge_result)
    other["ips"] = [{**web.bridge_result["ips"][0], "address": "10.254.254.5/24"}]
    twin = Container(secrets.token_hex(32), web.netns, f"twin-{cni.lab.tag}", "")
    twin.bridge_result = other
    done = cni.netdns("ADD", twin)
    assert done.code != 0 and done.output is not None
    assert done.output["code"] == 7
    assert "10.254.254.0/24" in done.output["msg"] and str(cni.subnet) in done.output["msg"]

    # The same name from another live namespace: refused, the first one untouched.
    intruder = Container(secrets.token_hex(32), cni.lab.netns(), web.name, web.args)
    intruder.bridge_result = web.bridge_result
    done = cni.netdns("ADD", intruder)
    assert done.output is not None and done.output["code"] == 100, done.error()
    # ... and its DEL (a runtime deletes after a failed ADD) leaves the first one alone.
    assert cni.netdns("DEL", intruder).code == 0
    assert cni.dig(web, web.name) == [web.address]

    # CHECK sees a registration with other addresses.
    moved = Container(web.id, web.netns, web.name, web.args)
    moved.bridge_result = {
        **web.bridge_result,
        "ips": [{**web.bridge_result["ips"][0], "address": f"{cni.subnet[200]}/24"}],
    }
    done = cni.netdns("CHECK", moved)
    assert done.output is not None and done.output["code"] == 102, done.error()

    # Without the port-53 redirect, 127.0.0.11 does not answer: CHECK fails with 103.
    subprocess.run(
        ["ip", "netns", "exec", web.ns_name, "nft", "delete", "table", "ip", "netdns"], check=True
    )
    done = cni.netdns("CHECK", web)
    assert done.output is not None and done.output["code"] == 103, done.error()
    assert "127.0.0.11" in done.output["msg"]


def test_cni_version_reports_the_supported_versions() -> None:
    done = run_plugin(PLUGIN, "VERSION", {"cniVersion": "0.4.0"})
    assert done.code == 0
    assert done.output == {"cniVersion": "0.4.0", "supportedVersions": ["0.4.0", "1.0.0"]}
    done = run_plugin(PLUGIN, "VERSION", None)
    assert done.output == {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}


def _add_env(tmp_path: Path) -> dict[str, str]:
    return {
        "CNI_CONTAINERID": secrets.token_hex(32),
        "CNI_NETNS": "/run/netns/ndcni-never-made",
        "CNI_IFNAME": "eth0",
        "NETDNS_HOST": f"unix://{tmp_path}/no-daemon.sock",
    }


PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "sandbox": "/run/netns/ndcni-never-made"}],
    "ips": [{"address": "10.9.8.7/24", "gateway": "10.9.8.1", "interface": 0}],
}


def test_cni_add_with_the_daemon_down_is_try_again_later(tmp_path: Path) -> None:
    config = {"cniVersion": "1.0.0", "name": "ndcni-down", "type": "netdns-cni", "prevResult": PREV}
    done = run_plugin(PLUGIN, "ADD", config, **_add_env(tmp_path))
    assert done.code != 0 and done.output is not None
    assert done.output["code"] == 11
    assert done.output["cniVersion"] == "1.0.0"
    assert f"{tmp_path}/no-daemon.sock" in done.output["msg"]


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({"cniVersion": "1.0.0", "type": "netdns-cni", "prevResult": PREV}, 7),  # no name
        ({"cniVersion": "1.0.0", "name": "ndcni-bad", "type": "netdns-cni"}, 7),  # no prevResult
        ({"cniVersion": "1.0.0", "name": "ndcni-bad", "search": "x", "prevResult": PREV}, 7),
        ({"cniVersion": "0.3.1", "name": "ndcni-bad", "prevResult": PREV}, 1),
    ],
)
def test_cni_bad_config_is_an_error_object(
    tmp_path: Path, config: dict[str, Any], code: int
) -> None:
    done = run_plugin(PLUGIN, "ADD", config, **_add_env(tmp_path))
    assert done.code != 0 and done.output is not None, done.error()
    assert done.output["code"] == code
    assert set(done.output) == {"cniVersion", "code", "msg", "details"}
    assert done.output["cniVersion"] == config["cniVersion"]
