"""TCP connections for mail protocols: a connect timeout, a read timeout, and keepalive.

Keepalive matters for long sessions (a POP3 download of a large mailbox, an IMAP IDLE):
a NAT box or firewall that silently drops an idle flow leaves a socket that would
otherwise wait for the full read timeout, or forever without one.
"""

from __future__ import annotations

import contextlib
import socket

from mailrules.errors import SourceError

KEEPALIVE_IDLE = 60  # seconds of silence before the first probe
KEEPALIVE_INTERVAL = 15
KEEPALIVE_COUNT = 4


def set_keepalive(sock: socket.socket) -> None:
    """Turn on TCP keepalive with short probes, where the platform allows it."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        option = getattr(socket, name, None)
        if option is not None:  # Linux names; other systems keep their defaults
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


def enable_keepalive(sock: socket.socket) -> bool:
    """Keepalive on an IPv4/IPv6 socket; False for others (a tunnel's socketpair)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    set_keepalive(sock)
    return True


def connect(host: str, port: int, timeout: float, label: str) -> socket.socket:
    """A connected TCP socket with ``timeout`` for connect and every read, keepalive on."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise SourceError(f"{label}: cannot connect to {host}:{port}: {reason}") from None
    set_keepalive(sock)
    return sock
