# ruff: noqa: E501
"""Deterministic corpus of 20 varied test messages for the interop tier (tests/servers).

Every test server is seeded with exactly these bytes (CRLF line
endings, except where a message deliberately breaks the rules), so a client
test can rely on a known mailbox:

  - 20 messages in INBOX, in this order (index 1..20 == sequence number)
  - 8 of them have "alice" in From (UID SEARCH FROM "alice" -> 8 hits:
    messages 1, 3, 6, 8, 11, 15, 18, 20)
  - message 11 contains one bare LF, message 12 has raw 8-bit UTF-8 in
    its Subject and From display name, message 10 has a single 2,000+
    character unfolded header line.

Usage:
  seed_messages.py list                       # table of the corpus
  seed_messages.py maildir DIR [--owner U:G] [--crlf]  # DIR/{cur,new,tmp}, LF line ends
  seed_messages.py dir DIR [--lf]             # DIR/01.eml .. DIR/20.eml
  seed_messages.py imap-append HOST PORT USER PASS [MAILBOX] [--ssl]
  seed_messages.py json                       # metadata as JSON

Only the standard library is used.
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import json
import os
import sys

CRLF = "\r\n"

# Fixed, so every run produces byte-identical messages.
_DATES = [
    "Mon, 01 Jan 2024 09:00:00 +0000",
    "Tue, 02 Jan 2024 10:15:00 +0100",
    "Wed, 03 Jan 2024 11:30:00 -0500",
    "Thu, 04 Jan 2024 12:45:00 +0530",
    "Fri, 05 Jan 2024 13:00:00 +0000",
    "Sat, 06 Jan 2024 14:10:00 +0200",
    "Sun, 07 Jan 2024 15:20:00 -0800",
    "Mon, 08 Jan 2024 16:30:00 +0900",
    "Tue, 09 Jan 2024 17:40:00 +0000",
    "Wed, 10 Jan 2024 18:50:00 +0100",
    "Thu, 11 Jan 2024 19:00:00 +0000",
    "Fri, 12 Jan 2024 20:05:00 +0000",
    "Sat, 13 Jan 2024 21:15:00 +0000",
    "Sun, 14 Jan 2024 22:25:00 +0000",
    "Mon, 15 Jan 2024 23:35:00 +0000",
    "Tue, 16 Jan 2024 08:00:00 +0000",
    "Wed, 17 Jan 2024 07:00:00 +0000",
    "18 Jan 2024 06:00:00 GMT",  # no day-of-week, obsolete zone name
    "Fri, 19 Jan 2024 05:00:00 +0000",
    "Sat, 20 Jan 2024 04:00:00 +0000",
]

ALICE = "Alice Example <alice@example.org>"
BOB = "Bob Builder <bob@example.net>"
CAROL = "carol@example.com"
TEST = "Test User <testuser@lab.test>"

# 1x1 transparent PNG
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def _b64lines(data: bytes, width: int = 76) -> str:
    s = base64.b64encode(data).decode("ascii")
    return CRLF.join(s[i : i + width] for i in range(0, len(s), width))


def _hdr(n: int, frm: str, subject: str, to: str = TEST, extra=()) -> list[str]:
    h = [
        f"Return-Path: <{_addr(frm)}>",
        f"Message-ID: <lab-{n:02d}@interop.lab.test>",
        f"Date: {_DATES[n - 1]}",
        f"From: {frm}",
        f"To: {to}",
        f"Subject: {subject}",
    ]
    h.extend(extra)
    return h


def _addr(frm: str) -> str:
    if "<" in frm:
        return frm.split("<", 1)[1].split(">", 1)[0]
    return frm


def _join(headers: list[str], body: str) -> bytes:
    return (CRLF.join(headers) + CRLF + CRLF + body).encode("utf-8")


def _build() -> list[tuple[str, bytes]]:
    msgs: list[tuple[str, bytes]] = []

    # 1 plain ASCII
    msgs.append(
        (
            "plain-ascii",
            _join(
                _hdr(
                    1,
                    ALICE,
                    "Plain ASCII message",
                    extra=["MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii"],
                ),
                "Hello,\r\n\r\nThis is a plain ASCII test message.\r\n\r\n-- \r\nAlice\r\n",
            ),
        )
    )

    # 2 plain, different sender, lines starting with '.' and 'From '
    msgs.append(
        (
            "dot-and-from-lines",
            _join(
                _hdr(
                    2,
                    BOB,
                    "Lines starting with dot and From",
                    extra=["MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii"],
                ),
                ".leading dot line\r\n..two dots\r\n.\r\nFrom the start of a line\r\n>From quoted\r\nend\r\n",
            ),
        )
    )

    # 3 multipart/alternative
    msgs.append(
        (
            "multipart-alternative",
            _join(
                _hdr(
                    3,
                    ALICE,
                    "multipart/alternative text+html",
                    extra=[
                        "MIME-Version: 1.0",
                        'Content-Type: multipart/alternative; boundary="=_alt_3"',
                    ],
                ),
                "This is a multi-part message in MIME format.\r\n"
                "--=_alt_3\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
                "Plain part of message 3.\r\n"
                "--=_alt_3\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
                "<html><body><p>HTML part of <b>message 3</b>.</p></body></html>\r\n"
                "--=_alt_3--\r\n",
            ),
        )
    )

    # 4 attachment (binary, base64)
    msgs.append(
        (
            "attachment-png",
            _join(
                _hdr(
                    4,
                    CAROL,
                    "Attachment: tiny PNG",
                    extra=[
                        "MIME-Version: 1.0",
                        'Content-Type: multipart/mixed; boundary="=_mix_4"',
                    ],
                ),
                "--=_mix_4\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee the attached pixel.\r\n"
                '--=_mix_4\r\nContent-Type: image/png; name="pixel.png"\r\n'
                'Content-Disposition: attachment; filename="pixel.png"\r\n'
                "Content-Transfer-Encoding: base64\r\n\r\n" + _b64lines(_PNG) + "\r\n"
                "--=_mix_4--\r\n",
            ),
        )
    )

    # 5 text attachment with RFC 2231 filename
    csv = "id,name,city\r\n1,Zo\u00eb,K\u00f8benhavn\r\n2,Jos\u00e9,S\u00e3o Paulo\r\n"
    msgs.append(
        (
            "attachment-rfc2231",
            _join(
                _hdr(
                    5,
                    BOB,
                    "Attachment with RFC 2231 filename",
                    extra=[
                        "MIME-Version: 1.0",
                        'Content-Type: multipart/mixed; boundary="=_mix_5"',
                    ],
                ),
                "--=_mix_5\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nCSV attached.\r\n"
                "--=_mix_5\r\nContent-Type: text/csv; charset=utf-8\r\n"
                "Content-Disposition: attachment; filename*=utf-8''donn%C3%A9es%20%C3%A9t%C3%A9.csv\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n"
                + _b64lines(csv.encode("utf-8"))
                + "\r\n"
                "--=_mix_5--\r\n",
            ),
        )
    )

    # 6 RFC 2047 B-encoded UTF-8 subject and display name
    msgs.append(
        (
            "rfc2047-b-utf8",
            _join(
                _hdr(
                    6,
                    "=?UTF-8?B?w4VzYSBBbGljZSDDmHN0ZXJnw6VyZA==?= <alice@example.org>",
                    "=?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4g4oCUIOKCrDEwMA==?=",
                    extra=["MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii"],
                ),
                "Subject decodes to: Gruesse aus Muenchen, with umlauts, em dash and euro sign.\r\n",
            ),
        )
    )

    # 7 RFC 2047 Q-encoded ISO-8859-1 subject, split across folded encoded-words
    msgs.append(
        (
            "rfc2047-q-latin1",
            _join(
                _hdr(
                    7,
                    CAROL,
                    "=?ISO-8859-1?Q?Caf=E9_cr=E8me_br=FBl=E9e?=\r\n =?ISO-8859-1?Q?_et_g=E2teau?=",
                    extra=["MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii"],
                ),
                "Folded Q-encoded subject.\r\n",
            ),
        )
    )

    # 8 non-ASCII UTF-8 body, 8bit CTE
    msgs.append(
        (
            "utf8-body-8bit",
            _join(
                _hdr(
                    8,
                    ALICE,
                    "UTF-8 body (8bit)",
                    extra=[
                        "MIME-Version: 1.0",
                        "Content-Type: text/plain; charset=utf-8",
                        "Content-Transfer-Encoding: 8bit",
                    ],
                ),
                "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\r\n"
                "\u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442.\r\n"
                "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac. Emoji: \U0001f600 \U0001f4e7\r\n"
                "\u00c5ngstr\u00f6m na\u00efve fa\u00e7ade\r\n",
            ),
        )
    )

    # 9 UTF-8 body, quoted-printable
    qp = "Gr=C3=BC=C3=9Fe! Stra=C3=9Fe, =C3=A9t=C3=A9, =E2=82=AC5.\r\nA soft line break=\r\n continues here.\r\n"
    msgs.append(
        (
            "utf8-body-qp",
            _join(
                _hdr(
                    9,
                    BOB,
                    "UTF-8 body (quoted-printable)",
                    extra=[
                        "MIME-Version: 1.0",
                        "Content-Type: text/plain; charset=utf-8",
                        "Content-Transfer-Encoding: quoted-printable",
                    ],
                ),
                qp,
            ),
        )
    )

    # 10 very long unfolded header line (> 998 octets), plus a long folded one
    long_val = " ".join(f"token{i:04d}" for i in range(220))  # ~2,200 chars
    refs = "\r\n ".join(f"<ref-{i:03d}@interop.lab.test>" for i in range(40))
    msgs.append(
        (
            "long-header-line",
            _join(
                _hdr(
                    10,
                    CAROL,
                    "Very long header line",
                    extra=[
                        "MIME-Version: 1.0",
                        "Content-Type: text/plain; charset=us-ascii",
                        f"X-Long-Header: {long_val}",
                        f"References: {refs}",
                    ],
                ),
                f"X-Long-Header is {len(long_val)} characters on one line.\r\n",
            ),
        )
    )

    # 11 bare LF in the body (the rest is CRLF)
    b = _join(
        _hdr(
            11,
            ALICE,
            "Message with a bare LF",
            extra=["MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii"],
        ),
        "Line one ends in CRLF.\r\nLine two ends in a bare LF.\nLine three ends in CRLF.\r\n",
    )
    msgs.append(("bare-lf", b))

    # 12 raw 8-bit (UTF-8) in headers, no RFC 2047
    msgs.append(
        (
            "8bit-header",
            _join(
                _hdr(
                    12,
                    "J\u00fcrgen M\u00fcller <juergen@example.de>",
                    "8-bit Subject: \u00dcberraschung \u2014 na\u00efve",
                    extra=[
                        "MIME-Version: 1.0",
                        "Content-Type: text/plain; charset=utf-8",
                        "Content-Transfer-Encoding: 8bit",
                    ],
                ),
                "The Subject and From headers contain raw UTF-8 octets.\r\n",
            ),
        )
    )

    # 13 forwarded message/rfc822
    inner = (
        "From: Dave <dave@example.org>\r\nTo: alice@example.org\r\nSubject: Inner message\r\n"
        "Date: Mon, 25 Dec 2023 10:00:00 +0000\r\nMessage-ID: <inner-13@interop.lab.test>\r\n\r\n"
        "This is the encapsulated message.\r\n"
    )
    msgs.append(
        (
            "message-rfc822",
            _join(
                _hdr(
                    13,
                    BOB,
                    "Fwd: Inner message",
                    extra=[
                        "MIME-Version: 1.0",
                        'Content-Type: multipart/mixed; boundary="=_fwd_13"',
                    ],
                ),
                "--=_fwd_13\r\nContent-Type: text/plain\r\n\r\nForwarding below.\r\n"
                "--=_fwd_13\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
                + inner
                + "--=_fwd_13--\r\n",
            ),
        )
    )

    # 14 multipart/related with inline cid image
    msgs.append(
        (
            "multipart-related",
            _join(
                _hdr(
                    14,
                    CAROL,
                    "multipart/related inline image",
                    extra=[
                        "MIME-Version: 1.0",
                        'Content-Type: multipart/related; type="text/html"; boundary="=_rel_14"',
                    ],
                ),
                "--=_rel_14\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n"
                '<html><body><img src="cid:px14@lab"></body></html>\r\n'
                "--=_rel_14\r\nContent-Type: image/png\r\nContent-ID: <px14@lab>\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n" + _b64lines(_PNG) + "\r\n"
                "--=_rel_14--\r\n",
            ),
        )
    )

    # 15 empty body, minimal headers (no MIME-Version)
    msgs.append(("empty-body", _join(_hdr(15, ALICE, "Empty body"), "")))

    # 16 larger message (~64 KiB) for partial fetch / TOP
    lines = [f"{i:05d} The quick brown fox jumps over the lazy dog." for i in range(1, 1401)]
    msgs.append(
        (
            "large-64k",
            _join(
                _hdr(
                    16,
                    BOB,
                    "Large message (about 64 KiB)",
                    extra=["MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii"],
                ),
                CRLF.join(lines) + CRLF,
            ),
        )
    )

    # 17 many recipients, Cc, Reply-To, group syntax
    msgs.append(
        (
            "many-recipients",
            _join(
                _hdr(
                    17,
                    CAROL,
                    "Many recipients",
                    to='"Doe, John" <john@example.org>, undisclosed-recipients:;, testuser@lab.test',
                    extra=[
                        "Cc: alice@example.org, Bob <bob@example.net>",
                        "Reply-To: replies@example.com",
                        "MIME-Version: 1.0",
                        "Content-Type: text/plain; charset=us-ascii",
                    ],
                ),
                "Headers with quoted commas and a group.\r\n",
            ),
        )
    )

    # 18 reply with In-Reply-To, obsolete date format, comments in From
    msgs.append(
        (
            "reply-obs-date",
            _join(
                _hdr(
                    18,
                    "alice@example.org (Alice in a comment)",
                    "Re: Plain ASCII message",
                    extra=[
                        "In-Reply-To: <lab-01@interop.lab.test>",
                        "References: <lab-01@interop.lab.test>",
                        "MIME-Version: 1.0",
                        "Content-Type: text/plain; charset=us-ascii",
                    ],
                ),
                "> Hello,\r\n\r\nReply body.\r\n",
            ),
        )
    )

    # 19 ISO-8859-1 8-bit body (not UTF-8)
    latin1_body = "Caf\u00e9 \u00e0 la cr\u00e8me, \u00fcber, \u00f1and\u00fa.\r\n".encode(
        "iso-8859-1"
    )
    h19 = _hdr(
        19,
        BOB,
        "ISO-8859-1 8bit body",
        extra=[
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=iso-8859-1",
            "Content-Transfer-Encoding: 8bit",
        ],
    )
    msgs.append(("latin1-8bit-body", (CRLF.join(h19) + CRLF + CRLF).encode("ascii") + latin1_body))

    # 20 nested multipart: mixed > alternative(text, related(html, img)) + attachment
    msgs.append(
        (
            "nested-multipart",
            _join(
                _hdr(
                    20,
                    ALICE,
                    "Nested multipart structure",
                    extra=["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="=_o20"'],
                ),
                '--=_o20\r\nContent-Type: multipart/alternative; boundary="=_a20"\r\n\r\n'
                "--=_a20\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain 20\r\n"
                '--=_a20\r\nContent-Type: multipart/related; boundary="=_r20"\r\n\r\n'
                '--=_r20\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<p>html 20 <img src="cid:i20@lab"></p>\r\n'
                "--=_r20\r\nContent-Type: image/png\r\nContent-ID: <i20@lab>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + _b64lines(_PNG)
                + "\r\n--=_r20--\r\n"
                "--=_a20--\r\n"
                '--=_o20\r\nContent-Type: application/octet-stream; name="blob.bin"\r\n'
                'Content-Disposition: attachment; filename="blob.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
                + _b64lines(bytes(range(256)))
                + "\r\n--=_o20--\r\n",
            ),
        )
    )

    assert len(msgs) == 20
    return msgs


MESSAGES = _build()
FROM_ALICE = [
    i + 1
    for i, (_, m) in enumerate(MESSAGES)
    if b"alice" in m.split(b"\r\nFrom: ", 1)[1].split(b"\r\n", 1)[0].lower()
]


def messages() -> list[tuple[str, bytes]]:
    return list(MESSAGES)


def meta() -> list[dict]:
    out = []
    for i, (name, data) in enumerate(MESSAGES, 1):
        out.append(
            {
                "n": i,
                "name": name,
                "size": len(data),
                "sha1": hashlib.sha1(data).hexdigest(),
                "message_id": f"<lab-{i:02d}@interop.lab.test>",
            }
        )
    return out


def write_maildir(root: str, owner: str | None = None, crlf: bool = False) -> None:
    """Write a Maildir (cur/new/tmp) with all 20 messages in cur/ (unseen).

    File names sort in message order, so every Maildir server assigns
    UIDs 1..20 in corpus order.  Maildir files conventionally use bare LF
    line ends and several servers (Courier) turn every LF into CRLF blindly
    (CRLF files come out as CR CR LF), so line ends are converted to LF
    unless crlf=True.  In LF form message 11's bare LF is indistinguishable
    from the other line ends: that test only means something for stores
    that keep raw octets (IMAP APPEND, the Tcl directory store).
    """
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    base = 1704067200  # 2024-01-01T00:00:00Z
    for i, (_name, data) in enumerate(MESSAGES, 1):
        if not crlf:
            data = data.replace(b"\r\n", b"\n")
        fn = f"{base + i}.M{i:02d}P1.interop-lab,S={len(data)}:2,"
        path = os.path.join(root, "cur", fn)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (base + i, base + i))
    if owner:
        _chown_tree(root, owner)


def write_dir(root: str, lf: bool = False) -> None:
    """DIR/01.eml .. DIR/20.eml, raw CRLF octets (LF line ends with lf=True)."""
    os.makedirs(root, exist_ok=True)
    for i, (_name, data) in enumerate(MESSAGES, 1):
        if lf:
            data = data.replace(b"\r\n", b"\n")
        with open(os.path.join(root, f"{i:02d}.eml"), "wb") as f:
            f.write(data)


def _chown_tree(root: str, owner: str) -> None:
    import grp
    import pwd

    u, _, g = owner.partition(":")
    uid = int(u) if u.isdigit() else pwd.getpwnam(u).pw_uid
    gid = int(g) if g.isdigit() else (grp.getgrnam(g).gr_gid if g else -1)
    for dp, _dns, fns in os.walk(root):
        os.chown(dp, uid, gid)
        for fn in fns:
            os.chown(os.path.join(dp, fn), uid, gid)


def imap_append(
    host: str,
    port: int,
    user: str,
    password: str,
    mailbox: str = "INBOX",
    use_ssl: bool = False,
    fallback_crlf: bool = True,
) -> list[str]:
    """APPEND all messages in order. Returns a list of notes for messages the
    server refused as-is (then retried with all line endings normalised)."""
    notes = []
    M = (imaplib.IMAP4_SSL if use_ssl else imaplib.IMAP4)(host, port)
    M.login(user, password)
    for i, (name, data) in enumerate(MESSAGES, 1):
        date = imaplib.Time2Internaldate(1704067200 + i * 3600)
        try:
            typ, resp = M.append(mailbox, None, date, data)
        except imaplib.IMAP4.error as e:
            typ, resp = "NO", [str(e).encode()]
        if typ != "OK":
            if not fallback_crlf:
                raise RuntimeError(f"APPEND {i} {name}: {resp}")
            fixed = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            notes.append(
                f"msg {i} ({name}) refused as-is: {resp!r}; appended with CRLF-normalised line ends"
            )
            typ, resp = M.append(mailbox, None, date, fixed)
            if typ != "OK":
                raise RuntimeError(f"APPEND {i} {name} (normalised): {resp}")
    M.logout()
    return notes


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd = argv[0]
    if cmd == "list":
        for m in meta():
            print(f"{m['n']:2d} {m['size']:6d} {m['sha1'][:12]} {m['name']}")
        print("from alice:", FROM_ALICE)
    elif cmd == "json":
        print(json.dumps({"messages": meta(), "from_alice": FROM_ALICE}, indent=1))
    elif cmd == "maildir":
        owner = None
        if "--owner" in argv:
            owner = argv[argv.index("--owner") + 1]
        write_maildir(argv[1], owner, crlf="--crlf" in argv)
    elif cmd == "dir":
        write_dir(argv[1], lf="--lf" in argv)
    elif cmd == "imap-append":
        host, port, user, pw = argv[1], int(argv[2]), argv[3], argv[4]
        rest = [a for a in argv[5:] if not a.startswith("--")]
        mbox = rest[0] if rest else "INBOX"
        for n in imap_append(host, port, user, pw, mbox, use_ssl="--ssl" in argv):
            print("note:", n)
    else:
        print(f"unknown command {cmd!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
