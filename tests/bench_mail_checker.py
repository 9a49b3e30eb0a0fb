"""Benchmark of mail_checker.py on a simulated network on loopback.

    python tests/bench_mail_checker.py                    # scenario 1: speed, traffic, accuracy
    python tests/bench_mail_checker.py --concurrency 200  # the same with the checker's flag
    python tests/bench_mail_checker.py --rtt-ms 100       # round trips outweigh computing
    python tests/bench_mail_checker.py --memory           # scenario 2: peak memory, big list

Scenario 1: 2,000 addresses over 200 domains, each domain with an MX host of its own; RTT 20 ms;
per host 4 connections, 50 RCPTs per session, a hang-up after 20 refused RCPTs. Scenario 2:
100,000 addresses over 20,000 domains whose MX records point at 50 hosts (catch-all domains at
hosts of their own, as catch-all is a property of a server), RTT 0, generous connection limits.

The network: the tests' DNS responder (tests/peers.py) and lean simulated SMTP servers
(SimulatedMx, below), each MX host on its own 127.x.y.z address, all on one high port given to
the checker with --smtp-port. Every reply, DNS answers included, leaves one round-trip time
(RTT) after the query or command it answers; the replies to pipelined commands that arrived
together leave together, as Postfix flushes them. The servers enforce per-host limits as real
ones do: simultaneous connections (more get "421 Too many connections"), RCPTs per session
(more get 452), refused RCPTs per session (the last one is followed by 421 and a hang-up). All
peers share one thread of this process, so the report also gives the CPU time that thread used
and how late its timers fired: when it falls behind, replies leave later than the RTT says and
part of the wall time is the simulator's. It also samples how many SMTP connections the checker
kept open at once.

The address list is skewed as real lists are: a few domains with hundreds of addresses and a
long tail with one to three. Ground truth comes from a seeded random generator: about 10% of
domains are catch-all (every RCPT accepted), and about 10% of the addresses at the others have
no mailbox. The expected verdicts: valid/accepted for an existing mailbox, invalid/rejected for
a missing one, risky/catch_all for any address at a catch-all domain.

The checker runs as a whole process, timed wall-clock from spawn to exit (interpreter start-up
included), several times, the fastest reported (other work on the machine only ever slows a
run down); correctness targets must hold in every run. Its peak memory is the ru_maxrss the
kernel reports for it (os.wait4), and its CPU time is reported beside it. Traffic is
counted on the servers' side from the sessions they recorded: connections opened, SMTP command
lines, DATA commands (must be 0), 421 refusals for too many connections, 421 hang-ups for too
many errors, and 452 replies for too many recipients.

Lower bound on the wall time, from round trips and the per-host limits. For each MX host h,
with R the RCPTs a session may carry, L the refused RCPTs after which h hangs up, C the
connections h allows, and for each domain d it serves n_d addresses of which E_d must be
refused (the missing mailboxes plus the catch-all probe; 0 at a catch-all domain):

    S_d = max(ceil((n_d + 1) / R), ceil(E_d / (L - 1)))   sessions d needs (+1: the probe;
                                                           L - 1: stay short of the hang-up)
    S_h = sum of S_d over the domains h serves
    T_h = RTT * (2 + 3 * ceil(S_h / C))

2 round trips of DNS (MX, then the host's A and AAAA together) and, for each wave of C
sessions, 3 round trips: connect and greeting, EHLO, one pipelined MAIL+RCPT batch. Hosts are
worked on in parallel, so the bound is max over hosts of T_h; it leaves out the interpreter's
start-up and all computing time. The minimum number of connections the per-session limits
allow is the sum over hosts of S_h.

The baseline is how the common Python tools check an address, one at a time: DNS MX and A
lookups (dnspython), then one smtplib session (connect, EHLO, MAIL, RCPT, QUIT) per address.
It runs on a seeded sample of the list on the same network in the same run, and its time is
extrapolated linearly to the whole list.

Exit status: 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import io
import json
import math
import os
import random
import resource
import smtplib
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import cast

import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
from peers import (
    ACCEPTED_MAIL_REPLY,
    ACCEPTED_RCPT_REPLY,
    DATA_REFUSED_REPLY,
    DNS_TTL,
    QUIT_REPLY,
    TOO_MANY_CONNECTIONS_REPLY,
    TOO_MANY_ERRORS_REPLY,
    TOO_MANY_RECIPIENTS_IN_SESSION_REPLY,
    USER_UNKNOWN_REPLY,
    DnsQuery,
    DnsResponder,
    PeerNetwork,
    _DnsDatagrams,
    _LoopbackService,
    free_port,
)

CHECKER = Path(__file__).resolve().parent.parent / "mail_checker.py"
HELO_NAME = "bench.example.net"
STEP_TIMEOUT = 5.0  # the checker's --timeout, and the baseline's per-step timeout
DNS_ADDRESS = "127.53.0.1"
# RFC 1035 4.1.1: QR (a response) and RA (recursion available); RD is copied from the query.
RESPONSE_FLAGS = 0x8080
RECURSION_DESIRED = 0x0100
# RFC 6891 6.1.2: the OPT pseudo-record of an EDNS answer, UDP payload 1232.
OPT_RECORD = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
# Checker settings that .env or the environment could otherwise slip into the run.
NEUTRAL_ENVIRONMENT = {"MAIL_FROM": "", "HELO_HOST": "", "SMTP_PROXY": ""}

FIRST_NAMES = "anna ben carla david eva felix greta hugo ida jonas karin leo mia nils olga paul"
LAST_NAMES = "berg fischer hansen ivanova jensen klein lange meyer novak olsen petrov ruiz weber"


@dataclasses.dataclass(frozen=True)
class Scenario:
    title: str
    addresses: int
    domains: int
    large_domains: int  # the head of the skew; the other domains get one to three addresses
    hosts: int | None  # None: every domain has an MX host of its own
    rtt: float  # seconds
    max_connections: int
    rcpts_per_session: int
    errors_per_session: int
    catch_all_share: float
    missing_share: float
    baseline_sample: int  # 0: no baseline
    repeat: int  # checker runs, the fastest reported


SPEED = Scenario(
    title="speed: 2,000 addresses over 200 domains, one MX host each",
    addresses=2_000,
    domains=200,
    large_domains=10,
    hosts=None,
    rtt=0.020,
    max_connections=4,
    rcpts_per_session=50,
    errors_per_session=20,
    catch_all_share=0.10,
    missing_share=0.10,
    baseline_sample=100,
    repeat=3,
)
MEMORY = Scenario(
    title="memory: 100,000 addresses over 20,000 domains served by 50 MX hosts",
    addresses=100_000,
    domains=20_000,
    large_domains=200,
    hosts=50,
    rtt=0.0,
    max_connections=100,  # generous: this scenario measures memory, not politeness
    rcpts_per_session=50,
    errors_per_session=20,
    catch_all_share=0.10,
    missing_share=0.10,
    baseline_sample=0,
    repeat=1,
)

Verdicts = dict[str, tuple[str, str]]  # address -> (status, reason)

# Targets of the speed scenario, and the memory scenario's.
MAX_SLOWDOWN_OVER_BOUND = 3.0
MIN_SPEEDUP_OVER_BASELINE = 100.0
MAX_CONNECTIONS_OVER_MINIMUM = 1.2
MAX_PEAK_MEMORY_MB = 200.0


# --- The simulated world --------------------------------------------------------------------


@dataclasses.dataclass
class Domain:
    name: str
    catch_all: bool
    addresses: list[str]
    existing: set[str]  # the addresses that have a mailbox

    @property
    def refusals(self) -> int:
        """RCPTs a server must refuse for this domain: missing mailboxes and the probe."""
        return 0 if self.catch_all else len(self.addresses) - len(self.existing) + 1


@dataclasses.dataclass
class Host:
    name: str
    ip: str
    catch_all: bool
    domains: list[Domain]


@dataclasses.dataclass
class World:
    hosts: list[Host]
    addresses: list[str]  # the list given to the checker, shuffled
    expected: Verdicts


def domain_sizes(scenario: Scenario, rng: random.Random) -> list[int]:
    """A long tail of one to three addresses; the rest over the head, Zipf-like (1/rank)."""
    tail = [rng.randint(1, 3) for _ in range(scenario.domains - scenario.large_domains)]
    head_total = scenario.addresses - sum(tail)
    weights = [1 / rank for rank in range(1, scenario.large_domains + 1)]
    head = [max(1, int(head_total * weight / sum(weights))) for weight in weights]
    head[0] += head_total - sum(head)
    return head + tail


def host_ip(index: int) -> str:
    return f"127.10.{index // 250}.{index % 250 + 1}"


def build_world(scenario: Scenario, seed: int) -> World:
    rng = random.Random(seed)
    first_names, last_names = FIRST_NAMES.split(), LAST_NAMES.split()
    domains = []
    for index, size in enumerate(domain_sizes(scenario, rng)):
        catch_all = rng.random() < scenario.catch_all_share
        name = f"company{index:05d}.test"
        addresses = [
            f"{rng.choice(first_names)}.{rng.choice(last_names)}{serial}@{name}"
            for serial in range(size)
        ]
        existing = {a for a in addresses if catch_all or rng.random() >= scenario.missing_share}
        domains.append(Domain(name, catch_all, addresses, existing))

    if scenario.hosts is None:
        hosts = [
            Host(f"mx.{domain.name}", host_ip(index), domain.catch_all, [domain])
            for index, domain in enumerate(domains)
        ]
    else:
        # A server is catch-all or not as a whole, so catch-all domains get hosts of their own.
        catch_all_hosts = max(1, round(scenario.hosts * scenario.catch_all_share))
        hosts = [
            Host(f"mx{index}.hosting.test", host_ip(index), index < catch_all_hosts, [])
            for index in range(scenario.hosts)
        ]
        pools = {True: hosts[:catch_all_hosts], False: hosts[catch_all_hosts:]}
        for index, domain in enumerate(domains):
            pool = pools[domain.catch_all]
            pool[index % len(pool)].domains.append(domain)

    expected = {}
    for domain in domains:
        for address in domain.addresses:
            if domain.catch_all:
                expected[address] = ("risky", "catch_all")
            elif address in domain.existing:
                expected[address] = ("valid", "accepted")
            else:
                expected[address] = ("invalid", "rejected")
    addresses = [address for domain in domains for address in domain.addresses]
    rng.shuffle(addresses)
    return World(hosts, addresses, expected)


def sessions_needed(domain: Domain, scenario: Scenario) -> int:
    by_rcpts = math.ceil((len(domain.addresses) + 1) / scenario.rcpts_per_session)
    by_errors = math.ceil(domain.refusals / (scenario.errors_per_session - 1))
    return max(by_rcpts, by_errors)


@dataclasses.dataclass(frozen=True)
class LowerBound:
    seconds: float
    round_trips: int
    connections: int  # the minimum the per-session limits allow
    slowest_host: str  # the host that sets the bound
    sessions: int
    waves: int


def lower_bound(world: World, scenario: Scenario) -> LowerBound:
    """The docstring's formula."""
    connections, slowest = 0, (0, 0, "")
    for host in world.hosts:
        sessions = sum(sessions_needed(domain, scenario) for domain in host.domains)
        waves = math.ceil(sessions / scenario.max_connections)
        slowest = max(slowest, (waves, sessions, host.name))
        connections += sessions
    waves, sessions, name = slowest
    round_trips = 2 + 3 * waves
    return LowerBound(scenario.rtt * round_trips, round_trips, connections, name, sessions, waves)


