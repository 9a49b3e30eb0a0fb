"""Loopback peers that mail_checker.py is tested against: a DNS responder and SMTP servers.

`DnsResponder` answers queries from a small in-memory zone (built with dnspython's message API),
`SmtpPeer` is an aiosmtpd server whose replies follow an `SmtpScript`. Both record everything
they receive so that tests can audit the checker's traffic. They run on a `PeerNetwork`: one
asyncio event loop in a background thread, so the checker under test may run in the test's own
thread (with its own event loop) or as a subprocess, and one loop can carry the hundreds of
peers a benchmark needs. A peer given no network starts a private one.

A host that refuses connections needs no peer: connect to a loopback address nothing listens on.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import socket
import ssl
import tempfile
import threading
import time
from collections import deque
from collections.abc import Collection, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DNS_TTL = 300
# RFC 1035 4.2.1: a UDP answer to a query without EDNS holds at most 512 octets.
UDP_PAYLOAD_WITHOUT_EDNS = 512
TCP_MESSAGE_MAX = 65535  # RFC 1035 4.2.2: a two-octet length prefix

ACCEPTED_MAIL_REPLY = "250 2.1.0 Ok"
ACCEPTED_RCPT_REPLY = "250 2.1.5 Ok"
# "{address}" in a scripted RCPT reply stands for the address the client asked about.
# Postfix 3.7 as Debian ships it, recorded (tests/data/real-mta-transcripts.json).
USER_UNKNOWN_REPLY = (
    "550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"
)
GREYLISTED_REPLY = "450 4.7.1 Greylisted, try again later"
TOO_MANY_CONNECTIONS_REPLY = "421 4.7.0 Too many connections"
# RFC 5321 4.5.3.1.10: 452 for recipients beyond what the server takes.
TOO_MANY_RECIPIENTS_REPLY = "452 4.5.3 Error: too many recipients"
TOO_MANY_RECIPIENTS_IN_SESSION_REPLY = "452 4.5.3 Too many recipients in this session"
TOO_MANY_ERRORS_REPLY = "421 4.7.0 {hostname} Error: too many errors"
STARTTLS_REQUIRED_REPLY = "530 5.7.0 Must issue a STARTTLS command first"
DATA_REFUSED_REPLY = "554 5.5.1 DATA not allowed in tests"
# RFC 5321 3.1: after a 554 greeting the server answers 503 to everything but QUIT.
NO_SERVICE_REPLY = "503 5.5.1 Error: no SMTP service here"
QUIT_REPLY = "221 2.0.0 Bye"

_Result = TypeVar("_Result")
_Service = TypeVar("_Service", bound="_LoopbackService")


class PeerNetwork:
    """One asyncio event loop in a daemon thread; every peer started on it stops with it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="peer-network", daemon=True)
        self._services: list[_LoopbackService] = []

    def start(self) -> PeerNetwork:
        self._thread.start()
        return self

    def stop(self) -> None:
        for service in list(self._services):
            service.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()

    def call(self, coroutine: Coroutine[Any, Any, _Result]) -> _Result:
        """Run a coroutine on the network's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def __enter__(self) -> PeerNetwork:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Sessions still open at the end are cancelled so the loop closes without warnings.
        leftovers = asyncio.all_tasks(self.loop)
        for task in leftovers:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        self.loop.close()


class _LoopbackService:
    """Start/stop and context management shared by the peers."""

    def __init__(self, network: PeerNetwork | None) -> None:
        self._owns_network = network is None
        self.network = network or PeerNetwork()
        self._running = False

    def start(self: _Service) -> _Service:
        if self._owns_network:
            self.network.start()
        try:
            self.network.call(self._open())
        except BaseException:
            if self._owns_network:
                self.network.stop()
            raise
        self.network._services.append(self)
        self._running = True
        return self

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self.network._services.remove(self)
        self.network.call(self._close())
        if self._owns_network:
            self.network.stop()

    def __enter__(self: _Service) -> _Service:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError


# region DNS


class DnsQuery(NamedTuple):
    name: str  # as the client sent it (case kept), without the final dot
    rdtype: str  # "MX", "A", ...
    transport: str  # "udp" or "tcp"


def _owner(name: str) -> dns.name.Name:
    return dns.name.from_text(name)


class DnsResponder(_LoopbackService):
    """A DNS server on UDP and TCP at `address`, one ephemeral port, answering from a zone.

    `zone` maps names to {rdtype: [rdata text, ...]}. Names are case-insensitive. A query for a
    name with no record at or below it gets NXDOMAIN; a name that exists without the asked type
    gets NOERROR with an empty answer (NODATA). Names marked with `servfail()` get SERVFAIL,
    names marked with `timeout()` get no answer at all. Every query is kept in `queries`.
    """

    def __init__(
        self,
        zone: Mapping[str, Mapping[str, Iterable[str]]] | None = None,
        *,
        address: str = "127.0.0.1",
        port: int = 0,
        network: PeerNetwork | None = None,
    ) -> None:
        super().__init__(network)
        self.address = address
        self.port = port  # 0: an ephemeral port, free for both UDP and TCP
        self.udp_delay = 0.0  # seconds before each answer over UDP leaves, as from a slow resolver
        self._lock = threading.Lock()
        self._records: dict[dns.name.Name, dict[dns.rdatatype.RdataType, list[dns.rdata.Rdata]]]
        self._records = {}
        self._servfail: set[dns.name.Name] = set()
        self._silent: set[dns.name.Name] = set()
        self._queries: list[DnsQuery] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        for name, rrsets in (zone or {}).items():
            for rdtype, texts in rrsets.items():
                self.add(name, rdtype, *texts)

    @property
    def server_arg(self) -> str:
        """The responder as mail_checker.py's --dns-server takes it."""
        return f"{self.address}:{self.port}"

    def add(self, name: str, rdtype: str, *rdata: str) -> None:
        """Add records of one type to a name; with no rdata the name merely exists."""
        rdtype_value = dns.rdatatype.from_text(rdtype)
        parsed = [
            dns.rdata.from_text(
                dns.rdataclass.IN, rdtype_value, text, origin=dns.name.root, relativize=False
            )
            for text in rdata
        ]
        with self._lock:
            self._records.setdefault(_owner(name), {}).setdefault(rdtype_value, []).extend(parsed)

    def add_mx(self, domain: str, exchanges: Iterable[tuple[int, str]]) -> None:
        self.add(domain, "MX", *(f"{preference} {host}" for preference, host in exchanges))

    def add_a(self, host: str, *addresses: str) -> None:
        self.add(host, "A", *addresses)

    def add_aaaa(self, host: str, *addresses: str) -> None:
        self.add(host, "AAAA", *addresses)

    def null_mx(self, domain: str) -> None:
        """Publish RFC 7505's null MX: the domain takes no mail."""
        self.add(domain, "MX", "0 .")

    def servfail(self, name: str) -> None:
        with self._lock:
            self._servfail.add(_owner(name))

    def timeout(self, name: str) -> None:
        """Never answer queries for the name, so the client times out."""
        with self._lock:
            self._silent.add(_owner(name))

    @property
    def queries(self) -> list[DnsQuery]:
        with self._lock:
            return list(self._queries)

    def query_count(self, name: str, rdtype: str | None = None) -> int:
        """How many queries arrived for the name (any case), of one type or of any."""
        owner = _owner(name)
        return sum(
            1
            for query in self.queries
            if _owner(query.name) == owner and rdtype in (None, query.rdtype)
        )

    def _respond(self, wire: bytes, transport: str) -> dns.message.Message | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not a DNS query: there is nothing sensible to answer
        response = dns.message.make_response(query, recursion_available=True)
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name = question.name
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self._queries.append(DnsQuery(name.to_text(omit_final_dot=True), rdtype, transport))
            if name in self._silent:
                return None
            if name in self._servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif name in self._records:
                rdatas = self._records[name].get(question.rdtype)
                if rdatas:
                    response.answer.append(dns.rrset.from_rdata_list(name, DNS_TTL, rdatas))
            elif not any(owner.is_subdomain(name) for owner in self._records):
                # RFC 8020: NXDOMAIN means nothing exists at the name or below it.
                response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    async def _open(self) -> None:
        loop = self.network.loop
        # UDP and TCP must share the port; another program may hold the TCP side, so retry.
        for _ in range(1 if self.port else 20):
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _DnsDatagrams(self), local_addr=(self.address, self.port)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.address, port)
            except OSError:
                udp.close()
                continue
            self._udp, self.port = udp, port
            return
        raise OSError(f"no port is free for both UDP and TCP on {self.address}")

    async def _close(self) -> None:
        assert self._udp is not None and self._tcp is not None
        self._udp.close()
        self._tcp.close()
        for writer in list(self._tcp_writers):
            writer.close()
        await self._tcp.wait_closed()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # RFC 1035 4.2.2: each message is preceded by its length in two octets.
        self._tcp_writers.add(writer)
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                response = self._respond(await reader.readexactly(length), "tcp")
                if response is not None:
                    # The EDNS payload size bounds UDP answers only (RFC 6891 6.2.5).
                    writer.write(response.to_wire(max_size=TCP_MESSAGE_MAX, prepend_length=True))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_writers.discard(writer)
            writer.close()


