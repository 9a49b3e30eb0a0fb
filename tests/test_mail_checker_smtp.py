"""The SMTP conversation: what the checker says to mail servers, and how it weathers trouble."""

from __future__ import annotations

import contextlib
import socket
from collections import Counter
from pathlib import Path

import pytest
from conftest import HELO_NAME, LibraryOptions, RunCli, StartMx, check_in_process, rcpt_addresses
from peers import DnsResponder, SmtpPeer

import mail_checker

MX1 = "127.0.2.1"
VICTIM = "victim@example.org"
# Two addresses, and their verdicts at a server where only alice has a mailbox.
ALICE_AND_BOB = ("alice@example.test", "bob@example.test")
ONLY_ALICE_EXISTS = {
    "alice@example.test": ("valid", "accepted"),
    "bob@example.test": ("invalid", "rejected"),
}


def verbs(session: list[str]) -> list[str]:
    """The command verbs of one session, upper-cased."""
    return [line.split(maxsplit=1)[0].upper() if line.strip() else "" for line in session]


def arguments_of(peer: SmtpPeer, verb: str) -> list[str]:
    """What followed the verb in every command of that verb the peer received."""
    return [
        line[len(verb) :].strip()
        for line in peer.all_commands()
        if line.upper().startswith(verb.upper())
    ]


# region greeting and hello


def test_session_opens_with_ehlo_and_the_helo_name(start_mx: StartMx, check: RunCli) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    check("alice@example.test")
    assert peer.sessions[0][0] == f"EHLO {HELO_NAME}"


def test_refused_ehlo_falls_back_to_helo(start_mx: StartMx, check: RunCli) -> None:
    peer = start_mx(
        "example.test",
        MX1,
        mailboxes={"alice"},
        ehlo_refusal="502 5.5.2 Error: command not recognized",
    )
    run = check(*ALICE_AND_BOB)
    assert verbs(peer.sessions[0])[:3] == ["EHLO", "HELO", "MAIL"]
    assert arguments_of(peer, "HELO") == [HELO_NAME]
    assert run.outcomes == ONLY_ALICE_EXISTS


def test_starttls_is_used_when_offered(start_mx: StartMx, check: RunCli) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"}, starttls=True)
    run = check(*ALICE_AND_BOB)
    assert verbs(peer.sessions[0])[:3] == ["EHLO", "STARTTLS", "EHLO"]
    assert run.outcomes == ONLY_ALICE_EXISTS


def test_server_demanding_tls_gets_it_and_gives_verdicts(start_mx: StartMx, check: RunCli) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"}, require_tls=True)
    run = check(*ALICE_AND_BOB)
    assert "STARTTLS" in verbs(peer.sessions[0])
    assert run.outcomes == ONLY_ALICE_EXISTS


# endregion

# region transactions


def test_several_recipients_share_one_session(start_mx: StartMx, check: RunCli) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice", "bob"})
    check("alice@example.test", "bob@example.test", "carol@example.test")
    assert peer.connections == 1
    assert {"alice@example.test", "bob@example.test", "carol@example.test"} <= set(
        rcpt_addresses(peer)
    )


def test_session_ends_with_quit(start_mx: StartMx, check: RunCli) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    check("alice@example.test", "bob@example.test")
    assert [session[-1] for session in peer.sessions] == ["QUIT"]


def test_second_transaction_in_a_session_starts_with_rset(
    start_mx: StartMx, library_options: LibraryOptions
) -> None:
    # Many refusals first make the checker take the rest in small batches, one transaction
    # each; one connection at a time, so that each session knows the refusals before it.
    peer = start_mx("example.test", MX1, mailboxes={f"ok{index}" for index in range(40)})
    addresses = [f"no{index}@example.test" for index in range(30)]
    addresses += [f"ok{index}@example.test" for index in range(40)]
    verdicts = check_in_process(addresses, library_options(host_connections=1))
    assert len(verdicts) == len(addresses)
    multi = [verbs(session) for session in peer.sessions if verbs(session).count("MAIL") > 1]
    assert multi, "no session held more than one transaction"
    for session in multi:
        later_mails = [index for index, verb in enumerate(session) if verb == "MAIL"][1:]
        assert all(session[index - 1] == "RSET" for index in later_mails)


def test_recipient_limit_per_transaction_continues_after_rset_in_the_same_session(
    start_mx: StartMx, check: RunCli
) -> None:
    # Without PIPELINING the QUIT never rides with a batch, so the session that met the limit
    # is still open to take the rest in a second transaction.
    names = ["alice", "bob", "carol", "dave"]
    peer = start_mx(
        "example.test", MX1, mailboxes=set(names), max_rcpt_per_transaction=2, pipelining=False
    )
    run = check(*(f"{name}@example.test" for name in names))
    assert set(run.outcomes.values()) == {("valid", "accepted")}
    assert peer.connections == 1
    assert "RSET" in verbs(peer.sessions[0])


