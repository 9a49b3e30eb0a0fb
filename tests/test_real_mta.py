"""The checker against real mail servers: Debian's Postfix, Exim and OpenSMTPD on loopback.

The servers come from tests/real_mta/setup.sh (Debian's packages, extracted, found through
$REAL_MTA_ROOT) and start as root; elsewhere every test here is skipped with the reason. Each
listens on its own 127.0.0.x address, all on one port, and the test's DNS responder points the
test domains' MX records at them. The checker runs through its command line.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import RunCli
from peers import DnsResponder, free_port
from real_mta.servers import Exim, MailServer, OpenSmtpd, Postfix

RECIPIENT_LIMIT = 3  # the per-message limit of the "limited" servers, low enough to reach
LOG_SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class Setup:
    """How to start one of the servers of the tier."""

    kind: type[MailServer]
    address: str
    domain: str
    overrides: tuple[tuple[str, str], ...] = ()


SETUPS = {
    "postfix": Setup(Postfix, "127.0.0.21", Postfix.domain),
    "exim": Setup(Exim, "127.0.0.22", Exim.domain),
    # OpenSMTPD keeps its queue in /var/spool/smtpd, so only one can run: the limited one.
    "opensmtpd": Setup(
        OpenSmtpd,
        "127.0.0.23",
        OpenSmtpd.domain,
        (("smtp limit max-rcpt", str(RECIPIENT_LIMIT)),),
    ),
    "postfix-limit": Setup(
        Postfix,
        "127.0.0.24",
        "postfix-limit.test",
        (("smtpd_recipient_limit", str(RECIPIENT_LIMIT)),),
    ),
    "exim-limit": Setup(
        Exim, "127.0.0.25", "exim-limit.test", (("recipients_max", str(RECIPIENT_LIMIT)),)
    ),
    "exim-limit-reject": Setup(
        Exim,
        "127.0.0.26",
        "exim-reject.test",
        (("recipients_max", str(RECIPIENT_LIMIT)), ("recipients_max_reject", "true")),
    ),
}
# Mailboxes that exist on each server: Postfix's local table, and system accounts or Debian's
# aliases on Exim and OpenSMTPD.
MAILBOXES = {
    "postfix": ("alice", "bob"),
    "exim": ("mail", "postmaster"),
    "opensmtpd": ("mail", "postmaster"),
}


class RealMtas:
    """The servers of the tier that could start, on one port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port(setup.address for setup in SETUPS.values())
        self.running: dict[str, MailServer] = {}
        self.missing: dict[str, str] = {}
        for name, setup in SETUPS.items():
            reason = setup.kind.unavailable()
            if reason is not None:
                self.missing[name] = reason
                continue
            server = setup.kind(
                workdir / name, setup.address, self.port, dict(setup.overrides), domain=setup.domain
            )
            self.running[name] = server.start()

    def get(self, name: str) -> MailServer:
        if name not in self.running:
            pytest.skip(self.missing[name])
        return self.running[name]

    def stop(self) -> None:
        for server in self.running.values():
            server.stop()


@pytest.fixture(scope="module")
def real_mtas() -> Iterator[RealMtas]:
    workdir = Path(tempfile.mkdtemp(prefix="real-mta-"))
    workdir.chmod(0o755)  # the servers' own users must reach their spools
    servers = RealMtas(workdir)
    try:
        yield servers
    finally:
        servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def mx_port(real_mtas: RealMtas) -> int:
    """The real servers' port, for conftest's network_args and check."""
    return real_mtas.port


def serve(name: str, real_mtas: RealMtas, dns_responder: DnsResponder) -> MailServer:
    """The running server called `name`, published as the MX of its domain."""
    server = real_mtas.get(name)
    dns_responder.add_mx(server.domain, [(10, f"mx.{server.domain}")])
    dns_responder.add_a(f"mx.{server.domain}", server.address)
    return server


@pytest.mark.parametrize("name", MAILBOXES)
def test_existing_mailbox_is_valid_accepted(
    name: str, real_mtas: RealMtas, dns_responder: DnsResponder, check: RunCli
) -> None:
    server = serve(name, real_mtas, dns_responder)
    address = f"{MAILBOXES[name][0]}@{server.domain}"
    run = check(address)
    assert run.outcomes == {address: ("valid", "accepted")}, run.stderr


