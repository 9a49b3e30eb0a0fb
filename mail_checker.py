#!/usr/bin/env python3
"""mail_checker: tell whether each email address has a mailbox that really exists.

Each address goes through three stages, each stopping early when it can:
syntax (RFC 5321/5322, RFC 6531 for internationalized addresses, IDNA 2008 domains),
DNS (MX records, null MX of RFC 7505, the implicit MX of RFC 5321 5.1), and an SMTP
conversation with the domain's mail server that stops at RCPT TO: no DATA is ever sent,
so no mail is ever delivered. Addresses of one domain share a few pipelined sessions,
and each domain is probed once with a made-up address to detect catch-all servers.

Verdicts are valid, invalid, risky or unknown, each with a reason (see VERDICT_RULES and
the README's table). Run `python mail_checker.py --help` for the options; as a library,
`check_addresses()` takes addresses and an `Options` and yields a `Verdict` per address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import enum
import functools
import hashlib
import io
import ipaddress
import json
import os
import random
import re
import secrets
import socket
import ssl
import struct
import sys
import time
import unicodedata
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import idna
from dotenv import load_dotenv

# --- Limits, each from the RFC that sets it --------------------------------------------------

MAX_LOCAL_PART_OCTETS = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN_OCTETS = 253  # RFC 1035 2.3.4 (255 on the wire, minus the length octets)
MAX_LABEL_OCTETS = 63  # RFC 1035 2.3.4
MAX_ADDRESS_OCTETS = 254  # RFC 5321 4.5.3.1.3: a path is 256 octets including "<" and ">"

# RFC 5322 3.2.3: atext, the characters of a dot-atom besides letters and digits.
ATEXT_SYMBOLS = frozenset("!#$%&'*+-/=?^_`{|}~")
# Unicode's Cc category: C0 controls (CR, LF and NUL among them), DEL and the C1 controls.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")  # RFC 5321 4.1.2 Domain

DEFAULT_SMTP_PORT = 25
DEFAULT_TIMEOUT = 10.0
# Domains worked on at once. Each costs one to --host-connections sockets while in flight;
# 100 keeps a laptop well under the common 1024 open-file limit and still fills the network.
DEFAULT_CONCURRENCY = 100
# Simultaneous sessions to one MX host. A sending Postfix opens up to 5 at first
# (initial_destination_concurrency), so 4 is below what any server expects of a real MTA.
DEFAULT_HOST_CONNECTIONS = 4

# RFC 5321 4.5.3.1.8 makes servers take at least 100 recipients per transaction; half of
# that is asked per session so that one session never looks like a harvesting run.
RCPTS_PER_SESSION = 50
# Postfix slows every reply down by a second after 10 errors in a session
# (smtpd_soft_error_limit) and hangs up after 20: rejected RCPTs count, so a session
# stops short of 10 and the rest of the domain goes on in a fresh one.
ERRORS_PER_SESSION = 9
# How often an address may be put back after a dropped session or a "too many" reply.
MAX_ATTEMPTS = 3
# Pause before reconnecting after a host said it has too many connections from us.
BACKOFF_SECONDS = 1.0

MAX_REPLY_LINE = 4096  # a reply line is at most 512 octets (RFC 5321 4.5.3.1.5); be lenient

EXIT_ALL_VALID, EXIT_SOME_NOT_VALID, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# RFC 2142 mailbox names, and the ones every company uses the same way.
ROLE_LOCAL_PARTS = frozenset(
    # RFC 2142 sections 3-5
    "info marketing sales support abuse noc security postmaster hostmaster usenet news "
    "webmaster www uucp ftp "
    # common practice
    "admin administrator billing contact office help helpdesk hello team jobs careers hr "
    "press media enquiries inquiries accounts accounting finance legal privacy compliance "
    "noreply no-reply donotreply do-not-reply mail mailer-daemon root sysadmin it service "
    "customerservice feedback orders shop newsletter subscribe unsubscribe".split()
)
# Large free mailbox providers (their own sign-up pages; the regional ones from their
# operators' published domain lists: Mail.ru Group, Yandex, United Internet, Tencent, NetEase).
FREE_PROVIDER_DOMAINS = frozenset(
    "gmail.com googlemail.com outlook.com hotmail.com hotmail.co.uk hotmail.fr live.com "
    "msn.com yahoo.com yahoo.co.uk yahoo.fr yahoo.co.jp ymail.com rocketmail.com aol.com "
    "icloud.com me.com mac.com proton.me protonmail.com pm.me gmx.com gmx.de gmx.net "
    "web.de mail.com zoho.com zohomail.com yandex.ru yandex.com ya.ru mail.ru bk.ru inbox.ru "
    "list.ru internet.ru rambler.ru qq.com foxmail.com 163.com 126.com yeah.net sina.com "
    "naver.com daum.net hanmail.net libero.it virgilio.it orange.fr wanadoo.fr free.fr "
    "laposte.net t-online.de freenet.de seznam.cz wp.pl o2.pl interia.pl ukr.net "
    "rediffmail.com tutanota.com tuta.io fastmail.com hey.com".split()
)


# --- Types --------------------------------------------------------------------------------


class UsageError(ValueError):
    """A mistake in the command line or its input: printed as one line, exit status 2."""


class Level(enum.StrEnum):
    SYNTAX = "syntax"
    DNS = "dns"
    SMTP = "smtp"


@dataclass(frozen=True)
class Verdict:
    """The outcome for one address, with the raw SMTP reply kept for auditing."""

    email: str
    status: str
    reason: str
    detail: str
    mx: str | None = None
    smtp_code: int | None = None
    smtp_message: str | None = None
    flags: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in FIELDS} | {"flags": list(self.flags)}


FIELDS = [f.name for f in dataclasses.fields(Verdict)]


@dataclass
class Options:
    """Everything check_addresses() needs; the defaults are the command line's."""

    level: Level = Level.SMTP
    dns_servers: list[tuple[str, int]] = field(default_factory=list)  # empty: the system's
    smtp_port: int = DEFAULT_SMTP_PORT
    mail_from: str = ""  # empty: the null reverse-path <>
    helo: str = ""  # empty: this host's fully qualified name, looked up at the first session
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY
    host_connections: int = DEFAULT_HOST_CONNECTIONS
    # socks5://[user:password@]host:port; left out of repr() so that logs never show the password
    proxy: str | None = field(default=None, repr=False)
    # Connect to MX hosts on loopback, RFC 1918 and other addresses the internet cannot reach;
    # off, so that a domain pointing its MX at 10.0.0.5 cannot make a check probe our network.
    allow_private: bool = False
    probe_seed: str = field(default_factory=lambda: secrets.token_hex(16))  # catch-all probes
    log: Callable[[str], None] | None = None  # receives the DNS answers and SMTP dialogue


# --- Stage 1: syntax (no network) -----------------------------------------------------------


class AddressSyntaxError(ValueError):
    """The text is not a usable email address; str() is a sentence for the user."""


@dataclass(frozen=True)
class Address:
    given: str  # as the user wrote it
    local: str  # kept as given: the local part is case-sensitive (RFC 5321 2.4)
    domain: str  # case-folded A-labels, ready for DNS and the SMTP wire
    needs_smtputf8: bool  # non-ASCII local part (RFC 6531)

    @property
    def wire(self) -> str:
        return f"{self.local}@{self.domain}"


def reject_control_characters(text: str, what: str) -> None:
    """No CR, LF, NUL or other control character may reach the SMTP wire (command injection)."""
    found = CONTROL_CHARACTER.search(text)
    if found:
        raise AddressSyntaxError(
            f"The {what} contains a control character ({ord(found.group()):#04x}), "
            "which no address may hold."
        )


def check_local_part(local: str) -> None:
    """RFC 5322 3.4.1 dot-atom, with RFC 6531's UTF-8 characters allowed as atext."""
    if not local:
        raise AddressSyntaxError("There must be something before the @-sign.")
    if local.startswith('"'):
        raise AddressSyntaxError(
            'Quoted local parts ("...") are not accepted: mail systems rarely deliver to them.'
        )
    if len(local.encode()) > MAX_LOCAL_PART_OCTETS:
        raise AddressSyntaxError(
            f"The part before the @-sign is longer than {MAX_LOCAL_PART_OCTETS} octets."
        )
    if local.startswith(".") or local.endswith("."):
        raise AddressSyntaxError("The part before the @-sign cannot start or end with a period.")
    if ".." in local:
        raise AddressSyntaxError("The part before the @-sign cannot have two periods in a row.")
    for char in local:
        if char == "." or (char.isascii() and (char.isalnum() or char in ATEXT_SYMBOLS)):
            continue
        if not char.isascii() and unicodedata.category(char)[0] not in "CZ":
            continue  # RFC 6531 UTF8-non-ascii, less separators and unassigned or format chars
        raise AddressSyntaxError(
            f"The part before the @-sign contains a character that is not allowed: {char!r}."
        )


