"""Benchmark of mail_checker.py on a simulated network on loopback.

    python tests/bench_mail_checker.py                    # scenario 1: speed, traffic, accuracy
    python tests/bench_mail_checker.py --concurrency 200  # the same with the checker's flag
    python tests/bench_mail_checker.py --rtt-ms 100       # round trips outweigh computing
    python tests/bench_mail_checker.py --memory           # scenario 2: peak memory, big list
    python tests/bench_mail_checker.py --realistic        # scenario 3: servers that defend
    python tests/bench_mail_checker.py --burst            # scenario 4: one domain, most unknown

Scenario 1: 2,000 addresses over 200 domains, each domain with an MX host of its own; RTT 20 ms;
per host 4 connections, 50 RCPTs per session, a hang-up after 20 refused RCPTs. Scenario 2:
100,000 addresses over 20,000 domains whose MX records point at 50 hosts (catch-all domains at
hosts of their own, as catch-all is a property of a server), RTT 0, generous connection limits.
Scenarios 1 and 2 are idealised: every host answers, and only round trips cost time.

The network: the tests' DNS responder (tests/peers.py) and lean simulated SMTP servers
(SimulatedMx, below), each MX host on its own 127.x.y.z address, all on one high port given to
the checker with --smtp-port. Every reply, DNS answers included, leaves one round-trip time
(RTT) after the query or command it answers; the replies to pipelined commands that arrived
together leave together, as Postfix flushes them. The servers speak as Postfix does and enforce
per-host limits as real ones do: simultaneous connections (more get "421 ... too many
connections"), RCPTs per session (more get 452), errors per session (every 4xx or 5xx reply
counts, as in Postfix; the last one is followed by 421 and a hang-up). All peers share one
thread of this process, so the report also gives the CPU time that thread used and how late its
timers fired: when it falls behind, replies leave later than the RTT says and part of the wall
time is the simulator's. It also samples how many SMTP connections the checker kept open at
once.

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

    S_d = max(ceil((n_d + 1) / R), ceil(E_d / B))   sessions d needs (+1: the probe)
    S_h = sum of S_d over the domains h serves
    N_h = sum of (n_d + 1) over the domains h serves  RCPTs h must answer
    T_h = RTT * (2 + ceil((2 * S_h + ceil(N_h / B)) / C))

B = 9 is the politeness rule the checker keeps: a session never has more RCPTs outstanding
than the refusals it may still make before Postfix's soft error limit of 10, so it may make at
most 9 and has at most 9 RCPTs in flight in any round trip. 2 round trips of DNS (MX, then the
host's A and AAAA together); then each session spends 2 round trips on connect and greeting and
on EHLO, and every round trip of a session carries at most B RCPTs (MAIL, RSET and QUIT ride
in the same writes), all within C sessions at once: the host's C connection slots must hold
2 S_h + N_h / B session round trips. Hosts are worked on in parallel, so the bound is max over
hosts of T_h; it leaves out the interpreter's start-up and all computing time. The minimum
number of connections the per-session limits allow is the sum over hosts of S_h.

The baseline is how the common Python tools check an address, one at a time: DNS MX and A
lookups (dnspython), then one smtplib session (connect, EHLO, MAIL, RCPT, QUIT) per address.
It runs on a seeded sample of the list on the same network in the same run, and its time is
extrapolated linearly to the whole list.

Scenario 3, realistic: the internet as a checker meets it. 20,000 addresses over 4,000 domains
with the same skew, each domain with an MX host of its own; 10% of domains catch-all, 20% of the
addresses at the others without a mailbox. Each host's RTT is drawn from a lognormal
distribution, median 70 ms, kept within 20 to 250 ms; the DNS answers about a domain and its
hosts take that RTT too. Every host has Postfix's default limits:

- smtpd_soft_error_limit 10 and smtpd_error_sleep_time 1 s: Postfix sleeps 1 s before each
  reply once the session's error count has reached 10, and flushes its output after it. The
  reply that makes the 10th error is not slept on, but each one after it leaves 1 s after the
  one before, and the replies to pipelined commands that were still unflushed wait with it;
- smtpd_hard_error_limit 20: after the reply that makes the 20th error, "421 4.7.0 <host> Error:
  too many errors" (itself delayed, being a reply) and the connection is closed;
- errors are the commands answered 4xx or 5xx: refused RCPTs, greylisting's 450s, commands out
  of sequence or unknown;
- smtpd_recipient_limit 1000 RCPTs per transaction (452 beyond it); 50 connections per client
  (smtpd_client_connection_count_limit; more get 421).

And the defences and failures of real hosts, drawn per domain:

- 6% of the hosts that answer are behind postscreen: it sends the "220-" first line of the
  banner at once, holds the rest 6 s (postscreen_greet_wait), and drops a client that speaks
  before the banner is complete with "521 5.5.1 Protocol error"; a client that waited is
  remembered (postscreen_greet_ttl), so later connections get the banner at once;
- 4% of domains greylist: "450 4.2.0 ... Greylisted" to every RCPT, as for any first-time
  triplet (the checker runs without --retry-temp): expected unknown/temp_failure;
- 3% of domains have a blackholed MX host as their only one: it never answers a SYN, so a
  connect hangs until the client gives up. On loopback this is a listening socket made with
  listen(0) whose accept queue holds one connection of this benchmark's own that is never
  accepted, so the kernel drops every further SYN; at start-up a test connect to each must get
  no SYN-ACK within 1.5 s (the first SYN retransmission included). Expected: unknown/unreachable;
- 1% of domains have a tarpit as their only MX: it accepts the connection and never says a
  word. Expected: unknown/unreachable;
- 2% of domains have a blackholed first MX and a working backup at a higher preference: the
  verdicts come from the backup.

The checker runs with its default options (--timeout 10, its own concurrency), under an
open-file limit of 1024 (RLIMIT_NOFILE, soft and hard, set in the child as `ulimit -n 1024`
would). The report adds the servers' tally of the defences: replies Postfix delayed for the
soft error limit, hang-ups for too many errors, clients dropped by postscreen, and the most
refused RCPTs in one session. Targets: wall time within 2x of the lower bound below, zero
soft-limit delays, zero hang-ups for errors, zero DATA, every verdict right.

Lower bound of the realistic world, for a checker that keeps the same politeness: at most
B = 9 refused RCPTs per session (one short of smtpd_soft_error_limit). For each domain d, with
r_d its RTT, n_d its addresses, E_d the RCPTs its server refuses (the missing mailboxes and the
catch-all probe; none at a catch-all domain; all n_d + 1 at a greylisting one), C = 50 the
connections its host allows at once, T = 10 s the checker's default --timeout, G = 6 s
postscreen's greeting wait:

    S_d = max(1, ceil(E_d / B))               sessions d needs (refusals known in advance)
    W_d = ceil(S_d / C)                       waves of sessions
    P_d = 2 r_d                               DNS: MX, then the hosts' A records together
        + T    if its first MX is blackholed  (the backup is tried once the connect times out)
        + G    if its host is behind postscreen (the first wave waits for the banner)
        + 3 r_d W_d                           per wave: connect and banner, EHLO, one
                                              pipelined MAIL + RCPTs + QUIT
    P_d = 2 r_d + T         for a domain whose only MX is blackholed
    P_d = 3 r_d + T         for a tarpit (the connect, then the greeting never comes)

    K_d = 3 r_d S_d (+ T if its first MX is blackholed) (+ G behind postscreen), or the
          T (+ r_d at a tarpit) of its one hung socket when it has no working MX:
          the socket-seconds d holds at the least

    bound = max(max_d P_d, sum_d K_d / (1024 - 8))

Domains are worked on in parallel, so one bound is the slowest domain's critical path; the
other is the socket-time all domains need, spread over the sockets the open-file limit leaves
(8 files stay open besides them: standard streams, the event loop's epoll and self-pipe, the
output file, a DNS socket). Both leave out start-up and computing.

Scenario 4, burst: 60 addresses at one domain whose host has Postfix's limits, 58 of them
without a mailbox, RTT 70 ms. It reports the most refused RCPTs in one session, which must stay
below 10 (smtpd_soft_error_limit); the realistic world's lower bound applies to it too.

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
import selectors
import smtplib
import socket
import statistics
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
    TOO_MANY_RECIPIENTS_IN_SESSION_REPLY,
    DnsQuery,
    DnsResponder,
    PeerNetwork,
    _DnsDatagrams,
    _LoopbackService,
    free_port,
)

CHECKER = Path(__file__).resolve().parent.parent / "mail_checker.py"
HELO_NAME = "bench.example.net"
STEP_TIMEOUT = 5.0  # the checker's --timeout in scenarios 1 and 2, and the baseline's
CHECKER_DEFAULT_TIMEOUT = 10.0  # mail_checker.py's own --timeout, which scenarios 3 and 4 keep
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

# Postfix 3.7's replies (smtpd, postscreen), and postgrey's greylisting through Postfix.
BANNER = "220 {host} ESMTP Postfix"
POSTSCREEN_TEASER = "220-{host} ESMTP Postfix"  # the banner's first line, sent at once
PREGREET_REPLY = "521 5.5.1 Protocol error"
EHLO_REPLY = (
    "250-{host}\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-ENHANCEDSTATUSCODES\r\n"
    "250-8BITMIME\r\n250-DSN\r\n250 SMTPUTF8"
)
RESET_REPLY = "250 2.0.0 Ok"
UNKNOWN_USER_REPLY = (
    "550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"
)
GREYLISTED_REPLY = (
    "450 4.2.0 <{address}>: Recipient address rejected: Greylisted, see "
    "http://postgrey.schweikert.ch/help/{domain}.html"
)
NEED_MAIL_REPLY = "503 5.5.1 Error: need MAIL command"
NESTED_MAIL_REPLY = "503 5.5.1 Error: nested MAIL command"
NEED_HELO_REPLY = "503 5.5.1 Error: send HELO/EHLO first"
UNKNOWN_COMMAND_REPLY = "502 5.5.2 Error: command not recognized"
TOO_MANY_RECIPIENTS_REPLY = "452 4.5.3 Error: too many recipients"
TOO_MANY_CONNECTIONS_REPLY = "421 4.7.0 {host} Error: too many connections from {client}"
TOO_MANY_ERRORS_REPLY = "421 4.7.0 {host} Error: too many errors"
ERROR_SLEEP = 1.0  # smtpd_error_sleep_time
POSTSCREEN_GREET_WAIT = 6.0  # postscreen_greet_wait

# The politeness every lower bound assumes: refused RCPTs per session, one short of Postfix's
# smtpd_soft_error_limit, and so also the RCPTs a session may have in flight at once.
POLITE_REFUSALS_PER_SESSION = 9
# Files a checker keeps open besides its SMTP sockets, at the least: stdin, stdout, stderr,
# the event loop's epoll and its self-pipe (two), the output file, one DNS socket.
FILES_BESIDES_SOCKETS = 8
# Loopback completes a handshake in microseconds; 1.5 s also covers the first SYN retransmit.
BLACKHOLE_PROBE_SECONDS = 1.5


@dataclasses.dataclass(frozen=True)
class Scenario:
    title: str
    addresses: int
    domains: int
    large_domains: int  # the head of the skew; the other domains get one to three addresses
    hosts: int | None  # None: every domain has an MX host of its own
    rtt: float  # seconds; the median when rtt_spread is set
    max_connections: int
    rcpts_per_session: int | None
    errors_per_session: int  # the hard limit: 421 and a hang-up at this many errors
    catch_all_share: float
    missing_share: float
    baseline_sample: int  # 0: no baseline
    repeat: int  # checker runs, the fastest reported
    # The realistic world: Postfix's other limits, the spread of RTTs, the hosts' defences.
    soft_error_limit: int | None = None  # from this many errors on, every reply sleeps first
    rcpts_per_transaction: int | None = None
    rtt_spread: float = 0.0  # sigma of the lognormal RTT; 0: every host at `rtt`
    rtt_range: tuple[float, float] = (0.0, math.inf)
    postscreen_share: float = 0.0  # of the hosts that answer
    greylisting_share: float = 0.0  # of domains, as the next three
    blackholed_share: float = 0.0
    tarpit_share: float = 0.0
    dead_first_share: float = 0.0
    checker_timeout: float | None = STEP_TIMEOUT  # None: the checker's default
    open_files: int | None = None  # RLIMIT_NOFILE of the checker; None: this process's


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
# Postfix's defaults: smtpd_client_connection_count_limit, smtpd_hard_error_limit,
# smtpd_soft_error_limit, smtpd_recipient_limit (per transaction; none per session).
POSTFIX_LIMITS = {
    "max_connections": 50,
    "errors_per_session": 20,
    "soft_error_limit": 10,
    "rcpts_per_session": None,
    "rcpts_per_transaction": 1000,
    "checker_timeout": None,
    "open_files": 1024,
}
REALISTIC = Scenario(
    title="realistic: 20,000 addresses over 4,000 domains, Postfix's limits and defences",
    addresses=20_000,
    domains=4_000,
    large_domains=200,  # the speed scenario's skew: 5% of the domains in the head
    hosts=None,
    rtt=0.070,
    rtt_spread=0.5,  # 99% of draws within 70 ms * e^(+-2.58 * 0.5): 19 to 254 ms
    rtt_range=(0.020, 0.250),
    catch_all_share=0.10,
    missing_share=0.20,
    postscreen_share=0.06,
    greylisting_share=0.04,
    blackholed_share=0.03,
    tarpit_share=0.01,
    dead_first_share=0.02,
    baseline_sample=0,
    repeat=1,
    **POSTFIX_LIMITS,
)
BURST = Scenario(
    title="burst: 60 addresses at one Postfix domain, 58 of them without a mailbox",
    addresses=60,
    domains=1,
    large_domains=1,
    hosts=None,
    rtt=0.070,
    catch_all_share=0.0,
    missing_share=58 / 60,  # exactly 58: see build_burst_world
    baseline_sample=0,
    repeat=1,
    **POSTFIX_LIMITS,
)

Verdicts = dict[str, tuple[str, str]]  # address -> (status, reason)

# Targets of the speed scenario, and the memory scenario's.
MAX_SLOWDOWN_OVER_BOUND = 3.0
MIN_SPEEDUP_OVER_BASELINE = 100.0
MAX_CONNECTIONS_OVER_MINIMUM = 1.2
MAX_PEAK_MEMORY_MB = 200.0
# The realistic scenario's, and the burst's: stay below Postfix's soft error limit.
MAX_SLOWDOWN_OVER_REALISTIC_BOUND = 2.0
MAX_REFUSALS_IN_A_SESSION = 9


# --- The simulated world --------------------------------------------------------------------

# How a host treats a connection.
SMTP = "smtp"
TARPIT = "tarpit"  # accepts, never greets
BLACKHOLED = "blackholed"  # never answers a SYN

# What stands between a domain and its mailboxes, besides its server's answers.
DEAD_FIRST_MX = "dead first MX"


@dataclasses.dataclass
class Domain:
    name: str
    catch_all: bool
    addresses: list[str]
    existing: set[str]  # the addresses that have a mailbox
    mx: list[str] = dataclasses.field(default_factory=list)  # host names, by preference
    rtt: float = 0.0
    greylisting: bool = False
    postscreen: bool = False  # its working host is behind postscreen
    defence: str = ""  # BLACKHOLED or TARPIT (its only MX), DEAD_FIRST_MX, or "" for none

    @property
    def refusals(self) -> int:
        """RCPTs a server must refuse for this domain: missing mailboxes and the probe; every
        one at a greylisting domain."""
        if self.greylisting:
            return len(self.addresses) + 1
        return 0 if self.catch_all else len(self.addresses) - len(self.existing) + 1

    def expected(self, address: str) -> tuple[str, str]:
        if self.defence in (BLACKHOLED, TARPIT):
            return ("unknown", "unreachable")
        if self.greylisting:
            return ("unknown", "temp_failure")
        if self.catch_all:
            return ("risky", "catch_all")
        return ("valid", "accepted") if address in self.existing else ("invalid", "rejected")

    @property
    def traits(self) -> list[str]:
        """What sets the domain apart, for the accuracy by kind of domain."""
        traits = [self.defence] if self.defence else []
        traits += ["greylisting"] * self.greylisting + ["behind postscreen"] * self.postscreen
        if self.catch_all and not self.greylisting and self.defence in ("", DEAD_FIRST_MX):
            traits.append("catch-all")
        return traits or ["plain"]


@dataclasses.dataclass
class Host:
    name: str
    ip: str
    catch_all: bool
    domains: list[Domain]  # those whose mailboxes it answers for
    rtt: float = 0.0
    behaviour: str = SMTP
    greylisting: bool = False
    postscreen: bool = False


@dataclasses.dataclass
class World:
    domains: list[Domain]
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


def make_domains(scenario: Scenario, rng: random.Random) -> list[Domain]:
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
        domains.append(Domain(name, catch_all, addresses, existing, rtt=scenario.rtt))
    return domains


def finish_world(domains: list[Domain], hosts: list[Host], rng: random.Random) -> World:
    expected = {
        address: domain.expected(address) for domain in domains for address in domain.addresses
    }
    addresses = [address for domain in domains for address in domain.addresses]
    rng.shuffle(addresses)
    return World(domains, hosts, addresses, expected)


def build_world(scenario: Scenario, seed: int) -> World:
    """Scenarios 1 and 2."""
    rng = random.Random(seed)
    domains = make_domains(scenario, rng)
    if scenario.hosts is None:
        hosts = [
            Host(f"mx.{domain.name}", host_ip(index), domain.catch_all, [domain], scenario.rtt)
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
    for host in hosts:
        host.rtt = scenario.rtt
        for domain in host.domains:
            domain.mx = [host.name]
    return finish_world(domains, hosts, rng)


def build_realistic_world(scenario: Scenario, seed: int) -> World:
    """Scenario 3: the idealised world's domains, each with its RTT and its defences."""
    rng = random.Random(seed)
    domains = make_domains(scenario, rng)
    hosts: list[Host] = []
    dead_hosts: list[Host] = []
    shortest, longest = scenario.rtt_range
    for index, domain in enumerate(domains):
        drawn = rng.lognormvariate(math.log(scenario.rtt), scenario.rtt_spread)
        domain.rtt = min(max(drawn, shortest), longest)
        greylisting = rng.random() < scenario.greylisting_share
        draw = rng.random()
        for defence, share in (
            (BLACKHOLED, scenario.blackholed_share),
            (TARPIT, scenario.tarpit_share),
            (DEAD_FIRST_MX, scenario.dead_first_share),
        ):
            if draw < share:
                domain.defence = defence
                break
            draw -= share
        postscreen = rng.random() < scenario.postscreen_share
        host = Host(f"mx.{domain.name}", host_ip(index), domain.catch_all, [domain], domain.rtt)
        if domain.defence in (BLACKHOLED, TARPIT):
            host.behaviour = domain.defence  # no server to greylist or to screen
        else:
            host.greylisting = domain.greylisting = greylisting
            host.postscreen = domain.postscreen = postscreen
        if domain.defence == DEAD_FIRST_MX:
            # A name that sorts first, at a lower preference: tried first, and dead.
            dead = Host(f"mx0.{domain.name}", "", False, [], domain.rtt, BLACKHOLED)
            dead_hosts.append(dead)
            domain.mx.append(dead.name)
        domain.mx.append(host.name)
        hosts.append(host)
    for number, dead in enumerate(dead_hosts, len(hosts)):
        dead.ip = host_ip(number)
    return finish_world(domains, hosts + dead_hosts, rng)


