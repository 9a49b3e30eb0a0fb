"""Real mail servers on loopback: Debian's Postfix, Exim and OpenSMTPD, for tests and recordings.

Each server runs from a root directory holding Debian bookworm's packages, either extracted
there by setup.sh (`dpkg -x`, nothing installed, no service started) or installed (root "/"),
with a configuration of its own written into a work directory: the package's stock settings,
a listener on a 127.0.0.x address and a high port, a test domain with a few users, and any
override a caller asks for. They start as root, as their packages do, and drop to their own
system users, which setup.sh creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

ROOT_VARIABLE = "REAL_MTA_ROOT"
SETUP_HINT = f"set {ROOT_VARIABLE} (see .ci/run and tests/real_mta/setup.sh)"
START_TIMEOUT = 15.0
# Debian's exim4-config writes this /etc/aliases when none exists (its postinst, writealiases).
ROOT_ALIASES = "postmaster nobody hostmaster usenet news webmaster www ftp abuse noc security"
DEBIAN_ALIASES = "mailer-daemon: postmaster\n" + "".join(
    f"{name}: root\n" for name in ROOT_ALIASES.split()
)


def mta_root() -> Path:
    """Where the packages' files are: $REAL_MTA_ROOT, or "/" for installed packages."""
    return Path(os.environ.get(ROOT_VARIABLE) or "/")


def _listening(address: str, port: int) -> bool:
    """Whether a TCP socket listens on address:port, read from /proc so that no session is
    opened (a probe connection would show up in the server's log and counts)."""
    packed = socket.inet_aton(address)[::-1].hex().upper()
    wanted = f"{packed}:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        return any(
            fields[1] == wanted and fields[3] == "0A"  # 0A: TCP_LISTEN
            for fields in (line.split() for line in table)
        )


