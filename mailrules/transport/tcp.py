"""TCP settings for long-lived connections: keepalive, so a dead peer or NAT shows up.

An IMAP connection in IDLE can sit silent for many minutes. Home routers and carrier NATs
forget silent flows after a few minutes, and a server that vanished without a FIN leaves
the client waiting forever. Keepalive probes after 60 s of silence, every 15 s, and
gives up after 4 unanswered ones: a dead path is noticed within about two minutes.
"""

from __future__ import annotations

import contextlib
import socket

KEEPIDLE, KEEPINTVL, KEEPCNT = 60, 15, 4


def enable_keepalive(sock: socket.socket) -> bool:
    """Turn on TCP keepalive for an IPv4/IPv6 socket; False for other sockets (pipes)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPIDLE),
        ("TCP_KEEPINTVL", KEEPINTVL),
        ("TCP_KEEPCNT", KEEPCNT),
    ):
        option = getattr(socket, name, None)
        if option is not None:  # Linux names; other systems keep their defaults
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    return True
