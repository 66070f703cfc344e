"""The nft script of service VIP routes (drivers/vip.py): pure text, checked line by line.

Loading it into a real namespace, and connections spreading over the tasks, is covered by
tests/netns/test_services.py.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from drivers.errors import Invalid
from drivers.model import ServicePort
from drivers.vip import NFT_TABLE, VipRoute, vip_rules, vip_ruleset

VIP = IPv4Address("10.20.0.2")
TASKS = (IPv4Address("10.20.0.3"), IPv4Address("10.20.0.4"), IPv4Address("10.20.0.5"))
HTTP = ServicePort("http", "tcp", 80)
DNS = ServicePort("dns", "udp", 53)
RESET = f"add table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n"


def test_no_routes_only_removes_the_table():
    assert vip_ruleset([]) == RESET


def test_ruleset_replaces_the_table_with_a_nat_output_chain():
    script = vip_ruleset([VipRoute(VIP, (HTTP,), TASKS)])
    assert script.startswith(RESET)
    assert f"table ip {NFT_TABLE} {{" in script
    assert "type nat hook output priority -100; policy accept;" in script
    assert (
        "ip daddr 10.20.0.2 tcp dport 80 dnat to numgen random mod 3 map "
        "{ 0 : 10.20.0.3, 1 : 10.20.0.4, 2 : 10.20.0.5 }"
    ) in script


def test_one_rule_per_published_port_and_protocol():
    rules = vip_rules(VipRoute(VIP, (HTTP, DNS), TASKS[:2]))
    assert [r.split(" dnat")[0] for r in rules] == [
        "ip daddr 10.20.0.2 tcp dport 80",
        "ip daddr 10.20.0.2 udp dport 53",
    ]


def test_without_ports_every_port_goes_to_the_tasks():
    assert vip_rules(VipRoute(VIP, (), TASKS[:1])) == ["ip daddr 10.20.0.2 dnat to 10.20.0.3"]


def test_a_service_scaled_to_zero_has_no_rule():
    assert vip_rules(VipRoute(VIP, (HTTP,), ())) == []
    assert vip_ruleset([VipRoute(VIP, (HTTP,), ())]) == RESET


def test_same_routes_same_text_whatever_their_order():
    other = VipRoute(IPv4Address("10.20.0.9"), (), TASKS)
    first = VipRoute(VIP, (HTTP,), TASKS)
    assert vip_ruleset([other, first]) == vip_ruleset([first, other])


@pytest.mark.parametrize(
    ("port", "match"),
    [(ServicePort("x", "sctp", 80), "tcp or udp"), (ServicePort("x", "tcp", 0), "1-65535")],
)
def test_bad_ports_are_refused(port, match):
    with pytest.raises(Invalid, match=match):
        vip_rules(VipRoute(VIP, (port,), TASKS))
