"""Summarize interleave.sh output: medians per tool (round 0 left out) and per-round ratios."""

import re
import statistics
import sys

LINE = re.compile(r"round (\d+) (\S+)\s+(first|poll)\s+rep \S+\s+wall\s+([\d.]+) s.*rss\s+([\d.]+) MiB")


def main(path: str) -> None:
    runs: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    unverified = 0
    for line in open(path):
        m = LINE.match(line)
        if m and "OK (end state matches)" not in line:
            unverified += 1
        if m and int(m[1]) > 0:
            runs.setdefault((m[2], m[3]), []).append((int(m[1]), float(m[4]), float(m[5])))
    floor = {phase: statistics.median(w for _, w, _ in runs.get(("floor", phase), [(0, 1, 0)]))
             for phase in ("first", "poll")}
    firsts = {r: w for r, w, _ in runs.get(("floor", "first"), [])}
    print("%-16s %10s %8s %10s %8s %9s  per-round first-pass ratios" % (
        "tool", "first s", "x floor", "poll s", "x floor", "RSS MiB"))
    for tool in ("floor", "imapfilter", "mailrules", "mailrules-before"):
        first = runs.get((tool, "first"), [])
        poll = runs.get((tool, "poll"), [])
        if not first:
            continue
        f = statistics.median(w for _, w, _ in first)
        p = statistics.median(w for _, w, _ in poll) if poll else float("nan")
        rss = max(x for _, _, x in first + poll)
        ratios = [round(w / firsts[r], 2) for r, w, _ in first if r in firsts]
        print("%-16s %10.3f %8.2f %10.3f %8.2f %9.1f  %s" % (
            tool, f, f / floor["first"], p, p / floor["poll"], rss, ratios))
    print("runs whose end state was not verified: %d" % unverified)


if __name__ == "__main__":
    main(sys.argv[1])
