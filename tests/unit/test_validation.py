"""Name and DNS-setting validation (drivers/validation.py): docker's rules plus DNS-sized names."""

from __future__ import annotations

import pytest

from drivers.errors import Invalid
from drivers.validation import (
    check_aliases,
    check_container_name,
    check_dns_name,
    check_dns_options,
    check_dns_search,
    check_dns_servers,
    check_hostname,
    check_network_name,
)


@pytest.mark.parametrize("name", ["web", "Web-1", "my_app.v2", "0", "a-", "x" * 63])
def test_docker_style_names_are_accepted(name):
    assert check_container_name(name) == name
    assert check_network_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "container name is empty"),
        ("-web", r"container name '-web' is not valid: it must match \[a-zA-Z0-9\]"),
        ("_web", "is not valid"),
        ("web app", "is not valid"),
        ("web/1", "is not valid"),
        ("wéb", "is not valid"),
        ("a..b", "empty label"),
        ("web.", "empty label"),
        ("a" * 64, "at most 63"),
        (".".join(["a" * 60] * 4), "at most 200"),
    ],
)
def test_bad_container_names_are_invalid_naming_the_input_and_rule(name, message):
    with pytest.raises(Invalid, match=message):
        check_container_name(name)


def test_network_name_errors_say_network():
    with pytest.raises(Invalid, match="network name 'a b'"):
        check_network_name("a b")


@pytest.mark.parametrize("alias", ["db", "db.internal", "my_db", "a1-b2", "x" * 63])
def test_dns_aliases_are_accepted(alias):
    assert check_dns_name(alias) == alias


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("", "alias is empty"),
        ("-db", "label '-db' is not a DNS label"),
        ("db-", "label 'db-' is not a DNS label"),
        ("d b", "not a DNS label"),
        ("db.", "empty label"),
        ("x" * 64, "at most 63"),
        (".".join(["x" * 63] * 4), "253"),  # 255 characters
    ],
)
def test_bad_aliases_are_invalid_naming_the_alias_and_rule(alias, message):
    with pytest.raises(Invalid, match=message):
        check_dns_name(alias)


def test_alias_of_exactly_253_characters_is_accepted():
    alias = ".".join(["x" * 63] * 3 + ["x" * 61])
    assert len(alias) == 253
    assert check_dns_name(alias) == alias


def test_aliases_drop_case_insensitive_repeats_keeping_order():
    assert check_aliases(["db", "cache", "DB", "db"]) == ("db", "cache")


def test_hostname_errors_say_hostname():
    with pytest.raises(Invalid, match="hostname 'bad host'"):
        check_hostname("bad host")


def test_dns_servers_take_ip_ip_port_and_bracketed_v6_port():
    servers = ["10.0.0.1", "10.0.0.1:5353", "fd00::1", "[fd00::1]:53"]
    assert check_dns_servers(servers) == tuple(servers)


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("dns.example", "is not an IP address"),
        ("10.0.0.1:0", "port '0'"),
        ("10.0.0.1:http", "port 'http'"),
        ("[fd00::1", "is not an address"),
    ],
)
def test_bad_dns_servers_are_invalid(server, message):
    with pytest.raises(Invalid, match=message):
        check_dns_servers([server])


def test_dns_search_and_options():
    assert check_dns_search(["corp.example", "lab"]) == ("corp.example", "lab")
    assert check_dns_options(["ndots:2", "edns0", "timeout:1"]) == ("ndots:2", "edns0", "timeout:1")
    with pytest.raises(Invalid, match=r"--dns-search domain 'a\.\.b'"):
        check_dns_search(["a..b"])
    with pytest.raises(Invalid, match="--dns-option 'ndots 2'"):
        check_dns_options(["ndots 2"])
