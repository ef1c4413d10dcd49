"""Address headers (From, To, Cc, ...) read as RFC 5322 says, strictly where it matters.

The address of a mailbox is its angle-addr when there is one: in the unquoted
``orders@acme.example <evil@phish.example>`` the first part is only a display name, and
the address is ``evil@phish.example``. Anything that readers could split two ways (an
unbalanced quote, parenthesis or angle bracket, text after the angle-addr, two words
where an addr-spec should be) makes the whole header malformed: it yields no address at
all, so it matches nothing, rather than a guess that might be the display name
(``email.utils.getaddresses`` guessed, CVE-2023-27043).

Lenient where no reading is ambiguous: obsolete empty list elements, groups
(``Team: a@x, b@y;``), comments (``a@x (Alice)`` gives the name Alice), routes in an
angle-addr, a quoted local part, non-ASCII (RFC 6532) addresses.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"""(?P<space>[ \t\r\n]+)
    |(?P<quoted>"(?:[^"\\]|\\.)*")
    |(?P<angle><[^<>]*>)
    |(?P<literal>\[[^\[\]\\]*\])
    |(?P<special>[,:;@.])
    |(?P<comment>\()
    |(?P<atom>[^ \t\r\n"<>\[\]()\\,:;@.]+)
    """,
    re.VERBOSE | re.DOTALL,
)
_DOT_ATOM = re.compile(r"[^ \t\r\n\"<>\[\]()\\,:;@.]+(?:\.[^ \t\r\n\"<>\[\]()\\,:;@.]+)*")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_ROUTE = re.compile(r"\s*@[^:<>]*:")

Token = tuple[str, str]  # (kind, text)


class Malformed(ValueError):
    """An address header that could be read more than one way."""


def parse_mailboxes(raw: str) -> list[tuple[str, str]]:
    """(display name as written, addr-spec lower-cased) for each mailbox in the header.

    Raises Malformed when any part of the header is ambiguous. A mailbox without an
    address (the ``<>`` of a bounce's Return-Path) is left out."""
    out: list[tuple[str, str]] = []
    element: list[Token] = []
    for kind, text in _tokens(raw):
        if kind == "special" and text in ",;":
            _mailbox(element, out)
            element = []
        elif kind == "special" and text == ":" and not any(k == "angle" for k, _ in element):
            element = []  # a group's name ends here; its members follow
        else:
            element.append((kind, text))
    _mailbox(element, out)
    return out


def _tokens(raw: str) -> list[Token]:
    tokens: list[Token] = []
    pos, end = 0, len(raw)
    while pos < end:
        found = _TOKEN.match(raw, pos)
        if found is None:
            raise Malformed(f"unexpected {raw[pos]!r} at {pos}")
        kind = found.lastgroup or ""
        if kind == "comment":
            close = _comment_end(raw, pos)
            tokens.append(("comment", raw[pos + 1 : close - 1]))
            pos = close
            continue
        tokens.append((kind, found.group()))
        pos = found.end()
    return tokens


def _comment_end(raw: str, start: int) -> int:
    """The offset just past the comment that opens at start (comments nest)."""
    depth, i, end = 0, start, len(raw)
    while i < end:
        c = raw[i]
        if c == "\\":
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise Malformed("unclosed '('")


def _mailbox(element: list[Token], out: list[tuple[str, str]]) -> None:
    words = [(k, t) for k, t in element if k not in ("space", "comment")]
    if not words:
        return  # an empty list element (RFC 5322 s4.4) or a group's end
    angles = [i for i, (k, _) in enumerate(element) if k == "angle"]
    if len(angles) > 1:
        raise Malformed("two angle-addrs in one mailbox")
    if angles:
        at = angles[0]
        if any(k not in ("space", "comment") for k, _ in element[at + 1 :]):
            raise Malformed("text after the angle-addr")
        address = _addr_spec(element[at][1][1:-1], in_angle=True)
        if address:
            out.append((_phrase(element[:at]), address))
        return
    comments = [t for k, t in element if k == "comment"]
    first = next(i for i, (k, _) in enumerate(element) if k not in ("space", "comment"))
    last = max(i for i, (k, _) in enumerate(element) if k not in ("space", "comment"))
    if any(k == "space" for k, _ in element[first:last]):
        raise Malformed("words where an address should be")
    address = _addr_spec("".join(t for k, t in element[first : last + 1] if k != "comment"))
    if not address:
        raise Malformed("no address")
    out.append((" ".join(" ".join(comments).split()), address))


def _addr_spec(text: str, in_angle: bool = False) -> str:
    """local@domain, lower-cased; '' for an empty angle-addr. Raises Malformed."""
    if in_angle:
        text = text.strip(" \t\r\n")
        if not text:
            return ""
        route = _ROUTE.match(text)
        if route:
            text = text[route.end() :]
    local, at, domain = _split_at(text)
    if not at or not local or not domain:
        raise Malformed(f"not an addr-spec: {text[:60]!r}")
    if local.startswith('"'):
        inner = _QUOTED_PAIR.sub(r"\1", local[1:-1])
        local = inner if _DOT_ATOM.fullmatch(inner) else local
    elif not _DOT_ATOM.fullmatch(local):
        raise Malformed(f"bad local part: {local[:60]!r}")
    if not (_DOT_ATOM.fullmatch(domain) or (domain.startswith("[") and domain.endswith("]"))):
        raise Malformed(f"bad domain: {domain[:60]!r}")
    return f"{local}@{domain}".lower()


def _split_at(text: str) -> tuple[str, str, str]:
    """Split at the one '@' outside a quoted local part."""
    if text.startswith('"'):
        found = re.match(r'"(?:[^"\\]|\\.)*"', text, re.DOTALL)
        if found is None:
            raise Malformed("unclosed quote")
        local, rest = found.group(), text[found.end() :]
        if not rest.startswith("@"):
            raise Malformed("text after a quoted local part")
        domain = rest[1:]
    else:
        local, _, domain = text.partition("@")
    if "@" in domain:
        raise Malformed(f"not one address: {text[:60]!r}")
    return local, "@", domain


def _phrase(tokens: list[Token]) -> str:
    """The display name as written, quotes removed, comments dropped, spaces collapsed."""
    parts = []
    for kind, text in tokens:
        if kind == "quoted":
            parts.append(_QUOTED_PAIR.sub(r"\1", text[1:-1]))
        elif kind == "space":
            parts.append(" ")
        elif kind != "comment":
            parts.append(text)
    return " ".join("".join(parts).split())
