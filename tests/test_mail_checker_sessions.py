"""SMTP sessions against servers that push back: recipient and error limits, hang-ups, broken
TLS, hostile replies, and a network that cannot reach port 25. Every address must still get
exactly one verdict, and the right one."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from conftest import (
    MX_ADDRESSES,
    LibraryOptions,
    RunCli,
    StartMx,
    check_in_process,
    rcpt_addresses,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import DnsResponder, SmtpPeer, SmtpScript

MX1, MX2 = MX_ADDRESSES[:2]


def addresses_at(domain: str, count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{index}@{domain}" for index in range(count)]


# region not one address lost


def test_recipients_set_aside_before_a_hang_up_all_get_their_verdict(
    start_mx: StartMx, check: RunCli
) -> None:
    # Two RCPTs per transaction, a hang-up after four: the addresses refused with "too many"
    # in the transaction the server ended used to vanish.
    addresses = addresses_at("example.test", 8)
    start_mx(
        "example.test",
        MX1,
        mailboxes={"user0", "user1", "user2", "user3"},
        max_rcpt_per_transaction=2,
        drop_after_rcpts=4,
    )
    run = check(*addresses)
    assert len(run.verdicts) == 8
    assert run.outcomes == {
        **dict.fromkeys(addresses[:4], ("valid", "accepted")),
        **dict.fromkeys(addresses[4:], ("invalid", "rejected")),
    }


MISBEHAVIOUR = st.fixed_dictionaries(
    {
        "max_rcpt_per_transaction": st.none() | st.integers(1, 4),
        "max_rcpt_per_session": st.none() | st.integers(1, 6),
        "hard_error_limit": st.none() | st.integers(1, 5),
        "drop_after_rcpts": st.none() | st.integers(1, 6),
        "max_connections": st.none() | st.integers(1, 2),
        "catch_all": st.booleans(),
        "pipelining": st.booleans(),
    }
)
ODD_REPLIES = st.sampled_from(
    [
        "452 4.5.3 Error: too many recipients",
        "552 too many recipients",
        "451 4.5.3 Too many recipients",
        "421 4.7.0 Try again later, closing connection",
        "450 4.2.0 Greylisted",
        "452 4.2.2 Mailbox full",
        "550 5.7.1 Policy rejection",
    ]
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    misbehaviour=MISBEHAVIOUR,
    odd_replies=st.dictionaries(st.integers(0, 11), ODD_REPLIES, max_size=5),
    count=st.integers(1, 12),
)
def test_every_address_gets_exactly_one_verdict_whatever_the_server_does(
    peer_network: object,
    dns_responder: DnsResponder,
    library_options: LibraryOptions,
    mx_port: int,
    misbehaviour: dict[str, object],
    odd_replies: dict[int, str],
    count: int,
) -> None:
    addresses = [*addresses_at("example.test", count), "not an address", "user0@example.test"]
    script = SmtpScript(
        mailboxes={f"user{index}" for index in range(0, count, 2)},
        rcpt_replies={f"user{index}": reply for index, reply in odd_replies.items()},
        **misbehaviour,  # type: ignore[arg-type]
    )
    dns_responder.add_mx("example.test", [(10, "mx.example.test")])
    dns_responder.add_a("mx.example.test", MX1)
    with SmtpPeer(MX1, mx_port, script, network=peer_network) as peer:  # type: ignore[arg-type]
        verdicts = check_in_process(addresses, library_options(timeout=1.0))
    assert sorted(verdict.email for verdict in verdicts) == sorted(set(addresses))
    assert peer.data_attempts == 0


# endregion

# region too many recipients


@pytest.mark.parametrize(
    "reply",
    [
        "452 4.5.3 Error: too many recipients",  # Postfix
        "452 too many recipients",  # Exim's recipients_max
        "552 too many recipients",  # Exim's recipients_max_reject
        "451 4.5.3 Too many recipients",  # OpenSMTPD
        "550 Rejected for too many bad recipients",  # Debian's Exim ACL, until RSET
    ],
)
def test_every_way_of_saying_too_many_recipients_goes_on_in_a_new_transaction(
    start_mx: StartMx, check: RunCli, reply: str
) -> None:
    addresses = addresses_at("example.test", 7)
    peer = start_mx(
        "example.test",
        MX1,
        mailboxes={"user0", "user1", "user2", "user3"},
        max_rcpt_per_transaction=3,
        too_many_recipients_reply=reply,
    )
    run = check(*addresses)
    assert run.outcomes == {
        **dict.fromkeys(addresses[:4], ("valid", "accepted")),
        **dict.fromkeys(addresses[4:], ("invalid", "rejected")),
    }
    assert set(addresses) <= set(rcpt_addresses(peer))
    assert sum(line.startswith("MAIL FROM") for line in peer.all_commands()) > 1


def test_address_that_can_never_be_asked_takes_its_verdict_from_its_own_452(
    start_mx: StartMx, check: RunCli
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"}, max_rcpt_per_session=0)
    run = check("alice@example.test")
    verdict = run.by_email["alice@example.test"]
    assert (verdict["status"], verdict["reason"]) == ("unknown", "temp_failure")
    assert verdict["smtp_message"] == "452 4.5.3 Too many recipients in this session"


# endregion

# region error limits


def test_sixty_addresses_with_fifty_eight_unknown_never_reach_postfixs_soft_limit(
    start_mx: StartMx, check: RunCli
) -> None:
    addresses = addresses_at("example.test", 60)
    peer = start_mx(
        "example.test",
        MX1,
        mailboxes={"user0", "user1"},
        soft_error_limit=10,
        hard_error_limit=20,
        error_sleep=0.2,
    )
    run = check(*addresses)
    assert run.outcomes == {
        **dict.fromkeys(addresses[:2], ("valid", "accepted")),
        **dict.fromkeys(addresses[2:], ("invalid", "rejected")),
    }
    assert peer.most_errors_in_a_session <= 9
    assert (peer.soft_limit_delays, peer.error_hang_ups) == (0, 0)


def test_real_one_second_error_sleep_is_never_provoked(start_mx: StartMx, check: RunCli) -> None:
    # Postfix's defaults as shipped, the one-second sleep included.
    addresses = addresses_at("example.test", 25)
    peer = start_mx("example.test", MX1, soft_error_limit=10, hard_error_limit=20)
    run = check(*addresses)
    assert set(run.outcomes.values()) == {("invalid", "rejected")}
    assert (peer.soft_limit_delays, peer.error_hang_ups) == (0, 0)


def test_a_server_with_a_lower_error_limit_teaches_a_lower_budget(
    start_mx: StartMx, check: RunCli
) -> None:
    addresses = addresses_at("example.test", 30)
    peer = start_mx("example.test", MX1, hard_error_limit=4)
    run = check(*addresses)
    assert set(run.outcomes.values()) == {("invalid", "rejected")}
    assert peer.error_hang_ups == 1  # the first one taught the budget; no second
    last_sessions = [lines for lines in peer.sessions if any("RCPT" in line for line in lines)]
    assert all(sum(line.startswith("RCPT") for line in lines) <= 3 for lines in last_sessions[1:])


def test_refused_mail_from_ends_the_session_within_the_error_budget(
    start_mx: StartMx, check: RunCli
) -> None:
    # The pipelined RCPTs behind a refused MAIL FROM get 503s, and servers count those too.
    addresses = addresses_at("example.test", 30)
    peer = start_mx("example.test", MX1, mailboxes={"user0"}, mail_refusal="451 4.3.0 Try later")
    run = check(*addresses)
    assert set(run.outcomes.values()) == {("unknown", "temp_failure")}
    assert peer.most_errors_in_a_session <= 9


def test_a_server_that_hangs_up_before_any_answer_is_not_reconnected_to_endlessly(
    start_mx: StartMx, check: RunCli
) -> None:
    addresses = addresses_at("example.test", 40)
    peer = start_mx("example.test", MX1, mailboxes={"user0"}, drop_after_rcpts=0)
    run = check(*addresses)
    assert set(run.outcomes.values()) == {("unknown", "smtp_error")}
    assert peer.connections <= 3
    assert "ended 3 sessions before answering any RCPT" in run.by_email[addresses[-1]]["detail"]


def test_too_many_recipients_for_the_probe_never_proves_a_domain_is_not_catch_all(
    start_mx: StartMx, library_options: LibraryOptions
) -> None:
    import mail_checker

    options = library_options()
    probe = mail_checker.CatchAllProbe("example.test", options.probe_seed).item.address.wire
    start_mx(
        "example.test",
        MX1,
        catch_all=True,
        rcpt_replies={probe: "552 5.5.3 Too many recipients"},
    )
    verdicts = check_in_process(["alice@example.test", "bob@example.test"], options)
    assert {(v.status, v.reason) for v in verdicts} == {("unknown", "temp_failure")}


# endregion

# region STARTTLS


def test_failed_tls_handshake_goes_on_in_clear_text(start_mx: StartMx, check: RunCli) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"}, broken_tls=True)
    run = check("alice@example.test", "bob@example.test")
    assert run.outcomes == {
        "alice@example.test": ("valid", "accepted"),
        "bob@example.test": ("invalid", "rejected"),
    }
    first, *others = peer.sessions
    assert "STARTTLS" in first
    assert others and not any("STARTTLS" in lines for lines in others)


def test_clear_text_refused_after_a_failed_handshake_stays_unknown(
    start_mx: StartMx, check: RunCli
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"}, broken_tls=True, require_tls=True)
    run = check("alice@example.test")
    verdict = run.by_email["alice@example.test"]
    assert (verdict["status"], verdict["reason"]) == ("unknown", "blocked")
    assert verdict["smtp_code"] == 530


# endregion

# region hostile servers


class RawServer:
    """A TCP server on loopback that runs `talk` on each connection, for replies no SMTP
    library would send. It runs on its own event loop in a thread."""

    def __init__(self, address: str, port: int, talk) -> None:  # type: ignore[no-untyped-def]
        self.address, self.port, self.talk = address, port, talk
        self.loop = asyncio.new_event_loop()
        self.sent = 0

    def __enter__(self) -> RawServer:
        ready = threading.Event()

        async def serve() -> None:
            self.server = await asyncio.start_server(self.handle, self.address, self.port)
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        assert ready.wait(5)
        return self

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await self.talk(self, reader, writer)
        writer.close()

    def __exit__(self, *_: object) -> None:
        async def stop() -> None:
            self.server.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def endless_ehlo(server: RawServer, reader: asyncio.StreamReader, writer) -> None:  # type: ignore[no-untyped-def]
    writer.write(b"220 mx.example.test ESMTP\r\n")
    await reader.readline()
    line = b"250-" + b"x" * 1000 + b"\r\n"
    while server.sent < 50_000_000:  # stops by itself: 50 MB at most
        writer.write(line * 64)
        server.sent += len(line) * 64
        await writer.drain()


def simple_mx(ehlo_reply: bytes, stream_after_goodbye: bool = False):  # type: ignore[no-untyped-def]
    """A server that takes alice@ and refuses everyone else, with the EHLO reply given; with
    stream_after_goodbye it sends bytes after its 221 and never closes."""

    async def talk(server: RawServer, reader: asyncio.StreamReader, writer) -> None:  # type: ignore[no-untyped-def]
        writer.write(b"220 mx.example.test ESMTP\r\n")
        while line := await reader.readline():
            command = line.strip().upper()
            if command.startswith(b"EHLO"):
                writer.write(ehlo_reply)
            elif command.startswith(b"RCPT"):
                accepted = command.startswith(b"RCPT TO:<ALICE@")
                writer.write(b"250 2.1.5 Ok\r\n" if accepted else b"550 5.1.1 User unknown\r\n")
            elif command == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                while stream_after_goodbye and server.sent < 50_000_000:  # stops by itself
                    writer.write(b"z" * 65536)
                    server.sent += 65536
                    await writer.drain()
                break
            else:
                writer.write(b"250 2.0.0 Ok\r\n")
            await writer.drain()

    return talk


@pytest.fixture
def start_raw_mx(dns_responder: DnsResponder, mx_port: int) -> Iterator[Callable[..., RawServer]]:
    """Start a RawServer running `talk` as example.test's MX host; it stops after the test."""
    dns_responder.add_mx("example.test", [(10, "mx.example.test")])
    dns_responder.add_a("mx.example.test", MX1)
    with contextlib.ExitStack() as servers:
        yield lambda talk: servers.enter_context(RawServer(MX1, mx_port, talk))