# --- The peers, with what tests/peers.py does not offer -------------------------------------


class _DelayedDatagrams(_DnsDatagrams):
    """Answers UDP queries one round trip after they arrive, noting when each arrived.

    A query for a record of the zone gets an answer rendered when the responder started (the
    header and question are the query's own); the rest (NXDOMAIN, no data) go through the
    DnsResponder. Parsing and rendering each answer with dnspython cost the peers' thread
    about 250 us a query, so a burst of a hundred queries left its last answer 25 ms late.
    """

    def __init__(self, responder: DelayedDnsResponder, transport: asyncio.DatagramTransport):
        super().__init__(responder)
        self.connection_made(transport)
        self.responder = responder
        self.loop = responder.network.loop

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        responder = self.responder
        responder.arrivals.append(time.perf_counter())
        labels, at = [], 12
        try:
            while data[at]:
                labels.append(data[at + 1 : at + 1 + data[at]])
                at += data[at] + 1
        except IndexError:
            return  # not a DNS query: nothing to answer
        question = data[12 : at + 5]
        rendered = responder.rendered.get(question.lower())
        if rendered is None:
            self.loop.call_later(responder.rtt, super().datagram_received, data, addr)
            return
        records, count, rdtype = rendered
        name = b".".join(labels).decode("ascii", "replace")
        with responder._lock:
            responder._queries.append(DnsQuery(name, rdtype, "udp"))
        has_opt = data[10:12] != b"\x00\x00"
        flags = RESPONSE_FLAGS | int.from_bytes(data[2:4], "big") & RECURSION_DESIRED
        answer = b"".join(
            (
                data[:2],
                struct.pack("!HHHHH", flags, 1, count, 0, has_opt),
                question,
                records,
                OPT_RECORD if has_opt else b"",
            )
        )
        assert self._transport is not None
        self.loop.call_later(responder.rtt, self._transport.sendto, answer, addr)


