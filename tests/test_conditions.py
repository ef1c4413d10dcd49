"""Every condition, through `mailrules run --once` on a real Maildir.

One Maildir holds messages built to hit and to nearly miss each condition; each rule
copies what it matches into a folder named after it (copy lets every rule see every
message), and the test reads the folders back.
"""

from __future__ import annotations

import base64
import sys
from datetime import timedelta

import pytest

from mailrules.message import MessageView
from tests.conftest import NOW

OLD = NOW - timedelta(days=20)
PDF = base64.b64encode(b"%PDF-1.4 " + b"x" * 3000).decode()


def mime(headers: str, body: str) -> bytes:
    return (headers.strip() + "\n\n" + body).encode("latin-1")


@pytest.fixture
def corpus(maildir):
    m = {}
    m["alice"] = maildir.add(
        from_="=?utf-8?q?Alice_M=C3=BCller?= <alice@example.org>",
        to="Sam <sam@example.net>",
        subject="Re: dinner on Saturday",
        in_reply_to="<d1@example.net>",
        flags="S",
        date=NOW - timedelta(hours=2),
    )
    m["phish"] = maildir.add(
        from_='"alice@example.org" <evil@phish.example>',
        to="sam@example.net",
        subject="=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_Berlin?=",
        date=NOW - timedelta(days=400),
    )
    m["client"] = maildir.add(
        from_="Orders <orders@eu.client.example>",
        to="sales@example.net",
        cc="Pat Boss <boss@example.com>",
        sender="relay@mailer.example",
        subject="[SPAM] Invoice 4711 attached",
        x_spam_score="7.5",
        date=NOW - timedelta(days=3),
        flags="FS",
    )
    m["list"] = maildir.add(
        from_="kim@example.org",
        to="dev@lists.example.org",
        subject="[dev] RELEASE notes",
        list_id="Developers <dev.lists.example.org>",
        date=NOW - timedelta(minutes=30),
    )
    m["qp"] = maildir.add(
        raw=mime(
            "From: news@shop.example\nSubject: prices\nMessage-ID: <qp@t>\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=iso-8859-1\n"
            "Content-Transfer-Encoding: quoted-printable",
            "Gro=DFe Auswahl, MAGIC-WORD inside.\n",
        ),
        date=OLD,
    )
    m["html"] = maildir.add(
        raw=mime(
            "From: promo@shop.example\nSubject: offer\nMessage-ID: <html@t>\nMIME-Version: 1.0\n"
            "Content-Type: text/html; charset=utf-8",
            "<html><head><style>.x{}</style></head><body><p>Click <b>here</b> now"
            "</p><script>var hidden='secret token';</script></body></html>\n",
        ),
        date=OLD,
    )
    m["attach"] = maildir.add(
        raw=mime(
            "From: billing@hosting.example\nSubject: your bill\nMessage-ID: <att@t>\n"
            'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"',
            "--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
            + base64.b64encode("Amount due: 12 €\n".encode()).decode()
            + '\n--b\nContent-Type: application/pdf; name="bill.pdf"\n'
            'Content-Disposition: attachment; filename="bill-2026.pdf"\n'
            "Content-Transfer-Encoding: base64\n\n" + PDF + "\n--b--\n",
        ),
        date=OLD,
    )
    (maildir.root / "dovecot-keywords").write_text("0 $Work\n1 Later\n")
    m["kw"] = maildir.add(from_="x@y.example", subject="labelled", flags="Sa", date=OLD)
    return m


RULES = r"""
- {name: from-exact, when: {from: alice@example.org}, then: [{copy: from-exact}]}
- {name: from-glob, when: {from: "*@*.client.example"}, then: [{copy: from-glob}]}
- {name: from-domain, when: {from: "@example.org"}, then: [{copy: from-domain}]}
- {name: from-regex, when: {from: '/^ali.e@example\.org$/'}, then: [{copy: from-regex}]}
- {name: from-name, when: {from: {name: "alice m*"}}, then: [{copy: from-name}]}
- {name: to, when: {to: "sales@example.net"}, then: [{copy: to}]}
- {name: cc, when: {cc: boss@example.com}, then: [{copy: cc}]}
- {name: recipient, when: {recipient: boss@example.com}, then: [{copy: recipient}]}
- {name: sender, when: {sender: "*@mailer.example"}, then: [{copy: sender}]}
- {name: subject-decoded, when: {subject: "grüße"}, then: [{copy: subject-decoded}]}
- {name: subject-is, when: {subject: {is: "re: DINNER on saturday"}}, then: [{copy: subject-is}]}
- {name: subject-case, when: {subject: {contains: release, case_sensitive: true}},
   then: [{copy: subject-case}]}
- {name: subject-glob, when: {subject: {matches: "[[]dev] *"}}, then: [{copy: subject-glob}]}
- {name: header-regex, when: {header: X-Spam-Score, regex: '^[5-9]\.'},
   then: [{copy: header-regex}]}
- {name: header-exists, when: {header: In-Reply-To, exists: true}, then: [{copy: header-exists}]}
- {name: header-absent, when: {header: Message-ID, exists: false}, then: [{copy: header-absent}]}
- {name: body-qp, when: {body: "große auswahl"}, then: [{copy: body-qp}]}
- {name: body-html, when: {body: "click here now"}, then: [{copy: body-html}]}
- {name: body-script, when: {body: "secret token"}, then: [{copy: body-script}]}
- {name: body-base64, when: {body: {regex: 'due: \d+ €'}}, then: [{copy: body-base64}]}
- {name: larger, when: {larger_than: 2KiB}, then: [{copy: larger}]}
- {name: smaller, when: {smaller_than: 200}, then: [{copy: smaller}]}
- {name: older, when: {older_than: 1y}, then: [{copy: older}]}
- {name: newer, when: {newer_than: 90m}, then: [{copy: newer}]}
- {name: mid-age, when: {all: [{older_than: 1d}, {newer_than: 2w}]}, then: [{copy: mid-age}]}
- {name: flags, when: {flags: [flagged, seen]}, then: [{copy: flags}]}
- {name: read, when: {flags: read}, then: [{copy: read}]}
- {name: keywords, when: {keywords: $Work}, then: [{copy: keywords}]}
- {name: list, when: {list: "*.lists.example.org"}, then: [{copy: list}]}
- {name: attachment-any, when: {attachment: true}, then: [{copy: attachment-any}]}
- {name: attachment-pdf, when: {attachment: {name: "*.PDF", type: "application/*",
   larger_than: 1KiB}}, then: [{copy: attachment-pdf}]}
- {name: attachment-big, when: {attachment: {larger_than: 1MiB}}, then: [{copy: attachment-big}]}
- {name: nested, when: {any: [{all: [{from: "@example.org"}, {not: {flags: seen}}]},
   {subject: offer}]}, then: [{copy: nested}]}
- {name: command, when: {command: [PYTHON, -c,
   "import sys; sys.exit(0 if b'MAGIC-WORD' in sys.stdin.buffer.read() else 1)"]},
   then: [{copy: command}]}
"""