class MailServer:
    """One real MTA process on address:port with its configuration in `workdir`."""

    name = ""
    system_users: tuple[str, ...] = ()
    binary = ""  # relative to the root; its absence means the package is not there
    domain = ""  # the test domain it takes mail for (local users)

    def __init__(
        self,
        workdir: Path,
        address: str,
        port: int,
        overrides: Mapping[str, str] | None = None,
        root: Path | None = None,
        domain: str | None = None,
    ) -> None:
        self.root = root or mta_root()
        self.domain = domain or self.domain
        self.workdir = workdir
        self.address = address
        self.port = port
        self.overrides = dict(overrides or {})
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def unavailable(cls, root: Path | None = None) -> str | None:
        """Why the server cannot run here, or None when it can."""
        root = root or mta_root()
        if os.geteuid() != 0:
            return f"{cls.name} starts as root, as its package does; run the tests as root"
        if not (root / cls.binary).exists():
            return f"{cls.name} not found at {root / cls.binary}: {SETUP_HINT}"
        for user in cls.system_users:
            try:
                pwd.getpwnam(user)
            except KeyError:
                return f"{cls.name} needs the system user {user}: {SETUP_HINT}"
        return None

    @property
    def environment(self) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}

    def command(self) -> list[str]:
        raise NotImplementedError

    def configure(self) -> None:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def log_text(self) -> str:
        raise NotImplementedError

    def start(self) -> MailServer:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self.workdir.chmod(0o755)  # the servers' own users must reach their spools
        self.configure()
        output = (self.workdir / "stdout.log").open("wb")
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=self.environment,
            cwd=self.workdir,
            start_new_session=True,
        )
        output.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(self.address, self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                startup = (self.workdir / "stdout.log").read_text(errors="replace")
                raise RuntimeError(f"{self.name} did not start: {startup[-2000:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> MailServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, *arguments: str) -> str:
        completed = subprocess.run(
            arguments, capture_output=True, env=self.environment, check=False, timeout=30
        )
        return (completed.stdout + completed.stderr).decode(errors="replace")


class Postfix(MailServer):
    """Postfix's master in the foreground, with Debian's stock main.cf.

    Domain postfix.test has the local users alice and bob (a local recipient table stands in
    for the system's passwd file: the reply names the table class, not the map), and
    virtual.postfix.test the virtual mailbox carol. The log goes to `maillog` (maillog_file).
    """

    name = "Postfix"
    binary = "usr/lib/postfix/sbin/master"
    system_users = ("postfix",)
    domain = "postfix.test"
    virtual_domain = "virtual.postfix.test"
    local_users = ("alice", "bob")
    virtual_users = ("carol",)
    QUEUE_DIRECTORIES = (
        "active bounce corrupt defer deferred flush hold incoming private saved trace".split()
    )

    @property
    def environment(self) -> dict[str, str]:
        return {**super().environment, "LD_LIBRARY_PATH": str(self.root / "usr/lib/postfix")}

    @property
    def maillog(self) -> Path:
        return self.workdir / "maillog"

    def settings(self) -> dict[str, str]:
        """main.cf: Debian's main.cf.debian and main.cf.tls, then what this setup needs."""
        work, root = self.workdir, self.root
        return {
            # Debian's stock main.cf
            "smtpd_banner": "$myhostname ESMTP $mail_name (Debian/GNU)",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            "compatibility_level": "3.6",
            "smtpd_tls_cert_file": str(work / "tls/cert.pem"),
            "smtpd_tls_key_file": str(work / "tls/key.pem"),
            "smtpd_tls_security_level": "may",
            "smtp_tls_security_level": "may",
            # the test domain and its users
            "myhostname": f"mx.{self.domain}",
            "mydestination": self.domain,
            "local_recipient_maps": f"texthash:{work}/local_users",
            "virtual_mailbox_domains": self.virtual_domain,
            "virtual_mailbox_maps": f"texthash:{work}/virtual_users",
            "alias_maps": "",
            "alias_database": "",
            # the loopback client is an outside client, not one of "my networks"
            "mynetworks": "192.0.2.0/24",
            "inet_interfaces": "all",
            "inet_protocols": "ipv4",
            # running from the work directory and the extracted package
            "queue_directory": f"{work}/spool",
            "data_directory": f"{work}/data",
            "daemon_directory": f"{root}/usr/lib/postfix/sbin",
            "command_directory": f"{root}/usr/sbin",
            "shlib_directory": f"{root}/usr/lib/postfix",
            "meta_directory": f"{root}/etc/postfix",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(work),
            "import_environment": "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE "
            f"POSTLOG_HOSTNAME LD_LIBRARY_PATH={root}/usr/lib/postfix",
            **self.overrides,
        }

    def configure(self) -> None:
        work = self.workdir
        postfix = pwd.getpwnam("postfix")
        (work / "conf").mkdir()
        settings = "".join(f"{key} = {value}\n" for key, value in self.settings().items())
        (work / "conf/main.cf").write_text(settings)
        # master.cf: Debian's services, none chrooted, smtpd on our address and port.
        (work / "conf/master.cf").write_text(
            f"{self.address}:{self.port} inet n - n - - smtpd\n"
            "pickup unix n - n 60 1 pickup\n"
            "cleanup unix n - n - 0 cleanup\n"
            "qmgr unix n - n 300 1 qmgr\n"
            "tlsmgr unix - - n 1000? 1 tlsmgr\n"
            "rewrite unix - - n - - trivial-rewrite\n"
            "bounce unix - - n - 0 bounce\n"
            "defer unix - - n - 0 bounce\n"
            "trace unix - - n - 0 bounce\n"
            "verify unix - - n - 1 verify\n"
            "proxymap unix - - n - - proxymap\n"
            "anvil unix - - n - 1 anvil\n"
            "scache unix - - n - 1 scache\n"
            "postlog unix-dgram n - n - 1 postlogd\n"
            "error unix - - n - - error\n"
            "discard unix - - n - - discard\n"
            "local unix - n n - - local\n"
            "virtual unix - n n - - virtual\n"
        )
        (work / "local_users").write_text("".join(f"{user} x\n" for user in self.local_users))
        (work / "virtual_users").write_text(
            "".join(f"{user}@{self.virtual_domain} x\n" for user in self.virtual_users)
        )
        _self_signed_certificate(work / "tls", f"mx.{self.domain}")
        spool = work / "spool"
        for directory, mode, group in [
            *((name, 0o700, None) for name in self.QUEUE_DIRECTORIES),
            ("maildrop", 0o730, "postdrop"),
            ("public", 0o710, "postdrop"),
        ]:
            (spool / directory).mkdir(parents=True)
            (spool / directory).chmod(mode)
            shutil.chown(spool / directory, postfix.pw_uid, group)
        (spool / "pid").mkdir()
        (work / "data").mkdir()
        shutil.chown(work / "data", postfix.pw_uid)

    def command(self) -> list[str]:
        return [str(self.root / self.binary), "-c", str(self.workdir / "conf"), "-d"]

    def version(self) -> str:
        postconf, configuration = str(self.root / "usr/sbin/postconf"), str(self.workdir / "conf")
        return "Postfix " + self._run(postconf, "-c", configuration, "-dh", "mail_version").strip()

    def log_text(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""


class Exim(MailServer):
    """Exim 4 in the foreground with Debian's exim4.conf.template, configured as
    update-exim4.conf does for dc_eximconfig_configtype='internet'.

    Domain exim.test; its users are the system's (the local_user router checks passwd; the
    account "mail" exists on every Debian system) and the aliases Debian writes.
    `overrides` are main options (e.g. recipients_max) added before the template.
    """

    name = "Exim"
    binary = "usr/sbin/exim4"
    system_users = ("Debian-exim",)
    domain = "exim.test"

    @property
    def environment(self) -> dict[str, str]:
        # libidn12 comes extracted beside the binary when the package is not installed.
        libraries = self.root / "usr/lib/x86_64-linux-gnu"
        return {**super().environment, "LD_LIBRARY_PATH": str(libraries)}

    def configure(self) -> None:
        work, root = self.workdir, self.root
        exim = pwd.getpwnam("Debian-exim")
        for directory in ("spool", "log"):
            (work / directory).mkdir()
            shutil.chown(work / directory, exim.pw_uid, exim.pw_gid)
        (work / "aliases").write_text(DEBIAN_ALIASES)
        macros = {
            # what update-exim4.conf writes for this configuration type
            "MAIN_LOCAL_INTERFACES": f"<; {self.address}.{self.port}",
            "MAIN_LOCAL_DOMAINS": f"@:localhost:{self.domain}",
            "MAIN_RELAY_TO_DOMAINS": "",
            "ETC_MAILNAME": self.domain,
            "LOCAL_DELIVERY": "mail_spool",
            # the loopback client is an outside client, not a relay client
            "MAIN_RELAY_NETS": "192.0.2.0/24",
            "DCreadhost": "",
            "DCsmarthost": "",
            "DC_eximconfig_configtype": "internet",
            "DCconfig_internet": "1",
            "MAIN_HARDCODE_PRIMARY_HOSTNAME": f"mx.{self.domain}",
            "SPOOLDIR": str(work / "spool"),
        }
        main_options = {"log_file_path": f"{work}/log/%slog", **self.overrides}
        template = (root / "etc/exim4/exim4.conf.template").read_text()
        template = template.replace("/usr/sbin/exim4", f"{root}/{self.binary}", 1)  # exim_path
        template = template.replace("lsearch{/etc/aliases}", f"lsearch{{{work}/aliases}}")
        (work / "exim4.conf").write_text(
            "".join(f"{name} = {value}\n" for name, value in macros.items())
            + "".join(f"{name} = {value}\n" for name, value in main_options.items())
            + template
        )

    def command(self) -> list[str]:
        return [str(self.root / self.binary), "-C", str(self.workdir / "exim4.conf"), "-bdf"]

    def version(self) -> str:
        return self._run(str(self.root / self.binary), "-bV").splitlines()[0].split(" #")[0]

    def log_text(self) -> str:
        log = self.workdir / "log/mainlog"
        return log.read_text(errors="replace") if log.exists() else ""


class OpenSmtpd(MailServer):
    """OpenSMTPD in the foreground (-d) with Debian's stock smtpd.conf rules.

    Domain opensmtpd.test delivers to system users and Debian's aliases, as the stock
    `action "local" maildir alias <aliases>` does; virtual.opensmtpd.test has the virtual user
    carol. `overrides` are global lines (e.g. "smtp limit max-rcpt"). OpenSMTPD keeps its queue
    in /var/spool/smtpd and its control socket in /run, so only one runs at a time.
    """

    name = "OpenSMTPD"
    binary = "usr/sbin/smtpd"
    system_users = ("opensmtpd", "opensmtpq")
    domain = "opensmtpd.test"
    virtual_domain = "virtual.opensmtpd.test"
    virtual_users = ("carol",)

    def configure(self) -> None:
        work = self.workdir
        Path("/var/lib/opensmtpd/empty").mkdir(parents=True, exist_ok=True)  # its chroot
        (work / "aliases").write_text(DEBIAN_ALIASES)
        (work / "virtual_users").write_text(
            "".join(f"{user}@{self.virtual_domain} mail\n" for user in self.virtual_users)
        )
        (work / "smtpd.conf").write_text(
            "".join(f"{option} {value}\n" for option, value in self.overrides.items())
            + f"table aliases file:{work}/aliases\n"
            f"table vusers file:{work}/virtual_users\n"
            f"listen on {self.address} port {self.port} hostname mx.{self.domain}\n"
            'action "local" maildir alias <aliases>\n'
            'action "virtual" maildir virtual <vusers>\n'
            f'match from any for domain "{self.domain}" action "local"\n'
            f'match from any for domain "{self.virtual_domain}" action "virtual"\n'
        )

    def command(self) -> list[str]:
        return [str(self.root / self.binary), "-d", "-f", str(self.workdir / "smtpd.conf")]

    def version(self) -> str:
        usage = self._run(str(self.root / self.binary), "-h")
        return next(line for line in usage.splitlines() if "OpenSMTPD" in line).split(": ")[-1]

    def log_text(self) -> str:
        return (self.workdir / "stdout.log").read_text(errors="replace")


def _self_signed_certificate(directory: Path, common_name: str) -> None:
    """What Debian's ssl-cert package makes as the "snakeoil" certificate at install time."""
    directory.mkdir()
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", f"/CN={common_name}"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")),
        ],
        check=True,
        capture_output=True,
    )