class DelayedDnsResponder(DnsResponder):
    """A DnsResponder whose UDP answers take a round trip, as the SMTP peers' replies do, and
    which notes when each query arrived (time.perf_counter()).

    TCP answers are not delayed: the checker's answers fit in UDP, and the report counts any
    query that came over TCP.
    """

    def __init__(self, rtt: float, address: str, network: PeerNetwork) -> None:
        super().__init__(address=address, network=network)
        self.rtt = rtt
        self.arrivals: list[float] = []
        # question (name in lower case, type, class) -> (answer records, their count, type)
        self.rendered: dict[bytes, tuple[bytes, int, str]] = {}

    async def _open(self) -> None:
        await super()._open()
        assert self._udp is not None
        for owner, rrsets in self._records.items():
            for rdtype, rdatas in rrsets.items():
                if rdatas:
                    self._render(owner, rdtype, rdatas)
        self._udp.set_protocol(_DelayedDatagrams(self, self._udp))

    def _render(self, owner: dns.name.Name, rdtype: int, rdatas: list[dns.rdata.Rdata]) -> None:
        question = owner.to_wire() + struct.pack("!HH", rdtype, dns.rdataclass.IN)
        # Rendered at the offset it will have in the answer, so that names compress against
        # the question (at offset 12) as a server compresses them.
        wire = io.BytesIO(bytes(12) + question)
        wire.seek(0, io.SEEK_END)
        rrset = dns.rrset.from_rdata_list(owner, DNS_TTL, rdatas)
        count = rrset.to_wire(wire, compress={owner: 12})
        records = wire.getvalue()[12 + len(question) :]
        self.rendered[question.lower()] = (records, count, dns.rdatatype.to_text(rdtype))


class SimulatedMx(_LoopbackService):
    """One simulated MX host: a bare asyncio protocol, not aiosmtpd.

    Hundreds of these share the peers' one thread, and aiosmtpd's coroutine per command made
    that thread the bottleneck of the run (its timers fired over 100 ms late), which would charge
    the checker for the simulator's computing. This server knows only what the benchmark needs:
    EHLO/HELO, MAIL, RCPT against the host's mailboxes, RSET, NOOP, QUIT, and DATA (counted and
    refused), with the per-host limits of the docstring. The tests' aiosmtpd peers (peers.py) are
    where the checker's SMTP is checked against a full server.

    Recorded as SmtpPeer records them: `sessions` (each connection's command lines, CRLF
    removed), plus the connections refused as too many and those open now.
    """

    def __init__(self, host: Host, port: int, scenario: Scenario, network: PeerNetwork) -> None:
        super().__init__(network)
        self.host, self.port, self.scenario = host, port, scenario
        self.mailboxes = frozenset(
            address.lower() for domain in host.domains for address in domain.existing
        )
        self.sessions: list[list[str]] = []
        self.refused_connections = 0
        self.open_connections = 0  # in session, not counting those refused as too many
        self.server: asyncio.Server | None = None

    async def _open(self) -> None:
        self.server = await self.network.loop.create_server(
            lambda: _SimulatedSession(self), self.host.ip, self.port
        )

    async def _close(self) -> None:
        assert self.server is not None
        self.server.close()

    def rcpt_reply(self, address: str) -> str:
        if self.host.catch_all or address.lower() in self.mailboxes:
            return ACCEPTED_RCPT_REPLY
        return USER_UNKNOWN_REPLY.replace("{address}", address)


