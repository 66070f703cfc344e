"""CHECK's last step: 127.0.0.11 answers inside the container's namespace with its address."""

from __future__ import annotations

import secrets
import socket
from ipaddress import IPv4Address

from netdns.cni_plugin.spec import LISTENER_ADDRESS

# CHECK: 127.0.0.11 is up by the time ADD returns (R18); a few tries cover a loaded machine.
PROBE_TRIES = 3
PROBE_TIMEOUT = 1.0


def probe_listener(netns: str, name: str, expected: IPv4Address) -> str:
    """Ask 127.0.0.11:53 inside the namespace for NAME; "" when it answers EXPECTED, else what
    went wrong."""
    # Imported here: only CHECK needs them (namespaces, the wire format).
    from dnslib import QTYPE, DNSRecord

    from drivers.errors import NetdnsError
    from resolver.netns import in_netns

    try:
        sock = in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    except (NetdnsError, OSError) as exc:
        return f"cannot open a socket in {netns}: {exc}"
    with sock:
        sock.settimeout(PROBE_TIMEOUT)
        for _ in range(PROBE_TRIES):
            query = DNSRecord.question(name, "A")
            query.header.id = secrets.randbelow(65536)
            try:
                sock.sendto(query.pack(), (LISTENER_ADDRESS, 53))
                reply = DNSRecord.parse(sock.recv(4096))
            except (TimeoutError, OSError):
                continue
            if reply.header.id != query.header.id:
                continue
            answers = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
            if str(expected) in answers:
                return ""
            return (
                f"{LISTENER_ADDRESS} in {netns} answers {name} with "
                f"{', '.join(answers) or QTYPE.get(reply.header.rcode, 'no address')}, "
                f"not {expected}"
            )
    return f"no answer from {LISTENER_ADDRESS}:53 in {netns} ({PROBE_TRIES} tries)"
