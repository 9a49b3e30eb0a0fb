"""The command line's input, output and exit status, as the contract describes them."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import resource
import signal
import socket
from pathlib import Path

import pytest
from conftest import (
    MX_ADDRESSES,
    REPO_ROOT,
    RunCli,
    ScriptRun,
    StartMx,
    checker_environment,
    rcpt_addresses,
    run_script,
    start_script,
    wait_until,
)
from peers import DnsResponder, SmtpPeer

MX1, MX2 = "127.0.2.1", "127.0.2.2"
# Address column headers as CRM and spreadsheet exports write them.
CRM_EMAIL_HEADERS = [
    "E-mail", "Email Address", "e_mail", "Courriel", "Correo electrónico", "Электронная почта",
    "ПОЧТА",
]  # fmt: skip
JSON_FIELDS = ["email", "status", "reason", "detail", "mx", "smtp_code", "smtp_message", "flags"]


def assert_one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


# region input


@pytest.mark.parametrize(
    ("arguments", "stdin"),
    [
        pytest.param(["a@example.test", "b@example.test"], "", id="arguments"),
        pytest.param(["-"], "a@example.test\nb@example.test\n", id="dash_reads_stdin"),
        pytest.param([], "a@example.test\nb@example.test\n", id="piped_stdin_without_arguments"),
    ],
)
def test_addresses_are_taken_from_the_arguments_or_stdin(
    run_cli: RunCli, arguments: list[str], stdin: str
) -> None:
    run = run_cli("--level", "syntax", "--format", "json", *arguments, stdin=stdin)
    assert [verdict["email"] for verdict in run.verdicts] == ["a@example.test", "b@example.test"]


@pytest.mark.parametrize(
    ("name", "content", "addresses"),
    [
        pytest.param(
            "list.txt",
            "# exported from the shop\na@example.test\n\n   \nb@example.test\n# c@example.test\n",
            ["a@example.test", "b@example.test"],
            id="lines_less_blank_and_comment_lines",
        ),
        pytest.param(
            "people.csv",
            "name,Email,city\nAlice,a@example.test,Oslo\nBob,b@example.test,Rome\n",
            ["a@example.test", "b@example.test"],
            id="csv_email_column",
        ),
        pytest.param(
            "export.csv", "email\na@example.test\n", ["a@example.test"], id="one_column_csv"
        ),
        pytest.param(
            "export.csv",
            "# sign-ups, March\nemail;name\na@example.test;A\n",
            ["a@example.test"],
            id="csv_after_comment_lines",
        ),
        pytest.param(
            "export.csv", "E-mail\na@example.test\n", ["a@example.test"], id="lone_e_mail_header"
        ),
        pytest.param(
            "export.csv",
            "Email Address\na@example.test\n",
            ["a@example.test"],
            id="lone_email_address_header",
        ),
        *(
            pytest.param(
                "crm.csv",
                f"Name,{header},City\nAlice,a@example.test,Oslo\n",
                ["a@example.test"],
                id=f"csv_headed_{header}",
            )
            for header in CRM_EMAIL_HEADERS
        ),
    ],
)
def test_address_file_gives_its_addresses(
    run_cli: RunCli, tmp_path: Path, name: str, content: str, addresses: list[str]
) -> None:
    (tmp_path / name).write_text(content)
    run = run_cli("--level", "syntax", "--format", "json", "-f", name)
    assert [verdict["email"] for verdict in run.verdicts] == addresses
    assert set(run.outcomes.values()) == {("valid", "syntax_ok")}


def test_output_file_in_a_missing_directory_is_a_one_line_error(run_cli: RunCli) -> None:
    run = run_cli("--level", "syntax", "-o", "no/such/dir/out.jsonl", "a@example.test")
    assert run.exit_status == 2
    assert_one_line_error(run.stderr)


def test_table_resume_refuses_a_file_written_in_another_format(
    run_cli: RunCli, tmp_path: Path
) -> None:
    run_cli("--level", "syntax", "--format", "json", "-o", "out.txt", "a@example.test")
    run = run_cli("--level", "syntax", "-o", "out.txt", "a@example.test", "b@example.test")
    assert run.exit_status == 2
    assert_one_line_error(run.stderr)
    assert len((tmp_path / "out.txt").read_text().splitlines()) == 1


def test_resume_file_with_a_status_the_checker_never_writes_is_a_one_line_error(
    run_cli: RunCli, tmp_path: Path
) -> None:
    resume = tmp_path / "out.jsonl"
    resume.write_text('{"email": "a@example.test", "status": "maybe"}\n')
    run = run_cli("--level", "syntax", "--format", "json", "-o", "out.jsonl", "a@example.test")
    assert run.exit_status == 2
    assert run.stderr == (
        "mail_checker.py: out.jsonl gives 'a@example.test' the status 'maybe', which is none of "
        "valid, invalid, risky, unknown: fix that line, or use another file.\n"
    )
    assert resume.read_text() == '{"email": "a@example.test", "status": "maybe"}\n'


def test_reader_that_stops_early_gets_no_traceback(checker_script: Path, tmp_path: Path) -> None:
    addresses = [f"user{index}@example.test" for index in range(2000)]
    process = start_script(
        [checker_script, "--level", "syntax", "--format", "json", "-"],
        cwd=tmp_path,
        env=checker_environment(),
    )
    assert process.stdin and process.stdout and process.stderr
    process.stdin.write("\n".join(addresses).encode())
    process.stdin.close()
    process.stdout.readline()
    process.stdout.close()  # like | head -1
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=30) == 1
    assert "Traceback" not in stderr


def test_csv_without_email_column_lists_its_columns_and_names_the_option(
    run_cli: RunCli, tmp_path: Path
) -> None:
    (tmp_path / "people.csv").write_text("name,Work address\nAlice,a@example.test\n")
    run = run_cli("--level", "syntax", "-f", "people.csv")
    assert (run.exit_status, run.stdout) == (2, "")
    assert run.stderr == (
        "mail_checker.py: people.csv has no email column; its columns are: 'name', "
        "'Work address'. Name the one that holds the addresses with --column NAME.\n"
    )


def test_column_option_picks_the_column(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "crm.csv").write_text(
        "Name,Email,Work address\nAlice,a@home.test,a@work.test\nBob,b@home.test,\n"
    )
    run = run_cli(
        "--level", "syntax", "--format", "json", "-f", "crm.csv", "--column", "work address"
    )
    assert [verdict["email"] for verdict in run.verdicts] == ["a@work.test"]


def test_column_option_reads_a_one_column_file_as_csv(run_cli: RunCli) -> None:
    stdin = "Contact\na@example.test\n"
    run = run_cli("--level", "syntax", "--format", "json", "--column", "Contact", stdin=stdin)
    assert [verdict["email"] for verdict in run.verdicts] == ["a@example.test"]


def test_column_option_on_a_file_of_addresses_says_it_has_no_header(
    run_cli: RunCli, tmp_path: Path
) -> None:
    (tmp_path / "list.txt").write_text("alice@example.test\nbob@example.test\n")
    run = run_cli("--level", "syntax", "-f", "list.txt", "--column", "email")
    assert (run.exit_status, run.stdout) == (2, "")
    assert run.stderr == (
        "mail_checker.py: list.txt has no header row: its first line, 'alice@example.test', "
        "holds addresses. Leave out --column for a file of one address per line.\n"
    )


def test_an_address_argument_with_pasted_spaces_is_the_address(run_cli: RunCli) -> None:
    run = run_cli("--level", "syntax", "--format", "json", " bob@example.test\t")
    assert run.outcomes == {"bob@example.test": ("valid", "syntax_ok")}


def test_dns_server_may_be_a_host_name(
    start_mx: StartMx, dns_responder: DnsResponder, run_cli: RunCli, network_args: list[str]
) -> None:
    if socket.getaddrinfo("localhost", 53, type=socket.SOCK_DGRAM)[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here")
    start_mx("example.test", MX1, mailboxes={"alice"})
    arguments = [
        f"localhost:{dns_responder.port}" if arg == dns_responder.server_arg else arg
        for arg in network_args
    ]
    run = run_cli(*arguments, "--format", "json", "alice@example.test")
    assert run.outcomes == {"alice@example.test": ("valid", "accepted")}


def test_column_option_naming_no_column_lists_the_columns(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "crm.csv").write_text("Name;E-mail\nAlice;a@example.test\n")
    run = run_cli("--level", "syntax", "-f", "crm.csv", "--column", "Mail2")
    assert (run.exit_status, run.stdout) == (2, "")
    assert run.stderr == (
        "mail_checker.py: crm.csv has no column 'Mail2'; its columns are: 'Name', 'E-mail'. "
        "Name the one that holds the addresses with --column NAME.\n"
    )


def test_missing_file_is_a_one_line_input_error(run_cli: RunCli) -> None:
    run = run_cli("--level", "syntax", "-f", "no-such-file.txt")
    assert run.exit_status == 2
    assert_one_line_error(run.stderr)
    assert "no-such-file.txt" in run.stderr


def test_file_that_is_not_utf8_is_a_one_line_input_error(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("a@example.test\njürgen@example.test\n".encode("latin-1"))
    run = run_cli("--level", "syntax", "-f", "latin1.txt")
    assert run.exit_status == 2
    assert_one_line_error(run.stderr)


def test_unknown_option_is_a_one_line_usage_error(run_cli: RunCli) -> None:
    run = run_cli("--level", "syntax", "--no-such-option", "a@example.test")
    assert (run.exit_status, run.stdout) == (2, "")
    assert "--no-such-option" in run.stderr
    assert_one_line_error(run.stderr)


def test_bad_option_value_is_a_one_line_usage_error(run_cli: RunCli) -> None:
    run = run_cli("--timeout", "0", "a@example.test")
    assert (run.exit_status, run.stdout) == (2, "")
    assert_one_line_error(run.stderr)


def test_terminal_without_addresses_prompts_on_stderr_and_keeps_stdout_for_results(
    checker_script: Path, tmp_path: Path
) -> None:
    # As `python mail_checker.py > out.txt` at a terminal: stdin is the terminal, stdout is not.
    controller, terminal = pty.openpty()
    try:
        process = start_script(
            [checker_script, "--level", "syntax", "--format", "json"],
            cwd=tmp_path,
            env=checker_environment(),
            stdin=terminal,
        )
    finally:
        os.close(terminal)
    try:
        os.write(controller, b"alice@example.test\n")
        stdout, stderr = process.communicate(timeout=60)
    finally:
        os.close(controller)
    assert stderr.decode() == "Email address to check: "
    assert [json.loads(line)["email"] for line in stdout.decode().splitlines()] == [
        "alice@example.test"
    ]


def test_no_addresses_at_all_is_a_one_line_input_error(run_cli: RunCli) -> None:
    run = run_cli("--level", "syntax", stdin="\n# nothing here\n")
    assert run.exit_status == 2
    assert_one_line_error(run.stderr)


def test_duplicate_address_is_checked_once(start_mx: StartMx, check: RunCli) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    run = check("alice@example.test", "alice@example.test", "-", stdin="alice@example.test\n")
    assert [verdict["email"] for verdict in run.verdicts] == ["alice@example.test"]
    assert rcpt_addresses(peer).count("alice@example.test") == 1


# endregion

# region output formats


def test_json_lines_carry_every_contract_field(start_mx: StartMx, check: RunCli) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    run = check("alice@example.test", "not-an-address")
    assert len(run.stdout.splitlines()) == 2
    for verdict in run.verdicts:
        assert list(verdict) == JSON_FIELDS
        assert isinstance(verdict["detail"], str) and verdict["detail"]
        assert isinstance(verdict["flags"], list)
    syntax = run.by_email["not-an-address"]
    assert (syntax["mx"], syntax["smtp_code"], syntax["smtp_message"]) == (None, None, None)


def test_csv_output_has_a_header_and_the_same_fields(run_cli: RunCli) -> None:
    addresses = ["a@example.test", "info@gmail.com", "broken"]
    as_csv = run_cli("--level", "syntax", "--format", "csv", *addresses)
    as_json = run_cli("--level", "syntax", "--format", "json", *addresses)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert as_csv.stdout.splitlines()[0].split(",") == JSON_FIELDS
    assert [(row["email"], row["status"], row["reason"], row["detail"]) for row in rows] == [
        (verdict["email"], verdict["status"], verdict["reason"], verdict["detail"])
        for verdict in as_json.verdicts
    ]
    assert rows[1]["flags"].split() == as_json.verdicts[1]["flags"]


def test_table_has_aligned_columns_and_a_summary_with_counts(run_cli: RunCli) -> None:
    run = run_cli("--level", "syntax", "a@example.test", "a.much.longer.name@example.test", "bad")
    lines = run.stdout.splitlines()
    header, rows = lines[0], lines[1:4]
    assert header.split()[:3] == ["EMAIL", "STATUS", "REASON"]
    status_column = header.index("STATUS")
    reason_column = header.index("REASON")
    for row, status in zip(rows, ["valid", "valid", "invalid"], strict=True):
        assert row[status_column:].split()[0] == status
        assert row[reason_column - 1] == " "
    summary = lines[-1]
    assert "3 addresses" in summary
    assert "2 valid" in summary and "1 invalid" in summary


def test_output_file_gets_results_appended(
    start_mx: StartMx, check: RunCli, tmp_path: Path
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    results = tmp_path / "results.jsonl"
    results.write_text(
        '{"email": "earlier@example.test", "status": "valid", "reason": "accepted"}\n'
    )
    check("-o", "results.jsonl", "alice@example.test")
    emails = [json.loads(line)["email"] for line in results.read_text().splitlines()]
    assert emails == ["earlier@example.test", "alice@example.test"]


def test_second_run_with_the_same_output_file_skips_decided_addresses(
    start_mx: StartMx, check: RunCli, tmp_path: Path
) -> None:
    peer = start_mx("example.test", MX1, mailboxes={"alice", "carol"})
    check("-o", "results.jsonl", "alice@example.test", "bob@example.test")
    sessions_of_first_run = len(peer.sessions)
    check("-o", "results.jsonl", "alice@example.test", "bob@example.test", "carol@example.test")
    emails = [
        json.loads(line)["email"] for line in (tmp_path / "results.jsonl").read_text().splitlines()
    ]
    assert sorted(emails) == ["alice@example.test", "bob@example.test", "carol@example.test"]
    second_run = [line for session in peer.sessions[sessions_of_first_run:] for line in session]
    assert "RCPT TO:<carol@example.test>" in second_run
    assert not [line for line in second_run if "alice@" in line or "bob@" in line]


def test_resumed_csv_output_keeps_a_single_header(run_cli: RunCli, tmp_path: Path) -> None:
    arguments = ("--level", "syntax", "--format", "csv", "-o", "results.csv")
    run_cli(*arguments, "a@example.test")
    run_cli(*arguments, "a@example.test", "b@example.test")
    rows = list(csv.reader((tmp_path / "results.csv").open()))
    assert [row[0] for row in rows] == ["email", "a@example.test", "b@example.test"]


def test_resumed_table_output_skips_decided_addresses(run_cli: RunCli, tmp_path: Path) -> None:
    addresses = ["a@example.test", "john  doe@example.test", "b.longer.name@example.test"]
    run_cli("--level", "syntax", "-o", "results.txt", *addresses[:2])
    run_cli("--level", "syntax", "-o", "results.txt", *addresses)
    rows = (tmp_path / "results.txt").read_text().splitlines()[1:]
    assert len(rows) == len(addresses), rows


# endregion

# region exit status and stderr


def test_exit_status_is_0_when_every_address_is_valid(start_mx: StartMx, check: RunCli) -> None:
    start_mx("example.test", MX1, mailboxes={"alice", "bob"})
    assert check("alice@example.test", "bob@example.test").exit_status == 0


def test_exit_status_is_1_when_some_address_is_not_valid(start_mx: StartMx, check: RunCli) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    assert check("alice@example.test", "bob@example.test").exit_status == 1


def test_verbose_shows_dns_answers_and_smtp_dialogue_on_stderr(
    start_mx: StartMx, check: RunCli
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    run = check("-v", "alice@example.test")
    assert "mx.example.test" in run.stderr and "MX" in run.stderr
    assert MX1 in run.stderr  # the A record of the MX host
    assert "RCPT TO:<alice@example.test>" in run.stderr
    assert "250 2.1.5 Ok" in run.stderr
    assert [verdict["email"] for verdict in run.verdicts] == ["alice@example.test"]


def test_verbose_names_the_dns_server_of_each_answer_and_error(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    dns_responder.servfail("broken.test")
    dns_responder.timeout("silent.test")
    addresses = ["alice@example.test", "a@nowhere.test", "a@broken.test", "a@silent.test"]
    run = check("-v", "--level", "dns", *addresses)
    server = dns_responder.server_arg
    log = run.stderr.splitlines()
    assert f"dns: example.test MX -> 10 mx.example.test. from {server}" in log
    assert f"dns: mx.example.test A -> {MX1} from {server}" in log
    assert f"dns: nowhere.test MX -> NXDOMAIN from {server}" in log
    assert f"dns: broken.test MX -> SERVFAIL from {server}" in log
    assert f"dns: silent.test MX -> the DNS query timed out (servers asked: {server})" in log


def test_help_shows_each_default_an_example_and_port_25(run_cli: RunCli) -> None:
    import mail_checker

    run = run_cli("--help")
    assert run.exit_status == 0
    # Each option's entry, from its name to the next option, wrapped lines joined.
    entries = [" ".join(entry.split()) for entry in re.split(r"\n(?=  -)", run.stdout)]

    def option_entry(option: str) -> str:
        return next(entry for entry in entries if entry.startswith(option))

    for option, default in [
        ("--format", "table"),
        ("--level", "smtp"),
        ("--smtp-port", "25"),
        ("--timeout", f"{mail_checker.DEFAULT_TIMEOUT:g}"),
        ("--concurrency", f"{mail_checker.DEFAULT_CONCURRENCY}"),
        ("--host-connections", f"{mail_checker.DEFAULT_HOST_CONNECTIONS}"),
        ("--dns-server", "the system's resolvers"),
        ("--mail-from", "$MAIL_FROM, else the null sender <>"),
        ("--helo", "$HELO_HOST, else this host's FQDN"),
        ("--proxy", "$SMTP_PROXY, else directly"),
        ("--retry-temp", "no second pass"),
    ]:
        assert f"(default: {default})" in option_entry(option), option
    assert "  python mail_checker.py someone@example.com\n" in run.stdout
    assert "needs outbound port 25" in " ".join(run.stdout.split())


def test_low_open_file_limit_is_raised_to_what_the_sessions_need() -> None:
    import mail_checker

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    options = mail_checker.Options(concurrency=10, host_connections=4)
    needed = 10 * 4 + mail_checker.RESERVED_FILES
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed - 30, hard))
        mail_checker.fit_open_file_limit(options)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (needed, hard)
        assert options.concurrency == 10
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_open_file_limit_that_cannot_be_raised_caps_connections_not_verdicts(
    start_mx: StartMx, dns_responder: DnsResponder, check: RunCli
) -> None:
    # 36 domains at once would need 36 sockets; 48 open files leave room for 16.
    addresses = []
    for index, ip in enumerate(MX_ADDRESSES):
        start_mx(None, ip, f"mx{index}.test", mailboxes={"alice"}, reply_delay=0.05)
        for domain in (f"a{index}.test", f"b{index}.test", f"c{index}.test"):
            dns_responder.add_mx(domain, [(10, f"mx{index}.test")])
            addresses.append(f"alice@{domain}")
    run = check("--concurrency", "100", *addresses, open_file_limit=(48, 48))
    assert run.outcomes == {address: ("valid", "accepted") for address in addresses}
    assert run.stderr == ""


def test_no_progress_output_when_stderr_is_not_a_terminal(start_mx: StartMx, check: RunCli) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    addresses = [f"user{index}@example.test" for index in range(6)]
    run = check("--format", "table", "alice@example.test", *addresses)
    assert len(run.stdout.splitlines()) > len(addresses)
    assert run.stderr == ""


def test_interrupt_exits_130_and_keeps_finished_results(
    start_mx: StartMx, network_args: list[str], checker_script: Path, tmp_path: Path
) -> None:
    start_mx("example.test", MX1, mailboxes={"alice"})
    start_mx("slow.test", MX2, never_greet=True)
    results = tmp_path / "results.jsonl"
    options = ["--timeout", "30", "--format", "json", "-o", results.name]
    addresses = ["alice@example.test", "bob@slow.test"]
    process = start_script(
        [checker_script, *network_args, *options, *addresses],
        cwd=tmp_path,
        env=checker_environment(),
    )
    try:
        wait_until(lambda: results.exists() and results.read_text().endswith("\n"))
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "Traceback" not in stderr.decode()
    kept = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(row["email"], row["reason"]) for row in kept] == [("alice@example.test", "accepted")]


# endregion

# region settings from .env


def senders_seen(peer: SmtpPeer) -> set[str]:
    return {line[len("MAIL FROM:") :] for line in peer.all_commands() if line.startswith("MAIL")}


@pytest.mark.parametrize(
    ("in_working_directory", "beside_script", "sender"),
    [
        pytest.param(
            None, "beside@checker.example.net", "<beside@checker.example.net>", id="beside"
        ),
        pytest.param(
            "cwd@checker.example.net",
            "beside@checker.example.net",
            "<cwd@checker.example.net>",
            id="working_directory_first",
        ),
    ],
)
def test_dotenv_is_read_from_the_working_directory_else_beside_the_script(
    start_mx: StartMx,
    network_args: list[str],
    checker_script: Path,
    tmp_path: Path,
    in_working_directory: str | None,
    beside_script: str,
    sender: str,
) -> None:
    # As cron runs it: `python /opt/x/mail_checker.py` with the working directory elsewhere.
    peer = start_mx("example.test", MX1, mailboxes={"alice"})
    (tmp_path / ".env").write_text(f"MAIL_FROM={beside_script}\n")
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    if in_working_directory:
        (elsewhere / ".env").write_text(f"MAIL_FROM={in_working_directory}\n")
    run = run_script(
        [checker_script, *network_args, "--format", "json", "alice@example.test"],
        cwd=elsewhere,
        env=checker_environment(),
    )
    assert run.exit_status == 0, run.stderr
    assert senders_seen(peer) == {sender}


def test_load_env_file_loads_the_first_that_exists_and_names_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mail_checker

    loaded: list[Path] = []
    monkeypatch.setattr(mail_checker, "load_dotenv", loaded.append)
    beside_script = REPO_ROOT / ".env"
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("")
    assert mail_checker.load_env_file() == (tmp_path / ".env", beside_script)
    monkeypatch.chdir(REPO_ROOT)  # the same place twice is looked at once
    assert mail_checker.load_env_file() == (beside_script,)
    assert loaded == [tmp_path / ".env", *([beside_script] if beside_script.is_file() else [])]


# endregion

# region library


def import_in_a_fresh_python(code: str, cwd: Path) -> ScriptRun:
    """`python -c CODE` in `cwd`, with the project's mail_checker.py importable."""
    environment = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    return run_script(["-c", code], cwd=cwd, env=environment)


def test_import_prints_nothing(tmp_path: Path) -> None:
    imported = import_in_a_fresh_python("import mail_checker", tmp_path)
    assert (imported.exit_status, imported.stdout, imported.stderr) == (0, "", "")


def test_import_does_not_load_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAIL_FROM=dotenv@checker.example.net\n")
    code = "import os, mail_checker; print(os.environ.get('MAIL_FROM', 'unset'))"
    assert import_in_a_fresh_python(code, tmp_path).stdout.strip() == "unset"


# endregion