def build_burst_world(scenario: Scenario, seed: int) -> World:
    """Scenario 4: one domain, one host; exactly two of its addresses have a mailbox."""
    rng = random.Random(seed)
    name = "burst.test"
    first_names, last_names = FIRST_NAMES.split(), LAST_NAMES.split()
    addresses = [
        f"{rng.choice(first_names)}.{rng.choice(last_names)}{serial}@{name}"
        for serial in range(scenario.addresses)
    ]
    kept = round(scenario.addresses * (1 - scenario.missing_share))
    domain = Domain(name, False, addresses, set(rng.sample(addresses, kept)), rtt=scenario.rtt)
    host = Host(f"mx.{name}", host_ip(0), False, [domain], scenario.rtt)
    domain.mx = [host.name]
    return finish_world([domain], [host], rng)


def sessions_needed(domain: Domain, scenario: Scenario) -> int:
    assert scenario.rcpts_per_session is not None  # the idealised scenarios set it
    by_rcpts = math.ceil((len(domain.addresses) + 1) / scenario.rcpts_per_session)
    by_errors = math.ceil(domain.refusals / POLITE_REFUSALS_PER_SESSION)
    return max(by_rcpts, by_errors)


@dataclasses.dataclass(frozen=True)
class LowerBound:
    seconds: float
    round_trips: int
    connections: int  # the minimum the per-session limits allow
    slowest_host: str  # the host that sets the bound
    sessions: int  # that host's
    rcpts: int  # that host's


