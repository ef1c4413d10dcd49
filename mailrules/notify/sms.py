"""The SMS channel: Twilio's Messages API, or any server that speaks it (``base_url``).

``POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`` with the form fields To,
From and Body, HTTP basic auth (SID, auth token). Bodies are cut to ``max_length``:
by default one SMS segment, 160 characters of the GSM 7-bit alphabet, or 70 when the
text needs other characters (it is then sent as UCS-2). Cut text ends in "...", which
is GSM-7, so the cut never changes the encoding.
"""

from __future__ import annotations

from urllib.parse import quote

from mailrules.notify import web
from mailrules.notify.config import Notifier
from mailrules.notify.outbox import Job
from mailrules.notify.payload import shorten
from mailrules.secrets import remember_basic

_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")  # two septets each


def gsm7_length(text: str) -> int | None:
    """Septets ``text`` needs in GSM-7, or None if it has characters GSM-7 lacks."""
    total = 0
    for char in text:
        if char in _GSM7:
            total += 1
        elif char in _GSM7_EXTENDED:
            total += 2
        else:
            return None
    return total


def fit(text: str, max_length: int | None) -> str:
    """``text`` cut to one segment (or ``max_length`` characters), ending in '...'."""
    if max_length is not None:
        return shorten(text, max_length, "...")
    if gsm7_length(text) is None:
        return shorten(text, 70, "...")
    while (gsm7_length(text) or 0) > 160:
        text = shorten(text, len(text) - 1, "...")
    return text


def send(notifier: Notifier, job: Job) -> str:
    settings = notifier.settings
    token = notifier.secret("auth_token") or ""
    remember_basic(settings.account_sid, token)  # the Authorization header a receiver may echo
    base = settings.base_url.rstrip("/")
    url = f"{base}/2010-04-01/Accounts/{quote(settings.account_sid, safe='')}/Messages.json"
    body = fit(str(job.payload.get("text") or ""), settings.max_length)
    response = web.send(
        "POST",
        url,
        (notifier.connect_timeout, notifier.read_timeout),
        data={"To": settings.to, "From": settings.from_, "Body": body},
        auth=(settings.account_sid, token),
    )
    try:
        sid = response.json().get("sid")
    except (ValueError, AttributeError):
        sid = None
    return f"message {sid}" if sid else f"HTTP {response.status_code}"
