"""sd_notify(3) by hand: READY, STATUS, RELOADING, STOPPING and WATCHDOG for Type=notify.

One datagram per call to the AF_UNIX socket systemd names in ``$NOTIFY_SOCKET`` (a path,
or an abstract name written with a leading ``@``). Without that variable every call does
nothing, so the service runs the same outside systemd. A failed send is logged once and
never stops the service: systemd's own timeouts catch a manager that stopped listening.

The watchdog interval comes from ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, which must
name this process). The caller decides when to send ``WATCHDOG=1``: only after checking
that the scheduler still runs jobs, never from a free-running timer. Child processes
never see these variables (``mailrules.commands.child_env`` keeps a short whitelist).
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)
_warned = False


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=…"``) in one message; True if it was sent."""
    global _warned
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not fields:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    message = "\n".join(field.replace("\n", " ") for field in fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        if not _warned:
            log.warning("cannot notify systemd at %s: %s", os.environ["NOTIFY_SOCKET"], exc)
            _warned = True
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def reloading(text: str) -> bool:
    return notify("RELOADING=1", f"STATUS={text}")


def stopping(text: str) -> bool:
    return notify("STOPPING=1", f"STATUS={text}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds within which systemd wants ``WATCHDOG=1``, or None if it does not watch us."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6
