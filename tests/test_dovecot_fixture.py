"""The Dovecot fixtures do what later tests rely on.

TLS verifies against the throwaway CA and fails against the system trust store; PREAUTH
tunnels run with an empty environment; capability masking hides MOVE and UIDPLUS; POP3
works once a greeting is injected; the proxy cuts exactly where it is told.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import poplib
import shutil
import socket
import ssl
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, LoginError

from tests import dovecot
from tests.dovecot import TunnelIMAPClient, TunnelPOP3, make_message

pytest_plugins = ["tests.dovecot"]
pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).parent.parent
MASK = "IMAP4rev1 IDLE LITERAL+"


def imap_exchange(sock: socket.socket, line: bytes) -> bytes:
    """Send one tagged line; read until its tagged reply (or EOF, returned as is)."""
    tag = line.split(b" ", 1)[0]
    sock.sendall(line + b"\r\n")
    received = b""
    while not any(row.startswith(tag + b" ") for row in received.split(b"\r\n")):
        data = sock.recv(65536)
        if not data:
            break
        received += data
    return received


# --- PREAUTH ----------------------------------------------------------------------------------


def test_preauth_argv_select_append_search_move_with_only_path_and_home(dovecot_preauth):
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    client = TunnelIMAPClient(dovecot_preauth.argv, env=env)
    try:
        assert client.welcome.startswith(b"* PREAUTH")
        assert client.has_capability("MOVE") and client.has_capability("UIDPLUS")
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        client.append("INBOX", make_message("first", message_id="<1@t>"))
        client.append("INBOX", make_message("second", message_id="<2@t>"))
        assert client.search(["SUBJECT", "second"]) == [2]
        client.create_folder("Archive")
        client.move([2], "Archive")
    finally:
        client.logout()
    assert dovecot_preauth.subjects("INBOX") == ["first"]
    assert dovecot_preauth.messages("Archive") == [(1, (), "<2@t>")]
    assert len(list((dovecot_preauth.maildir / ".Archive").glob("[nc][eu][wr]/*"))) == 1


def test_preauth_capability_mask_hides_move_uidplus_condstore(dovecot_preauth_factory):
    box = dovecot_preauth_factory(capability=MASK)
    box.append("INBOX", make_message("x"))
    with box.connect() as client:
        assert client.capabilities() == (b"IMAP4REV1", b"IDLE", b"LITERAL+")
        client.select_folder("INBOX")
        with pytest.raises(CapabilityError, match="MOVE"):
            client.move([1], "Elsewhere")
    # The helpers go through an unmasked session, so they still see APPENDUID.
    assert box.append("INBOX", make_message("y")) == 2


def test_preauth_pop3_sends_no_greeting_and_works_once_one_is_injected(dovecot_preauth):
    assert dovecot_preauth.pop3_sends_greeting is False
    raw = subprocess.run(
        dovecot_preauth.pop3_argv, input=b"NOOP\r\nQUIT\r\n", capture_output=True, timeout=10
    )
    assert raw.stdout.startswith(b"+OK\r\n+OK Logging out")  # the first line answers NOOP

    dovecot_preauth.append("INBOX", make_message("one", message_id="<p1@t>"))
    dovecot_preauth.append("INBOX", make_message("two", message_id="<p2@t>"))
    pop = TunnelPOP3(dovecot_preauth.pop3_argv, env={"PATH": "/usr/bin:/bin"})
    try:
        assert pop.getwelcome().startswith(b"+OK")
        assert pop.stat()[0] == 2
        assert len(pop.uidl()[1]) == 2
        assert b"Message-ID: <p1@t>" in pop.retr(1)[1]
        pop.dele(1)
    finally:
        pop.quit()
    assert [m.message_id for m in dovecot_preauth.messages()] == ["<p2@t>"]


def test_helpers_append_list_flag_and_decode(dovecot_preauth):
    box = dovecot_preauth
    assert box.folders() == ["INBOX"] and box.uids() == []
    box.create("Lists/dev")
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    uid = box.append(
        "Lists/dev",
        make_message("=?utf-8?q?Gr=C3=BC=C3=9Fe?=", message_id="<h1@t>"),
        flags=["\\Seen", "$Label1"],
        date=when,
    )
    assert uid == 1
    assert box.folders() == ["INBOX", "Lists/dev"]
    assert box.subjects("Lists/dev") == ["Grüße"]
    assert box.messages("Lists/dev") == [(1, ("$Label1", "\\Seen"), "<h1@t>")]
    box.mark_deleted("Lists/dev", 1)
    assert box.messages("Lists/dev")[0].flags == ("$Label1", "\\Deleted", "\\Seen")
    assert box.uids("Lists/dev") == [1]  # marked, not expunged
    assert box.uidvalidity("Lists/dev") > 0
    assert (box.maildir / ".Lists.dev" / "cur").is_dir()


def test_each_preauth_mailbox_starts_empty_and_separate(dovecot_preauth_factory):
    first, second = dovecot_preauth_factory(), dovecot_preauth_factory()
    first.append("INBOX", make_message("only in first"))
    assert first.maildir != second.maildir
    assert (first.uids(), second.uids()) == ([1], [])


# --- Daemon -----------------------------------------------------------------------------------


def test_server_starttls_login_verifies_the_throwaway_ca(dovecot_server):
    server = dovecot_server
    server.append("INBOX", make_message("over tls", message_id="<s1@t>"))
    client = IMAPClient(server.host, server.imap_port, ssl=False, timeout=10)
    try:
        assert client.has_capability("STARTTLS")
        client.starttls(ssl.create_default_context(cafile=server.ca_file))
        client.login(server.username, server.password)
        client.select_folder("INBOX")
        assert client.search(["SUBJECT", "over tls"]) == [1]
    finally:
        client.logout()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_server_imaps_verifies_with_ca_file_by_ip_and_name(dovecot_server, host):
    context = ssl.create_default_context(cafile=dovecot_server.ca_file)
    with IMAPClient(host, dovecot_server.imaps_port, ssl_context=context, timeout=10) as client:
        client.login(dovecot_server.username, dovecot_server.password)
        assert client.socket().version() in ("TLSv1.2", "TLSv1.3")


def test_server_certificate_fails_against_the_system_trust_store(dovecot_server):
    with pytest.raises(ssl.SSLCertVerificationError, match="self-signed"):
        IMAPClient(
            dovecot_server.host,
            dovecot_server.imaps_port,
            ssl_context=ssl.create_default_context(),
            timeout=10,
        )
    client = IMAPClient(dovecot_server.host, dovecot_server.imap_port, ssl=False, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        client.starttls(ssl.create_default_context())
    with contextlib.suppress(OSError):  # the failed handshake already closed the socket
        client.shutdown()
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL(
            dovecot_server.host, dovecot_server.pop3s_port, context=ssl.create_default_context()
        )


def test_server_cert_sha256_is_the_fingerprint_of_the_served_certificate(dovecot_server):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((dovecot_server.host, dovecot_server.imaps_port)) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert dovecot_server.cert_sha256 == "sha256:" + hashlib.sha256(der).hexdigest()


def test_server_password_and_oauth_logins(dovecot_server):
    with dovecot_server.connect("ssl", login=False) as client, pytest.raises(LoginError):
        client.login(dovecot_server.username, "wrong")
    with dovecot_server.connect("ssl", login=False) as client:
        assert client.has_capability("AUTH=XOAUTH2")
        client.oauth2_login(dovecot_server.username, dovecot_server.token)
        client.select_folder("INBOX")
    with dovecot_server.connect("starttls", login=False) as client:
        client.oauthbearer_login(dovecot_server.username, dovecot_server.token)
    with dovecot_server.connect("ssl", login=False) as client, pytest.raises(LoginError):
        client.oauth2_login(dovecot_server.username, "expired-token")


def test_server_pop3s_and_stls_verify_with_the_ca(dovecot_server):
    server = dovecot_server
    server.append("INBOX", make_message("pop me"))
    pop = poplib.POP3_SSL(server.host, server.pop3s_port, context=server.ssl_context(), timeout=10)
    try:
        pop.user(server.username)
        pop.pass_(server.password)
        assert pop.stat()[0] == 1
    finally:
        pop.quit()
    pop = poplib.POP3(server.host, server.pop3_port, timeout=10)
    try:
        assert "STLS" in pop.capa()
        pop.stls(context=server.ssl_context())
        pop.user(server.username)
        pop.pass_(server.password)
        assert pop.stat()[0] == 1
    finally:
        pop.quit()


def test_server_capability_mask_applies_after_login(dovecot_server_factory):
    server = dovecot_server_factory(capability=MASK)
    with server.connect() as client:
        capabilities = client.capabilities()
        assert b"MOVE" not in capabilities and b"UIDPLUS" not in capabilities
        assert b"CONDSTORE" not in capabilities and b"IDLE" in capabilities


def test_server_without_starttls_offers_none_and_a_strict_client_can_refuse(
    dovecot_server_factory,
):
    server = dovecot_server_factory(starttls=False)
    assert server.imaps_port is None and server.pop3s_port is None
    client = IMAPClient(server.host, server.imap_port, ssl=False, timeout=10)
    try:
        assert not client.has_capability("STARTTLS")
        with pytest.raises(CapabilityError, match="STARTTLS"):
            client.starttls(ssl.create_default_context(cafile=server.ca_file))
    finally:
        client.shutdown()
    pop = poplib.POP3(server.host, server.pop3_port, timeout=10)
    try:
        assert "STLS" not in pop.capa()
    finally:
        pop.quit()


def test_server_mailbox_is_fresh_for_each_test_and_shared_with_the_helpers(dovecot_server):
    assert dovecot_server.folders() == ["INBOX"] and dovecot_server.uids() == []
    with dovecot_server.connect() as client:
        client.create_folder("Made by client")
        client.append("Made by client", make_message("via daemon", message_id="<d1@t>"))
    assert dovecot_server.messages("Made by client") == [(1, (), "<d1@t>")]
    assert (dovecot_server.maildir / ".Made by client").is_dir()


# --- Cutting proxy ----------------------------------------------------------------------------


@pytest.mark.parametrize("deliver_last", [True, False])
def test_cutting_proxy_cuts_after_the_nth_line(dovecot_server, cutting_proxy, deliver_last):
    proxy = cutting_proxy(dovecot_server.imap_port, cut_after=3, deliver_last=deliver_last)
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        assert sock.recv(1000).startswith(b"* OK")
        assert b"a1 OK" in imap_exchange(sock, b"a1 NOOP")
        assert b"a2 OK" in imap_exchange(sock, b"a2 LOGIN user secret")
        assert imap_exchange(sock, b"a3 CREATE Cut") == b""  # no reply: cut
    assert proxy.wait_cut() and proxy.lines_seen == 3 and proxy.cut_line == b"a3 CREATE Cut\r\n"
    # deliver_last: the server ran the command although the client never heard back.
    assert ("Cut" in dovecot_server.folders()) is deliver_last

    with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        sock.recv(1000)  # a reconnect goes through untouched
        assert b"b1 OK" in imap_exchange(sock, b"b1 LOGIN user secret")
        assert b"b2 OK" in imap_exchange(sock, b"b2 LOGOUT")
    assert proxy.lines_seen == 5 and proxy.connections == 2


def test_cutting_proxy_cuts_inside_a_literal_without_waiting_long(dovecot_server, cutting_proxy):
    # The server answers nothing while it waits for the literal: the proxy gives up after 1 s.
    proxy = cutting_proxy(dovecot_server.imap_port, cut_after=2)
    body = b"Subject: cut\r\n\r\nbody\r\n"
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        sock.recv(1000)
        assert b"a1 OK" in imap_exchange(sock, b"a1 LOGIN user secret")
        started = time.monotonic()
        sock.sendall(b"a2 APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
        assert sock.recv(1000) == b""
    assert time.monotonic() - started < 3
    assert proxy.was_cut and proxy.lines_seen == 2
    assert dovecot_server.uids() == []


def test_cutting_proxy_counts_crlf_lines_of_a_whole_imapclient_session(
    dovecot_server, cutting_proxy
):
    proxy = cutting_proxy(dovecot_server.imap_port, cut_after=None)
    client = IMAPClient(proxy.host, proxy.port, ssl=False, timeout=10)
    client.login(dovecot_server.username, dovecot_server.password)
    client.append("INBOX", b"Subject: two lines\r\n\r\nbody\r\n")
    client.logout()
    assert not proxy.was_cut
    # LOGIN, the APPEND command line, the literal's 3 CRLF lines plus the one ending the
    # command, LOGOUT; IMAPClient may add a CAPABILITY, so count from the end.
    assert proxy.lines[-1].endswith(b" LOGOUT\r\n")
    assert proxy.lines[-6].split(b" ")[1] == b"APPEND" and proxy.lines[-6].endswith(b"}\r\n")
    assert proxy.lines[-5:-1] == [b"Subject: two lines\r\n", b"\r\n", b"body\r\n", b"\r\n"]


# --- Skipping and installing ------------------------------------------------------------------


def test_missing_dovecot_skips_but_fails_when_required(monkeypatch):
    monkeypatch.setattr(dovecot, "IMAP_BINARY", Path("/nonexistent/imap"))
    monkeypatch.delenv(dovecot.REQUIRE_VARIABLE, raising=False)
    monkeypatch.delenv("MAILRULES_REQUIRE_SERVERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"run \.ci/install-dovecot"):
        dovecot.require_dovecot()
    monkeypatch.setenv(dovecot.REQUIRE_VARIABLE, "1")
    with pytest.raises(pytest.fail.Exception, match="dovecot-imapd dovecot-pop3d"):
        dovecot.require_dovecot()
    monkeypatch.delenv(dovecot.REQUIRE_VARIABLE)
    monkeypatch.setenv("MAILRULES_REQUIRE_SERVERS", "1")  # what the README's command sets
    with pytest.raises(pytest.fail.Exception, match="dovecot-imapd dovecot-pop3d"):
        dovecot.require_dovecot()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_install_script_without_root_explains_and_exits_zero():
    # A copy that believes Dovecot is missing, run as nobody: it must change nothing.
    text = (ROOT / ".ci" / "install-dovecot").read_text()
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-s"],
        input=text.replace("/usr/lib/dovecot/", "/nonexistent/"),
        capture_output=True,
        text=True,
        timeout=10,
        cwd="/",
    )
    assert done.returncode == 0
    assert "not root, so nothing installed" in done.stderr


def test_install_script_does_nothing_when_installed():
    if not os.access(dovecot.IMAP_BINARY, os.X_OK):
        pytest.skip("Dovecot is not installed, and this test must not install it")
    done = subprocess.run(
        [str(ROOT / ".ci" / "install-dovecot")], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0 and "already installed" in done.stdout