class _SimulatedSession(asyncio.Protocol):
    """One connection to a SimulatedMx. Replies leave one RTT after the command they answer
    arrived (the greeting: after the connection); pipelined commands wait once, together."""

    def __init__(self, mx: SimulatedMx) -> None:
        self.mx = mx
        self.loop = mx.network.loop
        self.rtt = mx.scenario.rtt
        self.lines: list[str] = []
        self.unfinished = b""
        self.rcpts = self.refused = 0
        self.in_session = self.hanging_up = False
        self.outbox: deque[tuple[float, bytes, bool]] = deque()  # (due, reply, then close)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        mx = self.mx
        mx.sessions.append(self.lines)
        if mx.open_connections >= mx.scenario.max_connections:
            mx.refused_connections += 1
            self.hanging_up = True
            self.reply([TOO_MANY_CONNECTIONS_REPLY], close=True)
        else:
            mx.open_connections += 1
            self.in_session = True
            self.reply([f"220 {mx.host.name} ESMTP"])

    def connection_lost(self, error: Exception | None) -> None:
        if self.in_session:
            self.mx.open_connections -= 1
        self.outbox.clear()

    def data_received(self, data: bytes) -> None:
        *lines, self.unfinished = (self.unfinished + data).split(b"\r\n")
        decoded = [line.decode("utf-8", "surrogateescape") for line in lines]
        self.lines.extend(decoded)
        if self.hanging_up:
            return  # the client's commands after a hang-up go unread, as on a real server
        replies: list[str] = []
        close = False
        for line in decoded:
            verb = line[:4].upper()
            if verb == "RCPT":
                replies.append(self.rcpt(line.partition("<")[2].rpartition(">")[0]))
                if self.refused >= self.mx.scenario.errors_per_session:
                    replies.append(TOO_MANY_ERRORS_REPLY)  # Postfix's hard error limit
                    close = True
            elif verb in ("MAIL", "RSET", "NOOP"):
                replies.append(ACCEPTED_MAIL_REPLY)
            elif verb == "EHLO":
                name = self.mx.host.name
                replies.append(f"250-{name}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8")
            elif verb == "HELO":
                replies.append(f"250 {self.mx.host.name}")
            elif verb == "QUIT":
                replies.append(QUIT_REPLY)
                close = True
            elif verb == "DATA":
                replies.append(DATA_REFUSED_REPLY)
            else:
                replies.append("500 5.5.2 Error: command not recognized")
            if close:
                break
        if replies:
            self.hanging_up = close
            self.reply(replies, close)

    def rcpt(self, address: str) -> str:
        self.rcpts += 1
        if self.rcpts > self.mx.scenario.rcpts_per_session:
            reply = TOO_MANY_RECIPIENTS_IN_SESSION_REPLY
        else:
            reply = self.mx.rcpt_reply(address)
        self.refused += not reply.startswith("2")
        return reply

    def reply(self, replies: list[str], close: bool = False) -> None:
        wire = "".join(f"{reply}\r\n" for reply in replies).encode()
        self.outbox.append((self.loop.time() + self.rtt, wire, close))
        if len(self.outbox) == 1:
            self.loop.call_at(self.outbox[0][0], self.send_due)

    def send_due(self) -> None:
        """Write every reply that is due, in order; then wait for the next one."""
        now, first = self.loop.time(), True
        while self.outbox and (first or self.outbox[0][0] <= now):
            first = False
            _, wire, close = self.outbox.popleft()
            self.transport.write(wire)
            if close:
                self.transport.close()
                self.outbox.clear()
        if self.outbox:
            self.loop.call_at(self.outbox[0][0], self.send_due)


@dataclasses.dataclass
class Network:
    peers: PeerNetwork
    dns: DelayedDnsResponder
    smtp: list[tuple[Host, SimulatedMx]]
    port: int


def start_network(world: World, scenario: Scenario) -> Network:
    peers = PeerNetwork().start()
    responder = DelayedDnsResponder(scenario.rtt, address=DNS_ADDRESS, network=peers)
    for host in world.hosts:
        responder.add_a(host.name, host.ip)
        for domain in host.domains:
            responder.add_mx(domain.name, [(10, host.name)])
    responder.start()
    port = free_port(host.ip for host in world.hosts)
    smtp = [(host, SimulatedMx(host, port, scenario, peers).start()) for host in world.hosts]
    return Network(peers, responder, smtp, port)


# --- Measuring the simulated network itself -------------------------------------------------


@dataclasses.dataclass
class NetworkLoad:
    cpu: float  # seconds the peers' thread computed
    worst_lateness: float  # seconds: the longest a timer of the peers' loop fired late
    mean_open: float  # SMTP connections open at once, on average over the run
    peak_open: int


class LoadMonitor:
    """How busy the peers' loop was during a run, and how many SMTP connections the checker
    kept open. All peers share one thread, so when it is saturated every reply leaves late and
    the RTT the checker sees is longer than configured: the report must say so rather than
    charge the checker for it."""

    TICK = 0.005

    def __init__(self, network: Network) -> None:
        self.network = network
        self.thread_clock = time.pthread_getcpuclockid(network.peers.call(self._thread_id()))
        self.stopping = threading.Event()
        self.worst_lateness = self.connection_seconds = self.watched = 0.0
        self.peak_open = 0

    @staticmethod
    async def _thread_id() -> int:
        return threading.get_ident()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            before = loop.time()
            await asyncio.sleep(self.TICK)
            elapsed = loop.time() - before
            self.worst_lateness = max(self.worst_lateness, elapsed - self.TICK)
            open_now = sum(peer.open_connections for _, peer in self.network.smtp)
            self.peak_open = max(self.peak_open, open_now)
            self.connection_seconds += open_now * elapsed
            self.watched += elapsed

    def __enter__(self) -> LoadMonitor:
        self.cpu_before = time.clock_gettime(self.thread_clock)
        self.watching = asyncio.run_coroutine_threadsafe(self._watch(), self.network.peers.loop)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.watching.result()
        self.load = NetworkLoad(
            cpu=time.clock_gettime(self.thread_clock) - self.cpu_before,
            worst_lateness=self.worst_lateness,
            mean_open=self.connection_seconds / max(self.watched, self.TICK),
            peak_open=self.peak_open,
        )