@functools.lru_cache(maxsize=4096)  # a big list repeats its domains; IDNA is slow to redo
def to_ascii_domain(domain: str) -> str:
    """Case-folded A-label form of the domain: RFC 5321 LDH labels, IDNA 2008 with UTS 46."""
    if domain.startswith("["):
        raise AddressSyntaxError(
            "Domain literals such as [192.0.2.1] are not accepted: "
            "the part after the @-sign must be a domain name."
        )
    try:
        ascii_domain = idna.encode(domain, uts46=True, std3_rules=True).decode("ascii")
    except idna.IDNAError as error:
        raise AddressSyntaxError(
            f"The part after the @-sign is not a valid domain name ({error})."
        ) from None
    ascii_domain = ascii_domain.lower()
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise AddressSyntaxError(
            f"The part after the @-sign is longer than {MAX_DOMAIN_OCTETS} octets."
        )
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise AddressSyntaxError("The part after the @-sign must contain a period.")
    for label in labels:
        if len(label) > MAX_LABEL_OCTETS:
            raise AddressSyntaxError(
                f"A part of the domain is longer than {MAX_LABEL_OCTETS} octets."
            )
        if not LDH_LABEL.match(label):
            raise AddressSyntaxError(
                f"The domain part {label!r} may hold only letters, digits and inner hyphens."
            )
    if labels[-1].isdigit():
        raise AddressSyntaxError("The last part of the domain cannot be all digits.")
    return ascii_domain


def parse_address(text: str) -> Address:
    """Check one address and return it in wire form, or raise AddressSyntaxError."""
    reject_control_characters(text, "address")
    if "@" not in text:
        raise AddressSyntaxError("An email address must have an @-sign.")
    local, _, domain = text.rpartition("@")
    if "@" in local and not local.startswith('"'):
        raise AddressSyntaxError("An email address can have only one @-sign.")
    if not domain:
        raise AddressSyntaxError("There must be a domain after the @-sign.")
    check_local_part(local)
    if domain.startswith(".") or domain.endswith("."):
        raise AddressSyntaxError("The part after the @-sign cannot start or end with a period.")
    ascii_domain = to_ascii_domain(domain)
    address = Address(text, local, ascii_domain, needs_smtputf8=not local.isascii())
    if len(address.wire.encode()) > MAX_ADDRESS_OCTETS:
        raise AddressSyntaxError(f"The address is longer than {MAX_ADDRESS_OCTETS} octets.")
    return address


def flags_for(address: Address) -> tuple[str, ...]:
    flags = []
    if address.local.lower() in ROLE_LOCAL_PARTS:
        flags.append("role")
    if address.domain in FREE_PROVIDER_DOMAINS:
        flags.append("free_provider")
    if address.needs_smtputf8:
        flags.append("smtputf8")
    return tuple(flags)


def check_helo_name(name: str) -> str:
    """The EHLO argument: a host name or an address literal (RFC 5321 4.1.1.1, 4.1.3)."""
    try:
        reject_control_characters(name, "HELO name")
        if name.startswith("[") and name.endswith("]"):
            ipaddress.ip_address(name[1:-1].removeprefix("IPv6:"))
            return name
        ascii_name = idna.encode(name, uts46=True, std3_rules=True).decode("ascii").lower()
    except (AddressSyntaxError, ValueError) as error:  # idna.IDNAError is a ValueError
        raise UsageError(f"--helo {name!r} is not a host name: {error}") from None
    if len(ascii_name) > MAX_DOMAIN_OCTETS or not all(
        LDH_LABEL.match(label) for label in ascii_name.split(".")
    ):
        raise UsageError(f"--helo {name!r} is not a host name.")
    return ascii_name


# --- Stage 2: DNS ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MailHost:
    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class MailRoute:
    """Where a domain's mail goes: hosts in the order to try, or why there are none."""

    hosts: tuple[MailHost, ...] = ()
    failure: tuple[str, str, str] | None = None  # (status, reason, detail)


NO_DOMAIN = ("invalid", "no_domain", "The domain does not exist.")
# RFC 6891 EDNS(0) with DNS Flag Day 2020's 1232-octet UDP payload: a long MX list still fits
# one unfragmented datagram; an answer that does not comes truncated and is asked over TCP.
EDNS_PAYLOAD = 1232
# RFC 1035 4.1.1: ID, flags (RD: recursion desired), one question, no answer or authority
# records, one additional record: EDNS's OPT pseudo-record (RFC 6891 6.1.2), root-owned.
QUERY_HEADER = struct.Struct("!HHHHHH")
RECURSION_DESIRED = 0x0100
OPT_RECORD = b"\x00" + struct.pack("!HHIH", dns.rdatatype.OPT, EDNS_PAYLOAD, 0, 0)
USABLE_RCODES = (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)  # others: ask another server
# dnspython's resolver takes a new source port for every query. A fresh socket every hundred
# queries still leaves a blind forger a random port to guess besides the id, at a fraction of
# the cost.
QUERIES_PER_SOCKET = 100
# Answers kept for names asked again, such as the MX hosts that many domains share; the
# oldest go, so that memory follows the work in flight rather than the list (about 1 KB each).
CACHED_LOOKUPS = 4096


class NoSuchDomain(Exception):
    """NXDOMAIN: nothing exists at the name (RFC 8020: nor below it)."""


class DnsError(Exception):
    """No answer could be had; str() says why."""


def system_dns_servers() -> list[tuple[str, int]]:
    """The servers this machine's resolver configuration names (/etc/resolv.conf, or the
    Windows registry), as dnspython reads it."""
    # Imported here: it is needed only without --dns-server, and it costs start-up time.
    import dns.nameserver
    import dns.resolver

    try:
        resolver = dns.resolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        return []
    servers = []
    for server in resolver.nameservers:
        if isinstance(server, str):
            servers.append((server, resolver.nameserver_ports.get(server, resolver.port)))
        elif isinstance(server, dns.nameserver.Do53Nameserver):
            servers.append((server.address, server.port))
    return servers


def dns_query(query_id: int, question: bytes) -> bytes:
    """A recursive query for one question, with EDNS's OPT record."""
    return QUERY_HEADER.pack(query_id, RECURSION_DESIRED, 1, 0, 0, 1) + question + OPT_RECORD


def answers(data: bytes, query_id: int, question: bytes) -> bool:
    """Whether a message is the response to our query: its id, QR set with opcode QUERY
    (RFC 1035 4.1.1), and our question, compared in any case since servers may echo it in
    mixed case (draft-vixie-dnsext-dns0x20)."""
    return (
        len(data) >= QUERY_HEADER.size
        and int.from_bytes(data[:2], "big") == query_id
        and data[2] & 0xF8 == 0x80
        and data[12 : 12 + len(question)].lower() == question.lower()
    )


class DnsSocket(asyncio.DatagramProtocol):
    """A UDP socket that carries many queries to the servers of one address family. An
    answer is taken only from the server asked, with the query's id, as a response to a
    standard query, and with the question asked; anything else is ignored."""

    def __init__(self) -> None:
        # query id -> (server, question, the answer to come)
        self.waiting: dict[int, tuple[tuple[str, int], bytes, asyncio.Future]] = {}
        self.sent = 0
        self.retired = False  # no new queries: it closes when the last one is answered

    def retire(self) -> None:
        self.retired = True
        if not self.waiting:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, sender: tuple[str, int]) -> None:
        query_id = int.from_bytes(data[:2], "big")
        entry = self.waiting.get(query_id)
        if entry is None:
            return
        server, question, answered = entry
        if sender[:2] != server or answered.done() or not answers(data, query_id, question):
            return
        try:
            answered.set_result(dns.message.from_wire(data))
        except Exception:  # a malformed answer is ignored like a stray one: the query times out
            return

    def error_received(self, exc: Exception) -> None:
        """An ICMP error on an unconnected socket names no query: the query times out."""

    async def exchange(
        self, question: bytes, server: tuple[str, int], timeout: float
    ) -> dns.message.Message:
        """Send the query once and wait up to `timeout` for its answer (TimeoutError)."""
        while (query_id := secrets.randbits(16)) in self.waiting:
            pass
        answered: asyncio.Future[dns.message.Message] = asyncio.get_running_loop().create_future()
        self.waiting[query_id] = (server, question, answered)
        self.sent += 1
        try:
            self.transport.sendto(dns_query(query_id, question), server)
            async with asyncio.timeout(timeout):
                return await answered
        finally:
            del self.waiting[query_id]
            if self.retired and not self.waiting:
                self.transport.close()


def opened(opening: asyncio.Future[DnsSocket]) -> DnsSocket | None:
    """The socket, once it is open; None while it opens, or if it could not."""
    if opening.done() and not opening.cancelled() and opening.exception() is None:
        return opening.result()
    return None


