"""IMAP accounts against a real Dovecot, through `mailrules run --once`."""

from __future__ import annotations

import re
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

NOW = datetime.now(UTC)


def message(mid: str, sender: str, subject: str, *, extra: str = "", body: str = "hi\n") -> bytes:
    return (
        f"From: {sender}\r\nTo: me@example.net\r\nSubject: {subject}\r\n"
        f"Message-ID: <{mid}@t>\r\nDate: {NOW:%a, %d %b %Y %H:%M:%S +0000}\r\n{extra}\r\n{body}"
    ).encode()


RULES = """
- {name: clients, when: {from: "*@client.example"}, then: [{move: Clients}]}
- {name: spam, when: {subject: "[SPAM]"}, then: [{delete: {expunge: true}}]}
- {name: junk, when: {subject: junk}, then: [delete]}
- {name: lists, when: {header: List-Id, contains: announce}, then: [{move: Lists/Announce}]}
- {name: boss, when: {from: boss@example.com}, then: [{flag: flagged}, {keyword: Work}, stop]}
- {name: copyall, when: {subject: copy}, then: [{copy: Copies}]}
"""


def config(tmp_path: Path, imap: str, rules: str = RULES, extra: str = "") -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"accounts:\n  work:\n    imap: {imap}\n{textwrap.indent(extra, '    ')}"
        "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    )
    return path


def flow(**settings: object) -> str:
    """A YAML flow mapping for an imap: section."""

    def show(value: object) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(show(v) for v in value) + "]"
        return str(value) if isinstance(value, int) else f'"{value}"'

    return "{" + ", ".join(f"{k}: {show(v)}" for k, v in settings.items()) + "}"


def tunnel(box) -> str:
    return "{tunnel: [" + ", ".join(box.argv) + "]}"


def fill(box) -> None:
    box.append("INBOX", message("c1", "Orders <orders@client.example>", "order 1"))
    box.append("INBOX", message("s1", "x@spam.example", "[SPAM] win"))
    box.append("INBOX", message("j1", "y@junk.example", "junk mail"))
    box.append("INBOX", message("l1", "z@lists.example", "news", extra="List-Id: <announce.x>\r\n"))
    box.append("INBOX", message("b1", "Boss <boss@example.com>", "budget"))
    box.append("INBOX", message("p1", "a@b.example", "please copy"))
    box.append("INBOX", message("n1", '"orders@client.example" <evil@x.example>', "lookalike"))


def ids(box, folder: str) -> list[str]:
    return sorted(m.message_id for m in box.messages(folder))


def test_rules_act_on_an_imap_account(dovecot_preauth, tmp_path, run_cli):
    box = dovecot_preauth
    fill(box)
    result = run_cli("run", "--once", "--all", "-c", str(config(tmp_path, tunnel(box))))
    assert result.returncode == 0, result.stderr + result.stdout
    assert ids(box, "Clients") == ["<c1@t>"]
    assert ids(box, "Lists/Announce") == ["<l1@t>"]
    assert ids(box, "Trash") == ["<j1@t>"]
    assert ids(box, "Copies") == ["<p1@t>"]
    assert ids(box, "INBOX") == ["<b1@t>", "<n1@t>", "<p1@t>"]
    boss = next(m for m in box.messages("INBOX") if m.message_id == "<b1@t>")
    assert "\\Flagged" in boss.flags and "Work" in boss.flags
    assert all("<s1@t>" not in ids(box, f) for f in box.folders())
    assert "7 new messages, 7 actions done, 0 failed" in result.stdout


def test_first_run_baselines_then_only_new_mail_is_processed(dovecot_preauth, tmp_path, run_cli):
    box = dovecot_preauth
    box.append("INBOX", message("old", "a@client.example", "old"))
    cfg = config(tmp_path, tunnel(box))
    first = run_cli("run", "--once", "-c", str(cfg))
    assert "first run, mail already there recorded as seen" in first.stdout
    assert ids(box, "INBOX") == ["<old@t>"]
    box.append("INBOX", message("new", "b@client.example", "new"))
    second = run_cli("run", "--once", "-c", str(cfg))
    assert "1 new message, 1 action done" in second.stdout
    assert ids(box, "Clients") == ["<new@t>"]
    third = run_cli("run", "--once", "-c", str(cfg))
    assert "0 new messages" in third.stdout