@pytest.mark.parametrize("name", MAILBOXES)
def test_unknown_mailbox_is_invalid_rejected(
    name: str, real_mtas: RealMtas, dns_responder: DnsResponder, check: RunCli
) -> None:
    server = serve(name, real_mtas, dns_responder)
    address = f"nosuchuser@{server.domain}"
    run = check(address)
    assert run.outcomes == {address: ("invalid", "rejected")}, run.by_email.get(address)


@pytest.mark.parametrize("name", ["postfix-limit", "exim-limit", "exim-limit-reject", "opensmtpd"])
def test_recipients_over_the_limit_each_get_their_one_right_verdict(
    name: str, real_mtas: RealMtas, dns_responder: DnsResponder, check: RunCli
) -> None:
    server = serve(name, real_mtas, dns_responder)
    known = MAILBOXES[name.partition("-")[0]]
    expected = {f"{user}@{server.domain}": ("valid", "accepted") for user in known}
    expected |= {f"nosuchuser{n}@{server.domain}": ("invalid", "rejected") for n in range(1, 7)}
    run = check(*expected)
    assert sorted(verdict["email"] for verdict in run.verdicts) == sorted(expected)
    assert run.outcomes == expected


def test_many_unknown_mailboxes_never_reach_postfix_soft_error_limit(
    real_mtas: RealMtas, dns_responder: DnsResponder, check: RunCli
) -> None:
    server = serve("postfix", real_mtas, dns_responder)
    assert isinstance(server, Postfix)
    log_before = len(server.log_text())
    expected = {f"{user}@{server.domain}": ("valid", "accepted") for user in MAILBOXES["postfix"]}
    expected |= {f"nosuchuser{n}@{server.domain}": ("invalid", "rejected") for n in range(1, 59)}
    run = check(*expected)
    assert run.outcomes == expected
    sessions = postfix_sessions(server, log_before)
    # Postfix sleeps before every reply once a session has made smtpd_soft_error_limit (10)
    # errors, and hangs up at smtpd_hard_error_limit (20).
    assert sessions, "Postfix logged no session"
    assert max(session.errors for session in sessions) < 10, sessions
    assert "too many errors" not in server.log_text()[log_before:]


def test_many_unknown_mailboxes_at_exim_each_get_their_one_right_verdict(
    real_mtas: RealMtas, dns_responder: DnsResponder, check: RunCli
) -> None:
    # Exim's default ACL refuses every RCPT of a transaction from the 11th on, existing
    # mailboxes too, once fewer than half were accepted: "550 Rejected for too many bad
    # recipients".
    server = serve("exim", real_mtas, dns_responder)
    expected = {f"{user}@{server.domain}": ("valid", "accepted") for user in MAILBOXES["exim"]}
    expected |= {f"nosuchuser{n}@{server.domain}": ("invalid", "rejected") for n in range(1, 21)}
    run = check(*expected)
    assert run.outcomes == expected


@dataclass(frozen=True)
class PostfixSession:
    """One connection as Postfix's "disconnect from" line counts it."""

    rcpt_accepted: int
    rcpt_total: int
    commands_accepted: int
    commands_total: int

    @property
    def errors(self) -> int:
        """The commands Postfix refused: what its error limits count."""
        return self.commands_total - self.commands_accepted


DISCONNECT = re.compile(r"disconnect from \S+(?P<counts>.*)$", re.MULTILINE)


def postfix_sessions(server: Postfix, log_offset: int) -> list[PostfixSession]:
    """The sessions logged after `log_offset`, once Postfix has logged the end of each."""
    deadline = time.monotonic() + LOG_SETTLE_SECONDS
    while True:
        log = server.log_text()[log_offset:]
        if log.count(": connect from ") == log.count(": disconnect from "):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"Postfix did not log the end of every session:\n{log}")
        time.sleep(0.1)
    sessions = []
    for match in DISCONNECT.finditer(log):
        # e.g. " ehlo=1 mail=1 rcpt=2/12 rset=1 quit=1 commands=5/15"
        counts = dict(item.split("=") for item in match["counts"].split())
        rcpt = counts.get("rcpt", "0").split("/")
        commands = counts["commands"].split("/")
        sessions.append(
            PostfixSession(
                int(rcpt[0]),
                int(rcpt[-1]),
                int(commands[0]),
                int(commands[-1]),
            )
        )
    return sessions
