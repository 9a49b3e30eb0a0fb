"""Record what Debian's Postfix, Exim and OpenSMTPD say, into tests/data/real-mta-transcripts.json.

Run as root after setup.sh, from the repository: `python tests/real_mta/record.py`. Each server
starts on loopback (servers.py), and a raw socket client, not mail_checker.py, plays fixed
sessions: the plain dialogue, STARTTLS, unknown recipients up to the server's error handling
(one command per write, then pipelined), and recipients beyond a per-message limit. Every reply
is kept verbatim with the seconds the server took to send it.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from real_mta.servers import Exim, MailServer, OpenSmtpd, Postfix, mta_root

OUTPUT = Path(__file__).resolve().parent.parent / "data" / "real-mta-transcripts.json"
PORT = 2525
HELO = "checker.example.net"
READ_TIMEOUT = 60.0
UNKNOWN_RCPTS = 25  # more than Postfix's hard error limit of 20
LIMIT = 3  # the lowered per-message recipient limit of the "limit" sessions


class Client:
    """A raw SMTP client that keeps every reply with the time the server took to send it."""

    def __init__(self, address: str) -> None:
        self.exchanges: list[dict[str, Any]] = []
        self._socket: socket.socket | ssl.SSLSocket = socket.create_connection(
            (address, PORT), timeout=READ_TIMEOUT
        )
        self._buffer = b""
        self._since = time.monotonic()
        self._record(None, self._reply())

    def _line(self) -> bytes | None:
        while b"\r\n" not in self._buffer:
            chunk = self._socket.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def _reply(self) -> list[str] | None:
        """One reply's lines, or None when the server closed the connection instead."""
        lines: list[str] = []
        while (line := self._line()) is not None:
            lines.append(line.decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return lines
        return lines or None

    def _record(self, command: str | None, reply: list[str] | None) -> list[str] | None:
        now = time.monotonic()
        self.exchanges.append(
            {
                "command": command,
                "reply": reply if reply is not None else "(connection closed)",
                "seconds": round(now - self._since, 3),
            }
        )
        self._since = now
        return reply

    def await_close(self) -> None:
        """After a 421 the server ends the connection: record when, and how."""
        started = time.monotonic()
        try:
            while self._socket.recv(65536):
                pass
            how = "(connection closed)"
        except ConnectionResetError:
            how = "(connection reset)"
        seconds = round(time.monotonic() - started, 3)
        self.exchanges.append({"command": None, "reply": how, "seconds": seconds})

    def send(self, command: str) -> list[str] | None:
        self._since = time.monotonic()
        self._socket.sendall(command.encode() + b"\r\n")
        return self._record(command, self._reply())

    def pipeline(self, commands: list[str]) -> None:
        """All commands in one write; each reply's seconds count from the previous reply."""
        self._since = time.monotonic()
        self._socket.sendall(b"".join(command.encode() + b"\r\n" for command in commands))
        for command in commands:
            if self._record(command, self._reply()) is None:
                return

    def starttls(self) -> None:
        reply = self.send("STARTTLS")
        if not reply or not reply[0].startswith("220"):
            return
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the stock certificates are self-signed
        started = time.monotonic()
        self._socket = context.wrap_socket(self._socket)
        self.exchanges.append(
            {
                "command": "(TLS handshake)",
                "reply": f"{self._socket.version()} {self._socket.cipher()[0]}",
                "seconds": round(time.monotonic() - started, 3),
            }
        )
        self.send(f"EHLO {HELO}")

    def close(self) -> None:
        self._socket.close()


def session(address: str, title: str, play: Any) -> dict[str, Any]:
    client = Client(address)
    try:
        play(client)
    except (OSError, ssl.SSLError) as error:
        client.exchanges.append({"command": "(client)", "reply": repr(error), "seconds": 0})
    finally:
        client.close()
    return {"title": title, "exchanges": client.exchanges}


def dialogue(*rcpts: str) -> Any:
    def play(client: Client) -> None:
        for command in [f"EHLO {HELO}", "MAIL FROM:<>", *(f"RCPT TO:<{r}>" for r in rcpts)]:
            client.send(command)
        client.send("RSET")
        client.send("QUIT")

    return play


def with_starttls(client: Client) -> None:
    client.send(f"EHLO {HELO}")
    client.starttls()
    client.send("QUIT")


def unknown_one_by_one(domain: str, then: tuple[str, ...] = ()) -> Any:
    def play(client: Client) -> None:
        client.send(f"EHLO {HELO}")
        client.send("MAIL FROM:<>")
        for index in range(1, UNKNOWN_RCPTS + 1):
            reply = client.send(f"RCPT TO:<nosuchuser{index}@{domain}>")
            if reply is None:
                return
            if reply[-1].startswith("421"):
                client.await_close()
                return
        for command in then:
            if client.send(command) is None:
                return
        client.send("QUIT")

    return play


def known_after_errors(domain: str, errors: int, known: str) -> Any:
    def play(client: Client) -> None:
        client.send(f"EHLO {HELO}")
        client.send("MAIL FROM:<>")
        for index in range(1, errors + 1):
            client.send(f"RCPT TO:<nosuchuser{index}@{domain}>")
        for command in [f"RCPT TO:<{known}>", "RSET", "MAIL FROM:<>", f"RCPT TO:<{known}>"]:
            client.send(command)
        client.send("NOOP")
        client.send("QUIT")

    return play


def unknown_pipelined(domain: str) -> Any:
    def play(client: Client) -> None:
        client.send(f"EHLO {HELO}")
        client.send("MAIL FROM:<>")
        rcpts = [f"RCPT TO:<nosuchuser{index}@{domain}>" for index in range(1, UNKNOWN_RCPTS + 1)]
        client.pipeline([*rcpts, "QUIT"])

    return play


def record_server(
    server: MailServer, config: str, sessions: list[tuple[str, Any]]
) -> dict[str, Any]:
    with server:
        played = [session(server.address, title, play) for title, play in sessions]
        version = server.version()
    return {
        "server": server.name,
        "version": version,
        "address": f"{server.address}:{server.port}",
        "config": config,
        "overrides": server.overrides,
        "sessions": played,
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="real-mta-record-") as directory:
        work = Path(directory)
        work.chmod(0o755)  # the servers' own users must reach their spools
        document = record_all(work, mta_root())
    OUTPUT.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUTPUT}")


