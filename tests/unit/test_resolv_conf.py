"""The resolv.conf a sandbox gets (R17, and R1 for sandboxes without embedded DNS), and the
parser for the host's. Pure text in, text out, plus the atomic write to a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.errors import Invalid
from resolver.netns import (
    host_resolv_conf,
    parse_resolv_conf,
    remove_resolv_conf,
    resolv_conf_text,
    write_resolv_conf,
)


def directives(text: str) -> list[str]:
    """The lines glibc reads: everything but comments and blanks."""
    return [line for line in text.splitlines() if line and not line.startswith(("#", ";"))]


def dns_text(**overrides: object) -> str:
    given: dict = {
        "dns": True,
        "search": (),
        "options": (),
        "host_nameservers": ("192.0.2.53",),
        "host_search": (),
    }
    given.update(overrides)
    return resolv_conf_text(**given)


def test_r17_dns_sandbox_names_only_the_embedded_server_with_ndots_0() -> None:
    text = dns_text(host_nameservers=("192.0.2.53", "198.51.100.7"))
    assert directives(text) == ["nameserver 127.0.0.11", "options ndots:0"]


def test_r17_dns_search_of_the_sandbox_wins_over_the_hosts() -> None:
    text = dns_text(search=("svc.example", "example"), host_search=("corp.example",))
    assert "search svc.example example" in directives(text)
    assert "corp.example" not in text


def test_r17_without_dns_search_the_hosts_search_domains_are_used() -> None:
    text = dns_text(host_search=("corp.example", "example"))
    assert "search corp.example example" in directives(text)


def test_r17_dns_search_dot_means_no_search_line() -> None:
    text = dns_text(search=(".",), host_search=("corp.example",))
    assert not [line for line in directives(text) if line.startswith("search")]


def test_r17_dns_options_follow_ndots_0() -> None:
    text = dns_text(options=("edns0", "timeout:2"))
    assert directives(text)[-1] == "options ndots:0 edns0 timeout:2"


def test_r17_a_given_ndots_replaces_the_default() -> None:
    text = dns_text(options=("ndots:2", "attempts:3"))
    assert directives(text)[-1] == "options ndots:2 attempts:3"
    assert "ndots:0" not in text


def test_r17_repeated_options_are_written_once() -> None:
    text = dns_text(options=("edns0", "edns0"))
    assert directives(text)[-1] == "options ndots:0 edns0"


def test_r1_non_dns_sandbox_gets_the_hosts_nameservers_and_search() -> None:
    text = resolv_conf_text(
        dns=False, search=(), options=(),
        host_nameservers=("192.0.2.53", "2001:db8::53"), host_search=("corp.example",),
    )  # fmt: skip
    assert directives(text) == [
        "nameserver 192.0.2.53",
        "nameserver 2001:db8::53",
        "search corp.example",
    ]
    assert "127.0.0.11" not in text
    assert "ndots" not in text


def test_r1_non_dns_sandbox_drops_loopback_and_link_local_host_nameservers() -> None:
    text = resolv_conf_text(
        dns=False, search=(), options=(),
        host_nameservers=("127.0.0.53", "::1", "fe80::1", "192.0.2.53"), host_search=(),
    )  # fmt: skip
    assert [line for line in directives(text) if line.startswith("nameserver")] == [
        "nameserver 192.0.2.53"
    ]


def test_r1_non_dns_sandbox_with_only_loopback_host_nameservers_gets_none_and_a_reason() -> None:
    text = resolv_conf_text(
        dns=False, search=(), options=(), host_nameservers=("127.0.0.53",), host_search=(),
    )  # fmt: skip
    assert not [line for line in directives(text) if line.startswith("nameserver")]
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert any("127.0.0.53" in line and "cannot be reached" in line for line in comments)
    # Never a public resolver put in behind the user's back.
    for public in ("8.8.8.8", "8.8.4.4", "1.1.1.1", "9.9.9.9"):
        assert public not in text


def test_r1_non_dns_sandbox_own_dns_servers_replace_the_hosts() -> None:
    text = resolv_conf_text(
        dns=False, search=(), options=("timeout:1",), host_nameservers=("192.0.2.53",),
        host_search=(), nameservers=("203.0.113.5",),
    )  # fmt: skip
    assert directives(text) == ["nameserver 203.0.113.5", "options timeout:1"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("search", ("a b",)), ("search", ("evil\nnameserver 6.6.6.6",)), ("options", ("",))],
)
def test_r17_words_with_whitespace_are_invalid_not_new_lines(
    field: str, value: tuple[str, ...]
) -> None:
    with pytest.raises(Invalid, match="whitespace"):
        dns_text(**{field: value})


def test_parse_resolv_conf_reads_nameservers_and_the_last_search_line() -> None:
    text = (
        "# comment\n"
        "; another comment\n"
        "nameserver 10.255.255.53\n"
        "search old.example\n"
        "  nameserver   127.0.0.53  # trailing words ignored\n"
        "domain only.example\n"
        "search a.example b.example\n"
        "options ndots:1\n"
        "nameserver\n"
    )
    assert parse_resolv_conf(text) == (
        ["10.255.255.53", "127.0.0.53"],
        ["a.example", "b.example"],
    )


def test_parse_resolv_conf_domain_after_search_wins() -> None:
    assert parse_resolv_conf("search a.example b.example\ndomain c.example\n") == (
        [],
        ["c.example"],
    )


def test_host_resolv_conf_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert host_resolv_conf(str(tmp_path / "missing")) == ([], [])


def test_host_resolv_conf_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\nsearch corp.example\n")
    assert host_resolv_conf(str(path)) == (["192.0.2.1"], ["corp.example"])


def test_r17_write_resolv_conf_creates_the_namespace_directory(tmp_path: Path) -> None:
    text = dns_text()
    path = write_resolv_conf("ndunit", text, tmp_path)
    assert path == tmp_path / "ndunit" / "resolv.conf"
    assert path.read_text() == text
    assert path.stat().st_mode & 0o777 == 0o644
    # Rewriting replaces the file whole and leaves no temporary file behind.
    write_resolv_conf("ndunit", "nameserver 192.0.2.9\n", tmp_path)
    assert path.read_text() == "nameserver 192.0.2.9\n"
    assert [p.name for p in path.parent.iterdir()] == ["resolv.conf"]


def test_remove_resolv_conf_removes_file_and_empty_directory_and_tolerates_missing(
    tmp_path: Path,
) -> None:
    write_resolv_conf("ndunit", dns_text(), tmp_path)
    remove_resolv_conf("ndunit", tmp_path)
    assert not (tmp_path / "ndunit").exists()
    remove_resolv_conf("ndunit", tmp_path)  # already gone: not an error


def test_remove_resolv_conf_keeps_a_directory_holding_other_files(tmp_path: Path) -> None:
    write_resolv_conf("ndunit", dns_text(), tmp_path)
    (tmp_path / "ndunit" / "hosts").write_text("192.0.2.1 x\n")
    remove_resolv_conf("ndunit", tmp_path)
    assert not (tmp_path / "ndunit" / "resolv.conf").exists()
    assert (tmp_path / "ndunit" / "hosts").exists()


@pytest.mark.parametrize("name", ["", "..", "a/b"])
def test_write_resolv_conf_rejects_names_that_leave_the_directory(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(Invalid):
        write_resolv_conf(name, "", tmp_path)
