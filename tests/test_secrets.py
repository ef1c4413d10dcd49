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


@pytest.mark.parametrize("value", ["0123456789", "987654321", "yes", "off", "12:34:56", "31.41"])
def test_check_never_quotes_an_inline_secret_that_yaml_reads_as_a_number(run_cli, tmp_path, value):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "accounts:\n"
        f"  work: {{imap: {{host: mail.example, username: me, password: {value}}}}}\n"
        "notifiers:\n"
        f"  hook: {{webhook: {{url: https://h.example/x, secret: {value},"
        f" headers: {{Authorization: {value}}}}}}}\n"
        f"  sms: {{sms: {{account_sid: AC1, auth_token: {value}, to: '+1', from: '+2'}}}}\n"
        "rules: []\n"
    )
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2
    assert len([line for line in result.stderr.splitlines() if "rules.yaml:" in line]) == 4
    assert value not in result.stderr + result.stdout, result.stderr
    assert "quote it" in result.stderr
