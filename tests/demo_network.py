"""A small mail world on loopback, to try mail_checker.py without touching the internet.

    python tests/demo_network.py          # leave it running, then in another terminal:
    python mail_checker.py --dns-server 127.0.0.1:10053 --smtp-port 10025 --allow-private \
        alice@shop.test

Domains (the .test top-level domain is reserved for testing, RFC 2606), their MX hosts all one
SMTP server on 127.0.0.1, the only loopback address every system has (macOS has no 127.0.0.2):
  shop.test       alice, bob and info exist; full@ is over quota
  catchall.test   accepts any address
  greylist.test   greylists each address for 5 seconds
  strict.test     refuses the checker by policy at RCPT (a blocklist reply)
  nullmx.test     null MX (RFC 7505): takes no mail
Any other domain does not exist.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from peers import DnsResponder, PeerNetwork, SmtpPeer, SmtpScript

ADDRESS = "127.0.0.1"
# Not 5353, which mDNS holds on many machines (Avahi on Linux desktops, macOS's mDNSResponder).
DEFAULT_DNS_PORT = 10053
DEFAULT_SMTP_PORT = 10025

DOMAINS = {
    "shop.test": SmtpScript(
        mailboxes={"alice", "bob", "info"},
        rcpt_replies={"full": "552 5.2.2 <full@shop.test>: Mailbox full"},
    ),
    "catchall.test": SmtpScript(catch_all=True),
    "greylist.test": SmtpScript(mailboxes={"carol"}, greylist_seconds=5),
    "strict.test": SmtpScript(
        unknown_user_reply="550 5.7.1 Service unavailable; client [127.0.0.1] blocked "
        "using zen.spamhaus.org",
    ),
}


def port_taken(port: int, option: str, error: OSError) -> int:
    """One line naming the option that moves the server elsewhere; the exit status."""
    why = os.strerror(error.errno) if error.errno else str(error)
    print(
        f"demo_network.py: port {port} on {ADDRESS} is taken ({why}): "
        f"choose another with {option} N, or {option} 0 for any free one.",
        file=sys.stderr,
    )
    return 2


def port_number(text: str) -> int:
    port = int(text)
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (0 to 65535)")
    return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dns-port",
        type=port_number,
        default=DEFAULT_DNS_PORT,
        help="0: any free port (default: %(default)s)",
    )
    parser.add_argument(
        "--smtp-port",
        type=port_number,
        default=DEFAULT_SMTP_PORT,
        help="0: any free port (default: %(default)s)",
    )
    args = parser.parse_args()
    with PeerNetwork() as network:
        dns = DnsResponder(address=ADDRESS, port=args.dns_port, network=network)
        try:
            dns.start()
        except OSError as error:
            return port_taken(args.dns_port, "--dns-port", error)
        dns.null_mx("nullmx.test")
        for domain in DOMAINS:
            dns.add_mx(domain, [(10, f"mx.{domain}")])
            dns.add_a(f"mx.{domain}", ADDRESS)
        script = SmtpScript(hostname="mx.demo.test", domains=DOMAINS)
        smtp = SmtpPeer(ADDRESS, args.smtp_port, script, network=network)
        try:
            smtp.start()
        except OSError as error:
            return port_taken(args.smtp_port, "--smtp-port", error)
        print(
            f"DNS on {ADDRESS}:{dns.port}, SMTP on {ADDRESS}:{smtp.port}; Ctrl-C stops.\n"
            f"Try: python mail_checker.py --dns-server {ADDRESS}:{dns.port} "
            f"--smtp-port {smtp.port} --allow-private alice@shop.test",
            flush=True,
        )
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


if __name__ == "__main__":
    # Blocked before the peers' thread starts, so that Ctrl-C reaches sigwait() alone.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main())