def lower_bound(world: World, scenario: Scenario) -> LowerBound:
    """The docstring's formula for scenarios 1 and 2."""
    connections, slowest = 0, (0, 0, 0, "")
    for host in world.hosts:
        sessions = sum(sessions_needed(domain, scenario) for domain in host.domains)
        rcpts = sum(len(domain.addresses) + 1 for domain in host.domains)
        session_round_trips = 2 * sessions + math.ceil(rcpts / POLITE_REFUSALS_PER_SESSION)
        round_trips = 2 + math.ceil(session_round_trips / scenario.max_connections)
        slowest = max(slowest, (round_trips, sessions, rcpts, host.name))
        connections += sessions
    round_trips, sessions, rcpts, name = slowest
    return LowerBound(scenario.rtt * round_trips, round_trips, connections, name, sessions, rcpts)


@dataclasses.dataclass(frozen=True)
class CriticalPath:
    """One domain's part of the realistic lower bound."""

    domain: Domain
    seconds: float  # P_d
    socket_seconds: float  # K_d
    sessions: int  # S_d; 0 when no host answers
    waves: int  # W_d
    waits: str  # the timeouts and banner waits on the path, for the report


def critical_path(domain: Domain, scenario: Scenario) -> CriticalPath:
    """P_d and K_d of the docstring's formula for scenario 3."""
    rtt, timeout = domain.rtt, CHECKER_DEFAULT_TIMEOUT
    if domain.defence in (BLACKHOLED, TARPIT):
        hung = timeout + (rtt if domain.defence == TARPIT else 0.0)
        waits = f"{timeout:g} s timeout at its {domain.defence} only MX"
        return CriticalPath(domain, 2 * rtt + hung, hung, 0, 0, waits)
    sessions = max(1, math.ceil(domain.refusals / POLITE_REFUSALS_PER_SESSION))
    waves = math.ceil(sessions / scenario.max_connections)
    waited, waits = 0.0, []
    if domain.defence == DEAD_FIRST_MX:
        waited += timeout
        waits.append(f"{timeout:g} s timeout at its dead first MX")
    if domain.postscreen:
        waited += POSTSCREEN_GREET_WAIT
        waits.append(f"{POSTSCREEN_GREET_WAIT:g} s postscreen banner")
    seconds = 2 * rtt + waited + 3 * rtt * waves
    return CriticalPath(
        domain, seconds, waited + 3 * rtt * sessions, sessions, waves, ", ".join(waits)
    )


