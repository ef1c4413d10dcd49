"""IMAP account settings: what `mailrules check` accepts and refuses, and SEARCH translation."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from mailrules.config.load import parse_config
from mailrules.errors import ConfigError
from mailrules.rules.search import to_search
from mailrules.sources.imap import parse_uid_set, uid_set

RULES = "rules:\n  - {name: r, then: [{move: X}]}\n"


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml")
    return str(caught.value)


def account(imap: str) -> str:
    return f"accounts:\n  work:\n    imap: {imap}\n" + RULES


def test_valid_imap_accounts_pass():
    for imap in (
        "{host: imap.example.com, username: me, password_command: [pass, show, mail]}",
        "{host: imap.example.com, security: starttls, username: me, password_file: pw}",
        "{host: 127.0.0.1, port: 10143, security: plain, username: u, password: p}",
        "{tunnel: [ssh, mailhost, /usr/lib/dovecot/imap]}",
        "{host: h.example, username: me, oauth2_token_command: [tok], "
        "oauth2_mechanism: oauthbearer, fingerprint: 'sha256:" + "ab" * 32 + "'}",
    ):
        config = parse_config(account(imap), "c.yaml")
        assert config.accounts["work"].kind == "imap"


@pytest.mark.parametrize(
    ("imap", "needle"),
    [
        (
            "{host: mail.example.com, security: plain, username: u, password: p}",
            "c.yaml:3:46: accounts.work.imap.security: plain sends your password unencrypted",
        ),
        ("{host: h, username: u}", "give exactly one of password, password_file"),
        (
            "{host: h, username: u, password: p, password_file: f}",
            "(found password, password_file)",
        ),
        ("{host: h, password: p}", "missing required key 'username'"),
        ("{host: h, tunnel: [ssh, h], username: u, password: p}", "either tunnel or host/port"),
        ("{username: u, password: p}", "missing required key 'host' (or a tunnel command)"),
        ("{host: h, username: u, password: p, fingerprint: 'md5:12'}", "expected sha256:"),
        (
            "{host: h, username: u, password: p, securty: tls}",
            "unknown key 'securty'; did you mean 'security'?",
        ),
        ("{host: h, username: u, password: p, security: ssl}", "expected one of 'tls', "),
        ("{host: h, username: u, password: p, timeout: 30}", "write it with a unit"),
        ("{host: h, username: u, password: p, port: 99999}", "less than or equal to 65535"),
    ],
)
def test_imap_mistakes_are_reported_with_position(imap, needle):
    assert needle in problems(account(imap))


def test_maildir_and_imap_together_is_an_error():
    text = "accounts:\n  a:\n    maildir: /tmp/x\n    imap: {tunnel: [x]}\n" + RULES
    assert "c.yaml:3:5: accounts.a: give exactly one of maildir, imap or pop3" in problems(text)


def test_uid_sets_are_compact_and_round_trip():
    assert uid_set([5, 1, 2, 3, 9, 10, 12]) == "1:3,5,9:10,12"
    assert parse_uid_set("1:3,5,10:9") == [1, 2, 3, 5, 9, 10]


def conditions(when: str):
    text = (
        "accounts:\n  a:\n    maildir: /tmp/x\n"
        f"rules:\n  - {{name: r, when: {when}, then: [stop]}}\n"
    )
    return parse_config(text, "c.yaml").rules[0].condition


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("when", "criteria", "exact"),
    [
        ("{from: alice@example.org}", ["FROM", "alice@example.org"], False),
        ("{from: '*@client.example'}", ["FROM", "@client.example"], False),
        ("{from: [a@x, b@y]}", ["OR", ["FROM", "a@x"], ["FROM", "b@y"]], False),
        ("{subject: '[SPAM]'}", ["SUBJECT", "[SPAM]"], False),
        ("{subject: Grüße}", ["SUBJECT", "Grüße".encode()], False),
        ("{header: List-Id, contains: announce}", ["HEADER", "LIST-ID", "announce"], False),
        ("{header: In-Reply-To, exists: true}", ["HEADER", "IN-REPLY-TO", ""], False),
        ("{larger_than: 100KiB}", ["LARGER", 102400], True),
        ("{flags: [seen, flagged]}", ["FLAGGED", "SEEN"], True),
        ("{not: {flags: seen}}", ["NOT", ["SEEN"]], True),
        ("{older_than: 365d}", ["BEFORE", date(2025, 11, 27)], False),
        (
            "{all: [{older_than: 365d}, {larger_than: 100KiB}]}",
            [["BEFORE", date(2025, 11, 27)], ["LARGER", 102400]],
            False,
        ),
    ],
)
def test_conditions_translate_to_search_supersets(when, criteria, exact):
    found = to_search(conditions(when), NOW)
    assert found is not None
    assert found.criteria == criteria
    assert found.exact is exact


@pytest.mark.parametrize(
    "when",
    [
        "{subject: {regex: '^a'}}",
        "{body: x}",
        "{not: {subject: x}}",  # negating a superset could lose matches
        "{any: [{subject: x}, {body: yy}]}",
        "{attachment: true}",
        "{recipient: a@b}",
    ],
)
def test_conditions_the_server_cannot_decide_do_not_narrow(when):
    assert to_search(conditions(when), NOW) is None
