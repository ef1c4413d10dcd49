"""A tunnel command that gives a pre-authenticated Dovecot session UTF8=ACCEPT (RFC 6855).

Usage: python imap_utf8_tunnel.py LOGFILE DOVECOT-IMAP-ARGV...

Dovecot 2.3 does not implement UTF8=ACCEPT, so this relay plays the server's side of it:
it adds UTF8=ACCEPT to the capabilities, answers ``ENABLE UTF8=ACCEPT`` itself, and from
then on converts mailbox names between UTF-8 (the client's side, as RFC 6855 requires)
and modified UTF-7 (Dovecot's side). Everything else, literals included, passes through
byte for byte. Every client line is appended to LOGFILE, so a test can see what was sent.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading

sys.path.insert(0, __file__.rsplit("/tests/", 1)[0])
from mailrules.sources import mutf7

LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
NAMES = re.compile(rb"^\* (LIST|LSUB|STATUS) ", re.IGNORECASE)
utf8 = threading.Event()


def relay_lines(source, sink, convert, lock: threading.Lock) -> None:
    while line := source.readline():
        match = LITERAL.search(line)
        literal = source.read(int(match.group(1))) if match else b""
        out = convert(line)
        with lock:
            if out is not None:
                sink.write(out + literal)
            sink.flush()


def main() -> None:
    log = open(sys.argv[1], "ab", buffering=0)  # noqa: SIM115 - open for the relay's life
    child = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    client_in, client_out = sys.stdin.buffer, sys.stdout.buffer
    lock = threading.Lock()

    def from_client(line: bytes) -> bytes | None:
        log.write(line)
        tag, _, rest = line.partition(b" ")
        if rest.upper().startswith(b"ENABLE UTF8=ACCEPT"):
            with lock:
                client_out.write(b"* ENABLED UTF8=ACCEPT\r\n%s OK Enabled\r\n" % tag)
                client_out.flush()
            utf8.set()
            return None
        if utf8.is_set() and b"SEARCH" not in rest.upper():
            return mutf7.encode(line.rstrip(b"\r\n").decode("utf-8")).encode("ascii") + b"\r\n"
        return line

    def from_server(line: bytes) -> bytes:
        if b"CAPABILITY IMAP4rev1" in line:
            line = line.replace(b"CAPABILITY IMAP4rev1", b"CAPABILITY IMAP4rev1 UTF8=ACCEPT")
        if utf8.is_set() and NAMES.match(line):
            line = mutf7.decode(line.decode("ascii")).encode("utf-8")
        return line

    thread = threading.Thread(
        target=relay_lines, args=(child.stdout, client_out, from_server, lock), daemon=True
    )
    thread.start()
    relay_lines(client_in, child.stdin, from_client, threading.Lock())
    child.stdin.close()
    thread.join(timeout=5)
    child.wait(timeout=5)


if __name__ == "__main__":
    main()