EXPECTED = {
    "from-exact": ["alice"],
    "from-glob": ["client"],
    "from-domain": ["alice", "list"],
    "from-regex": ["alice"],
    "from-name": ["alice"],
    "to": ["client"],
    "cc": ["client"],
    "recipient": ["client"],
    "sender": ["client"],
    "subject-decoded": ["phish"],
    "subject-is": ["alice"],
    "subject-case": [],
    "subject-glob": ["list"],
    "header-regex": ["client"],
    "header-exists": ["alice"],
    "header-absent": [],
    "body-qp": ["qp"],
    "body-html": ["html"],
    "body-script": [],
    "body-base64": ["attach"],
    "larger": ["attach"],
    "smaller": ["kw", "phish"],
    "older": ["phish"],
    "newer": ["list"],
    "mid-age": ["client"],
    "flags": ["client"],
    "read": ["alice", "client", "kw"],
    "keywords": ["kw"],
    "list": ["list"],
    "attachment-any": ["attach"],
    "attachment-pdf": ["attach"],
    "attachment-big": [],
    "nested": ["html", "list"],
    "command": ["qp"],
}


def test_every_condition_matches_exactly_its_messages(corpus, maildir, write_config, run_cli):
    config = write_config(RULES.replace("PYTHON", sys.executable))
    result = run_cli("run", "--once", "--all", "-c", str(config))
    assert result.returncode == 0, result.stderr + result.stdout
    names = {mid: key for key, mid in corpus.items()}
    for folder, expected in EXPECTED.items():
        got = (
            sorted(names[mid] for mid in maildir.ids(folder))
            if (maildir.folder_path(folder).exists())
            else []
        )
        assert got == sorted(expected), f"{folder}: {got} != {expected}"
    # keywords travel with a copy: the letter is re-mapped through the new folder's table
    assert "$Work" in (maildir.folder_path("keywords") / "dovecot-keywords").read_text()
    # copies leave every original in INBOX
    assert len(maildir.ids()) == len(corpus)


def test_display_name_never_matches_an_address_rule(maildir, write_config, run_cli):
    mid = maildir.add(from_='"alice@example.org" <evil@phish.example>', subject="hi")
    config = write_config(
        "- {name: a, when: {from: [alice@example.org, '*@example.org']}, then: [{move: A}]}\n"
    )
    assert run_cli("run", "--once", "--all", "-c", str(config)).returncode == 0
    assert maildir.ids() == [mid]


def test_explain_names_the_deciding_condition_with_decoded_values(
    corpus, maildir, write_config, run_cli
):
    config = write_config(
        "- {name: spam, when: {subject: '[SPAM]'}, then: [{move: Spam}]}\n"
        "- {name: friends, when: {all: [{from: '@example.org'}, {header: In-Reply-To, "
        "exists: true}]}, then: [{flag: flagged}]}\n"
    )
    phish = next(p for p in maildir.files() if b"phish" in p.read_bytes())
    alice = next(
        p
        for p in maildir.files()
        if b"alice@example.org>" in p.read_bytes() and b"dinner" in p.read_bytes()
    )
    result = run_cli("explain", "-c", str(config), str(phish), str(alice))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Subject: 'Grüße aus Berlin'" in out
    assert "[no   ] spam: subject 'Grüße aus Berlin' does not match: contains '[SPAM]'" in out
    assert "from evil@phish.example does not match: domain is 'example.org'" in out
    assert "From: Alice Müller <alice@example.org>" in out
    assert (
        "[MATCH] friends: from 'alice@example.org' domain is 'example.org'; In-Reply-To exists"
        in out
    )
    assert "-> flag +flagged" in out
    # explain never changes anything
    assert not maildir.folder_path("Spam").exists()


def test_a_decided_message_summary_keeps_what_the_audit_shows():
    """What a full pass keeps of a message no action will read: subject, Message-ID, From."""
    view = MessageView.from_bytes(
        b"From: Anna <Anna@Kunde.example>\r\nTo: me@example.net\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <m1@kunde.example>\r\n\r\nbody\r\n",
        name="UID 7",
    )
    summary = view.summary()
    assert (summary.name, summary.subject, summary.message_id) == (
        "UID 7", "Grüße", "<m1@kunde.example>"
    )  # fmt: skip
    assert [a.address for a in summary.addresses("from")] == ["anna@kunde.example"]
    with pytest.raises(ValueError, match="only the From"):
        summary.addresses("recipient")
