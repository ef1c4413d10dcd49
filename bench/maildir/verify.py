#!/usr/bin/env python3
"""Check the end state of benchmark runs on Maildir trees.

    verify.py TREE                      summarize one Maildir tree
    verify.py --corpus DIR TREE         check it against R1-R5 (bench/imap/lib/rules_ref.py)
    verify.py TREE_A TREE_B ...         compare every tree with the first one

A tree's end state is, per Message-ID, the list of places the message is in: (folder,
flags, keyword names). Flags are the upper-case Maildir info letters; keyword letters are
resolved through the ``dovecot-keywords`` file of the folder the file is in, and a
letter that the folder's table does not define is reported as ``?x``, since Dovecot
would not show it. Copies share their original's Message-ID, so a message can be in
several places. Two trees agree when every Message-ID is in the same places.

The R1-R5 check needs only the corpus manifest: it never uses a tool's output. Rules
6-20 of rules20.yaml only see what R1-R5 leave in INBOX, so a message that R1-R5 leave
there may end up elsewhere; the check then only asks that it still exists, outside the
R1-R5 folders, with none of its flags lost.

Exit status 0 when every check passed. run.py imports this module.
"""

import argparse
import collections
import datetime as dt
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "imap", "lib"))
import rules_ref  # noqa: E402

MID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.I | re.M)
HEADER_END = re.compile(rb"\r?\n\r?\n")


def folders(root):
    """(name, path) of INBOX and every Maildir++ subfolder."""
    out = [("INBOX", root)]
    for entry in sorted(os.listdir(root)):
        if entry.startswith(".") and entry not in (".", "..") and os.path.isdir(os.path.join(root, entry, "cur")):
            out.append((entry[1:].replace(".", "/"), os.path.join(root, entry)))
    return out


def keyword_table(path):
    table = {}
    try:
        with open(os.path.join(path, "dovecot-keywords")) as fh:
            for line in fh:
                num, _, name = line.rstrip("\n").partition(" ")
                if num.isdigit() and name:
                    table[chr(97 + int(num))] = name
    except OSError:
        pass
    return table


def message_id(path):
    with open(path, "rb") as fh:
        data = fh.read(16384)
        while not HEADER_END.search(data):
            more = fh.read(65536)
            if not more:
                break
            data += more
    end = HEADER_END.search(data)
    m = MID.search(data[:end.start() if end else len(data)])
    return m.group(1).decode("ascii", "replace") if m else None


def snapshot(root):
    """{message-id: sorted [(folder, flags, (keywords...))]} and a list of oddities."""
    state = collections.defaultdict(list)
    odd = []
    for name, path in folders(root):
        table = keyword_table(path)
        for sub in ("new", "cur"):
            for fn in os.listdir(os.path.join(path, sub)):
                if fn.startswith("."):
                    continue
                info = fn.partition(":2,")[2] if sub == "cur" else ""
                flags = "".join(sorted(c for c in info if not "a" <= c <= "z"))
                kws = tuple(sorted(table.get(c, "?" + c) for c in info if "a" <= c <= "z"))
                if any(k.startswith("?") for k in kws):
                    odd.append("%s/%s: keyword letter(s) not in the folder's dovecot-keywords: %s" % (
                        name, fn, ", ".join(k for k in kws if k.startswith("?"))))
                mid = message_id(os.path.join(path, sub, fn))
                if mid is None:
                    odd.append("%s/%s: no Message-ID" % (name, fn))
                    mid = "(none) %s" % fn
                state[mid].append((name, flags, kws))
        tmp = os.listdir(os.path.join(path, "tmp")) if os.path.isdir(os.path.join(path, "tmp")) else []
        if tmp:
            odd.append("%s: %d file(s) left in tmp/" % (name, len(tmp)))
    return {k: sorted(v) for k, v in state.items()}, odd


def summary(state):
    """Message count per folder."""
    c = collections.Counter(folder for places in state.values() for folder, _, _ in places)
    return dict(sorted(c.items()))


def compare(a, b):
    """Differences between two snapshots, by kind: {kind: [(message-id, places a, places b)]}."""
    diff = collections.defaultdict(list)
    for mid in sorted(set(a) | set(b)):
        pa, pb = a.get(mid, []), b.get(mid, [])
        if pa == pb:
            continue
        if not pa or not pb:
            kind = "missing in A" if not pa else "missing in B"
        elif [(f, fl) for f, fl, _ in pa] == [(f, fl) for f, fl, _ in pb]:
            kind = "keywords differ"
        elif [f for f, _, _ in pa] == [f for f, _, _ in pb]:
            kind = "flags differ"
        else:
            kind = "folders differ"
        diff[kind].append((mid, pa, pb))
    return dict(diff)


