"""A small mail world on loopback, to try mail_checker.py without touching the internet.

    python tests/demo_network.py          # leave it running, then in another terminal:
    python mail_checker.py --dns-server 127.0.0.1:5353 --smtp-port 2525 --allow-private \
        alice@shop.test

Domains (the .test top-level domain is reserved for testing, RFC 2606):
  shop.test       MX on 127.0.0.2: alice, bob and info exist; full@ is over quota
  catchall.test   MX on 127.0.0.3: accepts any address
  greylist.test   MX on 127.0.0.4: greylists each address for 5 seconds
  strict.test     MX on 127.0.0.5: refuses the checker by policy at RCPT (a blocklist reply)
  nullmx.test     null MX (RFC 7505): takes no mail
Any other domain does not exist.
"""

from __future__ import annotations

import argparse
import signal

from peers import DnsResponder, PeerNetwork, SmtpPeer, SmtpScript

HOSTS = {
    "shop.test": (
        "127.0.0.2",
        SmtpScript(
            hostname="mx.shop.test",
            mailboxes={"alice", "bob", "info"},
            rcpt_replies={"full": "552 5.2.2 <full@shop.test>: Mailbox full"},
        ),
    ),
    "catchall.test": ("127.0.0.3", SmtpScript(hostname="mx.catchall.test", catch_all=True)),
    "greylist.test": (
        "127.0.0.4",
        SmtpScript(hostname="mx.greylist.test", mailboxes={"carol"}, greylist_seconds=5),
    ),
    "strict.test": (
        "127.0.0.5",
        SmtpScript(
            hostname="mx.strict.test",
            unknown_user_reply="550 5.7.1 Service unavailable; client [127.0.0.1] blocked "
            "using zen.spamhaus.org",
        ),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dns-port", type=int, default=5353)
    parser.add_argument("--smtp-port", type=int, default=2525)
    args = parser.parse_args()
    with PeerNetwork() as network:
        dns = DnsResponder(port=args.dns_port, network=network).start()
        dns.null_mx("nullmx.test")
        for domain, (address, script) in HOSTS.items():
            dns.add_mx(domain, [(10, f"mx.{domain}")])
            dns.add_a(f"mx.{domain}", address)
            SmtpPeer(address, args.smtp_port, script, network=network).start()
        print(
            f"DNS on 127.0.0.1:{args.dns_port}, SMTP on port {args.smtp_port}; Ctrl-C stops.\n"
            f"Try: python mail_checker.py --dns-server 127.0.0.1:{args.dns_port} "
            f"--smtp-port {args.smtp_port} --allow-private alice@shop.test",
            flush=True,
        )
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
