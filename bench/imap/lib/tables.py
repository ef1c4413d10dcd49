"""Helpers for the labs' Markdown tables: report.py, idle/run_idle.py, ../pop3/run_pop3.py."""

import sys


def fmt(x, nd=2):
    if x is None:
        return "-"
    if x >= 100:
        return "%.0f" % x
    if x >= 10:
        return "%.1f" % x
    return ("%." + str(nd) + "f") % x


def write_into_readme(readme, name, table):
    """Put table between the <!-- NAME:BEGIN --> and <!-- NAME:END --> markers of readme."""
    with open(readme) as fh:
        text = fh.read()
    begin, end = "<!-- %s:BEGIN -->" % name, "<!-- %s:END -->" % name
    if begin not in text or end not in text:
        sys.exit("README has no %s ... %s markers" % (begin, end))
    text = text[:text.index(begin) + len(begin)] + "\n" + table + "\n" + text[text.index(end):]
    with open(readme, "w") as fh:
        fh.write(text)
    print("(written to %s)" % readme)
