"""IPAM (drivers/ipam.py): subnet planning with docker's defaults, and address pools."""

from __future__ import annotations

import time
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

import pytest

from drivers.errors import Conflict, Invalid
from drivers.ipam import (
    DEFAULT_BRIDGE_SUBNET,
    Ipam,
    default_subnet,
    parse_address,
    parse_subnet,
    plan_ipam,
)
from drivers.model import Driver, Network


def plan(*subnets: str, gateway=None, ip_range=None, ipv6=False, taken=(DEFAULT_BRIDGE_SUBNET,)):
    return plan_ipam(
        subnets, gateway, ip_range, ipv6=ipv6, taken=[ip_network(t) for t in taken],
        network_name="net",
    )  # fmt: skip


def network_with(*subnets: str, **kw) -> Network:
    return Network(id="n1", name="net", driver=Driver.BRIDGE, ipam=plan(*subnets, **kw))


def pools_of(network: Network) -> Ipam:
    ipam = Ipam()
    ipam.add_network(network)
    return ipam


# -- planning ------------------------------------------------------------------------------


def test_gateway_defaults_to_first_host_address():
    (config,) = plan("10.1.2.0/24")
    assert config.subnet == IPv4Network("10.1.2.0/24")
    assert config.gateway == ip_address("10.1.2.1")
    assert config.ip_range is None


def test_explicit_gateway_and_range_belong_to_their_subnet():
    v4, v6 = plan(
        "10.1.0.0/16", "fd00:1::/64", gateway="10.1.255.254", ip_range="10.1.4.0/24", ipv6=True
    )
    assert (v4.gateway, v4.ip_range) == (ip_address("10.1.255.254"), ip_network("10.1.4.0/24"))
    assert (v6.gateway, v6.ip_range) == (ip_address("fd00:1::1"), None)


def test_user_networks_default_to_the_next_free_slash16_after_the_default_bridge():
    (first,) = plan()
    assert first.subnet == IPv4Network("172.18.0.0/16")
    (second,) = plan(taken=(DEFAULT_BRIDGE_SUBNET, "172.18.0.0/16"))
    assert second.subnet == IPv4Network("172.19.0.0/16")


def test_default_subnet_skips_any_overlap_not_only_equal_subnets():
    (config,) = plan(taken=(DEFAULT_BRIDGE_SUBNET, "172.18.5.0/24", "172.19.0.0/17"))
    assert config.subnet == IPv4Network("172.20.0.0/16")


def test_default_subnets_go_on_into_192_168_slash20s_then_conflict():
    taken = [ip_network(f"172.{n}.0.0/16") for n in range(17, 32)]
    assert default_subnet(4, taken) == IPv4Network("192.168.0.0/20")
    taken.append(ip_network("192.168.0.0/16"))
    with pytest.raises(Conflict, match="--subnet"):
        default_subnet(4, taken)


def test_ipv6_without_v6_subnet_gets_a_default_ula_slash64_and_a_v4_subnet():
    v4, v6 = plan(ipv6=True)
    assert v4.subnet == IPv4Network("172.18.0.0/16")
    assert isinstance(v6.subnet, IPv6Network) and v6.subnet.prefixlen == 64
    assert v6.subnet.network_address.is_private
    (_, v6_next) = plan(ipv6=True, taken=(DEFAULT_BRIDGE_SUBNET, str(v6.subnet)))
    assert v6_next.subnet != v6.subnet


def test_overlapping_explicit_subnet_is_a_conflict_naming_both():
    with pytest.raises(Conflict, match=r"10\.0\.0\.0/8 overlaps 10\.1\.0\.0/16"):
        plan("10.0.0.0/8", taken=("10.1.0.0/16",))


def test_explicit_subnet_inside_the_default_bridge_is_a_conflict():
    with pytest.raises(Conflict, match=r"172\.17\.0\.0/16"):
        plan("172.17.3.0/24")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"subnets": ("10.0.0.0/33",)}, Invalid, "not a subnet"),
        ({"subnets": ("banana",)}, Invalid, "'banana' is not a subnet"),
        ({"subnets": ("10.1.2.3/24",)}, Invalid, "did you mean 10.1.2.0/24"),
        ({"subnets": ("10.0.0.0/31",)}, Invalid, "too small"),
        ({"subnets": ("fd00::/64",)}, Invalid, "add --ipv6"),
        ({"subnets": ("10.0.0.0/16", "10.0.1.0/24")}, Invalid, "overlaps --subnet"),
        ({"subnets": ("10.0.0.0/24",), "gateway": "10.9.9.9"}, Invalid, "not inside any"),
        ({"subnets": ("10.0.0.0/24",), "gateway": "10.0.0.255"}, Invalid, "broadcast"),
        ({"subnets": ("10.0.0.0/24",), "gateway": "nope"}, Invalid, "not an IP address"),
        ({"subnets": ("10.0.0.0/24",), "ip_range": "10.0.0.0/16"}, Invalid, "--ip-range"),
        ({"gateway": "10.0.0.1"}, Invalid, "--gateway needs --subnet"),
        ({"ip_range": "10.0.0.0/25"}, Invalid, "--ip-range needs --subnet"),
    ],
)
def test_bad_ipam_input_is_invalid_with_a_message_naming_it(kwargs, error, message):
    subnets = kwargs.pop("subnets", ())
    with pytest.raises(error, match=message):
        plan(*subnets, **kwargs)


def test_parse_helpers_name_the_option():
    with pytest.raises(Invalid, match="--ip-range 'x'"):
        parse_subnet("x", "--ip-range")
    with pytest.raises(Invalid, match="use --ip6"):
        parse_address("fd00::1", "--ip", version=4)