class _DnsDatagrams(asyncio.DatagramProtocol):
    def __init__(self, responder: DnsResponder) -> None:
        self._responder = responder
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        response = self._responder._respond(data, "udp")
        if response is None:
            return
        # An answer too large for the client's UDP buffer is cut and flagged TC (RFC 2181 9),
        # which sends the client over to TCP.
        max_size = response.request_payload or UDP_PAYLOAD_WITHOUT_EDNS
        assert self._transport is not None
        wire = response.to_wire(max_size=max_size, prefer_truncation=True)
        if self._responder.udp_delay:
            asyncio.get_running_loop().call_later(
                self._responder.udp_delay, self._transport.sendto, wire, addr
            )
        else:
            self._transport.sendto(wire, addr)


# endregion

# region SMTP


@dataclass
class SmtpScript:
    """How an SmtpPeer answers. Every option's default is a plain, well-behaved server.

    Addresses in `mailboxes` and `rcpt_replies` are whole addresses or bare local parts (which
    match at any domain), compared case-insensitively. Replies are complete SMTP reply lines.
    """

    hostname: str = "mx.example.test"
    # RCPT: listed mailboxes get 250, others `unknown_user_reply`; catch_all accepts everyone.
    mailboxes: Collection[str] = ()
    catch_all: bool = False
    # RCPT replies for particular addresses, e.g. "452 4.2.2 Mailbox full"; they win over
    # everything but the recipient limits.
    rcpt_replies: Mapping[str, str] = field(default_factory=dict)
    unknown_user_reply: str = USER_UNKNOWN_REPLY
    # A 4xx or 5xx banner instead of 220: 4xx then closes, 5xx answers 503 until QUIT.
    greeting_refusal: str | None = None
    # Accept the connection and never send a banner.
    never_greet: bool = False
    # Refuse the command with this reply (a refused EHLO leaves the client HELO).
    ehlo_refusal: str | None = None
    helo_refusal: str | None = None
    mail_refusal: str | None = None
    starttls: bool = False
    # Offer STARTTLS and answer MAIL and RCPT with 530 until the client has used it.
    require_tls: bool = False
    pipelining: bool = True
    smtputf8: bool = True
    # The first RCPT for an address is greylisted; from this many seconds later it is let
    # through (0: on the second attempt). None: no greylisting.
    greylist_seconds: float | None = None
    # Limits as real servers enforce them. None: no limit.
    max_connections: int | None = None  # more simultaneous ones get 421 and are closed
    max_rcpt_per_transaction: int | None = None  # accepted recipients before 452
    max_rcpt_per_session: int | None = None  # RCPT commands per connection before 452
    # Postfix's smtpd_soft_error_limit and smtpd_error_sleep_time: once a session has made
    # this many errors (4xx and 5xx replies), every reply waits error_sleep seconds first.
    soft_error_limit: int | None = None
    error_sleep: float = 1.0
    # Postfix's smtpd_hard_error_limit: at this many errors, 421 unasked and close.
    hard_error_limit: int | None = None
    # What a RCPT beyond max_rcpt_per_transaction gets (Exim, OpenSMTPD and others differ).
    too_many_recipients_reply: str = TOO_MANY_RECIPIENTS_REPLY
    # Say "220 ready" to STARTTLS, then answer the handshake with bytes that are not TLS.
    broken_tls: bool = False
    drop_after_rcpts: int | None = None  # RCPTs answered before the server hangs up silently
    # Each reply is sent this many seconds after the command it answers arrived (the greeting:
    # after the connection), like a network round trip; pipelined commands wait only once.
    reply_delay: float = 0.0
    # One server as the MX host of several domains: RCPT for an address at one of these
    # domains is answered by that domain's script (greeting, EHLO and MAIL by this one).
    domains: Mapping[str, SmtpScript] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mailboxes = frozenset(mailbox.lower() for mailbox in self.mailboxes)
        self.rcpt_replies = {key.lower(): reply for key, reply in self.rcpt_replies.items()}
        self.domains = {domain.lower(): script for domain, script in self.domains.items()}
        if self.greeting_refusal is not None and self.greeting_refusal[:1] not in ("4", "5"):
            raise ValueError("greeting_refusal must be a 4xx or 5xx reply")

    def for_recipient(self, address: str) -> SmtpScript:
        """The script that answers RCPT for the address: its domain's, else this one."""
        return self.domains.get(address.rpartition("@")[2].lower(), self)

    def has_mailbox(self, address: str) -> bool:
        return any(key in self.mailboxes for key in _lookup_keys(address))

    def scripted_rcpt_reply(self, address: str) -> str | None:
        for key in _lookup_keys(address):
            if key in self.rcpt_replies:
                return self.rcpt_replies[key]
        return None


