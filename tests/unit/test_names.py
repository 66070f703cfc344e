"""The name table, rule by rule (RESOLUTION.md R1-R8, R12, R12b, R18), without sockets."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from drivers.model import (
    Endpoint,
    EndpointDetached,
    EndpointMode,
    EndpointUpdated,
    NetworkRemoved,
    Sandbox,
    SandboxRemoved,
    Service,
    ServicePort,
    ServiceRemoved,
    ServiceUpdated,
    Task,
    VirtualIP,
)
from resolver.lookup import Outcome, Rule, lookup_dependencies, reverse_address
from resolver.names import QTYPE_A, QTYPE_AAAA, QTYPE_ANY, QTYPE_PTR, QTYPE_SRV
from tests.unit.topology import Topology

QTYPE_MX = 15
QTYPE_TXT = 16


@pytest.fixture
def topo() -> Topology:
    return Topology()


def addrs(*texts: str) -> tuple:
    return tuple(ip_address(t) for t in texts)


def test_r1_default_bridge_names_are_not_visible(topo: Topology) -> None:
    bridge = topo.network("bridge", dns=False)
    a, b = topo.sandbox("a"), topo.sandbox("b")
    topo.attach(a, bridge, "172.17.0.2")
    topo.attach(b, bridge, "172.17.0.3")
    assert not topo.table.has_dns(a.id)
    assert topo.table.lookup(a.id, "b", QTYPE_A).outcome is Outcome.FORWARD


def test_r1_scope_is_the_attached_networks_only(topo: Topology) -> None:
    n1, n2 = topo.network("n1"), topo.network("n2")
    a, b, c = topo.sandbox("a"), topo.sandbox("b"), topo.sandbox("c")
    topo.attach(a, n1, "10.1.0.2")
    topo.attach(b, n1, "10.1.0.3")
    topo.attach(c, n2, "10.2.0.2")
    assert topo.table.lookup(a.id, "b", QTYPE_A).addresses == addrs("10.1.0.3")
    assert topo.table.lookup(a.id, "c", QTYPE_A).outcome is Outcome.FORWARD
    assert topo.table.lookup(c.id, "a", QTYPE_A).outcome is Outcome.FORWARD


def test_r1_bridge_plus_user_network_sees_only_user_names(topo: Topology) -> None:
    bridge, user = topo.network("bridge", dns=False), topo.network("user")
    a, b, c = topo.sandbox("a"), topo.sandbox("b"), topo.sandbox("c")
    topo.attach(a, bridge, "172.17.0.2")
    topo.attach(a, user, "10.3.0.2")
    topo.attach(b, user, "10.3.0.3")
    topo.attach(c, bridge, "172.17.0.3")
    assert topo.table.has_dns(a.id)
    assert [n.name for n in topo.table.view(a.id).networks] == ["user"]
    assert topo.table.lookup(a.id, "b", QTYPE_A).outcome is Outcome.RECORDS
    assert topo.table.lookup(a.id, "c", QTYPE_A).outcome is Outcome.FORWARD


def test_r2_every_name_of_an_endpoint(topo: Topology) -> None:
    n = topo.network("n")
    a = topo.sandbox("a")
    b = topo.sandbox("web", hostname="webhost")
    topo.attach(a, n, "10.4.0.2")
    topo.attach(b, n, "10.4.0.3", aliases=("www", "front.end"), hostname="webhost")
    for name in ("web", "www", "front.end", b.short_id, "webhost"):
        found = topo.table.lookup(a.id, name, QTYPE_A)
        assert found.rule is Rule.R2_NAME, name
        assert found.addresses == addrs("10.4.0.3"), name
    assert topo.table.lookup(a.id, b.id[:11], QTYPE_A).outcome is Outcome.FORWARD


def test_r2_case_insensitive_and_trailing_dot(topo: Topology) -> None:
    n = topo.network("n")
    a, b = topo.sandbox("a"), topo.sandbox("Web")
    topo.attach(a, n, "10.5.0.2")
    topo.attach(b, n, "10.5.0.3")
    for name in ("web", "WEB", "wEb.", "Web."):
        assert topo.table.lookup(a.id, name, QTYPE_A).addresses == addrs("10.5.0.3")


def test_r2_task_name_answers(topo: Topology) -> None:
    n = topo.network("n")
    a, t = topo.sandbox("a"), topo.sandbox("t1")
    topo.attach(a, n, "10.6.0.2")
    topo.attach(t, n, "10.6.0.9", task=Task("svc-id", "web", 1, "abc123"))
    assert topo.table.lookup(a.id, "web.1.abc123", QTYPE_A).addresses == addrs("10.6.0.9")


def test_r3_name_dot_network_only_on_that_network(topo: Topology) -> None:
    n1, n2, n3 = topo.network("n1"), topo.network("n2"), topo.network("n3")
    a, b1, b2, b3 = (topo.sandbox(x) for x in ("a", "b", "b2", "b3"))
    topo.attach(a, n1, "10.7.1.2")
    topo.attach(a, n2, "10.7.2.2")
    topo.attach(b1, n1, "10.7.1.3")
    b2_ep = topo.attach(b2, n2, "10.7.2.3", aliases=("b",))
    topo.attach(b3, n3, "10.7.3.3", aliases=("b",))
    assert topo.table.lookup(a.id, "b.n1", QTYPE_A).addresses == addrs("10.7.1.3")
    assert topo.table.lookup(a.id, "b.n2", QTYPE_A).addresses == b2_ep.addresses
    # n3 is not attached: `b.n3` is not local at all.
    assert topo.table.lookup(a.id, "b.n3", QTYPE_A).outcome is Outcome.FORWARD


def test_r3_dotted_names_and_dotted_networks(topo: Topology) -> None:
    dotted = topo.network("b.c")
    a, x = topo.sandbox("a"), topo.sandbox("x")
    topo.attach(a, dotted, "10.8.0.2")
    topo.attach(x, dotted, "10.8.0.3", aliases=("a.b.c",))
    # `a.b.c` first as a whole name, everywhere.
    assert topo.table.lookup(a.id, "a.b.c", QTYPE_A).addresses == addrs("10.8.0.3")
    # `a` on network `b.c`.
    assert topo.table.lookup(x.id, "x.b.c", QTYPE_A).addresses == addrs("10.8.0.3")
    assert topo.table.lookup(x.id, "a.b.c.", QTYPE_A).addresses == addrs("10.8.0.3")


def test_r3_first_network_in_connect_order_with_the_family_wins(topo: Topology) -> None:
    first, second = topo.network("first"), topo.network("second")
    a, b = topo.sandbox("a"), topo.sandbox("b")
    topo.attach(a, first, "10.9.1.2")
    topo.attach(a, second, "10.9.2.2")
    topo.attach(b, first, "10.9.1.3")
    topo.attach(b, second, "10.9.2.3", "fd00:9::3")
    assert topo.table.lookup(a.id, "b", QTYPE_A).addresses == addrs("10.9.1.3")
    # Docker >= 28 stops at `first` and says NODATA; netdns goes on to the network with AAAA.
    aaaa = topo.table.lookup(a.id, "b", QTYPE_AAAA)
    assert aaaa.addresses == addrs("fd00:9::3")
    assert aaaa.network == "second"


def test_r3b_a_name_under_the_runtime_domain_answers_on_every_network() -> None:
    topo = Topology(domains=("dns.podman",))
    n1, n2 = topo.network("n1"), topo.network("n2")
    a, b, c = topo.sandbox("a"), topo.sandbox("b"), topo.sandbox("c")
    topo.attach(a, n1, "10.0.1.2")
    topo.attach(a, n2, "10.0.2.2")
    topo.attach(b, n1, "10.0.1.3", aliases=("db",))
    topo.attach(c, n2, "10.0.2.4")
    for name in ("b.dns.podman", "DB.dns.podman.", "c.dns.podman"):
        found = topo.table.lookup(a.id, name, QTYPE_A)
        assert found.outcome is Outcome.RECORDS, name
    assert topo.table.lookup(a.id, "c.dns.podman", QTYPE_A).addresses == addrs("10.0.2.4")
    # Only the asker's networks: b does not see c.
    assert topo.table.lookup(b.id, "c.dns.podman", QTYPE_A).rule is Rule.R3B_DOMAIN


def test_r3b_a_name_not_local_under_the_domain_is_nxdomain_never_forwarded() -> None:
    topo = Topology(domains=("dns.podman",))
    n = topo.network("n", dns_servers=("127.9.9.9",))
    a = topo.sandbox("a")
    topo.attach(a, n, "10.0.1.2")
    for name in ("ghost.dns.podman", "dns.podman"):
        found = topo.table.lookup(a.id, name, QTYPE_A)
        assert (found.rule, found.outcome) == (Rule.R3B_DOMAIN, Outcome.NXDOMAIN), name
    assert topo.table.lookup(a.id, "a.dns.podman", QTYPE_AAAA).outcome is Outcome.NODATA  # R6
    assert topo.table.lookup(a.id, "ghost", QTYPE_A).outcome is Outcome.FORWARD
    kept = Topology(domains=("dns.podman",), keep_single_labels=True)
    k = kept.sandbox("k")
    kept.attach(k, kept.network("n", dns_servers=("127.9.9.9",)), "10.0.1.2")
    assert kept.table.lookup(k.id, "ghost", QTYPE_A).rule is Rule.R3B_DOMAIN
    assert kept.table.lookup(k.id, "ghost.example", QTYPE_A).outcome is Outcome.FORWARD
    # Without the domain the same name is an outside one.
    plain = Topology()
    m = plain.network("n", dns_servers=("127.9.9.9",))
    b = plain.sandbox("b")
    plain.attach(b, m, "10.0.1.2")
    assert plain.table.lookup(b.id, "b.dns.podman", QTYPE_A).outcome is Outcome.FORWARD


def test_r4_shared_alias_gives_every_address(topo: Topology) -> None:
    n = topo.network("n")
    a, b, c = topo.sandbox("a"), topo.sandbox("b"), topo.sandbox("c")
    topo.attach(a, n, "10.10.0.2")
    topo.attach(b, n, "10.10.0.3", aliases=("pool",))
    topo.attach(c, n, "10.10.0.4", aliases=("pool",))
    found = topo.table.lookup(a.id, "pool", QTYPE_A)
    assert found.rule is Rule.R4_SHARED
    assert sorted(found.addresses) == sorted(addrs("10.10.0.3", "10.10.0.4"))


def _service_topology(topo: Topology, mode: EndpointMode) -> tuple[Sandbox, Service]:
    n = topo.network("n")
    client = topo.sandbox("client")
    topo.attach(client, n, "10.11.0.2")
    service = Service(
        id="svc-id", name="web", networks=(n.id,), mode=mode,
        vips=(VirtualIP(n.id, IPv4Address("10.11.0.100")),) if mode is EndpointMode.VIP else (),
        ports=(ServicePort("http", "tcp", 80),), replicas=2,
    )  # fmt: skip
    topo.table.apply(ServiceUpdated(service))
    for slot in (1, 2):
        task = topo.sandbox(f"web.{slot}")
        topo.attach(task, n, f"10.11.0.{10 + slot}", task=Task(service.id, "web", slot, f"t{slot}"))
    return client, service


def test_r5_vip_service_answers_the_vip_and_tasks_answers_every_task(topo: Topology) -> None:
    client, _ = _service_topology(topo, EndpointMode.VIP)
    found = topo.table.lookup(client.id, "web", QTYPE_A)
    assert (found.rule, found.addresses) == (Rule.R5_SERVICE, addrs("10.11.0.100"))
    tasks = topo.table.lookup(client.id, "tasks.web", QTYPE_A)
    assert sorted(tasks.addresses) == sorted(addrs("10.11.0.11", "10.11.0.12"))


def test_r5_dnsrr_service_answers_every_task(topo: Topology) -> None:
    client, _ = _service_topology(topo, EndpointMode.DNSRR)
    found = topo.table.lookup(client.id, "WEB", QTYPE_A)
    assert sorted(found.addresses) == sorted(addrs("10.11.0.11", "10.11.0.12"))


def test_r5_srv_one_record_per_task_with_addresses(topo: Topology) -> None:
    client, _ = _service_topology(topo, EndpointMode.VIP)
    found = topo.table.lookup(client.id, "_http._tcp.web", QTYPE_SRV)
    assert found.rule is Rule.R5_SERVICE
    assert sorted((t.port, t.target) for t in found.srv) == [(80, "web.1.t1"), (80, "web.2.t2")]
    assert {t.addresses for t in found.srv} == {addrs("10.11.0.11"), addrs("10.11.0.12")}
    # A port the service does not publish: the name exists, so NODATA (R7).
    assert topo.table.lookup(client.id, "_dns._udp.web", QTYPE_SRV).outcome is Outcome.NODATA


def test_r5_service_removed_is_gone(topo: Topology) -> None:
    client, service = _service_topology(topo, EndpointMode.VIP)
    topo.table.apply(ServiceRemoved(service))
    assert topo.table.lookup(client.id, "web", QTYPE_A).outcome is Outcome.FORWARD


def test_r6_aaaa_for_ipv4_only_name_is_nodata(topo: Topology) -> None:
    n = topo.network("n")
    a, b = topo.sandbox("a"), topo.sandbox("b")
    topo.attach(a, n, "10.12.0.2")
    topo.attach(b, n, "10.12.0.3")
    found = topo.table.lookup(a.id, "b", QTYPE_AAAA)
    assert (found.rule, found.outcome) == (Rule.R6_NODATA, Outcome.NODATA)


def test_r6_aaaa_on_ipv6_network(topo: Topology) -> None:
    n = topo.network("n")
    a, b = topo.sandbox("a"), topo.sandbox("b")
    topo.attach(a, n, "10.13.0.2", "fd00:13::2")
    topo.attach(b, n, "10.13.0.3", "fd00:13::3")
    assert topo.table.lookup(a.id, "b", QTYPE_AAAA).addresses == addrs("fd00:13::3")
    assert topo.table.lookup(a.id, "b", QTYPE_A).addresses == addrs("10.13.0.3")


# PTR of a name that is not a reverse name is a question about that name like any other.
@pytest.mark.parametrize("qtype", [QTYPE_MX, QTYPE_TXT, 257, QTYPE_SRV, QTYPE_PTR])
def test_r7_other_types_for_local_names_are_nodata(topo: Topology, qtype: int) -> None:
    n = topo.network("n")
    a, b = topo.sandbox("a"), topo.sandbox("b")
    topo.attach(a, n, "10.14.0.2")
    topo.attach(b, n, "10.14.0.3")
    found = topo.table.lookup(a.id, "b", qtype)
    assert (found.rule, found.outcome) == (Rule.R7_OTHER_TYPE, Outcome.NODATA)


def test_r7_ptr_of_a_name_depends_on_the_name_and_of_a_reverse_name_on_the_address() -> None:
    # What the hot cache drops on a change: `web` PTR must go when `web` changes.
    assert set(lookup_dependencies("Web.App", QTYPE_PTR)) == {"web.app", "web"}
    assert lookup_dependencies("3.0.14.10.IN-ADDR.ARPA.", QTYPE_PTR) == ("3.0.14.10.in-addr.arpa",)


def test_r7_any_answers_a_and_aaaa(topo: Topology) -> None:
    n = topo.network("n")
    a, b = topo.sandbox("a"), topo.sandbox("b")
    topo.attach(a, n, "10.15.0.2")
    topo.attach(b, n, "10.15.0.3", "fd00:15::3")
    assert topo.table.lookup(a.id, "b", QTYPE_ANY).addresses == addrs("10.15.0.3", "fd00:15::3")


def test_r8_ptr_for_container_task_and_vip(topo: Topology) -> None:
    client, _ = _service_topology(topo, EndpointMode.VIP)
    ptr = topo.table.lookup(client.id, "2.0.11.10.in-addr.arpa", QTYPE_PTR)
    assert (ptr.rule, ptr.ptr) == (Rule.R8_PTR, ("client.n.",))
    task = topo.table.lookup(client.id, "11.0.11.10.IN-ADDR.ARPA.", QTYPE_PTR)
    assert task.ptr == ("web.1.t1.n.",)
    vip = topo.table.lookup(client.id, "100.0.11.10.in-addr.arpa", QTYPE_PTR)
    assert vip.ptr == ("web.n.",)
    assert topo.table.lookup(client.id, "9.9.9.10.in-addr.arpa", QTYPE_PTR).outcome is (
        Outcome.FORWARD
    )


def test_r8_ptr_ipv6(topo: Topology) -> None:
    n = topo.network("n")
    a, b = topo.sandbox("a"), topo.sandbox("b")
    topo.attach(a, n, "10.16.0.2", "fd00:16::2")
    topo.attach(b, n, "10.16.0.3", "fd00:16::3")
    name = IPv6Address("fd00:16::3").reverse_pointer
    assert topo.table.lookup(a.id, name, QTYPE_PTR).ptr == ("b.n.",)


def test_r8_ptr_not_for_other_networks(topo: Topology) -> None:
    n1, n2 = topo.network("n1"), topo.network("n2")
    a, b = topo.sandbox("a"), topo.sandbox("b")
    topo.attach(a, n1, "10.17.1.2")
    topo.attach(b, n2, "10.17.2.3")
    assert topo.table.lookup(a.id, "3.2.17.10.in-addr.arpa", QTYPE_PTR).outcome is (Outcome.FORWARD)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("4.3.2.1.in-addr.arpa", "1.2.3.4"),
        ("4.3.2.1.in-addr.arpa.", "1.2.3.4"),
        ("3.2.1.in-addr.arpa", None),
        ("x.3.2.1.in-addr.arpa", None),
        ("256.3.2.1.in-addr.arpa", None),
        ("example.com", None),
        (IPv6Address("2001:db8::1").reverse_pointer, "2001:db8::1"),
        ("1.0.ip6.arpa", None),
    ],
)
def test_r8_reverse_names_parse(name: str, expected: str | None) -> None:
    got = reverse_address(name)
    assert (str(got) if got else None) == expected


def test_r11_upstreams_sandbox_then_network_then_daemon(topo: Topology) -> None:
    n = topo.network("n", dns_servers=("127.9.9.9",))
    plain = topo.network("plain")
    a = topo.sandbox("a", dns_servers=("127.8.8.8",))
    b, c = topo.sandbox("b"), topo.sandbox("c")
    topo.attach(a, n, "10.18.0.2")
    topo.attach(b, n, "10.18.0.3")
    topo.attach(c, plain, "10.18.1.3")
    ups = [topo.table.lookup(s.id, "example.com", QTYPE_A).upstreams for s in (a, b, c)]
    assert [(u.servers, u.from_sandbox) for u in ups] == [
        (("127.8.8.8",), True),
        (("127.9.9.9",), True),
        ((), False),
    ]


def test_r12_internal_only_never_forwards_to_daemon_upstreams(topo: Topology) -> None:
    internal = topo.network("internal", internal=True)
    a = topo.sandbox("a")
    topo.attach(a, internal, "10.19.0.2")
    found = topo.table.lookup(a.id, "example.com", QTYPE_A)
    assert (found.rule, found.outcome) == (Rule.R12_INTERNAL, Outcome.NXDOMAIN)
    ptr = topo.table.lookup(a.id, "1.1.1.1.in-addr.arpa", QTYPE_PTR)
    assert ptr.outcome is Outcome.NXDOMAIN


def test_r12_internal_with_its_own_upstream_forwards_from_the_sandbox(topo: Topology) -> None:
    internal = topo.network("internal", internal=True, dns_servers=("10.20.0.53",))
    a = topo.sandbox("a")
    topo.attach(a, internal, "10.20.0.2")
    found = topo.table.lookup(a.id, "example.com", QTYPE_A)
    assert found.outcome is Outcome.FORWARD
    assert found.upstreams.from_sandbox


def test_r12_internal_plus_external_network_forwards(topo: Topology) -> None:
    internal, outside = topo.network("internal", internal=True), topo.network("outside")
    a = topo.sandbox("a")
    topo.attach(a, internal, "10.21.0.2")
    topo.attach(a, outside, "10.21.1.2")
    assert topo.table.lookup(a.id, "example.com", QTYPE_A).outcome is Outcome.FORWARD


def test_r12b_single_label_with_ndots_is_nodata(topo: Topology) -> None:
    n = topo.network("n")
    a = topo.sandbox("a", dns_options=("ndots:2",))
    b = topo.sandbox("b", dns_options=("ndots:0",))
    topo.attach(a, n, "10.22.0.2")
    topo.attach(b, n, "10.22.0.3")
    found = topo.table.lookup(a.id, "printer", QTYPE_A)
    assert (found.rule, found.outcome) == (Rule.R12B_NDOTS, Outcome.NODATA)
    assert topo.table.lookup(a.id, "printer.lan", QTYPE_A).outcome is Outcome.FORWARD
    # ndots:0 (R17's default) keeps forwarding single labels: Docker's bug is not copied.
    assert topo.table.lookup(b.id, "printer", QTYPE_A).outcome is Outcome.FORWARD


def test_r18_detach_update_and_remove_change_answers_at_once(topo: Topology) -> None:
    n = topo.network("n")
    a, b = topo.sandbox("a"), topo.sandbox("b")
    topo.attach(a, n, "10.23.0.2")
    ep = topo.attach(b, n, "10.23.0.3", aliases=("old",))
    topo.table.apply(EndpointUpdated(Endpoint(**{**_fields(ep), "aliases": ("new",)})))
    assert topo.table.lookup(a.id, "old", QTYPE_A).outcome is Outcome.FORWARD
    assert topo.table.lookup(a.id, "new", QTYPE_A).addresses == addrs("10.23.0.3")
    topo.table.apply(EndpointDetached(ep))
    assert topo.table.lookup(a.id, "b", QTYPE_A).outcome is Outcome.FORWARD
    assert topo.table.lookup(a.id, "3.0.23.10.in-addr.arpa", QTYPE_PTR).outcome is Outcome.FORWARD
    topo.table.apply(SandboxRemoved(a))
    assert not topo.table.has_dns(a.id)


def test_network_removed_drops_its_names(topo: Topology) -> None:
    n = topo.network("n")
    a = topo.sandbox("a")
    topo.attach(a, n, "10.24.0.2")
    topo.table.apply(NetworkRemoved(n))
    assert topo.table.view(a.id).networks == ()
    assert topo.table.name_count() == 0


def test_apply_is_incremental_not_a_rebuild(topo: Topology) -> None:
    """Applying an event touches only that endpoint's names: the other entries stay the same
    objects."""
    n = topo.network("n")
    sandboxes = [topo.sandbox(f"s{i}") for i in range(50)]
    for i, s in enumerate(sandboxes):
        topo.attach(s, n, f"10.25.0.{i + 2}")
    index = topo.table._networks[n.id]
    before = {name: id(ids) for name, ids in index.endpoints_by_name.items()}
    extra = topo.sandbox("extra")
    topo.attach(extra, n, "10.25.1.2")
    after = {name: id(ids) for name, ids in index.endpoints_by_name.items()}
    assert all(after[name] == before[name] for name in before)
    assert set(after) - set(before) == {"extra", extra.short_id}


def _fields(endpoint: Endpoint) -> dict:
    return {f: getattr(endpoint, f) for f in endpoint.__dataclass_fields__}
