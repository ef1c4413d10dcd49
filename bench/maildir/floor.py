#!/usr/bin/env python3
"""The floor: a plain Python loop that applies the 20 rules of rules20.yaml to a Maildir INBOX.

    floor.py MAILDIR                  parse every message whole with the stdlib (the naive script)
    floor.py MAILDIR --headers-only   parse only the header bytes (a stronger floor)

It is what someone would write by hand instead of installing mailrules: list cur/ and new/,
parse each message with ``email.parser.BytesParser(policy=email.policy.default)`` (or
``BytesHeaderParser`` on the header block only), decide with the rules written out in
Python, and act at once: ``os.rename`` to move or to change flags, ``os.unlink`` to
delete, ``os.link`` to copy. It keeps no state, so a second run parses everything again.
It never fsyncs: after a power loss, part of a run's work may be undone. (mailrules links,
fsyncs, then unlinks, and fsyncs each batch before recording it in its state.)

The rules must stay in step with rules20.yaml; verify.py compares the end states. Two
details that mailrules also handles:

* sizes are the CRLF size, as IMAP RFC822.SIZE and mailrules count it: the ``W=`` field
  of the file name when present, else counted from the bytes;
* keywords are letters in the file name that index the folder's ``dovecot-keywords``
  file. A move or copy to another folder maps them through the destination's table.

Standard library only.
"""

import argparse
import email.parser
import email.policy
import hashlib
import os
import re
import sys
import time

CLIENTS = frozenset({
    "anna.schmidt@kunde-gmbh.example",
    "j.dupont@client-sa.example",
    "kenji.tanaka@nippon-trade.example",
    "orders@acme-industries.example",
    "procurement@globex.example",
})
BOSS = "boss@example.com"
DAY = 86400
SIZE_LIMIT = 100 * 1024

RE_BUILD = re.compile(r"\] build failed\b", re.I)
RE_INVOICE = re.compile(r"\b(invoice|rechnung|facture)\b", re.I)
RE_COMMUNITY = re.compile(r"^(?P<name>users|linux-kernel)\.", re.I)
RE_REPLY = re.compile(r"^(re|fwd?):", re.I)
RE_JAPANESE = re.compile("[\u3040-\u30ff\u4e00-\u9fff]")
RE_LIST_ID = re.compile(r"<([^<>]*)>")
RE_W = re.compile(r",W=(\d+)")
HEADER_END = re.compile(rb"\r?\n\r?\n")


def collapse(text):
    return " ".join(text.split())


def addresses(msg, name):
    """[(addr-spec lower-cased, display name)] of every occurrence of an address header."""
    out = []
    for header in msg.get_all(name) or ():
        try:
            for a in header.addresses:
                out.append((a.addr_spec.lower(), collapse(a.display_name or "")))
        except Exception:  # a malformed address list matches nothing
            continue
    return out


def domain(addr):
    return addr.rpartition("@")[2] if "@" in addr else ""


