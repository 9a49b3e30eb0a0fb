"""mail_checker.py through a SOCKS5 proxy (RFC 1928/1929) and with a second pass for greylisting.

The proxy is pproxy, a maintained SOCKS5 server, run as a subprocess on loopback; the case of a
proxy that refuses the destination uses a scripted SOCKS5 peer, because pproxy answers success
before it connects.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import RunCli, StartMx, start_script, wait_for_port
from peers import DnsResponder, PeerNetwork, free_port

MX1 = "127.0.2.1"
PROXY_ADDRESS = "127.0.0.9"
PROXY_PASSWORD = "s3cret-pw"
ALICE = "alice@example.test"


@pytest.fixture
def pproxy_server(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Start pproxy on loopback, with or without a username and password; returns its port."""
    started: list[subprocess.Popen[bytes]] = []

    def start(credentials: str | None = None) -> int:
        port = free_port([PROXY_ADDRESS])
        listen = f"socks5://{PROXY_ADDRESS}:{port}" + (f"#{credentials}" if credentials else "")
        # As a module of this Python, so that it is found without the virtualenv on PATH.
        started.append(start_script(["-m", "pproxy", "-l", listen], cwd=tmp_path, env=os.environ))
        wait_for_port(PROXY_ADDRESS, port)
        return port

    yield start
    for process in started:
        process.terminate()
        process.communicate(timeout=10)


def test_checks_through_a_socks5_proxy_without_authentication(
    start_mx: StartMx, check: RunCli, pproxy_server: Callable[..., int]
) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    url = f"socks5://{PROXY_ADDRESS}:{pproxy_server()}"
    run = check("--proxy", url, ALICE, "nobody@example.test")
    assert run.outcomes == {
        ALICE: ("valid", "accepted"),
        "nobody@example.test": ("invalid", "rejected"),
    }
    assert peer.connections == 1


def test_checks_through_a_socks5_proxy_with_username_and_password(
    start_mx: StartMx, check: RunCli, pproxy_server: Callable[..., int]
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    port = pproxy_server(f"user:{PROXY_PASSWORD}")
    run = check("--proxy", f"socks5://user:{PROXY_PASSWORD}@{PROXY_ADDRESS}:{port}", "-v", ALICE)
    assert run.outcomes == {ALICE: ("valid", "accepted")}
    assert PROXY_PASSWORD not in run.stdout + run.stderr


def test_proxy_url_from_the_environment_is_used(
    start_mx: StartMx, check: RunCli, pproxy_server: Callable[..., int], tmp_path: Path
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    port = pproxy_server(f"user:{PROXY_PASSWORD}")
    (tmp_path / ".env").write_text(f"SMTP_PROXY=socks5://user:wrong@{PROXY_ADDRESS}:{port}\n")
    run = check(ALICE)
    assert run.outcomes == {ALICE: ("unknown", "unreachable")}
    assert "proxy" in run.by_email[ALICE]["detail"]


def test_wrong_proxy_password_is_unreachable_with_the_reason_and_no_password(
    start_mx: StartMx, check: RunCli, pproxy_server: Callable[..., int]
) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    port = pproxy_server(f"user:{PROXY_PASSWORD}")
    wrong = "not-the-password"
    run = check("--proxy", f"socks5://user:{wrong}@{PROXY_ADDRESS}:{port}", ALICE)
    assert run.outcomes == {ALICE: ("unknown", "unreachable")}
    assert "authentication" in run.by_email[ALICE]["detail"]
    assert wrong not in run.stdout + run.stderr
    assert peer.connections == 0
    assert run.exit_status == 1


def test_proxy_that_is_down_makes_addresses_unreachable(start_mx: StartMx, check: RunCli) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    run = check("--proxy", f"socks5://{PROXY_ADDRESS}:{free_port([PROXY_ADDRESS])}", ALICE)
    assert run.outcomes == {ALICE: ("unknown", "unreachable")}
    assert "cannot reach the proxy" in run.by_email[ALICE]["detail"]


async def refuse_every_destination(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    """A SOCKS5 server whose ruleset allows nothing: RFC 1928 reply 2."""
    _, method_count = await reader.readexactly(2)
    await reader.readexactly(method_count)
    writer.write(b"\x05\x00")
    _, _, _, address_type = await reader.readexactly(4)
    await reader.readexactly({1: 4, 4: 16}[address_type] + 2)
    writer.write(b"\x05\x02\x00\x01" + bytes(6))
    await writer.drain()
    writer.close()


def test_proxy_refusing_the_destination_says_so_in_the_detail(
    start_mx: StartMx, check: RunCli, peer_network: PeerNetwork
) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    port = free_port([PROXY_ADDRESS])
    proxy = peer_network.call(asyncio.start_server(refuse_every_destination, PROXY_ADDRESS, port))
    try:
        run = check("--proxy", f"socks5://{PROXY_ADDRESS}:{port}", ALICE)
    finally:
        proxy.close()
    assert run.outcomes == {ALICE: ("unknown", "unreachable")}
    assert "connection not allowed by ruleset" in run.by_email[ALICE]["detail"]
    assert peer.connections == 0


@pytest.mark.parametrize(
    "url",
    ["http://proxy.example:3128", "socks5://user:hunter2@proxy.example", "socks5://:1080"],
)
def test_malformed_proxy_url_is_a_usage_error_before_any_work(
    check: RunCli, dns_responder: DnsResponder, url: str
) -> None:
    run = check("--proxy", url, ALICE)
    assert run.exit_status == 2
    assert run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1
    assert "hunter2" not in run.stderr
    assert dns_responder.queries == []


def test_retry_temp_checks_greylisted_addresses_again_and_reports_them_once(
    start_mx: StartMx, check: RunCli, tmp_path: Path
) -> None:
    # The second pass starts --retry-temp after the first ended, so after the greylisting ended.
    peer = start_mx("example.test", MX1, mailboxes={"alice", "bob"}, greylist_seconds=0.2)
    arguments = ["--retry-temp", "0.3", "-o", "results.jsonl", ALICE, "bob@example.test"]
    run = check(*arguments)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert sorted(row["email"] for row in rows) == [ALICE, "bob@example.test"]
    assert {row["reason"] for row in rows} == {"accepted"}
    # The catch-all probe is the same address in both passes, so it too got through.
    assert all("refuses made-up addresses" in row["detail"] for row in rows)
    assert run.exit_status == 0
    assert [line for line in peer.all_commands() if line.startswith(f"RCPT TO:<{ALICE}")] == [
        f"RCPT TO:<{ALICE}>"
    ] * 2  # deferred once, accepted on the second pass

    again = check(*arguments)
    assert (tmp_path / "results.jsonl").read_text().splitlines() == lines
    assert again.exit_status == 0


def test_without_retry_temp_greylisting_stays_temp_failure(
    start_mx: StartMx, check: RunCli
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"}, greylist_seconds=0)
    run = check(ALICE)
    assert run.outcomes == {ALICE: ("unknown", "temp_failure")}
    assert run.by_email[ALICE]["smtp_code"] == 450