def test_a_blank_extension_line_in_the_ehlo_reply_is_ignored(
    start_raw_mx: Callable[..., RawServer], check: RunCli
) -> None:
    start_raw_mx(simple_mx(b"250-mx.example.test\r\n250- \r\n250-\t\r\n250 PIPELINING\r\n"))
    run = check("alice@example.test", "bob@example.test")
    assert run.outcomes == {
        "alice@example.test": ("valid", "accepted"),
        "bob@example.test": ("invalid", "rejected"),
    }


def test_a_reply_that_never_ends_is_cut_off_not_read_into_memory(
    start_raw_mx: Callable[..., RawServer], check: RunCli
) -> None:
    server = start_raw_mx(endless_ehlo)
    run = check("alice@example.test")
    verdict = run.by_email["alice@example.test"]
    assert (verdict["status"], verdict["reason"]) == ("unknown", "unreachable")
    assert "sent a reply longer than 65536 bytes" in verdict["detail"]
    assert server.sent < 50_000_000


def test_bytes_after_the_goodbye_are_read_only_up_to_a_cap(
    start_raw_mx: Callable[..., RawServer], check: RunCli
) -> None:
    server = start_raw_mx(simple_mx(b"250 mx.example.test\r\n", stream_after_goodbye=True))
    run = check("alice@example.test", "bob@example.test")
    assert run.outcomes == {
        "alice@example.test": ("valid", "accepted"),
        "bob@example.test": ("invalid", "rejected"),
    }
    assert server.sent < 50_000_000