@dataclasses.dataclass(frozen=True)
class RealisticBound:
    seconds: float
    slowest: CriticalPath
    socket_seconds: float  # sum of K_d
    usable_sockets: int
    sessions: int  # sum of S_d: the fewest sessions the politeness allows

    @property
    def by_sockets(self) -> float:
        return self.socket_seconds / self.usable_sockets


def realistic_lower_bound(world: World, scenario: Scenario) -> RealisticBound:
    """The larger of the slowest critical path and the socket-time over the usable sockets."""
    assert scenario.open_files is not None
    paths = [critical_path(domain, scenario) for domain in world.domains]
    slowest = max(paths, key=lambda path: path.seconds)
    socket_seconds = sum(path.socket_seconds for path in paths)
    usable = scenario.open_files - FILES_BESIDES_SOCKETS
    seconds = max(slowest.seconds, socket_seconds / usable)
    sessions = sum(path.sessions for path in paths)
    return RealisticBound(seconds, slowest, socket_seconds, usable, sessions)


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
        records, count, rdtype, rtt = rendered
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
        self.loop.call_later(rtt, self._transport.sendto, answer, addr)


class DelayedDnsResponder(DnsResponder):
    """A DnsResponder whose UDP answers take a round trip, as the SMTP peers' replies do, and
    which notes when each query arrived (time.perf_counter()). A name given an RTT of its own
    (`set_rtt`) is answered after that one.

    TCP answers are not delayed: the checker's answers fit in UDP, and the report counts any
    query that came over TCP.
    """

    def __init__(self, rtt: float, address: str, network: PeerNetwork) -> None:
        super().__init__(address=address, network=network)
        self.rtt = rtt
        self.rtts: dict[dns.name.Name, float] = {}
        self.arrivals: list[float] = []
        # question (name in lower case, type, class) -> (answer records, their count, type, RTT)
        self.rendered: dict[bytes, tuple[bytes, int, str, float]] = {}

    def set_rtt(self, name: str, rtt: float) -> None:
        self.rtts[dns.name.from_text(name)] = rtt

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
        rtt = self.rtts.get(owner, self.rtt)
        self.rendered[question.lower()] = (records, count, dns.rdatatype.to_text(rdtype), rtt)


@dataclasses.dataclass(eq=False)
class SessionRecord:
    """What a server saw of one connection, and what its limits did to it."""

    lines: list[str] = dataclasses.field(default_factory=list)  # commands, CRLF removed
    errors: int = 0  # replies 4xx or 5xx, as Postfix counts them
    refused_rcpts: int = 0  # RCPTs among them
    delayed_replies: int = 0  # replies slept on for the soft error limit
    too_many_recipients: int = 0  # 452 for RCPTs beyond the limit
    error_hangup: bool = False  # 421 at the hard error limit
    pregreet: bool = False  # dropped by postscreen for speaking before the banner


@dataclasses.dataclass
class Census:
    """SMTP connections in session at all the simulated hosts together."""

    open_connections: int = 0


class SimulatedMx(_LoopbackService):
    """One simulated MX host: a bare asyncio protocol, not aiosmtpd.

    Thousands of these share the peers' one thread, and aiosmtpd's coroutine per command made
    that thread the bottleneck of the run (its timers fired over 100 ms late), which would charge
    the checker for the simulator's computing. This server knows only what the benchmark needs,
    and answers it in Postfix's words: EHLO/HELO, MAIL, RCPT against the host's mailboxes, RSET,
    NOOP, QUIT, and DATA (counted and refused), with the limits and defences of the docstring.
    It offers no STARTTLS. The tests' aiosmtpd peers (peers.py) are where the checker's SMTP is
    checked against a full server.

    Recorded in `sessions`, one SessionRecord per connection, plus the connections refused as
    too many and those open now.
    """

    def __init__(
        self, host: Host, port: int, scenario: Scenario, network: PeerNetwork, census: Census
    ) -> None:
        super().__init__(network)
        self.host, self.port, self.scenario, self.census = host, port, scenario, census
        self.mailboxes = frozenset(
            address.lower() for domain in host.domains for address in domain.existing
        )
        self.sessions: list[SessionRecord] = []
        self.refused_connections = 0
        self.open_connections = 0  # in session, not counting those refused as too many
        self.passed_postscreen = False  # postscreen_greet_ttl: it waited once, it is known
        self.server: asyncio.Server | None = None

    async def _open(self) -> None:
        self.server = await self.network.loop.create_server(
            lambda: _SimulatedSession(self), self.host.ip, self.port
        )

    async def _close(self) -> None:
        assert self.server is not None
        self.server.close()

    def rcpt_reply(self, address: str) -> str:
        if self.host.greylisting:
            domain = address.rpartition("@")[2]
            return GREYLISTED_REPLY.format(address=address, domain=domain)
        if self.host.catch_all or address.lower() in self.mailboxes:
            return ACCEPTED_RCPT_REPLY
        return UNKNOWN_USER_REPLY.format(address=address)