def server_config(tmp_path, server, port, *, account: str = "", **extra) -> Path:
    """A plain login to ``server`` on ``port``; ``extra`` imap settings, ``account`` lines."""
    settings = {"host": "127.0.0.1", "port": port, "security": "plain",
                "username": server.username, "password": server.password, **extra}  # fmt: skip
    return config(tmp_path, flow(**settings), extra=account)


def commands(proxy) -> list[str]:
    out = []
    for line in proxy.lines:
        words = line.decode("latin-1").split()
        if len(words) >= 2:
            verb = words[1].upper()
            out.append(f"UID {words[2].upper()}" if verb == "UID" and len(words) > 2 else verb)
    return out


def test_poll_with_nothing_new_sends_no_select_search_or_fetch(
    dovecot_server, cutting_proxy, tmp_path, run_cli
):
    server = dovecot_server
    fill(server)
    proxy = cutting_proxy(server.imap_port, cut_after=None)
    cfg = server_config(tmp_path, server, proxy.port)
    assert run_cli("run", "--once", "--all", "-c", str(cfg)).returncode == 0
    seen = len(proxy.lines)
    idle = run_cli("run", "--once", "-c", str(cfg))
    assert idle.returncode == 0 and "0 new messages" in idle.stdout
    sent = commands(type("P", (), {"lines": proxy.lines[seen:]}))
    assert "STATUS" in sent
    assert not {"SELECT", "EXAMINE", "SEARCH", "UID SEARCH", "FETCH", "UID FETCH"} & set(sent)


def test_new_mail_is_found_with_uid_search_above_the_last(dovecot_server, cutting_proxy,
                                                          tmp_path, run_cli):  # fmt: skip
    server = dovecot_server
    proxy = cutting_proxy(server.imap_port, cut_after=None)
    cfg = server_config(tmp_path, server, proxy.port)
    server.append("INBOX", message("a", "x@y.example", "a"))
    run_cli("run", "--once", "-c", str(cfg))  # baseline
    server.append("INBOX", message("b", "q@client.example", "b"))
    seen = len(proxy.lines)
    assert run_cli("run", "--once", "-c", str(cfg)).returncode == 0
    searches = [line for line in proxy.lines[seen:] if b"SEARCH" in line.upper()]
    assert len(searches) == 1 and re.search(rb"UID SEARCH UID 2:\*", searches[0], re.I)
    assert ids(server, "Clients") == ["<b@t>"]


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        (None, ["UID MOVE"]),
        ("IMAP4rev1 LITERAL+ UIDPLUS", ["UID COPY", "UID STORE", "UID EXPUNGE"]),
        ("IMAP4rev1 LITERAL+", ["UID COPY", "UID STORE"]),
    ],
)
def test_moves_use_the_best_the_server_offers_and_never_a_plain_expunge(
    dovecot_server_factory, cutting_proxy, tmp_path, run_cli, capability, expected
):
    server = dovecot_server_factory(capability=capability)
    server.create("Clients")  # so that no TRYCREATE retry adds a command to count
    server.append("INBOX", message("c1", "a@client.example", "one"))
    server.append("INBOX", message("c2", "b@client.example", "two"))
    other = server.append("INBOX", message("o1", "o@x.example", "marked by another client"))
    server.mark_deleted("INBOX", other)
    proxy = cutting_proxy(server.imap_port, cut_after=None)
    result = run_cli("run", "--once", "--all", "-c",
                     str(server_config(tmp_path, server, proxy.port)))  # fmt: skip
    assert result.returncode == 0, result.stderr
    sent = commands(proxy)
    assert "EXPUNGE" not in sent  # a plain EXPUNGE would remove the other client's message
    for verb in expected:
        assert sent.count(verb) == 1, sent  # one batched command for both messages
    assert ids(server, "Clients") == ["<c1@t>", "<c2@t>"]
    inbox = {m.message_id: m.flags for m in server.messages("INBOX")}
    assert "<o1@t>" in inbox  # survives our run, still marked by the other client
    if "UID EXPUNGE" in expected or "UID MOVE" in expected:
        assert set(inbox) == {"<o1@t>"}
    else:
        assert "without UIDPLUS" in result.stderr or "lacks UIDPLUS" in result.stderr
        assert all("\\Deleted" in inbox[m] for m in ("<c1@t>", "<c2@t>"))


