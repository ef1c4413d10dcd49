#!/usr/bin/env python3
"""Check a Maildir that a POP3 fetcher filled against the corpus it downloaded.

    verify_maildir.py MAILDIR [--corpus DIR] [--json FILE] [-q]

The corpus is the current one ($BENCH_BASE/current-corpus) unless --corpus is given. Its
message files have LF line endings, as a Maildir holds mail; POP3 carried them with CRLF.
The check passes when:

  * new/ and cur/ together hold exactly as many messages as the corpus;
  * every message file is byte-for-byte one of the corpus messages (SHA-256), and every
    corpus message is there exactly once (none lost, none duplicated);
  * tmp/ is empty (no half-finished delivery was left behind).

Each file is matched to its corpus message by content, or else by Message-ID, so that a
tool that changes messages is still checked for lost and duplicated mail. A file that is not
byte-identical is classified, so that a failure says what the tool did: "crlf" (identical
once CRLF is turned into LF), "headers added" (the corpus message with header lines added in
front, named), "refolded" (only the header lines differ, and only in how they are folded),
"re-serialised" (the body differs too, but the message is equal once folded lines are
unfolded, runs of blanks are collapsed and empty lines are dropped: it was parsed and
written out again), "altered" (same Message-ID, other content) or "unknown" (no such
Message-ID). The first differing line of each is shown as a sample.

It prints one verdict line (OK or FAIL with counts) and exits 0 (OK) or 1 (FAIL).
"""

import argparse
import collections
import hashlib
import json
import os
import re
import sys

SAMPLES = 3
_MID_RE = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.I | re.M)


def corpus_dir(arg):
    if arg:
        return arg
    base = os.environ.get("BENCH_BASE", "/tmp/mailbench")
    link = os.path.join(base, "current-corpus")
    if not os.path.exists(link):
        sys.exit("no corpus installed: run prepare_corpus.sh N first")
    return os.path.realpath(link)


def message_files(maildir):
    for sub in ("new", "cur"):
        d = os.path.join(maildir, sub)
        for name in sorted(os.listdir(d)):
            yield os.path.join(d, name)


def header_block(data):
    end = data.find(b"\n\n")
    return data if end < 0 else data[:end + 1]


def message_id(data):
    mo = _MID_RE.search(header_block(data))
    return mo.group(1) if mo else None


def canonical(data):
    data = re.sub(rb"\n[ \t]+", b" ", data)
    data = re.sub(rb"[ \t]+", b" ", data)
    return b"\n".join(ln for ln in data.split(b"\n") if ln.strip())


def first_difference(a, b):
    la, lb = a.split(b"\n"), b.split(b"\n")
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return "line %d is %r, corpus has %r" % (i + 1, x[:90], y[:90])
    return "%d lines, corpus has %d" % (len(la), len(lb))


def classify(data, orig):
    """Says how a file that is not byte-identical relates to its corpus message (None: unknown)."""
    if orig is None:
        return "unknown", "no corpus message with Message-ID %s" % (message_id(data) or b"(none)").decode(errors="replace")
    norm = data.replace(b"\r\n", b"\n")
    if norm == orig:
        return "crlf", "CRLF line endings kept"
    if norm.endswith(orig):
        added = [ln.split(b":", 1)[0].decode(errors="replace")
                 for ln in norm[:len(norm) - len(orig)].split(b"\n") if ln and not ln[:1].isspace()]
        return "headers added", "added in front: %s" % ", ".join(added)
    if canonical(norm) == canonical(orig):
        if norm[len(header_block(norm)):] == orig[len(header_block(orig)):]:
            return "refolded", first_difference(norm, orig)
        return "re-serialised", first_difference(norm, orig)
    return "altered", first_difference(norm, orig)


_CORPUS = {}


def corpus_index(corpus):
    """(SHA-256 -> Message-ID, Message-ID -> bytes) of the corpus messages, read once."""
    if corpus in _CORPUS:
        return _CORPUS[corpus]
    raw = os.path.join(corpus, "raw", "Maildir")
    mid_of_digest, by_mid = {}, {}
    for path in message_files(raw):
        with open(path, "rb") as fh:
            data = fh.read()
        mid = message_id(data)
        if mid is None or mid in by_mid:
            sys.exit("corpus message %s has no Message-ID or a repeated one" % path)
        mid_of_digest[hashlib.sha256(data).digest()] = mid
        by_mid[mid] = data
    _CORPUS[corpus] = (mid_of_digest, by_mid)
    return mid_of_digest, by_mid


