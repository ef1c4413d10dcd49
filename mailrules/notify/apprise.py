"""The apprise channel: any Apprise URL (Telegram, ntfy, Matrix, Slack, …).

Needs the optional extra, ``pip install 'mailrules[apprise]'``; the config check says so
when it is missing. Apprise's own retries are off (the outbox retries) and its
timeouts are set from the notifier's. Apprise reports failure as a false result and
log lines; those are captured (never shown as they are: they can hold the URL's token)
and become the row's error, redacted.
"""

from __future__ import annotations

import logging
import threading
import warnings

from mailrules.errors import NotifyError, NotifyRetry
from mailrules.notify.config import APPRISE_INSTALL, Notifier
from mailrules.notify.outbox import Job
from mailrules.notify.payload import shorten
from mailrules.secrets import redact, remember_url

_lock = threading.Lock()  # Apprise logs through one global logger; one send at a time


def send(notifier: Notifier, job: Job) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Apprise's own imports
        try:
            import apprise
        except ImportError:
            raise NotifyError(f"Apprise is not installed: {APPRISE_INSTALL}") from None
        url = notifier.secret("url") or ""
        remember_url(url)
        scheme = url.partition("://")[0]
        text = str(job.payload.get("text") or "")
        if notifier.settings.max_length:
            text = shorten(text, notifier.settings.max_length)
        with _lock:
            logging.getLogger("apprise").propagate = False
            with apprise.LogCapture(level=logging.WARNING) as captured:
                box = apprise.Apprise()
                if not box.add(url):
                    raise NotifyError(f"Apprise does not understand the URL ({scheme}://…)")
                for service in box:
                    service.socket_connect_timeout = notifier.connect_timeout
                    service.socket_read_timeout = notifier.read_timeout
                ok = box.notify(body=text, title=str(job.payload.get("title") or ""))
                logged = captured.getvalue()
    if not ok:
        lines = [line for line in logged.splitlines() if line.strip()]
        why = redact(lines[-1].split(" - ", 2)[-1][:200]) if lines else "no details"
        raise NotifyRetry(f"Apprise ({scheme}://…) could not send: {why}")
    return f"{scheme}://…"
