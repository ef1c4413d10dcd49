"""Twisted (twisted.mail) IMAP4 + POP3 servers for tests/servers/twisted_mail.py.

Run with the venv of tests/servers/install.sh (not imported by the tests themselves).

  IMAP --imap-port      twisted.mail.imap4.IMAP4Server without TLS (Twisted
                        advertises LOGINDISABLED whenever it can STARTTLS,
                        so plain LOGIN needs a listener without TLS);
  IMAP --imap-tls-port  the same with STARTTLS (LOGIN only after STARTTLS);
                        both share one account.  Account = Twisted's own
                        imap4.MemoryAccount; INBOX is an in-memory mailbox
                        written here (Twisted ships no IMAP mailbox store),
                        loaded with the 20 seed messages (raw CRLF octets).
  POP3 --pop3-port      twisted.mail.pop3.POP3 over Twisted's own
                        twisted.mail.maildir.MaildirMailbox on MAILDIR, with
                        two Python-3 fixes (Twisted 26.10): stock getMessage()
                        opens the file in text mode, so every RETR/TOP dies
                        in pop3.py with "TypeError: must be str, not bytes";
                        stock deleteMessage() joins the bytes path with str
                        ".Trash"/"cur", so every DELE dies with "Can't mix
                        strings and bytes in path components" (and a str
                        path breaks __init__ instead).

IMAP and POP3 are separate stores (in-memory vs. Maildir on disk).
Credentials: twisted.cred InMemoryUsernamePasswordDatabaseDontUse.

Usage: twisted_serve.py MAILDIR USER PASS --imap-port N --imap-tls-port N --pop3-port N
       [--cert CERT --key KEY]

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import io
import os
import sys
import time

sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # seed_messages

import seed_messages
from twisted.cred import checkers, portal
from twisted.internet import defer, protocol, reactor
from twisted.mail import imap4, maildir, pop3
from twisted.python import log
from zope.interface import implementer


def _hdrs(msg: email.message.Message, negate: bool, names) -> dict:
    want = {(n.decode("latin-1") if isinstance(n, bytes) else n).lower() for n in names}
    out = {}
    for k, v in msg.items():
        kl = k.lower()
        if ((kl in want) != negate or (not want and negate)) and kl not in out:
            out[kl] = str(v)
    return out


@implementer(imap4.IMessagePart)
class Part:
    def __init__(self, msg: email.message.Message):
        self.msg = msg

    def getHeaders(self, negate, *names):
        return _hdrs(self.msg, negate, names)

    def _body(self) -> bytes:
        raw = self.msg.as_bytes(policy=email.policy.compat32.clone(linesep="\r\n"))
        for sep in (b"\r\n\r\n", b"\n\n"):
            if sep in raw:
                return raw.split(sep, 1)[1]
        return b""

    def getBodyFile(self):
        return io.BytesIO(self._body())

    def getSize(self):
        return len(self.msg.as_bytes(policy=email.policy.compat32.clone(linesep="\r\n")))

    def isMultipart(self):
        return self.msg.is_multipart()

    def getSubPart(self, part):
        if not self.msg.is_multipart():
            raise TypeError("not multipart")
        return Part(self.msg.get_payload(part))


@implementer(imap4.IMessage, imap4.IMessageFile)
class Message(Part):
    def __init__(self, raw: bytes, uid: int, flags, internaldate: float):
        super().__init__(email.message_from_bytes(raw, policy=email.policy.compat32))
        self.raw = raw
        self.uid = uid
        self.flags = set(flags)
        self.internaldate = internaldate

    # exact octets for BODY[], RFC822 and BODY[TEXT]
    def open(self):
        return io.BytesIO(self.raw)

    def getBodyFile(self):
        for sep in (b"\r\n\r\n", b"\n\n"):
            if sep in self.raw:
                return io.BytesIO(self.raw.split(sep, 1)[1])
        return io.BytesIO(b"")

    def getSize(self):
        return len(self.raw)

    def getUID(self):
        return self.uid

    def getFlags(self):
        return sorted(self.flags)

    def getInternalDate(self):
        return email.utils.formatdate(self.internaldate)


@implementer(imap4.IMailbox, imap4.ICloseableMailbox)
class MemoryMailbox:
    """Minimal in-memory IMailbox; notifies listeners (IDLE sees EXISTS)."""

    def __init__(self, name, uidvalidity):
        self.name = name
        self.uidvalidity = uidvalidity
        self.msgs: list[Message] = []
        self.next_uid = 1
        self.listeners = []

    # IMailboxInfo
    def getFlags(self):
        return ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]

    def getHierarchicalDelimiter(self):
        return "/"

    # IMailbox
    def getUIDValidity(self):
        return self.uidvalidity

    def getUIDNext(self):
        return self.next_uid

    def getUID(self, message):
        return self.msgs[message - 1].uid

    def getMessageCount(self):
        return len(self.msgs)

    def getRecentCount(self):
        return sum(1 for m in self.msgs if "\\Recent" in m.flags)

    def getUnseenCount(self):
        return sum(1 for m in self.msgs if "\\Seen" not in m.flags)

    def isWriteable(self):
        return True

    def destroy(self):
        self.msgs = []

    def requestStatus(self, names):
        return imap4.statusRequestHelper(self, names)

    def addListener(self, listener):
        self.listeners.append(listener)

    def removeListener(self, listener):
        self.listeners.remove(listener)

    def close(self):
        pass

    def addMessage(self, message, flags=(), date=None):
        data = message.read() if hasattr(message, "read") else message
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        ts = time.time()
        if date:
            parsed = email.utils.parsedate_tz(date.decode() if isinstance(date, bytes) else date)
            if parsed:
                ts = email.utils.mktime_tz(parsed)
        flags = [f.decode() if isinstance(f, bytes) else f for f in flags]
        m = Message(data, self.next_uid, flags, ts)
        self.next_uid += 1
        self.msgs.append(m)
        for listener in list(self.listeners):
            listener.newMessages(len(self.msgs), None)
        return defer.succeed(m.uid)

    def expunge(self):
        gone = [i + 1 for i, m in enumerate(self.msgs) if "\\Deleted" in m.flags]
        self.msgs = [m for m in self.msgs if "\\Deleted" not in m.flags]
        return list(reversed(gone))  # descending: each EXPUNGE stays valid

    def _select(self, messages, uid):
        if uid:
            messages.last = self.msgs[-1].uid if self.msgs else self.next_uid - 1
            wanted = set()
            for r in messages.ranges:
                lo, hi = r
                wanted.update(u for u in (m.uid for m in self.msgs) if lo <= u <= hi)
            return [(i + 1, m) for i, m in enumerate(self.msgs) if m.uid in wanted]
        messages.last = len(self.msgs)
        out = []
        for seq in messages:
            if 1 <= seq <= len(self.msgs):
                out.append((seq, self.msgs[seq - 1]))
        return out

    def fetch(self, messages, uid):
        return self._select(messages, uid)

    def store(self, messages, flags, mode, uid):
        flags = {f.decode() if isinstance(f, bytes) else f for f in flags}
        res = {}
        for seq, m in self._select(messages, uid):
            if mode == 0:
                m.flags = set(flags)
            elif mode == 1:
                m.flags |= flags
            else:
                m.flags -= flags
            res[seq] = m.getFlags()
        return res


class FixedMaildirMailbox(maildir.MaildirMailbox):
    """Twisted's MaildirMailbox with getMessage() returning bytes.

    Everything else (UIDL = md5 of the file name, LIST = on-disk size of the
    LF file, DELE moving the file to .Trash at once, RSET moving it back,
    nothing at QUIT) is Twisted's own behaviour."""

    def getMessage(self, i):
        return open(self.list[i], "rb")

    def deleteMessage(self, i):
        trash = os.path.join(self.path, b".Trash", b"cur", os.path.basename(self.list[i]))
        os.rename(self.list[i], trash)
        self.deleted[self.list[i]] = trash
        self.list[i] = 0


