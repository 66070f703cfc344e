"""netdns-cni's pure parts (netdns/cni_plugin/) and the cni driver's rules (drivers/cni.py).

Config and environment parsing with the spec's error codes, which addresses of a prevResult are
the container's, the choice of name and aliases, the result passed through with 127.0.0.11,
the error and version objects, and the DriverCore refusing to pick an address (or run a
service) on a cni network. The end-to-end runs with the real plugins are in
tests/netns/test_cni_e2e.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_interface
from pathlib import Path
from typing import Any, ClassVar

import pytest

from drivers.cni import CniDriver, check_addresses
from drivers.core import DriverCore, NetworkSpec, SandboxSpec, ServiceSpec
from drivers.errors import Invalid
from drivers.local_store import LocalStore
from drivers.model import Driver, IPAMConfig, Network
from netdns.client import DEFAULT_HOST, ClientError
from netdns.cni_plugin import (
    CniError,
    Command,
    Config,
    ContainerAddresses,
    Env,
    ErrorCode,
    build_result,
    check_network,
    config_version,
    container_addresses,
    container_aliases,
    container_name,
    daemon_error,
    daemon_host,
    error_result,
    parse_cni_args,
    parse_config,
    parse_env,
    version_result,
)

NETNS = "/run/netns/cni-1234"
CONTAINER_ID = "3f4e5d6c7b8a90123456789abcdef0123456789abcdef0123456789abcdef01"

# What the bridge plugin returns (CNI 1.0.0): host bridge, host veth, then the container's eth0.
BRIDGE_RESULT: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "ae:8a:5e:3b:00:01"},
        {"name": "veth1a2b3c4d", "mac": "ae:8a:5e:3b:00:02"},
        {"name": "eth0", "mac": "ae:8a:5e:3b:00:03", "sandbox": NETNS},
    ],
    "ips": [
        {"address": "10.88.0.1/24", "interface": 0},  # an address on a host interface
        {"address": "10.88.0.7/24", "gateway": "10.88.0.1", "interface": 2},
        {"address": "fd00:88::7/64", "gateway": "fd00:88::1", "interface": 2},
    ],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {"nameservers": ["10.88.0.1"], "options": ["ndots:1"]},
}


def config(**fields: Any) -> bytes:
    data = {"cniVersion": "1.0.0", "name": "podnet", "type": "netdns-cni", **fields}
    return json.dumps(data).encode()


def env(args: str = "", container_id: str = CONTAINER_ID) -> Env:
    return Env(Command.ADD, container_id, NETNS, "eth0", parse_cni_args(args))


def code_of(exc: pytest.ExceptionInfo[CniError]) -> int:
    return int(exc.value.code)


# -- environment and configuration ---------------------------------------------------------


def test_cni_args_are_key_value_pairs_separated_by_semicolons() -> None:
    assert parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;X=a=b") == (
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAME", "web"),
        ("X", "a=b"),
    )
    assert parse_cni_args("") == ()
    with pytest.raises(CniError) as exc:
        parse_cni_args("IgnoreUnknown=1;oops")
    assert code_of(exc) == ErrorCode.INVALID_ENVIRONMENT and "oops" in exc.value.msg


def test_env_needs_the_variables_of_its_command() -> None:
    full = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": NETNS, "CNI_IFNAME": "e"}
    assert parse_env(full).netns == NETNS
    with pytest.raises(CniError) as exc:
        parse_env({**full, "CNI_NETNS": ""})
    assert code_of(exc) == 4 and "CNI_NETNS" in exc.value.msg
    # DEL may come without a namespace (the runtime lost it); VERSION needs nothing.
    assert parse_env({**full, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}).command is Command.DEL
    assert parse_env({"CNI_COMMAND": "VERSION"}).command is Command.VERSION
    for bad in ({"CNI_COMMAND": "GC"}, {}, {**full, "CNI_NETNS": "relative/ns"}):
        with pytest.raises(CniError) as exc:
            parse_env(bad)
        assert code_of(exc) == 4


def test_config_reads_the_plugin_keys() -> None:
    parsed = parse_config(
        config(daemon="unix:///tmp/x.sock", search=["corp.test"], prevResult=BRIDGE_RESULT)
    )
    assert parsed.name == "podnet" and parsed.cni_version == "1.0.0"
    assert parsed.daemon == "unix:///tmp/x.sock" and parsed.search == ("corp.test",)
    assert parsed.prev_result == BRIDGE_RESULT
    # Keys it does not know are the runtime's business (capabilities, other plugins' keys).
    assert parse_config(config(somethingElse=True)).prev_result is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", ErrorCode.DECODING_FAILURE),
        (b"[]", ErrorCode.INVALID_CONFIG),
        (json.dumps({"name": "podnet"}).encode(), ErrorCode.INVALID_CONFIG),
        (config(cniVersion="0.3.1"), ErrorCode.INCOMPATIBLE_VERSION),
        (config(name=""), ErrorCode.INVALID_CONFIG),
        (config(name="-bad"), ErrorCode.INVALID_CONFIG),
        (config(search="corp.test"), ErrorCode.INVALID_CONFIG),
        (config(search=["bad domain"]), ErrorCode.INVALID_CONFIG),
        (config(daemon=5), ErrorCode.INVALID_CONFIG),
        (config(prevResult=[]), ErrorCode.INVALID_CONFIG),
    ],
)
def test_bad_configs_get_the_spec_codes(raw: bytes, code: ErrorCode) -> None:
    with pytest.raises(CniError) as exc:
        parse_config(raw)
    assert exc.value.code == code


def test_both_supported_versions_are_accepted() -> None:
    assert parse_config(config(cniVersion="0.4.0")).cni_version == "0.4.0"
    assert parse_config(config(cniVersion="1.0.0")).cni_version == "1.0.0"


# -- addresses, name, aliases --------------------------------------------------------------


def test_the_container_addresses_are_those_of_its_interface() -> None:
    found = container_addresses(BRIDGE_RESULT, "eth0")
    assert found.ipv4 == ip_interface("10.88.0.7/24")  # not the bridge's 10.88.0.1
    assert found.ipv6 == ip_interface("fd00:88::7/64")
    assert found.gateway4 == "10.88.0.1"
    assert found.subnets == ("10.88.0.0/24", "fd00:88::/64")


def test_ips_without_an_interface_index_count_as_the_containers() -> None:
    ipam_style = {"ips": [{"version": "4", "address": "10.1.2.3/16", "gateway": "10.1.0.1"}]}
    found = container_addresses(ipam_style, "eth0")
    assert found.ipv4 == ip_interface("10.1.2.3/16") and found.ipv6 is None


@pytest.mark.parametrize(
    "prev",
    [
        None,  # not chained
        {"interfaces": BRIDGE_RESULT["interfaces"], "ips": []},
        {"ips": [{"address": "fd00::5/64"}]},  # IPv6 only
        {"ips": [{"address": "10.0.0.5/24", "interface": 0}], "interfaces": [{"name": "net1"}]},
        {"ips": [{"address": "10.0.0.5"}]},  # not CIDR
        {"ips": [{"address": "nonsense/24"}]},
        {"ips": "10.0.0.5/24"},
    ],
)
def test_a_prev_result_without_a_usable_ipv4_is_invalid_config(prev: Any) -> None:
    with pytest.raises(CniError) as exc:
        container_addresses(prev, "eth0")
    assert exc.value.code == ErrorCode.INVALID_CONFIG


def test_another_interface_of_the_container_is_not_this_attachments() -> None:
    with pytest.raises(CniError) as exc:
        container_addresses(BRIDGE_RESULT, "net1")
    assert "net1" in exc.value.msg


def test_name_comes_from_netdns_name_then_pod_name_then_args_then_short_id() -> None:
    plain = parse_config(config())
    with_args = parse_config(config(args={"name": "from-args"}))
    assert container_name(env("NETDNS_NAME=mine;K8S_POD_NAME=pod"), with_args) == "mine"
    assert container_name(env("IgnoreUnknown=1;K8S_POD_NAME=pod"), with_args) == "pod"
    assert container_name(env("IgnoreUnknown=1"), with_args) == "from-args"
    assert container_name(env(), plain) == CONTAINER_ID[:12]


def test_a_name_netdns_cannot_hold_is_invalid_config() -> None:
    with pytest.raises(CniError) as exc:
        container_name(env("NETDNS_NAME=no spaces"), parse_config(config()))
    assert exc.value.code == ErrorCode.INVALID_CONFIG and "NETDNS_NAME" in exc.value.msg


def test_aliases_are_podmans_runtime_config_for_this_network() -> None:
    runtime = {"aliases": {"podnet": ["web", "3f4e5d6c7b8a", "www", "WWW", "bad alias"]}}
    parsed = parse_config(config(runtimeConfig=runtime))
    assert container_aliases(parsed, "web") == ("3f4e5d6c7b8a", "www")
    other = parse_config(config(runtimeConfig={"aliases": {"othernet": ["x"]}}))
    assert container_aliases(other, "web") == ()
    assert container_aliases(parse_config(config()), "web") == ()


# -- results -------------------------------------------------------------------------------


def test_result_passes_prev_result_through_with_the_embedded_resolver() -> None:
    parsed = parse_config(
        config(cniVersion="0.4.0", search=["corp.test"], prevResult=BRIDGE_RESULT)
    )
    result = build_result(parsed)
    assert result["cniVersion"] == "0.4.0"
    assert result["dns"] == {
        "nameservers": ["127.0.0.11"],
        "options": ["ndots:1"],
        "search": ["corp.test"],
    }
    for key in ("interfaces", "ips", "routes"):
        assert result[key] == BRIDGE_RESULT[key]
    assert BRIDGE_RESULT["dns"]["nameservers"] == ["10.88.0.1"]  # the input is not changed


def test_result_without_search_keeps_the_previous_dns_search() -> None:
    prev = {**BRIDGE_RESULT, "dns": {"search": ["old.test"]}}
    result = build_result(parse_config(config(prevResult=prev)))
    assert result["dns"] == {"nameservers": ["127.0.0.11"], "search": ["old.test"]}


def test_version_with_libcni_placeholders_passes_validation() -> None:
    # libcni (podman's CNI backend, containerd) validates each plugin of a conflist this way.
    placeholders = {
        "CNI_COMMAND": "VERSION", "CNI_CONTAINERID": "dummy", "CNI_NETNS": "dummy",
        "CNI_IFNAME": "dummy", "CNI_PATH": "dummy",
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "netdns.cni_plugin"], env={**os.environ, **placeholders},
        input=b'{"cniVersion": "1.0.0", "name": "podnet", "type": "netdns-cni"}',
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["supportedVersions"] == ["0.4.0", "1.0.0"]


def test_version_answers_the_input_version_and_ours() -> None:
    assert version_result(b'{"cniVersion": "0.4.0"}') == {
        "cniVersion": "0.4.0",
        "supportedVersions": ["0.4.0", "1.0.0"],
    }
    assert version_result(b"")["cniVersion"] == "1.0.0"


def test_error_object_has_the_spec_keys_and_the_configs_version() -> None:
    error = CniError(ErrorCode.TRY_AGAIN_LATER, "cannot reach", "details here")
    assert error_result(config_version(config(cniVersion="0.4.0")), error) == {
        "cniVersion": "0.4.0",
        "code": 11,
        "msg": "cannot reach",
        "details": "details here",
    }
    assert config_version(b"garbage") == "1.0.0"


def test_daemon_errors_map_to_retry_config_or_refusal() -> None:
    where = "/run/netdns/netdns.sock"
    down = daemon_error(ClientError(f"cannot reach the netdns daemon at {where}"), where, "x")
    assert down.code == ErrorCode.TRY_AGAIN_LATER and where in down.msg
    assert daemon_error(ClientError("busy", 503), where, "x").code == 11
    assert daemon_error(ClientError("bad alias", 400), where, "x").code == 7
    assert daemon_error(ClientError("name in use", 409), where, "x").code == 100


def test_netdns_host_overrides_the_daemon_key_which_overrides_the_default() -> None:
    keyed = parse_config(config(daemon="unix:///k.sock"))
    assert daemon_host(keyed, {"NETDNS_HOST": "unix:///e.sock"}) == "unix:///e.sock"
    assert daemon_host(keyed, {}) == "unix:///k.sock"
    assert daemon_host(parse_config(config()), {}) == DEFAULT_HOST


def test_existing_network_must_be_cni_with_the_same_subnets() -> None:
    addresses = ContainerAddresses(ip_interface("10.88.0.7/24"))  # type: ignore[arg-type]
    good = {"Driver": "cni", "IPAM": {"Config": [{"Subnet": "10.88.0.0/24"}]}}
    check_network(good, "podnet", addresses)
    with pytest.raises(CniError) as exc:
        check_network({**good, "Driver": "bridge"}, "podnet", addresses)
    assert exc.value.code == 7 and "bridge" in exc.value.msg
    moved = {"Driver": "cni", "IPAM": {"Config": [{"Subnet": "10.99.0.0/24"}]}}
    with pytest.raises(CniError) as exc:
        check_network(moved, "podnet", addresses)
    assert "10.88.0.0/24" in exc.value.msg and "10.99.0.0/24" in exc.value.msg


def test_config_dataclass_defaults_mean_no_daemon_key_and_no_search() -> None:
    parsed = parse_config(config())
    assert parsed == Config("1.0.0", "podnet")


# -- the cni driver in the DriverCore -------------------------------------------------------


class QuietBridge(CniDriver):
    """Stands in for the default `bridge` network's driver: no Linux objects in a unit test."""

    kind: ClassVar[Driver] = Driver.BRIDGE