def decide(msg, size, age, flags):
    """The 20 rules of rules20.yaml, in order. Returns the actions: a list of tuples."""
    frm = addresses(msg, "from")
    from_addrs = [a for a, _ in frm]
    subject = collapse(str(msg.get("subject") or ""))
    subject_cf = subject.casefold()
    list_hdrs = [collapse(str(v)) for v in (msg.get_all("list-id") or ())]
    list_raw = list_hdrs[0] if list_hdrs else ""
    found = RE_LIST_ID.search(list_raw)
    list_id = (found.group(1) if found else list_raw).strip().lower()

    # R1-R5: the reference rules, first match wins.
    if any(a in CLIENTS for a in from_addrs):
        return [("move", "Clients")]
    if "[spam]" in subject_cf:
        return [("expunge",)]
    if any("announce" in v.casefold() for v in list_hdrs):
        return [("move", "Lists")]
    if BOSS in from_addrs:
        return [("flag", "F")]  # and stop
    if age > 365 * DAY and size > SIZE_LIMIT:
        return [("move", "Archive")]

    # Rules 6-20: non-moving rules let the message go on to the next rule.
    actions = []
    if RE_BUILD.search(subject):
        actions.append(("keyword", "$BuildFailed"))
    if "notifications@github.example" in from_addrs:
        return [*actions, ("move", "Dev/GitHub")]
    if any(a.endswith("@tracker.example") for a in from_addrs):
        return [*actions, ("move", "Dev/Jira")]
    if RE_INVOICE.search(subject) or any(domain(a) == "hosting.example" for a in from_addrs):
        actions.append(("copy", "Finance/Invoices"))
    if any(domain(a) == "bank.example" for a in from_addrs):
        return [*actions, ("move", "Finance/Bank")]
    if any(a in ("newsletter@shop.example", "deals@travel.example") for a in from_addrs):
        return [*actions, ("move", "Newsletters")]
    if list_id and list_id.endswith(".lists.example.org"):
        return [*actions, ("move", "Lists/Dev")]
    m = RE_COMMUNITY.search(list_id) if list_id else None
    if m:
        return [*actions, ("move", "Lists/" + clean_component(m.group("name")))]
    if "list-id" in msg:
        return [*actions, ("move", "Lists/Other")]
    if any(domain(a) == "example.com" for a in from_addrs) and "in-reply-to" not in msg:
        actions.append(("keyword", "$Work"))
    if any(a.startswith("helpdesk@") for a in from_addrs) and not RE_REPLY.search(subject):
        return [*actions, ("move", "IT")]
    if any(a == "mom@family.example" or domain(a) == "friends.example"
           or name.casefold() == "anna schmidt" for a, name in frm):
        return [*actions, ("move", "Personal")]
    if any(a in CLIENTS for a, _ in addresses(msg, "cc")):
        actions.append(("flag", "F"))
    if RE_JAPANESE.search(subject):
        actions.append(("keyword", "$Japanese"))
    if age > 180 * DAY and "S" not in flags and any(
            "phpmailer" in collapse(str(v)).casefold() for v in msg.get_all("x-mailer") or ()):
        return [*actions, ("flag", "S"), ("move", "Archive/Unread")]
    return actions


def clean_component(value):
    value = value.replace("/", "_").strip().replace(".", "_")
    return value if value not in ("", ".", "..") else "_"


class Maildir:
    """Just enough of a Maildir++ tree: folder paths, keyword tables, renames."""

    def __init__(self, root):
        self.root = root
        self.made = set()
        self.tables = {}  # folder dir -> {name: letter}
        self.dirty = set()
        self.listed = {}  # folder dir -> set of unique names

    def folder_dir(self, name):
        return self.root if name == "INBOX" else os.path.join(self.root, "." + name.replace("/", "."))

    def ensure(self, name):
        path = self.folder_dir(name)
        if path not in self.made:
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(path, sub), exist_ok=True)
            if path != self.root:
                open(os.path.join(path, "maildirfolder"), "a").close()
            self.made.add(path)
        return path

    def uniques(self, fdir):
        """The unique names of the messages in a folder, listed once per run."""
        if fdir not in self.listed:
            self.listed[fdir] = {n.partition(":2,")[0] for sub in ("cur", "new")
                                 for n in os.listdir(os.path.join(fdir, sub))}
        return self.listed[fdir]

    def table(self, fdir):
        if fdir not in self.tables:
            t = {}
            try:
                with open(os.path.join(fdir, "dovecot-keywords")) as fh:
                    for line in fh:
                        num, _, name = line.rstrip("\n").partition(" ")
                        if num.isdigit() and name:
                            t[name] = chr(97 + int(num))
            except OSError:
                pass
            self.tables[fdir] = t
        return self.tables[fdir]

    def letter(self, fdir, word):
        t = self.table(fdir)
        if word not in t:
            used = set(t.values())
            t[word] = next(chr(97 + i) for i in range(26) if chr(97 + i) not in used)
            self.dirty.add(fdir)
        return t[word]

    def translate(self, src_dir, dst_dir, info):
        """Map keyword letters from one folder's table to another's."""
        if src_dir == dst_dir or not any("a" <= c <= "z" for c in info):
            return info
        names = {v: k for k, v in self.table(src_dir).items()}
        out = {c for c in info if not "a" <= c <= "z"}
        out |= {self.letter(dst_dir, names[c]) for c in info if "a" <= c <= "z" and c in names}
        return "".join(sorted(out))

    def save_tables(self):
        for fdir in self.dirty:
            rows = sorted((ord(v) - 97, k) for k, v in self.tables[fdir].items())
            with open(os.path.join(fdir, "dovecot-keywords"), "w") as fh:
                fh.writelines("%d %s\n" % r for r in rows)


