"""The local store (drivers/store.py): JSON round trips of every model type, atomic saves."""

from __future__ import annotations

import json
import os
import stat
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from drivers.errors import Invalid, Unsupported
from drivers.model import (
    Driver,
    Endpoint,
    EndpointMode,
    IPAMConfig,
    Network,
    Sandbox,
    Scope,
    Service,
    ServicePort,
    Task,
    VirtualIP,
)
from drivers.store import SCHEMA_VERSION, STATE_FILE, LocalStore, State


def full_state() -> State:
    net = Network(
        id="n" * 64, name="front", driver=Driver.OVERLAY, scope=Scope.GLOBAL, dns=True,
        internal=True, attachable=True, ipv6=True,
        ipam=(
            IPAMConfig(IPv4Network("10.1.0.0/16"), IPv4Address("10.1.0.1"),
                       IPv4Network("10.1.4.0/24")),
            IPAMConfig(IPv6Network("fd00:1::/64"), IPv6Address("fd00:1::1")),
        ),
        options=(("parent", "eth0.50"), ("mtu", "1400")), dns_servers=("10.1.0.53",),
        created="2024-01-01T00:00:00+00:00",
    )  # fmt: skip
    other = Network(id="m" * 64, name="bridge", driver=Driver.BRIDGE, dns=False)
    sandbox = Sandbox(
        id="s" * 64, name="web", netns="/run/netns/web", hostname="www",
        dns_servers=("10.0.0.1:5353",), dns_search=("corp",), dns_options=("ndots:2",),
    )  # fmt: skip
    plain = Endpoint(id="e" * 64, network_id=other.id, sandbox_id=sandbox.id, name="web")
    task = Endpoint(
        id="f" * 64, network_id=net.id, sandbox_id=sandbox.id, name="web", hostname="www",
        aliases=("w", "web.alias"), ipv4=IPv4Address("10.1.4.2"), ipv6=IPv6Address("fd00:1::2"),
        mac="02:42:0a:01:04:02", task=Task("v" * 64, "api", 3, "t" * 25),
    )  # fmt: skip
    service = Service(
        id="v" * 64, name="api", networks=(net.id,), mode=EndpointMode.DNSRR,
        vips=(VirtualIP(net.id, IPv4Address("10.1.0.9")),),
        ports=(ServicePort("http", "tcp", 80),), replicas=3,
    )  # fmt: skip
    return State(
        networks={net.id: net, other.id: other},
        sandboxes={sandbox.id: sandbox},
        endpoints={task.id: task, plain.id: plain},  # connect order, not id order
        services={service.id: service},
        made_netns={sandbox.id: "web"},
    )


def test_empty_root_loads_an_empty_state(tmp_path):
    assert LocalStore(tmp_path / "missing").load() == State()


def test_every_model_type_round_trips_with_order_kept(tmp_path):
    state = full_state()
    LocalStore(tmp_path).save(state)
    loaded = LocalStore(tmp_path).load()
    assert loaded == state
    assert list(loaded.endpoints) == list(state.endpoints)
    assert list(loaded.networks) == list(state.networks)
    # the values have their real types again, not strings
    endpoint = loaded.endpoints["f" * 64]
    assert isinstance(endpoint.ipv6, IPv6Address) and isinstance(endpoint.task, Task)
    assert loaded.networks["n" * 64].driver is Driver.OVERLAY


def test_file_is_plain_json_with_schema_strings_and_enum_values(tmp_path):
    LocalStore(tmp_path).save(full_state())
    data = json.loads((tmp_path / STATE_FILE).read_text())
    assert data["schema"] == SCHEMA_VERSION
    net = data["networks"][0]
    assert net["driver"] == "overlay" and net["scope"] == "global"
    assert net["ipam"][0] == {"subnet": "10.1.0.0/16", "gateway": "10.1.0.1",
                              "ip_range": "10.1.4.0/24"}  # fmt: skip
    assert data["endpoints"][0]["ipv6"] == "fd00:1::2"
    assert data["endpoints"][1]["ipv4"] is None


def test_save_replaces_the_file_whole_leaves_no_temporary_and_is_private(tmp_path):
    store = LocalStore(tmp_path)
    store.save(full_state())
    store.save(State())
    assert os.listdir(tmp_path) == [STATE_FILE]
    assert store.load() == State()
    assert stat.S_IMODE(os.stat(tmp_path / STATE_FILE).st_mode) & 0o077 == 0


def test_failed_save_keeps_the_previous_state(tmp_path):
    store = LocalStore(tmp_path)
    store.save(full_state())
    broken = full_state()
    broken.sandboxes["x"] = Sandbox(id="x", name=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.save(broken)
    assert store.load() == full_state()
    assert os.listdir(tmp_path) == [STATE_FILE]


def test_corrupt_file_is_invalid_naming_the_file(tmp_path):
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(Invalid, match=f"{tmp_path / STATE_FILE}.*move it aside"):
        LocalStore(tmp_path).load()


def test_wrong_type_in_file_is_invalid(tmp_path):
    LocalStore(tmp_path).save(full_state())
    data = json.loads((tmp_path / STATE_FILE).read_text())
    data["endpoints"][0]["ipv4"] = "not-an-address"
    (tmp_path / STATE_FILE).write_text(json.dumps(data))
    with pytest.raises(Invalid):
        LocalStore(tmp_path).load()


def test_newer_schema_is_unsupported(tmp_path):
    (tmp_path / STATE_FILE).write_text(json.dumps({"schema": SCHEMA_VERSION + 1}))
    with pytest.raises(Unsupported, match="newer"):
        LocalStore(tmp_path).load()


def test_missing_fields_take_their_defaults_and_unknown_fields_are_ignored(tmp_path):
    data = {
        "schema": SCHEMA_VERSION,
        "networks": [{"id": "a" * 64, "name": "n", "driver": "bridge", "from_the_future": 1}],
        "sandboxes": [{"id": "b" * 64, "name": "c"}],
    }
    (tmp_path / STATE_FILE).write_text(json.dumps(data))
    state = LocalStore(tmp_path).load()
    assert state.networks["a" * 64] == Network(id="a" * 64, name="n", driver=Driver.BRIDGE)
    assert state.sandboxes["b" * 64] == Sandbox(id="b" * 64, name="c")
    assert state.endpoints == {} and state.made_netns == {}


def test_copy_is_independent():
    state = full_state()
    copy = state.copy()
    copy.networks.clear()
    copy.made_netns.clear()
    assert len(state.networks) == 2 and state.made_netns
