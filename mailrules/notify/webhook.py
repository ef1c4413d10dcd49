"""The webhook channel: the notification's JSON document, POSTed (or PUT) to a URL.

Headers: ``Content-Type: application/json``, ``Idempotency-Key`` (the same on every
retry: receivers drop repeats), the configured ``headers``, and with a ``secret`` a
signature ``X-Mailrules-Signature: t=UNIX_TIME,sha256=HEX`` where HEX is
HMAC-SHA256(secret, "UNIX_TIME." + body). The receiver recomputes it over the raw body,
compares in constant time, and rejects old timestamps to stop replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from mailrules.notify import web
from mailrules.notify.config import Notifier
from mailrules.notify.outbox import Job
from mailrules.secrets import remember, remember_url


def sign(secret: str, body: bytes, when: int) -> str:
    digest = hmac.new(secret.encode(), f"{when}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={when},sha256={digest}"


def send(notifier: Notifier, job: Job) -> str:
    settings = notifier.settings
    url = notifier.secret("url") or ""
    remember_url(url)
    for value in settings.headers.values():  # an API key, a bearer token: never shown
        remember(str(value))
    body = json.dumps(job.payload, ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": job.key,
        **settings.headers,
    }
    secret = notifier.secret("secret")
    if secret:
        headers[settings.signature_header] = sign(secret, body, int(time.time()))
    response = web.send(
        settings.method,
        url,
        (notifier.connect_timeout, notifier.read_timeout),
        data=body,
        headers=headers,
    )
    return f"HTTP {response.status_code}"