# --- Measuring traffic on the servers' side -------------------------------------------------


@dataclasses.dataclass
class Traffic:
    connections: int = 0
    commands: int = 0
    data_attempts: int = 0
    too_many_connections: int = 0  # 421 at the greeting
    too_many_errors: int = 0  # 421 and hang-up after the error limit
    too_many_recipients: int = 0  # 452 for RCPTs beyond the session limit
    dns_queries: int = 0
    dns_over_tcp: int = 0


@dataclasses.dataclass(frozen=True)
class Mark:
    """Where each peer's records stood when a run began."""

    sessions: tuple[int, ...]
    refused: tuple[int, ...]
    dns_queries: int


def mark(network: Network) -> Mark:
    peers = [peer for _, peer in network.smtp]
    return Mark(
        tuple(len(peer.sessions) for peer in peers),
        tuple(peer.refused_connections for peer in peers),
        len(network.dns.queries),
    )


def rcpt_address(line: str) -> str:
    return line.partition("<")[2].rpartition(">")[0].lower()


def traffic_since(start: Mark, network: Network, scenario: Scenario) -> Traffic:
    traffic = Traffic()
    for index, (host, peer) in enumerate(network.smtp):
        mailboxes = {address.lower() for domain in host.domains for address in domain.existing}
        sessions = peer.sessions[start.sessions[index] :]
        traffic.connections += len(sessions)
        traffic.too_many_connections += peer.refused_connections - start.refused[index]
        for lines in sessions:
            traffic.commands += len(lines)
            # Counted from the lines, not the peer's counter: a DATA the server never got to
            # (pipelined after a hang-up) was still sent.
            traffic.data_attempts += sum(1 for line in lines if line.upper().startswith("DATA"))
            # Replay the server's limits: which RCPTs it refused, and whether it hung up.
            rcpts = refused = 0
            for line in lines:
                if not line.upper().startswith("RCPT TO:"):
                    continue
                rcpts += 1
                if rcpts > scenario.rcpts_per_session:
                    traffic.too_many_recipients += 1
                    refused += 1
                elif not host.catch_all and rcpt_address(line) not in mailboxes:
                    refused += 1
                if refused >= scenario.errors_per_session:
                    traffic.too_many_errors += 1
                    break
    queries = network.dns.queries[start.dns_queries :]
    traffic.dns_queries = len(queries)
    traffic.dns_over_tcp = sum(1 for query in queries if query.transport == "tcp")
    return traffic


# --- The checker, as a whole process --------------------------------------------------------


@dataclasses.dataclass
class ProcessRun:
    started: float  # time.perf_counter() just before the spawn
    wall: float
    cpu: float  # user + system seconds of the process
    peak_memory_mb: float
    exit_status: int
    stderr: str


def run_process(command: Sequence[str], workdir: Path, time_limit: float) -> ProcessRun:
    """Run to completion (killed after time_limit); wall time and the process's own peak RSS."""
    environment = {**os.environ, **NEUTRAL_ENVIRONMENT}
    with open(workdir / "stderr.txt", "w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=workdir, env=environment, stdout=subprocess.DEVNULL, stderr=stderr
        )
        killer = threading.Timer(time_limit, process.kill)
        killer.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        killer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        peak_mb = usage.ru_maxrss / 1024  # Linux reports kilobytes
        return ProcessRun(started, wall, cpu, peak_mb, process.returncode, stderr.read())


def checker_command(network: Network, extra: Iterable[str]) -> list[str]:
    return [
        sys.executable,
        str(CHECKER),
        "--format",
        "json",
        "--dns-server",
        network.dns.server_arg,
        "--smtp-port",
        str(network.port),
        "--helo",
        HELO_NAME,
        "--timeout",
        f"{STEP_TIMEOUT:g}",
        "--allow-private",  # the simulated hosts listen on loopback
        *extra,
    ]


@dataclasses.dataclass
class CheckerResult:
    run: ProcessRun
    verdicts: Verdicts
    traffic: Traffic
    load: NetworkLoad
    first_query: float  # seconds from the spawn to the first DNS query
    repeated: int  # verdict lines for an address that already had one


def run_checker(
    world: World,
    network: Network,
    scenario: Scenario,
    concurrency: int | None,
    workdir: Path,
    time_limit: float,
) -> CheckerResult:
    list_file, output = workdir / "addresses.txt", workdir / "verdicts.jsonl"
    list_file.write_text("".join(f"{address}\n" for address in world.addresses))
    output.unlink(missing_ok=True)  # -o appends and resumes: every run starts afresh
    extra = ["-f", str(list_file), "-o", str(output)]
    if concurrency is not None:
        extra += ["--concurrency", str(concurrency)]
    before = mark(network)
    with LoadMonitor(network) as monitor:
        run = run_process(checker_command(network, extra), workdir, time_limit)
    traffic = traffic_since(before, network, scenario)
    verdicts: Verdicts = {}
    repeated = 0
    if output.exists():
        for line in output.read_text().splitlines():
            row = json.loads(line)
            repeated += row["email"] in verdicts
            verdicts[row["email"]] = (row["status"], row["reason"])
    first_query = min(
        (arrival for arrival in network.dns.arrivals if arrival >= run.started), default=math.nan
    )
    return CheckerResult(run, verdicts, traffic, monitor.load, first_query - run.started, repeated)


