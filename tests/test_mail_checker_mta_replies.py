"""The stock RCPT replies of the common mail servers, each answered by a loopback peer.

tests/data/mta-unknown-user.json pins what Postfix, Exim, Sendmail, qmail, OpenSMTPD, Exchange,
Courier, hMailServer, Haraka, Stalwart, maddy, Apache James and Dovecot say when asked about a
mailbox they do not have (and the limits some of them hit first), each with the source it was
taken from: a recording of the real server (tests/real_mta/record.py) or the line of its code
that writes the text. The peer answers every RCPT with that reply, so the checker's catch-all
probe gets it too, as it would from the real server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCli, StartMx

DATA = Path(__file__).resolve().parent / "data"
CASES: list[dict[str, Any]] = json.loads((DATA / "mta-unknown-user.json").read_text())
MX1 = "127.0.2.1"


def test_each_case_spells_its_reply_consistently() -> None:
    for case in CASES:
        code, _, text = case["reply"].partition(" ")
        assert (int(code), text) == (case["code"], case["text"]), case["id"]
        enhanced = text.split(" ", 1)[0] if case["enhanced"] else None
        assert enhanced == case["enhanced"], case["id"]


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_stock_rcpt_reply_gets_its_verdict(
    case: dict[str, Any], start_mx: StartMx, check: RunCli
) -> None:
    address = case["address"]
    start_mx(address.partition("@")[2], MX1, unknown_user_reply=case["reply"])
    verdict = check(address).by_email[address]
    assert (verdict["status"], verdict["reason"]) == (
        case["expect_status"],
        case["expect_reason"],
    ), f"{case['mta']}: {case['reply']!r} ({case['note']})"
    assert verdict["smtp_message"] is not None
