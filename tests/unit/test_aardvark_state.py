"""netdns-aardvark's pure parts (netdns/aardvark/config.py, state.py): netavark's files read and
checked, the model they describe, and the events between two readings, applied to a real
NameTable."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest

from drivers.errors import Invalid
from drivers.model import EndpointAttached, EndpointDetached, EndpointUpdated, SandboxRemoved
from netdns.aardvark.config import PID_FILE, parse_network_file, read_config
from netdns.aardvark.state import Model, changes, model_of
from resolver.lookup import Outcome
from resolver.names import QTYPE_A, QTYPE_AAAA, NameTable

WEB_ID = "f35256b5e2f72ec8cb7d974d4f8841686fc8921fdfbc867285b50164e313f715"
DB_ID = "e5df0cdbe0136a30cc3e848d495d2cc6dada25b7dedc776b4584ce2cbba6f06f"

# aardvark-dns's config.md example, with network-scoped servers and a container's own.
PODNET = (
    "10.0.0.1,fdfd::1 127.8.8.8\n"
    f"{WEB_ID} 10.0.0.2 fdfd::2 testmulti1,web,f35256b5e2f7 127.9.9.9\n"
    f"{DB_ID} 10.0.0.3  testmulti2\n"
)


def test_a_network_file_reads_as_netavark_writes_it() -> None:
    parsed = parse_network_file("podnet", PODNET)
    assert parsed.bind == (ip_address("10.0.0.1"), ip_address("fdfd::1"))
    assert parsed.dns_servers == ("127.8.8.8",)
    web, db = parsed.containers
    assert (web.id, web.names, web.dns_servers) == (
        WEB_ID, ("testmulti1", "web", "f35256b5e2f7"), ("127.9.9.9",),
    )  # fmt: skip
    assert web.ipv4 == (ip_address("10.0.0.2"),) and web.ipv6 == (ip_address("fdfd::2"),)
    assert db.ipv4 == (ip_address("10.0.0.3"),) and db.ipv6 == () and db.dns_servers == ()
    only_v6 = parse_network_file("n", f"fdfd::1\n{DB_ID}  fdfd::3 db\n").containers[0]
    assert only_v6.ipv4 == () and only_v6.ipv6 == (ip_address("fdfd::3"),)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty"),
        ("10.0.0.x\n", r"podnet:1: '10.0.0.x' is not a list of IP addresses"),
        ("10.0.0.1\nabc 10.0.0.2\n", "podnet:2: expected ID IPV4S IPV6S NAMES"),
        ("10.0.0.1\nabc fdfd::2 10.0.0.2 web\n", "podnet:2: IPv4 addresses come second"),
        ("10.0.0.1\nabc 10.0.0.2  ,\n", "podnet:2: a container needs an id and at least one name"),
        ("10.0.0.1 not-an-ip\n", "podnet:1: 'not-an-ip'"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_line(text: str, match: str) -> None:
    with pytest.raises(Invalid, match=match):
        parse_network_file("podnet", text)


def test_a_bad_file_keeps_what_was_read_before_and_the_pid_file_is_no_network(
    tmp_path: Path,
) -> None:
    (tmp_path / "podnet").write_text(PODNET)
    (tmp_path / PID_FILE).write_text("1234")
    first = read_config(tmp_path, {})
    assert set(first) == {"podnet"}
    (tmp_path / "podnet").write_text("10.0.0.1\nhalf a li")  # a bad line: nothing lost
    (tmp_path / "other").write_text("10.0.1.1\n")
    second = read_config(tmp_path, first)
    assert second["podnet"] == first["podnet"] and second["other"].containers == ()
    (tmp_path / "podnet").unlink()
    assert set(read_config(tmp_path, second)) == {"other"}


def test_the_model_has_one_sandbox_per_container_and_an_endpoint_per_network() -> None:
    other = f"10.0.1.1\n{WEB_ID} 10.0.1.2  testmulti1,webby\n"
    model = model_of(
        {"podnet": parse_network_file("podnet", PODNET), "other": parse_network_file("o", other)}
    )
    assert set(model.sandboxes) == {WEB_ID, DB_ID}
    web = model.sandboxes[WEB_ID]
    assert (web.name, web.dns_servers) == ("testmulti1", ("127.9.9.9",))
    assert model.networks["podnet"].dns_servers == ("127.8.8.8",)
    on_other = model.endpoints[f"{WEB_ID}@other"]
    assert (on_other.name, on_other.aliases, str(on_other.ipv4)) == (
        "testmulti1", ("webby",), "10.0.1.2",
    )  # fmt: skip
    assert model.sandbox_by_address() == {
        "10.0.0.2": WEB_ID, "fdfd::2": WEB_ID, "10.0.1.2": WEB_ID, "10.0.0.3": DB_ID,
    }  # fmt: skip


def table_of(*events_lists: list) -> NameTable:
    table = NameTable(domains=("dns.podman",), keep_single_labels=True)
    for events in events_lists:
        table.apply_all(events)
    return table


def test_the_changes_between_two_readings_take_the_table_there() -> None:
    before = model_of({"podnet": parse_network_file("podnet", PODNET)})
    moved = PODNET.replace("10.0.0.3  testmulti2", "10.0.0.33  testmulti2,cache")
    after_text = "\n".join(line for line in moved.split("\n") if not line.startswith(WEB_ID))
    after = model_of({"podnet": parse_network_file("podnet", after_text)})
    step = changes(before, after)
    assert [type(e) for e in step] == [EndpointDetached, EndpointUpdated, SandboxRemoved]
    followed = table_of(changes(Model(), before), step)
    fresh = table_of(changes(Model(), after))
    for name in ("testmulti1", "testmulti2", "cache", "cache.dns.podman", "web"):
        for qtype in (QTYPE_A, QTYPE_AAAA):
            assert followed.lookup(DB_ID, name, qtype) == fresh.lookup(DB_ID, name, qtype), name
    assert fresh.lookup(DB_ID, "cache", QTYPE_A).addresses == (ip_address("10.0.0.33"),)
    assert fresh.lookup(DB_ID, "testmulti1", QTYPE_A).outcome is Outcome.NXDOMAIN
    assert changes(after, after) == []
    assert [type(e) for e in changes(Model(), before) if isinstance(e, EndpointAttached)] == [
        EndpointAttached, EndpointAttached,
    ]  # fmt: skip