class AdoptedOnly:
    """Namespaces: every absolute path 'exists' (adopted); netdns never makes one here."""

    def create(self, name: str) -> str:
        raise AssertionError(f"a cni container must adopt its namespace, not make {name}")

    def remove(self, name: str) -> None:
        raise AssertionError(f"nothing to remove: {name}")

    def exists(self, path: str) -> bool:
        return path.startswith("/")


@pytest.fixture
def core(tmp_path: Path) -> DriverCore:
    drivers = {Driver.CNI: CniDriver(), Driver.BRIDGE: QuietBridge()}
    made = DriverCore(LocalStore(tmp_path), drivers, AdoptedOnly())  # type: ignore[arg-type]
    made.start()
    made.create_network(NetworkSpec("podnet", "cni", ("10.88.0.0/24",), gateway="10.88.0.1"))
    return made


def test_a_cni_network_takes_containers_with_the_address_the_plugins_chose(
    core: DriverCore,
) -> None:
    sandbox = core.create_sandbox(
        SandboxSpec("web", network="podnet", ip="10.88.0.7", netns="/proc/1/ns/net")
    )
    (endpoint,) = core.endpoints(sandbox_id=sandbox.id)
    assert endpoint.ipv4 == IPv4Address("10.88.0.7")
    assert core.network("podnet").dns  # embedded DNS on, like a user-defined network
    assert core.network("podnet").driver is Driver.CNI


def test_a_cni_network_never_picks_an_address(core: DriverCore) -> None:
    with pytest.raises(Invalid, match="--ip"):
        core.create_sandbox(SandboxSpec("web", network="podnet", netns="/proc/1/ns/net"))
    assert core.sandboxes() == []


def test_a_cni_network_holds_no_services(core: DriverCore) -> None:
    with pytest.raises(Invalid, match="CNI network"):
        core.create_service(ServiceSpec("api", ("podnet",)))


def test_check_addresses_wants_ipv6_too_on_a_dual_stack_cni_network() -> None:
    network = Network(
        "id",
        "dual",
        Driver.CNI,
        ipv6=True,
        ipam=(
            IPAMConfig(IPv4Network("10.1.0.0/24")),
            IPAMConfig(IPv6Network("fd00:1::/64")),
        ),
    )
    check_addresses(network, IPv4Address("10.1.0.5"), IPv6Address("fd00:1::5"))
    with pytest.raises(Invalid, match="--ip6"):
        check_addresses(network, IPv4Address("10.1.0.5"), None)