def record_all(work: Path, root: Path) -> dict[str, Any]:
    pf, pv, ex = Postfix.domain, Postfix.virtual_domain, Exim.domain
    ol, ov = OpenSmtpd.domain, OpenSmtpd.virtual_domain
    records = [
        record_server(
            Postfix(work / "postfix", "127.0.0.21", PORT, root=root),
            "Debian's stock main.cf (main.cf.debian + main.cf.tls: STARTTLS offered with a "
            "self-signed certificate); mydestination postfix.test with local users alice, bob "
            "(local_recipient_maps = texthash table); virtual_mailbox_domains "
            "virtual.postfix.test with carol; mynetworks 192.0.2.0/24 so that the loopback "
            "client is an outside client; every error limit at its default "
            "(smtpd_soft_error_limit 10, smtpd_hard_error_limit 20, smtpd_error_sleep_time 1s, "
            "smtpd_recipient_limit 1000).",
            [
                (
                    "plain dialogue: local and virtual users, known and unknown",
                    dialogue(f"alice@{pf}", f"nosuchuser@{pf}", f"carol@{pv}", f"nosuchuser@{pv}"),
                ),
                ("STARTTLS", with_starttls),
                (
                    f"{UNKNOWN_RCPTS} unknown recipients, one command per write (error limits)",
                    unknown_one_by_one(pf),
                ),
                (
                    f"{UNKNOWN_RCPTS} unknown recipients and QUIT in one write (PIPELINING)",
                    unknown_pipelined(pf),
                ),
                (
                    "11 unknown recipients, then known ones, before and after RSET "
                    "(which replies the soft error limit delays)",
                    known_after_errors(pf, 11, f"alice@{pf}"),
                ),
            ],
        ),
        record_server(
            Postfix(
                work / "postfix-limit",
                "127.0.0.24",
                PORT,
                {"smtpd_recipient_limit": str(LIMIT)},
                root=root,
            ),
            f"as above, with smtpd_recipient_limit = {LIMIT} (default 1000)",
            [
                (
                    f"recipients beyond smtpd_recipient_limit = {LIMIT}",
                    dialogue(
                        f"alice@{pf}",
                        f"nosuchuser1@{pf}",
                        f"bob@{pf}",
                        f"nosuchuser2@{pf}",
                        f"alice@{pf}",
                        f"bob@{pf}",
                    ),
                ),
            ],
        ),
        record_server(
            Exim(work / "exim", "127.0.0.22", PORT, root=root),
            "Debian's exim4.conf.template with the macros update-exim4.conf writes for "
            "dc_eximconfig_configtype='internet', dc_other_hostnames='exim.test' (users: the "
            "system's passwd, e.g. mail, and Debian's /etc/aliases); relay_from_hosts "
            "192.0.2.0/24 instead of 127.0.0.1 so that the loopback client is an outside "
            "client; primary_hostname mx.exim.test; no TLS macros (MAIN_TLS_ENABLE unset), so "
            "Exim 4.96's own defaults apply (tls_advertise_hosts = *, self-signed certificate); "
            "recipients_max 50000 (Exim 4.96's default).",
            [
                (
                    "plain dialogue: a system user, an unknown user, an alias",
                    dialogue(f"mail@{ex}", f"nosuchuser@{ex}", f"postmaster@{ex}"),
                ),
                ("STARTTLS", with_starttls),
                (
                    f"{UNKNOWN_RCPTS} unknown recipients one per write, then a known one, "
                    "and the same after RSET (Debian's 'too many bad recipients' ACL)",
                    unknown_one_by_one(
                        ex,
                        then=(known := f"RCPT TO:<mail@{ex}>", "RSET", "MAIL FROM:<>", known),
                    ),
                ),
                (
                    f"{UNKNOWN_RCPTS} unknown recipients and QUIT in one write (PIPELINING)",
                    unknown_pipelined(ex),
                ),
            ],
        ),
        record_server(
            Exim(
                work / "exim-limit", "127.0.0.25", PORT, {"recipients_max": str(LIMIT)}, root=root
            ),
            f"as above, with recipients_max = {LIMIT}",
            [
                (
                    f"recipients beyond recipients_max = {LIMIT}",
                    dialogue(f"mail@{ex}", f"nosuchuser1@{ex}", f"news@{ex}", f"mail@{ex}"),
                ),
            ],
        ),
        record_server(
            Exim(
                work / "exim-limit-reject",
                "127.0.0.26",
                PORT,
                {"recipients_max": str(LIMIT), "recipients_max_reject": "true"},
                root=root,
            ),
            f"as above, with recipients_max = {LIMIT} and recipients_max_reject = true",
            [
                (
                    f"recipients beyond recipients_max = {LIMIT}, recipients_max_reject",
                    dialogue(f"mail@{ex}", f"nosuchuser1@{ex}", f"news@{ex}", f"mail@{ex}"),
                ),
            ],
        ),
        record_server(
            OpenSmtpd(work / "opensmtpd", "127.0.0.23", PORT, root=root),
            'Debian\'s stock smtpd.conf rules (table aliases, action "local" maildir alias '
            "<aliases>) for domain opensmtpd.test (users: the system's passwd, e.g. mail, and "
            'Debian\'s aliases), plus action "virtual" maildir virtual <vusers> for '
            "virtual.opensmtpd.test with carol; no TLS configured (the stock file has none); "
            "smtp limit max-rcpt at its default.",
            [
                (
                    "plain dialogue: local and virtual users, known and unknown",
                    dialogue(f"mail@{ol}", f"nosuchuser@{ol}", f"carol@{ov}", f"nosuchuser@{ov}"),
                ),
                ("STARTTLS", with_starttls),
                (
                    f"{UNKNOWN_RCPTS} unknown recipients, one command per write (error limits)",
                    unknown_one_by_one(ol),
                ),
                (
                    f"{UNKNOWN_RCPTS} unknown recipients and QUIT in one write "
                    "(PIPELINING is not offered)",
                    unknown_pipelined(ol),
                ),
            ],
        ),
        record_server(
            OpenSmtpd(
                work / "opensmtpd-limit",
                "127.0.0.23",
                PORT,
                {"smtp limit max-rcpt": str(LIMIT)},
                root=root,
            ),
            f"as above, with smtp limit max-rcpt {LIMIT}",
            [
                (
                    f"recipients beyond smtp limit max-rcpt {LIMIT}",
                    dialogue(
                        *(f"mail@{ol}", f"nosuchuser1@{ol}", f"carol@{ov}"),
                        *(f"mail@{ol}", f"carol@{ov}"),
                    ),
                ),
            ],
        ),
    ]
    return {
        "recorded": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "how": "tests/real_mta/record.py: Debian bookworm packages (tests/real_mta/setup.sh), "
        "one server at a time on loopback, a raw socket client; 'seconds' is the time from "
        "the client's write (for pipelined commands: from the previous reply) to the reply; "
        "a command of null is the greeting, or the server's closing of the connection after a "
        "421.",
        "packages": _packages(root),
        "servers": records,
    }


def _packages(root: Path) -> list[str]:
    listing = root / "packages.txt"  # written by setup.sh
    return listing.read_text().split("\n")[:-1] if listing.exists() else []


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("record.py starts mail servers and must run as root")
    main()
