"""Each row of the verdict table, and the DNS rules, reached through real loopback peers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import dns.message
import dns.rrset
import pytest
from conftest import (
    EXPIRING_TIMEOUT,
    CheckerRun,
    LibraryOptions,
    RunCli,
    StartMx,
    check_in_process,
    checker_args,
    rcpt_addresses,
)
from peers import DnsResponder, PeerNetwork

MX1, MX2, MX3 = "127.0.2.1", "127.0.2.2", "127.0.2.3"
NOTHING_LISTENS = "127.0.2.12"  # in the test port's range, but no peer is started there

CheckAsking = Callable[..., CheckerRun]


@pytest.fixture
def check_asking(run_cli: RunCli, mx_port: int) -> CheckAsking:
    """Like `check`, but asking the DNS servers given (HOST:PORT, in order), not the test's."""

    def run(dns_servers: list[str], *arguments: str, deadline: float = 60) -> CheckerRun:
        options = checker_args(*dns_servers, smtp_port=mx_port)
        return run_cli(*options, "--format", "json", *arguments, deadline=deadline)

    return run


# region valid


def test_accepted_mailbox_is_valid_accepted(start_mx: StartMx, check: RunCli) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    run = check("alice@example.test")
    assert run.fields("status", "reason", "mx", "smtp_code") == {
        "alice@example.test": ("valid", "accepted", "mx.example.test", 250)
    }


