"""tests/demo_network.py, the README's mail world: its ports, its errors and its verdicts."""

from __future__ import annotations

import re
import shlex
import signal
import socket
from collections.abc import Iterator

import pytest
from conftest import REPO_ROOT, RunCli, ScriptRun, checker_environment, run_script, start_script

DEMO = REPO_ROOT / "tests" / "demo_network.py"


def run_demo(*arguments: str) -> ScriptRun:
    """A demo that is expected to stop by itself."""
    return run_script([DEMO, *arguments], cwd=REPO_ROOT, env=checker_environment())


@pytest.fixture
def demo_options() -> Iterator[list[str]]:
    """Start the demo on ports it chooses; the checker options of the command it suggests."""
    process = start_script(
        [DEMO, "--dns-port", "0", "--smtp-port", "0"], cwd=REPO_ROOT, env=checker_environment()
    )
    with process:
        try:
            assert process.stdout
            process.stdout.readline()  # where it listens
            suggestion = process.stdout.readline().decode()
            assert suggestion.startswith("Try: python mail_checker.py "), suggestion
            yield shlex.split(suggestion)[3:-1]  # between the script and the address
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()


def test_demo_on_ports_it_chose_gives_the_verdicts_the_readme_shows(
    demo_options: list[str], run_cli: RunCli
) -> None:
    run = run_cli(
        *demo_options,
        *("--format", "json", "-v"),
        *("alice@shop.test", "nobody@shop.test", "full@shop.test", "anyone@catchall.test"),
        *("carol@greylist.test", "dan@strict.test", "x@nullmx.test", "y@nowhere.test"),
    )
    assert run.outcomes == {
        "alice@shop.test": ("valid", "accepted"),
        "nobody@shop.test": ("invalid", "rejected"),
        "full@shop.test": ("risky", "mailbox_full"),
        "anyone@catchall.test": ("risky", "catch_all"),
        "carol@greylist.test": ("unknown", "temp_failure"),
        "dan@strict.test": ("unknown", "blocked"),
        "x@nullmx.test": ("invalid", "null_mx"),
        "y@nowhere.test": ("invalid", "no_domain"),
    }
    # Every MX host is 127.0.0.1, the one loopback address macOS has without aliases.
    assert set(re.findall(r"^smtp: [^\[]+\[([^\]]+)\]", run.stderr, re.MULTILINE)) == {"127.0.0.1"}


def test_taken_dns_port_is_one_line_naming_the_option() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        run = run_demo("--dns-port", str(port), "--smtp-port", "0")
    assert (run.exit_status, run.stdout) == (2, "")
    assert run.stderr == (
        f"demo_network.py: port {port} on 127.0.0.1 is taken (Address already in use): "
        "choose another with --dns-port N, or --dns-port 0 for any free one.\n"
    )


def test_taken_smtp_port_is_one_line_naming_the_option() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = run_demo("--dns-port", "0", "--smtp-port", str(port))
    assert (run.exit_status, run.stdout) == (2, "")
    assert run.stderr == (
        f"demo_network.py: port {port} on 127.0.0.1 is taken (Address already in use): "
        "choose another with --smtp-port N, or --smtp-port 0 for any free one.\n"
    )


def test_readme_demo_commands_name_the_demo_defaults() -> None:
    # The README's DEMO line must match what the demo listens on when started as it says.
    readme = (REPO_ROOT / "README.md").read_text()
    assert 'DEMO="--dns-server 127.0.0.1:10053 --smtp-port 10025 --allow-private"' in readme
    help_text = run_demo("--help").stdout
    assert "default: 10053" in help_text and "default: 10025" in help_text
    assert "python tests/demo_network.py\n" in readme


def test_a_port_out_of_range_is_a_usage_line_not_a_traceback() -> None:
    run = run_demo("--dns-port", "99999")
    assert run.exit_status == 2
    assert run.stderr.splitlines()[-1] == (
        "demo_network.py: error: argument --dns-port: 99999 is not a port number (0 to 65535)"
    )