def start_up_run(network: Network, workdir: Path, repeat: int) -> ProcessRun:
    """The fastest of runs that do no network work: interpreter start-up and imports."""
    command = checker_command(network, ["--level", "syntax", "someone@example.com"])
    runs = [run_process(command, workdir, 60) for _ in range(repeat)]
    return min(runs, key=lambda run: run.wall)


# --- The sequential baseline ----------------------------------------------------------------


@dataclasses.dataclass
class BaselineResult:
    sample: int
    elapsed: float
    verdicts: Verdicts
    traffic: Traffic


def baseline_check(resolver: dns.resolver.Resolver, address: str, port: int) -> tuple[str, str]:
    """DNS MX and A, then connect, EHLO, MAIL, RCPT, QUIT: one address, one session."""
    domain = address.rpartition("@")[2]
    try:
        exchanges = resolver.resolve(domain, "MX")
        best = min(exchanges, key=lambda record: record.preference)  # type: ignore[attr-defined]
        ip = resolver.resolve(best.exchange, "A")[0].to_text()  # type: ignore[attr-defined]
        with smtplib.SMTP(ip, port, local_hostname=HELO_NAME, timeout=STEP_TIMEOUT) as session:
            session.ehlo()
            session.mail("")
            code, _ = session.rcpt(address)
    except (OSError, smtplib.SMTPException, dns.exception.DNSException):
        return ("unknown", "smtp_error")  # counted as wrong in its accuracy
    if code < 300:
        return ("valid", "accepted")
    return ("invalid", "rejected") if code >= 500 else ("unknown", "temp_failure")


def run_baseline(world: World, network: Network, scenario: Scenario, seed: int) -> BaselineResult:
    sample = random.Random(seed).sample(world.addresses, scenario.baseline_sample)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(DNS_ADDRESS, network.dns.port)]
    resolver.lifetime = STEP_TIMEOUT
    before = mark(network)
    started = time.perf_counter()
    verdicts = {address: baseline_check(resolver, address, network.port) for address in sample}
    elapsed = time.perf_counter() - started
    return BaselineResult(len(sample), elapsed, verdicts, traffic_since(before, network, scenario))


# --- The report -----------------------------------------------------------------------------

Target = tuple[str, bool, str]  # what, met, the measured value


def correct(verdicts: Verdicts, expected: Verdicts) -> int:
    return sum(1 for address, verdict in verdicts.items() if expected.get(address) == verdict)


def accuracy(verdicts: Verdicts, expected: Verdicts) -> str:
    right = correct(verdicts, expected)
    return f"{right:,}/{len(verdicts):,} ({100 * right / max(len(verdicts), 1):.1f}%)"


def mismatches(verdicts: Verdicts, expected: Verdicts) -> list[str]:
    """Each kind of wrong verdict with its count, and the addresses that got none."""
    stranger = ("an address", "not in the list")
    kinds = Counter(
        (expected.get(address, stranger), verdict)
        for address, verdict in verdicts.items()
        if expected.get(address) != verdict
    )
    lines = [
        f"  expected {'/'.join(want)}, got {'/'.join(got)}: {count}"
        for (want, got), count in kinds.most_common()
    ]
    missing = len(expected.keys() - verdicts.keys())
    if missing:
        lines.append(f"  no verdict at all: {missing}")
    return lines


