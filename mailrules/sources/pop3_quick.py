"""The POP3 side of the quick poll (``mailrules.quick_poll``): one UIDL listing.

After a POP3 session that ended cleanly with every message on the server handled, the
record's marker is a digest of the set of UIDLs left on the server. A later quick poll
logs in, lists UIDL and compares: the same set means nothing new. Servers without UIDL
get no record.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from types import SimpleNamespace

from mailrules.errors import MailrulesError
from mailrules.quick_poll import Question
from mailrules.sources.pop3_connect import Connector

log = logging.getLogger(__name__)


def listing_digest(uidls: Iterable[str]) -> str:
    return hashlib.sha256(b"\n".join(sorted(u.encode() for u in uidls))).hexdigest()


def same_listing(question: Question) -> bool:
    """True if the server lists exactly the UIDLs the last clean session left there."""
    account, saved, listing = question.account, question.settings, question.marker
    settings = SimpleNamespace(**saved["pop3"], password=question.password())
    connection = Connector(account, settings, float(saved["timeout"]))
    try:
        with connection._talk("UIDL") as session:
            _, lines, _ = session.uidl()
        pairs = [line.split(None, 1) for line in lines]
        uidls = [p[1].strip() for p in pairs if len(p) == 2]
        if all(u.isascii() for u in uidls):  # as RFC 1939 says they are: skip decoding
            same = hashlib.sha256(b"\n".join(sorted(uidls))).hexdigest() == listing
        else:
            names = (u.decode("ascii", "backslashreplace") for u in uidls)
            same = listing_digest(names) == listing
        with connection._talk("QUIT") as session:
            session.quit()
    except MailrulesError as exc:
        log.debug("%s: quick poll not possible (%s); doing a full run", account, exc)
        return False
    finally:
        connection._drop()
    if not same:
        log.debug("%s: the server's UIDLs changed; doing a full run", account)
    return same