class Dns:
    """A stub resolver for the run, built on dnspython's message API; a name that many
    domains need (an MX host they share) is asked once.

    Queries share UDP sockets, one per address family at a time. (dnspython's resolver opens a
    socket and an asyncio transport per query, which on a bulk list cost more computing than
    the rest of the DNS work together.)
    """

    def __init__(self, options: Options) -> None:
        self.log = options.log
        self.timeout = options.timeout
        self.allow_private = options.allow_private
        self.servers = [
            (str(ipaddress.ip_address(host)), port)  # as recvfrom() will spell the sender
            for host, port in options.dns_servers or system_dns_servers()
        ]
        self.lookups: dict[tuple[str, str], asyncio.Future[list[str]]] = {}
        self.sockets: dict[socket.AddressFamily, asyncio.Future[DnsSocket]] = {}

    def close(self) -> None:
        for opening in self.sockets.values():
            if udp := opened(opening):
                udp.retire()
            opening.cancel()

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        """Record texts of one type; [] when the name exists without it.
        Raises NoSuchDomain or DnsError."""
        key = (name, rdtype)
        if key not in self.lookups:
            self.lookups[key] = asyncio.ensure_future(self._ask(name, rdtype))
            if len(self.lookups) > CACHED_LOOKUPS:
                del self.lookups[next(iter(self.lookups))]  # the oldest
        return await asyncio.shield(self.lookups[key])

    async def _ask(self, name: str, rdtype: str) -> list[str]:
        try:
            question = dns.name.from_text(name).to_wire() + struct.pack(
                "!HH", dns.rdatatype.from_text(rdtype), dns.rdataclass.IN
            )
            response = await self._exchange(question)
            if response.rcode() == dns.rcode.NXDOMAIN:
                raise NoSuchDomain(name)
            answer = response.resolve_chaining().answer
        except dns.exception.DNSException as error:
            raise DnsError(f"the DNS lookup failed ({type(error).__name__})") from None
        records = [rdata.to_text() for rdata in answer or ()]
        if self.log:
            self.log(f"dns: {name} {rdtype} -> {', '.join(records) or '(no records)'}")
        return records

    async def _exchange(self, question: bytes) -> dns.message.Message:
        """The first usable answer. Servers are asked in turn until --timeout is used up, each
        with its share of it (a lone server: two tries), so that one silent server never uses
        up the time of the others; a server that fails (SERVFAIL, REFUSED, a socket error) is
        not asked again for this name."""
        if not self.servers:
            raise DnsError("no DNS resolver is configured on this machine")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        share = self.timeout / (len(self.servers) + 1)
        servers = list(self.servers)
        while servers:
            for server in list(servers):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise DnsError("the DNS query timed out")
                family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
                try:
                    udp = await self._socket(family)
                    response = await udp.exchange(question, server, min(share, remaining))
                    if response.flags & dns.flags.TC:
                        remaining = deadline - loop.time()
                        response = await self._over_tcp(question, server, remaining)
                except TimeoutError:
                    continue
                except (OSError, EOFError, dns.exception.DNSException):
                    response = None
                if response is not None and response.rcode() in USABLE_RCODES:
                    return response
                servers.remove(server)
        raise DnsError("no DNS server gave a usable answer (SERVFAIL, or the query was refused)")

    async def _socket(self, family: socket.AddressFamily) -> DnsSocket:
        """The family's socket; a fresh one, with a fresh source port, every
        QUERIES_PER_SOCKET queries."""
        opening = self.sockets.get(family)
        if opening and (udp := opened(opening)) and udp.sent >= QUERIES_PER_SOCKET:
            udp.retire()
            opening = None
        if opening is None:
            opening = self.sockets[family] = asyncio.ensure_future(self._open_socket(family))
        return await asyncio.shield(opening)

    @staticmethod
    async def _open_socket(family: socket.AddressFamily) -> DnsSocket:
        loop = asyncio.get_running_loop()
        _, udp = await loop.create_datagram_endpoint(DnsSocket, family=family)
        return udp

    @staticmethod
    async def _over_tcp(
        question: bytes, server: tuple[str, int], timeout: float
    ) -> dns.message.Message:
        """The query over TCP (RFC 7766), each message after its length in two octets."""
        query_id = secrets.randbits(16)
        query = dns_query(query_id, question)
        async with asyncio.timeout(max(timeout, 0)):
            reader, writer = await asyncio.open_connection(*server)
            try:
                writer.write(len(query).to_bytes(2, "big") + query)
                length = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(length)
            finally:
                writer.close()
        if not answers(data, query_id, question):
            raise dns.exception.FormError("the answer over TCP is not for our query")
        return dns.message.from_wire(data)

    async def host_addresses(self, name: str) -> tuple[str, ...]:
        """IPv4 addresses, or IPv6 ones for a host without any: more networks reach IPv4,
        and asking AAAA only when needed spares a query per host."""
        return tuple(await self.lookup(name, "A") or await self.lookup(name, "AAAA"))

    async def mail_route(self, domain: str) -> MailRoute:
        """The DNS rules: RFC 5321 5.1 (MX, else implicit MX) and RFC 7505 (null MX)."""
        try:
            records = await self.lookup(domain, "MX")
        except NoSuchDomain:
            return MailRoute(failure=NO_DOMAIN)
        except DnsError as error:
            return MailRoute(failure=dns_failure(error))
        mx = sorted(
            (int(pref), random.random(), host.rstrip(".").lower())  # ties in random order
            for pref, host in (record.split() for record in records)
        )
        if not mx:
            return await self.implicit_mx(domain)
        if len(mx) == 1 and mx[0][2] == "":
            return MailRoute(
                failure=("invalid", "null_mx", "The domain publishes a null MX: it takes no mail.")
            )
        names = [host for _, _, host in mx if host]  # a stray "0 ." beside real MX is ignored
        results = await asyncio.gather(
            *(self.host_addresses(name) for name in names), return_exceptions=True
        )
        hosts = tuple(
            MailHost(name, result)
            for name, result in zip(names, results, strict=True)
            if isinstance(result, tuple) and result
        )
        if hosts:
            return self.reachable(hosts)
        errors = [result for result in results if isinstance(result, DnsError)]
        if errors:  # hosts that do not exist are skipped; a failed lookup leaves no verdict
            return MailRoute(failure=dns_failure(errors[0]))
        return MailRoute(
            failure=(
                "unknown",
                "unreachable",
                f"None of the domain's MX hosts ({', '.join(names)}) has an address.",
            )
        )

    async def implicit_mx(self, domain: str) -> MailRoute:
        try:
            addresses = await self.host_addresses(domain)
        except NoSuchDomain:
            return MailRoute(failure=NO_DOMAIN)
        except DnsError as error:
            return MailRoute(failure=dns_failure(error))
        if not addresses:
            return MailRoute(
                failure=("invalid", "no_mx", "The domain has no MX record and no address.")
            )
        return self.reachable((MailHost(domain, addresses),))

    def reachable(self, hosts: tuple[MailHost, ...]) -> MailRoute:
        """The hosts with their globally routable addresses only, unless allow_private: a
        domain whose MX points at 127.0.0.1 or 10.0.0.5 must not turn a check (a sign-up form's,
        say) into a probe of the checker's own network."""
        if self.allow_private:
            return MailRoute(hosts=hosts)
        kept, private = [], []
        for host in hosts:
            routable = tuple(ip for ip in host.addresses if ipaddress.ip_address(ip).is_global)
            private += [ip for ip in host.addresses if ip not in routable]
            if routable:
                kept.append(MailHost(host.name, routable))
        if kept:
            return MailRoute(hosts=tuple(kept))
        detail = (
            f"The domain's mail hosts have only addresses the internet cannot reach "
            f"({', '.join(private)}), so none was connected to (--allow-private allows them)."
        )
        return MailRoute(failure=("invalid", "no_mx", detail))


def dns_failure(error: DnsError) -> tuple[str, str, str]:
    return ("unknown", "dns_error", f"No verdict: {error}.")


# --- Stage 3a: the SMTP protocol (RFC 5321, RFC 2920 pipelining, RFC 3207 STARTTLS) ---------


class ReplyCode(enum.IntEnum):
    SERVICE_READY = 220
    CLOSING = 221
    OK = 250
    SERVICE_NOT_AVAILABLE = 421


REPLY_LINE = re.compile(r"\d{3}(?:[ -]|$)")
ENHANCED_CODE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def message(self) -> str:
        """The reply as the server wrote it, multi-line replies joined with spaces."""
        return f"{self.code} {self.text}".strip()

    @functools.cached_property
    def enhanced(self) -> str | None:
        """RFC 3463 status code, when the server gave one of the reply's own class."""
        match = ENHANCED_CODE.search(self.text)
        if match and match.group(1) == str(self.code)[0]:
            return ".".join(match.groups())
        return None


class SmtpDropped(Exception):
    """The connection ended, timed out or broke the protocol in the middle of a session."""


