"""What real clients get from a listener (R2-R10, R12, R15): the real `dig`, and dnspython.

One server for the module (tests/proto/harness.py): listeners for a sandbox on one network
(CLIENT1), one on two (CLIENT2: appnet, then v6net) and one on an internal network only. Names
that are not local go to a dnsmasq of the test's own, which knows `web.test` and answers
NXDOMAIN for everything else.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from bench.labs.upstreams import Dnsmasq
from tests.proto.harness import (
    API_TASKS_V4,
    API_VIP,
    CLIENT1,
    CLIENT2,
    CLIENT_INTERNAL,
    CLIENTS,
    DB_V4,
    DUAL_APPNET_V4,
    DUAL_V6,
    MANY_V4,
    POOL_V4,
    RR_TASKS_V4,
    SIX_V4,
    SIX_V6,
    VAULT_V4,
    WEB_V4,
    ServerThread,
    api_task_names,
    dig,
    sample_table,
    sandbox_id,
)

UDP_MIN = 512


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with (
        Dnsmasq() as upstream,
        ServerThread(sample_table(), CLIENTS, upstreams=[upstream.server]) as running,
    ):
        yield running


def ask(
    server: ServerThread,
    sandbox: str,
    name: str,
    rdtype: str = "A",
    *,
    tcp: bool = False,
    edns: int | None = None,
    payload: int = 1232,
) -> dns.message.Message:
    if edns is None:
        query = dns.message.make_query(name, rdtype, use_edns=False)
    else:
        query = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload)
    where, port = server.address(sandbox), server.port(sandbox)
    if tcp:
        return dns.query.tcp(query, where, port=port, timeout=2)
    return dns.query.udp(query, where, port=port, timeout=2)


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


# -- R2 names ----------------------------------------------------------------------------------


def test_r2_container_name_answers_its_address(server: ServerThread) -> None:
    result = dig(server, CLIENT1, "web", "A")
    assert result.status == "NOERROR"
    assert result.rdata("A") == [WEB_V4]


@pytest.mark.parametrize("name", ["www", "Front", "front", sandbox_id("web")[:12]])
def test_r2_aliases_and_short_id_answer_the_container_address(
    server: ServerThread, name: str
) -> None:
    assert dig(server, CLIENT1, name, "A").rdata("A") == [WEB_V4]


def test_r2_mixed_case_owner_name_keeps_the_question_case(server: ServerThread) -> None:
    result = dig(server, CLIENT1, "wEb.aPpNeT", "A")
    assert [(rr.owner, rr.rdata) for rr in result.answer] == [("wEb.aPpNeT.", WEB_V4)]
    reply = ask(server, CLIENT1, "WwW", "A")
    assert [rrset.name.to_text() for rrset in reply.answer] == ["WwW."]
    assert reply.question[0].name.to_text() == "WwW."


def test_r2_trailing_dot_changes_nothing(server: ServerThread) -> None:
    assert dig(server, CLIENT1, "db.", "A").rdata("A") == [DB_V4]
    assert dig(server, CLIENT1, "db", "A").rdata("A") == [DB_V4]


# -- R3 qualified names and several networks ---------------------------------------------------


def test_r3_name_qualified_with_an_attached_network(server: ServerThread) -> None:
    assert dig(server, CLIENT1, "web.appnet", "A").rdata("A") == [WEB_V4]
    assert dig(server, CLIENT2, "six.v6net", "AAAA").rdata("AAAA") == [SIX_V6]


def test_r3_answer_comes_from_the_first_network_with_the_asked_family(
    server: ServerThread,
) -> None:
    # `dual` is on appnet (IPv4 only, connected first) and on v6net (IPv4 and IPv6).
    assert dig(server, CLIENT2, "dual", "A").rdata("A") == [DUAL_APPNET_V4]
    assert dig(server, CLIENT2, "dual", "AAAA").rdata("AAAA") == [DUAL_V6]


def test_r1_names_of_networks_the_sandbox_is_not_on_are_not_local(server: ServerThread) -> None:
    # `six` lives only on v6net: CLIENT2 sees it; for CLIENT1 it is forwarded, and the upstream
    # does not know it.
    assert dig(server, CLIENT2, "six", "A").rdata("A") == [SIX_V4]
    result = dig(server, CLIENT1, "six", "A")
    assert (result.status, result.answer) == ("NXDOMAIN", ())


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_r11_names_that_are_not_local_are_answered_by_the_upstream(
    server: ServerThread, transport: str
) -> None:
    result = dig(server, CLIENT1, "web.test", "A", transport)
    assert (result.status, result.rdata("A")) == ("NOERROR", ["10.1.2.3"])
    assert "aa" in result.flags  # dnsmasq's own flags: the upstream's answer, unchanged


# -- R4 shared names, R5 services --------------------------------------------------------------


def test_r4_shared_alias_answers_every_address_in_changing_order(server: ServerThread) -> None:
    result = dig(server, CLIENT1, "pool", "A")
    assert sorted(result.rdata("A")) == sorted(POOL_V4)
    orders = {
        tuple(
            rd.to_text() for rrset in ask(server, CLIENT1, "many", tcp=True).answer for rd in rrset
        )
        for _ in range(5)
    }
    assert len(orders) > 1


def test_r5_vip_service_answers_its_virtual_ip(server: ServerThread) -> None:
    assert dig(server, CLIENT1, "api", "A").rdata("A") == [API_VIP]


def test_r5_tasks_name_and_dnsrr_service_answer_every_task(server: ServerThread) -> None:
    assert sorted(dig(server, CLIENT1, "tasks.api", "A").rdata("A")) == sorted(API_TASKS_V4)
    assert sorted(dig(server, CLIENT1, "rr", "A").rdata("A")) == sorted(RR_TASKS_V4)


def test_r5_srv_gives_one_record_per_task_and_their_addresses(server: ServerThread) -> None:
    result = dig(server, CLIENT1, "_http._tcp.api", "SRV")
    assert result.status == "NOERROR"
    targets = sorted(f"{name}." for name in api_task_names())
    assert sorted(result.rdata("SRV")) == [f"0 0 80 {t}" for t in targets]
    assert sorted((rr.owner, rr.rdata) for rr in result.additional if rr.rtype == "A") == sorted(
        zip(targets, API_TASKS_V4, strict=True)
    )


# -- R6, R7 what a local name answers ----------------------------------------------------------


def test_r6_aaaa_for_an_ipv4_only_name_is_nodata(server: ServerThread) -> None:
    result = dig(server, CLIENT1, "db", "AAAA")
    assert (result.status, result.answer) == ("NOERROR", ())


def test_r6_aaaa_on_an_ipv6_network(server: ServerThread) -> None:
    assert dig(server, CLIENT2, "six", "AAAA").rdata("AAAA") == [SIX_V6]


@pytest.mark.parametrize("rdtype", ["MX", "TXT", "CAA", "SRV"])
def test_r7_other_types_for_a_local_name_are_nodata(server: ServerThread, rdtype: str) -> None:
    result = dig(server, CLIENT1, "web", rdtype)
    assert (result.status, result.answer) == ("NOERROR", ())


def test_r7_any_answers_a_and_aaaa(server: ServerThread) -> None:
    result = dig(server, CLIENT2, "six", "ANY")
    assert sorted((rr.rtype, rr.rdata) for rr in result.answer) == [
        ("A", SIX_V4),
        ("AAAA", SIX_V6),
    ]


def test_r6_r12_nodata_and_nxdomain_differ(server: ServerThread) -> None:
    nodata = ask(server, CLIENT1, "db", "AAAA")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    # An internal-only sandbox never forwards: a name that is not local is NXDOMAIN at once.
    nxdomain = ask(server, CLIENT_INTERNAL, "nothing.example", "A")
    assert (nxdomain.rcode(), nxdomain.answer) == (dns.rcode.NXDOMAIN, [])
    assert dig(server, CLIENT_INTERNAL, "nothing.example").status == "NXDOMAIN"
    assert dig(server, CLIENT_INTERNAL, "vault").rdata("A") == [VAULT_V4]


# -- R8 PTR ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sandbox", "address", "target"),
    [
        (CLIENT1, WEB_V4, "web.appnet."),
        (CLIENT1, API_VIP, "api.appnet."),
        (CLIENT1, API_TASKS_V4[0], f"{api_task_names()[0]}.appnet."),
        (CLIENT2, SIX_V6, "six.v6net."),
    ],
)
def test_r8_ptr_answers_name_dot_network(
    server: ServerThread, sandbox: str, address: str, target: str
) -> None:
    result = dig(server, sandbox, "-x", address)
    assert result.rdata("PTR") == [target]


# -- R9, R10 TTL and flags ---------------------------------------------------------------------


def test_r9_local_answers_carry_the_short_local_ttl(server: ServerThread) -> None:
    assert [rr.ttl for rr in dig(server, CLIENT1, "web").answer] == [5]


def test_r10_flags_qr_ra_set_aa_clear_rd_copied(server: ServerThread) -> None:
    assert dig(server, CLIENT1, "web").flags == {"qr", "rd", "ra"}
    assert dig(server, CLIENT1, "web", "+nordflag").flags == {"qr", "ra"}
    reply = ask(server, CLIENT1, "web")
    assert reply.flags & dns.flags.QR and reply.flags & dns.flags.RA
    assert not reply.flags & dns.flags.AA


def test_r10_edns_opt_echoed_only_when_the_query_has_one(server: ServerThread) -> None:
    assert dig(server, CLIENT1, "web").has_opt
    assert not dig(server, CLIENT1, "web", "+noedns").has_opt
    assert ask(server, CLIENT1, "web", edns=0).edns == 0
    assert ask(server, CLIENT1, "web").edns == -1


# -- R15 transport -----------------------------------------------------------------------------


def test_r15_tcp_answers_as_udp_does(server: ServerThread) -> None:
    assert dig(server, CLIENT1, "web", "+tcp").rdata("A") == [WEB_V4]
    assert addresses(ask(server, CLIENT2, "six", "AAAA", tcp=True)) == [SIX_V6]


def test_r15_udp_without_edns_is_truncated_to_512_bytes_with_tc(server: ServerThread) -> None:
    query = dns.message.make_query("many", "A", use_edns=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(query.to_wire(), (server.address(CLIENT1), server.port(CLIENT1)))
        wire = sock.recv(65535)
    assert len(wire) <= UDP_MIN
    reply = dns.message.from_wire(wire)
    assert reply.id == query.id
    assert reply.flags & dns.flags.TC
    ignored = dig(server, CLIENT1, "many", "+noedns", "+ignore")
    assert "tc" in ignored.flags


def test_r15_truncated_answer_comes_whole_over_tcp(server: ServerThread) -> None:
    assert sorted(dig(server, CLIENT1, "many", "+tcp").rdata("A")) == sorted(MANY_V4)
    # dig's own fallback: UDP, TC, then TCP.
    assert sorted(dig(server, CLIENT1, "many", "+noedns").rdata("A")) == sorted(MANY_V4)
    assert addresses(ask(server, CLIENT1, "many", tcp=True)) == sorted(MANY_V4)


@pytest.mark.parametrize(("bufsize", "truncated"), [(600, True), (1232, False), (4096, False)])
def test_r15_edns_buffer_size_decides_truncation(
    server: ServerThread, bufsize: int, truncated: bool
) -> None:
    result = dig(server, CLIENT1, "many", f"+bufsize={bufsize}", "+ignore")
    assert ("tc" in result.flags) is truncated
    assert len(result.answer) == (0 if truncated else len(MANY_V4))
    assert result.udp_size is not None and result.udp_size <= 4096


def test_r15_several_queries_on_one_tcp_connection(server: ServerThread) -> None:
    names = ["web", "db", "www", "pool", "many"]
    queries = [dns.message.make_query(name, "A") for name in names]
    wire = b"".join(len(q.to_wire()).to_bytes(2, "big") + q.to_wire() for q in queries)
    with socket.create_connection((server.address(CLIENT1), server.port(CLIENT1)), 2) as sock:
        sock.sendall(wire)
        replies = {}
        for _ in names:
            length = int.from_bytes(_recv_exactly(sock, 2), "big")
            reply = dns.message.from_wire(_recv_exactly(sock, length))
            replies[reply.id] = reply
    for query in queries:
        assert replies[query.id].question == query.question
        assert replies[query.id].rcode() == dns.rcode.NOERROR
    assert len(replies[queries[-1].id].answer[0]) == len(MANY_V4)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def test_r16_reply_ids_match_the_queries(server: ServerThread) -> None:
    for name in ("web", "nothing.example"):
        query = dns.message.make_query(name, "A")
        where, port = server.address(CLIENT_INTERNAL), server.port(CLIENT_INTERNAL)
        reply = dns.query.udp(query, where, port=port, timeout=2)
        assert reply.id == query.id
        assert dns.rdatatype.to_text(reply.question[0].rdtype) == "A"
