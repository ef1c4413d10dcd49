"""The forward channel: re-send the original message over SMTP, Resent-* headers on top.

RFC 5322 s3.6.6: the message goes out unchanged below a prepended Resent-From,
Resent-To, Resent-Date and Resent-Message-ID block (the id is the same on every
retry). TLS always: ``security: tls`` (implicit, port 465) or ``starttls`` (port 587),
where a server that does not offer STARTTLS is refused, never spoken to in plaintext.
Certificates are verified (``ca_file`` to trust a private CA). A digest of rate-limited
forwards is a short plain-text message instead.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from mailrules.errors import NotifyError, NotifyRetry
from mailrules.notify.config import Notifier
from mailrules.notify.outbox import Job
from mailrules.secrets import redact, remember_login

_EOL = re.compile(rb"\r?\n")


def message_bytes(notifier: Notifier, job: Job) -> bytes:
    settings = notifier.settings
    if job.message is None:  # a digest: a note, not a message to re-send
        note = EmailMessage()
        note["From"] = settings.from_
        note["To"] = settings.to
        note["Subject"] = str(job.payload.get("text") or "mailrules digest")
        note["Date"] = formatdate(usegmt=True)
        note["Message-ID"] = f"<{job.key}@mailrules.invalid>"
        lines = [
            f"{m.get('from', '')}: {m.get('subject', '')}" for m in job.payload.get("messages", [])
        ]
        note.set_content("\n".join([str(job.payload.get("text") or ""), "", *lines]) + "\n")
        return _EOL.sub(b"\r\n", note.as_bytes())
    resent = (
        f"Resent-From: {settings.from_}\r\n"
        f"Resent-To: {settings.to}\r\n"
        f"Resent-Date: {formatdate(usegmt=True)}\r\n"
        f"Resent-Message-ID: <{job.key}@mailrules.invalid>\r\n"
    ).encode()
    return resent + _EOL.sub(b"\r\n", job.message)


def send(notifier: Notifier, job: Job) -> str:
    settings = notifier.settings
    data = message_bytes(notifier, job)
    context = ssl.create_default_context(cafile=settings.ca_file)
    timeout = max(notifier.connect_timeout, notifier.read_timeout)
    where = f"{settings.host}:{settings.port or (465 if settings.security == 'tls' else 587)}"
    password = notifier.secret("password")
    helo = socket.gethostname() or "localhost"
    try:
        if settings.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.host, settings.port or 465, helo, timeout=timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port or 587, helo, timeout=timeout)
        with smtp:
            if settings.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise NotifyRetry(
                        f"SMTP {where} does not offer STARTTLS; not sending in plaintext"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if settings.username:
                remember_login(settings.username, password or "")  # AUTH PLAIN/LOGIN: base64
                smtp.login(settings.username, password or "")
            options = ["BODY=8BITMIME"] if smtp.has_extn("8bitmime") else []
            smtp.sendmail(settings.from_, [settings.to], data, mail_options=options)
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        raise _by_code(where, code, reply) from None
    except smtplib.SMTPResponseException as exc:
        raise _by_code(where, exc.smtp_code, exc.smtp_error) from None
    except ssl.SSLError as exc:
        raise NotifyRetry(f"SMTP {where}: TLS failed: {exc.reason or exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise NotifyRetry(
            f"SMTP {where}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
        ) from None
    return f"forwarded to {settings.to}"


def _by_code(where: str, code: int, reply: bytes | str) -> NotifyError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    message = f"SMTP {where}: {code} {redact(' '.join(text.split())[:200])}"
    return NotifyError(message) if code >= 500 else NotifyRetry(message)