class SmtpClient:
    """Reads and writes SMTP over a stream; knows nothing of verdicts."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        timeout: float,
        log: Callable[[str], None] | None,
    ) -> None:
        self.reader, self.writer, self.host = reader, writer, host
        self.timeout, self.log = timeout, log
        self.extensions: set[str] = set()
        self.said_goodbye = False  # the server answered QUIT
        self.loop = asyncio.get_running_loop()
        # Each wait for a reply is bounded by the timeout through one timer per connection
        # (see _watch) rather than a timer per reply: a pipelined batch has dozens of them.
        self.awaiting_reply = False
        self.deadline = 0.0
        self.watchdog: asyncio.TimerHandle | None = None
        self.timed_out = False

    async def read_reply(self) -> Reply:
        """One reply, its continuation lines ("250-...") joined (RFC 5321 4.2.1)."""
        lines: list[str] = []
        self.deadline = self.loop.time() + self.timeout
        self.awaiting_reply = True
        if self.watchdog is None:
            self.watchdog = self.loop.call_at(self.deadline, self._watch)
        try:
            while True:
                raw = await self.reader.readline()
                if not raw.endswith(b"\n"):
                    raise SmtpDropped(self.why_it_ended(f"{self.host} closed the connection"))
                line = raw[:MAX_REPLY_LINE].decode("utf-8", "replace").rstrip("\r\n")
                if self.log:
                    self.log(f"smtp: {self.host} < {line}")
                if not REPLY_LINE.match(line):
                    raise SmtpDropped(f"{self.host} sent a malformed reply: {line[:80]!r}")
                lines.append(line[4:])
                if line[3:4] != "-":
                    reply = Reply(int(line[:3]), tuple(lines))
                    self.said_goodbye = reply.code == ReplyCode.CLOSING
                    return reply
        except (ConnectionError, ValueError, ssl.SSLError) as error:
            why = f"the connection to {self.host} failed: {error}"
            raise SmtpDropped(self.why_it_ended(why)) from None
        finally:
            self.awaiting_reply = False

    def _watch(self) -> None:
        """The timer: a wait that has reached its deadline hangs up, which ends the read;
        a deadline that moved on since the timer was set (another reply came) sets it again."""
        self.watchdog = None
        if not self.awaiting_reply:
            return  # the next read sets it again
        if self.loop.time() < self.deadline:
            self.watchdog = self.loop.call_at(self.deadline, self._watch)
        else:
            self.timed_out = True
            self.writer.transport.abort()

    def why_it_ended(self, otherwise: str) -> str:
        if self.timed_out:
            return f"{self.host} did not answer within {self.timeout:g} s"
        return otherwise

    async def send(self, *commands: str) -> None:
        """Write commands in one go: one for lock-step, several when pipelining."""
        for command in commands:
            if CONTROL_CHARACTER.search(command):
                raise ValueError(f"refusing to send a control character: {command!r}")
            if self.log:
                self.log(f"smtp: {self.host} > {command}")
        self.writer.write("".join(f"{c}\r\n" for c in commands).encode())
        if not self.writer.transport.get_write_buffer_size():
            return  # all handed to the kernel; a broken connection shows at the next read
        try:
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except (ConnectionError, TimeoutError) as error:
            raise SmtpDropped(f"the connection to {self.host} failed: {error!r}") from None

    async def command(self, command: str) -> Reply:
        await self.send(command)
        return await self.read_reply()

    async def hello(self, name: str) -> Reply:
        """EHLO, or HELO when the server does not know EHLO (RFC 5321 4.1.1.1)."""
        reply = await self.command(f"EHLO {name}")
        if reply.code == ReplyCode.OK:
            self.extensions = {line.split()[0].upper() for line in reply.lines[1:] if line}
            return reply
        if reply.code == ReplyCode.SERVICE_NOT_AVAILABLE:
            return reply
        self.extensions = set()
        return await self.command(f"HELO {name}")

    async def starttls(self) -> Reply:
        reply = await self.command("STARTTLS")
        if reply.code == ReplyCode.SERVICE_READY:
            try:
                async with asyncio.timeout(self.timeout):
                    await self.writer.start_tls(opportunistic_tls_context())
            except (OSError, ssl.SSLError, TimeoutError) as error:
                raise SmtpDropped(f"TLS with {self.host} failed: {error!r}") from None
        return reply

    async def exchange(self, commands: list[str]) -> AsyncIterator[Reply]:
        """The replies to commands, in order: all written at once when the server offers
        PIPELINING (RFC 2920), else one command per reply. Closing it early stops sending."""
        if "PIPELINING" in self.extensions:
            await self.send(*commands)
            for _ in commands:
                yield await self.read_reply()
        else:
            for command in commands:
                await self.send(command)
                yield await self.read_reply()

    async def quit(self) -> None:
        """QUIT politely, waiting at most one step for the goodbye."""
        with contextlib.suppress(SmtpDropped):
            await self.command("QUIT")

    async def close(self) -> None:
        """Hang up. After a 221 the server closes first (RFC 5321 4.1.1.10); waiting for that
        keeps a new session from arriving while the server still counts this one."""
        if self.said_goodbye:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self.reader.read()
        if self.watchdog is not None:
            self.watchdog.cancel()
        self.writer.close()


def opportunistic_tls_context() -> ssl.SSLContext:
    """As mail servers do between themselves (RFC 3207 4.1): encrypt, accept any certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    username: str | None
    password: str | None

    def __str__(self) -> str:  # never the password
        user = f"{self.username}@" if self.username else ""
        return f"socks5://{user}{self.host}:{self.port}"


def parse_proxy(url: str) -> Proxy:
    """socks5://[user:password@]host:port; the message of a bad one never shows the password."""
    usage = UsageError(
        "--proxy must look like socks5://[user:password@]host:port, with a user and password "
        "of at most 255 bytes each and %-escapes for any /, @ or : in them."
    )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise usage from None
    if parts.scheme != "socks5" or not parts.hostname or port is None or parts.path:
        raise usage
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    if any(len(part.encode()) > 255 for part in (username or "", password or "")):
        raise usage  # RFC 1929 gives each one length octet
    return Proxy(parts.hostname, port, username, password)


