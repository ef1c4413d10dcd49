"""What a user reads when an IMAP account cannot be used: the server's words, the right hint."""

from __future__ import annotations

import pytest

from tests.dovecot import _Certificate
from tests.test_imap import config, flow, server_config

pytestmark = pytest.mark.timeout(120)


def test_a_refused_login_shows_the_servers_text(dovecot_server, tmp_path, run_cli):
    server = dovecot_server
    cfg = server_config(tmp_path, server, server.imap_port, password="hunter2-wrong")
    result = run_cli("run", "--once", "-c", str(cfg))
    assert result.returncode == 3
    assert "login as 'user' refused: [AUTHENTICATIONFAILED] Authentication failed." in (
        result.stderr
    ), result.stderr
    assert "b'" not in result.stderr and 'b"' not in result.stderr


@pytest.mark.parametrize("port", ["imaps_port", "imap_port"])
def test_a_wrong_ca_file_is_named_and_not_called_a_missing_one(
    dovecot_server, tmp_path, run_cli, port
):
    server = dovecot_server
    (tmp_path / "other").mkdir()
    other_ca = _Certificate(tmp_path / "other").cert  # a self-signed one, not the server's
    security = "tls" if port == "imaps_port" else "starttls"
    settings = {"host": "127.0.0.1", "port": getattr(server, port), "security": security,
                "username": server.username, "password": server.password,
                "ca_file": str(other_ca)}  # fmt: skip
    result = run_cli("run", "--once", "-c", str(config(tmp_path, flow(**settings))))
    assert result.returncode == 3
    assert f"certificate is not trusted: it did not verify against ca_file {other_ca}" in (
        result.stderr
    )
    assert "set ca_file" not in result.stderr
