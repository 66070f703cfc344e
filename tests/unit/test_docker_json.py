"""Docker's JSON shapes (netdns/docker_json.py): `network inspect`, `container inspect`, ls rows.

Model objects are built by hand here; the keys are those of Docker's Engine API, so scripts
written against `docker network inspect` read netdns's output unchanged.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from drivers.model import Driver, Endpoint, IPAMConfig, Network, Sandbox, Scope
from netdns import docker_json

NET = Network(
    id="a" * 64,
    name="alpine-net",
    driver=Driver.BRIDGE,
    ipv6=True,
    ipam=(
        IPAMConfig(
            ip_network("10.90.0.0/24"), ip_address("10.90.0.1"), ip_network("10.90.0.128/25")
        ),
        IPAMConfig(ip_network("fd00:90::/64"), ip_address("fd00:90::1")),
    ),
    options=(("com.docker.network.bridge.name", "br-alpine"),),
    created="2026-01-02T03:04:05.123456+00:00",
)
BRIDGE = Network(
    id="b" * 64,
    name="bridge",
    driver=Driver.BRIDGE,
    dns=False,
    ipam=(IPAMConfig(ip_network("172.17.0.0/16"), ip_address("172.17.0.1")),),
)
SANDBOX = Sandbox(
    id="c" * 64,
    name="alpine4",
    netns="/run/netns/alpine4",
    hostname="alpine4",
    dns_servers=("192.0.2.53",),
    dns_search=("example.test",),
    dns_options=("ndots:2",),
)
ON_NET = Endpoint(
    id="e" * 64,
    network_id=NET.id,
    sandbox_id=SANDBOX.id,
    name="alpine4",
    hostname="alpine4",
    aliases=("web",),
    ipv4=ip_address("10.90.0.130"),  # type: ignore[arg-type]
    ipv6=ip_address("fd00:90::2"),  # type: ignore[arg-type]
    mac="02:42:0a:5a:00:82",
)
ON_BRIDGE = Endpoint(
    id="f" * 64,
    network_id=BRIDGE.id,
    sandbox_id=SANDBOX.id,
    name="alpine4",
    ipv4=ip_address("172.17.0.5"),  # type: ignore[arg-type]
    mac="02:42:ac:11:00:05",
)

DOCKER_NETWORK_KEYS = {
    "Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM", "Internal", "Attachable",
    "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options", "Labels",
}  # fmt: skip


def test_network_inspect_has_dockers_keys_and_values() -> None:
    got = docker_json.network_inspect(NET, [ON_NET, ON_BRIDGE], [SANDBOX])
    assert set(got) == DOCKER_NETWORK_KEYS
    assert got["Name"] == "alpine-net" and got["Id"] == NET.id
    assert got["Created"] == "2026-01-02T03:04:05.123456Z"
    assert (got["Scope"], got["Driver"]) == ("local", "bridge")
    assert got["EnableIPv6"] is True and got["Internal"] is False and got["Ingress"] is False
    assert got["IPAM"] == {
        "Driver": "default",
        "Options": {},
        "Config": [
            {"Subnet": "10.90.0.0/24", "IPRange": "10.90.0.128/25", "Gateway": "10.90.0.1"},
            {"Subnet": "fd00:90::/64", "Gateway": "fd00:90::1"},
        ],
    }
    assert got["Options"] == {"com.docker.network.bridge.name": "br-alpine"}
    assert got["Labels"] == {} and got["ConfigFrom"] == {"Network": ""}


def test_network_inspect_containers_carry_prefixed_addresses() -> None:
    got = docker_json.network_inspect(NET, [ON_NET, ON_BRIDGE], [SANDBOX])
    # Only the endpoints of this network, keyed by container id.
    assert got["Containers"] == {
        SANDBOX.id: {
            "Name": "alpine4",
            "EndpointID": ON_NET.id,
            "MacAddress": "02:42:0a:5a:00:82",
            "IPv4Address": "10.90.0.130/24",
            "IPv6Address": "fd00:90::2/64",
        }
    }
    bridge = docker_json.network_inspect(BRIDGE, [ON_BRIDGE], [SANDBOX])
    assert bridge["Containers"][SANDBOX.id]["IPv4Address"] == "172.17.0.5/16"
    assert bridge["Containers"][SANDBOX.id]["IPv6Address"] == ""


def test_overlay_scope_is_global_and_empty_network_has_no_containers() -> None:
    overlay = Network(id="d" * 64, name="ov", driver=Driver.OVERLAY, scope=Scope.GLOBAL)
    got = docker_json.network_inspect(overlay, [], [])
    assert got["Scope"] == "global" and got["Containers"] == {} and got["IPAM"]["Config"] == []


def test_container_inspect_network_settings_in_connect_order() -> None:
    got = docker_json.container_inspect(SANDBOX, [ON_NET, ON_BRIDGE], [BRIDGE, NET])
    assert got["Id"] == SANDBOX.id and got["Name"] == "/alpine4"
    assert got["Config"] == {"Hostname": "alpine4"}
    assert got["HostConfig"]["Dns"] == ["192.0.2.53"]
    assert got["HostConfig"]["DnsSearch"] == ["example.test"]
    assert got["HostConfig"]["DnsOptions"] == ["ndots:2"]
    settings = got["NetworkSettings"]
    assert settings["SandboxKey"] == "/run/netns/alpine4"
    assert list(settings["Networks"]) == ["alpine-net", "bridge"]
    net = settings["Networks"]["alpine-net"]
    assert net["NetworkID"] == NET.id and net["EndpointID"] == ON_NET.id
    assert (net["IPAddress"], net["IPPrefixLen"], net["Gateway"]) == (
        "10.90.0.130",
        24,
        "10.90.0.1",
    )
    assert (net["GlobalIPv6Address"], net["GlobalIPv6PrefixLen"]) == ("fd00:90::2", 64)
    assert net["IPv6Gateway"] == "fd00:90::1"
    assert net["MacAddress"] == "02:42:0a:5a:00:82"
    assert net["Aliases"] == ["web"]


def test_r2_dns_names_listed_only_on_networks_with_embedded_dns() -> None:
    got = docker_json.container_inspect(SANDBOX, [ON_NET, ON_BRIDGE], [BRIDGE, NET])
    networks = got["NetworkSettings"]["Networks"]
    assert networks["alpine-net"]["DNSNames"] == ["alpine4", "web", SANDBOX.id[:12]]
    assert networks["bridge"]["DNSNames"] is None  # R1: the default bridge has no DNS
    assert networks["bridge"]["GlobalIPv6Address"] == "" and networks["bridge"]["IPv6Gateway"] == ""


def test_container_without_networks() -> None:
    lonely = Sandbox(id="9" * 64, name="none1", netns="/run/netns/none1")
    got = docker_json.container_inspect(lonely, [], [NET])
    assert got["NetworkSettings"]["Networks"] == {}
    assert got["HostConfig"]["NetworkMode"] == "none"
    assert got["Config"]["Hostname"] == "9" * 12  # docker's default: the short id


def test_ls_rows_from_inspect_dicts() -> None:
    row = docker_json.network_row(docker_json.network_inspect(NET, [], []))
    assert row == {"ID": "a" * 12, "Name": "alpine-net", "Driver": "bridge", "Scope": "local"}
    assert docker_json.row_cells(row) == ["a" * 12, "alpine-net", "bridge", "local"]
    assert len(docker_json.NETWORK_COLUMNS) == len(row)

    container = docker_json.container_inspect(SANDBOX, [ON_NET, ON_BRIDGE], [NET, BRIDGE])
    row = docker_json.container_row(container)
    assert row == {
        "ID": "c" * 12,
        "Name": "alpine4",
        "Networks": ["alpine-net", "bridge"],
        "IPs": ["10.90.0.130", "fd00:90::2", "172.17.0.5"],
    }
    assert docker_json.row_cells(row)[2:] == [
        "alpine-net,bridge",
        "10.90.0.130,fd00:90::2,172.17.0.5",
    ]
    assert len(docker_json.CONTAINER_COLUMNS) == len(row)


def test_endpoint_json_names_network_and_container() -> None:
    got = docker_json.endpoint_json(ON_NET, NET)
    assert got["Network"] == "alpine-net" and got["ContainerID"] == SANDBOX.id
    assert got["IPv4Address"] == "10.90.0.130/24" and got["Aliases"] == ["web"]