def test_recipient_limit_per_transaction_with_pipelining_loses_no_address(
    start_mx: StartMx, check: RunCli
) -> None:
    # A pipelined batch that carries QUIT ends its session, so the rest go to a new one.
    names = ["alice", "bob", "carol", "dave", "erin"]
    start_mx("example.test", MX1, mailboxes=set(names), max_rcpt_per_transaction=2)
    run = check(*(f"{name}@example.test" for name in names))
    assert run.outcomes == {f"{name}@example.test": ("valid", "accepted") for name in names}


def rcpts_in_first_session_of_a_server_that_hangs_up(
    start_mx: StartMx, check: RunCli, pipelining: bool
) -> int:
    """The server answers one RCPT and hangs up at the next; whatever else the client wrote
    before it saw the hang-up is still recorded."""
    peer = start_mx("example.test", MX1, catch_all=True, drop_after_rcpts=1, pipelining=pipelining)
    check(*(f"user{index}@example.test" for index in range(4)))
    return verbs(peer.sessions[0]).count("RCPT")


def test_pipelining_sends_the_batch_without_waiting_for_replies(
    start_mx: StartMx, check: RunCli
) -> None:
    assert rcpts_in_first_session_of_a_server_that_hangs_up(start_mx, check, True) > 2


def test_without_pipelining_each_command_waits_for_its_reply(
    start_mx: StartMx, check: RunCli
) -> None:
    assert rcpts_in_first_session_of_a_server_that_hangs_up(start_mx, check, False) == 2


def test_without_pipelining_no_rcpt_follows_a_refused_mail_from(
    start_mx: StartMx, check: RunCli
) -> None:
    peer = start_mx(
        "example.test", MX1, mail_refusal="553 5.7.1 Sender address rejected", pipelining=False
    )
    check("alice@example.test", "bob@example.test")
    assert "MAIL" in verbs(peer.sessions[0])
    assert "RCPT" not in verbs(peer.sessions[0])


def test_verdicts_are_the_same_without_pipelining(start_mx: StartMx, check: RunCli) -> None:
    start_mx(
        "example.test",
        MX1,
        mailboxes={"alice"},
        rcpt_replies={"carol": "452 4.2.2 Mailbox full"},
        pipelining=False,
    )
    run = check("alice@example.test", "bob@example.test", "carol@example.test")
    assert run.outcomes == {
        "alice@example.test": ("valid", "accepted"),
        "bob@example.test": ("invalid", "rejected"),
        "carol@example.test": ("risky", "mailbox_full"),
    }


# endregion

# region HELO name and MAIL FROM


@pytest.mark.parametrize(
    ("arguments", "environment", "dotenv", "sender"),
    [
        pytest.param([], {}, "", "<>", id="null_reverse_path_by_default"),
        pytest.param(
            ["--mail-from", "bounce@checker.example.net"],
            {},
            "",
            "<bounce@checker.example.net>",
            id="option",
        ),
        pytest.param(
            [], {"MAIL_FROM": "env@checker.example.net"}, "", "<env@checker.example.net>", id="env"
        ),
        pytest.param(
            [],
            {},
            "MAIL_FROM=dotenv@checker.example.net\n",
            "<dotenv@checker.example.net>",
            id="dotenv",
        ),
        pytest.param(
            ["--mail-from", "option@checker.example.net"],
            {"MAIL_FROM": "env@checker.example.net"},
            "",
            "<option@checker.example.net>",
            id="option_wins_over_the_environment",
        ),
    ],
)
def test_envelope_sender_comes_from_the_option_the_environment_or_dotenv(
    start_mx: StartMx,
    check: RunCli,
    tmp_path: Path,
    arguments: list[str],
    environment: dict[str, str],
    dotenv: str,
    sender: str,
) -> None:
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    check(*arguments, "alice@example.test", env=environment)
    assert set(arguments_of(peer, "MAIL FROM:")) == {sender}


def test_helo_name_comes_from_the_environment(
    start_mx: StartMx, run_cli: RunCli, args_without_helo: list[str]
) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    run_cli(*args_without_helo, "alice@example.test", env={"HELO_HOST": "env-helo.example.net"})
    assert arguments_of(peer, "EHLO") == ["env-helo.example.net"]


