"""`python -m bench.podman_dns`: what podman's containers get for their names, cell by cell,
from each DNS server podman can run: netdns-aardvark and podman's own aardvark-dns (netavark).

One scenario (`scenario`), the same for every server: two networks, containers with an alias,
one on both networks; each cell is one question asked by a real client (dig in a container's
network namespace, at its network's gateway) and the answer as `RCODE records`. The command
prints a markdown table (and writes it with --out); tests/netns/test_podman.py asserts the
cells for each server."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.labs.podman import ALL_SERVERS as SERVERS
from bench.labs.podman import Container, Podman
from bench.machine import netdns_commit


@dataclass(frozen=True, slots=True)
class Cell:
    check: str
    answer: str


def dig(lab: Podman, client: Container, network: str, name: str, qtype: str = "A",
        *, tcp: bool = False) -> str:  # fmt: skip
    """`RCODE addresses...` (or `timeout`) from dig at NETWORK's DNS server, inside CLIENT's
    network namespace."""
    done = lab.in_netns(
        client, "dig", "+tries=1", "+time=3", "+noall", "+comments", "+answer",
        *(["+tcp"] if tcp else []), f"@{lab.dns_server(network)}", name, qtype,
    )  # fmt: skip
    return answer_of(done)


def answer_of(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stdout.splitlines()
    status = next(
        (line.split("status: ")[1].split(",")[0] for line in lines if "status: " in line), ""
    )
    if not status:
        return "timeout"
    records = sorted(line.split()[-1] for line in lines if line and line[0] != ";")
    return " ".join([status, *records]) if records else f"{status} (no records)"


def settle(probe: Callable[[], str], wanted: Callable[[str], bool], limit: float = 3.0) -> str:
    """The probe's answer once `wanted` holds, with the time it took; or the last answer."""
    started = time.monotonic()
    answer = probe()
    while not wanted(answer) and time.monotonic() - started < limit:
        time.sleep(0.02)
        answer = probe()
    took = time.monotonic() - started
    return f"{answer} (after {took * 1000:.0f} ms)" if wanted(answer) else f"{answer} (still)"


def reverse_name(address: str) -> str:
    return ".".join(reversed(address.split("."))) + ".in-addr.arpa"


def scenario(lab: Podman) -> list[Cell]:
    front, back = lab.network("f"), lab.network("b")
    web = lab.run("web", front, "--network-alias", "www")
    db = lab.run("db", back)
    client = lab.run("client", front)
    web_ip, db_ip = lab.address(web, front), lab.address(db, back)
    cells = [
        Cell("container name", dig(lab, client, front, web.name)),
        Cell("network alias", dig(lab, client, front, "www")),
        Cell("name in another case", dig(lab, client, front, web.name.upper())),
        Cell("name.dns.podman", dig(lab, client, front, f"{web.name}.dns.podman")),
        Cell("short id", dig(lab, client, front, web.id[:12])),
        Cell("over TCP", dig(lab, client, front, web.name, tcp=True)),
        Cell("AAAA of an IPv4-only name", dig(lab, client, front, web.name, "AAAA")),
        Cell("MX of a container name", dig(lab, client, front, web.name, "MX")),
        Cell("PTR of a container address", dig(lab, client, front, reverse_name(web_ip), "PTR")),
        Cell("unknown name.dns.podman", dig(lab, client, front, "ghost.dns.podman")),
        Cell("unknown single label", dig(lab, client, front, "ghost")),
        Cell("outside name (the lab's upstream)", dig(lab, client, front, "web.test")),
        Cell("outside name that does not exist", dig(lab, client, front, "nothing.test")),
        Cell("name on a network the asker is not on", dig(lab, client, front, db.name)),
    ]
    lab.podman("network", "connect", back, client.name)
    cells.append(Cell("after `network connect`: a name there", settle(
        lambda: dig(lab, client, front, db.name), lambda a: db_ip in a)))  # fmt: skip
    lab.podman("network", "disconnect", back, client.name)
    cells.append(Cell("after `network disconnect`: that name", settle(
        lambda: dig(lab, client, front, db.name), lambda a: db_ip not in a)))  # fmt: skip
    replaced = lab.run("web2", front, "--network-alias", "www")
    cells.append(Cell("alias shared by two containers", dig(lab, client, front, "www")))
    lab.podman("rm", "-f", "-t", "0", replaced.name)
    lab.upstream.__exit__(None, None, None)  # the upstream goes down
    cells.append(Cell("upstream down: an outside name asked before", timed(
        lambda: dig(lab, client, front, "web.test"))))  # fmt: skip
    cells.append(Cell("upstream down: a new outside name", timed(
        lambda: dig(lab, client, front, "db.test"))))  # fmt: skip
    return cells


def timed(probe: Callable[[], str]) -> str:
    started = time.monotonic()
    answer = probe()
    return f"{answer} (in {(time.monotonic() - started) * 1000:.0f} ms)"


def table(results: dict[str, list[Cell]]) -> str:
    checks = [cell.check for cell in next(iter(results.values()))]
    lines = ["| question | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for i, check in enumerate(checks):
        lines.append(f"| {check} | " + " | ".join(r[i].answer for r in results.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.podman_dns", description=__doc__)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    results = {}
    for backend, server in SERVERS:
        print(f"podman_dns: {backend} with {server} ...", file=sys.stderr)
        with Podman(backend=backend, dns=server) as lab:
            results[f"{server} ({backend})"] = scenario(lab)
    commit = netdns_commit()
    text = (
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, podman 4.3 "
        "with netavark 1.4 (addresses: podman's 10.89.x, the lab's upstream serves "
        "`web.test` = 10.1.2.3; dig waits 3 s, once).\n\n" + table(results) + "\n"
    )
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