def load_corpus(corpus):
    with open(os.path.join(corpus, "meta.json")) as fh:
        meta = json.load(fh)
    with open(os.path.join(corpus, "manifest.jsonl"), encoding="utf-8") as fh:
        manifest = [json.loads(line) for line in fh]
    return meta, manifest


def anchor_drift_days(meta, now=None):
    today = dt.datetime.fromtimestamp(now or time.time(), dt.UTC).date()
    return abs((today - dt.date.fromisoformat(meta["anchor"])).days)


def check_reference(state, meta, manifest, now=None):
    """Problems with R1-R5 in a snapshot, and how many messages each rule took."""
    if anchor_drift_days(meta, now) > rules_ref.MAX_ANCHOR_DRIFT_DAYS:
        return ["corpus anchored on %s, more than %d days from today: regenerate it" % (
            meta["anchor"], rules_ref.MAX_ANCHOR_DRIFT_DAYS)], {}
    threshold = rules_ref.age_threshold(now)
    problems = []
    hits = collections.Counter()
    known = set()
    fixed = {"Clients", "Lists", "Archive"}
    for m in manifest:
        mid = m["mid"]
        known.add(mid)
        rule = rules_ref.decide(m, threshold)
        hits[rule or "none"] += 1
        places = state.get(mid, [])
        initial = "".join(sorted(m["flags"]))
        if rule == "R2":
            if places:
                problems.append("%s: R2 should have expunged it; it is in %s" % (mid, places))
            continue
        if rule in ("R1", "R3", "R5"):
            want = [(rules_ref.RULE_ACTIONS[rule][1], initial, ())]
        elif rule == "R4":
            want = [("INBOX", "".join(sorted(set(initial) | {"F"})), ())]
        else:
            want = None
        if want is not None:
            if places != want:
                problems.append("%s: %s expects %s, found %s" % (mid, rule, want, places or "nothing (lost)"))
            continue
        if not places:
            problems.append("%s: lost (no rule deletes it)" % mid)
        for folder, flags, _ in places:
            if folder in fixed:
                problems.append("%s: in %s, but no R1-R5 rule matches it" % (mid, folder))
            if not set(initial) <= set(flags):
                problems.append("%s: lost flags: had %s, has %s" % (mid, initial, flags))
    for mid in set(state) - known:
        problems.append("%s: not in the corpus" % mid)
    return problems, dict(hits)


def describe_diff(diff, a="A", b="B", samples=3):
    lines = []
    for kind, rows in sorted(diff.items()):
        kind = kind.replace(" A", " " + a).replace(" B", " " + b)
        lines.append("  %s: %d message(s)" % (kind, len(rows)))
        for mid, pa, pb in rows[:samples]:
            lines.append("    %s\n      %s: %s\n      %s: %s" % (mid, a, pa, b, pb))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", help="Maildir roots; the others are compared with the first")
    ap.add_argument("--corpus", help="corpus directory (meta.json, manifest.jsonl): check R1-R5")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only the verdicts")
    a = ap.parse_args()
    ok = True
    snaps = []
    for tree in a.trees:
        state, odd = snapshot(tree)
        snaps.append(state)
        print("%s: %d messages in %d places: %s" % (
            tree, len(state), sum(len(v) for v in state.values()),
            ", ".join("%s %d" % kv for kv in summary(state).items())))
        for line in odd[: 0 if a.quiet else 10]:
            print("  note: " + line)
        if odd:
            print("  %d note(s)" % len(odd))
        if a.corpus:
            meta, manifest = load_corpus(a.corpus)
            problems, hits = check_reference(state, meta, manifest)
            print("  R1-R5: %s (%s)" % ("OK" if not problems else "%d PROBLEMS" % len(problems),
                                         ", ".join("%s %d" % kv for kv in sorted(hits.items()))))
            for p in problems[:10]:
                print("    " + p)
            ok &= not problems
    for tree, state in zip(a.trees[1:], snaps[1:], strict=True):
        diff = compare(snaps[0], state)
        print("%s vs %s: %s" % (a.trees[0], tree, "agree" if not diff else "DIFFER"))
        if diff:
            print(describe_diff(diff))
        ok &= not diff
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