class _SimulatedSession(asyncio.Protocol):
    """One connection to a SimulatedMx, on the server's clock.

    A reply leaves one RTT after the command it answers arrived (the greeting: after the
    connection); the replies to commands that arrived together leave together, as Postfix
    flushes its output when it has read all its input. Once the session's errors reach the
    soft limit, Postfix sleeps before each reply and flushes after it, so from then on the
    replies leave one by one, each ERROR_SLEEP after the one before.
    """

    def __init__(self, mx: SimulatedMx) -> None:
        self.mx = mx
        self.loop = mx.network.loop
        self.rtt = mx.host.rtt
        self.host_name = mx.host.name
        self.record = SessionRecord()
        self.unfinished = b""
        self.greeted = self.in_transaction = False
        self.rcpts = self.transaction_rcpts = 0
        self.in_session = self.hanging_up = False
        self.banner_due: float | None = None  # behind postscreen: speaking earlier is pregreet
        self.clock = 0.0  # when the server is done with what it has read, its sleeps included
        self.pending: list[str] = []  # replies written but not flushed yet
        self.outbox: deque[tuple[float, bytes, bool]] = deque()  # (due, reply, then close)
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        mx = self.mx
        mx.sessions.append(self.record)
        self.clock = self.loop.time()
        if mx.open_connections >= mx.scenario.max_connections:
            mx.refused_connections += 1
            self.hanging_up = True
            client = transport.get_extra_info("peername")[0]
            self.respond(TOO_MANY_CONNECTIONS_REPLY.format(host=self.host_name, client=client))
            self.flush(close=True)
            return
        mx.open_connections += 1
        mx.census.open_connections += 1
        self.in_session = True
        if mx.host.behaviour == TARPIT:
            self.hanging_up = True  # it never says a word, whatever it is told
            return
        if mx.host.postscreen and not mx.passed_postscreen:
            self.respond(POSTSCREEN_TEASER.format(host=self.host_name))
            self.flush()
            self.clock += POSTSCREEN_GREET_WAIT
            self.banner_due = self.clock + self.rtt
            self.loop.call_at(self.banner_due, self.pass_postscreen)
        self.respond(BANNER.format(host=self.host_name))
        self.flush()

    def pass_postscreen(self) -> None:
        if not self.hanging_up and not self.transport.is_closing():
            self.mx.passed_postscreen = True

    def connection_lost(self, error: Exception | None) -> None:
        if self.in_session:
            self.mx.open_connections -= 1
            self.mx.census.open_connections -= 1
        self.drop_outbox()

    def data_received(self, data: bytes) -> None:
        *lines, self.unfinished = (self.unfinished + data).split(b"\r\n")
        decoded = [line.decode("utf-8", "surrogateescape") for line in lines]
        self.record.lines.extend(decoded)
        if self.hanging_up or not decoded:
            return  # the client's commands after a hang-up go unread, as on a real server
        now = self.loop.time()
        if self.banner_due is not None:
            if now < self.banner_due:
                self.drop_pregreet(now)
                return
            self.banner_due = None
        self.clock = max(self.clock, now)
        hard_limit = self.mx.scenario.errors_per_session
        for line in decoded:
            reply, close = self.answer(line)
            self.respond(reply)  # Postfix counts the error after the reply, not before it
            self.record.errors += reply[0] in "45"
            if not close and self.record.errors >= hard_limit:
                # Postfix checks the hard limit before it reads the next command.
                self.record.error_hangup = close = True
                self.respond(TOO_MANY_ERRORS_REPLY.format(host=self.host_name))
            if close:
                self.hanging_up = True
                self.flush(close=True)
                return
        self.flush()

    def drop_pregreet(self, now: float) -> None:
        """postscreen_greet_action = drop: the banner never comes; 521 and a hang-up."""
        self.record.pregreet = self.hanging_up = True
        self.drop_outbox()
        self.clock = now
        self.respond(PREGREET_REPLY)
        self.flush(close=True)

    def answer(self, line: str) -> tuple[str, bool]:
        """The reply to one command, and whether the server hangs up after it."""
        verb = line[:4].upper()
        if verb == "RCPT":
            return self.rcpt(line.partition("<")[2].rpartition(">")[0]), False
        if verb == "MAIL":
            if not self.greeted:
                return NEED_HELO_REPLY, False
            if self.in_transaction:
                return NESTED_MAIL_REPLY, False
            self.in_transaction, self.transaction_rcpts = True, 0
            return ACCEPTED_MAIL_REPLY, False
        if verb in ("EHLO", "HELO"):
            self.greeted, self.in_transaction = True, False
            if verb == "HELO":
                return f"250 {self.host_name}", False
            return EHLO_REPLY.format(host=self.host_name), False
        if verb == "RSET":
            self.in_transaction = False
            return RESET_REPLY, False
        if verb == "NOOP":
            return RESET_REPLY, False
        if verb == "QUIT":
            return QUIT_REPLY, True
        if verb == "DATA":
            return DATA_REFUSED_REPLY, False
        return UNKNOWN_COMMAND_REPLY, False

    def rcpt(self, address: str) -> str:
        if not self.in_transaction:
            return NEED_MAIL_REPLY
        self.rcpts += 1
        self.transaction_rcpts += 1
        scenario = self.mx.scenario
        if scenario.rcpts_per_session and self.rcpts > scenario.rcpts_per_session:
            reply = TOO_MANY_RECIPIENTS_IN_SESSION_REPLY
            self.record.too_many_recipients += 1
        elif (
            scenario.rcpts_per_transaction
            and self.transaction_rcpts > scenario.rcpts_per_transaction
        ):
            reply = TOO_MANY_RECIPIENTS_REPLY
            self.record.too_many_recipients += 1
        else:
            reply = self.mx.rcpt_reply(address)
        self.record.refused_rcpts += not reply.startswith("2")
        return reply

    def respond(self, reply: str) -> None:
        """Postfix's smtpd_chat_reply: at the soft error limit, sleep, write, then flush."""
        soft_limit = self.mx.scenario.soft_error_limit
        if soft_limit is not None and self.record.errors >= soft_limit:
            self.clock += ERROR_SLEEP
            self.record.delayed_replies += 1
            self.pending.append(reply)
            self.flush()
        else:
            self.pending.append(reply)

    def flush(self, close: bool = False) -> None:
        """What the server has written leaves one RTT after the server's clock."""
        wire = "".join(f"{reply}\r\n" for reply in self.pending).encode()
        self.pending = []
        if wire or close:
            self.outbox.append((self.clock + self.rtt, wire, close))
        if self.outbox and self.timer is None:
            self.timer = self.loop.call_at(self.outbox[0][0], self.send_due)

    def drop_outbox(self) -> None:
        self.outbox.clear()
        self.pending = []
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def send_due(self) -> None:
        """Write every reply that is due, in order; then wait for the next one. (The timer was
        set for the first one, so it is due even when the clock reads a hair earlier.)"""
        self.timer = None
        now, first = self.loop.time(), True
        while self.outbox and (first or self.outbox[0][0] <= now):
            first = False
            _, wire, close = self.outbox.popleft()
            self.transport.write(wire)
            if close:
                self.transport.close()
                self.outbox.clear()
        if self.outbox:
            self.timer = self.loop.call_at(self.outbox[0][0], self.send_due)


