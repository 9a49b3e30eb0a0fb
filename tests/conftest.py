"""Fixtures shared by the mail_checker.py tests: loopback peers, and the checker to run at them;
and the helpers for any script run as a process: start_script, run_script, wait_for_port."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from peers import DnsResponder, PeerNetwork, SmtpPeer, SmtpScript, free_port

if TYPE_CHECKING:
    # Imported where used, so that a broken mail_checker.py fails only the tests that use it.
    import mail_checker

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # mail_checker.py is a top-level script, not a package

HELO_NAME = "checker.example.net"
CHECK_TIMEOUT = 2.0  # far above any loopback answer: it runs out only where a test wants it
# --timeout of the tests that wait for it to run out: loopback answers take milliseconds.
EXPIRING_TIMEOUT = 0.3
# Loopback addresses the SMTP peers of a test listen on, all on the test's one port.
MX_ADDRESSES = tuple(f"127.0.2.{index}" for index in range(1, 13))
# Settings the checker also takes from the environment or .env: none may leak into a test.
CHECKER_SETTINGS = ("MAIL_FROM", "HELO_HOST", "SMTP_PROXY", "ALLOW_PRIVATE")


@dataclass(frozen=True)
class ScriptRun:
    """What a script run in a subprocess did: its exit status and its output, decoded."""

    exit_status: int
    stdout: str
    stderr: str


class CheckerRun(ScriptRun):
    """A run of mail_checker.py; with --format json, its verdicts."""

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        """The JSON Lines on stdout, one object per line."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def by_email(self) -> dict[str, dict[str, Any]]:
        return {verdict["email"]: verdict for verdict in self.verdicts}

    def fields(self, *names: str) -> dict[str, tuple[Any, ...]]:
        """The named fields of each address's verdict, in that order."""
        return {
            verdict["email"]: tuple(verdict[name] for name in names) for verdict in self.verdicts
        }

    @property
    def outcomes(self) -> dict[str, tuple[str, str]]:
        """(status, reason) of each address."""
        return self.fields("status", "reason")


