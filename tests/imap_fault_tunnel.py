"""A tunnel command that plays a faulty IMAP server in front of a pre-authenticated Dovecot.

Usage: python imap_fault_tunnel.py LOGFILE [options] -- DOVECOT-IMAP-ARGV...

Options (each a fault seen on a real server):
  --drop-caps WORDS      remove these capabilities (e.g. "LITERAL+ MOVE UIDPLUS")
  --refuse-search TEXT   answer a UID SEARCH with CHARSET or a literal with "<tag> TEXT" at
                         its first line (others pass), as
                         Courier and Twisted refuse a literal or a key: the rest of the
                         command is never forwarded (the client must wait for "+")
  --lowercase-attributes send LIST's mailbox attributes in lower case (\\trash), as Cyrus does
  --drop-header-of TEXT  close the connection while relaying a FETCH response whose
                         BODY[HEADER...] contains TEXT (Twisted dies on a raw 8-bit header);
                         BODY[] of the same message passes
  --drop-fetch-of TEXT   close the connection while relaying any FETCH response holding TEXT

Every client command is appended to LOGFILE (literals included) in one write, so a test
can see its bytes even when several connections log to the same file.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading

LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
LIST = re.compile(rb"^(\* LIST \()([^)]*)(\).*)$", re.DOTALL)
SEARCH = re.compile(rb"^(\S+) UID SEARCH ", re.IGNORECASE)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--drop-caps", default="")
    parser.add_argument("--refuse-search")
    parser.add_argument("--lowercase-attributes", action="store_true")
    parser.add_argument("--drop-header-of")
    parser.add_argument("--drop-fetch-of")
    parser.add_argument("argv", nargs="+")
    args = parser.parse_args()
    log = open(args.log, "ab", buffering=0)  # noqa: SIM115 - open for the relay's life
    child = subprocess.Popen(args.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    client_in, client_out = sys.stdin.buffer, sys.stdout.buffer
    lock = threading.Lock()
    dropped = set(args.drop_caps.upper().split())

    def to_client(data: bytes) -> None:
        with lock:
            client_out.write(data)
            client_out.flush()

    def from_server() -> None:
        assert child.stdout is not None
        while line := child.stdout.readline():
            parts = [line]
            while match := LITERAL.search(line):
                parts.append(child.stdout.read(int(match.group(1))))
                line = child.stdout.readline()
                parts.append(line)
            response = b"".join(parts)
            if dropped and b"CAPABILITY" in response.upper():
                words = response.rstrip(b"\r\n").split(b" ")
                kept = [w for w in words if w.upper().decode("latin-1") not in dropped]
                response = b" ".join(kept) + b"\r\n"
            if args.lowercase_attributes and (listed := LIST.match(response)):
                response = listed.group(1) + listed.group(2).lower() + listed.group(3)
            header = b"BODY[HEADER" in response.upper()
            if (args.drop_header_of and header and args.drop_header_of.encode() in response) or (
                args.drop_fetch_of
                and b" FETCH " in response.upper()
                and args.drop_fetch_of.encode() in response
            ):
                to_client(response[: len(response) // 2])
                os._exit(0)  # the connection ends mid-response
            to_client(response)

    threading.Thread(target=from_server, daemon=True).start()
    assert child.stdin is not None
    command = bytearray()  # logged whole, in one write: other connections log too

    def logged(data: bytes, done: bool) -> None:
        command.extend(data)
        if done:
            log.write(bytes(command))
            command.clear()

    while line := client_in.readline():
        search = SEARCH.match(line)
        if args.refuse_search and search and (b"CHARSET" in line.upper() or LITERAL.search(line)):
            logged(line, False)
            while (match := LITERAL.search(line)) and b"+}" in match.group(0):
                # a non-synchronizing literal follows anyway: read the whole command
                logged(client_in.read(int(match.group(1))), False)
                line = client_in.readline()
                logged(line, False)
            logged(b"", True)
            to_client(search.group(1) + b" " + args.refuse_search.encode() + b"\r\n")
            continue
        child.stdin.write(line)
        child.stdin.flush()
        match = LITERAL.search(line)
        logged(line, match is None)
        if match:  # forwarded first: a synchronizing literal waits for the server's "+"
            literal = client_in.read(int(match.group(1)))
            logged(literal, False)
            child.stdin.write(literal)
            child.stdin.flush()
    child.stdin.close()
    child.wait(timeout=5)


if __name__ == "__main__":
    main()
