"""The loopback peers behave as specified, seen through independent clients (dnspython, smtplib)."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest
from peers import DnsResponder, PeerNetwork, SmtpPeer, SmtpScript, free_port

StartPeer = Callable[..., SmtpPeer]
Connect = Callable[[SmtpPeer], smtplib.SMTP]

HOST = "127.0.0.2"
OTHER_HOST = "127.0.0.3"
NO_PEER_HOST = "127.0.0.9"
CLIENT_TIMEOUT = 2.0
SHORT_TIMEOUT = 0.1  # waited out where nothing may come: a loopback answer takes microseconds


@pytest.fixture(scope="module")
def network() -> Iterator[PeerNetwork]:
    with PeerNetwork() as shared:
        yield shared


@pytest.fixture
def port() -> int:
    return free_port([HOST, OTHER_HOST, NO_PEER_HOST])


@pytest.fixture
def responder(network: PeerNetwork) -> Iterator[DnsResponder]:
    with DnsResponder(network=network) as started:
        yield started


@pytest.fixture
def start_peer(network: PeerNetwork, port: int) -> Iterator[StartPeer]:
    """Start SMTP peers on the test's port (at HOST unless told) and stop them afterwards."""
    started: list[SmtpPeer] = []

    def start(address: str = HOST, **options: Any) -> SmtpPeer:
        peer = SmtpPeer(address, port, SmtpScript(**options), network=network).start()
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Open smtplib clients to peers and close them afterwards."""
    clients: list[smtplib.SMTP] = []

    def open_client(peer: SmtpPeer) -> smtplib.SMTP:
        client = smtplib.SMTP(peer.address, peer.port, "client.test", CLIENT_TIMEOUT)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


def open_transaction(client: smtplib.SMTP) -> smtplib.SMTP:
    client.ehlo()
    client.mail("")
    return client


def assert_no_reply_yet(peer: SmtpPeer) -> None:
    with (
        socket.create_connection((peer.address, peer.port), timeout=SHORT_TIMEOUT) as raw,
        pytest.raises(TimeoutError),
    ):
        raw.recv(1)


def resolver_for(responder: DnsResponder) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [responder.address]
    resolver.port = responder.port
    resolver.lifetime = CLIENT_TIMEOUT
    return resolver


def ask(responder: DnsResponder, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, responder.address, port=responder.port, timeout=CLIENT_TIMEOUT)


# region DNS


def test_server_arg_names_address_and_port(responder: DnsResponder) -> None:
    assert responder.server_arg == f"127.0.0.1:{responder.port}"


def test_mx_records_are_answered(responder: DnsResponder) -> None:
    responder.add_mx("example.test", [(10, "mx1.example.test"), (20, "mx2.example.test")])
    answer = resolver_for(responder).resolve("example.test", "MX")
    exchanges = sorted((record.preference, record.exchange.to_text()) for record in answer)
    assert exchanges == [(10, "mx1.example.test."), (20, "mx2.example.test.")]


def test_zone_given_to_constructor_is_served(network: PeerNetwork) -> None:
    zone = {"mx1.example.test": {"A": ["127.0.0.2"], "AAAA": ["::1"]}}
    with DnsResponder(zone, network=network) as responder:
        answer = resolver_for(responder).resolve("mx1.example.test", "AAAA")
    assert [record.address for record in answer] == ["::1"]


def test_names_match_whatever_their_case(responder: DnsResponder) -> None:
    responder.add_a("mx1.example.test", "127.0.0.2")
    answer = resolver_for(responder).resolve("MX1.Example.TEST", "A")
    assert [record.address for record in answer] == ["127.0.0.2"]


def test_a_label_names_are_answered(responder: DnsResponder) -> None:
    responder.add_mx("xn--bcher-kva.test", [(10, "mx.xn--bcher-kva.test")])
    answer = resolver_for(responder).resolve("xn--bcher-kva.test", "MX")
    assert [record.exchange.to_text() for record in answer] == ["mx.xn--bcher-kva.test."]


def test_unknown_name_is_nxdomain(responder: DnsResponder) -> None:
    responder.add_mx("example.test", [(10, "mx1.example.test")])
    assert ask(responder, "nowhere.test", "MX").rcode() == dns.rcode.NXDOMAIN


def test_existing_name_without_the_type_is_nodata(responder: DnsResponder) -> None:
    responder.add_a("example.test", "127.0.0.2")
    response = ask(responder, "example.test", "MX")
    assert (response.rcode(), response.answer) == (dns.rcode.NOERROR, [])


def test_name_with_only_subdomains_is_nodata_not_nxdomain(responder: DnsResponder) -> None:
    responder.add_a("mx1.example.test", "127.0.0.2")
    response = ask(responder, "example.test", "MX")
    assert (response.rcode(), response.answer) == (dns.rcode.NOERROR, [])


def test_servfail_name_gets_servfail(responder: DnsResponder) -> None:
    responder.add_mx("broken.test", [(10, "mx1.broken.test")])
    responder.servfail("broken.test")
    assert ask(responder, "broken.test", "MX").rcode() == dns.rcode.SERVFAIL


def test_null_mx_is_preference_zero_root(responder: DnsResponder) -> None:
    responder.null_mx("nomail.test")
    answer = resolver_for(responder).resolve("nomail.test", "MX")
    assert [(record.preference, record.exchange.to_text()) for record in answer] == [(0, ".")]


def test_timeout_name_is_never_answered(responder: DnsResponder) -> None:
    responder.add_mx("slow.test", [(10, "mx1.slow.test")])
    responder.timeout("slow.test")
    query = dns.message.make_query("slow.test", "MX")
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(query, responder.address, port=responder.port, timeout=SHORT_TIMEOUT)


def test_every_query_is_recorded_with_name_type_and_transport(responder: DnsResponder) -> None:
    responder.add_mx("example.test", [(10, "mx1.example.test")])
    ask(responder, "Example.test", "MX")
    query = dns.message.make_query("mx1.example.test", "A")
    dns.query.tcp(query, responder.address, port=responder.port, timeout=CLIENT_TIMEOUT)
    assert [tuple(query) for query in responder.queries] == [
        ("Example.test", "MX", "udp"),
        ("mx1.example.test", "A", "tcp"),
    ]


def test_query_count_matches_names_in_any_case(responder: DnsResponder) -> None:
    ask(responder, "EXAMPLE.test", "MX")
    ask(responder, "example.test", "A")
    ask(responder, "other.test", "MX")
    assert (responder.query_count("example.test"), responder.query_count("example.test", "MX")) == (
        2,
        1,
    )


def test_large_answer_is_truncated_over_udp_and_whole_over_tcp(responder: DnsResponder) -> None:
    hosts = [(10, f"mail-exchanger-number-{index}.example.test") for index in range(40)]
    responder.add_mx("big.test", hosts)
    query = dns.message.make_query("big.test", "MX", use_edns=False)
    over_udp = dns.query.udp(query, responder.address, port=responder.port, timeout=CLIENT_TIMEOUT)
    over_tcp = dns.query.tcp(query, responder.address, port=responder.port, timeout=CLIENT_TIMEOUT)
    assert over_udp.flags & dns.flags.TC
    assert len(over_tcp.answer[0]) == len(hosts)


# endregion

# region SMTP: recording


def test_each_command_line_is_recorded_exactly_per_connection(
    start_peer: StartPeer, connect: Connect
) -> None:
    peer = start_peer(mailboxes={"alice"})
    client = connect(peer)
    client.ehlo()
    # Written out: smtplib's own spelling of MAIL and RCPT changed case in Python 3.13.
    client.docmd("MAIL FROM:<>")
    client.docmd("RCPT TO:<alice@example.test>")
    client.quit()
    connect(peer).quit()
    assert peer.sessions == [
        ["ehlo client.test", "MAIL FROM:<>", "RCPT TO:<alice@example.test>", "quit"],
        ["quit"],
    ]


def test_bare_line_feed_stays_inside_the_recorded_line(
    start_peer: StartPeer, connect: Connect
) -> None:
    peer = start_peer()
    client = connect(peer)
    client.send(b"NOOP a\nNOOP b\x00c\r\n")
    client.getreply()
    client.getreply()  # aiosmtpd, like most servers, took the bare LF as a line end
    client.quit()
    assert peer.all_commands() == ["NOOP a\nNOOP b\x00c", "quit"]


def test_utf8_address_is_recorded_as_sent(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(catch_all=True)
    client = open_transaction(connect(peer))
    client.send("RCPT TO:<jürgen@bücher.test>\r\n".encode())
    assert client.getreply()[0] == 250
    assert peer.all_commands()[-1] == "RCPT TO:<jürgen@bücher.test>"


def test_each_connection_has_the_time_it_opened(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer()
    before = time.monotonic()
    connect(peer).quit()
    connect(peer).quit()
    after = time.monotonic()
    assert len(peer.connected_at) == len(peer.sessions) == 2
    assert before <= peer.connected_at[0] <= peer.connected_at[1] <= after


def test_connections_and_peak_of_simultaneous_ones_are_counted(
    start_peer: StartPeer, connect: Connect
) -> None:
    peer = start_peer()
    connect(peer).quit()  # the server closes on QUIT, before the next two open
    connect(peer)
    connect(peer)
    assert (peer.connections, peer.peak_connections) == (3, 2)


def test_data_is_refused_and_counted(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(catch_all=True)
    client = open_transaction(connect(peer))
    client.rcpt("alice@example.test")
    with pytest.raises(smtplib.SMTPDataError) as refusal:
        client.data(b"Subject: test\r\n\r\nbody\r\n")
    assert (refusal.value.smtp_code, peer.data_attempts) == (554, 1)


# endregion

# region SMTP: recipients


def test_listed_mailbox_is_accepted(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(mailboxes={"alice"})
    assert open_transaction(connect(peer)).rcpt("alice@example.test") == (250, b"2.1.5 Ok")


def test_unlisted_mailbox_gets_user_unknown(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(mailboxes={"alice"})
    code, message = open_transaction(connect(peer)).rcpt("bob@example.test")
    assert (code, message) == (
        550,
        b"5.1.1 <bob@example.test>: Recipient address rejected: "
        b"User unknown in local recipient table",
    )


def test_mailboxes_match_whole_addresses_ignoring_case(
    start_peer: StartPeer, connect: Connect
) -> None:
    peer = start_peer(mailboxes={"Alice@Example.test"})
    client = open_transaction(connect(peer))
    codes = [client.rcpt("alice@EXAMPLE.test")[0], client.rcpt("alice@other.test")[0]]
    assert codes == [250, 550]


def test_catch_all_accepts_any_recipient(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(catch_all=True)
    assert open_transaction(connect(peer)).rcpt("xq7z9-nobody@example.test")[0] == 250


def test_scripted_reply_is_given_for_its_address(start_peer: StartPeer, connect: Connect) -> None:
    full = "452 4.2.2 Mailbox full"
    peer = start_peer(catch_all=True, rcpt_replies={"carol@example.test": full})
    assert open_transaction(connect(peer)).rcpt("carol@example.test") == (
        452,
        b"4.2.2 Mailbox full",
    )


def test_greylisting_defers_the_first_attempt_and_accepts_the_next(
    start_peer: StartPeer, connect: Connect
) -> None:
    peer = start_peer(mailboxes={"alice"}, greylist_seconds=0)
    first = open_transaction(connect(peer)).rcpt("alice@example.test")
    second = open_transaction(connect(peer)).rcpt("alice@example.test")
    assert (first[0], second[0]) == (450, 250)


def test_greylisting_keeps_deferring_within_its_period(
    start_peer: StartPeer, connect: Connect
) -> None:
    peer = start_peer(mailboxes={"alice"}, greylist_seconds=3600)
    client = open_transaction(connect(peer))
    codes = [client.rcpt("alice@example.test")[0], client.rcpt("alice@example.test")[0]]
    assert codes == [450, 450]


def test_one_server_answers_each_domain_by_its_own_script(
    start_peer: StartPeer, connect: Connect
) -> None:
    peer = start_peer(
        domains={
            "Shop.test": SmtpScript(mailboxes={"alice"}),
            "catchall.test": SmtpScript(catch_all=True),
            "greylist.test": SmtpScript(catch_all=True, greylist_seconds=3600),
        },
    )
    client = open_transaction(connect(peer))
    addresses = ["alice@shop.test", "bob@SHOP.test", "x@catchall.test", "x@greylist.test"]
    assert [client.rcpt(address)[0] for address in addresses] == [250, 550, 250, 450]
    assert client.rcpt("alice@elsewhere.test")[0] == 550  # the server's own script


def test_peer_on_port_0_listens_on_the_port_it_reports(network: PeerNetwork) -> None:
    with SmtpPeer(HOST, 0, SmtpScript(), network=network) as peer:
        assert peer.port != 0
        with smtplib.SMTP(HOST, peer.port, "client.test", CLIENT_TIMEOUT) as client:
            assert client.noop()[0] == 250


# endregion

# region SMTP: greeting and handshake


def test_address_without_a_peer_refuses_connections(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((NO_PEER_HOST, port), timeout=CLIENT_TIMEOUT)


def test_5xx_greeting_answers_503_until_quit(start_peer: StartPeer) -> None:
    peer = start_peer(greeting_refusal="554 5.7.1 No SMTP service here")
    with socket.create_connection((peer.address, peer.port), timeout=CLIENT_TIMEOUT) as raw:
        replies = raw.makefile("rb")
        greeting = replies.readline()
        raw.sendall(b"EHLO client.test\r\nQUIT\r\n")
        answers = [replies.readline(), replies.readline(), replies.read()]
    assert greeting == b"554 5.7.1 No SMTP service here\r\n"
    assert answers == [b"503 5.5.1 Error: no SMTP service here\r\n", b"221 2.0.0 Bye\r\n", b""]


def test_4xx_greeting_closes_the_connection(start_peer: StartPeer) -> None:
    peer = start_peer(greeting_refusal="421 4.3.2 Busy, try later")
    with socket.create_connection((peer.address, peer.port), timeout=CLIENT_TIMEOUT) as raw:
        assert raw.makefile("rb").read() == b"421 4.3.2 Busy, try later\r\n"


def test_never_greeting_peer_leaves_the_client_waiting(start_peer: StartPeer) -> None:
    peer = start_peer(never_greet=True)
    assert_no_reply_yet(peer)
    assert peer.connections == 1


def test_refused_ehlo_leaves_helo_working(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(ehlo_refusal="502 5.5.2 Error: command not recognized")
    client = connect(peer)
    assert client.ehlo()[0] == 502
    assert client.helo()[0] == 250
    assert client.mail("")[0] == 250


def test_refused_helo_gets_its_reply(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(helo_refusal="504 5.5.2 <client.test>: Helo command rejected")
    assert connect(peer).helo()[0] == 504


def test_refused_mail_from_gets_its_reply(start_peer: StartPeer, connect: Connect) -> None:
    refusal = "553 5.7.1 Sender address rejected: Access denied"
    peer = start_peer(mail_refusal=refusal)
    client = connect(peer)
    client.ehlo()
    assert client.mail("") == (553, b"5.7.1 Sender address rejected: Access denied")


def test_pipelining_is_advertised_by_default(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer()
    client = connect(peer)
    client.ehlo()
    assert client.has_extn("pipelining")


def test_pipelining_can_be_left_out(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(pipelining=False)
    client = connect(peer)
    client.ehlo()
    assert not client.has_extn("pipelining")


def test_smtputf8_can_be_left_out(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(smtputf8=False)
    client = connect(peer)
    client.ehlo()
    assert not client.has_extn("smtputf8")


def test_starttls_is_offered_and_works(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(starttls=True, catch_all=True)
    client = connect(peer)
    client.ehlo()
    assert client.has_extn("starttls")
    client.starttls(context=ssl._create_unverified_context())
    client.ehlo()
    client.mail("")
    assert client.docmd("RCPT TO:<alice@example.test>")[0] == 250
    client.quit()
    assert peer.all_commands()[-2:] == ["RCPT TO:<alice@example.test>", "quit"]


def test_required_tls_refuses_mail_before_starttls(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(require_tls=True)
    client = connect(peer)
    client.ehlo()
    assert client.mail("") == (530, b"5.7.0 Must issue a STARTTLS command first")


def test_required_tls_takes_mail_after_starttls(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(require_tls=True)
    client = connect(peer)
    client.ehlo()
    client.starttls(context=ssl._create_unverified_context())
    client.ehlo()
    assert client.mail("")[0] == 250


# endregion

# region SMTP: limits


def test_connection_beyond_max_connections_gets_421(
    start_peer: StartPeer, connect: Connect
) -> None:
    peer = start_peer(max_connections=1)
    first = connect(peer)
    with pytest.raises(smtplib.SMTPConnectError) as refusal:
        connect(peer)
    assert refusal.value.smtp_code == 421
    first.quit()
    connect(peer).quit()  # a free slot is given out again


def test_recipients_beyond_transaction_limit_get_452(
    start_peer: StartPeer, connect: Connect
) -> None:
    peer = start_peer(catch_all=True, max_rcpt_per_transaction=2)
    client = open_transaction(connect(peer))
    codes = [client.rcpt(f"user{index}@example.test")[0] for index in range(3)]
    assert codes == [250, 250, 452]


def test_transaction_limit_starts_afresh_after_rset(
    start_peer: StartPeer, connect: Connect
) -> None:
    peer = start_peer(catch_all=True, max_rcpt_per_transaction=1)
    client = open_transaction(connect(peer))
    client.rcpt("first@example.test")
    client.rset()
    client.mail("")
    assert client.rcpt("second@example.test")[0] == 250


def test_session_limit_holds_across_transactions(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(catch_all=True, max_rcpt_per_session=2)
    client = open_transaction(connect(peer))
    client.rcpt("first@example.test")
    client.rcpt("second@example.test")
    client.rset()
    client.mail("")
    assert client.rcpt("third@example.test")[0] == 452


def test_hard_error_limit_sends_421_and_closes(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(hard_error_limit=2)
    client = open_transaction(connect(peer))
    codes = [client.rcpt("nobody1@example.test")[0], client.rcpt("nobody2@example.test")[0]]
    unasked = client.getreply()
    assert (codes, unasked) == ([550, 550], (421, b"4.7.0 mx.example.test Error: too many errors"))
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()


def test_drop_after_rcpts_hangs_up_without_a_reply(start_peer: StartPeer, connect: Connect) -> None:
    peer = start_peer(catch_all=True, drop_after_rcpts=1)
    client = open_transaction(connect(peer))
    assert client.rcpt("first@example.test")[0] == 250
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.rcpt("second@example.test")
    assert open_transaction(connect(peer)).rcpt("second@example.test")[0] == 250


def test_reply_delay_holds_the_reply_back(start_peer: StartPeer) -> None:
    peer = start_peer(reply_delay=30)
    assert_no_reply_yet(peer)


def test_delayed_peer_does_not_hold_up_others_on_the_loop(
    start_peer: StartPeer, connect: Connect
) -> None:
    slow = start_peer(reply_delay=30)
    quick = start_peer(OTHER_HOST)
    with socket.create_connection((slow.address, slow.port), timeout=CLIENT_TIMEOUT) as waiting:
        connect(quick).quit()
        waiting.setblocking(False)
        with pytest.raises(BlockingIOError):
            waiting.recv(1)  # the slow greeting is still being held back


def test_many_peers_share_one_port_on_one_loop(connect: Connect) -> None:
    addresses = [f"127.0.1.{index}" for index in range(1, 21)]
    shared_port = free_port(addresses)
    script = SmtpScript(mailboxes={"alice"})
    with PeerNetwork() as network:
        peers = [SmtpPeer(address, shared_port, script, network=network) for address in addresses]
        for peer in peers:
            peer.start()
        codes = {open_transaction(connect(peer)).rcpt("alice@example.test")[0] for peer in peers}
    assert codes == {250}
    assert [peer.connections for peer in peers] == [1] * len(peers)


# endregion