def start_script(
    arguments: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin: int = subprocess.PIPE,
    open_file_limit: tuple[int, int] | None = None,  # (soft, hard) RLIMIT_NOFILE
) -> subprocess.Popen[bytes]:
    """Start `python ARGUMENTS` with its stdout and stderr piped back.

    The child starts with SIGINT at its default disposition, as from a terminal: a test run
    that ignores SIGINT (as `pytest &` in a script does) would otherwise pass the ignoring on
    through exec, and a child sent Ctrl-C would never stop.
    """

    def prepare_child() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if open_file_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, open_file_limit)

    return subprocess.Popen(
        [sys.executable, *map(str, arguments)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        preexec_fn=prepare_child,
    )


def run_script(
    arguments: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin: str | bytes = b"",
    deadline: float = 60,
    open_file_limit: tuple[int, int] | None = None,
) -> ScriptRun:
    """Run `python ARGUMENTS` to its end (started as start_script() does) and collect what it
    wrote; one that outlives `deadline` seconds is killed and fails the test."""
    process = start_script(arguments, cwd=cwd, env=env, open_file_limit=open_file_limit)
    with process:
        try:
            stdout, stderr = process.communicate(
                stdin.encode() if isinstance(stdin, str) else stdin, timeout=deadline
            )
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    return ScriptRun(
        process.returncode, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")
    )


def wait_until(condition: Callable[[], bool], deadline: float = 30) -> None:
    """Poll for a state of the world, failing the test if it never comes."""
    give_up = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < give_up, "the awaited state never came"
        time.sleep(0.02)


def wait_for_port(host: str, port: int) -> None:
    """Wait until something accepts TCP connections at host:port (a server started apart)."""

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex((host, port)) == 0

    wait_until(listening)


def rcpt_addresses(peer: SmtpPeer) -> list[str]:
    """The addresses of every RCPT TO the peer received, in order."""
    return [
        line.partition("<")[2].rpartition(">")[0]
        for line in peer.all_commands()
        if line.upper().startswith("RCPT TO:")
    ]


def checker_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the checker's own settings, plus `extra`."""
    environment = {k: v for k, v in os.environ.items() if k not in CHECKER_SETTINGS}
    environment.update(extra or {})
    return environment


RunCli = Callable[..., CheckerRun]
StartMx = Callable[..., SmtpPeer]
LibraryOptions = Callable[..., "mail_checker.Options"]


@pytest.fixture(scope="session")
def peer_network() -> Iterator[PeerNetwork]:
    with PeerNetwork() as network:
        yield network


@pytest.fixture
def dns_responder(peer_network: PeerNetwork) -> Iterator[DnsResponder]:
    with DnsResponder(network=peer_network) as responder:
        yield responder


@pytest.fixture
def mx_port() -> int:
    return free_port(MX_ADDRESSES)


@pytest.fixture
def start_mx(
    peer_network: PeerNetwork, dns_responder: DnsResponder, mx_port: int
) -> Iterator[StartMx]:
    """Start an SMTP peer as a domain's MX host named `mx_name` (default mx.DOMAIN), with its
    MX and A records; with domain None only the A record, for tests that write their own MX.

    After the test, every peer is checked for what no check may ever do: send DATA, or put a
    CR, LF or NUL inside a command line.
    """
    started: list[SmtpPeer] = []

    def start(
        domain: str | None, address: str, mx_name: str | None = None, **script: Any
    ) -> SmtpPeer:
        mx_name = mx_name or f"mx.{domain}"
        if domain is not None:
            dns_responder.add_mx(domain, [(10, mx_name)])
        dns_responder.add_a(mx_name, address)
        peer = SmtpPeer(address, mx_port, SmtpScript(**script), network=peer_network)
        started.append(peer.start())
        return peer

    yield start
    for peer in started:
        peer.stop()
    for peer in started:
        assert peer.data_attempts == 0, f"DATA was sent to {peer.address}"
        smuggled = [line for line in peer.all_commands() if set(line) & {"\r", "\n", "\0"}]
        assert not smuggled, f"{peer.address} received lines with CR, LF or NUL: {smuggled}"


@pytest.fixture
def checker_script(tmp_path: Path) -> Path:
    """A copy of mail_checker.py in the test's own directory, so that only a .env the test
    writes there can be found, never one beside the project's copy."""
    return Path(shutil.copy(REPO_ROOT / "mail_checker.py", tmp_path / "mail_checker.py"))


@pytest.fixture
def run_cli(checker_script: Path, tmp_path: Path) -> RunCli:
    """Run the command line as a user would, in the test's directory, and collect its output."""

    def run(
        *arguments: str,
        stdin: str | bytes = b"",
        env: dict[str, str] | None = None,
        deadline: float = 60,
        open_file_limit: tuple[int, int] | None = None,
    ) -> CheckerRun:
        done = run_script(
            [checker_script, *arguments],
            cwd=tmp_path,
            env=checker_environment(env),
            stdin=stdin,
            deadline=deadline,
            open_file_limit=open_file_limit,
        )
        return CheckerRun(done.exit_status, done.stdout, done.stderr)

    return run


def checker_args(
    *dns_servers: str,
    smtp_port: int,
    helo: str | None = HELO_NAME,  # None: the checker finds its own
    timeout: float = CHECK_TIMEOUT,
    allow_private: bool = True,
) -> list[str]:
    """Options that point the checker at loopback peers: the DNS servers (HOST:PORT) to ask
    and the port every SMTP peer of the test listens on."""
    arguments = [option for server in dns_servers for option in ("--dns-server", server)]
    arguments += ["--smtp-port", str(smtp_port), "--timeout", f"{timeout:g}"]
    if helo is not None:
        arguments += ["--helo", helo]
    if allow_private:
        arguments.append("--allow-private")  # the peers listen on loopback
    return arguments


@pytest.fixture
def network_args(dns_responder: DnsResponder, mx_port: int) -> list[str]:
    """Options that point the checker at the test's peers."""
    return checker_args(dns_responder.server_arg, smtp_port=mx_port)


@pytest.fixture
def args_without_helo(dns_responder: DnsResponder, mx_port: int) -> list[str]:
    """network_args without --helo, leaving the checker to find its HELO name."""
    return checker_args(dns_responder.server_arg, smtp_port=mx_port, helo=None)


@pytest.fixture
def check(run_cli: RunCli, network_args: list[str]) -> RunCli:
    """Run the command line at the test's peers with --format json."""

    def run(*arguments: str, **keywords: Any) -> CheckerRun:
        return run_cli(*network_args, "--format", "json", *arguments, **keywords)

    return run


@pytest.fixture
def library_options(dns_responder: DnsResponder, mx_port: int) -> LibraryOptions:
    """mail_checker.Options aimed at the test's peers; keywords override."""

    import mail_checker

    def options(**overrides: Any) -> mail_checker.Options:
        settings: dict[str, Any] = {
            "dns_servers": [(dns_responder.address, dns_responder.port)],
            "smtp_port": mx_port,
            "helo": HELO_NAME,
            "timeout": CHECK_TIMEOUT,
            "allow_private": True,  # the peers listen on loopback
        }
        settings.update(overrides)
        return mail_checker.Options(**settings)

    return options


def check_in_process(
    addresses: list[str], options: mail_checker.Options
) -> list[mail_checker.Verdict]:
    """Every verdict check_addresses() yields, in the order it yields them."""
    import mail_checker

    async def collect() -> list[mail_checker.Verdict]:
        return [verdict async for verdict in mail_checker.check_addresses(addresses, options)]

    return asyncio.run(collect())
