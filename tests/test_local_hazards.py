"""Local Maildir and command hazards: mail is never lost, duplicated or hidden, and a
hostile file, name or command never stops the run. Everything goes through the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import MaildirTree


def run(run_cli, config: Path, *extra: str, **kw):
    return run_cli("run", "--once", "-c", str(config), *extra, **kw)


def bodies(maildir: MaildirTree, folder: str = "INBOX") -> list[bytes]:
    return sorted(p.read_bytes() for p in maildir.files(folder))


def put(folder_dir: Path, sub: str, name: str, data: bytes) -> Path:
    for s in ("cur", "new", "tmp"):
        (folder_dir / s).mkdir(parents=True, exist_ok=True)
    path = folder_dir / sub / name
    path.write_bytes(data)
    return path


def msg(n: int, subject: str = "hello") -> bytes:
    return f"Message-ID: <c{n}@test.example>\nSubject: {subject}\n\nbody {n}\n".encode()


# -- 1. two different messages with the same unique name -------------------------------


def test_move_onto_a_different_message_with_the_same_name_keeps_both(
    maildir, write_config, run_cli
):
    a, b = msg(1, "move me"), msg(2, "already archived")
    put(maildir.root, "new", "1700000001.M1P1.host", a)
    put(maildir.folder("Archive"), "cur", "1700000001.M1P1.host:2,S", b)
    config = write_config("- {name: all, then: [{move: Archive}]}\n")
    result = run(run_cli, config, "--all")
    assert result.returncode == 0, result.stderr
    assert bodies(maildir, "Archive") == sorted([a, b])
    assert bodies(maildir) == []


def test_a_repeated_move_of_the_same_message_is_not_doubled(maildir, write_config, run_cli):
    # A crash after the link and before the unlink leaves the same file in both folders.
    a = msg(1)
    src = put(maildir.root, "new", "1700000001.M1P1.host", a)
    os.link(src, maildir.folder("Archive") / "new" / src.name)
    config = write_config("- {name: all, then: [{move: Archive}]}\n")
    assert run(run_cli, config, "--all").returncode == 0
    assert bodies(maildir, "Archive") == [a] and bodies(maildir) == []
    # A separate file with equal content is the same message too.
    b = msg(2)
    put(maildir.root, "new", "1700000002.M2P1.host", b)
    put(maildir.folder("Archive"), "new", "1700000002.M2P1.host", b)
    assert run(run_cli, config, "--all").returncode == 0
    assert bodies(maildir, "Archive") == [a, b] and bodies(maildir) == []


def test_copy_onto_a_different_message_with_the_copy_name_keeps_both(
    maildir, write_config, run_cli
):
    # Any program may have used the name a copy takes: compare, never trust a name.
    a, b = msg(1), msg(2)
    put(maildir.root, "new", "1700000001.M1P1.host", a)
    config = write_config("- {name: all, then: [{copy: Kept}]}\n")
    assert run(run_cli, config, "--all").returncode == 0
    (copy,) = maildir.files("Kept")
    copy.unlink()
    copy.write_bytes(b)  # another message now has the copy's name
    assert run(run_cli, config, "--all").returncode == 0
    assert bodies(maildir, "Kept") == sorted([a, b])


def test_set_flags_never_renames_onto_another_message(maildir, write_config, run_cli):
    a, b = msg(1, "unread one"), msg(2, "read one")
    put(maildir.root, "new", "1700000001.M1P1.host", a)
    put(maildir.root, "cur", "1700000001.M1P1.host:2,S", b)
    config = write_config("- {name: read, then: [mark_read]}\n")
    result = run(run_cli, config, "--all")
    assert result.returncode == 0, result.stderr
    assert bodies(maildir) == sorted([a, b])
    assert all(p.name.endswith(":2,S") for p in maildir.files())


def test_two_messages_with_one_unique_name_in_a_folder_are_both_processed(
    maildir, write_config, run_cli
):
    """new/X and cur/X:2,S are two messages: each is acted on once, neither is skipped as
    seen, and the next run acts on neither again."""
    config = write_config("- {name: all, then: [{copy: Kept}, {flag: flagged}]}\n")
    assert run(run_cli, config).returncode == 0  # the first-run baseline: an empty INBOX
    a, b = msg(1, "unread one"), msg(2, "read one")
    put(maildir.root, "new", "1700000001.M1P1.host", a)
    put(maildir.root, "cur", "1700000001.M1P1.host:2,S", b)

    result = run(run_cli, config)

    assert result.returncode == 0, result.stderr
    assert "2 new messages" in result.stdout
    assert bodies(maildir, "Kept") == sorted([a, b])
    assert bodies(maildir) == sorted([a, b])
    assert all("F" in p.name.partition(":2,")[2] for p in maildir.files())
    again = run(run_cli, config)
    assert again.returncode == 0, again.stderr
    assert "0 new messages" in again.stdout
    assert bodies(maildir, "Kept") == sorted([a, b])


# -- 2. a copy into the folder being processed -----------------------------------------


def test_copy_into_the_processed_folder_adds_no_duplicate(maildir, write_config, run_cli):
    maildir.add(subject="INBOX")
    config = write_config(
        """
        - {name: self, then: [{copy: INBOX}]}
        - {name: rendered, then: [{copy: "{subject}"}]}
        """,
        account_extra="existing: process\n",
    )
    check = run_cli("check", "-c", str(config))
    assert check.returncode == 0
    assert "copies into INBOX, the folder it reads" in check.stderr
    for _ in range(3):
        result = run(run_cli, config)
        assert result.returncode == 0, result.stderr
        assert len(maildir.files()) == 1


# -- 3. SIGKILL during a cross-filesystem move ------------------------------------------


def _bind_mount_works() -> bool:
    if shutil.which("unshare") is None or not os.path.isdir("/dev/shm"):
        return False
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory(dir="/dev/shm") as b:
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount --bind {b} {a}"], capture_output=True
        )
        return done.returncode == 0


@pytest.mark.skipif(not _bind_mount_works(), reason="needs unshare and bind mounts")
def test_a_killed_cross_filesystem_move_recovers(maildir, write_config, env):
    """The Archive folder is another filesystem (a bind mount in a private namespace)."""
    a = msg(1)
    put(maildir.root, "new", "1700000001.M1P1.host", a)
    other = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        for s in ("cur", "new", "tmp"):
            (other / s).mkdir()
        archive = maildir.folder("Archive")
        config = write_config("- {name: all, then: [{move: Archive}]}\n")

        def cli(crash: int = 0) -> subprocess.CompletedProcess[bytes]:
            extra = {"MAILRULES_CRASH_AFTER": str(crash)} if crash else {}
            script = f'mount --bind {other} {archive} && exec "$@"'
            argv = [sys.executable, "-m", "mailrules.cli", "run", "--once", "--all"]
            return subprocess.run(
                ["unshare", "-rm", "sh", "-c", script, "sh", *argv, "-c", str(config)],
                env={**env, **extra},
                capture_output=True,
                timeout=60,
            )

        for step in range(1, 8):  # kill it at each step until the copy is half done
            killed = cli(crash=step)
            assert killed.returncode != 0
            if list((other / "tmp").iterdir()):
                break
        assert [p.name for p in (other / "tmp").iterdir()] == ["1700000001.M1P1.host"]
        assert bodies(maildir) == [a]
        done = cli()
        assert done.returncode == 0, done.stderr.decode()
        assert [p.read_bytes() for p in (other / "new").iterdir()] == [a]
        assert list((other / "tmp").iterdir()) == []
        assert bodies(maildir) == []
    finally:
        shutil.rmtree(other)


# -- 4. commands: grandchildren, timeouts, output ---------------------------------------


def test_a_grandchild_holding_the_pipes_does_not_defeat_the_timeout(maildir, write_config, run_cli):
    maildir.add(subject="one")
    config = write_config(
        """
        - {name: bg, then: [{run: {argv: [setsid, -f, sleep, "20"], timeout: 2s}}]}
        """
    )
    started = time.monotonic()
    result = run(run_cli, config, "--all", "-v")
    assert time.monotonic() - started < 8
    assert result.returncode == 0, result.stderr
    assert "killed" not in result.stderr


def test_a_command_past_its_timeout_is_killed_with_its_group(maildir, write_config, run_cli):
    maildir.add(subject="one")
    config = write_config(
        """
        - {name: slow, then: [{run: {argv: [sh, -c, "sleep 30 & sleep 30"], timeout: 1s}}]}
        """
    )
    started = time.monotonic()
    result = run(run_cli, config, "--all")
    assert time.monotonic() - started < 8
    assert result.returncode == 1
    assert "did not finish within 1s; killed its process group" in result.stdout


def test_deliver_with_a_lingering_grandchild_finishes_and_writes_once(
    maildir, write_config, run_cli
):
    config = write_config(
        """
        - {name: bg, then: [{run: {argv: [setsid, -f, sleep, "20"], timeout: 2s}}]}
        """
    )
    started = time.monotonic()
    result = run_cli("deliver", "-c", str(config), input=msg(1))
    assert time.monotonic() - started < 8
    assert result.returncode == 0, result.stderr
    assert bodies(maildir) == [msg(1)]


def test_a_command_flooding_stdout_is_capped(maildir, write_config, env):
    maildir.add(subject="one")
    config = write_config(
        "- {name: flood, then: [{run: {argv: [head, -c, '300000000', /dev/zero]}}]}\n"
    )
    probe = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.stderr.write(done.stderr.decode())\n"
    )
    argv = [sys.executable, "-c", probe, sys.executable, "-m", "mailrules.cli"]
    done = subprocess.run(
        [*argv, "run", "--once", "--all", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    peak_kib = int(done.stdout.split()[-1])
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib} KiB"
    assert "output beyond" in done.stderr


# -- 8. poison values in folder templates -----------------------------------------------


def test_long_and_control_character_values_are_cleaned(maildir, write_config, run_cli):
    long = maildir.add(subject="x" * 300)
    ctrl = maildir.add(subject="=?utf-8?q?bell=07esc=1B[31mred?=")
    config = write_config("- {name: by subject, then: [{move: 'Archive/{subject}'}]}\n")
    result = run(run_cli, config, "--all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert maildir.ids() == []
    folders = maildir.folders()
    assert f"Archive/{'x' * 120}" in folders
    assert "Archive/bell_esc_[31mred" in folders
    assert maildir.ids(f"Archive/{'x' * 120}") == [long]
    assert maildir.ids("Archive/bell_esc_[31mred") == [ctrl]


def test_a_permanent_failure_is_recorded_once(maildir, write_config, run_cli):
    maildir.add(subject="y" * 200)
    config = write_config(
        "- {name: deep, then: [{move: 'A/{subject}/{subject}/{subject}'}]}\n",
        account_extra="existing: process\n",
    )
    first = run(run_cli, config)
    assert first.returncode == 1
    assert "too long" in first.stdout and "not retried" in first.stdout
    second = run(run_cli, config)
    assert second.returncode == 0, second.stdout
    assert "0 new messages" in second.stdout
    assert len(maildir.files()) == 1
    state = run_cli("state", "-c", str(config))
    assert state.stdout.count("too long") == 1


def test_deliver_answers_a_permanent_failure_as_permanent(maildir, write_config, run_cli):
    config = write_config("- {name: deep, then: [{move: 'A/{subject}/{subject}/{subject}'}]}\n")
    result = run_cli("deliver", "-c", str(config), input=msg(1, "z" * 200))
    assert result.returncode not in (0, 75)
    assert "too long" in result.stderr


# -- 17, 18, 19: folder names and paths --------------------------------------------------


def test_fs_layout_never_hides_mail_in_a_maildir_subdirectory(maildir, write_config, run_cli):
    maildir.add(subject="cur")
    config = write_config(
        "- {name: s, then: [{move: 'Archive/{subject}'}]}\n", account_extra="layout: fs\n"
    )
    result = run(run_cli, config, "--all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (maildir.root / "Archive" / "cur" / "cur").exists()
    listed = run_cli("folders", "local", "-c", str(config)).stdout.split()
    assert "Archive/cur_" in listed
    static = write_config("- {name: s, then: [{move: Archive/new}]}\n", "layout: fs\n", "s.yaml")
    check = run_cli("check", "-c", str(static))
    assert check.returncode == 2 and "new" in check.stderr


def test_deliver_cleans_names_for_the_target_layout(maildir, write_config, run_cli, tmp_path):
    maildir.add(subject="v1.2 release")
    target = tmp_path / "backup"
    config = write_config(
        f"- {{name: b, then: [{{deliver: {{path: {target}, folder: '{{subject}}'}}}}]}}\n",
        account_extra="layout: fs\n",
    )
    result = run(run_cli, config, "--all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list((target / ".v1_2 release" / "new").iterdir())) == 1


def test_deliver_paths_expand_home_and_variables(maildir, write_config, run_cli, env):
    maildir.add(subject="one")
    config = write_config(
        "- {name: b, then: [{deliver: ~/Mail/backup}, {deliver: '${BACKUP}/two'}]}\n"
    )
    result = run(run_cli, config, "--all", extra_env={"BACKUP": env["HOME"] + "/b"})
    assert result.returncode == 0, result.stdout + result.stderr
    home = Path(env["HOME"])
    assert len(list((home / "Mail" / "backup" / "new").iterdir())) == 1
    assert len(list((home / "b" / "two" / "new").iterdir())) == 1
    missing = run_cli("check", "-c", str(config))
    assert missing.returncode == 2 and "BACKUP" in missing.stderr


# -- 20. FIFOs and symlinks ---------------------------------------------------------------


def test_a_fifo_or_a_symlink_in_new_is_skipped(maildir, write_config, run_cli, tmp_path):
    good = maildir.add(subject="good")
    os.mkfifo(maildir.root / "new" / "1700000050.fifo.host")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"Subject: secret\n\nnot mail\n")
    (maildir.root / "new" / "1700000051.link.host").symlink_to(secret)
    config = write_config("- {name: all, then: [{move: Archive}]}\n")
    result = run(run_cli, config, "--all", timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert maildir.ids("Archive") == [good]
    assert "not a regular file" in result.stderr
    assert secret.read_bytes() == b"Subject: secret\n\nnot mail\n"
    assert all(not p.is_symlink() for p in maildir.files("Archive"))


def test_a_folder_link_out_of_the_tree_is_not_followed(maildir, write_config, run_cli, tmp_path):
    maildir.add(subject="one")
    outside = tmp_path / "outside"
    for s in ("cur", "new", "tmp"):
        (outside / s).mkdir(parents=True)
    (maildir.root / ".Archive").symlink_to(outside)
    config = write_config("- {name: all, then: [{move: Archive}]}\n")
    result = run(run_cli, config, "--all")
    assert result.returncode == 1
    assert "outside" in result.stdout
    assert list((outside / "new").iterdir()) == []
    assert len(maildir.files()) == 1


def test_a_fifo_as_the_keyword_table_does_not_hang_the_run(maildir, write_config, run_cli):
    put(maildir.root, "cur", "1700000001.M1P1.host:2,Sa", msg(1))
    os.mkfifo(maildir.root / "dovecot-keywords")
    config = write_config("- {name: label, then: [{keyword: Later}]}\n")
    result = run(run_cli, config, "--all", timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert bodies(maildir) == [msg(1)]


def test_deliver_with_a_copy_into_inbox_writes_it_once(maildir, write_config, run_cli):
    config = write_config("- {name: keep, then: [{copy: INBOX}, {flag: flagged}]}\n")
    result = run_cli("deliver", "-c", str(config), input=msg(1))
    assert result.returncode == 0, result.stderr
    assert bodies(maildir) == [msg(1)]
    assert maildir.files()[0].name.endswith(":2,F")
    moved = write_config("- {name: keep, then: [{copy: INBOX}, {move: Work}]}\n", name="m.yaml")
    assert run_cli("deliver", "-c", str(moved), input=msg(2)).returncode == 0
    assert bodies(maildir) == [msg(1), msg(2)] and bodies(maildir, "Work") == [msg(2)]


def test_fs_layout_folders_never_take_the_name_of_a_maildir_file(maildir, write_config, run_cli):
    (maildir.root / "dovecot-uidlist").write_text("3 V1 N1\n")
    maildir.add(subject="dovecot-uidlist")
    config = write_config("- {name: s, then: [{move: '{subject}'}]}\n", "layout: fs\n")
    result = run(run_cli, config, "--all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (maildir.root / "dovecot-uidlist").read_text() == "3 V1 N1\n"
    assert len(list((maildir.root / "dovecot-uidlist_" / "new").iterdir())) == 1


def test_a_symlink_swapped_in_after_listing_is_not_linked_through(maildir, tmp_path):
    """Moves link the directory entry itself, never what a symlink points to."""
    from mailrules.sources.base import MessageRef
    from mailrules.sources.maildir import Maildir

    secret = tmp_path / "secret"
    secret.write_bytes(b"Subject: secret\n\nx\n")
    path = maildir.root / "new" / "1700000001.M1P1.host"
    path.symlink_to(secret)
    box = Maildir(str(maildir.root))
    ref = MessageRef("INBOX", "1700000001.M1P1.host", str(path))
    box.move([ref], "Archive")
    assert all(p.is_symlink() for p in maildir.files("Archive"))
    assert secret.stat().st_nlink == 1
