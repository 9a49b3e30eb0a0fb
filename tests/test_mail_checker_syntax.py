"""Address syntax and reply classification against the reference corpora, and the flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import LibraryOptions, RunCli, check_in_process
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import DnsResponder

import mail_checker

DATA = Path(__file__).resolve().parent / "data"
SYNTAX_CASES: list[dict[str, Any]] = json.loads((DATA / "email-syntax.json").read_text())
REPLY_CASES: list[dict[str, Any]] = json.loads((DATA / "smtp-replies.json").read_text())
SCORED_REPLY_CASES = [case for case in REPLY_CASES if case["expect_status"] != "ambiguous"]


def verdict_of(text: str) -> str:
    try:
        mail_checker.parse_address(text)
    except mail_checker.AddressSyntaxError:
        return "invalid"
    return "valid"


def reply_of(case: dict[str, Any]) -> mail_checker.Reply:
    """The reply as the checker reads it off the wire: the code, and each line's text."""
    lines = case["reply"] if isinstance(case["reply"], list) else [case["reply"]]
    return mail_checker.Reply(int(lines[0][:3]), tuple(line[4:] for line in lines))


# region reference corpora


@pytest.mark.parametrize(
    "case", SYNTAX_CASES, ids=[f"{index:03d}" for index in range(len(SYNTAX_CASES))]
)
def test_syntax_case_gets_its_expected_verdict(case: dict[str, Any]) -> None:
    assert verdict_of(case["address"]) == case["expect"], case["note"]


def test_syntax_level_of_the_command_line_agrees_with_the_corpus(
    run_cli: RunCli, tmp_path: Path
) -> None:
    # One address a line: CR/LF cases cannot be lines, and "#" lines are comments.
    cases = [
        case
        for case in SYNTAX_CASES
        if not case.get("argv_only") and not case["address"].startswith("#")
    ]
    # The first line decides between plain lines and CSV: it must hold no delimiter.
    cases.sort(key=lambda case: any(mark in case["address"] for mark in ",;\t"))
    (tmp_path / "corpus.txt").write_text("".join(case["address"] + "\n" for case in cases))
    run = run_cli("--level", "syntax", "--format", "json", "-f", "corpus.txt")
    expected = {case["address"]: case["expect"] for case in cases}
    assert {verdict["email"]: verdict["status"] for verdict in run.verdicts} == expected


@pytest.mark.parametrize("case", SCORED_REPLY_CASES, ids=[c["id"] for c in SCORED_REPLY_CASES])
def test_real_server_reply_is_classified_as_expected(case: dict[str, Any]) -> None:
    allowed = {(case["expect_status"], case["expect_reason"])}
    allowed |= {tuple(verdict) for verdict in case.get("accept", [])}
    reason = mail_checker.classify(case["stage"], reply_of(case))
    assert (reason.status, reason) in allowed, case["note"]


# endregion

# region the sentence each syntax error gives the user

LONG_LABELS = ".".join(["a" * 63, "b" * 63, "c" * 63])  # 191 octets: three labels at the limit
# (address, the verdict's detail): every sentence parse_address() answers with, each for an
# address that meets that rule first.
SYNTAX_ERROR_DETAILS = [
    pytest.param(
        "alice@example.test\r\nDATA",
        "The address contains a control character (0x0d), which no address may hold.",
        id="control_character",
    ),
    pytest.param("alice.example.test", "An email address must have an @-sign.", id="no_at_sign"),
    pytest.param(
        "alice@home@example.test", "An email address can have only one @-sign.", id="two_at_signs"
    ),
    pytest.param("alice@", "There must be a domain after the @-sign.", id="no_domain"),
    pytest.param("@example.test", "There must be something before the @-sign.", id="no_local_part"),
    pytest.param(
        '"alice smith"@example.test',
        'Quoted local parts ("...") are not accepted: mail systems rarely deliver to them.',
        id="quoted_local_part",
    ),
    pytest.param(
        "a" * 65 + "@example.test",
        "The part before the @-sign is longer than 64 octets.",
        id="local_part_too_long",
    ),
    pytest.param(
        "ü" * 33 + "@example.test",  # 33 characters, 66 octets in UTF-8
        "The part before the @-sign is longer than 64 octets.",
        id="local_part_too_long_in_octets",
    ),
    pytest.param(
        ".alice@example.test",
        "The part before the @-sign cannot start or end with a period.",
        id="local_part_starts_with_a_period",
    ),
    pytest.param(
        "alice.@example.test",
        "The part before the @-sign cannot start or end with a period.",
        id="local_part_ends_with_a_period",
    ),
    pytest.param(
        "alice..smith@example.test",
        "The part before the @-sign cannot have two periods in a row.",
        id="two_periods_in_a_row",
    ),
    pytest.param(
        "alice smith@example.test",
        "The part before the @-sign contains a character that is not allowed: ' '.",
        id="space_in_local_part",
    ),
    pytest.param(
        "alice(x)@example.test",
        "The part before the @-sign contains a character that is not allowed: '('.",
        id="parenthesis_in_local_part",
    ),
    pytest.param(
        "alice@.example.test",
        "The part after the @-sign cannot start or end with a period.",
        id="domain_starts_with_a_period",
    ),
    pytest.param(
        "alice@example.test.",
        "The part after the @-sign cannot start or end with a period.",
        id="domain_ends_with_a_period",
    ),
    pytest.param(
        "alice@[192.0.2.1]",
        "Domain literals such as [192.0.2.1] are not accepted: "
        "the part after the @-sign must be a domain name.",
        id="domain_literal",
    ),
    pytest.param(
        "alice@exa_mple.test",
        "The part after the @-sign is not a valid domain name "
        "(Codepoint U+005F not allowed at position 4 in 'exa_mple.test').",
        id="idna_underscore",
    ),
    pytest.param(
        "alice@-example.test",
        "The part after the @-sign is not a valid domain name "
        "(Label must not start or end with a hyphen).",
        id="idna_hyphen_at_label_start",
    ),
    pytest.param(
        "alice@example..test",
        "The part after the @-sign is not a valid domain name (Empty Label).",
        id="idna_empty_label",
    ),
    pytest.param(
        "alice@" + "a" * 64 + ".test",
        "The part after the @-sign is not a valid domain name (Label too long).",
        id="idna_label_too_long",
    ),
    pytest.param(
        f"alice@{LONG_LABELS}.{'d' * 62}",
        "The part after the @-sign is not a valid domain name (Domain too long).",
        id="idna_domain_too_long",
    ),
    pytest.param(
        # A full-width full stop at the end maps to "." only inside IDNA, after the check for
        # a final period, and IDNA's own length check leaves room for a root dot.
        f"alice@{LONG_LABELS}.{'d' * 61}\uff0e",
        "The part after the @-sign cannot start or end with a period.",
        id="final_full_width_stop",
    ),
    pytest.param(
        "alice@localhost", "The part after the @-sign must contain a period.", id="no_period"
    ),
    pytest.param(
        "alice@example.test\u3002",  # an ideographic full stop, the same way
        "The part after the @-sign cannot start or end with a period.",
        id="final_ideographic_stop",
    ),
    pytest.param(
        "alice@example.123",
        "The last part of the domain cannot be all digits.",
        id="all_digit_top_level_domain",
    ),
    pytest.param(
        "a" * 64 + f"@{LONG_LABELS}.test",  # each part within its limit, 261 octets in all
        "The address is longer than 254 octets.",
        id="address_too_long",
    ),
]