def _lookup_keys(address: str) -> tuple[str, str]:
    """The keys an address is found by in a script: the whole address, then its local part."""
    address = address.lower()
    local_part, at_sign, _domain = address.rpartition("@")
    return address, local_part if at_sign else address


@functools.cache
def _self_signed_tls_context() -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain reads only from files.
    with tempfile.TemporaryDirectory() as directory:
        cert_file, key_file = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(cert_file, key_file)
    return context


def free_port(addresses: Iterable[str]) -> int:
    """A TCP port that is free on every one of the addresses, for peers sharing one port."""
    first, *others = addresses
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((first, 0))
            port: int = probe.getsockname()[1]
        if all(_tcp_port_is_free(address, port) for address in others):
            return port
    raise OSError("no TCP port is free on all of the addresses")


def _tcp_port_is_free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio binds
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


class SmtpPeer(_LoopbackService):
    """An SMTP server on `address`:`port` that answers as `script` says and records the client.

    Recorded: `sessions` (the command lines of each connection, CRLF removed and nothing else,
    so a CR, LF or NUL the client put inside a line stays visible), `connected_at` (the
    time.monotonic() at which each of them opened), `connections` (opened), `peak_connections`
    (simultaneously open), `data_attempts` (DATA commands, always refused),
    `most_errors_in_a_session`, `soft_limit_delays` (replies held back by the soft error
    limit) and `error_hang_ups` (sessions closed by the hard one).
    """

    def __init__(
        self,
        address: str,
        port: int,
        script: SmtpScript | None = None,
        *,
        network: PeerNetwork | None = None,
    ) -> None:
        super().__init__(network)
        self.address = address
        self.port = port
        self.script = script or SmtpScript()
        self.connections = 0
        self.peak_connections = 0
        self.data_attempts = 0
        self.most_errors_in_a_session = 0
        self.soft_limit_delays = 0
        self.error_hang_ups = 0
        self._handler = _ScriptedHandler()
        self._lock = threading.Lock()
        self._sessions: list[list[str]] = []
        self._connected_at: list[float] = []
        self._live: set[_ScriptedSMTP] = set()
        self._server: asyncio.Server | None = None

    @property
    def sessions(self) -> list[list[str]]:
        with self._lock:
            return [list(lines) for lines in self._sessions]

    @property
    def connected_at(self) -> list[float]:
        with self._lock:
            return list(self._connected_at)

    def all_commands(self) -> list[str]:
        return [line for lines in self.sessions for line in lines]

    async def _open(self) -> None:
        self._server = await self.network.loop.create_server(
            lambda: _ScriptedSMTP(self), self.address, self.port
        )
        self.port = self._server.sockets[0].getsockname()[1]  # the one chosen for port 0

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for protocol in list(self._live):
            protocol.abort()
        await self._server.wait_closed()

    def _connection_opened(self, protocol: _ScriptedSMTP) -> bool:
        """Count a new connection; False when it is one more than max_connections allows."""
        limit = self.script.max_connections
        with self._lock:
            in_session = sum(1 for other in self._live if not other.over_limit)
            self.connections += 1
            self._live.add(protocol)
            self.peak_connections = max(self.peak_connections, len(self._live))
            self._sessions.append(protocol.lines)
            self._connected_at.append(time.monotonic())
        return limit is None or in_session < limit

    def _connection_closed(self, protocol: _ScriptedSMTP) -> None:
        with self._lock:
            self._live.discard(protocol)

    def _lines_received(self, protocol: _ScriptedSMTP, lines: list[str]) -> None:
        with self._lock:
            protocol.lines.extend(lines)

    def _data_attempted(self) -> None:
        with self._lock:
            self.data_attempts += 1

    def _error_made(self, errors_in_session: int) -> None:
        with self._lock:
            self.most_errors_in_a_session = max(self.most_errors_in_a_session, errors_in_session)

    def _reply_delayed_for_errors(self) -> None:
        with self._lock:
            self.soft_limit_delays += 1

    def _hung_up_for_errors(self) -> None:
        with self._lock:
            self.error_hang_ups += 1


