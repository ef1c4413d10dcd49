"""Secret sources (mailrules/secrets.py): every form reads the value; errors never show it."""

from __future__ import annotations

import sys

import pytest

from mailrules.errors import CredentialError
from mailrules.secrets import Secret, redact, remember_url, show_url


def test_every_form_reads_the_secret(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("from-a-file\n")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "twilio").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    monkeypatch.setenv("TOKEN_VAR", "from-the-env")
    printer = (sys.executable, "-c", "print('from-a-command')")
    assert Secret("t", "file", str(tmp_path / "file")).get() == "from-a-file"
    assert Secret("t", "env", "TOKEN_VAR").get() == "from-the-env"
    assert Secret("t", "command", printer).get() == "from-a-command"
    assert Secret("t", "credential", "twilio").get() == "from-systemd"
    assert Secret("t", "value", "inline-value").get() == "inline-value"
    # every value read is hidden from then on
    assert redact("a from-a-file b from-a-command c") == "a *** b *** c"


def test_errors_name_the_source_never_the_value(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("NOPE_VAR", raising=False)
    failing = (sys.executable, "-c", "import sys; print('leaked-secret'); sys.exit(3)")
    cases = [
        (Secret("auth_token", "file", str(tmp_path / "missing")), "No such file"),
        (Secret("auth_token", "env", "NOPE_VAR"), "the environment variable NOPE_VAR is not set"),
        (Secret("auth_token", "command", failing), "exited 3"),
        (Secret("auth_token", "credential", "twilio"), "LoadCredential=twilio:"),
    ]
    for secret, needle in cases:
        with pytest.raises(CredentialError) as caught:
            secret.get()
        assert needle in str(caught.value) and "leaked-secret" not in str(caught.value)
        assert str(caught.value).startswith("auth_token: ")


def test_urls_are_shown_without_credentials_path_or_query():
    url = "https://bot:pa55word@hooks.example.net:8443/services/T0/B1/XYZ?token=abc123"
    assert show_url(url) == "https://hooks.example.net:8443/…"
    remember_url(url)
    assert redact(f"failed: {url}") == "failed: ***"
    assert redact("see https://user:other-pass@host/x") == "see https://user:***@host/x"