def print_table(rows: list[tuple[str, ...]]) -> None:
    """The first row is the header; the first column is left-aligned, the others right."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for number, row in enumerate(rows):
        first, *rest = row
        cells = [first.ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        print("  " + "  ".join(cells).rstrip())
        if number == 0:
            print("  " + "  ".join("-" * width for width in widths))


TRAFFIC_ROWS = (
    ("connections opened", "connections"),
    ("SMTP commands sent", "commands"),
    ("DATA attempts", "data_attempts"),
    ("421 too many connections", "too_many_connections"),
    ("421 too many errors", "too_many_errors"),
    ("452 too many recipients", "too_many_recipients"),
    ("DNS queries", "dns_queries"),
    ("DNS queries over TCP", "dns_over_tcp"),
)


def print_world(world: World, scenario: Scenario, seed: int) -> None:
    domains = [domain for host in world.hosts for domain in host.domains]
    sizes = sorted((len(domain.addresses) for domain in domains), reverse=True)
    catch_all = sum(domain.catch_all for domain in domains)
    missing = sum(1 for verdict in world.expected.values() if verdict[1] == "rejected")
    outside = sum(len(domain.addresses) for domain in domains if not domain.catch_all)
    print(f"Scenario {scenario.title} (seed {seed})")
    print(
        f"  {len(world.addresses):,} addresses over {len(domains):,} domains (largest: "
        f"{', '.join(map(str, sizes[:6]))}; {sum(size <= 3 for size in sizes):,} domains with "
        f"1-3), {len(world.hosts)} MX hosts, {catch_all:,} catch-all domains"
    )
    print(
        f"  {missing:,} of the {outside:,} addresses at domains that are not catch-all have no "
        f"mailbox ({100 * missing / max(outside, 1):.1f}%)"
    )
    print(
        f"  RTT {scenario.rtt * 1000:g} ms (DNS and SMTP); per host: {scenario.max_connections} "
        f"connections, {scenario.rcpts_per_session} RCPTs per session, hang-up after "
        f"{scenario.errors_per_session} refused RCPTs"
    )


def print_setting(concurrency: int | None, repeat: int, load_before: Sequence[float]) -> None:
    flag = "" if concurrency is None else f" --concurrency {concurrency}"
    print(
        f"\nChecker: python mail_checker.py -f LIST --format json -o OUT --dns-server ... "
        f"--smtp-port ... --helo {HELO_NAME} --timeout {STEP_TIMEOUT:g}{flag}"
    )
    load = ", ".join(f"{value:.2f}" for value in load_before)
    print(
        f"  run {plural(repeat, 'time')}, the fastest shown; this machine: "
        f"{os.cpu_count()} CPUs, load average before the runs {load}\n"
    )


def print_details(
    results: list[CheckerResult], world: World, scenario: Scenario, start_up: ProcessRun
) -> None:
    """Where the time of the fastest run went, and whatever went wrong in any run."""
    best = fastest(results)
    run, load = best.run, best.load
    print()
    if len(results) > 1:
        walls = ", ".join(f"{result.run.wall:.2f}" for result in results)
        print(f"  wall times of the {len(results)} runs: {walls} s")
    print(
        f"  start-up alone (a run with no network work, interpreter and imports): "
        f"{start_up.wall:.2f} s wall, {start_up.cpu:.2f} s CPU"
    )
    network_phase = run.wall - best.first_query
    rtts = f" = {network_phase / scenario.rtt:.0f} RTT" if scenario.rtt else ""
    print(
        f"  the first DNS query came {best.first_query:.2f} s after the spawn (start-up, "
        f"reading and parsing the list); from there to the exit: {network_phase:.2f} s{rtts}"
    )
    work_cpu = run.cpu - start_up.cpu
    print(
        f"  checker CPU time (user + system): {run.cpu:.2f} s, "
        f"{100 * run.cpu / run.wall:.0f}% of its wall time; less start-up: {work_cpu:.2f} s "
        f"= {1e6 * work_cpu / len(world.addresses):.0f} us per address"
    )
    print(
        f"  simulated network (one thread of this process): computed {load.cpu:.2f} s, "
        f"{100 * load.cpu / run.wall:.0f}% of the checker's wall time; its timers fired up to "
        f"{load.worst_lateness * 1000:.0f} ms late"
    )
    print(
        f"  SMTP connections open at once: {load.mean_open:.0f} on average, {load.peak_open} "
        "at the peak"
    )
    if scenario.rtt and load.worst_lateness > scenario.rtt / 2:
        print(
            "  NOTE: the simulated network fell behind at times: replies left up to "
            f"{load.worst_lateness * 1000:.0f} ms after they were due, so part of the wall "
            "time is the simulator's (or this machine's other load), not the checker's."
        )
    for number, result in enumerate(results, 1):
        wrong = mismatches(result.verdicts, world.expected)
        if result.repeated:
            wrong.append(f"  addresses with more than one verdict line: {result.repeated}")
        if wrong:
            print(f"  wrong verdicts in run {number}:", *wrong, sep="\n")
        if result.run.exit_status not in (0, 1):
            print(f"  run {number}: exit status {result.run.exit_status}, stderr:")
            print(result.run.stderr)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def fastest(results: list[CheckerResult]) -> CheckerResult:
    return min(results, key=lambda result: result.run.wall)


def verdict_targets(results: list[CheckerResult], world: World) -> list[Target]:
    """Correctness must hold in every run, not only in the fastest."""
    data = sum(result.traffic.data_attempts for result in results)
    right = [correct(result.verdicts, world.expected) for result in results]
    total = len(world.expected)
    all_right = all(
        count == total == len(result.verdicts) and not result.repeated
        for count, result in zip(right, results, strict=True)
    )
    return [
        ("zero DATA", data == 0, f"{data} in {plural(len(results), 'run')}"),
        (
            "every verdict equal to the ground truth",
            all_right,
            "; ".join(f"{count:,}/{total:,}" for count in right),
        ),
    ]


def print_targets(targets: list[Target]) -> bool:
    print("\nTargets:")
    for what, met, measured in targets:
        print(f"  {'PASS' if met else 'FAIL'}  {what}: {measured}")
    return all(met for _, met, _ in targets)


def report_speed(
    world: World,
    scenario: Scenario,
    start_up: ProcessRun,
    results: list[CheckerResult],
    baseline: BaselineResult,
) -> bool:
    total = len(world.addresses)
    bound = lower_bound(world, scenario)
    best = fastest(results)
    run = best.run
    per_address = baseline.elapsed / baseline.sample
    baseline_total = per_address * total
    print(
        f"Baseline: {baseline.sample} sampled addresses checked one by one "
        f"({per_address * 1000:.0f} ms each), its time extrapolated linearly to {total:,}\n"
    )
    rows: list[tuple[str, ...]] = [
        ("", "mail_checker.py", f"baseline ({baseline.sample} sampled)", "lower bound"),
        (
            "wall time",
            f"{run.wall:.2f} s",
            f"{baseline.elapsed:.2f} s -> {baseline_total:.1f} s for {total:,}",
            f"{bound.seconds:.2f} s",
        ),
        (
            "addresses per second",
            f"{total / run.wall:,.0f}",
            f"{baseline.sample / baseline.elapsed:,.1f}",
            f"{total / bound.seconds:,.0f}",
        ),
    ]
    for label, name in TRAFFIC_ROWS:
        minimum = f"{bound.connections:,} (minimum)" if name == "connections" else ""
        ours, theirs = getattr(best.traffic, name), getattr(baseline.traffic, name)
        rows.append((label, f"{ours:,}", f"{theirs:,}", minimum))
    rows += [
        (
            "accuracy",
            accuracy(best.verdicts, world.expected),
            f"{accuracy(baseline.verdicts, world.expected)}, no catch-all test",
            "",
        ),
        ("peak memory (RSS)", f"{run.peak_memory_mb:.1f} MB", "", ""),
    ]
    print_table(rows)
    print_details(results, world, scenario, start_up)
    print(
        f"  lower bound: {bound.round_trips} RTT, set by {bound.slowest_host}: "
        f"{bound.sessions} sessions in {bound.waves} waves of {scenario.max_connections} "
        "(formula in this script's docstring; it leaves out start-up and computing)"
    )
    speedup = baseline_total / run.wall
    connections = max(result.traffic.connections for result in results)
    refused = sum(result.traffic.too_many_connections for result in results)
    return print_targets(
        [
            (
                f"wall time within {MAX_SLOWDOWN_OVER_BOUND:g}x of the lower bound",
                run.wall <= MAX_SLOWDOWN_OVER_BOUND * bound.seconds,
                f"{run.wall:.2f} s = {run.wall / bound.seconds:.1f}x of {bound.seconds:.2f} s",
            ),
            (
                f">= {MIN_SPEEDUP_OVER_BASELINE:g}x faster than the sequential baseline",
                speedup >= MIN_SPEEDUP_OVER_BASELINE,
                f"{speedup:.0f}x ({baseline_total:.1f} s extrapolated / {run.wall:.2f} s)",
            ),
            (
                f"connections <= {MAX_CONNECTIONS_OVER_MINIMUM:g}x the minimum (in every run)",
                connections <= MAX_CONNECTIONS_OVER_MINIMUM * bound.connections,
                f"at most {connections:,} = {connections / bound.connections:.2f}x of "
                f"{bound.connections:,}",
            ),
            *verdict_targets(results, world),
            (
                "no 421 provoked by our own concurrency",
                refused == 0,
                f"{refused} in {plural(len(results), 'run')}",
            ),
        ]
    )


def report_memory(
    world: World, scenario: Scenario, start_up: ProcessRun, results: list[CheckerResult]
) -> bool:
    total = len(world.addresses)
    best = fastest(results)
    run = best.run
    peak = max(result.run.peak_memory_mb for result in results)
    minimum_connections = lower_bound(world, scenario).connections
    print("No baseline in this scenario: it measures memory.\n")
    rows: list[tuple[str, ...]] = [
        ("", "mail_checker.py"),
        ("peak memory (RSS)", f"{run.peak_memory_mb:.1f} MB"),
        ("wall time", f"{run.wall:.1f} s"),
        ("addresses per second", f"{total / run.wall:,.0f}"),
        ("minimum connections", f"{minimum_connections:,}"),
    ]
    rows += [(label, f"{getattr(best.traffic, name):,}") for label, name in TRAFFIC_ROWS]
    rows.append(("accuracy", accuracy(best.verdicts, world.expected)))
    print_table(rows)
    print_details(results, world, scenario, start_up)
    return print_targets(
        [
            (
                f"peak memory under {MAX_PEAK_MEMORY_MB:g} MB (in every run)",
                peak < MAX_PEAK_MEMORY_MB,
                f"at most {peak:.1f} MB",
            ),
            *verdict_targets(results, world),
        ]
    )


# --- Main -----------------------------------------------------------------------------------


def raise_open_file_limit() -> None:
    """Hundreds of listening sockets here, and the checker's sessions (it inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory", action="store_true", help="scenario 2: peak memory")
    parser.add_argument(
        "--concurrency", type=int, metavar="N", help="passed to the checker (default: its own)"
    )
    parser.add_argument(
        "--rtt-ms",
        type=float,
        metavar="MS",
        help=f"round-trip time (default {SPEED.rtt * 1000:g}; with --memory {MEMORY.rtt * 1000:g})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help=f"checker runs, the fastest reported (default {SPEED.repeat}; with --memory "
        f"{MEMORY.repeat})",
    )
    parser.add_argument("--seed", type=int, default=1, help="of the simulated world")
    parser.add_argument(
        "--time-limit", type=float, default=600, metavar="SECONDS", help="kill a checker run after"
    )
    args = parser.parse_args()
    scenario = MEMORY if args.memory else SPEED
    if args.rtt_ms is not None:
        scenario = dataclasses.replace(scenario, rtt=args.rtt_ms / 1000)
    repeat = args.repeat or scenario.repeat
    raise_open_file_limit()

    load_before = os.getloadavg()  # other work on this machine slows the runs down
    progress("building the world and starting the peers")
    world = build_world(scenario, args.seed)
    network = start_network(world, scenario)
    # The world and the peers live to the end: keep them out of the collector's full passes,
    # which would otherwise stall the simulated network in the middle of a run.
    gc.freeze()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-mail-checker-") as directory:
            workdir = Path(directory)
            start_up = start_up_run(network, workdir, repeat)
            results = []
            for number in range(1, repeat + 1):
                progress(f"mail_checker.py on {len(world.addresses):,} addresses, run {number}")
                results.append(
                    run_checker(
                        world, network, scenario, args.concurrency, workdir, args.time_limit
                    )
                )
            baseline = None
            if scenario.baseline_sample:
                progress(f"the sequential baseline on {scenario.baseline_sample} addresses")
                baseline = run_baseline(world, network, scenario, args.seed)
    finally:
        network.peers.stop()
    print_world(world, scenario, args.seed)
    print_setting(args.concurrency, repeat, load_before)
    if baseline is None:
        return 0 if report_memory(world, scenario, start_up, results) else 1
    return 0 if report_speed(world, scenario, start_up, results, baseline) else 1


if __name__ == "__main__":
    sys.exit(main())
