"""`netdns resolve`: what a sandbox would get for a name, which rule gave it, and by which path.

The question goes through the same decision as a real query (`Resolver.decide`: the name table,
then the forwarder with its cache, failover and budget), so the answer shown is the answer a
container would get now; only the hot cache is skipped, which answers the same by construction.
"""

from __future__ import annotations

from typing import Any

from dnslib import QTYPE, DNSRecord

from drivers.errors import Invalid
from resolver.resolve import Resolver
from resolver.stats import rcode_name


async def explain(resolver: Resolver, sandbox_id: str, name: str, qtype: str) -> dict[str, Any]:
    """The answer to `name` `qtype` asked from `sandbox_id` ("" for none: the default view),
    with the rule, outcome, network, path and upstream behind it; Invalid for a bad question."""
    qtype = qtype.upper()
    if qtype not in QTYPE.reverse:
        raise Invalid(f"type {qtype!r}: not a DNS record type (try A, AAAA, PTR, SRV, MX, TXT)")
    try:
        request = DNSRecord.question(name, qtype)
        query = request.pack()  # a name over 255 octets fails only here
    except Exception as exc:
        raise Invalid(f"name {name!r}: {exc}") from exc
    decision = await resolver.decide(sandbox_id, request, query, tcp=False)
    reply = DNSRecord.parse(decision.reply)
    return {
        "name": name,
        "type": qtype,
        "rcode": rcode_name(reply.header.rcode),
        "answers": [rr.toZone() for rr in reply.rr],
        "additional": [rr.toZone() for rr in reply.ar if rr.rtype != QTYPE.OPT],
        "rule": str(decision.lookup.rule),
        "outcome": str(decision.lookup.outcome),
        "network": decision.lookup.network,
        "path": decision.path,
        "upstream": decision.upstream,
        "elapsed_ms": round(decision.elapsed * 1000, 3),
        "networks_holding": list(resolver.table.networks_holding(name)),
    }