def verify(maildir, corpus, partial=False):
    """partial: one folder of a tree (verify_tree); also return the Message-IDs it holds."""
    mid_of_digest, by_mid = corpus_index(corpus)
    mids = []

    copies = collections.Counter()  # corpus Message-ID -> files that hold that message
    identical = 0
    odd = collections.defaultdict(list)
    for path in message_files(maildir):
        with open(path, "rb") as fh:
            data = fh.read()
        mid = mid_of_digest.get(hashlib.sha256(data).digest())
        if mid is not None:
            identical += 1
        else:
            mid = message_id(data.replace(b"\r\n", b"\n"))
            kind, why = classify(data, by_mid.get(mid))
            odd[kind].append("%s: %s" % (os.path.basename(path), why))
            if mid not in by_mid:
                continue
        copies[mid] += 1
        mids.append(mid)
    leftovers = sorted(os.listdir(os.path.join(maildir, "tmp")))

    n_files = identical + sum(len(v) for v in odd.values())
    duplicated = sum(c - 1 for c in copies.values() if c > 1)
    missing = sum(1 for mid in by_mid if not copies[mid])
    ok = n_files == len(by_mid) and identical == n_files and not duplicated and not missing and not leftovers
    extra = {"copies": copies, "mids": mids} if partial else {}
    return {**extra,
        "ok": ok, "corpus": os.path.basename(corpus), "expected": len(by_mid), "files": n_files,
        "identical": identical, "duplicated": duplicated, "missing": missing,
        "not_identical": {k: len(v) for k, v in odd.items()}, "tmp_leftovers": len(leftovers),
        "samples": {k: v[:SAMPLES] for k, v in odd.items()},
    }


def expected_folders(corpus):
    """Message-ID -> the folder the lab's rules R1-R5 put it in, as a POP3 fetcher delivers
    them: R1 Clients, R2 (delete) Trash, R3 Lists, R4 stays in INBOX, R5 Archive, else INBOX."""
    here = os.path.dirname(os.path.abspath(__file__))
    for lab in (os.path.dirname(here), os.path.join(os.path.dirname(here), "imap"),
                os.environ.get("BENCH_LAB", ""),
                os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(here))), "shared", "bench"),
                "/work/shared/bench"):
        if os.path.exists(os.path.join(lab, "lib", "rules_ref.py")):
            sys.path.insert(0, os.path.join(lab, "lib"))
            break
    import rules_ref
    threshold = rules_ref.age_threshold()
    folder = {"R1": "Clients", "R2": "Trash", "R3": "Lists", "R4": "INBOX", "R5": "Archive", None: "INBOX"}
    out = {}
    with open(os.path.join(corpus, "manifest.jsonl")) as fh:
        for line in fh:
            m = json.loads(line)
            out[m["mid"].encode()] = folder[rules_ref.decide(m, threshold)]
    return out


def verify_tree(maildir, corpus):
    """verify() over a Maildir++ tree: every corpus message byte-identical and exactly once in
    the whole tree, each in the folder that expected_folders() names, tmp/ empty everywhere."""
    names = [("INBOX", maildir)] + [
        (f[1:], os.path.join(maildir, f)) for f in sorted(os.listdir(maildir))
        if f.startswith(".") and os.path.isdir(os.path.join(maildir, f, "cur"))]
    where = expected_folders(corpus)
    total = None
    misplaced, counts = 0, {}
    for name, path in names:
        s = verify(path, corpus, partial=True)
        counts[name] = s["files"]
        misplaced += sum(1 for mid in s["mids"] if where.get(mid) != name)
        if total is None:
            total = s
            continue
        for k in ("files", "identical", "tmp_leftovers"):
            total[k] += s[k]
        for k, v in s["not_identical"].items():
            total["not_identical"][k] = total["not_identical"].get(k, 0) + v
        total["copies"].update(s["copies"])
    copies = total.pop("copies")
    total["duplicated"] = sum(c - 1 for c in copies.values() if c > 1)
    total["missing"] = total["expected"] - len(copies)
    total["misplaced"] = misplaced
    total["folders"] = counts
    total.pop("mids", None)
    total["ok"] = (total["files"] == total["expected"] == total["identical"] and not total["duplicated"]
                   and not total["missing"] and not total["tmp_leftovers"] and not misplaced)
    return total


def verdict(s):
    if s["ok"] and "folders" in s:
        return "OK: %d messages, each byte-identical to a corpus message, none duplicated, each in its rule's folder (%s), tmp/ empty" % (
            s["files"], ", ".join("%s %d" % kv for kv in sorted(s["folders"].items())))
    if s["ok"]:
        return "OK: %d messages, each byte-identical to a corpus message, none duplicated, tmp/ empty" % s["files"]
    parts = ["%d files for %d corpus messages" % (s["files"], s["expected"]),
             "%d byte-identical" % s["identical"]]
    parts += ["%d %s" % (n, k) for k, n in sorted(s["not_identical"].items())]
    parts.append("%d lost" % s["missing"])
    parts.append("%d duplicated" % s["duplicated"])
    if s.get("misplaced"):
        parts.append("%d not in the folder their rule chose" % s["misplaced"])
    if s["tmp_leftovers"]:
        parts.append("%d files left in tmp/" % s["tmp_leftovers"])
    return "FAIL: " + ", ".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("maildir")
    ap.add_argument("--corpus", help="corpus directory (default: $BENCH_BASE/current-corpus)")
    ap.add_argument("--json", help="also write the summary as JSON to this file")
    ap.add_argument("--tree", action="store_true", help="a Maildir++ tree filed by the rules R1-R5 (mailrules)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only the verdict line")
    a = ap.parse_args()
    s = (verify_tree if a.tree else verify)(a.maildir, corpus_dir(a.corpus))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(s, fh, indent=1, sort_keys=True)
    if not a.quiet:
        for kind, samples in s["samples"].items():
            for line in samples:
                print("  %s: %s" % (kind, line))
    print(verdict(s))
    sys.exit(0 if s["ok"] else 1)


if __name__ == "__main__":
    main()