# -- pools ---------------------------------------------------------------------------------


def test_allocation_skips_network_gateway_and_broadcast_then_is_full():
    network = network_with("10.0.0.0/29")  # .0 network, .1 gateway, .7 broadcast
    ipam = pools_of(network)
    got = [ipam.allocate(network, 4, f"c{i}") for i in range(5)]
    assert got == [ip_address(f"10.0.0.{i}") for i in range(2, 7)]
    with pytest.raises(Conflict, match="no free IPv4 address left on network 'net'"):
        ipam.allocate(network, 4, "one-too-many")


def test_custom_gateway_is_skipped_and_first_host_is_free():
    network = network_with("10.0.0.0/29", gateway="10.0.0.3")
    ipam = pools_of(network)
    got = [ipam.allocate(network, 4, f"c{i}") for i in range(5)]
    assert ip_address("10.0.0.3") not in got
    assert ip_address("10.0.0.1") in got


def test_release_is_next_fit_not_immediate_reuse():
    network = network_with("10.0.0.0/29")
    ipam = pools_of(network)
    a = ipam.allocate(network, 4, "a")
    ipam.allocate(network, 4, "b")
    ipam.release(network.id, a)
    assert ipam.allocate(network, 4, "c") == ip_address("10.0.0.4")
    # ... and wraps round to the freed address once the end is reached
    assert [ipam.allocate(network, 4, x) for x in "def"] == [
        ip_address("10.0.0.5"), ip_address("10.0.0.6"), a,
    ]  # fmt: skip


def test_ip_range_bounds_automatic_allocation():
    network = network_with("10.0.0.0/24", ip_range="10.0.0.128/30")
    ipam = pools_of(network)
    got = [ipam.allocate(network, 4, f"c{i}") for i in range(4)]
    assert got == [ip_address(f"10.0.0.{i}") for i in range(128, 132)]
    with pytest.raises(Conflict, match="no free"):
        ipam.allocate(network, 4, "x")


def test_requested_address_outside_range_but_inside_subnet_is_honoured():
    network = network_with("10.0.0.0/24", ip_range="10.0.0.128/25")
    ipam = pools_of(network)
    assert ipam.allocate(network, 4, "static", ip_address("10.0.0.10")) == ip_address("10.0.0.10")


def test_requested_address_in_use_is_a_conflict_naming_the_holder():
    network = network_with("10.0.0.0/24")
    ipam = pools_of(network)
    ipam.allocate(network, 4, "web", ip_address("10.0.0.10"))
    with pytest.raises(Conflict, match=r"10\.0\.0\.10 is already in use on network 'net' by 'web'"):
        ipam.allocate(network, 4, "db", ip_address("10.0.0.10"))


@pytest.mark.parametrize(
    ("address", "error", "message"),
    [
        ("10.0.0.1", Conflict, "is the gateway"),
        ("10.0.0.0", Invalid, "network or broadcast"),
        ("10.0.0.255", Invalid, "network or broadcast"),
        ("10.9.0.5", Invalid, r"--ip 10\.9\.0\.5 is not in network 'net'"),
    ],
)
def test_requested_address_must_be_a_free_host_of_the_subnet(address, error, message):
    network = network_with("10.0.0.0/24")
    with pytest.raises(error, match=message):
        pools_of(network).allocate(network, 4, "c", ip_address(address))


def test_automatic_allocation_steps_over_requested_addresses():
    network = network_with("10.0.0.0/24")
    ipam = pools_of(network)
    ipam.allocate(network, 4, "static", ip_address("10.0.0.2"))
    assert ipam.allocate(network, 4, "dynamic") == ip_address("10.0.0.3")


def test_reserve_restores_allocations_so_nothing_is_handed_out_twice():
    network = network_with("10.0.0.0/29")
    ipam = pools_of(network)
    for held in ("10.0.0.2", "10.0.0.4"):
        ipam.reserve(network, ip_address(held), "stored")
    got = {ipam.allocate(network, 4, f"c{i}") for i in range(3)}
    assert got == {ip_address("10.0.0.3"), ip_address("10.0.0.5"), ip_address("10.0.0.6")}
    with pytest.raises(Conflict):
        ipam.reserve(network, ip_address("10.0.0.4"), "twice")


def test_ipv6_pool_allocates_after_the_gateway_and_quickly_in_a_huge_subnet():
    network = network_with("fd00:1::/64", ipv6=True)
    ipam = pools_of(network)
    assert ipam.has_family(network.id, 6) and ipam.has_family(network.id, 4)
    started = time.monotonic()
    got = [ipam.allocate(network, 6, f"c{i}") for i in range(200)]
    assert time.monotonic() - started < 1.0
    assert got[0] == ip_address("fd00:1::2")
    assert len(set(got)) == 200
    with pytest.raises(Invalid, match="not in network"):
        ipam.allocate(network, 6, "x", ip_address("fd00:2::5"))


def test_network_without_v6_pool_refuses_v6_allocation():
    network = network_with("10.0.0.0/24")
    with pytest.raises(Invalid, match="no IPv6 subnet"):
        pools_of(network).allocate(network, 6, "c")


def test_several_v4_subnets_fill_in_order():
    network = network_with("10.0.0.0/30", "10.0.1.0/30")
    ipam = pools_of(network)
    assert [ipam.allocate(network, 4, x) for x in "ab"] == [
        ip_address("10.0.0.2"), ip_address("10.0.1.2"),
    ]  # fmt: skip