def test_helo_name_comes_from_dotenv(
    start_mx: StartMx, run_cli: RunCli, args_without_helo: list[str], tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("HELO_HOST=dotenv-helo.example.net\n")
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    run_cli(*args_without_helo, "alice@example.test")
    assert arguments_of(peer, "EHLO") == ["dotenv-helo.example.net"]


def test_default_helo_name_is_this_hosts_fqdn(
    start_mx: StartMx, run_cli: RunCli, args_without_helo: list[str]
) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    run_cli(*args_without_helo, "alice@example.test")
    assert arguments_of(peer, "EHLO") == [socket.getfqdn().lower()]


def test_target_domain_is_never_used_as_helo_or_sender(
    start_mx: StartMx, dns_responder: DnsResponder, run_cli: RunCli, args_without_helo: list[str]
) -> None:
    peer = start_mx("example.test", MX1, "mx.shared.test", mailboxes={"alice"})
    dns_responder.add_mx("example.org", [(10, "mx.shared.test")])
    run_cli(*args_without_helo, "alice@example.test", "bob@example.org")
    said = arguments_of(peer, "EHLO") + arguments_of(peer, "MAIL FROM:")
    assert len(said) >= 4  # a hello and a sender in each domain's session
    assert not [word for word in said if "example.test" in word or "example.org" in word]


# endregion

# region catch-all probe


def test_one_probe_per_domain_however_many_addresses(start_mx: StartMx, check: RunCli) -> None:
    peer = start_mx("example.test", MX1, catch_all=True)
    addresses = [f"user{index}@example.test" for index in range(12)]
    check(*addresses)
    probes = [address for address in rcpt_addresses(peer) if address not in addresses]
    assert len(probes) == 1
    assert probes[0].endswith("@example.test")


def test_each_domain_gets_its_own_probe(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    peer = start_mx("example.test", MX1, catch_all=True)
    dns_responder.add_mx("example.org", [(10, "mx.example.test")])
    addresses = ["alice@example.test", "bob@example.test", "alice@example.org", "bob@example.org"]
    check(*addresses)
    probes = [address for address in rcpt_addresses(peer) if address not in addresses]
    assert sorted(probe.rpartition("@")[2] for probe in probes) == ["example.org", "example.test"]


def test_probe_local_part_is_new_on_every_run(start_mx: StartMx, check: RunCli) -> None:
    peer = start_mx("example.test", MX1, catch_all=True)
    check("alice@example.test")
    check("alice@example.test")
    probes = [address for address in rcpt_addresses(peer) if address != "alice@example.test"]
    assert len(probes) == 2
    assert probes[0] != probes[1]


# endregion

# region resilience


def test_session_dropped_after_a_few_rcpts_still_gives_every_verdict_once(
    start_mx: StartMx, check: RunCli
) -> None:
    names = [f"user{index}" for index in range(12)]
    start_mx("example.test", MX1, mailboxes=set(names[::2]), drop_after_rcpts=3)
    run = check(*(f"{name}@example.test" for name in names))
    assert Counter(verdict["email"] for verdict in run.verdicts) == Counter(
        f"{name}@example.test" for name in names
    )
    assert run.outcomes == {
        f"{name}@example.test": ("valid", "accepted") if index % 2 == 0 else ("invalid", "rejected")
        for index, name in enumerate(names)
    }


KNOWN = [f"known{index}@example.test" for index in range(6)]
UNKNOWN = [f"unknown{index}@example.test" for index in range(30)]


@pytest.mark.parametrize(
    ("limit", "addresses"),
    [
        # "452 4.5.3 Too many recipients in this session" after three: the rest need new sessions.
        pytest.param({"max_rcpt_per_session": 3}, KNOWN + UNKNOWN[:6], id="recipients_per_session"),
        # Postfix's smtpd_hard_error_limit, whose default is 20: a 421 and the line is closed.
        pytest.param({"hard_error_limit": 20}, UNKNOWN + KNOWN[:5], id="postfix_error_limit"),
        # Servers tightened against address harvesting hang up after a handful of errors,
        # fewer than the checker itself allows a session.
        pytest.param(
            {"hard_error_limit": 5}, UNKNOWN[:20] + KNOWN[:3], id="error_limit_below_the_checkers"
        ),
    ],
)
def test_server_limit_loses_no_address(
    start_mx: StartMx, check: RunCli, limit: dict[str, int], addresses: list[str]
) -> None:
    start_mx("example.test", MX1, mailboxes=set(KNOWN), **limit)
    run = check(*addresses)
    assert run.outcomes == {
        address: ("valid", "accepted") if address in KNOWN else ("invalid", "rejected")
        for address in addresses
    }


def test_connection_limit_of_the_server_is_waited_out_and_loses_no_address(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    # Two domains on one MX host are worked on at once: the second session is refused. This
    # test alone waits out the real pause before trying such a host again.
    peer = start_mx("example.test", MX1, "mx.shared.test", mailboxes={"alice"}, max_connections=1)
    dns_responder.add_mx("example.org", [(10, "mx.shared.test")])
    domains = ["example.test", "example.org"]
    run = check(*(f"{name}@{domain}" for domain in domains for name in ("alice", "bob")))
    expected = {f"alice@{domain}": ("valid", "accepted") for domain in domains}
    expected |= {f"bob@{domain}": ("invalid", "rejected") for domain in domains}
    assert run.outcomes == expected
    sessions = peer.sessions
    refused = [index for index, session in enumerate(sessions) if "EHLO" not in verbs(session)]
    assert refused, "the server never had to refuse a connection"
    first_refusal = refused[0]
    assert len(sessions) > first_refusal + 1, "the refused domain never came back"
    pause = peer.connected_at[first_refusal + 1] - peer.connected_at[first_refusal]
    assert pause >= mail_checker.BACKOFF_SECONDS


def test_421_in_mid_session_leaves_the_other_verdicts_right(
    start_mx: StartMx, check: RunCli
) -> None:
    start_mx(
        "example.test",
        MX1,
        mailboxes={"alice", "dave"},
        rcpt_replies={"carol": "421 4.3.2 Service shutting down, closing transmission channel"},
    )
    names = ["alice", "bob", "carol", "dave", "erin"]
    run = check(*(f"{name}@example.test" for name in names))
    assert len(run.verdicts) == len(names)
    assert run.outcomes == {
        "alice@example.test": ("valid", "accepted"),
        "bob@example.test": ("invalid", "rejected"),
        "carol@example.test": ("unknown", "temp_failure"),
        "dave@example.test": ("valid", "accepted"),
        "erin@example.test": ("invalid", "rejected"),
    }


# endregion

# region command injection (the fixture also checks that no line held CR, LF or NUL)


def test_address_with_crlf_is_invalid_syntax_and_injects_nothing(
    start_mx: StartMx, check: RunCli
) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"}, catch_all=True)
    injected = [
        f"alice@example.test>\r\nRCPT TO:<{VICTIM}",
        f"alice@example.test\nRCPT TO:<{VICTIM}>",
        "alice@example.test\rDATA",
    ]
    run = check(*injected, "bob@example.test")
    assert {run.outcomes[address] for address in injected} == {("invalid", "syntax")}
    assert VICTIM not in rcpt_addresses(peer)
    assert "DATA" not in verbs(peer.all_commands())


def test_address_with_nul_in_a_file_is_invalid_syntax(
    start_mx: StartMx, check: RunCli, tmp_path: Path
) -> None:
    peer = start_mx("example.test", MX1, catch_all=True)
    (tmp_path / "list.txt").write_bytes(b"ali\x00ce@example.test\nbob@example.test\n")
    run = check("-f", "list.txt")
    assert run.outcomes["ali\x00ce@example.test"] == ("invalid", "syntax")
    assert "ali" not in "".join(rcpt_addresses(peer))


INJECTED_HELO = f"checker.example.net\r\nRCPT TO:<{VICTIM}>"


@pytest.mark.parametrize(
    ("arguments", "environment"),
    [
        pytest.param(["--helo", INJECTED_HELO], {}, id="helo_option"),
        pytest.param([], {"HELO_HOST": INJECTED_HELO}, id="helo_from_the_environment"),
        pytest.param(
            ["--helo", HELO_NAME, "--mail-from", f"me@example.net>\r\nRCPT TO:<{VICTIM}"],
            {},
            id="mail_from_option",
        ),
        pytest.param(
            ["--helo", HELO_NAME],
            {"MAIL_FROM": "me@example.net>\r\nDATA"},
            id="mail_from_from_the_environment",
        ),
    ],
)
def test_crlf_in_helo_name_or_mail_from_is_a_usage_error(
    start_mx: StartMx,
    run_cli: RunCli,
    args_without_helo: list[str],
    arguments: list[str],
    environment: dict[str, str],
) -> None:
    peer = start_mx("example.test", MX1, catch_all=True)
    run = run_cli(*args_without_helo, *arguments, "alice@example.test", env=environment)
    assert run.exit_status == 2
    assert peer.connections == 0


def test_library_sends_no_control_character_given_in_options(
    start_mx: StartMx, library_options: LibraryOptions
) -> None:
    peer = start_mx("example.test", MX1, catch_all=True)
    options = library_options(
        helo=f"checker.example.net\r\nRCPT TO:<{VICTIM}>",
        mail_from=f"me@example.net>\r\nRCPT TO:<{VICTIM}",
    )
    # Refusing with an exception and refusing with verdicts are both fine; sending is not.
    with contextlib.suppress(ValueError, mail_checker.AddressSyntaxError):
        check_in_process(["alice@example.test"], options)
    assert VICTIM not in rcpt_addresses(peer)


# endregion