def split(path):
    sub = os.path.basename(os.path.dirname(path))
    unique, _, info = os.path.basename(path).partition(":2,")
    return sub, unique, info


def apply(box, path, actions):
    """Do the actions on one message in INBOX, in order."""
    inbox = box.root
    for act in actions:
        sub, unique, info = split(path)
        kind = act[0]
        if kind == "expunge":
            os.unlink(path)
            return
        if kind in ("flag", "keyword"):
            letter = act[1] if kind == "flag" else box.letter(inbox, act[1])
            new = os.path.join(inbox, "cur", "%s:2,%s" % (unique, "".join(sorted(set(info) | {letter}))))
            if new != path:
                os.rename(path, new)
                path = new
        elif kind == "move":
            dest = box.ensure(act[1])
            name = unique + (":2," + box.translate(inbox, dest, info) if sub == "cur" else "")
            os.rename(path, os.path.join(dest, sub, name))
            return
        elif kind == "copy":
            dest = box.ensure(act[1])
            # A name derived from the original's, so a second run finds the copy it made before.
            digest = hashlib.sha1(("%s\0%s" % (unique, act[1])).encode()).hexdigest()[:10]
            base = "%s.C%s" % (unique.split(",")[0], digest)
            name = base + (":2," + box.translate(inbox, dest, info) if sub == "cur" else "")
            have = box.uniques(dest)
            if base not in have:
                os.link(path, os.path.join(dest, sub, name))
                have.add(base)


def read_headers(f):
    data = f.read(16384)
    while True:
        m = HEADER_END.search(data)
        if m:
            return data[:m.end()]
        more = f.read(65536)
        if not more:
            return data
        data += more


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("maildir", help="the Maildir root (INBOX)")
    ap.add_argument("--headers-only", action="store_true",
                    help="parse only the header block (BytesHeaderParser), not the whole file")
    a = ap.parse_args()

    box = Maildir(os.path.abspath(a.maildir))
    now = time.time()
    if a.headers_only:
        parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    else:
        parser = email.parser.BytesParser(policy=email.policy.default)
    paths = []
    for sub in ("new", "cur"):
        d = os.path.join(box.root, sub)
        paths += [os.path.join(d, n) for n in os.listdir(d) if not n.startswith(".")]
    acted = failed = 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if a.headers_only:
                    msg = parser.parsebytes(read_headers(f))
                    data = None
                else:
                    data = f.read()
                    msg = parser.parsebytes(data)
            w = RE_W.search(os.path.basename(path))
            if w:
                size = int(w.group(1))
            elif data is not None:
                size = len(data) + data.count(b"\n") - data.count(b"\r\n")
            else:
                size = st.st_size
            flags = split(path)[2]
            actions = decide(msg, size, now - st.st_mtime, flags)
            if actions:
                apply(box, path, actions)
                acted += 1
        except Exception as exc:  # one bad message must not stop the rest
            print("floor: %s: %s" % (path, exc), file=sys.stderr)
            failed += 1
    box.save_tables()
    print("floor: %d messages, %d acted on, %d failed" % (len(paths), acted, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