def test_certificate_is_verified(dovecot_server, tmp_path, run_cli):
    server = dovecot_server
    base = {"username": server.username, "password": server.password}
    tls = {"host": "127.0.0.1", "port": server.imaps_port, **base}
    untrusted = config(tmp_path, flow(**tls))
    result = run_cli("run", "--once", "-c", str(untrusted))
    assert result.returncode == 3
    assert "not trusted" in result.stderr and "ca_file" in result.stderr
    assert server.password not in result.stderr + result.stdout
    trusted = config(tmp_path, flow(**tls, ca_file=server.ca_file))
    assert run_cli("run", "--once", "-c", str(trusted)).returncode == 0
    pinned = config(tmp_path, flow(**tls, fingerprint=server.cert_sha256))
    assert run_cli("run", "--once", "-c", str(pinned)).returncode == 0
    wrong = config(tmp_path, flow(**tls, fingerprint="sha256:" + "00" * 32))
    refused = run_cli("run", "--once", "-c", str(wrong))
    assert refused.returncode == 3 and "does not match the pinned one" in refused.stderr


def test_starttls_is_required_once_configured(dovecot_server_factory, tmp_path, run_cli):
    server = dovecot_server_factory(starttls=False)
    cfg = config(
        tmp_path,
        flow(
            host="127.0.0.1",
            port=server.imap_port,
            security="starttls",
            username=server.username,
            ca_file=server.ca_file,
            password_command=["echo", server.password],
        ),
    )
    result = run_cli("run", "--once", "-c", str(cfg))
    assert result.returncode == 3
    assert "does not offer STARTTLS; refusing to continue in plaintext" in result.stderr