class Account(imap4.MemoryAccount):
    """Twisted's MemoryAccount (it upper-cases every mailbox name)."""

    def _emptyMailbox(self, name, id):
        return MemoryMailbox(name, 1000 + id)


@implementer(portal.IRealm)
class Realm:
    def __init__(self, maildir_path: bytes):
        self.maildir_path = maildir_path
        self.accounts = {}

    def account(self, user):
        if user not in self.accounts:
            acct = Account(user)
            for box in ("INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"):
                acct.create(box)
                acct.subscribe(box)
            inbox = acct.select("INBOX")
            for i, (_name, raw) in enumerate(seed_messages.messages(), 1):
                inbox.addMessage(io.BytesIO(raw), [], email.utils.formatdate(1704067200 + i * 3600))
            self.accounts[user] = acct
        return self.accounts[user]

    def requestAvatar(self, avatarId, mind, *interfaces):
        user = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        if imap4.IAccount in interfaces:
            return imap4.IAccount, self.account(user), lambda: None
        if pop3.IMailbox in interfaces:
            return pop3.IMailbox, FixedMaildirMailbox(self.maildir_path), lambda: None
        raise NotImplementedError(interfaces)


class IMAPFactory(protocol.Factory):
    def __init__(self, portal_, ctx):
        self.portal = portal_
        self.ctx = ctx

    def buildProtocol(self, addr):
        p = imap4.IMAP4Server(contextFactory=self.ctx)
        p.portal = self.portal
        p.challengers = {b"LOGIN": imap4.LOGINCredentials, b"PLAIN": imap4.PLAINCredentials}
        p.factory = self
        p.timeOut = 600
        return p


class POP3Factory(protocol.ServerFactory):
    def __init__(self, portal_):
        self.portal = portal_

    def buildProtocol(self, addr):
        p = pop3.POP3()
        p.portal = self.portal
        p.factory = self
        return p


def main(argv):
    def option(name):
        return argv[argv.index(name) + 1] if name in argv else None

    maildir_path, user, password = argv[0], argv[1], argv[2]
    cert, key = option("--cert"), option("--key")
    imap_port, imap_tls_port = int(option("--imap-port")), int(option("--imap-tls-port"))
    pop3_port = int(option("--pop3-port"))
    log.startLogging(sys.stdout)
    ctx = None
    if cert and key:
        try:
            from twisted.internet import ssl

            ctx = ssl.DefaultOpenSSLContextFactory(key, cert)
        except Exception as e:  # pyOpenSSL missing: no STARTTLS
            log.msg(f"STARTTLS disabled: {e!r}")
    checker = checkers.InMemoryUsernamePasswordDatabaseDontUse(**{user: password.encode()})
    p = portal.Portal(Realm(maildir_path.encode()), [checker])
    reactor.listenTCP(imap_port, IMAPFactory(p, None), interface="127.0.0.1")
    if ctx is not None:
        reactor.listenTCP(imap_tls_port, IMAPFactory(p, ctx), interface="127.0.0.1")
    reactor.listenTCP(pop3_port, POP3Factory(p), interface="127.0.0.1")
    log.msg(f"IMAP on 127.0.0.1:{imap_port} (+STARTTLS on {imap_tls_port}), POP3 on {pop3_port}")
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