@pytest.mark.parametrize(("address", "detail"), SYNTAX_ERROR_DETAILS)
def test_syntax_error_detail_is_its_exact_sentence(address: str, detail: str) -> None:
    options = mail_checker.Options(level=mail_checker.Level.SYNTAX)
    verdicts = check_in_process([address], options)
    assert [(v.email, v.status, v.reason, v.detail) for v in verdicts] == [
        (address, "invalid", "syntax", detail)
    ]


# endregion

# region no network below --level dns

ADDRESS_LIKE = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(max_size=20),
    st.one_of(st.text(max_size=30), st.from_regex(r"[a-z0-9.-]{1,20}\.[a-z]{2,6}", fullmatch=True)),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(st.one_of(st.text(), ADDRESS_LIKE), max_size=8))
def test_syntax_level_never_crashes_nor_touches_the_network(
    texts: list[str],
    dns_responder: DnsResponder,
    library_options: LibraryOptions,
) -> None:
    verdicts = check_in_process(texts, library_options(level=mail_checker.Level.SYNTAX))
    assert [verdict.email for verdict in verdicts] == list(dict.fromkeys(texts))
    assert {(verdict.status, verdict.reason) for verdict in verdicts} <= {
        ("valid", "syntax_ok"),
        ("invalid", "syntax"),
    }
    assert dns_responder.queries == []


# endregion

# region flags


def flags_at_syntax_level(run_cli: RunCli, *addresses: str) -> dict[str, set[str]]:
    run = run_cli("--level", "syntax", "--format", "json", *addresses)
    return {verdict["email"]: set(verdict["flags"]) for verdict in run.verdicts}


def test_role_mailboxes_are_flagged_role(run_cli: RunCli) -> None:
    flags = flags_at_syntax_level(run_cli, "info@example.test", "Postmaster@example.test")
    assert flags == {"info@example.test": {"role"}, "Postmaster@example.test": {"role"}}


def test_free_provider_address_is_flagged_free_provider(run_cli: RunCli) -> None:
    flags = flags_at_syntax_level(run_cli, "alice@gmail.com", "alice@GMAIL.com")
    assert flags == {"alice@gmail.com": {"free_provider"}, "alice@GMAIL.com": {"free_provider"}}


def test_non_ascii_local_part_is_flagged_smtputf8(run_cli: RunCli) -> None:
    flags = flags_at_syntax_level(run_cli, "jürgen@example.test", "user@bücher.example")
    assert flags == {"jürgen@example.test": {"smtputf8"}, "user@bücher.example": set()}


def test_flags_combine(run_cli: RunCli) -> None:
    flags = flags_at_syntax_level(run_cli, "info@gmail.com")
    assert flags == {"info@gmail.com": {"role", "free_provider"}}


def test_ordinary_address_has_no_flags(run_cli: RunCli) -> None:
    assert flags_at_syntax_level(run_cli, "alice@example.test") == {"alice@example.test": set()}


# endregion
