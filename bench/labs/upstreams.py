"""Upstream DNS servers for tests: real dnsmasq, and a scripted faulty one. Loopback only.

- `free_loopback_address()`: a random 127.x.y.z whose port is free for UDP and TCP.
- `Dnsmasq`: Debian's dnsmasq serving a small zone from flags on ADDR:53. It has no upstream
  of its own (--no-resolv, no --server; every other name is NXDOMAIN), so it never sends a
  packet off the machine. `queries` counts the queries it logged.
- `FaultUpstream`: an upstream written here (asyncio in a thread, UDP and TCP) that misbehaves
  on purpose (see `Fault`), with a count of the queries it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import re
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from dnslib import QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord

START_TIMEOUT = 5.0
DNSMASQ = "/usr/sbin/dnsmasq"


def _port_free(address: str, port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def free_loopback_address(port: int = 53) -> str:
    """A random 127.x.y.z (never in 127.0.0.0/24) with `port` free for both UDP and TCP."""
    for _ in range(100):
        address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        if _port_free(address, port):
            return address
    raise RuntimeError(f"no free loopback address with port {port} free after 100 tries")


def query_once(address: str, port: int, name: str, qtype: str = "A", timeout: float = 0.5) -> bytes:
    """One plain UDP query (for start-up probes); raises TimeoutError without a reply."""
    request = DNSRecord.question(name, qtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((address, port))
        sock.send(request.pack())
        return sock.recv(65535)


# -- dnsmasq -------------------------------------------------------------------------------------

DEFAULT_ZONE: tuple[str, ...] = (
    "--address=/web.test/10.1.2.3",
    "--host-record=db.test,10.1.2.4,fd00::4",
    "--txt-record=txt.test,hello world",
    "--mx-host=mail.test,mx.mail.test,10",
    "--srv-host=_http._tcp.web.test,web.test,80",
)
_QUERY_LOG = re.compile(r"query\[[A-Z0-9]+\] ")


class Dnsmasq:
    """dnsmasq on ADDRESS:PORT serving `zone` (dnsmasq flags); NXDOMAIN for any other name.

    `local_ttl` is the TTL of its answers (dnsmasq's default, 0, would make them uncacheable).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        port: int = 53,
        zone: Sequence[str] = DEFAULT_ZONE,
        local_ttl: int = 300,
    ) -> None:
        self.address = address or free_loopback_address(port)
        self.port = port
        self.zone = tuple(zone)
        self.local_ttl = local_ttl
        self.log: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def server(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def queries(self) -> int:
        """Queries dnsmasq received so far (from its --log-queries lines)."""
        return sum(1 for line in list(self.log) if _QUERY_LOG.search(line))

    def settled_queries(self, quiet: float = 0.3, limit: float = 3.0) -> int:
        """The query count once dnsmasq's log has been still for `quiet` seconds: its lines
        arrive through a pipe, so a count read at once may miss an earlier test's queries."""
        deadline = time.monotonic() + limit
        count, since = self.queries, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.queries
            if now != count:
                count, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return count

    def command(self) -> list[str]:
        return [
            DNSMASQ,
            "--conf-file=/dev/null",
            "--no-resolv",  # no upstream: nothing leaves the machine
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            f"--listen-address={self.address}",
            f"--port={self.port}",
            "--keep-in-foreground",
            "--no-daemon",
            "--pid-file=",
            "--user=root",
            "--log-queries",
            "--log-facility=-",
            f"--local-ttl={self.local_ttl}",
            "--address=/#/",  # every name not in the zone is NXDOMAIN, never forwarded
            *self.zone,
        ]

    def __enter__(self) -> Dnsmasq:
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _read_log(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            self.log.append(line.rstrip("\n"))

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                time.sleep(0.1)  # let the reader catch the last lines
                raise RuntimeError(
                    f"dnsmasq on {self.server} exited ({self._process.returncode}): "
                    + " | ".join(self.log[-5:])
                )
            with contextlib.suppress(OSError):
                query_once(self.address, self.port, "web.test", timeout=0.2)
                return
        raise RuntimeError(f"dnsmasq on {self.server} did not answer within {START_TIMEOUT} s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(START_TIMEOUT)
        if self._reader is not None:
            self._reader.join(START_TIMEOUT)


# -- a faulty upstream -----------------------------------------------------------------------------


class Fault(enum.StrEnum):
    ANSWER = "answer"  # behaves: A -> `answer_address`, other types NODATA with an SOA
    SILENT = "silent"  # reads queries, never replies
    SLOW = "slow"  # replies properly after `delay` seconds
    SERVFAIL = "servfail"
    REFUSED = "refused"
    TRUNCATE = "truncate"  # UDP: empty reply with TC set; TCP: the full (big) answer
    WRONG_ID = "wrong_id"  # replies with another id only
    WRONG_QUESTION = "wrong_question"  # replies with the right id for another name only
    # Spoofs first (wrong id, wrong question, right id and question from another address),
    # all carrying `spoof_address`, then the real answer after `delay`.
    SPOOF_THEN_REAL = "spoof_then_real"
    NXDOMAIN_WITH_SOA = "nxdomain_with_soa"  # SOA TTL `soa_ttl`, MINIMUM `soa_minimum`
    BIG = "big"  # a reply over 512 bytes, over UDP too, without TC


BIG_RECORDS = 60  # A records in a BIG answer: about 1 KB
SPOOF_ADDRESS = "203.0.113.66"


class FaultUpstream:
    """A scripted upstream on ADDRESS:PORT (UDP and TCP). `mode` may be changed while it runs.

    ADDRESS may be IPv6 ("::1"); PORT 0 takes a free port from the kernel (see `server`).

    `tcp_mode`, when given, is the behaviour over TCP instead of `mode` (say TRUNCATE over UDP
    and SILENT over TCP).
    """

    def __init__(
        self,
        mode: Fault = Fault.ANSWER,
        address: str | None = None,
        *,
        port: int = 53,
        delay: float = 0.2,
        answer_address: str = "192.0.2.1",
        spoof_address: str = SPOOF_ADDRESS,
        ttl: int = 300,
        soa_ttl: int = 300,
        soa_minimum: int = 60,
        tcp_mode: Fault | None = None,
    ) -> None:
        self.mode = mode
        self.tcp_mode = tcp_mode
        self.address = address or free_loopback_address(port)
        self.port = port
        self.delay = delay
        self.answer_address = answer_address
        self.spoof_address = spoof_address
        self.ttl = ttl
        self.soa_ttl = soa_ttl
        self.soa_minimum = soa_minimum
        self.udp_queries = 0
        self.tcp_queries = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def server(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    @property
    def queries(self) -> int:
        return self.udp_queries + self.tcp_queries

    # -- life cycle ------------------------------------------------------------------------------

    def __enter__(self) -> FaultUpstream:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self._udp = socket.socket(family, socket.SOCK_DGRAM)
        self._tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._udp.bind((self.address, self.port))
            self.port = self._udp.getsockname()[1]  # port 0: the kernel's pick, for TCP too
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp.bind((self.address, self.port))
            self._tcp.listen(64)
        except OSError:
            self._udp.close()
            self._tcp.close()
            raise
        self._thread = threading.Thread(target=self._run, name="fault-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"fault upstream on {self.server} did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), sock=self._udp
        )
        server = await asyncio.start_server(self._serve_tcp, sock=self._tcp)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            transport.close()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- behaviour ---------------------------------------------------------------------------------

    def answer(self, request: DNSRecord, *, full: bool = False) -> DNSRecord:
        """The proper answer; `full` gives the big one (TRUNCATE over TCP, BIG)."""
        reply = request.reply()  # QR, AA, RD copied, question copied
        qname = request.q.qname
        if self.mode is Fault.NXDOMAIN_WITH_SOA:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self._soa())
        elif full or self.mode is Fault.BIG:
            for index in range(BIG_RECORDS):
                reply.add_answer(RR(qname, QTYPE.A, ttl=self.ttl, rdata=A(f"10.9.0.{index + 1}")))
        elif request.q.qtype == QTYPE.A:
            reply.add_answer(RR(qname, QTYPE.A, ttl=self.ttl, rdata=A(self.answer_address)))
        elif request.q.qtype == QTYPE.TXT:
            reply.add_answer(RR(qname, QTYPE.TXT, ttl=self.ttl, rdata=TXT("fault upstream")))
        else:
            reply.add_auth(self._soa())
        return reply

    def _soa(self) -> RR:
        times = (1, 3600, 600, 86400, self.soa_minimum)
        soa = SOA("ns.fault.test.", "hostmaster.fault.test.", times)
        return RR("fault.test.", QTYPE.SOA, ttl=self.soa_ttl, rdata=soa)

    def _spoof(self, request: DNSRecord) -> DNSRecord:
        spoof = request.reply()
        spoof.add_answer(RR(request.q.qname, QTYPE.A, ttl=3600, rdata=A(self.spoof_address)))
        return spoof

    def replies(self, data: bytes, *, tcp: bool) -> list[tuple[float, bytes]]:
        """(delay, reply) pairs for one query; empty for silence."""
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return []
        mode = self.tcp_mode if tcp and self.tcp_mode is not None else self.mode
        if mode is Fault.SILENT:
            return []
        if mode is Fault.SLOW:
            return [(self.delay, self.answer(request).pack())]
        if mode in (Fault.SERVFAIL, Fault.REFUSED):
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL if mode is Fault.SERVFAIL else RCODE.REFUSED
            return [(0.0, reply.pack())]
        if mode is Fault.TRUNCATE:
            if tcp:
                return [(0.0, self.answer(request, full=True).pack())]
            reply = request.reply()
            reply.header.tc = 1
            return [(0.0, reply.pack())]
        if mode is Fault.WRONG_ID:
            spoof = self._spoof(request)
            spoof.header.id = request.header.id ^ 0x5A5A
            return [(0.0, spoof.pack())]
        if mode is Fault.WRONG_QUESTION:
            return [(0.0, self._wrong_question(request).pack())]
        if mode is Fault.SPOOF_THEN_REAL:
            spoof = self._spoof(request)
            spoof.header.id = request.header.id ^ 0x5A5A
            return [
                (0.0, spoof.pack()),
                (0.0, self._wrong_question(request).pack()),
                (self.delay, self.answer(request).pack()),
            ]
        return [(0.0, self.answer(request).pack())]

    def _wrong_question(self, request: DNSRecord) -> DNSRecord:
        other = DNSRecord.question("x" + str(request.q.qname), QTYPE[request.q.qtype])
        other.header.id = request.header.id
        return self._spoof(other)

    # -- transports ------------------------------------------------------------------------------

    def on_udp(self, transport: asyncio.DatagramTransport, data: bytes, peer: tuple) -> None:
        self.udp_queries += 1
        if self.mode is Fault.SPOOF_THEN_REAL:
            self._spawn(self._spoof_from_elsewhere(data, peer))
        for delay, reply in self.replies(data, tcp=False):
            self._spawn(self._send_udp(transport, reply, peer, delay))

    async def _send_udp(
        self, transport: asyncio.DatagramTransport, reply: bytes, peer: tuple, delay: float
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        transport.sendto(reply, peer)

    async def _spoof_from_elsewhere(self, data: bytes, peer: tuple) -> None:
        """Right id and question, but from another address: only the source gives it away."""
        request = DNSRecord.parse(data)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((free_loopback_address(0), 0))
            sock.sendto(self._spoof(request).pack(), peer)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(size)
                self.tcp_queries += 1
                for delay, reply in self.replies(data, tcp=True):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, upstream: FaultUpstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        assert self.transport is not None
        self.upstream.on_udp(self.transport, data, addr)
