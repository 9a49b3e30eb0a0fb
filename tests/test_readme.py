"""The README's commands work as written and print what it shows."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, RunCli, checker_environment, start_script
from peers import DnsResponder

README = (REPO_ROOT / "README.md").read_text()
DEMO = REPO_ROOT / "tests" / "demo_network.py"


def section(title: str) -> str:
    """The README's text from a heading to the next heading of the same level."""
    level = title.split()[0]
    start = README.index(f"\n{title}\n")
    end = README.find(f"\n{level} ", start + 1)
    return README[start : end if end != -1 else None]


def code_blocks(text: str) -> list[list[str]]:
    blocks: list[list[str]] = []
    lines: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("```"):
            if lines is not None:
                blocks.append(lines)
            lines = None if lines is not None else []
        elif lines is not None:
            lines.append(line)
    return blocks


def shell_session(text: str) -> list[tuple[str, list[str]]]:
    """The `$ ` commands of the text's code blocks, each with the output shown under it; a
    here-document's lines belong to its command."""
    session: list[tuple[str, list[str]]] = []
    for block in code_blocks(text):
        lines = iter(block)
        in_session = False  # output belongs to a command of its own block
        for line in lines:
            if line.startswith("$ "):
                command = line[2:]
                if heredoc := re.search(r"<<'(\w+)'$", command):
                    body = []
                    while (next_line := next(lines)) != heredoc.group(1):
                        body.append(next_line)
                    command = "\n".join([command, *body, heredoc.group(1)])
                session.append((command, []))
                in_session = True
            elif in_session:
                session[-1][1].append(line)
    return session


def normalized(lines: list[str]) -> Counter[str]:
    """Output lines without what changes from run to run: timings, the demo's ports and the
    made-up address of the catch-all probe. A multiset: -v interleaves two streams."""
    variable = [
        (r"\b\d+\.\d\d s\b", "T s"),
        (r"\b127\.0\.0\.1:\d+", "127.0.0.1:PORT"),
        (r"\bx[0-9a-f]{20}@", "PROBE@"),
    ]
    normal: Counter[str] = Counter()
    for line in lines:
        for pattern, replacement in variable:
            line = re.sub(pattern, replacement, line)
        normal[line] += 1
    return normal


def test_start_shows_what_the_first_command_prints_for_example_com(
    dns_responder: DnsResponder, run_cli: RunCli
) -> None:
    dns_responder.null_mx("example.com")  # as example.com publishes it: MX 0 .
    start = section("## Start")
    session = [block for block in code_blocks(start) if "python mail_checker.py" in "".join(block)]
    assert session[0][-1] == "python mail_checker.py someone@example.com"
    shown = next(block for block in code_blocks(start) if block and block[0].startswith("EMAIL"))
    run = run_cli("--dns-server", dns_responder.server_arg, "someone@example.com")
    assert run.exit_status == 1
    assert normalized(run.stdout.splitlines()) == normalized(shown)


def test_start_makes_env_from_the_example_and_runs_tg_bot() -> None:
    commands = [line for block in code_blocks(section("## Start")) for line in block]
    assert commands.index("cp .env.example .env") < commands.index("python tg_bot.py")
    assert (REPO_ROOT / ".env.example").is_file() and (REPO_ROOT / "message.txt").is_file()


@pytest.fixture
def demo_arguments() -> Iterator[str]:
    """The demo network on free ports; the value of $DEMO that reaches it."""
    process = start_script(
        [DEMO, "--dns-port", "0", "--smtp-port", "0"], cwd=REPO_ROOT, env=checker_environment()
    )
    with process:
        try:
            assert process.stdout
            process.stdout.readline()
            suggestion = shlex.split(process.stdout.readline().decode())
            yield shlex.join(suggestion[3:-1])  # between the script and the address
        finally:
            process.kill()


def test_mail_checker_examples_print_what_the_readme_shows(
    demo_arguments: str, tmp_path: Path
) -> None:
    # Each command of the section, in order, in one shell in a fresh directory, as a reader
    # following along runs them; every file a command uses is made by an earlier one.
    session = shell_session(section("### mail_checker.py"))
    assert len(session) > 10
    shutil.copy(REPO_ROOT / "mail_checker.py", tmp_path)
    script = [f"DEMO={shlex.quote(demo_arguments)}"]
    for index, (command, _) in enumerate(session):
        script.append(f"{{ {command}\n}} 2>&1; status=$?; echo '@@@ {index}'; (exit $status)")
    shell = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=checker_environment({"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}),
        timeout=120,
    )
    *outputs, after_the_last = re.split(r"^@@@ \d+\n", shell.stdout, flags=re.MULTILINE)
    assert (len(outputs), after_the_last) == (len(session), ""), shell.stderr
    for (command, shown), output in zip(session, outputs, strict=True):
        assert normalized(output.splitlines()) == normalized(shown), command
