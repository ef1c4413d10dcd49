"""HTTP for the webhook and SMS channels: always a timeout, never a hidden retry.

One ``requests.Session`` per thread (sessions are not thread-safe), with urllib3's own
retries off: retries belong to the outbox, which survives restarts. Redirects are not
followed (a POST would turn into a GET). Every outcome maps to one of three:

==============================  ======================================
2xx                             sent
connection error, timeout,      NotifyRetry (Retry-After honoured on 429 and 503)
408, 425, 429, 5xx
3xx, other 4xx                  NotifyError: retrying will not help
==============================  ======================================

Messages name the host, never the path, query or credentials of the URL.
"""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from mailrules import __version__
from mailrules.errors import NotifyError, NotifyRetry
from mailrules.secrets import redact, show_url

USER_AGENT = f"mailrules/{__version__}"
RETRY_STATUS = frozenset({408, 425, 429})
MAX_RETRY_AFTER = 24 * 3600.0
_local = threading.local()


def session() -> requests.Session:
    found: requests.Session | None = getattr(_local, "session", None)
    if found is None:
        found = requests.Session()
        adapter = HTTPAdapter(max_retries=0, pool_connections=4, pool_maxsize=4)
        found.mount("http://", adapter)
        found.mount("https://", adapter)
        _local.session = found
    return found


def send(method: str, url: str, timeout: tuple[float, float], **kwargs: Any) -> requests.Response:
    """One request; return the 2xx response, else raise NotifyRetry or NotifyError."""
    shown = show_url(url)
    headers = {"User-Agent": USER_AGENT, **kwargs.pop("headers", {})}
    try:
        response = session().request(
            method, url, timeout=timeout, allow_redirects=False, headers=headers, **kwargs
        )
    except requests.exceptions.ConnectTimeout:
        raise NotifyRetry(f"{shown}: no connection within {timeout[0]:g}s") from None
    except requests.exceptions.ReadTimeout:
        raise NotifyRetry(f"{shown}: no answer within {timeout[1]:g}s") from None
    except requests.exceptions.SSLError as exc:
        raise NotifyRetry(f"{shown}: TLS failed: {_reason(exc)}") from None
    except requests.exceptions.ConnectionError as exc:
        raise NotifyRetry(f"{shown}: cannot connect: {_reason(exc)}") from None
    except requests.exceptions.RequestException as exc:
        raise NotifyError(f"{shown}: {type(exc).__name__}") from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    detail = f"{shown}: HTTP {status} {response.reason or ''}".rstrip()
    body = _body(response)
    if body:
        detail += f": {body}"
    if status in RETRY_STATUS or status >= 500:
        raise NotifyRetry(detail, retry_after(response.headers.get("Retry-After")))
    if 300 <= status < 400:
        raise NotifyError(f"{detail}; redirected: put the final URL in the config")
    raise NotifyError(detail)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(0.0, when - (now or time.time())), MAX_RETRY_AFTER)


def _body(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        text = response.text
    else:  # Twilio and most APIs: {"message": "...", "code": ...}
        text = str(data.get("message") or data) if isinstance(data, dict) else str(data)
    return redact(" ".join(text.split())[:200])


def _reason(exc: BaseException) -> str:
    """The innermost cause, without the URL that requests puts in its messages."""
    inner: BaseException = exc
    seen = 0
    while seen < 8:
        seen += 1
        nxt = getattr(inner, "reason", None) or inner.__cause__ or inner.__context__
        if nxt is None and inner.args and isinstance(inner.args[0], BaseException):
            nxt = inner.args[0]
        if not isinstance(nxt, BaseException):
            break
        inner = nxt
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    text = str(inner)
    if "Max retries exceeded" in text or "url:" in text:
        return type(inner).__name__
    return redact(text.split(": ", 1)[-1][:160]) or type(inner).__name__