class _ScriptedHandler:
    """The aiosmtpd hooks: which reply each command gets under the connection's script."""

    def __init__(self) -> None:
        self._first_attempts: dict[str, float] = {}  # greylisting: address -> monotonic time

    async def handle_EHLO(
        self,
        server: _ScriptedSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        if server.script.ehlo_refusal is not None:
            session.extended_smtp = False
            return [server.script.ehlo_refusal]
        session.host_name = hostname
        if server.script.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_HELO(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        if server.script.helo_refusal is not None:
            return server.script.helo_refusal
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self,
        server: _ScriptedSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if server.script.mail_refusal is not None:
            return server.script.mail_refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return ACCEPTED_MAIL_REPLY

    async def handle_RCPT(
        self,
        server: _ScriptedSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._rcpt_reply(server, envelope, address)
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        else:
            server.refused_rcpts += 1
        return reply

    def _rcpt_reply(self, server: _ScriptedSMTP, envelope: Envelope, address: str) -> str:
        script = server.script.for_recipient(address)
        session_limit = script.max_rcpt_per_session
        if session_limit is not None and server.rcpt_commands > session_limit:
            return TOO_MANY_RECIPIENTS_IN_SESSION_REPLY
        transaction_limit = script.max_rcpt_per_transaction
        if transaction_limit is not None and len(envelope.rcpt_tos) >= transaction_limit:
            return script.too_many_recipients_reply
        scripted = script.scripted_rcpt_reply(address)
        if scripted is not None:
            return scripted.replace("{address}", address)
        if self._greylisted(address, script.greylist_seconds):
            return GREYLISTED_REPLY
        if script.catch_all or script.has_mailbox(address):
            return ACCEPTED_RCPT_REPLY
        return script.unknown_user_reply.replace("{address}", address)

    def _greylisted(self, address: str, greylist_seconds: float | None) -> bool:
        if greylist_seconds is None:
            return False
        key, now = address.lower(), time.monotonic()
        if key not in self._first_attempts:
            self._first_attempts[key] = now
            return True
        return now - self._first_attempts[key] < greylist_seconds


class _ScriptedSMTP(SMTP):
    """One connection: aiosmtpd's protocol plus recording, delays, greetings and hang-ups.

    It keeps the peer's script of the moment it opened, so a test may swap `peer.script`
    between connections.
    """

    def __init__(self, peer: SmtpPeer) -> None:
        script = peer.script
        super().__init__(
            peer._handler,
            hostname=script.hostname,
            ident="ESMTP",
            tls_context=_self_signed_tls_context()
            if script.starttls or script.require_tls or script.broken_tls
            else None,
            enable_SMTPUTF8=script.smtputf8,
            loop=peer.network.loop,
        )
        self.lines: list[str] = []
        self.over_limit = False
        self.rcpt_commands = 0
        self.refused_rcpts = 0
        self.errors = 0  # 4xx and 5xx replies so far, as Postfix counts them
        self.script = script
        self._peer = peer
        self._unfinished_line = b""
        self._reply_due_from: deque[float] = deque()  # arrival time of each unanswered command
        self._within_multiline_reply = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:  # a new connection, not TLS starting on one
            self.over_limit = not self._peer._connection_opened(self)
            if self.script.reply_delay:
                self._reply_due_from.append(self.loop.time())  # for the greeting
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._peer._connection_closed(self)
        super().connection_lost(error)
        # A client resetting the connection is ordinary for a server: mark the error seen so
        # that asyncio does not report it as never retrieved.
        if error is not None:
            self._closed.exception()

    def eof_received(self) -> bool | None:
        if self.script.never_greet:  # nothing reads the stream, so close when the client does
            return False
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self.script.reply_delay:
            # aiosmtpd answers each LF-terminated line once.
            self._reply_due_from.extend([self.loop.time()] * data.count(b"\n"))
        *lines, self._unfinished_line = (self._unfinished_line + data).split(b"\r\n")
        if lines:
            decoded = [line.decode("utf-8", "surrogateescape") for line in lines]
            self._peer._lines_received(self, decoded)
        super().data_received(data)

    def abort(self) -> None:
        transport = self._original_transport or self.transport
        if transport is not None:
            transport.abort()

    async def push(self, status: str | bytes) -> None:
        starts_reply = not self._within_multiline_reply
        if starts_reply and self._reply_due_from:
            due = self._reply_due_from.popleft() + self.script.reply_delay
            if due > self.loop.time():
                await asyncio.sleep(due - self.loop.time())
        soft_limit = self.script.soft_error_limit
        if starts_reply and soft_limit is not None and self.errors >= soft_limit:
            self._peer._reply_delayed_for_errors()  # Postfix sleeps before any reply then
            await asyncio.sleep(self.script.error_sleep)
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        self._within_multiline_reply = text[3:4] == "-"
        await super().push(status)
        if text[:1] in ("4", "5") and not self._within_multiline_reply:
            self.errors += 1
            self._peer._error_made(self.errors)

    async def _handle_client(self) -> None:
        assert self.transport is not None
        if self.over_limit:
            await self.push(TOO_MANY_CONNECTIONS_REPLY)
            self.transport.close()
        elif self.script.greeting_refusal is not None:
            await self._refuse_service(self.script.greeting_refusal)
        elif not self.script.never_greet:
            await super()._handle_client()
        # never_greet: the connection stays open and silent until the client gives up.

    async def _refuse_service(self, greeting: str) -> None:
        await self.push(greeting)
        # RFC 5321 3.1: a 554 greeting waits for QUIT; 3.8: a 421 closes the channel.
        if greeting.startswith("5"):
            while line := await self._reader.readline():
                if line.strip().upper() == b"QUIT":
                    await self.push(QUIT_REPLY)
                    break
                await self.push(NO_SERVICE_REPLY)
        assert self.transport is not None
        self.transport.close()

    async def _hang_up(self) -> None:
        """Close the connection and stop: commands the client already sent go unread."""
        assert self.transport is not None and self._handler_coroutine is not None
        self.transport.close()
        self._handler_coroutine.cancel()
        await asyncio.sleep(0)  # the cancellation lands here, before a buffered line is read

    def _starttls_missing(self) -> bool:
        return self.script.require_tls and self._tls_protocol is None

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self._starttls_missing():
            await self.push(STARTTLS_REQUIRED_REPLY)
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if self._starttls_missing():
            await self.push(STARTTLS_REQUIRED_REPLY)
            return
        self.rcpt_commands += 1
        drop_after = self.script.drop_after_rcpts
        if drop_after is not None and self.rcpt_commands > drop_after:
            await self._hang_up()
        await super().smtp_RCPT(arg)
        error_limit = self.script.hard_error_limit
        if error_limit is not None and self.errors >= error_limit:
            # Postfix says this unasked, right after the reply that reached the limit.
            self._peer._hung_up_for_errors()
            await self.push(TOO_MANY_ERRORS_REPLY.format(hostname=self.hostname))
            await self._hang_up()

    async def smtp_STARTTLS(self, arg: str) -> None:
        if not self.script.broken_tls:
            await super().smtp_STARTTLS(arg)
            return
        await self.push("220 2.0.0 Ready to start TLS")
        assert self.transport is not None
        self.transport.write(b"this is not a TLS handshake\r\n")
        await self._hang_up()

    async def smtp_DATA(self, arg: str) -> None:
        self._peer._data_attempted()
        await self.push(DATA_REFUSED_REPLY)


# endregion
