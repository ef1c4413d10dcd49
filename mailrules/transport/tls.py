"""TLS contexts that verify by default, with a CA file or a pinned certificate fingerprint.

The stdlib's IMAP4_SSL, POP3_SSL and their STARTTLS upgrades do not verify certificates
unless given a context, so every connection gets one from here. There is no switch to
turn verification off: a self-signed server is trusted through ``ca_file`` or by
pinning its certificate (``fingerprint: sha256:…``), which is checked after the
handshake and before anything, a password least of all, is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import ssl

from mailrules.errors import SourceError


class TLSError(SourceError):
    """The server's certificate could not be verified, or the TLS upgrade failed."""


def make_context(ca_file: str | None = None, fingerprint: str | None = None) -> ssl.SSLContext:
    """A client context: system trust store (or ``ca_file``), hostname checked, TLS 1.2+."""
    if fingerprint:
        # The pin replaces chain and name checks; check_fingerprint() enforces it.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"cannot load ca_file {ca_file}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def normalise_fingerprint(value: str) -> str | None:
    """'sha256:AB:CD…' or 'sha256:abcd…' -> 64 lower-case hex digits, or None if malformed."""
    algo, _, digest = value.partition(":")
    digest = digest.replace(":", "").strip().lower()
    if algo.lower() != "sha256" or len(digest) != 64:
        return None
    try:
        bytes.fromhex(digest)
    except ValueError:
        return None
    return digest


def check_fingerprint(sock: socket.socket | ssl.SSLSocket | None, fingerprint: str | None) -> None:
    """Raise TLSError unless the peer certificate matches the pinned SHA-256 fingerprint."""
    if not fingerprint:
        return
    der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    if not der:
        raise TLSError("no server certificate to check against the pinned fingerprint")
    want = normalise_fingerprint(fingerprint) or ""
    got = hashlib.sha256(der).hexdigest()
    if not hmac.compare_digest(got, want):
        raise TLSError(
            f"server certificate fingerprint sha256:{got} does not match the pinned one; "
            "refusing to continue (if the server's certificate was renewed, update fingerprint)"
        )


def untrusted(label: str, exc: ssl.SSLCertVerificationError, ca_file: str | None) -> TLSError:
    """The error for a certificate that did not verify, with what the user can do.

    With a ``ca_file`` set, the hint to set one would mislead: the certificate did not
    verify against that file (a wrong file, or the server changed its certificate)."""
    if ca_file:
        return TLSError(
            f"{label}: the server certificate is not trusted: it did not verify against "
            f"ca_file {ca_file} "
            f"({exc.verify_message}); check that this file holds the server's certificate "
            "or the CA that signed it"
        )
    return TLSError(
        f"{label}: the server certificate is not trusted ({exc.verify_message}); "
        "if it is self-signed, set ca_file or pin its fingerprint"
    )


def wrap(
    sock: socket.socket,
    context: ssl.SSLContext,
    host: str | None,
    fingerprint: str | None,
    label: str,
    ca_file: str | None = None,
) -> ssl.SSLSocket:
    """Do the TLS handshake on a connected socket (implicit TLS or after STARTTLS/STLS).

    The certificate is verified by ``context`` (see make_context, given ``ca_file``) and,
    when pinned, against ``fingerprint``; any failure closes the socket and raises TLSError with
    what to do about it.
    """
    try:
        tls = context.wrap_socket(sock, server_hostname=host if context.check_hostname else None)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise untrusted(label, exc, ca_file) from None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise TLSError(f"{label}: TLS handshake failed: {exc}") from None
    try:
        check_fingerprint(tls, fingerprint)
    except TLSError as exc:
        tls.close()
        raise TLSError(f"{label}: {exc}") from None
    return tls