SOCKS_REPLIES = {  # RFC 1928 section 6
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


class ProxyError(OSError):
    """The SOCKS5 proxy refused or failed; str() says why, without the password."""


async def socks5_connect(
    proxy: Proxy, ip: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """RFC 1928 CONNECT, with RFC 1929 username/password authentication when given."""
    try:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    except OSError as error:
        raise ProxyError(f"cannot reach the proxy {proxy}: {error.strerror or error}") from None
    step = "greeting"
    try:
        methods = b"\x00\x02" if proxy.username else b"\x00"
        writer.write(b"\x05" + bytes([len(methods)]) + methods)
        version, method = await reader.readexactly(2)
        if version != 5 or method == 0xFF:
            raise ProxyError(f"the proxy {proxy} accepts none of our authentication methods")
        if method == 2:
            step = "authentication"
            user = (proxy.username or "").encode()
            secret = (proxy.password or "").encode()
            writer.write(b"\x01" + bytes([len(user)]) + user + bytes([len(secret)]) + secret)
            _, status = await reader.readexactly(2)
            if status != 0:
                raise ProxyError(f"the proxy {proxy} refused the username or password")
        step = "CONNECT"
        packed = ipaddress.ip_address(ip)
        address_type = b"\x01" if packed.version == 4 else b"\x04"
        writer.write(b"\x05\x01\x00" + address_type + packed.packed + port.to_bytes(2, "big"))
        _, status, _, bound_type = await reader.readexactly(4)
        if status != 0:
            reason = SOCKS_REPLIES.get(status, f"error {status}")
            raise ProxyError(f"the proxy {proxy} could not connect to {ip}: {reason}")
        bound_length = {1: 4, 4: 16}.get(bound_type)
        if bound_length is None:
            bound_length = (await reader.readexactly(1))[0]
        await reader.readexactly(bound_length + 2)
    except (asyncio.IncompleteReadError, ConnectionError) as error:
        writer.close()
        raise ProxyError(f"the proxy {proxy} hung up during {step}: {error!r}") from None
    except BaseException:
        writer.close()
        raise
    return reader, writer


# --- The verdict table ----------------------------------------------------------------------
# Stage first: a refusal before RCPT is about us, never about the mailbox. At RCPT the
# first matching row wins; rows read the reply code, the RFC 3463 enhanced code and the
# wording, because real servers disagree with the codes (tests/data/smtp-replies.json holds
# 196 real replies with the verdict each must get). X.1.x and X.2.1 are RFC 3463's "bad
# destination mailbox" and "mailbox disabled"; X.1.7/X.1.8 are about the sender; X.7.x policy.

GREETING, HELLO, MAIL, RCPT = "greeting", "helo", "mail", "rcpt"

QUOTA_WORDS = re.compile(
    r"over ?quota|quota exceeded|exceeded storage|storage allocation|mailbox (is )?full"
    r"|mailbox size limit|insufficient storage",
    re.IGNORECASE,
)
POLICY_WORDS = re.compile(
    r"spamhaus|spamcop|block ?list|blocklisted|black ?list|\brbl\b|dnsbl|blocked using"
    r"|\bblock\b|\bspam|reputation|\bptr\b|reverse (dns|hostname)|rdns|\bspf\b|\bdkim\b|\bdmarc\b"
    r"|relay(ing)? (access )?(denied|disallowed|not permitted)|as a relay|open relay"
    r"|\bsender\b|helo command rejected|client host rejected|administrative prohibition"
    r"|\bpolic(y|ies)\b|banned|resource record|not allowed to send|unauthenticated",
    re.IGNORECASE,
)
RECIPIENT_WORDS = re.compile(
    r"no such (user|mailbox|recipient)|(user|recipient|addressee|mailbox) (is )?unknown"
    r"|unknown (user|recipient|mailbox)|(user|mailbox|recipient|address) (was )?not found"
    r"|does not exist|doesn't exist|mailbox (is )?(unavailable|disabled|inactive)"
    r"|invalid[- ](mailbox|recipient|address)|recipient address(es)? rejected"
    r"|(account|mailbox) (is|has been) (disabled|discontinued|inactive)|no mailbox"
    r"|no longer (valid|on server|available)|not a valid .{0,40}address|could not be found"
    r"|doesn't have a .{0,60} account|not in recipient list|not our customer"
    r"|unallocated|recipient unavailable|disabled",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Rule:
    stages: frozenset[str]  # the dialogue stages it applies to
    code: re.Pattern[str]  # over the three-digit reply code
    enhanced: re.Pattern[str] | None  # over the RFC 3463 enhanced code, when the row needs one
    words: re.Pattern[str] | None  # over the reply text, when the row needs one
    status: str
    reason: str

    @classmethod
    def row(
        cls,
        stages: str,
        code: str,
        enhanced: str | None,
        words: re.Pattern[str] | None,
        status: str,
        reason: str,
    ) -> Rule:
        """A row as the table writes it, compiled once."""
        compiled = re.compile(enhanced) if enhanced else None
        return cls(frozenset(stages.split()), re.compile(code), compiled, words, status, reason)

    def matches(self, stage: str, reply: Reply) -> bool:
        return (
            stage in self.stages
            and self.code.fullmatch(str(reply.code)) is not None
            and (self.enhanced is None or self.enhanced.fullmatch(reply.enhanced or "") is not None)
            and (self.words is None or self.words.search(reply.text) is not None)
        )


ANY_STAGE_BEFORE_RCPT = f"{GREETING} {HELLO} {MAIL}"
# fmt: off
VERDICT_RULES = tuple(Rule.row(*row) for row in (
    # stages                code      enhanced      words            status     reason
    (ANY_STAGE_BEFORE_RCPT, r"4..",   None,         None,            "unknown", "temp_failure"),
    (ANY_STAGE_BEFORE_RCPT, r"5..",   None,         None,            "unknown", "blocked"),
    (RCPT,                  r"2..",   None,         None,            "valid",   "accepted"),
    # X.2.2 is "mailbox full"; a 452 or 5xx may say so only in words.
    (RCPT,                  r"[45]..", r"\d\.2\.2", None,            "risky",   "mailbox_full"),
    (RCPT,                  r"452|5..", None,        QUOTA_WORDS,     "risky",   "mailbox_full"),
    # Microsoft's 5.2.122: the recipient's hourly receiving limit, gone in an hour.
    (RCPT,                  r"5..",   r"5\.2\.122", None,            "unknown", "temp_failure"),
    # 4xx: greylisting, rate limits, busy servers. Never a verdict on the mailbox.
    (RCPT,                  r"4..",   None,         None,            "unknown", "temp_failure"),
    # Words about us (blocklists, reputation, reverse DNS, SPF/DMARC, relaying, the sender)
    # outrank every code: servers send them as bare 550s and as 5.1.x or 5.7.1 alike.
    (RCPT,                  r"5..",   None,         POLICY_WORDS,    "unknown", "blocked"),
    (RCPT,                  r"5..",   r"5\.1\.[78]", None,            "unknown", "blocked"),
    (RCPT,                  r"5..",   r"5\.1\.\d+", None,            "invalid", "rejected"),
    (RCPT,                  r"5..",   r"5\.2\.1",   None,            "invalid", "rejected"),
    # Yandex's "5.7.1 No such user!" and Exchange's "5.4.1 Recipient address rejected".
    (RCPT,                  r"5..",   None,         RECIPIENT_WORDS, "invalid", "rejected"),
    (RCPT,                  r"5..",   r"5\.7\.\d+", None,            "unknown", "blocked"),
    # Any other 5xx refuses something, but has not said that it is the mailbox.
    (RCPT,                  r"5..",   None,         None,            "unknown", "blocked"),
))
# fmt: on


def classify(stage: str, reply: Reply) -> tuple[str, str]:
    """(status, reason) for a reply at a stage of the dialogue: the first row that matches."""
    for row in VERDICT_RULES:
        if row.matches(stage, reply):
            return row.status, row.reason
    return "unknown", "smtp_error"  # 1xx or 3xx where no such reply belongs


DETAILS = {
    "accepted": "The server accepted the mailbox and refuses made-up addresses.",
    "catch_all": "The server accepts any address at this domain, so acceptance proves nothing.",
    "rejected": "The server refused the mailbox itself.",
    "mailbox_full": "The mailbox exists but is over its quota.",
    "temp_failure": "The server deferred the check (greylisting or a rate limit): try later.",
    "blocked": "The server refused the checker itself, so it said nothing about the mailbox.",
    "smtp_error": "The session broke down and retries did not cure it.",
}


# --- Stage 3b: SMTP policy (which host, how many sessions, what to do on trouble) -----------


@dataclass
class Pending:
    """An address waiting for its RCPT reply; the last reply decides once retries run out."""

    address: Address
    attempts: int = 0
    last_reply: Reply | None = None


class HostGate:
    """Caps simultaneous sessions to one MX host, shrinking when the host says we are many."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self.changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.in_use < self.capacity)
            self.in_use += 1

    async def release(self) -> None:
        async with self.changed:
            self.in_use -= 1
            self.changed.notify_all()

    def shrink(self) -> None:
        """The host refused one session of those in use: keep one fewer from now on."""
        self.capacity = max(1, self.in_use - 1)


class HostTrouble(Exception):
    """A host could not be used; the verdict it would give if no other host does better."""

    def __init__(
        self,
        reason: str,
        detail: str,
        reply: Reply | None = None,
        retry_later: bool = False,
        mx: str = "",  # the host that answered, when one did
    ) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.reply, self.retry_later = reason, detail, reply, retry_later
        self.mx = mx


@dataclass
class TransactionOutcome:
    answered: int = 0  # RCPTs that got a reply of their own (452 "too many" not counted)
    errors: int = 0  # 4xx and 5xx replies, which servers count against a session
    too_many: list[Pending] = field(default_factory=list)  # refused with 452 too many
    closing: bool = False  # the server hung up or said 421: the session is over
    quit_sent: bool = False  # QUIT went with the batch and was answered


TOO_MANY_RECIPIENTS = re.compile(r"too many recipients", re.IGNORECASE)
TOO_MANY_CONNECTIONS = re.compile(
    r"too many (connections|concurrent|sessions)|concurrent connections|connection limit",
    re.IGNORECASE,
)


class DomainCheck:
    """All SMTP work for one domain: a queue of addresses shared by up to N sessions.

    The probe, a made-up address that cannot exist, rides first in the domain's first batch;
    acceptances are held until it is answered, then become accepted or catch_all.
    """

    def __init__(
        self,
        checker: Checker,
        domain: str,
        addresses: list[Address],
        hosts: tuple[MailHost, ...],
        emit: Callable[[Verdict], None],
    ) -> None:
        self.checker, self.options = checker, checker.options
        self.hosts, self.emit = list(hosts), emit
        self.queue: deque[Pending] = deque(Pending(address) for address in addresses)
        # The same made-up address for a domain in every pass of a run: a greylisting server
        # lets it through on the retry too, so the catch-all test still gets its answer.
        digest = hashlib.sha256(f"{self.options.probe_seed}/{domain}".encode()).hexdigest()
        made_up = f"x{digest[:20]}"
        self.probe: Pending | None = Pending(Address(made_up, made_up, domain, False))
        self.probe_queued = True
        self.catch_all: bool | None = None  # None: the probe has no clear answer (yet)
        self.held: list[tuple[Pending, Reply, str]] = []  # acceptances waiting for the probe
        self.host_failures: list[HostTrouble] = []
        self.replies = self.errors = 0  # the domain's record so far, to size the next batch
        # What the domain's servers have shown they take; each only ever shrinks.
        self.session_cap = self.transaction_cap = RCPTS_PER_SESSION
        self.error_budget = ERRORS_PER_SESSION

    # -- the queue --

    def has_work(self) -> bool:
        return bool(self.queue) or self.probe_queued

    def take_batch(self, size: int) -> list[Pending]:
        batch: list[Pending] = []
        if self.probe_queued and self.probe:
            self.probe_queued = False
            batch.append(self.probe)
        while self.queue and len(batch) < size:
            batch.append(self.queue.popleft())
        return batch

    def batch_size(self, room: int, error_budget: int) -> int:
        """As many RCPTs as the session has room for, if the errors they are likely to
        cost (judged from this domain's replies so far) stay within the error budget."""
        error_rate = (self.errors + 1.5) / (self.replies + 10)  # 15% before any reply
        return max(1, min(room, int(error_budget / error_rate)))

    def requeue(self, item: Pending, why: str, mx: str, charged: bool = True) -> None:
        """Ask again in a later batch. A charged retry counts against the address: after
        MAX_ATTEMPTS its last reply decides, or smtp_error when it never got one."""
        item.attempts += charged
        if item is self.probe:
            if item.attempts < MAX_ATTEMPTS:
                self.probe_queued = True
            else:
                self.settle_probe(item.last_reply)
        elif item.attempts < MAX_ATTEMPTS:
            self.queue.appendleft(item)
        elif item.last_reply is not None:
            self.decide(item, RCPT, item.last_reply, mx)
        else:
            self.finish(item, "unknown", "smtp_error", f"{DETAILS['smtp_error']} ({why})", mx)

    def requeue_unanswered(self, items: list[Pending], why: str, mx: str) -> None:
        """The session ended under a batch: only the address it ended at is charged, so a
        server that hangs up after N commands still lets every address through in time."""
        for position, item in enumerate(reversed(items)):  # appendleft keeps their order
            self.requeue(item, why, mx, charged=position == len(items) - 1)

    # -- verdicts --

    def record(self, item: Pending, reply: Reply, mx: str) -> None:
        """A final RCPT reply; an acceptance waits until the probe has told catch-all."""
        self.replies += 1
        self.errors += reply.code >= 400
        if item is self.probe:
            self.settle_probe(reply)
        elif reply.code < 400 and self.probe is not None:
            self.held.append((item, reply, mx))
        else:
            self.decide(item, RCPT, reply, mx)

    def settle_probe(self, reply: Reply | None) -> None:
        """Any 2xx for the made-up address means catch-all, any 5xx that it is not (the
        server refuses some addresses); a 4xx or no answer leaves it unknown."""
        code = reply.code if reply else None
        conclusive = code is not None and not 400 <= code < 500
        if not conclusive and self.probe and self.probe.attempts + 1 < MAX_ATTEMPTS:
            self.probe.attempts += 1
            self.probe_queued = True  # ask once more in the next batch
            return
        self.catch_all = code < 400 if code is not None and conclusive else None
        self.probe = None
        self.probe_queued = False
        held, self.held = self.held, []
        for item, accepted, mx in held:
            self.decide(item, RCPT, accepted, mx)

    def decide(self, item: Pending, stage: str, reply: Reply, mx: str) -> None:
        status, reason = classify(stage, reply)
        detail = DETAILS.get(reason, "")
        if reason == "accepted" and self.catch_all:
            status, reason, detail = "risky", "catch_all", DETAILS["catch_all"]
        elif reason == "accepted" and self.catch_all is None:
            # The contract's "accepted" needs a domain shown not to be catch-all.
            status, reason = "unknown", "temp_failure"
            detail = (
                "The server accepted the mailbox but deferred the test with a made-up address, "
                "so whether it accepts any address is unknown: try later."
            )
        self.finish(item, status, reason, detail, mx, reply)

    def finish(
        self,
        item: Pending,
        status: str,
        reason: str,
        detail: str,
        mx: str = "",
        reply: Reply | None = None,
    ) -> None:
        self.emit(
            Verdict(
                item.address.given,
                status,
                reason,
                detail,
                mx or None,
                reply.code if reply else None,
                reply.message if reply else None,
                flags_for(item.address),
            )
        )

    def give_up(self, trouble: HostTrouble) -> None:
        """No host would talk to us: every queued address gets the same unknown verdict."""
        leftovers, self.queue = list(self.queue), deque()
        self.probe_queued = False
        for item in leftovers:
            self.finish(item, "unknown", trouble.reason, trouble.detail, trouble.mx, trouble.reply)

    # -- sessions --

    async def run(self) -> None:
        needed = -(-(len(self.queue) + 1) // RCPTS_PER_SESSION)
        sessions = max(1, min(self.options.host_connections, needed))
        await asyncio.gather(*(self.session_loop() for _ in range(sessions)))
        if self.probe is not None or self.held:
            self.probe = None
            self.settle_probe(None)

    async def session_loop(self) -> None:
        while self.has_work():
            # The first batch is claimed before connecting, so that no session is opened for
            # work that another session has taken meanwhile.
            room = min(self.session_cap, self.transaction_cap)
            batch = self.take_batch(self.batch_size(room, self.error_budget))
            if not batch:
                return
            try:
                client, gate, mx = await self.connect()
            except HostTrouble as trouble:
                for item in reversed(batch):
                    self.requeue(item, trouble.detail, "", charged=False)
                self.give_up(trouble)
                return
            try:
                if not await self.converse(client, mx, batch):
                    await client.quit()
            except SmtpDropped:
                pass  # what was in flight is back in the queue; the loop reconnects
            finally:
                await client.close()
                await gate.release()

    async def connect(self) -> tuple[SmtpClient, HostGate, str]:
        """Greet the first MX host that will talk to us; the others, in MX order, stand by."""
        tries = 0
        while self.hosts:
            host = self.hosts[0]
            try:
                return await self.open_host(host)
            except HostTrouble as trouble:
                tries += 1
                if trouble.retry_later and tries < MAX_ATTEMPTS:
                    await asyncio.sleep(BACKOFF_SECONDS * tries)
                    continue
                self.host_failures.append(trouble)
                if host in self.hosts:
                    self.hosts.remove(host)
                tries = 0
        raise self.worst_failure()

    def worst_failure(self) -> HostTrouble:
        """A refusal tells more than a deferral, and a deferral more than silence."""
        for reason in ("blocked", "temp_failure", "smtp_error", "unreachable"):
            for trouble in self.host_failures:
                if trouble.reason == reason:
                    return trouble
        return HostTrouble("unreachable", "No MX host could be connected to.")

    async def open_host(self, host: MailHost) -> tuple[SmtpClient, HostGate, str]:
        silent = []
        for ip in host.addresses:
            gate = self.checker.gate_for(ip)
            await gate.acquire()
            try:
                return await self.greet(host.name, ip, gate), gate, host.name
            except HostTrouble as trouble:
                await gate.release()
                if trouble.reason != "unreachable":
                    raise
                silent.append(trouble.detail)
        raise HostTrouble("unreachable", "; ".join(silent))

    async def greet(self, name: str, ip: str, gate: HostGate) -> SmtpClient:
        """Connect, read the greeting, EHLO, and STARTTLS when the server offers it."""
        options = self.options
        label = f"{name}[{ip}]"
        try:
            if self.checker.proxy:
                opening = socks5_connect(self.checker.proxy, ip, options.smtp_port)
            else:
                opening = asyncio.open_connection(ip, options.smtp_port)
            async with asyncio.timeout(options.timeout):
                reader, writer = await opening
        except TimeoutError:
            detail = f"{label}: no connection within {options.timeout:g} s."
            raise HostTrouble("unreachable", detail) from None
        except OSError as error:
            why = str(error) if isinstance(error, ProxyError) else error.strerror or repr(error)
            raise HostTrouble("unreachable", f"{label}: {why}.") from None
        client = SmtpClient(reader, writer, label, options.timeout, options.log)
        try:
            self.check_opening(GREETING, await client.read_reply(), name, label, gate)
            helo = await self.checker.helo_name()
            self.check_opening(HELLO, await client.hello(helo), name, label, gate)
            if (
                "STARTTLS" in client.extensions
                and (await client.starttls()).code == ReplyCode.SERVICE_READY
            ):
                self.check_opening(HELLO, await client.hello(helo), name, label, gate)
        except SmtpDropped as error:  # its message names the host already
            await client.close()
            raise HostTrouble("unreachable", f"{error}.") from None
        except HostTrouble:
            await client.quit()
            await client.close()
            raise
        return client

    @staticmethod
    def check_opening(stage: str, reply: Reply, name: str, label: str, gate: HostGate) -> None:
        if reply.code < 400:
            return
        too_many = reply.code == ReplyCode.SERVICE_NOT_AVAILABLE and bool(
            TOO_MANY_CONNECTIONS.search(reply.text)
        )
        if too_many:
            gate.shrink()
        _, reason = classify(stage, reply)
        detail = f"{label} refused the session at {stage}: {reply.message}"
        raise HostTrouble(reason, detail, reply, retry_later=too_many, mx=name)

    async def converse(self, client: SmtpClient, mx: str, batch: list[Pending]) -> bool:
        """Transactions on one session, RSET between them, until its budgets are spent.

        Returns whether QUIT has been said: it rides with the batch that fills the session.
        A "452 too many recipients" teaches the domain's limits: per transaction when the
        same session still takes RCPTs after RSET, else per session.
        """
        sent = errors = 0
        first = True
        while batch:
            last = sent + len(batch) >= self.session_cap or not self.has_work()
            outcome = await self.transaction(client, mx, batch, reset=not first, quit=last)
            first = False
            sent += outcome.answered
            errors += outcome.errors
            if outcome.too_many:
                if outcome.answered:
                    self.transaction_cap = min(self.transaction_cap, outcome.answered)
                elif sent:
                    self.session_cap = min(self.session_cap, sent)
                for item in reversed(outcome.too_many):  # nothing accepted yet: charge them
                    self.requeue(item, f"{mx} took no more recipients", mx, charged=not sent)
            if outcome.closing:
                if errors and outcome.answered:  # hung up on our errors: stay further below
                    self.error_budget = max(1, min(self.error_budget, errors - 1))
                raise SmtpDropped(f"{mx} closed the session")
            if outcome.quit_sent:
                return True
            if errors >= self.error_budget or sent >= self.session_cap:
                return False
            room = min(self.session_cap - sent, self.transaction_cap)
            batch = self.take_batch(self.batch_size(room, self.error_budget - errors))
        return False

    async def transaction(
        self, client: SmtpClient, mx: str, batch: list[Pending], reset: bool, quit: bool
    ) -> TransactionOutcome:
        """MAIL FROM and a batch of RCPT TO, pipelined when the server allows (RFC 2920)."""
        outcome = TransactionOutcome()
        utf8 = "SMTPUTF8" in client.extensions
        for item in [item for item in batch if item.address.needs_smtputf8 and not utf8]:
            batch.remove(item)
            detail = f"{mx} does not support SMTPUTF8, which this address needs (RFC 6531)."
            self.finish(item, "unknown", "smtp_error", detail, mx)
        if not batch:
            return outcome
        mail = f"MAIL FROM:<{self.options.mail_from}>"
        if utf8 and any(item.address.needs_smtputf8 for item in batch):
            mail += " SMTPUTF8"
        commands = (["RSET"] if reset else []) + [mail]
        commands += [f"RCPT TO:<{item.address.wire}>" for item in batch]
        pipelined = quit and "PIPELINING" in client.extensions
        replies = client.exchange([*commands, "QUIT"] if pipelined else commands)
        unanswered = list(batch)
        try:
            if reset:
                await anext(replies)
            mail_reply = await anext(replies)
            if mail_reply.code >= 400:
                outcome.errors += 1
                outcome.closing = mail_reply.code == ReplyCode.SERVICE_NOT_AVAILABLE
                if not outcome.closing and "PIPELINING" in client.extensions:
                    async for _ in replies:  # the pipelined RCPTs still get (503) replies
                        pass
                    outcome.quit_sent = pipelined
                self.refused_at_mail(mail_reply, batch, mx)
                return outcome
            for item in batch:
                reply = await anext(replies)
                unanswered.remove(item)
                if reply.code == 452 and TOO_MANY_RECIPIENTS.search(reply.text):
                    outcome.too_many.append(item)
                    continue
                item.last_reply = reply
                outcome.answered += 1
                outcome.errors += reply.code >= 400
                if reply.code == ReplyCode.SERVICE_NOT_AVAILABLE:
                    outcome.closing = True
                    self.requeue_unanswered([item, *unanswered], f"{mx} closed the session", mx)
                    return outcome
                self.record(item, reply, mx)
            if pipelined:
                await anext(replies)  # 221 to the QUIT
                outcome.quit_sent = True
            return outcome
        except SmtpDropped as error:
            self.requeue_unanswered(unanswered, str(error), mx)
            raise
        finally:
            await replies.aclose()

    def refused_at_mail(self, mail_reply: Reply, batch: list[Pending], mx: str) -> None:
        """MAIL FROM refused: a 4xx is retried later, a 5xx is a verdict on us, not them."""
        if mail_reply.code < 500:
            for item in reversed(batch):
                item.last_reply = mail_reply
                self.requeue(item, f"{mx} deferred MAIL FROM", mx)
            return
        for item in batch:
            if item is not self.probe:  # the probe stays unsettled: catch-all is unknown
                self.decide(item, MAIL, mail_reply, mx)
        self.give_up(HostTrouble("blocked", DETAILS["blocked"], mail_reply, mx=mx))


class Checker:
    """State shared by every domain of a run: the resolver and one gate per MX host."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.dns = Dns(options)
        self.gates: dict[str, HostGate] = {}
        # Whatever reaches the wire is checked here too, for callers that skip the command line.
        self.helo = check_helo_name(options.helo) if options.helo else ""
        if options.mail_from:
            parse_address(options.mail_from)
        self.proxy = parse_proxy(options.proxy) if options.proxy else None

    async def helo_name(self) -> str:
        """The EHLO name: the option, else this host's name, asked once and only for SMTP
        (looking it up may itself query DNS)."""
        if not self.helo:
            self.helo = self.options.helo or await asyncio.to_thread(socket.getfqdn)
        return self.helo

    def gate_for(self, ip: str) -> HostGate:
        if ip not in self.gates:
            self.gates[ip] = HostGate(self.options.host_connections)
        return self.gates[ip]

    async def check_domain(
        self,
        domain: str,
        addresses: list[Address],
        route: MailRoute,
        emit: Callable[[Verdict], None],
    ) -> None:
        if route.failure:
            status, reason, detail = route.failure
            for address in addresses:
                emit(Verdict(address.given, status, reason, detail, flags=flags_for(address)))
        elif self.options.level == Level.DNS:
            detail = "The domain takes mail; the mailbox itself was not checked."
            mx = route.hosts[0].name
            for address in addresses:
                emit(
                    Verdict(
                        address.given, "valid", "mx_found", detail, mx, flags=flags_for(address)
                    )
                )
        else:
            await DomainCheck(self, domain, addresses, route.hosts, emit).run()


async def check_addresses(addresses: Iterable[str], options: Options) -> AsyncIterator[Verdict]:
    """Check addresses and yield one Verdict per distinct address, in the order decided.

    Syntax verdicts come at once; then domains are worked on `options.concurrency` at a
    time, the largest first since they need the most round trips.
    """
    checker = Checker(options)
    by_domain: dict[str, list[Address]] = {}
    for text in dict.fromkeys(addresses):
        try:
            address = parse_address(text)
        except AddressSyntaxError as error:
            yield Verdict(text, "invalid", "syntax", str(error))
            continue
        if options.level == Level.SYNTAX:
            detail = "The address is well formed; nothing else was checked."
            yield Verdict(text, "valid", "syntax_ok", detail, flags=flags_for(address))
        else:
            by_domain.setdefault(address.domain, []).append(address)
    jobs = deque(sorted(by_domain.items(), key=lambda job: -len(job[1])))
    workers = min(options.concurrency, len(jobs))
    del by_domain  # each job's list is released when its domain is done
    results: asyncio.Queue[Verdict | None] = asyncio.Queue()
    # DNS runs up to `workers` domains ahead of SMTP: a worker that frees up finds its next
    # domain's route known, and the lookups in flight stay bounded on any list.
    routes: dict[str, asyncio.Future[MailRoute]] = {}
    looked_up = 0  # jobs at the head of the queue whose lookups have started

    async def work() -> None:
        nonlocal looked_up
        while jobs:
            while looked_up < min(len(jobs), workers):
                ahead = jobs[looked_up][0]
                routes[ahead] = asyncio.ensure_future(checker.dns.mail_route(ahead))
                looked_up += 1
            domain, domain_addresses = jobs.popleft()
            looked_up -= 1
            route = await routes.pop(domain)
            await checker.check_domain(domain, domain_addresses, route, results.put_nowait)

    tasks = [asyncio.ensure_future(work()) for _ in range(workers)]
    all_done = asyncio.gather(*tasks)
    all_done.add_done_callback(lambda _: results.put_nowait(None))
    try:
        while (verdict := await results.get()) is not None:
            yield verdict
        await all_done
    finally:
        for task in [*tasks, *routes.values()]:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(all_done, *routes.values())
        checker.dns.close()


# --- Input ----------------------------------------------------------------------------------


def read_text(path: str) -> str:
    """A whole input file (or stdin for "-") as text; UTF-8, with or without a BOM."""
    try:
        if path == "-":
            if sys.stdin is None:
                raise UsageError("standard input is closed: nothing to read for -.")
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as file:
                data = file.read()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        name = "standard input" if path == "-" else path
        raise UsageError(f"{name} is not UTF-8 text (line {line}); save it as UTF-8.") from None


def addresses_in(text: str, name: str) -> Iterator[str]:
    """One address per line (blank lines and # comments skipped), or a CSV file with a
    header row whose "email" column holds them."""
    lines = text.splitlines()
    first = next((line for line in lines if line.strip() and not line.startswith("#")), "")
    if first.strip().lower() != "email" and not any(sep in first for sep in ",;\t"):
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line
        return
    delimiter = next((sep for sep in ",;\t" if sep in first), ",")
    rows = csv.reader(lines[lines.index(first) :], delimiter=delimiter)
    header = [column.strip().lower() for column in next(rows)]
    if "email" not in header:
        raise UsageError(
            f'{name} looks like CSV but its header has no "email" column '
            f"(it has: {', '.join(header)})."
        )
    column = header.index("email")
    for row in rows:
        if len(row) > column and row[column].strip():
            yield row[column].strip()


def read_addresses(arguments: list[str], path: str | None) -> list[str]:
    """Addresses from the arguments, the file, stdin ("-" or a pipe), or a prompt."""
    found: list[str] = []
    for argument in arguments:
        if argument == "-":
            found += addresses_in(read_text("-"), "standard input")
        else:
            found.append(argument)
    if path:
        found += addresses_in(read_text(path), path)
    if not arguments and not path and sys.stdin is not None:
        if not sys.stdin.isatty():
            found += addresses_in(read_text("-"), "standard input")
        else:
            with contextlib.suppress(EOFError):
                found += filter(None, [input("Email address to check: ").strip()])
    if not found:
        raise UsageError(
            "no addresses to check: give them as arguments, with -f FILE, or on stdin."
        )
    return list(dict.fromkeys(found))


# --- Output ---------------------------------------------------------------------------------

STATUSES = ("valid", "invalid", "risky", "unknown")


def printable(text: str) -> str:
    """Control characters shown as escapes, so that an address cannot drive the terminal."""
    if not CONTROL_CHARACTER.search(text):
        return text
    return CONTROL_CHARACTER.sub(lambda control: repr(control.group())[1:-1], text)


class ResultWriter:
    """Writes verdicts as they come, flushed line by line, in one of three formats."""

    def __init__(self, stream: io.TextIOBase, style: str, email_width: int, fresh: bool) -> None:
        self.stream, self.style = stream, style
        self.email_width = min(max(email_width, 5), 48)
        if style == "csv":
            self.csv = csv.DictWriter(stream, FIELDS, lineterminator="\n")
            if fresh:
                self.csv.writeheader()
        elif style == "table" and fresh:
            self.line("EMAIL", "STATUS", "REASON", "MX", "DETAIL")

    def line(self, email: str, status: str, reason: str, mx: str, detail: str) -> None:
        print(
            f"{email:<{self.email_width}}  {status:<7}  {reason:<12}  {mx:<20}  {detail}".rstrip(),
            file=self.stream,
        )

    def write(self, verdict: Verdict) -> None:
        if self.style == "json":
            print(json.dumps(verdict.as_dict(), ensure_ascii=False), file=self.stream)
        elif self.style == "csv":
            row = verdict.as_dict()
            row["flags"] = " ".join(verdict.flags)
            self.csv.writerow(row)
        else:
            detail = verdict.detail
            if verdict.smtp_message:
                detail += f" [{verdict.smtp_message}]"
            email = printable(verdict.email)
            self.line(email, verdict.status, verdict.reason, verdict.mx or "-", printable(detail))
        self.stream.flush()


def summary(counts: dict[str, int], elapsed: float, resumed: int) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{counts[status]} {status}" for status in STATUSES if counts.get(status))
    earlier = f" ({resumed} from the earlier run)" if resumed else ""
    return (
        f"{total} address{'es' * (total != 1)}{earlier} checked in {elapsed:.2f} s: "
        f"{parts or 'none'}."
    )


# A table row: the address (as printable() shows it, spaces and all), then the status column.
TABLE_ROW = re.compile(rf"^(?P<email>.*?) {{2,}}(?P<status>{'|'.join(STATUSES)}) {{2,}}")


def already_decided(path: str, style: str) -> dict[str, str]:
    """Addresses (as the format writes them) and statuses an earlier run wrote to the -o
    file, so that the run resumes after them."""
    if not os.path.isfile(path):  # new, or a device such as /dev/stdout: nothing to resume
        return {}
    text = read_text(path)
    if style == "table" and text.strip() and not text.startswith("EMAIL "):
        raise UsageError(
            f"{path} was not written as --format table: use the format of the run that "
            "wrote it, or another file."
        )
    decided: dict[str, str] = {}
    try:
        if style == "json":
            for line in text.splitlines():
                if line.strip():
                    row = json.loads(line)
                    decided[row["email"]] = row["status"]
        elif style == "csv":
            for row in csv.DictReader(io.StringIO(text)):
                decided[row["email"]] = row["status"]
        else:
            for line in text.splitlines():
                row = TABLE_ROW.match(line)
                if row:
                    decided[row["email"]] = row["status"]
    except (ValueError, KeyError, TypeError):
        raise UsageError(
            f"{path} was not written as --format {style}: use the format of the run that "
            "wrote it, or another file."
        ) from None
    return decided


class Progress:
    """done/total, rate and ETA on one stderr line, only when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled and total > 1
        self.done = 0
        self.started = time.monotonic()
        self.shown = 0.0

    def say(self, text: str) -> None:
        if self.enabled:
            print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)

    def step(self, done: int = 1) -> None:
        """Count finished addresses (none: just show the line), redrawn at most 5 times a second."""
        self.done += done
        now = time.monotonic()
        if now - self.shown < 0.2 and 0 < self.done < self.total:
            return
        self.shown = now
        rate = self.done / max(now - self.started, 1e-6)
        eta = f"{(self.total - self.done) / rate:.0f} s" if rate else "-"
        self.say(f"{self.done}/{self.total}  {rate:.1f}/s  ETA {eta}")

    def clear(self) -> None:
        self.say("")


# --- Command line ---------------------------------------------------------------------------


def parse_host_port(text: str) -> tuple[str, int]:
    host, port = text, 53
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(port)
    return host, port


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A bad option is one line on stderr, like every other usage error."""
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="mail_checker.py",
        description="Check whether email addresses have a real mailbox: syntax, DNS, then "
        "an SMTP dialogue that stops at RCPT TO (no mail is ever sent).",
        epilog="Exit status: 0 every address valid, 1 some address not valid, "
        "2 usage or input error, 130 interrupted.",
    )
    parser.add_argument("addresses", nargs="*", metavar="ADDRESS", help='"-" reads stdin')
    parser.add_argument("-f", "--file", help="one address per line, or CSV with an email column")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("-o", "--output", help="append results to FILE; resume from it")
    parser.add_argument("--level", choices=[level.value for level in Level], default="smtp")
    parser.add_argument(
        "--dns-server", action="append", default=[], metavar="HOST[:PORT]", help="repeatable"
    )
    parser.add_argument("--smtp-port", type=int, default=DEFAULT_SMTP_PORT, metavar="N")
    parser.add_argument("--mail-from", metavar="ADDRESS", help="default $MAIL_FROM or <>")
    parser.add_argument("--helo", metavar="NAME", help="default $HELO_HOST or this host's FQDN")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N")
    parser.add_argument(
        "--host-connections",
        type=int,
        default=DEFAULT_HOST_CONNECTIONS,
        metavar="N",
        help="simultaneous sessions per MX host",
    )
    parser.add_argument("--proxy", metavar="URL", help="socks5://[user:password@]host:port")
    parser.add_argument("--retry-temp", type=float, metavar="SECONDS")
    parser.add_argument(
        "--allow-private",
        action="store_true",
        help="also connect to MX hosts on loopback or private networks (default $ALLOW_PRIVATE)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    """Options from the command line and the environment, each checked before any work."""
    for name in ("timeout", "concurrency", "host_connections"):
        if not getattr(args, name) > 0:  # "not >" also refuses nan
            raise UsageError(f"--{name.replace('_', '-')} must be greater than 0.")
    if not 0 < args.smtp_port < 65536:
        raise UsageError("--smtp-port must be between 1 and 65535.")
    if args.retry_temp is not None and not args.retry_temp >= 0:
        raise UsageError("--retry-temp must be 0 or more seconds.")
    dns_servers = []
    for server in args.dns_server:
        try:
            dns_servers.append(parse_host_port(server))
        except ValueError:
            raise UsageError(f"--dns-server {server!r} is not an IP address[:port].") from None
    mail_from = args.mail_from if args.mail_from is not None else os.environ.get("MAIL_FROM", "")
    if mail_from.strip("<>"):
        try:
            mail_from = parse_address(mail_from.strip("<>")).wire
        except AddressSyntaxError as error:
            raise UsageError(f"--mail-from {mail_from!r}: {error}") from None
    else:
        mail_from = ""
    helo = args.helo or os.environ.get("HELO_HOST") or ""
    proxy = args.proxy or os.environ.get("SMTP_PROXY") or None
    if proxy:
        parse_proxy(proxy)
    return Options(
        level=Level(args.level),
        dns_servers=dns_servers,
        smtp_port=args.smtp_port,
        mail_from=mail_from,
        helo=check_helo_name(helo) if helo else "",
        timeout=args.timeout,
        concurrency=args.concurrency,
        host_connections=args.host_connections,
        proxy=proxy,
        allow_private=args.allow_private or os.environ.get("ALLOW_PRIVATE", "") == "1",
        log=(lambda line: print(printable(line), file=sys.stderr)) if args.verbose else None,
    )


async def run(args: argparse.Namespace, options: Options, addresses: list[str]) -> int:
    started = time.monotonic()
    decided = already_decided(args.output, args.format) if args.output else {}
    written = printable if args.format == "table" else str
    todo = [address for address in addresses if written(address) not in decided]
    counts = {status: 0 for status in STATUSES}
    for address in addresses:
        if written(address) in decided:
            counts[decided[written(address)]] += 1
    fresh = not (args.output and os.path.exists(args.output) and os.path.getsize(args.output))
    progress = Progress(len(todo), sys.stderr.isatty())
    width = max((len(printable(address)) for address in todo), default=5)
    with contextlib.ExitStack() as closing:
        try:
            stream = (
                closing.enter_context(open(args.output, "a", encoding="utf-8"))
                if args.output
                else sys.stdout
            )
        except OSError as error:
            raise UsageError(f"cannot write {args.output}: {error.strerror or error}") from None
        writer = ResultWriter(stream, args.format, width, fresh)

        def deliver(verdict: Verdict) -> None:
            counts[verdict.status] += 1
            progress.clear()
            writer.write(verdict)
            progress.step()

        try:
            progress.step(0)
            deferred = []
            async for verdict in check_addresses(todo, options):
                if args.retry_temp is not None and verdict.reason == "temp_failure":
                    deferred.append(verdict.email)  # its final verdict comes from the retry
                    progress.step()
                else:
                    deliver(verdict)
            if deferred:
                progress.say(
                    f"waiting {args.retry_temp:g} s to check {len(deferred)} deferred "
                    f"address{'es' * (len(deferred) != 1)} again"
                )
                await asyncio.sleep(args.retry_temp)
                progress.total += len(deferred)
                async for verdict in check_addresses(deferred, options):
                    deliver(verdict)
        finally:
            progress.clear()
            text = summary(counts, time.monotonic() - started, len(addresses) - len(todo))
            if args.format == "table" and not args.output:
                print(f"\n{text}", file=sys.stdout)
            elif sys.stderr.isatty() or args.output:
                print(text, file=sys.stderr)
    return EXIT_ALL_VALID if counts["valid"] == sum(counts.values()) else EXIT_SOME_NOT_VALID


# Files open besides the SMTP sessions: standard streams, DNS sockets, the output file, the
# event loop's own, with room to spare.
RESERVED_FILES = 32


def fit_open_file_limit(options: Options) -> None:
    """Make room for --concurrency domains with --host-connections sessions each: raise the
    soft open-file limit up to the hard one, and where even that is too low (macOS allows 256
    by default), work on fewer domains at once, since a refused socket would turn into an
    "unreachable" verdict."""
    try:
        import resource  # POSIX only; Windows has no such limit on sockets
    except ImportError:
        return
    needed = options.concurrency * options.host_connections + RESERVED_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    if soft < needed:
        fitting = max(1, (soft - RESERVED_FILES) // options.host_connections)
        print(
            f"mail_checker.py: the open-file limit ({soft}) leaves room for {fitting} domains "
            f"at once, not {options.concurrency} (raise it with ulimit -n).",
            file=sys.stderr,
        )
        options.concurrency = fitting


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        try:
            load_dotenv(".env")  # the .env of the current directory; the environment wins
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read .env: {error}") from None
        args = build_parser().parse_args(argv)
        options = options_from(args)
        addresses = read_addresses(args.addresses, args.file)
        if options.level == Level.SMTP:
            fit_open_file_limit(options)
        return asyncio.run(run(args, options, addresses))
    except UsageError as error:
        print(f"mail_checker.py: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        kept = f"; finished results are in {args.output}" if args and args.output else ""
        print(f"\nmail_checker.py: interrupted{kept}.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whoever read the results stopped early (| head). As Python's documentation advises,
        # stdout goes to /dev/null so that the interpreter's last flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SOME_NOT_VALID


if __name__ == "__main__":
    sys.exit(main())