def test_starttls_login_with_password_command(dovecot_server, tmp_path, run_cli):
    server = dovecot_server
    server.append("INBOX", message("c1", "a@client.example", "one"))
    settings = flow(
        host="127.0.0.1",
        port=server.imap_port,
        security="starttls",
        username=server.username,
        ca_file=server.ca_file,
        password_command=["echo", server.password],
    )
    cfg = config(tmp_path, settings, extra="existing: process\n")
    result = run_cli("run", "--once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert ids(server, "Clients") == ["<c1@t>"]


def test_wrong_password_is_a_clear_error_without_the_password(dovecot_server, tmp_path, run_cli):
    server = dovecot_server
    cfg = server_config(tmp_path, server, server.imap_port, password="hunter2-wrong")
    result = run_cli("run", "--once", "-vv", "-c", str(cfg))
    assert result.returncode == 3
    assert "login as 'user' refused" in result.stderr
    assert "hunter2-wrong" not in result.stderr + result.stdout


def test_oauth2_token_command(dovecot_server, tmp_path, run_cli):
    server = dovecot_server
    if not getattr(server, "token", None):
        pytest.skip("this Dovecot fixture has no OAuth2 token check")
    cfg = config(
        tmp_path,
        flow(
            host="127.0.0.1",
            port=server.imap_port,
            security="plain",
            username=server.username,
            oauth2_token_command=["echo", server.token],
        ),
    )
    result = run_cli("run", "--once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert server.token not in result.stderr + result.stdout


CORPUS = [
    ("m1", "Anna <anna@client.example>", "=?utf-8?q?Gr=C3=BC=C3=9Fe?=", ""),
    ("m2", '"anna@client.example" <mallory@evil.example>', "hello", ""),
    ("m3", "x@y.example", "=?iso-8859-1?q?[SPAM]_Caf=E9?=", ""),
    ("m4", "x@y.example", "[spam] lower", ""),
    ("m5", "list@l.example", "digest", "List-Id: Announce <ANNOUNCE.l.example>\r\n"),
    ("m6", "boss@example.com", "budget", ""),
    ("m7", "Boss Impostor <boss@example.com.evil>", "budget?", ""),
    ("m8", "z@z.example", "Grüße aus Köln", ""),
]
EQUIVALENCE_RULES = """
- {name: clients, when: {from: "*@client.example"}, then: [{move: Clients}]}
- {name: spam, when: {subject: "[SPAM]"}, then: [{move: Spam}]}
- {name: german, when: {subject: grüße}, then: [{move: German}]}
- {name: lists, when: {header: List-Id, contains: announce}, then: [{move: Lists}]}
- {name: boss, when: {all: [{from: boss@example.com}, {not: {flags: flagged}}]},
   then: [{move: Boss}]}
"""


def test_server_search_and_client_side_decisions_agree(dovecot_preauth_factory, tmp_path,
                                                       run_cli):  # fmt: skip
    outcomes = []
    for server_search in ("true", "false"):
        box = dovecot_preauth_factory()
        for mid, sender, subject, extra in CORPUS:
            box.append("INBOX", message(mid, sender, subject, extra=extra))
        work = tmp_path / server_search
        work.mkdir()
        imap = tunnel(box)[:-1] + f", server_search: {server_search}}}"
        result = run_cli("run", "--once", "--all", "-c", str(config(work, imap, EQUIVALENCE_RULES)))
        assert result.returncode == 0, result.stderr
        outcomes.append({f: ids(box, f) for f in box.folders()})
    assert outcomes[0] == outcomes[1]
    assert outcomes[0]["Clients"] == ["<m1@t>"]
    assert outcomes[0]["Spam"] == ["<m3@t>", "<m4@t>"]
    assert outcomes[0]["German"] == ["<m8@t>"]
    assert outcomes[0]["Boss"] == ["<m6@t>"]


def test_folders_command_shows_special_use(dovecot_preauth, tmp_path, run_cli):
    box = dovecot_preauth
    box.create("Archive/2024")
    result = run_cli("folders", "-c", str(config(tmp_path, tunnel(box))), "work")
    assert result.returncode == 0, result.stderr
    assert "INBOX" in result.stdout.split() and "Archive/2024" in result.stdout.split()


def test_dropped_connection_at_any_point_of_a_move_loses_nothing(
    dovecot_server_factory, cutting_proxy, tmp_path, run_cli
):
    server = dovecot_server_factory(capability="IMAP4rev1 LITERAL+ UIDPLUS")
    server.create("Clients")

    def attempt(tag: str, cut: int | None):
        mids = [f"{tag}-{i}" for i in range(3)]
        for mid in mids:
            server.append("INBOX", message(mid, f"m{mid}@client.example", f"batch {tag}"))
        proxy = cutting_proxy(server.imap_port, cut_after=cut)
        work = tmp_path / tag
        work.mkdir()
        rules = f"- {{name: move, when: {{subject: 'batch {tag}'}}, then: [{{move: Clients}}]}}\n"
        runs = []
        for port, name in ((proxy.port, "cut.yaml"), (server.imap_port, "direct.yaml")):
            imap = flow(
                host="127.0.0.1",
                port=port,
                security="plain",
                username=server.username,
                password=server.password,
            )
            path = config(work, imap, rules)
            runs.append(
                (
                    "run",
                    "--once",
                    "--all",
                    "--state-dir",
                    str(work / "state"),
                    "-c",
                    str(path.rename(work / name)),
                )
            )
        return mids, proxy, runs

    mids, probe, (run, _) = attempt("probe", None)
    assert run_cli(*run).returncode == 0
    total = len(probe.lines)
    assert total > 4
    for cut in range(1, total + 1):
        mids, proxy, (run, direct) = attempt(f"cut{cut}", cut)
        run_cli(*run)
        assert proxy.was_cut
        present = [m.message_id for f in server.folders() for m in server.messages(f)]
        for mid in mids:
            assert f"<{mid}@t>" in present, f"connection cut at line {cut}: {mid} lost"
        again = run_cli(*direct)  # the next run finishes the job
        assert again.returncode == 0, f"cut at line {cut}: {again.stderr}"
        clients = ids(server, "Clients")
        assert all(f"<{mid}@t>" in clients for mid in mids), f"cut at line {cut}"
        inbox = [m for m in server.messages("INBOX") if m.message_id in {f"<{x}@t>" for x in mids}]
        assert inbox == [], f"cut at line {cut}: left in INBOX: {inbox}"


def test_uidvalidity_reset_handles_only_unhandled_new_mail(dovecot_preauth, tmp_path, run_cli):
    import shutil
    import time

    box = dovecot_preauth
    rules = "- {name: all, then: [{copy: Copies}]}\n"
    cfg = config(tmp_path, tunnel(box), rules)
    box.append("INBOX", message("handled", "a@x.example", "one"))
    run_cli("run", "--once", "--all", "-c", str(cfg))
    assert ids(box, "Copies") == ["<handled@t>"]
    time.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock
    before = box.uidvalidity()
    for path in box.maildir.iterdir():
        if path.name.startswith("dovecot"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    box.append("INBOX", message("arrived", "b@x.example", "two"))
    assert box.uidvalidity() != before
    result = run_cli("run", "--once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "reset UIDVALIDITY" in result.stdout
    assert ids(box, "Copies") == ["<arrived@t>", "<handled@t>"]  # nothing handled twice


def _reset_uidvalidity(box) -> None:
    """Make Dovecot give INBOX a new UIDVALIDITY under a running mailbox (its index and
    uid list removed, as a restore from backup or a server move would)."""
    import shutil
    import time

    time.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock
    before = box.uidvalidity()
    for path in box.maildir.iterdir():
        if path.name.startswith("dovecot"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    assert box.uidvalidity() != before


@pytest.mark.slow  # two resets, each a second apart
def test_a_second_uidvalidity_reset_still_handles_nothing_twice(dovecot_preauth, tmp_path,
                                                                 run_cli):  # fmt: skip
    """Some servers (GNU Mailutils 3.15 on Maildir) give a folder a new UIDVALIDITY with
    almost every new message: what was handled before the first reset is still known."""
    box = dovecot_preauth
    cfg = config(tmp_path, tunnel(box), "- {name: all, then: [{copy: Copies}]}\n")
    box.append("INBOX", message("handled", "a@x.example", "one"))
    assert run_cli("run", "--once", "--all", "-c", str(cfg)).returncode == 0
    for new in ("second", "third"):
        _reset_uidvalidity(box)
        box.append("INBOX", message(new, "b@x.example", new))
        result = run_cli("run", "--once", "-c", str(cfg))
        assert result.returncode == 0, result.stderr
        assert "reset UIDVALIDITY" in result.stdout
        assert "1 new message" in result.stdout, result.stdout
    assert ids(box, "Copies") == ["<handled@t>", "<second@t>", "<third@t>"]


def test_uidvalidity_reset_knows_a_handled_message_without_message_id(dovecot_preauth, tmp_path,
                                                                      run_cli):  # fmt: skip
    box = dovecot_preauth
    cfg = config(tmp_path, tunnel(box), "- {name: all, then: [{copy: Copies}]}\n")
    bare = message("x", "a@x.example", "no id").replace(b"Message-ID: <x@t>\r\n", b"")
    box.append("INBOX", bare)
    assert run_cli("run", "--once", "--all", "-c", str(cfg)).returncode == 0
    assert box.subjects("Copies") == ["no id"]
    _reset_uidvalidity(box)
    box.append("INBOX", message("arrived", "b@x.example", "two"))
    result = run_cli("run", "--once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "1 new message" in result.stdout, result.stdout
    assert sorted(box.subjects("Copies")) == ["no id", "two"]


def test_uidvalidity_reset_leaves_mail_ignored_at_first_contact_alone(dovecot_preauth, tmp_path,
                                                                      run_cli):  # fmt: skip
    from datetime import timedelta

    box = dovecot_preauth
    cfg = config(tmp_path, tunnel(box), "- {name: all, then: [{copy: Copies}]}\n")
    box.append("INBOX", message("old", "a@x.example", "old"), date=NOW - timedelta(days=2))
    first = run_cli("run", "--once", "-c", str(cfg))  # existing mail: recorded, not acted on
    assert first.returncode == 0, first.stderr
    _reset_uidvalidity(box)
    box.append("INBOX", message("arrived", "b@x.example", "two"))
    result = run_cli("run", "--once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "reset UIDVALIDITY" in result.stdout
    assert ids(box, "Copies") == ["<arrived@t>"]


def test_unreachable_server_fails_its_account_and_the_others_still_run(maildir, tmp_path,
                                                                        run_cli):  # fmt: skip
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mid = maildir.add(from_="a@client.example", subject="local")
    path = tmp_path / "two.yaml"
    dead = flow(host="127.0.0.1", port=port, security="plain", username="u", password="p")
    path.write_text(
        f"accounts:\n  dead:\n    imap: {dead}\n"
        f"  local:\n    maildir: {maildir.root}\n    existing: process\n"
        "rules:\n  - {name: clients, when: {from: '*@client.example'}, then: [{move: Clients}]}\n"
    )
    result = run_cli("run", "--once", "-c", str(path))
    assert result.returncode == 3
    assert "dead (127.0.0.1): cannot connect" in result.stderr
    assert maildir.ids("Clients") == [mid]


def test_notify_when_alice_replies_on_imap_once(dovecot_preauth, tmp_path, run_cli, httpserver):
    import json

    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    box = dovecot_preauth
    box.append("INBOX", message("old", "Alice <alice@example.org>", "Re: old"))
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"accounts:\n  work:\n    imap: {tunnel(box)}\n"
        f"notifiers:\n  hook: {{webhook: {{url: {httpserver.url_for('/hook')}}}}}\n"
        "rules:\n  - name: alice replies\n"
        "    when: {from: alice@example.org, header: In-Reply-To, exists: true}\n"
        "    then: [{notify: {to: hook, text: 'Alice: {subject}'}}]\n"
    )
    assert run_cli("run", "--once", "-c", str(path)).returncode == 0  # baseline: no notice
    box.append("INBOX", message("r1", "Alice <alice@example.org>", "Re: lunch",
                                extra="In-Reply-To: <l0@me>\r\n"))  # fmt: skip
    box.append("INBOX", message("r2", "Bob <bob@example.org>", "Re: lunch",
                                extra="In-Reply-To: <l0@me>\r\n"))  # fmt: skip
    result = run_cli("run", "--once", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert run_cli("run", "--once", "-c", str(path)).returncode == 0
    sent = [json.loads(request.get_data()) for request, _ in httpserver.log]
    assert [(d["message_id"], d["text"]) for d in sent] == [("<r1@t>", "Alice: Re: lunch")]


UTF8_TUNNEL = Path(__file__).with_name("imap_utf8_tunnel.py")


def test_utf8_accept_is_enabled_where_offered_and_names_go_as_utf8(
    dovecot_preauth, tmp_path, run_cli
):
    box = dovecot_preauth
    box.append("INBOX", message("u1", "a@client.example", "Grüße"))
    log = tmp_path / "sent.log"
    argv = [sys.executable, str(UTF8_TUNNEL), str(log), *box.argv]
    rules = "- {name: kunden, when: {subject: Grüße}, then: [{move: Kunden/Müller & Söhne}]}\n"
    cfg = config(tmp_path, "{tunnel: [" + ", ".join(f'"{a}"' for a in argv) + "]}", rules=rules)

    result = run_cli("run", "--once", "--all", "-c", str(cfg))

    assert result.returncode == 0, result.stderr
    assert ids(box, "Kunden/Müller & Söhne") == ["<u1@t>"]  # Dovecot stores it as &-encoded
    sent = log.read_bytes()
    assert b"ENABLE UTF8=ACCEPT" in sent
    assert "Kunden/Müller & Söhne".encode() in sent and b"&APw-" not in sent
    listed = run_cli("folders", "work", "-c", str(cfg))
    assert listed.returncode == 0, listed.stderr
    assert "Kunden/Müller & Söhne" in listed.stdout


def test_without_utf8_accept_names_go_as_modified_utf7(dovecot_preauth, tmp_path, run_cli):
    box = dovecot_preauth
    box.append("INBOX", message("u1", "a@client.example", "Grüße"))
    rules = "- {name: kunden, when: {subject: Grüße}, then: [{move: Kunden/Müller & Söhne}]}\n"
    result = run_cli("run", "--once", "--all", "-c", str(config(tmp_path, tunnel(box), rules)))
    assert result.returncode == 0, result.stderr
    assert ids(box, "Kunden/Müller & Söhne") == ["<u1@t>"]


def test_copy_into_the_folder_being_read_adds_no_copy(dovecot_preauth, tmp_path, run_cli):
    """``copy: INBOX`` (or a template that renders to it) while reading INBOX would be new
    mail on the next run, copied again: it is skipped with one warning per run."""
    box = dovecot_preauth
    rules = """
    - {name: self, then: [{copy: inbox}]}
    - {name: rendered, then: [{copy: "{subject}"}]}
    """
    cfg = config(tmp_path, tunnel(box), rules, extra="existing: process\n")
    box.append("INBOX", message("a1", "a@b.example", "INBOX"))
    box.append("INBOX", message("a2", "a@b.example", "INBOX"))

    first = run_cli("run", "--once", "-c", str(cfg))
    second = run_cli("run", "--once", "-c", str(cfg))

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert ids(box, "INBOX") == ["<a1@t>", "<a2@t>"]
    assert "0 new messages" in second.stdout
    assert first.stderr.count("the folder the message is in: nothing to do") == 1


ECHO_SERVER = r"""
import sys
out = sys.stdout.buffer
CAPS = b"CAPABILITY IMAP4rev1 AUTH=XOAUTH2 AUTH=OAUTHBEARER"
out.write(b"* OK [" + CAPS + b"] careless\r\n")
out.flush()
for line in sys.stdin.buffer:
    tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
    if rest.upper().startswith(b"CAPABILITY"):
        out.write(b"* " + CAPS + b"\r\n" + tag + b" OK done\r\n")
    elif rest.upper().startswith(b"AUTHENTICATE"):
        out.write(b"+ \r\n")
        out.flush()
        blob = sys.stdin.buffer.readline().rstrip(b"\r\n")
        out.write(tag + b" NO cannot decode " + blob + b"\r\n")
    else:
        out.write(tag + b" BAD what\r\n")
    out.flush()
"""


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_a_server_echoing_the_sasl_login_shows_no_secret(tmp_path, run_cli, mechanism):
    import base64
    import sys

    script = tmp_path / "echo_server.py"
    script.write_text(ECHO_SERVER)
    imap = flow(
        tunnel=[sys.executable, str(script)],
        username="me",
        oauth2_token_command=["echo", "tok-secret-123"],
        oauth2_mechanism=mechanism,
    )
    result = run_cli("run", "--once", "-c", str(config(tmp_path, imap)))
    assert result.returncode == 3, result.stderr
    assert "cannot decode ***" in result.stderr
    assert "tok-secret-123" not in result.stderr
    xoauth2 = base64.b64encode(b"user=me\x01auth=Bearer tok-secret-123\x01\x01").decode()
    assert xoauth2 not in result.stderr
