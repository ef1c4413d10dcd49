"""The interop tier: the same behaviour tests on every real server of tests/servers."""

from __future__ import annotations

import pytest

from tests.interop.known_failures import KNOWN


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the (test, server) pairs that fail today because of issue 12 as strict xfails."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        server = params.get("imap_server") or params.get("pop3_server")
        name = getattr(item, "originalname", item.name)
        reason = KNOWN.get((name, server)) if server else None
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
        if server == "twisted" and "imap_server" in params:
            item.add_marker(pytest.mark.slow)  # Twisted leaves some SEARCHes unanswered
