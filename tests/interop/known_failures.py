"""Interop tests that fail today because of a finding of issue 12, per server.

Each is marked ``xfail(strict=True)`` by tests/interop/conftest.py, so the fix that makes
one pass turns it into a failure here until its line is removed. The reasons name the
finding and what the server does.
"""

from __future__ import annotations

F1 = "issue 12 finding 1: the nested SEARCH's ')' is sent inside the literal ({7+} 'crème)')"
F1_MAILUTILS = F1 + "; Mailutils imap4d dies on it (signal 11), so the account fails (exit 3)"
F2_COURIER = (
    "issue 12 findings 2, 3, 4: Courier answers NO 'CHARSET is not valid in UTF8 mode' "
    "to the narrowing SEARCH, the refusal fails the account (exit 3), and moves go to "
    "'Alice' outside the personal namespace 'INBOX.'"
)
F3_TWISTED = (
    "issue 12 findings 1, 3, 6: Twisted answers BAD to the SEARCH with a literal, the "
    "refusal fails the account (exit 3); deciding locally then needs finding 6"
)
F4_COURIER = (
    "issue 12 finding 4: the personal namespace 'INBOX.' is not applied: "
    "UID COPY to 'Alice'/'Copies'/'Trash' gets NO on Courier (exit 1)"
)
F6_TWISTED = (
    "issue 12 finding 6: Twisted drops the connection sending the header fields of corpus "
    "message 12 (raw 8-bit Subject) and the whole account fails (exit 3)"
)
F7 = (
    "issue 12 finding 7: without UIDPLUS the moved originals keep \\Deleted and a second "
    "--all copies them to Alice again (duplicates, flagged \\Deleted)"
)
F7_MAILUTILS = F1_MAILUTILS + "; then " + F7

ISSUE_CONFIG_TESTS = (
    "test_full_pass_then_a_poll",
    "test_dry_run_changes_nothing",
    "test_a_second_full_pass_changes_nothing",
    "test_starttls_with_the_servers_ca",
)
ASCII_ACTION_TESTS = (
    "test_move",
    "test_a_second_full_pass_moves_nothing_again",
    "test_copy",
    "test_delete_goes_to_the_servers_trash",
    "test_a_connection_cut_mid_move_loses_nothing",
)

F4_FOLDERS = (
    "issue 12 finding 4: 'mailrules folders' shows Courier's names with the personal "
    "namespace's prefix ('INBOX/Trash'), not as the user writes them ('Trash')"
)
F8_CYRUS = (
    "issue 12 finding 8: Cyrus sends special-use attributes in lower case (\\trash) and "
    "'mailrules folders' shows none"
)

KNOWN: dict[tuple[str, str], str] = {
    ("test_folders_are_shown_as_the_user_writes_them", "courier"): F4_FOLDERS,
    ("test_folders_are_shown_as_the_user_writes_them", "cyrus"): F8_CYRUS,
    ("test_nested_and_non_ascii_rules", "dovecot"): F1,
    ("test_nested_and_non_ascii_rules", "cyrus"): F1,
    ("test_nested_and_non_ascii_rules", "pymap"): F1,
    ("test_nested_and_non_ascii_rules", "mailutils"): F1_MAILUTILS,
    ("test_nested_and_non_ascii_rules", "courier"): F2_COURIER,
    ("test_nested_and_non_ascii_rules", "twisted"): F3_TWISTED,
    **{(test, "courier"): F2_COURIER for test in ISSUE_CONFIG_TESTS},
    **{(test, "twisted"): F3_TWISTED for test in ISSUE_CONFIG_TESTS},
    **{(test, "mailutils"): F1_MAILUTILS for test in ISSUE_CONFIG_TESTS},
    ("test_a_second_full_pass_changes_nothing", "mailutils"): F7_MAILUTILS,
    ("test_a_second_full_pass_moves_nothing_again", "mailutils"): F7,
    **{(test, "courier"): F4_COURIER for test in ASCII_ACTION_TESTS},
    **{(test, "twisted"): F6_TWISTED for test in (*ASCII_ACTION_TESTS, "test_flag")},
}