def test_syntax_level_gives_syntax_ok_without_network(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    run = check("--level", "syntax", "alice@example.test")
    assert run.outcomes == {"alice@example.test": ("valid", "syntax_ok")}
    assert (dns_responder.queries, peer.connections) == ([], 0)


def test_dns_level_gives_mx_found_without_smtp(start_mx: StartMx, check: RunCli) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    run = check("--level", "dns", "alice@example.test")
    assert run.outcomes == {"alice@example.test": ("valid", "mx_found")}
    assert peer.connections == 0


# endregion

# region invalid


def test_malformed_address_is_invalid_syntax_without_network(
    dns_responder: DnsResponder, check: RunCli
) -> None:
    run = check("alice.example.test")
    assert run.outcomes == {"alice.example.test": ("invalid", "syntax")}
    assert dns_responder.queries == []


def test_nxdomain_is_invalid_no_domain(start_mx: StartMx, check: RunCli) -> None:
    start_mx("example.test", MX1, catch_all=True)
    run = check("alice@nowhere.test")
    assert run.outcomes == {"alice@nowhere.test": ("invalid", "no_domain")}


def test_null_mx_is_invalid_null_mx(dns_responder: DnsResponder, check: RunCli) -> None:
    dns_responder.null_mx("nomail.test")
    run = check("alice@nomail.test")
    assert run.outcomes == {"alice@nomail.test": ("invalid", "null_mx")}


def test_domain_without_mx_or_address_is_invalid_no_mx(
    dns_responder: DnsResponder, check: RunCli
) -> None:
    dns_responder.add("bare.test", "TXT", '"v=spf1 -all"')
    run = check("alice@bare.test")
    assert run.outcomes == {"alice@bare.test": ("invalid", "no_mx")}


def test_mx_host_on_loopback_is_not_connected_to_without_allow_private(
    start_mx: StartMx, dns_responder: DnsResponder, run_cli: RunCli, mx_port: int
) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    without_permission = checker_args(
        dns_responder.server_arg, smtp_port=mx_port, allow_private=False
    )
    run = run_cli(*without_permission, "--format", "json", "alice@example.test")
    verdict = run.by_email["alice@example.test"]
    assert (verdict["status"], verdict["reason"]) == ("invalid", "no_mx")
    assert verdict["detail"] == (
        f"The domain's mail hosts have only addresses the internet cannot reach ({MX1}), "
        "so none was connected to (--allow-private allows them)."
    )
    assert peer.connections == 0


def test_implicit_mx_on_ipv6_loopback_is_skipped_by_the_library_default(
    dns_responder: DnsResponder, library_options: LibraryOptions
) -> None:
    dns_responder.add_aaaa("example.test", "::1")
    options = library_options(allow_private=False)
    [verdict] = check_in_process(["alice@example.test"], options)
    assert (verdict.status, verdict.reason, verdict.mx) == ("invalid", "no_mx", None)
    assert "(::1)" in verdict.detail


def test_allow_private_from_the_environment_lets_loopback_hosts_be_checked(
    start_mx: StartMx, dns_responder: DnsResponder, run_cli: RunCli, mx_port: int
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    without_option = checker_args(dns_responder.server_arg, smtp_port=mx_port, allow_private=False)
    run = run_cli(
        *without_option, "--format", "json", "alice@example.test", env={"ALLOW_PRIVATE": "1"}
    )
    assert run.outcomes == {"alice@example.test": ("valid", "accepted")}


def test_unknown_user_is_invalid_rejected(start_mx: StartMx, check: RunCli) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    run = check("bob@example.test")
    assert run.fields("status", "reason", "smtp_code") == {
        "bob@example.test": ("invalid", "rejected", 550)
    }
    assert "User unknown" in run.by_email["bob@example.test"]["smtp_message"]


# endregion

# region risky


def test_accepted_address_at_catch_all_domain_is_risky_catch_all(
    start_mx: StartMx, check: RunCli
) -> None:
    start_mx("example.test", MX1, catch_all=True)
    run = check("alice@example.test", "bob@example.test")
    assert run.outcomes == {
        "alice@example.test": ("risky", "catch_all"),
        "bob@example.test": ("risky", "catch_all"),
    }


@pytest.mark.parametrize(
    "full",
    [
        pytest.param("452 4.2.2 Mailbox full", id="452_mailbox_full"),
        pytest.param(
            "552 Requested mail action aborted: exceeded storage allocation", id="552_over_quota"
        ),
    ],
)
def test_full_mailbox_is_risky_mailbox_full(start_mx: StartMx, check: RunCli, full: str) -> None:
    start_mx("example.test", MX1, rcpt_replies={"carol": full})
    run = check("carol@example.test")
    assert run.outcomes == {"carol@example.test": ("risky", "mailbox_full")}


# endregion

# region unknown


def test_greylisting_is_unknown_temp_failure(start_mx: StartMx, check: RunCli) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"}, greylist_seconds=3600)
    run = check("alice@example.test")
    assert run.fields("status", "reason", "smtp_code") == {
        "alice@example.test": ("unknown", "temp_failure", 450)
    }


def test_554_greeting_is_unknown_blocked(start_mx: StartMx, check: RunCli) -> None:
    start_mx("example.test", MX1, greeting_refusal="554 5.7.1 No SMTP service for you")
    run = check("alice@example.test")
    assert run.outcomes == {"alice@example.test": ("unknown", "blocked")}
    assert run.by_email["alice@example.test"]["mx"] == "mx.example.test"  # it did answer


def test_acceptance_is_not_valid_while_the_catch_all_test_is_deferred(
    start_mx: StartMx, check: RunCli
) -> None:
    # Only alice exists; every other address, the made-up probe among them, is deferred.
    start_mx("example.test", MX1, mailboxes={"alice"}, unknown_user_reply="450 4.7.1 Try later")
    run = check("alice@example.test")
    assert run.fields("status", "reason", "smtp_code") == {
        "alice@example.test": ("unknown", "temp_failure", 250)
    }
    assert run.exit_status == 1


def test_any_permanent_refusal_of_the_probe_shows_the_domain_is_not_catch_all(
    start_mx: StartMx, check: RunCli
) -> None:
    policy = "550 5.7.1 Recipient refused by local policy"
    start_mx("example.test", MX1, mailboxes={"alice"}, unknown_user_reply=policy)
    run = check("alice@example.test")
    assert run.outcomes == {"alice@example.test": ("valid", "accepted")}


def test_spamhaus_refusal_at_rcpt_is_unknown_blocked(start_mx: StartMx, check: RunCli) -> None:
    listed = (
        "550 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using "
        "zen.spamhaus.org; https://www.spamhaus.org/query/ip/127.0.0.1"
    )
    start_mx("example.test", MX1, mailboxes={"alice"}, rcpt_replies={"alice": listed})
    run = check("alice@example.test")
    assert run.outcomes == {"alice@example.test": ("unknown", "blocked")}


def test_refused_mail_from_is_unknown_blocked(start_mx: StartMx, check: RunCli) -> None:
    refusal = "553 5.7.1 <>: Sender address rejected: Access denied"
    start_mx("example.test", MX1, mailboxes={"alice"}, mail_refusal=refusal)
    run = check("alice@example.test", "bob@example.test")
    assert run.outcomes == {
        "alice@example.test": ("unknown", "blocked"),
        "bob@example.test": ("unknown", "blocked"),
    }


def test_mx_host_refusing_connections_is_unknown_unreachable(
    dns_responder: DnsResponder, check: RunCli
) -> None:
    dns_responder.add_mx("example.test", [(10, "mx.example.test")])
    dns_responder.add_a("mx.example.test", NOTHING_LISTENS)
    run = check("alice@example.test")
    assert run.outcomes == {"alice@example.test": ("unknown", "unreachable")}


def test_mx_host_that_never_greets_is_unreachable_within_the_timeout(
    start_mx: StartMx, check: RunCli
) -> None:
    peer = start_mx("example.test", MX1, never_greet=True)
    # The deadline is generous: only a checker that waits past its --timeout misses it.
    run = check("--timeout", f"{EXPIRING_TIMEOUT:g}", "alice@example.test", deadline=15)
    assert run.outcomes == {"alice@example.test": ("unknown", "unreachable")}
    detail = run.by_email["alice@example.test"]["detail"]
    assert f"did not answer within {EXPIRING_TIMEOUT:g} s" in detail
    assert peer.connections >= 1


def test_servfail_is_unknown_dns_error(dns_responder: DnsResponder, check: RunCli) -> None:
    dns_responder.add_mx("broken.test", [(10, "mx.broken.test")])
    dns_responder.servfail("broken.test")
    run = check("alice@broken.test")
    assert run.outcomes == {"alice@broken.test": ("unknown", "dns_error")}


def test_dns_timeout_is_unknown_dns_error(dns_responder: DnsResponder, check: RunCli) -> None:
    dns_responder.add_mx("slow.test", [(10, "mx.slow.test")])
    dns_responder.timeout("slow.test")
    run = check("--timeout", f"{EXPIRING_TIMEOUT:g}", "alice@slow.test", deadline=15)
    assert run.outcomes == {"alice@slow.test": ("unknown", "dns_error")}


def test_dns_server_that_is_not_there_gives_dns_error_not_a_crash(
    check_asking: CheckAsking, mx_port: int
) -> None:
    run = check_asking(
        [f"{NOTHING_LISTENS}:{mx_port}"],
        *("--timeout", f"{EXPIRING_TIMEOUT:g}", "alice@example.test", "bob@example.org"),
        deadline=15,
    )
    assert "Traceback" not in run.stderr
    assert (run.exit_status, run.outcomes) == (
        1,
        {
            "alice@example.test": ("unknown", "dns_error"),
            "bob@example.org": ("unknown", "dns_error"),
        },
    )


def test_connection_dropped_at_every_rcpt_is_unknown_smtp_error(
    start_mx: StartMx, check: RunCli
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"}, drop_after_rcpts=0)
    run = check("alice@example.test")
    assert run.outcomes == {"alice@example.test": ("unknown", "smtp_error")}


# endregion

# region DNS rules


def test_mx_hosts_are_tried_in_preference_order(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    second = start_mx(None, MX2, "mx20.example.test", mailboxes={"alice"})
    third = start_mx(None, MX3, "mx30.example.test", mailboxes={"alice"})
    dns_responder.add_a("mx10.example.test", NOTHING_LISTENS)
    dns_responder.add_mx(
        "example.test",
        [(30, "mx30.example.test"), (10, "mx10.example.test"), (20, "mx20.example.test")],
    )
    run = check("alice@example.test")
    assert run.fields("reason", "mx") == {"alice@example.test": ("accepted", "mx20.example.test")}
    assert (second.connections >= 1, third.connections) == (True, 0)


def test_domain_without_mx_uses_its_address_as_implicit_mx(
    start_mx: StartMx, check: RunCli
) -> None:
    peer = start_mx(None, MX1, "example.test", mailboxes={"alice"})
    run = check("alice@example.test")
    assert run.fields("reason", "mx") == {"alice@example.test": ("accepted", "example.test")}
    assert "RCPT TO:<alice@example.test>" in peer.all_commands()


def test_mx_host_that_does_not_resolve_is_skipped(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    start_mx(None, MX2, "mx20.example.test", mailboxes={"alice"})
    dns_responder.add_mx("example.test", [(10, "ghost.example.invalid"), (20, "mx20.example.test")])
    run = check("alice@example.test")
    assert run.fields("reason", "mx") == {"alice@example.test": ("accepted", "mx20.example.test")}


def test_second_dns_server_is_asked_when_the_first_does_not_answer(
    start_mx: StartMx, dns_responder: DnsResponder, check_asking: CheckAsking, mx_port: int
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    servers = [f"{NOTHING_LISTENS}:{mx_port}", dns_responder.server_arg]
    # Each of the two servers gets a third of the timeout: a silent one must use its share up.
    timeout = 2 * EXPIRING_TIMEOUT
    run = check_asking(servers, "--timeout", f"{timeout:g}", "alice@example.test", deadline=15)
    assert run.outcomes == {"alice@example.test": ("valid", "accepted")}


def test_second_dns_server_is_asked_when_the_first_answers_servfail(
    start_mx: StartMx,
    dns_responder: DnsResponder,
    peer_network: PeerNetwork,
    check_asking: CheckAsking,
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    with DnsResponder(address="127.0.3.1", network=peer_network) as failing:
        failing.servfail("example.test")
        failing.servfail("mx.example.test")
        run = check_asking([failing.server_arg, dns_responder.server_arg], "alice@example.test")
        assert failing.query_count("example.test", "MX") == 1
    assert run.outcomes == {"alice@example.test": ("valid", "accepted")}


def test_mx_list_too_long_for_udp_is_asked_again_over_tcp(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    start_mx(None, MX1, "mx00.example.test", mailboxes={"alice"})
    exchanges = [(10 + index, f"mx{index:02d}.example.test") for index in range(80)]
    dns_responder.add_mx("example.test", exchanges)
    run = check("alice@example.test")
    assert run.fields("reason", "mx") == {"alice@example.test": ("accepted", "mx00.example.test")}
    transports = [query.transport for query in dns_responder.queries if query.rdtype == "MX"]
    assert transports == ["udp", "tcp"]


def test_dns_answer_is_taken_only_from_the_server_asked_with_the_question_asked() -> None:
    import mail_checker

    server = ("127.0.3.1", 53)
    query = dns.message.make_query("example.test", "MX")
    question = query.to_wire()[12:]
    response = dns.message.make_response(query)
    response.answer.append(
        dns.rrset.from_text("example.test.", 300, "IN", "MX", "10 mx.example.test.")
    )
    answer = response.to_wire()
    other = dns.message.make_response(dns.message.make_query("example.org", "MX")).to_wire()

    async def deliver(*datagrams: tuple[bytes, tuple[str, int]]) -> bool:
        socket = mail_checker.DnsSocket()
        answered = asyncio.get_running_loop().create_future()
        socket.waiting[query.id] = (server, question.lower(), answered)
        for data, sender in datagrams:
            socket.datagram_received(data, sender)
        return answered.done()

    def run(*datagrams: tuple[bytes, tuple[str, int]]) -> bool:
        return asyncio.run(deliver(*datagrams))

    assert run((answer, server))
    assert not run((answer, ("127.0.3.2", 53)))  # another host
    assert not run((answer, ("127.0.3.1", 5353)))  # another port
    assert not run((answer[:2] + other[2:], server))  # the id, but another question
    assert not run((query.to_wire(), server))  # a query, not a response
    assert not run((answer[:5], server), (answer[:-3], server))  # cut short
    assert run((answer[:-3], server), (answer, server))  # a broken one, then the answer


def test_dns_server_may_be_an_ipv6_address(
    start_mx: StartMx,
    dns_responder: DnsResponder,
    peer_network: PeerNetwork,
    check_asking: CheckAsking,
) -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6")
    start_mx("example.test", MX1, mailboxes={"alice"})
    over_ipv6 = DnsResponder(address="::1", network=peer_network)
    try:
        over_ipv6.start()
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    try:
        over_ipv6.add_mx("example.test", [(10, "mx.example.test")])
        over_ipv6.add_a("mx.example.test", MX1)
        run = check_asking([f"[::1]:{over_ipv6.port}"], "alice@example.test")
        assert over_ipv6.query_count("example.test", "MX") == 1
    finally:
        over_ipv6.stop()
    assert run.outcomes == {"alice@example.test": ("valid", "accepted")}
    assert dns_responder.queries == []


def test_a_dns_answer_slower_than_the_first_retry_still_counts(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    # A lone server is asked again at half the timeout. Every answer comes three quarters of
    # the timeout after its query: after the retry, and the retry's own answer would come
    # after the timeout. Only the first query's answer can count.
    timeout = 1.0
    start_mx("example.test", MX1, mailboxes={"alice"})
    dns_responder.udp_delay = 0.75 * timeout
    run = check("--timeout", f"{timeout:g}", "alice@example.test")
    assert run.outcomes == {"alice@example.test": ("valid", "accepted")}
    assert dns_responder.query_count("example.test", "MX") >= 2


def test_thousands_of_lookups_at_once_lose_no_answer(
    dns_responder: DnsResponder, check: RunCli
) -> None:
    domains = [f"d{index}.test" for index in range(3000)]
    for domain in domains:
        dns_responder.add_mx(domain, [(10, "mx.shared.test")])
    dns_responder.add_a("mx.shared.test", "192.0.2.25")
    addresses = [f"a@{domain}" for domain in domains]
    # A timeout roomy enough for a loaded machine: what is tested is that no answer is lost.
    run = check(
        "--level", "dns", "--concurrency", "3000", "--timeout", "5", *addresses, deadline=120
    )
    assert set(run.outcomes.values()) == {("valid", "mx_found")}
    assert len(run.verdicts) == 3000


def test_dns_queries_move_to_a_fresh_source_port_every_hundred(
    dns_responder: DnsResponder, library_options: LibraryOptions
) -> None:
    import mail_checker

    names = [f"host{index}.example.test" for index in range(150)]
    for name in names:
        dns_responder.add_a(name, "192.0.2.1")

    async def source_ports() -> tuple[list[int], list[bool]]:
        resolver = mail_checker.Dns(library_options())
        ports, used = [], []
        for name in names:
            assert await resolver.host_addresses(name) == ("192.0.2.1",)
            udp = mail_checker.opened(resolver.sockets[socket.AF_INET])
            assert udp is not None
            ports.append(udp.transport.get_extra_info("socket").getsockname()[1])
            used.append(udp)
        resolver.close()
        return ports, [udp.transport.is_closing() for udp in used]

    ports, closed = asyncio.run(source_ports())
    assert len(set(ports[:100])) == 1 and len(set(ports[100:])) == 1
    assert ports[0] != ports[100]
    assert all(closed)  # the retired socket, and the last one at close()
    assert dns_responder.query_count("host149.example.test", "A") == 1


def test_dns_answers_kept_for_reuse_are_bounded_oldest_first(
    dns_responder: DnsResponder, library_options: LibraryOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mail_checker

    monkeypatch.setattr(mail_checker, "CACHED_LOOKUPS", 2)
    for name in ("a.example.test", "b.example.test", "c.example.test"):
        dns_responder.add_a(name, "192.0.2.1")

    async def look_up(*names: str) -> int:
        resolver = mail_checker.Dns(library_options())
        for name in names:
            await resolver.host_addresses(name)
        resolver.close()
        return len(resolver.lookups)

    kept = asyncio.run(look_up(*(f"{n}.example.test" for n in "abcbca")))
    assert kept == 2
    # a is forgotten when c comes, and asked again; b and c are kept in between.
    counts = [dns_responder.query_count(f"{n}.example.test", "A") for n in "abc"]
    assert counts == [2, 1, 1]


def test_mx_is_looked_up_once_per_domain_for_many_addresses(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    addresses = [f"user{index}@example.test" for index in range(8)]
    run = check(*addresses, "alice@example.test")
    assert len(run.verdicts) == 9
    assert dns_responder.query_count("example.test", "MX") == 1


def test_shared_mx_host_is_resolved_once_for_several_domains(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    start_mx("example.test", MX1, "mx.shared.test", mailboxes={"alice"})
    dns_responder.add_mx("example.org", [(10, "mx.shared.test")])
    run = check("alice@example.test", "alice@example.org")
    assert set(run.outcomes.values()) == {("valid", "accepted")}
    assert dns_responder.query_count("mx.shared.test", "A") == 1


def test_dns_server_option_is_the_resolver_asked(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    check("alice@example.test")
    asked = {(query.name.lower(), query.rdtype) for query in dns_responder.queries}
    assert {("example.test", "MX"), ("mx.example.test", "A")} <= asked


def test_idn_domain_is_asked_and_sent_as_a_labels(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    peer = start_mx("xn--bcher-kva.example", MX1, mailboxes={"user"})
    run = check("user@bücher.example")
    assert run.outcomes == {"user@bücher.example": ("valid", "accepted")}
    assert dns_responder.query_count("xn--bcher-kva.example", "MX") == 1
    assert "user@xn--bcher-kva.example" in rcpt_addresses(peer)


# endregion