def live_connections(peer: SmtpPeer) -> int:
    with peer._lock:
        return len(peer._live)


def test_cancelled_greeting_closes_its_socket(
    start_mx: StartMx, library_options: LibraryOptions
) -> None:
    import mail_checker

    peer = start_mx("example.test", MX1, never_greet=True)

    async def cancel_while_greeting() -> None:
        options = library_options(timeout=30.0)
        checking = asyncio.ensure_future(
            anext(mail_checker.check_addresses(["alice@example.test"], options))
        )
        for _ in range(200):
            if live_connections(peer):
                break
            await asyncio.sleep(0.02)
        assert live_connections(peer) == 1
        checking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checking
        for _ in range(200):
            if not live_connections(peer):
                break
            await asyncio.sleep(0.02)

    asyncio.run(cancel_while_greeting())
    assert live_connections(peer) == 0


# endregion

# region port 25 blocked


@pytest.fixture
def refusing_hosts(dns_responder: DnsResponder) -> Iterator[list[str]]:
    """Five domains whose MX hosts accept no connection (nothing listens there), two
    addresses each so that they come first at --concurrency 1."""
    addresses = []
    for index, ip in enumerate(MX_ADDRESSES[6:11]):
        dns_responder.add_mx(f"dead{index}.test", [(10, f"mx.dead{index}.test")])
        dns_responder.add_a(f"mx.dead{index}.test", ip)
        addresses += [f"a@dead{index}.test", f"b@dead{index}.test"]
    yield addresses