class BlackholedHosts:
    """MX hosts that never answer a SYN, as behind a firewall that drops packets.

    Each is a listening socket made with listen(0) whose accept queue holds one connection of
    our own that is never accepted: the kernel then drops every further SYN, so a client's
    connect hangs until its own timeout. Opening checks that a test connect to every host gets
    no SYN-ACK within BLACKHOLE_PROBE_SECONDS.
    """

    def __init__(self, addresses: Sequence[str], port: int) -> None:
        self.addresses, self.port = list(addresses), port
        self.sockets: list[socket.socket] = []  # the listeners and the connections queued

    def open(self) -> BlackholedHosts:
        for address in self.addresses:
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((address, self.port))
            listener.listen(0)
            self.sockets.append(listener)
        unfilled = self.addresses
        for _ in range(3):  # Linux takes one connection into a queue of length 0
            if not unfilled:
                return self
            handshakes = self.try_connect(unfilled, BLACKHOLE_PROBE_SECONDS)
            unfilled = [address for address, queued in handshakes.items() if queued]
        raise RuntimeError(f"{len(unfilled)} blackholed hosts still complete a handshake")

    def try_connect(self, addresses: list[str], patience: float) -> dict[str, bool]:
        """Connect to each at once: whether each got a SYN-ACK within `patience`. The
        connections that did are kept (they fill the queue); the others are abandoned."""
        with selectors.DefaultSelector() as selector:
            for address in addresses:
                client = socket.socket()
                client.setblocking(False)
                client.connect_ex((address, self.port))
                selector.register(client, selectors.EVENT_WRITE, address)
            answered: dict[str, bool] = dict.fromkeys(addresses, False)
            deadline = time.monotonic() + patience
            while selector.get_map() and (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    client = cast(socket.socket, key.fileobj)
                    selector.unregister(client)
                    error = client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise OSError(error, f"connecting to {key.data}: {os.strerror(error)}")
                    answered[key.data] = True
                    self.sockets.append(client)
            for key in list(selector.get_map().values()):
                cast(socket.socket, key.fileobj).close()
        return answered

    def close(self) -> None:
        for each in self.sockets:
            each.close()


@dataclasses.dataclass
class Network:
    peers: PeerNetwork
    dns: DelayedDnsResponder
    smtp: list[tuple[Host, SimulatedMx]]
    port: int
    census: Census
    blackholed: BlackholedHosts

    def stop(self) -> None:
        self.peers.stop()
        self.blackholed.close()


def start_network(world: World, scenario: Scenario) -> Network:
    peers = PeerNetwork().start()
    responder = DelayedDnsResponder(scenario.rtt, address=DNS_ADDRESS, network=peers)
    for host in world.hosts:
        responder.add_a(host.name, host.ip)
        responder.set_rtt(host.name, host.rtt)
    for domain in world.domains:
        responder.add_mx(domain.name, [(10 * rank, name) for rank, name in enumerate(domain.mx, 1)])
        responder.set_rtt(domain.name, domain.rtt)
    responder.start()
    port = free_port(host.ip for host in world.hosts)
    census = Census()
    smtp = [
        (host, SimulatedMx(host, port, scenario, peers, census).start())
        for host in world.hosts
        if host.behaviour != BLACKHOLED
    ]
    blackholed = [host.ip for host in world.hosts if host.behaviour == BLACKHOLED]
    return Network(peers, responder, smtp, port, census, BlackholedHosts(blackholed, port).open())


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
        census = self.network.census
        while not self.stopping.is_set():
            before = loop.time()
            await asyncio.sleep(self.TICK)
            elapsed = loop.time() - before
            self.worst_lateness = max(self.worst_lateness, elapsed - self.TICK)
            open_now = census.open_connections
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
    delayed_replies: int = 0  # replies Postfix slept on for the soft error limit
    sessions_at_soft_limit: int = 0  # sessions whose errors reached it
    pregreet_drops: int = 0  # clients postscreen dropped for speaking before the banner
    tarpit_connections: int = 0
    # Refused RCPTs in each session that had any, at each host, in order.
    refusals: list[int] = dataclasses.field(default_factory=list)

    @property
    def most_refusals(self) -> int:
        return max(self.refusals, default=0)


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


def traffic_since(start: Mark, network: Network, scenario: Scenario) -> Traffic:
    traffic = Traffic()
    soft_limit = scenario.soft_error_limit or math.inf
    for index, (host, peer) in enumerate(network.smtp):
        sessions = peer.sessions[start.sessions[index] :]
        traffic.connections += len(sessions)
        traffic.too_many_connections += peer.refused_connections - start.refused[index]
        if host.behaviour == TARPIT:
            traffic.tarpit_connections += len(sessions)
        for record in sessions:
            traffic.commands += len(record.lines)
            # Counted from the lines, not by the server: a DATA the server never got to
            # (pipelined after a hang-up) was still sent.
            traffic.data_attempts += sum(1 for line in record.lines if line[:4].upper() == "DATA")
            traffic.too_many_errors += record.error_hangup
            traffic.too_many_recipients += record.too_many_recipients
            traffic.delayed_replies += record.delayed_replies
            traffic.sessions_at_soft_limit += record.errors >= soft_limit
            traffic.pregreet_drops += record.pregreet
            if record.refused_rcpts:
                traffic.refusals.append(record.refused_rcpts)
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


def run_process(
    command: Sequence[str], workdir: Path, time_limit: float, open_files: int | None = None
) -> ProcessRun:
    """Run to completion (killed after time_limit); wall time and the process's own peak RSS.
    With open_files, the child's RLIMIT_NOFILE, soft and hard, as `ulimit -n` sets it."""
    environment = {**os.environ, **NEUTRAL_ENVIRONMENT}

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with open(workdir / "stderr.txt", "w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=limit_open_files,
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


def checker_options(scenario: Scenario) -> list[str]:
    """The options besides the list, the output and the network's addresses."""
    options = ["--helo", HELO_NAME]
    if scenario.checker_timeout is not None:
        options += ["--timeout", f"{scenario.checker_timeout:g}"]
    options.append("--allow-private")  # the simulated hosts listen on loopback
    return options


def checker_command(network: Network, scenario: Scenario, extra: Iterable[str]) -> list[str]:
    return [
        sys.executable,
        str(CHECKER),
        "--format",
        "json",
        "--dns-server",
        network.dns.server_arg,
        "--smtp-port",
        str(network.port),
        *checker_options(scenario),
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
    command = checker_command(network, scenario, extra)
    with LoadMonitor(network) as monitor:
        run = run_process(command, workdir, time_limit, scenario.open_files)
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


def start_up_run(network: Network, scenario: Scenario, workdir: Path, repeat: int) -> ProcessRun:
    """The fastest of runs that do no network work: interpreter start-up and imports."""
    command = checker_command(network, scenario, ["--level", "syntax", "someone@example.com"])
    runs = [run_process(command, workdir, 60, scenario.open_files) for _ in range(repeat)]
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
    domains = world.domains
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


def print_setting(
    scenario: Scenario, concurrency: int | None, repeat: int, load_before: Sequence[float]
) -> None:
    flag = "" if concurrency is None else f" --concurrency {concurrency}"
    print(
        f"\nChecker: python mail_checker.py -f LIST --format json -o OUT --dns-server ... "
        f"--smtp-port ... {' '.join(checker_options(scenario))}{flag}"
    )
    if scenario.open_files is not None:
        print(
            f"  its open-file limit: {scenario.open_files} (RLIMIT_NOFILE, soft and hard, set in "
            f"the child as `ulimit -n {scenario.open_files}` would); its other options: defaults"
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
    if scenario.rtt_spread:
        rtts = f" = {network_phase / scenario.rtt:.0f} median RTTs"
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
        f"{bound.sessions} sessions and {bound.rcpts} RCPTs, at most "
        f"{POLITE_REFUSALS_PER_SESSION} in flight per session, {scenario.max_connections} "
        "sessions at once (formula in this script's docstring; it leaves out start-up and "
        "computing)"
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


def print_realistic_world(world: World, scenario: Scenario, network: Network, seed: int) -> None:
    domains = world.domains
    sizes = sorted((len(domain.addresses) for domain in domains), reverse=True)
    traits = Counter(trait for domain in domains for trait in domain.traits)
    catch_all = sum(domain.catch_all for domain in domains)
    outside = [domain for domain in domains if not domain.catch_all]
    missing = sum(len(domain.addresses) - len(domain.existing) for domain in outside)
    addresses_outside = sum(len(domain.addresses) for domain in outside)
    rtts = sorted(domain.rtt for domain in domains)
    blackholed = len(network.blackholed.addresses)
    print(f"Scenario {scenario.title} (seed {seed})")
    print(
        f"  {len(world.addresses):,} addresses over {len(domains):,} domains (largest: "
        f"{', '.join(map(str, sizes[:6]))}; {sum(size <= 3 for size in sizes):,} domains with "
        f"1-3), {len(world.hosts):,} MX hosts"
    )
    print(
        f"  {catch_all} catch-all domains; {missing:,} of the {addresses_outside:,} addresses at "
        f"the others have no mailbox ({100 * missing / max(addresses_outside, 1):.1f}%)"
    )
    print(
        f"  domains: {traits['greylisting']} greylisting, {traits[BLACKHOLED]} whose only MX is "
        f"blackholed, {traits[TARPIT]} whose only MX is a tarpit, {traits[DEAD_FIRST_MX]} with a "
        f"blackholed first MX and a working backup, {traits['behind postscreen']} behind "
        "postscreen"
    )
    print(
        f"  RTT per host (DNS and SMTP): median {statistics.median(rtts) * 1000:.0f} ms, from "
        f"{rtts[0] * 1000:.0f} to {rtts[-1] * 1000:.0f} ms (lognormal, sigma "
        f"{scenario.rtt_spread:g})"
    )
    print(
        f"  per host, Postfix's defaults: {scenario.max_connections} connections per client, "
        f"smtpd_soft_error_limit {scenario.soft_error_limit} (then every reply "
        f"{ERROR_SLEEP:g} s late), smtpd_hard_error_limit {scenario.errors_per_session}, "
        f"smtpd_recipient_limit {scenario.rcpts_per_transaction}; postscreen: banner after "
        f"{POSTSCREEN_GREET_WAIT:g} s, 521 to a client that speaks first"
    )
    if blackholed:
        print(
            f"  {blackholed} blackholed hosts: a test connect to each got no SYN-ACK within "
            f"{BLACKHOLE_PROBE_SECONDS:g} s"
        )


def accuracy_by_trait(result: CheckerResult, world: World) -> list[tuple[str, ...]]:
    """Right verdicts per kind of domain (a domain may be of several kinds)."""
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    expected: dict[str, set[tuple[str, str]]] = {}
    for domain in world.domains:
        for address in domain.addresses:
            verdict = world.expected[address]
            for trait in domain.traits:
                total[trait] += 1
                right[trait] += result.verdicts.get(address) == verdict
                expected.setdefault(trait, set()).add(verdict)
    rows: list[tuple[str, ...]] = [("kind of domain", "addresses", "verdicts right", "expected")]
    for trait, count in total.most_common():
        shown = ", ".join(sorted("/".join(verdict) for verdict in expected[trait]))
        rows.append((trait, f"{count:,}", f"{right[trait]:,}", shown))
    return rows


REALISTIC_ROWS = (
    ("connections opened", "connections"),
    ("  of them to tarpits", "tarpit_connections"),
    ("SMTP commands sent", "commands"),
    ("DATA attempts", "data_attempts"),
    ("replies delayed by the soft error limit", "delayed_replies"),
    ("sessions that reached the soft limit", "sessions_at_soft_limit"),
    ("421 hang-ups for too many errors", "too_many_errors"),
    ("421 too many connections", "too_many_connections"),
    ("452 too many recipients", "too_many_recipients"),
    ("521 postscreen drops (spoke first)", "pregreet_drops"),
    ("most refused RCPTs in one session", "most_refusals"),
    ("DNS queries", "dns_queries"),
    ("DNS queries over TCP", "dns_over_tcp"),
)


def defence_targets(results: list[CheckerResult]) -> list[Target]:
    """Postfix's limits must never be reached, in any run."""
    delayed = sum(result.traffic.delayed_replies for result in results)
    hangups = sum(result.traffic.too_many_errors for result in results)
    runs = plural(len(results), "run")
    return [
        ("zero soft-limit delays", delayed == 0, f"{delayed:,} in {runs}"),
        ("zero hang-ups for errors", hangups == 0, f"{hangups:,} in {runs}"),
    ]


def report_realistic(
    world: World, scenario: Scenario, start_up: ProcessRun, results: list[CheckerResult]
) -> bool:
    total = len(world.addresses)
    bound = realistic_lower_bound(world, scenario)
    best = fastest(results)
    run, traffic = best.run, best.traffic
    rows: list[tuple[str, ...]] = [
        ("", "mail_checker.py", "lower bound"),
        ("wall time", f"{run.wall:.2f} s", f"{bound.seconds:.2f} s"),
        ("addresses per second", f"{total / run.wall:,.0f}", f"{total / bound.seconds:,.0f}"),
    ]
    for label, name in REALISTIC_ROWS:
        minimum = f"{bound.sessions:,} sessions (minimum)" if name == "connections" else ""
        rows.append((label, f"{getattr(traffic, name):,}", minimum))
    rows += [
        ("accuracy", accuracy(best.verdicts, world.expected), ""),
        ("peak memory (RSS)", f"{run.peak_memory_mb:.1f} MB", ""),
    ]
    print_table(rows)
    print("\nVerdicts of the fastest run by kind of domain:")
    print_table(accuracy_by_trait(best, world))
    print_details(results, world, scenario, start_up)
    slowest = bound.slowest
    waits = f", {slowest.waits}" if slowest.waits else ""
    sessions = (
        f", {plural(slowest.sessions, 'session')} in {plural(slowest.waves, 'wave')}"
        if slowest.sessions
        else ""
    )
    print(
        f"  lower bound: the larger of the slowest critical path, {slowest.seconds:.2f} s at "
        f"{slowest.domain.name} ({len(slowest.domain.addresses)} addresses, RTT "
        f"{slowest.domain.rtt * 1000:.0f} ms{waits}{sessions}), and the socket-time, "
        f"{bound.socket_seconds:,.0f} socket-seconds over {bound.usable_sockets:,} sockets = "
        f"{bound.by_sockets:.2f} s (formula in this script's docstring; it leaves out start-up "
        "and computing)"
    )
    return print_targets(
        [
            (
                f"wall time within {MAX_SLOWDOWN_OVER_REALISTIC_BOUND:g}x of the lower bound",
                run.wall <= MAX_SLOWDOWN_OVER_REALISTIC_BOUND * bound.seconds,
                f"{run.wall:.2f} s = {run.wall / bound.seconds:.1f}x of {bound.seconds:.2f} s",
            ),
            *defence_targets(results),
            *verdict_targets(results, world),
        ]
    )


def print_burst_world(world: World, scenario: Scenario, seed: int) -> None:
    domain = world.domains[0]
    print(f"Scenario {scenario.title} (seed {seed})")
    print(
        f"  {len(domain.addresses)} addresses at {domain.name}, {len(domain.existing)} with a "
        f"mailbox; one host, RTT {scenario.rtt * 1000:g} ms, Postfix's defaults: "
        f"smtpd_soft_error_limit {scenario.soft_error_limit}, smtpd_hard_error_limit "
        f"{scenario.errors_per_session}, {scenario.max_connections} connections per client"
    )


def report_burst(
    world: World, scenario: Scenario, start_up: ProcessRun, results: list[CheckerResult]
) -> bool:
    bound = realistic_lower_bound(world, scenario)
    best = fastest(results)
    run, traffic = best.run, best.traffic
    rows: list[tuple[str, ...]] = [
        ("", "mail_checker.py", "lower bound"),
        ("wall time", f"{run.wall:.2f} s", f"{bound.seconds:.2f} s"),
        ("connections opened", f"{traffic.connections}", f"{bound.sessions} (minimum)"),
        ("most refused RCPTs in one session", f"{traffic.most_refusals}", ""),
        ("replies delayed by the soft error limit", f"{traffic.delayed_replies}", ""),
        ("421 hang-ups for too many errors", f"{traffic.too_many_errors}", ""),
        ("SMTP commands sent", f"{traffic.commands}", ""),
        ("DATA attempts", f"{traffic.data_attempts}", ""),
        ("accuracy", accuracy(best.verdicts, world.expected), ""),
    ]
    print_table(rows)
    print(
        f"\n  refused RCPTs per session, in the order the sessions began: "
        f"{', '.join(map(str, traffic.refusals)) or 'none'}"
    )
    print(
        f"  start-up alone: {start_up.wall:.2f} s; lower bound: {bound.sessions} sessions of at "
        f"most {POLITE_REFUSALS_PER_SESSION} refusals, in one wave (formula in this script's "
        "docstring)"
    )
    for number, result in enumerate(results, 1):
        if result.run.exit_status not in (0, 1):
            print(f"  run {number}: exit status {result.run.exit_status}, stderr:")
            print(result.run.stderr)
    most = max(result.traffic.most_refusals for result in results)
    return print_targets(
        [
            (
                f"no session with more than {MAX_REFUSALS_IN_A_SESSION} refused RCPTs (in every "
                "run)",
                most <= MAX_REFUSALS_IN_A_SESSION,
                f"at most {most}",
            ),
            *defence_targets(results),
            *verdict_targets(results, world),
        ]
    )


# --- Main -----------------------------------------------------------------------------------


def raise_open_file_limit(world: World, scenario: Scenario) -> None:
    """A listening socket per host here (and a queued connection per blackholed one), the
    servers' ends of the checker's sessions, and the checker's own (it inherits the limit
    unless the scenario sets one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    needed = 2 * len(world.hosts) + (scenario.open_files or 1024) + 64
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"bench_mail_checker.py: this scenario needs about {needed:,} open files, and the "
            f"hard limit is {hard:,} (ulimit -Hn)."
        )


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--memory", action="store_true", help="scenario 2: peak memory")
    which.add_argument(
        "--realistic", action="store_true", help="scenario 3: Postfix's limits and defences"
    )
    which.add_argument(
        "--burst",
        action="store_true",
        help="scenario 4: 60 addresses at one Postfix domain, 58 unknown",
    )
    parser.add_argument(
        "--concurrency", type=int, metavar="N", help="passed to the checker (default: its own)"
    )
    parser.add_argument(
        "--rtt-ms",
        type=float,
        metavar="MS",
        help=f"round-trip time (default {SPEED.rtt * 1000:g}; with --memory {MEMORY.rtt * 1000:g};"
        f" with --realistic the median, {REALISTIC.rtt * 1000:g})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help=f"checker runs, the fastest reported (default {SPEED.repeat}; with --memory, "
        f"--realistic or --burst {MEMORY.repeat})",
    )
    parser.add_argument("--seed", type=int, default=1, help="of the simulated world")
    parser.add_argument(
        "--time-limit", type=float, default=600, metavar="SECONDS", help="kill a checker run after"
    )
    args = parser.parse_args()
    if args.memory:
        scenario, build = MEMORY, build_world
    elif args.realistic:
        scenario, build = REALISTIC, build_realistic_world
    elif args.burst:
        scenario, build = BURST, build_burst_world
    else:
        scenario, build = SPEED, build_world
    if args.rtt_ms is not None:
        scenario = dataclasses.replace(scenario, rtt=args.rtt_ms / 1000)
    repeat = args.repeat or scenario.repeat

    load_before = os.getloadavg()  # other work on this machine slows the runs down
    progress("building the world and starting the peers")
    world = build(scenario, args.seed)
    raise_open_file_limit(world, scenario)
    network = start_network(world, scenario)
    # The world and the peers live to the end: keep them out of the collector's full passes,
    # which would otherwise stall the simulated network in the middle of a run.
    gc.freeze()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-mail-checker-") as directory:
            workdir = Path(directory)
            start_up = start_up_run(network, scenario, workdir, repeat)
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
        network.stop()
    if args.realistic:
        print_realistic_world(world, scenario, network, args.seed)
    elif args.burst:
        print_burst_world(world, scenario, args.seed)
    else:
        print_world(world, scenario, args.seed)
    print_setting(scenario, args.concurrency, repeat, load_before)
    if args.realistic:
        met = report_realistic(world, scenario, start_up, results)
    elif args.burst:
        met = report_burst(world, scenario, start_up, results)
    elif baseline is None:
        met = report_memory(world, scenario, start_up, results)
    else:
        met = report_speed(world, scenario, start_up, results, baseline)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
