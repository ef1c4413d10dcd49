"""A command as transport: the protocol runs over its stdin/stdout (``ssh host imap``).

The child gets pipes, and two threads relay them to one end of a socketpair whose
other end the protocol client uses as an ordinary socket, so read timeouts, IDLE and
``select`` work exactly as over TCP (the stdlib's IMAP4_stream offers none of that).
The child's stderr goes to the log; its exit closes the socket, which the client sees
as a dropped connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import threading

from mailrules.commands import child_env
from mailrules.errors import SourceError

log = logging.getLogger(__name__)


class Tunnel:
    """A running tunnel command and our end of the socketpair."""

    def __init__(self, argv: list[str], label: str, greeting: bytes | None = None) -> None:
        """Start ``argv``. ``greeting``, if given, is what the client reads first, before
        anything from the command: a pre-authenticated POP3 server (``dovecot/pop3``
        run directly) sends none, while a POP3 client must read one."""
        self.argv = argv
        self.label = label
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env(),
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            theirs.close()
            raise SourceError(f"{label}: cannot start tunnel {argv[0]!r}: {exc.strerror}") from None
        self.sock = ours
        self._theirs = theirs
        if greeting:
            theirs.sendall(greeting)
        self._threads = [
            threading.Thread(target=target, daemon=True, name=f"tunnel-{label}")
            for target in (self._to_child, self._from_child, self._stderr)
        ]
        for thread in self._threads:
            thread.start()

    def _to_child(self) -> None:
        assert self.proc.stdin is not None
        try:
            while data := self._theirs.recv(65536):
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def _from_child(self) -> None:
        assert self.proc.stdout is not None
        try:
            while data := self.proc.stdout.read1(65536):
                self._theirs.sendall(data)
        except OSError:
            pass
        finally:
            self.proc.stdout.close()
            with contextlib.suppress(OSError):
                self._theirs.shutdown(socket.SHUT_RDWR)

    def _stderr(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    log.info("%s: tunnel says: %s", self.label, text)

    def exit_note(self) -> str:
        """Why the connection may have ended: the command's exit status, if it has exited."""
        try:
            status = self.proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            return ""
        return f" (the tunnel command {self.argv[0]!r} exited with status {status})"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            self._theirs.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for thread in self._threads:  # they end at the child's EOF and close its pipes
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