def test_port_25_blocked_is_said_once_and_the_remaining_hosts_are_not_tried(
    start_mx: StartMx, check: RunCli, refusing_hosts: list[str], mx_port: int
) -> None:
    live = [
        start_mx(f"live{index}.test", ip, mailboxes={"a"}) for index, ip in enumerate([MX1, MX2])
    ]
    run = check("--concurrency", "1", *refusing_hosts, "a@live0.test", "a@live1.test")
    assert set(run.outcomes.values()) == {("unknown", "unreachable")}
    assert len(run.verdicts) == 12
    assert [peer.connections for peer in live] == [0, 0]
    assert run.by_email["a@live0.test"]["detail"] == (
        f"Not tried: outbound port {mx_port} looks blocked from this machine (the first MX "
        "hosts of several domains could not be connected to)."
    )
    assert run.stderr.splitlines() == [
        f"mail_checker.py: outbound port {mx_port} looks blocked from this machine: the first "
        "MX hosts of 5 domains could not be connected to, so the rest are not tried. Check "
        'through a SOCKS5 proxy (--proxy), stop at DNS (--level dns), or see "Port 25 blocked" '
        "in the README."
    ]


def test_fewer_dead_hosts_than_the_evidence_needs_stop_nothing(
    start_mx: StartMx, check: RunCli, refusing_hosts: list[str]
) -> None:
    peer = start_mx("live.test", MX1, mailboxes={"a"})
    run = check("--concurrency", "1", *refusing_hosts[:8], "a@live.test")
    assert run.outcomes["a@live.test"] == ("valid", "accepted")
    assert peer.connections >= 1
    assert "looks blocked" not in run.stderr


def test_a_slow_network_is_not_taken_for_a_blocked_port(start_mx: StartMx, check: RunCli) -> None:
    addresses = []
    for index, ip in enumerate(MX_ADDRESSES[:6]):
        start_mx(f"slow{index}.test", ip, mailboxes={"a"}, reply_delay=0.3)
        addresses.append(f"a@slow{index}.test")
    run = check(*addresses)
    assert set(run.outcomes.values()) == {("valid", "accepted")}
    assert "looks blocked" not in run.stderr


@contextlib.contextmanager
def blackholed(address: str, port: int) -> Iterator[None]:
    """A host that never answers a SYN: a listener whose one-place accept queue is kept full,
    so that the kernel drops every further connection attempt."""
    listener = socket.socket()
    listener.bind((address, port))
    listener.listen(0)
    filler = socket.create_connection((address, port))
    try:
        yield
    finally:
        filler.close()
        listener.close()


def test_once_port_25_looks_blocked_a_silent_host_is_not_waited_for(
    dns_responder: DnsResponder, check: RunCli, refusing_hosts: list[str], mx_port: int
) -> None:
    dns_responder.add_mx("silent.test", [(10, "mx.silent.test")])
    dns_responder.add_a("mx.silent.test", MX_ADDRESSES[11])
    with blackholed(MX_ADDRESSES[11], mx_port):
        # A timeout longer than the deadline: the run ends only if the wait is given up.
        run = check("--timeout", "60", *refusing_hosts, "a@silent.test", deadline=30)
    verdict = run.by_email["a@silent.test"]
    assert verdict["reason"] == "unreachable"
    assert verdict["detail"].startswith(f"Not tried: outbound port {mx_port} looks blocked")
    assert len(run.verdicts) == 11


# endregion
