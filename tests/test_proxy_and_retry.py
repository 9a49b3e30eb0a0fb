"""mail_checker.py through a SOCKS5 proxy (RFC 1928/1929) and with a second pass for greylisting.

The proxy is pproxy, a maintained SOCKS5 server, run as a subprocess on loopback; the case of a
proxy that refuses the destination uses a scripted SOCKS5 peer, because pproxy answers success
before it connects.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import DnsResponder, PeerNetwork, SmtpPeer, SmtpScript, free_port

SCRIPT = Path(__file__).resolve().parent.parent / "mail_checker.py"
MX_ADDRESS = "127.0.0.2"
PROXY_ADDRESS = "127.0.0.9"
PROXY_PASSWORD = "s3cret-pw"


@pytest.fixture
def network() -> Iterator[PeerNetwork]:
    with PeerNetwork() as network:
        yield network


@pytest.fixture
def dns_server(network: PeerNetwork) -> DnsResponder:
    responder = DnsResponder(network=network).start()
    responder.add_mx("example.test", [(10, "mx.example.test")])
    responder.add_a("mx.example.test", MX_ADDRESS)
    return responder


@pytest.fixture
def smtp_port() -> int:
    return free_port([MX_ADDRESS])


def start_mx(network: PeerNetwork, port: int, script: SmtpScript) -> SmtpPeer:
    return SmtpPeer(MX_ADDRESS, port, script, network=network).start()


def wait_for_port(host: str, port: int, deadline: float = 10.0) -> None:
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        with socket.socket() as probe:
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


@pytest.fixture
def pproxy_server() -> Iterator[callable]:
    """Start pproxy on loopback, with or without a username and password."""
    started: list[subprocess.Popen[bytes]] = []

    def start(credentials: str | None = None) -> int:
        port = free_port([PROXY_ADDRESS])
        listen = f"socks5://{PROXY_ADDRESS}:{port}" + (f"#{credentials}" if credentials else "")
        executable = shutil.which("pproxy") or "pproxy"
        process = subprocess.Popen(
            [executable, "-l", listen], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        started.append(process)
        wait_for_port(PROXY_ADDRESS, port)
        return port

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def run_checker(
    dns_server: DnsResponder, smtp_port: int, *arguments: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        str(SCRIPT),
        "--dns-server",
        dns_server.server_arg,
        "--smtp-port",
        str(smtp_port),
        "--helo",
        "checker.example.net",
        "--timeout",
        "2",
        "--format",
        "json",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=60)


def verdicts(output: str) -> dict[str, dict[str, object]]:
    rows = [json.loads(line) for line in output.splitlines() if line.strip()]
    return {row["email"]: row for row in rows}


def test_checks_through_a_socks5_proxy_without_authentication(
    network, dns_server, smtp_port, pproxy_server, tmp_path
):
    peer = start_mx(network, smtp_port, SmtpScript(mailboxes={"alice"}))
    proxy_port = pproxy_server()
    result = run_checker(
        dns_server,
        smtp_port,
        "--proxy",
        f"socks5://{PROXY_ADDRESS}:{proxy_port}",
        "alice@example.test",
        "nobody@example.test",
        cwd=tmp_path,
    )
    found = verdicts(result.stdout)
    assert found["alice@example.test"]["reason"] == "accepted"
    assert found["nobody@example.test"]["reason"] == "rejected"
    assert peer.connections == 1
    assert peer.data_attempts == 0


def test_checks_through_a_socks5_proxy_with_username_and_password(
    network, dns_server, smtp_port, pproxy_server, tmp_path
):
    peer = start_mx(network, smtp_port, SmtpScript(mailboxes={"alice"}))
    proxy_port = pproxy_server(f"user:{PROXY_PASSWORD}")
    url = f"socks5://user:{PROXY_PASSWORD}@{PROXY_ADDRESS}:{proxy_port}"
    result = run_checker(
        dns_server, smtp_port, "--proxy", url, "-v", "alice@example.test", cwd=tmp_path
    )
    assert verdicts(result.stdout)["alice@example.test"]["reason"] == "accepted"
    assert PROXY_PASSWORD not in result.stdout + result.stderr
    assert peer.data_attempts == 0


def test_proxy_url_from_the_environment_is_used(
    network, dns_server, smtp_port, pproxy_server, tmp_path
):
    start_mx(network, smtp_port, SmtpScript(mailboxes={"alice"}))
    proxy_port = pproxy_server(f"user:{PROXY_PASSWORD}")
    (tmp_path / ".env").write_text(
        f"SMTP_PROXY=socks5://user:wrong@{PROXY_ADDRESS}:{proxy_port}\n", encoding="utf-8"
    )
    result = run_checker(dns_server, smtp_port, "alice@example.test", cwd=tmp_path)
    row = verdicts(result.stdout)["alice@example.test"]
    assert (row["status"], row["reason"]) == ("unknown", "unreachable")
    assert "proxy" in row["detail"]


def test_wrong_proxy_password_is_unreachable_with_the_reason_and_no_password(
    network, dns_server, smtp_port, pproxy_server, tmp_path
):
    peer = start_mx(network, smtp_port, SmtpScript(mailboxes={"alice"}))
    proxy_port = pproxy_server(f"user:{PROXY_PASSWORD}")
    wrong = "not-the-password"
    url = f"socks5://user:{wrong}@{PROXY_ADDRESS}:{proxy_port}"
    result = run_checker(dns_server, smtp_port, "--proxy", url, "alice@example.test", cwd=tmp_path)
    row = verdicts(result.stdout)["alice@example.test"]
    assert (row["status"], row["reason"]) == ("unknown", "unreachable")
    assert "authentication" in row["detail"]
    assert wrong not in result.stdout + result.stderr
    assert peer.connections == 0
    assert result.returncode == 1


def test_proxy_that_is_down_makes_addresses_unreachable(dns_server, smtp_port, tmp_path):
    closed_port = free_port([PROXY_ADDRESS])
    url = f"socks5://{PROXY_ADDRESS}:{closed_port}"
    result = run_checker(dns_server, smtp_port, "--proxy", url, "alice@example.test", cwd=tmp_path)
    row = verdicts(result.stdout)["alice@example.test"]
    assert (row["status"], row["reason"]) == ("unknown", "unreachable")
    assert "cannot reach the proxy" in row["detail"]


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
    network, dns_server, smtp_port, tmp_path
):
    peer = start_mx(network, smtp_port, SmtpScript(mailboxes={"alice"}))
    proxy_port = free_port([PROXY_ADDRESS])
    server = network.call(asyncio.start_server(refuse_every_destination, PROXY_ADDRESS, proxy_port))
    try:
        url = f"socks5://{PROXY_ADDRESS}:{proxy_port}"
        result = run_checker(
            dns_server, smtp_port, "--proxy", url, "alice@example.test", cwd=tmp_path
        )
    finally:
        server.close()
    row = verdicts(result.stdout)["alice@example.test"]
    assert (row["status"], row["reason"]) == ("unknown", "unreachable")
    assert "connection not allowed by ruleset" in row["detail"]
    assert peer.connections == 0


@pytest.mark.parametrize(
    "url",
    ["http://proxy.example:3128", "socks5://user:hunter2@proxy.example", "socks5://:1080"],
)
def test_malformed_proxy_url_is_a_usage_error_before_any_work(dns_server, smtp_port, tmp_path, url):
    result = run_checker(dns_server, smtp_port, "--proxy", url, "alice@example.test", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hunter2" not in result.stderr
    assert dns_server.queries == []


def test_retry_temp_checks_greylisted_addresses_again_and_reports_them_once(
    network, dns_server, smtp_port, tmp_path
):
    peer = start_mx(
        network, smtp_port, SmtpScript(mailboxes={"alice", "bob"}, greylist_seconds=0.5)
    )
    output = tmp_path / "results.jsonl"
    arguments = ["--retry-temp", "1", "-o", str(output), "alice@example.test", "bob@example.test"]
    result = run_checker(dns_server, smtp_port, *arguments, cwd=tmp_path)
    lines = output.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert sorted(row["email"] for row in rows) == ["alice@example.test", "bob@example.test"]
    assert {row["reason"] for row in rows} == {"accepted"}
    # The catch-all probe is the same address in both passes, so it too got through.
    assert all("refuses made-up addresses" in row["detail"] for row in rows)
    assert result.returncode == 0
    rcpts = [line for line in peer.all_commands() if line.startswith("RCPT TO:<alice")]
    assert len(rcpts) == 2  # deferred once, accepted on the second pass
    assert peer.data_attempts == 0

    again = run_checker(dns_server, smtp_port, *arguments, cwd=tmp_path)
    assert output.read_text(encoding="utf-8").splitlines() == lines
    assert again.returncode == 0


def test_without_retry_temp_greylisting_stays_temp_failure(
    network, dns_server, smtp_port, tmp_path
):
    start_mx(network, smtp_port, SmtpScript(mailboxes={"alice"}, greylist_seconds=0))
    result = run_checker(dns_server, smtp_port, "alice@example.test", cwd=tmp_path)
    row = verdicts(result.stdout)["alice@example.test"]
    assert (row["status"], row["reason"]) == ("unknown", "temp_failure")
    assert row["smtp_code"] == 450
